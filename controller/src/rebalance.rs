//! `paddock rebalance`: spreads a running cluster's slots evenly (or by
//! host weights) over its masters, as redis-cli's `--cluster rebalance`,
//! with verified moves ([`crate::engine::migrate`]). The decisions are
//! [`crate::slots::plan_moves`] and [`blocking`]; this is the IO around
//! them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::Error;
use crate::client::Security;
use crate::cluster::{Observation, assess};
use crate::engine::migrate::{self, MoveReport};
use crate::engine::scene::Scene;
use crate::engine::step::PlannedMove;
use crate::fleet::{Deployment, Fleet, Target, members};
use crate::form::observe_all;
use crate::problem::ClusterProblem;
use crate::progress::Progress;
use crate::slots::{self, Balance, Ranges, SlotMap, SlotRange, Wanted};

/// What `paddock rebalance` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// redis-cli's `--threshold`, in percent.
    pub threshold_pct: f64,
    /// `--weight HOST=W`: the weight of every master on HOST (default 1).
    pub weights: Vec<(String, u32)>,
}

/// What a rebalance planned and did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub moves: Vec<PlannedMove>,
    pub slots: u32,
    pub keys: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

impl Report {
    fn new(moves: Vec<PlannedMove>, done: &MoveReport) -> Self {
        Report {
            moves,
            slots: done.slots,
            keys: done.keys,
            bytes: done.bytes,
            elapsed_ms: u64::try_from(done.elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.moves.is_empty() {
            return writeln!(
                f,
                "Slots are balanced (every master within the threshold of its share): nothing to move."
            );
        }
        writeln!(f, "Moves:")?;
        for m in &self.moves {
            writeln!(f, "  {m}")?;
        }
        let done = MoveReport {
            slots: self.slots,
            keys: self.keys,
            bytes: self.bytes,
            elapsed: Duration::from_millis(self.elapsed_ms),
        };
        writeln!(f, "Done: {done}.")
    }
}

/// Rebalances the deployment of the inventory at `path`, under its lock.
pub async fn rebalance(
    path: &Path,
    options: &Options,
    progress: bool,
    security: Security,
) -> Result<Report, Error> {
    let progress = Progress::new(progress);
    let mut deployment = Deployment::load(path, false, security)?;
    let d = &deployment.inventory.deployment;
    if d.topology != paddock_inventory::Topology::Cluster {
        return Err(Error::Usage(format!(
            "deployment {} is not a cluster: rebalance moves a cluster's slots",
            d.name
        )));
    }
    if !(options.threshold_pct.is_finite() && options.threshold_pct >= 0.0) {
        return Err(Error::Usage(format!(
            "--threshold {}: a percentage, 0 or more",
            options.threshold_pct
        )));
    }
    for (host, _) in &options.weights {
        if !deployment.inventory.hosts.iter().any(|h| h.name == *host) {
            return Err(Error::Usage(format!(
                "--weight {host}=...: the inventory has no host {host}"
            )));
        }
    }
    // Every master is told where each slot went: every agent is needed.
    let fleet = Fleet::connect_all(&deployment).await?;
    // The targets are where the instances run (a change of shape kept them).
    crate::engine::shape::keep_placement(&mut deployment, &fleet, false).await?;
    let d = &deployment.inventory.deployment;
    let holder = crate::fleet::lock_holder();
    fleet.lock(&d.name, &holder).await?;
    let result = locked(&deployment, &fleet, options, &progress).await;
    fleet.unlock(&d.name, &holder).await;
    result
}

async fn locked(
    deployment: &Deployment,
    fleet: &Fleet,
    options: &Options,
    progress: &Progress,
) -> Result<Report, Error> {
    let targets = deployment.targets();
    let observed = observe_all(fleet, &targets).await;
    let (current, wanted) = shares(&targets, &observed, &options.weights);
    blocking(
        &assess(&members(&targets), &observed),
        current.uncovered().is_empty(),
    )?;
    let ids = migrate::master_ids(&targets, &observed);
    let moves = match slots::plan_moves(&current, &wanted, options.threshold_pct) {
        Balance::Within => return Ok(Report::new(Vec::new(), &MoveReport::default())),
        Balance::NoRecipient => {
            return Err(Error::Usage(
                "every master would have weight 0: the slots would have nowhere to go".into(),
            ));
        }
        Balance::Moves(m) => m,
    };
    let loads = migrate::observe_loads(fleet, &targets, &ids).await?;
    let planned = migrate::planned_moves(&moves, &loads);
    let scene = Scene {
        deployment,
        fleet,
        targets: &targets,
        sentinels: &[],
        timeout: Duration::from_secs(60),
        progress,
    };
    let done = migrate::move_slots(&scene, &planned).await?;
    Ok(Report::new(planned, &done))
}

/// Refuses to start on a cluster that is not healthy; open slots (a move
/// cut short) get their own hint. A shard whose master serves no slot is
/// one a rebalance drained (weight 0): fine while every slot is served.
fn blocking(problems: &[ClusterProblem], all_served: bool) -> Result<(), Error> {
    let problems: Vec<&ClusterProblem> = problems
        .iter()
        .filter(|p| !(all_served && matches!(p, ClusterProblem::ShardWithoutMaster { .. })))
        .collect();
    let open: Vec<String> = problems
        .iter()
        .filter(|p| matches!(p, ClusterProblem::OpenSlots { .. }))
        .map(ToString::to_string)
        .collect();
    if !open.is_empty() {
        return Err(Error::Unhealthy(format!(
            "slots are open (a move was cut short), so nothing was moved:\n  - {}\n  hint: run `paddock fix -i INVENTORY` to finish or roll them back, then rebalance again",
            open.join("\n  - ")
        )));
    }
    if !problems.is_empty() {
        return Err(Error::Unhealthy(format!(
            "the cluster is not healthy, so nothing was moved:\n  - {}\n  hint: see `paddock status`; `paddock apply` repairs what it can",
            crate::problem::join(&problems, "\n  - ")
        )));
    }
    Ok(())
}

/// The masters' slots as their own views report them, and the share each
/// should hold: the weight of its host (`weights`, default 1).
fn shares(
    targets: &[Target],
    observed: &[Option<Observation>],
    weights: &[(String, u32)],
) -> (SlotMap, Vec<Wanted>) {
    let weight_of: BTreeMap<&str, u32> = weights.iter().map(|(h, w)| (h.as_str(), *w)).collect();
    let mut current = SlotMap::new();
    let mut wanted = Vec::new();
    for (t, o) in targets.iter().zip(observed) {
        let Some(me) = o.as_ref().and_then(Observation::myself) else {
            continue;
        };
        if !me.is_master() {
            continue;
        }
        let ranges = Ranges::from_ranges(me.slots.iter().filter_map(|&(a, b)| {
            Some(SlotRange::new(
                slots::Slot::try_from(a).ok()?,
                slots::Slot::try_from(b).ok()?,
            ))
        }));
        current.assign(&me.id, ranges);
        wanted.push(Wanted {
            node: me.id.clone(),
            weight: weight_of.get(t.host_name.as_str()).copied().unwrap_or(1),
        });
    }
    (current, wanted)
}

/// `HOST=W` of `--weight`.
pub fn parse_weight(s: &str) -> Result<(String, u32), String> {
    let (host, w) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected HOST=WEIGHT"))?;
    let w = w
        .parse::<u32>()
        .map_err(|_| format!("{s:?}: the weight must be a whole number (0 drains the host)"))?;
    if host.is_empty() {
        return Err(format!("{s:?}: expected HOST=WEIGHT"));
    }
    Ok((host.to_owned(), w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse() {
        assert_eq!(parse_weight("box1=2"), Ok(("box1".into(), 2)));
        assert_eq!(parse_weight("box1=0"), Ok(("box1".into(), 0)));
        assert!(parse_weight("box1").is_err());
        assert!(parse_weight("=2").is_err());
        assert!(parse_weight("box1=-1").is_err());
        assert!(parse_weight("box1=1.5").is_err());
    }

    #[test]
    fn open_slots_point_to_fix_and_other_problems_to_status() {
        assert!(blocking(&[], true).is_ok());
        let open = ClusterProblem::OpenSlots {
            node: "box1:redis-7000".into(),
            slots: vec!["[93->-e7d1]".into()],
        };
        let other = ClusterProblem::SlotsUnserved { served: 100 };
        let e = blocking(&[other.clone(), open], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("paddock fix"), "{e}");
        let e = blocking(&[other], false).unwrap_err().to_string();
        assert!(
            e.contains("not healthy") && !e.contains("paddock fix"),
            "{e}"
        );
        // A drained shard, every slot served elsewhere: fine; not when
        // slots are unserved.
        let drained = ClusterProblem::ShardWithoutMaster { shard: 2 };
        assert!(blocking(std::slice::from_ref(&drained), true).is_ok());
        assert!(blocking(&[drained], false).is_err());
    }
}
