//! The one place where model values and proto messages meet: `From<X> for
//! pb::X` encodes, `TryFrom<pb::X> for X` decodes and validates, naming the
//! field of anything refused. Proto's encodings stay as they were (field
//! numbers and meanings unchanged): durations travel as u32 milliseconds
//! (min-replicas-max-lag as u32 seconds), addresses as text, absent
//! optional strings as "" and absent pids as 0.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use paddock_proto::v1 as pb;

use crate::{
    AclUser, Error, Facts, Group, HeldLease, InstanceSpec, InstanceState, InstanceStatus,
    KeyChange, LeaseId, LeaseRequest, LockReply, MAX_PIPELINE, MaxmemoryPolicy, Members, Mode,
    Peer, PutInstance, PutOutcome, RedisCommand, Reply, SentinelSpec, StateEvent, Supervision,
};

/// Whole milliseconds, saturating at u32::MAX (about 49 days).
fn to_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn address(field: &str, text: &str) -> Result<IpAddr, Error> {
    text.parse()
        .map_err(|e| Error::invalid(field, format!("{text:?}: {e}")))
}

fn port(field: &str, v: u32) -> Result<u16, Error> {
    u16::try_from(v).map_err(|_| Error::invalid(field, format!("port {v} is not 0..=65535")))
}

// ---- Instance spec -------------------------------------------------------

impl From<Mode> for pb::RedisMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Standalone => pb::RedisMode::Standalone,
            Mode::Cluster => pb::RedisMode::Cluster,
            Mode::Sentinel => pb::RedisMode::Sentinel,
        }
    }
}

fn mode_from_pb(v: i32) -> Result<Mode, Error> {
    match pb::RedisMode::try_from(v) {
        Ok(pb::RedisMode::Standalone) => Ok(Mode::Standalone),
        Ok(pb::RedisMode::Cluster) => Ok(Mode::Cluster),
        Ok(pb::RedisMode::Sentinel) => Ok(Mode::Sentinel),
        _ => Err(Error::invalid(
            "mode",
            "must be standalone, cluster or sentinel",
        )),
    }
}

impl From<Peer> for pb::Peer {
    fn from(p: Peer) -> Self {
        pb::Peer {
            address: p.address.to_string(),
            port: u32::from(p.port),
        }
    }
}

/// A peer at `field`: an IP address and a port other than 0.
fn peer(field: &str, p: pb::Peer) -> Result<Peer, Error> {
    Ok(Peer {
        address: address(field, &p.address)?,
        port: u16::try_from(p.port)
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| Error::invalid(field, format!("port {}", p.port)))?,
    })
}

fn peers(field: &str, ps: Vec<pb::Peer>) -> Result<Vec<Peer>, Error> {
    ps.into_iter().map(|p| peer(field, p)).collect()
}

fn peers_to_pb(ps: Vec<Peer>) -> Vec<pb::Peer> {
    ps.into_iter().map(pb::Peer::from).collect()
}

impl From<SentinelSpec> for pb::SentinelSpec {
    fn from(s: SentinelSpec) -> Self {
        pb::SentinelSpec {
            master_name: s.master_name,
            master: Some(s.master.into()),
            quorum: s.quorum,
            down_after_ms: to_ms(s.down_after),
            failover_timeout_ms: to_ms(s.failover_timeout),
        }
    }
}

impl TryFrom<pb::SentinelSpec> for SentinelSpec {
    type Error = Error;

    fn try_from(s: pb::SentinelSpec) -> Result<Self, Error> {
        let master = s
            .master
            .ok_or_else(|| Error::invalid("sentinel.master", "missing"))?;
        Ok(SentinelSpec {
            master: peer("sentinel.master", master)?,
            master_name: s.master_name,
            quorum: s.quorum,
            down_after: ms(s.down_after_ms),
            failover_timeout: ms(s.failover_timeout_ms),
        })
    }
}

impl From<Group> for pb::Group {
    fn from(g: Group) -> Self {
        pb::Group {
            peers: peers_to_pb(g.peers),
            sentinels: peers_to_pb(g.sentinels),
            master_name: g.master_name,
        }
    }
}

