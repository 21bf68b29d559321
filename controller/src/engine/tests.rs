//! Table tests of the pure planner over observations recorded in code: no
//! agent, no Redis.

use crate::client::{Facts, InstanceState, InstanceStatus, PutOutcome};
use crate::cluster::{NodeLine, Observation, shard_slots};
use crate::engine::observe::{Observed, SkipReason, Skipped, TargetState};
use crate::engine::plan::{Input, make_plan};
use crate::engine::step::{Handover, Plan, Refusal, Step};
use crate::fleet::{Deployment, Target};
use crate::problem::SentinelProblem;
use paddock_inventory::Role;

const HOSTS: &str = "[[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[hosts]]\nname = \"b\"\naddress = \"10.0.0.2\"\n\
     [[hosts]]\nname = \"c\"\naddress = \"10.0.0.3\"\n";

/// A deployment of `head` + three hosts, as loaded (no files read).
pub(crate) fn deployment(head: &str) -> Deployment {
    let text = format!("{head}\n{HOSTS}");
    let inventory = paddock_inventory::parse("t.toml", &text).unwrap();
    Deployment {
        inventory_path: "t.toml".into(),
        placement: paddock_inventory::place(&inventory),
        user_passwords: inventory
            .users
            .iter()
            .map(|_| Some("u".repeat(64)))
            .collect(),
        inventory,
        password_path: "pw".into(),
        password: Some("0123456789abcdef0123456789abcdef".into()),
        transport: crate::client::Transport::Plaintext,
    }
}

fn cluster() -> Deployment {
    deployment("[deployment]\nname = \"t\"\ntopology = \"cluster\"\n")
}

fn sentinel() -> Deployment {
    deployment("[deployment]\nname = \"t\"\ntopology = \"sentinel\"\nreplicas_per_master = 2\n")
}

/// What the planner sees, to be edited per case.
struct Case {
    d: Deployment,
    targets: Vec<Target>,
    sentinels: Vec<Target>,
    /// Instances a change of shape removes.
    leaving: Vec<Target>,
    observed: Observed,
    facts: Option<Vec<Option<Facts>>>,
}

impl Case {
    fn plan(&self) -> Plan {
        make_plan(&Input {
            deployment: &self.d,
            targets: &self.targets,
            sentinels: &self.sentinels,
            observed: &self.observed,
            leaving: &self.leaving,
            facts: self.facts.as_deref(),
            form: true,
        })
    }
    fn label(&self, i: usize) -> String {
        self.targets[i].label()
    }
    /// Index of the target placed as `role` of `shard`.
    fn placed(&self, shard: u32, role: Role) -> usize {
        (self.targets.iter())
            .position(|t| t.shard == shard && t.placed_role == role)
            .unwrap()
    }
    fn on_host(&self, host: usize) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|&i| self.targets[i].host == host)
            .collect()
    }
    fn set_put(&mut self, i: usize, changed: bool, restart_needed: bool) {
        self.observed.targets[i].put = PutOutcome {
            changed,
            restart_needed,
            changes: Vec::new(),
        };
    }
    fn stop(&mut self, i: usize) {
        let s = &mut self.observed.targets[i];
        s.status.as_mut().unwrap().state = InstanceState::Stopped;
        s.cluster = None;
    }
    /// Hosts `acting` are acted on; the others skipped for `reason`.
    fn scope(&mut self, acting: [bool; 3], reason: SkipReason) {
        self.observed.acting = acting.to_vec();
        self.observed.skipped = (0..3)
            .filter(|&h| !acting[h])
            .map(|h| Skipped {
                host: self.d.inventory.hosts[h].name.clone(),
                reason: reason.clone(),
            })
            .collect();
    }
}

fn running(t: &Target) -> Option<InstanceStatus> {
    Some(InstanceStatus {
        name: t.instance.clone(),
        deployment: "t".into(),
        port: t.port,
        state: InstanceState::Running,
        pid: Some(100),
        restarts: 0,
        last_exit: None,
        config_digest: String::new(),
    })
}

fn state(status: Option<InstanceStatus>, cluster: Option<Observation>) -> TargetState {
    TargetState {
        status,
        put: PutOutcome {
            changed: false,
            restart_needed: false,
            changes: Vec::new(),
        },
        cluster,
        node_timeout_drift: None,
        slot_keys: Default::default(),
    }
}

fn id(i: usize) -> String {
    format!("{:040}", i + 1)
}

