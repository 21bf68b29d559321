//! Installing redis-server through the OS package manager when the
//! controller asks and it is missing, as the old playbooks did: Debian and
//! Ubuntu's `redis-server` package, then the distribution's own service
//! disabled so it does not hold port 6379 beside ours.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::resolve_program;

const MANUAL: &str = "install it there with `apt-get install -y redis-server`, then `systemctl disable --now redis-server`";

/// The agent config's `redis_server` when it is not set (looked up in PATH).
pub const DEFAULT_REDIS_SERVER: &str = "redis-server";

/// Ok says what was done; Err says why nothing could be, and what to do.
/// Installs only when the config names no binary of its own and none is
/// in PATH, and never upgrades an installed package: a wrong path is the
/// operator's to fix, not a reason to touch the host's Redis.
pub fn ensure_redis(redis_server: &Path) -> Result<&'static str, String> {
    if resolve_program(redis_server).is_some() {
        return Ok("redis-server is installed");
    }
    if redis_server != Path::new(DEFAULT_REDIS_SERVER) {
        return Err(format!(
            "the agent config's redis_server = {:?} does not exist (or is not a file, or not in PATH); nothing was installed. Fix `redis_server` in the agent's config (paddockd --config FILE) and restart the agent, or remove the key to use redis-server from PATH",
            redis_server.display().to_string()
        ));
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Err(format!(
            "redis-server is not installed and the agent is not root, so it cannot install it; {MANUAL}"
        ));
    }
    if !Path::new("/usr/bin/apt-get").is_file() {
        return Err("redis-server is not installed and this system has no apt-get; install the redis-server package with its package manager".to_owned());
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            // Agents sharing a machine (the lab) queue on dpkg's lock.
            .args(["-o", "DPkg::Lock::Timeout=300", "-q", "-y"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    // --no-upgrade: should the package be there after all (another agent
    // of the lab installed it meanwhile), never move it to a new version.
    let install = || apt(&["install", "--no-upgrade", "redis-server"]);
    let mut out = install().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !out.status.success() {
        let _ = apt(&["update"]);
        out = install().map_err(|e| format!("cannot run apt-get: {e}"))?;
    }
    if out.status.success() && resolve_program(redis_server).is_none() {
        return Err(format!(
            "apt-get install redis-server succeeded, but there is still no redis-server in PATH ({}); {MANUAL}",
            std::env::var("PATH").unwrap_or_default()
        ));
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "apt-get install redis-server failed ({}): {}; {MANUAL}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    // The package starts its own instance on 6379; ours are separate.
    let _ = Command::new("systemctl")
        .args(["disable", "--now", "redis-server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok("installed redis-server with apt-get")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_that_does_not_exist_is_named_and_nothing_installed() {
        for configured in [
            "/nonexistent/paddock/redis-server",
            "redis-server-7-nowhere",
        ] {
            // Returns before apt-get is looked at, root or not.
            let e = ensure_redis(Path::new(configured)).unwrap_err();
            assert!(
                e.contains(&format!("redis_server = {configured:?} does not exist"))
                    && e.contains("nothing was installed"),
                "{e}"
            );
        }
    }
}
