//! The planner: a pure function from what the agents report (and the
//! deployment) to the steps apply carries out, in the order it carries them
//! out, and what it refuses. `paddock plan` prints it; `paddock apply`
//! executes it.

use crate::client::{Facts, InstanceState, RedisMode};
use crate::cluster::{Observation, assess, shard_master};
use crate::engine::observe::{Observed, SkipReason, TargetState};
use crate::engine::step::{Handover, Plan, Refusal, Step};
use crate::fleet::{Deployment, RedisCheck, Target, members, redis_check};
use crate::problem::formation_problems;

/// Everything the planner decides from.
pub struct Input<'a> {
    pub deployment: &'a Deployment,
    pub targets: &'a [Target],
    pub sentinels: &'a [Target],
    pub observed: &'a Observed,
    /// The running instances a change of shape removes, in
    /// [`Observed::leaving`] order.
    pub leaving: &'a [Target],
    /// Per host, what its agent reports (None for a host not asked). The
    /// whole argument is None when the hosts were not asked at all (a
    /// no-op apply does not).
    pub facts: Option<&'a [Option<Facts>]>,
    /// Form (or repair) the topology after starting instances.
    pub form: bool,
}

/// Pure: the plan for `input`.
pub fn make_plan(input: &Input<'_>) -> Plan {
    let inv = &input.deployment.inventory;
    let mut plan = Plan {
        deployment: inv.deployment.name.clone(),
        summary: format!(
            "{} ({}: {} masters x {} replicas, {} instances on {} hosts)",
            inv.deployment.name,
            inv.deployment.topology,
            inv.deployment.masters,
            inv.deployment.replicas_per_master,
            input.targets.len() + input.sentinels.len(),
            inv.hosts.len()
        ),
        steps: Vec::new(),
        refusals: Vec::new(),
        skipped: input.observed.skipped.clone(),
        held_back: Vec::new(),
        warnings: Vec::new(),
        after_joining: Vec::new(),
    };
    plan.refusals.extend(password_refusal(input));
    plan.refusals.extend(orphans(input.observed));
    plan.refusals.extend(host_refusals(input));
    if !plan.refusals.is_empty() {
        // apply refuses before doing anything: show only why.
        return plan;
    }
    plan.steps.extend(prelude(input));
    plan.steps.extend(promotions(input));
    let (restarts, held) = restarts(input);
    plan.steps.extend(instances(input, |s| {
        matches!(s, Step::PutConfig { .. } | Step::SetLive { .. })
    }));
    plan.steps.extend(restarts);
    plan.held_back.extend(held);
    plan.steps.extend(instances(input, |s| {
        !matches!(s, Step::PutConfig { .. } | Step::SetLive { .. })
    }));
    topology(input, &mut plan);
    plan
}

fn orphans(observed: &Observed) -> impl Iterator<Item = Refusal> + '_ {
    observed
        .orphans
        .iter()
        .map(|o| Refusal::Orphan { target: o.clone() })
}

/// A new password pushed to running instances would lock every client
/// out: only a deployment that runs nowhere gets one.
fn password_refusal(input: &Input<'_>) -> Option<Refusal> {
    let d = input.deployment;
    let runs = input
        .observed
        .targets
        .iter()
        .chain(&input.observed.sentinels)
        .any(|s| s.status.is_some());
    (d.password.is_none() && runs).then(|| Refusal::PasswordMissing {
        path: d.password_path.display().to_string(),
    })
}

/// What the hosts acted on cannot run; a host whose redis-server its agent
/// installs is judged as if installed (apply checks again afterwards).
fn host_refusals(input: &Input<'_>) -> Vec<Refusal> {
    let Some(facts) = input.facts else {
        return Vec::new();
    };
    let judged: Vec<Option<Facts>> = facts
        .iter()
        .map(|f| {
            let f = f.as_ref()?;
            if redis_check(f) != RedisCheck::Install {
                return Some(f.clone());
            }
            Some(Facts {
                redis_server_path: Some("redis-server".into()),
                redis_version: Some("7.0.0".into()),
                ..f.clone()
            })
        })
        .collect();
    crate::fleet::host_problems(input.deployment, &judged)
        .into_iter()
        .map(|p| Refusal::Host {
            problem: p.to_string(),
        })
        .collect()
}

