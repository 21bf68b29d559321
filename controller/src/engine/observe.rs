//! Observing what the agents run: the typed observations the planner
//! decides from.

use std::fmt;

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::client::{InstanceState, InstanceStatus, PutOutcome, Reply};
use crate::cluster::{Observation, parse_nodes};
use crate::fleet::{Fleet, Target};

/// What one target looks like right now.
#[derive(Debug, Clone)]
pub struct TargetState {
    pub status: Option<InstanceStatus>,
    /// What sending the spec would do (a dry run: nothing is written).
    pub put: PutOutcome,
    pub cluster: Option<Observation>,
    /// The live cluster-node-timeout, when it differs from the spec (left
    /// short by an interrupted formation).
    pub node_timeout_drift: Option<u32>,
    /// For a master: keys it holds in each open or unserved slot (CLUSTER
    /// COUNTKEYSINSLOT); only those slots are counted (`engine::fix`).
    pub slot_keys: crate::engine::fix::SlotKeys,
}

/// What the agents report, against the inventory.
#[derive(Debug, Clone)]
pub struct Observed {
    pub targets: Vec<TargetState>,
    /// The sentinels' states, in [`Deployment::sentinels`] order.
    pub sentinels: Vec<TargetState>,
    /// What keeps the sentinels from guarding the replication's master.
    pub sentinel_problems: Vec<crate::problem::SentinelProblem>,
    /// Instances of this deployment the agents run that the inventory no
    /// longer lists ("host:instance"), except those below.
    pub orphans: Vec<String>,
    /// The instances a change of shape removes
    /// ([`crate::fleet::Deployment::leaving`] order).
    pub leaving: Vec<TargetState>,
    /// Stopped instances the running cluster no longer knows: removed by
    /// an earlier apply, left alone with their data ("host:instance").
    pub removed: Vec<String>,
    /// What each master holds (keys, bytes), for the estimates of slot
    /// moves; empty when it could not be read. Not decisive: it changes
    /// with every write.
    pub loads: Vec<crate::engine::migrate::MasterLoad>,
    /// Per host: whether this run acts on it (in `--limit` and its agent
    /// answered). Instances of other hosts are observed, not planned for.
    pub acting: Vec<bool>,
    /// The hosts not acted on, and why.
    pub skipped: Vec<Skipped>,
}

impl Observed {
    /// Everything decisions are made from, as text: what a saved plan's
    /// staleness is judged by (a pid or a restart count is not).
    pub fn decisive(&self) -> String {
        let state = |s: &TargetState| {
            format!(
                "{:?} {:?} {:?} {:?}",
                s.status
                    .as_ref()
                    .map(|st| (&st.name, &st.deployment, st.port, st.state)),
                s.put,
                s.cluster,
                s.node_timeout_drift
            )
        };
        let mut out: Vec<String> = self
            .targets
            .iter()
            .chain(&self.sentinels)
            .map(state)
            .collect();
        out.extend(self.leaving.iter().map(state));
        out.push(format!(
            "{:?} {:?} {:?} {:?} {:?}",
            self.sentinel_problems, self.orphans, self.removed, self.acting, self.skipped
        ));
        out.join("\n")
    }
}

