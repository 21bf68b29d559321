//! Open and unserved slots: what the masters report about them (typed
//! [`SlotView`]s for [`slots::fix_slot`]), the lines `plan` shows, and
//! carrying the repairs out through `engine::migrate::run_slot`.
//!
//! Which slots are looked at: those open (`[slot->-id]`, `[slot-<-id]`) in
//! any master's own CLUSTER NODES line, and, when every shard has a master
//! but not every slot is served (`ClusterProblem::SlotsUnserved`), the slots
//! no master claims. Slots of a shard without a master are formation's.

use std::collections::BTreeMap;
use std::fmt;

use futures::future::join_all;

use crate::Error;
use crate::client::Reply;
use crate::cluster::{Direction, NodeLine, Observation, SLOTS};
use crate::engine::scene::Scene;
use crate::fleet::{Fleet, Target};
use crate::problem::ClusterProblem;
use crate::slots::{self, FixKind, NodeId, Slot, SlotFix, SlotRange, SlotView};

/// Keys a node holds per inspected slot (CLUSTER COUNTKEYSINSLOT).
pub type SlotKeys = BTreeMap<Slot, u64>;

/// The agent takes at most 256 commands a pipeline.
const COUNTS_PER_CALL: usize = 256;

/// The masters as they see themselves: (target index, own line).
fn masters(observed: &[Option<Observation>]) -> Vec<(usize, &NodeLine)> {
    observed
        .iter()
        .enumerate()
        .filter_map(|(i, o)| Some((i, o.as_ref()?.myself()?)))
        .filter(|(_, me)| me.is_master())
        .collect()
}

/// Pure: whether unserved slots are the slot repair's (every shard has a
/// master, yet some slot has none), not formation's.
pub fn unserved_is_ours(problems: &[ClusterProblem]) -> bool {
    problems
        .iter()
        .any(|p| matches!(p, ClusterProblem::SlotsUnserved { .. }))
}

/// Pure: the slots to inspect, ascending: open in any master's own view,
/// and with `unserved`, those no master claims.
pub fn slots_to_inspect(observed: &[Option<Observation>], unserved: bool) -> Vec<Slot> {
    let masters = masters(observed);
    let mut slots: Vec<Slot> = masters
        .iter()
        .flat_map(|(_, me)| me.open_slots.iter().map(|o| o.slot))
        .collect();
    if unserved {
        let mut served = vec![false; SLOTS as usize];
        for (_, me) in &masters {
            for &(a, b) in &me.slots {
                for s in a..=b.min(SLOTS - 1) {
                    served[s as usize] = true;
                }
            }
        }
        slots.extend((0..SLOTS as Slot).filter(|&s| !served[s as usize]));
    }
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Pure: per slot of `slots`, what every master reports about it; `keys`
/// per target index (missing counts are 0). A master not `staying` (one
/// that leaves the cluster: missing entries stay) counts for a slot only
/// when it claims it, marks it open or holds keys in it, so a repair never
/// gives it a slot it has nothing of.
pub fn slot_views(
    observed: &[Option<Observation>],
    keys: &[SlotKeys],
    slots: &[Slot],
    staying: &[bool],
) -> BTreeMap<Slot, Vec<SlotView>> {
    let masters = masters(observed);
    slots
        .iter()
        .map(|&slot| {
            let views = masters
                .iter()
                .map(|&(i, me)| (i, view(me, slot, keys.get(i))))
                .filter(|(i, v)| {
                    staying.get(*i).copied().unwrap_or(true)
                        || v.owns
                        || v.keys > 0
                        || v.migrating_to.is_some()
                        || v.importing_from.is_some()
                })
                .map(|(_, v)| v)
                .collect();
            (slot, views)
        })
        .collect()
}

/// What master `me` reports about `slot`.
fn view(me: &NodeLine, slot: Slot, keys: Option<&SlotKeys>) -> SlotView {
    let mark = |d: Direction| {
        me.open_slots
            .iter()
            .find(|o| o.slot == slot && o.direction == d)
            .map(|o| o.node_id.clone())
    };
    SlotView {
        node: me.id.clone(),
        owns: me
            .slots
            .iter()
            .any(|&(a, b)| (a..=b).contains(&u32::from(slot))),
        migrating_to: mark(Direction::Migrating),
        importing_from: mark(Direction::Importing),
        keys: keys.and_then(|k| k.get(&slot)).copied().unwrap_or(0),
        slots_served: me.slot_count(),
    }
}

/// One slot's repair, as decided from the views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    pub slot: Slot,
    pub fix: SlotFix,
    /// Keys left to move: on the source of a move finished, on the other
    /// nodes for a roll-back, conflict or cover.
    pub keys: u64,
}