/// Passwords to create and redis-server to install, before anything else.
fn prelude(input: &Input<'_>) -> Vec<Step> {
    let d = input.deployment;
    let mut steps = Vec::new();
    if d.password.is_none() {
        steps.push(Step::CreatePassword {
            path: d.password_path.display().to_string(),
        });
    }
    let users: Vec<String> = d
        .inventory
        .users
        .iter()
        .zip(d.user_passwords.iter().chain(std::iter::repeat(&None)))
        .filter(|(_, p)| p.is_none())
        .map(|(u, _)| u.name.clone())
        .collect();
    if !users.is_empty() {
        steps.push(Step::CreateUserPasswords { users });
    }
    if let Some(facts) = input.facts {
        for (host, f) in d.inventory.hosts.iter().zip(facts) {
            if f.as_ref()
                .is_some_and(|f| redis_check(f) == RedisCheck::Install)
            {
                steps.push(Step::InstallRedis {
                    host: host.name.clone(),
                });
            }
        }
    }
    steps
}

/// Every host is acted on: formation, repair and moving masters may touch
/// any node, so they need all of them.
fn whole(observed: &Observed) -> bool {
    observed.acting.iter().all(|&a| a)
}

fn views(observed: &Observed) -> Vec<Option<Observation>> {
    observed.targets.iter().map(|s| s.cluster.clone()).collect()
}

/// Shards whose master is gone for good: the replica takes over first.
fn promotions(input: &Input<'_>) -> Vec<Step> {
    let observed = views(input.observed);
    if !whole(input.observed) || observed.iter().all(Option::is_none) {
        return Vec::new();
    }
    let members = members(input.targets);
    (0..input.deployment.inventory.deployment.masters)
        .filter(|&s| shard_master(&members, &observed, s).is_none())
        .filter_map(|s| {
            let i = crate::form::heir_of_lost_master(input.targets, &observed, s)
                .filter(|&i| !follows_leaving(input, &observed, i))?;
            Some(Step::PromoteHeir {
                shard: s,
                target: input.targets[i].label(),
            })
        })
        .collect()
}

fn leaving_views(observed: &Observed) -> Vec<Option<Observation>> {
    observed.leaving.iter().map(|s| s.cluster.clone()).collect()
}

/// Target `i` replicates an instance that leaves and still runs: not a lost
/// master's heir, it takes over in order ([`Step::TakeOver`]).
fn follows_leaving(input: &Input<'_>, observed: &[Option<Observation>], i: usize) -> bool {
    let Some(master) = (observed[i].as_ref())
        .and_then(Observation::myself)
        .and_then(|m| m.master_id.clone())
    else {
        return false;
    };
    leaving_views(input.observed)
        .iter()
        .flatten()
        .any(|o| o.myself().is_some_and(|m| m.id == master))
}

fn is_running(s: &TargetState) -> bool {
    s.status
        .as_ref()
        .is_some_and(|st| st.state == InstanceState::Running)
}

/// A running redis-server whose every changed setting it takes live
/// (CONFIG SET, ACL SETUSER / DELUSER): set live, no restart. An empty
/// list (an interrupted apply's restart) restarts as before.
fn sets_live(s: &TargetState) -> bool {
    is_running(s)
        && s.put.restart_needed
        && !s.put.changes.is_empty()
        && s.put.changes.iter().all(|k| k.live)
}

/// Config writes, starts and node-timeout repairs of the Redis instances
/// acted on, those `keep` selects.
fn instances(input: &Input<'_>, keep: impl Fn(&Step) -> bool) -> Vec<Step> {
    let o = input.observed;
    let mut steps = Vec::new();
    for (t, s) in input.targets.iter().zip(&o.targets) {
        if !o.acting[t.host] {
            continue;
        }
        let target = t.label();
        if sets_live(s) {
            steps.push(Step::SetLive {
                target: target.clone(),
                keys: s.put.changes.clone(),
            });
        } else if s.status.is_none() || s.put.changed {
            steps.push(Step::PutConfig {
                target: target.clone(),
                create: s.status.is_none(),
                restart: is_running(s) && s.put.restart_needed,
                keys: s.put.changes.clone(),
            });
        }
        if !is_running(s) {
            let state = s
                .status
                .as_ref()
                .map_or(InstanceState::Stopped, |s| s.state);
            steps.push(Step::Start {
                target: target.clone(),
                state: state.as_str().to_owned(),
            });
        }
        // A changed node timeout set live restores it already.
        let sets_timeout = sets_live(s)
            && s.put
                .changes
                .iter()
                .any(|k| k.key == "cluster-node-timeout");
        if let Some(live) = s.node_timeout_drift.filter(|_| !sets_timeout) {
            steps.push(Step::RestoreNodeTimeout {
                target,
                live,
                want: t.spec.cluster_node_timeout_ms(),
            });
        }
    }
    steps.into_iter().filter(|s| keep(s)).collect()
}

