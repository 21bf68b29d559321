//! Moving slots between masters: SETSLOT IMPORTING/MIGRATING, MIGRATE in
//! batches, verified, then SETSLOT NODE everywhere. The decisions (which
//! slots, batch sizes, what an error means) are `crate::slots`; this is
//! the IO that carries them out.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use crate::Error;
use crate::cluster::Observation;
use crate::engine::execute::Scene;
use crate::engine::step::PlannedMove;
use crate::fleet::{Fleet, Target};
use crate::slots::{self, FixStep, NodeId, Slot};

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

// ---------------------------------------------------------------------------
// What each master holds, and what a planned move is expected to cost
// ---------------------------------------------------------------------------

/// Keys moved per second, for the duration shown with a planned move: the
/// rate measured on the test lab (loopback, 2 shared cores, small string
/// keys, verified batches: `rebalance_moves_slots_under_writes` prints it),
/// rounded down. Real networks and bigger values move fewer keys per second.
pub const KEYS_PER_SEC: u64 = 20_000;

/// What one master holds, from one INFO (memory, keyspace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterLoad {
    /// "host:instance".
    pub label: String,
    pub id: NodeId,
    /// Slots it serves (its CLUSTER NODES line).
    pub slots: u32,
    /// Keys in db 0 (INFO keyspace).
    pub keys: u64,
    /// used_memory_dataset (INFO memory).
    pub bytes: u64,
}

impl MasterLoad {
    /// Bytes per key; 0 for an empty master.
    pub fn avg_bytes_per_key(&self) -> u64 {
        self.bytes.checked_div(self.keys).unwrap_or(0)
    }
}

/// Keys and bytes of `INFO memory keyspace` text: db0's `keys=` and
/// `used_memory_dataset` (0 when absent: an empty db has no keyspace line).
pub fn parse_load(info: &str) -> (u64, u64) {
    let num = |s: Option<String>| s.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    let keys = paddock_knowledge::info::field(info, "db0").and_then(|v| {
        v.split(',')
            .find_map(|kv| kv.strip_prefix("keys="))
            .and_then(|k| k.parse::<u64>().ok())
    });
    let bytes = num(paddock_knowledge::info::field(info, "used_memory_dataset"));
    (keys.unwrap_or(0), bytes)
}

/// The planned moves for `moves`, with labels and estimates from what the
/// source masters hold: keys spread evenly over a master's slots (the hash
/// slot of a key is uniform for keys without hash tags), bytes from the
/// source's average per key, time at [`KEYS_PER_SEC`]. A master missing
/// from `masters` is named by its id and estimated at 0.
pub fn planned_moves(moves: &[slots::Move], masters: &[MasterLoad]) -> Vec<PlannedMove> {
    let find = |id: &str| masters.iter().find(|m| m.id == id);
    let label = |id: &str| find(id).map_or_else(|| id.to_owned(), |m| m.label.clone());
    moves
        .iter()
        .map(|mv| {
            let (per_slot, avg) = match find(&mv.from) {
                Some(m) => (spread(mv, m.keys, m.slots), m.avg_bytes_per_key()),
                None => (BTreeMap::new(), 0),
            };
            let est = slots::estimate(mv, &per_slot, avg, KEYS_PER_SEC);
            PlannedMove {
                from: label(&mv.from),
                to: label(&mv.to),
                from_id: mv.from.clone(),
                to_id: mv.to.clone(),
                ranges: mv
                    .ranges
                    .ranges()
                    .iter()
                    .map(|r| (r.start, r.end))
                    .collect(),
                keys: est.keys,
                bytes: est.bytes,
                millis: est
                    .duration
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }
        })
        .collect()
}

/// `keys` over `of` slots, as counts for the slots of `mv`: the j-th moved
/// slot gets floor((j+1)k/s) - floor(jk/s), so they add up to
/// floor(count * k / s) whatever the order.
fn spread(mv: &slots::Move, keys: u64, of: u32) -> BTreeMap<Slot, u64> {
    if of == 0 {
        return BTreeMap::new();
    }
    let share = |j: u64| (u128::from(j) * u128::from(keys) / u128::from(of)) as u64;
    mv.ranges
        .slots()
        .enumerate()
        .map(|(j, s)| (s, share(j as u64 + 1) - share(j as u64)))
        .collect()
}

