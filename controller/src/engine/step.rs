//! The typed plan: the steps apply carries out, what it refuses, and what
//! it leaves alone. Printed by `paddock plan`, serialized by `--json`.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::client::KeyChange;

pub use crate::engine::observe::{SkipReason, Skipped};

/// One thing apply does. Targets are named "host:instance".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The deployment's Redis password file does not exist yet (nothing
    /// runs anywhere): apply generates it.
    CreatePassword {
        path: String,
    },
    /// ACL users declared without a password file yet.
    CreateUserPasswords {
        users: Vec<String>,
    },
    /// The host has no redis-server; its agent installs Debian's package.
    InstallRedis {
        host: String,
    },
    /// A shard whose master is gone for good: its replica takes over before
    /// anything starts at the old master's address.
    PromoteHeir {
        shard: u32,
        target: String,
    },
    /// Write the instance's config (`create`: the instance is new).
    PutConfig {
        target: String,
        create: bool,
        restart: bool,
        /// What changes, key by key (empty for a new instance).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keys: Vec<KeyChange>,
    },
    /// Settings the running process takes without a restart, stored with
    /// the config: a sentinel's with SENTINEL SET, a redis-server's with
    /// CONFIG SET and ACL SETUSER / DELUSER.
    SetLive {
        target: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keys: Vec<KeyChange>,
    },
    /// Restart a running instance for its new config.
    Restart {
        target: String,
        handover: Handover,
    },
    Start {
        target: String,
        state: String,
    },
    RestoreNodeTimeout {
        target: String,
        live: u32,
        want: u32,
    },
    /// Form or repair the cluster (or replication) from what the nodes
    /// report: slots, MEET, REPLICATE, FORGET.
    FormCluster {
        problems: Vec<String>,
    },
    /// Coordinated CLUSTER FAILOVERs that spread the masters again.
    Rebalance {
        problems: Vec<String>,
        moves: Vec<String>,
    },
    /// Bring the sentinels to guard the master (seed, start, credentials).
    RepairSentinels {
        problems: Vec<String>,
    },
    /// Slots moved between masters key by key (SETSLOT, MIGRATE),
    /// verified batch by batch. Carried out by `engine::migrate`.
    MoveSlots {
        moves: Vec<PlannedMove>,
    },
    /// Open (importing/migrating) or unserved slots finished, rolled back
    /// or covered, from what the nodes report (`paddock fix`).
    FixSlots {
        fixes: Vec<String>,
    },
    /// An instance a change of shape removes, serving no slot (drained by
    /// the `MoveSlots` before it): stopped, then forgotten by every other
    /// node at once (CLUSTER FORGET, within Redis's 60 s ban); its data
    /// stays on disk until `paddock prune --purge-data`.
    RemoveNode {
        target: String,
        node_id: String,
    },
    /// A change of shape removes a master's host: its replica that stays
    /// takes over first (coordinated CLUSTER FAILOVER, no write lost).
    TakeOver {
        target: String,
        from: String,
    },
}

/// One move of slots from a master to another, as planned and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    /// Source master, "host:instance".
    pub from: String,
    /// Target master, "host:instance".
    pub to: String,
    pub from_id: String,
    pub to_id: String,
    /// Inclusive slot ranges.
    pub ranges: Vec<(u16, u16)>,
    /// Estimated from the source's key count and memory.
    pub keys: u64,
    pub bytes: u64,
    /// Estimated duration; None when no rate is known.
    pub millis: Option<u64>,
}

impl PlannedMove {
    pub fn slots(&self) -> u32 {
        self.ranges
            .iter()
            .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
            .sum()
    }
}

/// What restarting an instance implies for its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Handover {
    /// A replica (or a master without slots): restarted as it is.
    None,
    /// A cluster master hands its slots to this replica first.
    ClusterFailover { to: String },
    /// A replication master hands over with a coordinated switchover.
    Switchover,
    /// A master without an in-sync replica: its shard is down meanwhile.
    InPlace,
    /// The cluster is not healthy: instances restart together, then the
    /// cluster is formed again.
    Together,
}

