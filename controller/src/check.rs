//! `paddock check`: every finding of `redis-cli --cluster check` (slot
//! coverage, open slots, the nodes agreeing on the configuration and the
//! slot map) and ours: a shard's master and replica on one host, masters
//! piled on a host, replicas per master against the inventory, replication
//! lag, the sentinels' agreement, the zones.
//!
//! It starts from `status`'s assessment (agents, [`crate::cluster::assess`],
//! zones, sentinels: [`Problem`]) and adds what status does not judge, pure
//! over what each node reports ([`Seen`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use futures::future::join_all;
use paddock_inventory::Topology;
use paddock_knowledge::info::{InfoRole, Replication};
use serde::Serialize;

use crate::Error;
use crate::client::{RedisMode, Security};
use crate::cluster::{NodeLine, Observation, parse_nodes};
use crate::fleet::{Deployment, Fleet, Target};
use crate::problem::{ClusterProblem, HostProblem, Problem};

/// A replica further behind its master's replication offset than this is a
/// finding: more than a few seconds of writes at a modest rate, so a
/// failover now would lose them (WAIT aside). A replica acknowledges every
/// second, so a busy master's replicas trail by up to a second of writes.
pub const MAX_LAG_BYTES: u64 = 1024 * 1024;

/// One thing `check` finds wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// What `status` reports: unreachable agents, the cluster's own
    /// assessment (coverage, open slots, nodes unknown or stale, state),
    /// zones and sentinels.
    Status(Problem),
    /// Masters piled on a host (`balance::judge`).
    Balance(crate::balance::Problem),
    /// `node` and `other` ("host:instance") see different slot maps.
    SlotMapDiffers { node: String, other: String },
    /// A shard's master and one of its replicas share a host: losing it
    /// loses both.
    SameHost {
        host: String,
        master: String,
        replica: String,
    },
    /// A master with another number of replicas than the inventory asks.
    Replicas {
        master: String,
        have: u32,
        want: u32,
    },
    /// A replica behind its master by more than [`MAX_LAG_BYTES`].
    Lag {
        replica: String,
        master: String,
        bytes: u64,
    },
}

impl Finding {
    /// A short name for scripts (`--json`'s `kind`).
    pub fn kind(&self) -> &'static str {
        use ClusterProblem as C;
        match self {
            Finding::Status(Problem::Host(_)) => "host",
            Finding::Status(Problem::Sentinel(_)) => "sentinel_agreement",
            Finding::Status(Problem::Cluster(c)) => match c {
                C::OpenSlots { .. } => "open_slots",
                C::SlotsUnserved { .. } | C::ShardWithoutMaster { .. } => "slot_coverage",
                C::DoesNotKnow { .. }
                | C::SeesAs { .. }
                | C::StaleView { .. }
                | C::ForeignNodes { .. } => "configuration_agreement",
                C::ShardInOneZone { .. } | C::FatalZoneLoss { .. } => "zones",
                C::StateNotOk { .. } => "cluster_state",
                _ => "replication",
            },
            Finding::Balance(_) => "master_balance",
            Finding::SlotMapDiffers { .. } => "slot_map_agreement",
            Finding::SameHost { .. } => "anti_affinity",
            Finding::Replicas { .. } => "replicas_per_master",
            Finding::Lag { .. } => "replication_lag",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Status(p) => write!(f, "{p}"),
            Finding::Balance(p) => write!(f, "{p}"),
            Finding::SlotMapDiffers { node, other } => write!(
                f,
                "{node}: its slot map differs from {other}'s (the nodes do not agree about the configuration)"
            ),
            Finding::SameHost {
                host,
                master,
                replica,
            } => write!(
                f,
                "{master} and its replica {replica} both run on {host}: losing that host loses the shard"
            ),
            Finding::Replicas { master, have, want } => write!(
                f,
                "{master}: {have} replica(s) follow it, the inventory asks for {want}"
            ),
            Finding::Lag {
                replica,
                master,
                bytes,
            } => write!(
                f,
                "{replica}: {bytes} byte(s) behind its master {master} (more than {MAX_LAG_BYTES})"
            ),
        }
    }
}