/// What every master among `targets` holds: one `INFO memory keyspace` per
/// master; `ids` maps each master's label to its node id and slot count
/// (from CLUSTER NODES).
pub async fn observe_loads(
    fleet: &Fleet,
    targets: &[Target],
    ids: &BTreeMap<String, (NodeId, u32)>,
) -> Result<Vec<MasterLoad>, Error> {
    let reads = targets
        .iter()
        .filter_map(|t| ids.get(&t.label()).map(|id| (t, id)))
        .map(|(t, (id, slots))| async move {
            let replies = fleet.read(t, &[&["INFO", "memory", "keyspace"]]).await?;
            let reply = replies
                .into_iter()
                .next()
                .unwrap_or(crate::client::Reply::Nil);
            let text = reply.text().ok_or_else(|| Error::Redis {
                host: t.host_name.clone(),
                instance: t.instance.clone(),
                message: format!(
                    "INFO memory keyspace: {}",
                    reply.error().unwrap_or("no text")
                ),
            })?;
            let (keys, bytes) = parse_load(&text);
            Ok(MasterLoad {
                label: t.label(),
                id: id.clone(),
                slots: *slots,
                keys,
                bytes,
            })
        });
    join_all(reads).await.into_iter().collect()
}

/// Each master's label -> (node id, slots served), from its own view of
/// itself (its `myself` line).
pub fn master_ids(
    targets: &[Target],
    observed: &[Option<Observation>],
) -> BTreeMap<String, (NodeId, u32)> {
    targets
        .iter()
        .zip(observed)
        .filter_map(|(t, o)| {
            let me = o.as_ref()?.myself()?;
            me.is_master()
                .then(|| (t.label(), (me.id.clone(), me.slot_count())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::{Ranges, SlotRange};

    fn load(label: &str, id: &str, slots: u32, keys: u64, bytes: u64) -> MasterLoad {
        MasterLoad {
            label: label.into(),
            id: id.into(),
            slots,
            keys,
            bytes,
        }
    }

    fn mv(from: &str, to: &str, ranges: &[(Slot, Slot)]) -> slots::Move {
        slots::Move {
            from: from.into(),
            to: to.into(),
            ranges: Ranges::from_ranges(ranges.iter().map(|(a, b)| SlotRange::new(*a, *b))),
        }
    }

    #[test]
    fn info_gives_keys_and_dataset_bytes() {
        let info = "# Memory\r\nused_memory:2000000\r\nused_memory_dataset:1500000\r\n\r\n# Keyspace\r\ndb0:keys=3000,expires=2,avg_ttl=0,subexpiry=0\r\n";
        assert_eq!(parse_load(info), (3000, 1_500_000));
        // An empty db has no keyspace line.
        assert_eq!(
            parse_load("# Memory\r\nused_memory_dataset:100\r\n# Keyspace\r\n"),
            (0, 100)
        );
        assert_eq!(parse_load(""), (0, 0));
    }

    #[test]
    fn planned_moves_carry_labels_and_estimates() {
        let masters = [
            load("h1:r1", "a", 8192, 8192 * 10, 8192 * 10 * 100),
            load("h2:r1", "b", 8192, 0, 0),
            load("h3:r1", "c", 0, 0, 0),
        ];
        let moves = [
            mv("a", "c", &[(0, 99), (200, 299)]),
            mv("b", "c", &[(8192, 8291)]),
        ];
        let planned = planned_moves(&moves, &masters);
        assert_eq!(planned.len(), 2);
        let p = &planned[0];
        assert_eq!((p.from.as_str(), p.to.as_str()), ("h1:r1", "h3:r1"));
        assert_eq!((p.from_id.as_str(), p.to_id.as_str()), ("a", "c"));
        assert_eq!(p.ranges, vec![(0, 99), (200, 299)]);
        assert_eq!(p.slots(), 200);
        assert_eq!(p.keys, 2000);
        assert_eq!(p.bytes, 2000 * 100);
        assert_eq!(p.millis, Some((2000 * 1000u64).div_ceil(KEYS_PER_SEC)));
        // An empty source moves nothing.
        assert_eq!((planned[1].keys, planned[1].bytes), (0, 0));
        assert_eq!(planned[1].millis, Some(0));
    }

    #[test]
    fn uneven_spreads_add_up_and_unknown_masters_are_named_by_id() {
        // 10 keys over 3 slots: all 3 moved carry all 10.
        let p = planned_moves(&[mv("a", "x", &[(0, 2)])], &[load("h1:r1", "a", 3, 10, 10)]);
        assert_eq!(p[0].keys, 10);
        assert_eq!(p[0].to, "x");
        // 1 of 3 slots: floor(10/3).
        let p = planned_moves(&[mv("a", "x", &[(5, 5)])], &[load("h1:r1", "a", 3, 10, 10)]);
        assert_eq!(p[0].keys, 3);
        let p = planned_moves(
            &[mv("zz", "a", &[(5, 5)])],
            &[load("h1:r1", "a", 3, 10, 10)],
        );
        assert_eq!((p[0].from.as_str(), p[0].keys), ("zz", 0));
    }
}
