//! The pure decisions of slot migration: which slots move where (scale out,
//! scale in, rebalance), how an open or uncovered slot is repaired, how MIGRATE
//! calls are sized and what to do when one fails, and what a move costs.
//!
//! Nothing here does IO: the engine observes the nodes (CLUSTER NODES, CLUSTER
//! COUNTKEYSINSLOT, MIGRATE replies), turns what they report into these types,
//! calls these functions and carries out the typed steps they return.
//!
//! The engine's procedure for a change of shape:
//! 1. observe every master; for each slot that is open or uncovered (and for
//!    every slot before planning), [`fix_slot`] and carry out its steps;
//! 2. [`plan_moves`] over the now-stable [`SlotMap`]; show each move with
//!    [`estimate`] (key counts from CLUSTER COUNTKEYSINSLOT);
//! 3. for each slot of each move, [`move_steps`]: IMPORTING on the target,
//!    MIGRATING on the source, then batches of CLUSTER GETKEYSINSLOT +
//!    MIGRATE sized by [`batch_for`] (COUNTKEYSINSLOT on both before and
//!    after each batch), failures handled by [`on_error`] and, on BUSYKEY,
//!    [`on_busy_key`] per key; then SETSLOT NODE on the target, the source,
//!    then every other master;
//! 4. a run cut short anywhere leaves marks that step 1 of the next run
//!    finishes or rolls back.
//!
//! Learnt from redis-cli (`clusterManagerCommandRebalance`,
//! `clusterManagerFixOpenSlot`, `clusterManagerFixSlotsCoverage`,
//! `clusterManagerMigrateKeysInSlot`); where it falls short (moves chosen
//! from the start of a donor's slots, open-slot cases it gives up on, BUSYKEY
//! overwritten on a flag, a fixed 10 keys per MIGRATE) this does otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::cluster::SLOTS;

/// A hash slot, 0..16384.
pub type Slot = u16;

/// Names a master; its order is the tie-break of every decision, so equal
/// observations always give equal plans.
pub type NodeId = String;

/// The default of `--threshold`, as in redis-cli: below 2 % the moves cost
/// more (client redirections, migration load) than the imbalance does.
pub const DEFAULT_THRESHOLD_PCT: f64 = 2.0;

/// An inclusive run of slots, `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotRange {
    pub start: Slot,
    pub end: Slot,
}

impl SlotRange {
    /// `start..=end`; the bounds are swapped if given the wrong way round.
    pub fn new(start: Slot, end: Slot) -> SlotRange {
        SlotRange {
            start: start.min(end),
            end: start.max(end),
        }
    }

    pub fn single(slot: Slot) -> SlotRange {
        SlotRange {
            start: slot,
            end: slot,
        }
    }

