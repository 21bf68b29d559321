//! The instance spec: everything an agent needs to run one redis-server or
//! redis-sentinel, and the rules every spec obeys ([`InstanceSpec::validate`]).
//!
//! The serde form is what agents store on disk (spec.toml): field names and
//! units are those of specs stored by earlier versions, so durations are
//! written as the integer milliseconds (or seconds) they always were.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// How redis-server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Standalone,
    Cluster,
    /// redis-server --sentinel: watches the deployment's master.
    Sentinel,
}

/// Redis's `maxmemory-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxmemoryPolicy {
    #[default]
    #[serde(rename = "noeviction")]
    NoEviction,
    AllkeysLru,
    VolatileLru,
    AllkeysLfu,
    VolatileLfu,
    AllkeysRandom,
    VolatileRandom,
    VolatileTtl,
}

impl MaxmemoryPolicy {
    pub const ALL: [MaxmemoryPolicy; 8] = [
        MaxmemoryPolicy::NoEviction,
        MaxmemoryPolicy::AllkeysLru,
        MaxmemoryPolicy::VolatileLru,
        MaxmemoryPolicy::AllkeysLfu,
        MaxmemoryPolicy::VolatileLfu,
        MaxmemoryPolicy::AllkeysRandom,
        MaxmemoryPolicy::VolatileRandom,
        MaxmemoryPolicy::VolatileTtl,
    ];

    /// Redis's own spelling, e.g. `"allkeys-lru"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MaxmemoryPolicy::NoEviction => "noeviction",
            MaxmemoryPolicy::AllkeysLru => "allkeys-lru",
            MaxmemoryPolicy::VolatileLru => "volatile-lru",
            MaxmemoryPolicy::AllkeysLfu => "allkeys-lfu",
            MaxmemoryPolicy::VolatileLfu => "volatile-lfu",
            MaxmemoryPolicy::AllkeysRandom => "allkeys-random",
            MaxmemoryPolicy::VolatileRandom => "volatile-random",
            MaxmemoryPolicy::VolatileTtl => "volatile-ttl",
        }
    }

    /// The policy Redis spells `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for MaxmemoryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MaxmemoryPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_name(s).ok_or_else(|| {
            Error::invalid(
                "maxmemory_policy",
                format!("{s:?} is not a Redis maxmemory policy"),
            )
        })
    }
}

/// A host and port another instance listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::net::SocketAddr::new(self.address, self.port))
    }
}

/// A Sentinel's settings (mode Sentinel only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelSpec {
    /// The name the master is monitored under (the deployment's name).
    pub master_name: String,
    /// Where the master is when sentinel.conf is first written; Sentinel
    /// tracks it itself after that.
    pub master: Peer,
    pub quorum: u32,
    #[serde(rename = "down_after_ms", with = "millis")]
    pub down_after: Duration,
    #[serde(rename = "failover_timeout_ms", with = "millis")]
    pub failover_timeout: Duration,
}

/// The replication group of a standalone instance (replication and sentinel
/// topologies), so the agent keeps roles right across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The other redis-server members.
    pub peers: Vec<Peer>,
    /// The sentinels watching the group (sentinel topology).
    pub sentinels: Vec<Peer>,
    /// The name the sentinels know the master by.
    pub master_name: String,
}

/// Every instance of the deployment, this one included: the only addresses
/// the agent's guard lets a command point Redis at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    pub redis: Vec<Peer>,
    pub sentinels: Vec<Peer>,
}

/// An ACL user besides "default". Not `Debug` with its password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclUser {
    pub name: String,
    pub password: String,
    /// ACL rules, e.g. "~app:*", "+@read"; password rules are refused.
    pub rules: Vec<String>,
}

impl fmt::Debug for AclUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("rules", &self.rules)
            .finish()
    }
}

/// How the agent supervises an instance (the inventory's `[supervision]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Supervision {
    /// How long a start may take to answer PING.
    #[serde(rename = "start_timeout_ms", with = "millis")]
    pub start_timeout: Duration,
    /// Consecutive failed starts before FATAL.
    pub start_retries: u32,
    /// The longest wait between restarts of a crash loop.
    #[serde(rename = "backoff_max_ms", with = "millis")]
    pub backoff_max: Duration,
    /// SIGTERM, then SIGKILL after this long.
    #[serde(rename = "stop_timeout_ms", with = "millis")]
    pub stop_timeout: Duration,
}

