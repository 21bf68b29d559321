//! A running cluster's shape: what runs now (one cheap look before the
//! targets are built), the placement that keeps it, and the pure decisions
//! of a change of shape: which problems a change under way explains, which
//! slots move, which nodes are removed.
//!
//! Which instance not in the inventory is which: an instance the running
//! cluster knows (its address is in the cluster's CLUSTER NODES) is part of
//! the shape: placement keeps it or names it leaving, and apply drains,
//! stops and forgets it. A stopped instance the running cluster does not
//! know is one apply already removed (or a stale copy): it is left alone
//! with its data until `paddock prune --purge-data`. Anything else of the
//! deployment that the placement does not name (a running instance the
//! cluster does not know, or any instance while no node of the cluster
//! answers) is an orphan, and apply refuses as before.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::future::join_all;
use paddock_inventory::{Existing, Host, Role, Topology, place_keeping};

use crate::Error;
use crate::client::{InstanceState, InstanceStatus};
use crate::cluster::{NodeLine, Observation, SLOTS, assess as assess_members, parse_nodes};
use crate::engine::step::{PlannedMove, Step};
use crate::fleet::{Deployment, Fleet, Target, members};
use crate::problem::ClusterProblem;
use crate::slots::{Balance, DEFAULT_THRESHOLD_PCT, Ranges, SlotMap, SlotRange, Wanted};

/// Pure: the instances the live cluster has (`nodes`, one node's CLUSTER
/// NODES), by host, with the shard each serves, and the addresses of hosts
/// the inventory does not list (their index is `hosts.len()` + position).
///
/// Shards are the masters serving slots, then, while they are fewer than
/// `masters`, masters without slots that have not failed (new masters of
/// an interrupted scale-out), each by port, then host (inventory order,
/// unlisted hosts last): the order placement gives them out, so the master
/// added last is the first to go when `masters` is lowered. A replica is
/// in its master's shard, its rank by port. Any other master without slots
/// (failed over, drained, or an old master rejoining) becomes a replica:
/// it counts as the last replica of the shard (of the first `masters`)
/// with the fewest members, with its own replicas. The name comes from the
/// host's agent (`lists`), or is `redis-<port>`.
pub fn existing(
    hosts: &[Host],
    lists: &[(usize, Vec<InstanceStatus>)],
    deployment: &str,
    nodes: &[NodeLine],
    masters: u32,
) -> (Vec<Existing>, Vec<IpAddr>) {
    let known = |n: &&NodeLine| n.ip.is_some() && !n.has_flag("noaddr") && !n.has_flag("handshake");
    let failed = |n: &NodeLine| n.has_flag("fail") || n.has_flag("fail?");
    let host_of = |ip: Option<IpAddr>| {
        let listed = hosts.iter().position(|h| Some(h.address) == ip);
        (listed.is_none(), listed, ip)
    };
    let mut all: Vec<&NodeLine> = nodes
        .iter()
        .filter(known)
        .filter(|n| n.is_master())
        .collect();
    all.sort_by_key(|n| (n.slot_count() == 0, failed(n), n.port, host_of(n.ip)));
    // Masters without slots are shards only while the masters serving
    // slots are fewer than `masters` (new masters of a scale-out); any
    // other comes back as a replica (it failed over, or was drained).
    let (mut heads, mut lost) = (Vec::new(), Vec::new());
    for n in all {
        if n.slot_count() > 0 || (!failed(n) && heads.len() < masters as usize) {
            heads.push(n);
        } else {
            lost.push(n);
        }
    }
    let followers = |m: &NodeLine| {
        let mut r: Vec<&NodeLine> = (nodes.iter().filter(known))
            .filter(|n| n.is_replica() && n.master_id.as_deref() == Some(m.id.as_str()))
            .collect();
        r.sort_by_key(|n| (n.port, n.ip));
        r
    };
    let mut shards: Vec<Vec<(&NodeLine, Role)>> = heads
        .iter()
        .map(|m| {
            let mut members = vec![(*m, Role::Master)];
            members.extend(followers(m).into_iter().map(|r| (r, Role::Replica)));
            members
        })
        .collect();
    for l in lost {
        let first = shards.len().min(masters as usize);
        if let Some(s) = (0..first).min_by_key(|&s| shards[s].len()) {
            shards[s].push((l, Role::Replica));
            shards[s].extend(followers(l).into_iter().map(|r| (r, Role::Replica)));
        }
    }
    let mut removed: Vec<IpAddr> = Vec::new();
    let mut out = Vec::new();
    for (shard, members) in shards.iter().enumerate() {
        for &(n, role) in members {
            let Some(ip) = n.ip else { continue };
            let host = hosts
                .iter()
                .position(|h| h.address == ip)
                .unwrap_or_else(|| {
                    let k = removed.iter().position(|r| *r == ip).unwrap_or_else(|| {
                        removed.push(ip);
                        removed.len() - 1
                    });
                    hosts.len() + k
                });
            let name = (lists.iter())
                .find(|(h, _)| *h == host)
                .and_then(|(_, l)| {
                    l.iter()
                        .find(|s| s.port == n.port && s.deployment == deployment)
                })
                .map_or_else(|| format!("redis-{}", n.port), |s| s.name.clone());
            out.push(Existing {
                host,
                port: n.port,
                name,
                shard: u32::try_from(shard).unwrap_or(u32::MAX),
                role,
            });
        }
    }
    (out, removed)
}