/// Why apply refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// An instance of this deployment that the inventory does not list.
    Orphan { target: String },
    /// Instances run but the password file is missing: a new password
    /// would lock every client out.
    PasswordMissing { path: String },
    /// A host cannot run what is placed on it.
    Host { problem: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub deployment: String,
    pub summary: String,
    pub steps: Vec<Step>,
    pub refusals: Vec<Refusal>,
    /// Hosts left alone (`--limit`, unreachable agents): nothing is
    /// planned for their instances.
    pub skipped: Vec<Skipped>,
    /// Changes the deployment needs that this run leaves undone, and why.
    pub held_back: Vec<String>,
    /// Risks no change can remove (the placement allows no better).
    pub warnings: Vec<String>,
    /// The slot moves apply's next round will plan once the masters this
    /// plan creates have joined (their node ids do not exist yet): shown,
    /// not steps of this round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_joining: Vec<PlannedMove>,
}

impl Plan {
    /// Nothing to do and nothing refused.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.refusals.is_empty()
    }
    /// Changes shown: steps and refusals.
    pub fn len(&self) -> usize {
        self.steps.len() + self.refusals.len()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreatePassword { path } => {
                write!(
                    f,
                    "  + password file {path}: create instance and write its config"
                )
            }
            Step::CreateUserPasswords { users } => write!(
                f,
                "  + ACL user password file(s): create for {}",
                users.join(", ")
            ),
            Step::InstallRedis { host } => {
                write!(f, "  + {host}: install redis-server (apt-get, no upgrade)")
            }
            Step::PromoteHeir { shard, target } => write!(
                f,
                "  * shard {shard}: its master is gone; {target} takes over (CLUSTER FAILOVER)"
            ),
            Step::PutConfig {
                target,
                create: true,
                ..
            } => write!(f, "  + {target}: create instance and write its config"),
            Step::PutConfig {
                target,
                restart,
                keys,
                ..
            } => {
                write!(
                    f,
                    "  ~ {target}: update config{}",
                    if *restart { " (restart needed)" } else { "" }
                )?;
                key_list(f, keys)
            }
            Step::SetLive { target, keys } => {
                // Only a sentinel's config has `sentinel` settings.
                let how = if keys.iter().any(|k| k.key.starts_with("sentinel ")) {
                    "SENTINEL SET"
                } else {
                    "CONFIG SET / ACL SETUSER"
                };
                write!(
                    f,
                    "  ~ {target}: update config, set live ({how}, no restart)"
                )?;
                key_list(f, keys)
            }
            Step::Restart { target, handover } => {
                write!(f, "  ~ {target}: restart for its new config")?;
                match handover {
                    Handover::None => Ok(()),
                    Handover::ClusterFailover { to } => {
                        write!(f, "; hands its slots to {to} first (CLUSTER FAILOVER)")
                    }
                    Handover::Switchover => {
                        write!(f, "; hands the master role to a replica first")
                    }
                    Handover::InPlace => write!(
                        f,
                        "; a master without an in-sync replica: its shard is down meanwhile"
                    ),
                    Handover::Together => write!(
                        f,
                        "; with the others (the cluster is not healthy), then formed again"
                    ),
                }
            }
            Step::Start { target, state } => write!(f, "  > {target}: start (now {state})"),
            Step::RestoreNodeTimeout { target, live, want } => write!(
                f,
                "  ~ {target}: cluster-node-timeout is {live} ms live, restore {want} ms"
            ),
            Step::FormCluster { problems } => {
                write!(f, "  * cluster: form or repair; now:")?;
                list(f, problems)
            }
            Step::Rebalance { problems, moves } => {
                write!(f, "  * masters: spread them again across the hosts; now:")?;
                for p in problems {
                    write!(f, "\n      - {p}")?;
                }
                for m in moves {
                    write!(f, "\n      -> {m}")?;
                }
                Ok(())
            }
            Step::RepairSentinels { problems } => {
                write!(f, "  * sentinels: bring up or repair; now:")?;
                list(f, problems)
            }
            Step::MoveSlots { moves } => {
                write!(f, "  * slots: move (SETSLOT, MIGRATE, verified)")?;
                for m in moves {
                    write!(f, "\n      -> {m}")?;
                }
                Ok(())
            }
            Step::FixSlots { fixes } => {
                write!(f, "  * slots: repair open or unserved slots")?;
                list(f, fixes)
            }
            Step::TakeOver { target, from } => write!(
                f,
                "  * {target}: takes over from {from}, which leaves (CLUSTER FAILOVER)"
            ),
            Step::RemoveNode { target, node_id } => write!(
                f,
                "  - {target}: remove from the cluster (node {}): stop it, then CLUSTER FORGET on every node; its data stays until `paddock prune --purge-data`",
                &node_id[..node_id.len().min(8)]
            ),
        }
    }
}

