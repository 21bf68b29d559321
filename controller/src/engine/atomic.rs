//! Valkey 9's atomic slot migration: when every master runs Valkey 9 or
//! later, a planned move is one `CLUSTER MIGRATESLOTS` on its source (all
//! its ranges in one call), followed with `CLUSTER GETSLOTMIGRATIONS` until
//! Valkey reports the migration's end. Valkey moves the slots' keys and
//! then their ownership itself (the target takes over with the keys
//! already there: no slot is ever open, no ASK redirects), so nothing is
//! left for `paddock fix` when it fails; it authenticates to the target
//! with masterauth, which every rendered config has.
//!
//! Verified with key counts (CLUSTER COUNTKEYSINSLOT, one per slot): the
//! source must hold none of the moved slots' keys afterwards, and the
//! target at least what both held before (one-sided, as on the MIGRATE
//! path: clients may add keys meanwhile). No per-key digests: Valkey
//! copies the keys itself, the agent never sees them.
//!
//! The decisions ([`supports_atomic`], [`parse_migrations`], [`follow`],
//! [`check_counts`]) are pure; the IO is [`move_atomic`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::Error;
use crate::client::Reply;
use crate::engine::scene::Scene;
use crate::engine::step::PlannedMove;
use crate::fleet::Target;
use crate::slots::{NodeId, Slot};

/// The first Valkey release with CLUSTER MIGRATESLOTS.
pub const MIN_VALKEY: (u32, u32) = (9, 0);

/// COUNTKEYSINSLOT commands sent in one call to an agent: the most one
/// RedisCommand takes.
const COUNTS_PER_CALL: usize = paddock_model::MAX_PIPELINE;

/// The longest wait for one migration besides its estimate: Valkey runs
/// a source's migrations one after another, and the snapshot of a big slot
/// takes a while to start.
const WAIT_BASE: Duration = Duration::from_secs(60);

/// Time between two GETSLOTMIGRATIONS.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Which server a node runs, from its INFO server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    Redis,
    Valkey {
        version: (u32, u32),
    },
    /// INFO said nothing we know (or could not be read).
    Unknown,
}

/// The server of `INFO server` text: Valkey says `server_name:valkey` and
/// `valkey_version:X.Y.Z` (its `redis_version` stays 7.2.4 for clients).
pub fn parse_server(info: &str) -> Server {
    let field = |k: &str| paddock_knowledge::info::field(info, k);
    let version = |v: String| -> Option<(u32, u32)> {
        let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    };
    match field("server_name").as_deref().map(str::trim) {
        Some("valkey") => match field("valkey_version").and_then(version) {
            Some(version) => Server::Valkey { version },
            None => Server::Unknown,
        },
        Some(_) => Server::Unknown,
        None if field("redis_version").is_some() => Server::Redis,
        None => Server::Unknown,
    }
}

/// The atomic path runs only when every master (at least one) runs
/// Valkey [`MIN_VALKEY`] or later: a mixed cluster moves slots the old way.
pub fn supports_atomic(masters: &[Server]) -> bool {
    !masters.is_empty()
        && masters
            .iter()
            .all(|s| matches!(s, Server::Valkey { version } if *version >= MIN_VALKEY))
}

/// Where a migration is, by GETSLOTMIGRATIONS's `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Success,
    Failed,
    Cancelled,
    /// Any state on the way (connecting, snapshotting, replicating, ...).
    Running(String),
}

impl State {
    /// Valkey's word for it.
    pub fn word(&self) -> &str {
        match self {
            State::Success => "success",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Running(s) => s,
        }
    }

    fn of(s: &str) -> State {
        match s {
            "success" => State::Success,
            "failed" => State::Failed,
            "cancelled" | "canceled" => State::Cancelled,
            other => State::Running(other.to_owned()),
        }
    }
}

/// One entry of CLUSTER GETSLOTMIGRATIONS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub name: String,
    /// EXPORT on the source, IMPORT on the target.
    pub export: bool,
    pub ranges: Vec<(Slot, Slot)>,
    pub source: NodeId,
    pub target: NodeId,
    pub state: State,
    pub message: String,
}

