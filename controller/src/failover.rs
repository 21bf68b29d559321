//! `paddock failover`: a manual, coordinated failover of one shard. CLUSTER
//! FAILOVER (without FORCE) makes the master stop accepting writes, waits
//! until the replica has its whole replication stream, then switches: no
//! acknowledged write is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::client::{Reply, Security};
use crate::cluster::{Observation, assess, shard_master};
use crate::fleet::{Deployment, Fleet, Target, members};
use crate::form::{observe_all, wait_healthy};
use crate::node::Node;
use crate::progress::Progress;
use paddock_knowledge::RedisNode;
use paddock_knowledge::decide::{Escalation, FailoverMode, heir_by_offset};
use paddock_knowledge::info::Replication;
use paddock_knowledge::{Addr, procedure};

#[derive(Debug, Clone)]
pub struct FailoverReport {
    pub shard: u32,
    pub from: String,
    pub to: String,
    pub took: Duration,
    /// `--to` named the current master: nothing was done.
    pub already_master: bool,
    /// Where the masters run now, when that is a problem `apply` fixes
    /// (this failover piled them on a host).
    pub balance: Vec<String>,
}

impl std::fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.already_master {
            writeln!(
                f,
                "Shard {}: {} is already its master; nothing to do.",
                self.shard, self.to
            )?;
        } else {
            writeln!(
                f,
                "Shard {}: {} is master now, {} its replica ({:.3}s).",
                self.shard,
                self.to,
                self.from,
                self.took.as_secs_f64()
            )?;
        }
        for p in &self.balance {
            writeln!(f, "Note: {p}.")?;
        }
        if !self.balance.is_empty() {
            writeln!(
                f,
                "`paddock status` reports this until `paddock apply` spreads the masters again (it may undo this failover)."
            )?;
        }
        Ok(())
    }
}

/// Which replica takes over: a shard's best replica, or a named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Shard(u32),
    /// The only shard of a replication or sentinel topology; a cluster
    /// needs a shard or a replica named.
    Default,
    /// "host:instance", as `paddock status` names them.
    Replica(String),
}

/// `limit` (host names or addresses; empty: all): the master's and the
/// heir's hosts must be in it. Hosts whose agent does not answer are
/// skipped, and named: a shard elsewhere fails over without them.
pub async fn failover(
    path: &Path,
    choice: &Choice,
    timeout: Duration,
    progress: bool,
    limit: &[String],
    security: Security,
) -> Result<FailoverReport, Error> {
    let started = Instant::now();
    let progress = Progress::new(progress);
    let mut deployment = Deployment::load(path, false, security)?;
    let in_limit = crate::fleet::limit_hosts(&deployment.inventory, limit)?;
    let fleet = Fleet::connect(&deployment).await;
    crate::engine::shape::keep_placement(&mut deployment, &fleet, false).await?;
    for (h, host) in deployment.inventory.hosts.iter().enumerate() {
        if let Some(e) = fleet.agent_error(h) {
            progress.step(format!("{}: skipped (agent unreachable: {e})", host.name));
        }
    }
    let name = deployment.inventory.deployment.name.clone();
    let holder = crate::fleet::lock_holder();
    fleet.lock(&name, &holder).await?;
    let result = failover_locked(
        &deployment,
        &fleet,
        choice,
        timeout,
        &progress,
        started,
        &in_limit,
    )
    .await;
    fleet.unlock(&name, &holder).await;
    result
}

async fn failover_locked(
    deployment: &Deployment,
    fleet: &Fleet,
    choice: &Choice,
    timeout: Duration,
    progress: &Progress,
    started: Instant,
    in_limit: &[bool],
) -> Result<FailoverReport, Error> {
    let outside = |t: &crate::fleet::Target| {
        (!in_limit[t.host]).then(|| {
            Error::Unsupported(format!(
                "this failover needs {} (host {}), which is not in --limit",
                t.label(),
                t.host_name
            ))
        })
    };
    let targets = deployment.targets();
    let members = members(&targets);
    let observed = observe_all(fleet, &targets).await;
    let problems = assess(&members, &observed);
    if !problems.is_empty() {
        return Err(Error::NotConverged(format!(
            "the deployment is not healthy, so no failover was started:\n  - {}\n  hint: run `paddock apply` first",
            crate::problem::join(&problems, "\n  - ")
        )));
    }
    if deployment.inventory.deployment.topology != paddock_inventory::Topology::Cluster {
        // The role may move to any member: every one must be in the limit.
        if let Some(e) = targets.iter().find_map(outside) {
            return Err(e);
        }
        let sentinels = deployment.sentinels(deployment.placed_master());
        let name = &deployment.inventory.deployment.name;
        let sentinels = Sentinels {
            targets: &sentinels,
            master_name: name,
        };
        return replication_failover(
            fleet, &targets, &observed, &sentinels, choice, timeout, progress,
        )
        .await
        .map(|(from, to)| FailoverReport {
            shard: 0,
            already_master: from == to,
            from,
            to,
            took: started.elapsed(),
            balance: Vec::new(),
        });
    }
    shard_failover(
        deployment, fleet, &targets, &observed, choice, timeout, progress, started, &outside,
    )
    .await
}

