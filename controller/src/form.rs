//! Forming (or finishing) a Redis Cluster through the agents, with our own
//! code: SET-CONFIG-EPOCH, ADDSLOTSRANGE, MEET, REPLICATE, then waiting on
//! the real condition by polling every few milliseconds.
//!
//! Every step is idempotent, so an interrupted apply is finished by the next.
//!
//! Speed: a master that has been without slots waits a rejoin delay of
//! cluster-node-timeout (clamped to 0.5-5 s) before it reports ok. Formation
//! therefore runs with the node timeout at 500 ms and restores the configured
//! value afterwards, whatever the outcome.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::client::Reply;
use crate::cluster::{Observation, assess, shard_slots};
use crate::fleet::{Fleet, Target, members};
use crate::plan::observe_node;
use crate::progress::Progress;

const FORMING_NODE_TIMEOUT_MS: u32 = 500;
const POLL: Duration = Duration::from_millis(10);

pub struct FormReport {
    /// From the first CLUSTER MEET to every node agreeing and reporting ok.
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
    let started = Instant::now();
    set_node_timeout(fleet, targets, |_| FORMING_NODE_TIMEOUT_MS).await?;
    let result = form_inner(fleet, targets, masters, started + deadline, progress).await;
    // Restore even when formation failed: a short node timeout must not stay.
    let restored = set_node_timeout(fleet, targets, |t| t.spec.cluster_node_timeout_ms).await;
    let meet_to_converged = result?;
    restored?;
    Ok(FormReport {
        meet_to_converged,
        total: started.elapsed(),
    })
}

