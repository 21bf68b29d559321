//! `paddock check` and `paddock fix` (issue 15, items 2 and 5) on real
//! clusters: a healthy one passes both paddock's check and `redis-cli
//! --cluster check`; a slot left open by hand with redis-cli (SETSLOT
//! IMPORTING and MIGRATING, part of its keys MIGRATEd: what an interrupted
//! reshard leaves) is found by both checks, shown by `paddock plan` as a
//! repair (never a refusal), and repaired by `paddock fix` or `paddock
//! apply`: no slot open, every key there, `redis-cli --cluster check`
//! clean.

use std::net::IpAddr;
use std::process::{Command, Output};

use paddock_tests::{Lab, apply_agreeing, connect, paddock, stderr, stdout};
use redis::aio::MultiplexedConnection;

/// Keys written into the slot that is left open.
const KEYS: usize = 300;
/// Of them, moved to the target before the "interruption".
const MOVED: usize = 120;
/// The hash tag all of them share, so they live in one slot.
const TAG: &str = "{fixme}";

fn key(i: usize) -> String {
    format!("{TAG}:{i}")
}

/// `redis-cli --cluster check` against one node: (passed, output).
fn redis_cli_check(ip: IpAddr, port: u16, password: &str) -> (bool, String) {
    let out: Output = Command::new("redis-cli")
        .args(["--no-auth-warning", "-a", password, "--cluster", "check"])
        .arg(format!("{ip}:{port}"))
        .output()
        .expect("redis-cli runs");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let clean = out.status.success() && !text.contains("[ERR]") && !text.contains("[WARNING]");
    (clean, text)
}

/// One node's CLUSTER NODES.
async fn nodes(c: &mut MultiplexedConnection) -> String {
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(c)
        .await
        .expect("CLUSTER NODES")
}

struct Master {
    id: String,
    ip: IpAddr,
    port: u16,
    /// Inclusive slot ranges.
    slots: Vec<(u16, u16)>,
}

fn masters(text: &str) -> Vec<Master> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if !f.get(2)?.contains("master") {
                return None;
            }
            let (addr, _) = f[1].split_once('@')?;
            let (ip, port) = addr.rsplit_once(':')?;
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(Master {
                id: f[0].to_owned(),
                ip: ip.parse().ok()?,
                port: port.parse().ok()?,
                slots,
            })
        })
        .collect()
}

/// Every node's own line shows no `[slot->-id]` / `[slot-<-id]` marker.
async fn open_markers(lab: &Lab, password: &str) -> Vec<String> {
    let mut open = Vec::new();
    for (ip, port) in lab.nodes() {
        let mut c = connect(ip, port, password).await.unwrap();
        let text = nodes(&mut c).await;
        for l in text.lines().filter(|l| l.contains("myself")) {
            open.extend(
                l.split_whitespace()
                    .filter(|w| w.starts_with('['))
                    .map(|w| format!("{ip}:{port} {w}")),
            );
        }
    }
    open
}

/// The slot the keys live in, its owner and another master.
struct Open {
    slot: u16,
    source: Master,
    target: Master,
}

/// Writes the keys into their slot on its owner, then leaves the slot as an
/// interrupted move from the owner to another master would: IMPORTING on the
/// target, (with `migrating`) MIGRATING on the source, and the first
/// [`MOVED`] keys MIGRATEd with redis-cli.
async fn leave_slot_open(lab: &Lab, password: &str, migrating: bool) -> Open {
    let (ip, port) = lab.nodes()[0];
    let mut any = connect(ip, port, password).await.unwrap();
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(TAG)
        .query_async(&mut any)
        .await
        .unwrap();
    let mut all = masters(&nodes(&mut any).await);
    all.retain(|m| !m.slots.is_empty());
    let at = all
        .iter()
        .position(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .expect("an owner");
    let source = all.remove(at);
    let target = all.remove(0);
    let mut src = connect(source.ip, source.port, password).await.unwrap();
    let mut tgt = connect(target.ip, target.port, password).await.unwrap();
    for i in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(key(i))
            .arg(format!("value {i}"))
            .query_async(&mut src)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&source.id)
        .query_async(&mut tgt)
        .await
        .unwrap();
    if migrating {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&target.id)
            .query_async(&mut src)
            .await
            .unwrap();
    }
    let mut migrate = Command::new("redis-cli");
    migrate
        .args(["--no-auth-warning", "-a", password, "-h"])
        .arg(source.ip.to_string())
        .arg("-p")
        .arg(source.port.to_string())
        .args(["MIGRATE", &target.ip.to_string(), &target.port.to_string()])
        .args(["", "0", "5000", "AUTH", password, "KEYS"])
        .args((0..MOVED).map(key));
    let out = migrate.output().expect("redis-cli MIGRATE");
    assert_eq!(stdout(&out).trim(), "OK", "{}", stderr(&out));
    Open {
        slot,
        source,
        target,
    }
}