impl TryFrom<pb::Group> for Group {
    type Error = Error;

    fn try_from(g: pb::Group) -> Result<Self, Error> {
        Ok(Group {
            peers: peers("group.peers", g.peers)?,
            sentinels: peers("group.sentinels", g.sentinels)?,
            master_name: g.master_name,
        })
    }
}

impl From<Members> for pb::Members {
    fn from(m: Members) -> Self {
        pb::Members {
            redis: peers_to_pb(m.redis),
            sentinels: peers_to_pb(m.sentinels),
        }
    }
}

impl TryFrom<pb::Members> for Members {
    type Error = Error;

    fn try_from(m: pb::Members) -> Result<Self, Error> {
        Ok(Members {
            redis: peers("members.redis", m.redis)?,
            sentinels: peers("members.sentinels", m.sentinels)?,
        })
    }
}

impl From<AclUser> for pb::AclUser {
    fn from(u: AclUser) -> Self {
        pb::AclUser {
            name: u.name,
            password: u.password,
            rules: u.rules,
        }
    }
}

impl From<pb::AclUser> for AclUser {
    fn from(u: pb::AclUser) -> Self {
        AclUser {
            name: u.name,
            password: u.password,
            rules: u.rules,
        }
    }
}

impl From<Supervision> for pb::Supervision {
    fn from(s: Supervision) -> Self {
        pb::Supervision {
            start_timeout_ms: to_ms(s.start_timeout),
            start_retries: s.start_retries,
            backoff_max_ms: to_ms(s.backoff_max),
            stop_timeout_ms: to_ms(s.stop_timeout),
        }
    }
}

impl From<pb::Supervision> for Supervision {
    fn from(s: pb::Supervision) -> Self {
        Supervision {
            start_timeout: ms(s.start_timeout_ms),
            start_retries: s.start_retries,
            backoff_max: ms(s.backoff_max_ms),
            stop_timeout: ms(s.stop_timeout_ms),
        }
    }
}

impl From<InstanceSpec> for pb::InstanceSpec {
    fn from(s: InstanceSpec) -> Self {
        pb::InstanceSpec {
            name: s.name,
            deployment: s.deployment,
            address: s.address.to_string(),
            port: u32::from(s.port),
            mode: pb::RedisMode::from(s.mode) as i32,
            maxmemory_bytes: s.maxmemory_bytes,
            maxmemory_policy: s.maxmemory_policy.as_str().to_owned(),
            appendonly: s.appendonly,
            rdb_snapshots: s.rdb_snapshots,
            cluster_node_timeout_ms: to_ms(s.cluster_node_timeout),
            password: s.password,
            supervision: Some(s.supervision.into()),
            users: s.users.into_iter().map(pb::AclUser::from).collect(),
            sentinel: s.sentinel.map(pb::SentinelSpec::from),
            group: s.group.map(pb::Group::from),
            min_replicas_to_write: s.min_replicas_to_write,
            min_replicas_max_lag_s: u32::try_from(s.min_replicas_max_lag.as_secs())
                .unwrap_or(u32::MAX),
            members: Some(s.members.into()),
        }
    }
}

impl TryFrom<pb::InstanceSpec> for InstanceSpec {
    type Error = Error;

    /// Decodes and validates ([`InstanceSpec::validate`]).
    fn try_from(s: pb::InstanceSpec) -> Result<Self, Error> {
        let name = s.name.clone();
        let decoded = || -> Result<InstanceSpec, Error> {
            Ok(InstanceSpec {
                address: address("address", &s.address)?,
                port: port("port", s.port)?,
                mode: mode_from_pb(s.mode)?,
                maxmemory_policy: s.maxmemory_policy.parse::<MaxmemoryPolicy>()?,
                sentinel: s.sentinel.map(SentinelSpec::try_from).transpose()?,
                group: s.group.map(Group::try_from).transpose()?,
                members: s
                    .members
                    .map(Members::try_from)
                    .transpose()?
                    .unwrap_or_default(),
                name: s.name,
                deployment: s.deployment,
                maxmemory_bytes: s.maxmemory_bytes,
                appendonly: s.appendonly,
                rdb_snapshots: s.rdb_snapshots,
                cluster_node_timeout: ms(s.cluster_node_timeout_ms),
                min_replicas_to_write: s.min_replicas_to_write,
                min_replicas_max_lag: Duration::from_secs(u64::from(s.min_replicas_max_lag_s)),
                password: s.password,
                supervision: s.supervision.map(Supervision::from).unwrap_or_default(),
                users: s.users.into_iter().map(AclUser::from).collect(),
            })
        };
        let spec = decoded().map_err(|e| e.of(&name))?;
        spec.validate()?;
        Ok(spec)
    }
}

