//! `paddock rotate-password`: no failed request for a client that keeps
//! working through it, no broken replication link, no restart; the old
//! password stops working only at `--finish`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paddock_tests::{Lab, apply_agreeing, connect, field, paddock, stderr, stdout};

async fn sync_full_total(lab: &Lab, password: &str) -> i64 {
    let mut total = 0;
    for (ip, port) in lab.nodes() {
        let mut c = connect(ip, port, password).await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut c)
            .await
            .unwrap();
        total += field(&info, "sync_full")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
    }
    total
}

async fn all_links_up(lab: &Lab, password: &str) -> bool {
    for (ip, port) in lab.nodes() {
        let mut c = connect(ip, port, password).await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .unwrap();
        if field(&info, "role").as_deref() == Some("slave")
            && field(&info, "master_link_status").as_deref() != Some("up")
        {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_password_fails_no_request_and_breaks_no_link() {
    let lab = Lab::new(36);
    assert!(lab.up(&[]).status.success());
    let inventory = lab.inventory().display().to_string();
    let old = lab.password();
    let full_before = sync_full_total(&lab, &old).await;

    // A client that keeps writing (to box1's master, a key of its slots).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut c = connect(lab.addresses[0], 7000, &old).await.unwrap();
        let mut key = String::new();
        for n in 0.. {
            key = format!("rot:{n}");
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            if slot <= 5460 {
                break;
            }
        }
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && ok + failed < 1_000_000
            {
                let r: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&key)
                    .arg(ok)
                    .query_async(&mut c)
                    .await;
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        if failed == 0 {
                            eprintln!("first failed write: {e}");
                        }
                        failed += 1;
                    }
                }
            }
            (ok, failed)
        })
    };

    let out = paddock(&["rotate-password", "-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Both passwords work now"));
    let new = lab.password();
    assert_ne!(new, old);
    assert!(
        !stdout(&out).contains(&new) && !stderr(&out).contains(&new),
        "never printed"
    );
    for (ip, port) in lab.nodes() {
        assert!(
            connect(ip, port, &new).await.is_ok(),
            "new password on {ip}:{port}"
        );
        assert!(
            connect(ip, port, &old).await.is_ok(),
            "old password still on {ip}:{port}"
        );
    }
    let again = apply_agreeing(&["-i", &inventory]);
    assert!(
        stdout(&again).contains("Nothing to do"),
        "no restart pending: {}",
        stdout(&again)
    );

    let out = paddock(&["rotate-password", "-i", &inventory, "--finish"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (ip, port) in lab.nodes() {
        assert!(connect(ip, port, &new).await.is_ok());
        let refused = connect(ip, port, &old).await;
        assert!(
            refused.is_err(),
            "old password refused on {ip}:{port} after --finish"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = writer.await.unwrap();
    assert!(ok > 100, "{ok}");
    assert_eq!(failed, 0, "no failed request ({ok} succeeded)");
    assert!(
        all_links_up(&lab, &new).await,
        "every replication link is up"
    );
    assert_eq!(
        sync_full_total(&lab, &new).await,
        full_before,
        "no full resync happened"
    );
}

/// The sentinels rotate too: after `--finish`, with every sentinel
/// restarted from its own rewritten sentinel.conf and the links renewed,
/// they still authenticate to the master, the replicas and each other, so
/// a killed master is failed over. (Before, they kept the old password:
/// refused by the master, they saw it down and could not fail it over.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_password_keeps_the_sentinels_able_to_fail_over() {
    use paddock_tests::ha::{Follow, Follower, kill9};
    use paddock_tests::wait_until;

    let lab = Lab::new(88);
    let up = lab.up(&["--topology", "sentinel"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let old = lab.password();

    let out = paddock(&["rotate-password", "-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = paddock(&["rotate-password", "-i", &inventory, "--finish"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let new = lab.password();
    assert_ne!(new, old);
    for &ip in &lab.addresses {
        assert!(connect(ip, 26379, &new).await.is_ok(), "sentinel {ip}: new");
        assert!(
            connect(ip, 26379, &old).await.is_err(),
            "sentinel {ip}: old password refused after --finish"
        );
    }

    // Every sentinel restarts (its agent brings it back from the
    // sentinel.conf Sentinel rewrote): every link is new.
    let pid_of = |i: usize, instance: &str| -> u32 {
        std::fs::read_to_string(lab.pidfile(i, instance))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let sentinel_pids: Vec<u32> = (0..3).map(|i| pid_of(i, "sentinel-26379")).collect();
    for &pid in &sentinel_pids {
        kill9(pid);
    }
    let guarded = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let inventory = inventory.clone();
        async move { paddock(&["status", "-i", &inventory]).status.success() }
    })
    .await;
    let status = paddock(&["status", "-i", &inventory]);
    assert!(
        guarded,
        "the restarted sentinels guard the master: {}{}",
        stdout(&status),
        stderr(&status)
    );
    // Their pings are answered with PONG, not refused (more than the 3 s
    // after which a refusal shows).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = paddock(&["status", "-i", &inventory]);
    assert!(
        status.status.success() && !stdout(&status).contains("refuses"),
        "{}",
        stdout(&status)
    );
    let plan = paddock(&["plan", "-i", &inventory]);
    assert!(stdout(&plan).contains("No changes"), "{}", stdout(&plan));

    // SIGKILL of the master: the sentinels fail over.
    let sentinels = lab.addresses.iter().map(|&ip| (ip, 26379)).collect();
    let mut follower = Follower::new(
        Follow::Sentinel {
            sentinels,
            name: "lab".into(),
        },
        &new,
    );
    let before = follower.master().await.expect("a master");
    let index = lab.addresses.iter().position(|&ip| ip == before.0).unwrap();
    kill9(pid_of(index, "redis-7000"));
    let moved = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let follower = &follower;
        async move { follower.master().await.is_some_and(|m| m != before) }
    })
    .await;
    assert!(moved, "the sentinels named a new master");
    let mut written = false;
    for _ in 0..100 {
        if follower.set("after-rotation", 1, 0).await.is_some() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written, "writes go to the new master");
    let settled = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let inventory = inventory.clone();
        async move { paddock(&["status", "-i", &inventory]).status.success() }
    })
    .await;
    assert!(settled, "healthy after the failover");

    // Credentials that went wrong behind the controller's back (as after a
    // rotation that did not reach them): box2's sentinel gets a wrong
    // auth-pass, box3's sentinel another password of its own. Their links
    // are cut so that they must authenticate again.
    let other = "0123456789abcdef0123456789abcdef-not-ours";
    let mut s2 = connect(lab.addresses[1], 26379, &new).await.unwrap();
    let () = redis::cmd("SENTINEL")
        .arg(&["SET", "lab", "auth-pass", other][..])
        .query_async(&mut s2)
        .await
        .unwrap();
    let master = follower.master().await.unwrap();
    let mut m = connect(master.0, master.1, &new).await.unwrap();
    for kind in ["normal", "pubsub"] {
        let _: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", kind][..])
            .query_async(&mut m)
            .await
            .unwrap();
    }
    let mut s3 = connect(lab.addresses[2], 26379, &new).await.unwrap();
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "resetpass", &format!(">{other}")][..])
        .query_async(&mut s3)
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal"][..])
        .query_async(&mut s3)
        .await
        .unwrap();
    let mut seen = String::new();
    let detected = wait_until(Duration::from_secs(20), Duration::from_millis(300), || {
        let out = paddock(&["status", "-i", &inventory]);
        seen = stdout(&out);
        let both = !out.status.success()
            && seen.contains("box2:sentinel-26379: the master refuses its credentials")
            && seen.contains("box3:sentinel-26379: refuses the deployment's password");
        async move { both }
    })
    .await;
    assert!(detected, "status names both sentinels: {seen}");
    let plan = paddock(&["plan", "-i", &inventory]);
    assert!(
        stdout(&plan).contains("box2:sentinel-26379: the master refuses its credentials")
            && stdout(&plan).contains("box3:sentinel-26379: refuses the deployment's password"),
        "{}",
        stdout(&plan)
    );
    let apply = apply_agreeing(&["-i", &inventory]);
    assert!(
        apply.status.success(),
        "apply repairs them: {}",
        stderr(&apply)
    );
    let status = paddock(&["status", "-i", &inventory]);
    assert!(status.status.success(), "{}", stdout(&status));
    assert!(connect(lab.addresses[2], 26379, &new).await.is_ok());
}
