//! `topology = "replication"`: one master and a read replica on every other
//! box, formed by apply, checked with the redis crate: reads everywhere, a
//! master kill with fast failover, a hand-made promotion apply keeps, and
//! `paddock failover`.

use std::time::Duration;

use paddock_tests::ha::{Follow, Follower, kill9, missing, write_through};
use paddock_tests::{Lab, apply_agreeing, connect, field, paddock, stderr, stdout, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_lab_serves_reads_everywhere_and_fails_over_on_a_master_kill() {
    let lab = Lab::new(28);
    let up = lab.up(&["--topology", "replication"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(
        stdout(&up).contains("Replication healthy"),
        "{}",
        stdout(&up)
    );
    let inventory = lab.inventory().display().to_string();
    let password = lab.password();
    let [a, b, c] = [lab.addresses[0], lab.addresses[1], lab.addresses[2]];
    let lab_ips = [a, b, c];

    let mut master = connect(a, 7000, &password).await.unwrap();
    for i in 0..1000 {
        let _: () = redis::cmd("SET")
            .arg(format!("r:{i}"))
            .arg(i)
            .query_async(&mut master)
            .await
            .unwrap();
    }
    let acked: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query_async(&mut master)
        .await
        .unwrap();
    assert_eq!(acked, 2, "both replicas acknowledged");
    for ip in [b, c] {
        let mut r = connect(ip, 7000, &password).await.unwrap();
        let v: Option<i64> = redis::cmd("GET")
            .arg("r:999")
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(v, Some(999), "read on the replica {ip}");
        let denied: redis::RedisResult<()> =
            redis::cmd("SET").arg("x").arg(1).query_async(&mut r).await;
        let denied = denied.unwrap_err().to_string();
        assert!(
            denied.contains("read only replica"),
            "replicas are read-only: {denied}"
        );
    }
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));

    // The master's process dies: its agent promotes the most up-to-date
    // replica and re-points the other before starting it again as a replica
    // (fast failover). A client that asks each member its role writes again.
    let victim: u32 = std::fs::read_to_string(lab.pidfile(0, "redis-7000"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut follower = Follower::new(
        Follow::Role(lab.addresses.iter().map(|&ip| (ip, 7000)).collect()),
        &password,
    );
    let log = write_through(
        &mut follower,
        "k",
        Duration::from_secs(4),
        Duration::from_secs(1),
        || kill9(victim),
    )
    .await;
    eprintln!("master SIGKILL: {log}");
    let new_master = follower.master().await.unwrap();
    assert_ne!(new_master, (a, 7000), "a replica took over");
    let lost = missing(&mut follower, "k", &log.waited).await;
    assert!(
        lost.is_empty(),
        "writes acknowledged with WAIT lost: {lost:?}"
    );
    let mut m = follower.conn().await.unwrap().clone();
    let v: Option<i64> = redis::cmd("GET")
        .arg("r:999")
        .query_async(&mut m)
        .await
        .unwrap();
    assert_eq!(v, Some(999), "the data set survived");
    let linked = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let password = password.clone();
        async move {
            for ip in lab_ips {
                if (ip, 7000) == new_master {
                    continue;
                }
                let Ok(mut r) = connect(ip, 7000, &password).await else {
                    return false;
                };
                let Ok(info) = redis::cmd("INFO")
                    .arg("replication")
                    .query_async::<String>(&mut r)
                    .await
                else {
                    return false;
                };
                if field(&info, "master_host") != Some(new_master.0.to_string())
                    || field(&info, "master_link_status").as_deref() != Some("up")
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(
        linked,
        "the old master and the other replica follow the new master"
    );
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));

    // An operator promotes box2 by hand: apply keeps the new master.
    let mut r2 = connect(b, 7000, &password).await.unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut r2)
        .await
        .unwrap();
    for ip in [a, c] {
        let mut r = connect(ip, 7000, &password).await.unwrap();
        let _: () = redis::cmd("REPLICAOF")
            .arg(b.to_string())
            .arg(7000)
            .query_async(&mut r)
            .await
            .unwrap();
    }
    let settled = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            stdout(&paddock(&["status", "-i", &inventory])).contains("Replication healthy")
        },
    )
    .await;
    assert!(settled, "the hand-made topology is healthy");
    let again = apply_agreeing(&["-i", &inventory]);
    assert!(
        stdout(&again).contains("Nothing to do"),
        "{}",
        stdout(&again)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&paddock(&["status", "-i", &inventory, "--json"]).stdout).unwrap();
    assert_eq!(s["hosts"][1]["instances"][0]["role"], "master");
    assert_eq!(s["hosts"][0]["instances"][0]["master"], "box2:redis-7000");

    // `paddock failover`: box3 takes over, nothing acknowledged is lost.
    let mut m = connect(b, 7000, &password).await.unwrap();
    for i in 0..500 {
        let _: () = redis::cmd("SET")
            .arg(format!("f:{i}"))
            .arg(i)
            .query_async(&mut m)
            .await
            .unwrap();
    }
    let out = paddock(&["failover", "-i", &inventory, "--to", "box3:redis-7000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut m3 = connect(c, 7000, &password).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut m3)
        .await
        .unwrap();
    assert_eq!(field(&info, "role").as_deref(), Some("master"), "{info}");
    assert_eq!(
        field(&info, "connected_slaves").as_deref(),
        Some("2"),
        "{info}"
    );
    for i in 0..500 {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("f:{i}"))
            .query_async(&mut m3)
            .await
            .unwrap();
        assert_eq!(v, Some(i), "f:{i} on the new master");
    }
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));

    // A maxmemory change is set live on every member (CONFIG SET): no
    // restart, the pids stay.
    let pids = || -> Vec<String> {
        (0..3)
            .map(|b| std::fs::read_to_string(lab.pidfile(b, "redis-7000")).unwrap())
            .collect()
    };
    let running = pids();
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    std::fs::write(
        lab.inventory(),
        text.replace("maxmemory = \"128mb\"", "maxmemory = \"96mb\""),
    )
    .unwrap();
    let plan = paddock(&["plan", "-i", &inventory]);
    assert_eq!(
        stdout(&plan)
            .matches("set live (CONFIG SET / ACL SETUSER, no restart)")
            .count(),
        3,
        "{}",
        stdout(&plan)
    );
    let changed = apply_agreeing(&["-i", &inventory]);
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert_eq!(pids(), running, "set live: no member restarted");
    for &ip in &lab.addresses {
        let mut n = connect(ip, 7000, &password).await.unwrap();
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query_async(&mut n)
            .await
            .unwrap();
        assert_eq!(v[1], (96u64 << 20).to_string(), "{ip}");
    }

    // A rolling restart (the path apply takes for a change that needs one)
    // restarts every member; the master first hands its role over the way
    // `paddock failover` does, so nothing is lost.
    let changed = paddock(&["restart", "-i", &inventory]);
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert!(
        stderr(&changed).contains("takes over from box3:redis-7000"),
        "the master handed over before its restart: {}",
        stderr(&changed)
    );
    let after = pids();
    for (b, p) in running.iter().enumerate() {
        assert_ne!(&after[b], p, "box{}: restarted", b + 1);
    }
    let mut follower = Follower::new(
        Follow::Role(lab.addresses.iter().map(|&ip| (ip, 7000)).collect()),
        &password,
    );
    let all: Vec<u64> = (0..500).collect();
    let mut m = follower.conn().await.unwrap().clone();
    for &i in &all {
        let v: Option<u64> = redis::cmd("GET")
            .arg(format!("f:{i}"))
            .query_async(&mut m)
            .await
            .unwrap();
        assert_eq!(v, Some(i), "f:{i} after the rolling restart");
    }
    let conf =
        std::fs::read_to_string(lab.dir().join("box3/data/control/redis-7000/redis.conf")).unwrap();
    assert!(conf.contains("maxmemory 100663296"), "{conf}");
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));
}

