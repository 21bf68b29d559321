//! Table tests of a change of shape: placement that keeps what runs, the
//! planner's moves and removals, over cluster views recorded in code.

use paddock_inventory::{Existing, Role, place, place_keeping};

use crate::client::{InstanceState, InstanceStatus, PutOutcome};
use crate::cluster::{NodeLine, Observation};
use crate::engine::observe::{Observed, TargetState};
use crate::engine::plan::{Input, make_plan};
use crate::engine::shape::{removals, slot_moves};
use crate::engine::step::{Plan, PlannedMove, Step};
use crate::fleet::{Deployment, Target};

/// A cluster deployment of `masters` x `replicas` on `hosts` hosts (no
/// files read), its placement keeping `existing`.
fn deployment(masters: u32, replicas: u32, hosts: usize, existing: &[Existing]) -> Deployment {
    let mut text = format!(
        "[deployment]\nname = \"t\"\ntopology = \"cluster\"\nmasters = {masters}\nreplicas_per_master = {replicas}\n"
    );
    for h in 0..hosts {
        text += &format!(
            "[[hosts]]\nname = \"h{h}\"\naddress = \"10.0.0.{}\"\n",
            h + 1
        );
    }
    let inventory = paddock_inventory::parse("t.toml", &text).unwrap();
    Deployment {
        inventory_path: "t.toml".into(),
        placement: place_keeping(&inventory, existing),
        user_passwords: Vec::new(),
        inventory,
        password_path: "pw".into(),
        password: Some("0123456789abcdef0123456789abcdef".into()),
        transport: crate::client::Transport::Plaintext,
    }
}

/// What a placement of `masters` x `replicas` on `hosts` hosts runs.
fn running_as(masters: u32, replicas: u32, hosts: usize) -> Vec<Existing> {
    let d = deployment(masters, replicas, hosts, &[]);
    place(&d.inventory)
        .redis()
        .map(|i| Existing {
            host: i.host,
            port: i.port,
            name: i.name.clone(),
            shard: i.shard,
            role: i.role,
        })
        .collect()
}

fn id(i: usize) -> String {
    format!("{:040}", i + 1)
}

/// A change of shape as the planner sees it: the targets and the
/// instances that leave, all running and joined, each master serving
/// `slots` (by its shard; a shard missing there serves none), each replica
/// following its shard's master.
struct Shape {
    d: Deployment,
    targets: Vec<Target>,
    leaving: Vec<Target>,
    observed: Observed,
}

impl Shape {
    fn new(d: Deployment, slots: &[(u32, Vec<(u32, u32)>)]) -> Shape {
        let targets = d.targets();
        let leaving = d.leaving();
        let all: Vec<&Target> = targets.iter().chain(&leaving).collect();
        let master = |t: &Target| {
            all.iter()
                .position(|m| m.shard == t.shard && m.placed_role == Role::Master)
                .unwrap()
        };
        let lines: Vec<NodeLine> = (all.iter().enumerate())
            .map(|(i, t)| {
                let m = master(t);
                NodeLine {
                    id: id(i),
                    ip: Some(t.ip),
                    port: t.port,
                    flags: vec![if m == i { "master" } else { "slave" }.into()],
                    master_id: (m != i).then(|| id(m)),
                    config_epoch: i as u64 + 1,
                    connected: true,
                    slots: match slots.iter().find(|(s, _)| *s == t.shard) {
                        Some((_, r)) if m == i => r.clone(),
                        _ => Vec::new(),
                    },
                    open_slots: Vec::new(),
                }
            })
            .collect();
        let states: Vec<TargetState> = (all.iter().enumerate())
            .map(|(i, t)| {
                let mut nodes = lines.clone();
                nodes[i].flags.insert(0, "myself".into());
                let m = master(t);
                state(
                    t,
                    Observation {
                        nodes,
                        state_ok: true,
                        link_up: (m != i).then_some(true),
                        role_master: Some(m == i),
                        master_addr: (m != i).then(|| (all[m].ip, all[m].port)),
                        replicas_online: Vec::new(),
                    },
                )
            })
            .collect();
        let hosts = d.inventory.hosts.len();
        let (targets_states, leaving_states) = {
            let mut s = states;
            let l = s.split_off(targets.len());
            (s, l)
        };
        Shape {
            observed: Observed {
                targets: targets_states,
                sentinels: Vec::new(),
                sentinel_problems: Vec::new(),
                orphans: Vec::new(),
                leaving: leaving_states,
                removed: Vec::new(),
                loads: Vec::new(),
                acting: vec![true; hosts],
                skipped: Vec::new(),
            },
            d,
            targets,
            leaving,
        }
    }

