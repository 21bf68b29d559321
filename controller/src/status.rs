//! `paddock status`: hosts, instances, roles, slots and link state, as a
//! table or JSON.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use futures::future::join_all;
use paddock_inventory::Topology;
use serde::Serialize;

use crate::Error;
use crate::client::{InstanceState, InstanceStatus, Reply, Security};
use crate::cluster::{Observation, assess, format_ranges, parse_nodes};
use crate::fleet::{Deployment, Fleet, Target, members};
use crate::problem::{HostProblem, Problem};
use crate::sentinel::Seen;
use paddock_knowledge::info::field;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub deployment: String,
    #[serde(serialize_with = "topology_name")]
    pub topology: Topology,
    pub healthy: bool,
    pub problems: Vec<Problem>,
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
    /// As the node itself reports (or the others, for hearsay).
    pub role: Option<InstanceRole>,
    pub node_id: Option<String>,
    /// For a replica: the "host:instance" it replicates.
    pub master: Option<String>,
    pub slots: Option<String>,
    pub slot_count: u32,
    /// For a replica: master_link_status; for a master: connected replicas.
    pub link: Option<String>,
    pub cluster_state: Option<String>,
}

/// What an instance is in the deployment; JSON and the table spell it
/// "master", "replica", "sentinel".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceRole {
    Master,
    Replica,
    Sentinel,
}

impl InstanceRole {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceRole::Master => "master",
            InstanceRole::Replica => "replica",
            InstanceRole::Sentinel => "sentinel",
        }
    }
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
    let repl = crate::engine::observe::parse_replication(&repl_text);
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

/// What one agent's instance list gave: the instances, or why not.
type Listing = Result<Vec<InstanceStatus>, String>;

/// Everything status asked, with what the others say of a node whose
/// agent did not answer filled in.
struct Gathered {
    /// Per host.
    lists: Vec<Listing>,
    /// Per target: what the node said itself.
    own: Vec<Option<Observation>>,
    /// Per target: what it said, or what the others say of it.
    details: Vec<Option<NodeDetails>>,
    /// Per sentinel.
    views: Vec<Seen>,
    /// Per sentinel: behind an unreachable agent, but the others see it up.
    vouched: Vec<bool>,
}

impl Gathered {
    /// Per target, as judged: own view or hearsay.
    fn observed(&self) -> Vec<Option<Observation>> {
        self.details
            .iter()
            .map(|d| d.as_ref().map(|d| d.obs.clone()))
            .collect()
    }
}

