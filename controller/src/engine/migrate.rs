//! Moving slots between masters: SETSLOT IMPORTING/MIGRATING, MIGRATE in
//! batches, verified, then SETSLOT NODE everywhere. The decisions (which
//! slots, batch sizes, what an error means) are `crate::slots`; this is
//! the IO that carries them out, through the agents (every command with
//! allow_dangerous, key names as bytes).
//!
//! Each batch is verified: COUNTKEYSINSLOT on both sides before and after
//! (one-sided: clients may add keys to the target meanwhile) and the
//! agent's PADDOCK.DIGEST of every key on the source (in the MIGRATE's own
//! pipeline) and on the target after; a mismatch stops the move with the
//! slot open (`Error::SlotMismatch`). Also here: what the masters hold and
//! what a planned move is expected to cost ([`planned_moves`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;

use crate::Error;
use crate::client::Reply;
use crate::cluster::Observation;
use crate::engine::atomic;
use crate::engine::scene::Scene;
use crate::engine::step::PlannedMove;
use crate::fleet::{Fleet, Target};
use crate::slots::{
    self, BusyKey, Digest, FixStep, MigrateError, NodeId, OnError, Slot, StopReason,
};

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

/// The controller's copy of the agent guard's bound on a MIGRATE timeout
/// (`paddock_agent::guard::MAX_MIGRATE_TIMEOUT_MS`): longer timeouts of
/// [`slots::on_error`] are sent as this, and still count as tried.
const MAX_MIGRATE_TIMEOUT_MS: u64 = 60_000;

/// Moves between different pairs of masters that run at once: each keeps
/// [`SLOTS_AT_ONCE`] slots in flight on its source and target, so a
/// rebalance over many masters does not load every one of them at once.
const MAX_PARALLEL_MOVES: usize = 4;

/// Slots of one move in flight at once: a slot's move is about ten round
/// trips through the agents, mostly waiting; Redis keeps any number of
/// slots migrating/importing, and the slots are independent. On the lab, 8
/// moved 300 slots in about 5 s where 4 took 7-8 s; 16 were no faster
/// than 8 (the agents' CPU is then the limit).
const SLOTS_AT_ONCE: usize = 8;

/// Tries of a command that may be sent again (see `At::one`).
const READ_TRIES: u32 = 3;

/// Keys named in a mismatch error; the rest are counted.
const KEYS_SHOWN: usize = 20;

impl std::fmt::Display for MoveReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "moved {} slot(s), {} key(s) (about {} byte(s)) in {secs:.1} s",
            self.slots, self.keys, self.bytes
        )?;
        if secs > 0.0 && self.keys > 0 {
            write!(f, ", {:.0} keys/s", self.keys as f64 / secs)?;
        }
        Ok(())
    }
}

/// Counts shared by the moves running at once.
#[derive(Default)]
struct Tally {
    done: MoveReport,
    stop: bool,
}

/// Carries out `moves` (slot by slot, verified), reporting progress. Moves
/// between different pairs of masters run at once (at most
/// [`MAX_PARALLEL_MOVES`]); the moves of one pair run in order. On an
/// error the other moves finish the slot they are on and stop; the error
/// is returned.
pub async fn move_slots(scene: &Scene<'_>, moves: &[PlannedMove]) -> Result<MoveReport, Error> {
    let started = Instant::now();
    if moves.is_empty() {
        return Ok(MoveReport::default());
    }
    let observed = crate::form::observe_all(scene.fleet, scene.targets).await;
    let nodes: BTreeMap<NodeId, usize> = master_ids(scene.targets, &observed)
        .into_iter()
        .filter_map(|(label, (id, _))| {
            let i = scene.targets.iter().position(|t| t.label() == label)?;
            Some((id, i))
        })
        .collect();
    for mv in moves {
        for (id, name) in [(&mv.from_id, &mv.from), (&mv.to_id, &mv.to)] {
            if !nodes.contains_key(id) {
                return Err(Error::Unhealthy(format!(
                    "{name} (node {id}) is not a master of this deployment any more; nothing was moved from there. Plan again"
                )));
            }
        }
    }
    if atomic::masters_support_atomic(scene, &nodes).await {
        return move_atomically(scene, &nodes, moves, started).await;
    }
    let masters: Vec<NodeId> = nodes.keys().cloned().collect();
    preflight(scene, &nodes).await?;
    let total = (
        moves.iter().map(PlannedMove::slots).sum::<u32>(),
        moves.iter().map(|m| m.keys).sum::<u64>(),
    );
    let mut pairs: BTreeMap<(&str, &str), Vec<&PlannedMove>> = BTreeMap::new();
    for mv in moves {
        pairs
            .entry((mv.from_id.as_str(), mv.to_id.as_str()))
            .or_default()
            .push(mv);
    }
    let tally = Mutex::new(Tally::default());
    let runs = pairs.into_values().map(|group| {
        let (nodes, masters, tally) = (&nodes, &masters, &tally);
        async move {
            for mv in group {
                scene.progress.step(format!("moving {mv}"));
                move_one(scene, nodes, masters, mv, tally, started, total).await?;
            }
            Ok::<(), Error>(())
        }
    });
    let results: Vec<Result<(), Error>> = futures::stream::iter(runs)
        .buffer_unordered(MAX_PARALLEL_MOVES)
        .collect()
        .await;
    let mut done = tally.into_inner().unwrap_or_else(|e| e.into_inner()).done;
    done.elapsed = started.elapsed();
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    scene.progress.step(done.to_string());
    Ok(done)
}

