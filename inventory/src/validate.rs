//! Semantic checks: from the raw, spanned document to an [`Inventory`].
//!
//! Every check runs even when an earlier one failed, so the operator sees
//! all problems at once. Each field check yields `Option<value>`: `None`
//! means "reported"; a section is built only if all its fields are `Some`.
//! Cross-field checks (placement, port clashes) run only on the fields they
//! need, so an unrelated bad value does not hide them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use serde_spanned::Spanned;

use crate::diagnostic::Report;
use crate::model::{
    Deployment, Host, Inventory, MaxmemoryPolicy, RedisSettings, SentinelSettings, Supervision,
    Topology, User,
};
use crate::placement::{assign_in_zones, index_zones, sentinel_hosts};
use crate::schema::{
    RawDeployment, RawHost, RawInventory, RawRedis, RawSentinel, RawSize, RawSupervision, RawUser,
};

const DEPLOYMENT: &str = "in [deployment]";
const REDIS: &str = "in [redis]";
const SENTINEL: &str = "in [sentinel]";
const SUPERVISION: &str = "in [supervision]";
const HOSTS: &str = "in [[hosts]]";
const USERS: &str = "in [[users]]";

/// Longest `rules` string accepted for one user, in characters.
const MAX_RULES_CHARS: usize = 1000;

/// Redis Cluster is designed for at most 1000 nodes. The cap also keeps
/// instance counts small enough that port arithmetic cannot overflow.
const MAX_CLUSTER_MASTERS: i64 = 1000;
const MAX_REPLICAS_PER_MASTER: i64 = 5;
const CLUSTER_BUS_OFFSET: u32 = 10_000;

pub(crate) const DEFAULT_REDIS_PORT: u16 = 7000;
pub(crate) const DEFAULT_CLUSTER_NODE_TIMEOUT_MS: u32 = 5000;
pub(crate) const DEFAULT_SENTINEL_COUNT: u32 = 3;
pub(crate) const DEFAULT_SENTINEL_PORT: u16 = 26379;
pub(crate) const DEFAULT_DOWN_AFTER_MS: u32 = 5000;
pub(crate) const DEFAULT_FAILOVER_TIMEOUT_MS: u32 = 60_000;
pub(crate) const DEFAULT_AGENT_PORT: u16 = 7443;
pub(crate) const DEFAULT_MIN_REPLICAS_MAX_LAG_S: u32 = 10;

/// Runs every semantic check, reporting into `r`. Returns the inventory
/// only if nothing was reported.
pub(crate) fn validate(raw: &RawInventory, r: &mut Report<'_>) -> Option<Inventory> {
    let raw_hosts = raw.hosts.get_ref();
    if raw_hosts.is_empty() {
        r.error(
            raw.hosts.span().start,
            "the inventory lists no hosts",
            "add one [[hosts]] table with `name` and `address` per machine",
        );
    }

    let deployment = deployment(r, &raw.deployment, raw_hosts.len());
    let mut redis = redis(r, raw.redis.as_ref());
    if let (Some(topology), Some(replicas), Some(redis)) = (
        deployment.topology,
        deployment.replicas_per_master,
        redis.as_mut(),
    ) {
        min_replicas(r, raw.redis.as_ref(), topology, replicas, redis);
    }
    let sentinel = sentinel(r, raw.sentinel.as_ref(), deployment.topology);
    let supervision = supervision(r, raw.supervision.as_ref());
    let hosts = hosts(r, raw_hosts);
    let users = users(r, raw.users.as_deref().unwrap_or_default());

    if let (Some(topology), Some(masters), Some(replicas), Some(redis), Some(sentinel)) = (
        deployment.topology,
        deployment.masters,
        deployment.replicas_per_master,
        &redis,
        &sentinel,
    ) && !raw_hosts.is_empty()
    {
        let layout = Layout {
            topology,
            masters,
            replicas,
            redis_port: redis.port,
            sentinel: sentinel.as_ref().map(|s| (s.count, s.port)),
            redis_port_at: raw
                .redis
                .as_ref()
                .and_then(|t| t.get_ref().port.as_ref())
                .map(|v| v.span().start),
            sentinel_port_at: raw
                .sentinel
                .as_ref()
                .and_then(|t| t.get_ref().port.as_ref())
                .map(|v| v.span().start),
        };
        port_clashes(r, &layout, &hosts);
    }

    if r.has_errors() {
        return None;
    }
    Some(Inventory {
        deployment: deployment.complete()?,
        redis: redis?,
        sentinel: sentinel?,
        supervision: supervision?,
        hosts: hosts
            .into_iter()
            .map(CheckedHost::complete)
            .collect::<Option<_>>()?,
        users: users.into_iter().collect::<Option<_>>()?,
    })
}

// ---------------------------------------------------------------- helpers

/// Rejects CR, LF and NUL: Redis reads its config line by line, so any of
/// them in a value we write into redis.conf would inject configuration.
fn text<'v>(
    r: &mut Report<'_>,
    value: &'v str,
    at: usize,
    key: &str,
    ctx: &str,
) -> Option<&'v str> {
    let what = value.chars().find_map(|c| match c {
        '\n' => Some("a newline"),
        '\r' => Some("a carriage return"),
        '\0' => Some("a NUL byte"),
        _ => None,
    });
    match what {
        Some(what) => {
            r.error(
                at,
                format!("`{key}` {ctx} contains {what}"),
                "Redis reads its config line by line, so this could inject configuration; remove it",
            );
            None
        }
        None => Some(value),
    }
}

fn spanned_text<'v>(
    r: &mut Report<'_>,
    value: &'v Spanned<String>,
    key: &str,
    ctx: &str,
) -> Option<&'v str> {
    text(r, value.get_ref(), value.span().start, key, ctx)
}

/// An integer within `range`, converted to the field's type.
fn int<T: TryFrom<i64>>(
    r: &mut Report<'_>,
    value: &Spanned<i64>,
    key: &str,
    ctx: &str,
    range: RangeInclusive<i64>,
    hint: &str,
) -> Option<T> {
    let v = *value.get_ref();
    if range.contains(&v)
        && let Ok(v) = T::try_from(v)
    {
        return Some(v);
    }
    let (lo, hi) = (*range.start(), *range.end());
    let expected = if hi == i64::from(u32::MAX) {
        format!("at least {lo}")
    } else {
        format!("between {lo} and {hi}")
    };
    r.error(
        value.span().start,
        format!("`{key}` {ctx} must be {expected}, found {v}"),
        hint,
    );
    None
}