/// Every node's view of a healthy cluster with the roles `master_of`
/// gives (Some(m): replica of target m; None: master of its shard).
fn cluster_views(
    targets: &[Target],
    masters: u32,
    master_of: &[Option<usize>],
) -> Vec<Observation> {
    let lines: Vec<NodeLine> = (targets.iter().enumerate())
        .map(|(i, t)| NodeLine {
            id: id(i),
            ip: Some(t.ip),
            port: t.port,
            flags: vec![
                if master_of[i].is_none() {
                    "master"
                } else {
                    "slave"
                }
                .into(),
            ],
            master_id: master_of[i].map(id),
            config_epoch: i as u64 + 1,
            connected: true,
            slots: match master_of[i] {
                None => vec![shard_slots(t.shard, masters)],
                Some(_) => Vec::new(),
            },
            open_slots: Vec::new(),
        })
        .collect();
    (0..targets.len())
        .map(|i| {
            let mut nodes = lines.clone();
            nodes[i].flags.insert(0, "myself".into());
            Observation {
                nodes,
                state_ok: true,
                link_up: master_of[i].map(|_| true),
                role_master: Some(master_of[i].is_none()),
                master_addr: master_of[i].map(|m| (targets[m].ip, targets[m].port)),
                replicas_online: Vec::new(),
            }
        })
        .collect()
}

/// The placed roles: each replica follows its shard's placed master.
fn placed_roles(targets: &[Target]) -> Vec<Option<usize>> {
    (targets.iter())
        .map(|t| {
            (t.placed_role != Role::Master).then(|| {
                (targets.iter())
                    .position(|m| m.shard == t.shard && m.placed_role == Role::Master)
                    .unwrap()
            })
        })
        .collect()
}

fn healthy_cluster() -> Case {
    let d = cluster();
    let targets = d.targets();
    let views = cluster_views(&targets, 3, &placed_roles(&targets));
    let states = (targets.iter().zip(views))
        .map(|(t, v)| state(running(t), Some(v)))
        .collect();
    case(d, targets, Vec::new(), states, Vec::new())
}

fn case(
    d: Deployment,
    targets: Vec<Target>,
    sentinels: Vec<Target>,
    states: Vec<TargetState>,
    sentinel_states: Vec<TargetState>,
) -> Case {
    Case {
        observed: Observed {
            targets: states,
            sentinels: sentinel_states,
            sentinel_problems: Vec::new(),
            orphans: Vec::new(),
            leaving: Vec::new(),
            removed: Vec::new(),
            loads: Vec::new(),
            acting: vec![true; 3],
            skipped: Vec::new(),
        },
        d,
        targets,
        sentinels,
        leaving: Vec::new(),
        facts: None,
    }
}

/// A replication deployment (master on target 0) with its sentinels, all
/// healthy.
fn healthy_sentinel() -> Case {
    let d = sentinel();
    let targets = d.targets();
    let sentinels = d.sentinels(d.placed_master());
    let master = targets[0].clone();
    let states = (targets.iter().enumerate())
        .map(|(i, t)| {
            let o = Observation {
                nodes: Vec::new(),
                state_ok: true,
                link_up: (i > 0).then_some(true),
                role_master: Some(i == 0),
                master_addr: (i > 0).then_some((master.ip, master.port)),
                replicas_online: Vec::new(),
            };
            state(running(t), Some(o))
        })
        .collect();
    let sentinel_states = sentinels.iter().map(|t| state(running(t), None)).collect();
    case(d, targets, sentinels, states, sentinel_states)
}

fn fresh(mut c: Case) -> Case {
    c.d.password = None;
    for s in c
        .observed
        .targets
        .iter_mut()
        .chain(&mut c.observed.sentinels)
    {
        *s = state(None, None);
        s.put = PutOutcome {
            changed: true,
            restart_needed: true,
            changes: Vec::new(),
        };
    }
    c
}

fn facts(redis: bool, configured: &str) -> Facts {
    Facts {
        hostname: "h".into(),
        os: String::new(),
        kernel: String::new(),
        cpus: 2,
        memory_total_bytes: 8 << 30,
        memory_available_bytes: 8 << 30,
        data_dir_free_bytes: 1 << 40,
        redis_server_path: redis.then(|| "/usr/bin/redis-server".into()),
        redis_version: redis.then(|| "7.0.15".into()),
        agent_version: "0.1.0".into(),
        redis_server_configured: configured.into(),
    }
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.steps
        .iter()
        .map(|s| match s {
            Step::CreatePassword { .. } => "create_password",
            Step::CreateUserPasswords { .. } => "create_user_passwords",
            Step::InstallRedis { .. } => "install_redis",
            Step::PromoteHeir { .. } => "promote_heir",
            Step::PutConfig { create: true, .. } => "create",
            Step::PutConfig { restart: true, .. } => "put_restart",
            Step::PutConfig { .. } => "put",
            Step::SetLive { .. } => "set_live",
            Step::Restart { .. } => "restart",
            Step::Start { .. } => "start",
            Step::RestoreNodeTimeout { .. } => "restore_node_timeout",
            Step::FormCluster { .. } => "form",
            Step::Rebalance { .. } => "rebalance",
            Step::RepairSentinels { .. } => "repair_sentinels",
            Step::MoveSlots { .. } => "move_slots",
            Step::FixSlots { .. } => "fix_slots",
            Step::TakeOver { .. } => "take_over",
            Step::RemoveNode { .. } => "remove_node",
        })
        .collect()
}