/// Every master runs Valkey 9 or later: each move is one atomic migration
/// (`atomic::move_atomic`), one after another (Valkey runs a source's
/// migrations in turn anyway), with the same progress and report.
async fn move_atomically(
    scene: &Scene<'_>,
    nodes: &BTreeMap<NodeId, usize>,
    moves: &[PlannedMove],
    started: Instant,
) -> Result<MoveReport, Error> {
    scene
        .progress
        .step("every master runs Valkey 9 or later: moving slots with its atomic slot migration (CLUSTER MIGRATESLOTS)");
    let total = (
        moves.iter().map(PlannedMove::slots).sum::<u32>(),
        moves.iter().map(|m| m.keys).sum::<u64>(),
    );
    let mut done = MoveReport::default();
    for mv in moves {
        scene.progress.step(format!("moving {mv} (atomic)"));
        let moved = atomic::move_atomic(scene, nodes, mv).await?;
        done.slots += moved.slots;
        done.keys += moved.keys;
        // Bytes as planned, per key: Valkey does not say what it sent.
        done.bytes += mv.bytes.checked_div(mv.keys).unwrap_or(0) * moved.keys;
        scene
            .progress
            .live(progress_line(&done, started.elapsed(), total));
    }
    done.elapsed = started.elapsed();
    scene.progress.step(done.to_string());
    Ok(done)
}

/// Every master's agent runs what a move sends, asked with commands that
/// change nothing: the digest of a key and a MIGRATE of it to another
/// master (missing: NOKEY; elsewhere: MOVED; any reply will do). An agent
/// that refuses them (an older paddockd) stops the run before any slot
/// opens, rather than mid-move where a refusal reads as a timeout.
async fn preflight(scene: &Scene<'_>, nodes: &BTreeMap<NodeId, usize>) -> Result<(), Error> {
    let key = b"paddock:preflight".to_vec();
    let checks = nodes.iter().map(|(id, &i)| {
        let key = key.clone();
        async move {
            let t = &scene.targets[i];
            let other = nodes
                .iter()
                .find(|(o, _)| *o != id)
                .map_or(t, |(_, &j)| &scene.targets[j]);
            let (ip, port) = (other.ip.to_string(), other.port.to_string());
            let mut migrate = args(&["MIGRATE", &ip, &port, "", "0", "1000", "KEYS"]);
            migrate.push(key.clone());
            let digest = vec![b"PADDOCK.DIGEST".to_vec(), key];
            scene
                .fleet
                .agent(t.host)?
                .redis_bytes(&t.instance, vec![digest, migrate], true)
                .await
                .map_err(|e| match e {
                    // A refusal comes back as the agent's error; an agent
                    // that is down stays one.
                    Error::Redis { .. } => Error::Unhealthy(format!(
                        "{}: its agent does not run the commands of a slot move (an older paddockd? upgrade it first): {e}",
                        t.label()
                    )),
                    e => e,
                })
        }
    });
    join_all(checks)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(())
}