/// What each node reports, per target: its own CLUSTER NODES (cluster) and
/// INFO replication. None where it does not answer.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub nodes: Vec<Option<Vec<NodeLine>>>,
    pub replication: Vec<Option<Replication>>,
}

/// What the inventory says a node is: "host:instance", host, address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub label: String,
    pub host: String,
    pub ip: std::net::IpAddr,
    pub port: u16,
}

impl Node {
    pub fn of(t: &Target) -> Node {
        Node {
            label: t.label(),
            host: t.host_name.clone(),
            ip: t.ip,
            port: t.port,
        }
    }
}

/// Pure: the slot map a node sees, redis-cli's "configuration signature":
/// every master with slots, by id, with its ranges.
fn slot_map(nodes: &[NodeLine]) -> BTreeMap<&str, &[(u32, u32)]> {
    nodes
        .iter()
        .filter(|n| n.is_master() && !n.slots.is_empty())
        .map(|n| (n.id.as_str(), n.slots.as_slice()))
        .collect()
}

/// Pure: the nodes whose slot map differs from the first answering node's.
pub fn slot_map_agreement(nodes: &[Node], seen: &Seen) -> Vec<Finding> {
    let mut answering = nodes
        .iter()
        .zip(&seen.nodes)
        .filter_map(|(n, v)| Some((n, v.as_ref()?)));
    let Some((first, reference)) = answering.next() else {
        return Vec::new();
    };
    let reference = slot_map(reference);
    answering
        .filter(|(_, v)| slot_map(v) != reference)
        .map(|(n, _)| Finding::SlotMapDiffers {
            node: n.label.clone(),
            other: first.label.clone(),
        })
        .collect()
}

/// Pure: each master (a cluster master with slots; the replication's
/// master) with the nodes following it, by INFO replication.
fn shards(nodes: &[Node], seen: &Seen) -> Vec<(usize, Vec<usize>)> {
    let serving = |i: usize| match seen.nodes.get(i).and_then(Option::as_ref) {
        Some(lines) => lines
            .iter()
            .find(|n| n.is_myself())
            .is_some_and(|me| me.is_master() && me.slot_count() > 0),
        None => true,
    };
    let role = |i: usize| seen.replication[i].as_ref().and_then(|r| r.role);
    (0..nodes.len())
        .filter(|&i| role(i) == Some(InfoRole::Master) && serving(i))
        .map(|m| {
            let followers = (0..nodes.len())
                .filter(|&r| {
                    role(r) == Some(InfoRole::Replica)
                        && seen.replication[r]
                            .as_ref()
                            .and_then(|x| x.master)
                            .is_some_and(|a| a.ip == nodes[m].ip && a.port == nodes[m].port)
                })
                .collect();
            (m, followers)
        })
        .collect()
}

/// Pure: anti-affinity, replicas per master and replication lag.
pub fn replication_findings(nodes: &[Node], seen: &Seen, want_replicas: u32) -> Vec<Finding> {
    let mut out = Vec::new();
    for (m, followers) in shards(nodes, seen) {
        let master = &nodes[m];
        for &r in &followers {
            if nodes[r].host == master.host {
                out.push(Finding::SameHost {
                    host: master.host.clone(),
                    master: master.label.clone(),
                    replica: nodes[r].label.clone(),
                });
            }
        }
        if followers.len() as u32 != want_replicas {
            out.push(Finding::Replicas {
                master: master.label.clone(),
                have: followers.len() as u32,
                want: want_replicas,
            });
        }
        let Some(info) = seen.replication[m].as_ref() else {
            continue;
        };
        let head = info.master_repl_offset.unwrap_or(0);
        for &r in &followers {
            let at = info
                .replicas
                .iter()
                .find(|c| c.addr.ip == nodes[r].ip && c.addr.port == nodes[r].port)
                .map(|c| c.offset);
            let behind = u64::try_from(head - at.unwrap_or(0)).unwrap_or(0);
            if at.is_some() && behind > MAX_LAG_BYTES {
                out.push(Finding::Lag {
                    replica: nodes[r].label.clone(),
                    master: master.label.clone(),
                    bytes: behind,
                });
            }
        }
    }
    out
}