/// Pure: the slots that need a repair, ascending.
pub fn fixes(views: &BTreeMap<Slot, Vec<SlotView>>) -> Vec<Fix> {
    views
        .iter()
        .filter_map(|(&slot, v)| {
            let fix = slots::fix_slot(v);
            let keys = match &fix {
                SlotFix::Healthy => return None,
                SlotFix::NoMaster => 0,
                SlotFix::Steps {
                    kind: FixKind::Finish { from, .. },
                    ..
                } => v.iter().filter(|x| &x.node == from).map(|x| x.keys).sum(),
                SlotFix::Steps {
                    kind:
                        FixKind::RollBack { owner }
                        | FixKind::Conflict { owner }
                        | FixKind::Cover { owner },
                    ..
                } => v.iter().filter(|x| &x.node != owner).map(|x| x.keys).sum(),
            };
            Some(Fix { slot, fix, keys })
        })
        .collect()
}

/// How a fix is shown: its kind with "host:instance" labels.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    Finish { from: String, to: String },
    RollBack { owner: String },
    Conflict { owner: String, others: Vec<String> },
    Cover { owner: String },
    NoMaster,
}

/// One line of the plan: consecutive slots with the same repair.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    range: SlotRange,
    shown: Shown,
    keys: u64,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.range.count() == 1 {
            "slot"
        } else {
            "slots"
        };
        write!(f, "{what} {}: ", self.range)?;
        match &self.shown {
            Shown::Finish { from, to } => write!(
                f,
                "finish the move from {from} to {to} ({} key(s) left)",
                self.keys
            ),
            Shown::RollBack { owner } => write!(
                f,
                "roll back the interrupted move, {owner} keeps it ({} key(s) move back)",
                self.keys
            ),
            Shown::Conflict { owner, others } => write!(
                f,
                "claimed by {owner} and {}: a conflict apply does not settle by itself (it stops naming the slot)",
                others.join(", ")
            ),
            Shown::Cover { owner } => write!(
                f,
                "served by no master: {owner} takes it ({} key(s) move to it)",
                self.keys
            ),
            Shown::NoMaster => write!(f, "no master answers: nothing can serve it"),
        }
    }
}

/// Pure: the plan's lines for `fixes`, consecutive slots with the same
/// repair joined; `labels` maps node ids to "host:instance".
pub fn describe(
    fixes: &[Fix],
    views: &BTreeMap<Slot, Vec<SlotView>>,
    labels: &BTreeMap<NodeId, String>,
) -> Vec<String> {
    let label = |id: &NodeId| labels.get(id).cloned().unwrap_or_else(|| id.clone());
    let mut lines: Vec<Line> = Vec::new();
    for fix in fixes {
        let shown = match &fix.fix {
            SlotFix::Healthy => continue,
            SlotFix::NoMaster => Shown::NoMaster,
            SlotFix::Steps { kind, .. } => match kind {
                FixKind::Finish { from, to } => Shown::Finish {
                    from: label(from),
                    to: label(to),
                },
                FixKind::RollBack { owner } => Shown::RollBack {
                    owner: label(owner),
                },
                FixKind::Cover { owner } => Shown::Cover {
                    owner: label(owner),
                },
                FixKind::Conflict { owner } => Shown::Conflict {
                    owner: label(owner),
                    others: claimants(views.get(&fix.slot), owner)
                        .iter()
                        .map(label)
                        .collect(),
                },
            },
        };
        match lines.last_mut() {
            Some(last)
                if last.shown == shown && u32::from(last.range.end) + 1 == u32::from(fix.slot) =>
            {
                last.range.end = fix.slot;
                last.keys += fix.keys;
            }
            _ => lines.push(Line {
                range: SlotRange::single(fix.slot),
                shown,
                keys: fix.keys,
            }),
        }
    }
    lines.iter().map(ToString::to_string).collect()
}

/// The masters other than `owner` that claim the slot.
fn claimants(views: Option<&Vec<SlotView>>, owner: &NodeId) -> Vec<NodeId> {
    views
        .into_iter()
        .flatten()
        .filter(|v| v.owns && &v.node != owner)
        .map(|v| v.node.clone())
        .collect()
}

/// Node id -> target index, for every target that answers with its own
/// line.
pub fn node_indexes(observed: &[Option<Observation>]) -> BTreeMap<NodeId, usize> {
    observed
        .iter()
        .enumerate()
        .filter_map(|(i, o)| Some((o.as_ref()?.myself()?.id.clone(), i)))
        .collect()
}