impl From<PutInstance> for pb::PutInstanceRequest {
    fn from(p: PutInstance) -> Self {
        pb::PutInstanceRequest {
            spec: Some(p.spec.into()),
            dry_run: p.dry_run,
            live: p.live,
        }
    }
}

impl TryFrom<pb::PutInstanceRequest> for PutInstance {
    type Error = Error;

    fn try_from(p: pb::PutInstanceRequest) -> Result<Self, Error> {
        let spec = p
            .spec
            .ok_or_else(|| Error::invalid("spec", "is required"))?;
        Ok(PutInstance {
            spec: spec.try_into()?,
            dry_run: p.dry_run,
            live: p.live,
        })
    }
}

impl From<PutOutcome> for pb::PutInstanceResponse {
    fn from(o: PutOutcome) -> Self {
        pb::PutInstanceResponse {
            changed: o.changed,
            restart_needed: o.restart_needed,
            changes: o
                .changes
                .into_iter()
                .map(|c| pb::ConfigChange {
                    key: c.key,
                    old: c.old,
                    new: c.new,
                    live: c.live,
                })
                .collect(),
        }
    }
}

impl From<pb::PutInstanceResponse> for PutOutcome {
    fn from(o: pb::PutInstanceResponse) -> Self {
        PutOutcome {
            changed: o.changed,
            restart_needed: o.restart_needed,
            changes: o
                .changes
                .into_iter()
                .map(|c| KeyChange {
                    key: c.key,
                    old: c.old,
                    new: c.new,
                    live: c.live,
                })
                .collect(),
        }
    }
}

// ---- States, events, facts -----------------------------------------------

impl From<InstanceState> for pb::InstanceState {
    fn from(s: InstanceState) -> Self {
        match s {
            InstanceState::Unknown => pb::InstanceState::Unspecified,
            InstanceState::Stopped => pb::InstanceState::Stopped,
            InstanceState::Starting => pb::InstanceState::Starting,
            InstanceState::Running => pb::InstanceState::Running,
            InstanceState::Backoff => pb::InstanceState::Backoff,
            InstanceState::Stopping => pb::InstanceState::Stopping,
            InstanceState::Exited => pb::InstanceState::Exited,
            InstanceState::Fatal => pb::InstanceState::Fatal,
            InstanceState::Held => pb::InstanceState::Held,
        }
    }
}

/// A state as the wire carries it; one this side does not know (a newer
/// peer's) is Unknown, not an error.
fn state_from_pb(v: i32) -> InstanceState {
    match pb::InstanceState::try_from(v) {
        Ok(pb::InstanceState::Stopped) => InstanceState::Stopped,
        Ok(pb::InstanceState::Starting) => InstanceState::Starting,
        Ok(pb::InstanceState::Running) => InstanceState::Running,
        Ok(pb::InstanceState::Backoff) => InstanceState::Backoff,
        Ok(pb::InstanceState::Stopping) => InstanceState::Stopping,
        Ok(pb::InstanceState::Exited) => InstanceState::Exited,
        Ok(pb::InstanceState::Fatal) => InstanceState::Fatal,
        Ok(pb::InstanceState::Held) => InstanceState::Held,
        Ok(pb::InstanceState::Unspecified) | Err(_) => InstanceState::Unknown,
    }
}

