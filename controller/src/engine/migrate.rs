//! Moving slots between masters: SETSLOT IMPORTING/MIGRATING, MIGRATE in
//! batches, verified, then SETSLOT NODE everywhere. The decisions (which
//! slots, batch sizes, what an error means) are `crate::slots`; this is
//! the IO that carries them out.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Error;
use crate::engine::execute::Scene;
use crate::engine::step::PlannedMove;
use crate::slots::{FixStep, NodeId, Slot};

/// What a run of moves did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MoveReport {
    pub slots: u32,
    pub keys: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// What carrying out one slot's steps moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SlotDone {
    pub keys: u64,
    pub bytes: u64,
}

/// Carries out `moves` (slot by slot, verified), reporting progress.
pub async fn move_slots(scene: &Scene<'_>, moves: &[PlannedMove]) -> Result<MoveReport, Error> {
    let _ = (scene, moves);
    Err(Error::NotConverged(
        "slot migration is not built yet".into(),
    ))
}

/// Carries out one slot's `steps` (from `slots::move_steps` or
/// `slots::fix_slot`); `nodes` maps each node id to its index in
/// `scene.targets`.
pub async fn run_slot(
    scene: &Scene<'_>,
    nodes: &BTreeMap<NodeId, usize>,
    slot: Slot,
    steps: &[FixStep],
) -> Result<SlotDone, Error> {
    let _ = (scene, nodes, slot, steps);
    Err(Error::NotConverged(
        "slot migration is not built yet".into(),
    ))
}
