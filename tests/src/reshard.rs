//! `paddock-bench reshard` (issue 15): a quarter of the slots of a loaded
//! 3-master cluster moved to a new, 4th master, by Paddock and by
//! `redis-cli --cluster add-node` + `rebalance --cluster-use-empty-masters`,
//! on the same data in the same run, while a cluster client writes and
//! reads. Figures: keys moved per second, total time, the client's p99
//! latency and failed requests during the move, keys lost afterwards.
//!
//! Both clusters have no replicas: the move is between masters, and a
//! replica would only add its own copy of the traffic to both sides. Both
//! run the same redis.conf (the one the agent rendered for the Paddock
//! side, with the other side's addresses and paths). Paddock's cluster is
//! a lab on 127.0.170.1-4; redis-cli's are four redis-server processes
//! this module starts on 127.0.171.1-4 and stops by pid.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{Lab, connect, field, paddock, wait_until};

/// Keys loaded before the move (the 1,000,000), unless
/// PADDOCK_BENCH_KEYS says otherwise (for a quick try of the harness).
fn key_count() -> u32 {
    std::env::var("PADDOCK_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

const VALUE_BYTES: usize = 100;
/// SETs (or GETs) per pipeline while loading and reading back.
const BATCH: usize = 1000;
/// The longest a move may take before the benchmark gives up on it.
const MOVE_LIMIT: Duration = Duration::from_secs(900);
/// redis-cli's own options, recorded in the table.
pub const REDIS_CLI_REBALANCE: &str = "--cluster rebalance --cluster-use-empty-masters";

/// CRC16/XMODEM, Redis Cluster's key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key, hash tags included, as CLUSTER KEYSLOT computes it:
/// loading and reading back go to each slot's master directly.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

/// A key of the benchmark: loaded before the move, or written by the
/// client during it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Loaded(u64),
    Written(u64),
}

impl Key {
    fn name(self) -> String {
        match self {
            Key::Loaded(n) => format!("r:{n:07}"),
            Key::Written(n) => format!("w:{n}"),
        }
    }

    /// 100 bytes that say which key they belong to: a value read back is
    /// checked, not just found.
    fn value(self) -> Vec<u8> {
        let unit = match self {
            Key::Loaded(n) => format!("L{n:019}"),
            Key::Written(n) => format!("W{n:019}"),
        };
        unit.repeat(VALUE_BYTES / unit.len()).into_bytes()
    }
}

/// Each slot's master, from CLUSTER SLOTS; None unless all 16384 are served.
async fn owners(node: (IpAddr, u16), password: &str) -> Option<Vec<(IpAddr, u16)>> {
    let mut c = connect(node.0, node.1, password).await.ok()?;
    let redis::Value::Array(ranges) = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut c)
        .await
        .ok()?
    else {
        return None;
    };
    let mut owner = vec![None; 16384];
    for r in ranges {
        let redis::Value::Array(r) = r else { continue };
        let (Some(redis::Value::Int(a)), Some(redis::Value::Int(b)), Some(redis::Value::Array(m))) =
            (r.first(), r.get(1), r.get(2))
        else {
            continue;
        };
        let (Some(redis::Value::BulkString(host)), Some(redis::Value::Int(port))) =
            (m.first(), m.get(1))
        else {
            continue;
        };
        let ip: IpAddr = String::from_utf8_lossy(host).parse().ok()?;
        for s in *a..=*b {
            *owner.get_mut(usize::try_from(s).ok()?)? = Some((ip, u16::try_from(*port).ok()?));
        }
    }
    owner.into_iter().collect()
}

/// Whether every one of `nodes` reports cluster_state:ok and knows
/// `count` nodes, none of them still in a handshake.
async fn agreed(nodes: &[(IpAddr, u16)], count: usize, password: &str) -> bool {
    for &(ip, port) in nodes {
        let Ok(mut c) = connect(ip, port, password).await else {
            return false;
        };
        let info: redis::RedisResult<String> =
            redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await;
        let listed: redis::RedisResult<String> =
            redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await;
        let (Ok(info), Ok(listed)) = (info, listed) else {
            return false;
        };
        let lines: Vec<&str> = listed.lines().filter(|l| !l.trim().is_empty()).collect();
        if field(&info, "cluster_state").as_deref() != Some("ok")
            || lines.len() != count
            || lines
                .iter()
                .any(|l| l.contains("handshake") || l.contains("noaddr"))
        {
            return false;
        }
    }
    true
}

