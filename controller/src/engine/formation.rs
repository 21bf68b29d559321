//! Formation's steps: what the nodes' views call for (MEET, FORGET,
//! FAILOVER FORCE of a lost master's heir, REPLICATE), decided by one pure
//! function on every poll of [`crate::form`]; the poll paces repeats and
//! sends them.

use std::time::Duration;

use crate::cluster::{Observation, shard_master};
use crate::fleet::{Target, members};

/// One formation action. Targets by index into the deployment's targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormStep {
    /// `from` introduces itself to `to` (CLUSTER MEET to's address).
    Meet { from: usize, to: usize },
    /// `at` forgets an identity no target has any more.
    Forget { at: usize, id: String },
    /// The replica of a shard whose master is gone for good takes over.
    Promote { shard: u32, heir: usize },
    /// `replica` follows its shard's master.
    Replicate { replica: usize, master_id: String },
}

impl FormStep {
    /// The node the command is sent to.
    pub fn node(&self) -> usize {
        match self {
            FormStep::Meet { from, .. } => *from,
            FormStep::Forget { at, .. } => *at,
            FormStep::Promote { heir, .. } => *heir,
            FormStep::Replicate { replica, .. } => *replica,
        }
    }

    /// What paces repeats of the same step.
    pub fn key(&self) -> (usize, String) {
        let what = match self {
            FormStep::Meet { to, .. } => format!("meet {to}"),
            FormStep::Forget { id, .. } => format!("forget {id}"),
            FormStep::Promote { .. } => "failover".to_owned(),
            FormStep::Replicate { master_id, .. } => format!("replicate {master_id}"),
        };
        (self.node(), what)
    }

    /// How long before the same step is sent again: a failover needs the
    /// majority's votes, which take longer than a MEET.
    pub fn retry_every(&self, base: Duration) -> Duration {
        match self {
            FormStep::Promote { .. } => Duration::from_secs(2),
            _ => base,
        }
    }

    pub fn argv(&self, targets: &[Target]) -> Vec<String> {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match self {
            FormStep::Meet { to, .. } => {
                let t = &targets[*to];
                words(&["CLUSTER", "MEET", &t.ip.to_string(), &t.port.to_string()])
            }
            FormStep::Forget { id, .. } => words(&["CLUSTER", "FORGET", id]),
            FormStep::Promote { .. } => words(&["CLUSTER", "FAILOVER", "FORCE"]),
            FormStep::Replicate { master_id, .. } => words(&["CLUSTER", "REPLICATE", master_id]),
        }
    }
}

/// Pure: every step the views call for now (before pacing), per node in
/// target order: its MEETs and FORGETs, then promotions, then REPLICATEs.
/// `heir_of` names the replica to promote in a shard whose master is gone
/// for good ([`crate::form::heir_of_lost_master`]).
pub fn formation_steps(
    targets: &[Target],
    masters: u32,
    observed: &[Option<Observation>],
    heir_of: impl Fn(u32) -> Option<usize>,
) -> Vec<FormStep> {
    let mut steps = introductions(targets, observed);
    let members = members(targets);
    // A shard whose master is gone for good (replaced machine, lost data):
    // its replica takes over, with the majority's agreement.
    for shard in (0..masters).filter(|&s| shard_master(&members, observed, s).is_none()) {
        if let Some(heir) = heir_of(shard) {
            steps.push(FormStep::Promote { shard, heir });
        }
    }
    // REPLICATE as soon as the replica itself knows its shard's master
    // (earlier it answers "ERR Unknown node").
    for (i, t) in targets.iter().enumerate() {
        let Some(me) = observed[i].as_ref().and_then(Observation::myself) else {
            continue;
        };
        // A new master of a change of shape serves no slot yet: its shard
        // follows it already (slots are moved to it afterwards); never in a
        // shard whose replica is a lost master's heir.
        let Some(master) = shard_master(&members, observed, t.shard).or_else(|| {
            heir_of(t.shard)
                .is_none()
                .then(|| empty_master(targets, observed, t.shard))
                .flatten()
        }) else {
            continue;
        };
        if me.id == master.id
            || me.master_id.as_deref() == Some(master.id.as_str())
            || me.slot_count() > 0
        {
            // A second claimant of the shard's slots is an old master
            // that has not heard of the failover yet: Redis demotes it.
            continue;
        }
        let knows_master = observed[i]
            .as_ref()
            .and_then(|o| o.nodes.iter().find(|n| n.id == master.id))
            .is_some_and(|n| n.is_settled());
        if knows_master {
            steps.push(FormStep::Replicate {
                replica: i,
                master_id: master.id.clone(),
            });
        }
    }
    steps
}

/// The target placed master of `shard`, running as a master without slots.
fn empty_master<'a>(
    targets: &[Target],
    observed: &'a [Option<Observation>],
    shard: u32,
) -> Option<&'a crate::cluster::NodeLine> {
    let i = targets
        .iter()
        .position(|t| t.shard == shard && t.placed_role == paddock_inventory::Role::Master)?;
    observed[i]
        .as_ref()?
        .myself()
        .filter(|m| m.is_master() && m.slot_count() == 0)
}

/// MEETs and FORGETs, per node.
fn introductions(targets: &[Target], observed: &[Option<Observation>]) -> Vec<FormStep> {
    let members = members(targets);
    let ids: Vec<Option<&str>> = observed
        .iter()
        .map(|o| {
            o.as_ref()
                .and_then(Observation::myself)
                .map(|m| m.id.as_str())
        })
        .collect();
    let all_answered = ids.iter().all(Option::is_some);
    // Masters still followed by a replica must stay known until their
    // replica took over, or the other masters could not vote for it.
    let followed: Vec<&str> = observed
        .iter()
        .flatten()
        .filter_map(|p| p.myself()?.master_id.as_deref())
        .collect();
    let knows = |a: &Observation, id: &str| a.nodes.iter().any(|n| n.id == id);
    let mut steps = Vec::new();
    for i in 0..targets.len() {
        let Some(o) = &observed[i] else { continue };
        // MEET, by identity: a peer counts as known only under the id it
        // has now, so a node that came back with a new id is introduced again.
        for j in (i + 1)..targets.len() {
            let Some(peer_id) = ids[j] else { continue };
            let back = observed[j]
                .as_ref()
                .is_some_and(|p| ids[i].is_some_and(|id| knows(p, id)));
            let handshaking = o
                .find(targets[j].ip, targets[j].port)
                .is_some_and(|n| n.has_flag("handshake"));
            if !knows(o, peer_id) && !back && !handshaking {
                steps.push(FormStep::Meet { from: i, to: j });
            }
        }
        // FORGET identities no target has any more (a replaced node's old
        // id), once they have lost their address or are failed, and no
        // longer matter (no slots, no replica). Only when every target
        // answered: a node whose agent is unreachable right now still has
        // its id, and forgetting it would ban it from the cluster for 60 s.
        for n in &o.nodes {
            let gone = all_answered
                && !ids.iter().flatten().any(|id| *id == n.id)
                && n.slot_count() == 0
                && !followed.contains(&n.id.as_str());
            let stale = n.has_flag("noaddr")
                || n.has_flag("fail")
                || members.iter().any(|m| n.addr_is(m.ip, m.port));
            if gone && stale && !n.is_myself() && !n.has_flag("handshake") {
                steps.push(FormStep::Forget {
                    at: i,
                    id: n.id.clone(),
                });
            }
        }
    }
    steps
}