/// Pure: every finding, status's first.
pub fn judge(
    status: &[Problem],
    balance: &crate::balance::Balance,
    nodes: &[Node],
    seen: &Seen,
    want_replicas: u32,
) -> Vec<Finding> {
    let mut out: Vec<Finding> = status.iter().cloned().map(Finding::Status).collect();
    out.extend(balance.fixable().into_iter().cloned().map(Finding::Balance));
    out.extend(balance.blocked().iter().cloned().map(Finding::Balance));
    out.extend(slot_map_agreement(nodes, seen));
    out.extend(replication_findings(nodes, seen, want_replicas));
    out
}

/// What `paddock check` prints.
#[derive(Debug, Clone)]
pub struct Check {
    pub deployment: String,
    pub findings: Vec<Finding>,
    /// Risks no change can remove (as status's warnings).
    pub warnings: Vec<String>,
}

impl Check {
    /// Some agent did not answer: the check could not see everything.
    pub fn unreachable(&self) -> bool {
        self.findings.iter().any(|f| {
            matches!(
                f,
                Finding::Status(Problem::Host(HostProblem::AgentUnreachable { .. }))
            )
        })
    }
}

impl Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Item {
            kind: &'static str,
            text: String,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            deployment: &'a str,
            ok: bool,
            findings: Vec<Item>,
            warnings: &'a [String],
        }
        Out {
            deployment: &self.deployment,
            ok: self.findings.is_empty(),
            findings: self
                .findings
                .iter()
                .map(|f| Item {
                    kind: f.kind(),
                    text: f.to_string(),
                })
                .collect(),
            warnings: &self.warnings,
        }
        .serialize(s)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.findings.is_empty() {
            return writeln!(
                f,
                "Deployment {}: OK (slots covered, none open, every node agrees, replicas in place and in sync).",
                self.deployment
            );
        }
        writeln!(
            f,
            "Deployment {}: {} finding(s):",
            self.deployment,
            self.findings.len()
        )?;
        for x in &self.findings {
            writeln!(f, "  - [{}] {x}", x.kind())?;
        }
        Ok(())
    }
}

/// Each target's own CLUSTER NODES (cluster) and INFO replication.
async fn gather(fleet: &Fleet, targets: &[Target]) -> Seen {
    let reads = targets.iter().map(|t| async move {
        let cluster = t.spec.mode == RedisMode::Cluster;
        let commands: &[&[&str]] = if cluster {
            &[&["INFO", "replication"], &["CLUSTER", "NODES"]]
        } else {
            &[&["INFO", "replication"]]
        };
        let replies = fleet.read(t, commands).await.ok();
        let text = |i: usize| replies.as_ref()?.get(i)?.text();
        let replication = text(0).map(|r| Replication::parse(&r));
        let nodes = if cluster {
            text(1).map(|n| parse_nodes(&n))
        } else {
            None
        };
        (nodes, replication)
    });
    let (nodes, replication) = join_all(reads).await.into_iter().unzip();
    Seen { nodes, replication }
}

