//! Day-two operations on the lab cluster, checked with the redis crate:
//! a maxmemory change is set live (no restart), a rolling restart goes
//! through without losing the cluster or its data, a
//! missing password file is refused, and a box that loses everything (a
//! replaced machine) is rebuilt by `apply` into a healthy cluster.

use std::time::Duration;

use paddock_tests::{Lab, apply_agreeing, connect, field, paddock, process_is, stderr, stdout};
use redis::AsyncCommands;
use redis::cluster::ClusterClientBuilder;

const KEYS: usize = 2_000;

async fn cluster(lab: &Lab, password: &str) -> redis::cluster_async::ClusterConnection {
    let seeds = lab.seeds();
    ClusterClientBuilder::new(seeds)
        .password(password)
        .build()
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

async fn all_keys_present(lab: &Lab, password: &str) {
    let mut c = cluster(lab, password).await;
    for i in 0..KEYS {
        let v: Option<usize> = c.get(format!("op:{i}")).await.unwrap();
        assert_eq!(v, Some(i), "op:{i}");
    }
}

fn pids(lab: &Lab, box_index: usize) -> Vec<u32> {
    ["redis-7000", "redis-7001"]
        .iter()
        .filter_map(|i| std::fs::read_to_string(lab.pidfile(box_index, i)).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_change_password_guard_and_a_replaced_box() {
    let lab = Lab::new(25);
    assert!(lab.up(&[]).status.success());
    let inventory = lab.inventory().display().to_string();
    let password = lab.password();
    let mut c = cluster(&lab, &password).await;
    for i in 0..KEYS {
        let _: () = c.set(format!("op:{i}"), i).await.unwrap();
    }

    // No password file, but the deployment runs: refused, nothing touched.
    let pw_file = lab.dir().join(".paddock/lab/redis-password");
    let aside = lab.dir().join("password.aside");
    std::fs::rename(&pw_file, &aside).unwrap();
    let before = pids(&lab, 0);
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("password file"), "{}", stderr(&out));
    assert!(!pw_file.exists(), "no new password was made");
    assert_eq!(pids(&lab, 0), before);
    std::fs::rename(&aside, &pw_file).unwrap();

    // A change Redis takes live (maxmemory): planned and applied as CONFIG
    // SET on the running processes, no restart: the pids stay.
    let running: Vec<Vec<u32>> = (0..3).map(|b| pids(&lab, b)).collect();
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    std::fs::write(lab.inventory(), text.replace("\"128mb\"", "\"96mb\"")).unwrap();
    let plan = paddock(&["plan", "-i", &inventory]);
    assert_eq!(
        stdout(&plan)
            .matches("update config, set live (CONFIG SET / ACL SETUSER, no restart)")
            .count(),
        6,
        "{}",
        stdout(&plan)
    );
    assert!(
        !stdout(&plan).contains("restart needed"),
        "{}",
        stdout(&plan)
    );
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("CLUSTER FAILOVER"),
        "{}",
        stderr(&out)
    );
    for (ip, port) in lab.nodes() {
        let mut n = connect(ip, port, &password).await.unwrap();
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query_async(&mut n)
            .await
            .unwrap();
        assert_eq!(v[1], (96u64 << 20).to_string(), "{ip}:{port}");
    }
    let now: Vec<Vec<u32>> = (0..3).map(|b| pids(&lab, b)).collect();
    assert_eq!(now, running, "set live: no redis-server restarted");
    all_keys_present(&lab, &password).await;
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));

    // A rolling restart (the path apply takes for a change that needs
    // one): one instance at a time with masters handing over first; every
    // key and the live-set maxmemory survive.
    let out = paddock(&["restart", "-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CLUSTER FAILOVER"),
        "masters hand over first"
    );
    for (b, before) in running.iter().enumerate() {
        let after = pids(&lab, b);
        assert!(
            before.iter().all(|p| !after.contains(p)),
            "box{}: every redis-server restarted: {before:?} -> {after:?}",
            b + 1
        );
    }
    for (ip, port) in lab.nodes() {
        let mut n = connect(ip, port, &password).await.unwrap();
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query_async(&mut n)
            .await
            .unwrap();
        assert_eq!(v[1], (96u64 << 20).to_string(), "{ip}:{port}");
    }
    all_keys_present(&lab, &password).await;
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));

    // box2 loses everything: agent, Redis processes and data directory.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("lab.json")).unwrap())
            .unwrap();
    let agent2 = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["host"] == "box2")
        .unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    kill(agent2);
    for pid in pids(&lab, 1) {
        kill(pid);
    }
    for _ in 0..200 {
        if !process_is(agent2, "paddockd")
            && pids(&lab, 1)
                .iter()
                .all(|&p| !process_is(p, "redis-server"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::remove_dir_all(lab.dir().join("box2/data")).unwrap();

    // `lab up` starts a fresh box2 agent and applies: the shard whose master
    // was on box2 is taken over by its replica, the new nodes join, the old
    // identities are forgotten.
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(stdout(&up).contains("Cluster healthy"), "{}", stdout(&up));
    for (ip, port) in lab.nodes() {
        let mut n = connect(ip, port, &password).await.unwrap();
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut n)
            .await
            .unwrap();
        assert_eq!(
            field(&info, "cluster_state").as_deref(),
            Some("ok"),
            "{ip}:{port}"
        );
        assert_eq!(
            field(&info, "cluster_known_nodes").as_deref(),
            Some("6"),
            "{ip}:{port}: old identities forgotten"
        );
    }
    all_keys_present(&lab, &password).await;
}