/// Like [`int`], with a default for a missing key.
fn opt_int<T: TryFrom<i64>>(
    r: &mut Report<'_>,
    value: Option<&Spanned<i64>>,
    default: T,
    key: &str,
    ctx: &str,
    range: RangeInclusive<i64>,
    hint: &str,
) -> Option<T> {
    match value {
        None => Some(default),
        Some(v) => int(r, v, key, ctx, range, hint),
    }
}

/// The offset of a value if present, else of its table header.
fn at_or(value: Option<&Spanned<i64>>, header: usize) -> usize {
    value.map_or(header, |v| v.span().start)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

// ------------------------------------------------------------- deployment

#[derive(Default)]
struct CheckedDeployment {
    name: Option<String>,
    topology: Option<Topology>,
    masters: Option<u32>,
    replicas_per_master: Option<u32>,
    password_file: Option<Option<String>>,
}

impl CheckedDeployment {
    fn complete(self) -> Option<Deployment> {
        Some(Deployment {
            name: self.name?,
            topology: self.topology?,
            masters: self.masters?,
            replicas_per_master: self.replicas_per_master?,
            password_file: self.password_file?,
        })
    }
}

fn is_deployment_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.len() <= 40
}

fn deployment(
    r: &mut Report<'_>,
    raw: &Spanned<RawDeployment>,
    host_count: usize,
) -> CheckedDeployment {
    let header = raw.span().start;
    let d = raw.get_ref();
    let mut out = CheckedDeployment::default();

    out.name = spanned_text(r, &d.name, "name", DEPLOYMENT).and_then(|name| {
        if is_deployment_name(name) {
            Some(name.to_owned())
        } else {
            r.error(
                d.name.span().start,
                format!("invalid deployment name `{name}`"),
                "use 1 to 40 lowercase letters, digits or '-', starting with a letter or digit",
            );
            None
        }
    });

    out.topology = spanned_text(r, &d.topology, "topology", DEPLOYMENT).and_then(|t| {
        let topology = Topology::from_name(t);
        if topology.is_none() {
            r.error(
                d.topology.span().start,
                format!("unknown topology `{t}`"),
                format!(
                    "expected one of: {}",
                    names(Topology::ALL.map(Topology::as_str))
                ),
            );
        }
        topology
    });

    out.masters = out.topology.and_then(|t| masters(r, t, d.masters.as_ref()));

    out.replicas_per_master = opt_int(
        r,
        d.replicas_per_master.as_ref(),
        1,
        "replicas_per_master",
        DEPLOYMENT,
        0..=MAX_REPLICAS_PER_MASTER,
        "use 0 (no replicas) up to 5",
    )
    .filter(|&n| {
        // Anti-affinity: a master and its replicas all need distinct hosts.
        let needed = n as usize + 1;
        let fits = host_count == 0 || needed <= host_count;
        if !fits {
            r.error(
                at_or(d.replicas_per_master.as_ref(), header),
                format!(
                    "replicas_per_master = {n} needs {needed} hosts (a replica never shares a host with its master), but the inventory has {}",
                    plural(host_count, "host", "hosts")
                ),
                "add hosts or lower replicas_per_master",
            );
        }
        fits
    });

    out.password_file = match &d.password_file {
        None => Some(None),
        Some(v) => spanned_text(r, v, "password_file", DEPLOYMENT).and_then(|path| {
            if path.is_empty() {
                r.error(
                    v.span().start,
                    "`password_file` in [deployment] is empty",
                    "omit password_file, or give a path relative to the inventory file",
                );
                None
            } else {
                Some(Some(path.to_owned()))
            }
        }),
    };
    out
}

fn masters(r: &mut Report<'_>, topology: Topology, value: Option<&Spanned<i64>>) -> Option<u32> {
    let Some(value) = value else {
        return Some(if topology == Topology::Cluster { 3 } else { 1 });
    };
    let n = *value.get_ref();
    let at = value.span().start;
    match topology {
        Topology::Cluster if n < 3 => {
            r.error(
                at,
                format!("topology `cluster` needs at least 3 masters, found masters = {n}"),
                "Redis Cluster needs 3 masters so that a majority survives a failure; for a single master use topology = \"replication\" or \"sentinel\"",
            );
            None
        }
        Topology::Cluster if n > MAX_CLUSTER_MASTERS => {
            r.error(
                at,
                format!("topology `cluster` allows at most {MAX_CLUSTER_MASTERS} masters, found masters = {n}"),
                "Redis Cluster is designed for at most 1000 nodes",
            );
            None
        }
        Topology::Cluster => u32::try_from(n).ok(),
        _ if n == 1 => Some(1),
        _ => {
            r.error(
                at,
                format!("topology `{topology}` has exactly one master, found masters = {n}"),
                "remove `masters`, or use topology = \"cluster\" to shard data across several masters",
            );
            None
        }
    }
}

fn names<const N: usize>(list: [&str; N]) -> String {
    list.join(", ")
}

// ------------------------------------------------------------------ redis

fn redis(r: &mut Report<'_>, raw: Option<&Spanned<RawRedis>>) -> Option<RedisSettings> {
    let d = raw.map(Spanned::get_ref);
    let port = opt_int(
        r,
        d.and_then(|d| d.port.as_ref()),
        DEFAULT_REDIS_PORT,
        "port",
        REDIS,
        1024..=55535,
        "the cluster bus uses port + 10000, which must stay within 65535; ports below 1024 need root",
    );
    let maxmemory_bytes = match d.and_then(|d| d.maxmemory.as_ref()) {
        None => Some(None),
        Some(v) => maxmemory(r, v).map(Some),
    };
    let maxmemory_policy = match d.and_then(|d| d.maxmemory_policy.as_ref()) {
        None => Some(MaxmemoryPolicy::default()),
        Some(v) => spanned_text(r, v, "maxmemory_policy", REDIS).and_then(|p| {
            let policy = MaxmemoryPolicy::from_name(p);
            if policy.is_none() {
                r.error(
                    v.span().start,
                    format!("unknown maxmemory_policy `{p}`"),
                    format!(
                        "expected one of: {}",
                        names(MaxmemoryPolicy::ALL.map(MaxmemoryPolicy::as_str))
                    ),
                );
            }
            policy
        }),
    };
    let cluster_node_timeout_ms = opt_int(
        r,
        d.and_then(|d| d.cluster_node_timeout_ms.as_ref()),
        DEFAULT_CLUSTER_NODE_TIMEOUT_MS,
        "cluster_node_timeout_ms",
        REDIS,
        500..=600_000,
        "milliseconds a node may be unreachable before it counts as failing, e.g. 5000",
    );
    let min_replicas_max_lag_s = opt_int(
        r,
        d.and_then(|d| d.min_replicas_max_lag_s.as_ref()),
        DEFAULT_MIN_REPLICAS_MAX_LAG_S,
        "min_replicas_max_lag_s",
        REDIS,
        1..=3600,
        "seconds a replica may go without acknowledging before it stops counting for min_replicas_to_write, e.g. 10",
    );
    Some(RedisSettings {
        port: port?,
        maxmemory_bytes: maxmemory_bytes?,
        maxmemory_policy: maxmemory_policy?,
        appendonly: d.and_then(|d| d.appendonly).unwrap_or(true),
        rdb_snapshots: d.and_then(|d| d.rdb_snapshots).unwrap_or(true),
        cluster_node_timeout_ms: cluster_node_timeout_ms?,
        // Set by `min_replicas` once the topology is known.
        min_replicas_to_write: 0,
        min_replicas_max_lag_s: min_replicas_max_lag_s?,
    })
}

