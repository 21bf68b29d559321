//! A running cluster's shape changed by apply, on real agents and real
//! Redis under a writer whose writes are acknowledged with WAIT: replicas
//! raised and lowered, masters raised on an added host and lowered again.
//! After every step: every acknowledged write is there, `redis-cli
//! --cluster check` passes, status is healthy, the instances kept run
//! with the same pids, and the removed nodes are forgotten by every node
//! (their data stays until `paddock prune --purge-data`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paddock_tests::consistency::ClusterRouter;
use paddock_tests::{Lab, apply_agreeing, paddock, stderr, stdout};

fn inventory(lab: &Lab) -> String {
    lab.inventory().display().to_string()
}

fn edit_inventory(lab: &Lab, from: &str, to: &str) {
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    assert!(text.contains(from), "{from:?} in {text}");
    std::fs::write(lab.inventory(), text.replace(from, to)).unwrap();
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

/// The instances kept keep their process: same pid before and after.
fn same_pids(before: &BTreeMap<String, (String, Option<u64>)>, lab: &Lab, kept: &[&str]) {
    let after = states(lab);
    for label in kept {
        assert_eq!(
            before.get(*label).and_then(|s| s.1),
            after.get(*label).and_then(|s| s.1),
            "{label} kept its process: {after:?}"
        );
        assert!(after[*label].1.is_some(), "{label} runs");
    }
}

fn redis_cli(ip: IpAddr, port: u16, password: &str, args: &[&str]) -> std::process::Output {
    Command::new("redis-cli")
        .args(["-h", &ip.to_string(), "-p", &port.to_string()])
        .args(["-a", password, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli")
}

/// `redis-cli --cluster check` finds nothing wrong.
fn cluster_check(lab: &Lab) {
    let a = lab.addresses[0];
    let out = Command::new("redis-cli")
        .args(["-a", &lab.password(), "--no-auth-warning"])
        .args(["--cluster", "check", &format!("{a}:{}", lab.port)])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
    assert!(
        !text.contains("[ERR]") && !text.contains("[WARNING]"),
        "{text}"
    );
}

/// Every node of `running` lists none of `gone` ("ip:port").
fn forgotten(lab: &Lab, running: &[(IpAddr, u16)], gone: &[String]) {
    for &(ip, port) in running {
        let out = redis_cli(ip, port, &lab.password(), &["CLUSTER", "NODES"]);
        let nodes = stdout(&out);
        assert!(nodes.contains("myself"), "{ip}:{port}: {nodes}");
        for g in gone {
            assert!(
                !nodes.contains(&format!("{g}@")),
                "{ip}:{port} still knows {g}: {nodes}"
            );
        }
    }
}

/// The nodes of the instances `states` lists ("boxN:redis-P").
fn running_nodes(
    lab: &Lab,
    states: &BTreeMap<String, (String, Option<u64>)>,
) -> Vec<(IpAddr, u16)> {
    states
        .keys()
        .map(|l| {
            let (host, name) = l.split_once(':').unwrap();
            let b: usize = host.trim_start_matches("box").parse().unwrap();
            let port: u16 = name.trim_start_matches("redis-").parse().unwrap();
            (lab.addresses[b - 1], port)
        })
        .collect()
}

fn healthy(lab: &Lab) {
    let out = paddock(&["status", "-i", &inventory(lab)]);
    assert!(out.status.success(), "{}", stdout(&out));
}

/// Writes `shape:N` = N through a client that follows the slots, each
/// acknowledged by a replica too (WAIT), until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl Writer {
    fn start(lab: &Lab, from: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut router = ClusterRouter::new(lab.nodes(), &lab.password());
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut acked = Vec::new();
            let started = Instant::now();
            let mut n = from;
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(240) {
                if router.set_waited(&format!("shape:{n}"), n).await {
                    acked.push(n);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            acked
        });
        Writer { stop, task }
    }

    /// Stops writing; every acknowledged write is read back.
    async fn check(self, lab: &Lab) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let acked = self.task.await.unwrap();
        assert!(!acked.is_empty(), "the writer wrote nothing");
        let mut router = ClusterRouter::new(lab.nodes(), &lab.password());
        for n in &acked {
            assert_eq!(
                router.get_value(&format!("shape:{n}")).await,
                Some(*n),
                "acknowledged write shape:{n} is lost"
            );
        }
        acked.len()
    }
}

/// `apply` (plan and apply agreeing) off the async runtime.
async fn apply(lab: &Lab) -> std::process::Output {
    let inv = inventory(lab);
    tokio::task::spawn_blocking(move || apply_agreeing(&["-i", &inv]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_raised_then_lowered_under_writes() {
    let lab = Lab::new(165);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let before = states(&lab);
    let first: Vec<&str> = before.keys().map(String::as_str).collect();
    assert_eq!(first.len(), 6, "{before:?}");

    // 3 x 1 -> 3 x 2: a second replica per shard, nothing else moves.
    let writer = Writer::start(&lab, 0);
    edit_inventory(&lab, "replicas_per_master = 1", "replicas_per_master = 2");
    let out = apply(&lab).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let written = writer.check(&lab).await;
    healthy(&lab);
    cluster_check(&lab);
    same_pids(&before, &lab, &first);
    let grown = states(&lab);
    assert_eq!(grown.len(), 9, "{grown:?}");
    for b in 1..=3 {
        assert_eq!(
            grown[&format!("box{b}:redis-7002")].0,
            "RUNNING",
            "{grown:?}"
        );
    }

    // 3 x 2 -> 3 x 1: the second replicas leave: stopped, forgotten.
    let writer = Writer::start(&lab, 1_000_000);
    edit_inventory(&lab, "replicas_per_master = 2", "replicas_per_master = 1");
    let out = apply(&lab).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(writer.check(&lab).await > 0 && written > 0);
    healthy(&lab);
    cluster_check(&lab);
    same_pids(&before, &lab, &first);
    let gone: Vec<String> = lab.addresses.iter().map(|a| format!("{a}:7002")).collect();
    forgotten(&lab, &running_nodes(&lab, &states(&lab)), &gone);
    // Nothing left to do; the removed instances are stopped, their data
    // kept until prune --purge-data.
    let plan = paddock(&["plan", "-i", &inventory(&lab)]);
    assert!(stdout(&plan).contains("No changes"), "{}", stdout(&plan));
    let data = |b: usize| lab.dir().join(format!("box{b}/data/instances/redis-7002"));
    for b in 1..=3 {
        assert!(data(b).exists(), "box{b}'s redis-7002 data is kept");
    }
    let prune = paddock(&["prune", "-i", &inventory(&lab), "--purge-data"]);
    assert!(prune.status.success(), "{}", stderr(&prune));
    for b in 1..=3 {
        assert!(!data(b).exists(), "box{b}'s redis-7002 data is purged");
    }
    healthy(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_raised_on_an_added_host_then_lowered_under_writes() {
    let mut lab = Lab::new(166);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let before = states(&lab);
    let first: Vec<&str> = before.keys().map(String::as_str).collect();

    // A fourth box: the lab applies the grown inventory, nothing moves.
    lab.addresses.push("127.0.166.4".parse().unwrap());
    let grow = lab.up(&[]);
    assert!(grow.status.success(), "{}", stderr(&grow));
    same_pids(&before, &lab, &first);

    // 3 -> 4 masters: the new master on box4 gets a quarter of the slots.
    let writer = Writer::start(&lab, 0);
    edit_inventory(&lab, "masters = 3", "masters = 4");
    // plan shows the moves before the new master exists: 4096 slots to
    // box4's new master, from the three that serve them.
    let planned = paddock(&["plan", "--json", "-i", &inventory(&lab)]);
    let planned: serde_json::Value = serde_json::from_slice(&planned.stdout).unwrap();
    let after = planned["after_joining"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let to_box4: u64 = after
        .iter()
        .filter(|m| m["to"] == "box4:redis-7000")
        .flat_map(|m| m["ranges"].as_array().cloned().unwrap_or_default())
        .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(to_box4, 4096, "{planned}");
    let out = apply(&lab).await;
    assert!(out.status.success(), "{}", stderr(&out));
    writer.check(&lab).await;
    healthy(&lab);
    cluster_check(&lab);
    same_pids(&before, &lab, &first);
    let box4 = lab.addresses[3];
    let nodes = stdout(&redis_cli(
        box4,
        7000,
        &lab.password(),
        &["CLUSTER", "NODES"],
    ));
    let mine = nodes.lines().find(|l| l.contains("myself")).unwrap();
    assert!(mine.contains("master"), "{mine}");
    let slots: u32 = mine
        .split_whitespace()
        .skip(8)
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
            None => 1,
        })
        .sum();
    assert_eq!(slots, 4096, "{mine}");
    let four = states(&lab);

    // 4 -> 3 masters: box4's master is drained, then removed with its
    // replica; nothing else moves.
    let writer = Writer::start(&lab, 1_000_000);
    edit_inventory(&lab, "masters = 4", "masters = 3");
    let out = apply(&lab).await;
    assert!(out.status.success(), "{}", stderr(&out));
    writer.check(&lab).await;
    healthy(&lab);
    cluster_check(&lab);
    same_pids(&four, &lab, &first);
    let after = states(&lab);
    assert!(after.keys().all(|l| four.contains_key(l)), "{after:?}");
    assert_eq!(after.len(), 6, "{after:?}");
    let left: BTreeMap<String, (String, Option<u64>)> = (four.iter())
        .filter(|(l, _)| !after.contains_key(*l))
        .map(|(l, s)| (l.clone(), s.clone()))
        .collect();
    // The master added last leaves, with its replica.
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        ["box1:redis-7002", "box4:redis-7000"],
        "{four:?} -> {after:?}"
    );
    let gone: Vec<String> = (running_nodes(&lab, &left).iter())
        .map(|(ip, port)| format!("{ip}:{port}"))
        .collect();
    forgotten(&lab, &running_nodes(&lab, &after), &gone);
    let plan = paddock(&["plan", "-i", &inventory(&lab)]);
    assert!(stdout(&plan).contains("No changes"), "{}", stdout(&plan));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_host_is_drained_through_its_agent_and_forgotten() {
    let mut lab = Lab::new(167);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    lab.addresses.push("127.0.167.4".parse().unwrap());
    let grow = lab.up(&[]);
    assert!(grow.status.success(), "{}", stderr(&grow));
    // 3 x 2 on four boxes: box4 takes a replica of some shards.
    edit_inventory(&lab, "replicas_per_master = 1", "replicas_per_master = 2");
    let out = apply(&lab).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let before = states(&lab);
    let on_box4: Vec<String> = before
        .keys()
        .filter(|l| l.starts_with("box4:"))
        .cloned()
        .collect();
    assert!(!on_box4.is_empty(), "{before:?}");

    // box4 deleted from the inventory: apply reaches its agent at the
    // address its nodes have, places their replacements on the others,
    // then stops and forgets box4's nodes.
    let writer = Writer::start(&lab, 0);
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    let at = text
        .find("[[hosts]]\nname = \"box4\"")
        .expect("box4 in the inventory");
    let end = text[at + 9..]
        .find("[[hosts]]")
        .map_or(text.len(), |e| at + 9 + e);
    std::fs::write(lab.inventory(), format!("{}{}", &text[..at], &text[end..])).unwrap();
    let out = apply(&lab).await;
    assert!(out.status.success(), "{}", stderr(&out));
    writer.check(&lab).await;
    healthy(&lab);
    cluster_check(&lab);
    let after = states(&lab);
    assert_eq!(after.len(), 9, "{after:?}");
    assert!(after.keys().all(|l| !l.starts_with("box4:")), "{after:?}");
    let kept: Vec<&str> = before
        .keys()
        .filter(|l| !l.starts_with("box4:"))
        .map(String::as_str)
        .collect();
    same_pids(&before, &lab, &kept);
    let box4 = lab.addresses[3];
    let gone: Vec<String> = on_box4
        .iter()
        .map(|l| format!("{box4}:{}", l.trim_start_matches("box4:redis-")))
        .collect();
    forgotten(&lab, &running_nodes(&lab, &after), &gone);
    let plan = paddock(&["plan", "-i", &inventory(&lab)]);
    assert!(stdout(&plan).contains("No changes"), "{}", stdout(&plan));
}
