//! `paddock rebalance` (issue 15): slots moved between masters under a
//! client that keeps writing, every write acknowledged by a replica
//! (WAIT) readable afterwards, a big key whole, redis-cli's own check
//! passing, a second rebalance with nothing to do, and open slots refused.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paddock_tests::{Lab, connect, paddock, stderr, stdout};
use redis::AsyncCommands;
use redis::cluster::ClusterClientBuilder;

/// Keys loaded before the move.
const KEYS: usize = 200_000;
/// Elements of the big list.
const BIG: usize = 200_000;
/// Slots redis-cli moves first, so that the cluster is out of balance.
const UNBALANCE: u32 = 300;

fn client(lab: &Lab, password: &str) -> redis::cluster::ClusterClient {
    ClusterClientBuilder::new(lab.seeds())
        .password(password)
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A master's id, address and slot ranges, from CLUSTER NODES.
#[derive(Debug, Clone)]
struct Master {
    id: String,
    ip: IpAddr,
    port: u16,
    ranges: Vec<(u16, u16)>,
}

impl Master {
    fn slots(&self) -> u32 {
        self.ranges
            .iter()
            .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
            .sum()
    }
}

async fn masters(lab: &Lab, password: &str) -> Vec<Master> {
    let (ip, port) = lab.nodes()[0];
    let mut c = connect(ip, port, password).await.unwrap();
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out: Vec<Master> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8 && f[2].contains("master"))
        .map(|f| {
            let addr = f[1].split('@').next().unwrap();
            let (ip, port) = addr.rsplit_once(':').unwrap();
            let ranges = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (r.parse().unwrap(), r.parse().unwrap()),
                })
                .collect();
            Master {
                id: f[0].to_owned(),
                ip: ip.parse().unwrap(),
                port: port.parse().unwrap(),
                ranges,
            }
        })
        .collect();
    out.sort_by_key(|m| m.ranges.first().copied());
    out
}

/// A key (hash-tagged) in `slot`.
fn key_in(slot: u16) -> String {
    let tag = (0..1_000_000)
        .map(|i| format!("t{i}"))
        .find(|t| paddock_tests::reshard::key_slot(t.as_bytes()) == slot)
        .expect("some tag hashes to every slot");
    format!("big:{{{tag}}}")
}

async fn redis_cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli")
    })
    .await
    .unwrap()
}

async fn paddock_async(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        paddock(&args)
    })
    .await
    .unwrap()
}

/// Loads `KEYS` keys `k:{i}` = i, a thousand at a time.
async fn load(c: &redis::cluster_async::ClusterConnection) {
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let mut c = c.clone();
            set.spawn(async move { c.set::<_, _, ()>(format!("k:{i}"), i).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    }
}

/// The keys of `expected` that do not read back their value, a thousand
/// reads at a time.
async fn missing(
    c: &redis::cluster_async::ClusterConnection,
    expected: &[(String, u64)],
) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in expected.chunks(1000) {
        let mut set = tokio::task::JoinSet::new();
        for (k, v) in chunk.iter().cloned() {
            let mut c = c.clone();
            set.spawn(async move {
                let got: Option<u64> = c.get(&k).await.unwrap();
                (got != Some(v)).then_some(k)
            });
        }
        while let Some(r) = set.join_next().await {
            out.extend(r.unwrap());
        }
    }
    out
}

