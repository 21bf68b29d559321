//! Files on disk, split by who may write them:
//!
//! - `data_dir/control/NAME/` is the agent's (root, 0700): the spec (it
//!   holds the password), the desired state, the process identity record,
//!   the rendered redis.conf with its previous version, sentinel.seed and
//!   stdout.log. The Redis user cannot create, replace or read anything here.
//! - `data_dir/instances/NAME/` is Redis's `dir` (the Redis user, 0700): its
//!   data, nodes.conf, redis.log, and the config it runs with and may
//!   rewrite (running.conf or sentinel.conf).
//!
//! The Redis user may plant symlinks, FIFOs or hard links under any name in
//! its own directory, so the agent (root) never opens a file there by path:
//! it opens the directory once ([`Dir`], O_NOFOLLOW) and works relative to
//! that handle: new files are created O_EXCL under a fresh temporary name,
//! written, fsynced, given their owner and mode on the open descriptor, then
//! renamed into place (a rename replaces a planted link, never its target);
//! reads refuse anything but a regular file. The parents (data_dir,
//! `instances/`, `control/`) belong to root, so no path component above
//! those directories can be swapped either.
//!
//! Writes are atomic: temp file, fsync, rename, fsync the directory.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use crate::error::Error;
use crate::spec::{InstanceSpec, Render as _};

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
/// The record that lets a restarted agent recognise the process it spawned:
/// "pid start_time", start time in clock ticks since boot from /proc, so a
/// recycled pid is never mistaken for ours.
pub const IDENTITY_FILE: &str = "process";
/// Files Redis writes that hold the password or the cluster's state: 0600.
pub const REDIS_PRIVATE_FILES: [&str; 3] =
    [RUNNING_CONFIG_FILE, SENTINEL_CONFIG_FILE, "nodes.conf"];
/// Files the agent kept in Redis's directory before the two were split.
const LEGACY_AGENT_FILES: [&str; 4] = [SPEC_FILE, DESIRED_FILE, IDENTITY_FILE, SENTINEL_SEED_FILE];
/// Largest file the agent reads back (a spec, a record, a config).
const MAX_READ: u64 = 4 << 20;

/// The two directories of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDirs {
    /// The agent's: root only.
    pub control: PathBuf,
    /// Redis's `dir`: the Redis user's.
    pub redis: PathBuf,
}

impl InstanceDirs {
    pub fn new(data_dir: &Path, name: &str) -> Self {
        InstanceDirs {
            control: data_dir.join("control").join(name),
            redis: data_dir.join("instances").join(name),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn nix_err(path: &Path) -> impl FnOnce(Errno) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// A directory opened once (never through a symlink); everything in it is
/// reached relative to this handle.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    pub fn open(path: &Path) -> std::io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn at(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The entry itself (a symlink is reported as one, not followed).
    pub fn stat(&self, name: &str) -> Option<FileStat> {
        nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()
    }

    /// Opens a regular file for reading: a symlink, FIFO or device under
    /// that name is refused (O_NONBLOCK: a planted FIFO cannot hang us).
    pub fn open_read(&self, name: &str) -> std::io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        regular(fd)
    }

    pub fn read_to_string(&self, name: &str) -> std::io::Result<String> {
        let mut text = String::new();
        self.open_read(name)?
            .take(MAX_READ)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    /// Opens (creating it 0600) a log file to append to; a planted symlink,
    /// FIFO or hard link under that name is refused.
    pub fn open_append(&self, name: &str) -> std::io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let file = regular(fd)?;
        if file.metadata()?.nlink() > 1 {
            return Err(std::io::Error::other("has other hard links: not ours"));
        }
        Ok(file)
    }

    /// Opens an existing regular file for writing (to truncate it).
    pub fn open_write(&self, name: &str) -> std::io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let file = regular(fd)?;
        if file.metadata()?.nlink() > 1 {
            return Err(std::io::Error::other("has other hard links: not ours"));
        }
        Ok(file)
    }

