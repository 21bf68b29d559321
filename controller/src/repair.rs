//! `paddock fix`: repairs open and unserved slots (what apply's
//! `FixSlots` step does), under the deployment's lease, and says what is
//! left.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use paddock_inventory::Topology;
use serde::Serialize;

use crate::Error;
use crate::client::Security;
use crate::engine::fix;
use crate::engine::scene::Scene;
use crate::fleet::{Deployment, Fleet, Target};
use crate::progress::Progress;

/// What `paddock fix` found, did and left.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Repair {
    pub deployment: String,
    /// The repairs found, one line per slot or run of slots.
    pub found: Vec<String>,
    pub slots_repaired: u32,
    pub keys_moved: u64,
    /// What the nodes report still needing a repair afterwards.
    pub left: Vec<String>,
    /// Why the repair stopped, when it did.
    pub error: Option<String>,
}

impl Repair {
    /// Nothing left open or unserved.
    pub fn done(&self) -> bool {
        self.left.is_empty() && self.error.is_none()
    }
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.found.is_empty() {
            return writeln!(
                f,
                "Deployment {}: no open or unserved slot, nothing to repair.",
                self.deployment
            );
        }
        writeln!(f, "Deployment {}: slots to repair:", self.deployment)?;
        for l in &self.found {
            writeln!(f, "  - {l}")?;
        }
        writeln!(
            f,
            "Repaired {} slot(s), {} key(s) moved.",
            self.slots_repaired, self.keys_moved
        )?;
        if let Some(e) = &self.error {
            writeln!(f, "Stopped: {e}")?;
        }
        if self.left.is_empty() {
            writeln!(f, "No open or unserved slot is left.")
        } else {
            writeln!(f, "Still to repair:")?;
            for l in &self.left {
                writeln!(f, "  - {l}")?;
            }
            Ok(())
        }
    }
}

/// The repair's lines from what the nodes report now.
async fn lines(fleet: &Fleet, deployment: &Deployment) -> Result<Vec<String>, Error> {
    let leaving = deployment.leaving();
    let all: Vec<Target> = deployment
        .targets()
        .into_iter()
        .chain(leaving.iter().cloned())
        .collect();
    let found = fix::inspect(fleet, &all, leaving.len()).await?;
    let labels = fix::labels(&all, &found.observed);
    Ok(fix::describe(&found.fixes, &found.views, &labels))
}

/// Observes, repairs and observes again, holding the deployment's lease.
/// Needs every agent: a slot's keys may be on any master.
pub async fn fix(path: &Path, security: Security, timeout: Duration) -> Result<Repair, Error> {
    let deployment = Deployment::load(path, false, security)?;
    let name = deployment.inventory.deployment.name.clone();
    let mut repair = Repair {
        deployment: name.clone(),
        ..Repair::default()
    };
    if deployment.inventory.deployment.topology != Topology::Cluster {
        return Ok(repair);
    }
    let fleet = Fleet::connect_all(&deployment).await?;
    let holder = crate::fleet::lock_holder();
    fleet.lock(&name, &holder).await?;
    let result = fix_locked(deployment, &fleet, timeout, &mut repair).await;
    fleet.unlock(&name, &holder).await;
    result.map(|()| repair)
}

async fn fix_locked(
    mut deployment: Deployment,
    fleet: &Fleet,
    timeout: Duration,
    repair: &mut Repair,
) -> Result<(), Error> {
    // The instances as they run, not as a changed inventory would place them.
    crate::engine::shape::keep_placement(&mut deployment, fleet, false).await?;
    repair.found = lines(fleet, &deployment).await?;
    if repair.found.is_empty() {
        return Ok(());
    }
    let targets = deployment.targets();
    let progress = Progress::new(true);
    let scene = Scene {
        deployment: &deployment,
        fleet,
        targets: &targets,
        sentinels: &[],
        timeout,
        progress: &progress,
    };
    match fix::fix_slots(&scene).await {
        Ok(r) => {
            repair.slots_repaired = r.slots;
            repair.keys_moved = r.keys;
        }
        // An agent gone is its own exit status; anything else is what is
        // left, reported below.
        Err(e @ (Error::AgentDown(_) | Error::AgentUnreachable { .. })) => return Err(e),
        Err(e) => repair.error = Some(crate::exit::error_text(&e)),
    }
    repair.left = lines(fleet, &deployment).await?;
    Ok(())
}
