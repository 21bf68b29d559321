//! Where a cluster's masters run, judged without IO: one host holding more
//! than its share, or holding so many that its loss leaves the rest without
//! the majority Redis Cluster needs to elect replicas; and the coordinated
//! failovers (which replica of which shard) that spread them again.

use std::collections::VecDeque;
use std::fmt;

use paddock_inventory::{loss_is_fatal, master_limit};

use crate::cluster::{Observation, shard_master};
use crate::fleet::{Target, members};

/// One cluster node as balancing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// "host:instance".
    pub label: String,
    pub host: String,
    pub shard: u32,
    pub role: NodeRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Serves its shard's slots.
    Master,
    /// Replicates its shard's serving master with the link up: CLUSTER
    /// FAILOVER there loses nothing.
    InSyncReplica,
    /// Down, not linked, or not (yet) following its shard's master.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A host holds more than ceil(masters / hosts) masters.
    Crowded {
        host: String,
        masters: u32,
        limit: u32,
        total: u32,
        hosts: u32,
    },
    /// Losing this host leaves the other masters without a majority.
    FatalLoss {
        host: String,
        shards: Vec<u32>,
        total: u32,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Crowded {
                host,
                masters,
                limit,
                total,
                hosts,
            } => write!(
                f,
                "{host} holds {masters} of the {total} masters (at most {limit} per host: {total} masters on {hosts} hosts)"
            ),
            Problem::FatalLoss {
                host,
                shards,
                total,
            } => crate::problem::write_fatal_loss(f, host, shards, *total),
        }
    }
}

/// A coordinated CLUSTER FAILOVER: `to` (an in-sync replica) takes `shard`
/// over from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub shard: u32,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shard {}: {} takes over from {} (CLUSTER FAILOVER)",
            self.shard, self.to, self.from
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Balance {
    /// What is wrong now.
    pub problems: Vec<Problem>,
    /// The failovers that fix what can be fixed, in the order to run them.
    pub moves: Vec<Move>,
    /// What is still wrong after them.
    pub remaining: Vec<Problem>,
    /// Whether `remaining` is the placement's doing: even with every
    /// replica in sync no failover would do better (`paddock validate`
    /// warns about it). Otherwise replicas that are down or behind block
    /// the moves for now.
    pub inherent: bool,
}

/// What follows a problem no failover can ever fix.
pub const UNAVOIDABLE: &str = "no failover can avoid it with these hosts (see `paddock validate`)";
/// What follows a problem failovers cannot fix yet.
pub const BLOCKED: &str = "no in-sync replica can take over where it would help yet (down or still syncing); apply spreads the masters once one can";

impl Balance {
    /// Every problem with where the masters run now that makes the
    /// deployment unhealthy (all but the unavoidable), as text.
    pub fn unhealthy(&self) -> Vec<String> {
        self.fixable()
            .iter()
            .map(ToString::to_string)
            .chain(self.blocked().iter().map(|p| format!("{p}; {BLOCKED}")))
            .collect()
    }

    /// The unavoidable problems, as warnings.
    pub fn warnings(&self) -> Vec<String> {
        self.unavoidable()
            .iter()
            .map(|p| format!("{p}; {UNAVOIDABLE}"))
            .collect()
    }

    /// Problems that the moves fix (apply's business).
    pub fn fixable(&self) -> Vec<&Problem> {
        self.problems
            .iter()
            .filter(|p| !self.remaining.contains(p))
            .collect()
    }

    /// What no failover can fix now, but will once replicas are back.
    pub fn blocked(&self) -> &[Problem] {
        if self.inherent { &[] } else { &self.remaining }
    }

    /// What no failover can ever fix with these hosts.
    pub fn unavoidable(&self) -> &[Problem] {
        if self.inherent { &self.remaining } else { &[] }
    }
}

/// What is wrong with where the masters run. `hosts` are the hosts that
/// hold cluster nodes; `total` the shards.
fn problems(hosts: &[String], masters_on: &[Vec<u32>], total: u32) -> Vec<Problem> {
    let limit = master_limit(total, hosts.len());
    let mut out = Vec::new();
    for (host, shards) in hosts.iter().zip(masters_on) {
        let masters = shards.len() as u32;
        if masters > limit {
            out.push(Problem::Crowded {
                host: host.clone(),
                masters,
                limit,
                total,
                hosts: hosts.len() as u32,
            });
        }
    }
    for (host, shards) in hosts.iter().zip(masters_on) {
        if loss_is_fatal(shards.len() as u32, total) {
            out.push(Problem::FatalLoss {
                host: host.clone(),
                shards: shards.clone(),
                total,
            });
        }
    }
    out
}