/// The entries of a GETSLOTMIGRATIONS reply: an array of maps (flat
/// key/value arrays in RESP2). Unknown fields are ignored; an entry
/// without a name, or a reply of another shape, is None.
pub fn parse_migrations(reply: &Reply) -> Option<Vec<Migration>> {
    let Reply::Array(entries) = reply else {
        return None;
    };
    entries.iter().map(parse_migration).collect()
}

fn parse_migration(entry: &Reply) -> Option<Migration> {
    let Reply::Array(kv) = entry else {
        return None;
    };
    let fields: BTreeMap<String, String> = kv
        .chunks(2)
        .filter_map(|p| match p {
            [k, v] => Some((k.text()?, v.text().unwrap_or_default())),
            _ => None,
        })
        .collect();
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let ranges = get("slot_ranges")
        .split_whitespace()
        .map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect::<Option<Vec<(Slot, Slot)>>>()?;
    Some(Migration {
        name: fields.get("name")?.clone(),
        export: get("operation") == "EXPORT",
        ranges,
        source: get("source_node"),
        target: get("target_node"),
        state: State::of(&get("state")),
        message: get("message"),
    })
}

/// How a move's migration stands, seen from its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// Not listed yet (or only older migrations are).
    NotYet,
    Running(String),
    Done,
    Stopped {
        state: State,
        message: String,
    },
}

/// The migration of `ranges` to `target` among `seen` (the source's
/// GETSLOTMIGRATIONS), ignoring those listed before it started (`before`:
/// their names).
pub fn follow(
    seen: &[Migration],
    before: &BTreeSet<String>,
    target: &str,
    ranges: &[(Slot, Slot)],
) -> Follow {
    let want = normalized(ranges);
    let ours = seen.iter().find(|m| {
        m.export && m.target == target && normalized(&m.ranges) == want && !before.contains(&m.name)
    });
    match ours.map(|m| &m.state) {
        None => Follow::NotYet,
        Some(State::Success) => Follow::Done,
        Some(State::Running(s)) => Follow::Running(s.clone()),
        Some(state) => Follow::Stopped {
            state: state.clone(),
            message: ours.map(|m| m.message.clone()).unwrap_or_default(),
        },
    }
}

/// Ranges sorted, adjacent and overlapping ones merged: the same slots
/// compare equal however they are written.
fn normalized(ranges: &[(Slot, Slot)]) -> Vec<(Slot, Slot)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(Slot, Slot)> = Vec::new();
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Per-slot key counts before (source, target) and after: Ok(keys moved),
/// or Err((slot, what)) for the first slot that does not add up. The
/// source must be empty; the target must hold at least what both held
/// (clients may add keys, not remove them, for the check to pass).
pub fn check_counts(
    before: &BTreeMap<Slot, (u64, u64)>,
    after: &BTreeMap<Slot, (u64, u64)>,
) -> Result<u64, (Slot, String)> {
    let mut moved = 0;
    for (&slot, &(src, tgt)) in before {
        let (src_after, tgt_after) = after.get(&slot).copied().unwrap_or((u64::MAX, 0));
        if src_after != 0 {
            return Err((
                slot,
                format!("the source still holds {src_after} key(s) of the slot"),
            ));
        }
        if tgt_after < src + tgt {
            return Err((
                slot,
                format!(
                    "the target holds {tgt_after} key(s), fewer than the {} both held before",
                    src + tgt
                ),
            ));
        }
        moved += src;
    }
    Ok(moved)
}

/// "0-99 200-299", as Valkey and an error name slot ranges.
pub fn ranges_text(ranges: &[(Slot, Slot)]) -> String {
    crate::cluster::join_ranges(
        ranges.iter().map(|&(a, b)| (u32::from(a), u32::from(b))),
        " ",
    )
}