/// `min_replicas_to_write`: by default 1 where a master has replicas and
/// no cluster consensus bounds a cut-off master (replication, sentinel);
/// 0 for cluster, where a master that lost its only replica would refuse
/// every write (see the README's durability contract).
fn min_replicas(
    r: &mut Report<'_>,
    raw: Option<&Spanned<RawRedis>>,
    topology: Topology,
    replicas: u32,
    redis: &mut RedisSettings,
) {
    let value = raw.and_then(|t| t.get_ref().min_replicas_to_write.as_ref());
    let default = match topology {
        Topology::Cluster => 0,
        Topology::Replication | Topology::Sentinel => replicas.min(1),
    };
    let Some(v) = value else {
        redis.min_replicas_to_write = default;
        return;
    };
    let Some(n) = int::<u32>(
        r,
        v,
        "min_replicas_to_write",
        REDIS,
        0..=MAX_REPLICAS_PER_MASTER,
        "replicas that must acknowledge before a master takes writes, e.g. 1 (0 turns it off)",
    ) else {
        return;
    };
    if n > replicas {
        r.error(
            v.span().start,
            format!(
                "min_replicas_to_write = {n}, but each master has {} (replicas_per_master): every master would refuse every write",
                plural(replicas as usize, "replica", "replicas")
            ),
            format!("set min_replicas_to_write to at most {replicas}, or raise replicas_per_master"),
        );
        return;
    }
    redis.min_replicas_to_write = n;
}

#[derive(Debug, PartialEq, Eq)]
enum SizeError {
    Syntax,
    TooLarge,
}

/// Redis's memory units: `k` = 1000, `kb` = 1024, `m` = 10^6, `mb` =
/// 1024^2, `g` = 10^9, `gb` = 1024^3; `b` or no unit = bytes;
/// case-insensitive; a whole number, no spaces.
fn parse_size(s: &str) -> Result<u64, SizeError> {
    let lower = s.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return Err(SizeError::Syntax),
    };
    if number.is_empty() {
        return Err(SizeError::Syntax);
    }
    // Only ASCII digits are left, so parsing can only fail on overflow.
    let n: u64 = number.parse().map_err(|_| SizeError::TooLarge)?;
    n.checked_mul(multiplier).ok_or(SizeError::TooLarge)
}

/// The smallest `maxmemory` accepted: 1 MiB.
pub const MIN_MAXMEMORY: u64 = 1 << 20;

fn maxmemory(r: &mut Report<'_>, value: &Spanned<RawSize>) -> Option<u64> {
    let at = value.span().start;
    let bytes = match value.get_ref() {
        RawSize::Bytes(n) => match u64::try_from(*n) {
            Ok(n) => n,
            Err(_) => {
                r.error(
                    at,
                    format!("`maxmemory` {REDIS} must be positive, found {n}"),
                    "omit maxmemory for no limit, or give a size such as \"256mb\"",
                );
                return None;
            }
        },
        RawSize::Text(s) => {
            let s = text(r, s, at, "maxmemory", REDIS)?;
            match parse_size(s) {
                Ok(n) => n,
                Err(SizeError::Syntax) => {
                    r.error(
                        at,
                        format!("invalid size `{s}` for `maxmemory` {REDIS}"),
                        "write a whole number with an optional unit b, k, kb, m, mb, g or gb (case-insensitive), e.g. \"256mb\"",
                    );
                    return None;
                }
                Err(SizeError::TooLarge) => {
                    r.error(
                        at,
                        format!("`maxmemory` {REDIS} is too large: `{s}`"),
                        "give the memory Redis may use on one instance, e.g. \"4gb\"",
                    );
                    return None;
                }
            }
        }
    };
    if bytes == 0 {
        r.error(
            at,
            format!("`maxmemory` {REDIS} must not be 0"),
            "omit maxmemory for no limit",
        );
        return None;
    }
    if bytes < MIN_MAXMEMORY {
        // Redis evicts (or, with noeviction, refuses writes) as soon as the
        // data set passes it: a few bytes empty a data set or stop it.
        r.error(
            at,
            format!("`maxmemory` {REDIS} is below the minimum of 1mb: {bytes} bytes"),
            "give the memory Redis may use on one instance, e.g. \"256mb\", or omit maxmemory for no limit",
        );
        return None;
    }
    Some(bytes)
}

// --------------------------------------------------------------- sentinel

/// `Some(None)`: valid and absent (not the sentinel topology);
/// `None`: reported, or undecidable because the topology is invalid.
fn sentinel(
    r: &mut Report<'_>,
    raw: Option<&Spanned<RawSentinel>>,
    topology: Option<Topology>,
) -> Option<Option<SentinelSettings>> {
    match (topology, raw) {
        (Some(Topology::Sentinel), _) => sentinel_settings(r, raw.map(Spanned::get_ref)).map(Some),
        (Some(other), Some(table)) => {
            r.error(
                table.span().start,
                format!("[sentinel] is only allowed with topology = \"sentinel\", but topology is \"{other}\""),
                "remove the [sentinel] table, or set topology = \"sentinel\"",
            );
            None
        }
        (Some(_), None) => Some(None),
        // The topology is invalid (already reported): still check the
        // fields, but whether the table belongs here cannot be known.
        (None, table) => {
            if let Some(table) = table {
                sentinel_settings(r, Some(table.get_ref()));
            }
            None
        }
    }
}