/// Sends `keys` to their masters (by `owner`), BATCH commands per
/// pipeline, one task per master; `command` builds each key's command.
/// Returns the keys whose reply `check` refused (all of a batch that
/// failed as a whole).
async fn by_master(
    keys: Vec<Key>,
    owner: &[(IpAddr, u16)],
    password: &str,
    command: fn(Key) -> redis::Cmd,
    check: fn(Key, &redis::Value) -> bool,
) -> Vec<Key> {
    let mut groups: std::collections::BTreeMap<(IpAddr, u16), Vec<Key>> = Default::default();
    for k in keys {
        let slot = usize::from(key_slot(k.name().as_bytes()));
        groups.entry(owner[slot]).or_default().push(k);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (node, keys) in groups {
        let password = password.to_owned();
        tasks.spawn(async move {
            let mut refused = Vec::new();
            let Ok(mut c) = connect(node.0, node.1, &password).await else {
                return keys;
            };
            for chunk in keys.chunks(BATCH) {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for &k in chunk {
                    pipe.add_command(command(k));
                }
                match pipe.query_async::<Vec<redis::Value>>(&mut c).await {
                    Ok(replies) if replies.len() == chunk.len() => refused.extend(
                        chunk
                            .iter()
                            .zip(&replies)
                            .filter(|(k, v)| !check(**k, v))
                            .map(|(k, _)| *k),
                    ),
                    _ => refused.extend_from_slice(chunk),
                }
            }
            refused
        });
    }
    let mut refused = Vec::new();
    while let Some(r) = tasks.join_next().await {
        refused.extend(r.unwrap_or_default());
    }
    refused
}

fn set_command(k: Key) -> redis::Cmd {
    let mut c = redis::cmd("SET");
    c.arg(k.name()).arg(k.value());
    c
}

fn get_command(k: Key) -> redis::Cmd {
    let mut c = redis::cmd("GET");
    c.arg(k.name());
    c
}

fn set_ok(_: Key, v: &redis::Value) -> bool {
    matches!(v, redis::Value::Okay)
}

fn has_value(k: Key, v: &redis::Value) -> bool {
    matches!(v, redis::Value::BulkString(b) if *b == k.value())
}

/// Loads `count` keys of 100 bytes, pipelined to each slot's master.
/// Returns how many keys each slot holds.
async fn load(count: u32, owner: &[(IpAddr, u16)], password: &str) -> Vec<u64> {
    let keys: Vec<Key> = (0..u64::from(count)).map(Key::Loaded).collect();
    let mut per_slot = vec![0u64; 16384];
    for k in &keys {
        per_slot[usize::from(key_slot(k.name().as_bytes()))] += 1;
    }
    let t0 = Instant::now();
    let refused = by_master(keys, owner, password, set_command, set_ok).await;
    assert!(
        refused.is_empty(),
        "{} of the loaded keys were refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    eprintln!(
        "reshard: loaded {count} keys of {VALUE_BYTES} bytes in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    per_slot
}

/// The keys (of `keys`) that are not there with their value: read from
/// each slot's master after the move, and each miss asked again through
/// a cluster client (a node that had not yet heard of the new owner).
async fn lost(keys: Vec<Key>, seeds: &[(IpAddr, u16)], password: &str) -> Vec<Key> {
    let Some(owner) = owners(seeds[0], password).await else {
        return keys;
    };
    let missed = by_master(keys, &owner, password, get_command, has_value).await;
    if missed.is_empty() {
        return missed;
    }
    let Ok(mut c) = cluster_client(seeds, password).await else {
        return missed;
    };
    let mut still = Vec::new();
    // Bounded: a whole lost data set is not asked again key by key.
    for (i, k) in missed.iter().enumerate() {
        let again = if i < 10_000 {
            tokio::time::timeout(
                Duration::from_secs(2),
                get_command(*k).query_async::<redis::Value>(&mut c),
            )
            .await
        } else {
            Ok(Ok(redis::Value::Nil))
        };
        if !matches!(again, Ok(Ok(ref v)) if has_value(*k, v)) {
            still.push(*k);
        }
    }
    still
}

async fn cluster_client(
    seeds: &[(IpAddr, u16)],
    password: &str,
) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
    redis::cluster::ClusterClientBuilder::new(
        seeds
            .iter()
            .map(|(ip, port)| format!("redis://{ip}:{port}"))
            .collect::<Vec<_>>(),
    )
    .password(password)
    .connection_timeout(Duration::from_secs(1))
    .response_timeout(Duration::from_secs(1))
    .build()?
    .get_async_connection()
    .await
}

/// What the client saw during a move.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Every request's latency (SET, then GET of the key written, then GET
    /// of a loaded key), in microseconds.
    pub latencies_us: Vec<u64>,
    /// Requests that returned an error, timed out (3 s) or read a wrong
    /// value, after the client's own following of MOVED and ASK.
    pub failed: u64,
    /// The first few failures, to say what they were.
    pub failures: Vec<String>,
    /// The keys whose SET was acknowledged.
    pub acked: Vec<u64>,
}