impl fmt::Display for PlannedMove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<(u32, u32)> = self
            .ranges
            .iter()
            .map(|(a, b)| (u32::from(*a), u32::from(*b)))
            .collect();
        write!(
            f,
            "{} slot(s) {} from {} to {}: about {} key(s), {} byte(s)",
            self.slots(),
            crate::cluster::format_ranges(&ranges),
            self.from,
            self.to,
            self.keys,
            self.bytes
        )?;
        if let Some(ms) = self.millis {
            write!(f, ", about {:.1} s", ms as f64 / 1000.0)?;
        }
        Ok(())
    }
}

/// `key: old -> new (live)`, one per line; secrets come masked.
fn key_list(f: &mut fmt::Formatter<'_>, keys: &[KeyChange]) -> fmt::Result {
    let shown = |v: &str| {
        if v.is_empty() {
            "(unset)".to_owned()
        } else {
            v.to_owned()
        }
    };
    for k in keys {
        write!(
            f,
            "\n      {}: {} -> {} ({})",
            k.key,
            shown(&k.old),
            shown(&k.new),
            if k.live {
                "set live"
            } else {
                "needs a restart"
            }
        )?;
    }
    Ok(())
}

fn list(f: &mut fmt::Formatter<'_>, problems: &[String]) -> fmt::Result {
    for p in problems.iter().take(12) {
        write!(f, "\n      - {p}")?;
    }
    if problems.len() > 12 {
        write!(f, "\n      ... and {} more", problems.len() - 12)?;
    }
    Ok(())
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Orphan { target } => write!(
                f,
                "  ! {target}: belongs to this deployment but is not in the inventory; apply refuses until it is listed again or removed (`paddock prune`)"
            ),
            Refusal::PasswordMissing { path } => write!(
                f,
                "  ! password file {path} is missing but the agents run this deployment; apply refuses: a new password would lock every client out (copy the file from the workstation that applied it)"
            ),
            Refusal::Host { problem } => {
                write!(f, "  ! {problem}; apply refuses until it is fixed")
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Deployment {}", self.summary)?;
        for s in &self.skipped {
            writeln!(f, "  - {s}")?;
        }
        for h in &self.held_back {
            writeln!(f, "  - {h}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        if self.is_empty() && !self.skipped.is_empty() {
            return writeln!(
                f,
                "No changes on the hosts acted on; the deployment is healthy as far as the nodes that answer tell."
            );
        }
        if self.is_empty() {
            return writeln!(
                f,
                "No changes: every instance runs its current config and the cluster is healthy."
            );
        }
        for r in &self.refusals {
            writeln!(f, "{r}")?;
        }
        for s in &self.steps {
            writeln!(f, "{s}")?;
        }
        if !self.after_joining.is_empty() {
            writeln!(
                f,
                "  then, once the new master(s) have joined, apply's next round moves slots (planned again from what the nodes report):"
            )?;
            for m in &self.after_joining {
                writeln!(f, "      -> {m}")?;
            }
        }
        writeln!(f, "{} change(s).", self.len())
    }
}