fn sentinel_settings(r: &mut Report<'_>, d: Option<&RawSentinel>) -> Option<SentinelSettings> {
    let count = opt_int(
        r,
        d.and_then(|d| d.count.as_ref()),
        DEFAULT_SENTINEL_COUNT,
        "count",
        SENTINEL,
        1..=9,
        "use an odd number such as 3 or 5, so that a majority can agree",
    );
    let quorum = match d.and_then(|d| d.quorum.as_ref()) {
        None => count.map(|c| c / 2 + 1),
        Some(v) => {
            let q = *v.get_ref();
            match count {
                Some(c) if q > i64::from(c) => {
                    r.error(
                        v.span().start,
                        format!("`quorum` {SENTINEL} is {q}, more than the {c} sentinels (`count`)"),
                        format!(
                            "quorum is how many sentinels must agree that the master is down; use at most {c} (a majority is {})",
                            c / 2 + 1
                        ),
                    );
                    None
                }
                _ => int(
                    r,
                    v,
                    "quorum",
                    SENTINEL,
                    1..=9,
                    "quorum is how many sentinels must agree that the master is down; usually a majority of count",
                ),
            }
        }
    };
    let port = opt_int(
        r,
        d.and_then(|d| d.port.as_ref()),
        DEFAULT_SENTINEL_PORT,
        "port",
        SENTINEL,
        1024..=65535,
        "ports below 1024 need root; the usual sentinel port is 26379",
    );
    let down_after_ms = opt_int(
        r,
        d.and_then(|d| d.down_after_ms.as_ref()),
        DEFAULT_DOWN_AFTER_MS,
        "down_after_ms",
        SENTINEL,
        100..=600_000,
        "milliseconds without a reply before a sentinel considers an instance down, e.g. 5000",
    );
    let failover_timeout_ms = opt_int(
        r,
        d.and_then(|d| d.failover_timeout_ms.as_ref()),
        DEFAULT_FAILOVER_TIMEOUT_MS,
        "failover_timeout_ms",
        SENTINEL,
        1000..=i64::from(u32::MAX),
        "milliseconds, e.g. 60000",
    );
    Some(SentinelSettings {
        count: count?,
        quorum: quorum?,
        port: port?,
        down_after_ms: down_after_ms?,
        failover_timeout_ms: failover_timeout_ms?,
    })
}

// ------------------------------------------------------------ supervision

fn supervision(r: &mut Report<'_>, raw: Option<&Spanned<RawSupervision>>) -> Option<Supervision> {
    let d = raw.map(Spanned::get_ref);
    let defaults = Supervision::default();
    let start_timeout_ms = opt_int(
        r,
        d.and_then(|d| d.start_timeout_ms.as_ref()),
        defaults.start_timeout_ms,
        "start_timeout_ms",
        SUPERVISION,
        1000..=3_600_000,
        "milliseconds a start may take before Redis answers (a Redis still loading its data keeps starting), e.g. 60000",
    );
    let start_retries = opt_int(
        r,
        d.and_then(|d| d.start_retries.as_ref()),
        defaults.start_retries,
        "start_retries",
        SUPERVISION,
        0..=100,
        "failed starts in a row before the instance is marked FATAL, e.g. 10",
    );
    let backoff_max_ms = opt_int(
        r,
        d.and_then(|d| d.backoff_max_ms.as_ref()),
        defaults.backoff_max_ms,
        "backoff_max_ms",
        SUPERVISION,
        100..=300_000,
        "the longest wait in milliseconds between restarts (the first is immediate, then 50 ms doubling), e.g. 5000",
    );
    let stop_timeout_ms = opt_int(
        r,
        d.and_then(|d| d.stop_timeout_ms.as_ref()),
        defaults.stop_timeout_ms,
        "stop_timeout_ms",
        SUPERVISION,
        100..=600_000,
        "milliseconds between SIGTERM and SIGKILL to the process group, e.g. 10000",
    );
    Some(Supervision {
        start_timeout_ms: start_timeout_ms?,
        start_retries: start_retries?,
        backoff_max_ms: backoff_max_ms?,
        stop_timeout_ms: stop_timeout_ms?,
    })
}

// ------------------------------------------------------------------ hosts

struct CheckedHost<'a> {
    raw_name: &'a str,
    header: usize,
    agent_port_at: Option<usize>,
    name: Option<String>,
    address: Option<IpAddr>,
    agent_port: Option<u16>,
    /// The zone as written (for placement while checking ports), and
    /// checked.
    raw_zone: Option<&'a str>,
    zone: Option<Option<String>>,
}

impl CheckedHost<'_> {
    fn complete(self) -> Option<Host> {
        Some(Host {
            name: self.name?,
            address: self.address?,
            agent_port: self.agent_port?,
            zone: self.zone?,
        })
    }
}

/// Safe as a single directory name: no `/`, no `..`, no leading dot.
fn is_host_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && s.len() <= 63
        && !s.contains("..")
}

fn hosts<'a>(r: &mut Report<'_>, raw: &'a [Spanned<RawHost>]) -> Vec<CheckedHost<'a>> {
    let mut first_name: HashMap<&str, usize> = HashMap::new();
    let mut first_address: HashMap<IpAddr, (&str, usize)> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for host in raw {
        let h = host.get_ref();
        let name_at = h.name.span().start;
        let name = spanned_text(r, &h.name, "name", HOSTS).and_then(|name| {
            if !is_host_name(name) {
                r.error(
                    name_at,
                    format!("invalid host name `{name}`"),
                    "use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit and without \"..\" (it names a directory)",
                );
                return None;
            }
            if let Some(&first_at) = first_name.get(name) {
                r.error(
                    name_at,
                    format!("duplicate host name `{name}`"),
                    format!(
                        "host names must be unique; `{name}` is already used at line {}",
                        r.line_of(first_at)
                    ),
                );
                return None;
            }
            first_name.insert(name, name_at);
            Some(name.to_owned())
        });

        let address_at = h.address.span().start;
        let address = spanned_text(r, &h.address, "address", HOSTS)
            .and_then(|a| address(r, a, address_at))
            .and_then(|ip| {
                if let Some(&(first, first_at)) = first_address.get(&ip) {
                    r.error(
                        address_at,
                        format!("duplicate address {ip}"),
                        format!(
                            "each host needs its own address; host `{first}` at line {} already has it",
                            r.line_of(first_at)
                        ),
                    );
                    return None;
                }
                first_address.insert(ip, (h.name.get_ref(), address_at));
                Some(ip)
            });

        let agent_port = opt_int(
            r,
            h.agent_port.as_ref(),
            DEFAULT_AGENT_PORT,
            "agent_port",
            HOSTS,
            1..=65535,
            "the port paddockd listens on, e.g. 7443",
        );
        out.push(CheckedHost {
            raw_name: h.name.get_ref(),
            header: host.span().start,
            agent_port_at: h.agent_port.as_ref().map(|v| v.span().start),
            name,
            address,
            agent_port,
            raw_zone: h.zone.as_ref().map(|z| z.get_ref().as_str()),
            zone: zone(r, h.zone.as_ref()),
        });
    }
    zones_everywhere_or_nowhere(r, raw, &mut out);
    out
}