/// Judges the observed roles and, when something is wrong, plans the
/// failovers that spread the masters as evenly as the replicas allow.
///
/// Each step moves a master off the most loaded host along a chain of
/// shards (host A's shard to its replica on B, one of B's shards to C, ...)
/// that ends on a host with at least two fewer masters; such a chain exists
/// as long as the spread can be improved, and every chain lowers the sum of
/// squared loads, so planning ends.
pub fn judge(nodes: &[Node]) -> Balance {
    let mut balance = spread(nodes);
    if !balance.remaining.is_empty() {
        // The same cluster with every replica in sync: the best the
        // placement allows.
        let ideal: Vec<Node> = nodes
            .iter()
            .map(|n| Node {
                role: match n.role {
                    NodeRole::Master => NodeRole::Master,
                    _ => NodeRole::InSyncReplica,
                },
                ..n.clone()
            })
            .collect();
        balance.inherent = spread(&ideal).remaining.len() >= balance.remaining.len();
    }
    balance
}

fn spread(nodes: &[Node]) -> Balance {
    let mut hosts: Vec<String> = Vec::new();
    for n in nodes {
        if !hosts.contains(&n.host) {
            hosts.push(n.host.clone());
        }
    }
    let mut shards: Vec<u32> = nodes.iter().map(|n| n.shard).collect();
    shards.sort_unstable();
    shards.dedup();
    let total = shards.len() as u32;
    let host_of = |label: &str| -> usize {
        let n = nodes.iter().find(|n| n.label == label).expect("known node");
        hosts.iter().position(|h| *h == n.host).expect("known host")
    };
    // Per shard: its master's label, and the labels that could take over.
    let mut master: Vec<Option<String>> = shards
        .iter()
        .map(|&s| {
            nodes
                .iter()
                .find(|n| n.shard == s && n.role == NodeRole::Master)
                .map(|n| n.label.clone())
        })
        .collect();
    let mut heirs: Vec<Vec<String>> = shards
        .iter()
        .map(|&s| {
            nodes
                .iter()
                .filter(|n| n.shard == s && n.role == NodeRole::InSyncReplica)
                .map(|n| n.label.clone())
                .collect()
        })
        .collect();
    let masters_on = |master: &[Option<String>]| -> Vec<Vec<u32>> {
        let mut on = vec![Vec::new(); hosts.len()];
        for (i, m) in master.iter().enumerate() {
            if let Some(m) = m {
                on[host_of(m)].push(shards[i]);
            }
        }
        on
    };
    let now = problems(&hosts, &masters_on(&master), total);
    if now.is_empty() {
        return Balance::default();
    }
    let mut moves = Vec::new();
    // Bounded: each chain lowers the sum of squared loads by at least 2.
    for _ in 0..(total as usize + 1) * (total as usize + 1) {
        let load: Vec<usize> = masters_on(&master).iter().map(Vec::len).collect();
        let Some(chain) = improving_chain(&hosts, &load, &master, &heirs, &host_of) else {
            break;
        };
        // Run from the far end: the host receiving the last master has
        // room, and every host before it hands one off as it takes one.
        for &(i, ref to) in chain.iter().rev() {
            let from = master[i].clone().expect("chain shards have a master");
            moves.push(Move {
                shard: shards[i],
                from: from.clone(),
                to: to.clone(),
            });
            heirs[i].retain(|h| h != to);
            // The old master comes back as the new one's replica.
            heirs[i].push(from);
            master[i] = Some(to.clone());
        }
    }
    let remaining = problems(&hosts, &masters_on(&master), total);
    Balance {
        problems: now,
        moves,
        remaining,
        inherent: false,
    }
}

