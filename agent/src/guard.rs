//! Which Redis commands the RedisCommand RPC runs: an allow-list of exactly
//! the commands and argument shapes the controller sends, per kind of
//! instance, and nothing else. Whoever holds the controller's certificate
//! must not get, through the agent, what Redis would not give a client
//! without the password: the password itself, data wiped or moved out of
//! the deployment (MIGRATE only moves keys between its members; values are
//! never read, only digests of them), scripts, files written, a stopped
//! server, a connection left in another state, or Redis pointed (and so
//! sending its password) at an address outside the deployment.
//!
//! Without `allow_dangerous`:
//! - any instance: PING; INFO of named sections;
//! - a cluster instance: CLUSTER NODES / INFO / SET-CONFIG-EPOCH /
//!   ADDSLOTSRANGE / FAILOVER [FORCE|TAKEOVER] / GETSLOTMIGRATIONS (Valkey
//!   9); CLUSTER MEET of a member's address; CLUSTER REPLICATE and FORGET
//!   of a node id that the local node lists at a member's address (FORGET
//!   also of a node flagged fail or noaddr); CONFIG SET
//!   cluster-node-timeout between 100 ms and the spec's;
//! - a replication member: CLIENT PAUSE <ms> WRITE (at most
//!   [`MAX_WRITE_PAUSE_MS`]) and CLIENT UNPAUSE;
//! - a redis-server of either kind: CONFIG GET of named, non-secret
//!   parameters; CONFIG SET maxmemory / maxmemory-policy /
//!   min-replicas-to-write / min-replicas-max-lag / save / appendonly to the
//!   spec's value (the stored spec: apply stores it before setting live);
//! - a sentinel: SENTINEL MASTER / REPLICAS / SENTINELS /
//!   GET-MASTER-ADDR-BY-NAME / CKQUORUM of the deployment's master name,
//!   SENTINEL MASTERS and MYID.
//!
//! With `allow_dangerous`, also (the commands the controller marks so):
//! REPLICAOF / SLAVEOF NO ONE or a member's address; CLUSTER SETSLOT with a
//! member node (NODE also of the local node itself: the end of a move);
//! CLUSTER DELSLOTSRANGE of one slot (S S); for slot moves, on a cluster
//! instance: CLUSTER
//! COUNTKEYSINSLOT / GETKEYSINSLOT of a valid slot (at most
//! [`MAX_KEYS_PER_CALL`] keys), MIGRATE in its KEYS form only (empty key,
//! db 0) to a member's address, a timeout of at most
//! [`MAX_MIGRATE_TIMEOUT_MS`], REPLACE allowed, COPY and AUTH / AUTH2
//! refused: the agent appends `AUTH <the stored spec's password>` itself,
//! so the password never crosses the wire and the target can only be a
//! member, which already knows it; and the agent's own [`DIGEST_COMMAND`]
//! (per key a hash of its DUMP, computed in the agent: values never leave
//! it); Valkey 9's CLUSTER MIGRATESLOTS (SLOTSRANGE of valid slots, NODE
//! of a member node the local node knows; Valkey authenticates to it with
//! masterauth, never a caller's password). Key names are bytes, checked
//! for count only. ACL SETUSER of a spec user with exactly its rendered
//! password and rules (`reset on >PASSWORD RULES...`), ACL DELUSER of a
//! user the spec does not have (never `default`), on a redis-server;
//! ACL SETUSER default >new / <old and CONFIG SET masterauth
//! (password rotation, the value a valid password; ACL SETUSER also on a
//! sentinel, with SENTINEL SET auth-pass and SENTINEL CONFIG SET
//! sentinel-pass); SENTINEL FAILOVER, SET
//! (quorum, down-after-milliseconds, failover-timeout, parallel-syncs),
//! MONITOR (a member's address), REMOVE and RESET, of the deployment's
//! master name only.
//!
//! Never, flag or not: anything naming an address or node outside the
//! spec's member list, anything that reads the password, and every command
//! not listed above (FLUSHALL, EVAL, MIGRATE in any other form, PUBLISH,
//! SUBSCRIBE, MULTI, CLIENT KILL, SHUTDOWN, ...).

use std::fmt;

use crate::spec::{AclUser, InstanceSpec, Members, Mode, Peer, SNAPSHOT_SAVE};

/// The longest write pause accepted: the controller's failover pauses
/// writes on the old master for its catch-up window, which it caps here.
pub const MAX_WRITE_PAUSE_MS: u64 = 300_000;
/// Formation shortens cluster-node-timeout (to 500 ms); never below this.
const MIN_NODE_TIMEOUT_MS: u64 = 100;
/// A cluster has 16384 hash slots.
const LAST_SLOT: u64 = 16383;
/// The longest MIGRATE timeout (idle time talking to the target): the
/// agent's connection for MIGRATE waits this plus a margin, and the
/// controller's call deadline (90 s) is above both.
pub const MAX_MIGRATE_TIMEOUT_MS: u64 = 60_000;
/// The most keys one MIGRATE, GETKEYSINSLOT or [`DIGEST_COMMAND`] names.
pub const MAX_KEYS_PER_CALL: usize = 1000;
/// The agent's own command (not Redis's): per key, a digest of its value
/// (see `crate::digest`), nil for a missing key. Only digests leave the
/// agent, never values.
pub const DIGEST_COMMAND: &str = "PADDOCK.DIGEST";

const INFO_SECTIONS: [&str; 16] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "latencystats",
    "errorstats",
    "cluster",
    "keyspace",
    "sentinel",
    "modules",
    "default",
    "all",
];
/// CONFIG GET: one name at a time, no patterns, nothing about auth.
const CONFIG_READABLE: [&str; 9] = [
    "cluster-node-timeout",
    "maxmemory",
    "maxmemory-policy",
    "appendonly",
    "save",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "replica-read-only",
    "repl-diskless-sync-delay",
];
const SENTINEL_SETTABLE: [(&str, u64); 4] = [
    ("quorum", 1),
    ("down-after-milliseconds", 100),
    ("failover-timeout", 1000),
    ("parallel-syncs", 1),
];

/// A node as the local cluster node lists it (CLUSTER NODES), so a command
/// that names a node by id can be checked by that node's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownNode {
    pub id: String,
    /// None when the node has no address (flag noaddr, or `:0`).
    pub addr: Option<Peer>,
    pub myself: bool,
    /// Flagged fail or noaddr: forgetting it sends nothing anywhere.
    pub gone: bool,
}

/// CLUSTER NODES text into nodes; lines that do not parse are skipped (the
/// ids they carry then count as unknown, which refuses).
pub fn parse_cluster_nodes(text: &str) -> Vec<KnownNode> {
    paddock_knowledge::nodes::parse(text)
        .into_iter()
        .map(|n| KnownNode {
            addr: n.addr().map(|a| Peer {
                address: a.ip,
                port: a.port,
            }),
            myself: n.is_myself(),
            gone: n.is_gone(),
            id: n.id,
        })
        .collect()
}

/// What the guard knows about the instance a command is for.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub mode: Mode,
    pub deployment: &'a str,
    /// The name the sentinels know the master by.
    pub master_name: Option<&'a str>,
    pub members: &'a Members,
    pub maxmemory_bytes: u64,
    pub maxmemory_policy: &'a str,
    pub cluster_node_timeout_ms: u32,
    pub min_replicas_to_write: u32,
    pub min_replicas_max_lag_s: u64,
    pub appendonly: bool,
    pub rdb_snapshots: bool,
    /// The spec's ACL users, with their rendered rules.
    pub users: &'a [AclUser],
    /// The local node's CLUSTER NODES, when a command names a node by id.
    pub nodes: &'a [KnownNode],
}