    pub fn count(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    pub fn contains(&self, slot: Slot) -> bool {
        (self.start..=self.end).contains(&slot)
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A set of slots kept as sorted, disjoint, merged ranges (adjacent ranges
/// are joined), so equal sets compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<SlotRange>);

impl Ranges {
    pub fn new() -> Ranges {
        Ranges(Vec::new())
    }

    pub fn from_ranges(ranges: impl IntoIterator<Item = SlotRange>) -> Ranges {
        let mut all: Vec<SlotRange> = ranges.into_iter().collect();
        all.sort();
        let mut merged: Vec<SlotRange> = Vec::with_capacity(all.len());
        for r in all {
            match merged.last_mut() {
                Some(last) if u32::from(r.start) <= u32::from(last.end) + 1 => {
                    last.end = last.end.max(r.end);
                }
                _ => merged.push(r),
            }
        }
        Ranges(merged)
    }

    pub fn ranges(&self) -> &[SlotRange] {
        &self.0
    }

    pub fn count(&self) -> u32 {
        self.0.iter().map(SlotRange::count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, slot: Slot) -> bool {
        self.0.iter().any(|r| r.contains(slot))
    }

    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.0.iter().flat_map(|r| r.start..=r.end)
    }

    /// This set and `other`, merged.
    pub fn union(&self, other: &Ranges) -> Ranges {
        Ranges::from_ranges(self.0.iter().chain(other.0.iter()).copied())
    }

    /// Splits the set after its first `n` slots: (the first `n`, the rest).
    pub fn split(&self, n: u32) -> (Ranges, Ranges) {
        let mut first = Vec::new();
        let mut rest = Vec::new();
        let mut left = n;
        for r in &self.0 {
            if left == 0 {
                rest.push(*r);
            } else if r.count() <= left {
                left -= r.count();
                first.push(*r);
            } else {
                // left < count <= 16384, so it fits a slot number.
                let cut = r.start + left as Slot;
                first.push(SlotRange::new(r.start, cut - 1));
                rest.push(SlotRange::new(cut, r.end));
                left = 0;
            }
        }
        (Ranges(first), Ranges(rest))
    }

    /// Removes and returns the last `n` slots (all of them if fewer): a donor
    /// gives from the end of its ranges, so what stays and what goes both
    /// stay contiguous.
    pub fn take_last(&mut self, n: u32) -> Ranges {
        let keep = self.count().saturating_sub(n);
        let (kept, taken) = self.split(keep);
        *self = kept;
        taken
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Which master serves which slots (each master's own claim in CLUSTER NODES).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap(BTreeMap<NodeId, Ranges>);

impl SlotMap {
    pub fn new() -> SlotMap {
        SlotMap::default()
    }

    /// Adds `ranges` to `node`'s slots (a master without slots may be added
    /// with empty ranges so it counts as present).
    pub fn assign(&mut self, node: &str, ranges: Ranges) {
        let entry = self.0.entry(node.to_string()).or_default();
        *entry = entry.union(&ranges);
    }

    pub fn slots_of(&self, node: &str) -> Option<&Ranges> {
        self.0.get(node)
    }

    pub fn count(&self, node: &str) -> u32 {
        self.0.get(node).map_or(0, Ranges::count)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (&NodeId, &Ranges)> {
        self.0.iter()
    }

    pub fn owner_of(&self, slot: Slot) -> Option<&NodeId> {
        self.0
            .iter()
            .find(|(_, r)| r.contains(slot))
            .map(|(node, _)| node)
    }

    /// Slots no master serves.
    pub fn uncovered(&self) -> Ranges {
        let all = self.0.values().fold(Ranges::new(), |acc, r| acc.union(r));
        let mut gaps = Vec::new();
        let mut next: u32 = 0;
        for r in all.ranges() {
            if u32::from(r.start) > next {
                gaps.push(SlotRange::new(next as Slot, r.start - 1));
            }
            next = u32::from(r.end) + 1;
        }
        if next < SLOTS {
            gaps.push(SlotRange::new(next as Slot, (SLOTS - 1) as Slot));
        }
        Ranges(gaps)
    }

    /// The map after `mv` is carried out.
    pub fn apply(&mut self, mv: &Move) {
        if let Some(from) = self.0.get_mut(&mv.from) {
            let left = from.slots().filter(|s| !mv.ranges.contains(*s));
            *from = Ranges::from_ranges(left.map(SlotRange::single));
        }
        self.assign(&mv.to, mv.ranges.clone());
    }
}

/// Slots to move from one master to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: NodeId,
    pub to: NodeId,
    pub ranges: Ranges,
}

impl Move {
    pub fn count(&self) -> u32 {
        self.ranges.count()
    }
}

/// A master that should hold slots, with its relative weight (redis-cli's
/// `--weight`; 1 is the usual share, 2 twice that, 0 drains it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub node: NodeId,
    pub weight: u32,
}

/// What [`plan_moves`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Every master is within the threshold of its share: nothing moves.
    Within,
    /// Carry these out in order; no slot appears twice.
    Moves(Vec<Move>),
    /// Slots are served but no wanted master has a weight above 0.
    NoRecipient,
}

/// The moves from `current` to an even (weighted) share among `wanted`,
/// moving as few slots as possible.
///
/// A master of `current` missing from `wanted`, or wanted with weight 0, is
/// drained. Each master's target is its weighted quota rounded down or up
/// (largest remainder); the extra slots go first to masters already holding
/// more than the rounded-down quota, as that moves fewer slots. Only the
/// surplus of each donor moves, so no slot moves twice and the count moved
/// is the least that reaches the targets. Donors give from the end of their
/// ranges; the largest surplus pairs with the largest deficit, ties by name.
///
/// `threshold_pct` is redis-cli's `--threshold`: when no master deviates from
/// its target by more than that percentage of what it holds (an empty master
/// that should hold slots, or a drained one that holds some, always does),
/// nothing moves. As in redis-cli, once one master is over it everyone is
/// balanced: freezing the masters within the threshold would leave the
/// excess of an over-full master with nowhere to go.
pub fn plan_moves(current: &SlotMap, wanted: &[Wanted], threshold_pct: f64) -> Balance {
    let mut weights: BTreeMap<&str, u64> = current.nodes().map(|(n, _)| (n.as_str(), 0)).collect();
    for w in wanted {
        weights.insert(w.node.as_str(), u64::from(w.weight));
    }
    let total: u64 = current.nodes().map(|(_, r)| u64::from(r.count())).sum();
    if total == 0 {
        return Balance::Within;
    }
    if weights.values().all(|w| *w == 0) {
        return Balance::NoRecipient;
    }
    let targets = targets(current, &weights, total);
    let over = targets.iter().any(|(node, target)| {
        over_threshold(u64::from(current.count(node)), *target, threshold_pct)
    });
    if !over {
        return Balance::Within;
    }
    Balance::Moves(pair_moves(current, &targets))
}

/// Each master's slot target: its weighted quota rounded down, plus one for
/// the masters that get the remainder.
fn targets<'a>(
    current: &SlotMap,
    weights: &BTreeMap<&'a str, u64>,
    total: u64,
) -> BTreeMap<&'a str, u64> {
    let sum: u64 = weights.values().sum();
    let mut targets: BTreeMap<&str, u64> = BTreeMap::new();
    let mut remainders: Vec<(bool, u64, &str)> = Vec::new();
    for (node, w) in weights {
        let exact = total * w;
        let floor = exact / sum;
        targets.insert(node, floor);
        if !exact.is_multiple_of(sum) {
            let holds_more = u64::from(current.count(node)) > floor;
            remainders.push((holds_more, exact % sum, node));
        }
    }
    // Holding more first (fewer moves), then the largest fraction, then name.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    let left = total - targets.values().sum::<u64>();
    for (_, _, node) in remainders.into_iter().take(left as usize) {
        *targets.entry(node).or_default() += 1;
    }
    targets
}

/// redis-cli's test: the deviation as a percentage of what the master holds.
fn over_threshold(holds: u64, target: u64, threshold_pct: f64) -> bool {
    if holds == 0 {
        return target > 0;
    }
    let deviation = (100.0 - 100.0 * target as f64 / holds as f64).abs();
    deviation > threshold_pct
}

fn pair_moves(current: &SlotMap, targets: &BTreeMap<&str, u64>) -> Vec<Move> {
    let mut donors: Vec<(u64, &str)> = Vec::new();
    let mut takers: Vec<(u64, &str)> = Vec::new();
    for (node, target) in targets {
        let holds = u64::from(current.count(node));
        if holds > *target {
            donors.push((holds - target, node));
        } else if holds < *target {
            takers.push((target - holds, node));
        }
    }
    let by_size = |a: &(u64, &str), b: &(u64, &str)| b.0.cmp(&a.0).then(a.1.cmp(b.1));
    donors.sort_by(by_size);
    takers.sort_by(by_size);
    let mut left: BTreeMap<&str, Ranges> = donors
        .iter()
        .map(|(_, n)| (*n, current.slots_of(n).cloned().unwrap_or_default()))
        .collect();
    let mut moves = Vec::new();
    let (mut d, mut t) = (0, 0);
    while d < donors.len() && t < takers.len() {
        let n = donors[d].0.min(takers[t].0);
        let ranges = left
            .get_mut(donors[d].1)
            .map(|r| r.take_last(n as u32))
            .unwrap_or_default();
        moves.push(Move {
            from: donors[d].1.to_string(),
            to: takers[t].1.to_string(),
            ranges,
        });
        donors[d].0 -= n;
        takers[t].0 -= n;
        if donors[d].0 == 0 {
            d += 1;
        }
        if takers[t].0 == 0 {
            t += 1;
        }
    }
    moves
}

// ---------------------------------------------------------------------------
// Open and uncovered slots
// ---------------------------------------------------------------------------

/// What one master reports about one slot: from its own line in CLUSTER
/// NODES (`myself`: the slot among its ranges, `[slot->-id]` migrating,
/// `[slot-<-id]` importing) and CLUSTER COUNTKEYSINSLOT. Replicas are left
/// out: they follow their master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub node: NodeId,
    /// The node claims the slot.
    pub owns: bool,
    pub migrating_to: Option<NodeId>,
    pub importing_from: Option<NodeId>,
    /// Keys it holds in the slot.
    pub keys: u64,
    /// How many slots it serves in all; picks the owner of an empty uncovered
    /// slot.
    pub slots_served: u32,
}

impl SlotView {
    fn is_open(&self) -> bool {
        self.migrating_to.is_some() || self.importing_from.is_some()
    }
}

/// One command of a repair, on one node (`CLUSTER ...` unless said).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixStep {
    /// `CLUSTER SETSLOT slot STABLE`: drops its migrating/importing mark.
    Stable { node: NodeId },
    /// `CLUSTER ADDSLOTS slot`: for a slot nobody serves.
    AddSlot { node: NodeId },
    /// `CLUSTER DELSLOTS slot`: drops a conflicting claim.
    DelSlot { node: NodeId },
    /// `CLUSTER SETSLOT slot IMPORTING from`: also what lets a node that
    /// does not own the slot run MIGRATE on its keys (MIGRATE is an
    /// ASKING command).
    Importing { node: NodeId, from: NodeId },
    /// `CLUSTER SETSLOT slot MIGRATING to`.
    Migrating { node: NodeId, to: NodeId },
    /// Every key of the slot from `from` to `to`: GETKEYSINSLOT and MIGRATE
    /// batches (see [`batch_for`]) until COUNTKEYSINSLOT on `from` is 0.
    MigrateKeys { from: NodeId, to: NodeId },
    /// `CLUSTER SETSLOT slot NODE owner` sent to `node`.
    SetNode { node: NodeId, owner: NodeId },
}

/// The steps that move one slot from `from` to `to`, in Redis's documented
/// order, with `masters` every master (the others are told last).
///
/// IMPORTING on the target before MIGRATING on the source, so the source
/// never sends an ASK the target would refuse; SETSLOT NODE on the target
/// first (it then serves the slot without ASKING), then on the source (which
/// stops redirecting with ASK and answers MOVED), then on every other master
/// so none keeps pointing clients at the source while gossip catches up.
pub fn move_steps(from: &str, to: &str, masters: &[NodeId]) -> Vec<FixStep> {
    let mut steps = vec![
        FixStep::Importing {
            node: to.into(),
            from: from.into(),
        },
        FixStep::Migrating {
            node: from.into(),
            to: to.into(),
        },
        FixStep::MigrateKeys {
            from: from.into(),
            to: to.into(),
        },
        FixStep::SetNode {
            node: to.into(),
            owner: to.into(),
        },
        FixStep::SetNode {
            node: from.into(),
            owner: to.into(),
        },
    ];
    let mut others: Vec<&NodeId> = masters.iter().filter(|n| *n != from && *n != to).collect();
    others.sort();
    others.dedup();
    steps.extend(others.into_iter().map(|n| FixStep::SetNode {
        node: n.clone(),
        owner: to.into(),
    }));
    steps
}

/// Why the slot is being repaired, and who serves it afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixKind {
    /// An interrupted move from `from` to `to`, carried on to the end.
    Finish { from: NodeId, to: NodeId },
    /// Open marks (and stray keys) removed; `owner` keeps the slot.
    RollBack { owner: NodeId },
    /// Several masters claimed the slot; `owner` keeps it, the others' keys
    /// move to it.
    Conflict { owner: NodeId },
    /// Nobody served the slot; `owner` now does.
    Cover { owner: NodeId },
}