/// `zone`: optional; when present, like a host name.
fn zone(r: &mut Report<'_>, value: Option<&Spanned<String>>) -> Option<Option<String>> {
    let Some(value) = value else {
        return Some(None);
    };
    let z = spanned_text(r, value, "zone", HOSTS)?;
    if !is_host_name(z) {
        r.error(
            value.span().start,
            format!("invalid zone `{z}`"),
            "use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit, e.g. zone = \"rack-a\"",
        );
        return None;
    }
    Some(Some(z.to_owned()))
}

/// Placement can spread across zones only if it knows every host's: a
/// host left out would silently count as a zone of its own. So every host
/// has a zone or none does; each host without one is reported.
fn zones_everywhere_or_nowhere(
    r: &mut Report<'_>,
    raw: &[Spanned<RawHost>],
    hosts: &mut [CheckedHost<'_>],
) {
    let Some(first) = raw.iter().find_map(|h| h.get_ref().zone.as_ref()) else {
        return;
    };
    let (first_host, first_at) = raw
        .iter()
        .find(|h| h.get_ref().zone.is_some())
        .map(|h| (h.get_ref().name.get_ref().as_str(), first.span().start))
        .unwrap_or_default();
    for (h, checked) in raw.iter().zip(hosts.iter_mut()) {
        if h.get_ref().zone.is_some() {
            continue;
        }
        r.error(
            checked.header,
            format!(
                "host `{}` has no zone, but host `{first_host}` has one (line {})",
                checked.raw_name,
                r.line_of(first_at)
            ),
            "give every host a `zone` (placement spreads across zones only when it knows every host's), or remove `zone` from all of them",
        );
        checked.zone = None;
    }
}

/// An address one machine can own: not unspecified, multicast or the
/// IPv4 broadcast address.
fn is_host_address(ip: IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

fn address(r: &mut Report<'_>, s: &str, at: usize) -> Option<IpAddr> {
    let announce = "use the IP address Redis should announce";
    match s.parse::<IpAddr>() {
        Ok(ip) if !is_host_address(ip) => {
            r.error(
                at,
                format!("`address` {HOSTS} must be a unicast address, found {ip}"),
                format!("{announce}: the one other hosts reach this machine at"),
            );
            None
        }
        Ok(ip) => Some(ip),
        Err(_) => {
            let hint = if s.starts_with('[') && s.ends_with(']') {
                "write IPv6 addresses without brackets, e.g. \"fd00::11\"".to_owned()
            } else if s.parse::<SocketAddr>().is_ok() {
                "give the IP address alone; the agent's port goes in agent_port".to_owned()
            } else {
                format!("{announce}, e.g. \"192.168.56.11\" (host names are not resolved)")
            };
            r.error(
                at,
                format!("`address` {HOSTS} must be an IP address, found `{s}`"),
                hint,
            );
            None
        }
    }
}

// ------------------------------------------------------------------ users

/// `^[a-z][a-z0-9_-]{0,31}$`.
fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        && s.len() <= 32
}

/// One `Option<User>` per entry, `None` where something was reported.
fn users(r: &mut Report<'_>, raw: &[Spanned<RawUser>]) -> Vec<Option<User>> {
    let mut first_name: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for user in raw {
        let u = user.get_ref();
        let name_at = u.name.span().start;
        let name = spanned_text(r, &u.name, "name", USERS).and_then(|name| {
            if !is_user_name(name) {
                r.error(
                    name_at,
                    format!("invalid user name `{name}`"),
                    "use 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter",
                );
                return None;
            }
            if name == "default" {
                r.error(
                    name_at,
                    "user name `default` is reserved",
                    "`default` is Redis's built-in user, which paddock configures itself; choose another name",
                );
                return None;
            }
            if let Some(&first_at) = first_name.get(name) {
                r.error(
                    name_at,
                    format!("duplicate user name `{name}`"),
                    format!(
                        "user names must be unique; `{name}` is already used at line {}",
                        r.line_of(first_at)
                    ),
                );
                return None;
            }
            first_name.insert(name, name_at);
            Some(name.to_owned())
        });
        let rules = acl_rules(r, &u.rules);
        out.push(name.zip(rules).map(|(name, rules)| User { name, rules }));
    }
    out
}

/// Why an ACL rule touches passwords, if it does. Redis reads these
/// keywords case-insensitively.
fn password_rule(token: &str) -> Option<(String, &'static str)> {
    let first = token.chars().next()?;
    let what = match first {
        '>' => "would set a password",
        '<' => "would remove a password",
        '#' => "would set a password hash",
        '!' => "would remove a password hash",
        _ => {
            let what = match token.to_ascii_lowercase().as_str() {
                "nopass" => "would let the user in without a password",
                "resetpass" => "would drop the user's password",
                "reset" => "would reset the user, dropping its password",
                _ => return None,
            };
            return Some((token.to_owned(), what));
        }
    };
    // Never echo what follows: it is a password or its hash.
    Some((format!("{first}…"), what))
}

/// What is wrong with a character in an ACL rule, if anything.
fn bad_rule_char(c: char) -> Option<String> {
    match c {
        '"' | '\'' => Some("a quote".to_owned()),
        '\\' => Some("a backslash".to_owned()),
        '\t' => Some("a tab".to_owned()),
        '\n' => Some("a newline".to_owned()),
        '!'..='~' => None,
        c if c.is_ascii() => Some(format!("the control character {:?}", c)),
        c => Some(format!("the non-ASCII character `{c}`")),
    }
}

/// A rule as printed in a message: control characters escaped, quotes and
/// backslashes as written.
fn shown(token: &str) -> String {
    token
        .chars()
        .map(|c| match c {
            '!'..='~' => c.to_string(),
            c => c.escape_debug().to_string(),
        })
        .collect()
}

/// Splits `rules` on spaces and checks every token; all problems are
/// reported at the value.
fn acl_rules(r: &mut Report<'_>, value: &Spanned<String>) -> Option<Vec<String>> {
    let at = value.span().start;
    let text = value.get_ref();
    let tokens: Vec<&str> = text.split(' ').filter(|t| !t.is_empty()).collect();
    let mut ok = true;
    if tokens.is_empty() {
        r.error(
            at,
            format!("`rules` {USERS} is empty"),
            "give the user's Redis ACL rules separated by spaces, e.g. \"~app:* +@read +@write -@dangerous\"",
        );
        ok = false;
    }
    let length = text.chars().count();
    if length > MAX_RULES_CHARS {
        r.error(
            at,
            format!(
                "`rules` {USERS} is {length} characters long, more than {MAX_RULES_CHARS}"
            ),
            "grant by key pattern and command category (e.g. ~app:* +@read) rather than command by command",
        );
        ok = false;
    }
    // Where each token starts, when the value is a plain one-line string
    // (then the source is the text between two quotes); else the value.
    let plain = value.span().end - value.span().start == text.len() + 2;
    let mut in_selector = false;
    let mut offset = 0;
    for token in text.split(' ') {
        let token_at = if plain { at + 1 + offset } else { at };
        offset += token.len() + 1;
        if token.is_empty() {
            continue;
        }
        // A selector, `(~app:* +get)`, spans tokens; its rules are checked
        // like any other.
        let mut rule = token;
        if let Some(inner) = rule.strip_prefix('(') {
            if in_selector {
                r.error(
                    token_at,
                    format!(
                        "ACL rule `{}` {USERS} opens a selector inside a selector",
                        shown(token)
                    ),
                    "close the first selector with `)` before opening another",
                );
                ok = false;
            }
            in_selector = true;
            rule = inner;
        }
        let closes = in_selector && rule.ends_with(')');
        if closes {
            rule = &rule[..rule.len() - 1];
        }
        if let Some((shown, what)) = password_rule(rule) {
            let hint = if rule.eq_ignore_ascii_case("reset") {
                "passwords are generated by paddock and `reset` would drop it; remove this rule and list the permissions to grant"
            } else {
                "passwords are generated by paddock; remove this rule"
            };
            r.error(at, format!("ACL rule `{shown}` {USERS} {what}"), hint);
            ok = false;
        } else if let Some(what) = token.chars().find_map(bad_rule_char) {
            r.error(
                at,
                format!("ACL rule `{}` {USERS} contains {what}", shown(token)),
                "write each rule as printable ASCII without quotes or backslashes, rules separated by spaces, e.g. ~app:* +@read",
            );
            ok = false;
        } else if !rule.is_empty()
            && let Some((why, hint)) = crate::acl::check(rule, in_selector)
        {
            r.error(
                token_at,
                format!(
                    "ACL rule `{}` {USERS} {why}; Redis would refuse to start",
                    shown(token)
                ),
                hint,
            );
            ok = false;
        }
        if closes {
            in_selector = false;
        }
    }
    if in_selector {
        r.error(
            at,
            format!("`rules` {USERS} opens a selector `(` it never closes"),
            "end the selector's last rule with `)`, e.g. (~logs:* +get)",
        );
        ok = false;
    }
    ok.then(|| tokens.into_iter().map(str::to_owned).collect())
}

// ----------------------------------------------------------- port clashes

/// What the port checks need, all already validated.
struct Layout {
    topology: Topology,
    masters: u32,
    replicas: u32,
    redis_port: u16,
    sentinel: Option<(u32, u16)>,
    redis_port_at: Option<usize>,
    sentinel_port_at: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UseKind {
    Redis,
    Bus,
    Sentinel,
    Agent,
}

/// A consecutive range of ports that one kind of process uses on a host.
#[derive(Debug, Clone, Copy)]
struct PortUse {
    kind: UseKind,
    first: u32,
    count: u32,
}

impl PortUse {
    fn end(self) -> u32 {
        self.first + self.count
    }

    fn range(self) -> String {
        if self.count == 1 {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.end() - 1)
        }
    }

    fn label(self) -> &'static str {
        let one = self.count == 1;
        match self.kind {
            UseKind::Redis if one => "redis port",
            UseKind::Redis => "redis ports",
            UseKind::Bus if one => "cluster bus port",
            UseKind::Bus => "cluster bus ports",
            UseKind::Sentinel if one => "sentinel port",
            UseKind::Sentinel => "sentinel ports",
            UseKind::Agent => "agent_port",
        }
    }

    fn user(self, port: u32) -> String {
        match self.kind {
            UseKind::Redis => format!("redis-{port}"),
            UseKind::Bus => format!("the cluster bus of redis-{}", port - CLUSTER_BUS_OFFSET),
            UseKind::Sentinel => format!("sentinel-{port}"),
            UseKind::Agent => "the agent (agent_port)".to_owned(),
        }
    }

    fn setting(self) -> &'static str {
        match self.kind {
            UseKind::Redis | UseKind::Bus => "[redis] port",
            UseKind::Sentinel => "[sentinel] port",
            UseKind::Agent => "this host's agent_port",
        }
    }
}

