//! Zones, judged without IO: where a cluster's shards and masters sit
//! among the inventory's zones (`zone` on hosts). The same observed roles
//! as [`crate::balance`] (which judges hosts), plus each host's zone.
//!
//! Two risks: a shard whose serving copies (master and in-sync replicas)
//! all sit in one zone, and a zone whose loss takes out half or more of the
//! masters, so the rest cannot elect replicas. Each counts as a problem
//! when the zones allow better, and as a warning when they do not (the
//! placement itself, which `paddock validate` warns about).

use paddock_inventory::{loss_is_fatal, master_limit};

use crate::balance::{Node, NodeRole};
use crate::problem::ClusterProblem;

/// What follows a risk no placement can avoid with these zones.
pub const UNAVOIDABLE: &str = "no placement can avoid it with these zones (see `paddock validate`)";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Zones {
    /// Risks the zones allow to avoid: the deployment is not healthy.
    pub problems: Vec<ClusterProblem>,
    /// Risks these zones cannot avoid: warnings.
    pub unavoidable: Vec<ClusterProblem>,
}

impl Zones {
    /// The unavoidable risks, as warnings.
    pub fn warnings(&self) -> Vec<String> {
        self.unavoidable
            .iter()
            .map(|p| format!("{p}; {UNAVOIDABLE}"))
            .collect()
    }
}

/// Judges `nodes` (every cluster node with its placed shard and observed
/// role) against `zones`: each host's zone, as (host name, zone). With
/// fewer than two zones there is nothing to judge.
pub fn judge(nodes: &[Node], zones: &[(String, String)]) -> Zones {
    let zone_of = |host: &str| {
        zones
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, z)| z.as_str())
    };
    let mut names: Vec<&str> = zones.iter().map(|(_, z)| z.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Zones::default();
    if names.len() < 2 {
        return out;
    }
    let mut shards: Vec<u32> = nodes.iter().map(|n| n.shard).collect();
    shards.sort_unstable();
    shards.dedup();
    for &shard in &shards {
        let members: Vec<&Node> = nodes.iter().filter(|n| n.shard == shard).collect();
        let serving: Vec<&Node> = members
            .iter()
            .copied()
            .filter(|n| n.role != NodeRole::Other)
            .collect();
        let Some(zone) = one_zone(&serving, zone_of).filter(|_| serving.len() >= 2) else {
            continue;
        };
        let problem = ClusterProblem::ShardInOneZone {
            shard,
            zone: zone.to_owned(),
            nodes: serving.iter().map(|n| n.label.clone()).collect(),
        };
        // Its placed members span zones: bringing back the others helps.
        let spread = members.iter().any(|n| zone_of(&n.host) != Some(zone));
        push(&mut out, problem, spread);
    }
    let total = shards.len() as u32;
    // Placement puts no more than ceil(masters / zones) in one zone.
    let avoidable = !loss_is_fatal(master_limit(total, names.len()), total);
    for zone in names {
        let masters: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.role == NodeRole::Master && zone_of(&n.host) == Some(zone))
            .collect();
        let on_one_host = masters.iter().all(|m| m.host == masters[0].host);
        // Masters all on one host: `balance` already names that host.
        if !loss_is_fatal(masters.len() as u32, total) || on_one_host {
            continue;
        }
        let mut shards: Vec<u32> = masters.iter().map(|m| m.shard).collect();
        shards.sort_unstable();
        let problem = ClusterProblem::FatalZoneLoss {
            zone: zone.to_owned(),
            shards,
            total,
        };
        push(&mut out, problem, avoidable);
    }
    out
}

fn push(out: &mut Zones, problem: ClusterProblem, avoidable: bool) {
    if avoidable {
        out.problems.push(problem);
    } else {
        out.unavoidable.push(problem);
    }
}

