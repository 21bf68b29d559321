//! One real `paddockd` on its own address with its data in a temporary
//! directory: the harness of the agent's own tests (agent/tests) and of
//! the benchmarks. Dropping it kills the agent and whatever Redis it left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process_is;

pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// The agent `binary` serving plaintext on `address`:7443.
    pub fn start(binary: &Path, address: &str) -> Agent {
        let dir = temp_dir();
        let child = spawn(binary, dir.path(), address);
        Agent { child, dir }
    }

    pub fn pidfile(&self, name: &str) -> PathBuf {
        pidfile(self.dir.path(), name)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The agent may not have stopped its Redis if the test failed midway.
        let instances = self.dir.path().join("data/instances");
        for entry in std::fs::read_dir(instances).into_iter().flatten().flatten() {
            if let Some(pid) = read_pid(&self.pidfile(&entry.file_name().to_string_lossy()))
                && process_is(pid, "redis-server")
            {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// A temporary directory redis-server can reach: 0755, as it runs as the
/// unprivileged redis user when the tests run as root.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .expect("temp dir")
}

/// An instance's pidfile under the agent directory `dir`.
pub fn pidfile(dir: &Path, name: &str) -> PathBuf {
    dir.join("data/instances").join(name).join("redis.pid")
}

pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Starts `binary` on `address`:7443 with its data under `dir`.
pub fn spawn(binary: &Path, dir: &Path, address: &str) -> Child {
    command(binary, dir, address, "")
        .spawn()
        .expect("start paddockd")
}

/// Writes the agent's config (plaintext on `address`:7443, data under
/// `dir`, plus the TOML lines `extra`) and returns the command that runs it.
pub fn command(binary: &Path, dir: &Path, address: &str, extra: &str) -> Command {
    let config = dir.join("agent.toml");
    let text = paddock_controller::lab::AgentConfigFile {
        listen: format!("{address}:7443").parse().expect("agent address"),
        data_dir: dir.join("data"),
        fast_failover: None,
        insecure_plaintext: true,
        tls: None,
    }
    .to_toml(None)
    .expect("agent config");
    std::fs::write(&config, format!("{text}{extra}")).expect("write agent.toml");
    let mut command = Command::new(binary);
    command.arg("--config").arg(&config).stdin(Stdio::null());
    command
}
