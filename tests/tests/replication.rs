//! `topology = "replication"`: one master and a read replica on every other
//! box, formed by apply, checked with the redis crate.

use std::time::Duration;

use paddock_tests::{Lab, connect, field, paddock, stderr, stdout, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_lab_serves_reads_everywhere_and_survives_a_master_kill() {
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
    assert!(stdout(&paddock(&["apply", "-i", &inventory])).contains("Nothing to do"));

    // The master's process dies: its agent restarts it (it reloads its AOF)
    // and the replicas reconnect.
    let pid: u32 = std::fs::read_to_string(lab.pidfile(0, "redis-7000"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let linked = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            // The new master process answers (not the killed one) ...
            let Ok(mut m) = connect(a, 7000, &password).await else {
                return false;
            };
            let Ok(server) = redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut m)
                .await
            else {
                return false;
            };
            if field(&server, "process_id").and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
                return false;
            }
            // ... and both replicas are linked to it again.
            for ip in [b, c] {
                let Ok(mut r) = connect(ip, 7000, &password).await else {
                    return false;
                };
                let info: String = match redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut r)
                    .await
                {
                    Ok(i) => i,
                    Err(_) => return false,
                };
                if field(&info, "master_link_status").as_deref() != Some("up") {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert!(linked, "replicas linked to the restarted master again");
    let mut master = connect(a, 7000, &password).await.unwrap();
    let v: Option<i64> = redis::cmd("GET")
        .arg("r:999")
        .query_async(&mut master)
        .await
        .unwrap();
    assert_eq!(v, Some(999));

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
    let again = paddock(&["apply", "-i", &inventory]);
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
    assert!(stdout(&paddock(&["apply", "-i", &inventory])).contains("Nothing to do"));
}