/// One planned move, [`SLOTS_AT_ONCE`] slots at a time, unless another
/// move has failed.
async fn move_one(
    scene: &Scene<'_>,
    nodes: &BTreeMap<NodeId, usize>,
    masters: &[NodeId],
    mv: &PlannedMove,
    tally: &Mutex<Tally>,
    started: Instant,
    total: (u32, u64),
) -> Result<(), Error> {
    let lock = || tally.lock().unwrap_or_else(|e| e.into_inner());
    let slots = mv.ranges.iter().flat_map(|&(a, b)| a..=b);
    let runs = slots.map(|slot| async move {
        if lock().stop {
            return Ok(());
        }
        let steps = slots::move_steps(&mv.from_id, &mv.to_id, masters);
        let moved = match run_slot(scene, nodes, slot, &steps).await {
            Ok(d) => d,
            Err(e) => {
                lock().stop = true;
                return Err(e);
            }
        };
        let line = {
            let mut t = lock();
            t.done.slots += 1;
            t.done.keys += moved.keys;
            t.done.bytes += moved.bytes;
            progress_line(&t.done, started.elapsed(), total)
        };
        scene.progress.live(line);
        Ok(())
    });
    let results: Vec<Result<(), Error>> = futures::stream::iter(runs)
        .buffer_unordered(SLOTS_AT_ONCE)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    Ok(())
}

/// "slots 12/100, keys 12000/~100000, 8000 keys/s, about 11 s left".
fn progress_line(done: &MoveReport, elapsed: Duration, total: (u32, u64)) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        done.keys as f64 / secs
    } else {
        0.0
    };
    let mut line = format!(
        "slots {}/{}, keys {}/~{}, {rate:.0} keys/s",
        done.slots, total.0, done.keys, total.1
    );
    // Time left by slots (key counts are estimates; slots are exact).
    if done.slots > 0 && done.slots < total.0 {
        let left = secs * f64::from(total.0 - done.slots) / f64::from(done.slots);
        line.push_str(&format!(", about {left:.0} s left"));
    }
    line
}

/// Carries out one slot's `steps` (from `slots::move_steps` or
/// `slots::fix_slot`); `nodes` maps each node id to its index in
/// `scene.targets`. Every reply is checked; an error names the node, the
/// slot and the step.
pub async fn run_slot(
    scene: &Scene<'_>,
    nodes: &BTreeMap<NodeId, usize>,
    slot: Slot,
    steps: &[FixStep],
) -> Result<SlotDone, Error> {
    let at = At { scene, nodes, slot };
    let mut done = SlotDone::default();
    let mut i = 0;
    while i < steps.len() {
        // SETSLOT NODE runs: the first two in order (the target, then the
        // source, in a move), the others' at once (they only learn the
        // owner sooner than by gossip).
        let run = steps[i..]
            .iter()
            .take_while(|s| matches!(s, FixStep::SetNode { .. }))
            .count();
        if run > 2 {
            let (ordered, at_once) = steps[i..i + run].split_at(2);
            for step in ordered {
                run_step(&at, step, &mut done).await?;
            }
            let others = at_once.iter().map(|step| async {
                let mut d = SlotDone::default();
                run_step(&at, step, &mut d).await
            });
            join_all(others)
                .await
                .into_iter()
                .collect::<Result<Vec<()>, Error>>()?;
            i += run;
        } else {
            run_step(&at, &steps[i], &mut done).await?;
            i += 1;
        }
    }
    Ok(done)
}