/// `paddock failover` in a cluster: the shard's chosen (or best) replica
/// takes over with a coordinated CLUSTER FAILOVER.
#[allow(clippy::too_many_arguments)]
async fn shard_failover(
    deployment: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    observed: &[Option<Observation>],
    choice: &Choice,
    timeout: Duration,
    progress: &Progress,
    started: Instant,
    outside: &impl Fn(&Target) -> Option<Error>,
) -> Result<FailoverReport, Error> {
    let members = members(targets);
    let shard = pick_shard(deployment, targets, choice)?;
    let master = shard_master(&members, observed, shard)
        .cloned()
        .ok_or_else(|| Error::NotConverged(format!("shard {shard} has no master")))?;
    let from = targets
        .iter()
        .zip(observed)
        .find(|(_, o)| {
            o.as_ref()
                .and_then(Observation::myself)
                .is_some_and(|m| m.id == master.id)
        })
        .map(|(t, _)| t.label())
        .unwrap_or_default();
    let replicas: Vec<usize> = (0..targets.len())
        .filter(|&i| {
            observed[i]
                .as_ref()
                .and_then(Observation::myself)
                .is_some_and(|m| m.master_id.as_deref() == Some(master.id.as_str()))
        })
        .collect();
    // Asking for the master it already is is a no-op, not an error: a
    // script that re-runs a switchover must be able to.
    if let Choice::Replica(label) = choice
        && *label == from
    {
        return Ok(FailoverReport {
            shard,
            from: from.clone(),
            to: from,
            took: started.elapsed(),
            already_master: true,
            balance: Vec::new(),
        });
    }
    let chosen = match choice {
        Choice::Replica(label) => replicas
            .iter()
            .copied()
            .find(|&i| targets[i].label() == *label)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "{label} is not a replica of shard {shard}'s master {from}; `paddock status` shows the roles"
                ))
            })?,
        Choice::Shard(_) | Choice::Default => {
            // The replica with the most of the replication stream.
            let offsets = replica_offsets(fleet, targets, &replicas).await;
            let candidates: Vec<(usize, Option<i64>)> =
                replicas.iter().copied().zip(offsets).collect();
            heir_by_offset(&candidates).ok_or_else(|| {
                Error::NotConverged(format!("shard {shard} has no replica in sync to take over"))
            })?
        }
    };
    let heir = &targets[chosen];
    let old = targets.iter().zip(observed).find(|(_, o)| {
        o.as_ref()
            .and_then(Observation::myself)
            .is_some_and(|m| m.id == master.id)
    });
    if let Some(e) = [Some(heir), old.map(|(t, _)| t)]
        .into_iter()
        .flatten()
        .find_map(outside)
    {
        return Err(e);
    }
    progress.step(format!(
        "shard {shard}: {} takes over from {from} (CLUSTER FAILOVER)",
        heir.label()
    ));
    cluster_failover(fleet, targets, chosen, Instant::now() + timeout).await?;
    wait_healthy(fleet, targets, Instant::now() + timeout).await?;
    progress.step("cluster healthy with the new roles");
    let observed = observe_all(fleet, targets).await;
    let balance = crate::balance::judge(&crate::balance::roles(targets, &observed));
    Ok(FailoverReport {
        shard,
        from,
        to: heir.label(),
        took: started.elapsed(),
        already_master: false,
        balance: balance.unhealthy(),
    })
}