    /// Creates a new file (O_EXCL: nothing planted is ever opened) 0600.
    pub fn create_new(&self, name: &str) -> std::io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Removes the entry itself (a symlink, not its target). Missing is fine.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        match nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        Ok(nix::fcntl::renameat(&self.fd, from, &self.fd, to)?)
    }

    pub fn sync(&self) -> std::io::Result<()> {
        Ok(nix::unistd::fsync(&self.fd)?)
    }

    /// Replaces `name` atomically with `contents`, 0600, owned by `owner`
    /// (set on the descriptor before the file gets its name).
    pub fn write_atomic(
        &self,
        name: &str,
        contents: &[u8],
        owner: Option<(Uid, Gid)>,
    ) -> Result<(), Error> {
        let (tmp, mut file) = self.create_temp(name)?;
        // A full disk must leave neither a half-written temp file nor a
        // damaged target behind.
        let written = file
            .write_all(contents)
            .and_then(|()| {
                if let Some((uid, gid)) = owner {
                    nix::unistd::fchown(file.as_fd(), Some(uid), Some(gid))?;
                }
                nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(0o600))?;
                file.sync_all()
            })
            .and_then(|()| self.rename(&tmp, name))
            .map_err(io_err(&self.at(name)));
        if let Err(e) = written {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        self.sync().map_err(io_err(&self.path))
    }

    /// A fresh temporary file next to `name`: a name nobody could predict
    /// and plant, created O_EXCL anyway.
    fn create_temp(&self, name: &str) -> Result<(String, File), Error> {
        let mut last = None;
        for attempt in 0..16u32 {
            let nonce: u64 = rand::random();
            let tmp = format!(".{name}.{}.{nonce:x}{attempt}.tmp", std::process::id());
            match self.create_new(&tmp) {
                Ok(f) => return Ok((tmp, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_err(&self.at(&tmp))(e)),
            }
        }
        Err(io_err(&self.at(name))(last.unwrap_or_else(|| {
            std::io::Error::other("no free temporary name")
        })))
    }

    /// Makes `name` 0600 if it is a regular file of `owner` with no other
    /// link: a file Redis wrote with a looser mode (Sentinel's rewrite,
    /// an older Redis started without our umask).
    pub fn restrict(&self, name: &str, owner: Option<Uid>) -> std::io::Result<bool> {
        let Ok(file) = self.open_read(name) else {
            return Ok(false);
        };
        let meta = file.metadata()?;
        let ours = owner.is_none_or(|uid| meta.uid() == uid.as_raw()) && meta.nlink() == 1;
        if !ours || meta.mode() & 0o077 == 0 {
            return Ok(false);
        }
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(0o600))?;
        Ok(true)
    }
}

use std::os::unix::fs::MetadataExt;

fn regular(fd: OwnedFd) -> std::io::Result<File> {
    let st = nix::sys::stat::fstat(&fd)?;
    if !is_regular(&st) {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(File::from(fd))
}

/// Opens the regular file at `path` for reading without following a
/// symlink in its last component (the parents are root's).
pub fn open_read(path: &Path) -> std::io::Result<File> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    regular(fd)
}

/// Creates (or takes over) directory `name` in `parent` with `mode` and
/// `owner`, set on its descriptor; a symlink or file there is refused.
fn ensure_dir(
    parent: &Dir,
    name: &str,
    mode: u32,
    owner: Option<(Uid, Gid)>,
) -> Result<Dir, Error> {
    let path = parent.at(name);
    match nix::sys::stat::mkdirat(&parent.fd, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(nix_err(&path)(e)),
    }
    let dir = Dir::open(&path).map_err(io_err(&path))?;
    let (uid, gid) = owner.unwrap_or((Uid::effective(), Gid::effective()));
    let st = nix::sys::stat::fstat(&dir.fd).map_err(nix_err(&path))?;
    if st.st_uid != uid.as_raw() || st.st_gid != gid.as_raw() {
        nix::unistd::fchown(&dir.fd, Some(uid), Some(gid)).map_err(nix_err(&path))?;
    }
    if st.st_mode & 0o7777 != mode {
        nix::sys::stat::fchmod(&dir.fd, Mode::from_bits_truncate(mode)).map_err(nix_err(&path))?;
    }
    Ok(dir)
}

