//! Files the agent owns under `data_dir/instances/NAME/`: the spec (0600: it
//! holds the password), the rendered redis.conf with its previous version, and
//! the log. Writes are atomic: temp file, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::spec::InstanceSpec;

pub const CONFIG_FILE: &str = "redis.conf";
const PREVIOUS_CONFIG_FILE: &str = "redis.conf.prev";
const SPEC_FILE: &str = "spec.toml";
pub const LOG_FILE: &str = "redis.log";
pub const STDOUT_LOG_FILE: &str = "stdout.log";
const DESIRED_FILE: &str = "desired";
/// The config a sentinel runs with and rewrites; seeded from redis.conf.
pub const SENTINEL_CONFIG_FILE: &str = "sentinel.conf";
/// The copy of redis.conf a redis-server runs with: CONFIG REWRITE (which
/// Sentinel sends with every REPLICAOF) rewrites this one, never ours.
pub const RUNNING_CONFIG_FILE: &str = "running.conf";
/// The digest of the redis.conf that sentinel.conf was seeded from.
const SENTINEL_SEED_FILE: &str = "sentinel.seed";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    create_dir(dir, 0o700)
}

/// The directory holding every instance's directory: the Redis user must be
/// able to pass through it (search), not to list it.
pub fn create_instances_dir(dir: &Path) -> Result<(), Error> {
    create_dir(dir, 0o711)?;
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .map_err(io_err(dir))
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err(dir))
}

pub fn read_config(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(CONFIG_FILE)).ok()
}

pub fn write_instance(dir: &Path, spec: &InstanceSpec, config: &str) -> Result<(), Error> {
    create_private_dir(dir)?;
    let spec_text = toml::to_string(spec)
        .map_err(|e| Error::InvalidSpec(format!("cannot serialise spec: {e}")))?;
    write_atomic(&dir.join(SPEC_FILE), spec_text.as_bytes())?;
    let config_path = dir.join(CONFIG_FILE);
    if config_path.exists() {
        let previous = dir.join(PREVIOUS_CONFIG_FILE);
        fs::copy(&config_path, &previous).map_err(io_err(&previous))?;
    }
    write_atomic(&config_path, config.as_bytes())
}

pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    // A full disk must leave neither a half-written temp file nor a
    // damaged target behind.
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err(&tmp));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Every stored instance with its current config text. A directory whose
/// spec cannot be read is reported, not skipped silently.
pub fn load_all(instances_dir: &Path) -> Result<Vec<(InstanceSpec, String)>, Error> {
    let mut out = Vec::new();
    let entries = fs::read_dir(instances_dir).map_err(io_err(instances_dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(instances_dir))?;
        let spec_path = entry.path().join(SPEC_FILE);
        if !spec_path.exists() {
            continue;
        }
        let text = fs::read_to_string(&spec_path).map_err(io_err(&spec_path))?;
        let spec: InstanceSpec = toml::from_str(&text).map_err(|e| Error::Config {
            path: spec_path.clone(),
            message: e.to_string(),
        })?;
        let config = read_config(&entry.path()).unwrap_or_default();
        out.push((spec, config));
    }
    Ok(out)
}

pub fn open_stdout_log(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(dir.join(STDOUT_LOG_FILE))
}

/// Whether the operator last asked for the instance to run: after an agent
/// restart, such an instance is adopted if alive and started if not.
pub fn wants_running(dir: &Path) -> bool {
    fs::read_to_string(dir.join(DESIRED_FILE)).is_ok_and(|s| s.trim() == "running")
}

pub fn set_wants_running(dir: &Path, running: bool) -> Result<(), Error> {
    let text: &[u8] = if running { b"running\n" } else { b"stopped\n" };
    write_atomic(&dir.join(DESIRED_FILE), text)
}

/// A replication-group member that has been part of a formed group (it had
/// replicas, or replicated a master): if it keeps no data, a silent peer may
/// be its replica holding the data set, so it must not start empty unasked.
const FORMED_FILE: &str = "formed";

pub fn was_formed(dir: &Path) -> bool {
    dir.join(FORMED_FILE).exists()
}

pub fn mark_formed(dir: &Path) -> Result<(), Error> {
    if was_formed(dir) {
        return Ok(());
    }
    write_atomic(&dir.join(FORMED_FILE), b"formed\n")
}

/// Copies redis.conf to the file the process runs with. `keep_seeded`
/// (sentinels): unless it was copied from this very redis.conf already, so
/// what Sentinel wrote into it since (the current master after a failover,
/// the other sentinels, its id) survives restarts.
pub fn copy_run_config(
    dir: &Path,
    file: &str,
    keep_seeded: bool,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<(), Error> {
    let rendered = read_config(dir).ok_or_else(|| {
        Error::InvalidSpec(format!(
            "{} is missing; re-run apply",
            dir.join(CONFIG_FILE).display()
        ))
    })?;
    let digest = digest(&rendered);
    let target = dir.join(file);
    let seeded = fs::read_to_string(dir.join(SENTINEL_SEED_FILE)).is_ok_and(|d| d.trim() == digest);
    if keep_seeded && seeded && target.exists() {
        return Ok(());
    }
    write_atomic(&target, rendered.as_bytes())?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(&target, Some(uid), Some(gid)).map_err(|e| Error::Io {
            path: target.clone(),
            source: e.into(),
        })?;
    }
    if !keep_seeded {
        return Ok(());
    }
    write_atomic(
        &dir.join(SENTINEL_SEED_FILE),
        format!("{digest}\n").as_bytes(),
    )
}

/// Records that the running sentinel.conf already reflects `rendered`, so
/// the next start keeps it.
pub fn mark_sentinel_seeded(dir: &Path, rendered: &str) -> Result<(), Error> {
    write_atomic(
        &dir.join(SENTINEL_SEED_FILE),
        format!("{}\n", digest(rendered)).as_bytes(),
    )
}

/// The next sentinel start seeds sentinel.conf afresh from redis.conf.
pub fn forget_sentinel_seed(dir: &Path) -> Result<(), Error> {
    match fs::remove_file(dir.join(SENTINEL_SEED_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path: dir.join(SENTINEL_SEED_FILE),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Hands the instance directory and its config to the user Redis runs as
/// (the config holds the password, so it stays 0600). spec.toml stays the
/// agent's.
pub fn give_to(dir: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> Result<(), Error> {
    for path in [dir.to_owned(), dir.join(CONFIG_FILE)] {
        nix::unistd::chown(&path, Some(uid), Some(gid)).map_err(|e| Error::Io {
            path: path.clone(),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// FNV-1a: a stable, cheap fingerprint of a rendered config.
pub fn digest(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redis.conf");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