/// The shard `choice` names: by number, or as the shard of the named
/// replica.
fn pick_shard(deployment: &Deployment, targets: &[Target], choice: &Choice) -> Result<u32, Error> {
    Ok(match choice {
        Choice::Default => {
            return Err(Error::Usage(
                "a cluster has several shards: name one with --shard N, or the replica with --to HOST:INSTANCE".into(),
            ));
        }
        Choice::Shard(s) if *s < deployment.inventory.deployment.masters => *s,
        Choice::Shard(s) => {
            return Err(Error::Usage(format!(
                "there is no shard {s}: the deployment has {} (0 to {})",
                deployment.inventory.deployment.masters,
                deployment.inventory.deployment.masters - 1
            )));
        }
        Choice::Replica(label) => match targets.iter().find(|t| t.label() == *label) {
            Some(t) => t.shard,
            None => {
                let names: Vec<String> = targets.iter().map(|t| t.label()).collect();
                return Err(Error::Unsupported(format!(
                    "no instance {label:?}; the deployment's instances are: {}",
                    names.join(", ")
                )));
            }
        },
    })
}

/// CLUSTER FAILOVER (never FORCE) at replica `heir`: its master stops
/// taking writes until the replica has its whole replication stream, then
/// they switch, so no acknowledged write is lost. Returns once the replica
/// serves the slots under a config epoch newer than its master's.
///
/// Redis 7.0 lets a replica that ran an election less than
/// [`election_retry_time`] ago "win" a new one at once with its old epoch:
/// it claims the slots, is overruled by its master's newer epoch within
/// milliseconds and is a replica again (seen after an agent's handover at
/// start-up followed by a rebalance). So a promotion counts only under a
/// newer epoch, and a failed one is asked again once that time is over.
pub(crate) async fn cluster_failover(
    fleet: &Fleet,
    targets: &[crate::fleet::Target],
    heir: usize,
    deadline: Instant,
) -> Result<(), Error> {
    let t = &targets[heir];
    let retry = election_retry_time(t.spec.cluster_node_timeout_ms());
    // A manual failover that does not complete is abandoned by Redis after
    // 5 s (CLUSTER_MF_TIMEOUT), writes on the master resumed; three tries
    // cover a stale election.
    let escalation = Escalation {
        modes: &[FailoverMode::Coordinated; 3],
        repeat_last: false,
        retry_after: retry.max(MANUAL_FAILOVER_TIMEOUT + Duration::from_secs(1)),
    };
    let node = Node::of(fleet, t)?;
    procedure::cluster_failover(
        &node,
        &escalation,
        deadline.into(),
        Duration::from_millis(10),
        |_| {},
    )
    .await
    .map_err(crate::node::error)
}

/// How long Redis's manual failover waits for the switch (CLUSTER_MF_TIMEOUT).
const MANUAL_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after an election a replica re-uses its outcome instead of
/// running a new one (Redis's `auth_retry_time`: twice the failover auth
/// timeout, which is twice the node timeout, at least 2 s).
pub(crate) fn election_retry_time(node_timeout_ms: u32) -> Duration {
    Duration::from_millis(2 * u64::from(node_timeout_ms).saturating_mul(2).max(2000))
}

/// Hands a replication or sentinel master's role to its best replica the
/// way `paddock failover` does (before a rolling restart of the master).
pub(crate) async fn hand_over_master(
    fleet: &Fleet,
    targets: &[crate::fleet::Target],
    sentinels: &[crate::fleet::Target],
    master_name: &str,
    timeout: Duration,
    progress: &Progress,
) -> Result<(String, String), Error> {
    let observed = observe_all(fleet, targets).await;
    let sentinels = Sentinels {
        targets: sentinels,
        master_name,
    };
    replication_failover(
        fleet,
        targets,
        &observed,
        &sentinels,
        &Choice::Default,
        timeout,
        progress,
    )
    .await
}

/// The sentinels of a sentinel topology (none for plain replication).
struct Sentinels<'a> {
    targets: &'a [crate::fleet::Target],
    master_name: &'a str,
}

/// The longest write pause the agents run (`CLIENT PAUSE ... WRITE`).
const MAX_WRITE_PAUSE: Duration = Duration::from_secs(300);

