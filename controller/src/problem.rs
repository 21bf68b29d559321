//! What keeps a deployment from being healthy, as typed values: decisions
//! match on variants, and the text users see (and grep) comes only from
//! `Display`. One enum per area, and [`Problem`] for lists that mix them
//! (`status`). Where masters run is judged apart, in [`crate::balance`].

use std::fmt;
use std::net::IpAddr;

use crate::client::Peer;
use paddock_knowledge::MIN_REDIS;

/// Any problem `status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Cluster(ClusterProblem),
    Sentinel(SentinelProblem),
    Host(HostProblem),
}

/// Cluster or replication, as the nodes report it. `node`, `peer` and
/// `master` are "host:instance" labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterProblem {
    /// Neither it nor anyone vouching for it answers.
    NotAnswering {
        node: String,
    },
    /// Replication: no member is followed by the others.
    NoReplicationMaster,
    /// Replication: a second master.
    AlsoMaster {
        node: String,
        master: String,
    },
    /// Replication: follows someone other than the master.
    ShouldReplicate {
        node: String,
        master: String,
    },
    LinkDown {
        node: String,
    },
    /// `peer` is missing from `node`'s CLUSTER NODES.
    DoesNotKnow {
        node: String,
        peer: String,
        ip: IpAddr,
        port: u16,
    },
    /// `node` knows `peer`, but not as settled (handshake, noaddr, fail,
    /// fail?); `flags` as CLUSTER NODES lists them.
    SeesAs {
        node: String,
        peer: String,
        ip: IpAddr,
        port: u16,
        flags: Vec<String>,
    },
    /// `node`'s line for `peer` disagrees with `peer`'s own.
    StaleView {
        node: String,
        peer: String,
    },
    /// `nodes`: "ip:port", or an id when there is no address.
    ForeignNodes {
        node: String,
        nodes: Vec<String>,
    },
    StateNotOk {
        node: String,
    },
    /// Migrating/importing markers as CLUSTER NODES shows them.
    OpenSlots {
        node: String,
        slots: Vec<String>,
    },
    /// Neither serves nor follows its shard's master.
    ShouldReplicateShard {
        node: String,
        shard: u32,
    },
    ShardWithoutMaster {
        shard: u32,
    },
    ShardManyMasters {
        shard: u32,
    },
    /// Fewer than all slots served, every shard having a master.
    SlotsUnserved {
        served: u32,
    },
    /// The shard's master and in-sync replicas (`nodes`, two or more) all
    /// sit in `zone`: losing it loses the shard. See [`crate::zones`].
    ShardInOneZone {
        shard: u32,
        zone: String,
        nodes: Vec<String>,
    },
    /// Losing `zone` would take out the masters of `shards`, of `total`:
    /// the rest are no majority. See [`crate::zones`].
    FatalZoneLoss {
        zone: String,
        shards: Vec<u32>,
        total: u32,
    },
}

/// What keeps one sentinel (a "host:instance" label) from guarding the
/// master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentinelProblem {
    RefusesPassword {
        sentinel: String,
    },
    NotMonitoring {
        sentinel: String,
    },
    /// It names `named` as master while the replicas follow `followed`.
    NamesOther {
        sentinel: String,
        named: Peer,
        followed: Peer,
    },
    /// The master refuses the sentinel's auth-pass.
    CredentialsRefused {
        sentinel: String,
    },
    /// SENTINEL MASTER's flags, when not just "master".
    SeesMasterAs {
        sentinel: String,
        flags: String,
    },
    MissesReplicas {
        sentinel: String,
        known: u32,
        wanted: u32,
    },
    MissesSentinels {
        sentinel: String,
        known: u32,
        others: u32,
    },
}