impl Default for Supervision {
    /// The agent's defaults, used when a spec carries none.
    fn default() -> Self {
        Supervision {
            start_timeout: Duration::from_secs(60),
            start_retries: 10,
            backoff_max: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

fn default_min_replicas_max_lag() -> Duration {
    Duration::from_secs(10)
}

/// What the controller asks an agent to run. Not `Debug` with its passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Unique on the host, e.g. "redis-7000"; also the directory name.
    pub name: String,
    pub deployment: String,
    /// The host's inventory address: Redis binds it and announces it.
    pub address: IpAddr,
    pub port: u16,
    pub mode: Mode,
    /// 0 means no limit.
    pub maxmemory_bytes: u64,
    pub maxmemory_policy: MaxmemoryPolicy,
    pub appendonly: bool,
    pub rdb_snapshots: bool,
    #[serde(rename = "cluster_node_timeout_ms", with = "millis")]
    pub cluster_node_timeout: Duration,
    /// `min-replicas-to-write`; 0 (off) in specs stored before it existed.
    #[serde(default)]
    pub min_replicas_to_write: u32,
    /// `min-replicas-max-lag`, whole seconds.
    #[serde(
        rename = "min_replicas_max_lag_s",
        with = "secs",
        default = "default_min_replicas_max_lag"
    )]
    pub min_replicas_max_lag: Duration,
    /// requirepass and masterauth. Never logged or echoed back.
    pub password: String,
    #[serde(default)]
    pub supervision: Supervision,
    /// ACL users besides "default".
    #[serde(default)]
    pub users: Vec<AclUser>,
    /// Mode Sentinel only.
    #[serde(default)]
    pub sentinel: Option<SentinelSpec>,
    /// Standalone members of a replication or sentinel topology.
    #[serde(default)]
    pub group: Option<Group>,
    /// Absent in specs stored by older agents: then nothing may be re-pointed
    /// until the controller puts the spec again.
    #[serde(default)]
    pub members: Members,
}

// Hand-written so the password can never reach a log line through `{:?}`.
impl fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("name", &self.name)
            .field("deployment", &self.deployment)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("mode", &self.mode)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Durations stored as integer milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Durations stored as integer seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Names become directory names: keep them to a charset that cannot escape.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// An ACL rule we write: printable, no quotes or backslashes, and nothing that
/// sets, drops or bypasses a password (passwords are ours to manage).
pub fn valid_acl_rule(rule: &str) -> bool {
    !rule.is_empty()
        && rule.len() <= 256
        && rule
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'' && b != b'\\')
        && !rule.starts_with(['>', '<', '#', '!'])
        && !["nopass", "resetpass", "reset"].contains(&rule.to_ascii_lowercase().as_str())
}