impl<'a> Scope<'a> {
    pub fn of(spec: &'a InstanceSpec, nodes: &'a [KnownNode]) -> Self {
        Scope {
            mode: spec.mode,
            deployment: &spec.deployment,
            master_name: match (&spec.sentinel, &spec.group) {
                (Some(s), _) => Some(&s.master_name),
                (None, Some(g)) if !g.sentinels.is_empty() => Some(&g.master_name),
                _ => None,
            },
            members: &spec.members,
            maxmemory_bytes: spec.maxmemory_bytes,
            maxmemory_policy: spec.maxmemory_policy.as_str(),
            cluster_node_timeout_ms: u32::try_from(spec.cluster_node_timeout.as_millis())
                .unwrap_or(u32::MAX),
            min_replicas_to_write: spec.min_replicas_to_write,
            min_replicas_max_lag_s: spec.min_replicas_max_lag.as_secs(),
            appendonly: spec.appendonly,
            rdb_snapshots: spec.rdb_snapshots,
            users: &spec.users,
            nodes,
        }
    }

    fn kind(&self) -> &'static str {
        match self.mode {
            Mode::Cluster => "a cluster instance",
            Mode::Standalone => "a replication member",
            Mode::Sentinel => "a sentinel",
        }
    }
}

/// Why a command is refused. Never carries argument values: they may be
/// passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not on the allow-list for this kind of instance, flag or not.
    NotAllowed { command: String, kind: &'static str },
    /// On the list, but only with allow_dangerous.
    NeedsFlag { command: String },
    /// Names an address, node or master outside the deployment.
    Outside {
        command: String,
        what: String,
        deployment: String,
    },
    /// The command is allowed, these arguments are not.
    Shape { command: String, why: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAllowed { command, kind } => write!(
                f,
                "{command} is not among the commands the agent runs on {kind} (see the README's guard section)"
            ),
            Refusal::NeedsFlag { command } => write!(
                f,
                "{command} re-points Redis or changes its credentials: the caller must set allow_dangerous"
            ),
            Refusal::Outside {
                command,
                what,
                deployment,
            } => write!(
                f,
                "{command} names {what}, which is not a member of deployment {deployment}; refused even with allow_dangerous"
            ),
            Refusal::Shape { command, why } => write!(f, "{command}: {why}"),
        }
    }
}

/// Whether the command names a cluster node by id, so the caller must fetch
/// the local node's CLUSTER NODES for [`Scope::nodes`] first.
pub fn names_a_node(args: &[Vec<u8>]) -> bool {
    let w = |i: usize| args.get(i).map(|a| a.to_ascii_uppercase());
    w(0).as_deref() == Some(b"CLUSTER")
        && matches!(
            w(1).as_deref(),
            Some(b"REPLICATE" | b"FORGET" | b"SETSLOT" | b"MIGRATESLOTS")
        )
}

/// Where the keys of a command that carries key names start: after `KEYS`
/// in MIGRATE (not before its 6th argument), after the name in
/// [`DIGEST_COMMAND`]. Keys are bytes, any bytes; every other argument must
/// be UTF-8.
pub fn key_start(args: &[Vec<u8>]) -> Option<usize> {
    let name = args.first()?;
    if name.eq_ignore_ascii_case(b"MIGRATE") {
        (6..args.len())
            .find(|&i| args[i].eq_ignore_ascii_case(b"KEYS"))
            .map(|i| i + 1)
    } else if name.eq_ignore_ascii_case(DIGEST_COMMAND.as_bytes()) {
        Some(1)
    } else {
        None
    }
}