/// What keeps a host from running its part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostProblem {
    AgentUnreachable {
        host: String,
        error: String,
    },
    /// No redis-server; `looked_for` is the path the agent tried, if any.
    RedisNotInstalled {
        host: String,
        looked_for: Option<String>,
    },
    /// The agent config's `redis_server` names a binary that is not there.
    RedisConfiguredMissing {
        host: String,
        configured: String,
    },
    RedisTooOld {
        host: String,
        version: String,
        path: String,
    },
    RedisUnknownVersion {
        host: String,
        path: String,
    },
    /// More maxmemory placed on the host than it has memory (MiB).
    NotEnoughMemory {
        host: String,
        instances: usize,
        maxmemory_mib: u64,
        need_mib: u64,
        has_mib: u64,
    },
}

impl ClusterProblem {
    /// Whether this says cluster nodes do not finish meeting (unknown, or
    /// still in handshake or failed in another's view): the usual cause is
    /// a closed cluster bus port, which formation's error hints at.
    pub fn meeting_stalled(&self) -> bool {
        match self {
            ClusterProblem::DoesNotKnow { .. } => true,
            ClusterProblem::SeesAs { flags, .. } => flags
                .iter()
                .any(|f| matches!(f.as_str(), "handshake" | "fail" | "fail?")),
            _ => false,
        }
    }

    /// Whether the slot repair (`engine::fix`, `paddock fix`) is what
    /// settles it, not formation: slots left open by an interrupted move,
    /// or slots nobody serves while every shard has a master.
    pub fn is_for_slot_fix(&self) -> bool {
        matches!(
            self,
            ClusterProblem::OpenSlots { .. } | ClusterProblem::SlotsUnserved { .. }
        )
    }
}

/// The problems formation settles (and waits on): all but the slot
/// repair's. Unserved slots make every node report cluster_state:fail, so
/// with them that state is the slot repair's too.
pub fn formation_problems(problems: Vec<ClusterProblem>) -> Vec<ClusterProblem> {
    let unserved = problems
        .iter()
        .any(|p| matches!(p, ClusterProblem::SlotsUnserved { .. }));
    problems
        .into_iter()
        .filter(|p| !p.is_for_slot_fix())
        .filter(|p| !(unserved && matches!(p, ClusterProblem::StateNotOk { .. })))
        .collect()
}

/// "losing WHAT would take out ...": one wording for a host's and a
/// zone's loss of a majority of masters.
pub fn write_fatal_loss(
    f: &mut fmt::Formatter<'_>,
    what: impl fmt::Display,
    shards: &[u32],
    total: u32,
) -> fmt::Result {
    let lost = shards.len() as u32;
    let shards: Vec<String> = shards.iter().map(u32::to_string).collect();
    write!(
        f,
        "losing {what} would take out {lost} of the {total} masters (shard {}): the {} left are not a majority, so no replica would be elected and the cluster would stay down (cluster_state:fail)",
        shards.join(", "),
        total - lost
    )
}

/// The problems' texts joined by `sep`, as error messages list them.
pub fn join<P: fmt::Display>(problems: &[P], sep: &str) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Cluster(p) => p.fmt(f),
            Problem::Sentinel(p) => p.fmt(f),
            Problem::Host(p) => p.fmt(f),
        }
    }
}