/// `replicas_per_master = 0`: a lone master is the whole deployment. apply
/// accepts it (it used to wait 60 s for "a master the others replicate"),
/// status calls it healthy, and `failover --to` it is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_master_without_replicas_is_a_healthy_replication() {
    let lab = Lab::new(86);
    let up = lab.up(&["--no-apply", "--topology", "replication"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    assert!(text.contains("replicas_per_master = 2"), "{text}");
    std::fs::write(
        lab.inventory(),
        text.replace("replicas_per_master = 2", "replicas_per_master = 0"),
    )
    .unwrap();
    let inventory = lab.inventory().display().to_string();

    let out = apply_agreeing(&["-i", &inventory, "--timeout", "20"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));

    let password = lab.password();
    let mut c = connect(lab.addresses[0], 7000, &password).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(field(&info, "role").as_deref(), Some("master"));
    let () = redis::cmd("SET")
        .arg("lone")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();

    let status = paddock(&["status", "-i", &inventory]);
    assert!(
        status.status.success(),
        "{}\n{}",
        stdout(&status),
        stderr(&status)
    );
    let again = apply_agreeing(&["-i", &inventory]);
    assert!(
        stdout(&again).contains("Nothing to do"),
        "{}",
        stdout(&again)
    );

    let out = paddock(&["failover", "-i", &inventory, "--to", "box1:redis-7000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("box1:redis-7000 is already its master; nothing to do"),
        "{}",
        stdout(&out)
    );
}
