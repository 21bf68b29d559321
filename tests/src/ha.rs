//! What an operator checks by hand around a failover, as code: a client that
//! finds the master the way real clients do (asking Sentinel, or asking each
//! member its role), a writer that keeps writing through a fault and
//! remembers what was acknowledged, and the check that none of it is lost.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::connect;

/// How a client finds the master.
#[derive(Debug, Clone)]
pub enum Follow {
    /// SENTINEL GET-MASTER-ADDR-BY-NAME on the first sentinel that answers.
    Sentinel {
        sentinels: Vec<(IpAddr, u16)>,
        name: String,
    },
    /// ROLE on each member; the master with the most replicas.
    Role(Vec<(IpAddr, u16)>),
}

pub struct Follower {
    follow: Follow,
    password: String,
    conn: Option<((IpAddr, u16), MultiplexedConnection)>,
}

const STEP: Duration = Duration::from_millis(300);

async fn bounded<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Option<T> {
    tokio::time::timeout(STEP, f).await.ok()?.ok()
}

impl Follower {
    pub fn new(follow: Follow, password: &str) -> Follower {
        Follower {
            follow,
            password: password.to_owned(),
            conn: None,
        }
    }

    /// Where the master is now, as this kind of client would find it.
    pub async fn master(&self) -> Option<(IpAddr, u16)> {
        match &self.follow {
            Follow::Sentinel { sentinels, name } => {
                for &(ip, port) in sentinels {
                    let Some(mut s) = bounded(connect(ip, port, &self.password)).await else {
                        continue;
                    };
                    let addr: Option<(String, u16)> = bounded(
                        redis::cmd("SENTINEL")
                            .arg("GET-MASTER-ADDR-BY-NAME")
                            .arg(name)
                            .query_async(&mut s),
                    )
                    .await;
                    if let Some((host, port)) = addr {
                        return Some((host.parse().ok()?, port));
                    }
                }
                None
            }
            Follow::Role(members) => {
                let mut best: Option<((IpAddr, u16), usize)> = None;
                for &(ip, port) in members {
                    let Some(mut c) = bounded(connect(ip, port, &self.password)).await else {
                        continue;
                    };
                    let Some(role) =
                        bounded(redis::cmd("ROLE").query_async::<redis::Value>(&mut c)).await
                    else {
                        continue;
                    };
                    if let redis::Value::Array(items) = role
                        && matches!(items.first(), Some(redis::Value::BulkString(b)) if b == b"master")
                    {
                        let replicas = match items.get(2) {
                            Some(redis::Value::Array(r)) => r.len(),
                            _ => 0,
                        };
                        if best.is_none_or(|(_, n)| replicas > n) {
                            best = Some(((ip, port), replicas));
                        }
                    }
                }
                best.map(|(a, _)| a)
            }
        }
    }

    /// Drops the connection: the next request asks where the master is.
    pub fn forget(&mut self) {
        self.conn = None;
    }

    /// A connection to the current master, found again after any error.
    pub async fn conn(&mut self) -> Option<&mut MultiplexedConnection> {
        if self.conn.is_none() {
            let at = self.master().await?;
            let c = bounded(connect(at.0, at.1, &self.password)).await?;
            self.conn = Some((at, c));
        }
        self.conn.as_mut().map(|(_, c)| c)
    }

    /// SET key value, then WAIT for `replicas`: Some(replicas that
    /// acknowledged) when the SET succeeded. Any error drops the connection,
    /// so the next call asks where the master is again.
    pub async fn set(&mut self, key: &str, value: u64, replicas: u32) -> Option<i64> {
        let conn = self.conn().await?;
        let r: Option<((), i64)> = bounded(
            redis::pipe()
                .cmd("SET")
                .arg(key)
                .arg(value)
                .cmd("WAIT")
                .arg(replicas)
                .arg(100)
                .query_async(conn),
        )
        .await;
        if r.is_none() {
            self.conn = None;
        }
        r.map(|(_, acked)| acked)
    }
}

/// What a writer saw.
#[derive(Debug, Default)]
pub struct WriteLog {
    /// Values whose SET the master acknowledged.
    pub acked: Vec<u64>,
    /// Values that a replica also acknowledged (WAIT >= 1).
    pub waited: Vec<u64>,
    pub failed: u64,
    /// Longest time from one acknowledged write to the next.
    pub longest_gap: Duration,
}

impl std::fmt::Display for WriteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged, {} with a replica, {} failed, longest gap {} ms",
            self.acked.len(),
            self.waited.len(),
            self.failed,
            self.longest_gap.as_millis()
        )
    }
}

/// Writes `prefix:N` = N through `follower` for `total`, calling `fault`
/// once `fault_at` has passed. Bounded in time and in count.
pub async fn write_through(
    follower: &mut Follower,
    prefix: &str,
    total: Duration,
    fault_at: Duration,
    fault: impl FnOnce(),
) -> WriteLog {
    let mut log = WriteLog::default();
    let start = Instant::now();
    let mut last_ok = Instant::now();
    let mut fault = Some(fault);
    let mut n: u64 = 0;
    while start.elapsed() < total && n < 1_000_000 {
        if start.elapsed() >= fault_at
            && let Some(f) = fault.take()
        {
            f();
        }
        n += 1;
        match follower.set(&format!("{prefix}:{n}"), n, 1).await {
            Some(replicas) => {
                let now = Instant::now();
                log.longest_gap = log.longest_gap.max(now - last_ok);
                last_ok = now;
                log.acked.push(n);
                if replicas >= 1 {
                    log.waited.push(n);
                }
            }
            None => {
                log.failed += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    log.longest_gap = log.longest_gap.max(last_ok.elapsed());
    log
}

/// Which of `values` (`prefix:N` = N) the current master does not have.
pub async fn missing(follower: &mut Follower, prefix: &str, values: &[u64]) -> Vec<u64> {
    // Asked afresh: the cached connection may be to a master that died.
    follower.conn = None;
    let conn = follower.conn().await.expect("a master to read from");
    let mut out = Vec::new();
    for chunk in values.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|n| format!("{prefix}:{n}")).collect();
        let got: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(conn)
            .await
            .expect("MGET");
        out.extend(
            chunk
                .iter()
                .zip(got)
                .filter(|(n, v)| *v != Some(**n))
                .map(|(n, _)| *n),
        );
    }
    out
}

/// SIGKILLs a process by pid.
pub fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}