/// Every key is served, by the slot's one owner, with its value.
async fn every_key_there(lab: &Lab, password: &str, slot: u16) {
    let (ip, port) = lab.nodes()[0];
    let mut any = connect(ip, port, password).await.unwrap();
    let owners: Vec<Master> = masters(&nodes(&mut any).await)
        .into_iter()
        .filter(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .collect();
    assert_eq!(owners.len(), 1, "one owner of slot {slot}");
    let mut owner = connect(owners[0].ip, owners[0].port, password)
        .await
        .unwrap();
    let count: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut owner)
        .await
        .unwrap();
    assert_eq!(count, KEYS as u64, "slot {slot} on its owner");
    for i in 0..KEYS {
        let v: Option<String> = redis::cmd("GET")
            .arg(key(i))
            .query_async(&mut owner)
            .await
            .unwrap();
        assert_eq!(
            v.as_deref(),
            Some(format!("value {i}").as_str()),
            "{}",
            key(i)
        );
    }
    // No copy left behind on another master.
    for m in masters(&nodes(&mut any).await) {
        if m.id == owners[0].id {
            continue;
        }
        let mut c = connect(m.ip, m.port, password).await.unwrap();
        let n: u64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 0, "{}:{} keeps keys of slot {slot}", m.ip, m.port);
    }
}

/// What both checks say about the open slot, and what plan shows.
fn checks_find_the_open_slot(lab: &Lab, inventory: &str, password: &str, open: &Open) {
    let check = paddock(&["check", "-i", inventory]);
    assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));
    let text = stdout(&check);
    assert!(text.contains(&format!("[{}", open.slot)), "{text}");
    assert!(text.contains("[open_slots]"), "{text}");
    let json = paddock(&["check", "-i", inventory, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("check --json");
    assert_eq!(v["ok"], false);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "open_slots"),
        "{v}"
    );
    let (ip, port) = lab.nodes()[0];
    let (clean, text) = redis_cli_check(ip, port, password);
    assert!(!clean, "redis-cli finds the open slot too: {text}");
    assert!(text.contains(&open.slot.to_string()), "{text}");

    let plan = paddock(&["plan", "-i", inventory]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let shown = stdout(&plan);
    assert!(shown.contains("repair open or unserved slots"), "{shown}");
    assert!(shown.contains(&format!("slot {}:", open.slot)), "{shown}");
    assert!(!shown.contains(" ! "), "no refusal: {shown}");
    assert!(!shown.contains("redis-cli --cluster fix"), "{shown}");
}