/// data_dir, `instances/` (0711: the Redis user passes through to its own
/// directory, cannot list it) and `control/` (0700), all the agent's.
pub fn create_layout(data_dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(data_dir)
        .map_err(io_err(data_dir))?;
    let root = Dir::open(data_dir).map_err(io_err(data_dir))?;
    ensure_dir(&root, "instances", 0o711, None)?;
    ensure_dir(&root, "control", 0o700, None)?;
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

/// Refuses a data_dir the Redis user could redirect: neither it nor any
/// ancestor may be owned by that user or writable by it (a sticky
/// directory such as /tmp is fine: others' entries cannot be renamed).
pub fn check_not_redis_writable(data_dir: &Path, uid: Uid, gid: Gid) -> Result<(), Error> {
    let mut path = data_dir.to_owned();
    if let Ok(abs) = std::fs::canonicalize(data_dir) {
        path = abs;
    }
    for dir in path.ancestors() {
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let sticky = mode & 0o1000 != 0;
        let writable = meta.uid() == uid.as_raw()
            || (meta.gid() == gid.as_raw() && mode & 0o020 != 0 && !sticky)
            || (mode & 0o002 != 0 && !sticky);
        if writable {
            return Err(Error::Privileges(format!(
                "{} (owner uid {}, mode {:o}) can be changed by the user Redis runs as (uid {uid}), who could then redirect the agent's writes in data_dir {}; make it root's and not group- or world-writable (`chown root: {0} && chmod go-w {0}`)",
                dir.display(),
                meta.uid(),
                mode & 0o7777,
                data_dir.display(),
            )));
        }
    }
    Ok(())
}

pub fn read_config(control: &Path) -> Option<String> {
    Dir::open(control).ok()?.read_to_string(CONFIG_FILE).ok()
}

/// Stores the spec and redis.conf (keeping the previous one) in the
/// instance's control directory, and makes sure Redis's directory exists.
pub fn write_instance(
    dirs: &InstanceDirs,
    spec: &InstanceSpec,
    config: &str,
    owner: Option<(Uid, Gid)>,
) -> Result<(), Error> {
    let control = control_dir(&dirs.control)?;
    let spec_text = toml::to_string(spec)
        .map_err(|e| Error::InvalidSpec(format!("cannot serialise spec: {e}")))?;
    control.write_atomic(SPEC_FILE, spec_text.as_bytes(), None)?;
    if let Ok(previous) = control.read_to_string(CONFIG_FILE) {
        control.write_atomic(PREVIOUS_CONFIG_FILE, previous.as_bytes(), None)?;
    }
    control.write_atomic(CONFIG_FILE, config.as_bytes(), None)?;
    redis_dir(&dirs.redis, owner)?;
    Ok(())
}

/// Deletes an instance's control directory and, with `purge_data`, Redis's
/// directory. `remove_dir_all` works through directory handles without
/// following links (since Rust 1.58.1), so a link the Redis user planted in
/// its own directory is unlinked, never followed.
pub fn remove_instance(dirs: &InstanceDirs, purge_data: bool) -> Result<(), Error> {
    let mut paths = vec![&dirs.control];
    if purge_data {
        paths.push(&dirs.redis);
    }
    for path in paths {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(path)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

fn parent_dir(path: &Path) -> Result<(Dir, &str), Error> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidSpec(format!("{} has no usable name", path.display())))?;
    Ok((Dir::open(parent).map_err(io_err(parent))?, name))
}

/// Opens (creating) an instance's control directory: root's, 0700.
pub fn control_dir(path: &Path) -> Result<Dir, Error> {
    let (parent, name) = parent_dir(path)?;
    ensure_dir(&parent, name, 0o700, None)
}

/// Opens (creating) Redis's directory, owned by the Redis user, 0700.
pub fn redis_dir(path: &Path, owner: Option<(Uid, Gid)>) -> Result<Dir, Error> {
    let (parent, name) = parent_dir(path)?;
    ensure_dir(&parent, name, 0o700, owner)
}

/// Every stored instance with its current config text. A directory whose
/// spec cannot be read is reported, not skipped silently.
pub fn load_all(control_root: &Path) -> Result<Vec<(InstanceSpec, String)>, Error> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(control_root).map_err(io_err(control_root))?;
    for entry in entries {
        let entry = entry.map_err(io_err(control_root))?;
        let spec_path = entry.path().join(SPEC_FILE);
        let Ok(dir) = Dir::open(&entry.path()) else {
            continue;
        };
        if dir.stat(SPEC_FILE).is_none() {
            continue;
        }
        let text = dir.read_to_string(SPEC_FILE).map_err(io_err(&spec_path))?;
        let spec: InstanceSpec = toml::from_str(&text).map_err(|e| Error::Config {
            path: spec_path.clone(),
            message: e.to_string(),
        })?;
        let config = dir.read_to_string(CONFIG_FILE).unwrap_or_default();
        out.push((spec, config));
    }
    Ok(out)
}

