//! Observing what the agents run and planning what apply would change.

use std::fmt;

use futures::future::join_all;

use crate::Error;
use crate::client::{InstanceState, InstanceStatus, PutOutcome, RedisMode, Reply};
use crate::cluster::{Observation, assess, parse_nodes};
use crate::fleet::{Deployment, Fleet, Target, members};

/// What one target looks like right now.
pub struct TargetState {
    pub status: Option<InstanceStatus>,
    /// What sending the spec would do (a dry run: nothing is written).
    pub put: PutOutcome,
    pub cluster: Option<Observation>,
    /// The live cluster-node-timeout, when it differs from the spec (left
    /// short by an interrupted formation).
    pub node_timeout_drift: Option<u32>,
}

/// What the agents report, against the inventory.
pub struct Observed {
    pub targets: Vec<TargetState>,
    /// The sentinels' states, in [`Deployment::sentinels`] order.
    pub sentinels: Vec<TargetState>,
    /// What keeps the sentinels from guarding the replication's master.
    pub sentinel_problems: Vec<String>,
    /// Instances of this deployment the agents run that the inventory no
    /// longer lists ("host:instance").
    pub orphans: Vec<String>,
    /// Per host: whether this run acts on it (in `--limit` and its agent
    /// answered). Instances of other hosts are observed, not planned for.
    pub acting: Vec<bool>,
    /// The hosts not acted on, and why.
    pub skipped: Vec<Skipped>,
}

/// A host a command leaves alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub host: String,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    NotInLimit,
    /// The agent's dial error.
    Unreachable(String),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            SkipReason::NotInLimit => write!(f, "{}: skipped (not in --limit)", self.host),
            SkipReason::Unreachable(e) => {
                write!(f, "{}: skipped (agent unreachable: {e})", self.host)
            }
        }
    }
}

/// Pure: the hosts acted on (in the limit and reachable) and the others
/// with their reason.
pub fn scope(
    host_names: &[String],
    in_limit: &[bool],
    dial_errors: &[Option<String>],
) -> (Vec<bool>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let acting = host_names
        .iter()
        .zip(in_limit.iter().zip(dial_errors))
        .map(|(host, (&picked, error))| {
            let reason = match (picked, error) {
                (false, _) => SkipReason::NotInLimit,
                (true, Some(e)) => SkipReason::Unreachable(e.clone()),
                (true, None) => return true,
            };
            skipped.push(Skipped {
                host: host.clone(),
                reason,
            });
            false
        })
        .collect();
    (acting, skipped)
}