fn count(plan: &Plan, kind: &str) -> usize {
    kinds(plan).iter().filter(|k| **k == kind).count()
}

#[test]
fn a_healthy_cluster_plans_nothing() {
    let plan = healthy_cluster().plan();
    assert!(plan.is_empty(), "{plan}");
    assert!(plan.to_string().contains("No changes"));
}

#[test]
fn a_fresh_cluster_is_created_started_and_formed() {
    let plan = fresh(healthy_cluster()).plan();
    let mut want = vec!["create_password"];
    want.extend(["create"; 6]);
    want.extend(["start"; 6]);
    want.push("form");
    assert_eq!(kinds(&plan), want, "{plan}");
    assert!(plan.refusals.is_empty());
}

#[test]
fn a_missing_password_with_instances_running_is_refused_and_nothing_else_shown() {
    let mut c = healthy_cluster();
    c.d.password = None;
    for i in 0..6 {
        c.set_put(i, true, true);
    }
    let plan = c.plan();
    assert_eq!(
        plan.refusals,
        vec![Refusal::PasswordMissing { path: "pw".into() }]
    );
    assert!(
        plan.steps.is_empty(),
        "no password creation, no restarts: {plan}"
    );
}

#[test]
fn a_failed_over_cluster_spreads_its_masters_again() {
    let mut c = healthy_cluster();
    // Shard 0's replica took over; its old master follows it.
    let (m, r) = (c.placed(0, Role::Master), c.placed(0, Role::Replica));
    let mut roles = placed_roles(&c.targets);
    roles[m] = Some(r);
    roles[r] = None;
    let views = cluster_views(&c.targets, 3, &roles);
    for (s, v) in c.observed.targets.iter_mut().zip(views) {
        s.cluster = Some(v);
    }
    let plan = c.plan();
    assert_eq!(kinds(&plan), vec!["rebalance"], "{plan}");
    let Step::Rebalance { moves, .. } = &plan.steps[0] else {
        unreachable!()
    };
    assert!(!moves.is_empty());
}

#[test]
fn a_replaced_box_promotes_the_heir_first_then_creates_and_forms() {
    let mut c = healthy_cluster();
    let m = c.placed(0, Role::Master);
    let heir = c.placed(0, Role::Replica);
    // The box of shard 0's master came back empty: its agent runs nothing.
    c.observed.targets[m] = state(None, None);
    c.observed.targets[m].put = PutOutcome {
        changed: true,
        restart_needed: true,
        changes: Vec::new(),
    };
    for s in c
        .observed
        .targets
        .iter_mut()
        .flat_map(|s| s.cluster.as_mut())
    {
        for n in s.nodes.iter_mut().filter(|n| n.id == id(m)) {
            n.flags.push("fail".into());
        }
    }
    let plan = c.plan();
    assert_eq!(
        plan.steps.first(),
        Some(&Step::PromoteHeir {
            shard: 0,
            target: c.label(heir)
        }),
        "{plan}"
    );
    assert_eq!(count(&plan, "create"), 1);
    assert_eq!(count(&plan, "start"), 1);
    assert_eq!(count(&plan, "form"), 1);
}

#[test]
fn orphans_are_refused_without_steps() {
    let mut c = healthy_cluster();
    c.observed.orphans = vec!["a:redis-7009 (RUNNING)".into()];
    c.set_put(0, true, true);
    let plan = c.plan();
    assert_eq!(
        plan.refusals,
        vec![Refusal::Orphan {
            target: "a:redis-7009 (RUNNING)".into()
        }]
    );
    assert!(plan.steps.is_empty());
    assert!(plan.to_string().contains("not in the inventory"));
}

