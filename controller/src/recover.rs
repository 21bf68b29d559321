//! `paddock recover`: the operator's way out of a HELD instance. A master
//! that keeps no data on disk is held down by its agent while a replica may
//! still hold its data set (starting it empty would have that replica copy
//! the emptiness). When no replica will ever come back, the operator starts
//! it empty here, having been told what that discards.

use std::path::Path;

use crate::Error;
use crate::client::{InstanceState, Security};
use crate::fleet::{Deployment, Fleet, Target};

/// What recovering `label` discards, for the operator to read first.
pub struct Loss {
    pub label: String,
    pub reason: String,
    /// The other members of its shard (its replicas, per the inventory).
    pub shard_members: Vec<String>,
    pub shard: u32,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} is HELD: {}", self.label, self.reason)?;
        write!(
            f,
            "Starting it empty discards shard {}'s data set: every key that only its replicas ({}) still hold is lost, since they copy the empty master when they come back.",
            self.shard,
            if self.shard_members.is_empty() {
                "none listed".to_owned()
            } else {
                self.shard_members.join(", ")
            }
        )
    }
}

/// Looks up `label` (HOST:INSTANCE); when `accept_data_loss`, starts it
/// empty. Either way the loss is returned for printing.
pub async fn recover(
    path: &Path,
    label: &str,
    accept_data_loss: bool,
    security: Security,
) -> Result<Loss, Error> {
    let mut deployment = Deployment::load(path, false, security)?;
    // Only the held instance's agent is needed: its replicas' boxes may be
    // the very ones that are gone.
    let fleet = Fleet::connect(&deployment).await;
    crate::engine::shape::keep_placement(&mut deployment, &fleet, false).await?;
    let targets = deployment.targets();
    let target = find(&targets, label)?;
    let agent = fleet.agent(target.host)?;
    let status = agent
        .list()
        .await?
        .into_iter()
        .find(|s| s.name == target.instance)
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "{label} does not exist on its agent yet: run `paddock apply` first"
            ))
        })?;
    if status.state != InstanceState::Held {
        return Err(Error::Unsupported(format!(
            "{label} is {}, not HELD: nothing to recover",
            status.state.as_str()
        )));
    }
    let loss = Loss {
        label: label.to_owned(),
        reason: status.last_exit.unwrap_or_default(),
        shard_members: targets
            .iter()
            .filter(|t| t.shard == target.shard && t.label() != label)
            .map(Target::label)
            .collect(),
        shard: target.shard,
    };
    if !accept_data_loss {
        return Err(Error::Unsupported(format!(
            "{loss}\n  hint: bring a replica back instead (the agent keeps trying, and the replica takes over by itself), or run again with --accept-data-loss to start it empty"
        )));
    }
    let after = agent.recover(&target.instance).await?;
    if after.state != InstanceState::Running {
        return Err(Error::NotConverged(format!(
            "{label} did not start: {} ({})",
            after.state.as_str(),
            after.last_exit.unwrap_or_default()
        )));
    }
    Ok(loss)
}

fn find<'a>(targets: &'a [Target], label: &str) -> Result<&'a Target, Error> {
    targets.iter().find(|t| t.label() == label).ok_or_else(|| {
        let names: Vec<String> = targets.iter().map(Target::label).collect();
        Error::Unsupported(format!(
            "no instance {label:?}; the deployment's instances are: {}",
            names.join(", ")
        ))
    })
}