/// The repair of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotFix {
    /// One owner, nothing open, no keys elsewhere.
    Healthy,
    Steps {
        kind: FixKind,
        steps: Vec<FixStep>,
    },
    /// No master was reported: nothing can own the slot.
    NoMaster,
}

/// How to repair `slot` from what every master reports about it.
///
/// The rules, after redis-cli's fix, with the cases it gives up on decided:
/// - no claimant: the master with most keys in the slot owns it (ADDSLOTS),
///   else the one serving the fewest slots; others' keys move to it;
/// - several claimants: the one with most keys keeps it, the others DELSLOTS
///   and their keys move to it;
/// - the owner migrating to a master that is importing it, or already holds
///   some of its keys: the move is finished (its remaining keys migrate,
///   then SETSLOT NODE on the target, the source, then everyone), since
///   moving keys back would cost as much as moving them on;
/// - otherwise (migrating to a master that neither imports nor holds keys,
///   or importing with nothing migrating): rolled back, STABLE on the open
///   nodes and any stray keys moved to the owner.
///
/// Names are tie-breaks (views sorted by name), so the result is
/// deterministic.
pub fn fix_slot(views: &[SlotView]) -> SlotFix {
    let mut views: Vec<&SlotView> = views.iter().collect();
    views.sort_by(|a, b| a.node.cmp(&b.node));
    if views.is_empty() {
        return SlotFix::NoMaster;
    }
    let claimants: Vec<&SlotView> = views.iter().copied().filter(|v| v.owns).collect();
    let healthy = claimants.len() == 1
        && views
            .iter()
            .all(|v| !v.is_open() && (v.owns || v.keys == 0));
    if healthy {
        return SlotFix::Healthy;
    }
    let mut steps = Vec::new();
    let (owner, kind) = match claimants.as_slice() {
        [] => {
            let owner = most_keys(&views).unwrap_or_else(|| least_loaded(&views));
            if owner.is_open() {
                steps.push(FixStep::Stable {
                    node: owner.node.clone(),
                });
            }
            steps.push(FixStep::AddSlot {
                node: owner.node.clone(),
            });
            (
                owner,
                FixKind::Cover {
                    owner: owner.node.clone(),
                },
            )
        }
        [only] => (
            *only,
            FixKind::RollBack {
                owner: only.node.clone(),
            },
        ),
        several => {
            let owner = most_keys(several).unwrap_or(several[0]);
            for other in several.iter().filter(|v| v.node != owner.node) {
                steps.push(FixStep::DelSlot {
                    node: other.node.clone(),
                });
            }
            (
                owner,
                FixKind::Conflict {
                    owner: owner.node.clone(),
                },
            )
        }
    };
    if let Some(target) = finish_target(owner, &views) {
        return finish(owner, target, &views, steps);
    }
    roll_back(owner, kind, &views, steps)
}

fn most_keys<'a>(views: &[&'a SlotView]) -> Option<&'a SlotView> {
    // Views are sorted by name: max_by_key keeps the last maximum, so
    // compare reversed names to keep the first.
    views
        .iter()
        .copied()
        .filter(|v| v.keys > 0)
        .max_by(|a, b| a.keys.cmp(&b.keys).then(b.node.cmp(&a.node)))
}

fn least_loaded<'a>(views: &[&'a SlotView]) -> &'a SlotView {
    views
        .iter()
        .copied()
        .min_by(|a, b| {
            a.slots_served
                .cmp(&b.slots_served)
                .then(a.node.cmp(&b.node))
        })
        .unwrap_or(views[0])
}

/// The master the owner's open migration should be finished to, if any.
fn finish_target<'a>(owner: &SlotView, views: &[&'a SlotView]) -> Option<&'a SlotView> {
    let to = owner.migrating_to.as_ref()?;
    let target = views
        .iter()
        .copied()
        .find(|v| &v.node == to && v.node != owner.node)?;
    let importing = target.importing_from.as_ref() == Some(&owner.node);
    (importing || target.keys > 0).then_some(target)
}

fn finish(
    owner: &SlotView,
    target: &SlotView,
    views: &[&SlotView],
    mut steps: Vec<FixStep>,
) -> SlotFix {
    let (from, to) = (owner.node.clone(), target.node.clone());
    if target.importing_from.as_ref() != Some(&from) {
        steps.push(FixStep::Importing {
            node: to.clone(),
            from: from.clone(),
        });
    }
    steps.push(FixStep::MigrateKeys {
        from: from.clone(),
        to: to.clone(),
    });
    // Target first: once it owns the slot, the source's ASK redirections
    // and the others' MOVED all lead to it.
    steps.push(FixStep::SetNode {
        node: to.clone(),
        owner: to.clone(),
    });
    steps.push(FixStep::SetNode {
        node: from.clone(),
        owner: to.clone(),
    });
    let others: Vec<&SlotView> = views
        .iter()
        .copied()
        .filter(|v| v.node != from && v.node != to)
        .collect();
    strays(&others, &to, &mut steps);
    for v in others {
        steps.push(FixStep::SetNode {
            node: v.node.clone(),
            owner: to.clone(),
        });
    }
    SlotFix::Steps {
        kind: FixKind::Finish { from, to },
        steps,
    }
}

fn roll_back(
    owner: &SlotView,
    kind: FixKind,
    views: &[&SlotView],
    mut steps: Vec<FixStep>,
) -> SlotFix {
    let o = owner.node.clone();
    if owner.is_open() && !matches!(kind, FixKind::Cover { .. }) {
        steps.push(FixStep::Stable { node: o.clone() });
    }
    let others: Vec<&SlotView> = views.iter().copied().filter(|v| v.node != o).collect();
    strays(&others, &o, &mut steps);
    // A plain roll-back changes no owner; after a conflict or a cover, every
    // node is told who owns the slot now instead of waiting for gossip.
    if !matches!(kind, FixKind::RollBack { .. }) {
        for v in &others {
            steps.push(FixStep::SetNode {
                node: v.node.clone(),
                owner: o.clone(),
            });
        }
    }
    SlotFix::Steps { kind, steps }
}

/// Nodes other than the owner with keys or marks in the slot: their keys
/// move to `owner` (importing first, so they may run MIGRATE), their marks go.
fn strays(others: &[&SlotView], owner: &NodeId, steps: &mut Vec<FixStep>) {
    for v in others {
        if v.keys > 0 {
            steps.push(FixStep::Importing {
                node: v.node.clone(),
                from: owner.clone(),
            });
            steps.push(FixStep::MigrateKeys {
                from: v.node.clone(),
                to: owner.clone(),
            });
        }
        if v.keys > 0 || v.is_open() {
            steps.push(FixStep::Stable {
                node: v.node.clone(),
            });
        }
    }
}