/// Marks `slot` open on the masters of shards `from` and `to` (each in its
/// own view), as an interrupted move leaves them; `keys` per shard master.
fn open_slot(c: &mut Case, slot: u16, from: u32, to: u32, importing: bool, keys: (u64, u64)) {
    use crate::cluster::{Direction, OpenSlot};
    let (f, t) = (c.placed(from, Role::Master), c.placed(to, Role::Master));
    let mark = |direction: Direction, other: usize| OpenSlot {
        slot,
        direction,
        node_id: id(other),
    };
    let mut marks = vec![(f, mark(Direction::Migrating, t))];
    if importing {
        marks.push((t, mark(Direction::Importing, f)));
    }
    for (i, m) in marks {
        let me = c.observed.targets[i].cluster.as_mut().unwrap();
        for n in me.nodes.iter_mut().filter(|n| n.is_myself()) {
            n.open_slots.push(m.clone());
        }
    }
    c.observed.targets[f].slot_keys.insert(slot, keys.0);
    c.observed.targets[t].slot_keys.insert(slot, keys.1);
}

#[test]
fn open_slots_are_repaired_never_refused() {
    // (what the nodes report, the plan's steps, the repair's lines)
    type Edit = fn(&mut Case);
    let table: Vec<(&str, Edit, Vec<&str>, Vec<String>)> = vec![
        (
            "a move interrupted mid-way is finished",
            |c| open_slot(c, 5461, 1, 2, true, (37, 3)),
            vec!["fix_slots"],
            vec!["slot 5461: finish the move from b:redis-7000 to c:redis-7000 (37 key(s) left)".into()],
        ),
        (
            "a run of slots of one move, one line",
            |c| {
                for s in 5461..=5470 {
                    open_slot(c, s, 1, 2, true, (2, 0));
                }
            },
            vec!["fix_slots"],
            vec!["slots 5461-5470: finish the move from b:redis-7000 to c:redis-7000 (20 key(s) left)".into()],
        ),
        (
            "migrating to a master that took nothing yet: rolled back",
            |c| open_slot(c, 100, 0, 1, false, (12, 0)),
            vec!["fix_slots"],
            vec!["slot 100: roll back the interrupted move, a:redis-7000 keeps it (0 key(s) move back)".into()],
        ),
        (
            "with a stopped replica: started, formation, then the repair",
            |c| {
                open_slot(c, 5461, 1, 2, true, (1, 1));
                c.stop(c.placed(0, Role::Replica));
            },
            vec!["start", "form", "fix_slots"],
            vec!["slot 5461: finish the move from b:redis-7000 to c:redis-7000 (1 key(s) left)".into()],
        ),
    ];
    for (name, edit, kinds_want, lines) in table {
        let mut c = healthy_cluster();
        edit(&mut c);
        let plan = c.plan();
        assert!(plan.refusals.is_empty(), "{name}: {plan}");
        assert_eq!(kinds(&plan), kinds_want, "{name}: {plan}");
        let fixes = plan.steps.iter().find_map(|s| match s {
            Step::FixSlots { fixes } => Some(fixes.clone()),
            _ => None,
        });
        assert_eq!(fixes, Some(lines), "{name}");
        for s in &plan.steps {
            if let Step::FormCluster { problems } = s {
                assert!(
                    !problems.iter().any(|p| p.contains("open slots")),
                    "{name}: formation leaves open slots alone: {problems:?}"
                );
            }
        }
        assert!(
            plan.to_string().contains("repair open or unserved slots"),
            "{plan}"
        );
    }
}

#[test]
fn unserved_slots_are_covered_once_every_shard_has_a_master() {
    let mut c = healthy_cluster();
    let m = c.placed(2, Role::Master);
    // The master of shard 2 lost its last slot everywhere (CLUSTER DELSLOTS).
    for s in &mut c.observed.targets {
        let Some(o) = s.cluster.as_mut() else {
            continue;
        };
        o.state_ok = false;
        for n in o.nodes.iter_mut().filter(|n| n.id == id(m)) {
            n.slots = vec![(10922, 16382)];
        }
    }
    let plan = c.plan();
    assert_eq!(kinds(&plan), vec!["fix_slots"], "{plan}");
    assert_eq!(
        plan.steps[0],
        Step::FixSlots {
            fixes: vec![
                // Every master serves 5461 slots now: the first by id.
                "slot 16383: served by no master: a:redis-7000 takes it (0 key(s) move to it)"
                    .into()
            ]
        }
    );
}

#[test]
fn a_stopped_instance_is_started_and_the_cluster_repaired() {
    let mut c = healthy_cluster();
    c.stop(3);
    let plan = c.plan();
    assert_eq!(kinds(&plan), vec!["start", "form"], "{plan}");
    assert_eq!(
        plan.steps[0],
        Step::Start {
            target: c.label(3),
            state: "STOPPED".into()
        }
    );
}

