//! Redis Cluster knowledge that needs no IO: parsing CLUSTER NODES, slot
//! ranges, and judging whether observed nodes form the inventory's shape.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::problem::ClusterProblem;

pub use paddock_knowledge::nodes::{Direction, OpenSlot, SLOTS};

/// One line of CLUSTER NODES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub flags: Vec<String>,
    pub master_id: Option<String>,
    pub config_epoch: u64,
    pub connected: bool,
    /// Inclusive ranges this node serves.
    pub slots: Vec<(u32, u32)>,
    /// Migrating/importing markers (shown as "[93->-e7d1...]"): a
    /// resharding that did not finish.
    pub open_slots: Vec<OpenSlot>,
}

impl NodeLine {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    pub fn is_myself(&self) -> bool {
        self.has_flag("myself")
    }
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }
    pub fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }
    /// Known for real: handshake finished, address known, not failed.
    pub fn is_settled(&self) -> bool {
        !["handshake", "noaddr", "fail", "fail?"]
            .iter()
            .any(|f| self.has_flag(f))
    }
    pub fn slot_count(&self) -> u32 {
        self.slots.iter().map(|(a, b)| b - a + 1).sum()
    }
    pub fn addr_is(&self, ip: IpAddr, port: u16) -> bool {
        self.ip == Some(ip) && self.port == port
    }
}

/// Parses CLUSTER NODES output; malformed lines are skipped.
pub fn parse_nodes(text: &str) -> Vec<NodeLine> {
    paddock_knowledge::nodes::parse(text)
        .into_iter()
        .map(NodeLine::from)
        .collect()
}

/// The controller's view of a parsed line: flags and open slots as Redis
/// writes them, which its judgments print.
impl From<paddock_knowledge::nodes::ClusterNode> for NodeLine {
    fn from(n: paddock_knowledge::nodes::ClusterNode) -> Self {
        NodeLine {
            flags: n.flags.iter().map(|f| f.as_str().to_owned()).collect(),
            open_slots: n.open_slots,
            id: n.id,
            ip: n.ip,
            port: n.port,
            master_id: n.master_id,
            config_epoch: n.config_epoch,
            connected: n.connected,
            slots: n.slots,
        }
    }
}

/// The member that is master of a replication deployment: the one master
/// the others already replicate, else (nothing formed yet) None. A
/// deployment of one member (`replicas_per_master = 0`) is its master as
/// soon as it runs as one: there is nobody to replicate it.
pub fn replication_master(members: &[Member], observed: &[Option<Observation>]) -> Option<usize> {
    if let [_] = members
        && observed.first()?.as_ref()?.role_master == Some(true)
    {
        return Some(0);
    }
    let masters: Vec<usize> = (0..members.len())
        .filter(|&i| observed[i].as_ref().and_then(|o| o.role_master) == Some(true))
        .collect();
    let followers = |i: usize| {
        observed
            .iter()
            .flatten()
            .filter(|o| o.master_addr == Some((members[i].ip, members[i].port)))
            .count()
    };
    masters
        .into_iter()
        .filter(|&i| followers(i) > 0)
        .max_by_key(|&i| followers(i))
}

