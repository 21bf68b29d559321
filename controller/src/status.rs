//! `paddock status`: hosts, instances, roles, slots and link state, as a
//! table or JSON.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;

use crate::Error;
use crate::client::{InstanceState, Reply};
use crate::cluster::{Observation, assess, format_ranges, parse_nodes};
use crate::fleet::{Deployment, Fleet, Target, members};
use paddock_knowledge::info::field;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub deployment: String,
    pub topology: String,
    pub healthy: bool,
    pub problems: Vec<String>,
    /// Masters piled on a host (more than its share, or so many that its
    /// loss stops the cluster), which `apply` spreads again. Kept apart from
    /// `problems`: the cluster serves, but is not safe.
    pub balance: Vec<String>,
    /// Risks the deployment carries however it runs (the placement allows
    /// no better); they do not make it unhealthy.
    pub warnings: Vec<String>,
    pub hosts: Vec<HostStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub address: String,
    /// None when the agent answered; its error otherwise.
    pub agent_error: Option<String>,
    pub instances: Vec<InstanceView>,
}

/// Status answers within about 3 s whatever the agents do: a dial that has
/// not finished after this is an unreachable agent...
const DIAL_WITHIN: Duration = Duration::from_millis(1200);
/// ...and a call (the agent's own Redis command included: the deadline
/// travels as grpc-timeout) that has not answered after this, a silent one.
const CALL_WITHIN: Duration = Duration::from_millis(1500);

/// The state shown for an instance whose agent does not answer but which
/// the other nodes see serving.
pub const UNMANAGED: &str = "UNMANAGED";

#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub name: String,
    pub address: String,
    /// The agent's state; for an unreachable agent, "UNMANAGED" (the others
    /// see it serving) or "UNKNOWN".
    pub state: String,
    /// Role, master and slots come from the other nodes' views, not from
    /// the instance itself (it or its agent did not answer).
    pub hearsay: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// "master" or "replica", as the node itself reports.
    pub role: Option<String>,
    pub node_id: Option<String>,
    /// For a replica: the "host:instance" it replicates.
    pub master: Option<String>,
    pub slots: Option<String>,
    pub slot_count: u32,
    /// For a replica: master_link_status; for a master: connected replicas.
    pub link: Option<String>,
    pub cluster_state: Option<String>,
}

struct NodeDetails {
    obs: Observation,
    cluster_state: String,
    link: Option<String>,
}

async fn details(fleet: &Fleet, t: &Target) -> Option<NodeDetails> {
    let cluster = t.spec.mode == crate::client::RedisMode::Cluster;
    let commands: &[&[&str]] = if cluster {
        &[
            &["INFO", "replication"],
            &["CLUSTER", "NODES"],
            &["CLUSTER", "INFO"],
        ]
    } else {
        &[&["INFO", "replication"]]
    };
    let r = fleet.redis(t, commands).await.ok()?;
    let repl_text = r.first()?.text()?;
    let repl = crate::plan::parse_replication(&repl_text);
    let link = match repl.role_master {
        Some(false) => field(&repl_text, "master_link_status"),
        Some(true) => repl.connected_replicas.map(|n| format!("{n} replica(s)")),
        None => None,
    };
    let (nodes, cluster_state) = if cluster {
        let nodes = parse_nodes(&r.get(1)?.text()?);
        let info = r.get(2).and_then(Reply::text).unwrap_or_default();
        (
            nodes,
            field(&info, "cluster_state").unwrap_or_else(|| "?".into()),
        )
    } else {
        (Vec::new(), "-".to_owned())
    };
    Some(NodeDetails {
        obs: Observation {
            nodes,
            state_ok: cluster_state == "ok" || !cluster,
            link_up: repl.link_up,
            role_master: repl.role_master,
            master_addr: repl.master_addr,
            replicas_online: repl.replicas_online,
        },
        cluster_state,
        link,
    })
}