/// A host a command leaves alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub host: String,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    leaving: &[Target],
    deployment: &str,
    host_names: &[String],
    in_limit: &[bool],
) -> Result<Observed, Error> {
    let dial_errors: Vec<Option<String>> = (0..host_names.len())
        .map(|h| fleet.agent_error(h).map(str::to_owned))
        .collect();
    let (acting, skipped) = scope(host_names, in_limit, &dial_errors);
    let all: Vec<&Target> = targets.iter().chain(sentinels).collect();
    let everything: Vec<&Target> = all.iter().copied().chain(leaving).collect();
    let hosts: Vec<usize> = {
        // Every host acted on: one whose instances all left has some still.
        let mut h: Vec<usize> = (everything.iter().map(|t| t.host))
            .chain(0..host_names.len())
            .filter(|&h| acting[h])
            .collect();
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
            return Ok(PutOutcome::default());
        }
        read(t.host)?.put_instance(&t.spec, true).await
    }));
    let clusters = join_all(targets.iter().map(|t| observe_node(fleet, t)));
    let leaving_views = join_all(leaving.iter().map(|t| observe_node(fleet, t)));
    let master_name = sentinels
        .first()
        .and_then(|s| s.spec.sentinel.as_ref())
        .map(|s| s.master_name.clone())
        .unwrap_or_default();
    let views = crate::sentinel::views(fleet, sentinels, &master_name);
    let peer_lists = crate::sentinel::peer_lists(fleet, sentinels, &master_name);
    let (lists, puts, clusters, views, peer_lists, leaving_views) =
        futures::join!(lists, puts, clusters, views, peer_lists, leaving_views);
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
    let own: Vec<Option<Observation>> = clusters
        .iter()
        .map(|c| c.as_ref().map(|(o, _)| o.clone()))
        .collect();
    let judged = fleet.with_hearsay(targets, own);
    let clusters = clusters
        .into_iter()
        .zip(judged)
        .map(|(c, j)| c.or(j.map(|o| (o, None))))
        .map(Some)
        .chain(sentinels.iter().map(|_| None));
    let mut out = Vec::with_capacity(all.len());
    for ((t, put), cluster) in all.iter().zip(puts).zip(clusters) {
        out.push(target_state(t, put?, cluster.flatten(), &lists, acting));
    }
    let sentinel_states = out.split_off(targets.len());
    let mut leaving_states: Vec<TargetState> = leaving
        .iter()
        .zip(leaving_views)
        .map(|(t, c)| target_state(t, PutOutcome::default(), c, &lists, acting))
        .collect();
    // Cluster views only: outside a cluster no instance is "removed".
    let views_now: Vec<&Observation> = (out.iter().chain(&leaving_states))
        .filter_map(|s| s.cluster.as_ref())
        .filter(|o| !o.nodes.is_empty())
        .collect();
    let (orphans, removed) = orphans(&lists, &everything, deployment, host_names, |h, port| {
        let ip = fleet_host_ip(targets, leaving, h)
            .or_else(|| fleet.agent(h).ok().map(|a| a.addr().ip()));
        let ip = ip.filter(|_| !views_now.is_empty())?;
        Some(views_now.iter().any(|o| o.find(ip, port).is_some()))
    });
    count_slot_keys(fleet, targets, leaving, &mut out, &mut leaving_states).await;
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
    let loads = loads(fleet, &out, &leaving_states, targets, leaving).await;
    Ok(Observed {
        loads,
        targets: out,
        sentinels: sentinel_states,
        sentinel_problems,
        orphans,
        leaving: leaving_states,
        removed,
        acting: acting.clone(),
        skipped,
    })
}

/// The keys of open and unserved slots on each master (the inventory's
/// and those leaving), for the plan's lines; a count that fails leaves 0
/// (the repair counts again before it acts).
async fn count_slot_keys(
    fleet: &Fleet,
    targets: &[Target],
    leaving: &[Target],
    states: &mut [TargetState],
    leaving_states: &mut [TargetState],
) {
    use crate::engine::fix;
    if targets
        .iter()
        .all(|t| t.spec.mode != crate::client::RedisMode::Cluster)
    {
        return;
    }
    let view = |s: &TargetState| s.cluster.clone();
    let observed: Vec<Option<Observation>> = states.iter().map(view).collect();
    let leaving_observed: Vec<Option<Observation>> = leaving_states.iter().map(view).collect();
    let problems = crate::engine::shape::assess(targets, &observed, leaving, &leaving_observed);
    let all_observed: Vec<Option<Observation>> =
        observed.into_iter().chain(leaving_observed).collect();
    let all: Vec<Target> = targets.iter().chain(leaving).cloned().collect();
    let slots = fix::slots_to_inspect(&all_observed, fix::unserved_is_ours(&problems));
    if let Ok(keys) = fix::count_keys(fleet, &all, &all_observed, &slots).await {
        let states = states.iter_mut().chain(leaving_states.iter_mut());
        for (state, keys) in states.zip(keys) {
            state.slot_keys = keys;
        }
    }
}