/// One request through the cluster client, timed and checked.
async fn request(
    c: &mut redis::cluster_async::ClusterConnection,
    cmd: redis::Cmd,
    check: impl Fn(&redis::Value) -> bool,
    log: &mut ClientLog,
) -> bool {
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(3), cmd.query_async::<redis::Value>(c)).await;
    log.latencies_us
        .push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    let ok = matches!(&r, Ok(Ok(v)) if check(v));
    if !ok {
        log.failed += 1;
        if log.failures.len() < 5 {
            log.failures.push(match r {
                Ok(Ok(v)) => format!("unexpected reply {v:?}"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no reply within 3 s".into(),
            });
        }
    }
    ok
}

/// Writes `w:N` and reads it back, then reads a loaded key, every 2 ms,
/// through the redis crate's cluster client (which follows MOVED and ASK),
/// until `stop` or MOVE_LIMIT. Each write and read is checked.
async fn client(
    seeds: Vec<(IpAddr, u16)>,
    password: String,
    loaded: u32,
    stop: Arc<AtomicBool>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let Ok(mut c) = cluster_client(&seeds, &password).await else {
        log.failed += 1;
        log.failures
            .push("the cluster client could not connect".into());
        return log;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < MOVE_LIMIT && n < 5_000_000 {
        tick.tick().await;
        let written = Key::Written(n);
        if request(
            &mut c,
            set_command(written),
            |v| set_ok(written, v),
            &mut log,
        )
        .await
        {
            log.acked.push(n);
            request(
                &mut c,
                get_command(written),
                |v| has_value(written, v),
                &mut log,
            )
            .await;
        }
        // A loaded key spread over the whole key space (7919 is prime).
        let old = Key::Loaded(n.wrapping_mul(7919) % u64::from(loaded.max(1)));
        request(&mut c, get_command(old), |v| has_value(old, v), &mut log).await;
        n += 1;
    }
    log
}

/// One side's figures.
#[derive(Debug)]
pub struct Figures {
    pub label: String,
    pub slots_moved: usize,
    pub keys_moved: u64,
    pub total: Duration,
    pub requests: usize,
    pub failed: u64,
    pub p99: Duration,
    pub max: Duration,
    pub lost_loaded: usize,
    pub lost_written: usize,
    pub acked: usize,
}

impl Figures {
    pub fn keys_per_second(&self) -> f64 {
        self.keys_moved as f64 / self.total.as_secs_f64().max(1e-9)
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.1} s | {:.0} | {} | {} | {:.1} ms | {:.1} ms | {} of {} loaded, {} of {} written |",
            self.label,
            self.slots_moved,
            self.keys_moved,
            self.total.as_secs_f64(),
            self.keys_per_second(),
            self.requests,
            self.failed,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.lost_loaded,
            key_count(),
            self.lost_written,
            self.acked
        )
    }
}

/// The loaded keys whose slot changed master between `before` and `after`.
fn moved_keys(per_slot: &[u64], before: &[(IpAddr, u16)], after: &[(IpAddr, u16)]) -> u64 {
    (0..16384)
        .filter(|&s| before[s] != after[s])
        .map(|s| per_slot[s])
        .sum()
}