/// The command that starts a move's migration on its source.
pub fn migrateslots_command(to: &str, ranges: &[(Slot, Slot)]) -> Vec<String> {
    let mut words = vec![
        "CLUSTER".to_owned(),
        "MIGRATESLOTS".into(),
        "SLOTSRANGE".into(),
    ];
    for &(a, b) in ranges {
        words.push(a.to_string());
        words.push(b.to_string());
    }
    words.push("NODE".into());
    words.push(to.to_owned());
    words
}

// ---------------------------------------------------------------------------
// IO
// ---------------------------------------------------------------------------

/// Whether every master among `nodes` runs Valkey 9 or later (one INFO
/// server each; one that cannot be read counts as unknown: the MIGRATE
/// path then runs, as for Redis).
pub async fn masters_support_atomic(scene: &Scene<'_>, nodes: &BTreeMap<NodeId, usize>) -> bool {
    let reads = nodes.values().map(|&i| async move {
        let t = &scene.targets[i];
        match scene.fleet.read(t, &[&["INFO", "server"]]).await {
            Ok(r) => r
                .first()
                .and_then(Reply::text)
                .map_or(Server::Unknown, |text| parse_server(&text)),
            Err(_) => Server::Unknown,
        }
    });
    supports_atomic(&futures::future::join_all(reads).await)
}

/// What one atomic move did: keys moved (by the counts).
pub struct AtomicDone {
    pub slots: u32,
    pub keys: u64,
}

/// Carries out `mv` with one CLUSTER MIGRATESLOTS on its source, followed
/// until Valkey reports its end (bounded by [`WAIT_BASE`] plus four times
/// the plan's estimate), then checks the counts.
pub async fn move_atomic(
    scene: &Scene<'_>,
    nodes: &BTreeMap<NodeId, usize>,
    mv: &PlannedMove,
) -> Result<AtomicDone, Error> {
    let target = |id: &str| nodes.get(id).and_then(|&i| scene.targets.get(i));
    let (Some(src), Some(dst)) = (target(&mv.from_id), target(&mv.to_id)) else {
        return Err(Error::Unhealthy(format!(
            "{mv}: a master is not part of this deployment any more; plan again"
        )));
    };
    let slots: Vec<Slot> = mv.ranges.iter().flat_map(|&(a, b)| a..=b).collect();
    let fail = |message: String| Error::AtomicMove {
        from: mv.from.clone(),
        to: mv.to.clone(),
        slots: ranges_text(&mv.ranges),
        message,
    };
    let before = counts(scene, src, dst, &slots).await?;
    let listed = |reply: Vec<Reply>| {
        reply
            .first()
            .and_then(parse_migrations)
            .ok_or_else(|| fail("CLUSTER GETSLOTMIGRATIONS: a reply of another shape".into()))
    };
    let agent = scene.fleet.agent(src.host)?;
    // An agent that refuses these (an older paddockd) stops here, before
    // anything started.
    let known: BTreeSet<String> = listed(
        agent
            .redis_bytes(&src.instance, vec![getslotmigrations()], true)
            .await
            .map_err(|e| match e {
                Error::Redis { .. } => Error::Unhealthy(format!(
                    "{}: its agent does not run Valkey's slot migration commands (an older paddockd? upgrade it first): {e}",
                    src.label()
                )),
                e => e,
            })?,
    )?
    .into_iter()
    .map(|m| m.name)
    .collect();
    let start: Vec<Vec<u8>> = migrateslots_command(&mv.to_id, &mv.ranges)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let replies = agent.redis_bytes(&src.instance, vec![start], true).await?;
    if let Some(e) = replies.first().and_then(Reply::error) {
        return Err(fail(format!("CLUSTER MIGRATESLOTS refused: {e}")));
    }
    let limit = WAIT_BASE + Duration::from_millis(mv.millis.unwrap_or(0).saturating_mul(4));
    let last = wait_done(scene, src, mv, &known, limit, &listed).await?;
    match last {
        Follow::Done => {}
        Follow::Stopped { state, message } => {
            return Err(fail(format!(
                "Valkey's migration ended {}: {message}; the slots stay on {}",
                state.word(),
                mv.from
            )));
        }
        last => {
            return Err(fail(format!(
                "not finished within {} s (last seen: {last:?}); see CLUSTER GETSLOTMIGRATIONS on {}",
                limit.as_secs(),
                mv.from
            )));
        }
    }
    let after = counts(scene, src, dst, &slots).await?;
    let keys = check_counts(&before, &after)
        .map_err(|(slot, what)| fail(format!("slot {slot}: key counts do not add up: {what}")))?;
    Ok(AtomicDone {
        slots: u32::try_from(slots.len()).unwrap_or(u32::MAX),
        keys,
    })
}