#[test]
fn a_config_change_needing_a_restart_rolls_replicas_first_masters_hand_over() {
    let mut c = healthy_cluster();
    for i in 0..6 {
        c.set_put(i, true, true);
    }
    let plan = c.plan();
    let mut want = vec!["put_restart"; 6];
    want.extend(["restart"; 6]);
    assert_eq!(kinds(&plan), want, "{plan}");
    let restarts: Vec<&Step> = plan.steps[6..].iter().collect();
    for (k, s) in restarts.iter().enumerate() {
        let Step::Restart { target, handover } = s else {
            unreachable!()
        };
        let i = c.targets.iter().position(|t| t.label() == *target).unwrap();
        let master = c.targets[i].placed_role == Role::Master;
        assert_eq!(master, k >= 3, "replicas first: {plan}");
        let want = match master {
            true => Handover::ClusterFailover {
                to: c.label(c.placed(c.targets[i].shard, Role::Replica)),
            },
            false => Handover::None,
        };
        assert_eq!(*handover, want);
    }
    assert!(plan.to_string().contains("hands its slots to"));
}

#[test]
fn a_live_settable_config_change_writes_without_a_restart() {
    let mut c = healthy_cluster();
    c.set_put(2, true, false);
    let plan = c.plan();
    assert_eq!(
        plan.steps,
        vec![Step::PutConfig {
            target: c.label(2),
            create: false,
            restart: false,
            keys: Vec::new()
        }]
    );
}

#[test]
fn node_timeout_drift_is_restored() {
    let mut c = healthy_cluster();
    c.observed.targets[4].node_timeout_drift = Some(500);
    let plan = c.plan();
    let want = c.targets[4].spec.cluster_node_timeout_ms();
    assert_eq!(
        plan.steps,
        vec![Step::RestoreNodeTimeout {
            target: c.label(4),
            live: 500,
            want
        }]
    );
}

#[test]
fn limit_plans_only_the_hosts_acted_on_and_no_formation() {
    let mut c = healthy_cluster();
    for i in 0..6 {
        c.set_put(i, true, true);
    }
    c.stop(c.on_host(1)[0]);
    c.scope([true, false, false], SkipReason::NotInLimit);
    let plan = c.plan();
    let on_a: Vec<String> = c.on_host(0).iter().map(|&i| c.label(i)).collect();
    for s in &plan.steps {
        let (Step::PutConfig { target, .. } | Step::Restart { target, .. }) = s else {
            panic!("only configs and restarts on host a: {plan}");
        };
        assert!(on_a.contains(target), "{plan}");
    }
    // The cluster is unhealthy (a node of b is stopped): restarts on a are
    // held back, since repairing needs every host.
    assert_eq!(count(&plan, "restart"), 0, "{plan}");
    assert_eq!(count(&plan, "put_restart"), on_a.len());
    assert!(
        plan.held_back
            .iter()
            .any(|h| h.contains("cluster repair: skipped"))
    );
    assert!(plan.to_string().contains("b: skipped (not in --limit)"));
}

#[test]
fn a_master_whose_only_replica_is_unreachable_is_not_restarted() {
    let mut c = healthy_cluster();
    let m = c
        .on_host(0)
        .into_iter()
        .find(|&i| c.targets[i].placed_role == Role::Master)
        .unwrap();
    let heir_host = c.targets[c.placed(c.targets[m].shard, Role::Replica)].host;
    c.set_put(m, true, true);
    let mut acting = [true; 3];
    acting[heir_host] = false;
    c.scope(acting, SkipReason::Unreachable("refused".into()));
    let plan = c.plan();
    assert_eq!(count(&plan, "restart"), 0, "{plan}");
    assert!(
        plan.held_back
            .iter()
            .any(|h| h.contains("cannot hand its slots over")),
        "{plan}"
    );
    assert!(
        plan.to_string()
            .contains("skipped (agent unreachable: refused)")
    );
}

#[test]
fn missing_redis_is_installed_first() {
    let mut c = fresh(healthy_cluster());
    c.facts = Some(vec![
        Some(facts(true, "redis-server")),
        Some(facts(false, "redis-server")),
        Some(facts(true, "redis-server")),
    ]);
    let plan = c.plan();
    assert_eq!(
        plan.steps[1],
        Step::InstallRedis { host: "b".into() },
        "{plan}"
    );
    assert!(plan.refusals.is_empty());
}