/// The deployment's status; `limit` (host names or addresses) restricts the
/// hosts shown, not the judgement (that needs every node's view).
pub async fn status(path: &Path, limit: &[String]) -> Result<Status, Error> {
    let deployment = Deployment::load(path, false)?;
    let shown = crate::fleet::limit_hosts(&deployment.inventory, limit)?;
    let fleet = Fleet::connect_within(&deployment, DIAL_WITHIN, Some(CALL_WITHIN)).await;
    let targets = deployment.targets();
    let sentinels = deployment.sentinels(deployment.placed_master());
    let lists = join_all((0..deployment.inventory.hosts.len()).map(|h| {
        let fleet = &fleet;
        async move {
            match fleet.agent(h) {
                Ok(a) => a.list().await.map_err(|e| e.to_string()),
                Err(_) => Err(fleet.agent_error(h).unwrap_or("unreachable").to_owned()),
            }
        }
    }));
    let node_details = join_all(targets.iter().map(|t| details(&fleet, t)));
    let name = &deployment.inventory.deployment.name;
    let views = crate::sentinel::views(&fleet, &sentinels, name);
    let peer_lists = crate::sentinel::peer_lists(&fleet, &sentinels, name);
    let (lists, mut node_details, views, peer_lists) =
        futures::join!(lists, node_details, views, peer_lists);
    // A sentinel behind an unreachable agent that the others see up.
    let vouched: Vec<bool> = (0..sentinels.len())
        .map(|i| {
            matches!(views[i], crate::sentinel::Seen::Unseen)
                && lists[sentinels[i].host].is_err()
                && crate::sentinel::vouched(&sentinels, &peer_lists, i)
        })
        .collect();
    // A node whose agent did not answer is judged from what the others say
    // of it; one whose agent answers but whose Redis does not is reported
    // as not answering (the agent is there to tell).
    let own: Vec<Option<Observation>> = node_details
        .iter()
        .map(|d| d.as_ref().map(|d| d.obs.clone()))
        .collect();
    let all = members(&targets);
    for (i, d) in node_details.iter_mut().enumerate() {
        if d.is_none() && lists[targets[i].host].is_err() {
            *d = crate::cluster::hearsay(&all, &own, i).map(|obs| NodeDetails {
                cluster_state: if obs.nodes.is_empty() {
                    "-".into()
                } else {
                    "?".into()
                },
                link: None,
                obs,
            });
        }
    }
    let observed: Vec<Option<Observation>> = node_details
        .iter()
        .map(|d| d.as_ref().map(|d| d.obs.clone()))
        .collect();
    let mut problems: Vec<String> = deployment
        .inventory
        .hosts
        .iter()
        .zip(&lists)
        .filter_map(|(host, l)| {
            let e = l.as_ref().err()?;
            Some(format!(
                "host {}: agent unreachable ({e}); its instances are not managed and are shown as the other nodes see them",
                host.name
            ))
        })
        .collect();
    problems.extend(assess(&all, &observed));
    let mut warnings = Vec::new();
    let mut balance_problems = Vec::new();
    if deployment.inventory.deployment.topology == paddock_inventory::Topology::Cluster {
        let balance = crate::balance::judge(&crate::balance::roles(&targets, &observed));
        balance_problems = balance.unhealthy();
        warnings = balance.warnings();
    }
    if !sentinels.is_empty() {
        let master = crate::fleet::followed_master(&targets, &observed);
        problems.extend(crate::sentinel::problems_except(
            &sentinels,
            &views,
            master,
            targets.len().saturating_sub(1) as u32,
            &vouched,
        ));
    }
    let label_of = |id: &str| -> String {
        targets
            .iter()
            .zip(&observed)
            .find(|(_, o)| {
                o.as_ref()
                    .and_then(Observation::myself)
                    .is_some_and(|m| m.id == id)
            })
            .map(|(t, _)| t.label())
            .unwrap_or_else(|| id.chars().take(8).collect())
    };
    let hosts = deployment
        .inventory
        .hosts
        .iter()
        .enumerate()
        .map(|(h, host)| {
            let list = &lists[h];
            let state_of = |t: &Target| {
                let st = list
                    .as_ref()
                    .ok()
                    .and_then(|l| l.iter().find(|s| s.name == t.instance));
                let state = st
                    .map_or(
                        if list.is_ok() {
                            "ABSENT"
                        } else {
                            InstanceState::Unknown.as_str()
                        },
                        |s| s.state.as_str(),
                    )
                    .to_owned();
                (st, state)
            };
            // Unreachable agent: serving as far as the others know, or unknown.
            let unmanaged = |state: String, serving: bool| {
                if list.is_err() && serving {
                    UNMANAGED.to_owned()
                } else {
                    state
                }
            };
            let sentinel_views = sentinels
                .iter()
                .zip(views.iter().zip(&vouched))
                .filter(|(t, _)| t.host == h)
                .map(|(t, (v, &vouched))| {
                    let (st, state) = state_of(t);
                    InstanceView {
                        name: t.instance.clone(),
                        address: format!("{}:{}", t.ip, t.port),
                        state: unmanaged(state, v.view().is_some() || vouched),
                        hearsay: vouched,
                        pid: st.and_then(|s| s.pid),
                        restarts: st.map_or(0, |s| s.restarts),
                        role: Some("sentinel".into()),
                        node_id: None,
                        master: v.view().map(|v| {
                            targets
                                .iter()
                                .find(|t| (t.ip, t.port) == (v.master.ip, v.master.port))
                                .map_or_else(
                                    || format!("{}:{}", v.master.ip, v.master.port),
                                    Target::label,
                                )
                        }),
                        slots: None,
                        slot_count: 0,
                        link: v.view().map(|v| v.flags.clone()),
                        cluster_state: None,
                    }
                })
                .collect::<Vec<_>>();
            let mut instances: Vec<InstanceView> = targets
                .iter()
                .zip(node_details.iter().zip(&own))
                .filter(|(t, _)| t.host == h)
                .map(|(t, (d, own))| {
                    let (st, state) = state_of(t);
                    let me = d.as_ref().and_then(|d| d.obs.myself());
                    InstanceView {
                        name: t.instance.clone(),
                        address: format!("{}:{}", t.ip, t.port),
                        state: unmanaged(state, d.is_some()),
                        hearsay: own.is_none() && d.is_some(),
                        pid: st.and_then(|s| s.pid),
                        restarts: st.map_or(0, |s| s.restarts),
                        role: d
                            .as_ref()
                            .and_then(|d| d.obs.role_master)
                            .map(|m| if m { "master".into() } else { "replica".into() }),
                        node_id: me.map(|m| m.id.clone()),
                        master: me
                            .and_then(|m| m.master_id.as_deref())
                            .map(label_of)
                            .or_else(|| {
                                let at = d.as_ref()?.obs.master_addr?;
                                targets
                                    .iter()
                                    .find(|t| (t.ip, t.port) == at)
                                    .map(|t| t.label())
                            }),
                        slots: me
                            .filter(|m| !m.slots.is_empty())
                            .map(|m| format_ranges(&m.slots)),
                        slot_count: me.map_or(0, |m| m.slot_count()),
                        link: d.as_ref().and_then(|d| d.link.clone()),
                        cluster_state: d.as_ref().map(|d| d.cluster_state.clone()),
                    }
                })
                .collect();
            instances.extend(sentinel_views);
            HostStatus {
                name: host.name.clone(),
                address: host.address.to_string(),
                agent_error: list.as_ref().err().cloned(),
                instances,
            }
        })
        .zip(&shown)
        .filter_map(|(h, &shown)| shown.then_some(h))
        .collect();
    Ok(Status {
        deployment: deployment.inventory.deployment.name.clone(),
        topology: deployment.inventory.deployment.topology.to_string(),
        healthy: problems.is_empty() && balance_problems.is_empty(),
        problems,
        balance: balance_problems,
        warnings,
        hosts,
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Deployment {} ({})", self.deployment, self.topology)?;
        writeln!(
            f,
            "{:<14} {:<14} {:<22} {:<9} {:>7} {:<8} {:<28} {:<12} CLUSTER",
            "HOST", "INSTANCE", "ADDRESS", "STATE", "PID", "ROLE", "SLOTS / MASTER", "LINK"
        )?;
        for h in &self.hosts {
            if let Some(e) = &h.agent_error {
                writeln!(f, "{:<14} agent unreachable: {e}", h.name)?;
            }
            for i in &h.instances {
                let what = match (i.role.as_deref(), &i.slots, &i.master) {
                    (Some("replica"), _, Some(m)) => format!("of {m}"),
                    (Some("sentinel"), _, Some(m)) => format!("watches {m}"),
                    (_, Some(s), _) => format!("{s} ({})", i.slot_count),
                    _ => "-".into(),
                };
                writeln!(
                    f,
                    "{:<14} {:<14} {:<22} {:<9} {:>7} {:<8} {:<28} {:<12} {}",
                    h.name,
                    i.name,
                    i.address,
                    i.state,
                    i.pid.map_or("-".into(), |p| p.to_string()),
                    i.role.as_deref().unwrap_or("-"),
                    what,
                    i.link.as_deref().unwrap_or("-"),
                    i.cluster_state.as_deref().unwrap_or("-"),
                )?;
                if i.hearsay {
                    writeln!(
                        f,
                        "{:<14} {:<14} (as the other nodes see it; it did not answer itself)",
                        "", ""
                    )?;
                }
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.healthy && self.topology == "cluster" {
            writeln!(
                f,
                "Cluster healthy: every node agrees, all 16384 slots served, cluster_state:ok everywhere."
            )
        } else if self.healthy && self.topology == "sentinel" {
            writeln!(
                f,
                "Healthy: one master, every replica linked to it, every sentinel watching it."
            )
        } else if self.healthy {
            writeln!(
                f,
                "Replication healthy: one master, every replica linked to it."
            )
        } else {
            writeln!(f, "NOT healthy:")?;
            for p in self.problems.iter().take(20) {
                writeln!(f, "  - {p}")?;
            }
            for p in &self.balance {
                writeln!(f, "  - {p}")?;
            }
            if !self.balance.is_empty() {
                writeln!(
                    f,
                    "  `paddock apply` spreads the masters again (coordinated CLUSTER FAILOVER, one shard at a time)."
                )?;
            }
            Ok(())
        }
    }
}
