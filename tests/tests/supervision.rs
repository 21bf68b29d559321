//! What an operator watches when a Redis process dies: `paddock events`
//! shows the crash and the restart live, `paddock logs` shows Redis's log
//! through the agent, and `-f` follows it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use paddock_tests::{Lab, bin_dir, paddock, stdout};

fn kill_instance(lab: &Lab, box_index: usize, instance: &str) -> u32 {
    let pid: u32 = std::fs::read_to_string(lab.pidfile(box_index, instance))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    pid
}

/// Spawns `paddock ARGS`, sending its stdout lines to a channel. With
/// `ready_on_stderr`, returns once it has printed its first stderr line
/// (bounded: 10 s).
fn spawn_lines(
    args: &[&str],
    ready_on_stderr: bool,
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin_dir().join("paddock"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let err = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = ready_tx.send(line);
        }
    });
    if ready_on_stderr {
        let _ = ready_rx.recv_timeout(Duration::from_secs(10));
    }
    (child, rx)
}

#[test]
fn events_and_logs_show_a_crash_and_its_restart() {
    let lab = Lab::new(24);
    assert!(lab.up(&[]).status.success());
    let inventory = lab.inventory().display().to_string();

    let (mut events, lines) = spawn_lines(
        &[
            "events",
            "-i",
            &inventory,
            "--count",
            "2",
            "--seconds",
            "30",
            "--json",
        ],
        true,
    );
    let killed = kill_instance(&lab, 1, "redis-7001");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("two events within 30 s");
        seen.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert!(events.wait().unwrap().success());
    assert_eq!(seen[0]["host"], "box2");
    assert_eq!(seen[0]["instance"], "redis-7001");
    assert_eq!(seen[0]["from"], "RUNNING");
    assert_eq!(seen[0]["to"], "STARTING");
    assert_eq!(seen[0]["detail"], "killed by SIGKILL");
    assert_ne!(seen[0]["pid"], killed);
    assert_eq!(seen[1]["from"], "STARTING");
    assert_eq!(seen[1]["to"], "RUNNING");

    let out = paddock(&["logs", "-i", &inventory, "box2", "redis-7001", "-n", "200"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("Ready to accept connections"), "{text}");
    assert!(
        !text.contains(&lab.password()),
        "the password never shows in logs"
    );

    // -f: a second crash shows up in the followed log.
    let (mut follow, lines) = spawn_lines(
        &[
            "logs",
            "-i",
            &inventory,
            "box2",
            "redis-7001",
            "-n",
            "0",
            "-f",
        ],
        false,
    );
    std::thread::sleep(Duration::from_millis(300));
    kill_instance(&lab, 1, "redis-7001");
    let mut found = false;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        if line.contains("Ready to accept connections") {
            found = true;
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(found, "the restart's log lines reached `logs -f`");

    let unknown = paddock(&["logs", "-i", &inventory, "box9", "redis-7001"]);
    assert!(!unknown.status.success());
    assert!(paddock_tests::stderr(&unknown).contains("box1, box2, box3"));
}