/// A chain of (shard index, heir label) from a most loaded host to a host
/// with at least two masters fewer, found breadth first (shortest).
fn improving_chain(
    hosts: &[String],
    load: &[usize],
    master: &[Option<String>],
    heirs: &[Vec<String>],
    host_of: &dyn Fn(&str) -> usize,
) -> Option<Vec<(usize, String)>> {
    let mut by_load: Vec<usize> = (0..hosts.len()).collect();
    by_load.sort_by_key(|&h| std::cmp::Reverse(load[h]));
    for &start in &by_load {
        if load[start] < 2 {
            break;
        }
        // prev[h]: how h was reached (previous host, shard, heir).
        let mut prev: Vec<Option<(usize, usize, String)>> = vec![None; hosts.len()];
        let mut seen = vec![false; hosts.len()];
        seen[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(a) = queue.pop_front() {
            if load[a] + 2 <= load[start] {
                let mut chain = Vec::new();
                let mut at = a;
                while let Some((p, shard, heir)) = prev[at].clone() {
                    chain.push((shard, heir));
                    at = p;
                }
                chain.reverse();
                return Some(chain);
            }
            for (i, m) in master.iter().enumerate() {
                let Some(m) = m else { continue };
                if host_of(m) != a {
                    continue;
                }
                for heir in &heirs[i] {
                    let b = host_of(heir);
                    if !seen[b] {
                        seen[b] = true;
                        prev[b] = Some((a, i, heir.clone()));
                        queue.push_back(b);
                    }
                }
            }
        }
    }
    None
}

/// The roles the nodes report, at the edge: each shard's serving master,
/// and the replicas linked to it.
pub fn roles(targets: &[Target], observed: &[Option<Observation>]) -> Vec<Node> {
    let members = members(targets);
    targets
        .iter()
        .zip(observed)
        .map(|(t, o)| {
            let master = shard_master(&members, observed, t.shard);
            let me = o.as_ref().and_then(Observation::myself);
            let role = match (me, master) {
                (Some(me), Some(m)) if me.id == m.id => NodeRole::Master,
                (Some(me), Some(m))
                    if me.master_id.as_deref() == Some(m.id.as_str())
                        && o.as_ref().and_then(|o| o.link_up) == Some(true) =>
                {
                    NodeRole::InSyncReplica
                }
                _ => NodeRole::Other,
            };
            Node {
                label: t.label(),
                host: t.host_name.clone(),
                shard: t.shard,
                role,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes from "host/instance shard role" words: M master, R in-sync
    /// replica, x other.
    fn nodes(spec: &[(&str, u32, char)]) -> Vec<Node> {
        spec.iter()
            .map(|&(label, shard, role)| Node {
                label: label.to_owned(),
                host: label.split(':').next().unwrap().to_owned(),
                shard,
                role: match role {
                    'M' => NodeRole::Master,
                    'R' => NodeRole::InSyncReplica,
                    _ => NodeRole::Other,
                },
            })
            .collect()
    }

    /// Masters per host after the moves.
    fn after(n: &[Node], b: &Balance) -> Vec<(String, usize)> {
        let mut master: Vec<(u32, String)> = n
            .iter()
            .filter(|n| n.role == NodeRole::Master)
            .map(|n| (n.shard, n.label.clone()))
            .collect();
        for m in &b.moves {
            let e = master.iter_mut().find(|(s, _)| *s == m.shard).unwrap();
            assert_eq!(e.1, m.from, "moves chain from the current master");
            e.1 = m.to.clone();
        }
        let mut hosts: Vec<String> = n.iter().map(|n| n.host.clone()).collect();
        hosts.dedup();
        hosts.sort();
        hosts.dedup();
        hosts
            .into_iter()
            .map(|h| {
                let c = master
                    .iter()
                    .filter(|(_, l)| l.starts_with(&format!("{h}:")))
                    .count();
                (h, c)
            })
            .collect()
    }

    // The lab: box1 7000 = shard 0, box2 7000 = shard 1, box3 7000 = shard 2,
    // replicas box2 7001 (0), box3 7001 (1), box1 7001 (2).
    const BALANCED: [(&str, u32, char); 6] = [
        ("box1:7000", 0, 'M'),
        ("box2:7000", 1, 'M'),
        ("box3:7000", 2, 'M'),
        ("box2:7001", 0, 'R'),
        ("box3:7001", 1, 'R'),
        ("box1:7001", 2, 'R'),
    ];

    #[test]
    fn one_master_per_host_is_fine() {
        assert_eq!(judge(&nodes(&BALANCED)), Balance::default());
    }

    #[test]
    fn two_masters_on_one_of_three_hosts() {
        // After the power loss: box1:7001 took shard 2 over.
        let mut spec = BALANCED;
        spec[2].2 = 'R';
        spec[5].2 = 'M';
        let n = nodes(&spec);
        let b = judge(&n);
        assert_eq!(
            b.problems,
            vec![
                Problem::Crowded {
                    host: "box1".into(),
                    masters: 2,
                    limit: 1,
                    total: 3,
                    hosts: 3
                },
                Problem::FatalLoss {
                    host: "box1".into(),
                    shards: vec![0, 2],
                    total: 3
                },
            ]
        );
        assert_eq!(
            b.problems[1].to_string(),
            "losing box1 would take out 2 of the 3 masters (shard 0, 2): the 1 left are not a majority, so no replica would be elected and the cluster would stay down (cluster_state:fail)"
        );
        assert_eq!(
            b.problems[0].to_string(),
            "box1 holds 2 of the 3 masters (at most 1 per host: 3 masters on 3 hosts)"
        );
        // Shard 2 back to box3, not shard 0 to box2 (which holds one already).
        assert_eq!(
            b.moves,
            vec![Move {
                shard: 2,
                from: "box1:7001".into(),
                to: "box3:7000".into()
            }]
        );
        assert!(b.remaining.is_empty());
        assert_eq!(b.fixable().len(), 2);
    }

    #[test]
    fn a_chain_when_no_direct_move_helps() {
        // box1 holds shards 0 and 1, both replicated only on box2, which
        // holds shard 2, replicated on box3: shard 2 moves first.
        let spec = [
            ("box1:a", 0, 'M'),
            ("box1:b", 1, 'M'),
            ("box2:a", 2, 'M'),
            ("box2:b", 0, 'R'),
            ("box2:c", 1, 'R'),
            ("box3:a", 2, 'R'),
        ];
        let n = nodes(&spec);
        let b = judge(&n);
        assert_eq!(b.moves.len(), 2, "{:?}", b.moves);
        assert_eq!(b.moves[0].shard, 2, "the far end first: {:?}", b.moves);
        assert_eq!(
            after(&n, &b),
            [("box1".into(), 1), ("box2".into(), 1), ("box3".into(), 1)]
        );
    }

    #[test]
    fn a_replica_out_of_sync_is_never_chosen() {
        let mut spec = BALANCED;
        spec[2].2 = 'R';
        spec[5].2 = 'M';
        spec[2].2 = 'x'; // box3:7000 not linked yet
        spec[3].2 = 'x'; // nor box2:7001
        let n = nodes(&spec);
        let b = judge(&n);
        assert!(b.moves.is_empty(), "{:?}", b.moves);
        assert!(!b.problems.is_empty());
        assert_eq!(b.remaining, b.problems, "nothing can fix it now");
        assert!(b.fixable().is_empty());
        assert_eq!(
            b.blocked(),
            b.problems,
            "but later: not the placement's doing"
        );
        assert!(b.unavoidable().is_empty());
        assert!(b.warnings().is_empty());
        assert_eq!(
            b.unhealthy()[0],
            format!(
                "box1 holds 2 of the 3 masters (at most 1 per host: 3 masters on 3 hosts); {BLOCKED}"
            )
        );
    }

    #[test]
    fn three_masters_on_one_of_six_hosts() {
        let spec = [
            ("h1:a", 0, 'M'),
            ("h1:b", 1, 'M'),
            ("h1:c", 2, 'M'),
            ("h4:a", 0, 'R'),
            ("h5:a", 1, 'R'),
            ("h6:a", 2, 'R'),
        ];
        let n = nodes(&spec);
        let b = judge(&n);
        assert_eq!(b.moves.len(), 2);
        assert!(b.remaining.is_empty());
        let per_host = after(&n, &b);
        assert!(per_host.iter().all(|(_, c)| *c <= 1), "{per_host:?}");
    }

    #[test]
    fn an_inherent_risk_is_not_chased() {
        // 3 masters on 2 hosts: box1 must hold two of them whatever runs.
        let spec = [
            ("box1:a", 0, 'M'),
            ("box2:a", 1, 'M'),
            ("box1:b", 2, 'M'),
            ("box2:b", 0, 'R'),
            ("box1:c", 1, 'R'),
            ("box2:c", 2, 'R'),
        ];
        let b = judge(&nodes(&spec));
        assert!(b.moves.is_empty(), "{:?}", b.moves);
        assert_eq!(
            b.remaining,
            vec![Problem::FatalLoss {
                host: "box1".into(),
                shards: vec![0, 2],
                total: 3
            }]
        );
        assert!(b.fixable().is_empty());
        assert!(b.blocked().is_empty());
        assert_eq!(b.unavoidable(), b.remaining);
    }

    #[test]
    fn four_masters_on_three_hosts_spread_two_one_one() {
        let spec = [
            ("h1:a", 0, 'M'),
            ("h1:b", 1, 'M'),
            ("h2:a", 2, 'M'),
            ("h2:b", 3, 'M'),
            ("h2:c", 0, 'R'),
            ("h3:a", 1, 'R'),
            ("h3:b", 2, 'R'),
            ("h1:c", 3, 'R'),
        ];
        let n = nodes(&spec);
        let b = judge(&n);
        assert_eq!(b.moves.len(), 1, "{:?}", b.moves);
        let mut loads: Vec<usize> = after(&n, &b).into_iter().map(|(_, c)| c).collect();
        loads.sort_unstable();
        assert_eq!(loads, [1, 1, 2]);
        // Losing the host with two of four masters stays fatal: validate's
        // warning, not apply's to fix.
        assert_eq!(b.remaining.len(), 1);
        assert!(matches!(b.remaining[0], Problem::FatalLoss { .. }));
        assert!(b.inherent);
    }

    #[test]
    fn a_shard_without_master_does_not_count_on_any_host() {
        let mut spec = BALANCED;
        spec[0].2 = 'x';
        spec[3].2 = 'x';
        assert_eq!(judge(&nodes(&spec)), Balance::default());
    }
}