    fn plan(&self) -> Plan {
        make_plan(&Input {
            deployment: &self.d,
            targets: &self.targets,
            sentinels: &[],
            observed: &self.observed,
            leaving: &self.leaving,
            facts: None,
            form: true,
        })
    }

    fn views(&self) -> Vec<Option<Observation>> {
        self.observed
            .targets
            .iter()
            .map(|s| s.cluster.clone())
            .collect()
    }

    fn leaving_views(&self) -> Vec<Option<Observation>> {
        self.observed
            .leaving
            .iter()
            .map(|s| s.cluster.clone())
            .collect()
    }
}

fn state(t: &Target, o: Observation) -> TargetState {
    TargetState {
        status: Some(InstanceStatus {
            name: t.instance.clone(),
            deployment: "t".into(),
            port: t.port,
            state: InstanceState::Running,
            pid: Some(100),
            restarts: 0,
            last_exit: None,
            config_digest: String::new(),
        }),
        put: PutOutcome::default(),
        cluster: Some(o),
        node_timeout_drift: None,
        slot_keys: Default::default(),
    }
}

/// Each of `n` shards' even range, as formation assigns it.
fn even(n: u32) -> Vec<(u32, Vec<(u32, u32)>)> {
    (0..n)
        .map(|s| (s, vec![crate::cluster::shard_slots(s, n)]))
        .collect()
}

