//! No acknowledged write lost when a master that keeps no data on disk dies
//! while its replica cannot be asked to take over (frozen, or cut off), and
//! what `paddock recover` does when the operator gives up on the replica.
//!
//! Each test builds namespace boxes (tests/src/netlab.rs) with a 3 x 2
//! cluster without persistence, writes keys acknowledged with WAIT, then
//! SIGKILLs one master while its replica is out of reach. The agent must
//! hold the master down (state HELD, visible in status) instead of starting
//! it empty, and hand its slots to the replica as soon as it is back.
//!
//! Needs root (CI runs as root); elsewhere every test says SKIPPED.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use paddock_tests::consistency::{Client, ClusterRouter, check};
use paddock_tests::ha::{Follow, Follower, kill9};
use paddock_tests::netlab::{NetLab, REDIS_PORT};
use paddock_tests::{connect, stderr, stdout};

const NODE_TIMEOUT_MS: u32 = 3000;
const KEYS: usize = 3000;
/// How long the replica stays out of reach after its master died.
const OUT_OF_REACH: Duration = Duration::from_secs(6);

fn dataless_cluster(ips: &[IpAddr]) -> String {
    paddock_tests::netlab::cluster_inventory(ips, NODE_TIMEOUT_MS).replace(
        "appendonly = true\n",
        "appendonly = false\nrdb_snapshots = false\n",
    )
}

fn lab(tag: &str, octet: u8) -> Option<NetLab> {
    let lab = NetLab::with_inventory(tag, octet, dataless_cluster)?;
    let out = lab.apply_agreeing();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    Some(lab)
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// A node's id and, for a replica, its master's id, from its nodes.conf.
fn node_ids(lab: &NetLab, i: usize, port: u16) -> (String, Option<String>) {
    let text = std::fs::read_to_string(
        lab.data_dir(i)
            .join(format!("instances/redis-{port}/nodes.conf")),
    )
    .expect("nodes.conf");
    let me = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[2].contains("myself"))
        .expect("myself line");
    let master = (me[3] != "-").then(|| me[3].to_owned());
    (me[0].to_owned(), master)
}

/// The box whose replica (port 7001) replicates box `i`'s master (7000).
fn replica_box_of(lab: &NetLab, i: usize) -> usize {
    let (master, _) = node_ids(lab, i, REDIS_PORT);
    (0..3)
        .find(|&j| node_ids(lab, j, REDIS_PORT + 1).1.as_deref() == Some(master.as_str()))
        .expect("a replica of box1's master")
}

/// Writes `k:N` for N < KEYS through a cluster client, each acknowledged
/// by a replica too (WAIT 1).
fn write_keys(lab: &NetLab) {
    let nodes = lab.nodes();
    let password = lab.password();
    lab.net.block_on(lab.workstation(), move || async move {
        let mut router = ClusterRouter::new(nodes, &password);
        for n in 0..KEYS {
            let key = format!("k:{n}");
            let ok = router.set_waited(&key, n as u64).await;
            assert!(ok, "SET {key} acknowledged by a replica");
        }
    });
}

/// Which of `k:N` are missing or wrong now, read through a cluster client.
fn missing_keys(lab: &NetLab) -> Vec<usize> {
    let nodes = lab.nodes();
    let password = lab.password();
    lab.net.block_on(lab.workstation(), move || async move {
        let mut router = ClusterRouter::new(nodes, &password);
        let mut missing = Vec::new();
        for n in 0..KEYS {
            if router.get_value(&format!("k:{n}")).await != Some(n as u64) {
                missing.push(n);
            }
        }
        missing
    })
}