// ---------------------------------------------------------------------------
// MIGRATE batches and errors
// ---------------------------------------------------------------------------

/// Bytes aimed at per MIGRATE call. The source serialises the whole batch
/// in its main thread and waits for the target's RESTOREs, so a call blocks
/// the source for its payload's transfer and restore: 256 KiB is a few ms on
/// a LAN, short enough for clients' p99, large enough that the round trip
/// stops dominating (redis-cli's fixed 10 keys of 100 bytes move 1 KiB per
/// round trip).
pub const BATCH_BYTES: u64 = 256 * 1024;

/// The most keys per call: also the GETKEYSINSLOT count, and bounds the
/// reply and the keys named on a failure.
pub const MAX_KEYS_PER_CALL: u32 = 1000;

/// MIGRATE's timeout is the longest idle time talking to the target, not the
/// total: the target restoring one big key is idle time. 10 s covers a
/// restore of tens of MB; redis-cli's 60 s lets a dead target stall a
/// migration for a minute per batch.
pub const BASE_TIMEOUT_MS: u64 = 10_000;

/// Timeouts double on each retry up to this (10, 20, 40, 80, 160 s): past
/// it the target is not slow but gone, and apply stops with the slot open
/// for the next apply to finish.
pub const MAX_TIMEOUT_MS: u64 = 160_000;

/// Retries of a batch on a transient refusal (TRYAGAIN, LOADING,
/// CLUSTERDOWN, BUSY) before stopping.
pub const MAX_WAITS: u32 = 10;

/// How a MIGRATE call is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub keys: u32,
    pub timeout_ms: u64,
}

/// Keys per MIGRATE call and its timeout for keys of `avg_bytes_per_key`.
/// A batch carries about [`BATCH_BYTES`]; the timeout grows for payloads
/// that take longer than [`BASE_TIMEOUT_MS`] at a pessimistic 1 MB/s (a busy
/// target restoring one big key).
pub fn batch_for(avg_bytes_per_key: u64) -> Batch {
    let per_key = avg_bytes_per_key.max(1);
    let keys = (BATCH_BYTES / per_key).clamp(1, u64::from(MAX_KEYS_PER_CALL)) as u32;
    let payload = per_key * u64::from(keys);
    let timeout_ms = (payload / 1000).clamp(BASE_TIMEOUT_MS, MAX_TIMEOUT_MS);
    Batch { keys, timeout_ms }
}

/// A failed MIGRATE, by the code word that starts its error reply (or the
/// controller's own timeout waiting for the reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrateError {
    /// `IOERR`: the source timed out or lost the target mid-transfer; some
    /// keys of the batch may already be on the target.
    IoErr,
    /// The reply did not come in time on the controller's side.
    ClientTimeout,
    /// `BUSYKEY`: a key of the batch exists on the target.
    BusyKey,
    /// `MOVED` / `ASK`: the source no longer serves the slot.
    Moved,
    Ask,
    /// `TRYAGAIN`, `LOADING`, `CLUSTERDOWN`, `BUSY`: refused for now.
    TryAgain,
    Loading,
    ClusterDown,
    Busy,
    /// `NOAUTH`, `WRONGPASS`, `NOPERM`: retrying cannot help.
    Auth,
    /// Any other code word.
    Other(String),
}

impl MigrateError {
    /// Classifies an error reply by its first word (done once at the edge).
    pub fn from_code(code: &str) -> MigrateError {
        match code {
            "IOERR" => MigrateError::IoErr,
            "BUSYKEY" => MigrateError::BusyKey,
            "MOVED" => MigrateError::Moved,
            "ASK" => MigrateError::Ask,
            "TRYAGAIN" => MigrateError::TryAgain,
            "LOADING" => MigrateError::Loading,
            "CLUSTERDOWN" => MigrateError::ClusterDown,
            "BUSY" => MigrateError::Busy,
            "NOAUTH" | "WRONGPASS" | "NOPERM" => MigrateError::Auth,
            other => MigrateError::Other(other.to_string()),
        }
    }
}

/// Why a migration stops; the engine leaves the slot open (keys never leave
/// the source unless the target acknowledged them) and names slot and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Timeouts up to [`MAX_TIMEOUT_MS`] did not get the batch through.
    TargetUnresponsive,
    /// Refused transiently [`MAX_WAITS`] times.
    StillRefused,
    /// The key exists on both with different values.
    Conflict {
        slot: Slot,
        key: Vec<u8>,
    },
    Auth,
    Unexpected(String),
}

/// What to do after a failed MIGRATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    /// The same keys again with this batch (a doubled timeout).
    Retry(Batch),
    /// The same keys again after this pause.
    Wait {
        ms: u64,
    },
    /// Read each key's digest on source and target (DEBUG DIGEST-VALUE) and
    /// ask [`on_busy_key`].
    CompareDigests,
    /// Another actor changed the slot: observe again and [`fix_slot`].
    Reobserve,
    Stop(StopReason),
}

/// The policy for a failed MIGRATE of `batch`; `attempt` counts the failures
/// of this batch so far (1 on the first).
///
/// A timeout never drops keys: MIGRATE deletes from the source only what the
/// target acknowledged, so a retry resends what is left, and keys already
/// restored come back as BUSYKEY with equal digests.
pub fn on_error(err: &MigrateError, batch: Batch, attempt: u32) -> OnError {
    match err {
        MigrateError::IoErr | MigrateError::ClientTimeout => {
            if batch.timeout_ms >= MAX_TIMEOUT_MS {
                OnError::Stop(StopReason::TargetUnresponsive)
            } else {
                OnError::Retry(Batch {
                    keys: batch.keys,
                    timeout_ms: (batch.timeout_ms * 2).min(MAX_TIMEOUT_MS),
                })
            }
        }
        MigrateError::BusyKey => OnError::CompareDigests,
        MigrateError::Moved | MigrateError::Ask => OnError::Reobserve,
        MigrateError::TryAgain
        | MigrateError::Loading
        | MigrateError::ClusterDown
        | MigrateError::Busy => {
            if attempt >= MAX_WAITS {
                OnError::Stop(StopReason::StillRefused)
            } else {
                // 100 ms doubling to 3.2 s: a loading target or a failover
                // settles in seconds.
                OnError::Wait {
                    ms: 100 << attempt.saturating_sub(1).min(5),
                }
            }
        }
        MigrateError::Auth => OnError::Stop(StopReason::Auth),
        MigrateError::Other(code) => OnError::Stop(StopReason::Unexpected(code.clone())),
    }
}

/// A key's DEBUG DIGEST-VALUE.
pub type Digest = Vec<u8>;

/// What to do with one key of a batch refused with BUSYKEY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusyKey {
    /// Both copies are equal: MIGRATE it with REPLACE (nothing is lost).
    Replace,
    /// The source no longer has it (expired or deleted): nothing to move.
    Skip,
    /// The target no longer has it: MIGRATE it again as usual.
    Retry,
    Stop(StopReason),
}

/// BUSYKEY is resolved by overwriting only when both copies are equal.
pub fn on_busy_key(
    slot: Slot,
    key: &[u8],
    source: Option<&Digest>,
    target: Option<&Digest>,
) -> BusyKey {
    match (source, target) {
        (None, _) => BusyKey::Skip,
        (Some(_), None) => BusyKey::Retry,
        (Some(s), Some(t)) if s == t => BusyKey::Replace,
        (Some(_), Some(_)) => BusyKey::Stop(StopReason::Conflict {
            slot,
            key: key.to_vec(),
        }),
    }
}

