//! An instance's life after apply, on real agents and real Redis:
//! `paddock stop`, `start` and `restart` (rolling, masters handing over),
//! `prune` (what a change of shape removed, its data kept until then),
//! `destroy` (refused without --yes off a terminal; data kept unless
//! --purge-data). A change of `masters` is carried out (tests/shape.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use paddock_tests::{Lab, apply_agreeing, bin_dir, paddock, process_is, stderr, stdout};
use redis::AsyncCommands;
use redis::cluster::ClusterClientBuilder;

const KEYS: usize = 500;

async fn cluster(lab: &Lab) -> redis::cluster_async::ClusterConnection {
    ClusterClientBuilder::new(lab.seeds())
        .password(lab.password())
        .build()
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

async fn write_keys(lab: &Lab) {
    let mut c = cluster(lab).await;
    for i in 0..KEYS {
        let _: () = c.set(format!("life:{i}"), i).await.unwrap();
    }
}

async fn all_keys_present(lab: &Lab) {
    let mut c = cluster(lab).await;
    for i in 0..KEYS {
        let v: Option<usize> = c.get(format!("life:{i}")).await.unwrap();
        assert_eq!(v, Some(i), "life:{i}");
    }
}

fn inventory(lab: &Lab) -> String {
    lab.inventory().display().to_string()
}

fn edit_inventory(lab: &Lab, from: &str, to: &str) {
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    assert!(text.contains(from), "{from:?} in {text}");
    std::fs::write(lab.inventory(), text.replace(from, to)).unwrap();
}

fn data(lab: &Lab, box_index: usize) -> PathBuf {
    lab.dir().join(format!("box{}", box_index + 1)).join("data")
}

/// The instances an agent has (its control directories).
fn instances_on(lab: &Lab, box_index: usize) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data(lab, box_index).join("control"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// "boxN:redis-P" -> (state, pid), as `paddock status --json` shows them.
fn states(lab: &Lab) -> BTreeMap<String, (String, Option<u64>)> {
    let out = paddock(&["status", "-i", &inventory(lab), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let mut m = BTreeMap::new();
    for h in v["hosts"].as_array().unwrap() {
        for i in h["instances"].as_array().unwrap() {
            m.insert(
                format!(
                    "{}:{}",
                    h["name"].as_str().unwrap(),
                    i["name"].as_str().unwrap()
                ),
                (i["state"].as_str().unwrap().to_owned(), i["pid"].as_u64()),
            );
        }
    }
    m
}

fn role(lab: &Lab, label: &str) -> Option<String> {
    let out = paddock(&["status", "-i", &inventory(lab), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (host, name) = label.split_once(':').unwrap();
    v["hosts"].as_array()?.iter().find_map(|h| {
        (h["name"] == host).then(|| {
            h["instances"]
                .as_array()?
                .iter()
                .find(|i| i["name"] == name)?["role"]
                .as_str()
                .map(str::to_owned)
        })?
    })
}

fn healthy(lab: &Lab) -> bool {
    paddock(&["status", "-i", &inventory(lab)]).status.success()
}

async fn wait_healthy(lab: &Lab) -> bool {
    paddock_tests::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { healthy(lab) },
    )
    .await
}

fn pid_of(states: &BTreeMap<String, (String, Option<u64>)>, label: &str) -> u32 {
    states[label]
        .1
        .unwrap_or_else(|| panic!("{label} has a pid")) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_and_a_rolling_restart() {
    let lab = Lab::new(100);
    assert!(lab.up(&[]).status.success());
    let inv = inventory(&lab);
    write_keys(&lab).await;
    let before = states(&lab);

    // One instance: stopped, and apply's plan would start it again.
    let out = paddock(&["stop", "-i", &inv, "box2:redis-7001"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Stopped box2:redis-7001 (now STOPPED)"));
    let pid = pid_of(&before, "box2:redis-7001");
    assert!(!process_is(pid, "redis-server"), "its redis-server is gone");
    assert_eq!(states(&lab)["box2:redis-7001"].0, "STOPPED");
    assert_eq!(states(&lab)["box1:redis-7000"].0, "RUNNING", "only it");
    let plan = paddock(&["plan", "-i", &inv]);
    assert!(stdout(&plan).contains("box2:redis-7001: start (now STOPPED)"));
    let out = paddock(&["start", "-i", &inv, "box2:redis-7001"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(states(&lab)["box2:redis-7001"].0, "RUNNING");
    assert!(wait_healthy(&lab).await, "healthy again after start");

    // Bad targets name what exists.
    let out = paddock(&["stop", "-i", &inv, "box9"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("its hosts are: box1, box2, box3"),
        "{}",
        stderr(&out)
    );
    let out = paddock(&["start", "-i", &inv, "box1:redis-7999"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("it has: redis-7000, redis-7001"),
        "{}",
        stderr(&out)
    );

    // A rolling restart of box1: both processes are new, its master handed
    // its slots over first, and the cluster is healthy when it returns.
    let before = states(&lab);
    assert_eq!(role(&lab, "box1:redis-7000").as_deref(), Some("master"));
    let out = paddock(&["restart", "-i", &inv, "box1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CLUSTER FAILOVER"),
        "{}",
        stderr(&out)
    );
    let after = states(&lab);
    for label in ["box1:redis-7000", "box1:redis-7001"] {
        assert_ne!(
            pid_of(&before, label),
            pid_of(&after, label),
            "{label} restarted"
        );
    }
    assert_eq!(
        pid_of(&before, "box2:redis-7000"),
        pid_of(&after, "box2:redis-7000"),
        "other boxes untouched"
    );
    // It handed its slots over before restarting, and got them back after,
    // so the masters are spread one per box again.
    assert_eq!(role(&lab, "box1:redis-7000").as_deref(), Some("master"));
    assert!(healthy(&lab), "rolling: healthy as soon as restart returns");
    all_keys_present(&lab).await;

    // The whole deployment: every redis-server stops, and starts again with
    // its data.
    let before = states(&lab);
    let out = paddock(&["stop", "-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).matches("(now STOPPED)").count(), 6);
    for label in before.keys() {
        assert!(
            !process_is(pid_of(&before, label), "redis-server"),
            "{label} stopped"
        );
    }
    let out = paddock(&["start", "-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).matches("(now RUNNING)").count(), 6);
    assert!(
        wait_healthy(&lab).await,
        "healthy after a full stop and start"
    );
    all_keys_present(&lab).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_what_the_inventory_no_longer_lists() {
    let lab = Lab::new(101);
    assert!(lab.up(&[]).status.success());
    let inv = inventory(&lab);
    write_keys(&lab).await;

    // box2's replica made the master of its shard, and box1's replica
    // stopped (the "(STOPPED)" orphan).
    let out = paddock(&["failover", "-i", &inv, "--to", "box2:redis-7001"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // "Shard N: box2:redis-7001 is master now, HOST:INSTANCE its replica (...)."
    let old_master = stdout(&out).split_whitespace().nth(6).unwrap().to_owned();
    assert!(
        paddock(&["stop", "-i", &inv, "box1:redis-7001"])
            .status
            .success()
    );
    let before = states(&lab);

    // No more replicas in the inventory: a change of shape. The replicas
    // (the stopped one too, and the old master, a replica now) are
    // removed from the cluster; the master box2:redis-7001 stays.
    edit_inventory(&lab, "replicas_per_master = 1", "replicas_per_master = 0");
    let out = apply_agreeing(&["-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = states(&lab);
    let mut removed = vec!["box1:redis-7001", "box3:redis-7001", old_master.as_str()];
    removed.sort_unstable();
    let mut kept: Vec<&str> = after.keys().map(String::as_str).collect();
    kept.sort_unstable();
    assert_eq!(kept.len(), 3, "{after:?}");
    assert!(kept.contains(&"box2:redis-7001"), "{after:?}");
    for label in &kept {
        assert_eq!(
            pid_of(&before, label),
            pid_of(&after, label),
            "{label} kept"
        );
    }
    assert!(healthy(&lab));
    all_keys_present(&lab).await;
    // Their data stays; plan names them until they are pruned.
    assert!(
        data(&lab, 0)
            .join("instances/redis-7001/nodes.conf")
            .is_file(),
        "data kept"
    );
    let plan = stdout(&paddock(&["plan", "-i", &inv]));
    assert!(plan.contains("No changes"), "{plan}");
    for r in &removed {
        assert!(
            plan.contains(&format!("{r}: removed from the cluster and stopped")),
            "{plan}"
        );
    }

    // Prune removes them, keeping their data unless told.
    let out = paddock(&["prune", "-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("removed box1:redis-7001 (its data stays on disk)"),
        "{text}"
    );
    assert!(text.contains("removed box3:redis-7001"), "{text}");
    assert!(
        data(&lab, 0)
            .join("instances/redis-7001/nodes.conf")
            .is_file(),
        "data kept without --purge-data"
    );
    for b in 0..3 {
        let name = format!("box{}", b + 1);
        let want: Vec<String> = kept
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{name}:")).map(str::to_owned))
            .collect();
        assert_eq!(instances_on(&lab, b), want, "{name}");
    }

    // Nothing blocks apply, and a second run has nothing to do.
    let out = apply_agreeing(&["-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = paddock(&["plan", "-i", &inv]);
    assert!(stdout(&plan).contains("No changes"), "{}", stdout(&plan));
    assert!(healthy(&lab));
    all_keys_present(&lab).await;
    let out = paddock(&["prune", "-i", &inv, "--purge-data"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("Nothing to prune"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_asks_and_keeps_data_unless_told() {
    let lab = Lab::new(102);
    assert!(lab.up(&[]).status.success());
    let inv = inventory(&lab);
    write_keys(&lab).await;
    let before = states(&lab);

    // No terminal, no --yes: refused, nothing touched.
    let out = Command::new(bin_dir().join("paddock"))
        .args(["destroy", "-i", &inv])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("add --yes"), "{}", stderr(&out));
    assert_eq!(states(&lab), before, "nothing stopped");

    // The agent itself refuses to forget a running instance, or another
    // deployment's, whoever asks.
    let mut agent = paddock_tests::agent_client(&lab, 0).await;
    for (deployment, why) in [
        ("lab", "stop it first"),
        ("other", "belongs to deployment \"lab\""),
    ] {
        let e = agent
            .remove_instance(paddock_proto::v1::RemoveInstanceRequest {
                name: "redis-7000".into(),
                deployment: deployment.into(),
                purge_data: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        assert!(e.message().contains(why), "{e}");
    }
    assert_eq!(states(&lab), before, "nothing removed");

    let out = paddock(&["destroy", "-i", &inv, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("removed 6 instance(s); their data stays on disk"));
    for label in before.keys() {
        assert!(
            !process_is(pid_of(&before, label), "redis-server"),
            "{label} stopped"
        );
    }
    for b in 0..3 {
        assert!(instances_on(&lab, b).is_empty(), "box{}", b + 1);
        assert!(
            data(&lab, b)
                .join("instances/redis-7000/nodes.conf")
                .is_file()
        );
    }
    let plan = paddock(&["plan", "-i", &inv]);
    assert_eq!(stdout(&plan).matches("create instance").count(), 6);

    // The kept data brings the same cluster back with every key.
    let out = apply_agreeing(&["-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    all_keys_present(&lab).await;

    let out = paddock(&["destroy", "-i", &inv, "--yes", "--purge-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for b in 0..3 {
        assert!(instances_on(&lab, b).is_empty());
        assert!(
            !data(&lab, b).join("instances/redis-7000").exists(),
            "purged"
        );
    }

    // The same boxes, now a Sentinel deployment: a rolling restart of
    // everything hands the master over through the sentinels and restarts
    // the sentinels one at a time; destroy removes the sentinels too.
    edit_inventory(
        &lab,
        "topology = \"cluster\"\nmasters = 3\nreplicas_per_master = 1",
        "topology = \"sentinel\"\nmasters = 1\nreplicas_per_master = 2",
    );
    edit_inventory(
        &lab,
        "\n[[hosts]]\nname = \"box1\"",
        "\n[sentinel]\ncount = 3\nport = 26379\n\n[[hosts]]\nname = \"box1\"",
    );
    let out = apply_agreeing(&["-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let master = || {
        (1..=3)
            .map(|b| format!("box{b}:redis-7000"))
            .find(|l| role(&lab, l).as_deref() == Some("master"))
    };
    let first = master().expect("a master");
    let before = states(&lab);
    assert_eq!(
        before.len(),
        6,
        "3 redis-server and 3 sentinels: {before:?}"
    );
    let out = paddock(&["restart", "-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = states(&lab);
    for label in before.keys() {
        assert_ne!(
            pid_of(&before, label),
            pid_of(&after, label),
            "{label} restarted"
        );
    }
    assert_ne!(
        master(),
        Some(first),
        "the master handed over before its restart"
    );
    assert!(healthy(&lab), "healthy when restart returns");
    let out = paddock(&["destroy", "-i", &inv, "--yes", "--purge-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("removed 6 instance(s) and their data"));
    for b in 0..3 {
        assert!(instances_on(&lab, b).is_empty(), "box{}", b + 1);
    }
}