/// Ok when the command may run on the instance `scope` describes.
pub fn check(args: &[Vec<u8>], scope: &Scope<'_>, allow_dangerous: bool) -> Result<(), Refusal> {
    let split = key_start(args).unwrap_or(args.len());
    let Some(words) = args[..split]
        .iter()
        .map(|a| std::str::from_utf8(a).ok())
        .collect::<Option<Vec<&str>>>()
    else {
        return Err(Refusal::Shape {
            command: label(args),
            why: "arguments other than key names must be UTF-8".into(),
        });
    };
    let need = allowed(&words, args.len() - split, scope)?;
    if need == Need::Flag && !allow_dangerous {
        return Err(Refusal::NeedsFlag {
            command: label(args),
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Flag,
}

/// The command's name and, for container commands, subcommand: what a
/// refusal may show.
fn label(args: &[Vec<u8>]) -> String {
    let up = |i: usize| {
        args.get(i)
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
    };
    let name: String = up(0)
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    let container = [
        "CLUSTER", "CONFIG", "CLIENT", "SENTINEL", "ACL", "SCRIPT", "FUNCTION",
    ];
    match up(1) {
        Some(sub) if container.contains(&name.as_str()) => {
            let sub: String = sub
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(32)
                .collect();
            format!("{name} {sub}")
        }
        _ => name,
    }
}

/// `w`: the command's words; `keys`: how many key names follow them.
fn allowed(w: &[&str], keys: usize, scope: &Scope<'_>) -> Result<Need, Refusal> {
    let name = w[0].to_ascii_uppercase();
    let sub = w.get(1).map(|s| s.to_ascii_uppercase()).unwrap_or_default();
    let command = if ["CLUSTER", "CONFIG", "CLIENT", "SENTINEL", "ACL"].contains(&name.as_str()) {
        format!("{name} {sub}")
    } else {
        name.clone()
    };
    let redis = scope.mode != Mode::Sentinel;
    let n = w.len();
    match (name.as_str(), sub.as_str()) {
        ("PING", _) if n == 1 => Ok(Need::Nothing),
        ("INFO", _) => info(w, &command),
        ("CONFIG", "GET") if redis => config_get(w, &command),
        ("CONFIG", "SET") if redis => config_set(w, scope, &command),
        ("ACL", "SETUSER") if n == 4 && w[2] == "default" => acl_setuser(w, &command),
        ("ACL", "SETUSER") if redis => acl_setuser_spec(w, scope, &command),
        ("ACL", "SETUSER") => acl_setuser(w, &command),
        ("ACL", "DELUSER") if redis => acl_deluser(w, scope, &command),
        ("CLUSTER", _) if scope.mode == Mode::Cluster => cluster(w, &sub, scope, &command),
        ("MIGRATE", _) if scope.mode == Mode::Cluster => migrate(w, keys, scope, &command),
        (DIGEST_COMMAND, _) if scope.mode == Mode::Cluster && n == 1 => {
            if (1..=MAX_KEYS_PER_CALL).contains(&keys) {
                Ok(Need::Flag)
            } else {
                Err(shape(
                    &command,
                    &format!("takes 1 to {MAX_KEYS_PER_CALL} key names"),
                ))
            }
        }
        ("REPLICAOF" | "SLAVEOF", _) if scope.mode == Mode::Standalone => {
            replicaof(w, scope, &command)
        }
        ("CLIENT", "PAUSE") if scope.mode == Mode::Standalone => client_pause(w, &command),
        ("CLIENT", "UNPAUSE") if scope.mode == Mode::Standalone && n == 2 => Ok(Need::Nothing),
        ("SENTINEL", _) if scope.mode == Mode::Sentinel => sentinel(w, &sub, scope, &command),
        _ => Err(Refusal::NotAllowed {
            command,
            kind: scope.kind(),
        }),
    }
}

/// Refusal of an allowed command's arguments.
fn shape(command: &str, why: &str) -> Refusal {
    Refusal::Shape {
        command: command.to_owned(),
        why: why.to_owned(),
    }
}

/// INFO: any number of named sections, no patterns.
fn info(w: &[&str], command: &str) -> Result<Need, Refusal> {
    if w[1..]
        .iter()
        .all(|s| INFO_SECTIONS.contains(&s.to_ascii_lowercase().as_str()))
    {
        Ok(Need::Nothing)
    } else {
        Err(shape(
            command,
            "only named INFO sections (server, replication, ...)",
        ))
    }
}

/// CONFIG GET (redis-server): named, non-secret parameters only.
fn config_get(w: &[&str], command: &str) -> Result<Need, Refusal> {
    if w.len() >= 3
        && w[2..]
            .iter()
            .all(|p| CONFIG_READABLE.contains(&p.to_ascii_lowercase().as_str()))
    {
        Ok(Need::Nothing)
    } else {
        Err(shape(
            command,
            "only named, non-secret parameters (cluster-node-timeout, maxmemory, ...); no patterns, never authentication settings",
        ))
    }
}

/// CONFIG SET (redis-server): parameter-value pairs, each one the guard
/// knows; the flag is needed when any pair needs it.
fn config_set(w: &[&str], scope: &Scope<'_>, command: &str) -> Result<Need, Refusal> {
    let n = w.len();
    if n < 4 || !n.is_multiple_of(2) {
        return Err(shape(command, "takes parameter-value pairs"));
    }
    let mut need = Need::Nothing;
    for pair in w[2..].chunks(2) {
        if config_set_pair(pair[0], pair[1], scope, command)? == Need::Flag {
            need = Need::Flag;
        }
    }
    Ok(need)
}

/// One CONFIG SET pair: the spec's value, a bounded timeout or a valid
/// password (rotation, flagged); any other parameter is not allowed.
fn config_set_pair(
    param: &str,
    value: &str,
    scope: &Scope<'_>,
    command: &str,
) -> Result<Need, Refusal> {
    match param.to_ascii_lowercase().as_str() {
        "cluster-node-timeout" if scope.mode == Mode::Cluster => match value.parse::<u64>() {
            Ok(v)
                if (MIN_NODE_TIMEOUT_MS..=u64::from(scope.cluster_node_timeout_ms))
                    .contains(&v) =>
            {
                Ok(Need::Nothing)
            }
            _ => Err(shape(
                command,
                &format!(
                    "cluster-node-timeout must be {MIN_NODE_TIMEOUT_MS} to {} (the spec's value)",
                    scope.cluster_node_timeout_ms
                ),
            )),
        },
        "maxmemory" if value.parse::<u64>().ok() != Some(scope.maxmemory_bytes) => Err(shape(
            command,
            &format!(
                "maxmemory may only be set to the spec's value ({} bytes)",
                scope.maxmemory_bytes
            ),
        )),
        "maxmemory" => Ok(Need::Nothing),
        "maxmemory-policy" if !value.eq_ignore_ascii_case(scope.maxmemory_policy) => Err(shape(
            command,
            &format!(
                "maxmemory-policy may only be set to the spec's value ({})",
                scope.maxmemory_policy
            ),
        )),
        "maxmemory-policy" => Ok(Need::Nothing),
        "min-replicas-to-write" | "min-replicas-max-lag" | "save" | "appendonly" => {
            spec_value(param, value, scope, command)
        }
        "masterauth" if !valid_password(value) => Err(shape(
            command,
            "masterauth must be 16 to 512 printable characters",
        )),
        "masterauth" => Ok(Need::Flag),
        _ => Err(Refusal::NotAllowed {
            command: format!("CONFIG SET {}", param.to_ascii_lowercase()),
            kind: scope.kind(),
        }),
    }
}

/// CONFIG SET of a setting apply sets live: only the stored spec's value.
fn spec_value(param: &str, value: &str, scope: &Scope<'_>, command: &str) -> Result<Need, Refusal> {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let want = match param.to_ascii_lowercase().as_str() {
        "min-replicas-to-write" => scope.min_replicas_to_write.to_string(),
        "min-replicas-max-lag" => scope.min_replicas_max_lag_s.to_string(),
        "save" if scope.rdb_snapshots => SNAPSHOT_SAVE.to_owned(),
        "save" => String::new(),
        _ => yes_no(scope.appendonly),
    };
    if value.eq_ignore_ascii_case(&want) {
        Ok(Need::Nothing)
    } else {
        Err(shape(
            command,
            &format!(
                "{} may only be set to the spec's value ({want:?})",
                param.to_ascii_lowercase()
            ),
        ))
    }
}

/// ACL SETUSER of a spec user (redis-server): exactly what the agent
/// renders for it, from a reset user, so nothing else stays granted.
fn acl_setuser_spec(w: &[&str], scope: &Scope<'_>, command: &str) -> Result<Need, Refusal> {
    let user = w
        .get(2)
        .and_then(|n| scope.users.iter().find(|u| u.name == *n));
    let ok = user.is_some_and(|u| {
        w.len() == 6 + u.rules.len()
            && w[3] == "reset"
            && w[4] == "on"
            && w[5].strip_prefix('>') == Some(u.password.as_str())
            && w[6..].iter().zip(&u.rules).all(|(a, b)| a == b)
    });
    if ok {
        Ok(Need::Flag)
    } else {
        Err(shape(
            command,
            "only `ACL SETUSER default >PASSWORD` / `<PASSWORD`, or a user of the spec set to exactly its password and rules (`reset on >PASSWORD RULES...`)",
        ))
    }
}

/// ACL DELUSER (redis-server): one user the spec no longer has, never
/// `default`.
fn acl_deluser(w: &[&str], scope: &Scope<'_>, command: &str) -> Result<Need, Refusal> {
    let ok = w.len() == 3 && w[2] != "default" && !scope.users.iter().any(|u| u.name == w[2]);
    if ok {
        Ok(Need::Flag)
    } else {
        Err(shape(
            command,
            "only one user the spec does not have, never `default`",
        ))
    }
}

/// ACL SETUSER: password rotation (redis-server and sentinel): add the new
/// password, or remove the old.
fn acl_setuser(w: &[&str], command: &str) -> Result<Need, Refusal> {
    let ok = w.len() == 4
        && w[2] == "default"
        && w[3].strip_prefix(['>', '<']).is_some_and(valid_password);
    if ok {
        Ok(Need::Flag)
    } else {
        Err(shape(
            command,
            "only `ACL SETUSER default >PASSWORD` or `<PASSWORD`",
        ))
    }
}

/// REPLICAOF / SLAVEOF (replication member): NO ONE, or a member's address.
fn replicaof(w: &[&str], scope: &Scope<'_>, command: &str) -> Result<Need, Refusal> {
    if w.len() != 3 {
        return Err(shape(command, "takes HOST PORT or NO ONE"));
    }
    if w[1].eq_ignore_ascii_case("NO") && w[2].eq_ignore_ascii_case("ONE") {
        return Ok(Need::Flag);
    }
    match member_peer(w[1], w[2]) {
        Some(p) if scope.members.redis.contains(&p) => Ok(Need::Flag),
        _ => Err(Refusal::Outside {
            command: command.to_owned(),
            what: format!("{}:{}", w[1], w[2]),
            deployment: scope.deployment.to_owned(),
        }),
    }
}

/// CLIENT PAUSE (replication member): writes only, for a bounded time.
fn client_pause(w: &[&str], command: &str) -> Result<Need, Refusal> {
    let ms_ok = w
        .get(2)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|ms| (1..=MAX_WRITE_PAUSE_MS).contains(&ms));
    if w.len() == 4 && ms_ok && w[3].eq_ignore_ascii_case("WRITE") {
        Ok(Need::Nothing)
    } else {
        Err(shape(
            command,
            &format!("only `CLIENT PAUSE <1..{MAX_WRITE_PAUSE_MS} ms> WRITE`"),
        ))
    }
}

fn cluster(w: &[&str], sub: &str, scope: &Scope<'_>, command: &str) -> Result<Need, Refusal> {
    let n = w.len();
    let shape = |why: &str| Refusal::Shape {
        command: command.to_owned(),
        why: why.to_owned(),
    };
    let outside = |what: String| Refusal::Outside {
        command: command.to_owned(),
        what,
        deployment: scope.deployment.to_owned(),
    };
    // A node named by id: known to the local node, at a member's address.
    let node = |id: &str, or_gone: bool| -> Result<(), Refusal> {
        match scope.nodes.iter().find(|k| k.id == id) {
            None => Err(outside(format!(
                "node {id}, which the local node does not know"
            ))),
            Some(k) if k.myself => Err(shape("names the local node itself")),
            Some(k) if k.addr.is_some_and(|a| scope.members.redis.contains(&a)) => Ok(()),
            Some(k) if or_gone && k.gone => Ok(()),
            Some(k) => Err(outside(match k.addr {
                Some(a) => format!("node {id} at {a}"),
                None => format!("node {id} (no address)"),
            })),
        }
    };
    match sub {
        "NODES" | "INFO" if n == 2 => Ok(Need::Nothing),
        "SET-CONFIG-EPOCH" if n == 3 && w[2].parse::<u64>().is_ok() => Ok(Need::Nothing),
        "ADDSLOTSRANGE" => {
            let slots: Option<Vec<u64>> = w[2..]
                .iter()
                .map(|s| s.parse::<u64>().ok().filter(|s| *s <= LAST_SLOT))
                .collect();
            match slots {
                Some(s)
                    if !s.is_empty()
                        && s.len().is_multiple_of(2)
                        && s.chunks(2).all(|p| p[0] <= p[1]) =>
                {
                    Ok(Need::Nothing)
                }
                _ => Err(shape("takes START END pairs of slots 0-16383")),
            }
        }
        "MEET" if n == 4 || n == 5 => {
            let peer = member_peer(w[2], w[3]);
            let bus_ok = n == 4
                || peer
                    .is_some_and(|p| w[4].parse::<u32>().ok() == Some(u32::from(p.port) + 10000));
            match peer {
                Some(p) if scope.members.redis.contains(&p) && bus_ok => Ok(Need::Nothing),
                Some(p) if scope.members.redis.contains(&p) => {
                    Err(shape("the bus port must be the port + 10000"))
                }
                _ => Err(outside(format!("{}:{}", w[2], w[3]))),
            }
        }
        "REPLICATE" if n == 3 => node(w[2], false).map(|()| Need::Nothing),
        "FORGET" if n == 3 => node(w[2], true).map(|()| Need::Nothing),
        "FAILOVER" if n == 2 => Ok(Need::Nothing),
        "FAILOVER"
            if n == 3
                && (w[2].eq_ignore_ascii_case("FORCE")
                    || w[2].eq_ignore_ascii_case("TAKEOVER")) =>
        {
            Ok(Need::Nothing)
        }
        // One slot's claim dropped (a repair of a slot two masters claim);
        // its keys stay where they are.
        "DELSLOTSRANGE" if n == 4 && slot(w[2]) && w[2] == w[3] => Ok(Need::Flag),
        "DELSLOTSRANGE" => Err(shape("takes one slot, as START END with START = END")),
        "COUNTKEYSINSLOT" if n == 3 && slot(w[2]) => Ok(Need::Flag),
        "GETKEYSINSLOT"
            if n == 4
                && slot(w[2])
                && w[3]
                    .parse::<usize>()
                    .is_ok_and(|c| (1..=MAX_KEYS_PER_CALL).contains(&c)) =>
        {
            Ok(Need::Flag)
        }
        "COUNTKEYSINSLOT" | "GETKEYSINSLOT" => Err(shape(&format!(
            "takes a slot 0-{LAST_SLOT} (and, for GETKEYSINSLOT, a count of 1 to {MAX_KEYS_PER_CALL})"
        ))),
        // Valkey 9's atomic slot migration: the source sends the slots
        // to another member itself (over a connection like a replica's,
        // authenticated with masterauth, which the agent renders).
        "MIGRATESLOTS" => match migrateslots_targets(&w[2..]) {
            Some(ids) => {
                for id in ids {
                    node(id, false)?;
                }
                Ok(Need::Flag)
            }
            None => Err(shape(
                "takes SLOTSRANGE START END [START END ...] NODE NODE-ID, repeated, slots 0-16383",
            )),
        },
        "GETSLOTMIGRATIONS" if n == 2 => Ok(Need::Nothing),
        "SETSLOT" if n >= 4 && slot(w[2]) => {
            let how = w[3].to_ascii_uppercase();
            match (how.as_str(), n) {
                ("STABLE", 4) => Ok(Need::Flag),
                // The end of a move: the target is told first that it owns
                // the slot, by its own id.
                ("NODE", 5) if scope.nodes.iter().any(|k| k.myself && k.id == w[4]) => {
                    Ok(Need::Flag)
                }
                ("NODE" | "MIGRATING" | "IMPORTING", 5) => node(w[4], false).map(|()| Need::Flag),
                _ => Err(shape(
                    "takes SLOT STABLE or SLOT NODE|MIGRATING|IMPORTING NODE-ID",
                )),
            }
        }
        _ => Err(Refusal::NotAllowed {
            command: command.to_owned(),
            kind: scope.kind(),
        }),
    }
}

/// The node ids of `SLOTSRANGE START END [START END ...] NODE ID`
/// groups (at least one; every range valid and ordered); None for any
/// other shape.
fn migrateslots_targets<'a>(w: &[&'a str]) -> Option<Vec<&'a str>> {
    let mut ids = Vec::new();
    let mut rest = w;
    while !rest.is_empty() {
        if !rest[0].eq_ignore_ascii_case("SLOTSRANGE") {
            return None;
        }
        let node_at = rest.iter().position(|x| x.eq_ignore_ascii_case("NODE"))?;
        let bounds = &rest[1..node_at];
        let ordered = bounds.chunks(2).all(|p| {
            p.len() == 2
                && slot(p[0])
                && slot(p[1])
                && p[0].parse::<u64>().ok() <= p[1].parse::<u64>().ok()
        });
        if bounds.is_empty() || !ordered {
            return None;
        }
        ids.push(*rest.get(node_at + 1)?);
        rest = &rest[node_at + 2..];
    }
    (!ids.is_empty()).then_some(ids)
}

