//! Forming (or finishing, or repairing) a Redis Cluster through the agents,
//! with our own code: SET-CONFIG-EPOCH, ADDSLOTSRANGE, MEET, REPLICATE,
//! FORGET, then waiting on the real condition by polling every few
//! milliseconds.
//!
//! Every step is idempotent and recomputed from what the nodes report on each
//! poll, so an interrupted apply is finished by the next, and a node that
//! comes back with a new identity (a replaced machine, a lost data
//! directory) is introduced again while its old identity is forgotten.
//!
//! Speed: a master that has been without slots waits a rejoin delay of
//! cluster-node-timeout (clamped to 0.5-5 s) before it reports ok. When slots
//! must be assigned, formation runs with the node timeout at 500 ms and
//! restores the configured value afterwards, whatever the outcome. A
//! cluster that already serves every slot keeps its node timeout.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::client::Reply;
use crate::cluster::{Observation, assess, shard_master, shard_slots};
use crate::engine::formation::FormStep;
use crate::engine::observe::observe_node;
use crate::fleet::{Fleet, Target, members};
use crate::problem::{ClusterProblem, formation_problems};
use crate::progress::Progress;
use paddock_knowledge::decide::{Escalation, FailoverMode};
use paddock_knowledge::procedure;

const FORMING_NODE_TIMEOUT_MS: u32 = 500;
const POLL: Duration = Duration::from_millis(10);
/// A MEET or FORGET is repeated at most this often for the same pair.
const RETRY_EVERY: Duration = Duration::from_millis(500);

pub struct FormReport {
    /// From the first CLUSTER MEET (or slot assignment) to every node
    /// agreeing and reporting ok; None when nothing had to be introduced.
    pub meet_to_converged: Option<Duration>,
    pub total: Duration,
}

pub async fn form(
    fleet: &Fleet,
    targets: &[Target],
    masters: u32,
    deadline: Duration,
    progress: &Progress,
) -> Result<FormReport, Error> {
    form_keeping(fleet, targets, &[], masters, deadline, progress).await
}

/// [`form`] during a change of shape: `leaving` (instances that leave,
/// still running) count as members until they are removed, and a new
/// master stays without slots (they are moved to it afterwards).
pub async fn form_keeping(
    fleet: &Fleet,
    targets: &[Target],
    leaving: &[Target],
    masters: u32,
    deadline: Duration,
    progress: &Progress,
) -> Result<FormReport, Error> {
    let started = Instant::now();
    if targets
        .first()
        .is_some_and(|t| t.spec.mode == crate::client::RedisMode::Standalone)
    {
        form_replication(fleet, targets, started + deadline, progress).await?;
        return Ok(FormReport {
            meet_to_converged: None,
            total: started.elapsed(),
        });
    }
    let members = members(targets);
    let observed = observe_all(fleet, targets).await;
    let unserved = (0..masters)
        .filter(|&s| shard_master(&members, &observed, s).is_none())
        .count();
    // A cluster serving every slot keeps its node timeout.
    let shorten = unserved > 0 && !every_slot_served(&observed, &[]);
    if shorten && let Err(e) = set_node_timeout(fleet, targets, |_| FORMING_NODE_TIMEOUT_MS).await {
        let _ = set_node_timeout(fleet, targets, |t| t.spec.cluster_node_timeout_ms()).await;
        return Err(e);
    }
    let result = form_inner(
        fleet,
        targets,
        leaving,
        masters,
        started + deadline,
        progress,
    )
    .await;
    if shorten {
        // Restore even when formation failed: a short node timeout must not stay.
        let restored = set_node_timeout(fleet, targets, |t| t.spec.cluster_node_timeout_ms()).await;
        let meet_to_converged = result?;
        restored?;
        return Ok(FormReport {
            meet_to_converged,
            total: started.elapsed(),
        });
    }
    Ok(FormReport {
        meet_to_converged: result?,
        total: started.elapsed(),
    })
}

