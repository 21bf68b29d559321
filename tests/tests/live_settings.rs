//! Settings Redis takes live reach the running cluster without a restart:
//! persistence, min-replicas and the node timeout are set with CONFIG SET
//! (the same processes, the new values read back by an independent client),
//! and the cluster keeps serving.

use paddock_tests::{Lab, apply_agreeing, connect, field, paddock, stderr, stdout};

fn pids(lab: &Lab) -> Vec<String> {
    (0..3)
        .flat_map(|b| ["redis-7000", "redis-7001"].map(|i| lab.pidfile(b, i)))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_min_replicas_and_node_timeout_are_set_live() {
    let lab = Lab::new(150);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let running = pids(&lab);

    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    assert!(text.contains("appendonly = true") && text.contains("cluster_node_timeout_ms = 5000"));
    let text = text
        .replace(
            "appendonly = true",
            "appendonly = false\nrdb_snapshots = false\nmin_replicas_to_write = 1\nmin_replicas_max_lag_s = 5",
        )
        .replace("cluster_node_timeout_ms = 5000", "cluster_node_timeout_ms = 4000");
    std::fs::write(lab.inventory(), text).unwrap();

    let plan = paddock(&["plan", "-i", &inventory]);
    let shown = stdout(&plan);
    assert_eq!(
        shown
            .matches("update config, set live (CONFIG SET / ACL SETUSER, no restart)")
            .count(),
        6,
        "{shown}"
    );
    for key in [
        "appendonly: yes -> no (set live)",
        "min-replicas-to-write:",
        "cluster-node-timeout: 5000 -> 4000 (set live)",
        "save:",
    ] {
        assert!(shown.contains(key), "{key}: {shown}");
    }
    assert!(!shown.contains("needs a restart"), "{shown}");

    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pids(&lab), running, "set live: no redis-server restarted");

    let password = lab.password();
    for (ip, port) in lab.nodes() {
        let mut n = connect(ip, port, &password).await.unwrap();
        for (param, want) in [
            ("appendonly", "no"),
            ("save", ""),
            ("min-replicas-to-write", "1"),
            ("min-replicas-max-lag", "5"),
            ("cluster-node-timeout", "4000"),
        ] {
            let v: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(param)
                .query_async(&mut n)
                .await
                .unwrap();
            assert_eq!(v[1], want, "{ip}:{port} {param}");
        }
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut n)
            .await
            .unwrap();
        assert_eq!(field(&info, "cluster_state").as_deref(), Some("ok"));
    }
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));
}