fn slot(s: &str) -> bool {
    s.parse::<u64>().is_ok_and(|s| s <= LAST_SLOT)
}

/// MIGRATE (cluster instance): only `MIGRATE HOST PORT "" 0 TIMEOUT
/// [REPLACE] KEYS key...` to a member's address, a bounded timeout and
/// number of keys. No COPY (a slot move must leave the source empty), no
/// AUTH / AUTH2 (the agent adds the deployment's password itself, so it
/// never travels from the caller, nor can a caller send another).
fn migrate(w: &[&str], keys: usize, scope: &Scope<'_>, command: &str) -> Result<Need, Refusal> {
    let form = format!(
        "only `MIGRATE HOST PORT \"\" 0 TIMEOUT [REPLACE] KEYS key...` with a timeout of 1 to {MAX_MIGRATE_TIMEOUT_MS} ms and 1 to {MAX_KEYS_PER_CALL} keys (no COPY, no AUTH: the agent authenticates)"
    );
    let n = w.len();
    let options_ok = match n {
        7 => true,
        8 => w[6].eq_ignore_ascii_case("REPLACE"),
        _ => false,
    };
    let ok = options_ok
        && w[n - 1].eq_ignore_ascii_case("KEYS")
        && w[3].is_empty()
        && w[4] == "0"
        && w[5]
            .parse::<u64>()
            .is_ok_and(|t| (1..=MAX_MIGRATE_TIMEOUT_MS).contains(&t))
        && (1..=MAX_KEYS_PER_CALL).contains(&keys);
    if !ok {
        return Err(shape(command, &form));
    }
    match member_peer(w[1], w[2]) {
        Some(p) if scope.members.redis.contains(&p) => Ok(Need::Flag),
        _ => Err(Refusal::Outside {
            command: command.to_owned(),
            what: format!("{}:{}", w[1], w[2]),
            deployment: scope.deployment.to_owned(),
        }),
    }
}