async fn run_step(at: &At<'_, '_>, step: &FixStep, done: &mut SlotDone) -> Result<(), Error> {
    let s = at.slot.to_string();
    let (node, words): (&str, Vec<&str>) = match step {
        FixStep::Stable { node } => (node, vec!["SETSLOT", &s, "STABLE"]),
        FixStep::AddSlot { node } => (node, vec!["ADDSLOTSRANGE", &s, &s]),
        FixStep::DelSlot { node } => (node, vec!["DELSLOTSRANGE", &s, &s]),
        FixStep::Importing { node, from } => (node, vec!["SETSLOT", &s, "IMPORTING", from]),
        FixStep::Migrating { node, to } => (node, vec!["SETSLOT", &s, "MIGRATING", to]),
        FixStep::SetNode { node, owner } => (node, vec!["SETSLOT", &s, "NODE", owner]),
        FixStep::MigrateKeys { from, to } => {
            let d = migrate_keys(at, from, to).await?;
            done.keys += d.keys;
            done.bytes += d.bytes;
            return Ok(());
        }
    };
    let mut cmd = vec!["CLUSTER"];
    cmd.extend(words);
    let result = at.ok(node, &cmd.join(" "), args(&cmd)).await;
    if let (Err(_), FixStep::SetNode { node, owner }) = (&result, step)
        && node != owner
        && at.is_replica(node).await
    {
        // A master drained of its last slot becomes a replica (Redis's
        // replica migration) as soon as it hears the new owner: telling
        // it the slot's owner is moot, it follows its master's config.
        return Ok(());
    }
    result.map(|_| ())
}

type Args = Vec<Vec<u8>>;