/// Problems keeping a replication deployment from being one master with
/// every other member its read replica, link up. Judged on roles, not on
/// placement: after a failover any member may be the master.
pub fn assess_replication(
    members: &[Member],
    observed: &[Option<Observation>],
) -> Vec<ClusterProblem> {
    let mut problems = Vec::new();
    for (m, o) in members.iter().zip(observed) {
        if o.as_ref().and_then(|o| o.role_master).is_none() {
            problems.push(ClusterProblem::NotAnswering {
                node: m.label.clone(),
            });
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    let Some(master) = replication_master(members, observed) else {
        return vec![ClusterProblem::NoReplicationMaster];
    };
    let at = (members[master].ip, members[master].port);
    for (i, (m, o)) in members.iter().zip(observed).enumerate() {
        let Some(o) = o else { continue };
        if i == master {
            continue;
        }
        if o.role_master == Some(true) {
            problems.push(ClusterProblem::AlsoMaster {
                node: m.label.clone(),
                master: members[master].label.clone(),
            });
        } else if o.master_addr != Some(at) {
            problems.push(ClusterProblem::ShouldReplicate {
                node: m.label.clone(),
                master: members[master].label.clone(),
            });
        } else if o.link_up != Some(true) {
            problems.push(ClusterProblem::LinkDown {
                node: m.label.clone(),
            });
        }
    }
    problems
}

/// The member of a shard that serves its slots: a master with slots in its
/// own view; when two claim it (an old master restarted after a failover,
/// not yet told), the higher config epoch wins, as in Redis.
pub fn shard_master<'a>(
    members: &[Member],
    observed: &'a [Option<Observation>],
    shard: u32,
) -> Option<&'a NodeLine> {
    members
        .iter()
        .zip(observed)
        .filter(|(m, _)| m.shard == shard)
        .filter_map(|(_, o)| o.as_ref().and_then(Observation::myself))
        .filter(|n| n.is_master() && n.slot_count() > 0)
        .max_by_key(|n| n.config_epoch)
}

/// The inclusive slot range of shard `i` of `masters`, spread evenly.
pub fn shard_slots(i: u32, masters: u32) -> (u32, u32) {
    (i * SLOTS / masters, (i + 1) * SLOTS / masters - 1)
}

/// Compresses ranges for display: "0-5460", "5461-10922,12000".
pub fn format_ranges(ranges: &[(u32, u32)]) -> String {
    join_ranges(ranges.iter().copied(), ",")
}

/// Ranges as "A-B" (or "A" for one slot), joined by `sep`.
pub fn join_ranges(ranges: impl IntoIterator<Item = (u32, u32)>, sep: &str) -> String {
    ranges
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(sep)
}

/// A node the inventory wants, as formation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// "host:instance" for messages.
    pub label: String,
    pub ip: IpAddr,
    pub port: u16,
    pub shard: u32,
    /// Redis Cluster (true) or plain master/replica replication (false).
    pub cluster: bool,
}

/// What one node reports about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    pub nodes: Vec<NodeLine>,
    pub state_ok: bool,
    /// For a replica: whether its link to the master is up (INFO replication).
    pub link_up: Option<bool>,
    /// INFO replication's role and, for a replica, its master's address.
    pub role_master: Option<bool>,
    pub master_addr: Option<(IpAddr, u16)>,
    /// For a master: the replicas INFO replication lists as online.
    pub replicas_online: Vec<(IpAddr, u16)>,
}

impl Observation {
    pub fn myself(&self) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.is_myself())
    }
    pub fn find(&self, ip: IpAddr, port: u16) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.addr_is(ip, port))
    }
}

/// Pure: member `i`'s state pieced together from what the other members
/// report about it, for a member that cannot be asked itself (its agent does
/// not answer). Cluster: a node that at least as many reporters see as
/// connected and settled as see otherwise, as the first of them lists it
/// (its own line marked `myself`). Replication: a master some member
/// replicates with its link up; a replica an answering master lists online.
/// None when nobody vouches for it: it is down as far as anyone knows.
pub fn hearsay(
    members: &[Member],
    observed: &[Option<Observation>],
    i: usize,
) -> Option<Observation> {
    let m = &members[i];
    let others = || {
        observed
            .iter()
            .enumerate()
            .filter(move |(j, _)| *j != i)
            .filter_map(|(_, o)| o.as_ref())
    };
    if !m.cluster {
        if others().any(|o| o.master_addr == Some((m.ip, m.port)) && o.link_up == Some(true)) {
            return Some(Observation {
                role_master: Some(true),
                state_ok: true,
                ..Observation::default()
            });
        }
        let master = members.iter().zip(observed).find_map(|(p, o)| {
            let o = o.as_ref()?;
            (o.role_master == Some(true) && o.replicas_online.contains(&(m.ip, m.port)))
                .then_some((p.ip, p.port))
        })?;
        return Some(Observation {
            role_master: Some(false),
            master_addr: Some(master),
            link_up: Some(true),
            state_ok: true,
            ..Observation::default()
        });
    }
    let alive = |n: &NodeLine| n.is_settled() && n.connected && (n.is_master() || n.is_replica());
    let views: Vec<&Observation> = others()
        .filter(|o| o.find(m.ip, m.port).is_some())
        .collect();
    let vouching: Vec<&Observation> = views
        .iter()
        .copied()
        .filter(|o| o.find(m.ip, m.port).is_some_and(alive))
        .collect();
    if vouching.is_empty() || vouching.len() * 2 < views.len() {
        return None;
    }
    let reporter = vouching[0];
    let nodes: Vec<NodeLine> = reporter
        .nodes
        .iter()
        .map(|n| {
            let mut n = n.clone();
            n.flags.retain(|f| f != "myself");
            if n.addr_is(m.ip, m.port) {
                n.flags.insert(0, "myself".into());
            }
            n
        })
        .collect();
    let me = nodes.iter().find(|n| n.is_myself())?;
    let master_addr = me
        .master_id
        .as_deref()
        .and_then(|id| nodes.iter().find(|n| n.id == id))
        .and_then(|n| Some((n.ip?, n.port)));
    Some(Observation {
        role_master: Some(me.is_master()),
        master_addr,
        // What the node itself would say is unknown; only a failure counts.
        link_up: None,
        state_ok: reporter.state_ok,
        replicas_online: Vec::new(),
        nodes,
    })
}