fn kinds(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| {
            serde_json::to_value(s).unwrap()["step"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn moves(plan: &Plan) -> Vec<PlannedMove> {
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::MoveSlots { moves } => Some(moves.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn slots_to(moves: &[PlannedMove], label: &str) -> u32 {
    moves
        .iter()
        .filter(|m| m.to == label)
        .map(PlannedMove::slots)
        .sum()
}

fn slots_from(moves: &[PlannedMove], label: &str) -> u32 {
    moves
        .iter()
        .filter(|m| m.from == label)
        .map(PlannedMove::slots)
        .sum()
}

#[test]
fn a_new_master_joined_empty_gets_an_even_share() {
    // 3 x 1 ran on 3 hosts; a 4th host and a 4th master, started and
    // joined (formation has nothing left to do), serving nothing yet.
    let d = deployment(4, 1, 4, &running_as(3, 1, 3));
    let mut c = Shape::new(d, &even(3));
    // What the old masters hold gives the estimates.
    c.observed.loads = (0..3)
        .map(|i| crate::engine::migrate::MasterLoad {
            label: c.targets[i].label(),
            id: id(i),
            slots: 5461,
            keys: 5461 * 2,
            bytes: 5461 * 200,
        })
        .collect();
    let plan = c.plan();
    assert_eq!(kinds(&plan), ["move_slots"], "{plan}");
    let keys: u64 = moves(&plan).iter().map(|m| m.keys).sum();
    assert!((8190..=8194).contains(&keys), "about 2 keys a slot: {plan}");
    assert!(
        moves(&plan).iter().all(|m| m.bytes == m.keys * 100),
        "{plan}"
    );
    let m = moves(&plan);
    let new = c
        .targets
        .iter()
        .find(|t| t.shard == 3 && t.placed_role == Role::Master)
        .unwrap();
    assert_eq!(new.label(), "h3:redis-7000");
    assert_eq!(slots_to(&m, "h3:redis-7000"), 4096);
    for old in ["h0:redis-7000", "h1:redis-7000", "h2:redis-7000"] {
        let given = slots_from(&m, old);
        assert!(
            (1365..=1366).contains(&given),
            "{old} gives {given}: {plan}"
        );
    }
    assert!(
        plan.to_string().contains("-> 1365 slot(s)")
            || plan.to_string().contains("-> 1366 slot(s)"),
        "{plan}"
    );
    assert!(c.leaving.is_empty());
}

#[test]
fn new_instances_not_running_yet_are_created_and_formed_before_any_move() {
    let d = deployment(4, 1, 4, &running_as(3, 1, 3));
    let mut c = Shape::new(d, &even(3));
    // The new master and replica do not exist yet: no status, no view; the
    // others do not know them.
    let new: Vec<usize> = (0..c.targets.len())
        .filter(|&i| c.targets[i].shard == 3)
        .collect();
    let new_ids: Vec<String> = new.iter().map(|&i| id(i)).collect();
    for &i in &new {
        c.observed.targets[i].status = None;
        c.observed.targets[i].cluster = None;
    }
    for s in c
        .observed
        .targets
        .iter_mut()
        .flat_map(|s| s.cluster.as_mut())
    {
        s.nodes.retain(|n| !new_ids.contains(&n.id));
    }
    let plan = c.plan();
    assert_eq!(
        kinds(&plan),
        ["put_config", "put_config", "start", "start", "form_cluster"],
        "{plan}"
    );
    // The old nodes' layout is no refusal any more.
    assert!(plan.refusals.is_empty(), "{plan}");
    // The moves of the next round are shown already: a quarter of the
    // slots, to the master this plan creates (no node id yet), from the
    // three that serve them now.
    let master = new
        .iter()
        .map(|&i| &c.targets[i])
        .find(|t| t.placed_role == Role::Master)
        .unwrap()
        .label();
    let after = &plan.after_joining;
    assert_eq!(slots_to(after, &master), 4096, "{plan}");
    assert!(
        after
            .iter()
            .all(|m| m.to == master && m.to_id.is_empty() && !m.from_id.is_empty()),
        "{after:?}"
    );
    assert_eq!(after.len(), 3, "{plan}");
    assert!(
        plan.to_string()
            .contains("once the new master(s) have joined"),
        "{plan}"
    );
}

#[test]
fn masters_lowered_drain_the_highest_shard_then_remove_it() {
    // 4 x 1 ran on 4 hosts; masters = 3 on the same hosts.
    let d = deployment(3, 1, 4, &running_as(4, 1, 4));
    let c = Shape::new(d, &even(4));
    let leaving: Vec<String> = c.leaving.iter().map(Target::label).collect();
    assert_eq!(leaving, ["h3:redis-7000", "h0:redis-7001"]);
    let plan = c.plan();
    assert_eq!(
        kinds(&plan),
        ["move_slots", "remove_node", "remove_node"],
        "{plan}"
    );
    let m = moves(&plan);
    assert_eq!(
        slots_from(&m, "h3:redis-7000"),
        4096,
        "only it gives: {plan}"
    );
    assert_eq!(m.iter().map(PlannedMove::slots).sum::<u32>(), 4096);
    let removed: Vec<&str> = (plan.steps.iter())
        .filter_map(|s| match s {
            Step::RemoveNode { target, .. } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(removed, ["h3:redis-7000", "h0:redis-7001"]);
}

#[test]
fn once_drained_the_leaving_nodes_are_removed_without_moves() {
    let d = deployment(3, 1, 4, &running_as(4, 1, 4));
    // The 3 that stay already serve everything; shard 3 serves nothing.
    let c = Shape::new(
        d,
        &[
            (0, vec![(0, 5460)]),
            (1, vec![(5461, 10922)]),
            (2, vec![(10923, 16383)]),
        ],
    );
    let plan = c.plan();
    assert_eq!(kinds(&plan), ["remove_node", "remove_node"], "{plan}");
}

#[test]
fn a_master_still_serving_slots_is_never_removed() {
    let d = deployment(3, 1, 4, &running_as(4, 1, 4));
    let c = Shape::new(d, &even(4));
    // Without the moves that drain it, nothing is removed: not the master,
    // not its replica.
    assert!(removals(&c.leaving, &c.leaving_views(), &c.views(), &[]).is_empty());
    // Moves that drain only part of it do not do either.
    let mut partial = slot_moves(&c.targets, &c.views(), &c.leaving, &c.leaving_views(), &[]);
    partial.pop();
    assert!(removals(&c.leaving, &c.leaving_views(), &c.views(), &partial).is_empty());
    let all = slot_moves(&c.targets, &c.views(), &c.leaving, &c.leaving_views(), &[]);
    assert_eq!(
        removals(&c.leaving, &c.leaving_views(), &c.views(), &all).len(),
        2
    );
}

#[test]
fn replicas_raised_then_lowered() {
    // 3 x 1 -> 3 x 2: the new replicas are placed as a fresh placement
    // would, and once they follow their masters nothing is left to do.
    let d = deployment(3, 2, 3, &running_as(3, 1, 3));
    assert!(d.leaving().is_empty());
    let c = Shape::new(d, &even(3));
    assert!(c.plan().is_empty(), "{}", c.plan());
    // 3 x 2 -> 3 x 1: the second replica of each shard leaves, no slot moves.
    let d = deployment(3, 1, 3, &running_as(3, 2, 3));
    let c = Shape::new(d, &even(3));
    let plan = c.plan();
    assert_eq!(
        kinds(&plan),
        ["remove_node", "remove_node", "remove_node"],
        "{plan}"
    );
}

#[test]
fn a_removed_masters_replica_takes_over_before_slots_move() {
    // 3 x 1 on 4 hosts; h1 (master of shard 1 alone) removed: its replica
    // (on h2) takes over first.
    let before = running_as(3, 1, 4);
    let index = [0usize, 3, 1, 2];
    let now: Vec<Existing> = before
        .into_iter()
        .map(|e| Existing {
            host: index[e.host],
            ..e
        })
        .collect();
    let mut d = deployment(3, 1, 3, &now);
    d.inventory.hosts.push(paddock_inventory::Host {
        name: "10.0.0.9".into(),
        address: "10.0.0.9".parse().unwrap(),
        agent_port: 7443,
        zone: None,
    });
    let mut c = Shape::new(d, &even(3));
    // Live, the promoted replica still follows the leaving master.
    let heir = c
        .targets
        .iter()
        .position(|t| t.shard == 1 && t.placed_role == Role::Master)
        .unwrap();
    let old = c.leaving.iter().position(|t| t.shard == 1).unwrap() + c.targets.len();
    for s in c.observed.targets.iter_mut().chain(&mut c.observed.leaving) {
        let o = s.cluster.as_mut().unwrap();
        let slots = o.nodes[heir].slots.clone();
        o.nodes[heir].flags.retain(|f| f != "master");
        o.nodes[heir].flags.push("slave".into());
        o.nodes[heir].master_id = Some(id(old));
        o.nodes[heir].slots = Vec::new();
        o.nodes[old].flags.retain(|f| f != "slave");
        o.nodes[old].flags.push("master".into());
        o.nodes[old].master_id = None;
        o.nodes[old].slots = slots;
    }
    let plan = c.plan();
    assert_eq!(kinds(&plan), ["take_over"], "{plan}");
    assert!(
        plan.to_string()
            .contains("takes over from 10.0.0.9:redis-7000"),
        "{plan}"
    );
}

mod live {
    use super::*;
    use crate::cluster::parse_nodes;
    use crate::engine::remove::{forgets_due, still_serving};
    use crate::engine::shape::{existing, most_agreed};

    fn status(name: &str, port: u16) -> InstanceStatus {
        InstanceStatus {
            name: name.into(),
            deployment: "t".into(),
            port,
            state: InstanceState::Running,
            pid: Some(1),
            restarts: 0,
            last_exit: None,
            config_digest: String::new(),
        }
    }

    /// A 4-master cluster after a scale-out: the new master (d) got slots
    /// from the end of each other's.
    const NODES: &str = "\
a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-4095
b 10.0.0.2:7000@17000 master - 0 0 2 connected 5461-9556
c 10.0.0.3:7000@17000 master - 0 0 3 connected 10923-15018
d 10.0.0.4:7000@17000 master - 0 0 4 connected 4096-5460 9557-10922 15019-16383
e 10.0.0.2:7001@17001 slave a 0 0 1 connected
f 10.0.0.3:7001@17001 slave b 0 0 2 connected
g 10.0.0.1:7001@17001 slave c 0 0 3 connected
h 10.0.0.1:7002@17002 slave d 0 0 4 connected
i 10.0.0.9:7000@17000 master - 0 0 5 connected
x :0@0 master,noaddr - 0 0 0 disconnected
";

    #[test]
    fn what_runs_by_shard_and_host() {
        let d = deployment(3, 1, 4, &[]);
        let lists = vec![(
            1,
            vec![status("redis-7000", 7000), status("old-name", 7001)],
        )];
        let (running, removed) = existing(&d.inventory.hosts, &lists, "t", &parse_nodes(NODES), 4);
        let rows: Vec<String> = running
            .iter()
            .map(|e| format!("{}:{} {} {}{}", e.host, e.port, e.name, e.role, e.shard))
            .collect();
        assert_eq!(
            rows,
            [
                // Shards by the master's port, then host: a, b, c, d; the
                // master without slots on an unlisted host (index 4) is one
                // too many: it counts as a replica.
                "0:7000 redis-7000 master0",
                "1:7001 old-name replica0",
                "4:7000 redis-7000 replica0",
                "1:7000 redis-7000 master1",
                "2:7001 redis-7001 replica1",
                "2:7000 redis-7000 master2",
                "0:7001 redis-7001 replica2",
                "3:7000 redis-7000 master3",
                "0:7002 redis-7002 replica3",
            ]
        );
        // With 5 masters wanted, it is the new master of a fifth shard.
        let (running, _) = existing(&d.inventory.hosts, &lists, "t", &parse_nodes(NODES), 5);
        let last = running.last().unwrap();
        assert_eq!((last.host, last.role, last.shard), (4, Role::Master, 4));
        assert_eq!(removed, ["10.0.0.9".parse::<std::net::IpAddr>().unwrap()]);
    }

    #[test]
    fn a_master_that_failed_over_counts_as_a_replica_of_its_shard() {
        // box1 is down: its master failed over to b's replica (now e,
        // master of 0-5460); a is a failed master without slots.
        let nodes = parse_nodes(
            "a 10.0.0.1:7000@17000 master,fail - 0 0 1 disconnected\n\
             b 10.0.0.2:7000@17000 myself,master - 0 0 2 connected 5461-10922\n\
             c 10.0.0.3:7000@17000 master - 0 0 3 connected 10923-16383\n\
             e 10.0.0.2:7001@17001 master - 0 0 4 connected 0-5460\n\
             f 10.0.0.3:7001@17001 slave b 0 0 2 connected\n\
             g 10.0.0.1:7001@17001 slave,fail c 0 0 3 disconnected\n",
        );
        let d = deployment(3, 1, 3, &[]);
        let (running, removed) = existing(&d.inventory.hosts, &[], "t", &nodes, 3);
        let rows: Vec<String> = running
            .iter()
            .map(|e| format!("{}:{} {}{}", e.host, e.port, e.role, e.shard))
            .collect();
        assert_eq!(
            rows,
            [
                "1:7000 master0",
                "2:7001 replica0",
                "2:7000 master1",
                "0:7001 replica1",
                "1:7001 master2",
                "0:7000 replica2",
            ]
        );
        assert!(removed.is_empty());
        // Placed again: nothing leaves, nothing new.
        let p = place_keeping(&d.inventory, &running);
        assert!(p.leaving.is_empty());
        assert_eq!(p.instances.len(), 6);
    }

    #[test]
    fn the_view_most_nodes_agree_on_wins_over_a_stale_one() {
        let from_b = parse_nodes(
            "a 10.0.0.1:7000@17000 slave b 0 0 1 connected\n\
             b 10.0.0.2:7000@17000 myself,master - 0 0 5 connected 0-16383\n",
        );
        let from_a = parse_nodes(
            "a 10.0.0.1:7000@17000 myself,slave b 0 0 1 connected\n\
             b 10.0.0.2:7000@17000 master - 0 0 5 connected 0-16383\n",
        );
        // a restarted after b took over: it still claims the slots.
        let stale = parse_nodes(
            "a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\n\
             b 10.0.0.2:7000@17000 master - 0 0 5 connected 0-16383\n",
        );
        let picked = most_agreed(vec![stale.clone(), from_b.clone(), from_a]).unwrap();
        assert_eq!(picked, from_b);
        assert_eq!(most_agreed(vec![stale.clone()]), Some(stale));
        assert_eq!(most_agreed(Vec::new()), None);
    }

    #[test]
    fn a_node_serving_or_assigned_slots_is_not_removed() {
        let serving = Observation {
            nodes: parse_nodes("a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-9\n"),
            ..Default::default()
        };
        let drained = Observation {
            nodes: parse_nodes("a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected\n"),
            ..Default::default()
        };
        let open = Observation {
            nodes: parse_nodes("a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected [5->-b]\n"),
            ..Default::default()
        };
        let other_says = Some(Observation {
            nodes: parse_nodes(
                "b 10.0.0.2:7000@17000 myself,master - 0 0 2 connected 10-16383\n\
                 a 10.0.0.1:7000@17000 master - 0 0 1 connected 0-9\n",
            ),
            ..Default::default()
        });
        let other_agrees = Some(Observation {
            nodes: parse_nodes(
                "b 10.0.0.2:7000@17000 myself,master - 0 0 2 connected 0-16383\n\
                 a 10.0.0.1:7000@17000 master - 0 0 1 connected\n",
            ),
            ..Default::default()
        });
        type Case<'a> = (
            &'a str,
            Option<&'a Observation>,
            &'a [Option<Observation>],
            bool,
        );
        let table: [Case<'_>; 5] = [
            ("serves slots", Some(&serving), &[], true),
            ("migrating", Some(&open), &[], true),
            (
                "drained",
                Some(&drained),
                std::slice::from_ref(&other_agrees),
                false,
            ),
            (
                "another still assigns it",
                Some(&drained),
                std::slice::from_ref(&other_says),
                true,
            ),
            (
                "stopped, drained",
                None,
                std::slice::from_ref(&other_agrees),
                false,
            ),
        ];
        for (case, own, others, refused) in table {
            assert_eq!(still_serving("a", own, others).is_some(), refused, "{case}");
        }
    }

    #[test]
    fn forget_is_due_where_the_removed_node_is_still_listed() {
        let view = |text: &str| {
            Some(Observation {
                nodes: parse_nodes(text),
                ..Default::default()
            })
        };
        let views = vec![
            view(
                "b 10.0.0.2:7000@17000 myself,master - 0 0 2 connected 0-16383\na 10.0.0.1:7000@17000 master,fail - 0 0 1 connected\n",
            ),
            view(
                "c 10.0.0.3:7000@17000 myself,slave b 0 0 2 connected\nb 10.0.0.2:7000@17000 master - 0 0 2 connected 0-16383\n",
            ),
            None,
        ];
        assert_eq!(forgets_due(&views, &["a"]), [(0, "a".to_owned())]);
        assert!(forgets_due(&views, &["z"]).is_empty());
    }
}

#[test]
fn a_stopped_instance_that_leaves_is_forgotten_not_formed_around() {
    // 3 x 2 -> 3 x 1, one of the leaving replicas already stopped (an
    // apply cut short, or stopped by hand): the others still list it.
    let d = deployment(3, 1, 3, &running_as(3, 2, 3));
    let mut c = Shape::new(d, &even(3));
    c.observed.leaving[0].status = None;
    c.observed.leaving[0].cluster = None;
    let plan = c.plan();
    assert_eq!(
        kinds(&plan),
        ["remove_node", "remove_node", "remove_node"],
        "{plan}"
    );
}
