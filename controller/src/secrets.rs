//! The deployment's Redis password: generated once, kept in a 0600 file next
//! to the inventory, never printed.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::Error;

/// Where the password of an inventory's deployment lives: `password_file`
/// relative to the inventory, or `.paddock/<deployment>/redis-password`.
pub fn password_path(
    inventory_path: &Path,
    deployment: &str,
    password_file: Option<&str>,
) -> PathBuf {
    let base = inventory_path.parent().unwrap_or(Path::new("."));
    match password_file {
        Some(p) => base.join(p),
        None => base
            .join(".paddock")
            .join(deployment)
            .join("redis-password"),
    }
}

/// Where an ACL user's generated password lives, next to the deployment's.
pub fn user_password_path(inventory_path: &Path, deployment: &str, user: &str) -> PathBuf {
    inventory_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(".paddock")
        .join(deployment)
        .join("users")
        .join(format!("{user}.password"))
}

/// Reads the password, or creates one (32 random bytes, hex) when `create`.
pub fn load_or_create(path: &Path, create: bool) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_exposed(path);
            let password = text.trim().to_owned();
            if password.len() < 16 {
                return Err(Error::Io {
                    path: path.to_owned(),
                    source: std::io::Error::other(
                        "the Redis password file holds fewer than 16 characters; delete it to have a new one generated (every instance will then be reconfigured)",
                    ),
                });
            }
            Ok(Some(password))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let password = generate();
            write_secret(path, &password, true)?;
            Ok(Some(password))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Says so on stderr when a file holding a secret (a password, a private
/// key) can be read by group or others.
pub fn warn_if_exposed(path: &Path) {
    if let Some(warning) = exposed(path) {
        eprintln!("warning: {warning}");
    }
}

/// The warning for a secret file readable by group or others, if it is.
pub fn exposed(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} holds a secret but is readable by group or others (mode {mode:o}); `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// 32 random bytes, hex.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a secret 0600 (its directory 0700); `new_only` refuses to replace.
pub fn write_secret(path: &Path, secret: &str, new_only: bool) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Error::io(dir))?;
        ignore_in_git(dir)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if new_only {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut f = options.open(path).map_err(Error::io(path))?;
    f.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(Error::io(path))
}

/// Puts a `.gitignore` ignoring everything into the `.paddock` directory
/// `dir` is in (if it is in one), so private keys and passwords are not
/// committed with the inventory next to them. An existing one is kept.
pub fn ignore_in_git(dir: &Path) -> Result<(), Error> {
    let Some(paddock) = dir
        .ancestors()
        .find(|a| a.file_name() == Some(".paddock".as_ref()))
    else {
        return Ok(());
    };
    let path = paddock.join(".gitignore");
    match OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path) {
        Ok(mut f) => f
            .write_all(
                b"# Written by paddock: private keys and passwords live here; keep them out of git.\n*\n",
            )
            .map_err(Error::io(&path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_readable_by_others_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redis-password");
        write_secret(&path, "0123456789abcdef0123", true).unwrap();
        assert_eq!(exposed(&path), None, "written 0600");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = exposed(&path).unwrap();
        assert!(
            warning.contains("mode 644") && warning.contains("chmod 600"),
            "{warning}"
        );
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_random_password_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = password_path(&dir.path().join("inv.toml"), "lab", None);
        let first = load_or_create(&path, true).unwrap().unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&path, true).unwrap().unwrap(), first);
    }

    #[test]
    fn the_paddock_directory_is_ignored_by_git() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".paddock/lab/redis-password");
        load_or_create(&path, true).unwrap();
        let ignore = std::fs::read_to_string(dir.path().join(".paddock/.gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l == "*"), "{ignore}");
    }

    #[test]
    fn plan_does_not_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        assert_eq!(load_or_create(&path, false).unwrap(), None);
        assert!(!path.exists());
    }
}