async fn repaired(lab: &Lab, inventory: &str, password: &str, slot: u16) {
    assert_eq!(open_markers(lab, password).await, Vec::<String>::new());
    every_key_there(lab, password, slot).await;
    let (ip, port) = lab.nodes()[0];
    let (clean, text) = redis_cli_check(ip, port, password);
    assert!(clean, "{text}");
    let check = paddock(&["check", "-i", inventory]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_passes_both_checks() {
    let lab = Lab::new(160);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let password = lab.password();

    let check = paddock(&["check", "-i", &inventory]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    assert!(stdout(&check).contains("OK"), "{}", stdout(&check));
    let json = paddock(&["check", "-i", &inventory, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("check --json");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["findings"], serde_json::json!([]), "{v}");
    for (ip, port) in lab.nodes() {
        let (clean, text) = redis_cli_check(ip, port, &password);
        assert!(clean, "{ip}:{port}: {text}");
        assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
    }
    // Nothing to repair: fix says so and exits 0.
    let fix = paddock(&["fix", "-i", &inventory]);
    assert_eq!(fix.status.code(), Some(0), "{}", stderr(&fix));
    assert!(
        stdout(&fix).contains("nothing to repair"),
        "{}",
        stdout(&fix)
    );

    // An agent that does not answer: the check is incomplete (exit 3) and
    // names the host; fix needs every agent.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid(&lab, 2) as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let check = paddock(&["check", "-i", &inventory]);
    assert_eq!(check.status.code(), Some(3), "{}", stdout(&check));
    assert!(stdout(&check).contains("box3"), "{}", stdout(&check));
    let fix = paddock(&["fix", "-i", &inventory]);
    assert_eq!(fix.status.code(), Some(3), "{}", stderr(&fix));
}

/// The pid of box `box_index`'s agent, from the lab's state file.
fn agent_pid(lab: &Lab, box_index: usize) -> u32 {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("lab.json")).unwrap())
            .unwrap();
    state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["host"] == format!("box{}", box_index + 1))
        .unwrap()["pid"]
        .as_u64()
        .unwrap() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddock_fix_finishes_an_interrupted_move() {
    let lab = Lab::new(161);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let password = lab.password();

    let open = leave_slot_open(&lab, &password, true).await;
    checks_find_the_open_slot(&lab, &inventory, &password, &open);
    let plan = stdout(&paddock(&["plan", "-i", &inventory]));
    assert!(
        plan.contains(&format!("slot {}: finish the move from ", open.slot))
            && plan.contains(&format!("({} key(s) left)", KEYS - MOVED)),
        "{plan}"
    );

    let fix = paddock(&["fix", "-i", &inventory, "--json"]);
    assert_eq!(
        fix.status.code(),
        Some(0),
        "{}{}",
        stdout(&fix),
        stderr(&fix)
    );
    let v: serde_json::Value = serde_json::from_slice(&fix.stdout).expect("fix --json");
    assert_eq!(v["slots_repaired"], 1, "{v}");
    assert_eq!(v["left"], serde_json::json!([]), "{v}");
    repaired(&lab, &inventory, &password, open.slot).await;
    // Finished, not rolled back: the target serves the slot now.
    let mut t = connect(open.target.ip, open.target.port, &password)
        .await
        .unwrap();
    let n: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(open.slot)
        .query_async(&mut t)
        .await
        .unwrap();
    assert_eq!(n, KEYS as u64, "the move was finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_rolls_back_a_move_the_source_never_started() {
    let lab = Lab::new(162);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let password = lab.password();

    // The target imports and holds part of the keys, the source was never
    // told (no MIGRATING): the source keeps the slot, the keys come back.
    let open = leave_slot_open(&lab, &password, false).await;
    checks_find_the_open_slot(&lab, &inventory, &password, &open);
    let plan = stdout(&paddock(&["plan", "-i", &inventory]));
    assert!(
        plan.contains(&format!(
            "slot {}: roll back the interrupted move, ",
            open.slot
        )) && plan.contains(&format!("({MOVED} key(s) move back)")),
        "{plan}"
    );

    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    repaired(&lab, &inventory, &password, open.slot).await;
    let mut s = connect(open.source.ip, open.source.port, &password)
        .await
        .unwrap();
    let n: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(open.slot)
        .query_async(&mut s)
        .await
        .unwrap();
    assert_eq!(n, KEYS as u64, "rolled back to the source");
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));
}

/// Keys spread over every slot, for the rebalance that is cut short.
const MANY: usize = 60_000;

fn many_key(i: usize) -> String {
    format!("k:{i}")
}

/// Writes [`MANY`] keys of 100 bytes, each to its slot's owner, in
/// pipelines.
async fn write_many(lab: &Lab, password: &str) {
    let (ip, port) = lab.nodes()[0];
    let mut any = connect(ip, port, password).await.unwrap();
    let all = masters(&nodes(&mut any).await);
    let mut by_owner: Vec<Vec<usize>> = vec![Vec::new(); all.len()];
    for i in 0..MANY {
        let slot = paddock_tests::reshard::key_slot(many_key(i).as_bytes());
        let owner = all
            .iter()
            .position(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .expect("every slot served");
        by_owner[owner].push(i);
    }
    for (m, keys) in all.iter().zip(by_owner) {
        let mut c = connect(m.ip, m.port, password).await.unwrap();
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.cmd("SET")
                    .arg(many_key(i))
                    .arg(format!("{i:0>100}"))
                    .ignore();
            }
            let () = pipe.query_async(&mut c).await.unwrap();
        }
    }
}