/// Running instances whose config needs a restart (also those whose config
/// an earlier, interrupted apply already wrote): one at a time with a
/// handover when the cluster is healthy, together when it is not.
/// Returns the restarts and the ones held back, with why.
fn restarts(input: &Input<'_>) -> (Vec<Step>, Vec<String>) {
    let o = input.observed;
    let which: Vec<usize> = (0..input.targets.len())
        .filter(|&i| o.acting[input.targets[i].host])
        .filter(|&i| is_running(&o.targets[i]) && o.targets[i].put.restart_needed)
        .filter(|&i| !sets_live(&o.targets[i]))
        .collect();
    if which.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let observed = views(o);
    // Open or unserved slots are repaired after the restarts; they do not
    // stop a shard from handing over.
    let healthy = formation_problems(assess(&members(input.targets), &observed)).is_empty();
    let label = |i: usize| input.targets[i].label();
    if !healthy && !whole(o) {
        // Restarting together is only safe when formation follows, and it
        // does not without every host.
        let held = which.iter().map(|&i| format!(
            "{}: restart for its new config skipped: the cluster is not healthy and repairing it needs every host",
            label(i)
        ));
        return (Vec::new(), held.collect());
    }
    if !healthy {
        let steps = which.iter().map(|&i| Step::Restart {
            target: label(i),
            handover: Handover::Together,
        });
        return (steps.collect(), Vec::new());
    }
    let (mut steps, mut held) = (Vec::new(), Vec::new());
    for i in rolling_order(&observed, &which) {
        match handover(input, &observed, i) {
            Some(handover) => steps.push(Step::Restart {
                target: label(i),
                handover,
            }),
            None => held.push(format!(
                "{}: restart for its new config skipped: its only replica's agent is unreachable, so it cannot hand its slots over",
                label(i)
            )),
        }
    }
    (steps, held)
}

/// A master serving slots (or, outside a cluster, holding the master role).
fn is_master(observed: &[Option<Observation>], i: usize) -> bool {
    observed[i].as_ref().is_some_and(|o| match o.myself() {
        Some(m) => m.is_master() && m.slot_count() > 0,
        None => o.role_master == Some(true),
    })
}

/// Replicas first, masters last (each master hands over only once).
pub fn rolling_order(observed: &[Option<Observation>], which: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = which
        .iter()
        .copied()
        .filter(|&i| !is_master(observed, i))
        .collect();
    order.extend(which.iter().copied().filter(|&i| is_master(observed, i)));
    order
}

/// What restarting target `i` implies; None when it must not restart (its
/// replica serves behind an unreachable agent: a restart in place would
/// take the shard down for nothing).
fn handover(input: &Input<'_>, observed: &[Option<Observation>], i: usize) -> Option<Handover> {
    let targets = input.targets;
    let reachable = |host: usize| {
        !input.observed.skipped.iter().any(|s| {
            matches!(s.reason, SkipReason::Unreachable(_))
                && input.deployment.inventory.hosts[host].name == s.host
        })
    };
    if targets[i].spec.mode != RedisMode::Cluster {
        let master = observed[i].as_ref().and_then(|o| o.role_master) == Some(true);
        return Some(if master && targets.len() > 1 {
            Handover::Switchover
        } else {
            Handover::None
        });
    }
    let Some(me) = observed[i].as_ref().and_then(Observation::myself) else {
        return Some(Handover::None);
    };
    if !(me.is_master() && me.slot_count() > 0) {
        return Some(Handover::None);
    }
    let replicas: Vec<usize> = (0..targets.len())
        .filter(|&j| {
            observed[j].as_ref().is_some_and(|o| {
                o.myself().and_then(|m| m.master_id.as_deref()) == Some(me.id.as_str())
            })
        })
        .collect();
    let heir = replicas.iter().copied().find(|&j| {
        reachable(targets[j].host)
            && observed[j]
                .as_ref()
                .is_some_and(|o| o.link_up == Some(true))
    });
    match heir {
        Some(j) => Some(Handover::ClusterFailover {
            to: targets[j].label(),
        }),
        None if replicas.iter().any(|&j| !reachable(targets[j].host)) => None,
        None => Some(Handover::InPlace),
    }
}

