//! Instance logs: size-based rotation with a bounded number of backups, and
//! reading the last lines / following new ones for the TailLog RPC.
//!
//! Redis reopens its `logfile` for every line, so `redis.log` is rotated by
//! renaming. `stdout.log` is held open by Redis (O_APPEND), so it is copied
//! and truncated instead.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store;

/// Rotation limits (agent.toml `log_max_bytes`, `log_backups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub backups: u32,
}

fn backup(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotates `path` when it is larger than the limit: path.(n-1) -> path.n, ...,
/// path -> path.1; the oldest beyond `backups` is deleted. With `truncate`,
/// the live file is copied and truncated in place (for a file a process
/// keeps open). Returns whether it rotated.
pub fn rotate(path: &Path, limits: Rotation, truncate: bool) -> io::Result<bool> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= limits.max_bytes {
        return Ok(false);
    }
    if limits.backups == 0 {
        OpenOptions::new().write(true).open(path)?.set_len(0)?;
        return Ok(true);
    }
    let _ = fs::remove_file(backup(path, limits.backups));
    for n in (1..limits.backups).rev() {
        let from = backup(path, n);
        if from.exists() {
            fs::rename(&from, backup(path, n + 1))?;
        }
    }
    if truncate {
        fs::copy(path, backup(path, 1))?;
        OpenOptions::new().write(true).open(path)?.set_len(0)?;
    } else {
        fs::rename(path, backup(path, 1))?;
    }
    Ok(true)
}

/// Rotates every instance's logs under `instances_dir`.
pub fn rotate_all(instances_dir: &Path, limits: Rotation) {
    let Ok(entries) = fs::read_dir(instances_dir) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        for (name, truncate) in [(store::LOG_FILE, false), (store::STDOUT_LOG_FILE, true)] {
            let path = dir.join(name);
            if let Err(e) = rotate(&path, limits, truncate) {
                tracing::warn!(path = %path.display(), error = %e, "cannot rotate log");
            }
        }
    }
}

/// The last `n` lines of a file (reading at most the last 1 MiB).
pub fn last_lines(path: &Path, n: usize) -> io::Result<(Vec<String>, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(1 << 20);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // a partial first line
    }
    let skip = lines.len().saturating_sub(n);
    Ok((lines.split_off(skip), len))
}

/// Follows a log file from `offset`: calls `send` with each batch of new
/// complete lines; notices rotation (a new inode or a shorter file) and
/// continues with the new file. Returns when `send` returns false.
pub async fn follow(
    path: PathBuf,
    mut offset: u64,
    mut send: impl AsyncFnMut(Vec<String>) -> bool,
) {
    let mut inode = fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
    let mut partial = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.ino() != inode || meta.len() < offset {
            inode = meta.ino();
            offset = 0;
        }
        if meta.len() == offset {
            // Probe the caller regularly so a hung-up client ends the stream.
            if !send(Vec::new()).await {
                return;
            }
            continue;
        }
        let Ok(mut f) = File::open(&path) else {
            continue;
        };
        if f.seek(SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut bytes = Vec::new();
        if f.take(1 << 20).read_to_end(&mut bytes).is_err() {
            continue;
        }
        offset += bytes.len() as u64;
        partial.push_str(&String::from_utf8_lossy(&bytes));
        let complete = match partial.rfind('\n') {
            Some(i) => {
                let rest = partial.split_off(i + 1);
                std::mem::replace(&mut partial, rest)
            }
            None => continue,
        };
        let lines: Vec<String> = complete.lines().map(str::to_owned).collect();
        if !send(lines).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_keeping_a_bounded_number_of_backups() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("redis.log");
        let limits = Rotation {
            max_bytes: 10,
            backups: 2,
        };
        for round in 0..5 {
            fs::write(&log, format!("round {round} with enough bytes\n")).unwrap();
            assert!(rotate(&log, limits, false).unwrap());
        }
        assert!(!log.exists(), "Redis recreates it on its next line");
        assert_eq!(
            fs::read_to_string(backup(&log, 1)).unwrap(),
            "round 4 with enough bytes\n"
        );
        assert_eq!(
            fs::read_to_string(backup(&log, 2)).unwrap(),
            "round 3 with enough bytes\n"
        );
        assert!(!backup(&log, 3).exists(), "never more than `backups` files");
        fs::write(&log, "small\n").unwrap();
        assert!(!rotate(&log, limits, false).unwrap(), "under the limit");
    }

    #[test]
    fn copy_truncate_keeps_the_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stdout.log");
        fs::write(&log, "0123456789abcdef\n").unwrap();
        let limits = Rotation {
            max_bytes: 4,
            backups: 1,
        };
        assert!(rotate(&log, limits, true).unwrap());
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(
            fs::read_to_string(backup(&log, 1)).unwrap(),
            "0123456789abcdef\n"
        );
    }

    #[test]
    fn last_lines_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("redis.log");
        fs::write(&log, "a\nb\nc\n").unwrap();
        let (lines, len) = last_lines(&log, 2).unwrap();
        assert_eq!(lines, ["b", "c"]);
        assert_eq!(len, 6);
    }
}