fn getslotmigrations() -> Vec<Vec<u8>> {
    vec![b"CLUSTER".to_vec(), b"GETSLOTMIGRATIONS".to_vec()]
}

/// GETSLOTMIGRATIONS on the source every [`POLL_EVERY`] until the move's
/// migration ends or `limit` passes; the last thing seen.
async fn wait_done(
    scene: &Scene<'_>,
    src: &Target,
    mv: &PlannedMove,
    known: &BTreeSet<String>,
    limit: Duration,
    listed: &impl Fn(Vec<Reply>) -> Result<Vec<Migration>, Error>,
) -> Result<Follow, Error> {
    let agent = scene.fleet.agent(src.host)?;
    let started = Instant::now();
    let polls = (limit.as_millis() / POLL_EVERY.as_millis()).max(1);
    let mut last = Follow::NotYet;
    for _ in 0..polls {
        let reply = agent
            .redis_bytes(&src.instance, vec![getslotmigrations()], true)
            .await?;
        last = follow(&listed(reply)?, known, &mv.to_id, &mv.ranges);
        match &last {
            Follow::Done | Follow::Stopped { .. } => break,
            Follow::Running(state) => scene.progress.live(format!(
                "atomic migration of {} slot(s) to {}: {state}, {:.0} s",
                mv.slots(),
                mv.to,
                started.elapsed().as_secs_f64()
            )),
            Follow::NotYet => {}
        }
        if started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    Ok(last)
}

/// COUNTKEYSINSLOT of every slot on both masters, [`COUNTS_PER_CALL`] per
/// call.
async fn counts(
    scene: &Scene<'_>,
    src: &Target,
    dst: &Target,
    slots: &[Slot],
) -> Result<BTreeMap<Slot, (u64, u64)>, Error> {
    let mut out = BTreeMap::new();
    for chunk in slots.chunks(COUNTS_PER_CALL) {
        let cmds: Vec<Vec<Vec<u8>>> = chunk
            .iter()
            .map(|s| {
                vec![
                    b"CLUSTER".to_vec(),
                    b"COUNTKEYSINSLOT".to_vec(),
                    s.to_string().into_bytes(),
                ]
            })
            .collect();
        let (a, b) = futures::future::join(
            one_side(scene, src, cmds.clone()),
            one_side(scene, dst, cmds),
        )
        .await;
        let (a, b) = (a?, b?);
        for (i, &slot) in chunk.iter().enumerate() {
            out.insert(slot, (a[i], b[i]));
        }
    }
    Ok(out)
}

async fn one_side(
    scene: &Scene<'_>,
    t: &Target,
    cmds: Vec<Vec<Vec<u8>>>,
) -> Result<Vec<u64>, Error> {
    let n = cmds.len();
    let replies = scene
        .fleet
        .agent(t.host)?
        .redis_bytes(&t.instance, cmds, true)
        .await?;
    let counts: Option<Vec<u64>> = replies
        .iter()
        .map(|r| match r {
            Reply::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .collect();
    match counts {
        Some(c) if c.len() == n => Ok(c),
        _ => Err(Error::Redis {
            host: t.host_name.clone(),
            instance: t.instance.clone(),
            message: "CLUSTER COUNTKEYSINSLOT: not a count".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_server_tells_valkey_from_redis() {
        let valkey = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\nvalkey_release_stage:ga\r\n";
        assert_eq!(parse_server(valkey), Server::Valkey { version: (9, 1) });
        let valkey8 = "redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n";
        assert_eq!(parse_server(valkey8), Server::Valkey { version: (8, 0) });
        let redis = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(parse_server(redis), Server::Redis);
        assert_eq!(parse_server(""), Server::Unknown);
        assert_eq!(
            parse_server("server_name:valkey\r\nvalkey_version:x\r\n"),
            Server::Unknown
        );
        assert_eq!(
            parse_server("server_name:other\r\nredis_version:7.2.4\r\n"),
            Server::Unknown
        );
    }

    #[test]
    fn only_an_all_valkey_9_cluster_moves_atomically() {
        let v = |a, b| Server::Valkey { version: (a, b) };
        for (masters, atomic) in [
            (vec![v(9, 0), v(9, 1), v(10, 0)], true),
            (vec![v(9, 1)], true),
            (vec![v(9, 1), v(8, 1)], false),
            (vec![v(9, 1), Server::Redis], false),
            (vec![v(9, 1), Server::Unknown], false),
            (vec![Server::Redis, Server::Redis], false),
            (vec![], false),
        ] {
            assert_eq!(supports_atomic(&masters), atomic, "{masters:?}");
        }
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    /// An entry as valkey-server 9.1.2 gives it (RESP2: a flat array).
    fn entry(name: &str, op: &str, ranges: &str, state: &str, message: &str) -> Reply {
        let mut kv = Vec::new();
        for (k, v) in [
            ("name", bulk(name)),
            ("operation", bulk(op)),
            ("slot_ranges", bulk(ranges)),
            (
                "target_node",
                bulk("78846eb31a737b7a5fc596d47b1f815fd036239d"),
            ),
            (
                "source_node",
                bulk("8c5c9b6522ba3668223cff88ae53755c122ffbe6"),
            ),
            ("create_time", Reply::Int(1796020831)),
            ("last_update_time", Reply::Int(1796020832)),
            ("last_ack_time", Reply::Int(1796020831)),
            ("state", bulk(state)),
            ("message", bulk(message)),
            ("cow_size", Reply::Int(0)),
            ("remaining_repl_size", Reply::Int(0)),
        ] {
            kv.push(bulk(k));
            kv.push(v);
        }
        Reply::Array(kv)
    }

    const TARGET: &str = "78846eb31a737b7a5fc596d47b1f815fd036239d";

    #[test]
    fn getslotmigrations_replies_parse() {
        let reply = Reply::Array(vec![
            entry("7889aff", "EXPORT", "0-99 200-299 2500-2600", "success", ""),
            entry(
                "8fc12e4",
                "EXPORT",
                "0-99",
                "failed",
                "Received error during handshake to target: -ERR Target node does not know the source node",
            ),
            entry("c0ffee", "IMPORT", "7", "snapshotting", ""),
        ]);
        let m = parse_migrations(&reply).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "7889aff");
        assert!(m[0].export);
        assert_eq!(m[0].ranges, vec![(0, 99), (200, 299), (2500, 2600)]);
        assert_eq!(m[0].target, TARGET);
        assert_eq!(m[0].source, "8c5c9b6522ba3668223cff88ae53755c122ffbe6");
        assert_eq!(m[0].state, State::Success);
        assert_eq!(m[1].state, State::Failed);
        assert!(m[1].message.contains("handshake"));
        assert!(!m[2].export);
        assert_eq!(m[2].ranges, vec![(7, 7)]);
        assert_eq!(m[2].state, State::Running("snapshotting".into()));
        assert_eq!(parse_migrations(&Reply::Array(vec![])), Some(vec![]));
        assert_eq!(parse_migrations(&Reply::Error("ERR unknown".into())), None);
        assert_eq!(
            parse_migrations(&Reply::Array(vec![entry(
                "x", "EXPORT", "a-b", "success", ""
            )])),
            None
        );
        assert_eq!(parse_migrations(&Reply::Array(vec![bulk("x")])), None);
    }

    #[test]
    fn a_move_follows_its_own_new_migration() {
        let m = |name: &str, ranges: &str, state: &str| {
            parse_migration(&entry(name, "EXPORT", ranges, state, "why")).unwrap()
        };
        let ours = [(0, 99), (200, 299)];
        let none = BTreeSet::new();
        let old: BTreeSet<String> = ["old".to_owned()].into();
        // An older migration of the same slots (failed before) is ignored.
        let seen = [m("old", "0-99 200-299", "failed")];
        assert_eq!(follow(&seen, &old, TARGET, &ours), Follow::NotYet);
        let seen = [
            m("old", "0-99 200-299", "failed"),
            m("new", "0-99 200-299", "replicating"),
        ];
        assert_eq!(
            follow(&seen, &old, TARGET, &ours),
            Follow::Running("replicating".into())
        );
        let seen = [m("new", "0-99 200-299", "success")];
        assert_eq!(follow(&seen, &none, TARGET, &ours), Follow::Done);
        // The same slots written otherwise.
        let seen = [m("new", "200-299 0-49 50-99", "success")];
        assert_eq!(follow(&seen, &none, TARGET, &ours), Follow::Done);
        assert_eq!(
            follow(&[m("new", "5", "success")], &none, TARGET, &[(5, 5)]),
            Follow::Done
        );
        for (state, end) in [("failed", State::Failed), ("cancelled", State::Cancelled)] {
            let seen = [m("new", "0-99 200-299", state)];
            assert_eq!(
                follow(&seen, &none, TARGET, &ours),
                Follow::Stopped {
                    state: end,
                    message: "why".into()
                }
            );
        }
        // Other slots, another target, or an import are not ours.
        let seen = [m("new", "0-99", "success")];
        assert_eq!(follow(&seen, &none, TARGET, &ours), Follow::NotYet);
        assert_eq!(
            follow(
                &[m("new", "0-99 200-299", "success")],
                &none,
                "other",
                &ours
            ),
            Follow::NotYet
        );
        let import = parse_migration(&entry("i", "IMPORT", "0-99 200-299", "success", "")).unwrap();
        assert_eq!(follow(&[import], &none, TARGET, &ours), Follow::NotYet);
    }

    #[test]
    fn counts_must_leave_the_source_empty_and_the_target_whole() {
        let before: BTreeMap<Slot, (u64, u64)> = [(1, (10, 0)), (2, (0, 0)), (3, (5, 1))].into();
        let after: BTreeMap<Slot, (u64, u64)> = [(1, (0, 10)), (2, (0, 0)), (3, (0, 6))].into();
        assert_eq!(check_counts(&before, &after), Ok(15));
        // A client added keys to the target meanwhile.
        let more: BTreeMap<Slot, (u64, u64)> = [(1, (0, 12)), (2, (0, 1)), (3, (0, 6))].into();
        assert_eq!(check_counts(&before, &more), Ok(15));
        let left: BTreeMap<Slot, (u64, u64)> = [(1, (1, 10)), (2, (0, 0)), (3, (0, 6))].into();
        let (slot, what) = check_counts(&before, &left).unwrap_err();
        assert_eq!(slot, 1);
        assert!(what.contains("source"), "{what}");
        let lost: BTreeMap<Slot, (u64, u64)> = [(1, (0, 10)), (2, (0, 0)), (3, (0, 5))].into();
        let (slot, what) = check_counts(&before, &lost).unwrap_err();
        assert_eq!(slot, 3);
        assert!(what.contains("target"), "{what}");
        // A slot not counted after is not passed.
        let missing: BTreeMap<Slot, (u64, u64)> = [(1, (0, 10)), (3, (0, 6))].into();
        assert_eq!(check_counts(&before, &missing).unwrap_err().0, 2);
    }

    #[test]
    fn the_command_names_every_range_and_the_target() {
        assert_eq!(
            migrateslots_command("abc", &[(0, 99), (7, 7)]).join(" "),
            "CLUSTER MIGRATESLOTS SLOTSRANGE 0 99 7 7 NODE abc"
        );
        assert_eq!(ranges_text(&[(0, 99), (7, 7)]), "0-99 7");
    }
}
