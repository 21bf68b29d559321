//! Instance logs: size-based rotation with a bounded number of backups, and
//! reading the last lines / following new ones for the TailLog RPC.
//!
//! Redis reopens its `logfile` for every line, so `redis.log` (in Redis's
//! directory) is rotated by renaming. `stdout.log` (in the agent's) is held
//! open by Redis (O_APPEND), so it is copied and truncated instead. Both are
//! reached through a directory handle and never through a symlink: the
//! Redis user may plant one under any name in its directory.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{self, Dir};

/// Rotation limits (agent.toml `log_max_bytes`, `log_backups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub backups: u32,
}

fn backup(name: &str, n: u32) -> String {
    format!("{name}.{n}")
}

/// Rotates `name` in `dir` when it is larger than the limit: name.(n-1) ->
/// name.n, ..., name -> name.1; the oldest beyond `backups` is deleted.
/// With `truncate`, the live file is copied and truncated in place (for a
/// file a process keeps open). Anything but a regular file is left alone.
/// Returns whether it rotated.
pub fn rotate(dir: &Dir, name: &str, limits: Rotation, truncate: bool) -> io::Result<bool> {
    let Some(st) = dir.stat(name) else {
        return Ok(false);
    };
    let regular = st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
    if !regular || u64::try_from(st.st_size).unwrap_or(0) <= limits.max_bytes {
        return Ok(false);
    }
    if limits.backups == 0 {
        dir.open_write(name)?.set_len(0)?;
        return Ok(true);
    }
    dir.remove(&backup(name, limits.backups))?;
    for n in (1..limits.backups).rev() {
        let from = backup(name, n);
        if dir.stat(&from).is_some() {
            dir.rename(&from, &backup(name, n + 1))?;
        }
    }
    if truncate {
        let mut live = dir.open_write(name)?;
        let mut from = dir.open_read(name)?;
        let first = backup(name, 1);
        dir.remove(&first)?;
        let mut copy = dir.create_new(&first)?;
        io::copy(&mut from, &mut copy)?;
        live.set_len(0)?;
        let _ = io::Write::flush(&mut live);
    } else {
        dir.rename(name, &backup(name, 1))?;
    }
    Ok(true)
}

/// Rotates every instance's logs: redis.log in Redis's directory, stdout.log
/// in the agent's.
pub fn rotate_all(data_dir: &Path, limits: Rotation) {
    for (root, name, truncate) in [
        ("instances", store::LOG_FILE, false),
        ("control", store::STDOUT_LOG_FILE, true),
    ] {
        let Ok(entries) = fs::read_dir(data_dir.join(root)) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let rotated = Dir::open(&path).and_then(|dir| rotate(&dir, name, limits, truncate));
            if let Err(e) = rotated {
                tracing::warn!(path = %path.join(name).display(), error = %e, "cannot rotate log");
            }
        }
    }
}

/// The last `n` lines of a file (reading at most the last 1 MiB).
pub fn last_lines(path: &Path, n: usize) -> io::Result<(Vec<String>, u64)> {
    let mut f = store::open_read(path)?;
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
    let mut inode = fs::symlink_metadata(&path).map(|m| m.ino()).unwrap_or(0);
    let mut partial = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(meta) = fs::symlink_metadata(&path) else {
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
        let Ok(mut f) = store::open_read(&path) else {
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
        let d = Dir::open(dir.path()).unwrap();
        let log = dir.path().join("redis.log");
        let backup = |_: &Path, n| dir.path().join(backup("redis.log", n));
        let limits = Rotation {
            max_bytes: 10,
            backups: 2,
        };
        for round in 0..5 {
            fs::write(&log, format!("round {round} with enough bytes\n")).unwrap();
            assert!(rotate(&d, "redis.log", limits, false).unwrap());
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
        assert!(
            !rotate(&d, "redis.log", limits, false).unwrap(),
            "under the limit"
        );
    }

    #[test]
    fn copy_truncate_keeps_the_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dir::open(dir.path()).unwrap();
        let log = dir.path().join("stdout.log");
        fs::write(&log, "0123456789abcdef\n").unwrap();
        let limits = Rotation {
            max_bytes: 4,
            backups: 1,
        };
        assert!(rotate(&d, "stdout.log", limits, true).unwrap());
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(
            fs::read_to_string(dir.path().join("stdout.log.1")).unwrap(),
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
