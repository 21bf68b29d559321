//! A master cut off from the other boxes but not from its clients: how long
//! does it keep acknowledging writes that the other side never sees? Each
//! test gives the workstation its own path to box1 (`Net::client_path`),
//! takes box1's link to the other boxes down, writes to box1's master for
//! the whole partition through a client pinned to it (the worst client: it
//! never learns of the failover), heals, and reads every acknowledged write
//! back from whoever is master then. Printed: how many acknowledged writes
//! were lost and how late after the cut the last of them was acknowledged.
//!
//! Needs root (CI runs as root); elsewhere every test says SKIPPED.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use paddock_tests::consistency::ClusterRouter;
use paddock_tests::ha::{Follow, Follower};
use paddock_tests::netlab::{NetLab, REDIS_PORT, cluster_inventory};
use paddock_tests::{connect, stderr};

const NODE_TIMEOUT_MS: u32 = 3000;
const CUT_AT: Duration = Duration::from_secs(1);

/// What writes pinned to one master acknowledged, and when.
struct Pinned {
    /// (value, time since the writer started) of each acknowledged SET.
    acked: Vec<(u64, Duration)>,
}

/// Writes `p:N` = N to `(ip, port)` only, for `total`, cutting box1 off at
/// CUT_AT and healing it at `heal_at`. Bounded in time and count.
fn pinned_writes(lab: &NetLab, at: (IpAddr, u16), total: Duration, heal_at: Duration) -> Pinned {
    let password = lab.password();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(CUT_AT);
            lab.net.set_link(0, false);
            std::thread::sleep(heal_at - CUT_AT);
            lab.net.set_link(0, true);
        });
        lab.net.block_on(lab.workstation(), move || async move {
            let start = Instant::now();
            let mut acked = Vec::new();
            let mut conn = None;
            let mut n: u64 = 0;
            while start.elapsed() < total && n < 1_000_000 {
                n += 1;
                if conn.is_none() {
                    conn = tokio::time::timeout(
                        Duration::from_millis(300),
                        connect(at.0, at.1, &password),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok);
                }
                let Some(c) = conn.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let set = tokio::time::timeout(
                    Duration::from_millis(300),
                    redis::cmd("SET")
                        .arg(format!("p:{n}"))
                        .arg(n)
                        .query_async::<()>(c),
                )
                .await;
                match set {
                    Ok(Ok(())) => acked.push((n, start.elapsed())),
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(_) => conn = None,
                }
            }
            Pinned { acked }
        })
    })
}

/// The acknowledged writes missing now, with when each was acknowledged.
fn lost(pinned: &Pinned, mut read: impl FnMut(&str) -> Option<u64>) -> Vec<(u64, Duration)> {
    pinned
        .acked
        .iter()
        .filter(|(n, _)| read(&format!("p:{n}")) != Some(*n))
        .copied()
        .collect()
}

fn report(what: &str, pinned: &Pinned, lost: &[(u64, Duration)]) -> Duration {
    let after_cut = |d: Duration| d.saturating_sub(CUT_AT);
    let last_ack = pinned
        .acked
        .iter()
        .map(|(_, t)| after_cut(*t))
        .filter(|t| !t.is_zero())
        .max()
        .unwrap_or_default();
    let window = lost
        .iter()
        .map(|(_, t)| after_cut(*t))
        .max()
        .unwrap_or_default();
    println!(
        "{what}: {} writes acknowledged, {} of them lost; the last lost one was acknowledged {} ms after the cut; the master took writes until {} ms after the cut",
        pinned.acked.len(),
        lost.len(),
        window.as_millis(),
        last_ack.as_millis()
    );
    window
}

fn sentinel_inventory(ips: &[IpAddr]) -> String {
    let mut s = format!(
        "[deployment]\nname = \"faults\"\ntopology = \"sentinel\"\nreplicas_per_master = 2\n\n\
         [redis]\nport = {REDIS_PORT}\nmaxmemory = \"64mb\"\n\n[sentinel]\ndown_after_ms = 2000\nfailover_timeout_ms = 10000\n"
    );
    s.push_str(&paddock_tests::netlab::hosts_toml(ips));
    s
}

