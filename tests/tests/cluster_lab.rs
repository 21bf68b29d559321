//! The walking skeleton end to end: `paddock lab up` forms a 3 x 2 cluster on
//! three agents, checked with the redis crate's own clients.

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use paddock_tests::{Lab, connect, field, process_is, stdout, wait_until};
use redis::AsyncCommands;
use redis::cluster::ClusterClientBuilder;

const KEYS: usize = 10_000;

async fn cluster_info(ip: IpAddr, port: u16, password: &str) -> Option<String> {
    let mut c = connect(ip, port, password).await.ok()?;
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut c)
        .await
        .ok()
}

async fn all_ok(lab: &Lab, password: &str) -> bool {
    for (ip, port) in lab.nodes() {
        let Some(info) = cluster_info(ip, port, password).await else {
            return false;
        };
        if field(&info, "cluster_state").as_deref() != Some("ok") {
            return false;
        }
    }
    true
}

fn pid_of(lab: &Lab, box_index: usize, instance: &str) -> u32 {
    std::fs::read_to_string(lab.pidfile(box_index, instance))
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_forms_a_healthy_cluster_that_survives_a_master_kill() {
    let lab = Lab::new(21);
    let up = lab.up(&[]);
    assert!(up.status.success(), "lab up failed");
    assert!(stdout(&up).contains("Cluster healthy"), "status after up");
    assert!(stdout(&up).contains("redis-cli -c -h 127.0.21.1 -p 7000"));
    let password = lab.password();

    // Every node, asked directly: ok, all slots, knows all six.
    for (ip, port) in lab.nodes() {
        let info = cluster_info(ip, port, &password)
            .await
            .expect("CLUSTER INFO");
        assert_eq!(
            field(&info, "cluster_state").as_deref(),
            Some("ok"),
            "{ip}:{port}"
        );
        assert_eq!(
            field(&info, "cluster_slots_assigned").as_deref(),
            Some("16384")
        );
        assert_eq!(field(&info, "cluster_known_nodes").as_deref(), Some("6"));
    }

    // Shape: 3 masters, each with exactly one replica on another host.
    let mut c = connect(lab.addresses[0], 7000, &password).await.unwrap();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut masters: HashMap<String, String> = HashMap::new(); // id -> ip
    let mut replicas: Vec<(String, String)> = Vec::new(); // (master id, ip)
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ip = f[1].split(':').next().unwrap().to_owned();
        if f[2].contains("master") {
            masters.insert(f[0].to_owned(), ip);
        } else {
            replicas.push((f[3].to_owned(), ip));
        }
    }
    assert_eq!(masters.len(), 3, "{nodes}");
    assert_eq!(replicas.len(), 3, "{nodes}");
    let master_hosts: std::collections::HashSet<&String> = masters.values().collect();
    assert_eq!(master_hosts.len(), 3, "one master per host:\n{nodes}");
    for id in masters.keys() {
        let of: Vec<_> = replicas.iter().filter(|(m, _)| m == id).collect();
        assert_eq!(of.len(), 1, "master {id} has exactly one replica:\n{nodes}");
        assert_ne!(
            of[0].1, masters[id],
            "replica on another host than its master:\n{nodes}"
        );
    }

    // 10,000 keys through the cluster client, read back.
    let seeds = lab.seeds();
    let client = ClusterClientBuilder::new(seeds.clone())
        .password(password.clone())
        .build()
        .unwrap();
    let mut cluster = client.get_async_connection().await.unwrap();
    for i in 0..KEYS {
        let _: () = cluster.set(format!("key:{i}"), i).await.unwrap();
    }
    for i in 0..KEYS {
        let v: usize = cluster.get(format!("key:{i}")).await.unwrap();
        assert_eq!(v, i);
    }

    // A second apply changes nothing.
    let conf = lab.dir().join("box1/data/control/redis-7000/redis.conf");
    let mtime = std::fs::metadata(&conf).unwrap().modified().unwrap();
    let pid_before = pid_of(&lab, 0, "redis-7000");
    let again = paddock_tests::apply_agreeing(&["-i", &lab.inventory().display().to_string()]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("Nothing to do"),
        "second apply must be a no-op"
    );
    assert_eq!(std::fs::metadata(&conf).unwrap().modified().unwrap(), mtime);
    assert_eq!(pid_of(&lab, 0, "redis-7000"), pid_before);

    // SIGKILL box1's master: its agent restarts it; the cluster is ok again
    // everywhere and every key is still there (AOF reload).
    let victim = pid_of(&lab, 0, "redis-7000");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async {
            std::fs::read_to_string(lab.pidfile(0, "redis-7000"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .is_some_and(|p| p != victim && process_is(p, "redis-server"))
        },
    )
    .await;
    assert!(restarted, "the agent restarted the killed master");
    let healed = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        all_ok(&lab, &password)
    })
    .await;
    assert!(healed, "cluster_state:ok on every node after the restart");
    // Fast failover: its replica took over at once, and the restarted
    // process rejoined as that replica's replica.
    let mut old_master = connect(lab.addresses[0], 7000, &password).await.unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut old_master)
        .await
        .unwrap();
    assert_eq!(
        role[0],
        redis::Value::BulkString(b"slave".to_vec()),
        "{role:?}"
    );
    let client = ClusterClientBuilder::new(seeds)
        .password(password.clone())
        .build()
        .unwrap();
    let mut cluster = client.get_async_connection().await.unwrap();
    for i in 0..KEYS {
        let v: Option<usize> = cluster.get(format!("key:{i}")).await.unwrap();
        assert_eq!(v, Some(i), "key:{i} after the master restart");
    }

    // Down: nothing of the lab is left running or listening.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("lab.json")).unwrap())
            .unwrap();
    let agent_pids: Vec<u32> = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["pid"].as_u64().unwrap() as u32)
        .collect();
    let redis_pids: Vec<u32> = (0..3)
        .flat_map(|b| ["redis-7000", "redis-7001"].map(|i| pid_of(&lab, b, i)))
        .collect();
    // The password is in the files that must hold it and nowhere else: not
    // in any output, log or other file.
    let inv = lab.inventory().display().to_string();
    let mut outputs = vec![up, again];
    for args in [
        vec!["status", "-i", &inv, "--json"],
        vec!["plan", "-i", &inv],
        vec!["logs", "-i", &inv, "box1", "redis-7000", "-n", "1000"],
    ] {
        outputs.push(paddock_tests::paddock(&args));
    }
    for o in &outputs {
        assert!(!stdout(o).contains(&password), "password in stdout");
        assert!(
            !paddock_tests::stderr(o).contains(&password),
            "password in stderr"
        );
    }
    let allowed = [
        "redis.conf",
        // The 0600 copy redis-server runs with (CONFIG REWRITE's to change).
        "running.conf",
        "redis.conf.prev",
        "spec.toml",
        "redis-password",
    ];
    let mut stack = vec![lab.dir().to_owned()];
    let mut scanned = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !allowed
                .iter()
                .any(|a| path.file_name().is_some_and(|n| n == *a))
            {
                let bytes = std::fs::read(&path).unwrap_or_default();
                scanned += 1;
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(&password),
                    "password found in {}",
                    path.display()
                );
            }
        }
    }
    assert!(
        scanned > 10,
        "logs, nodes.conf, AOF, ... were scanned ({scanned})"
    );

    let down = lab.down();
    assert!(down.status.success());
    for pid in agent_pids {
        assert!(!process_is(pid, "paddockd"), "agent {pid} still running");
    }
    for pid in redis_pids {
        assert!(
            !process_is(pid, "redis-server"),
            "redis-server {pid} still running"
        );
    }
    for &ip in &lab.addresses {
        for port in [7000, 7001, 17000, 17001, 7443] {
            assert!(
                TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(200)).is_err(),
                "{ip}:{port} still listening after lab down"
            );
        }
    }
}
