//! The side effects of supervision: spawning redis-server, waiting for it,
//! signalling its process group, probing readiness.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::Endpoint;
use crate::redis_access;
use crate::store;

pub fn spawn(redis_server: &Path, dir: &Path) -> std::io::Result<Child> {
    let log = store::open_log(dir)?;
    let log_err = log.try_clone()?;
    Command::new(redis_server)
        .arg(dir.join(store::CONFIG_FILE))
        .current_dir(dir)
        // Nothing of the agent's environment (NOTIFY_SOCKET, secrets) leaks in.
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        // Its own process group: signals go to Redis and anything it forks
        // (BGSAVE children) and never to the agent.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

/// Waits for the child's exit (an event from the runtime's SIGCHLD handling,
/// not a poll) and describes it.
pub async fn wait(mut child: Child) -> String {
    match child.wait().await {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(s) => format!("killed by {s}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            _ => "exited".to_owned(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

/// Polls PING every few milliseconds until the instance answers PONG.
/// `Some(true)` ready, `Some(false)` timed out, `None` cancelled (process gone).
/// A `-LOADING` reply means still starting.
pub async fn wait_ready(
    endpoint: &Endpoint,
    timeout: Duration,
    cancelled: &CancellationToken,
) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if cancelled.is_cancelled() {
            return None;
        }
        if redis_access::ping(endpoint).await {
            return Some(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(false);
        }
        tokio::select! {
            _ = cancelled.cancelled() => return None,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