/// Replication: pause writes on the master, wait until the chosen replica
/// has everything, promote it, point everyone else (the old master too) at
/// it, then let the old master's clients go (they now get READONLY and
/// reconnect to the new master). No acknowledged write is lost.
///
/// Sentinel: the same pause, but every replica must catch up (Sentinel picks
/// the one it promotes); then SENTINEL FAILOVER, so that the sentinels run
/// the switch and agree on it, and the old master is pointed at the new one
/// before its clients are let go (Sentinel would only convert it seconds
/// later, and writes it took meanwhile would be lost).
async fn replication_failover(
    fleet: &Fleet,
    targets: &[Target],
    observed: &[Option<Observation>],
    sentinels: &Sentinels<'_>,
    choice: &Choice,
    timeout: Duration,
    progress: &Progress,
) -> Result<(String, String), Error> {
    let members = members(targets);
    let master = crate::cluster::replication_master(&members, observed)
        .ok_or_else(|| Error::NotConverged("no master to fail over from".into()))?;
    let old = &targets[master];
    let chosen = match choose_replica(fleet, targets, master, sentinels, choice).await? {
        // Already the master: a no-op (the caller reports it).
        None => return Ok((old.label(), old.label())),
        Some(i) => i,
    };
    // With Sentinel, every replica must be able to take over losslessly.
    let catching_up: Vec<usize> = if sentinels.targets.is_empty() {
        progress.step(format!(
            "{} takes over from {} (writes paused on the master meanwhile)",
            targets[chosen].label(),
            old.label()
        ));
        vec![chosen]
    } else {
        progress.step(format!(
            "SENTINEL FAILOVER away from {} (writes paused on the master meanwhile)",
            old.label()
        ));
        (0..targets.len()).filter(|&i| i != master).collect()
    };
    // The agent pauses writes for at most 5 minutes (its guard's bound);
    // the switch must be done within the pause, so that bounds it too.
    let paused = timeout.min(MAX_WRITE_PAUSE);
    let pause_ms = paused.as_millis().to_string();
    let old_node = Node::of(fleet, old)?;
    old_node
        .command(&["CLIENT", "PAUSE", &pause_ms, "WRITE"])
        .await
        .map_err(crate::node::error)?;
    let deadline = Instant::now() + paused;
    let result = async {
        for &i in &catching_up {
            catch_up(fleet, old, &targets[i], deadline).await?;
        }
        switch(fleet, targets, master, chosen, sentinels, deadline).await
    }
    .await;
    // Whatever happened, the old master's clients are let go.
    let _ = fleet.redis(old, &[&["CLIENT", "UNPAUSE"]]).await;
    let chosen = result?;
    settle(fleet, targets, chosen, sentinels, timeout, progress).await?;
    Ok((old.label(), targets[chosen].label()))
}

/// The replica a replication failover promotes (None: `choice` names the
/// master already). Sentinel picks its own, so here the best by offset is
/// only what is announced.
async fn choose_replica(
    fleet: &Fleet,
    targets: &[Target],
    master: usize,
    sentinels: &Sentinels<'_>,
    choice: &Choice,
) -> Result<Option<usize>, Error> {
    match choice {
        Choice::Replica(label) if *label == targets[master].label() => Ok(None),
        // A usage mistake (exit 2), not a failure: the command line asks
        // for what this topology does not let the operator choose.
        Choice::Replica(_) if !sentinels.targets.is_empty() => Err(Error::Usage(
            "with Sentinel, the sentinels choose the replica to promote; run `paddock failover` without --to".into(),
        )),
        Choice::Replica(label) => targets
            .iter()
            .position(|t| t.label() == *label)
            .map(Some)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "{label} is not a replica of this deployment; `paddock status` shows the roles"
                ))
            }),
        Choice::Shard(0) | Choice::Default => {
            let replicas: Vec<usize> = (0..targets.len()).filter(|&i| i != master).collect();
            let offsets = replica_offsets(fleet, targets, &replicas).await;
            // A replica whose offset is unknown may still be the only one.
            let candidates: Vec<(usize, Option<i64>)> = replicas
                .iter()
                .zip(offsets)
                .map(|(&i, o)| (i, Some(o.unwrap_or(-1))))
                .collect();
            heir_by_offset(&candidates)
                .map(Some)
                .ok_or_else(|| Error::NotConverged("there is no replica to take over".into()))
        }
        Choice::Shard(s) => Err(Error::Unsupported(format!(
            "there is no shard {s}: a replication deployment has one (0)"
        ))),
    }
}