/// Asks the agents of the hosts in `in_limit`, in parallel, for their
/// instances and what the specs would change, and every running node's
/// view of the cluster (the view of a node whose agent is unreachable is
/// pieced together from the others').
pub async fn observe(
    fleet: &Fleet,
    targets: &[Target],
    sentinels: &[Target],
    deployment: &str,
    host_names: &[String],
    in_limit: &[bool],
) -> Result<Observed, Error> {
    let dial_errors: Vec<Option<String>> = (0..host_names.len())
        .map(|h| fleet.agent_error(h).map(str::to_owned))
        .collect();
    let (acting, skipped) = scope(host_names, in_limit, &dial_errors);
    let all: Vec<&Target> = targets.iter().chain(sentinels).collect();
    let hosts: Vec<usize> = {
        let mut h: Vec<usize> = all.iter().map(|t| t.host).filter(|&h| acting[h]).collect();
        h.sort_unstable();
        h.dedup();
        h
    };
    let acting = &acting;
    let read = |h: usize| {
        fleet
            .agent(h)
            .map(|a| a.with_deadline(crate::client::READ_TIMEOUT))
    };
    let lists = join_all(hosts.iter().map(|&h| async move {
        let list = read(h)?.list().await?;
        Ok::<_, Error>((h, list))
    }));
    let puts = join_all(all.iter().map(|t| async move {
        if !acting[t.host] {
            return Ok(PutOutcome {
                changed: false,
                restart_needed: false,
            });
        }
        read(t.host)?.put_instance(&t.spec, true).await
    }));
    let clusters = join_all(targets.iter().map(|t| observe_node(fleet, t)));
    let master_name = sentinels
        .first()
        .and_then(|s| s.spec.sentinel.as_ref())
        .map(|s| s.master_name.clone())
        .unwrap_or_default();
    let views = crate::sentinel::views(fleet, sentinels, &master_name);
    let peer_lists = crate::sentinel::peer_lists(fleet, sentinels, &master_name);
    let (lists, puts, clusters, views, peer_lists) =
        futures::join!(lists, puts, clusters, views, peer_lists);
    // A sentinel behind an unreachable agent that the other sentinels see
    // up is not something to repair (nor could it be).
    let vouched: Vec<bool> = (0..sentinels.len())
        .map(|i| {
            matches!(views[i], crate::sentinel::Seen::Unseen)
                && !fleet.reachable(sentinels[i].host)
                && crate::sentinel::vouched(sentinels, &peer_lists, i)
        })
        .collect();
    let lists = lists.into_iter().collect::<Result<Vec<_>, Error>>()?;
    let orphans = lists
        .iter()
        .flat_map(|(h, list)| {
            list.iter()
                .filter(|s| s.deployment == deployment)
                .filter(|s| !all.iter().any(|t| t.host == *h && t.instance == s.name))
                .map(|s| format!("{}:{} ({})", host_names[*h], s.name, s.state.as_str()))
        })
        .collect();
    let mut out = Vec::with_capacity(all.len());
    let own: Vec<Option<Observation>> = clusters
        .iter()
        .map(|c| c.as_ref().map(|(o, _)| o.clone()))
        .collect();
    let judged = fleet.with_hearsay(targets, own);
    let clusters = clusters
        .into_iter()
        .zip(judged)
        .map(|(c, j)| Some(c.or(j.map(|o| (o, None)))))
        .chain(sentinels.iter().map(|_| None));
    for ((t, put), cluster) in all.iter().zip(puts).zip(clusters) {
        let status = lists
            .iter()
            .find(|(h, _)| *h == t.host)
            .and_then(|(_, l)| l.iter().find(|s| s.name == t.instance))
            .cloned();
        // A host not acted on has no list: take its nodes as they answer.
        let running = !acting[t.host]
            || status
                .as_ref()
                .is_some_and(|s| s.state == InstanceState::Running);
        let (cluster, drift) = match cluster.flatten() {
            Some((obs, timeout)) if running => (
                Some(obs),
                timeout.filter(|&v| v != t.spec.cluster_node_timeout_ms),
            ),
            _ => (None, None),
        };
        out.push(TargetState {
            status,
            put: put?,
            cluster,
            node_timeout_drift: drift,
        });
    }
    let sentinel_states = out.split_off(targets.len());
    let observed: Vec<Option<Observation>> = out.iter().map(|s| s.cluster.clone()).collect();
    let master = crate::fleet::followed_master(targets, &observed);
    let sentinel_problems = if sentinels.is_empty() {
        Vec::new()
    } else {
        crate::sentinel::problems_except(
            sentinels,
            &views,
            master,
            targets.len().saturating_sub(1) as u32,
            &vouched,
        )
    };
    Ok(Observed {
        targets: out,
        sentinels: sentinel_states,
        sentinel_problems,
        orphans,
        acting: acting.clone(),
        skipped,
    })
}

/// What INFO replication says: role, master address, link.
pub struct ReplicationInfo {
    pub role_master: Option<bool>,
    pub master_addr: Option<(std::net::IpAddr, u16)>,
    pub link_up: Option<bool>,
    pub connected_replicas: Option<u32>,
    /// `slaveN:ip=...,port=...,state=online` lines.
    pub replicas_online: Vec<(std::net::IpAddr, u16)>,
}

pub fn parse_replication(info: &str) -> ReplicationInfo {
    let r = paddock_knowledge::info::Replication::parse(info);
    ReplicationInfo {
        role_master: r
            .role
            .map(|role| role == paddock_knowledge::info::InfoRole::Master),
        master_addr: r.master.map(|a| (a.ip, a.port)),
        link_up: r.link_up,
        connected_replicas: r.connected_replicas,
        replicas_online: r.replicas_online().iter().map(|a| (a.ip, a.port)).collect(),
    }
}