impl fmt::Display for ClusterProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ClusterProblem as P;
        match self {
            P::NotAnswering { node } => write!(f, "{node}: not running or not answering"),
            P::NoReplicationMaster => {
                write!(f, "no member is a master that the others replicate")
            }
            P::AlsoMaster { node, master } => {
                write!(f, "{node}: is a master too; it should replicate {master}")
            }
            P::ShouldReplicate { node, master } => write!(f, "{node}: should replicate {master}"),
            P::LinkDown { node } => {
                write!(f, "{node}: replication link to its master is not up yet")
            }
            P::DoesNotKnow {
                node,
                peer,
                ip,
                port,
            } => write!(f, "{node}: does not know {peer} ({ip}:{port})"),
            P::SeesAs {
                node,
                peer,
                ip,
                port,
                flags,
            } => write!(
                f,
                "{node}: sees {peer} ({ip}:{port}) as {}",
                flags.join(",")
            ),
            P::StaleView { node, peer } => {
                write!(f, "{node}: its view of {peer} is not up to date yet")
            }
            P::ForeignNodes { node, nodes } => write!(
                f,
                "{node}: knows nodes outside the inventory: {}",
                nodes.join(", ")
            ),
            P::StateNotOk { node } => write!(f, "{node}: cluster_state is not ok"),
            P::OpenSlots { node, slots } => write!(
                f,
                "{node}: open slots {} (an interrupted resharding; `paddock fix` or apply finishes or rolls it back)",
                slots.join(" ")
            ),
            P::ShouldReplicateShard { node, shard } => {
                write!(f, "{node}: should replicate shard {shard}'s master")
            }
            P::ShardWithoutMaster { shard } => write!(f, "shard {shard}: no master serving slots"),
            P::ShardManyMasters { shard } => {
                write!(f, "shard {shard}: more than one master serves slots")
            }
            P::SlotsUnserved { served } => {
                write!(
                    f,
                    "{served} of {} slots are served",
                    paddock_knowledge::nodes::SLOTS
                )
            }
            P::ShardInOneZone { shard, zone, nodes } => write!(
                f,
                "shard {shard}: its master and in-sync replicas ({}) are all in zone {zone}, so losing that zone loses the shard; bring back its replicas in other zones",
                nodes.join(", ")
            ),
            P::FatalZoneLoss {
                zone,
                shards,
                total,
            } => write_fatal_loss(f, format_args!("zone {zone}"), shards, *total),
        }
    }
}

impl fmt::Display for SentinelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SentinelProblem as P;
        match self {
            P::RefusesPassword { sentinel } => write!(
                f,
                "{sentinel}: refuses the deployment's password (it runs with another one); apply restarts it with the current one"
            ),
            P::NotMonitoring { sentinel } => {
                write!(f, "{sentinel}: not running, or not monitoring the master")
            }
            P::NamesOther {
                sentinel,
                named,
                followed,
            } => write!(
                f,
                "{sentinel}: names {}:{} as master, but the replicas follow {}:{}",
                named.address, named.port, followed.address, followed.port
            ),
            P::CredentialsRefused { sentinel } => write!(
                f,
                "{sentinel}: the master refuses its credentials (auth-pass is not the deployment's password); apply sets it (SENTINEL SET auth-pass)"
            ),
            P::SeesMasterAs { sentinel, flags } => {
                write!(f, "{sentinel}: sees the master as {flags}")
            }
            P::MissesReplicas {
                sentinel,
                known,
                wanted,
            } => write!(f, "{sentinel}: knows {known} of {wanted} replica(s)"),
            P::MissesSentinels {
                sentinel,
                known,
                others,
            } => write!(
                f,
                "{sentinel}: knows {known} of the {others} other sentinel(s)"
            ),
        }
    }
}