/// Each replica's `slave_repl_offset` (None: not answering).
async fn replica_offsets(
    fleet: &Fleet,
    targets: &[Target],
    replicas: &[usize],
) -> Vec<Option<i64>> {
    join_all(
        replicas
            .iter()
            .map(|&i| async move { replication(fleet, &targets[i]).await?.replica_offset }),
    )
    .await
}

async fn replication(fleet: &Fleet, t: &Target) -> Option<Replication> {
    let r = fleet.redis(t, &[&["INFO", "replication"]]).await.ok()?;
    Some(Replication::parse(&r.first().and_then(Reply::text)?))
}

/// Waits until `new` has all of the paused master `old`'s stream.
async fn catch_up(
    fleet: &Fleet,
    old: &Target,
    new: &Target,
    deadline: Instant,
) -> Result<(), Error> {
    loop {
        let want = replication(fleet, old)
            .await
            .and_then(|r| r.master_repl_offset);
        let have = replication(fleet, new).await.and_then(|r| r.replica_offset);
        if want.is_some() && want == have {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotConverged(format!(
                "{} did not catch up with {} in time; nothing was switched",
                new.label(),
                old.label()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Promotes `chosen` (or has the sentinels promote the replica they
/// choose) and points every other member at the new master; its index.
async fn switch(
    fleet: &Fleet,
    targets: &[Target],
    master: usize,
    chosen: usize,
    sentinels: &Sentinels<'_>,
    deadline: Instant,
) -> Result<usize, Error> {
    let addr = |i: usize| Addr::new(targets[i].ip, targets[i].port);
    let others = |chosen: usize| -> Result<Vec<Node>, Error> {
        (0..targets.len())
            .filter(|&i| i != chosen)
            .map(|i| Ok(Node::of(fleet, &targets[i])?.dangerous()))
            .collect()
    };
    let (chosen, failures) = if sentinels.targets.is_empty() {
        let heir = Node::of(fleet, &targets[chosen])?.dangerous();
        let failures = procedure::promote_and_repoint(&heir, addr(chosen), &others(chosen)?)
            .await
            .map_err(crate::node::error)?;
        (chosen, failures)
    } else {
        let nodes: Vec<Node> = sentinels
            .targets
            .iter()
            .map(|s| Ok(Node::of(fleet, s)?.dangerous()))
            .collect::<Result<_, Error>>()?;
        let new = procedure::sentinel_failover(
            &nodes,
            sentinels.master_name,
            addr(master),
            |a| targets.iter().any(|t| (t.ip, t.port) == (a.ip, a.port)),
            deadline.into(),
            Duration::from_millis(20),
        )
        .await
        .map_err(crate::node::error)?;
        let chosen = (0..targets.len())
            .find(|&i| addr(i) == new)
            .ok_or_else(|| {
                Error::NotConverged(format!("the sentinels named {new}, not a member"))
            })?;
        (chosen, procedure::repoint(&others(chosen)?, new).await)
    };
    match failures.into_iter().next() {
        Some(e) => Err(crate::node::error(e)),
        None => Ok(chosen),
    }
}

/// Waits until replication is healthy with the new master and, with
/// Sentinel, until the sentinels have finished their side too, so that a
/// failover right after this one is not refused as in progress.
async fn settle(
    fleet: &Fleet,
    targets: &[Target],
    chosen: usize,
    sentinels: &Sentinels<'_>,
    timeout: Duration,
    progress: &Progress,
) -> Result<(), Error> {
    wait_healthy(fleet, targets, Instant::now() + timeout).await?;
    progress.step("replication healthy with the new master");
    if sentinels.targets.is_empty() {
        return Ok(());
    }
    let new = crate::client::Peer {
        address: targets[chosen].ip,
        port: targets[chosen].port,
    };
    let replicas = targets.len().saturating_sub(1) as u32;
    crate::sentinel::wait_guarding(
        fleet,
        sentinels.targets,
        sentinels.master_name,
        new,
        replicas,
        Instant::now() + timeout,
    )
    .await
    .map_err(|problems| {
        Error::NotConverged(format!(
            "the switch is done, but the sentinels did not settle in time:\n  - {}",
            crate::problem::join(&problems, "\n  - ")
        ))
    })?;
    progress.step("every sentinel names the new master");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_retry_time_follows_the_node_timeout() {
        assert_eq!(election_retry_time(2000), Duration::from_secs(8));
        assert_eq!(election_retry_time(5000), Duration::from_secs(20));
        assert_eq!(election_retry_time(500), Duration::from_secs(4));
    }
}
