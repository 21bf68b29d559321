//! The side effects of supervision: spawning redis-server, waiting for it (as
//! its parent, or through a pidfd after an agent restart), signalling its
//! process group, probing readiness, recognising our own processes again.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::state::ExitReport;
use crate::endpoint::Endpoint;
use crate::redis_access;
use crate::store::{self, InstanceDirs};

/// Who redis-server runs as: None keeps the agent's own user (when the agent
/// is not root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
}

use store::IDENTITY_FILE;
const LOG_TAIL_LINES: usize = 10;

/// Starts redis-server with `args` (the config file first) in Redis's
/// directory; its stdout goes to the agent's.
pub fn spawn(
    redis_server: &Path,
    dirs: &InstanceDirs,
    args: &[String],
    run_as: Option<RunAs>,
) -> std::io::Result<Child> {
    let out = store::open_stdout_log(&dirs.control)?;
    let err = out.try_clone()?;
    let mut command = Command::new(redis_server);
    command
        .args(args)
        .current_dir(&dirs.redis)
        // Nothing of the agent's environment (NOTIFY_SOCKET, WATCHDOG_*,
        // secrets) reaches Redis.
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Its own process group: signals go to Redis and anything it forks
        // (BGSAVE children), and a signal to the agent's group misses it.
        .process_group(0)
        .kill_on_drop(false);
    if let Some(user) = run_as {
        // std drops supplementary groups before setuid when run as root.
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    private_umask(&mut command);
    let child = command.spawn()?;
    if let Some(pid) = child.id() {
        record_identity(&dirs.control, pid);
    }
    Ok(child)
}

/// Everything Redis creates (Sentinel's rewritten sentinel.conf, CONFIG
/// REWRITE's running.conf, RDB and AOF files) holds the password or the
/// data: umask 077 in the child makes it 0600 from the start.
#[allow(unsafe_code)]
fn private_umask(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls
    // umask(2), which is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
}

fn record_identity(control: &Path, pid: u32) {
    if let Some(start) = start_time(pid) {
        let _ = store::write_control(
            control,
            IDENTITY_FILE,
            format!("{pid} {start}\n").as_bytes(),
        );
    }
}

pub use paddock_process::start_time;

/// The pid of the redis-server this directory's instance ran, if that very
/// process (same pid, same start time, still redis-server) is alive.
pub fn adoptable(control: &Path) -> Option<u32> {
    let text = store::Dir::open(control)
        .ok()?
        .read_to_string(IDENTITY_FILE)
        .ok()?;
    let mut f = text.split_whitespace();
    let pid: u32 = f.next()?.parse().ok()?;
    let recorded: u64 = f.next()?.parse().ok()?;
    paddock_process::is_same(pid, recorded, "redis-server").then_some(pid)
}

/// Waits for our child's exit (the runtime reaps it on SIGCHLD: an event,
/// not a poll) and describes it.
pub async fn wait(mut child: Child, dirs: &InstanceDirs, secrets: &[String]) -> ExitReport {
    let (description, clean) = match child.wait().await {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (format!("exited with status {code}"), code == 0),
            (None, Some(sig)) => (
                match Signal::try_from(sig) {
                    Ok(s) => format!("killed by {s}"),
                    Err(_) => format!("killed by signal {sig}"),
                },
                false,
            ),
            _ => ("exited".to_owned(), false),
        },
        Err(e) => (format!("could not be waited for: {e}"), false),
    };
    ExitReport {
        description,
        clean,
        log_tail: log_tail_off_thread(dirs, secrets).await,
    }
}

/// Waits for the exit of a process that is not our child (adopted after an
/// agent restart) through a pidfd, which becomes readable when it exits. Its
/// exit status belongs to its real parent, so it is reported as unknown.
pub async fn wait_adopted(pid: u32, dirs: &InstanceDirs, secrets: &[String]) -> ExitReport {
    let pidfd = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let exited = match pidfd {
        Some(fd) => {
            // A detached thread blocks in poll(2) on the pidfd: no unsafe fd
            // registration, and it never holds up the agent's exit.
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let mut fds = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::IN,
                )];
                while rustix::event::poll(&mut fds, None).is_err() {}
                let _ = tx.send(());
            });
            rx.await.is_ok()
        }
        None => false,
    };
    if !exited {
        // No pidfd (kernel before 5.3): fall back to looking every 50 ms.
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && is_alive(pid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ExitReport {
        description: "exited (status unknown: it was adopted after an agent restart)".into(),
        clean: false,
        log_tail: log_tail_off_thread(dirs, secrets).await,
    }
}

/// [`log_tail`] on the blocking pool: file reads stay off the runtime's
/// threads.
async fn log_tail_off_thread(dirs: &InstanceDirs, secrets: &[String]) -> Vec<String> {
    let (dirs, secrets) = (dirs.clone(), secrets.to_vec());
    tokio::task::spawn_blocking(move || log_tail(&dirs, &secrets))
        .await
        .unwrap_or_default()
}

fn is_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// The last lines of the instance's logs: Redis's own, then its stdout.
/// Neither is followed through a symlink: redis.log is in Redis's directory.
/// Passwords are masked: Redis echoes a config line it rejects.
pub fn log_tail(dirs: &InstanceDirs, secrets: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    for path in [
        dirs.redis.join(store::LOG_FILE),
        dirs.control.join(store::STDOUT_LOG_FILE),
    ] {
        let Ok(mut f) = store::open_read(&path) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let mut text = String::new();
        if f.read_to_string(&mut text).is_err() {
            continue;
        }
        let tail: Vec<String> = text
            .lines()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(LOG_TAIL_LINES)
            .map(str::to_owned)
            .collect();
        lines.extend(tail.into_iter().rev());
    }
    let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
    crate::redact::lines(lines.split_off(skip), secrets)
}

pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

/// Polls every few milliseconds until process `pid` answers with its data
/// loaded. `Some(true)` ready, `Some(false)` timed out, `None` cancelled
/// (process gone). While it reports loading, the deadline keeps moving: a
/// large data set may take longer than `timeout` to load, and killing it
/// would only start the load again.
pub async fn wait_ready(
    endpoint: &Endpoint,
    pid: u32,
    timeout: Duration,
    cancelled: &CancellationToken,
) -> Option<bool> {
    let mut deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let mut warned = false;
    loop {
        if cancelled.is_cancelled() {
            return None;
        }
        match redis_access::readiness(endpoint, pid).await {
            redis_access::Readiness::Ready => return Some(true),
            redis_access::Readiness::Loading => deadline = tokio::time::Instant::now() + timeout,
            redis_access::Readiness::Impostor(other) if !warned => {
                warned = true;
                tracing::warn!(
                    port = endpoint.port,
                    other,
                    pid,
                    "another redis-server (pid {other}) answers on this instance's address; ours cannot serve until it is gone"
                );
            }
            _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_start_time_and_refuses_a_wrong_one() {
        let me = std::process::id();
        let start = start_time(me).expect("own start time");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(IDENTITY_FILE),
            format!("{me} {}\n", start + 1),
        )
        .unwrap();
        assert_eq!(adoptable(dir.path()), None, "start time differs: not ours");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join(store::LOG_FILE), text).unwrap();
        let tail = log_tail(
            &InstanceDirs {
                control: dir.path().join("control"),
                redis: dir.path().to_owned(),
            },
            &[],
        );
        assert_eq!(tail.len(), LOG_TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 49"));
    }
}