/// Sets cluster-node-timeout at runtime on every target (not written to redis.conf).
pub async fn set_node_timeout(
    fleet: &Fleet,
    targets: &[Target],
    value: impl Fn(&Target) -> u32,
) -> Result<(), Error> {
    let calls = targets.iter().map(|t| {
        let v = value(t).min(t.spec.cluster_node_timeout_ms).to_string();
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

async fn observe_all(fleet: &Fleet, targets: &[Target]) -> Vec<Option<Observation>> {
    join_all(targets.iter().map(|t| observe_node(fleet, t)))
        .await
        .into_iter()
        .map(|o| o.map(|(obs, _)| obs))
        .collect()
}

async fn form_inner(
    fleet: &Fleet,
    targets: &[Target],
    masters: u32,
    deadline: Instant,
    progress: &Progress,
) -> Result<Option<Duration>, Error> {
    let members = members(targets);
    let observed = observe_all(fleet, targets).await;
    if let Some(i) = observed.iter().position(Option::is_none) {
        return Err(Error::NotConverged(format!(
            "{} ({}:{}) does not answer; cannot form the cluster without it",
            targets[i].label(),
            targets[i].ip,
            targets[i].port
        )));
    }
    let observed: Vec<Observation> = observed.into_iter().flatten().collect();

    // Distinct config epochs up front spare Redis its collision resolution.
    let epochs = targets
        .iter()
        .zip(&observed)
        .enumerate()
        .filter_map(|(i, (t, o))| {
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
        .collect::<Result<(), Error>>()?;

    // Slots: each shard without a serving master gets its even range on the
    // member placement made master, unless someone already holds part of it.
    let held: Vec<(u32, u32)> = observed
        .iter()
        .filter_map(Observation::myself)
        .flat_map(|m| m.slots.iter().copied())
        .collect();
    let mut assign = Vec::new();
    for shard in 0..masters {
        let in_shard = targets
            .iter()
            .zip(&observed)
            .filter(|(t, _)| t.shard == shard);
        let served = in_shard.clone().any(|(_, o)| {
            o.myself()
                .is_some_and(|m| m.is_master() && m.slot_count() > 0)
        });
        if served {
            continue;
        }
        let (a, b) = shard_slots(shard, masters);
        if held.iter().any(|&(x, y)| x <= b && a <= y) {
            return Err(Error::NotConverged(format!(
                "shard {shard}: slots {a}-{b} are partly held by another node; \
                 this needs an operator (compare `paddock status` with CLUSTER NODES)"
            )));
        }
        let Some((t, _)) = in_shard
            .clone()
            .find(|(t, _)| t.placed_role == paddock_inventory::Role::Master)
        else {
            continue;
        };
        assign.push((t, a, b));
    }
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

    // MEET: every pair once, in parallel, so no node waits on gossip to learn
    // of another.
    let mut meets: Vec<(usize, usize)> = Vec::new();
    for i in 0..targets.len() {
        for j in (i + 1)..targets.len() {
            let knows =
                |a: usize, b: usize| observed[a].find(targets[b].ip, targets[b].port).is_some();
            if !knows(i, j) && !knows(j, i) {
                meets.push((i, j));
            }
        }
    }
    let first_meet = Instant::now();
    if !meets.is_empty() {
        progress.step(format!("introducing nodes ({} CLUSTER MEET)", meets.len()));
        let by_node = (0..targets.len()).map(|i| {
            let peers: Vec<(String, String)> = meets
                .iter()
                .filter(|(a, _)| *a == i)
                .map(|&(_, b)| (targets[b].ip.to_string(), targets[b].port.to_string()))
                .collect();
            async move {
                if peers.is_empty() {
                    return Ok(());
                }
                let commands: Vec<Vec<&str>> = peers
                    .iter()
                    .map(|(ip, port)| vec!["CLUSTER", "MEET", ip.as_str(), port.as_str()])
                    .collect();
                let refs: Vec<&[&str]> = commands.iter().map(Vec::as_slice).collect();
                let replies = fleet.redis(&targets[i], &refs).await?;
                replies
                    .iter()
                    .try_for_each(|r| expect_ok(&targets[i], "CLUSTER MEET", r))
            }
        });
        join_all(by_node)
            .await
            .into_iter()
            .collect::<Result<(), Error>>()?;
    }

    // Replicas: REPLICATE as soon as the replica itself knows its master
    // (earlier it answers "ERR Unknown node"), then wait until every node
    // agrees and reports cluster_state:ok.
    let mut replicated = vec![false; targets.len()];
    let mut announced_replicas = false;
    loop {
        let observed = observe_all(fleet, targets).await;
        let problems = assess(&members, &observed);
        if problems.is_empty() {
            progress.step("cluster converged: every node agrees and reports cluster_state:ok");
            return Ok((!meets.is_empty() || !assign.is_empty()).then(|| first_meet.elapsed()));
        }
        let mut replicate = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            if replicated[i] {
                continue;
            }
            let Some(me) = observed[i].as_ref().and_then(Observation::myself) else {
                continue;
            };
            let master = targets
                .iter()
                .zip(&observed)
                .filter(|(m, _)| m.shard == t.shard)
                .filter_map(|(_, o)| o.as_ref().and_then(Observation::myself))
                .find(|m| m.is_master() && m.slot_count() > 0)
                .map(|m| m.id.clone());
            let Some(master) = master else { continue };
            if me.id == master || me.master_id.as_deref() == Some(master.as_str()) {
                replicated[i] = true;
                continue;
            }
            if me.slot_count() > 0 {
                return Err(Error::NotConverged(format!(
                    "{} serves slots but should replicate its shard's master; this needs an operator",
                    t.label()
                )));
            }
            let knows_master = observed[i]
                .as_ref()
                .and_then(|o| o.nodes.iter().find(|n| n.id == master))
                .is_some_and(|n| n.is_settled());
            if knows_master {
                replicate.push((i, master));
            }
        }
        if !replicate.is_empty() {
            if !announced_replicas {
                progress.step("attaching replicas (CLUSTER REPLICATE)");
                announced_replicas = true;
            }
            let calls = replicate.iter().map(|(i, master)| async move {
                let r = fleet
                    .redis(&targets[*i], &[&["CLUSTER", "REPLICATE", master]])
                    .await?;
                Ok::<_, Error>((*i, r[0].error().is_none()))
            });
            for r in join_all(calls).await {
                let (i, ok) = r?;
                replicated[i] = ok;
            }
        }
        if Instant::now() >= deadline {
            return Err(not_converged(targets, &problems));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn not_converged(targets: &[Target], problems: &[String]) -> Error {
    let shown: Vec<&str> = problems.iter().take(8).map(String::as_str).collect();
    let example = targets
        .first()
        .map(|t| format!(" ({} for port {})", u32::from(t.port) + 10000, t.port))
        .unwrap_or_default();
    Error::NotConverged(format!(
        "the cluster did not converge in time:\n  - {}{}\n  hint: the usual cause is an unreachable cluster bus port: \
         port + 10000{example} must be open between every pair of hosts, \
         and each host's inventory address must be the one Redis can be reached on",
        shown.join("\n  - "),
        if problems.len() > shown.len() {
            format!("\n  - ... and {} more", problems.len() - shown.len())
        } else {
            String::new()
        }
    ))
}