/// The port ranges one host needs, in a fixed order (redis, bus,
/// sentinel, agent).
fn port_uses(layout: &Layout, redis: u32, sentinels: u32, agent_port: u16) -> Vec<PortUse> {
    let mut uses = Vec::new();
    if redis > 0 {
        let first = u32::from(layout.redis_port);
        uses.push(PortUse {
            kind: UseKind::Redis,
            first,
            count: redis,
        });
        if layout.topology == Topology::Cluster {
            uses.push(PortUse {
                kind: UseKind::Bus,
                first: first + CLUSTER_BUS_OFFSET,
                count: redis,
            });
        }
    }
    if let Some((_, port)) = layout.sentinel
        && sentinels > 0
    {
        uses.push(PortUse {
            kind: UseKind::Sentinel,
            first: u32::from(port),
            count: sentinels,
        });
    }
    uses.push(PortUse {
        kind: UseKind::Agent,
        first: u32::from(agent_port),
        count: 1,
    });
    uses
}

/// "host `a` uses redis ports 7000-7001, cluster bus ports ... and agent_port 7443"
fn describe_uses(host: &str, uses: &[PortUse]) -> String {
    let mut text = format!("host `{host}` uses ");
    for (n, u) in uses.iter().enumerate() {
        let sep = match n {
            0 => "",
            _ if n + 1 == uses.len() => " and ",
            _ => ", ",
        };
        let _ = write!(text, "{sep}{} {}", u.label(), u.range());
    }
    text
}

/// Two uses of one port on (possibly several) hosts.
struct Clash<'a> {
    at: usize,
    port: u32,
    users: [String; 2],
    hosts: Vec<&'a str>,
    hint: String,
}