/// Moves an instance stored the old way (everything in Redis's directory)
/// to the split layout. Safe with Redis running: its `dir` does not move.
/// Only regular files the agent itself owns are carried over (anything
/// else under those names was planted and is dropped, never followed);
/// redis.conf, which the Redis user could edit there, is rendered afresh
/// from the spec; the agent's other leftovers are removed.
pub fn migrate_legacy(data_dir: &Path) -> Result<Vec<String>, Error> {
    let instances = data_dir.join("instances");
    let mut migrated = Vec::new();
    let Ok(entries) = std::fs::read_dir(&instances) else {
        return Ok(migrated);
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(old) = Dir::open(&entry.path()) else {
            continue;
        };
        if old.stat(SPEC_FILE).is_none() {
            continue;
        }
        let dirs = InstanceDirs::new(data_dir, &name);
        let control = control_dir(&dirs.control)?;
        let me = Uid::effective().as_raw();
        let mut spec = None;
        for file in LEGACY_AGENT_FILES {
            let Ok(f) = old.open_read(file) else {
                continue;
            };
            let trusted = f.metadata().is_ok_and(|m| m.uid() == me && m.nlink() == 1);
            let mut text = String::new();
            if trusted && f.take(MAX_READ).read_to_string(&mut text).is_ok() {
                if file == SPEC_FILE {
                    spec = toml::from_str::<InstanceSpec>(&text).ok();
                }
                if control.stat(file).is_none() {
                    control.write_atomic(file, text.as_bytes(), None)?;
                }
            }
        }
        if let Some(spec) = spec
            && control.stat(CONFIG_FILE).is_none()
        {
            let config = spec.render(&dirs.redis)?;
            control.write_atomic(CONFIG_FILE, config.as_bytes(), None)?;
        }
        for file in LEGACY_AGENT_FILES
            .into_iter()
            .chain([CONFIG_FILE, PREVIOUS_CONFIG_FILE])
        {
            old.remove(file).map_err(io_err(&old.at(file)))?;
        }
        migrated.push(name);
    }
    Ok(migrated)
}

/// Where redis-server's stdout and stderr go (the agent's directory).
pub fn open_stdout_log(control: &Path) -> std::io::Result<File> {
    Dir::open(control)?.open_append(STDOUT_LOG_FILE)
}

/// Whether the operator last asked for the instance to run: after an agent
/// restart, such an instance is adopted if alive and started if not.
pub fn wants_running(control: &Path) -> bool {
    Dir::open(control)
        .and_then(|d| d.read_to_string(DESIRED_FILE))
        .is_ok_and(|s| s.trim() == "running")
}

pub fn set_wants_running(control: &Path, running: bool) -> Result<(), Error> {
    let text: &[u8] = if running { b"running\n" } else { b"stopped\n" };
    control_dir(control)?.write_atomic(DESIRED_FILE, text, None)
}

/// A replication-group member that has been part of a formed group (it had
/// replicas, or replicated a master): if it keeps no data, a silent peer may
/// be its replica holding the data set, so it must not start empty unasked.
/// Kept in the control directory: the agent's word, not Redis's.
const FORMED_FILE: &str = "formed";

pub fn was_formed(control: &Path) -> bool {
    Dir::open(control)
        .and_then(|d| d.read_to_string(FORMED_FILE))
        .is_ok()
}

pub fn mark_formed(control: &Path) -> Result<(), Error> {
    if was_formed(control) {
        return Ok(());
    }
    write_control(control, FORMED_FILE, b"formed\n")
}

/// Writes a file of the agent's own into its control directory.
pub fn write_control(control: &Path, name: &str, contents: &[u8]) -> Result<(), Error> {
    control_dir(control)?.write_atomic(name, contents, None)
}

