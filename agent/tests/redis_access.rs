//! The agent's connections to a real redis-server (on 127.0.47.1): a
//! pipeline is written at most once, even when its reply times out, and a
//! restarted Redis gets a fresh connection.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::FutureExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use paddock_agent::redis_access::{Connections, Reply};
use paddock_agent::supervisor::Endpoint;

const ADDRESS: &str = "127.0.47.1";

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// A password-less redis-server, as the redis user when run as root.
    fn start(port: u16) -> Redis {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()
            .unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", ADDRESS, "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if nix::unistd::Uid::effective().is_root()
            && let Ok(Some(user)) = nix::unistd::User::from_name("redis")
        {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let child = cmd.spawn().expect("redis-server in PATH");
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: ADDRESS.parse().unwrap(),
            port: self.port,
            password: String::new(),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn cmd(words: &str) -> Vec<Vec<u8>> {
    words.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

async fn until_answers(conns: &Connections, r: &Redis) {
    let (endpoint, pid, ping) = (r.endpoint(), r.pid(), [cmd("PING")]);
    let answers =
        paddock_tests::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            conns
                .run("r", &endpoint, Some(pid), &ping)
                .map(|r| r.is_ok())
        })
        .await;
    assert!(answers, "redis-server did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_whose_reply_times_out_is_not_sent_again() {
    let redis = Redis::start(7100);
    let conns = Connections::with_response_timeout(Duration::from_millis(300));
    until_answers(&conns, &redis).await;
    let ep = redis.endpoint();
    let pid = Some(redis.pid());
    conns
        .run("r", &ep, pid, &[cmd("SET counter 0")])
        .await
        .unwrap();

    // A frozen Redis: the INCR reaches its socket but no reply comes.
    kill(Pid::from_raw(redis.pid() as i32), Signal::SIGSTOP).unwrap();
    let frozen = conns.run("r", &ep, pid, &[cmd("INCR counter")]).await;
    assert!(frozen.is_err(), "no reply within the response timeout");
    kill(Pid::from_raw(redis.pid() as i32), Signal::SIGCONT).unwrap();

    // Whatever reached Redis runs once it thaws; the INCR was written once.
    let fresh = Connections::default();
    until_answers(&fresh, &redis).await;
    let got = fresh
        .run("r", &ep, pid, &[cmd("GET counter")])
        .await
        .unwrap();
    assert_eq!(got, vec![Reply::Bulk(b"1".to_vec())], "INCR ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_gets_a_fresh_connection_and_no_command_is_lost() {
    let first = Redis::start(7101);
    let conns = Connections::default();
    until_answers(&conns, &first).await;
    let old_pid = first.pid();
    drop(first);
    let second = Redis::start(7101);
    assert_ne!(second.pid(), old_pid);
    until_answers(&conns, &second).await;
    let got = conns
        .run(
            "r",
            &second.endpoint(),
            Some(second.pid()),
            &[cmd("INCR n")],
        )
        .await
        .unwrap();
    assert_eq!(got, vec![Reply::Int(1)]);
}