/// Redis ports (and their cluster bus ports), sentinel ports and the
/// agent port must all differ on each host, and fit below 65536.
///
/// A clash is reported at the setting that caused it: the host's own
/// `agent_port` if involved and written, else `[sentinel] port`, else
/// `[redis] port`, else the host's table. Clashes that differ only in the
/// host (a shared setting) are reported once, naming every host.
fn port_clashes(r: &mut Report<'_>, layout: &Layout, hosts: &[CheckedHost<'_>]) {
    let (redis_count, sentinel_count) = instance_counts(layout, hosts);
    let mut clashes: Vec<Clash<'_>> = Vec::new();
    let mut overflowed: Vec<UseKind> = Vec::new();

    for (i, host) in hosts.iter().enumerate() {
        let Some(agent_port) = host.agent_port else {
            continue;
        };
        let uses = port_uses(layout, redis_count[i], sentinel_count[i], agent_port);
        report_overflows(r, layout, host, &uses, &mut overflowed);
        collect_clashes(layout, host, &uses, &mut clashes);
    }

    // Clashes are reported last, once each, so that hosts sharing the
    // same clash are named in one diagnostic.
    report_clashes(r, clashes);
}

/// How many redis and sentinel instances each host runs, by the same
/// placement the controller uses.
fn instance_counts(layout: &Layout, hosts: &[CheckedHost<'_>]) -> (Vec<u32>, Vec<u32>) {
    let mut redis_count = vec![0u32; hosts.len()];
    let zones = index_zones(hosts.iter().map(|h| h.raw_zone));
    for slot in assign_in_zones(&zones, layout.masters, layout.replicas) {
        redis_count[slot.host] += 1;
    }
    let mut sentinel_count = vec![0u32; hosts.len()];
    if let Some((count, _)) = layout.sentinel {
        for host in sentinel_hosts(hosts.len(), count) {
            sentinel_count[host] += 1;
        }
    }
    (redis_count, sentinel_count)
}

/// The offset to report a problem between uses `a` and `b` at: the
/// setting that caused it (see [`port_clashes`]).
fn use_location(layout: &Layout, host: &CheckedHost<'_>, a: PortUse, b: PortUse) -> usize {
    let involves = |k: UseKind| a.kind == k || b.kind == k;
    let agent = host.agent_port_at.filter(|_| involves(UseKind::Agent));
    let sentinel = layout
        .sentinel_port_at
        .filter(|_| involves(UseKind::Sentinel));
    let redis = layout
        .redis_port_at
        .filter(|_| involves(UseKind::Redis) || involves(UseKind::Bus));
    agent.or(sentinel).or(redis).unwrap_or(host.header)
}

/// Reports port ranges on `host` that run past 65535, once per kind
/// across all hosts (`overflowed` remembers the kinds already reported).
fn report_overflows(
    r: &mut Report<'_>,
    layout: &Layout,
    host: &CheckedHost<'_>,
    uses: &[PortUse],
    overflowed: &mut Vec<UseKind>,
) {
    for &u in uses {
        // One report per kind is enough: the fix is the same setting.
        if u.end() - 1 > 65535 && !overflowed.contains(&u.kind) {
            overflowed.push(u.kind);
            r.error(
                use_location(layout, host, u, u),
                format!(
                    "{} {} on host `{}` run past 65535",
                    u.label(),
                    u.range(),
                    host.raw_name
                ),
                format!(
                    "lower {} or add hosts so that fewer instances share a host",
                    u.setting()
                ),
            );
        }
    }
}

/// Adds the overlaps between `uses` on `host` to `clashes`, merging one
/// that is the same as another host's into that host's entry.
fn collect_clashes<'a>(
    layout: &Layout,
    host: &CheckedHost<'a>,
    uses: &[PortUse],
    clashes: &mut Vec<Clash<'a>>,
) {
    for (n, &a) in uses.iter().enumerate() {
        for &b in &uses[n + 1..] {
            let port = a.first.max(b.first);
            if port >= a.end().min(b.end()) {
                continue;
            }
            let at = use_location(layout, host, a, b);
            let users = [a.user(port), b.user(port)];
            if let Some(same) = clashes
                .iter_mut()
                .find(|c| c.at == at && c.port == port && c.users == users)
            {
                same.hosts.push(host.raw_name);
                continue;
            }
            let settings = if a.setting() == b.setting() {
                a.setting().to_owned()
            } else {
                format!("{} or {}", a.setting(), b.setting())
            };
            clashes.push(Clash {
                at,
                port,
                users,
                hosts: vec![host.raw_name],
                hint: format!(
                    "{}; change {settings} so they do not overlap",
                    describe_uses(host.raw_name, uses)
                ),
            });
        }
    }
}

/// Reports each collected clash, naming every host it occurs on.
fn report_clashes(r: &mut Report<'_>, clashes: Vec<Clash<'_>>) {
    for clash in clashes {
        let hosts = match clash.hosts.as_slice() {
            [one] => format!("host `{one}`"),
            [init @ .., last] => format!(
                "hosts {} and `{last}`",
                init.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            [] => continue,
        };
        let [a, b] = &clash.users;
        r.error(
            clash.at,
            format!(
                "port {} is used twice on {hosts}: by {a} and by {b}",
                clash.port
            ),
            clash.hint,
        );
    }
}

// --------------------------------------------------------------- warnings

/// Something valid that the operator should know before relying on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "warning: {}\n  hint: {}", self.message, self.hint)
    }
}

/// What a valid inventory's placement cannot survive: a host whose loss
/// takes out so many masters that the rest are no majority, so Redis
/// Cluster never elects their replicas (3 masters on 2 hosts, 4 on 3).
/// With zones, the same for a zone, and a shard whose instances all sit in
/// one zone.
#[must_use]
pub fn warnings(inv: &Inventory) -> Vec<Warning> {
    let placement = crate::placement::place(inv);
    let mut out = host_warnings(inv, &placement);
    out.extend(zone_warnings(inv, &placement));
    out
}