/// Copies redis.conf to the file the process runs with, in Redis's
/// directory, owned by the Redis user. `keep_seeded` (sentinels): unless it
/// was copied from this very redis.conf already, so what Sentinel wrote
/// into it since (the current master after a failover, the other
/// sentinels, its id) survives restarts. Either way the files Redis keeps
/// secrets in end up 0600.
pub fn copy_run_config(
    dirs: &InstanceDirs,
    file: &str,
    keep_seeded: bool,
    owner: Option<(Uid, Gid)>,
) -> Result<(), Error> {
    let control = control_dir(&dirs.control)?;
    let rendered = control.read_to_string(CONFIG_FILE).map_err(|_| {
        Error::InvalidSpec(format!(
            "{} is missing; re-run apply",
            dirs.control.join(CONFIG_FILE).display()
        ))
    })?;
    let redis = redis_dir(&dirs.redis, owner)?;
    let digest = digest(&rendered);
    let seeded = control
        .read_to_string(SENTINEL_SEED_FILE)
        .is_ok_and(|d| d.trim() == digest);
    let kept = keep_seeded && seeded && redis.stat(file).is_some_and(|st| is_regular(&st));
    if !kept {
        redis.write_atomic(file, rendered.as_bytes(), owner)?;
    }
    restrict_redis_files(&redis, owner);
    if !keep_seeded || kept {
        return Ok(());
    }
    control.write_atomic(SENTINEL_SEED_FILE, format!("{digest}\n").as_bytes(), None)
}

/// Repairs the modes of the files Redis keeps secrets in (0600).
pub fn restrict_redis_files(redis: &Dir, owner: Option<(Uid, Gid)>) {
    for name in REDIS_PRIVATE_FILES {
        match redis.restrict(name, owner.map(|(uid, _)| uid)) {
            Ok(true) => {
                tracing::info!(path = %redis.at(name).display(), "made it 0600: it holds the password or the cluster's state")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(path = %redis.at(name).display(), error = %e, "cannot make it 0600")
            }
        }
    }
}

/// Records that the running sentinel.conf already reflects `rendered`, so
/// the next start keeps it.
pub fn mark_sentinel_seeded(control: &Path, rendered: &str) -> Result<(), Error> {
    write_control(
        control,
        SENTINEL_SEED_FILE,
        format!("{}\n", digest(rendered)).as_bytes(),
    )
}

/// The next sentinel start seeds sentinel.conf afresh from redis.conf.
pub fn forget_sentinel_seed(control: &Path) -> Result<(), Error> {
    let dir = control_dir(control)?;
    dir.remove(SENTINEL_SEED_FILE)
        .map_err(io_err(&control.join(SENTINEL_SEED_FILE)))
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
    fn remove_keeps_data_unless_purged_and_follows_no_link() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), "keep").unwrap();
        let dirs = InstanceDirs::new(root.path(), "redis-7000");
        for d in [&dirs.control, &dirs.redis] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("file"), "x").unwrap();
        }
        // What a compromised Redis could plant in its own directory.
        std::os::unix::fs::symlink(&outside, dirs.redis.join("link")).unwrap();

        remove_instance(&dirs, false).unwrap();
        assert!(!dirs.control.exists());
        assert!(dirs.redis.join("file").is_file(), "data kept");
        remove_instance(&dirs, false).unwrap();

        remove_instance(&dirs, true).unwrap();
        assert!(!dirs.redis.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("precious")).unwrap(),
            "keep",
            "the link was removed, not followed"
        );
    }

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dir::open(dir.path()).unwrap();
        d.write_atomic("redis.conf", b"one", None).unwrap();
        d.write_atomic("redis.conf", b"two", None).unwrap();
        let path = dir.path().join("redis.conf");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn planted_links_are_replaced_or_refused_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let inner = dir.path().join("redis");
        std::fs::create_dir(&inner).unwrap();
        for name in [
            "running.conf",
            ".running.conf.tmp",
            "stdout.log",
            "nodes.conf",
        ] {
            std::os::unix::fs::symlink(&victim, inner.join(name)).unwrap();
        }
        let d = Dir::open(&inner).unwrap();
        d.write_atomic("running.conf", b"new", None).unwrap();
        assert!(d.open_append("stdout.log").is_err());
        assert!(d.read_to_string("nodes.conf").is_err());
        assert!(!d.restrict("nodes.conf", None).unwrap());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(inner.join("running.conf")).unwrap(),
            "new"
        );
        assert!(
            Dir::open(&inner.join("running.conf")).is_err(),
            "not a directory"
        );
        std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
        assert!(
            Dir::open(&dir.path().join("link")).is_err(),
            "a symlinked directory is refused"
        );
    }
}