/// Every key written by [`write_many`] is served by its slot's one owner,
/// with its value, and the masters hold nothing else.
async fn many_all_there(lab: &Lab, password: &str) {
    let (ip, port) = lab.nodes()[0];
    let mut any = connect(ip, port, password).await.unwrap();
    let all = masters(&nodes(&mut any).await);
    let mut total = 0;
    let mut conns = Vec::new();
    for m in &all {
        let mut c = connect(m.ip, m.port, password).await.unwrap();
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        total += n;
        conns.push(c);
    }
    assert_eq!(total, MANY as u64, "keys on the masters");
    let mut by_owner: Vec<Vec<usize>> = vec![Vec::new(); all.len()];
    for i in 0..MANY {
        let slot = paddock_tests::reshard::key_slot(many_key(i).as_bytes());
        let owners: Vec<usize> = (0..all.len())
            .filter(|&m| all[m].slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .collect();
        assert_eq!(owners.len(), 1, "slot {slot} has one owner");
        by_owner[owners[0]].push(i);
    }
    for (c, keys) in conns.iter_mut().zip(by_owner) {
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.cmd("GET").arg(many_key(i));
            }
            let values: Vec<Option<String>> = pipe.query_async(c).await.unwrap();
            for (&i, v) in chunk.iter().zip(values) {
                assert_eq!(v, Some(format!("{i:0>100}")), "{}", many_key(i));
            }
        }
    }
}

/// Starts `paddock rebalance` in its own process group.
fn spawn_rebalance(inventory: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    Command::new(paddock_tests::bin_dir().join("paddock"))
        .args(["rebalance", "-i", inventory, "--weight", "box1=3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("paddock rebalance starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_converges_after_the_controller_is_killed_mid_rebalance() {
    use std::time::{Duration, Instant};
    let lab = Lab::new(163);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let password = lab.password();
    write_many(&lab, &password).await;

    // The rebalance (box1's master to hold 3/5 of the slots) is SIGKILLed,
    // with its process group, in the middle: once it has moved a slot and
    // opened the next; tried again while the kill happened to fall between
    // two slots, a few times at most.
    let mut left_open = Vec::new();
    for _attempt in 0..5 {
        let mut child = spawn_rebalance(&inventory);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = false;
        let mut first: Option<Vec<String>> = None;
        while Instant::now() < deadline {
            let open = open_markers(&lab, &password).await;
            if !open.is_empty() {
                let first = first.get_or_insert_with(|| open.clone());
                if open.iter().any(|o| !first.contains(o)) {
                    seen = true;
                    break;
                }
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let status = child.wait().unwrap();
        assert!(
            seen,
            "the rebalance opened a slot before it ended ({status})"
        );
        left_open = open_markers(&lab, &password).await;
        if !left_open.is_empty() {
            break;
        }
    }
    assert!(!left_open.is_empty(), "the kill left a slot open");
    eprintln!("left open by the kill: {left_open:?}");
    let (ip, port) = lab.nodes()[0];
    let (clean, text) = redis_cli_check(ip, port, &password);
    assert!(!clean, "{text}");

    // The next apply (taking over the dead controller's lease) finishes or
    // rolls back what was open, and loses nothing.
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(open_markers(&lab, &password).await, Vec::<String>::new());
    many_all_there(&lab, &password).await;
    let (clean, text) = redis_cli_check(ip, port, &password);
    assert!(clean, "{text}");
    let check = paddock(&["check", "-i", &inventory]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
}
