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
    if deployment.inventory.deployment.topology != paddock_inventory::Topology::Cluster {
        return Err(Error::Unsupported(format!(
            "{}: `paddock failover` handles topology = \"cluster\" only in this version",
            path.display()
        )));
    }
    let fleet = Fleet::connect_all(&deployment).await?;
    let targets = deployment.targets();
    let members = members(&targets);
    let observed = observe_all(&fleet, &targets).await;
    let problems = assess(&members, &observed);
    if !problems.is_empty() {
        return Err(Error::NotConverged(format!(
            "the cluster is not healthy, so no failover was started:\n  - {}\n  hint: run `paddock apply` first",
            problems.join("\n  - ")
        )));
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
    wait_promoted(&fleet, &targets, chosen, Instant::now() + timeout).await?;
    wait_healthy(&fleet, &targets, Instant::now() + timeout).await?;
    progress.step("cluster healthy with the new roles");
    Ok(FailoverReport {
        shard,
        from,
        to: heir.label(),
        took: started.elapsed(),
    })
}