/// Asks every agent, node and sentinel at once, within status's deadlines.
async fn gather(
    deployment: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    sentinels: &[Target],
) -> Gathered {
    let lists = join_all((0..deployment.inventory.hosts.len()).map(|h| async move {
        match fleet.agent(h) {
            Ok(a) => a.list().await.map_err(|e| e.to_string()),
            Err(_) => Err(fleet.agent_error(h).unwrap_or("unreachable").to_owned()),
        }
    }));
    let node_details = join_all(targets.iter().map(|t| details(fleet, t)));
    let name = &deployment.inventory.deployment.name;
    let views = crate::sentinel::views(fleet, sentinels, name);
    let peer_lists = crate::sentinel::peer_lists(fleet, sentinels, name);
    let (lists, mut details, views, peer_lists) =
        futures::join!(lists, node_details, views, peer_lists);
    let vouched: Vec<bool> = (0..sentinels.len())
        .map(|i| {
            matches!(views[i], Seen::Unseen)
                && lists[sentinels[i].host].is_err()
                && crate::sentinel::vouched(sentinels, &peer_lists, i)
        })
        .collect();
    // A node whose agent did not answer is judged from what the others say
    // of it; one whose agent answers but whose Redis does not is reported
    // as not answering (the agent is there to tell).
    let own: Vec<Option<Observation>> = details
        .iter()
        .map(|d| d.as_ref().map(|d| d.obs.clone()))
        .collect();
    let all = members(targets);
    for (i, d) in details.iter_mut().enumerate() {
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
    Gathered {
        lists,
        own,
        details,
        views,
        vouched,
    }
}

/// What keeps the deployment from being healthy.
struct Judgement {
    problems: Vec<Problem>,
    balance: Vec<String>,
    warnings: Vec<String>,
}

/// Pure: judges what was gathered. Unreachable agents first, then the
/// nodes, then the sentinels; where masters run is kept apart.
fn judge(
    deployment: &Deployment,
    targets: &[Target],
    sentinels: &[Target],
    seen: &Gathered,
) -> Judgement {
    let observed = seen.observed();
    let mut problems: Vec<Problem> = deployment
        .inventory
        .hosts
        .iter()
        .zip(&seen.lists)
        .filter_map(|(host, l)| {
            Some(Problem::Host(HostProblem::AgentUnreachable {
                host: host.name.clone(),
                error: l.as_ref().err()?.clone(),
            }))
        })
        .collect();
    problems.extend(
        assess(&members(targets), &observed)
            .into_iter()
            .map(Problem::Cluster),
    );
    let mut judgement = Judgement {
        problems,
        balance: Vec::new(),
        warnings: Vec::new(),
    };
    if deployment.inventory.deployment.topology == Topology::Cluster {
        let roles = crate::balance::roles(targets, &observed);
        let balance = crate::balance::judge(&roles);
        judgement.balance = balance.unhealthy();
        judgement.warnings = balance.warnings();
        let zones = crate::zones::judge(&roles, &host_zones(&deployment.inventory));
        judgement.warnings.extend(zones.warnings());
        judgement
            .problems
            .extend(zones.problems.into_iter().map(Problem::Cluster));
    }
    if !sentinels.is_empty() {
        let master = crate::fleet::followed_master(targets, &observed);
        let sentinel_problems = crate::sentinel::problems_except(
            sentinels,
            &seen.views,
            master,
            targets.len().saturating_sub(1) as u32,
            &seen.vouched,
        );
        judgement
            .problems
            .extend(sentinel_problems.into_iter().map(Problem::Sentinel));
    }
    judgement
}

/// Each host's zone, as (host name, zone); empty without zones.
fn host_zones(inv: &paddock_inventory::Inventory) -> Vec<(String, String)> {
    inv.hosts
        .iter()
        .filter_map(|h| Some((h.name.clone(), h.zone.clone()?)))
        .collect()
}

/// One host's rows: its agent's word on each instance, and what the nodes
/// and sentinels on it report.
struct HostRows<'a> {
    targets: &'a [Target],
    sentinels: &'a [Target],
    seen: &'a Gathered,
    observed: &'a [Option<Observation>],
    list: &'a Listing,
}