/// The p-th percentile (0-100) of `v`, sorted in place.
fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A loaded cluster ready to be moved: its nodes (the seeds of the
/// client), password and the keys each slot holds.
struct Loaded {
    seeds: Vec<(IpAddr, u16)>,
    password: String,
    per_slot: Vec<u64>,
    before: Vec<(IpAddr, u16)>,
}

/// Runs `mover` (the whole move, timed) while the client writes and
/// reads; then reads every loaded and acknowledged key back. `mover`
/// returns the row's label: what it ran.
async fn measure<F>(loaded: &Loaded, mover: F) -> Result<Figures, String>
where
    F: std::future::Future<Output = Result<String, String>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(client(
        loaded.seeds.clone(),
        loaded.password.clone(),
        key_count(),
        stop.clone(),
    ));
    // The client runs a moment before the move, as traffic would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let moved = tokio::time::timeout(MOVE_LIMIT, mover).await;
    let total = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut log = writer.await.map_err(|e| format!("the client: {e}"))?;
    let label = match moved {
        Ok(Ok(label)) => label,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(format!("the move took over {} s", MOVE_LIMIT.as_secs())),
    };
    eprintln!(
        "reshard: {label}: moved in {:.1} s; client: {} requests, {} failed {:?}",
        total.as_secs_f64(),
        log.latencies_us.len(),
        log.failed,
        log.failures
    );
    let after = owners(loaded.seeds[0], &loaded.password)
        .await
        .ok_or("no full slot map after the move")?;
    let t1 = Instant::now();
    let loaded_keys: Vec<Key> = (0..u64::from(key_count())).map(Key::Loaded).collect();
    let lost_loaded = lost(loaded_keys, &loaded.seeds, &loaded.password).await;
    let written: Vec<Key> = log.acked.iter().map(|&n| Key::Written(n)).collect();
    let lost_written = lost(written, &loaded.seeds, &loaded.password).await;
    eprintln!(
        "reshard: {label}: read back in {:.1} s: {} loaded and {} written keys lost {:?}",
        t1.elapsed().as_secs_f64(),
        lost_loaded.len(),
        lost_written.len(),
        lost_loaded
            .iter()
            .chain(&lost_written)
            .take(5)
            .collect::<Vec<_>>()
    );
    let requests = log.latencies_us.len();
    Ok(Figures {
        slots_moved: (0..16384).filter(|&s| loaded.before[s] != after[s]).count(),
        keys_moved: moved_keys(&loaded.per_slot, &loaded.before, &after),
        label,
        total,
        requests,
        failed: log.failed,
        p99: Duration::from_micros(percentile(&mut log.latencies_us, 99.0)),
        max: Duration::from_micros(percentile(&mut log.latencies_us, 100.0)),
        lost_loaded: lost_loaded.len(),
        lost_written: lost_written.len(),
        acked: log.acked.len(),
    })
}

/// Loads the formed cluster at `seeds`; what `measure` needs.
async fn load_cluster(seeds: Vec<(IpAddr, u16)>, password: &str) -> Loaded {
    let before = owners(seeds[0], password)
        .await
        .expect("a full slot map before loading");
    let per_slot = load(key_count(), &before, password).await;
    Loaded {
        seeds,
        password: password.to_owned(),
        per_slot,
        before,
    }
}

