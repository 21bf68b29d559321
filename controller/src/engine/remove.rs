//! Removing drained nodes from the cluster: checked empty, stopped, then
//! forgotten by every other node at once, so none re-learns them from
//! another's gossip (Redis bans a forgotten id for 60 s on the node that
//! forgot it). Their data stays on disk until `paddock prune --purge-data`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::cluster::Observation;
use crate::engine::observe::observe_node;
use crate::engine::scene::Scene;
use crate::fleet::Target;

/// Forgetting must end well inside Redis's 60 s ban.
const FORGET_WITHIN: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(50);
/// How long the other nodes' views may take to stop assigning a drained
/// node slots (gossip after the last SETSLOT NODE).
const SETTLE_WITHIN: Duration = Duration::from_secs(15);
/// The same FORGET is sent again to a node at most this often.
const RESEND: Duration = Duration::from_secs(1);

/// Removes `gone` (each instance with its node id): refuses if any still
/// serves a slot (in its own view or another's), stops them all, then has
/// every target forget them, until no target lists them.
pub async fn remove_nodes(scene: &Scene<'_>, gone: &[(Target, String)]) -> Result<(), Error> {
    let own = checked_empty(scene, gone).await?;
    // Those nobody follows first: a node stopping waits for the replicas
    // that follow it to catch up (Redis's shutdown-timeout), which a
    // replica stopping beside it never does. (A drained master may be a
    // replica itself by now, with its own replica following it.)
    let followed = |id: &str| {
        own.iter()
            .flatten()
            .filter_map(|(o, _)| o.myself())
            .any(|m| m.master_id.as_deref() == Some(id))
    };
    for later in [false, true] {
        let stops = (gone.iter().zip(&own))
            .filter(|((_, id), _)| followed(id) == later)
            .map(|((t, _), _)| async move {
                scene
                    .progress
                    .step(format!("{}: stopping (it leaves the cluster)", t.label()));
                scene.fleet.agent(t.host)?.stop(&t.instance).await
            });
        join_all(stops)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
    }
    let ids: Vec<&str> = gone.iter().map(|(_, id)| id.as_str()).collect();
    scene.progress.step(format!(
        "forgetting {} node(s) on every node (CLUSTER FORGET)",
        ids.len()
    ));
    forget_everywhere(scene, &ids).await
}

/// The leaving nodes' own views, once no node serves or is assigned a
/// slot of theirs. The last SETSLOT NODE of a move reaches the masters
/// directly but their replicas by gossip, so a view still assigning a
/// slot to a drained node is waited for (bounded by [`SETTLE_WITHIN`]);
/// a leaving node that serves or has open slots itself is refused at once.
async fn checked_empty(
    scene: &Scene<'_>,
    gone: &[(Target, String)],
) -> Result<Vec<Option<(Observation, Option<u32>)>>, Error> {
    let started = Instant::now();
    loop {
        let own = join_all(gone.iter().map(|(t, _)| observe_node(scene.fleet, t))).await;
        let views = crate::form::observe_all(scene.fleet, scene.targets).await;
        let mut waiting = None;
        for ((t, id), o) in gone.iter().zip(&own) {
            let mine = o.as_ref().map(|(o, _)| o);
            let refused = |why: String| {
                Error::NotConverged(format!(
                    "{} cannot be removed: {why}; nothing was stopped",
                    t.label()
                ))
            };
            if let Some(why) = still_serving(id, mine, &[]) {
                return Err(refused(why));
            }
            if let Some(why) = still_serving(id, None, &views) {
                if started.elapsed() > SETTLE_WITHIN {
                    return Err(refused(format!(
                        "{why} after {} s",
                        SETTLE_WITHIN.as_secs()
                    )));
                }
                waiting = Some(why);
            }
        }
        if waiting.is_none() {
            return Ok(own);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Pure: why node `id` must not be removed (it serves or is migrating
/// slots, by its own view or any other's), or None.
pub fn still_serving(
    id: &str,
    own: Option<&Observation>,
    others: &[Option<Observation>],
) -> Option<String> {
    if let Some(me) = own.and_then(Observation::myself) {
        if me.slot_count() > 0 {
            return Some(format!("it still serves {} slot(s)", me.slot_count()));
        }
        if !me.open_slots.is_empty() {
            let open: Vec<String> = me.open_slots.iter().map(ToString::to_string).collect();
            return Some(format!("it has open slots {}", open.join(" ")));
        }
    }
    others
        .iter()
        .flatten()
        .flat_map(|o| &o.nodes)
        .find(|n| n.id == id && n.slot_count() > 0)
        .map(|n| format!("a node still assigns it {} slot(s)", n.slot_count()))
}

/// CLUSTER FORGET of `ids` on every target that still lists one, all at
/// once, repeated until none does.
async fn forget_everywhere(scene: &Scene<'_>, ids: &[&str]) -> Result<(), Error> {
    let started = Instant::now();
    let mut sent: HashMap<(usize, String), Instant> = HashMap::new();
    let mut errors: Vec<String> = Vec::new();
    loop {
        let views = crate::form::observe_all(scene.fleet, scene.targets).await;
        let due = forgets_due(&views, ids);
        if due.is_empty() {
            scene.progress.step("every node forgot the removed node(s)");
            return Ok(());
        }
        if started.elapsed() > FORGET_WITHIN {
            return Err(Error::NotConverged(format!(
                "removed node(s) still known after {} s: {}{}",
                FORGET_WITHIN.as_secs(),
                due.iter()
                    .map(|(i, id)| format!("{} knows {id}", scene.targets[*i].label()))
                    .collect::<Vec<_>>()
                    .join(", "),
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" (last errors: {})", errors.join("; "))
                }
            )));
        }
        let due: Vec<(usize, String)> = due
            .into_iter()
            .filter(|(i, id)| {
                sent.get(&(*i, id.clone()))
                    .is_none_or(|t| t.elapsed() >= RESEND)
            })
            .collect();
        for (i, id) in &due {
            sent.insert((*i, id.clone()), Instant::now());
        }
        let calls = due.into_iter().map(|(i, id)| {
            async move {
                let t = &scene.targets[i];
                let r = scene.fleet.redis(t, &[&["CLUSTER", "FORGET", &id]]).await?;
                // Kept for the message only: an error ("Unknown node":
                // forgotten meanwhile) is judged by the next views.
                Ok::<_, Error>(
                    r[0].error()
                        .map(|e| format!("{}: CLUSTER FORGET {id}: {e}", t.label())),
                )
            }
        });
        for r in join_all(calls).await {
            if let Some(e) = r? {
                errors.push(e);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Pure: (target, id) for every target whose view still lists a removed id.
pub fn forgets_due(views: &[Option<Observation>], ids: &[&str]) -> Vec<(usize, String)> {
    views
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.as_ref().map(|o| (i, o)))
        .flat_map(|(i, o)| {
            o.nodes
                .iter()
                .filter(|n| !n.is_myself() && ids.contains(&n.id.as_str()))
                .map(move |n| (i, n.id.clone()))
        })
        .collect()
}