/// Checks the deployment at `path`: status's assessment plus the rest.
pub async fn check(path: &Path, security: Security) -> Result<Check, Error> {
    let mut deployment = Deployment::load(path, false, security)?;
    let fleet = Fleet::connect(&deployment).await;
    // The instances as they run, as status judges them.
    crate::engine::shape::keep_placement(&mut deployment, &fleet, false).await?;
    let shown = vec![true; deployment.inventory.hosts.len()];
    let targets = deployment.targets();
    let (status, seen) = futures::join!(
        crate::status::status_of(&deployment, &fleet, &shown),
        gather(&fleet, &targets)
    );
    let inv = &deployment.inventory.deployment;
    let observed: Vec<Option<Observation>> = seen
        .nodes
        .iter()
        .zip(&seen.replication)
        .map(|(n, r)| {
            let r = r.as_ref()?;
            Some(Observation {
                nodes: n.clone().unwrap_or_default(),
                state_ok: true,
                link_up: r.link_up,
                role_master: r.role.map(|x| x == InfoRole::Master),
                master_addr: r.master.map(|a| (a.ip, a.port)),
                replicas_online: r.replicas_online().iter().map(|a| (a.ip, a.port)).collect(),
            })
        })
        .collect();
    let balance = if inv.topology == Topology::Cluster {
        crate::balance::judge(&crate::balance::roles(&targets, &observed))
    } else {
        crate::balance::Balance::default()
    };
    let nodes: Vec<Node> = targets.iter().map(Node::of).collect();
    Ok(Check {
        deployment: inv.name.clone(),
        findings: judge(
            &status.problems,
            &balance,
            &nodes,
            &seen,
            inv.replicas_per_master,
        ),
        warnings: status.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_knowledge::Addr;
    use paddock_knowledge::info::ConnectedReplica;

    const VIEW: &str = "\
aa 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191
bb 10.0.0.2:7000@17000 master - 0 0 2 connected 8192-16383
cc 10.0.0.2:7001@17001 slave aa 0 0 1 connected
dd 10.0.0.1:7001@17001 slave bb 0 0 2 connected
";

    fn nodes() -> Vec<Node> {
        [
            ("a", "10.0.0.1", 7000),
            ("b", "10.0.0.2", 7000),
            ("b", "10.0.0.2", 7001),
            ("a", "10.0.0.1", 7001),
        ]
        .iter()
        .map(|(h, ip, port)| Node {
            label: format!("{h}:redis-{port}"),
            host: (*h).into(),
            ip: ip.parse().unwrap(),
            port: *port,
        })
        .collect()
    }

    /// Each node's own view of VIEW (its line marked myself).
    fn views() -> Vec<Option<Vec<NodeLine>>> {
        let ids = ["aa", "bb", "cc", "dd"];
        ids.iter()
            .map(|me| {
                let mut v = parse_nodes(VIEW);
                for n in &mut v {
                    n.flags.retain(|f| f != "myself");
                    if n.id == *me {
                        n.flags.insert(0, "myself".into());
                    }
                }
                Some(v)
            })
            .collect()
    }

    fn master(offset: i64, replicas: &[(&str, u16, i64)]) -> Option<Replication> {
        Some(Replication {
            role: Some(InfoRole::Master),
            master_repl_offset: Some(offset),
            replicas: replicas
                .iter()
                .map(|(ip, port, offset)| ConnectedReplica {
                    addr: Addr {
                        ip: ip.parse().unwrap(),
                        port: *port,
                    },
                    state: "online".into(),
                    offset: *offset,
                    lag: 0,
                })
                .collect(),
            ..Replication::default()
        })
    }

    fn replica(of: (&str, u16)) -> Option<Replication> {
        Some(Replication {
            role: Some(InfoRole::Replica),
            master: Some(Addr {
                ip: of.0.parse().unwrap(),
                port: of.1,
            }),
            link_up: Some(true),
            ..Replication::default()
        })
    }

    /// a:7000 (replica b:7001) and b:7000 (replica a:7001), in sync.
    fn healthy() -> Seen {
        Seen {
            nodes: views(),
            replication: vec![
                master(100, &[("10.0.0.2", 7001, 100)]),
                master(200, &[("10.0.0.1", 7001, 200)]),
                replica(("10.0.0.1", 7000)),
                replica(("10.0.0.2", 7000)),
            ],
        }
    }

    #[test]
    fn every_node_must_see_the_same_slot_map() {
        let seen = healthy();
        assert_eq!(slot_map_agreement(&nodes(), &seen), vec![]);
        let mut stale = healthy();
        // cc still sees bb without its last slot.
        let v = stale.nodes[2].as_mut().unwrap();
        v.iter_mut().find(|n| n.id == "bb").unwrap().slots = vec![(8192, 16382)];
        assert_eq!(
            slot_map_agreement(&nodes(), &stale),
            vec![Finding::SlotMapDiffers {
                node: "b:redis-7001".into(),
                other: "a:redis-7000".into()
            }]
        );
        // A node that does not answer is status's finding, not this one.
        let mut silent = healthy();
        silent.nodes[0] = None;
        assert_eq!(slot_map_agreement(&nodes(), &silent), vec![]);
    }

    #[test]
    fn replicas_are_placed_counted_and_in_sync() {
        type Edit = fn(&mut Seen);
        let table: Vec<(&str, Edit, u32, Vec<Finding>)> = vec![
            ("healthy", |_| {}, 1, vec![]),
            (
                "the inventory asks for two replicas each",
                |_| {},
                2,
                vec![
                    Finding::Replicas {
                        master: "a:redis-7000".into(),
                        have: 1,
                        want: 2,
                    },
                    Finding::Replicas {
                        master: "b:redis-7000".into(),
                        have: 1,
                        want: 2,
                    },
                ],
            ),
            (
                "a replica followed its master onto its host",
                |s| s.replication[3] = replica(("10.0.0.1", 7000)),
                1,
                vec![
                    Finding::SameHost {
                        host: "a".into(),
                        master: "a:redis-7000".into(),
                        replica: "a:redis-7001".into(),
                    },
                    Finding::Replicas {
                        master: "a:redis-7000".into(),
                        have: 2,
                        want: 1,
                    },
                    Finding::Replicas {
                        master: "b:redis-7000".into(),
                        have: 0,
                        want: 1,
                    },
                ],
            ),
            (
                "a replica 2 MiB behind",
                |s| {
                    s.replication[1] = master(200 + 2 * 1024 * 1024, &[("10.0.0.1", 7001, 200)]);
                },
                1,
                vec![Finding::Lag {
                    replica: "a:redis-7001".into(),
                    master: "b:redis-7000".into(),
                    bytes: 2 * 1024 * 1024,
                }],
            ),
            (
                "just under the threshold",
                |s| {
                    s.replication[1] =
                        master(200 + MAX_LAG_BYTES as i64, &[("10.0.0.1", 7001, 200)]);
                },
                1,
                vec![],
            ),
        ];
        for (name, edit, want_replicas, want) in table {
            let mut seen = healthy();
            edit(&mut seen);
            assert_eq!(
                replication_findings(&nodes(), &seen, want_replicas),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn status_findings_come_first_and_are_kinded_for_scripts() {
        let open = Problem::Cluster(ClusterProblem::OpenSlots {
            node: "a:redis-7000".into(),
            slots: vec!["[5461->-bb]".into()],
        });
        let uncovered = Problem::Cluster(ClusterProblem::SlotsUnserved { served: 16383 });
        let crowded = crate::balance::Balance {
            problems: vec![crate::balance::Problem::Crowded {
                host: "a".into(),
                masters: 2,
                limit: 1,
                total: 2,
                hosts: 2,
            }],
            ..Default::default()
        };
        let found = judge(
            &[open.clone(), uncovered.clone()],
            &crowded,
            &nodes(),
            &healthy(),
            1,
        );
        let kinds: Vec<&str> = found.iter().map(Finding::kind).collect();
        assert_eq!(kinds, vec!["open_slots", "slot_coverage", "master_balance"]);
        assert!(found[0].to_string().contains("[5461->-bb]"), "{}", found[0]);
        let check = Check {
            deployment: "t".into(),
            findings: found,
            warnings: Vec::new(),
        };
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["findings"][0]["kind"], "open_slots");
        assert!(!check.unreachable());
        let clean = Check {
            deployment: "t".into(),
            findings: judge(&[], &Default::default(), &nodes(), &healthy(), 1),
            warnings: Vec::new(),
        };
        assert!(clean.findings.is_empty());
        assert!(clean.to_string().contains("OK"), "{clean}");
    }
}