/// A process run to its end, killed if it outlives `limit` (or if the
/// benchmark fails while it runs: kill_on_drop).
async fn run(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<String, String> {
    let name = program.file_name().unwrap_or_default().to_string_lossy();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(MOVE_LIMIT, cmd.output())
        .await
        .map_err(|_| format!("{name} {} took too long", args.join(" ")))?
        .map_err(|e| format!("{name}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        eprintln!("{}", tail(&text, 30));
        // The line that says what went wrong, rather than a hint after it.
        let said = text
            .lines()
            .rev()
            .find(|l| l.contains("error"))
            .map_or_else(|| tail(&text, 1), str::to_owned);
        Err(format!(
            "`{name} {}` failed ({}): {said}",
            args.join(" "),
            out.status,
        ))
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn lab_nodes(lab: &Lab) -> Vec<(IpAddr, u16)> {
    lab.addresses.iter().map(|&ip| (ip, lab.port)).collect()
}

/// The Paddock side: a lab of three boxes, one master each; loaded; a
/// fourth box added and `masters` raised to 4, then `paddock apply`.
/// Returns the figures (or why the move failed) and the redis.conf the
/// agent rendered (box1's), which the redis-cli side runs too.
async fn paddock_side() -> (Result<Figures, String>, String, String) {
    let mut lab = Lab::new(170);
    assert!(lab.up(&["--no-apply"]).status.success(), "lab up");
    let inventory = lab.inventory();
    let text = std::fs::read_to_string(&inventory).unwrap();
    std::fs::write(
        &inventory,
        text.replace("replicas_per_master = 1", "replicas_per_master = 0")
            .replace("maxmemory = \"128mb\"", "maxmemory = \"1gb\""),
    )
    .unwrap();
    let inv = inventory.display().to_string();
    assert!(paddock(&["apply", "-i", &inv]).status.success(), "apply");
    let password = lab.password();
    let conf = std::fs::read_to_string(lab.dir().join("box1/data/control/redis-7000/redis.conf"))
        .expect("the agent's redis.conf");
    let loaded = load_cluster(lab_nodes(&lab), &password).await;
    lab.addresses.push("127.0.170.4".parse().unwrap());
    assert!(lab.up(&["--no-apply"]).status.success(), "lab up, box4");
    let text = std::fs::read_to_string(&inventory).unwrap();
    std::fs::write(&inventory, text.replace("masters = 3", "masters = 4")).unwrap();
    let _ = paddock(&["plan", "-i", &inv]);
    let bin = crate::bin_dir().join("paddock");
    let figures = measure(&loaded, async {
        let out = run(&bin, &["apply", "-i", &inv], &[]).await?;
        eprintln!("{}", tail(&out, 15));
        let label = "Paddock: `paddock apply`, `masters` 3 -> 4 and a 4th box";
        if masters_serving(&loaded).await >= 4 {
            return Ok(label.to_owned());
        }
        // An apply that adds the master but leaves it empty: `paddock
        // rebalance` gives it its share, and is timed with it.
        let out = run(&bin, &["rebalance", "-i", &inv], &[]).await?;
        eprintln!("{}", tail(&out, 15));
        Ok(format!("{label}, then `paddock rebalance`"))
    })
    .await;
    drop(lab);
    (figures, conf, password)
}

/// How many masters serve slots, in the slot map of the first seed.
async fn masters_serving(loaded: &Loaded) -> usize {
    let owner = owners(loaded.seeds[0], &loaded.password)
        .await
        .unwrap_or_default();
    owner
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// redis-server processes this benchmark started, killed by pid when
/// dropped (also when the benchmark fails).
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `conf` (the agent's redis.conf) for a node at `ip`:`port` with its
/// files in `dir`: the same settings, another address and place.
fn conf_for(conf: &str, ip: IpAddr, port: u16, dir: &Path) -> String {
    let mine = [
        "bind ",
        "port ",
        "logfile ",
        "dir ",
        "pidfile ",
        "cluster-announce-ip ",
        "cluster-config-file ",
        "daemonize ",
    ];
    let mut out: String = conf
        .lines()
        .filter(|l| !mine.iter().any(|m| l.starts_with(m)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!(
        "bind {ip}\nport {port}\ndaemonize no\ndir \"{d}\"\nlogfile \"{d}/redis.log\"\npidfile \"{d}/redis.pid\"\ncluster-config-file nodes.conf\ncluster-announce-ip {ip}\n",
        d = dir.display()
    ));
    out
}

/// Starts redis-server at each of `nodes` with `conf`, in `dir`.
async fn start_servers(conf: &str, nodes: &[(IpAddr, u16)], dir: &Path, password: &str) -> Servers {
    let mut servers = Servers(Vec::new());
    for (i, &(ip, port)) in nodes.iter().enumerate() {
        let d = dir.join(format!("node{}", i + 1));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("redis.conf");
        std::fs::write(&path, conf_for(conf, ip, port, &d)).unwrap();
        let child = std::process::Command::new("redis-server")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        servers.0.push(child);
    }
    for &(ip, port) in nodes {
        let up = wait_until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async move { connect(ip, port, password).await.is_ok() },
        )
        .await;
        assert!(up, "redis-server at {ip}:{port} never answered");
    }
    servers
}

/// The redis-cli side: four redis-server at 127.0.171.1-4 with the agent's
/// configuration; a cluster of the first three (redis-cli --cluster
/// create); loaded; then add-node of the fourth and rebalance with
/// --cluster-use-empty-masters, redis-cli's defaults otherwise.
async fn redis_cli_side(conf: &str, password: &str) -> Result<Figures, String> {
    let dir = tempfile::Builder::new()
        .prefix("paddock-reshard-")
        .tempdir()
        .unwrap();
    let nodes: Vec<(IpAddr, u16)> = (1..=4)
        .map(|i| (format!("127.0.171.{i}").parse().unwrap(), 7000))
        .collect();
    let _servers = start_servers(conf, &nodes, dir.path(), password).await;
    let at: Vec<String> = nodes.iter().map(|(ip, p)| format!("{ip}:{p}")).collect();
    let cli = Path::new("redis-cli");
    let auth = [("REDISCLI_AUTH", password)];
    let mut create = vec!["--cluster", "create"];
    create.extend(at[..3].iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    run(cli, &create, &auth).await?;
    let formed = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        agreed(&nodes[..3], 3, password)
    })
    .await;
    if !formed {
        return Err("redis-cli's cluster never formed".into());
    }
    let loaded = load_cluster(nodes[..3].to_vec(), password).await;
    let label = format!(
        "redis-cli {}: `--cluster add-node`, then `{REDIS_CLI_REBALANCE}`",
        redis_cli_version()
    );
    measure(&loaded, async {
        run(cli, &["--cluster", "add-node", &at[3], &at[0]], &auth).await?;
        // rebalance refuses a cluster whose nodes do not yet agree: an
        // operator waits for the new node to be known everywhere too.
        let joined = wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
            agreed(&nodes, 4, password)
        })
        .await;
        if !joined {
            return Err("the new node never joined".into());
        }
        let mut rebalance: Vec<&str> = REDIS_CLI_REBALANCE.split(' ').collect();
        rebalance.insert(2, &at[0]);
        let out = run(cli, &rebalance, &auth).await?;
        eprintln!("{}", tail(&out, 5));
        Ok(label)
    })
    .await
}

fn redis_cli_version() -> String {
    std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Both sides, one after the other; the table and the ratio.
pub async fn reshard_bench() -> String {
    let (paddock, conf, password) = paddock_side().await;
    let redis_cli = redis_cli_side(&conf, &password).await;
    table(&paddock, &redis_cli)
}

fn table(paddock: &Result<Figures, String>, redis_cli: &Result<Figures, String>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} keys of {VALUE_BYTES} bytes on 3 masters (no replicas); a quarter of the slots moved to a new, 4th master while a cluster client writes and reads.\n",
        key_count()
    );
    let _ = writeln!(
        out,
        "| mover | slots moved | keys moved | total time | keys/s | client requests | failed | p99 | max | keys lost |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for side in [paddock, redis_cli] {
        match side {
            Ok(f) => {
                let _ = writeln!(out, "{}", f.row());
            }
            Err(e) => {
                let first = e.lines().next().unwrap_or_default();
                let _ = writeln!(out, "| (failed: {first}) | | | | | | | | | |");
            }
        }
    }
    if let (Ok(p), Ok(r)) = (paddock, redis_cli) {
        let _ = writeln!(
            out,
            "\nPaddock moved keys {:.1} times as fast as redis-cli (target: at least 5).",
            p.keys_per_second() / r.keys_per_second().max(1e-9)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_redis_cluster_slots() {
        // Values of CLUSTER KEYSLOT on Redis 7.0.
        for (key, slot) in [
            ("foo", 12182),
            ("bar", 5061),
            ("123456789", 12739),
            ("{user1000}.following", 3443),
            ("{user1000}.followers", 3443),
            ("foo{}{bar}", 8363),
            ("{}bar", 6479),
        ] {
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
    }

    #[test]
    fn values_are_100_bytes_and_name_their_key() {
        for k in [
            Key::Loaded(0),
            Key::Loaded(999_999),
            Key::Written(12_345_678),
        ] {
            assert_eq!(k.value().len(), VALUE_BYTES);
        }
        assert_ne!(Key::Loaded(7).value(), Key::Written(7).value());
        assert_eq!(Key::Loaded(42).name(), "r:0000042");
    }

    #[test]
    fn percentiles_by_rank() {
        let mut v: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(percentile(&mut v, 99.0), 198);
        assert_eq!(percentile(&mut v, 100.0), 200);
        assert_eq!(percentile(&mut [5], 99.0), 5);
        assert_eq!(percentile(&mut [], 99.0), 0);
    }
}