/// Sentinel: the cut-off master takes writes for at most
/// min-replicas-max-lag (10 s by default) after the cut, and is made a
/// replica of the new master as soon as the partition heals.
#[test]
fn sentinel_master_cut_off_from_its_replicas_but_not_its_clients() {
    let Some(lab) = NetLab::with_inventory("spart", 75, sentinel_inventory) else {
        return;
    };
    let out = lab.apply_agreeing();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    lab.net.client_path(0);
    let old = (lab.addresses()[0], REDIS_PORT);
    let heal_at = Duration::from_secs(16);
    let pinned = pinned_writes(&lab, old, heal_at + Duration::from_secs(2), heal_at);
    let healed = Instant::now() - Duration::from_secs(2);
    let password = lab.password();
    let sentinels: Vec<(IpAddr, u16)> = lab.addresses().iter().map(|a| (*a, 26379)).collect();
    let acked = pinned.acked.clone();
    let (lost, demoted_after) = lab.net.block_on(lab.workstation(), move || async move {
        // The old master follows the new one soon after the heal.
        let mut demoted_after = None;
        for _ in 0..200 {
            if let Ok(mut c) = connect(old.0, old.1, &password).await
                && let Ok(role) = redis::cmd("ROLE")
                    .query_async::<Vec<redis::Value>>(&mut c)
                    .await
                && matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"slave")
            {
                demoted_after = Some(healed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let follower = Follower::new(
            Follow::Sentinel {
                sentinels: sentinels[1..].to_vec(),
                name: "faults".into(),
            },
            &password,
        );
        let master = follower
            .master()
            .await
            .expect("the sentinels name a master");
        let mut c = connect(master.0, master.1, &password)
            .await
            .expect("master");
        let mut lost = Vec::new();
        for (n, t) in &acked {
            let v: Option<u64> = redis::cmd("GET")
                .arg(format!("p:{n}"))
                .query_async(&mut c)
                .await
                .expect("GET");
            if v != Some(*n) {
                lost.push((*n, *t));
            }
        }
        (lost, demoted_after)
    });
    let window = report("sentinel, master cut off", &pinned, &lost);
    // What the sentinels did, for whoever reads a failure.
    for i in 0..3 {
        let dir = lab.data_dir(i).join("instances");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let log = std::fs::read_to_string(entry.path().join("redis.log")).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains(" +") || l.contains(" -")) {
                println!(
                    "box{} {}: {line}",
                    i + 1,
                    entry.file_name().to_string_lossy()
                );
            }
        }
    }
    let demoted_after = demoted_after.expect("the old master became a replica after the heal");
    println!(
        "the old master was a replica {} ms after the heal",
        demoted_after.as_millis()
    );
    assert!(
        window <= Duration::from_secs(11) + Duration::from_millis(500),
        "acknowledged writes lost up to {} ms after the cut; min-replicas-max-lag is 10 s",
        window.as_millis()
    );
    let again = lab.apply();
    assert!(again.status.success(), "re-apply: {}", stderr(&again));
}

/// Cluster: what a cut-off master acknowledges and loses, with Redis's own
/// bound (it stops once it sees the majority gone) and with
/// min_replicas_to_write = 1 and a lag below the node timeout.
fn cluster_partition(tag: &str, octet: u8, min_replicas: Option<(u32, u32)>) -> Duration {
    let Some(lab) = NetLab::with_inventory(tag, octet, |ips| {
        let inv = cluster_inventory(ips, NODE_TIMEOUT_MS);
        match min_replicas {
            Some((n, lag)) => inv.replace(
                "appendonly = true\n",
                &format!(
                    "appendonly = true\nmin_replicas_to_write = {n}\nmin_replicas_max_lag_s = {lag}\n"
                ),
            ),
            None => inv,
        }
    }) else {
        return Duration::ZERO;
    };
    let out = lab.apply();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    lab.net.client_path(0);
    let heal_at = Duration::from_secs(12);
    let pinned = pinned_writes(
        &lab,
        (lab.addresses()[0], REDIS_PORT),
        heal_at + Duration::from_secs(1),
        heal_at,
    );
    assert!(lab.healthy_within(Duration::from_secs(40)), "healthy again");
    let nodes = lab.nodes();
    let password = lab.password();
    let lost = lab.net.block_on(lab.workstation(), move || async move {
        let mut router = ClusterRouter::new(nodes, &password);
        let mut values = Vec::new();
        for (n, _) in &pinned.acked {
            values.push(router.get_value(&format!("p:{n}")).await);
        }
        (pinned, values)
    });
    let (pinned, values) = lost;
    let mut values = values.into_iter();
    let lost = lost_from(&pinned, &mut values);
    let what = match min_replicas {
        Some((n, lag)) => format!("cluster, min_replicas_to_write {n}, lag {lag} s"),
        None => "cluster, min_replicas_to_write 0".into(),
    };
    report(&what, &pinned, &lost)
}

fn lost_from(
    pinned: &Pinned,
    values: &mut impl Iterator<Item = Option<u64>>,
) -> Vec<(u64, Duration)> {
    lost(pinned, |_| values.next().flatten())
}

#[test]
fn cluster_master_cut_off_from_the_others_but_not_its_clients() {
    let window = cluster_partition("cpart", 76, None);
    // Redis Cluster alone: the master stops once it has flagged the others
    // (node timeout) and seen it lost the majority.
    assert!(
        window <= Duration::from_millis(u64::from(NODE_TIMEOUT_MS) * 2 + 2000),
        "lost writes acknowledged {} ms after the cut",
        window.as_millis()
    );
}

#[test]
fn cluster_master_cut_off_with_min_replicas_to_write() {
    let window = cluster_partition("cpmr", 77, Some((1, 1)));
    // min-replicas-max-lag 1: a replica's last ACK (sent every second)
    // must be at most 1 s old, so writes stop within about 2 s.
    assert!(
        window <= Duration::from_millis(2500),
        "lost writes acknowledged {} ms after the cut",
        window.as_millis()
    );
}