/// What every master (of the targets and the instances that leave) holds;
/// empty when one cannot be read (the estimates are then 0).
async fn loads(
    fleet: &Fleet,
    states: &[TargetState],
    leaving_states: &[TargetState],
    targets: &[Target],
    leaving: &[Target],
) -> Vec<crate::engine::migrate::MasterLoad> {
    if targets
        .first()
        .is_none_or(|t| t.spec.mode != crate::client::RedisMode::Cluster)
    {
        return Vec::new();
    }
    let all: Vec<Target> = targets.iter().chain(leaving).cloned().collect();
    let views: Vec<Option<Observation>> = (states.iter().chain(leaving_states))
        .map(|s| s.cluster.clone())
        .collect();
    let ids = crate::engine::migrate::master_ids(&all, &views);
    crate::engine::migrate::observe_loads(fleet, &all, &ids)
        .await
        .unwrap_or_default()
}

/// Each acting host's instance list, by host index.
type Lists = [(usize, Vec<crate::client::InstanceStatus>)];

/// Instances of this deployment the agents run that no target names: the
/// orphans, and apart the stopped ones the running cluster does not know
/// (`known(host, port)`: None when no node of the cluster answers), which
/// an earlier apply removed ([`crate::engine::shape`] says which is which).
fn orphans(
    lists: &Lists,
    all: &[&Target],
    deployment: &str,
    host_names: &[String],
    known: impl Fn(usize, u16) -> Option<bool>,
) -> (Vec<String>, Vec<String>) {
    let (mut orphans, mut removed) = (Vec::new(), Vec::new());
    for (h, list) in lists {
        for s in list.iter().filter(|s| s.deployment == deployment) {
            if all.iter().any(|t| t.host == *h && t.instance == s.name) {
                continue;
            }
            let label = format!("{}:{}", host_names[*h], s.name);
            if s.state != InstanceState::Running && known(*h, s.port) == Some(false) {
                removed.push(label);
            } else {
                orphans.push(format!("{label} ({})", s.state.as_str()));
            }
        }
    }
    (orphans, removed)
}

/// The address of host `h` (any target on it names it).
fn fleet_host_ip(targets: &[Target], leaving: &[Target], h: usize) -> Option<std::net::IpAddr> {
    targets
        .iter()
        .chain(leaving)
        .find(|t| t.host == h)
        .map(|t| t.ip)
}

/// One target as observed: its agent's status, the dry-run put, and its
/// node's view (own or hearsay) when it runs.
fn target_state(
    t: &Target,
    put: PutOutcome,
    cluster: Option<(Observation, Option<u32>)>,
    lists: &Lists,
    acting: &[bool],
) -> TargetState {
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
    let (cluster, drift) = match cluster {
        Some((obs, timeout)) if running => (
            Some(obs),
            timeout.filter(|&v| v != t.spec.cluster_node_timeout_ms()),
        ),
        _ => (None, None),
    };
    TargetState {
        status,
        put,
        cluster,
        node_timeout_drift: drift,
        slot_keys: Default::default(),
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

    #[test]
    fn stopped_instances_the_cluster_forgot_are_removed_not_orphans() {
        let st = |name: &str, port: u16, state: InstanceState| crate::client::InstanceStatus {
            name: name.into(),
            deployment: "t".into(),
            port,
            state,
            pid: None,
            restarts: 0,
            last_exit: None,
            config_digest: String::new(),
        };
        let lists = vec![(
            0,
            vec![
                st("redis-7002", 7002, InstanceState::Stopped),
                st("redis-7003", 7003, InstanceState::Running),
                st("redis-7004", 7004, InstanceState::Stopped),
                st("redis-7005", 7005, InstanceState::Exited),
            ],
        )];
        let names = vec!["a".to_owned()];
        // (port -> known by the running cluster; None: no node answers)
        let known = |_: usize, port: u16| match port {
            7002 => Some(false),
            7003 => Some(false),
            7004 => Some(true),
            _ => None,
        };
        let (orphans, removed) = orphans(&lists, &[], "t", &names, known);
        assert_eq!(removed, ["a:redis-7002"]);
        assert_eq!(
            orphans,
            [
                "a:redis-7003 (RUNNING)",
                "a:redis-7004 (STOPPED)",
                "a:redis-7005 (EXITED)"
            ]
        );
    }
}
