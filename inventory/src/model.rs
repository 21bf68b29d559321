//! The validated inventory. Every value here has passed the checks in
//! `validate`, so consumers need not re-check ranges or patterns.

use std::fmt;
use std::net::IpAddr;

/// A parsed and validated inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub deployment: Deployment,
    pub redis: RedisSettings,
    /// `Some` exactly when `deployment.topology` is [`Topology::Sentinel`].
    pub sentinel: Option<SentinelSettings>,
    /// How agents start, restart and stop every instance of the deployment;
    /// the defaults when `[supervision]` is absent.
    pub supervision: Supervision,
    /// At least one; names and addresses are unique.
    pub hosts: Vec<Host>,
    /// The `[[users]]` tables, in file order (empty when absent); names are
    /// unique.
    pub users: Vec<User>,
}

/// The `[deployment]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Matches `^[a-z0-9][a-z0-9-]{0,39}$`.
    pub name: String,
    pub topology: Topology,
    /// Cluster: at least 3. Replication and sentinel: exactly 1.
    pub masters: u32,
    /// 0..=5, and `replicas_per_master + 1 <= hosts.len()`.
    pub replicas_per_master: u32,
    /// Where the controller keeps the generated Redis password, relative to
    /// the inventory file. Never empty, never contains CR, LF or NUL.
    pub password_file: Option<String>,
}

/// How the Redis instances are wired together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topology {
    /// Redis Cluster: `masters` shards, 16384 slots spread across them.
    Cluster,
    /// One master and read-only replicas.
    Replication,
    /// One master, replicas, and Sentinels that fail over.
    Sentinel,
}

impl Topology {
    pub const ALL: [Topology; 3] = [Topology::Cluster, Topology::Replication, Topology::Sentinel];

    /// The spelling used in the inventory file.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Cluster => "cluster",
            Topology::Replication => "replication",
            Topology::Sentinel => "sentinel",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[redis]` table, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// First Redis port on each host (default 7000); 1024..=55535 so that
    /// the cluster bus port (`port + 10000`) fits.
    pub port: u16,
    /// `None` means no limit.
    pub maxmemory_bytes: Option<u64>,
    pub maxmemory_policy: MaxmemoryPolicy,
    /// Default true: a restarted master reloads its data instead of coming
    /// back empty and wiping its replicas.
    pub appendonly: bool,
    /// Default true.
    pub rdb_snapshots: bool,
    /// Default 5000; 500..=600000.
    pub cluster_node_timeout_ms: u32,
    /// A master refuses writes unless this many replicas are connected and
    /// acknowledged within `min_replicas_max_lag_s` (Redis's
    /// `min-replicas-to-write`). Bounds what a master cut off from its
    /// replicas but not from its clients acknowledges and later loses.
    /// Default 1 for replication and sentinel (0 with no replicas), 0 for
    /// cluster; at most `replicas_per_master`.
    pub min_replicas_to_write: u32,
    /// Default 10 seconds; 1..=3600.
    pub min_replicas_max_lag_s: u32,
}

/// Redis's `maxmemory-policy`: the wire model's type, so a spec takes the
/// inventory's value as it is.
pub use paddock_model::MaxmemoryPolicy;

/// The `[sentinel]` table (sentinel topology only), with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// Number of sentinels, 1..=9 (default 3).
    pub count: u32,
    /// Sentinels that must agree the master is down; 1..=count (default
    /// majority, `count / 2 + 1`).
    pub quorum: u32,
    /// First sentinel port on each host (default 26379).
    pub port: u16,
    /// Default 5000; 100..=600000.
    pub down_after_ms: u32,
    /// Default 60000; at least 1000.
    pub failover_timeout_ms: u32,
}

/// The `[supervision]` table, with defaults filled in: how an agent starts,
/// restarts and stops every instance of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    /// How long a start may take to answer; a Redis still loading its data
    /// keeps starting. Default 60000; 1000..=3600000.
    pub start_timeout_ms: u32,
    /// Failed starts in a row before the instance is FATAL. Default 10;
    /// 0..=100.
    pub start_retries: u32,
    /// Cap of the exponential back-off between restarts (the first restart
    /// is immediate, then 50 ms doubling). Default 5000; 100..=300000.
    pub backoff_max_ms: u32,
    /// SIGTERM, then SIGKILL to the process group after this long. Default
    /// 10000; 100..=600000.
    pub stop_timeout_ms: u32,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            start_timeout_ms: 60_000,
            start_retries: 10,
            backoff_max_ms: 5000,
            stop_timeout_ms: 10_000,
        }
    }
}

/// One `[[hosts]]` entry: a machine running `paddockd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Safe as a directory name: `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`, no `..`.
    pub name: String,
    /// The address Redis announces and the agent listens on.
    pub address: IpAddr,
    /// Default 7443.
    pub agent_port: u16,
    /// The failure domain (rack, room, data centre) the host is in; every
    /// host has one or none does. Same pattern as `name`. Placement spreads
    /// masters and each shard's instances across zones first.
    pub zone: Option<String>,
}

/// One `[[users]]` entry: a Redis ACL user the deployment should have. The
/// controller generates its password; the inventory never holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Matches `^[a-z][a-z0-9_-]{0,31}$` and is not `default`.
    pub name: String,
    /// The ACL rules, one token each, in order (e.g. `~app:*`, `+@read`).
    /// At least one; printable ASCII without quotes or backslashes, and
    /// none that sets, drops or bypasses a password (`>`, `<`, `#`, `!`,
    /// `nopass`, `resetpass`, `reset`).
    pub rules: Vec<String>,
}