/// The state `paddock status --json` gives box1's redis-7000.
fn state_of_box1_master(lab: &NetLab) -> String {
    let out = lab.paddock(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status --json");
    let found = json["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["name"] == "box1")
        .flat_map(|h| h["instances"].as_array().cloned().unwrap_or_default())
        .find(|i| i["name"] == "redis-7000")
        .unwrap_or_default();
    found["state"].as_str().unwrap_or("").to_owned()
}

/// SIGKILLs box1's master while `out_of_reach` keeps its replica away, and
/// `back` brings it back after OUT_OF_REACH. Checks the master is held
/// meanwhile, and that every key and every WAIT-acknowledged counter
/// survives.
fn master_dies_while_replica_away(
    lab: &NetLab,
    out_of_reach: impl FnOnce() + Send,
    back: impl FnOnce() + Send,
) {
    write_keys(lab);
    let master = lab.redis_pid(0, REDIS_PORT);
    let nodes = lab.nodes();
    let password = lab.password();
    let report = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            // Fault at 1 s; the replica is back OUT_OF_REACH later. Status is
            // asked on the side, so a slow answer cannot delay the return.
            std::thread::sleep(Duration::from_secs(4));
            let looked = s.spawn(|| state_of_box1_master(lab));
            std::thread::sleep(OUT_OF_REACH.saturating_sub(Duration::from_secs(3)));
            back();
            (looked.join().unwrap(), Instant::now())
        });
        let report = lab.net.block_on(lab.workstation(), move || async move {
            let mut client = Client::Cluster(ClusterRouter::new(nodes, &password));
            check(
                &mut client,
                200,
                OUT_OF_REACH + Duration::from_secs(12),
                Duration::from_secs(1),
                || {
                    out_of_reach();
                    kill9(master);
                },
                Duration::from_secs(30),
            )
            .await
        });
        let (held, _) = watcher.join().unwrap();
        (report, held)
    });
    let (report, held) = report;
    println!("counters: {report}");
    // What box1's agent did, for whoever reads a failure.
    let log = std::fs::read_to_string(lab.box_dir(0).join("agent.log")).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("redis-7000")) {
        println!("box1 agent: {line}");
    }
    assert_eq!(
        held, "HELD",
        "box1's master is held down while its replica is away"
    );
    assert_eq!(report.lost_with_wait, 0, "WAIT-acknowledged writes lost");
    assert_eq!(report.unreadable, 0, "counters unreadable after the fault");
    // The shard is out while the replica is away, and serves again soon
    // after it is back (the held master retries every 2 s at most).
    println!(
        "longest window without writes: {} ms (replica away {} ms)",
        report.longest_gap.as_millis(),
        OUT_OF_REACH.as_millis()
    );
    assert!(
        report.longest_gap
            <= OUT_OF_REACH + Duration::from_millis(u64::from(NODE_TIMEOUT_MS) * 2 + 2000),
        "the shard served again soon after its replica was back"
    );
    let missing = missing_keys(lab);
    assert!(
        missing.is_empty(),
        "{} of {KEYS} keys lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // The old master came back as the new master's replica; apply has
    // nothing to repair but the roles it may want back.
    let again = lab.apply();
    assert!(again.status.success(), "re-apply: {}", stderr(&again));
    assert!(lab.healthy_within(Duration::from_secs(30)), "healthy");
    assert!(missing_keys(lab).is_empty(), "keys after re-apply");
}

#[test]
fn dataless_master_killed_while_its_replica_is_frozen() {
    let Some(lab) = lab("frz", 71) else { return };
    let replica = lab.redis_pid(replica_box_of(&lab, 0), REDIS_PORT + 1);
    master_dies_while_replica_away(
        &lab,
        || signal(replica, nix::sys::signal::Signal::SIGSTOP),
        || signal(replica, nix::sys::signal::Signal::SIGCONT),
    );
}

#[test]
fn dataless_master_killed_while_its_replicas_box_is_cut_off() {
    let Some(lab) = lab("rcut", 72) else { return };
    let b = replica_box_of(&lab, 0);
    master_dies_while_replica_away(
        &lab,
        || lab.net.set_link(b, false),
        || lab.net.set_link(b, true),
    );
}

#[test]
fn dataless_master_killed_while_its_own_box_is_cut_off() {
    let Some(lab) = lab("mcut", 73) else { return };
    // Cut off from the other boxes, not from the workstation (so status
    // still sees it); the master dies meanwhile.
    lab.net.client_path(0);
    master_dies_while_replica_away(
        &lab,
        || lab.net.set_link(0, false),
        || lab.net.set_link(0, true),
    );
}

