//! `paddock rotate-password`: no failed request for a client that keeps
//! working through it, no broken replication link, no restart; the old
//! password stops working only at `--finish`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paddock_tests::{Lab, connect, field, paddock, stderr, stdout};

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
    let again = paddock(&["apply", "-i", &inventory]);
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