/// One node's view: for a cluster, CLUSTER NODES, CLUSTER INFO and the live
/// node timeout; for both modes, INFO replication. None when it does not
/// answer.
pub async fn observe_node(fleet: &Fleet, t: &Target) -> Option<(Observation, Option<u32>)> {
    if t.spec.mode == crate::client::RedisMode::Standalone {
        let replies = fleet.read(t, &[&["INFO", "replication"]]).await.ok()?;
        let repl = parse_replication(&replies.first()?.text()?);
        return Some((
            Observation {
                nodes: Vec::new(),
                state_ok: true,
                link_up: repl.link_up,
                role_master: repl.role_master,
                master_addr: repl.master_addr,
                replicas_online: repl.replicas_online,
            },
            None,
        ));
    }
    let replies = fleet
        .read(
            t,
            &[
                &["CLUSTER", "NODES"],
                &["CLUSTER", "INFO"],
                &["CONFIG", "GET", "cluster-node-timeout"],
                &["INFO", "replication"],
            ],
        )
        .await
        .ok()?;
    let nodes = parse_nodes(&replies.first()?.text()?);
    let state_ok = replies
        .get(1)
        .and_then(Reply::text)
        .is_some_and(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"));
    let timeout = match replies.get(2) {
        Some(Reply::Array(kv)) => kv.get(1).and_then(Reply::text).and_then(|v| v.parse().ok()),
        _ => None,
    };
    let repl = parse_replication(&replies.get(3).and_then(Reply::text).unwrap_or_default());
    Some((
        Observation {
            nodes,
            state_ok,
            link_up: repl.link_up,
            role_master: repl.role_master,
            master_addr: repl.master_addr,
            replicas_online: repl.replicas_online,
        },
        timeout,
    ))
}

/// A `key:value` field of INFO output.
pub fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(str::to_owned)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create {
        target: String,
    },
    Update {
        target: String,
        restart: bool,
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
    Cluster {
        problems: Vec<String>,
    },
    Sentinels {
        problems: Vec<String>,
    },
    /// The running cluster's slots are laid out for another number of
    /// masters: apply refuses (see [`crate::cluster::reshard_needed`]).
    Reshard {
        serving: u32,
        wanted: u32,
    },
    /// An instance of this deployment that the inventory does not list.
    Orphan {
        target: String,
    },
    /// The host has no redis-server; its agent installs Debian's package.
    InstallRedis {
        host: String,
    },
    /// Something apply refuses until the operator fixes it.
    Refused {
        problem: String,
    },
    /// Masters piled on a host: coordinated failovers spread them again.
    Rebalance {
        problems: Vec<crate::balance::Problem>,
        moves: Vec<crate::balance::Move>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub deployment: String,
    pub summary: String,
    pub changes: Vec<Change>,
    /// Hosts left alone (`--limit`, unreachable agents): nothing is
    /// planned for their instances.
    pub skipped: Vec<Skipped>,
    /// Risks no change can remove (the placement allows no better).
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

pub fn make_plan(
    deployment: &Deployment,
    targets: &[Target],
    sentinels: &[Target],
    observed: &Observed,
) -> Plan {
    let states = &observed.targets;
    let sentinel_problems = &observed.sentinel_problems;
    let skipped = observed.skipped.clone();
    let whole = observed.acting.iter().all(|&a| a);
    let mut changes: Vec<Change> = reshard(deployment, observed)
        .map(|r| Change::Reshard {
            serving: r.serving,
            wanted: r.wanted,
        })
        .into_iter()
        .collect();
    changes.extend(
        observed
            .orphans
            .iter()
            .map(|o| Change::Orphan { target: o.clone() }),
    );
    let every = targets
        .iter()
        .zip(states)
        .chain(sentinels.iter().zip(&observed.sentinels));
    for (t, s) in every.filter(|(t, _)| observed.acting[t.host]) {
        let target = t.label();
        match &s.status {
            None => changes.push(Change::Create {
                target: target.clone(),
            }),
            Some(_) if s.put.changed || s.put.restart_needed => changes.push(Change::Update {
                target: target.clone(),
                restart: s.put.restart_needed,
            }),
            Some(_) => {}
        }
        let state = s
            .status
            .as_ref()
            .map_or(InstanceState::Stopped, |st| st.state);
        if state != InstanceState::Running {
            changes.push(Change::Start {
                target: target.clone(),
                state: state.as_str().to_owned(),
            });
        }
        if let Some(live) = s.node_timeout_drift {
            changes.push(Change::RestoreNodeTimeout {
                target,
                live,
                want: t.spec.cluster_node_timeout_ms,
            });
        }
    }
    let observed: Vec<Option<Observation>> = states.iter().map(|s| s.cluster.clone()).collect();
    let problems = assess(&members(targets), &observed);
    if !problems.is_empty() {
        changes.push(Change::Cluster { problems });
    }
    // Sentinels are judged once the replication they watch is right.
    if changes.is_empty() && !sentinel_problems.is_empty() {
        changes.push(Change::Sentinels {
            problems: sentinel_problems.clone(),
        });
    }
    let mut warnings = Vec::new();
    // Moving masters may touch any host: only with every host in scope.
    if targets.iter().any(|t| t.spec.mode == RedisMode::Cluster) && whole {
        let balance = crate::balance::judge(&crate::balance::roles(targets, &observed));
        if !balance.moves.is_empty() {
            changes.push(Change::Rebalance {
                problems: balance.fixable().into_iter().cloned().collect(),
                moves: balance.moves.clone(),
            });
        }
        warnings = balance.warnings();
        warnings.extend(
            balance
                .blocked()
                .iter()
                .map(|p| format!("{p}; {}", crate::balance::BLOCKED)),
        );
    }
    // apply refuses before doing any of the rest: show only why.
    if changes
        .first()
        .is_some_and(|c| matches!(c, Change::Reshard { .. }))
    {
        changes.retain(|c| matches!(c, Change::Reshard { .. } | Change::Orphan { .. }));
    }
    let inv = &deployment.inventory;
    Plan {
        deployment: inv.deployment.name.clone(),
        summary: format!(
            "{} ({}: {} masters x {} replicas, {} instances on {} hosts)",
            inv.deployment.name,
            inv.deployment.topology,
            inv.deployment.masters,
            inv.deployment.replicas_per_master,
            targets.len() + sentinels.len(),
            inv.hosts.len()
        ),
        changes,
        skipped,
        warnings,
    }
}

/// Whether the running cluster serves another number of shards than the
/// inventory asks for (cluster topology only).
pub fn reshard(deployment: &Deployment, observed: &Observed) -> Option<crate::cluster::Reshard> {
    if deployment.inventory.deployment.topology != paddock_inventory::Topology::Cluster {
        return None;
    }
    let views: Vec<Option<Observation>> =
        observed.targets.iter().map(|s| s.cluster.clone()).collect();
    crate::cluster::reshard_needed(&views, deployment.inventory.deployment.masters)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Deployment {}", self.summary)?;
        for s in &self.skipped {
            writeln!(f, "  - {s}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        if self.changes.is_empty() && !self.skipped.is_empty() {
            return writeln!(
                f,
                "No changes on the hosts acted on; the deployment is healthy as far as the nodes that answer tell."
            );
        }
        if self.changes.is_empty() {
            return writeln!(
                f,
                "No changes: every instance runs its current config and the cluster is healthy."
            );
        }
        for c in &self.changes {
            match c {
                Change::Create { target } => {
                    writeln!(f, "  + {target}: create instance and write its config")?
                }
                Change::Update { target, restart } => writeln!(
                    f,
                    "  ~ {target}: update config{}",
                    if *restart { " (restart needed)" } else { "" }
                )?,
                Change::Start { target, state } => {
                    writeln!(f, "  > {target}: start (now {state})")?
                }
                Change::Orphan { target } => writeln!(
                    f,
                    "  ! {target}: belongs to this deployment but is not in the inventory; apply refuses until it is listed again or removed (`paddock prune`)"
                )?,
                Change::Reshard { serving, wanted } => writeln!(
                    f,
                    "  ! cluster: serves its slots with {serving} master(s), the inventory asks for {wanted}; apply refuses: changing the number of masters moves slots, which paddock does not do yet"
                )?,
                Change::InstallRedis { host } => {
                    writeln!(f, "  + {host}: install redis-server (apt-get, no upgrade)")?
                }
                Change::Refused { problem } => {
                    writeln!(f, "  ! {problem}; apply refuses until it is fixed")?
                }
                Change::RestoreNodeTimeout { target, live, want } => writeln!(
                    f,
                    "  ~ {target}: cluster-node-timeout is {live} ms live, restore {want} ms"
                )?,
                Change::Sentinels { problems } => {
                    writeln!(f, "  * sentinels: bring up or repair; now:")?;
                    for p in problems.iter().take(12) {
                        writeln!(f, "      - {p}")?;
                    }
                }
                Change::Rebalance { problems, moves } => {
                    writeln!(f, "  * masters: spread them again across the hosts; now:")?;
                    for p in problems {
                        writeln!(f, "      - {p}")?;
                    }
                    for m in moves {
                        writeln!(f, "      -> {m}")?;
                    }
                }
                Change::Cluster { problems } => {
                    writeln!(f, "  * cluster: form or repair; now:")?;
                    for p in problems.iter().take(12) {
                        writeln!(f, "      - {p}")?;
                    }
                    if problems.len() > 12 {
                        writeln!(f, "      ... and {} more", problems.len() - 12)?;
                    }
                }
            }
        }
        writeln!(f, "{} change(s).", self.changes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_acts_on_limited_reachable_hosts_and_names_the_others() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let down = Some("refused".to_owned());
        // (in limit, dial errors, acting, skipped as printed)
        let table = [
            (
                [true, true, true],
                [None, None, None],
                [true, true, true],
                vec![],
            ),
            (
                [true, true, true],
                [None, down.clone(), None],
                [true, false, true],
                vec!["b: skipped (agent unreachable: refused)"],
            ),
            (
                [true, false, false],
                [None, None, down.clone()],
                [true, false, false],
                vec!["b: skipped (not in --limit)", "c: skipped (not in --limit)"],
            ),
        ];
        for (limit, errors, acting, skipped) in table {
            let (a, s) = scope(&names, &limit, &errors);
            assert_eq!(a, acting);
            let s: Vec<String> = s.iter().map(ToString::to_string).collect();
            assert_eq!(s, skipped);
        }
    }
}
