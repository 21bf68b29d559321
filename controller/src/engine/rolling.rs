//! Restarting instances one at a time with a handover, and spreading the
//! masters again: the two procedures apply's restarts and rebalancing run
//! (also `paddock restart`).

use std::time::{Duration, Instant};

use crate::Error;
use crate::cluster::Observation;
use crate::engine::step::{Handover, Step};
use crate::fleet::{Fleet, Target, start_instance as start};
use crate::form;
use crate::progress::Progress;

/// Restarts instances one at a time so the cluster keeps serving: replicas
/// first; a master hands its shard to an in-sync replica (CLUSTER FAILOVER,
/// which loses no acknowledged write) before it restarts, and comes back as
/// that replica's replica. After each restart the cluster must be healthy
/// again before the next one.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rolling_restart(
    fleet: &Fleet,
    targets: &[Target],
    sentinels: &[Target],
    master_name: &str,
    which: &[usize],
    why: &str,
    step_timeout: Duration,
    progress: &Progress,
    skipped: &mut Vec<String>,
) -> Result<Vec<Step>, Error> {
    let observed = form::observe_all(fleet, targets).await;
    let order = crate::engine::plan::rolling_order(&observed, which);
    let mut done = Vec::new();
    for i in order {
        let t = &targets[i];
        let observed = form::observe_all(fleet, targets).await;
        let mut handover = Handover::None;
        if t.spec.mode != crate::client::RedisMode::Cluster
            && observed[i].as_ref().and_then(|o| o.role_master) == Some(true)
            && targets.len() > 1
        {
            // The same coordinated switch as `paddock failover`: writes
            // paused until a replica has everything, so none is lost.
            crate::failover::hand_over_master(
                fleet,
                targets,
                sentinels,
                master_name,
                step_timeout,
                progress,
            )
            .await?;
            handover = Handover::Switchover;
        }
        let me = observed[i].as_ref().and_then(Observation::myself).cloned();
        if let Some(me) = me.filter(|m| m.is_master() && m.slot_count() > 0) {
            let replicas: Vec<usize> = (0..targets.len())
                .filter(|&j| {
                    observed[j].as_ref().is_some_and(|o| {
                        o.myself().and_then(|m| m.master_id.as_deref()) == Some(me.id.as_str())
                    })
                })
                .collect();
            // Only an agent that answers can be told to take over.
            let heir = replicas.iter().map(|&j| (j, &targets[j])).find(|(j, h)| {
                fleet.reachable(h.host)
                    && observed[*j]
                        .as_ref()
                        .is_some_and(|o| o.link_up == Some(true))
            });
            if heir.is_none() && replicas.iter().any(|&j| !fleet.reachable(targets[j].host)) {
                // Its replica serves behind an unreachable agent: a restart
                // in place would take the shard down for nothing.
                let s = format!(
                    "{}: restart for its new config skipped: its only replica's agent is unreachable, so it cannot hand its slots over",
                    t.label()
                );
                progress.step(s.clone());
                skipped.push(s);
                continue;
            }
            match heir {
                Some((j, heir)) => {
                    progress.step(format!(
                        "{}: handing its slots to {} (CLUSTER FAILOVER) before restarting",
                        t.label(),
                        heir.label()
                    ));
                    crate::failover::cluster_failover(
                        fleet,
                        targets,
                        j,
                        Instant::now() + step_timeout,
                    )
                    .await?;
                    handover = Handover::ClusterFailover { to: heir.label() };
                }
                None => {
                    progress.step(format!(
                        "{}: no in-sync replica to hand its slots to; restarting it in place",
                        t.label()
                    ));
                    handover = Handover::InPlace;
                }
            }
        }
        progress.step(format!("{}: restarting {why}", t.label()));
        fleet.agent(t.host)?.stop(&t.instance).await?;
        start(fleet, t).await?;
        form::wait_healthy(fleet, targets, Instant::now() + step_timeout).await?;
        done.push(Step::Restart {
            target: t.label(),
            handover,
        });
    }
    Ok(done)
}

/// Spreads the masters again when one host holds more than its share, or
/// so many that its loss would stop the cluster (`balance::judge`): one
/// coordinated CLUSTER FAILOVER at a time, the cluster healthy again after
/// each. Re-judged from what the nodes report after each round of moves.
pub(crate) async fn restore_balance(
    fleet: &Fleet,
    targets: &[Target],
    step_timeout: Duration,
    progress: &Progress,
) -> Result<(), Error> {
    // A round's moves reach the best spread the replicas allow; a second
    // round only runs if the cluster changed under us meanwhile.
    for _round in 0..3 {
        let observed = form::observe_all(fleet, targets).await;
        let balance = crate::balance::judge(&crate::balance::roles(targets, &observed));
        if balance.moves.is_empty() {
            for w in balance.warnings() {
                progress.step(format!("warning: {w}"));
            }
            for p in balance.blocked() {
                progress.step(format!("warning: {p}; {}", crate::balance::BLOCKED));
            }
            return Ok(());
        }
        for p in balance.fixable() {
            progress.step(format!("masters: {p}"));
        }
        for m in &balance.moves {
            let Some(heir) = targets.iter().position(|t| t.label() == m.to) else {
                continue;
            };
            progress.step(format!("{m}"));
            crate::failover::cluster_failover(fleet, targets, heir, Instant::now() + step_timeout)
                .await?;
            form::wait_healthy(fleet, targets, Instant::now() + step_timeout).await?;
        }
    }
    Ok(())
}
