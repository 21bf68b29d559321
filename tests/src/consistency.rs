//! A consistency checker in the spirit of the classic one for Redis Cluster
//! (redis-rb-cluster's consistency-test): counters are incremented through a
//! client that follows the cluster (or Sentinel), every acknowledged
//! increment is remembered, and the counters are read back and compared.
//!
//! - acknowledged but lost: the counter is below the number of INCRs the
//!   master acknowledged;
//! - lost although acknowledged with WAIT (a replica had it too): the
//!   counter is below the number of such INCRs; a failover must never do
//!   this for a single failure;
//! - applied but not acknowledged: the counter is above the acknowledged
//!   count (an INCR whose reply was lost in a failure did happen);
//! - the longest window in which a shard took no write (per shard, so one
//!   shard's outage shows even while the others take writes).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::connect;
use crate::ha::Follower;

const STEP: Duration = Duration::from_millis(200);

async fn bounded<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Option<T> {
    tokio::time::timeout(STEP, f).await.ok()?.ok()
}

/// A minimal cluster client: slot map from CLUSTER SLOTS, one connection
/// per master, the map refreshed after any error. Direct connections let
/// each INCR be followed by WAIT on the same master.
pub struct ClusterRouter {
    seeds: Vec<(IpAddr, u16)>,
    password: String,
    /// (first slot, last slot, master)
    slots: Vec<(u16, u16, (IpAddr, u16))>,
    conns: HashMap<(IpAddr, u16), MultiplexedConnection>,
    keyslots: HashMap<String, u16>,
    refreshed: Option<Instant>,
    /// The slot ranges as first seen, sorted: a key's shard for the
    /// measurement, whoever serves it later.
    first_ranges: Vec<(u16, u16)>,
}

impl ClusterRouter {
    pub fn new(seeds: Vec<(IpAddr, u16)>, password: &str) -> ClusterRouter {
        ClusterRouter {
            seeds,
            password: password.to_owned(),
            slots: Vec::new(),
            conns: HashMap::new(),
            keyslots: HashMap::new(),
            refreshed: None,
            first_ranges: Vec::new(),
        }
    }

    async fn refresh(&mut self) {
        if self
            .refreshed
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.refreshed = Some(Instant::now());
        // Every seed at once, the first full answer wins: a dead or cut-off
        // node must not hold the client up for its whole timeout.
        let mut asks = tokio::task::JoinSet::new();
        for &(ip, port) in &self.seeds {
            let password = self.password.clone();
            asks.spawn(async move { slot_map(ip, port, &password).await });
        }
        while let Some(answer) = asks.join_next().await {
            if let Ok(Some(slots)) = answer {
                if self.first_ranges.is_empty() {
                    self.first_ranges = slots.iter().map(|(a, b, _)| (*a, *b)).collect();
                    self.first_ranges.sort_unstable();
                }
                self.slots = slots;
                return;
            }
        }
    }

    async fn keyslot(&mut self, key: &str) -> Option<u16> {
        if let Some(s) = self.keyslots.get(key) {
            return Some(*s);
        }
        for &(ip, port) in &self.seeds.clone() {
            let Some(mut c) = bounded(connect(ip, port, &self.password)).await else {
                continue;
            };
            if let Some(s) = bounded(
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query_async::<u16>(&mut c),
            )
            .await
            {
                self.keyslots.insert(key.to_owned(), s);
                return Some(s);
            }
        }
        None
    }

    async fn master_conn(&mut self, key: &str) -> Option<((IpAddr, u16), MultiplexedConnection)> {
        let slot = self.keyslot(key).await?;
        if self.slots.is_empty() {
            self.refresh().await;
        }
        let at = self
            .slots
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|s| s.2)?;
        if !self.conns.contains_key(&at) {
            let c = bounded(connect(at.0, at.1, &self.password)).await?;
            self.conns.insert(at, c);
        }
        Some((at, self.conns.get(&at)?.clone()))
    }

    async fn forget(&mut self, at: Option<(IpAddr, u16)>) {
        if let Some(at) = at {
            self.conns.remove(&at);
        }
        self.refresh().await;
    }
}