/// Writes `w:{n}` until `stop`, each acknowledged by a replica of every
/// master (WAIT 1); returns the acknowledged ones and the errors seen.
async fn writer(
    mut c: redis::cluster_async::ClusterConnection,
    stop: Arc<AtomicBool>,
) -> (Vec<u64>, Vec<String>) {
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    let until = Instant::now() + Duration::from_secs(240);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until && n < 1_000_000 {
        n += 1;
        let set: redis::RedisResult<()> = c.set(format!("w:{n}"), n).await;
        if let Err(e) = set {
            errors.push(format!("SET w:{n}: {e}"));
            continue;
        }
        // Generous: the lab's 2 cores are shared with builds.
        let wait: redis::RedisResult<i64> = redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query_async(&mut c)
            .await;
        match wait {
            Ok(r) if r >= 1 => acked.push(n),
            Ok(r) => errors.push(format!("WAIT after w:{n}: {r} replicas")),
            Err(e) => errors.push(format!("WAIT after w:{n}: {e}")),
        }
    }
    (acked, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_moves_slots_under_writes() {
    let lab = Lab::new(155);
    let inventory = lab.inventory().display().to_string();
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let password = lab.password();
    let cc = client(&lab, &password);
    let mut c = cc.get_async_connection().await.unwrap();
    let loading = Instant::now();
    load(&c).await;
    eprintln!("loaded {KEYS} keys in {:?}", loading.elapsed());

    // Out of balance: redis-cli moves UNBALANCE slots from the first
    // master to the second.
    let before = masters(&lab, &password).await;
    assert_eq!(before.len(), 3, "{before:?}");
    let (a, b) = (&before[0], &before[1]);
    let out = redis_cli(vec![
        "-a".into(),
        password.clone(),
        "--no-auth-warning".into(),
        "--cluster".into(),
        "reshard".into(),
        format!("{}:{}", a.ip, a.port),
        "--cluster-from".into(),
        a.id.clone(),
        "--cluster-to".into(),
        b.id.clone(),
        "--cluster-slots".into(),
        UNBALANCE.to_string(),
        "--cluster-yes".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unbalanced = masters(&lab, &password).await;
    let b_now = unbalanced.iter().find(|m| m.id == b.id).unwrap();
    assert_eq!(b_now.slots(), b.slots() + UNBALANCE);

    // The second master gives from the end of its ranges: its last slot
    // moves. A big list lives there.
    let last = b_now.ranges.iter().map(|r| r.1).max().unwrap();
    let big = key_in(last);
    let mut on_b = connect(b.ip, b.port, &password).await.unwrap();
    let keyslot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&big)
        .query_async(&mut on_b)
        .await
        .unwrap();
    assert_eq!(keyslot, last, "{big}");
    for chunk in (0..BIG).collect::<Vec<_>>().chunks(10_000) {
        let items: Vec<String> = chunk.iter().map(|i| format!("element-{i}")).collect();
        let _: () = c.rpush(&big, items).await.unwrap();
    }
    // A hash and a set past their compact encodings (hash tables, whose
    // order differs from one process to another) in the same slot.
    let tag = &big[4..];
    let (hash, set) = (format!("hash:{tag}"), format!("set:{tag}"));
    let fields: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("f{i}"), format!("v{i}")))
        .collect();
    let _: () = c.hset_multiple(&hash, &fields).await.unwrap();
    let members: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    let _: () = c.sadd(&set, &members).await.unwrap();
    // A key name that is not UTF-8, with a NUL and a space.
    let binary: Vec<u8> = [b"bin:".as_slice(), tag.as_bytes(), b"\xff\x00 \xfe"].concat();
    let _: () = c.set(&binary, b"\x00\x01\xff".as_slice()).await.unwrap();
    let dump_before: Vec<u8> = redis::cmd("DUMP")
        .arg(&big)
        .query_async(&mut on_b)
        .await
        .unwrap();

    // Rebalance while a client writes.
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(
        cc.get_async_connection().await.unwrap(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = paddock_async(vec![
        "rebalance".into(),
        "-i".into(),
        inventory.clone(),
        "--json".into(),
    ])
    .await;
    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = writing.await.unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("--json");
    let moves = report["moves"].as_array().unwrap();
    assert!(!moves.is_empty(), "{report}");
    let (keys, ms) = (
        report["keys"].as_u64().unwrap(),
        report["elapsed_ms"].as_u64().unwrap(),
    );
    assert!(keys > 0, "{report}");
    eprintln!(
        "REBALANCE RATE: {} slot(s), {keys} key(s) in {ms} ms: {:.0} keys/s",
        report["slots"],
        keys as f64 * 1000.0 / ms.max(1) as f64
    );
    assert!(errors.is_empty(), "the writer saw errors: {errors:?}");
    assert!(acked.len() > 10, "the writer wrote during the move");

    // Balanced again, every key readable, the big list whole and moved.
    let after = masters(&lab, &password).await;
    let shares: Vec<u32> = after.iter().map(Master::slots).collect();
    assert!(
        shares.iter().all(|s| (5461..=5462).contains(s)),
        "{shares:?}"
    );
    assert!(paddock_tests::cluster_check_passes(&lab, &password).await);
    let mut c = cc.get_async_connection().await.unwrap();
    let loaded: Vec<(String, u64)> = (0..KEYS as u64).map(|i| (format!("k:{i}"), i)).collect();
    let lost = missing(&c, &loaded).await;
    assert!(lost.is_empty(), "keys loaded before the move: {lost:?}");
    let written: Vec<(String, u64)> = acked.iter().map(|&n| (format!("w:{n}"), n)).collect();
    let lost = missing(&c, &written).await;
    assert!(
        lost.is_empty(),
        "writes acknowledged during the move: {lost:?}"
    );
    let owner = after
        .iter()
        .find(|m| m.ranges.iter().any(|&(x, y)| (x..=y).contains(&last)))
        .unwrap();
    assert_ne!(owner.id, b.id, "slot {last} moved away from the donor");
    let len: usize = c.llen(&big).await.unwrap();
    assert_eq!(len, BIG);
    let mut on_owner = connect(owner.ip, owner.port, &password).await.unwrap();
    let dump_after: Vec<u8> = redis::cmd("DUMP")
        .arg(&big)
        .query_async(&mut on_owner)
        .await
        .unwrap();
    assert!(dump_after == dump_before, "the big list arrived whole");
    let got: std::collections::HashMap<String, String> = c.hgetall(&hash).await.unwrap();
    assert_eq!(got.len(), fields.len());
    assert!(fields.iter().all(|(f, v)| got.get(f) == Some(v)));
    let got: std::collections::HashSet<String> = c.smembers(&set).await.unwrap();
    assert_eq!(got, members.iter().cloned().collect());
    let got: Option<Vec<u8>> = c.get(&binary).await.unwrap();
    assert_eq!(got.as_deref(), Some(b"\x00\x01\xff".as_slice()));
    let sample: Vec<String> = c.lrange(&big, 123_456, 123_458).await.unwrap();
    assert_eq!(
        sample,
        ["element-123456", "element-123457", "element-123458"]
    );

    // Nothing left to do.
    let again = paddock(&["rebalance", "-i", &inventory]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("nothing to move"),
        "{}",
        stdout(&again)
    );

    // An open slot is refused, pointing at `paddock fix`.
    let mut on_a = connect(owner.ip, owner.port, &password).await.unwrap();
    let other = after.iter().find(|m| m.id != owner.id).unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(last)
        .arg("MIGRATING")
        .arg(&other.id)
        .query_async(&mut on_a)
        .await
        .unwrap();
    let refused = paddock(&["rebalance", "-i", &inventory, "--weight", "box1=2"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("paddock fix"),
        "{}",
        stderr(&refused)
    );
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(last)
        .arg("STABLE")
        .query_async(&mut on_a)
        .await
        .unwrap();
}