/// Replaces `deployment`'s placement with one that keeps what the running
/// cluster has (cluster topology; nothing changes when no node answers).
/// A host the inventory no longer lists whose nodes are still in the
/// cluster is added to the deployment's hosts, reached at its address on
/// the first host's agent port with the deployment's certificates, so its
/// nodes can be drained and stopped (only with `add_hosts`: commands other
/// than apply and plan leave those nodes alone). Returns whether hosts were
/// added (the caller dials again).
pub async fn keep_placement(
    deployment: &mut Deployment,
    fleet: &Fleet,
    add_hosts: bool,
) -> Result<bool, Error> {
    let inv = &deployment.inventory;
    if inv.deployment.topology != Topology::Cluster {
        return Ok(false);
    }
    let name = inv.deployment.name.clone();
    let lists: Vec<(usize, Vec<InstanceStatus>)> =
        join_all((0..inv.hosts.len()).map(|h| async move {
            let agent = fleet
                .agent(h)
                .ok()?
                .with_deadline(crate::client::READ_TIMEOUT);
            agent.list().await.ok().map(|l| (h, l))
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
    let Some(nodes) = cluster_nodes(fleet, &lists, &name).await else {
        return Ok(false);
    };
    let (existing, removed) = existing(&inv.hosts, &lists, &name, &nodes, inv.deployment.masters);
    deployment.placement = place_keeping(&deployment.inventory, &existing);
    if !add_hosts {
        let listed = deployment.inventory.hosts.len();
        deployment.placement.leaving.retain(|p| p.host < listed);
        return Ok(false);
    }
    let first = deployment.inventory.hosts[0].clone();
    for ip in &removed {
        deployment.inventory.hosts.push(Host {
            name: ip.to_string(),
            address: *ip,
            agent_port: first.agent_port,
            zone: first.zone.as_ref().map(|_| "removed".to_owned()),
        });
    }
    Ok(!removed.is_empty())
}

/// The cluster as most running nodes of the deployment see it (every one
/// is asked, in parallel): a node just restarted may still claim what it
/// served before a failover.
async fn cluster_nodes(
    fleet: &Fleet,
    lists: &[(usize, Vec<InstanceStatus>)],
    deployment: &str,
) -> Option<Vec<NodeLine>> {
    let running: Vec<(usize, String)> = lists
        .iter()
        .flat_map(|(h, l)| {
            l.iter()
                .filter(|s| s.deployment == deployment && s.state == InstanceState::Running)
                .map(move |s| (*h, s.name.clone()))
        })
        .collect();
    let views = join_all(running.iter().map(|(h, instance)| async move {
        let agent = fleet
            .agent(*h)
            .ok()?
            .with_deadline(crate::client::READ_TIMEOUT);
        let replies = agent.redis(instance, &[&["CLUSTER", "NODES"]]).await.ok()?;
        let nodes = parse_nodes(&replies.first()?.text()?);
        nodes.iter().any(NodeLine::is_myself).then_some(nodes)
    }))
    .await;
    most_agreed(views.into_iter().flatten().collect())
}

/// What a view says of one node: id, master, whose replica, which slots.
type Said = (String, bool, Option<String>, Vec<(u32, u32)>);

/// Pure: the view the most reporters agree on (who is master of which
/// slots, who replicates whom), the first of equals.
pub fn most_agreed(views: Vec<Vec<NodeLine>>) -> Option<Vec<NodeLine>> {
    let shape = |v: &[NodeLine]| {
        let mut s: Vec<Said> = v
            .iter()
            .map(|n| {
                (
                    n.id.clone(),
                    n.is_master(),
                    n.master_id.clone(),
                    n.slots.clone(),
                )
            })
            .collect();
        s.sort();
        s
    };
    let shapes: Vec<_> = views.iter().map(|v| shape(v)).collect();
    let best = (0..views.len()).max_by_key(|&i| {
        let agree = shapes.iter().filter(|s| **s == shapes[i]).count();
        (agree, std::cmp::Reverse(i))
    })?;
    views.into_iter().nth(best)
}

/// Pure: what keeps the cluster from being healthy, instances that leave
/// counted as members while they run (their slots served, their nodes not
/// foreign). A shard whose master serves no slots yet, followed by the
/// rest of its shard, is no problem while every slot is served: slots are
/// moved to it after formation ([`slot_moves`]).
pub fn assess(
    targets: &[Target],
    observed: &[Option<Observation>],
    leaving: &[Target],
    leaving_observed: &[Option<Observation>],
) -> Vec<ClusterProblem> {
    let running: Vec<usize> = (0..leaving.len())
        .filter(|&i| leaving_observed.get(i).is_some_and(Option::is_some))
        .collect();
    let mut all = members(targets);
    all.extend(running.iter().map(|&i| members(&leaving[i..=i]).remove(0)));
    let mut views: Vec<Option<Observation>> = observed.to_vec();
    views.extend(running.iter().map(|&i| leaving_observed[i].clone()));
    // One that leaves and no longer runs is being forgotten (RemoveNode):
    // the others still listing it is no problem of formation's.
    let stopped: Vec<&Target> = (0..leaving.len())
        .filter(|i| !running.contains(i))
        .map(|i| &leaving[i])
        .collect();
    for o in views.iter_mut().flatten() {
        o.nodes
            .retain(|n| !stopped.iter().any(|t| n.addr_is(t.ip, t.port)));
    }
    let problems = assess_members(&all, &views);
    let own: Vec<Option<&NodeLine>> = views
        .iter()
        .map(|o| o.as_ref().and_then(Observation::myself))
        .collect();
    let served: u32 = own
        .iter()
        .flatten()
        .filter(|n| n.is_master())
        .map(|n| n.slot_count())
        .sum();
    if served != SLOTS {
        return problems;
    }
    problems
        .into_iter()
        .filter(|p| match p {
            ClusterProblem::ShardWithoutMaster { shard } => !empty_shard(&all, &own, *shard),
            _ => true,
        })
        .collect()
}

/// The shard's members: exactly one master, without slots, that the others
/// replicate.
fn empty_shard(members: &[crate::cluster::Member], own: &[Option<&NodeLine>], shard: u32) -> bool {
    let in_shard: Vec<Option<&NodeLine>> = (0..members.len())
        .filter(|&i| members[i].shard == shard)
        .map(|i| own[i])
        .collect();
    let masters: Vec<&NodeLine> = in_shard
        .iter()
        .flatten()
        .copied()
        .filter(|n| n.is_master())
        .collect();
    match masters.as_slice() {
        [m] => in_shard.iter().all(|n| {
            n.is_some_and(|n| n.id == m.id || n.master_id.as_deref() == Some(m.id.as_str()))
        }),
        _ => false,
    }
}

/// The master target `i`'s own view reports, with its slots.
fn master_line(observed: &[Option<Observation>], i: usize) -> Option<&NodeLine> {
    observed
        .get(i)?
        .as_ref()?
        .myself()
        .filter(|n| n.is_master())
}

/// Pure: the moves that give every master that stays an even share and
/// drain the masters that leave (`slots::plan_moves`, redis-cli's 2 %
/// threshold). Planned on a healthy cluster ([`assess`]), where every
/// target that is a master is its shard's one master.
pub fn slot_moves(
    targets: &[Target],
    observed: &[Option<Observation>],
    leaving: &[Target],
    leaving_observed: &[Option<Observation>],
    loads: &[crate::engine::migrate::MasterLoad],
) -> Vec<PlannedMove> {
    moves_with(targets, observed, &[], leaving, leaving_observed, loads)
}

/// Pure: the moves [`slot_moves`] will plan once the masters in `joining`
/// (indexes into `targets`: masters this plan creates) have joined empty,
/// for `paddock plan` to show before their node ids exist. Their moves
/// name them by label, with an empty node id.
pub fn moves_after_joining(
    targets: &[Target],
    observed: &[Option<Observation>],
    joining: &[usize],
    leaving: &[Target],
    leaving_observed: &[Option<Observation>],
    loads: &[crate::engine::migrate::MasterLoad],
) -> Vec<PlannedMove> {
    if joining.is_empty() {
        return Vec::new();
    }
    let mut moves = moves_with(targets, observed, joining, leaving, leaving_observed, loads);
    for m in &mut moves {
        for id in [&mut m.from_id, &mut m.to_id] {
            if id.starts_with(JOINING) {
                id.clear();
            }
        }
    }
    moves
}

/// The stand-in node id of a master not created yet.
const JOINING: &str = "joining:";

fn moves_with(
    targets: &[Target],
    observed: &[Option<Observation>],
    joining: &[usize],
    leaving: &[Target],
    leaving_observed: &[Option<Observation>],
    loads: &[crate::engine::migrate::MasterLoad],
) -> Vec<PlannedMove> {
    let mut current = SlotMap::new();
    let mut wanted = Vec::new();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        let (id, slots) = match master_line(observed, i) {
            Some(m) => (m.id.clone(), ranges(&m.slots)),
            None if joining.contains(&i) => (format!("{JOINING}{}", t.label()), Ranges::new()),
            None => continue,
        };
        current.assign(&id, slots);
        labels.insert(id.clone(), t.label());
        wanted.push(Wanted {
            node: id,
            weight: 1,
        });
    }
    for (i, t) in leaving.iter().enumerate() {
        if let Some(m) = master_line(leaving_observed, i) {
            current.assign(&m.id, ranges(&m.slots));
            labels.insert(m.id.clone(), t.label());
            wanted.push(Wanted {
                node: m.id.clone(),
                weight: 0,
            });
        }
    }
    let Balance::Moves(moves) = crate::slots::plan_moves(&current, &wanted, DEFAULT_THRESHOLD_PCT)
    else {
        return Vec::new();
    };
    // Estimates from what each source holds (`engine::migrate`); labels
    // from the views, whatever could be read.
    let mut planned = crate::engine::migrate::planned_moves(&moves, loads);
    for p in &mut planned {
        p.from = labels.get(&p.from_id).cloned().unwrap_or_default();
        p.to = labels.get(&p.to_id).cloned().unwrap_or_default();
    }
    planned
}

fn ranges(slots: &[(u32, u32)]) -> Ranges {
    Ranges::from_ranges(slots.iter().filter_map(|&(a, b)| {
        Some(SlotRange::new(
            u16::try_from(a).ok()?,
            u16::try_from(b).ok()?,
        ))
    }))
}

/// Pure: the removal of every running instance that leaves and, once
/// `moves` are carried out, serves no slot: stopped, then forgotten by
/// every other node. A master that would still serve slots is never
/// removed (nor are the others of that apply: the next round sees why).
///
/// One that no longer runs but that the others still list (an apply cut
/// short after stopping it) is forgotten by them, once it holds no slot.
pub fn removals(
    leaving: &[Target],
    leaving_observed: &[Option<Observation>],
    observed: &[Option<Observation>],
    moves: &[PlannedMove],
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (t, o) in leaving.iter().zip(leaving_observed) {
        let heard = || observed.iter().flatten().find_map(|v| v.find(t.ip, t.port));
        let Some(me) = o.as_ref().and_then(Observation::myself).or_else(heard) else {
            continue;
        };
        let moved: Vec<(u32, u32)> = moves
            .iter()
            .filter(|m| m.from_id == me.id)
            .flat_map(|m| m.ranges.iter().map(|&(a, b)| (u32::from(a), u32::from(b))))
            .collect();
        let drained = me
            .slots
            .iter()
            .all(|&(a, b)| (a..=b).all(|s| moved.iter().any(|&(x, y)| x <= s && s <= y)));
        if !drained || !me.open_slots.is_empty() {
            return Vec::new();
        }
        steps.push(Step::RemoveNode {
            target: t.label(),
            node_id: me.id.clone(),
        });
    }
    steps
}
