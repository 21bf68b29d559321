//! A live controller's lease is never taken for an abandoned one just
//! because its pid means nothing here: a holder in another PID namespace
//! (here a real `unshare --pid --fork --mount-proc`) keeps the deployment
//! locked, while a dead controller of this machine and namespace is still
//! taken over at once. `paddock unlock --force` breaks a lease and says
//! whose it was.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_proto::v1::{LockRequest, agent_client::AgentClient};
use paddock_tests::{Lab, apply_agreeing, paddock, stderr, stdout};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A process in a PID namespace of its own; killed on drop.
struct Unshared {
    outer: std::process::Child,
    inner_pid: u32,
}

impl Unshared {
    fn start() -> Unshared {
        let outer = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let children = format!("/proc/{0}/task/{0}/children", outer.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        let inner_pid = loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "unshare started no child");
            std::thread::sleep(Duration::from_millis(20));
        };
        Unshared { outer, inner_pid }
    }

    fn pid_namespace(&self) -> u64 {
        std::fs::metadata(format!("/proc/{}/ns/pid", self.inner_pid))
            .unwrap()
            .ino()
    }
}

impl Drop for Unshared {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.inner_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.outer.kill();
        let _ = self.outer.wait();
    }
}

fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .unwrap()
        .trim()
        .to_owned()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_from_another_pid_namespace_is_not_taken() {
    let lab = Lab::new(52);
    assert!(lab.up(&[]).status.success(), "lab up");
    let inventory = lab.inventory().display().to_string();
    let certs = lab.dir().join(".paddock/lab/certs");
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    let mut clients = Vec::new();
    for ip in &lab.addresses {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(
                read("controller.pem"),
                read("controller.key"),
            ))
            .domain_name(ip.to_string());
        let channel = Endpoint::from_shared(format!("https://{ip}:7443"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(AgentClient::new(channel));
    }

    // A controller in its own PID namespace on this machine: pid 1 there.
    // Seen from here, pid 1 is no paddock process: the old rule (same host
    // name, pid not running) took its lease.
    let other = Unshared::start();
    let our_ns = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
    assert_ne!(other.pid_namespace(), our_ns);
    let holder = format!("mallory@{} pid 1", hostname());
    let theirs = LockRequest {
        deployment: "lab".into(),
        holder: holder.clone(),
        ttl_ms: 60_000,
        token: "ab".repeat(16),
        machine_id: machine_id(),
        pid_namespace: other.pid_namespace(),
        pid: 1,
        force: false,
    };
    for c in &mut clients {
        assert!(c.lock(theirs.clone()).await.unwrap().into_inner().granted);
    }
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(!out.status.success(), "apply must wait for the live lease");
    assert_eq!(out.status.code(), Some(4), "locked: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("deployment lab is locked by {holder} since ")),
        "{}",
        stderr(&out)
    );

    // unlock says whose lease it breaks, and wants --force.
    let out = paddock(&["unlock", "-i", &inventory]);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(2), "usage: {}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = paddock(&["unlock", "-i", &inventory, "--force"]);
    assert!(out.status.success());
    for host in ["box1", "box2", "box3"] {
        assert!(
            stdout(&out).contains(&format!("{host}: broke the lease of {holder} (since ")),
            "{}",
            stdout(&out)
        );
    }
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(stdout(&out).contains("Nothing to do"), "{}", stdout(&out));

    // Control: a dead controller of this machine and namespace (no pid
    // above pid_max ever runs) is taken over at once.
    let dead = LockRequest {
        holder: format!("bob@{} pid 4194305", hostname()),
        token: "cd".repeat(16),
        pid_namespace: our_ns,
        pid: 4_194_305,
        ..theirs
    };
    for c in &mut clients {
        assert!(c.lock(dead.clone()).await.unwrap().into_inner().granted);
    }
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(stdout(&out).contains("Nothing to do"), "{}", stdout(&out));
    let out = paddock(&["unlock", "-i", &inventory, "--force"]);
    assert!(
        stdout(&out).contains("box1: no lease"),
        "apply released what it took: {}",
        stdout(&out)
    );
}