// ---------------------------------------------------------------------------
// Estimates
// ---------------------------------------------------------------------------

/// What a move is expected to cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub keys: u64,
    pub bytes: u64,
    /// None when the rate is 0.
    pub duration: Option<Duration>,
}

/// Keys, bytes and time to move `mv` from the per-slot key counts (slots
/// missing from `keys_per_slot` hold none), the average bytes per key and a
/// rate in keys per second (rounded up to the millisecond).
pub fn estimate(
    mv: &Move,
    keys_per_slot: &BTreeMap<Slot, u64>,
    avg_bytes_per_key: u64,
    keys_per_sec: u64,
) -> Estimate {
    let keys: u64 = mv
        .ranges
        .ranges()
        .iter()
        .map(|r| {
            keys_per_slot
                .range(r.start..=r.end)
                .map(|(_, k)| k)
                .sum::<u64>()
        })
        .sum();
    cost(keys, avg_bytes_per_key, keys_per_sec)
}

/// The estimate of several moves together.
pub fn estimate_all(
    moves: &[Move],
    keys_per_slot: &BTreeMap<Slot, u64>,
    avg_bytes_per_key: u64,
    keys_per_sec: u64,
) -> Estimate {
    let keys = moves
        .iter()
        .map(|m| estimate(m, keys_per_slot, avg_bytes_per_key, 0).keys)
        .sum();
    cost(keys, avg_bytes_per_key, keys_per_sec)
}