/// Node id -> "host:instance".
pub fn labels(targets: &[Target], observed: &[Option<Observation>]) -> BTreeMap<NodeId, String> {
    node_indexes(observed)
        .into_iter()
        .map(|(id, i)| (id, targets[i].label()))
        .collect()
}

/// CLUSTER COUNTKEYSINSLOT of every slot in `slots` on every master, in
/// parallel (one pipeline of at most [`COUNTS_PER_CALL`] per call), indexed
/// like `targets`.
pub async fn count_keys(
    fleet: &Fleet,
    targets: &[Target],
    observed: &[Option<Observation>],
    slots: &[Slot],
) -> Result<Vec<SlotKeys>, Error> {
    let mut out = vec![SlotKeys::new(); targets.len()];
    if slots.is_empty() {
        return Ok(out);
    }
    let calls = masters(observed).into_iter().map(|(i, _)| async move {
        let t = &targets[i];
        let agent = fleet
            .agent(t.host)?
            .with_deadline(crate::client::READ_TIMEOUT);
        let mut counts = SlotKeys::new();
        for chunk in slots.chunks(COUNTS_PER_CALL) {
            let words: Vec<[String; 3]> = chunk
                .iter()
                .map(|s| ["CLUSTER".into(), "COUNTKEYSINSLOT".into(), s.to_string()])
                .collect();
            let commands: Vec<Vec<&str>> = words
                .iter()
                .map(|w| w.iter().map(String::as_str).collect())
                .collect();
            let commands: Vec<&[&str]> = commands.iter().map(Vec::as_slice).collect();
            let replies = agent.redis_dangerous(&t.instance, &commands).await?;
            for (slot, reply) in chunk.iter().zip(&replies) {
                match reply {
                    Reply::Int(n) => {
                        counts.insert(*slot, u64::try_from(*n).unwrap_or(0));
                    }
                    other => {
                        return Err(Error::Redis {
                            host: t.host_name.clone(),
                            instance: t.instance.clone(),
                            message: format!(
                                "CLUSTER COUNTKEYSINSLOT {slot}: {}",
                                other.error().unwrap_or("not a number")
                            ),
                        });
                    }
                }
            }
        }
        Ok::<_, Error>((i, counts))
    });
    for r in join_all(calls).await {
        let (i, counts) = r?;
        out[i] = counts;
    }
    Ok(out)
}

/// What the nodes report about the slots needing a repair, from one
/// observation.
pub struct Inspected {
    pub observed: Vec<Option<Observation>>,
    pub views: BTreeMap<Slot, Vec<SlotView>>,
    pub fixes: Vec<Fix>,
}

/// Observes every target (`all`: the inventory's, then the `leaving`
/// last ones) and counts the keys of the slots to inspect.
pub async fn inspect(fleet: &Fleet, all: &[Target], leaving: usize) -> Result<Inspected, Error> {
    let observed = crate::form::observe_all(fleet, all).await;
    let n = all.len() - leaving;
    let problems =
        crate::engine::shape::assess(&all[..n], &observed[..n], &all[n..], &observed[n..]);
    let slots = slots_to_inspect(&observed, unserved_is_ours(&problems));
    let keys = count_keys(fleet, all, &observed, &slots).await?;
    let staying: Vec<bool> = (0..all.len()).map(|i| i < n).collect();
    let views = slot_views(&observed, &keys, &slots, &staying);
    let fixes = fixes(&views);
    Ok(Inspected {
        observed,
        views,
        fixes,
    })
}

/// What a repair did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FixReport {
    pub slots: u32,
    pub keys: u64,
}