#[test]
fn a_configured_redis_server_that_is_missing_is_refused() {
    let mut c = healthy_cluster();
    c.set_put(0, true, true);
    c.facts = Some(vec![
        Some(facts(true, "redis-server")),
        Some(facts(true, "redis-server")),
        Some(facts(false, "/opt/redis/bin/redis-server")),
    ]);
    let plan = c.plan();
    assert!(plan.steps.is_empty(), "{plan}");
    let [Refusal::Host { problem }] = plan.refusals.as_slice() else {
        panic!("{plan}")
    };
    assert!(problem.contains("host c"), "{problem}");
    assert!(plan.to_string().contains("apply refuses until it is fixed"));
}

#[test]
fn an_unhealthy_cluster_restarts_together_then_forms() {
    let mut c = healthy_cluster();
    for i in 0..6 {
        c.set_put(i, true, true);
    }
    c.stop(5);
    let plan = c.plan();
    let restarts: Vec<&Step> = (plan.steps.iter())
        .filter(|s| matches!(s, Step::Restart { .. }))
        .collect();
    assert_eq!(restarts.len(), 5, "the stopped one just starts: {plan}");
    assert!(restarts.iter().all(|s| matches!(
        s,
        Step::Restart {
            handover: Handover::Together,
            ..
        }
    )));
    assert_eq!(kinds(&plan).last(), Some(&"form"));
}

#[test]
fn a_fresh_sentinel_deployment_creates_and_starts_its_sentinels() {
    let c = fresh(healthy_sentinel());
    let plan = c.plan();
    assert_eq!(count(&plan, "create"), 6, "3 redis, 3 sentinels: {plan}");
    assert_eq!(count(&plan, "start"), 6);
    assert_eq!(count(&plan, "form"), 1);
    assert_eq!(count(&plan, "repair_sentinels"), 0);
}

#[test]
fn sentinel_setting_drift_is_set_live_not_restarted() {
    let mut c = healthy_sentinel();
    for s in &mut c.observed.sentinels {
        s.put = PutOutcome {
            changed: true,
            restart_needed: true,
            changes: Vec::new(),
        };
    }
    let plan = c.plan();
    let labels: Vec<String> = c.sentinels.iter().map(Target::label).collect();
    let want: Vec<Step> = labels
        .into_iter()
        .map(|target| Step::SetLive {
            target,
            keys: Vec::new(),
        })
        .collect();
    assert_eq!(plan.steps, want, "{plan}");
    assert!(!plan.to_string().contains("restart needed"));
    assert!(plan.to_string().contains("set live"));
}

#[test]
fn a_rotation_that_missed_a_sentinel_repairs_the_sentinels() {
    let mut c = healthy_sentinel();
    c.observed.sentinel_problems = vec![SentinelProblem::CredentialsRefused {
        sentinel: "b:sentinel-26379".into(),
    }];
    let plan = c.plan();
    assert_eq!(kinds(&plan), vec!["repair_sentinels"]);
    assert!(
        plan.to_string()
            .contains("the master refuses its credentials")
    );
}

#[test]
fn sentinel_problems_wait_for_the_replication_they_watch() {
    let mut c = healthy_sentinel();
    c.observed.sentinel_problems = vec![SentinelProblem::SeesMasterAs {
        sentinel: "b:sentinel-26379".into(),
        flags: "s_down,master".into(),
    }];
    c.stop(2);
    let plan = c.plan();
    assert_eq!(kinds(&plan), vec!["start", "form"], "{plan}");
}

#[test]
fn a_replication_master_restart_hands_over_first() {
    let mut c = healthy_sentinel();
    for i in 0..3 {
        c.set_put(i, true, true);
    }
    let plan = c.plan();
    let restarts: Vec<&Step> = (plan.steps.iter())
        .filter(|s| matches!(s, Step::Restart { .. }))
        .collect();
    assert_eq!(restarts.len(), 3);
    assert_eq!(
        restarts[2],
        &Step::Restart {
            target: c.label(0),
            handover: Handover::Switchover
        },
        "the master last: {plan}"
    );
}

#[test]
fn new_acl_users_get_passwords_and_a_rolling_restart() {
    let mut c = healthy_cluster();
    c.d = deployment(
        "[deployment]\nname = \"t\"\ntopology = \"cluster\"\n[[users]]\nname = \"app\"\nrules = \"+@read\"\n",
    );
    c.d.user_passwords = vec![None];
    for i in 0..6 {
        c.set_put(i, true, true);
    }
    let plan = c.plan();
    assert_eq!(
        plan.steps[0],
        Step::CreateUserPasswords {
            users: vec!["app".into()]
        }
    );
    assert_eq!(count(&plan, "put_restart"), 6);
    assert_eq!(count(&plan, "restart"), 6);
}