impl HostRows<'_> {
    /// The agent's status of `t` and the state to show for it.
    fn state_of(&self, t: &Target) -> (Option<&InstanceStatus>, String) {
        let st = self
            .list
            .as_ref()
            .ok()
            .and_then(|l| l.iter().find(|s| s.name == t.instance));
        let state = match (st, self.list.is_ok()) {
            (Some(s), _) => s.state.as_str(),
            (None, true) => "ABSENT",
            (None, false) => InstanceState::Unknown.as_str(),
        };
        (st, state.to_owned())
    }

    /// Unreachable agent: serving as far as the others know, or unknown.
    fn unmanaged(&self, state: String, serving: bool) -> String {
        if self.list.is_err() && serving {
            UNMANAGED.to_owned()
        } else {
            state
        }
    }

    /// "host:instance" of the node with CLUSTER NODES id `id`.
    fn label_of(&self, id: &str) -> String {
        self.targets
            .iter()
            .zip(self.observed)
            .find(|(_, o)| {
                o.as_ref()
                    .and_then(Observation::myself)
                    .is_some_and(|m| m.id == id)
            })
            .map(|(t, _)| t.label())
            .unwrap_or_else(|| id.chars().take(8).collect())
    }

    fn target_label(&self, at: (IpAddr, u16)) -> Option<String> {
        self.targets
            .iter()
            .find(|t| (t.ip, t.port) == at)
            .map(Target::label)
    }

    /// Redis node `i` of the targets.
    fn node(&self, i: usize) -> InstanceView {
        let t = &self.targets[i];
        let d = self.seen.details[i].as_ref();
        let (st, state) = self.state_of(t);
        let me = d.and_then(|d| d.obs.myself());
        InstanceView {
            name: t.instance.clone(),
            address: format!("{}:{}", t.ip, t.port),
            state: self.unmanaged(state, d.is_some()),
            hearsay: self.seen.own[i].is_none() && d.is_some(),
            pid: st.and_then(|s| s.pid),
            restarts: st.map_or(0, |s| s.restarts),
            role: d.and_then(|d| d.obs.role_master).map(|m| {
                if m {
                    InstanceRole::Master
                } else {
                    InstanceRole::Replica
                }
            }),
            node_id: me.map(|m| m.id.clone()),
            master: me
                .and_then(|m| m.master_id.as_deref())
                .map(|id| self.label_of(id))
                .or_else(|| self.target_label(d?.obs.master_addr?)),
            slots: me
                .filter(|m| !m.slots.is_empty())
                .map(|m| format_ranges(&m.slots)),
            slot_count: me.map_or(0, |m| m.slot_count()),
            link: d.and_then(|d| d.link.clone()),
            cluster_state: d.map(|d| d.cluster_state.clone()),
        }
    }

    /// Sentinel `i` of the sentinels.
    fn sentinel(&self, i: usize) -> InstanceView {
        let t = &self.sentinels[i];
        let (v, vouched) = (self.seen.views[i].view(), self.seen.vouched[i]);
        let (st, state) = self.state_of(t);
        InstanceView {
            name: t.instance.clone(),
            address: format!("{}:{}", t.ip, t.port),
            state: self.unmanaged(state, v.is_some() || vouched),
            hearsay: vouched,
            pid: st.and_then(|s| s.pid),
            restarts: st.map_or(0, |s| s.restarts),
            role: Some(InstanceRole::Sentinel),
            node_id: None,
            master: v.map(|v| {
                self.target_label((v.master.address, v.master.port))
                    .unwrap_or_else(|| format!("{}:{}", v.master.address, v.master.port))
            }),
            slots: None,
            slot_count: 0,
            link: v.map(|v| v.flags.clone()),
            cluster_state: None,
        }
    }

    /// Host `h`'s Redis nodes, then its sentinels.
    fn host(&self, h: usize, host: &paddock_inventory::Host) -> HostStatus {
        let on_host =
            |ts: &[Target]| -> Vec<usize> { (0..ts.len()).filter(|&i| ts[i].host == h).collect() };
        let nodes = on_host(self.targets).into_iter().map(|i| self.node(i));
        let sentinels = on_host(self.sentinels)
            .into_iter()
            .map(|i| self.sentinel(i));
        HostStatus {
            name: host.name.clone(),
            address: host.address.to_string(),
            agent_error: self.list.as_ref().err().cloned(),
            instances: nodes.chain(sentinels).collect(),
        }
    }
}

/// The deployment's status; `limit` (host names or addresses) restricts the
/// hosts shown, not the judgement (that needs every node's view).
pub async fn status(path: &Path, limit: &[String], security: Security) -> Result<Status, Error> {
    let mut deployment = Deployment::load(path, false, security)?;
    let shown = crate::fleet::limit_hosts(&deployment.inventory, limit)?;
    let fleet = Fleet::connect_within(&deployment, DIAL_WITHIN, Some(CALL_WITHIN)).await;
    crate::engine::shape::keep_placement(&mut deployment, &fleet, false).await?;
    Ok(status_of(&deployment, &fleet, &shown).await)
}

/// The status of `deployment` through `fleet` (`paddock check` starts from
/// it), showing the hosts `shown` selects.
pub async fn status_of(deployment: &Deployment, fleet: &Fleet, shown: &[bool]) -> Status {
    let targets = deployment.targets();
    let sentinels = deployment.sentinels(deployment.placed_master());
    let seen = gather(deployment, fleet, &targets, &sentinels).await;
    let judgement = judge(deployment, &targets, &sentinels, &seen);
    let observed = seen.observed();
    let hosts = deployment
        .inventory
        .hosts
        .iter()
        .enumerate()
        .filter(|&(h, _)| shown[h])
        .map(|(h, host)| {
            HostRows {
                targets: &targets,
                sentinels: &sentinels,
                seen: &seen,
                observed: &observed,
                list: &seen.lists[h],
            }
            .host(h, host)
        })
        .collect();
    let inv = &deployment.inventory.deployment;
    Status {
        deployment: inv.name.clone(),
        topology: inv.topology,
        healthy: judgement.problems.is_empty() && judgement.balance.is_empty(),
        problems: judgement.problems,
        balance: judgement.balance,
        warnings: judgement.warnings,
        hosts,
    }
}