/// Formation, balance and the sentinels: only with every host acted on.
fn topology(input: &Input<'_>, plan: &mut Plan) {
    let o = input.observed;
    let observed = views(o);
    let leaving = leaving_views(o);
    let problems = crate::engine::shape::assess(input.targets, &observed, input.leaving, &leaving);
    let whole = whole(o);
    let cluster = input
        .targets
        .iter()
        .any(|t| t.spec.mode == RedisMode::Cluster);
    if !whole {
        // The cluster as it is may be fine without the hosts left alone
        // (their Redis serves on); forming or repairing it is not.
        let sentinels_need = !o.sentinel_problems.is_empty() && plan.steps.is_empty();
        if !problems.is_empty() || sentinels_need {
            plan.held_back.push("cluster repair: skipped, it needs every host (run apply without --limit once all agents answer)".to_owned());
        }
        return;
    }
    let takeovers = takeovers(input, &observed, &leaving);
    if input.form && !takeovers.is_empty() {
        // A shard's new master serves it first: formation and slot moves
        // are planned from what follows (the next round).
        plan.steps.extend(takeovers);
        return;
    }
    let fixes = slot_fixes(input, &observed, &leaving, &problems);
    let problems = formation_problems(problems);
    if input.form && !problems.is_empty() {
        plan.steps.push(Step::FormCluster {
            problems: problems.iter().map(ToString::to_string).collect(),
        });
        if cluster && fixes.is_empty() {
            plan.after_joining = after_joining(input, &observed, &leaving, plan);
        }
    }
    // Open or unserved slots are repaired, never refused: finished or
    // rolled back from what the masters report (`engine::fix`). Slot moves
    // are planned from the repaired map, in the next round.
    let fixing = input.form && !fixes.is_empty();
    if fixing {
        plan.steps.push(Step::FixSlots { fixes });
    }
    plan.warnings.extend(o.removed.iter().map(|r| {
        format!("{r}: removed from the cluster and stopped; its data stays until `paddock prune --purge-data`")
    }));
    if cluster
        && input.form
        && !fixing
        && problems.is_empty()
        && reshape(input, &observed, &leaving, plan)
    {
        return;
    }
    if cluster {
        let balance = crate::balance::judge(&crate::balance::roles(input.targets, &observed));
        if input.form && !balance.moves.is_empty() {
            plan.steps.push(Step::Rebalance {
                problems: balance.fixable().iter().map(ToString::to_string).collect(),
                moves: balance.moves.iter().map(ToString::to_string).collect(),
            });
        }
        plan.warnings.extend(balance.warnings());
        plan.warnings.extend(
            balance
                .blocked()
                .iter()
                .map(|p| format!("{p}; {}", crate::balance::BLOCKED)),
        );
    }
    if input.form {
        sentinels(input, plan);
    }
}

/// The repair of open and unserved slots, one line per slot or run of
/// slots with the same repair.
fn slot_fixes(
    input: &Input<'_>,
    observed: &[Option<Observation>],
    leaving: &[Option<Observation>],
    problems: &[crate::problem::ClusterProblem],
) -> Vec<String> {
    use crate::engine::fix;
    // Masters that leave the cluster may hold what a repair moves.
    let all_observed: Vec<Option<Observation>> = observed.iter().chain(leaving).cloned().collect();
    let slots = fix::slots_to_inspect(&all_observed, fix::unserved_is_ours(problems));
    if slots.is_empty() {
        return Vec::new();
    }
    let o = input.observed;
    let keys: Vec<fix::SlotKeys> = (o.targets.iter().chain(&o.leaving))
        .map(|s| s.slot_keys.clone())
        .collect();
    let staying: Vec<bool> = (0..all_observed.len())
        .map(|i| i < observed.len())
        .collect();
    let views = fix::slot_views(&all_observed, &keys, &slots, &staying);
    let fixes = fix::fixes(&views);
    let all: Vec<crate::fleet::Target> =
        input.targets.iter().chain(input.leaving).cloned().collect();
    fix::describe(&fixes, &views, &fix::labels(&all, &all_observed))
}