fn args(words: &[&str]) -> Args {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// Where one slot's commands run.
struct At<'a, 's> {
    scene: &'a Scene<'s>,
    nodes: &'a BTreeMap<NodeId, usize>,
    slot: Slot,
}

impl At<'_, '_> {
    /// Whether `node` reports itself a replica now (its own CLUSTER NODES).
    async fn is_replica(&self, node: &str) -> bool {
        let Some(t) = self.target(node) else {
            return false;
        };
        crate::engine::observe::observe_node(self.scene.fleet, t)
            .await
            .and_then(|(o, _)| o.myself().map(crate::cluster::NodeLine::is_replica))
            .unwrap_or(false)
    }

    fn target(&self, node: &str) -> Option<&Target> {
        self.nodes
            .get(node)
            .and_then(|&i| self.scene.targets.get(i))
    }

    fn label(&self, node: &str) -> String {
        self.target(node)
            .map_or_else(|| node.to_owned(), Target::label)
    }

    fn fail(&self, node: &str, step: &str, message: impl Into<String>) -> Error {
        Error::SlotMove {
            slot: self.slot,
            node: self.label(node),
            step: step.to_owned(),
            message: message.into(),
        }
    }

    /// The replies of `cmds` on `node`, with the dangerous flag (SETSLOT,
    /// MIGRATE and the rest of a move need it). Transport errors pass as
    /// they are (an unreachable agent keeps its exit code).
    async fn call(&self, node: &str, step: &str, cmds: Vec<Args>) -> Result<Vec<Reply>, Error> {
        let n = cmds.len();
        let t = self
            .target(node)
            .ok_or_else(|| self.fail(node, step, "not a master of this deployment"))?;
        let replies = self
            .scene
            .fleet
            .agent(t.host)?
            .redis_bytes(&t.instance, cmds, true)
            .await?;
        if replies.len() != n {
            return Err(self.fail(
                node,
                step,
                format!("{} replies to {n} commands", replies.len()),
            ));
        }
        Ok(replies)
    }

    /// One command that is safe to send again (a read, or a SETSLOT that
    /// sets what it already set; an ADDSLOTSRANGE / DELSLOTSRANGE that did
    /// land the first time is refused the second, which stops loudly): an
    /// agent that lost its connection to Redis (a busy or restarting
    /// instance) gets [`READ_TRIES`] tries.
    async fn one(&self, node: &str, step: &str, cmd: Args) -> Result<Reply, Error> {
        let mut tries = 1;
        loop {
            match self.call(node, step, vec![cmd.clone()]).await {
                Ok(mut r) => return Ok(r.remove(0)),
                Err(Error::Redis { .. }) if tries < READ_TRIES => {
                    tokio::time::sleep(Duration::from_millis(250 << tries)).await;
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A command whose reply must not be an error.
    async fn ok(&self, node: &str, step: &str, cmd: Args) -> Result<Reply, Error> {
        match self.one(node, step, cmd).await? {
            Reply::Error(e) => Err(self.fail(node, step, e)),
            r => Ok(r),
        }
    }

    fn count_cmd(&self) -> Args {
        args(&["CLUSTER", "COUNTKEYSINSLOT", &self.slot.to_string()])
    }

    fn as_count(&self, node: &str, r: Reply) -> Result<u64, Error> {
        match r {
            Reply::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
            r => Err(self.fail(node, "CLUSTER COUNTKEYSINSLOT", format!("answered {r:?}"))),
        }
    }

    async fn count(&self, node: &str) -> Result<u64, Error> {
        let r = self
            .ok(node, "CLUSTER COUNTKEYSINSLOT", self.count_cmd())
            .await?;
        self.as_count(node, r)
    }

    /// COUNTKEYSINSLOT on both, at once.
    async fn counts(&self, from: &str, to: &str) -> Result<(u64, u64), Error> {
        let (a, b) = futures::join!(self.count(from), self.count(to));
        Ok((a?, b?))
    }

    async fn keys(&self, node: &str, count: u32) -> Result<Vec<Vec<u8>>, Error> {
        let step = "CLUSTER GETKEYSINSLOT";
        let (s, c) = (self.slot.to_string(), count.to_string());
        match self
            .ok(node, step, args(&["CLUSTER", "GETKEYSINSLOT", &s, &c]))
            .await?
        {
            Reply::Array(items) => items
                .into_iter()
                .map(|k| match k {
                    Reply::Bulk(b) => Ok(b),
                    r => Err(self.fail(node, step, format!("listed {r:?}"))),
                })
                .collect(),
            r => Err(self.fail(node, step, format!("answered {r:?}"))),
        }
    }

    fn digest_cmd(keys: &[Vec<u8>]) -> Args {
        let mut cmd = vec![b"PADDOCK.DIGEST".to_vec()];
        cmd.extend(keys.iter().cloned());
        cmd
    }

    fn as_digests(&self, node: &str, r: Reply, n: usize) -> Result<Vec<Option<Digest>>, Error> {
        let step = "PADDOCK.DIGEST";
        match r {
            Reply::Array(items) if items.len() == n => items
                .into_iter()
                .map(|d| match d {
                    Reply::Nil => Ok(None),
                    Reply::Bulk(b) => Ok(Some(b)),
                    r => Err(self.fail(node, step, format!("answered {r:?}"))),
                })
                .collect(),
            Reply::Error(e) => Err(self.fail(node, step, e)),
            r => Err(self.fail(node, step, format!("answered {r:?}"))),
        }
    }

    /// Each key's digest on `node` (None: not there).
    async fn digests(&self, node: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Digest>>, Error> {
        let r = self
            .one(node, "PADDOCK.DIGEST", Self::digest_cmd(keys))
            .await?;
        self.as_digests(node, r, keys.len())
    }

    /// The source's digests of `keys`, then MIGRATE of them to `to`, in
    /// one pipeline (so a client's write can only fall between them if it
    /// runs in the same instant); Ok(Err) is a refusal to decide about
    /// ([`slots::on_error`]).
    async fn migrate(
        &self,
        from: &str,
        to: &str,
        keys: &[Vec<u8>],
        batch: slots::Batch,
        replace: bool,
    ) -> Result<Result<Vec<Option<Digest>>, MigrateError>, Error> {
        let step = "MIGRATE";
        let dst = self
            .target(to)
            .ok_or_else(|| self.fail(to, step, "not a master of this deployment"))?;
        let (ip, port) = (dst.ip.to_string(), dst.port.to_string());
        let timeout = batch.timeout_ms.min(MAX_MIGRATE_TIMEOUT_MS).to_string();
        let mut words = vec!["MIGRATE", &ip, &port, "", "0", &timeout];
        if replace {
            words.push("REPLACE");
        }
        words.push("KEYS");
        let mut cmd = args(&words);
        cmd.extend(keys.iter().cloned());
        let replies = match self
            .call(from, step, vec![Self::digest_cmd(keys), cmd])
            .await
        {
            Ok(r) => r,
            // The agent's connection to Redis gave up waiting.
            Err(Error::Redis { .. }) => return Ok(Err(MigrateError::ClientTimeout)),
            Err(e) => return Err(e),
        };
        let [digests, migrated]: [Reply; 2] = replies
            .try_into()
            .map_err(|_| self.fail(from, step, "not two replies"))?;
        let digests = self.as_digests(from, digests, keys.len())?;
        Ok(match migrated {
            Reply::Error(e) => Err(MigrateError::from_code(
                e.split(' ').next().unwrap_or_default(),
            )),
            // OK, or NOKEY: none of the keys was there any more.
            Reply::Simple(_) => Ok(digests),
            r => return Err(self.fail(from, step, format!("answered {r:?}"))),
        })
    }
}

/// Every key of the slot from `from` to `to`, batch by batch, each batch
/// verified (see [`verify`]).
async fn migrate_keys(at: &At<'_, '_>, from: &str, to: &str) -> Result<SlotDone, Error> {
    let mut before = at.counts(from, to).await?;
    let mut done = SlotDone::default();
    if before.0 == 0 {
        return Ok(done);
    }
    let avg = source_avg(at, from).await?;
    let first = slots::batch_for(avg);
    let mut batch = first;
    // The source only loses keys of a migrating slot (new keys go to the
    // target), so this many rounds suffice unless batches keep failing.
    let rounds = (before.0 / u64::from(first.keys) + 2) * u64::from(slots::MAX_WAITS + 8);
    let mut attempt = 0;
    for _ in 0..rounds {
        if before.0 == 0 {
            return Ok(done);
        }
        let keys = at.keys(from, batch.keys).await?;
        match at.migrate(from, to, &keys, batch, false).await? {
            Ok(digests) => {
                let (moved, after) = verify(at, from, to, &keys, &digests, before, true).await?;
                done.keys += moved;
                done.bytes += moved * avg;
                attempt = 0;
                batch = first;
                before = after;
            }
            Err(e) => {
                attempt += 1;
                match slots::on_error(&e, batch, attempt) {
                    OnError::Retry(b) => batch = b,
                    OnError::Wait { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
                    OnError::CompareDigests => done.keys += busy_keys(at, from, to, &keys).await?,
                    OnError::Reobserve => {
                        return Err(at.fail(
                            from,
                            "MIGRATE",
                            "the slot moved away under this move (MOVED/ASK): another actor is changing it",
                        ));
                    }
                    OnError::Stop(reason) => return Err(stopped(at, from, reason)),
                }
                before = at.counts(from, to).await?;
            }
        }
    }
    Err(at.fail(
        from,
        "MIGRATE",
        format!("keys still left after {rounds} rounds"),
    ))
}

/// Bytes per key on the source, from its INFO.
async fn source_avg(at: &At<'_, '_>, from: &str) -> Result<u64, Error> {
    let step = "INFO memory keyspace";
    let r = at
        .ok(from, step, args(&["INFO", "memory", "keyspace"]))
        .await?;
    let text = r
        .text()
        .ok_or_else(|| at.fail(from, step, format!("answered {r:?}")))?;
    let (keys, bytes) = parse_load(&text);
    Ok(bytes.checked_div(keys).unwrap_or(0))
}

/// A batch refused with BUSYKEY: each key present on both sides is
/// replaced only when both copies are equal ([`slots::on_busy_key`]);
/// returns the keys moved so.
async fn busy_keys(at: &At<'_, '_>, from: &str, to: &str, keys: &[Vec<u8>]) -> Result<u64, Error> {
    let src = at.digests(from, keys).await?;
    let dst = at.digests(to, keys).await?;
    let mut replace = Vec::new();
    let mut replace_digests = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match slots::on_busy_key(at.slot, key, src[i].as_ref(), dst[i].as_ref()) {
            BusyKey::Replace => {
                replace.push(key.clone());
                replace_digests.push(src[i].clone());
            }
            BusyKey::Skip | BusyKey::Retry => {}
            BusyKey::Stop(reason) => return Err(stopped(at, from, reason)),
        }
    }
    if replace.is_empty() {
        return Ok(0);
    }
    let before = at.counts(from, to).await?;
    let batch = slots::batch_for(0);
    match at.migrate(from, to, &replace, batch, true).await? {
        // Digests taken again right before the REPLACE: what arrives must
        // be what was compared.
        Ok(digests) if digests == replace_digests => {
            Ok(verify(at, from, to, &replace, &digests, before, false)
                .await?
                .0)
        }
        Ok(_) => Err(Error::SlotMismatch {
            slot: at.slot,
            what: "keys changed on the source while their copies were compared".into(),
            keys: shown(&replace),
        }),
        Err(e) => Err(at.fail(
            from,
            "MIGRATE REPLACE",
            format!("of keys equal on both sides: {e:?}"),
        )),
    }
}

/// After a MIGRATE of `keys` (with `digests` their digests on the source
/// before it): each key that was there is on the target with the same
/// digest, the source lost at least those keys and (unless they replaced
/// copies already there) the target gained at least as many. Counts are
/// one-sided: clients may add keys to the target (new keys of a migrating
/// slot go there) or delete some meanwhile. Returns the keys moved and
/// the counts after.
async fn verify(
    at: &At<'_, '_>,
    from: &str,
    to: &str,
    keys: &[Vec<u8>],
    digests: &[Option<Digest>],
    before: (u64, u64),
    new_on_target: bool,
) -> Result<(u64, (u64, u64)), Error> {
    let (after, arrived) = futures::join!(at.counts(from, to), at.digests(to, keys));
    let (after, arrived) = (after?, arrived?);
    match check_batch(keys, digests, &arrived, before, after, new_on_target) {
        Ok(moved) => Ok((moved, after)),
        Err((what, bad)) => Err(Error::SlotMismatch {
            slot: at.slot,
            what: format!("{} -> {}: {what}", at.label(from), at.label(to)),
            keys: shown(&bad),
        }),
    }
}

/// The pure check of [`verify`]: Ok(keys moved) or Err((what, keys)).
fn check_batch(
    keys: &[Vec<u8>],
    digests: &[Option<Digest>],
    arrived: &[Option<Digest>],
    before: (u64, u64),
    after: (u64, u64),
    new_on_target: bool,
) -> Result<u64, (String, Vec<Vec<u8>>)> {
    let mut moved = 0u64;
    let mut bad = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(d) = &digests[i] {
            moved += 1;
            if arrived.get(i).and_then(Option::as_ref) != Some(d) {
                bad.push(key.clone());
            }
        }
    }
    if !bad.is_empty() {
        return Err((
            "these keys are missing on the target or differ from the source".into(),
            bad,
        ));
    }
    let present: Vec<Vec<u8>> = keys
        .iter()
        .zip(digests)
        .filter(|(_, d)| d.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    if after.0 + moved > before.0 {
        return Err((
            format!(
                "the source holds {} key(s) in the slot after moving {moved} of {}",
                after.0, before.0
            ),
            present,
        ));
    }
    let gained = if new_on_target { moved } else { 0 };
    if after.1 < before.1 + gained {
        return Err((
            format!(
                "the target holds {} key(s) in the slot, {} before receiving {gained}",
                after.1, before.1
            ),
            present,
        ));
    }
    Ok(moved)
}

/// Key names for an error: escaped (they are bytes), at most
/// [`KEYS_SHOWN`], then a count of the rest.
fn shown(keys: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = keys
        .iter()
        .take(KEYS_SHOWN)
        .map(|k| format!("\"{}\"", k.escape_ascii()))
        .collect();
    if keys.len() > KEYS_SHOWN {
        out.push(format!("and {} more", keys.len() - KEYS_SHOWN));
    }
    out
}

fn stopped(at: &At<'_, '_>, from: &str, reason: StopReason) -> Error {
    match reason {
        StopReason::Conflict { slot, key } => Error::SlotMismatch {
            slot,
            what: "a key exists on both masters with different values".into(),
            keys: shown(&[key]),
        },
        StopReason::TargetUnresponsive => at.fail(
            from,
            "MIGRATE",
            "the target did not take the batch within the longest timeout",
        ),
        StopReason::StillRefused => at.fail(
            from,
            "MIGRATE",
            format!(
                "refused {} times (TRYAGAIN/LOADING/CLUSTERDOWN/BUSY)",
                slots::MAX_WAITS
            ),
        ),
        StopReason::Auth => at.fail(
            from,
            "MIGRATE",
            "the target refused the deployment's password",
        ),
        StopReason::Unexpected(code) => at.fail(from, "MIGRATE", format!("refused with {code}")),
    }
}

// ---------------------------------------------------------------------------
// What each master holds, and what a planned move is expected to cost
// ---------------------------------------------------------------------------

/// Keys moved per second, for the duration shown with a planned move: the
/// rate measured on the lab (loopback, 2 shared cores, debug build, 64-byte
/// string values, verified batches): 200,000 keys in 20 slots moved in
/// about 12 s, about 17,000 keys/s, rounded down. Real
/// networks and bigger values move fewer keys per second.
pub const KEYS_PER_SEC: u64 = 15_000;

/// Slots moved per second besides their keys (about ten round trips through
/// the agents each, [`SLOTS_AT_ONCE`] at once): on the same lab, 300
/// nearly empty slots took 5-6 s (`rebalance_moves_slots_under_writes`
/// prints its rate).
pub const SLOTS_PER_SEC: u64 = 50;

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
/// source's average per key, time at [`KEYS_PER_SEC`] and
/// [`SLOTS_PER_SEC`]. A master missing
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
                millis: est.duration.map(|d| {
                    let keys = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    keys.saturating_add((u64::from(mv.count()) * 1000).div_ceil(SLOTS_PER_SEC))
                }),
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
        assert_eq!(
            p.millis,
            Some((2000 * 1000u64).div_ceil(KEYS_PER_SEC) + (200 * 1000u64).div_ceil(SLOTS_PER_SEC))
        );
        // An empty source moves nothing.
        assert_eq!((planned[1].keys, planned[1].bytes), (0, 0));
        assert_eq!(
            planned[1].millis,
            Some((100 * 1000u64).div_ceil(SLOTS_PER_SEC))
        );
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

    fn d(s: &str) -> Option<Digest> {
        Some(s.as_bytes().to_vec())
    }

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn a_batch_checks_digests_and_one_sided_counts() {
        let keys = [k("a"), k("b"), k("gone")];
        let src = [d("1"), d("2"), None];
        // Arrived as it left; a client added 5 new keys to the target.
        assert_eq!(
            check_batch(&keys, &src, &[d("1"), d("2"), None], (10, 0), (8, 7), true),
            Ok(2)
        );
        // A value changed (or a client wrote it) on the way.
        let (what, bad) =
            check_batch(&keys, &src, &[d("1"), d("X"), None], (10, 0), (8, 2), true).unwrap_err();
        assert_eq!(bad, vec![k("b")]);
        assert!(what.contains("differ"), "{what}");
        // Missing on the target.
        let (_, bad) =
            check_batch(&keys, &src, &[None, d("2"), None], (10, 0), (8, 2), true).unwrap_err();
        assert_eq!(bad, vec![k("a")]);
        // The source kept keys it says it moved.
        let (what, bad) =
            check_batch(&keys, &src, &[d("1"), d("2"), None], (10, 0), (9, 2), true).unwrap_err();
        assert!(what.contains("source"), "{what}");
        assert_eq!(bad, vec![k("a"), k("b")]);
        // The target lost keys.
        let (what, _) =
            check_batch(&keys, &src, &[d("1"), d("2"), None], (10, 3), (8, 4), true).unwrap_err();
        assert!(what.contains("target"), "{what}");
        // Replacing copies already there adds nothing to the target.
        assert_eq!(
            check_batch(&keys, &src, &[d("1"), d("2"), None], (10, 3), (8, 3), false),
            Ok(2)
        );
    }

    #[test]
    fn keys_in_errors_are_escaped_and_bounded() {
        let shown1 = shown(&[vec![0xff, b'a', b'"', 0x00]]);
        assert_eq!(shown1, vec![r#""\xffa\"\x00""#.to_owned()]);
        let many: Vec<Vec<u8>> = (0..25).map(|i| format!("k{i}").into_bytes()).collect();
        let out = shown(&many);
        assert_eq!(out.len(), KEYS_SHOWN + 1);
        assert_eq!(out.last().unwrap(), "and 5 more");
    }

    #[test]
    fn progress_says_how_far_and_how_long() {
        let done = MoveReport {
            slots: 25,
            keys: 5000,
            bytes: 0,
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            progress_line(&done, Duration::from_secs(10), (100, 20_000)),
            "slots 25/100, keys 5000/~20000, 500 keys/s, about 30 s left"
        );
        let all = MoveReport { slots: 100, ..done };
        assert!(!progress_line(&all, Duration::from_secs(10), (100, 20_000)).contains("left"));
        let report = MoveReport {
            slots: 3,
            keys: 3000,
            bytes: 30_000,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            report.to_string(),
            "moved 3 slot(s), 3000 key(s) (about 30000 byte(s)) in 2.0 s, 1500 keys/s"
        );
    }
}