/// When the replica will not come back, the operator starts the held master
/// empty with `paddock recover`, which first says what that discards.
#[test]
fn recover_starts_a_held_master_empty_only_when_asked() {
    let Some(lab) = lab("rcvr", 74) else { return };
    write_keys(&lab);
    let replica = lab.redis_pid(replica_box_of(&lab, 0), REDIS_PORT + 1);
    signal(replica, nix::sys::signal::Signal::SIGSTOP);
    kill9(lab.redis_pid(0, REDIS_PORT));
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_of_box1_master(&lab) != "HELD" {
        assert!(Instant::now() < deadline, "box1's master never held");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = lab.paddock(&["status"]);
    assert!(!status.status.success(), "a held master is not healthy");
    assert!(stdout(&status).contains("HELD"), "{}", stdout(&status));

    let refused = lab.paddock(&["recover", "box1:redis-7000"]);
    assert!(
        !refused.status.success(),
        "recover without the flag refuses"
    );
    let said = stderr(&refused);
    assert!(said.contains("is HELD"), "{said}");
    assert!(said.contains("is lost"), "says what is lost: {said}");
    assert!(said.contains("--accept-data-loss"), "{said}");
    assert_eq!(state_of_box1_master(&lab), "HELD", "nothing changed");

    let done = lab.paddock(&["recover", "box1:redis-7000", "--accept-data-loss"]);
    assert!(done.status.success(), "recover: {}", stderr(&done));
    assert_eq!(state_of_box1_master(&lab), "RUNNING");
    // The box1 master answers again (empty), and a thawed replica copies it.
    signal(replica, nix::sys::signal::Signal::SIGCONT);
    let (ip, password) = (lab.addresses()[0], lab.password());
    let keys: i64 = lab.net.block_on(lab.workstation(), move || async move {
        let mut c = connect(ip, REDIS_PORT, &password)
            .await
            .expect("box1 master");
        redis::cmd("DBSIZE")
            .query_async(&mut c)
            .await
            .expect("DBSIZE")
    });
    assert_eq!(keys, 0, "started empty, as the operator accepted");
    let again = lab.apply();
    assert!(again.status.success(), "re-apply: {}", stderr(&again));
    assert!(lab.healthy_within(Duration::from_secs(30)), "healthy");
}

fn dataless_replication(ips: &[IpAddr]) -> String {
    let mut s = format!(
        "[deployment]\nname = \"faults\"\ntopology = \"replication\"\nreplicas_per_master = 2\n\n\
         [redis]\nport = {REDIS_PORT}\nmaxmemory = \"64mb\"\nappendonly = false\nrdb_snapshots = false\n"
    );
    s.push_str(&paddock_tests::netlab::hosts_toml(ips));
    s
}

/// The same rule for the replication topology: a dataless master that died
/// while both its replicas were frozen stays HELD (they may hold the data),
/// and once they thaw the most up-to-date one takes over and every key is
/// still there.
#[test]
fn dataless_replication_master_killed_while_its_replicas_are_frozen() {
    let Some(lab) = NetLab::with_inventory("rfrz", 78, dataless_replication) else {
        return;
    };
    let out = lab.apply_agreeing();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let members: Vec<(IpAddr, u16)> = lab.addresses().iter().map(|a| (*a, REDIS_PORT)).collect();
    let (master_ip, password) = (lab.addresses()[0], lab.password());
    let pw = password.clone();
    lab.net.block_on(lab.workstation(), move || async move {
        let mut c = connect(master_ip, REDIS_PORT, &pw).await.expect("master");
        for n in 0..KEYS {
            let ((), replicas): ((), i64) = redis::pipe()
                .cmd("SET")
                .arg(format!("k:{n}"))
                .arg(n)
                .cmd("WAIT")
                .arg(2)
                .arg(1000)
                .query_async(&mut c)
                .await
                .expect("SET");
            assert_eq!(replicas, 2, "both replicas acknowledged k:{n}");
        }
    });
    // Let the agent's group watch see the group formed (once a second).
    std::thread::sleep(Duration::from_secs(2));
    let replicas = [lab.redis_pid(1, REDIS_PORT), lab.redis_pid(2, REDIS_PORT)];
    for pid in replicas {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
    }
    kill9(lab.redis_pid(0, REDIS_PORT));
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let state = state_of_box1_master(&lab);
        if state == "HELD" || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for pid in replicas {
        signal(pid, nix::sys::signal::Signal::SIGCONT);
    }
    assert_eq!(
        held, "HELD",
        "the dataless master is held while its replicas are frozen"
    );
    let missing = lab.net.block_on(lab.workstation(), move || async move {
        let follower = Follower::new(Follow::Role(members), &password);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The new master, once the old one follows it.
            if let Some(m) = follower.master().await
                && m.0 != master_ip
                && let Ok(mut c) = connect(m.0, m.1, &password).await
            {
                let mut missing = Vec::new();
                for n in 0..KEYS {
                    let v: Option<usize> = redis::cmd("GET")
                        .arg(format!("k:{n}"))
                        .query_async(&mut c)
                        .await
                        .expect("GET");
                    if v != Some(n) {
                        missing.push(n);
                    }
                }
                break missing;
            }
            assert!(Instant::now() < deadline, "a replica took over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(
        missing.is_empty(),
        "{} of {KEYS} keys lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(lab.healthy_within(Duration::from_secs(30)), "healthy");
}