/// Replicas placed as their shard's master whose master leaves (its host
/// is removed): each takes over, coordinated, before anything else.
fn takeovers(
    input: &Input<'_>,
    observed: &[Option<Observation>],
    leaving: &[Option<Observation>],
) -> Vec<Step> {
    (0..input.targets.len())
        .filter(|&i| input.targets[i].placed_role == paddock_inventory::Role::Master)
        .filter(|&i| follows_leaving(input, observed, i))
        .filter_map(|i| {
            let master = observed[i].as_ref()?.myself()?.master_id.clone()?;
            let from = (0..input.leaving.len()).find(|&j| {
                leaving[j]
                    .as_ref()
                    .and_then(Observation::myself)
                    .is_some_and(|m| m.id == master)
            })?;
            Some(Step::TakeOver {
                target: input.targets[i].label(),
                from: input.leaving[from].label(),
            })
        })
        .collect()
}

/// A healthy cluster's change of shape: slot moves, then the removal of
/// drained nodes. True when there is one (the masters' spread is judged
/// once it is done).
/// The slot moves a scale-out's next round will plan, once the masters
/// this plan creates have joined: shown by `paddock plan`, not steps.
fn after_joining(
    input: &Input<'_>,
    observed: &[Option<Observation>],
    leaving: &[Option<Observation>],
    plan: &Plan,
) -> Vec<crate::engine::step::PlannedMove> {
    let created = |label: &str| {
        plan.steps
            .iter()
            .any(|s| matches!(s, Step::PutConfig { target, create: true, .. } if target == label))
    };
    let joining: Vec<usize> = (0..input.targets.len())
        .filter(|&i| input.targets[i].placed_role == paddock_inventory::Role::Master)
        .filter(|&i| created(&input.targets[i].label()))
        .collect();
    // Only a running cluster's slots move; a new cluster is formed with them.
    let serving = observed
        .iter()
        .flatten()
        .filter_map(Observation::myself)
        .any(|m| m.slot_count() > 0);
    if !serving {
        return Vec::new();
    }
    crate::engine::shape::moves_after_joining(
        input.targets,
        observed,
        &joining,
        input.leaving,
        leaving,
        &input.observed.loads,
    )
}

fn reshape(
    input: &Input<'_>,
    observed: &[Option<Observation>],
    leaving: &[Option<Observation>],
    plan: &mut Plan,
) -> bool {
    let moves = crate::engine::shape::slot_moves(
        input.targets,
        observed,
        input.leaving,
        leaving,
        &input.observed.loads,
    );
    let removals = crate::engine::shape::removals(input.leaving, leaving, observed, &moves);
    if moves.is_empty() && removals.is_empty() {
        return false;
    }
    if !moves.is_empty() {
        plan.steps.push(Step::MoveSlots { moves });
    }
    plan.steps.extend(removals);
    true
}

/// The sentinels' configs and starts; their repair is judged once the
/// replication they watch is right (nothing else to do).
fn sentinels(input: &Input<'_>, plan: &mut Plan) {
    let o = input.observed;
    let mut steps = Vec::new();
    for (t, s) in input.sentinels.iter().zip(&o.sentinels) {
        let target = t.label();
        match &s.status {
            None => steps.push(Step::PutConfig {
                target: target.clone(),
                create: true,
                restart: false,
                keys: Vec::new(),
            }),
            // Sentinel settings are set live: SENTINEL SET.
            Some(_) if s.put.restart_needed => steps.push(Step::SetLive {
                target: target.clone(),
                keys: s.put.changes.clone(),
            }),
            Some(_) if s.put.changed => steps.push(Step::PutConfig {
                target: target.clone(),
                create: false,
                restart: false,
                keys: s.put.changes.clone(),
            }),
            Some(_) => {}
        }
        if !is_running(s) {
            let state = s
                .status
                .as_ref()
                .map_or(InstanceState::Stopped, |s| s.state);
            steps.push(Step::Start {
                target,
                state: state.as_str().to_owned(),
            });
        }
    }
    if plan.steps.is_empty() && steps.is_empty() && !o.sentinel_problems.is_empty() {
        steps.push(Step::RepairSentinels {
            problems: o
                .sentinel_problems
                .iter()
                .map(ToString::to_string)
                .collect(),
        });
    }
    plan.steps.extend(steps);
}
