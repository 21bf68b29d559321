//! The controller's documented exit codes, as a script running the real
//! `paddock` binary sees them: 0 done, 1 failed or unhealthy, 2 bad
//! inventory or usage, 3 an agent unreachable, 4 locked by another
//! controller. A lab on 127.0.123.1-3.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use paddock_proto::v1::LockRequest;
use paddock_tests::{Lab, agent_client, paddock, process_is, stderr, stdout};

fn code(args: &[&str]) -> (Option<i32>, String) {
    let out = paddock(args);
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn usage_and_inventory_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml").display().to_string();
    let (exit, text) = code(&["plan", "-i", &missing]);
    assert_eq!(exit, Some(2), "{text}");
    assert!(text.contains(&format!("cannot read {missing}")), "{text}");
    // --limit on a command that does not take it.
    let (exit, text) = code(&["stop", "-i", &missing, "--limit", "box1"]);
    assert_eq!(exit, Some(2), "{text}");
    assert!(text.contains("--limit is supported by"), "{text}");
    // An inventory that does not validate.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[deployment]\nname = \"BAD NAME\"\n").unwrap();
    let (exit, _) = code(&["status", "-i", &bad.display().to_string()]);
    assert_eq!(exit, Some(2));
    // Flags clap rejects.
    let (exit, _) = code(&["apply", "--no-such-flag"]);
    assert_eq!(exit, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_unhealthy_locked_and_unreachable_have_their_codes() {
    let lab = Lab::new(123);
    let up = lab.up(&[]);
    assert!(up.status.success(), "lab up: {}", stderr(&up));
    let inv = lab.inventory().display().to_string();

    let (exit, text) = code(&["status", "-i", &inv]);
    assert_eq!(exit, Some(0), "healthy: {text}");
    let (exit, text) = code(&["apply", "-i", &inv]);
    assert_eq!(exit, Some(0), "no-op apply: {text}");
    let (exit, text) = code(&["failover", "-i", &inv, "--shard", "9"]);
    assert_eq!(exit, Some(2), "no shard 9: {text}");

    // Another controller (another machine) holds the lease: 4, and
    // nothing is changed; unlock without --force is a usage error.
    let lease = LockRequest {
        deployment: "lab".into(),
        holder: "mallory@elsewhere pid 7".into(),
        ttl_ms: 60_000,
        token: "cd".repeat(16),
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        pid_namespace: 1,
        pid: 7,
        force: false,
    };
    for b in 0..3 {
        let mut c = agent_client(&lab, b).await;
        assert!(c.lock(lease.clone()).await.unwrap().into_inner().granted);
    }
    let (exit, text) = code(&["apply", "-i", &inv]);
    assert_eq!(exit, Some(4), "locked apply: {text}");
    assert!(text.contains("is locked by mallory@elsewhere"), "{text}");
    let (exit, text) = code(&["stop", "-i", &inv, "box1:redis-7001"]);
    assert_eq!(exit, Some(4), "locked stop: {text}");
    let (exit, text) = code(&["unlock", "-i", &inv]);
    assert_eq!(exit, Some(2), "unlock without --force: {text}");
    let (exit, text) = code(&["unlock", "-i", &inv, "--force"]);
    assert_eq!(exit, Some(0), "{text}");

    // A stopped replica: the deployment is not healthy (1).
    let (exit, text) = code(&["stop", "-i", &inv, "box1:redis-7001"]);
    assert_eq!(exit, Some(0), "stop: {text}");
    let (exit, text) = code(&["status", "-i", &inv]);
    assert_eq!(exit, Some(1), "unhealthy: {text}");
    let (exit, text) = code(&["start", "-i", &inv, "box1:redis-7001"]);
    assert_eq!(exit, Some(0), "start: {text}");

    // box3's agent dies: apply does what it can and exits 3; a command
    // that needs every agent fails with 3.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("lab.json")).unwrap())
            .unwrap();
    let box3 = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["host"] == "box3")
        .and_then(|a| a["pid"].as_u64())
        .unwrap() as u32;
    assert!(process_is(box3, "paddockd"));
    kill(Pid::from_raw(box3 as i32), Signal::SIGKILL).unwrap();
    let gone = paddock_tests::wait_until(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(20),
        || async { !process_is(box3, "paddockd") },
    )
    .await;
    assert!(gone, "box3's agent is gone");
    let (exit, text) = code(&["apply", "-i", &inv]);
    assert_eq!(exit, Some(3), "apply without box3: {text}");
    assert!(text.contains("box3: skipped (agent unreachable"), "{text}");
    let (exit, text) = code(&["stop", "-i", &inv, "box1:redis-7001"]);
    assert_eq!(exit, Some(3), "stop without box3: {text}");
    assert!(
        text.contains("cannot reach the agent of host box3"),
        "{text}"
    );
}