fn sentinel(w: &[&str], sub: &str, scope: &Scope<'_>, command: &str) -> Result<Need, Refusal> {
    let n = w.len();
    let shape = |why: &str| Refusal::Shape {
        command: command.to_owned(),
        why: why.to_owned(),
    };
    let outside = |what: String| Refusal::Outside {
        command: command.to_owned(),
        what,
        deployment: scope.deployment.to_owned(),
    };
    let ours = |name: &str| scope.master_name == Some(name);
    if sub == "CONFIG" {
        // Password rotation: the password this sentinel gives the others.
        // Only that one parameter, only SET (GET would read it back).
        let ok = n == 5
            && w[2].eq_ignore_ascii_case("SET")
            && w[3].eq_ignore_ascii_case("sentinel-pass")
            && valid_password(w[4]);
        return if ok {
            Ok(Need::Flag)
        } else {
            Err(shape("only `SENTINEL CONFIG SET sentinel-pass PASSWORD`"))
        };
    }
    if matches!(sub, "MASTERS" | "MYID") {
        return if n == 2 {
            Ok(Need::Nothing)
        } else {
            Err(shape("takes no arguments"))
        };
    }
    let Some(name) = w.get(2).copied() else {
        return Err(shape("takes the master name"));
    };
    if !ours(name) {
        return Err(outside(format!("master {name:?}")));
    }
    match sub {
        "MASTER" | "REPLICAS" | "SLAVES" | "SENTINELS" | "GET-MASTER-ADDR-BY-NAME" | "CKQUORUM"
            if n == 3 =>
        {
            Ok(Need::Nothing)
        }
        "FAILOVER" | "REMOVE" | "RESET" if n == 3 => Ok(Need::Flag),
        // Password rotation: what the sentinel authenticates to the
        // master and its replicas with (a member: the master it monitors).
        "SET" if n == 5 && w[3].eq_ignore_ascii_case("auth-pass") => {
            if valid_password(w[4]) {
                Ok(Need::Flag)
            } else {
                Err(shape("auth-pass must be 16 to 512 printable characters"))
            }
        }
        "SET" if n >= 5 && !n.is_multiple_of(2) => {
            for pair in w[3..].chunks(2) {
                let option = pair[0].to_ascii_lowercase();
                let Some((_, min)) = SENTINEL_SETTABLE.iter().find(|(o, _)| *o == option) else {
                    return Err(Refusal::NotAllowed {
                        command: format!("SENTINEL SET {option}"),
                        kind: scope.kind(),
                    });
                };
                if !pair[1]
                    .parse::<u64>()
                    .is_ok_and(|v| v >= *min && v <= u64::from(u32::MAX))
                {
                    return Err(shape(&format!(
                        "{option} must be a number of at least {min}"
                    )));
                }
            }
            Ok(Need::Flag)
        }
        "MONITOR" if n == 6 => {
            if !w[5].parse::<u32>().is_ok_and(|q| q >= 1) {
                return Err(shape("the quorum must be at least 1"));
            }
            match member_peer(w[3], w[4]) {
                Some(p) if scope.members.redis.contains(&p) => Ok(Need::Flag),
                _ => Err(outside(format!("{}:{}", w[3], w[4]))),
            }
        }
        _ => Err(Refusal::NotAllowed {
            command: command.to_owned(),
            kind: scope.kind(),
        }),
    }
}

/// An address as Redis would dial it: an IP literal and a port. Host names
/// are refused (they could resolve anywhere).
fn member_peer(ip: &str, port: &str) -> Option<Peer> {
    Some(Peer {
        address: ip.parse().ok()?,
        port: port.parse().ok().filter(|p| *p != 0)?,
    })
}