/// Everything that keeps the observed cluster from being a healthy cluster of
/// the inventory's shape. Empty means healthy. Roles are judged per shard,
/// not per host: after a failover the former replica is a fine master.
pub fn assess(members: &[Member], observed: &[Option<Observation>]) -> Vec<ClusterProblem> {
    if members.first().is_some_and(|m| !m.cluster) {
        return assess_replication(members, observed);
    }
    let mut problems = Vec::new();
    let ids = own_views(members, observed, &mut problems);
    if problems.len() == members.len() {
        return problems;
    }
    for (i, (m, o)) in members.iter().zip(observed).enumerate() {
        let Some(o) = o else { continue };
        peer_view_problems(members, &ids, i, o, &mut problems);
        node_problems(members, m, o, &mut problems);
    }
    open_slot_problems(members, &ids, &mut problems);
    shard_problems(members, &ids, &mut problems);
    problems
}

/// Each member's view of itself (its `myself` line), reporting the
/// members that gave none.
fn own_views<'a>(
    members: &[Member],
    observed: &'a [Option<Observation>],
    problems: &mut Vec<ClusterProblem>,
) -> Vec<Option<&'a NodeLine>> {
    let mut ids: Vec<Option<&NodeLine>> = Vec::with_capacity(members.len());
    for (m, o) in members.iter().zip(observed) {
        match o.as_ref().and_then(Observation::myself) {
            Some(me) => ids.push(Some(me)),
            None => {
                problems.push(ClusterProblem::NotAnswering {
                    node: m.label.clone(),
                });
                ids.push(None);
            }
        }
    }
    ids
}

/// How member `i`'s view `o` sees every other member: known, settled and
/// agreeing with the peer's own view of itself.
fn peer_view_problems(
    members: &[Member],
    ids: &[Option<&NodeLine>],
    i: usize,
    o: &Observation,
    problems: &mut Vec<ClusterProblem>,
) {
    let m = &members[i];
    for (j, peer) in members.iter().enumerate() {
        if i == j {
            continue;
        }
        match o.find(peer.ip, peer.port) {
            None => problems.push(ClusterProblem::DoesNotKnow {
                node: m.label.clone(),
                peer: peer.label.clone(),
                ip: peer.ip,
                port: peer.port,
            }),
            Some(n) if !n.is_settled() => problems.push(ClusterProblem::SeesAs {
                node: m.label.clone(),
                peer: peer.label.clone(),
                ip: peer.ip,
                port: peer.port,
                flags: n.flags.clone(),
            }),
            Some(n) => {
                // Every view must agree with the peer's own view of itself.
                if let Some(own) = ids[j]
                    && (n.id != own.id
                        || n.is_master() != own.is_master()
                        || n.master_id != own.master_id)
                {
                    problems.push(ClusterProblem::StaleView {
                        node: m.label.clone(),
                        peer: peer.label.clone(),
                    });
                }
            }
        }
    }
}