#[test]
fn steps_round_trip_through_json() {
    let mut c = fresh(healthy_cluster());
    c.observed.targets[0].node_timeout_drift = Some(500);
    let plan = c.plan();
    let text = serde_json::to_string(&plan).unwrap();
    assert!(text.contains("\"step\":\"put_config\""), "{text}");
    let back: Plan = serde_json::from_str(&text).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn the_planner_is_a_function_of_its_inputs() {
    let c = healthy_cluster();
    let mut changed = healthy_cluster();
    changed.set_put(1, true, true);
    assert_eq!(c.plan(), healthy_cluster().plan());
    assert_ne!(c.plan(), changed.plan());
    assert_ne!(c.observed.decisive(), changed.observed.decisive());
    // A pid is not a decision input.
    let mut other_pid = healthy_cluster();
    other_pid.observed.targets[0].status.as_mut().unwrap().pid = Some(7);
    assert_eq!(c.observed.decisive(), other_pid.observed.decisive());
}

#[test]
fn a_config_change_shows_each_key_old_and_new_and_whether_it_is_set_live() {
    let mut c = healthy_cluster();
    c.set_put(0, true, true);
    c.observed.targets[0].put.changes = vec![
        crate::client::KeyChange {
            key: "maxmemory".into(),
            old: "100mb".into(),
            new: "200mb".into(),
            live: true,
        },
        crate::client::KeyChange {
            key: "appendonly".into(),
            old: "no".into(),
            new: "yes".into(),
            live: false,
        },
    ];
    let text = c.plan().to_string();
    assert!(
        text.contains("maxmemory: 100mb -> 200mb (set live)"),
        "{text}"
    );
    assert!(
        text.contains("appendonly: no -> yes (needs a restart)"),
        "{text}"
    );
    let json = serde_json::to_string(&c.plan()).unwrap();
    assert!(json.contains("\"key\":\"maxmemory\""), "{json}");
}

mod formation {
    use super::*;
    use crate::engine::formation::{FormStep, formation_steps};

    fn heir_in(c: &Case, views: &[Option<Observation>], shard: u32) -> Option<usize> {
        crate::form::heir_of_lost_master(&c.targets, views, shard)
    }

    fn views(c: &Case) -> Vec<Option<Observation>> {
        c.observed
            .targets
            .iter()
            .map(|s| s.cluster.clone())
            .collect()
    }

    #[test]
    fn a_healthy_cluster_needs_no_formation_step() {
        let c = healthy_cluster();
        assert!(
            formation_steps(&c.targets, 3, &views(&c), |s| heir_in(&c, &views(&c), s)).is_empty()
        );
    }

    #[test]
    fn nodes_that_know_only_themselves_meet_each_later_one_once() {
        let c = healthy_cluster();
        let alone: Vec<Option<Observation>> = views(&c)
            .into_iter()
            .map(|o| {
                let mut o = o.unwrap();
                o.nodes.retain(NodeLine::is_myself);
                Some(o)
            })
            .collect();
        let steps = formation_steps(&c.targets, 3, &alone, |s| heir_in(&c, &alone, s));
        let meets: Vec<(usize, usize)> = steps
            .iter()
            .filter_map(|s| match s {
                FormStep::Meet { from, to } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(meets.len(), 15, "each pair once: {steps:?}");
        assert!(meets.iter().all(|(a, b)| a < b));
        assert_eq!(
            steps[0].argv(&c.targets),
            vec![
                "CLUSTER".to_owned(),
                "MEET".into(),
                c.targets[1].ip.to_string(),
                c.targets[1].port.to_string()
            ]
        );
    }

    #[test]
    fn a_replaced_master_is_forgotten_its_heir_promoted_and_the_newcomer_met() {
        let c = healthy_cluster();
        let m = c.placed(0, Role::Master);
        let heir = c.placed(0, Role::Replica);
        // The box came back empty with a new id, knowing only itself; the
        // others still list its old id, failed. Its replica still follows it.
        let mut views = views(&c);
        for o in views.iter_mut().flatten() {
            for n in o.nodes.iter_mut().filter(|n| n.id == id(m)) {
                n.flags.push("fail".into());
                n.slots.clear();
            }
        }
        let mut fresh = views[m].clone().unwrap();
        fresh.nodes.retain(NodeLine::is_myself);
        fresh.nodes[0].id = "f".repeat(40);
        fresh.nodes[0].slots.clear();
        views[m] = Some(fresh);
        let steps = formation_steps(&c.targets, 3, &views, |s| heir_in(&c, &views, s));
        assert!(
            steps.contains(&FormStep::Promote { shard: 0, heir }),
            "{steps:?}"
        );
        // Still followed by its replica: not forgotten yet.
        assert!(
            !steps.iter().any(|s| matches!(s, FormStep::Forget { .. })),
            "{steps:?}"
        );
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, FormStep::Meet { to, .. } if *to == m)
                    || matches!(s, FormStep::Meet { from, .. } if *from == m))
        );
    }

    #[test]
    fn a_replica_following_no_one_replicates_its_shards_master() {
        let c = healthy_cluster();
        let r = c.placed(1, Role::Replica);
        let m = c.placed(1, Role::Master);
        let mut views = views(&c);
        for o in views.iter_mut().flatten() {
            for n in o.nodes.iter_mut().filter(|n| n.id == id(r)) {
                n.flags.retain(|f| f != "slave");
                n.flags.push("master".into());
                n.master_id = None;
            }
        }
        let steps = formation_steps(&c.targets, 3, &views, |s| heir_in(&c, &views, s));
        assert_eq!(
            steps,
            vec![FormStep::Replicate {
                replica: r,
                master_id: id(m)
            }]
        );
    }
}