/// The zone every node is in, if they share one.
fn one_zone<'z>(nodes: &[&Node], zone_of: impl Fn(&str) -> Option<&'z str>) -> Option<&'z str> {
    let first = zone_of(&nodes.first()?.host)?;
    nodes
        .iter()
        .all(|n| zone_of(&n.host) == Some(first))
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(host, shard, role)`; roles 'M' master, 'R' in-sync replica, 'x'
    /// down or not following. Labels are "host:shard".
    fn nodes(spec: &[(&str, u32, char)]) -> Vec<Node> {
        spec.iter()
            .map(|&(host, shard, role)| Node {
                label: format!("{host}:{shard}"),
                host: host.into(),
                shard,
                role: match role {
                    'M' => NodeRole::Master,
                    'R' => NodeRole::InSyncReplica,
                    _ => NodeRole::Other,
                },
            })
            .collect()
    }

    /// Host "a1" is in zone "a", and so on.
    fn zones(hosts: &[&str]) -> Vec<(String, String)> {
        hosts
            .iter()
            .map(|h| ((*h).to_owned(), h[..1].to_owned()))
            .collect()
    }

    fn texts(p: &[ClusterProblem]) -> Vec<String> {
        p.iter().map(ToString::to_string).collect()
    }

    const SIX: [&str; 6] = ["a1", "a2", "b1", "b2", "c1", "c2"];

    #[test]
    fn judgement_table() {
        let fatal_b = ClusterProblem::FatalZoneLoss {
            zone: "b".into(),
            shards: vec![0, 1],
            total: 3,
        };
        let fatal_a = ClusterProblem::FatalZoneLoss {
            zone: "a".into(),
            shards: vec![0, 2],
            total: 3,
        };
        let shard0_in_a = ClusterProblem::ShardInOneZone {
            shard: 0,
            zone: "a".into(),
            nodes: vec!["a1:0".into(), "a2:0".into()],
        };
        // (name, nodes, hosts with zones, problems, unavoidable)
        type Row = (
            &'static str,
            Vec<Node>,
            Vec<(String, String)>,
            Vec<ClusterProblem>,
            Vec<ClusterProblem>,
        );
        let table: Vec<Row> = vec![
            (
                "3 zones x 2 hosts, as placed",
                nodes(&[
                    ("a1", 0, 'M'),
                    ("b1", 1, 'M'),
                    ("c1", 2, 'M'),
                    ("b2", 0, 'R'),
                    ("c2", 1, 'R'),
                    ("a2", 2, 'R'),
                ]),
                zones(&SIX),
                vec![],
                vec![],
            ),
            (
                "a failover put shard 0's master in zone b, next to shard 1's",
                nodes(&[
                    ("a1", 0, 'R'),
                    ("b1", 1, 'M'),
                    ("c1", 2, 'M'),
                    ("b2", 0, 'M'),
                    ("c2", 1, 'R'),
                    ("a2", 2, 'R'),
                ]),
                zones(&SIX),
                vec![fatal_b.clone()],
                vec![],
            ),
            (
                "the same masters on one host: balance's business",
                nodes(&[
                    ("a1", 0, 'R'),
                    ("b1", 1, 'M'),
                    ("c1", 2, 'M'),
                    ("b1", 0, 'M'),
                    ("c2", 1, 'R'),
                    ("a2", 2, 'R'),
                ]),
                zones(&SIX),
                vec![],
                vec![],
            ),
            (
                "two zones: one always holds two of three masters",
                nodes(&[
                    ("a1", 0, 'M'),
                    ("b1", 1, 'M'),
                    ("a2", 2, 'M'),
                    ("b2", 0, 'R'),
                    ("a3", 1, 'R'),
                    ("b3", 2, 'R'),
                ]),
                zones(&["a1", "a2", "a3", "b1", "b2", "b3"]),
                vec![],
                vec![fatal_a],
            ),
            (
                "replicas 2: the copy in zone b is down, the two left are in a",
                nodes(&[
                    ("a1", 0, 'M'),
                    ("b1", 0, 'x'),
                    ("a2", 0, 'R'),
                    ("b1", 1, 'M'),
                    ("a1", 1, 'R'),
                    ("b2", 1, 'R'),
                    ("a2", 2, 'M'),
                    ("b2", 2, 'R'),
                    ("a1", 2, 'R'),
                ]),
                zones(&["a1", "a2", "b1", "b2"]),
                vec![shard0_in_a.clone()],
                // Two zones, three masters: a holds two, placed or not.
                vec![ClusterProblem::FatalZoneLoss {
                    zone: "a".into(),
                    shards: vec![0, 2],
                    total: 3,
                }],
            ),
            (
                "a shard placed in one zone (an older placement): a warning",
                nodes(&[
                    ("a1", 0, 'M'),
                    ("a2", 0, 'R'),
                    ("b1", 1, 'M'),
                    ("c1", 1, 'R'),
                    ("c1", 2, 'M'),
                    ("b1", 2, 'R'),
                ]),
                zones(&["a1", "a2", "b1", "c1"]),
                vec![],
                vec![shard0_in_a],
            ),
            (
                "only the master left: a lone copy, not a zone matter",
                nodes(&[
                    ("a1", 0, 'M'),
                    ("b1", 0, 'x'),
                    ("b1", 1, 'M'),
                    ("c1", 1, 'R'),
                    ("c1", 2, 'M'),
                    ("a1", 2, 'R'),
                ]),
                zones(&["a1", "b1", "c1"]),
                vec![],
                vec![],
            ),
        ];
        for (name, nodes, zones, problems, unavoidable) in table {
            let z = judge(&nodes, &zones);
            assert_eq!(texts(&z.problems), texts(&problems), "{name}");
            assert_eq!(texts(&z.unavoidable), texts(&unavoidable), "{name}");
        }
    }

    #[test]
    fn no_zones_or_one_zone_judge_nothing() {
        let piled = nodes(&[
            ("h1", 0, 'M'),
            ("h2", 0, 'R'),
            ("h1", 1, 'M'),
            ("h2", 1, 'R'),
        ]);
        assert_eq!(judge(&piled, &[]), Zones::default());
        let one: Vec<(String, String)> = ["h1", "h2"]
            .iter()
            .map(|h| ((*h).to_owned(), "dc".to_owned()))
            .collect();
        assert_eq!(judge(&piled, &one), Zones::default());
    }

    #[test]
    fn texts_say_what_is_lost() {
        let z = judge(
            &nodes(&[
                ("a1", 0, 'R'),
                ("b1", 1, 'M'),
                ("c1", 2, 'M'),
                ("b2", 0, 'M'),
                ("c2", 1, 'R'),
                ("a2", 2, 'R'),
            ]),
            &zones(&SIX),
        );
        assert_eq!(
            texts(&z.problems),
            [
                "losing zone b would take out 2 of the 3 masters (shard 0, 1): the 1 left are not a majority, so no replica would be elected and the cluster would stay down (cluster_state:fail)"
            ]
        );
        let shard = ClusterProblem::ShardInOneZone {
            shard: 0,
            zone: "a".into(),
            nodes: vec!["a1:redis-7000".into(), "a2:redis-7001".into()],
        };
        assert_eq!(
            shard.to_string(),
            "shard 0: its master and in-sync replicas (a1:redis-7000, a2:redis-7001) are all in zone a, so losing that zone loses the shard; bring back its replicas in other zones"
        );
        let warned = Zones {
            problems: vec![],
            unavoidable: vec![shard],
        };
        assert!(warned.warnings()[0].ends_with(UNAVOIDABLE));
    }
}