/// Sets cluster-node-timeout at runtime on every target (not written to
/// redis.conf), never above the configured value. Every target is tried;
/// the first error is returned.
pub async fn set_node_timeout(
    fleet: &Fleet,
    targets: &[Target],
    value: impl Fn(&Target) -> u32,
) -> Result<(), Error> {
    let calls = targets.iter().map(|t| {
        let v = value(t).min(t.spec.cluster_node_timeout_ms()).to_string();
        async move {
            let r = fleet
                .redis(t, &[&["CONFIG", "SET", "cluster-node-timeout", &v]])
                .await?;
            expect_ok(t, "CONFIG SET cluster-node-timeout", &r[0])
        }
    });
    join_all(calls).await.into_iter().collect()
}

fn expect_ok(t: &Target, what: &str, reply: &Reply) -> Result<(), Error> {
    match reply.error() {
        Some(e) => Err(Error::Redis {
            host: t.host_name.clone(),
            instance: t.instance.clone(),
            message: format!("{what}: {e}"),
        }),
        None => Ok(()),
    }
}

/// Every target's view of the cluster; a target whose agent is unreachable
/// is judged from the others' views ([`Fleet::with_hearsay`]).
pub async fn observe_all(fleet: &Fleet, targets: &[Target]) -> Vec<Option<Observation>> {
    let own = join_all(targets.iter().map(|t| observe_node(fleet, t)))
        .await
        .into_iter()
        .map(|o| o.map(|(obs, _)| obs))
        .collect();
    fleet.with_hearsay(targets, own)
}