/// What the spec accepts as a password: 16-512 printable, no spaces.
fn valid_password(p: &str) -> bool {
    (16..=512).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_B: &str = "bbbb000000000000000000000000000000000000";
    const ID_ROGUE: &str = "eeee000000000000000000000000000000000000";
    const ID_ME: &str = "aaaa000000000000000000000000000000000000";
    const ID_GHOST: &str = "dddd000000000000000000000000000000000000";

    fn peer(s: &str) -> Peer {
        let (a, p) = s.rsplit_once(':').unwrap();
        Peer {
            address: a.parse().unwrap(),
            port: p.parse().unwrap(),
        }
    }

    fn members() -> Members {
        Members {
            redis: ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]
                .map(peer)
                .to_vec(),
            sentinels: ["10.0.0.1:26379", "10.0.0.2:26379"].map(peer).to_vec(),
        }
    }

    fn nodes() -> Vec<KnownNode> {
        parse_cluster_nodes(&format!(
            "{ID_ME} 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
             {ID_B} 10.0.0.2:7000@17000 master - 0 0 2 connected 5461-10922\n\
             {ID_ROGUE} 10.9.9.9:7000@17000 master - 0 0 0 connected\n\
             {ID_GHOST} :0@0 master,fail,noaddr - 0 0 0 disconnected\n"
        ))
    }

    fn check_in(mode: Mode, words: &str, flag: bool) -> Result<(), Refusal> {
        let members = members();
        let nodes = nodes();
        let users = vec![AclUser {
            name: "app".into(),
            password: APP_PW.into(),
            rules: vec!["~app:*".into(), "+@read".into()],
        }];
        let scope = Scope {
            mode,
            deployment: "lab",
            master_name: Some("lab"),
            members: &members,
            maxmemory_bytes: 256 << 20,
            maxmemory_policy: "allkeys-lru",
            cluster_node_timeout_ms: 5000,
            min_replicas_to_write: 1,
            min_replicas_max_lag_s: 10,
            appendonly: true,
            rdb_snapshots: false,
            users: &users,
            nodes: &nodes,
        };
        let args: Vec<Vec<u8>> = words.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        check(&args, &scope, flag)
    }

    use Mode::{Cluster, Sentinel, Standalone};
    const PW: &str = "0123456789abcdef0123456789abcdef";
    const APP_PW: &str = "app-password-0123456789";

    /// Settings apply sets live: the stored spec's values, users exactly as
    /// rendered; anything else refused.
    #[test]
    fn live_settings_pass_only_with_the_specs_values() {
        let setuser = format!("ACL SETUSER app reset on >{APP_PW} ~app:* +@read");
        let allowed: &[(Mode, &str, bool)] = &[
            (Cluster, "CONFIG SET min-replicas-to-write 1", false),
            (Standalone, "CONFIG SET min-replicas-max-lag 10", false),
            (Cluster, "CONFIG SET appendonly yes", false),
            (Standalone, "CONFIG SET save ", false),
            (Cluster, "CONFIG SET maxmemory 268435456", false),
            (Cluster, &setuser, true),
            (Standalone, &setuser, true),
            (Cluster, "ACL DELUSER old", true),
            (Standalone, "ACL DELUSER old", true),
        ];
        for (mode, c, flag) in allowed {
            assert_eq!(check_in(*mode, c, *flag), Ok(()), "{mode:?} {c}");
            if *flag {
                assert!(
                    matches!(check_in(*mode, c, false), Err(Refusal::NeedsFlag { .. })),
                    "{mode:?} {c} needs the flag"
                );
            }
        }
        let refused: &[(Mode, &str)] = &[
            (Cluster, "CONFIG SET min-replicas-to-write 0"),
            (Cluster, "CONFIG SET min-replicas-max-lag 1"),
            (Cluster, "CONFIG SET appendonly no"),
            (Cluster, "CONFIG SET save 1 1"),
            (Cluster, "CONFIG SET appendfilename x"),
            (Sentinel, "CONFIG SET appendonly yes"),
            // Another password, rules added, dropped, reordered, no reset.
            (
                Cluster,
                "ACL SETUSER app reset on >other-password-01234 ~app:* +@read",
            ),
            (
                Cluster,
                &format!("ACL SETUSER app reset on >{APP_PW} ~app:* +@read +@all"),
            ),
            (
                Cluster,
                &format!("ACL SETUSER app reset on >{APP_PW} ~app:*"),
            ),
            (
                Cluster,
                &format!("ACL SETUSER app reset on >{APP_PW} +@read ~app:*"),
            ),
            (
                Cluster,
                &format!("ACL SETUSER app on >{APP_PW} ~app:* +@read"),
            ),
            (
                Cluster,
                &format!("ACL SETUSER app reset off >{APP_PW} ~app:* +@read"),
            ),
            (Cluster, "ACL SETUSER app reset on nopass ~app:* +@read"),
            // A user the spec does not have; the default user beyond rotation.
            (
                Cluster,
                &format!("ACL SETUSER ops reset on >{APP_PW} ~app:* +@read"),
            ),
            (
                Cluster,
                &format!("ACL SETUSER default reset on >{APP_PW} +@all"),
            ),
            (Sentinel, &setuser),
            (Cluster, "ACL DELUSER default"),
            (Cluster, "ACL DELUSER app"),
            (Cluster, "ACL DELUSER old other"),
            (Cluster, "ACL DELUSER"),
            (Sentinel, "ACL DELUSER old"),
        ];
        for (mode, c) in refused {
            for flag in [false, true] {
                assert!(
                    check_in(*mode, c, flag).is_err(),
                    "{mode:?} {c} flag={flag}"
                );
            }
        }
        let e = check_in(
            Cluster,
            "ACL SETUSER app reset on >leaked-secret-0123 ~app:*",
            true,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("leaked"), "{e}");
    }

    /// What the controller sends (controller/src/*.rs), per instance kind.
    #[test]
    fn the_controllers_commands_pass() {
        let table: &[(Mode, &str, bool)] = &[
            (Cluster, "PING", false),
            (Cluster, "INFO replication", false),
            (Cluster, "CLUSTER NODES", false),
            (Cluster, "CLUSTER INFO", false),
            (Cluster, "CONFIG GET cluster-node-timeout", false),
            (Cluster, "CONFIG SET cluster-node-timeout 500", false),
            (Cluster, "CONFIG SET cluster-node-timeout 5000", false),
            (Cluster, "CLUSTER SET-CONFIG-EPOCH 3", false),
            (Cluster, "CLUSTER ADDSLOTSRANGE 0 5460", false),
            (Cluster, "CLUSTER MEET 10.0.0.2 7000", false),
            (Cluster, "CLUSTER MEET 10.0.0.2 7000 17000", false),
            (Cluster, &format!("CLUSTER REPLICATE {ID_B}"), false),
            (Cluster, &format!("CLUSTER FORGET {ID_B}"), false),
            (Cluster, &format!("CLUSTER FORGET {ID_GHOST}"), false),
            (Cluster, "CLUSTER FAILOVER", false),
            (Cluster, "CLUSTER FAILOVER FORCE", false),
            (Cluster, "CLUSTER FAILOVER TAKEOVER", false),
            (Cluster, &format!("ACL SETUSER default >{PW}"), true),
            (Cluster, &format!("ACL SETUSER default <{PW}"), true),
            (Cluster, &format!("CONFIG SET masterauth {PW}"), true),
            (Cluster, "CONFIG SET maxmemory 268435456", false),
            (Cluster, "CONFIG SET maxmemory-policy allkeys-lru", false),
            (Cluster, &format!("CLUSTER SETSLOT 7 NODE {ID_B}"), true),
            (Cluster, "CLUSTER COUNTKEYSINSLOT 0", true),
            (Cluster, "cluster countkeysinslot 16383", true),
            (Standalone, "INFO replication", false),
            (Standalone, "CLIENT PAUSE 30000 WRITE", false),
            (Standalone, "CLIENT UNPAUSE", false),
            (Standalone, "REPLICAOF NO ONE", true),
            (Standalone, "REPLICAOF 10.0.0.2 7000", true),
            (Standalone, "slaveof 10.0.0.3 7000", true),
            (Standalone, &format!("CONFIG SET masterauth {PW}"), true),
            (Sentinel, "PING", false),
            (Sentinel, "SENTINEL MASTER lab", false),
            (Sentinel, "sentinel get-master-addr-by-name lab", false),
            (Sentinel, "SENTINEL REPLICAS lab", false),
            (Sentinel, "SENTINEL FAILOVER lab", true),
            (
                Sentinel,
                "SENTINEL SET lab quorum 2 down-after-milliseconds 5000 failover-timeout 60000",
                true,
            ),
            (Sentinel, "SENTINEL MONITOR lab 10.0.0.1 7000 2", true),
            (Sentinel, &format!("ACL SETUSER default >{PW}"), true),
            (Sentinel, &format!("ACL SETUSER default <{PW}"), true),
            (Sentinel, &format!("SENTINEL SET lab auth-pass {PW}"), true),
            (
                Sentinel,
                &format!("SENTINEL CONFIG SET sentinel-pass {PW}"),
                true,
            ),
        ];
        for (mode, c, flag) in table {
            assert_eq!(check_in(*mode, c, *flag), Ok(()), "{mode:?} {c}");
            if *flag {
                assert!(
                    matches!(check_in(*mode, c, false), Err(Refusal::NeedsFlag { .. })),
                    "{mode:?} {c} needs the flag"
                );
            }
        }
    }

    /// Refused on every kind of instance, with the flag too.
    #[test]
    fn what_wipes_runs_code_writes_files_or_changes_the_connection_is_never_run() {
        for c in [
            "FLUSHALL",
            "FLUSHALL ASYNC",
            "FLUSHDB",
            "SWAPDB 0 1",
            "RESTORE k 0 x",
            "MIGRATE 10.0.0.2 7000 k 0 1000",
            "EVAL return 1 0",
            "EVALSHA abc 0",
            "EVAL_RO return 1 0",
            "FCALL f 0",
            "FUNCTION LOAD x",
            "SCRIPT LOAD x",
            "SCRIPT KILL",
            "CLIENT KILL ID 1",
            "CLIENT PAUSE 100000",
            "CLIENT PAUSE 1000 ALL",
            "CLIENT REPLY OFF",
            "CLIENT SETNAME x",
            "PUBLISH __sentinel__:hello 10.9.9.9,26379,x,0,lab,10.9.9.9,7000,9",
            "SHUTDOWN NOSAVE",
            "DEBUG SLEEP 10",
            "MODULE LOAD /tmp/x.so",
            "MONITOR",
            "SYNC",
            "PSYNC ? -1",
            "MULTI",
            "EXEC",
            "RESET",
            "SUBSCRIBE x",
            "PSUBSCRIBE *",
            "SSUBSCRIBE x",
            "SELECT 1",
            "AUTH default x",
            "HELLO 3 AUTH default x",
            "HELLO 3",
            "BLPOP k 0",
            "BRPOP k 0",
            "BLMOVE a b LEFT RIGHT 0",
            "BZPOPMIN k 0",
            "XREAD BLOCK 0 STREAMS s $",
            "WAIT 1 0",
            "SET k v",
            "INCR k",
            "GET k",
            "KEYS *",
            "CONFIG SET dir /etc",
            "CONFIG SET dbfilename x",
            "CONFIG SET maxmemory 1",
            "CONFIG SET maxmemory 268435456 dir /etc",
            "CONFIG SET maxmemory-policy noeviction",
            "CONFIG SET cluster-node-timeout 1",
            "CONFIG SET cluster-node-timeout 999999",
            "CONFIG SET requirepass 0123456789abcdef0123",
            "CONFIG REWRITE",
            "CONFIG RESETSTAT",
            "CLUSTER RESET HARD",
            "CLUSTER FLUSHSLOTS",
            "CLUSTER DELSLOTS 1",
            "CLUSTER ADDSLOTSRANGE 0 16384",
            "CLUSTER COUNTKEYSINSLOT -1",
            "ACL SETUSER default nopass",
            "ACL SETUSER app >0123456789abcdef0123",
            "ACL SETUSER default >short",
            "ACL LIST",
            "ACL GETUSER default",
            "ACL DELUSER app",
            "REPLICAOF",
            "INFO everything x",
            "PING x",
            "CONFIG GET",
            "CONFIG SET maxmemory",
            "CONFIG SET masterauth short",
            "CLIENT PAUSE 0 WRITE",
            "CLIENT PAUSE 300001 WRITE",
            "CLIENT UNPAUSE ALL",
        ] {
            for mode in [Cluster, Standalone, Sentinel] {
                for flag in [false, true] {
                    assert!(check_in(mode, c, flag).is_err(), "{mode:?} {c} flag={flag}");
                }
            }
        }
    }

    #[test]
    fn each_kind_runs_only_its_own_commands() {
        for (mode, c) in [
            (Standalone, "CLUSTER NODES"),
            (Sentinel, "CLUSTER MEET 10.0.0.2 7000"),
            (Cluster, "REPLICAOF NO ONE"),
            (Cluster, "CLIENT PAUSE 1000 WRITE"),
            (Sentinel, "CLIENT PAUSE 1000 WRITE"),
            (Cluster, "SENTINEL MASTER lab"),
            (Sentinel, "CONFIG GET maxmemory"),
            (Standalone, "CONFIG SET cluster-node-timeout 500"),
        ] {
            assert!(
                matches!(check_in(mode, c, true), Err(Refusal::NotAllowed { .. })),
                "{mode:?} {c}"
            );
        }
    }

    /// Re-pointing stays inside the deployment, with the flag too.
    #[test]
    fn nothing_points_outside_the_deployment() {
        for (mode, c) in [
            (Cluster, "CLUSTER MEET 10.9.9.9 7000".to_owned()),
            (Cluster, "CLUSTER MEET 10.0.0.2 7001".to_owned()),
            (Cluster, "CLUSTER MEET localhost 7000".to_owned()),
            (Cluster, "CLUSTER MEET ::ffff:10.0.0.2 7000".to_owned()),
            (Cluster, format!("CLUSTER REPLICATE {ID_ROGUE}")),
            (
                Cluster,
                "CLUSTER REPLICATE ffff000000000000000000000000000000000000".to_owned(),
            ),
            (Cluster, format!("CLUSTER FORGET {ID_ROGUE}")),
            (Cluster, format!("CLUSTER SETSLOT 7 NODE {ID_ROGUE}")),
            (Cluster, format!("CLUSTER SETSLOT 7 MIGRATING {ID_GHOST}")),
            (Standalone, "REPLICAOF 10.9.9.9 7000".to_owned()),
            (Standalone, "SLAVEOF 10.0.0.1 26379".to_owned()),
            (Standalone, "REPLICAOF evil.example 7000".to_owned()),
            (Sentinel, "SENTINEL MONITOR lab 10.9.9.9 7000 2".to_owned()),
            (
                Sentinel,
                "SENTINEL MONITOR other 10.0.0.1 7000 2".to_owned(),
            ),
            (Sentinel, "SENTINEL MASTER other".to_owned()),
            (Sentinel, "SENTINEL REMOVE other".to_owned()),
            (Sentinel, "SENTINEL RESET *".to_owned()),
        ] {
            assert!(
                matches!(check_in(mode, &c, true), Err(Refusal::Outside { .. })),
                "{mode:?} {c}: {:?}",
                check_in(mode, &c, true)
            );
        }
        // The local node itself is no master to follow.
        assert!(check_in(Cluster, &format!("CLUSTER REPLICATE {ID_ME}"), true).is_err());
    }

    #[test]
    fn sentinels_change_credentials_only_for_rotation_and_never_scripts() {
        for c in [
            "SENTINEL SET lab auth-pass x",
            &format!("SENTINEL SET other auth-pass {PW}"),
            &format!("SENTINEL SET lab auth-pass {PW} quorum 2"),
            &format!("SENTINEL CONFIG SET sentinel-user {PW}"),
            &format!("SENTINEL CONFIG SET sentinel-pass {PW} extra"),
            "SENTINEL CONFIG SET sentinel-pass short",
            "SENTINEL CONFIG GET sentinel-pass",
            "SENTINEL SET lab auth-user x",
            "SENTINEL SET lab notification-script /tmp/x",
            "SENTINEL SET lab client-reconfig-script /tmp/x",
            "SENTINEL SET lab quorum 0",
            "SENTINEL CONFIG SET resolve-hostnames yes",
            "SENTINEL DEBUG",
            "SENTINEL SIMULATE-FAILURE crash-after-election",
            "SENTINEL IS-MASTER-DOWN-BY-ADDR 10.0.0.1 7000 0 *",
        ] {
            assert!(check_in(Sentinel, c, true).is_err(), "{c}");
        }
    }

    #[test]
    fn the_password_is_never_read() {
        for c in [
            "CONFIG GET requirepass",
            "CONFIG GET masterauth",
            "CONFIG GET masteruser",
            "CONFIG GET *",
            "config get maxmemory re*",
            "SENTINEL CONFIG GET *",
            "ACL GETUSER default",
        ] {
            for mode in [Cluster, Standalone, Sentinel] {
                assert!(check_in(mode, c, true).is_err(), "{mode:?} {c}");
            }
        }
    }

    /// Slot moves: keys counted, listed, migrated (KEYS form only, to a
    /// member, bounded, never with a caller's AUTH or COPY) and digested,
    /// all with the flag, on a cluster instance only.
    #[test]
    fn slot_moves_run_only_in_their_own_shapes() {
        for c in [
            "CLUSTER COUNTKEYSINSLOT 0",
            "CLUSTER COUNTKEYSINSLOT 16383",
            "CLUSTER DELSLOTSRANGE 7 7",
            "CLUSTER SETSLOT 7 NODE aaaa000000000000000000000000000000000000",
            "CLUSTER GETKEYSINSLOT 5 1000",
            "CLUSTER getkeysinslot 5 1",
            "MIGRATE 10.0.0.2 7000  0 10000 KEYS a b",
            "MIGRATE 10.0.0.3 7000  0 60000 REPLACE KEYS a",
            "migrate 10.0.0.2 7000  0 1 replace keys KEYS",
            "PADDOCK.DIGEST a b c",
            "paddock.digest a",
        ] {
            assert_eq!(check_in(Cluster, c, true), Ok(()), "{c}");
            assert!(
                matches!(check_in(Cluster, c, false), Err(Refusal::NeedsFlag { .. })),
                "{c} needs the flag"
            );
            for mode in [Standalone, Sentinel] {
                assert!(check_in(mode, c, true).is_err(), "{mode:?} {c}");
            }
        }
        for c in [
            "CLUSTER DELSLOTSRANGE 7 8",
            "CLUSTER DELSLOTSRANGE 0 16383",
            "CLUSTER DELSLOTSRANGE 7",
            "CLUSTER SETSLOT 7 IMPORTING aaaa000000000000000000000000000000000000",
            "CLUSTER SETSLOT 7 MIGRATING aaaa000000000000000000000000000000000000",
            "CLUSTER COUNTKEYSINSLOT 16384",
            "CLUSTER COUNTKEYSINSLOT x",
            "CLUSTER COUNTKEYSINSLOT",
            "CLUSTER COUNTKEYSINSLOT 1 2",
            "CLUSTER GETKEYSINSLOT 5 0",
            "CLUSTER GETKEYSINSLOT 5 1001",
            "CLUSTER GETKEYSINSLOT 5",
            "CLUSTER GETKEYSINSLOT -1 10",
            "MIGRATE 10.0.0.2 7000 k 0 10000",
            "MIGRATE 10.0.0.2 7000 k 0 10000 KEYS a",
            "MIGRATE 10.0.0.2 7000  1 10000 KEYS a",
            "MIGRATE 10.0.0.2 7000  0 0 KEYS a",
            "MIGRATE 10.0.0.2 7000  0 60001 KEYS a",
            "MIGRATE 10.0.0.2 7000  0 1000 COPY KEYS a",
            "MIGRATE 10.0.0.2 7000  0 1000 COPY REPLACE KEYS a",
            "MIGRATE 10.0.0.2 7000  0 1000 REPLACE REPLACE KEYS a",
            "MIGRATE 10.0.0.2 7000  0 1000 AUTH pw KEYS a",
            "MIGRATE 10.0.0.2 7000  0 1000 AUTH2 default pw KEYS a",
            "MIGRATE 10.0.0.2 7000  0 1000 KEYS",
            "MIGRATE 10.0.0.2 7000  0 1000",
            "PADDOCK.DIGEST",
        ] {
            assert!(
                matches!(check_in(Cluster, c, true), Err(Refusal::Shape { .. })),
                "{c}: {:?}",
                check_in(Cluster, c, true)
            );
        }
        for c in [
            "MIGRATE 10.9.9.9 7000  0 1000 KEYS a",
            "MIGRATE 10.0.0.2 7001  0 1000 KEYS a",
            "MIGRATE localhost 7000  0 1000 KEYS a",
            "MIGRATE 10.0.0.2 0  0 1000 KEYS a",
        ] {
            assert!(
                matches!(check_in(Cluster, c, true), Err(Refusal::Outside { .. })),
                "{c}"
            );
        }
        let many = vec!["k"; MAX_KEYS_PER_CALL + 1].join(" ");
        for c in [
            format!("MIGRATE 10.0.0.2 7000  0 1000 KEYS {many}"),
            format!("PADDOCK.DIGEST {many}"),
        ] {
            assert!(check_in(Cluster, &c, true).is_err());
        }
    }

    /// Valkey 9's atomic slot migration: MIGRATESLOTS of valid ranges to
    /// member nodes the local node knows, with the flag; GETSLOTMIGRATIONS
    /// reads. Cluster instances only.
    #[test]
    fn atomic_slot_migration_runs_only_in_its_own_shapes() {
        for c in [
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 99 NODE {ID_B}"),
            format!("CLUSTER migrateslots slotsrange 0 99 200 299 16383 16383 node {ID_B}"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE {ID_B} SLOTSRANGE 20 29 NODE {ID_B}"),
        ] {
            assert_eq!(check_in(Cluster, &c, true), Ok(()), "{c}");
            assert!(
                matches!(check_in(Cluster, &c, false), Err(Refusal::NeedsFlag { .. })),
                "{c} needs the flag"
            );
            for mode in [Standalone, Sentinel] {
                assert!(check_in(mode, &c, true).is_err(), "{mode:?} {c}");
            }
        }
        assert_eq!(
            check_in(Cluster, "CLUSTER GETSLOTMIGRATIONS", false),
            Ok(())
        );
        assert!(check_in(Standalone, "CLUSTER GETSLOTMIGRATIONS", true).is_err());
        assert!(check_in(Cluster, "CLUSTER GETSLOTMIGRATIONS x", true).is_err());
        // The agent fetches CLUSTER NODES first for the ids to be known.
        let words =
            |c: &str| -> Vec<Vec<u8>> { c.split(' ').map(|w| w.as_bytes().to_vec()).collect() };
        assert!(names_a_node(&words(
            "cluster migrateslots SLOTSRANGE 0 9 NODE x"
        )));
        assert!(!names_a_node(&words("CLUSTER GETSLOTMIGRATIONS")));
        for c in [
            "CLUSTER MIGRATESLOTS".to_owned(),
            format!("CLUSTER MIGRATESLOTS NODE {ID_B}"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE NODE {ID_B}"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 NODE {ID_B}"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 9 0 NODE {ID_B}"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 16384 NODE {ID_B}"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 x NODE {ID_B}"),
            "CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE".to_owned(),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE {ID_B} x"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE {ID_ME}"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE {ID_B} SLOTSRANGE 5 NODE {ID_B}"),
        ] {
            assert!(
                matches!(check_in(Cluster, &c, true), Err(Refusal::Shape { .. })),
                "{c}: {:?}",
                check_in(Cluster, &c, true)
            );
        }
        for c in [
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE {ID_ROGUE}"),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE {ID_GHOST}"),
            "CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE ffff000000000000000000000000000000000000"
                .to_owned(),
            format!(
                "CLUSTER MIGRATESLOTS SLOTSRANGE 0 9 NODE {ID_B} SLOTSRANGE 20 29 NODE {ID_ROGUE}"
            ),
        ] {
            assert!(
                matches!(check_in(Cluster, &c, true), Err(Refusal::Outside { .. })),
                "{c}: {:?}",
                check_in(Cluster, &c, true)
            );
        }
    }

    /// Key names are bytes, whatever they hold; the other arguments stay
    /// UTF-8.
    #[test]
    fn key_names_are_bytes() {
        let members = members();
        let nodes = nodes();
        let scope = Scope {
            mode: Cluster,
            deployment: "lab",
            master_name: None,
            members: &members,
            maxmemory_bytes: 0,
            maxmemory_policy: "noeviction",
            cluster_node_timeout_ms: 5000,
            min_replicas_to_write: 0,
            min_replicas_max_lag_s: 10,
            appendonly: false,
            rdb_snapshots: false,
            users: &[],
            nodes: &nodes,
        };
        let words =
            |s: &str| -> Vec<Vec<u8>> { s.split(' ').map(|w| w.as_bytes().to_vec()).collect() };
        let binary = vec![0xff, 0x00, b' ', 0xfe];
        let mut migrate = words("MIGRATE 10.0.0.2 7000  0 1000 KEYS");
        migrate.push(binary.clone());
        assert_eq!(check(&migrate, &scope, true), Ok(()));
        let mut digest = words("PADDOCK.DIGEST");
        digest.push(binary.clone());
        assert_eq!(check(&digest, &scope, true), Ok(()));
        let mut bad_host = words("MIGRATE 10.0.0.2 7000  0 1000 KEYS a");
        bad_host[1] = binary.clone();
        assert!(matches!(
            check(&bad_host, &scope, true),
            Err(Refusal::Shape { .. })
        ));
        // Elsewhere a non-UTF-8 argument is refused as before.
        let mut get = words("CLUSTER GETKEYSINSLOT 5");
        get.push(binary);
        assert!(matches!(
            check(&get, &scope, true),
            Err(Refusal::Shape { .. })
        ));
        assert_eq!(key_start(&words("MIGRATE a b  0 1 KEYS x y")), Some(7));
        assert_eq!(
            key_start(&words("MIGRATE a b  0 1 REPLACE KEYS x")),
            Some(8)
        );
        assert_eq!(key_start(&words("MIGRATE a b KEYS 0 1")), None);
        assert_eq!(key_start(&words("PADDOCK.DIGEST x")), Some(1));
        assert_eq!(key_start(&words("GET x")), None);
    }

    #[test]
    fn refusals_never_echo_arguments() {
        let e = check_in(Cluster, "ACL SETUSER default >tooshort-secret", true).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = check_in(
            Cluster,
            "CONFIG SET requirepass hunter2hunter2hunter2",
            true,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn cluster_nodes_parse_with_flags_and_missing_addresses() {
        let n = nodes();
        assert_eq!(n.len(), 4);
        assert!(n[0].myself && !n[0].gone);
        assert_eq!(n[1].addr, Some(peer("10.0.0.2:7000")));
        assert_eq!(n[3].addr, None);
        assert!(n[3].gone);
        let with_host = parse_cluster_nodes("x 10.0.0.2:7000@17000,host1 master - 0 0 1 connected");
        assert_eq!(with_host[0].addr, Some(peer("10.0.0.2:7000")));
    }
}