fn topology_name<S: serde::Serializer>(t: &Topology, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
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
                i.row(f, &h.name)?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if !self.healthy {
            return self.unhealthy(f);
        }
        match self.topology {
            Topology::Cluster => writeln!(
                f,
                "Cluster healthy: every node agrees, all 16384 slots served, cluster_state:ok everywhere."
            ),
            Topology::Sentinel => writeln!(
                f,
                "Healthy: one master, every replica linked to it, every sentinel watching it."
            ),
            Topology::Replication => writeln!(
                f,
                "Replication healthy: one master, every replica linked to it."
            ),
        }
    }
}

impl Status {
    /// The closing lines of an unhealthy deployment: what is wrong.
    fn unhealthy(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

impl InstanceView {
    /// Its line of the status table (and a note when it is hearsay).
    fn row(&self, f: &mut fmt::Formatter<'_>, host: &str) -> fmt::Result {
        let what = match (self.role, &self.slots, &self.master) {
            (Some(InstanceRole::Replica), _, Some(m)) => format!("of {m}"),
            (Some(InstanceRole::Sentinel), _, Some(m)) => format!("watches {m}"),
            (_, Some(s), _) => format!("{s} ({})", self.slot_count),
            _ => "-".into(),
        };
        writeln!(
            f,
            "{:<14} {:<14} {:<22} {:<9} {:>7} {:<8} {:<28} {:<12} {}",
            host,
            self.name,
            self.address,
            self.state,
            self.pid.map_or("-".into(), |p| p.to_string()),
            self.role.map_or("-", InstanceRole::as_str),
            what,
            self.link.as_deref().unwrap_or("-"),
            self.cluster_state.as_deref().unwrap_or("-"),
        )?;
        if self.hearsay {
            writeln!(
                f,
                "{:<14} {:<14} (as the other nodes see it; it did not answer itself)",
                "", ""
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, role: InstanceRole) -> InstanceView {
        InstanceView {
            name: name.into(),
            address: "127.0.1.1:7000".into(),
            state: "RUNNING".into(),
            hearsay: false,
            pid: Some(42),
            restarts: 0,
            role: Some(role),
            node_id: None,
            master: None,
            slots: None,
            slot_count: 0,
            link: None,
            cluster_state: None,
        }
    }

    fn status(healthy: bool) -> Status {
        let master = InstanceView {
            slots: Some("0-16383".into()),
            slot_count: 16384,
            cluster_state: Some("ok".into()),
            ..view("redis-7000", InstanceRole::Master)
        };
        let replica = InstanceView {
            master: Some("box1:redis-7000".into()),
            link: Some("up".into()),
            hearsay: true,
            state: UNMANAGED.into(),
            ..view("redis-7001", InstanceRole::Replica)
        };
        let problems = if healthy {
            Vec::new()
        } else {
            vec![Problem::Host(HostProblem::AgentUnreachable {
                host: "box2".into(),
                error: "refused".into(),
            })]
        };
        Status {
            deployment: "lab".into(),
            topology: Topology::Cluster,
            healthy,
            problems,
            balance: Vec::new(),
            warnings: Vec::new(),
            hosts: vec![HostStatus {
                name: "box1".into(),
                address: "127.0.1.1".into(),
                agent_error: None,
                instances: vec![master, replica],
            }],
        }
    }

    #[test]
    fn prints_one_row_per_instance_and_the_verdict() {
        let text = status(true).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Deployment lab (cluster)");
        assert!(lines[2].starts_with("box1           redis-7000     127.0.1.1:7000"));
        assert!(
            lines[2].contains(" master   0-16383 (16384) "),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("UNMANAGED") && lines[3].contains(" replica  of box1:redis-7000 ")
        );
        assert_eq!(
            lines[4].trim(),
            "(as the other nodes see it; it did not answer itself)"
        );
        assert_eq!(
            lines[5],
            "Cluster healthy: every node agrees, all 16384 slots served, cluster_state:ok everywhere."
        );
        let text = status(false).to_string();
        assert!(text.ends_with(
            "NOT healthy:\n  - host box2: agent unreachable (refused); its instances are not managed and are shown as the other nodes see them\n"
        ), "{text}");
    }

    #[test]
    fn json_spells_topology_roles_and_problems_as_text() {
        let json = serde_json::to_value(status(false)).unwrap();
        assert_eq!(json["topology"], "cluster");
        assert_eq!(json["hosts"][0]["instances"][0]["role"], "master");
        assert_eq!(json["hosts"][0]["instances"][1]["role"], "replica");
        assert_eq!(
            json["problems"][0],
            "host box2: agent unreachable (refused); its instances are not managed and are shown as the other nodes see them"
        );
    }
}