fn cost(keys: u64, avg_bytes_per_key: u64, keys_per_sec: u64) -> Estimate {
    let duration =
        (keys_per_sec > 0).then(|| Duration::from_millis((keys * 1000).div_ceil(keys_per_sec)));
    Estimate {
        keys,
        bytes: keys.saturating_mul(avg_bytes_per_key),
        duration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slot ranges as (start, end) pairs.
    type Pairs = &'static [(Slot, Slot)];

    fn r(a: Slot, b: Slot) -> SlotRange {
        SlotRange::new(a, b)
    }

    fn rs(list: &[(Slot, Slot)]) -> Ranges {
        Ranges::from_ranges(list.iter().map(|(a, b)| r(*a, *b)))
    }

    fn map(list: &[(&str, &[(Slot, Slot)])]) -> SlotMap {
        let mut m = SlotMap::new();
        for (node, ranges) in list {
            m.assign(node, rs(ranges));
        }
        m
    }

    fn wanted(list: &[(&str, u32)]) -> Vec<Wanted> {
        list.iter()
            .map(|(n, w)| Wanted {
                node: n.to_string(),
                weight: *w,
            })
            .collect()
    }

    fn mv(from: &str, to: &str, ranges: &[(Slot, Slot)]) -> Move {
        Move {
            from: from.into(),
            to: to.into(),
            ranges: rs(ranges),
        }
    }

    /// Three masters as redis-cli --cluster create lays them out.
    fn three() -> SlotMap {
        map(&[
            ("a", &[(0, 5460)]),
            ("b", &[(5461, 10922)]),
            ("c", &[(10923, 16383)]),
        ])
    }

    fn moves(b: Balance) -> Vec<Move> {
        match b {
            Balance::Moves(m) => m,
            other => panic!("expected moves, got {other:?}"),
        }
    }

    /// Carries the moves out, checking that no slot moves twice and that
    /// each move takes only what its donor holds.
    fn carry_out(start: &SlotMap, moves: &[Move]) -> SlotMap {
        let mut m = start.clone();
        let mut moved = Ranges::new();
        for mv in moves {
            assert!(!mv.ranges.is_empty(), "empty move {mv:?}");
            for s in mv.ranges.slots() {
                assert!(!moved.contains(s), "slot {s} moves twice");
                assert_eq!(
                    m.owner_of(s),
                    Some(&mv.from),
                    "slot {s} not held by {}",
                    mv.from
                );
            }
            moved = moved.union(&mv.ranges);
            m.apply(mv);
        }
        m
    }

    #[test]
    fn ranges_merge_sort_and_count() {
        let cases: &[(Pairs, Pairs, u32)] = &[
            (&[], &[], 0),
            (&[(5, 9), (0, 4)], &[(0, 9)], 10),
            (&[(0, 3), (2, 8), (10, 10)], &[(0, 8), (10, 10)], 10),
            (&[(9, 3)], &[(3, 9)], 7),
            (&[(16383, 16383), (0, 0)], &[(0, 0), (16383, 16383)], 2),
        ];
        for (input, want, count) in cases {
            let got = rs(input);
            assert_eq!(got.ranges(), rs(want).ranges(), "{input:?}");
            assert_eq!(got.ranges().len(), want.len(), "{input:?}");
            assert_eq!(got.count(), *count, "{input:?}");
        }
    }

    #[test]
    fn ranges_split_after_n_slots() {
        let set = rs(&[(0, 9), (20, 29)]);
        let cases: &[(u32, Pairs, Pairs)] = &[
            (0, &[], &[(0, 9), (20, 29)]),
            (4, &[(0, 3)], &[(4, 9), (20, 29)]),
            (10, &[(0, 9)], &[(20, 29)]),
            (15, &[(0, 9), (20, 24)], &[(25, 29)]),
            (99, &[(0, 9), (20, 29)], &[]),
        ];
        for (n, first, rest) in cases {
            let (a, b) = set.split(*n);
            assert_eq!((a, b), (rs(first), rs(rest)), "split({n})");
        }
    }

    #[test]
    fn ranges_take_last_gives_from_the_end() {
        let cases: &[(u32, Pairs, Pairs)] = &[
            (3, &[(0, 9), (20, 26)], &[(27, 29)]),
            (12, &[(0, 7)], &[(8, 9), (20, 29)]),
            (40, &[], &[(0, 9), (20, 29)]),
        ];
        for (n, kept, taken) in cases {
            let mut set = rs(&[(0, 9), (20, 29)]);
            let got = set.take_last(*n);
            assert_eq!(got, rs(taken), "take_last({n})");
            assert_eq!(set, rs(kept), "kept after take_last({n})");
        }
    }

    #[test]
    fn ranges_display_like_cluster_nodes() {
        assert_eq!(rs(&[(0, 5460), (7000, 7000)]).to_string(), "0-5460,7000");
        assert_eq!(Ranges::new().to_string(), "");
    }

    #[test]
    fn slot_map_uncovered_and_owner() {
        let m = map(&[("a", &[(1, 100)]), ("b", &[(200, 16382)])]);
        assert_eq!(m.uncovered(), rs(&[(0, 0), (101, 199), (16383, 16383)]));
        assert_eq!(m.owner_of(150), None);
        assert_eq!(m.owner_of(300).map(String::as_str), Some("b"));
        assert!(three().uncovered().is_empty());
    }

    #[test]
    fn slot_map_apply_moves_slots() {
        let mut m = three();
        m.apply(&mv("a", "c", &[(5000, 5460)]));
        assert_eq!(m.slots_of("a"), Some(&rs(&[(0, 4999)])));
        assert_eq!(m.slots_of("c"), Some(&rs(&[(5000, 5460), (10923, 16383)])));
    }

    #[test]
    fn scale_out_three_to_four_moves_a_quarter_from_the_ends() {
        let mut current = three();
        current.assign("d", Ranges::new());
        let got = moves(plan_moves(
            &current,
            &wanted(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]),
            DEFAULT_THRESHOLD_PCT,
        ));
        assert_eq!(
            got,
            vec![
                mv("b", "d", &[(9557, 10922)]),
                mv("a", "d", &[(4096, 5460)]),
                mv("c", "d", &[(15019, 16383)]),
            ]
        );
        assert_eq!(got.iter().map(Move::count).sum::<u32>(), 4096);
        let after = carry_out(&current, &got);
        for n in ["a", "b", "c", "d"] {
            assert_eq!(after.count(n), 4096, "{n}");
        }
        assert!(after.uncovered().is_empty());
    }

    #[test]
    fn scale_in_four_to_three_drains_the_leaver_evenly() {
        let current = map(&[
            ("a", &[(0, 4095)]),
            ("b", &[(4096, 8191)]),
            ("c", &[(8192, 12287)]),
            ("d", &[(12288, 16383)]),
        ]);
        // Leaving either by absence from `wanted` or by weight 0.
        for w in [
            wanted(&[("a", 1), ("b", 1), ("c", 1)]),
            wanted(&[("a", 1), ("b", 1), ("c", 1), ("d", 0)]),
        ] {
            let got = moves(plan_moves(&current, &w, DEFAULT_THRESHOLD_PCT));
            assert!(got.iter().all(|m| m.from == "d"), "{got:?}");
            let after = carry_out(&current, &got);
            assert_eq!(after.count("d"), 0);
            let mut counts: Vec<u32> = ["a", "b", "c"].iter().map(|n| after.count(n)).collect();
            counts.sort();
            assert_eq!(counts, vec![5461, 5461, 5462]);
            assert_eq!(got.iter().map(Move::count).sum::<u32>(), 4096);
        }
    }

    #[test]
    fn threshold_decides_whether_anything_moves() {
        // a holds 100 slots too many: 100 / 5561 = 1.8 % off its target.
        let current = map(&[
            ("a", &[(0, 5560)]),
            ("b", &[(5561, 10972)]),
            ("c", &[(10973, 16383)]),
        ]);
        let w = wanted(&[("a", 1), ("b", 1), ("c", 1)]);
        let cases: &[(f64, bool)] = &[(2.0, false), (1.0, true), (0.0, true), (50.0, false)];
        for (threshold, moves_expected) in cases {
            let got = plan_moves(&current, &w, *threshold);
            assert_eq!(
                matches!(got, Balance::Moves(_)),
                *moves_expected,
                "threshold {threshold}: {got:?}"
            );
        }
        // A balanced cluster never moves, whatever the threshold.
        assert_eq!(plan_moves(&three(), &w, 0.0), Balance::Within);
    }

    #[test]
    fn an_empty_or_draining_master_is_always_over_the_threshold() {
        let mut current = three();
        current.assign("d", Ranges::new());
        let w = wanted(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        assert!(matches!(plan_moves(&current, &w, 99.0), Balance::Moves(_)));
        let drain = wanted(&[("a", 1), ("b", 1), ("c", 0)]);
        assert!(matches!(
            plan_moves(&three(), &drain, 99.0),
            Balance::Moves(_)
        ));
    }

    #[test]
    fn weights_give_weighted_shares() {
        let w = wanted(&[("a", 2), ("b", 1), ("c", 1)]);
        let got = moves(plan_moves(&three(), &w, 0.0));
        let after = carry_out(&three(), &got);
        assert_eq!(
            (after.count("a"), after.count("b"), after.count("c")),
            (8192, 4096, 4096)
        );
        // Moved: exactly the surpluses of b and c.
        assert_eq!(got.iter().map(Move::count).sum::<u32>(), 1365 + 1366);
    }

    #[test]
    fn plans_are_deterministic_whatever_the_input_order() {
        let mut current = three();
        current.assign("d", Ranges::new());
        current.assign("e", Ranges::new());
        let w1 = wanted(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]);
        let w2 = wanted(&[("e", 1), ("d", 1), ("c", 1), ("b", 1), ("a", 1)]);
        let first = plan_moves(&current, &w1, 2.0);
        assert_eq!(first, plan_moves(&current, &w2, 2.0));
        assert_eq!(first, plan_moves(&current, &w1, 2.0));
    }

    #[test]
    fn nothing_to_receive_or_nothing_to_move() {
        assert_eq!(
            plan_moves(&three(), &wanted(&[("a", 0)]), 2.0),
            Balance::NoRecipient
        );
        assert_eq!(plan_moves(&three(), &[], 2.0), Balance::NoRecipient);
        assert_eq!(
            plan_moves(&SlotMap::new(), &wanted(&[("a", 1)]), 2.0),
            Balance::Within
        );
    }

    #[test]
    fn the_remainder_stays_with_masters_already_holding_it() {
        // 5462/5461/5461 is an even share of 16384: zero moves even at 0 %,
        // whichever master holds the extra slot.
        for big in ["a", "b", "c"] {
            let mut current = SlotMap::new();
            let mut start: Slot = 0;
            for n in ["a", "b", "c"] {
                let len: Slot = if n == big { 5462 } else { 5461 };
                current.assign(n, rs(&[(start, start + len - 1)]));
                start += len;
            }
            assert_eq!(
                plan_moves(&current, &wanted(&[("a", 1), ("b", 1), ("c", 1)]), 0.0),
                Balance::Within
            );
        }
    }

    #[test]
    fn moves_are_minimal_and_reach_the_share_for_many_shapes() {
        type Shape = (
            &'static [(&'static str, &'static [(Slot, Slot)])],
            &'static [(&'static str, u32)],
        );
        let shapes: &[Shape] = &[
            (&[("a", &[(0, 16383)])], &[("a", 1), ("b", 1), ("c", 1)]),
            (
                &[("a", &[(0, 100), (9000, 16383)]), ("b", &[(101, 8999)])],
                &[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)],
            ),
            (
                &[("a", &[(0, 8191)]), ("b", &[(8192, 16383)])],
                &[("c", 1), ("d", 3)],
            ),
            (
                &[("a", &[(0, 1)]), ("b", &[(2, 16383)])],
                &[("a", 7), ("b", 1), ("c", 0)],
            ),
        ];
        for (slots, w) in shapes {
            let current = map(slots);
            let w = wanted(w);
            let got = moves(plan_moves(&current, &w, 0.0));
            let after = carry_out(&current, &got);
            let total_w: u64 = w.iter().map(|x| u64::from(x.weight)).sum();
            let mut needed = 0u64;
            for x in &w {
                let quota = 16384.0 * f64::from(x.weight) / total_w as f64;
                let got = f64::from(after.count(&x.node));
                assert!((got - quota).abs() < 1.0, "{}: {got} vs {quota}", x.node);
                needed += u64::from(current.count(&x.node))
                    .saturating_sub(u64::from(after.count(&x.node)));
            }
            for (n, _) in current.nodes() {
                if !w.iter().any(|x| &x.node == n) {
                    assert_eq!(after.count(n), 0, "{n} not drained");
                    needed += u64::from(current.count(n));
                }
            }
            let moved: u64 = got.iter().map(|m| u64::from(m.count())).sum();
            assert_eq!(moved, needed, "{slots:?}: moved more than the surpluses");
            assert!(after.uncovered().is_empty());
        }
    }

    /// A master's view: (name, owns, migrating to, importing from, keys, slots served).
    fn view(
        node: &str,
        owns: bool,
        mig: Option<&str>,
        imp: Option<&str>,
        keys: u64,
        served: u32,
    ) -> SlotView {
        SlotView {
            node: node.into(),
            owns,
            migrating_to: mig.map(Into::into),
            importing_from: imp.map(Into::into),
            keys,
            slots_served: served,
        }
    }

    fn stable(n: &str) -> FixStep {
        FixStep::Stable { node: n.into() }
    }
    fn add(n: &str) -> FixStep {
        FixStep::AddSlot { node: n.into() }
    }
    fn del(n: &str) -> FixStep {
        FixStep::DelSlot { node: n.into() }
    }
    fn importing(n: &str, from: &str) -> FixStep {
        FixStep::Importing {
            node: n.into(),
            from: from.into(),
        }
    }
    fn keys(from: &str, to: &str) -> FixStep {
        FixStep::MigrateKeys {
            from: from.into(),
            to: to.into(),
        }
    }
    fn node(n: &str, owner: &str) -> FixStep {
        FixStep::SetNode {
            node: n.into(),
            owner: owner.into(),
        }
    }
    fn finish(from: &str, to: &str) -> FixKind {
        FixKind::Finish {
            from: from.into(),
            to: to.into(),
        }
    }
    fn back(o: &str) -> FixKind {
        FixKind::RollBack { owner: o.into() }
    }

    #[test]
    fn open_slots_are_finished_or_rolled_back_by_rule() {
        type Case = (&'static str, Vec<SlotView>, FixKind, Vec<FixStep>);
        let cases: Vec<Case> = vec![
            (
                "migrating and importing pair: finish, target then source then all",
                vec![
                    view("a", true, Some("b"), None, 40, 5461),
                    view("b", false, None, Some("a"), 60, 5461),
                    view("c", false, None, None, 0, 5462),
                ],
                finish("a", "b"),
                vec![
                    keys("a", "b"),
                    node("b", "b"),
                    node("a", "b"),
                    node("c", "b"),
                ],
            ),
            (
                "pair with the source already empty: still finish (idempotent key move)",
                vec![
                    view("a", true, Some("b"), None, 0, 1),
                    view("b", false, None, Some("a"), 9, 1),
                ],
                finish("a", "b"),
                vec![keys("a", "b"), node("b", "b"), node("a", "b")],
            ),
            (
                "migrating only, target holds nothing: close it on the source",
                vec![
                    view("a", true, Some("b"), None, 40, 1),
                    view("b", false, None, None, 0, 1),
                ],
                back("a"),
                vec![stable("a")],
            ),
            (
                "migrating only, target already holds keys: reopen importing, finish",
                vec![
                    view("a", true, Some("b"), None, 40, 1),
                    view("b", false, None, None, 3, 1),
                ],
                finish("a", "b"),
                vec![
                    importing("b", "a"),
                    keys("a", "b"),
                    node("b", "b"),
                    node("a", "b"),
                ],
            ),
            (
                "migrating to a node that is not a master any more: close it",
                vec![
                    view("a", true, Some("gone"), None, 40, 1),
                    view("b", false, None, None, 0, 1),
                ],
                back("a"),
                vec![stable("a")],
            ),
            (
                "importing only, no keys moved yet: close it on the target",
                vec![
                    view("a", true, None, None, 40, 1),
                    view("b", false, None, Some("a"), 0, 1),
                ],
                back("a"),
                vec![stable("b")],
            ),
            (
                "importing only with keys: they go back to the owner",
                vec![
                    view("a", true, None, None, 40, 1),
                    view("b", false, None, Some("a"), 2, 1),
                ],
                back("a"),
                vec![importing("b", "a"), keys("b", "a"), stable("b")],
            ),
            (
                "migrating, several importing, one is the target: finish, close the rest",
                vec![
                    view("a", true, Some("c"), None, 40, 1),
                    view("b", false, None, Some("a"), 0, 1),
                    view("c", false, None, Some("a"), 0, 1),
                ],
                finish("a", "c"),
                vec![
                    keys("a", "c"),
                    node("c", "c"),
                    node("a", "c"),
                    stable("b"),
                    node("b", "c"),
                ],
            ),
            (
                "migrating, several importing, one stray holds keys: they follow to the target",
                vec![
                    view("a", true, Some("c"), None, 40, 1),
                    view("b", false, None, Some("a"), 5, 1),
                    view("c", false, None, Some("a"), 0, 1),
                ],
                finish("a", "c"),
                vec![
                    keys("a", "c"),
                    node("c", "c"),
                    node("a", "c"),
                    importing("b", "c"),
                    keys("b", "c"),
                    stable("b"),
                    node("b", "c"),
                ],
            ),
            (
                "keys on a node that neither owns nor imports: moved to the owner",
                vec![
                    view("a", true, None, None, 40, 1),
                    view("b", false, None, None, 7, 1),
                ],
                back("a"),
                vec![importing("b", "a"), keys("b", "a"), stable("b")],
            ),
        ];
        for (what, views, kind, steps) in cases {
            assert_eq!(fix_slot(&views), SlotFix::Steps { kind, steps }, "{what}");
        }
    }

    #[test]
    fn several_claimants_keep_the_one_with_most_keys() {
        let views = vec![
            view("a", true, None, None, 10, 1),
            view("b", true, None, None, 30, 1),
            view("c", true, None, None, 30, 1),
            view("d", false, None, None, 0, 1),
        ];
        let want = SlotFix::Steps {
            kind: FixKind::Conflict { owner: "b".into() },
            steps: vec![
                del("a"),
                del("c"),
                importing("a", "b"),
                keys("a", "b"),
                stable("a"),
                importing("c", "b"),
                keys("c", "b"),
                stable("c"),
                node("a", "b"),
                node("c", "b"),
                node("d", "b"),
            ],
        };
        assert_eq!(fix_slot(&views), want);
    }

    #[test]
    fn uncovered_slots_go_to_the_keys_or_the_least_loaded_master() {
        type Case = (&'static str, Vec<SlotView>, &'static str, Vec<FixStep>);
        let cases: Vec<Case> = vec![
            (
                "no keys anywhere: the master serving fewest slots",
                vec![
                    view("a", false, None, None, 0, 5000),
                    view("b", false, None, None, 0, 4000),
                    view("c", false, None, None, 0, 4000),
                ],
                "b",
                vec![add("b"), node("a", "b"), node("c", "b")],
            ),
            (
                "keys on one node: it takes the slot",
                vec![
                    view("a", false, None, None, 0, 1),
                    view("b", false, None, None, 12, 9),
                ],
                "b",
                vec![add("b"), node("a", "b")],
            ),
            (
                "keys on two nodes: the bigger takes it, the other's keys follow",
                vec![
                    view("a", false, None, Some("b"), 3, 1),
                    view("b", false, None, None, 12, 9),
                ],
                "b",
                vec![
                    add("b"),
                    importing("a", "b"),
                    keys("a", "b"),
                    stable("a"),
                    node("a", "b"),
                ],
            ),
            (
                "the new owner was left importing: stable first, then ADDSLOTS",
                vec![
                    view("a", false, None, Some("x"), 5, 1),
                    view("b", false, None, None, 0, 0),
                ],
                "a",
                vec![stable("a"), add("a"), node("b", "a")],
            ),
        ];
        for (what, views, owner, steps) in cases {
            let kind = FixKind::Cover {
                owner: owner.into(),
            };
            assert_eq!(fix_slot(&views), SlotFix::Steps { kind, steps }, "{what}");
        }
    }

    #[test]
    fn a_move_opens_target_then_source_and_closes_target_source_then_all() {
        let masters: Vec<NodeId> = ["c", "a", "d", "b"].iter().map(|n| n.to_string()).collect();
        let want = vec![
            importing("b", "a"),
            FixStep::Migrating {
                node: "a".into(),
                to: "b".into(),
            },
            keys("a", "b"),
            node("b", "b"),
            node("a", "b"),
            node("c", "b"),
            node("d", "b"),
        ];
        assert_eq!(move_steps("a", "b", &masters), want);
        // An interrupted move, reported back, is finished with the same tail.
        let views = vec![
            view("a", true, Some("b"), None, 7, 1),
            view("b", false, None, Some("a"), 3, 1),
            view("c", false, None, None, 0, 1),
            view("d", false, None, None, 0, 1),
        ];
        let SlotFix::Steps { steps, .. } = fix_slot(&views) else {
            panic!("expected steps")
        };
        assert_eq!(steps, want[2..].to_vec());
    }

    #[test]
    fn healthy_slots_and_no_masters() {
        let healthy = vec![
            view("a", true, None, None, 40, 1),
            view("b", false, None, None, 0, 1),
        ];
        assert_eq!(fix_slot(&healthy), SlotFix::Healthy);
        assert_eq!(fix_slot(&[]), SlotFix::NoMaster);
    }

    #[test]
    fn fix_does_not_depend_on_report_order() {
        let mut views = vec![
            view("c", false, None, Some("a"), 0, 1),
            view("a", true, Some("c"), None, 40, 1),
            view("b", false, None, Some("a"), 5, 1),
        ];
        let first = fix_slot(&views);
        views.reverse();
        assert_eq!(fix_slot(&views), first);
    }

    #[test]
    fn batch_size_and_timeout_follow_the_key_size() {
        let cases: &[(u64, u32, u64)] = &[
            (0, 1000, BASE_TIMEOUT_MS),
            (100, 1000, BASE_TIMEOUT_MS),
            (1024, 256, BASE_TIMEOUT_MS),
            (1_000_000, 1, BASE_TIMEOUT_MS),
            (100_000_000, 1, 100_000),
            (1_000_000_000, 1, MAX_TIMEOUT_MS),
        ];
        for (bytes, keys, timeout_ms) in cases {
            assert_eq!(
                batch_for(*bytes),
                Batch {
                    keys: *keys,
                    timeout_ms: *timeout_ms
                },
                "{bytes} bytes per key"
            );
        }
    }

    #[test]
    fn migrate_errors_are_classified_by_code_word() {
        let cases: &[(&str, MigrateError)] = &[
            ("IOERR", MigrateError::IoErr),
            ("BUSYKEY", MigrateError::BusyKey),
            ("MOVED", MigrateError::Moved),
            ("ASK", MigrateError::Ask),
            ("TRYAGAIN", MigrateError::TryAgain),
            ("LOADING", MigrateError::Loading),
            ("CLUSTERDOWN", MigrateError::ClusterDown),
            ("BUSY", MigrateError::Busy),
            ("NOAUTH", MigrateError::Auth),
            ("WRONGPASS", MigrateError::Auth),
            ("NOPERM", MigrateError::Auth),
            ("ERR", MigrateError::Other("ERR".into())),
        ];
        for (code, want) in cases {
            assert_eq!(&MigrateError::from_code(code), want, "{code}");
        }
    }

    #[test]
    fn migrate_errors_map_to_actions() {
        let b = Batch {
            keys: 100,
            timeout_ms: BASE_TIMEOUT_MS,
        };
        let doubled = OnError::Retry(Batch {
            keys: 100,
            timeout_ms: 2 * BASE_TIMEOUT_MS,
        });
        let at_max = Batch {
            keys: 100,
            timeout_ms: MAX_TIMEOUT_MS,
        };
        let cases: Vec<(MigrateError, Batch, u32, OnError)> = vec![
            (MigrateError::IoErr, b, 1, doubled.clone()),
            (MigrateError::ClientTimeout, b, 1, doubled),
            (
                MigrateError::IoErr,
                at_max,
                5,
                OnError::Stop(StopReason::TargetUnresponsive),
            ),
            (MigrateError::BusyKey, b, 1, OnError::CompareDigests),
            (MigrateError::Moved, b, 1, OnError::Reobserve),
            (MigrateError::Ask, b, 1, OnError::Reobserve),
            (MigrateError::TryAgain, b, 1, OnError::Wait { ms: 100 }),
            (MigrateError::Loading, b, 3, OnError::Wait { ms: 400 }),
            (MigrateError::ClusterDown, b, 9, OnError::Wait { ms: 3200 }),
            (
                MigrateError::Busy,
                b,
                MAX_WAITS,
                OnError::Stop(StopReason::StillRefused),
            ),
            (MigrateError::Auth, b, 1, OnError::Stop(StopReason::Auth)),
            (
                MigrateError::Other("ERR".into()),
                b,
                1,
                OnError::Stop(StopReason::Unexpected("ERR".into())),
            ),
        ];
        for (err, batch, attempt, want) in cases {
            assert_eq!(
                on_error(&err, batch, attempt),
                want,
                "{err:?} attempt {attempt}"
            );
        }
    }

    #[test]
    fn timeouts_retry_the_same_keys_a_bounded_number_of_times() {
        let mut batch = batch_for(100);
        let mut timeouts = vec![batch.timeout_ms];
        for attempt in 1..=20 {
            match on_error(&MigrateError::IoErr, batch, attempt) {
                OnError::Retry(next) => {
                    assert_eq!(next.keys, batch.keys, "never fewer keys: none is dropped");
                    batch = next;
                    timeouts.push(batch.timeout_ms);
                }
                OnError::Stop(StopReason::TargetUnresponsive) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(timeouts, vec![10_000, 20_000, 40_000, 80_000, 160_000]);
    }

    #[test]
    fn busy_keys_are_replaced_only_when_equal() {
        let x: Digest = b"aaaa".to_vec();
        let y: Digest = b"bbbb".to_vec();
        let conflict = BusyKey::Stop(StopReason::Conflict {
            slot: 42,
            key: b"user:1".to_vec(),
        });
        let cases: Vec<(Option<&Digest>, Option<&Digest>, BusyKey)> = vec![
            (Some(&x), Some(&x), BusyKey::Replace),
            (Some(&x), Some(&y), conflict),
            (None, Some(&y), BusyKey::Skip),
            (None, None, BusyKey::Skip),
            (Some(&x), None, BusyKey::Retry),
        ];
        for (source, target, want) in cases {
            assert_eq!(
                on_busy_key(42, b"user:1", source, target),
                want,
                "{source:?} {target:?}"
            );
        }
    }

    #[test]
    fn estimates_count_keys_bytes_and_time() {
        let per_slot: BTreeMap<Slot, u64> = [(10, 1000), (11, 500), (20, 7), (16383, 3)].into();
        type Case = (Move, u64, u64, Estimate);
        let cases: Vec<Case> = vec![
            (
                mv("a", "b", &[(10, 11)]),
                100,
                1000,
                Estimate {
                    keys: 1500,
                    bytes: 150_000,
                    duration: Some(Duration::from_millis(1500)),
                },
            ),
            (
                mv("a", "b", &[(0, 9), (12, 19)]),
                100,
                1000,
                Estimate {
                    keys: 0,
                    bytes: 0,
                    duration: Some(Duration::ZERO),
                },
            ),
            (
                mv("a", "b", &[(20, 20), (16000, 16383)]),
                10,
                3,
                Estimate {
                    keys: 10,
                    bytes: 100,
                    duration: Some(Duration::from_millis(3334)),
                },
            ),
            (
                mv("a", "b", &[(0, 16383)]),
                1,
                0,
                Estimate {
                    keys: 1510,
                    bytes: 1510,
                    duration: None,
                },
            ),
        ];
        for (m, bytes, rate, want) in cases {
            assert_eq!(estimate(&m, &per_slot, bytes, rate), want, "{}", m.ranges);
        }
        let all = estimate_all(
            &[mv("a", "b", &[(10, 10)]), mv("c", "b", &[(11, 20)])],
            &per_slot,
            100,
            500,
        );
        assert_eq!(
            all,
            Estimate {
                keys: 1507,
                bytes: 150_700,
                duration: Some(Duration::from_millis(3014)),
            }
        );
    }
}
