//! `topology = "sentinel"`: one master, two replicas and three sentinels,
//! checked the way operators check it by hand, with a client that follows
//! Sentinel the way real clients do.

use std::net::IpAddr;
use std::time::Duration;

use paddock_tests::ha::{Follow, Follower, kill9, missing, write_through};
use paddock_tests::{Lab, apply_agreeing, connect, field, paddock, stderr, stdout, wait_until};

fn pid_of(lab: &Lab, box_index: usize) -> u32 {
    std::fs::read_to_string(lab.pidfile(box_index, "redis-7000"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn role(ip: IpAddr, password: &str) -> (String, Option<String>, Option<String>) {
    let mut c = connect(ip, 7000, password).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .unwrap();
    (
        field(&info, "role").unwrap_or_default(),
        field(&info, "master_host"),
        field(&info, "master_link_status"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_lab_fails_over_on_a_master_kill_and_loses_no_acknowledged_write() {
    let lab = Lab::new(37);
    let up = lab.up(&["--topology", "sentinel"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(
        stdout(&up).contains("every sentinel watching it"),
        "{}",
        stdout(&up)
    );
    let inventory = lab.inventory().display().to_string();
    let password = lab.password();
    let [a, b, c] = [lab.addresses[0], lab.addresses[1], lab.addresses[2]];
    let sentinels: Vec<(IpAddr, u16)> = lab.addresses.iter().map(|&ip| (ip, 26379)).collect();

    // Every instance and every sentinel answers.
    for &ip in &lab.addresses {
        for port in [7000, 26379] {
            let mut conn = connect(ip, port, &password).await.unwrap();
            let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
            assert_eq!(pong, "PONG", "{ip}:{port}");
        }
    }

    // A write on the master is read on every replica.
    let mut follower = Follower::new(
        Follow::Sentinel {
            sentinels: sentinels.clone(),
            name: "lab".into(),
        },
        &password,
    );
    assert_eq!(follower.master().await, Some((a, 7000)));
    let mut acked = None;
    for _ in 0..50 {
        acked = follower.set("hello", 1, 2).await;
        if acked == Some(2) {
            break;
        }
    }
    assert_eq!(acked, Some(2), "both replicas acknowledged (WAIT 2)");
    for ip in [b, c] {
        let mut r = connect(ip, 7000, &password).await.unwrap();
        let v: Option<u64> = redis::cmd("GET")
            .arg("hello")
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(v, Some(1), "read on the replica {ip}");
    }
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));

    // SIGKILL of the master's process: its agent has the sentinels fail over
    // at once; the Sentinel-following client writes again, and the old
    // master comes back as a replica.
    let victim = pid_of(&lab, 0);
    let log = write_through(
        &mut follower,
        "k",
        Duration::from_secs(6),
        Duration::from_secs(1),
        || kill9(victim),
    )
    .await;
    eprintln!("master SIGKILL: {log}");
    let new_master = follower.master().await.unwrap();
    assert_ne!(new_master, (a, 7000), "the sentinels named a new master");
    let last = *log.acked.last().unwrap();
    assert!(
        log.acked.iter().filter(|&&n| n > last / 2).count() > 10,
        "the client wrote again after the failover"
    );
    let lost = missing(&mut follower, "k", &log.waited).await;
    assert!(
        lost.is_empty(),
        "writes acknowledged with WAIT lost: {lost:?}"
    );
    let rejoined = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        let password = password.clone();
        async move {
            let (role, master, link) = role(a, &password).await;
            role == "slave"
                && master == Some(new_master.0.to_string())
                && link.as_deref() == Some("up")
        }
    })
    .await;
    assert!(
        rejoined,
        "the old master rejoined as a replica of the new one"
    );
    let healthy = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { paddock(&["status", "-i", &inventory]).status.success() },
    )
    .await;
    assert!(healthy, "status healthy again");
    let s: serde_json::Value =
        serde_json::from_slice(&paddock(&["status", "-i", &inventory, "--json"]).stdout).unwrap();
    let box1 = &s["hosts"][0]["instances"];
    assert_eq!(
        box1[0]["role"], "replica",
        "status shows the new roles: {s}"
    );
    assert_eq!(box1[1]["role"], "sentinel");
    // apply does not fight the new roles.
    let again = apply_agreeing(&["-i", &inventory]);
    assert!(
        stdout(&again).contains("Nothing to do"),
        "{}",
        stdout(&again)
    );
    assert_eq!(follower.master().await, Some(new_master));

    // Choosing the replica is the sentinels' job: asking for one is a
    // usage mistake (exit 2) that names the flag, and nothing moves.
    let chosen = paddock(&["failover", "-i", &inventory, "--to", "box1:redis-7000"]);
    assert_eq!(chosen.status.code(), Some(2), "{}", stderr(&chosen));
    assert!(
        stderr(&chosen).contains("without --to"),
        "{}",
        stderr(&chosen)
    );
    assert_eq!(follower.master().await, Some(new_master));

    // A manual failover while a client writes: nothing acknowledged is lost.
    let inventory2 = inventory.clone();
    let (done_tx, done) = std::sync::mpsc::channel();
    let log = write_through(
        &mut follower,
        "m",
        Duration::from_secs(6),
        Duration::from_millis(500),
        move || {
            std::thread::spawn(move || {
                let _ = done_tx.send(paddock(&["failover", "-i", &inventory2]));
            });
        },
    )
    .await;
    let out = done.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("manual failover: {log}");
    let after = follower.master().await.unwrap();
    assert_ne!(after, new_master, "the manual failover moved the master");
    let lost = missing(&mut follower, "m", &log.acked).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let settled = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do") },
    )
    .await;
    assert!(settled, "apply converges to nothing to do");

    // A new down-after reaches the running sentinels live: none restarts.
    let sentinel_pids = |lab: &Lab| -> Vec<String> {
        (0..3)
            .map(|i| {
                std::fs::read_to_string(
                    lab.dir()
                        .join(format!("box{}/data/control/sentinel-26379/process", i + 1)),
                )
                .unwrap()
            })
            .collect()
    };
    let before = sentinel_pids(&lab);
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    std::fs::write(
        lab.inventory(),
        text.replace("port = 26379\n", "port = 26379\ndown_after_ms = 4000\n"),
    )
    .unwrap();
    let changed = apply_agreeing(&["-i", &inventory]);
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert!(
        stderr(&changed).contains("SENTINEL SET"),
        "{}",
        stderr(&changed)
    );
    assert_eq!(sentinel_pids(&lab), before, "no sentinel restarted");
    for &(ip, port) in &sentinels {
        let mut s = connect(ip, port, &password).await.unwrap();
        let view: Vec<String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg("lab")
            .query_async(&mut s)
            .await
            .unwrap();
        let at = view
            .iter()
            .position(|k| k == "down-after-milliseconds")
            .unwrap();
        assert_eq!(view[at + 1], "4000", "{ip}:{port}");
    }
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));
}
