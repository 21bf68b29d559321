//! `paddock failover`: a manual, coordinated failover of one shard. CLUSTER
//! FAILOVER (without FORCE) makes the master stop accepting writes, waits
//! until the replica has its whole replication stream, then switches: no
//! acknowledged write is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::apply::wait_promoted;
use crate::client::Reply;
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
}

/// Which replica takes over: a shard's best replica, or a named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Shard(u32),
    /// "host:instance", as `paddock status` names them.
    Replica(String),
}

pub async fn failover(
    path: &Path,
    choice: &Choice,
    timeout: Duration,
    progress: bool,
) -> Result<FailoverReport, Error> {
    let started = Instant::now();
    let progress = Progress::new(progress);
    let deployment = Deployment::load(path, false)?;
    let fleet = Fleet::connect_all(&deployment).await?;
    let name = deployment.inventory.deployment.name.clone();
    let holder = crate::fleet::lock_holder();
    fleet.lock(&name, &holder).await?;
    let result = failover_locked(&deployment, &fleet, choice, timeout, &progress, started).await;
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
) -> Result<FailoverReport, Error> {
    let targets = deployment.targets();
    let members = members(&targets);
    let observed = observe_all(fleet, &targets).await;
    let problems = assess(&members, &observed);
    if !problems.is_empty() {
        return Err(Error::NotConverged(format!(
            "the deployment is not healthy, so no failover was started:\n  - {}\n  hint: run `paddock apply` first",
            problems.join("\n  - ")
        )));
    }
    if deployment.inventory.deployment.topology == paddock_inventory::Topology::Replication {
        return replication_failover(fleet, &targets, &observed, choice, timeout, progress)
            .await
            .map(|(from, to)| FailoverReport {
                shard: 0,
                from,
                to,
                took: started.elapsed(),
            });
    }
    let shard = match choice {
        Choice::Shard(s) if *s < deployment.inventory.deployment.masters => *s,
        Choice::Shard(s) => {
            return Err(Error::Unsupported(format!(
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
        Choice::Shard(_) => {
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
    progress.step(format!(
        "shard {shard}: {} takes over from {from} (CLUSTER FAILOVER)",
        heir.label()
    ));
    let r = fleet.redis(heir, &[&["CLUSTER", "FAILOVER"]]).await?;
    if let Some(e) = r[0].error() {
        return Err(Error::Redis {
            host: heir.host_name.clone(),
            instance: heir.instance.clone(),
            message: format!("CLUSTER FAILOVER: {e}"),
        });
    }
    wait_promoted(fleet, &targets, chosen, Instant::now() + timeout).await?;
    wait_healthy(fleet, &targets, Instant::now() + timeout).await?;
    progress.step("cluster healthy with the new roles");
    Ok(FailoverReport {
        shard,
        from,
        to: heir.label(),
        took: started.elapsed(),
    })
}

/// Replication: pause writes on the master, wait until the chosen replica
/// has everything, promote it, point everyone else (the old master too) at
/// it, then let the old master's clients go (they now get READONLY and
/// reconnect to the new master). No acknowledged write is lost.
async fn replication_failover(
    fleet: &Fleet,
    targets: &[crate::fleet::Target],
    observed: &[Option<Observation>],
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
        Choice::Replica(label) => targets
            .iter()
            .position(|t| t.label() == *label && t.label() != targets[master].label())
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "{label} is not a replica of this deployment; `paddock status` shows the roles"
                ))
            })?,
        Choice::Shard(0) => (0..targets.len())
            .filter(|&i| i != master)
            .max_by_key(|&i| {
                infos[i]
                    .as_deref()
                    .and_then(|t| offset(t, "slave_repl_offset"))
                    .unwrap_or(-1)
            })
            .ok_or_else(|| Error::NotConverged("there is no replica to take over".into()))?,
        Choice::Shard(s) => {
            return Err(Error::Unsupported(format!(
                "there is no shard {s}: a replication deployment has one (0)"
            )));
        }
    };
    let (old, new) = (&targets[master], &targets[chosen]);
    progress.step(format!(
        "{} takes over from {} (writes paused on the master meanwhile)",
        new.label(),
        old.label()
    ));
    let pause_ms = timeout.as_millis().to_string();
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
        let deadline = Instant::now() + timeout;
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
        fleet
            .agent(new.host)?
            .redis_dangerous(&new.instance, &[&["REPLICAOF", "NO", "ONE"]])
            .await?;
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
    Ok((old.label(), new.label()))
}