impl ClusterRouter {
    /// SET `key` `value`, acknowledged by one replica too (WAIT 1, up to
    /// 1 s); retried for up to 10 s through slot map changes.
    pub async fn set_waited(&mut self, key: &str, value: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some((at, mut c)) = self.master_conn(key).await {
                let got: Option<((), i64)> = tokio::time::timeout(
                    Duration::from_secs(2),
                    redis::pipe()
                        .cmd("SET")
                        .arg(key)
                        .arg(value)
                        .cmd("WAIT")
                        .arg(1)
                        .arg(1000)
                        .query_async(&mut c),
                )
                .await
                .ok()
                .and_then(Result::ok);
                match got {
                    Some((_, replicas)) if replicas >= 1 => return true,
                    Some(_) => {}
                    None => self.forget(Some(at)).await,
                }
            } else {
                self.forget(None).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// GET `key` as a number from the master serving it; None when absent,
    /// not a number, or no master answered within 10 s.
    pub async fn get_value(&mut self, key: &str) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some((at, mut c)) = self.master_conn(key).await {
                match bounded(
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<u64>>(&mut c),
                )
                .await
                {
                    Some(v) => return v,
                    None => self.forget(Some(at)).await,
                }
            } else {
                self.forget(None).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// INCR, then WAIT for one replica (50 ms at most), in one round trip.
async fn incr_wait(c: &mut MultiplexedConnection, key: &str) -> Option<(i64, i64)> {
    bounded(
        redis::pipe()
            .cmd("INCR")
            .arg(key)
            .cmd("WAIT")
            .arg(1)
            .arg(50)
            .query_async(c),
    )
    .await
}

/// One node's CLUSTER SLOTS as (first, last, master), when it covers every
/// slot.
async fn slot_map(ip: IpAddr, port: u16, password: &str) -> Option<Vec<(u16, u16, (IpAddr, u16))>> {
    let mut c = bounded(connect(ip, port, password)).await?;
    let redis::Value::Array(ranges) =
        bounded(redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c)).await?
    else {
        return None;
    };
    let mut slots = Vec::new();
    for r in ranges {
        let redis::Value::Array(r) = r else { continue };
        let (Some(redis::Value::Int(a)), Some(redis::Value::Int(b))) = (r.first(), r.get(1)) else {
            continue;
        };
        let Some(redis::Value::Array(m)) = r.get(2) else {
            continue;
        };
        let (Some(redis::Value::BulkString(host)), Some(redis::Value::Int(p))) =
            (m.first(), m.get(1))
        else {
            continue;
        };
        if let Ok(ip) = String::from_utf8_lossy(host).parse() {
            slots.push((*a as u16, *b as u16, (ip, *p as u16)));
        }
    }
    let covered: u32 = slots.iter().map(|(a, b, _)| u32::from(b - a) + 1).sum();
    (covered == 16384).then_some(slots)
}

/// How the checker reaches the data.
pub enum Client {
    Cluster(ClusterRouter),
    Follow(Follower),
}

impl Client {
    /// Which shard a key belongs to, for measuring each shard's outage.
    async fn shard(&mut self, key: &str) -> usize {
        match self {
            Client::Cluster(r) => {
                if r.first_ranges.is_empty() {
                    r.refresh().await;
                }
                let Some(slot) = r.keyslot(key).await else {
                    return 0;
                };
                r.first_ranges
                    .iter()
                    .position(|(a, b)| (*a..=*b).contains(&slot))
                    .unwrap_or(0)
            }
            Client::Follow(_) => 0,
        }
    }

    /// INCR then WAIT 1: Some((new value, replicas that acknowledged)).
    async fn incr(&mut self, key: &str) -> Option<(i64, i64)> {
        match self {
            Client::Cluster(r) => {
                let Some((at, mut c)) = r.master_conn(key).await else {
                    r.forget(None).await;
                    return None;
                };
                let got = incr_wait(&mut c, key).await;
                if got.is_none() {
                    r.forget(Some(at)).await;
                }
                got
            }
            Client::Follow(f) => {
                let got = incr_wait(f.conn().await?, key).await;
                if got.is_none() {
                    f.forget();
                }
                got
            }
        }
    }

    async fn get(&mut self, key: &str) -> Option<i64> {
        match self {
            Client::Cluster(r) => {
                let (_, mut c) = r.master_conn(key).await?;
                bounded(
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<i64>>(&mut c),
                )
                .await
                .map(|v| v.unwrap_or(0))
            }
            Client::Follow(f) => {
                let c = f.conn().await?;
                bounded(redis::cmd("GET").arg(key).query_async::<Option<i64>>(c))
                    .await
                    .map(|v| v.unwrap_or(0))
            }
        }
    }
}

/// What the checker found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub writes: u64,
    pub acknowledged: u64,
    pub acknowledged_with_wait: u64,
    pub failed: u64,
    pub lost: u64,
    pub lost_with_wait: u64,
    pub applied_unacknowledged: u64,
    pub longest_gap: Duration,
    /// Counters that could not be read back at the end.
    pub unreadable: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writes, {} acknowledged ({} with WAIT), {} failed; lost: {} acknowledged, {} acknowledged with WAIT; {} applied but unacknowledged; longest window of failed writes {} ms",
            self.writes,
            self.acknowledged,
            self.acknowledged_with_wait,
            self.failed,
            self.lost,
            self.lost_with_wait,
            self.applied_unacknowledged,
            self.longest_gap.as_millis()
        )
    }
}

