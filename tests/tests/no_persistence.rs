//! A cluster with persistence off: a master's redis-server is SIGKILLed and
//! its agent brings it back. Restarted as it was, it would come back empty
//! and its replica would copy the empty data set; Paddock's agent has the
//! replica take over first, so every key written before the crash is there.

use std::time::Duration;

use paddock_tests::{Lab, apply_agreeing, connect, field, paddock, stderr, wait_until};
use redis::AsyncCommands;
use redis::cluster::ClusterClientBuilder;

const KEYS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataless_master_that_dies_does_not_wipe_its_replica() {
    let lab = Lab::new(26);
    assert!(lab.up(&["--no-apply"]).status.success());
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    let text = text.replace(
        "appendonly = true",
        "appendonly = false\nrdb_snapshots = false",
    );
    std::fs::write(lab.inventory(), text).unwrap();
    let inventory = lab.inventory().display().to_string();
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    let password = lab.password();

    let seeds = lab.seeds();
    let client = ClusterClientBuilder::new(seeds)
        .password(password.clone())
        .build()
        .unwrap();
    let mut c = client.get_async_connection().await.unwrap();
    for i in 0..KEYS {
        let _: () = c.set(format!("np:{i}"), i).await.unwrap();
    }
    // Replication is asynchronous: let the replicas catch up, as WAIT would.
    let mut box1 = connect(lab.addresses[0], 7000, &password).await.unwrap();
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut box1)
        .await
        .unwrap();
    let conf =
        std::fs::read_to_string(lab.dir().join("box1/data/control/redis-7000/redis.conf")).unwrap();
    assert!(
        conf.contains("appendonly no") && conf.contains("save \"\""),
        "{conf}"
    );

    let victim: u32 = std::fs::read_to_string(lab.pidfile(0, "redis-7000"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // Back to a healthy cluster, the old master now a replica.
    let healed = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let mut ok = true;
            for (ip, port) in lab.nodes() {
                let Ok(mut n) = connect(ip, port, &password).await else {
                    return false;
                };
                let info: String = match redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut n)
                    .await
                {
                    Ok(i) => i,
                    Err(_) => return false,
                };
                let cluster: String =
                    match redis::cmd("CLUSTER").arg("INFO").query_async(&mut n).await {
                        Ok(i) => i,
                        Err(_) => return false,
                    };
                ok &= field(&cluster, "cluster_state").as_deref() == Some("ok");
                if field(&info, "role").as_deref() == Some("slave") {
                    ok &= field(&info, "master_link_status").as_deref() == Some("up");
                }
            }
            ok
        },
    )
    .await;
    assert!(healed, "cluster healthy again with every replica in sync");
    let mut box1 = connect(lab.addresses[0], 7000, &password).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut box1)
        .await
        .unwrap();
    assert_eq!(field(&info, "role").as_deref(), Some("slave"), "{info}");

    let mut c = client.get_async_connection().await.unwrap();
    let mut missing = 0;
    for i in 0..KEYS {
        let v: Option<usize> = c.get(format!("np:{i}")).await.unwrap();
        if v != Some(i) {
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "keys lost after the automatic recovery");
    // Serving, nothing broken; the handover piled two masters on one box,
    // which status counts against health until apply spreads them again.
    let status = paddock(&["status", "-i", &inventory, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["problems"], serde_json::json!([]), "{s}");
    assert!(apply_agreeing(&["-i", &inventory]).status.success());
    let status = paddock(&["status", "-i", &inventory]);
    assert!(status.status.success(), "status healthy");
}

/// The same hazard in a replication group: with fast failover off, a
/// dataless master is still never restarted as master. The agent has a
/// replica take over first (itself, or through the sentinels), then starts
/// the old master as that replica's replica.
async fn dataless_group_master_dies(octet: u8, topology: &str) {
    use paddock_tests::ha::{Follow, Follower, kill9, missing};
    let lab = Lab::new(octet);
    assert!(
        lab.up(&["--no-apply", "--no-fast-failover", "--topology", topology])
            .status
            .success()
    );
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    let text = text.replace(
        "appendonly = true",
        "appendonly = false\nrdb_snapshots = false",
    );
    std::fs::write(lab.inventory(), text).unwrap();
    let inventory = lab.inventory().display().to_string();
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    let password = lab.password();
    let follow = if topology == "sentinel" {
        Follow::Sentinel {
            sentinels: lab.addresses.iter().map(|&ip| (ip, 26379)).collect(),
            name: "lab".into(),
        }
    } else {
        Follow::Role(lab.addresses.iter().map(|&ip| (ip, 7000)).collect())
    };
    let mut follower = Follower::new(follow, &password);
    let values: Vec<u64> = (0..2000).collect();
    for &n in &values {
        assert!(follower.set(&format!("np:{n}"), n, 0).await.is_some());
    }
    // Both replicas have everything (they may still be in their first
    // full sync right after apply).
    let mut synced = false;
    for _ in 0..100 {
        if follower.set("np:last", 0, 2).await == Some(2) {
            synced = true;
            break;
        }
    }
    assert!(synced, "WAIT 2: both replicas acknowledged");
    let victim: u32 = std::fs::read_to_string(lab.pidfile(0, "redis-7000"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill9(victim);
    let moved = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            follower
                .master()
                .await
                .is_some_and(|m| m != (lab.addresses[0], 7000))
        },
    )
    .await;
    assert!(moved, "a replica took over from the dead dataless master");
    let rejoined = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let Ok(mut old) = connect(lab.addresses[0], 7000, &password).await else {
                return false;
            };
            let Ok(info) = redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(&mut old)
                .await
            else {
                return false;
            };
            field(&info, "role").as_deref() == Some("slave")
                && field(&info, "master_link_status").as_deref() == Some("up")
        },
    )
    .await;
    assert!(rejoined, "the old master came back as a replica");
    let lost = missing(&mut follower, "np", &values).await;
    assert!(
        lost.is_empty(),
        "{} keys lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // The old master synced the data back instead of wiping it.
    let mut old = connect(lab.addresses[0], 7000, &password).await.unwrap();
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut old).await.unwrap();
    assert!(size >= values.len() as u64, "old master holds {size} keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataless_replication_master_that_dies_does_not_wipe_its_replicas() {
    dataless_group_master_dies(38, "replication").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataless_sentinel_master_that_dies_does_not_wipe_its_replicas() {
    dataless_group_master_dies(39, "sentinel").await;
}