/// Promotes, before anything else starts, the replica of every shard whose
/// master is gone for good (a replaced machine, lost data). Done first
/// because the replacement instance comes up at the old master's address:
/// the orphaned replica reconnects to that address, and would copy the new,
/// empty instance if it were running before the replica took over.
pub async fn promote_heirs(
    fleet: &Fleet,
    targets: &[Target],
    masters: u32,
    deadline: Instant,
    progress: &Progress,
) -> Result<(), Error> {
    let members = members(targets);
    loop {
        let observed = observe_all(fleet, targets).await;
        let heirs: Vec<(u32, usize)> = (0..masters)
            .filter(|&s| shard_master(&members, &observed, s).is_none())
            .filter_map(|s| heir_of_lost_master(targets, &observed, s).map(|i| (s, i)))
            .collect();
        if heirs.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = heirs.iter().map(|(_, i)| targets[*i].label()).collect();
            return Err(Error::NotConverged(format!(
                "the master of a shard is gone and its replica did not take over in time: {}
                   hint: a majority of the masters must be up to agree; check `paddock status`",
                names.join(", ")
            )));
        }
        let tries = heirs.iter().map(|&(shard, i)| async move {
            let node = crate::node::Node::of(fleet, &targets[i])?;
            let announce = |mode: FailoverMode| {
                progress.step(format!(
                    "shard {shard}: its master is gone; promoting {} ({})",
                    targets[i].label(),
                    mode.args().join(" ")
                ))
            };
            procedure::cluster_failover(&node, &HEIR_ESCALATION, deadline.into(), POLL, announce)
                .await
                .map_err(crate::node::error)
        });
        for result in join_all(tries).await {
            match result {
                // Not promoted yet: observed again, and reported at the deadline.
                Ok(()) | Err(Error::NotConverged(_)) => {}
                Err(e) => return Err(e),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How a replica of a lost master is asked to take over: FORCE needs the
/// majority's votes; after two tries the old master is known gone, so
/// TAKEOVER is safe.
const HEIR_ESCALATION: Escalation = Escalation {
    modes: &[
        FailoverMode::Force,
        FailoverMode::Force,
        FailoverMode::Takeover,
    ],
    repeat_last: true,
    retry_after: Duration::from_millis(RETRY_EVERY.as_millis() as u64 * 4),
};

/// Waits until the cluster is healthy (no step taken), for rolling restarts.
pub async fn wait_healthy(
    fleet: &Fleet,
    targets: &[Target],
    deadline: Instant,
) -> Result<(), Error> {
    let members = members(targets);
    loop {
        let observed = observe_all(fleet, targets).await;
        // Open or unserved slots do not go away by waiting: the slot
        // repair settles them.
        let problems = formation_problems(assess(&members, &observed));
        if problems.is_empty() {
            return Ok(());
        }
        if past(deadline) {
            return Err(not_converged(targets, &problems, &HashMap::new()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `deadline` has passed, on tokio's clock: the same as the
/// system's, except in paused-time tests.
fn past(deadline: Instant) -> bool {
    tokio::time::Instant::now() >= tokio::time::Instant::from_std(deadline)
}

/// Every node answers. Open slots are left to the slot repair
/// (`engine::fix`), which runs after formation. Pure.
fn preflight(targets: &[Target], observed: &[Option<Observation>]) -> Result<(), Error> {
    if let Some(i) = observed.iter().position(Option::is_none) {
        return Err(Error::NotConverged(format!(
            "{} ({}:{}) does not answer; cannot form the cluster without it",
            targets[i].label(),
            targets[i].ip,
            targets[i].port
        )));
    }
    Ok(())
}

/// Distinct config epochs up front spare Redis its collision resolution.
async fn set_epochs(
    fleet: &Fleet,
    targets: &[Target],
    observed: &[Option<Observation>],
) -> Result<(), Error> {
    let epochs = targets
        .iter()
        .zip(observed)
        .enumerate()
        .filter_map(|(i, (t, o))| {
            let o = o.as_ref()?;
            let fresh = o.nodes.len() == 1 && o.myself().is_some_and(|m| m.config_epoch == 0);
            fresh.then_some(async move {
                let epoch = (i + 1).to_string();
                fleet
                    .redis(t, &[&["CLUSTER", "SET-CONFIG-EPOCH", &epoch]])
                    .await
                    .map(|_| ())
            })
        });
    join_all(epochs)
        .await
        .into_iter()
        .collect::<Result<(), Error>>()
}

/// Slots: a shard without a serving master gets its even range on the
/// member placement made master (index, first, last slot), unless any
/// node, in any view, already serves part of it (another cluster must
/// never be formed beside it). Pure.
fn slot_assignments(
    targets: &[Target],
    masters: u32,
    observed: &[Option<Observation>],
) -> Result<Vec<(usize, u32, u32)>, Error> {
    let members = members(targets);
    let held: Vec<(u32, u32)> = observed
        .iter()
        .flatten()
        .flat_map(|o| o.nodes.iter())
        .flat_map(|n| n.slots.iter().copied())
        .collect();
    let mut assign = Vec::new();
    for shard in 0..masters {
        if shard_master(&members, observed, shard).is_some()
            || heir_of_lost_master(targets, observed, shard).is_some()
        {
            continue;
        }
        let (a, b) = shard_slots(shard, masters);
        if held.iter().any(|&(x, y)| x <= b && a <= y) {
            return Err(Error::NotConverged(format!(
                "shard {shard}: no member of it serves slots, but slots {a}-{b} are served by some other node; \
                 this needs an operator (compare `paddock status` with CLUSTER NODES)"
            )));
        }
        let placed = targets
            .iter()
            .position(|t| t.shard == shard && t.placed_role == paddock_inventory::Role::Master);
        if let Some(i) = placed {
            assign.push((i, a, b));
        }
    }
    Ok(assign)
}

/// Whether the masters' own views, together, serve all 16384 slots.
fn every_slot_served(observed: &[Option<Observation>], more: &[Option<Observation>]) -> bool {
    let served: u32 = (observed.iter().chain(more))
        .flatten()
        .filter_map(Observation::myself)
        .filter(|m| m.is_master())
        .map(|m| m.slot_count())
        .sum();
    served == crate::cluster::SLOTS
}

/// The views of the instances that leave (None: not running).
async fn observe_leaving(fleet: &Fleet, leaving: &[Target]) -> Vec<Option<Observation>> {
    join_all(leaving.iter().map(|t| observe_node(fleet, t)))
        .await
        .into_iter()
        .map(|o| o.map(|(obs, _)| obs))
        .collect()
}

async fn form_inner(
    fleet: &Fleet,
    targets: &[Target],
    leaving: &[Target],
    masters: u32,
    deadline: Instant,
    progress: &Progress,
) -> Result<Option<Duration>, Error> {
    let observed = observe_all(fleet, targets).await;
    preflight(targets, &observed)?;
    set_epochs(fleet, targets, &observed).await?;
    let leaving_views = observe_leaving(fleet, leaving).await;
    // Slots are served (a change of shape): new masters get theirs moved.
    let assign: Vec<(usize, u32, u32)> = if every_slot_served(&observed, &leaving_views) {
        Vec::new()
    } else {
        slot_assignments(targets, masters, &observed)?
    };
    let assign: Vec<(&Target, u32, u32)> = assign
        .into_iter()
        .map(|(i, a, b)| (&targets[i], a, b))
        .collect();
    let first_step = Instant::now();
    if !assign.is_empty() {
        progress.step(format!("assigning slots to {} master(s)", assign.len()));
    }
    let adds = assign.iter().map(|&(t, a, b)| async move {
        let (a, b) = (a.to_string(), b.to_string());
        let r = fleet
            .redis(t, &[&["CLUSTER", "ADDSLOTSRANGE", &a, &b]])
            .await?;
        expect_ok(t, "CLUSTER ADDSLOTSRANGE", &r[0])
    });
    join_all(adds)
        .await
        .into_iter()
        .collect::<Result<(), Error>>()?;

    let mut last_try: HashMap<(usize, String), Instant> = HashMap::new();
    let mut last_error: HashMap<usize, String> = HashMap::new();
    let mut announced: HashSet<&str> = HashSet::new();
    let mut introduced = !assign.is_empty();
    let mut first = true;
    loop {
        let observed = if first {
            first = false;
            observed.clone()
        } else {
            observe_all(fleet, targets).await
        };
        let leaving_views = observe_leaving(fleet, leaving).await;
        let problems = formation_problems(crate::engine::shape::assess(
            targets,
            &observed,
            leaving,
            &leaving_views,
        ));
        if problems.is_empty() {
            progress.step("cluster converged: every node agrees and reports cluster_state:ok");
            return Ok(introduced.then(|| first_step.elapsed()));
        }
        agents_still_answer(fleet, targets, &observed).await?;
        if past(deadline) {
            return Err(not_converged(targets, &problems, &last_error));
        }
        let (steps, introducing) = paced(
            crate::engine::formation::formation_steps(targets, masters, &observed, |s| {
                heir_of_lost_master(targets, &observed, s)
                    .filter(|&i| !follows(&observed, i, &leaving_views))
            }),
            &mut last_try,
            targets,
            &mut announced,
            progress,
        );
        introduced |= introducing;

        let calls = group(steps).into_iter().map(|(i, commands)| async move {
            let refs: Vec<Vec<&str>> = commands
                .iter()
                .map(|c| c.iter().map(String::as_str).collect())
                .collect();
            let refs: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
            let replies = fleet.redis(&targets[i], &refs).await?;
            let error = commands
                .iter()
                .zip(&replies)
                .find_map(|(c, r)| r.error().map(|e| format!("{}: {e}", c[..2].join(" "))));
            Ok::<_, Error>((i, error))
        });
        for r in join_all(calls).await {
            if let (i, Some(e)) = r? {
                last_error.insert(i, e);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The steps due now (a step is repeated at most every
/// [`FormStep::retry_every`]), as commands per node, with their progress
/// lines; true when a MEET is among them.
fn paced(
    due: Vec<FormStep>,
    last_try: &mut HashMap<(usize, String), Instant>,
    targets: &[Target],
    announced: &mut HashSet<&'static str>,
    progress: &Progress,
) -> (Vec<(usize, Vec<String>)>, bool) {
    let mut steps = Vec::new();
    let (mut meets, mut forgets) = (0, 0);
    let mut later = Vec::new();
    for s in due {
        let key = s.key();
        if last_try
            .get(&key)
            .is_some_and(|t| t.elapsed() < s.retry_every(RETRY_EVERY))
        {
            continue;
        }
        last_try.insert(key, Instant::now());
        match &s {
            FormStep::Meet { .. } => meets += 1,
            FormStep::Forget { .. } => forgets += 1,
            FormStep::Promote { shard, heir } => later.push(format!(
                "shard {shard}: its master is gone; promoting {} (CLUSTER FAILOVER FORCE)",
                targets[*heir].label()
            )),
            FormStep::Replicate { .. } => {
                if announced.insert("replicate") {
                    later.push("attaching replicas (CLUSTER REPLICATE)".to_owned());
                }
            }
        }
        steps.push((s.node(), s.argv(targets)));
    }
    if meets > 0 {
        progress.step(format!("introducing nodes ({meets} CLUSTER MEET)"));
    }
    if forgets > 0 && announced.insert("forget") {
        progress.step("forgetting node identities no host has any more (CLUSTER FORGET)");
    }
    for line in later {
        progress.step(line);
    }
    (steps, meets > 0)
}

/// Target `i` replicates a node that leaves and still runs: not a lost
/// master's heir (it takes over in order, `Step::TakeOver`).
fn follows(observed: &[Option<Observation>], i: usize, leaving: &[Option<Observation>]) -> bool {
    let master = observed[i]
        .as_ref()
        .and_then(Observation::myself)
        .and_then(|m| m.master_id.as_deref());
    master.is_some_and(|id| {
        leaving
            .iter()
            .flatten()
            .any(|o| o.myself().is_some_and(|m| m.id == id))
    })
}

/// A member of `shard` that replicates a master no target is any more (its
/// machine was replaced or its data lost): the one to promote so the shard
/// keeps its data.
pub fn heir_of_lost_master(
    targets: &[Target],
    observed: &[Option<Observation>],
    shard: u32,
) -> Option<usize> {
    let live: Vec<&str> = observed
        .iter()
        .flatten()
        .filter_map(|o| o.myself().map(|m| m.id.as_str()))
        .collect();
    targets.iter().enumerate().find_map(|(i, t)| {
        let me = observed[i].as_ref()?.myself()?;
        let master = me.master_id.as_deref()?;
        (t.shard == shard && me.is_replica() && !live.contains(&master)).then_some(i)
    })
}

/// Fails at once, naming the host, when a node does not answer because its
/// agent stopped answering: waiting out the formation timeout cannot help.
async fn agents_still_answer(
    fleet: &Fleet,
    targets: &[Target],
    observed: &[Option<Observation>],
) -> Result<(), Error> {
    let mut hosts: Vec<usize> = targets
        .iter()
        .zip(observed)
        .filter(|(_, o)| o.is_none())
        .map(|(t, _)| t.host)
        .collect();
    hosts.dedup();
    for h in hosts {
        let agent = fleet.agent(h)?;
        if let Err(e) = agent.list().await {
            return Err(Error::Agent {
                host: agent.host().to_owned(),
                message: format!(
                    "stopped answering while the cluster was forming ({e}); start its agent again and re-run apply, which finishes the formation"
                ),
            });
        }
    }
    Ok(())
}

/// One master, every other member its replica (REPLICAOF), until every link
/// is up. The master is the one the others already replicate (after a
/// failover, whichever member that is), else the member placement made
/// master.
async fn form_replication(
    fleet: &Fleet,
    targets: &[Target],
    deadline: Instant,
    progress: &Progress,
) -> Result<(), Error> {
    let members = members(targets);
    let mut last_try: HashMap<usize, Instant> = HashMap::new();
    let mut announced = false;
    loop {
        let observed = observe_all(fleet, targets).await;
        let problems = assess(&members, &observed);
        if problems.is_empty() {
            progress.step("replication converged: one master, every replica linked");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotConverged(format!(
                "replication did not converge in time:\n  - {}\n  hint: replicas must reach the master's port, and the master must be up",
                crate::problem::join(&problems, "\n  - ")
            )));
        }
        if let Some(i) = observed.iter().position(Option::is_none) {
            return Err(Error::NotConverged(format!(
                "{} does not answer; cannot form the replication without it",
                targets[i].label()
            )));
        }
        let master = crate::cluster::replication_master(&members, &observed).unwrap_or_else(|| {
            targets
                .iter()
                .position(|t| t.placed_role == paddock_inventory::Role::Master)
                .unwrap_or(0)
        });
        let (ip, port) = (
            targets[master].ip.to_string(),
            targets[master].port.to_string(),
        );
        let mut calls = Vec::new();
        for (i, o) in observed.iter().enumerate() {
            let Some(o) = o else { continue };
            let due = last_try.get(&i).is_none_or(|t| t.elapsed() >= RETRY_EVERY);
            let command: Option<Vec<&str>> = if i == master {
                (o.role_master == Some(false)).then(|| vec!["REPLICAOF", "NO", "ONE"])
            } else {
                (o.role_master == Some(true)
                    || o.master_addr != Some((targets[master].ip, targets[master].port)))
                .then(|| vec!["REPLICAOF", ip.as_str(), port.as_str()])
            };
            if let Some(command) = command.filter(|_| due) {
                last_try.insert(i, Instant::now());
                calls.push((i, command));
            }
        }
        if !calls.is_empty() && !announced {
            announced = true;
            progress.step(format!(
                "{} is the master; attaching replicas (REPLICAOF)",
                targets[master].label()
            ));
        }
        let results = join_all(calls.iter().map(|(i, command)| async move {
            let r = fleet
                .agent(targets[*i].host)?
                .redis_dangerous(&targets[*i].instance, &[command.as_slice()])
                .await?;
            expect_ok(&targets[*i], &command.join(" "), &r[0])
        }))
        .await;
        results.into_iter().collect::<Result<(), Error>>()?;
        tokio::time::sleep(POLL).await;
    }
}

/// Commands per node, so each node gets one pipeline.
fn group(steps: Vec<(usize, Vec<String>)>) -> Vec<(usize, Vec<Vec<String>>)> {
    let mut by_node: Vec<(usize, Vec<Vec<String>>)> = Vec::new();
    for (i, c) in steps {
        match by_node.iter_mut().find(|(n, _)| *n == i) {
            Some((_, cs)) => cs.push(c),
            None => by_node.push((i, vec![c])),
        }
    }
    by_node
}

fn not_converged(
    targets: &[Target],
    problems: &[ClusterProblem],
    errors: &HashMap<usize, String>,
) -> Error {
    let shown = &problems[..problems.len().min(8)];
    let mut text = format!(
        "the cluster did not converge in time:\n  - {}",
        crate::problem::join(shown, "\n  - ")
    );
    if problems.len() > shown.len() {
        text.push_str(&format!(
            "\n  - ... and {} more",
            problems.len() - shown.len()
        ));
    }
    let mut errors: Vec<(&usize, &String)> = errors.iter().collect();
    errors.sort();
    for (i, e) in errors {
        text.push_str(&format!(
            "\n  last Redis error from {}: {e}",
            targets[*i].label()
        ));
    }
    if problems.iter().any(ClusterProblem::meeting_stalled) {
        let example = targets
            .first()
            .map(|t| format!(" ({} for port {})", u32::from(t.port) + 10000, t.port))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n  hint: nodes that never finish meeting usually cannot reach each other's cluster bus port: \
             port + 10000{example} must be open between every pair of hosts, \
             and each host's inventory address must be the one Redis can be reached on"
        ));
    }
    Error::NotConverged(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_steps_into_one_pipeline_per_node() {
        let s = |w: &str| w.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let grouped = group(vec![(0, s("A 1")), (1, s("B 1")), (0, s("A 2"))]);
        assert_eq!(
            grouped,
            vec![(0, vec![s("A 1"), s("A 2")]), (1, vec![s("B 1")])]
        );
    }

    /// The wait for a healthy cluster ends with NotConverged at its
    /// deadline, on tokio's clock: 60 s pass in paused time, not on the wall.
    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_healthy_cluster_ends_at_the_deadline() {
        let text = "[deployment]\nname = \"t\"\ntopology = \"cluster\"\n\
             [[hosts]]\nname = \"a\"\naddress = \"127.0.112.1\"\n[[hosts]]\nname = \"b\"\naddress = \"127.0.112.2\"\n\
             [[hosts]]\nname = \"c\"\naddress = \"127.0.112.3\"\n";
        let inventory = paddock_inventory::parse("t.toml", text).unwrap();
        let d = crate::fleet::Deployment {
            inventory_path: "t.toml".into(),
            placement: paddock_inventory::place(&inventory),
            inventory,
            password_path: "pw".into(),
            password: Some("0123456789abcdef0123456789abcdef".into()),
            user_passwords: Vec::new(),
            transport: crate::client::Transport::Plaintext,
        };
        // Nothing listens there: no node ever answers.
        let fleet = Fleet::connect(&d).await;
        let targets = d.targets();
        let started = tokio::time::Instant::now();
        let r = wait_healthy(&fleet, &targets, Instant::now() + Duration::from_secs(60)).await;
        assert!(matches!(r, Err(Error::NotConverged(_))), "{r:?}");
        assert!(started.elapsed() >= Duration::from_secs(60));
        assert!(started.elapsed() < Duration::from_secs(61));
    }
}