#[derive(Default, Clone, Copy)]
struct Counter {
    acked: i64,
    waited: i64,
}

/// Increments `keys` counters through `client` for `total`, calling
/// `fault` once `fault_at` has passed, then waits up to `settle` for every
/// counter to be readable and compares. Bounded in time and in count.
pub async fn check(
    client: &mut Client,
    keys: usize,
    total: Duration,
    fault_at: Duration,
    fault: impl FnOnce(),
    settle: Duration,
) -> Report {
    let names: Vec<String> = (0..keys).map(|i| format!("cc:{i}")).collect();
    let mut counters = vec![Counter::default(); keys];
    let mut report = Report::default();
    let start = Instant::now();
    // Per shard: a shard is down while its writes fail, even when writes
    // to other shards succeed in between.
    let mut shard = Vec::with_capacity(keys);
    for name in &names {
        shard.push(client.shard(name).await);
    }
    let mut last_ok = vec![Instant::now(); shard.iter().max().map_or(1, |m| m + 1)];
    let mut fault = Some(fault);
    let mut n: u64 = 0;
    while start.elapsed() < total && n < 2_000_000 {
        if start.elapsed() >= fault_at
            && let Some(f) = fault.take()
        {
            f();
        }
        let i = (n as usize) % keys;
        n += 1;
        report.writes += 1;
        match client.incr(&names[i]).await {
            Some((_, replicas)) => {
                let now = Instant::now();
                report.longest_gap = report.longest_gap.max(now - last_ok[shard[i]]);
                last_ok[shard[i]] = now;
                counters[i].acked += 1;
                report.acknowledged += 1;
                if replicas >= 1 {
                    counters[i].waited += 1;
                    report.acknowledged_with_wait += 1;
                }
            }
            None => {
                report.failed += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    for t in &last_ok {
        report.longest_gap = report.longest_gap.max(t.elapsed());
    }
    let deadline = Instant::now() + settle;
    for (i, c) in counters.iter().enumerate() {
        let value = loop {
            if let Some(v) = client.get(&names[i]).await {
                break Some(v);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let Some(v) = value else {
            report.unreadable += 1;
            continue;
        };
        report.lost += (c.acked - v).max(0) as u64;
        report.lost_with_wait += (c.waited - v).max(0) as u64;
        report.applied_unacknowledged += (v - c.acked).max(0) as u64;
    }
    report
}
