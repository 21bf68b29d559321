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
use crate::fleet::{Deployment, Fleet, members};
use crate::form::{observe_all, wait_healthy};
use crate::plan::info_field;
use crate::progress::Progress;

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
    let deployment = Deployment::load(path, false, security)?;
    let in_limit = crate::fleet::limit_hosts(&deployment.inventory, limit)?;
    let fleet = Fleet::connect(&deployment).await;
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
    let shard = match choice {
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
    };
    let master = shard_master(&members, &observed, shard)
        .cloned()
        .ok_or_else(|| Error::NotConverged(format!("shard {shard} has no master")))?;
    let from = targets
        .iter()
        .zip(&observed)
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
            let offsets = join_all(replicas.iter().map(|&i| {
                let fleet = &fleet;
                let t = &targets[i];
                async move {
                    let r = fleet.redis(t, &[&["INFO", "replication"]]).await.ok()?;
                    let info = r.first().and_then(Reply::text)?;
                    info_field(&info, "slave_repl_offset")?.parse::<i64>().ok()
                }
            }))
            .await;
            replicas
                .iter()
                .zip(offsets)
                .filter_map(|(&i, o)| o.map(|o| (i, o)))
                .max_by_key(|&(_, o)| o)
                .map(|(i, _)| i)
                .ok_or_else(|| Error::NotConverged(format!("shard {shard} has no replica in sync to take over")))?
        }
    };
    let heir = &targets[chosen];
    let old = targets.iter().zip(&observed).find(|(_, o)| {
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
    cluster_failover(fleet, &targets, chosen, Instant::now() + timeout).await?;
    wait_healthy(fleet, &targets, Instant::now() + timeout).await?;
    progress.step("cluster healthy with the new roles");
    let observed = observe_all(fleet, &targets).await;
    let balance = crate::balance::judge(&crate::balance::roles(&targets, &observed));
    Ok(FailoverReport {
        shard,
        from,
        to: heir.label(),
        took: started.elapsed(),
        already_master: false,
        balance: balance.unhealthy(),
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
    let master_epoch = crate::engine::observe::observe_node(fleet, t)
        .await
        .and_then(|(o, _)| {
            let me = o.myself()?;
            let master = me.master_id.as_deref()?;
            o.nodes
                .iter()
                .find(|n| n.id == master)
                .map(|n| n.config_epoch)
        });
    let Some(master_epoch) = master_epoch else {
        return Err(Error::NotConverged(format!(
            "{} is not a replica of a known master, so it cannot take over",
            t.label()
        )));
    };
    // Bounded by the deadline; three tries cover a stale election.
    for _attempt in 0..3 {
        let asked = Instant::now();
        let r = fleet.redis(t, &[&["CLUSTER", "FAILOVER"]]).await?;
        if let Some(e) = r[0].error() {
            return Err(Error::Redis {
                host: t.host_name.clone(),
                instance: t.instance.clone(),
                message: format!("CLUSTER FAILOVER: {e}"),
            });
        }
        // A manual failover that does not complete is abandoned by Redis
        // after 5 s (CLUSTER_MF_TIMEOUT), writes on the master resumed.
        let attempt_end = deadline.min(asked + MANUAL_FAILOVER_TIMEOUT + Duration::from_secs(1));
        loop {
            let o = crate::engine::observe::observe_node(fleet, t).await;
            if o.as_ref()
                .and_then(|(o, _)| o.myself())
                .is_some_and(|m| promoted(m, master_epoch))
            {
                return Ok(());
            }
            if Instant::now() >= attempt_end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let again = asked + retry;
        if again >= deadline {
            break;
        }
        tokio::time::sleep_until(again.into()).await;
    }
    Err(Error::NotConverged(format!(
        "{} was asked to take over its master's slots (CLUSTER FAILOVER) but is not master under a newer config epoch yet",
        t.label()
    )))
}

/// How long Redis's manual failover waits for the switch (CLUSTER_MF_TIMEOUT).
const MANUAL_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after an election a replica re-uses its outcome instead of
/// running a new one (Redis's `auth_retry_time`: twice the failover auth
/// timeout, which is twice the node timeout, at least 2 s).
pub(crate) fn election_retry_time(node_timeout_ms: u32) -> Duration {
    Duration::from_millis(2 * u64::from(node_timeout_ms).saturating_mul(2).max(2000))
}

/// Whether the replica took its master's slots over for real: it serves
/// slots under a config epoch newer than the master it replaced.
fn promoted(me: &crate::cluster::NodeLine, master_epoch: u64) -> bool {
    me.is_master() && me.slot_count() > 0 && me.config_epoch > master_epoch
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
    targets: &[crate::fleet::Target],
    observed: &[Option<Observation>],
    sentinels: &Sentinels<'_>,
    choice: &Choice,
    timeout: Duration,
    progress: &Progress,
) -> Result<(String, String), Error> {
    let members = members(targets);
    let master = crate::cluster::replication_master(&members, observed)
        .ok_or_else(|| Error::NotConverged("no master to fail over from".into()))?;
    let offset = |info: &str, key: &str| info_field(info, key).and_then(|v| v.parse::<i64>().ok());
    let infos = join_all(targets.iter().map(|t| async move {
        let r = fleet.redis(t, &[&["INFO", "replication"]]).await.ok()?;
        r.first().and_then(Reply::text)
    }))
    .await;
    let chosen = match choice {
        Choice::Replica(label) if *label == targets[master].label() => {
            // Already the master: a no-op (the caller reports it).
            return Ok((label.clone(), label.clone()));
        }
        Choice::Replica(_) if !sentinels.targets.is_empty() => {
            return Err(Error::Usage(
                "with Sentinel, the sentinels choose the replica to promote; run `paddock failover` without --replica".into(),
            ));
        }
        Choice::Replica(label) => targets
            .iter()
            .position(|t| t.label() == *label)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "{label} is not a replica of this deployment; `paddock status` shows the roles"
                ))
            })?,
        Choice::Shard(0) | Choice::Default => (0..targets.len())
            .filter(|&i| i != master)
            .max_by_key(|&i| {
                infos[i]
                    .as_deref()
                    .and_then(|t| offset(t, "slave_repl_offset"))
                    .unwrap_or(-1)
            })
            .ok_or_else(|| Error::NotConverged("there is no replica to take over".into()))?,
        Choice::Shard(s) => {
            return Err(Error::Usage(format!(
                "there is no shard {s}: a replication deployment has one (0)"
            )));
        }
    };
    let old = &targets[master];
    let mut chosen = chosen;
    // With Sentinel, every replica must be able to take over losslessly.
    let catching_up: Vec<usize> = if sentinels.targets.is_empty() {
        vec![chosen]
    } else {
        (0..targets.len()).filter(|&i| i != master).collect()
    };
    if sentinels.targets.is_empty() {
        progress.step(format!(
            "{} takes over from {} (writes paused on the master meanwhile)",
            targets[chosen].label(),
            old.label()
        ));
    } else {
        progress.step(format!(
            "SENTINEL FAILOVER away from {} (writes paused on the master meanwhile)",
            old.label()
        ));
    }
    // The agent pauses writes for at most 5 minutes (its guard's bound);
    // the switch must be done within the pause, so that bounds it too.
    let paused = timeout.min(MAX_WRITE_PAUSE);
    let pause_ms = paused.as_millis().to_string();
    let r = fleet
        .redis(old, &[&["CLIENT", "PAUSE", &pause_ms, "WRITE"]])
        .await?;
    if let Some(e) = r[0].error() {
        return Err(Error::Redis {
            host: old.host_name.clone(),
            instance: old.instance.clone(),
            message: format!("CLIENT PAUSE: {e}"),
        });
    }
    let result = async {
        let deadline = Instant::now() + paused;
        for &i in &catching_up {
            let new = &targets[i];
            loop {
                let m = fleet.redis(old, &[&["INFO", "replication"]]).await?;
                let c = fleet.redis(new, &[&["INFO", "replication"]]).await?;
                let want = m
                    .first()
                    .and_then(Reply::text)
                    .and_then(|t| offset(&t, "master_repl_offset"));
                let have = c
                    .first()
                    .and_then(Reply::text)
                    .and_then(|t| offset(&t, "slave_repl_offset"));
                if want.is_some() && want == have {
                    break;
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
        if sentinels.targets.is_empty() {
            let new = &targets[chosen];
            fleet
                .agent(new.host)?
                .redis_dangerous(&new.instance, &[&["REPLICAOF", "NO", "ONE"]])
                .await?;
        } else {
            chosen = sentinel_failover(fleet, targets, master, sentinels, deadline).await?;
        }
        let new = &targets[chosen];
        let (ip, port) = (new.ip.to_string(), new.port.to_string());
        for (i, t) in targets.iter().enumerate() {
            if i != chosen {
                fleet
                    .agent(t.host)?
                    .redis_dangerous(&t.instance, &[&["REPLICAOF", &ip, &port]])
                    .await?;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    // Whatever happened, the old master's clients are let go.
    let _ = fleet.redis(old, &[&["CLIENT", "UNPAUSE"]]).await;
    result?;
    wait_healthy(fleet, targets, Instant::now() + timeout).await?;
    progress.step("replication healthy with the new master");
    if !sentinels.targets.is_empty() {
        // Done when the sentinels have finished their side too, so that a
        // failover right after this one is not refused as in progress.
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
    }
    Ok((old.label(), targets[chosen].label()))
}

/// Asks one sentinel after another for SENTINEL FAILOVER until one starts
/// it, then waits until the sentinels name the new master; its index.
async fn sentinel_failover(
    fleet: &Fleet,
    targets: &[crate::fleet::Target],
    master: usize,
    sentinels: &Sentinels<'_>,
    deadline: Instant,
) -> Result<usize, Error> {
    let mut errors = Vec::new();
    let mut started = false;
    for s in sentinels.targets {
        match fleet
            .agent(s.host)?
            .redis_dangerous(
                &s.instance,
                &[&["SENTINEL", "FAILOVER", sentinels.master_name]],
            )
            .await
        {
            Ok(r) => match r[0].error() {
                Some(e) => errors.push(format!("{}: {e}", s.label())),
                None => {
                    started = true;
                    break;
                }
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !started {
        return Err(Error::NotConverged(format!(
            "no sentinel started the failover: {}",
            errors.join("; ")
        )));
    }
    let old = (targets[master].ip, targets[master].port);
    loop {
        let views = crate::sentinel::views(fleet, sentinels.targets, sentinels.master_name).await;
        if let Some(m) = crate::sentinel::named_master(&views)
            && (m.address, m.port) != old
            && let Some(i) = targets
                .iter()
                .position(|t| (t.ip, t.port) == (m.address, m.port))
        {
            return Ok(i);
        }
        if Instant::now() >= deadline {
            return Err(Error::NotConverged(
                "the sentinels accepted the failover but named no new master in time".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::parse_nodes;

    #[test]
    fn a_promotion_counts_only_under_a_newer_epoch() {
        let line = |flags: &str, epoch: u64, slots: &str| {
            parse_nodes(&format!(
                "e7 127.0.1.1:7001@17001 {flags} - 0 0 {epoch} connected {slots}"
            ))
            .remove(0)
        };
        // (my line, the old master's epoch) -> promoted
        let table = [
            (line("myself,master", 9, "10923-16383"), 8, true),
            // Redis 7.0's stale election: master for a moment under its old epoch.
            (line("myself,master", 7, "10923-16383"), 8, false),
            (line("myself,slave", 8, ""), 8, false),
            (line("myself,master", 9, ""), 8, false),
        ];
        for (me, epoch, want) in table {
            assert_eq!(promoted(&me, epoch), want, "{me:?} vs {epoch}");
        }
    }

    #[test]
    fn election_retry_time_follows_the_node_timeout() {
        assert_eq!(election_retry_time(2000), Duration::from_secs(8));
        assert_eq!(election_retry_time(5000), Duration::from_secs(20));
        assert_eq!(election_retry_time(500), Duration::from_secs(4));
    }
}