/// An address one machine can own: not unspecified (0.0.0.0, ::: every
/// address), multicast or the IPv4 broadcast address.
pub fn is_host_address(ip: IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

fn valid_user_name(name: &str) -> bool {
    name != "default"
        && !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

const NAME_RULE: &str = "use 1-63 of a-z, 0-9 and '-'";

impl InstanceSpec {
    /// The rules every spec obeys, whoever built it: what is wrong, naming
    /// the field. Decoding a spec from the wire checks them; so does the
    /// agent before it renders a stored one.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_fields().map_err(|e| e.of(&self.name))
    }

    fn validate_fields(&self) -> Result<(), Error> {
        let bad = |field: &str, why: &str| Err(Error::invalid(field, why));
        if !valid_name(&self.name) {
            return bad(
                "name",
                "use 1-63 of a-z, 0-9 and '-', starting with a letter or digit",
            );
        }
        if !valid_name(&self.deployment) {
            return bad("deployment", NAME_RULE);
        }
        if !is_host_address(self.address) {
            return bad(
                "address",
                "must be this host's own unicast address (not 0.0.0.0, ::, broadcast or multicast)",
            );
        }
        self.validate_peers()?;
        if self.port == 0 || self.port > 55535 {
            return bad(
                "port",
                "must be 1..=55535 so that the cluster bus port (port + 10000) exists",
            );
        }
        if self.cluster_node_timeout < Duration::from_millis(100) {
            return bad("cluster_node_timeout_ms", "must be at least 100");
        }
        if self.password.len() < 16 || self.password.len() > 512 {
            return bad("password", "must be 16 to 512 bytes long");
        }
        if !self.password.bytes().all(|b| b.is_ascii_graphic()) {
            return bad(
                "password",
                "only printable ASCII without spaces is accepted",
            );
        }
        self.validate_users()?;
        self.validate_topology()?;
        let s = &self.supervision;
        if s.start_timeout < Duration::from_millis(100)
            || s.stop_timeout < Duration::from_millis(100)
            || s.backoff_max < Duration::from_millis(50)
        {
            return bad(
                "supervision",
                "start and stop timeouts must be at least 100 ms, the back-off cap at least 50 ms",
            );
        }
        Ok(())
    }

    fn validate_peers(&self) -> Result<(), Error> {
        let peers = self.sentinel.iter().map(|s| &s.master).chain(
            self.group
                .iter()
                .flat_map(|g| g.peers.iter().chain(&g.sentinels)),
        );
        for p in peers {
            if !is_host_address(p.address) {
                return Err(Error::invalid(
                    "peers",
                    "a member's address must be unicast (not 0.0.0.0, ::, broadcast or multicast)",
                ));
            }
        }
        Ok(())
    }

    fn validate_users(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::invalid("users", why));
        for u in &self.users {
            if !valid_user_name(&u.name) {
                return bad(
                    "a user name is 1-32 of a-z, 0-9, '_' and '-', starting with a letter, not \"default\"",
                );
            }
            if u.password.len() < 16 || !u.password.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(
                    "a user's password must be at least 16 printable characters without spaces",
                );
            }
            if !u.rules.iter().all(|r| valid_acl_rule(r)) {
                return bad(
                    "an ACL rule is empty, has quotes, backslashes or non-printable characters, or sets a password",
                );
            }
        }
        Ok(())
    }

    /// Sentinel settings only on sentinels, a group only on standalone members.
    fn validate_topology(&self) -> Result<(), Error> {
        let bad = |field: &str, why: &str| Err(Error::invalid(field, why));
        match (&self.mode, &self.sentinel) {
            (Mode::Sentinel, Some(s)) => {
                if !valid_name(&s.master_name) {
                    return bad("sentinel.master_name", NAME_RULE);
                }
                if s.quorum == 0
                    || s.down_after < Duration::from_millis(100)
                    || s.failover_timeout < Duration::from_millis(1000)
                {
                    return bad(
                        "sentinel",
                        "quorum must be at least 1, down_after_ms at least 100, failover_timeout_ms at least 1000",
                    );
                }
            }
            (Mode::Sentinel, None) => return bad("sentinel", "required in sentinel mode"),
            (_, Some(_)) => return bad("sentinel", "only allowed in sentinel mode"),
            _ => {}
        }
        if let Some(g) = &self.group {
            if self.mode != Mode::Standalone {
                return bad(
                    "group",
                    "only standalone instances belong to a replication group",
                );
            }
            if !g.sentinels.is_empty() && !valid_name(&g.master_name) {
                return bad("group.master_name", NAME_RULE);
            }
        }
        Ok(())
    }

    /// `cluster-node-timeout` in Redis's unit (milliseconds), as CONFIG GET
    /// answers it.
    pub fn cluster_node_timeout_ms(&self) -> u32 {
        u32::try_from(self.cluster_node_timeout.as_millis()).unwrap_or(u32::MAX)
    }

    /// Equal when the specs differ at most in the master a sentinel is
    /// seeded with (and the member list): Sentinel follows failovers itself,
    /// so a controller that names the new master is not asking for a change.
    pub fn same_but_seed(&self, other: &InstanceSpec) -> bool {
        let unseeded = |s: &InstanceSpec| {
            let mut s = s.clone();
            // Not a setting of the sentinel: a new member list is stored
            // without touching its seed.
            s.members = Members::default();
            if let Some(sentinel) = &mut s.sentinel {
                sentinel.master = Peer {
                    address: IpAddr::from([0, 0, 0, 0]),
                    port: 0,
                };
            }
            s
        };
        unseeded(self) == unseeded(other)
    }
}