/// What member `m` reports about itself: nodes outside the inventory in
/// its view, cluster state and its replication link.
fn node_problems(
    members: &[Member],
    m: &Member,
    o: &Observation,
    problems: &mut Vec<ClusterProblem>,
) {
    let foreign: Vec<String> = o
        .nodes
        .iter()
        .filter(|n| !members.iter().any(|p| n.addr_is(p.ip, p.port)))
        .map(|n| match n.ip {
            Some(ip) => format!("{ip}:{}", n.port),
            None => n.id.clone(),
        })
        .collect();
    if !foreign.is_empty() {
        problems.push(ClusterProblem::ForeignNodes {
            node: m.label.clone(),
            nodes: foreign,
        });
    }
    if !o.state_ok {
        problems.push(ClusterProblem::StateNotOk {
            node: m.label.clone(),
        });
    }
    if o.link_up == Some(false) {
        problems.push(ClusterProblem::LinkDown {
            node: m.label.clone(),
        });
    }
}

/// Slots left migrating or importing, by the node's own view.
fn open_slot_problems(
    members: &[Member],
    ids: &[Option<&NodeLine>],
    problems: &mut Vec<ClusterProblem>,
) {
    for (m, me) in members.iter().zip(ids) {
        if let Some(me) = me
            && !me.open_slots.is_empty()
        {
            problems.push(ClusterProblem::OpenSlots {
                node: m.label.clone(),
                slots: me.open_slots.iter().map(ToString::to_string).collect(),
            });
        }
    }
}