fn state_to_pb(s: InstanceState) -> i32 {
    pb::InstanceState::from(s) as i32
}

impl From<InstanceStatus> for pb::InstanceStatus {
    fn from(s: InstanceStatus) -> Self {
        pb::InstanceStatus {
            name: s.name,
            port: u32::from(s.port),
            state: state_to_pb(s.state),
            pid: s.pid.unwrap_or(0),
            restarts: s.restarts,
            last_exit: s.last_exit.unwrap_or_default(),
            config_digest: s.config_digest,
            deployment: s.deployment,
        }
    }
}

impl TryFrom<pb::InstanceStatus> for InstanceStatus {
    type Error = Error;

    fn try_from(s: pb::InstanceStatus) -> Result<Self, Error> {
        Ok(InstanceStatus {
            port: port("port", s.port).map_err(|e| e.of(&s.name))?,
            name: s.name,
            deployment: s.deployment,
            state: state_from_pb(s.state),
            pid: (s.pid != 0).then_some(s.pid),
            restarts: s.restarts,
            last_exit: non_empty(s.last_exit),
            config_digest: s.config_digest,
        })
    }
}

impl From<StateEvent> for pb::StateEvent {
    fn from(e: StateEvent) -> Self {
        pb::StateEvent {
            unix_ms: e.unix_ms,
            instance: e.instance,
            from: state_to_pb(e.from),
            to: state_to_pb(e.to),
            pid: e.pid.unwrap_or(0),
            detail: e.detail.unwrap_or_default(),
        }
    }
}

impl From<pb::StateEvent> for StateEvent {
    fn from(e: pb::StateEvent) -> Self {
        StateEvent {
            unix_ms: e.unix_ms,
            instance: e.instance,
            from: state_from_pb(e.from),
            to: state_from_pb(e.to),
            pid: (e.pid != 0).then_some(e.pid),
            detail: non_empty(e.detail),
        }
    }
}

fn path_text(p: PathBuf) -> String {
    p.display().to_string()
}

impl From<Facts> for pb::Facts {
    fn from(f: Facts) -> Self {
        pb::Facts {
            hostname: f.hostname,
            os: f.os,
            kernel: f.kernel,
            cpus: f.cpus,
            memory_total_bytes: f.memory_total_bytes,
            memory_available_bytes: f.memory_available_bytes,
            data_dir_free_bytes: f.data_dir_free_bytes,
            redis_server_path: f.redis_server_path.map(path_text).unwrap_or_default(),
            redis_version: f.redis_version.unwrap_or_default(),
            agent_version: f.agent_version,
            redis_server_configured: path_text(f.redis_server_configured),
        }
    }
}

impl From<pb::Facts> for Facts {
    fn from(f: pb::Facts) -> Self {
        Facts {
            hostname: f.hostname,
            os: f.os,
            kernel: f.kernel,
            cpus: f.cpus,
            memory_total_bytes: f.memory_total_bytes,
            memory_available_bytes: f.memory_available_bytes,
            data_dir_free_bytes: f.data_dir_free_bytes,
            redis_server_path: non_empty(f.redis_server_path).map(PathBuf::from),
            redis_version: non_empty(f.redis_version),
            agent_version: f.agent_version,
            redis_server_configured: PathBuf::from(f.redis_server_configured),
        }
    }
}

// ---- Redis commands and replies ------------------------------------------

impl From<RedisCommand> for pb::RedisCommandRequest {
    fn from(r: RedisCommand) -> Self {
        pb::RedisCommandRequest {
            instance: r.instance,
            commands: r
                .commands
                .into_iter()
                .map(|args| pb::RedisArgs { args })
                .collect(),
            allow_dangerous: r.allow_dangerous,
        }
    }
}

impl TryFrom<pb::RedisCommandRequest> for RedisCommand {
    type Error = Error;