fn key(key: &str, old: &str, new: &str, live: bool) -> crate::client::KeyChange {
    crate::client::KeyChange {
        key: key.into(),
        old: old.into(),
        new: new.into(),
        live,
    }
}

/// Running redis-servers whose changed settings are all live get a set-live
/// step and no restart; one with any other change restarts as before.
#[test]
fn settings_redis_takes_live_are_set_live_the_rest_restart() {
    let pw = "on \">********\" \"+@read\"";
    let table: Vec<(&str, Vec<crate::client::KeyChange>, &[&str])> = vec![
        (
            "live-only",
            vec![
                key("maxmemory", "100", "200", true),
                key("maxmemory-policy", "allkeys-lru", "noeviction", true),
            ],
            &["set_live"],
        ),
        (
            "mixed",
            vec![
                key("maxmemory", "100", "200", true),
                key("port", "7000", "7001", false),
            ],
            &["put_restart", "restart"],
        ),
        (
            "user added",
            vec![key("user \"app\"", "", pw, true)],
            &["set_live"],
        ),
        (
            "user changed",
            vec![key("user \"app\"", pw, "on \">********\" \"+@all\"", true)],
            &["set_live"],
        ),
        (
            "user removed",
            vec![key("user \"app\"", pw, "", true)],
            &["set_live"],
        ),
        (
            "user and masterauth",
            vec![
                key("user \"app\"", pw, "", true),
                key("masterauth", "********", "********", false),
            ],
            &["put_restart", "restart"],
        ),
    ];
    for (name, keys, want) in table {
        let mut c = healthy_cluster();
        c.set_put(1, true, true);
        c.observed.targets[1].put.changes = keys.clone();
        let plan = c.plan();
        assert_eq!(kinds(&plan), want.to_vec(), "{name}: {plan}");
        let text = plan.to_string();
        if want == ["set_live"] {
            assert_eq!(
                plan.steps[0],
                Step::SetLive {
                    target: c.label(1),
                    keys
                },
                "{name}"
            );
            assert!(
                text.contains("set live (CONFIG SET / ACL SETUSER, no restart)"),
                "{name}: {text}"
            );
            assert!(!text.contains("restart for its new config"), "{name}");
        } else {
            assert!(text.contains("restart needed"), "{name}: {text}");
        }
    }
}

/// The config stored but the settings not yet set (an interrupted apply):
/// the agent still reports the keys against what runs; set live again.
#[test]
fn a_stored_but_unset_live_change_is_set_live_again() {
    let mut c = healthy_cluster();
    c.set_put(3, false, true);
    c.observed.targets[3].put.changes = vec![key("maxmemory", "100", "200", true)];
    let plan = c.plan();
    assert_eq!(kinds(&plan), vec!["set_live"], "{plan}");
}

/// A changed cluster-node-timeout reads as drift too: set live once, not
/// restored again.
#[test]
fn a_node_timeout_change_is_set_live_not_also_restored() {
    let mut c = healthy_cluster();
    c.set_put(2, true, true);
    c.observed.targets[2].put.changes = vec![key("cluster-node-timeout", "5000", "3000", true)];
    c.observed.targets[2].node_timeout_drift = Some(5000);
    let plan = c.plan();
    assert_eq!(kinds(&plan), vec!["set_live"], "{plan}");
}
