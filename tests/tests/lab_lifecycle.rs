//! `paddock lab` as a new user drives it: a directory without a lab, an
//! agent port that is taken, asking for another topology in an existing
//! lab, and `lab down` after an agent was restarted by hand.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_tests::{Lab, bin_dir, paddock, process_is, stderr};

/// A lab on 127.0.105.`first`..`first + 2` (each test its own).
fn lab(first: u8) -> Lab {
    let mut lab = Lab::new(105);
    lab.addresses = (first..first + 3)
        .map(|i| format!("127.0.105.{i}").parse().unwrap())
        .collect();
    lab
}

fn agent_answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

#[test]
fn lab_status_of_a_directory_without_a_lab_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let out = paddock(&["lab", "status", "--dir", &d]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("there is no lab in {d}")), "{err}");
    assert!(err.contains("paddock lab up --dir"), "{err}");
}

#[test]
fn a_taken_agent_port_is_reported_at_once_and_nothing_is_left_running() {
    let lab = lab(1);
    let box1 = SocketAddr::new(lab.addresses[0], 7443);
    // Something else holds box2's agent port; it accepts TCP (the kernel's
    // backlog) but never speaks TLS.
    let squatter = TcpListener::bind(SocketAddr::new(lab.addresses[1], 7443)).unwrap();
    let started = Instant::now();
    // Bounded: an agent that is never noticed to have exited would make
    // lab up wait on the squatter for good.
    let dir = lab.dir().display().to_string();
    let addresses = lab.addresses_arg();
    let mut up = Command::new(bin_dir().join("paddock"))
        .args([
            "lab",
            "up",
            "--no-apply",
            "--dir",
            &dir,
            "--addresses",
            &addresses,
        ])
        .env("PADDOCKD", bin_dir().join("paddockd"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while up.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = up.kill();
    let up = up.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(!up.status.success());
    let err = stderr(&up);
    assert!(
        err.contains("the agent of box2 exited") && err.contains("Address already in use"),
        "the agent's own error is not quoted:\n{err}"
    );
    // The agent exits at once; lab up used to wait out its 15 s start
    // timeout. 10 s leaves room for a loaded machine.
    assert!(took < Duration::from_secs(10), "lab up took {took:?}");
    assert!(
        !agent_answers(box1),
        "box1's agent, started before box2 failed, is still running"
    );
    drop(squatter);
}

#[test]
fn another_topology_in_an_existing_lab_is_refused_unless_reset() {
    let lab = lab(4);
    let up = lab.up(&["--no-apply"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let again = lab.up(&["--no-apply", "--topology", "sentinel"]);
    assert!(!again.status.success());
    let err = stderr(&again);
    assert!(
        err.contains("it is a cluster lab, not sentinel") && err.contains("--reset"),
        "{err}"
    );
    let inventory = std::fs::read_to_string(lab.inventory()).unwrap();
    assert!(inventory.contains("topology = \"cluster\""));
    // Without --topology, lab up keeps the lab's own.
    let same = lab.up(&["--no-apply"]);
    assert!(same.status.success(), "{}", stderr(&same));

    let reset = lab.up(&["--no-apply", "--topology", "sentinel", "--reset"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    let inventory = std::fs::read_to_string(lab.inventory()).unwrap();
    assert!(inventory.contains("topology = \"sentinel\""), "{inventory}");
}

#[test]
fn lab_down_stops_an_agent_restarted_by_hand() {
    let lab = lab(7);
    let up = lab.up(&["--no-apply"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir().join("lab.json")).unwrap()).unwrap();
    let old = state["agents"][0]["pid"].as_u64().unwrap() as u32;
    paddock_tests::ha::kill9(old);
    let addr = SocketAddr::new(lab.addresses[0], 7443);
    for _ in 0..200 {
        if !agent_answers(addr) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The operator restarts box1's agent by hand, from the box's directory.
    let box1 = lab.dir().join("box1");
    let log = std::fs::File::create(box1.join("by-hand.log")).unwrap();
    let mut by_hand = Command::new(bin_dir().join("paddockd"))
        .args(["--config", "agent.toml"])
        .current_dir(&box1)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = by_hand.id();
    let mut serving = false;
    for _ in 0..500 {
        if agent_answers(addr) {
            serving = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(serving, "the hand-started agent does not listen on {addr}");
    let down = lab.down();
    assert!(down.status.success(), "{}", stderr(&down));
    // lab down waits for what it stops: the agent is gone when it returns.
    let gone = by_hand.try_wait().unwrap().is_some();
    if !gone {
        let _ = by_hand.kill();
        let _ = by_hand.wait();
    }
    assert!(
        gone && !process_is(pid, "paddockd"),
        "lab down left the agent restarted by hand running"
    );
}

#[test]
fn a_lab_in_a_directory_with_quotes_and_a_backslash_comes_up() {
    // The lab writes its agents' configs (paths) and its inventory with the
    // toml crate: a hand-written `data_dir = "..."` broke on these.
    let mut lab = Lab::new(124);
    lab.dir = tempfile::Builder::new()
        .prefix("paddock-lab-it's \"odd\" \\ dir-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let up = lab.up(&[]);
    assert!(up.status.success(), "lab up: {}", stderr(&up));
    let status = paddock(&["status", "-i", &lab.inventory().display().to_string()]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    // Each box's Redis keeps its data under the odd directory.
    let pid = std::fs::read_to_string(lab.pidfile(0, "redis-7000")).unwrap();
    assert!(process_is(pid.trim().parse().unwrap(), "redis-server"));
}