    fn try_from(r: pb::RedisCommandRequest) -> Result<Self, Error> {
        if r.commands.is_empty() || r.commands.len() > MAX_PIPELINE {
            return Err(Error::invalid(
                "commands",
                format!(
                    "a pipeline has 1 to {MAX_PIPELINE} commands, not {}; split it",
                    r.commands.len()
                ),
            ));
        }
        let commands: Vec<Vec<Vec<u8>>> = r.commands.into_iter().map(|c| c.args).collect();
        if commands.iter().any(Vec::is_empty) {
            return Err(Error::invalid(
                "commands",
                "a command needs at least its name",
            ));
        }
        Ok(RedisCommand {
            instance: r.instance,
            commands,
            allow_dangerous: r.allow_dangerous,
        })
    }
}

impl From<Reply> for pb::RedisValue {
    fn from(r: Reply) -> Self {
        use pb::redis_value::Kind;
        let kind = match r {
            Reply::Nil => Kind::Nil(true),
            Reply::Int(i) => Kind::Int(i),
            Reply::Bulk(b) => Kind::Bulk(b),
            Reply::Simple(s) => Kind::Simple(s),
            Reply::Error(e) => Kind::Error(e),
            Reply::Array(items) => Kind::Array(pb::RedisArray {
                items: items.into_iter().map(pb::RedisValue::from).collect(),
            }),
            Reply::Double(d) => Kind::Double(d),
        };
        pb::RedisValue { kind: Some(kind) }
    }
}

impl From<pb::RedisValue> for Reply {
    /// An empty value (no kind set) is Nil, as an older agent may send.
    fn from(v: pb::RedisValue) -> Self {
        use pb::redis_value::Kind;
        match v.kind {
            None | Some(Kind::Nil(_)) => Reply::Nil,
            Some(Kind::Int(i)) => Reply::Int(i),
            Some(Kind::Bulk(b)) => Reply::Bulk(b),
            Some(Kind::Simple(s)) => Reply::Simple(s),
            Some(Kind::Error(e)) => Reply::Error(e),
            Some(Kind::Array(a)) => Reply::Array(a.items.into_iter().map(Reply::from).collect()),
            Some(Kind::Double(d)) => Reply::Double(d),
        }
    }
}

// ---- Leases --------------------------------------------------------------

impl From<LeaseRequest> for pb::LockRequest {
    fn from(r: LeaseRequest) -> Self {
        pb::LockRequest {
            deployment: r.deployment,
            holder: r.id.holder,
            ttl_ms: to_ms(r.ttl),
            token: r.id.token,
            machine_id: r.id.machine_id,
            pid_namespace: r.id.pid_namespace,
            pid: r.id.pid,
            force: r.force,
        }
    }
}

impl TryFrom<pb::LockRequest> for LeaseRequest {
    type Error = Error;

    /// Decodes and checks the bounds of the strings ([`LeaseRequest::validate`]).
    fn try_from(r: pb::LockRequest) -> Result<Self, Error> {
        let request = LeaseRequest {
            deployment: r.deployment,
            id: LeaseId {
                token: r.token,
                holder: r.holder,
                machine_id: r.machine_id,
                pid_namespace: r.pid_namespace,
                pid: r.pid,
            },
            ttl: ms(r.ttl_ms),
            force: r.force,
        };
        request.validate()?;
        Ok(request)
    }
}

impl From<LockReply> for pb::LockResponse {
    fn from(r: LockReply) -> Self {
        let Some(h) = r.held else {
            return pb::LockResponse {
                granted: r.granted,
                ..Default::default()
            };
        };
        pb::LockResponse {
            granted: r.granted,
            holder: h.holder,
            since_unix_ms: h.since_unix_ms,
            machine_id: h.machine_id,
            pid_namespace: h.pid_namespace,
            pid: h.pid,
        }
    }
}

impl From<pb::LockResponse> for LockReply {
    /// No holder named: nobody held the lease.
    fn from(r: pb::LockResponse) -> Self {
        LockReply {
            granted: r.granted,
            held: (!r.holder.is_empty()).then_some(HeldLease {
                holder: r.holder,
                since_unix_ms: r.since_unix_ms,
                machine_id: r.machine_id,
                pid_namespace: r.pid_namespace,
                pid: r.pid,
            }),
        }
    }
}