/// Each shard has exactly one master with slots that its other members
/// replicate, and together the masters serve every slot.
fn shard_problems(
    members: &[Member],
    ids: &[Option<&NodeLine>],
    problems: &mut Vec<ClusterProblem>,
) {
    let shards: BTreeSet<u32> = members.iter().map(|m| m.shard).collect();
    let mut covered = 0;
    let mut masterless = false;
    for shard in shards {
        let in_shard: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].shard == shard)
            .collect();
        let masters: Vec<&NodeLine> = in_shard
            .iter()
            .filter_map(|&i| ids[i])
            .filter(|n| n.is_master() && n.slot_count() > 0)
            .collect();
        match masters.as_slice() {
            [master] => {
                covered += master.slot_count();
                for &i in &in_shard {
                    if let Some(n) = ids[i]
                        && n.id != master.id
                        && n.master_id.as_deref() != Some(master.id.as_str())
                    {
                        problems.push(ClusterProblem::ShouldReplicateShard {
                            node: members[i].label.clone(),
                            shard,
                        });
                    }
                }
            }
            [] => {
                masterless = true;
                problems.push(ClusterProblem::ShardWithoutMaster { shard });
            }
            _ => problems.push(ClusterProblem::ShardManyMasters { shard }),
        }
    }
    // A shard without a master already says why its slots are not served.
    if covered != SLOTS && !masterless {
        problems.push(ClusterProblem::SlotsUnserved { served: covered });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c3 127.0.1.1:7000@17000 myself,master - 0 0 1 connected 0-5460
67ed 127.0.1.2:7000@17000 master - 0 1426238317239 2 connected 5461-10922 [10923->-292f]
292f 127.0.1.3:7000@17000 master - 0 1426238318243 3 connected 10923-16383
6ec2 127.0.1.2:7001@17001 slave 07c3 0 1426238316232 1 connected
824f :0@0 handshake,noaddr - 0 0 0 disconnected
";

    #[test]
    fn parses_cluster_nodes() {
        let nodes = parse_nodes(NODES);
        assert_eq!(nodes.len(), 5);
        assert!(nodes[0].is_myself() && nodes[0].is_master());
        assert_eq!(nodes[0].slots, vec![(0, 5460)]);
        assert_eq!(
            nodes[1].slots,
            vec![(5461, 10922)],
            "migration markers apart"
        );
        let open: Vec<String> = nodes[1]
            .open_slots
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(open, vec!["[10923->-292f]"]);
        assert_eq!(nodes[3].master_id.as_deref(), Some("07c3"));
        assert!(nodes[3].is_replica());
        assert_eq!(nodes[4].ip, None);
        assert!(!nodes[4].is_settled());
    }

    #[test]
    fn shards_cover_every_slot_once() {
        for masters in 1..=10 {
            let mut next = 0;
            for i in 0..masters {
                let (a, b) = shard_slots(i, masters);
                assert_eq!(a, next);
                next = b + 1;
            }
            assert_eq!(next, SLOTS);
        }
    }

    fn member(n: u8, port: u16, shard: u32) -> Member {
        Member {
            label: format!("box{n}:{port}"),
            ip: format!("127.0.1.{n}").parse().unwrap(),
            port,
            shard,
            cluster: true,
        }
    }

    fn line(id: &str, n: u8, port: u16, flags: &str, master: &str, slots: &str) -> String {
        format!("{id} 127.0.1.{n}:{port}@1{port} {flags} {master} 0 0 1 connected {slots}")
    }

    /// Builds each node's own view of a cluster given (id, box, port, master, slots).
    fn cluster(nodes: &[(&str, u8, u16, &str, &str)]) -> Vec<Option<Observation>> {
        nodes
            .iter()
            .map(|me| {
                let text: Vec<String> = nodes
                    .iter()
                    .map(|n| {
                        let role = if n.3 == "-" { "master" } else { "slave" };
                        let flags = if n.0 == me.0 {
                            format!("myself,{role}")
                        } else {
                            role.to_owned()
                        };
                        line(n.0, n.1, n.2, &flags, n.3, n.4)
                    })
                    .collect();
                Some(Observation {
                    nodes: parse_nodes(&text.join("\n")),
                    state_ok: true,
                    link_up: (me.3 != "-").then_some(true),
                    role_master: Some(me.3 == "-"),
                    master_addr: None,
                    replicas_online: Vec::new(),
                })
            })
            .collect()
    }

    fn members() -> Vec<Member> {
        vec![
            member(1, 7000, 0),
            member(2, 7000, 1),
            member(3, 7000, 2),
            member(2, 7001, 0),
            member(3, 7001, 1),
            member(1, 7001, 2),
        ]
    }

    const HEALTHY: [(&str, u8, u16, &str, &str); 6] = [
        ("a", 1, 7000, "-", "0-5460"),
        ("b", 2, 7000, "-", "5461-10922"),
        ("c", 3, 7000, "-", "10923-16383"),
        ("d", 2, 7001, "a", ""),
        ("e", 3, 7001, "b", ""),
        ("f", 1, 7001, "c", ""),
    ];

    #[test]
    fn healthy_cluster_has_no_problems() {
        assert_eq!(
            assess(&members(), &cluster(&HEALTHY)),
            Vec::<ClusterProblem>::new()
        );
    }

    #[test]
    fn failed_over_shard_is_still_healthy() {
        let mut nodes = HEALTHY;
        nodes[0] = ("a", 1, 7000, "d", "");
        nodes[3] = ("d", 2, 7001, "-", "0-5460");
        assert_eq!(
            assess(&members(), &cluster(&nodes)),
            Vec::<ClusterProblem>::new()
        );
    }

    #[test]
    fn missing_replica_link_and_slots_are_reported() {
        let mut nodes = HEALTHY;
        nodes[4] = ("e", 3, 7001, "-", "");
        nodes[2] = ("c", 3, 7000, "-", "10923-16000");
        let problems = assess(&members(), &cluster(&nodes));
        assert!(
            problems
                .iter()
                .any(|p| p.to_string() == "box3:7001: should replicate shard 1's master"),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.to_string() == "16001 of 16384 slots are served"),
            "{problems:?}"
        );
    }

    #[test]
    fn unserved_slots_are_reported_only_when_every_shard_has_a_master() {
        let unserved = |p: &[ClusterProblem]| {
            p.iter().find_map(|p| match p {
                ClusterProblem::SlotsUnserved { served } => Some(*served),
                _ => None,
            })
        };
        let masterless = |p: &[ClusterProblem]| {
            p.iter()
                .filter_map(|p| match p {
                    ClusterProblem::ShardWithoutMaster { shard } => Some(*shard),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // (change to the healthy cluster, slots served reported, shards without a master)
        type Case = (usize, (&'static str, u8, u16, &'static str, &'static str));
        let table: [(Option<Case>, Option<u32>, Vec<u32>); 4] = [
            (None, None, vec![]),
            (
                Some((2, ("c", 3, 7000, "-", "10923-16000"))),
                Some(16001),
                vec![],
            ),
            // Shard 2's master serves nothing: that says it, not a count.
            (Some((2, ("c", 3, 7000, "-", ""))), None, vec![2]),
            (Some((0, ("a", 1, 7000, "-", ""))), None, vec![0]),
        ];
        for (change, want_unserved, want_masterless) in table {
            let mut nodes = HEALTHY;
            if let Some((i, n)) = change {
                nodes[i] = n;
            }
            let problems = assess(&members(), &cluster(&nodes));
            assert_eq!(unserved(&problems), want_unserved, "{problems:?}");
            assert_eq!(masterless(&problems), want_masterless, "{problems:?}");
        }
    }

    #[test]
    fn unformed_nodes_are_reported_per_peer() {
        let observed: Vec<Option<Observation>> = HEALTHY
            .iter()
            .map(|n| cluster(&[*n]).pop().unwrap())
            .collect();
        let problems = assess(&members(), &observed);
        assert!(
            problems
                .iter()
                .any(|p| p.to_string() == "box1:7000: does not know box2:7000 (127.0.1.2:7000)"),
            "{problems:?}"
        );
    }

    fn replica_of(master: Option<(u8, u16)>) -> Option<Observation> {
        Some(Observation {
            nodes: Vec::new(),
            state_ok: true,
            link_up: master.map(|_| true),
            role_master: Some(master.is_none()),
            master_addr: master.map(|(n, p)| (format!("127.0.1.{n}").parse().unwrap(), p)),
            replicas_online: Vec::new(),
        })
    }

    #[test]
    fn replication_is_judged_on_who_follows_whom() {
        let one = [member(1, 7000, 0)];
        let two = [member(1, 7000, 0), member(2, 7000, 0)];
        // (members, what each reports, the master, how many problems)
        type Case<'a> = (&'a [Member], Vec<Option<Observation>>, Option<usize>, usize);
        let cases: Vec<Case<'_>> = vec![
            // A lone master (no replicas asked for) is the master, healthy.
            (&one, vec![replica_of(None)], Some(0), 0),
            // A lone member that runs as a replica of someone is not.
            (&one, vec![replica_of(Some((2, 7000)))], None, 1),
            (&one, vec![None], None, 1),
            // Two masters, nobody follows: not formed yet.
            (&two, vec![replica_of(None), replica_of(None)], None, 1),
            (
                &two,
                vec![replica_of(Some((2, 7000))), replica_of(None)],
                Some(1),
                0,
            ),
        ];
        for (members, observed, master, problems) in cases {
            assert_eq!(
                replication_master(members, &observed),
                master,
                "{observed:?}"
            );
            assert_eq!(
                assess_replication(members, &observed).len(),
                problems,
                "{observed:?}"
            );
        }
    }

    #[test]
    fn not_running_node_is_reported() {
        let mut observed = cluster(&HEALTHY);
        observed[5] = None;
        let problems = assess(&members(), &observed);
        assert!(
            problems.contains(&ClusterProblem::NotAnswering {
                node: "box1:7001".into()
            }),
            "{problems:?}"
        );
    }

    #[test]
    fn each_node_reports_its_own_faults_in_order() {
        let node = |label: &str| label.to_owned();
        // Faults a node reports about itself: (which member, what it says).
        type Fault = fn(&mut Observation);
        let foreign: Fault = |o| {
            o.nodes.extend(parse_nodes(
                "zz 127.0.1.9:7000@17000 master - 0 0 0 connected\n",
            ))
        };
        let state: Fault = |o| o.state_ok = false;
        let link: Fault = |o| o.link_up = Some(false);
        let open: Fault = |o| {
            let me = o.nodes.iter_mut().find(|n| n.is_myself()).unwrap();
            me.open_slots = vec![OpenSlot {
                slot: 5,
                direction: Direction::Migrating,
                node_id: "b".into(),
            }];
        };
        let foreign_nodes = ClusterProblem::ForeignNodes {
            node: node("box1:7000"),
            nodes: vec!["127.0.1.9:7000".into()],
        };
        let open_slots = ClusterProblem::OpenSlots {
            node: node("box1:7000"),
            slots: vec!["[5->-b]".into()],
        };
        let state_not_ok = ClusterProblem::StateNotOk {
            node: node("box1:7000"),
        };
        type Case = (Vec<(usize, Fault)>, Vec<ClusterProblem>);
        let table: Vec<Case> = vec![
            (vec![(0, foreign)], vec![foreign_nodes.clone()]),
            (vec![(0, state)], vec![state_not_ok.clone()]),
            (
                vec![(3, link)],
                vec![ClusterProblem::LinkDown {
                    node: node("box2:7001"),
                }],
            ),
            (vec![(0, open)], vec![open_slots.clone()]),
            // Open slots come after every node's own report.
            (
                vec![(0, open), (0, state), (0, foreign)],
                vec![foreign_nodes, state_not_ok, open_slots],
            ),
        ];
        for (faults, want) in table {
            let mut observed = cluster(&HEALTHY);
            for (i, fault) in &faults {
                fault(observed[*i].as_mut().unwrap());
            }
            assert_eq!(assess(&members(), &observed), want);
        }
    }

    #[test]
    fn a_silent_node_is_judged_from_the_others_views() {
        let full = cluster(&HEALTHY);
        // (which member cannot be asked, what the others say of it, expected)
        // (is master, slot count) of what is pieced together.
        type Seen = Option<(bool, u32)>;
        let table: [(usize, Option<&str>, Seen); 4] = [
            // Healthy behind a dead agent: serving, with its slots.
            (0, None, Some((true, 5461))),
            (3, None, Some((false, 0))),
            // Every other node has flagged it failing: down.
            (0, Some("master,fail"), None),
            (3, Some("slave,fail?"), None),
        ];
        for (i, flags, want) in table {
            let mut observed = full.clone();
            observed[i] = None;
            if let Some(flags) = flags {
                for o in observed.iter_mut().flatten() {
                    for n in &mut o.nodes {
                        if n.addr_is(members()[i].ip, members()[i].port) {
                            n.flags = flags.split(',').map(str::to_owned).collect();
                        }
                    }
                }
            }
            let got = hearsay(&members(), &observed, i);
            let me = got.as_ref().and_then(|o| o.myself().cloned());
            assert_eq!(
                me.map(|m| (m.is_master(), m.slot_count())),
                want,
                "member {i} flags {flags:?}"
            );
            if let Some(o) = got {
                observed[i] = Some(o);
                assert_eq!(assess(&members(), &observed), Vec::<ClusterProblem>::new());
            }
        }
    }

    #[test]
    fn a_silent_replication_member_is_judged_from_its_peers() {
        let ip = |n: u8| -> IpAddr { format!("127.0.1.{n}").parse().unwrap() };
        let repl = |n: u8| Member {
            cluster: false,
            ..member(n, 6379, 0)
        };
        let members = vec![repl(1), repl(2), repl(3)];
        let master = Observation {
            role_master: Some(true),
            state_ok: true,
            replicas_online: vec![(ip(2), 6379)],
            ..Observation::default()
        };
        let replica = Observation {
            role_master: Some(false),
            master_addr: Some((ip(1), 6379)),
            link_up: Some(true),
            state_ok: true,
            ..Observation::default()
        };
        let observed = vec![None, Some(replica.clone()), Some(replica.clone())];
        assert_eq!(
            hearsay(&members, &observed, 0).and_then(|o| o.role_master),
            Some(true)
        );
        let observed = vec![Some(master.clone()), None, Some(replica.clone())];
        assert_eq!(
            hearsay(&members, &observed, 1).and_then(|o| o.master_addr),
            Some((ip(1), 6379))
        );
        // Not listed online by the master: nobody vouches for it.
        let observed = vec![Some(master), Some(replica), None];
        assert_eq!(hearsay(&members, &observed, 2), None);
    }
}