fn zone_warnings(inv: &Inventory, placement: &crate::placement::Placement) -> Vec<Warning> {
    let zones = {
        let mut z: Vec<&str> = inv.hosts.iter().filter_map(|h| h.zone.as_deref()).collect();
        z.sort_unstable();
        z.dedup();
        z.len()
    };
    let shards = placement
        .shards_in_one_zone(&inv.hosts)
        .into_iter()
        .map(|s| Warning {
            message: format!(
                "every instance of shard {} is in zone `{}`: losing that zone loses the shard",
                s.shard, s.zone
            ),
            hint: "add hosts in other zones".to_owned(),
        });
    let losses = placement
        .fatal_zone_losses(inv.deployment.topology, &inv.hosts)
        .into_iter()
        // One host holding them all is already the host warning's subject.
        .filter(|loss| loss.hosts > 1)
        .map(move |loss| Warning {
            message: format!(
                "losing zone `{}` would take out {} of the {} masters: the {} left are not a majority, so Redis Cluster would elect no replica and the cluster would stay down (cluster_state:fail) until that zone is back",
                loss.zone,
                loss.masters,
                loss.total,
                loss.total - loss.masters,
            ),
            hint: format!(
                "{} masters in {} zones put {} in one zone; use three zones or more (no zone then holds half of the masters when there are as many zones as masters, or e.g. 5 masters in 3 zones)",
                loss.total, zones, loss.masters,
            ),
        });
    shards.chain(losses).collect()
}

fn host_warnings(inv: &Inventory, placement: &crate::placement::Placement) -> Vec<Warning> {
    placement
        .fatal_host_losses(inv.deployment.topology)
        .into_iter()
        .map(|loss| {
            let hosts = inv.hosts.len();
            Warning {
                message: format!(
                    "losing host `{}` would take out {} of the {} masters: the {} left are not a majority, so Redis Cluster would elect no replica and the cluster would stay down (cluster_state:fail) until that host is back",
                    inv.hosts.get(loss.host).map_or("?", |h| h.name.as_str()),
                    loss.masters,
                    loss.total,
                    loss.total - loss.masters,
                ),
                hint: format!(
                    "{} masters on {} put {} on one host; add hosts (as many as masters: one master each) or choose a number of masters no host holds half of (e.g. 5 masters on 3 hosts)",
                    loss.total,
                    plural(hosts, "host", "hosts"),
                    loss.masters,
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(masters: u32, replicas: u32, hosts: usize) -> Inventory {
        let mut text = format!(
            "[deployment]\nname = \"w\"\ntopology = \"cluster\"\nmasters = {masters}\nreplicas_per_master = {replicas}\n"
        );
        for i in 0..hosts {
            text.push_str(&format!(
                "[[hosts]]\nname = \"h{i}\"\naddress = \"10.0.0.{}\"\n",
                i + 1
            ));
        }
        crate::parse("inventory.toml", &text).expect("valid")
    }

    #[test]
    fn placement_whose_host_loss_is_fatal_is_warned_about() {
        // (masters, replicas, hosts) -> hosts whose loss is fatal
        let table: [(u32, u32, usize, &[&str]); 7] = [
            (3, 1, 3, &[]),
            (3, 1, 6, &[]),
            (3, 1, 2, &["h0"]),
            (4, 1, 3, &["h0"]),
            (4, 1, 2, &["h0", "h1"]),
            (5, 1, 3, &[]),
            (6, 1, 3, &[]),
        ];
        for (masters, replicas, hosts, fatal) in table {
            let w = warnings(&cluster(masters, replicas, hosts));
            let named: Vec<&str> = fatal
                .iter()
                .copied()
                .filter(|h| w.iter().any(|w| w.message.contains(&format!("`{h}`"))))
                .collect();
            assert_eq!(named, fatal, "{masters} masters on {hosts} hosts: {w:?}");
            assert_eq!(
                w.len(),
                fatal.len(),
                "{masters} masters on {hosts} hosts: {w:?}"
            );
        }
        let w = warnings(&cluster(3, 1, 2));
        assert_eq!(
            w[0].message,
            "losing host `h0` would take out 2 of the 3 masters: the 1 left are not a majority, so Redis Cluster would elect no replica and the cluster would stay down (cluster_state:fail) until that host is back"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256mb"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_size("256MB"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert_eq!(parse_size("1Kb"), Ok(1024));
        assert_eq!(parse_size("2m"), Ok(2_000_000));
        assert_eq!(parse_size("3g"), Ok(3_000_000_000));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("12b"), Ok(12));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size(""), Err(SizeError::Syntax));
        assert_eq!(parse_size("mb"), Err(SizeError::Syntax));
        assert_eq!(parse_size("256 mb"), Err(SizeError::Syntax));
        assert_eq!(parse_size("1.5gb"), Err(SizeError::Syntax));
        assert_eq!(parse_size("-1"), Err(SizeError::Syntax));
        assert_eq!(parse_size("1tb"), Err(SizeError::Syntax));
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("17179869184gb"), Err(SizeError::TooLarge));
    }

    #[test]
    fn name_patterns() {
        assert!(is_deployment_name("lab"));
        assert!(is_deployment_name("0-a"));
        assert!(is_deployment_name(&"a".repeat(40)));
        assert!(!is_deployment_name(&"a".repeat(41)));
        assert!(!is_deployment_name(""));
        assert!(!is_deployment_name("-lab"));
        assert!(!is_deployment_name("Lab"));
        assert!(!is_deployment_name("la_b"));

        assert!(is_host_name("clusternodeA"));
        assert!(is_host_name("redis-1.dc_2"));
        assert!(is_host_name(&"a".repeat(63)));
        assert!(!is_host_name(&"a".repeat(64)));
        assert!(!is_host_name(""));
        assert!(!is_host_name(".hidden"));
        assert!(!is_host_name("a..b"));
        assert!(!is_host_name("a/b"));
        assert!(!is_host_name("é"));

        assert!(is_user_name("app"));
        assert!(is_user_name("a"));
        assert!(is_user_name("app_1-ro"));
        assert!(is_user_name(&"a".repeat(32)));
        assert!(!is_user_name(&"a".repeat(33)));
        assert!(!is_user_name(""));
        assert!(!is_user_name("1app"));
        assert!(!is_user_name("_app"));
        assert!(!is_user_name("App"));
        assert!(!is_user_name("a.b"));
        assert!(!is_user_name("é"));
    }

    #[test]
    fn password_rules() {
        assert_eq!(
            password_rule(">secret"),
            Some((">…".to_owned(), "would set a password"))
        );
        assert_eq!(
            password_rule("NoPass").map(|(s, _)| s),
            Some("NoPass".to_owned())
        );
        assert_eq!(
            password_rule("RESET").map(|(_, w)| w),
            Some("would reset the user, dropping its password")
        );
        assert_eq!(password_rule("resetkeys"), None);
        assert_eq!(password_rule("~app:*"), None);
        assert_eq!(password_rule("on"), None);
    }
}