/// Repairs every open or unserved slot, from what the nodes report now
/// (the plan's lines are what they reported then). Slots whose repair is a
/// conflict or has no master are left alone and named in the error, once
/// the others are done.
pub async fn fix_slots(scene: &Scene<'_>) -> Result<FixReport, Error> {
    // Masters that leave the cluster may hold what a repair moves.
    let leaving = scene.deployment.leaving();
    let all: Vec<Target> = scene.targets.iter().chain(&leaving).cloned().collect();
    let scene = &Scene {
        targets: &all,
        ..*scene
    };
    let found = inspect(scene.fleet, &all, leaving.len()).await?;
    let nodes = node_indexes(&found.observed);
    let labels = labels(&all, &found.observed);
    // One line per run of slots, not per slot: thousands may be unserved.
    for line in describe(&found.fixes, &found.views, &labels) {
        scene.progress.step(line);
    }
    let mut report = FixReport::default();
    let mut refused = Vec::new();
    for fix in &found.fixes {
        match &fix.fix {
            SlotFix::Healthy => continue,
            SlotFix::NoMaster
            | SlotFix::Steps {
                kind: FixKind::Conflict { .. },
                ..
            } => {
                let one = std::slice::from_ref(fix);
                refused.extend(describe(one, &found.views, &labels));
            }
            SlotFix::Steps { steps, .. } => {
                let done = crate::engine::migrate::run_slot(scene, &nodes, fix.slot, steps).await?;
                report.slots += 1;
                report.keys += done.keys;
            }
        }
    }
    if !refused.is_empty() {
        return Err(Error::NotConverged(format!(
            "slot repair left these slots as they are:\n  - {}\n  hint: compare CLUSTER NODES on the masters named; CLUSTER SETSLOT <slot> NODE <id> on each settles who serves it",
            refused.join("\n  - ")
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::parse_nodes;

    /// Three masters (aa, bb, cc) in the even layout, and bb's replica.
    const A: &str = "\
aa 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
bb 10.0.0.2:7000@17000 master - 0 0 2 connected 5461-10922
cc 10.0.0.3:7000@17000 master - 0 0 3 connected 10923-16383
dd 10.0.0.2:7001@17001 slave aa 0 0 1 connected
";

    fn own(text: &str, me: &str, open: &str) -> Option<Observation> {
        let text = text
            .replace("myself,", "")
            .lines()
            .map(|l| {
                if l.starts_with(me) {
                    let l = l.replacen(" master ", " myself,master ", 1);
                    let l = l.replacen(" slave ", " myself,slave ", 1);
                    format!("{l} {open}").trim_end().to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        Some(Observation {
            nodes: parse_nodes(&text),
            state_ok: true,
            ..Observation::default()
        })
    }

    /// Each node's own view; `open` are its markers.
    fn cluster(open: [&str; 4]) -> Vec<Option<Observation>> {
        ["aa", "bb", "cc", "dd"]
            .iter()
            .zip(open)
            .map(|(me, o)| own(A, me, o))
            .collect()
    }

    fn labels() -> BTreeMap<NodeId, String> {
        [("aa", "a:r"), ("bb", "b:r"), ("cc", "c:r"), ("dd", "b:s")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn keys(counts: &[(usize, Slot, u64)]) -> Vec<SlotKeys> {
        let mut out = vec![SlotKeys::new(); 4];
        for &(i, s, n) in counts {
            out[i].insert(s, n);
        }
        out
    }

    #[test]
    fn open_slots_of_masters_and_unserved_slots_are_inspected() {
        let open = cluster(["", "[5461->-cc] [5462->-cc]", "[5461-<-bb]", ""]);
        assert_eq!(slots_to_inspect(&open, false), vec![5461, 5462]);
        assert_eq!(slots_to_inspect(&open, true), vec![5461, 5462]);
        let healthy = cluster(["", "", "", ""]);
        assert_eq!(slots_to_inspect(&healthy, true), Vec::<Slot>::new());
        // b's own view lost 5461-5470 (CLUSTER DELSLOTS).
        let mut gap = healthy.clone();
        let me = gap[1].as_mut().unwrap();
        let line = me.nodes.iter_mut().find(|n| n.is_myself()).unwrap();
        line.slots = vec![(5471, 10922)];
        assert_eq!(slots_to_inspect(&gap, false), Vec::<Slot>::new());
        assert_eq!(
            slots_to_inspect(&gap, true),
            (5461..=5470).collect::<Vec<Slot>>()
        );
        // A replica's markers are not a master's.
        let replica = cluster(["", "", "", "[7->-cc]"]);
        assert_eq!(slots_to_inspect(&replica, true), Vec::<Slot>::new());
    }

    #[test]
    fn each_master_reports_its_claim_marks_and_keys() {
        let open = cluster(["", "[5461->-cc]", "[5461-<-bb]", ""]);
        let views = slot_views(&open, &keys(&[(1, 5461, 30), (2, 5461, 7)]), &[5461], &[]);
        let v = &views[&5461];
        assert_eq!(v.len(), 3, "masters only: {v:?}");
        let by = |id: &str| v.iter().find(|x| x.node == id).unwrap();
        assert!(by("bb").owns && !by("cc").owns && !by("aa").owns);
        assert_eq!(by("bb").migrating_to.as_deref(), Some("cc"));
        assert_eq!(by("cc").importing_from.as_deref(), Some("bb"));
        assert_eq!((by("bb").keys, by("cc").keys, by("aa").keys), (30, 7, 0));
        assert_eq!(by("aa").slots_served, 5461);
    }

    #[test]
    fn repairs_are_shown_per_slot_or_run_of_slots() {
        type Case = (
            &'static str,
            [&'static str; 4],
            Vec<(usize, Slot, u64)>,
            bool,
            Vec<&'static str>,
        );
        let table: Vec<Case> = vec![
            (
                "an interrupted move is finished",
                ["", "[5461->-cc]", "[5461-<-bb]", ""],
                vec![(1, 5461, 37), (2, 5461, 3)],
                false,
                vec!["slot 5461: finish the move from b:r to c:r (37 key(s) left)"],
            ),
            (
                "two slots of one move, one line",
                ["", "[5461->-cc] [5462->-cc]", "[5461-<-bb] [5462-<-bb]", ""],
                vec![(1, 5461, 5), (1, 5462, 6)],
                false,
                vec!["slots 5461-5462: finish the move from b:r to c:r (11 key(s) left)"],
            ),
            (
                "migrating to a node that imports nothing and holds nothing: rolled back",
                ["", "[5461->-cc]", "", ""],
                vec![(1, 5461, 9)],
                false,
                vec![
                    "slot 5461: roll back the interrupted move, b:r keeps it (0 key(s) move back)",
                ],
            ),
            (
                "importing alone, keys already there: they move back",
                ["", "", "[5461-<-bb]", ""],
                vec![(1, 5461, 9), (2, 5461, 4)],
                false,
                vec![
                    "slot 5461: roll back the interrupted move, b:r keeps it (4 key(s) move back)",
                ],
            ),
            ("healthy: nothing", ["", "", "", ""], vec![], true, vec![]),
        ];
        for (name, open, counts, unserved, want) in table {
            let observed = cluster(open);
            let slots = slots_to_inspect(&observed, unserved);
            let views = slot_views(&observed, &keys(&counts), &slots, &[]);
            let fixes = fixes(&views);
            assert_eq!(describe(&fixes, &views, &labels()), want, "{name}");
        }
    }

    #[test]
    fn unserved_slots_go_to_the_master_with_their_keys_else_the_least_loaded() {
        let mut observed = cluster(["", "", "", ""]);
        for o in observed.iter_mut().flatten() {
            for n in o.nodes.iter_mut().filter(|n| n.is_myself() && n.id == "bb") {
                n.slots = vec![(5464, 10922)];
            }
        }
        let slots = slots_to_inspect(&observed, true);
        assert_eq!(slots, vec![5461, 5462, 5463]);
        let views = slot_views(&observed, &keys(&[(2, 5462, 2)]), &slots, &[]);
        let fixes = fixes(&views);
        assert_eq!(
            describe(&fixes, &views, &labels()),
            vec![
                // b serves the fewest slots; c holds 5462's keys.
                "slot 5461: served by no master: b:r takes it (0 key(s) move to it)",
                "slot 5462: served by no master: c:r takes it (0 key(s) move to it)",
                "slot 5463: served by no master: b:r takes it (0 key(s) move to it)",
            ]
        );
        // b leaves the cluster: it gets none; c holds 5462's keys, a and c
        // serve as many slots, so a (the first by id) takes the others.
        let views = slot_views(&observed, &keys(&[(2, 5462, 2)]), &slots, &[true, false]);
        assert_eq!(
            describe(&super::fixes(&views), &views, &labels()),
            vec![
                "slot 5461: served by no master: a:r takes it (0 key(s) move to it)",
                "slot 5462: served by no master: c:r takes it (0 key(s) move to it)",
                "slot 5463: served by no master: a:r takes it (0 key(s) move to it)",
            ]
        );
        // ...unless it holds a slot's keys.
        let views = slot_views(&observed, &keys(&[(1, 5461, 4)]), &[5461], &[true, false]);
        assert_eq!(
            describe(&super::fixes(&views), &views, &labels()),
            vec!["slot 5461: served by no master: b:r takes it (0 key(s) move to it)"]
        );
    }

    #[test]
    fn unserved_slots_are_ours_only_when_every_shard_has_a_master() {
        let table = [
            (vec![ClusterProblem::SlotsUnserved { served: 16000 }], true),
            (vec![ClusterProblem::ShardWithoutMaster { shard: 1 }], false),
            (vec![], false),
        ];
        for (problems, want) in table {
            assert_eq!(unserved_is_ours(&problems), want, "{problems:?}");
        }
    }
}