impl fmt::Display for HostProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HostProblem as P;
        let (major, minor) = MIN_REDIS;
        match self {
            P::AgentUnreachable { host, error } => write!(
                f,
                "host {host}: agent unreachable ({error}); its instances are not managed and are shown as the other nodes see them"
            ),
            P::RedisNotInstalled { host, looked_for } => write!(
                f,
                "host {host}: redis-server is not installed (the agent looked for {}); install it there with `apt-get install -y redis-server`",
                looked_for.as_deref().unwrap_or("redis-server in PATH")
            ),
            P::RedisConfiguredMissing { host, configured } => write!(
                f,
                "host {host}: the agent config's redis_server = {configured:?} does not exist; fix `redis_server` in that host's agent config (e.g. /etc/paddock/agent.toml) and restart its agent, or remove the key to use redis-server from PATH (nothing is installed over a configured path)"
            ),
            P::RedisTooOld {
                host,
                version,
                path,
            } => write!(
                f,
                "host {host}: redis-server {version} ({path}) is too old: Paddock needs Redis {major}.{minor} or later (CLUSTER ADDSLOTSRANGE, enable-*-command); upgrade it there, e.g. from packages.redis.io, or point the agent config's redis_server at a 7.x binary"
            ),
            P::RedisUnknownVersion { host, path } => write!(
                f,
                "host {host}: {path} does not say which Redis it is (`{path} --version`); Paddock needs Redis {major}.{minor} or later"
            ),
            P::NotEnoughMemory {
                host,
                instances,
                maxmemory_mib,
                need_mib,
                has_mib,
            } => write!(
                f,
                "host {host}: {instances} instance(s) x maxmemory {maxmemory_mib} MiB = {need_mib} MiB, but the host has {has_mib} MiB of memory; lower [redis] maxmemory or add hosts"
            ),
        }
    }
}

/// As its text: `status --json` lists problems as the strings it prints.
impl serde::Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_handshaking_or_failed_peers_say_meeting_stalled() {
        let ip: IpAddr = "127.0.1.2".parse().unwrap();
        let sees = |flags: &str| ClusterProblem::SeesAs {
            node: "box1:7000".into(),
            peer: "box2:7000".into(),
            ip,
            port: 7000,
            flags: flags.split(',').map(str::to_owned).collect(),
        };
        // Labels that read like the old keywords must not matter.
        let table = [
            (
                ClusterProblem::DoesNotKnow {
                    node: "a:1".into(),
                    peer: "b:1".into(),
                    ip,
                    port: 1,
                },
                true,
            ),
            (sees("handshake,noaddr"), true),
            (sees("master,fail"), true),
            (sees("slave,fail?"), true),
            (sees("master,noaddr"), false),
            (sees("master,nofailover,noaddr"), false),
            (
                ClusterProblem::StateNotOk {
                    node: "failover1:7000".into(),
                },
                false,
            ),
            (
                ClusterProblem::LinkDown {
                    node: "handshake:7000".into(),
                },
                false,
            ),
            (ClusterProblem::ShardWithoutMaster { shard: 0 }, false),
        ];
        for (problem, want) in table {
            assert_eq!(problem.meeting_stalled(), want, "{problem}");
        }
    }

    #[test]
    fn formation_leaves_open_and_unserved_slots_to_the_slot_repair() {
        let open = ClusterProblem::OpenSlots {
            node: "a:1".into(),
            slots: vec!["[5->-b]".into()],
        };
        let unserved = ClusterProblem::SlotsUnserved { served: 16383 };
        let state = ClusterProblem::StateNotOk { node: "a:1".into() };
        let link = ClusterProblem::LinkDown { node: "b:1".into() };
        // (problems, what formation settles)
        let table = [
            (vec![open.clone()], vec![]),
            (vec![open.clone(), link.clone()], vec![link.clone()]),
            // Unserved slots explain cluster_state:fail...
            (vec![state.clone(), unserved.clone()], vec![]),
            // ...open slots do not.
            (vec![state.clone(), open.clone()], vec![state.clone()]),
            (
                vec![link.clone(), state.clone()],
                vec![link.clone(), state.clone()],
            ),
        ];
        for (problems, want) in table {
            assert_eq!(formation_problems(problems.clone()), want, "{problems:?}");
        }
    }

    #[test]
    fn status_json_lists_problems_as_their_text() {
        let p = vec![
            Problem::Host(HostProblem::AgentUnreachable {
                host: "box2".into(),
                error: "connection refused".into(),
            }),
            Problem::Cluster(ClusterProblem::SlotsUnserved { served: 16000 }),
        ];
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!([
                "host box2: agent unreachable (connection refused); its instances are not managed and are shown as the other nodes see them",
                "16000 of 16384 slots are served"
            ])
        );
    }
}
