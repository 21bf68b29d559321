//! `paddock stop`, `start`, `restart`, `prune` and `destroy`: what happens
//! to instances after apply. Which instances a command acts on (`select`)
//! and whether prune may remove one (`prune_verdict`) are pure decisions;
//! the rest is RPCs to the agents, under the deployment's lease.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::client::{InstanceState, Reply, Security};
use crate::cluster::{Observation, format_ranges, parse_nodes};
use crate::fleet::{Deployment, Fleet, Target};
use crate::progress::Progress;

/// One instance of the deployment that an agent has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub host: usize,
    pub host_name: String,
    pub name: String,
    pub port: u16,
    pub state: InstanceState,
}

impl Instance {
    pub fn label(&self) -> String {
        format!("{}:{}", self.host_name, self.name)
    }
}

/// What a command did to one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub label: String,
    pub state: InstanceState,
}

/// The instances named by `HOST` (all of the host's) or `HOST:INSTANCE`
/// among those the agents have (`listed`); nothing named means all of
/// them. Each is taken once, in `listed` order.
pub fn select(
    hosts: &[String],
    listed: &[Instance],
    wanted: &[String],
) -> Result<Vec<Instance>, Error> {
    if wanted.is_empty() {
        return Ok(listed.to_vec());
    }
    let mut picked = vec![false; listed.len()];
    for w in wanted {
        let (host, instance) = match w.split_once(':') {
            Some((h, i)) => (h, Some(i)),
            None => (w.as_str(), None),
        };
        let Some(h) = hosts.iter().position(|n| n == host) else {
            return Err(Error::Selection {
                target: w.clone(),
                message: format!(
                    "no host named {host:?} in the inventory; its hosts are: {}",
                    hosts.join(", ")
                ),
            });
        };
        let on_host: Vec<usize> = (0..listed.len()).filter(|&i| listed[i].host == h).collect();
        let matching: Vec<usize> = on_host
            .iter()
            .copied()
            .filter(|&i| instance.is_none_or(|n| listed[i].name == n))
            .collect();
        if matching.is_empty() {
            let names: Vec<&str> = on_host.iter().map(|&i| listed[i].name.as_str()).collect();
            return Err(Error::Selection {
                target: w.clone(),
                message: if names.is_empty() {
                    format!(
                        "the agent of {host} has no instance of this deployment; `paddock apply` creates them"
                    )
                } else {
                    format!(
                        "the agent of {host} has no such instance of this deployment; it has: {}",
                        names.join(", ")
                    )
                },
            });
        }
        for i in matching {
            picked[i] = true;
        }
    }
    Ok(listed
        .iter()
        .zip(picked)
        .filter(|(_, p)| *p)
        .map(|(i, _)| i.clone())
        .collect())
}

/// Why prune must keep an instance the inventory no longer lists, or None
/// when it may go: it serves no slots and holds no master role, in its own
/// view (`own`, None when it does not run) or in any other node's
/// (`others`: every other answering instance of the deployment).
pub fn prune_verdict(
    me: (IpAddr, u16),
    own: Option<&Observation>,
    others: &[&Observation],
) -> Option<String> {
    if let Some(o) = own {
        if let Some(m) = o.myself().filter(|m| m.is_master() && m.slot_count() > 0) {
            return Some(format!("it serves slots {}", format_ranges(&m.slots)));
        }
        // A replication or sentinel topology's master (a cluster node has
        // CLUSTER NODES, judged above by its slots).
        if o.nodes.is_empty() && o.role_master == Some(true) {
            return Some("it is a master (role:master)".into());
        }
    }
    for o in others {
        if let Some(n) = o
            .find(me.0, me.1)
            .filter(|n| n.is_master() && n.slot_count() > 0)
        {
            return Some(format!(
                "the cluster still assigns it slots {}",
                format_ranges(&n.slots)
            ));
        }
    }
    let followers = others.iter().filter(|o| o.master_addr == Some(me)).count();
    if followers > 0 {
        return Some(format!("{followers} instance(s) replicate from it"));
    }
    None
}

/// Every instance of the deployment the agents have, in host order.
async fn list_deployment(deployment: &Deployment, fleet: &Fleet) -> Result<Vec<Instance>, Error> {
    let name = &deployment.inventory.deployment.name;
    let lists = join_all((0..deployment.inventory.hosts.len()).map(|h| async move {
        let list = fleet.agent(h)?.list().await?;
        Ok::<_, Error>((h, list))
    }))
    .await;
    let mut out = Vec::new();
    for r in lists {
        let (h, list) = r?;
        out.extend(
            list.into_iter()
                .filter(|s| &s.deployment == name)
                .map(|s| Instance {
                    host: h,
                    host_name: deployment.inventory.hosts[h].name.clone(),
                    name: s.name,
                    port: s.port,
                    state: s.state,
                }),
        );
    }
    Ok(out)
}

/// Runs `body` holding the deployment's lease on every agent.
async fn leased<T>(
    path: &Path,
    security: Security,
    body: impl AsyncFnOnce(&Deployment, &Fleet) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut deployment = Deployment::load(path, false, security)?;
    let fleet = Fleet::connect_all(&deployment).await?;
    let name = deployment.inventory.deployment.name.clone();
    let holder = crate::fleet::lock_holder();
    fleet.lock(&name, &holder).await?;
    // What runs stays where it is: the targets are where it runs.
    if let Err(e) = crate::engine::shape::keep_placement(&mut deployment, &fleet, false).await {
        fleet.unlock(&name, &holder).await;
        return Err(e);
    }
    let result = body(&deployment, &fleet).await;
    fleet.unlock(&name, &holder).await;
    result
}

fn host_names(deployment: &Deployment) -> Vec<String> {
    deployment
        .inventory
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .collect()
}

fn is_sentinel(deployment: &Deployment, i: &Instance) -> bool {
    deployment
        .sentinels(deployment.placed_master())
        .iter()
        .any(|t| t.host == i.host && t.instance == i.name)
}

/// Stops instances in an order that moves nothing: the sentinels first
/// (they would fail over what is being stopped), then replicas, then
/// masters (a replica stopped after its master would first be elected).
async fn stop_ordered(
    deployment: &Deployment,
    fleet: &Fleet,
    chosen: &[Instance],
    progress: &Progress,
) -> Result<Vec<Outcome>, Error> {
    let targets = deployment.targets();
    let observed = crate::form::observe_all(fleet, &targets).await;
    let is_master = |i: &Instance| {
        targets
            .iter()
            .zip(&observed)
            .find(|(t, _)| t.host == i.host && t.instance == i.name)
            .and_then(|(_, o)| o.as_ref())
            .is_some_and(|o| match o.myself() {
                Some(m) => m.is_master() && m.slot_count() > 0,
                None => o.role_master == Some(true),
            })
    };
    let phase = |i: &Instance| {
        if is_sentinel(deployment, i) {
            0
        } else if is_master(i) {
            2
        } else {
            1
        }
    };
    let mut out = Vec::new();
    for p in 0..3 {
        let now: Vec<&Instance> = chosen.iter().filter(|i| phase(i) == p).collect();
        if now.is_empty() {
            continue;
        }
        progress.step(format!(
            "stopping {}",
            now.iter().map(|i| i.label()).collect::<Vec<_>>().join(", ")
        ));
        let stops = now.iter().map(|i| async move {
            let s = fleet.agent(i.host)?.stop(&i.name).await?;
            Ok::<_, Error>(Outcome {
                label: i.label(),
                state: s.state,
            })
        });
        for r in join_all(stops).await {
            out.push(r?);
        }
    }
    Ok(out)
}

/// `paddock stop`: stops the named instances (all of the deployment's when
/// none is named). They stay stopped, across agent restarts too, until
/// `paddock start` or `paddock apply`.
pub async fn stop(
    path: &Path,
    wanted: &[String],
    progress: bool,
    security: Security,
) -> Result<Vec<Outcome>, Error> {
    let progress = Progress::new(progress);
    leased(path, security, async |deployment, fleet| {
        let listed = list_deployment(deployment, fleet).await?;
        let chosen = select(&host_names(deployment), &listed, wanted)?;
        stop_ordered(deployment, fleet, &chosen, &progress).await
    })
    .await
}

async fn start_one(fleet: &Fleet, i: &Instance) -> Result<Outcome, Error> {
    let s = fleet.agent(i.host)?.start(&i.name).await?;
    if s.state != InstanceState::Running {
        return Err(Error::Agent {
            host: i.host_name.clone(),
            message: format!(
                "{} did not start: {} ({}); see `paddock logs -i INVENTORY {} {}`",
                i.name,
                s.state.as_str(),
                s.last_exit.unwrap_or_else(|| "no exit recorded".into()),
                i.host_name,
                i.name
            ),
        });
    }
    Ok(Outcome {
        label: i.label(),
        state: s.state,
    })
}

/// `paddock start`: starts the named instances (all when none is named),
/// together; each answers once its Redis does. A replication member
/// rejoins the current master (the agent asks the group first).
pub async fn start(
    path: &Path,
    wanted: &[String],
    progress: bool,
    security: Security,
) -> Result<Vec<Outcome>, Error> {
    let progress = Progress::new(progress);
    leased(path, security, async |deployment, fleet| {
        let listed = list_deployment(deployment, fleet).await?;
        let chosen = select(&host_names(deployment), &listed, wanted)?;
        progress.step(format!("starting {} instance(s)", chosen.len()));
        let outcomes = join_all(chosen.iter().map(|i| start_one(fleet, i)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        if wanted.is_empty() {
            respread_after_start(deployment, fleet, &progress).await?;
        }
        Ok(outcomes)
    })
    .await
}

/// After a whole cluster starts, the agents' start-up handovers may leave
/// several masters on one host: once the cluster is healthy, give them
/// their spread back, as `restart` does.
async fn respread_after_start(
    deployment: &Deployment,
    fleet: &Fleet,
    progress: &Progress,
) -> Result<(), Error> {
    if deployment.inventory.deployment.topology != paddock_inventory::Topology::Cluster {
        return Ok(());
    }
    let targets = deployment.targets();
    let deadline = std::time::Instant::now() + START_SETTLE;
    if let Err(e) = crate::form::wait_healthy(fleet, &targets, deadline).await {
        progress.step(format!(
            "masters' spread left as it is: the cluster is not healthy yet ({e}); `paddock apply` restores it"
        ));
        return Ok(());
    }
    crate::apply::restore_balance(fleet, &targets, START_SETTLE, progress).await
}

/// How long a started cluster gets to agree before its masters are
/// spread again, and each coordinated failover of that spread.
const START_SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

/// `paddock restart`: a rolling restart of the named instances (all when
/// none is named), as apply does for a config change: one at a time,
/// replicas first, a master hands its role to an in-sync replica first,
/// and the deployment must be healthy again before the next. Sentinels and
/// instances the inventory does not list restart after, one at a time (a
/// sentinel guarding the master again before the next); stopped ones are
/// started.
pub async fn restart(
    path: &Path,
    wanted: &[String],
    step_timeout: Duration,
    progress: bool,
    security: Security,
) -> Result<Vec<Outcome>, Error> {
    let progress = Progress::new(progress);
    leased(path, security, async |deployment, fleet| {
        let listed = list_deployment(deployment, fleet).await?;
        let chosen = select(&host_names(deployment), &listed, wanted)?;
        let targets = deployment.targets();
        let sentinels = deployment.sentinels(deployment.placed_master());
        let index = |i: &Instance| {
            targets
                .iter()
                .position(|t| t.host == i.host && t.instance == i.name)
        };
        let rolling: Vec<usize> = chosen
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .filter_map(index)
            .collect();
        if !rolling.is_empty() {
            restart_rolling(
                deployment,
                fleet,
                &targets,
                &sentinels,
                &rolling,
                step_timeout,
                &progress,
            )
            .await?;
        }
        let mut out: Vec<Outcome> = rolling
            .iter()
            .map(|&i| Outcome {
                label: targets[i].label(),
                state: InstanceState::Running,
            })
            .collect();
        for i in &chosen {
            if out.iter().any(|o| o.label == i.label()) {
                continue;
            }
            let outcome = restart_other(
                deployment,
                fleet,
                &targets,
                &sentinels,
                i,
                step_timeout,
                &progress,
            )
            .await?;
            out.push(outcome);
        }
        Ok(out)
    })
    .await
}

/// The rolling part of `restart`: the inventory's running redis
/// instances `rolling` (indexes into `targets`), one at a time, as apply
/// does, starting only from a healthy deployment.
async fn restart_rolling(
    deployment: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    sentinels: &[Target],
    rolling: &[usize],
    step_timeout: Duration,
    progress: &Progress,
) -> Result<(), Error> {
    require_healthy(deployment, fleet, targets).await?;
    let mut skipped = Vec::new();
    crate::apply::rolling_restart(
        fleet,
        targets,
        sentinels,
        &deployment.inventory.deployment.name,
        rolling,
        "as asked",
        step_timeout,
        progress,
        &mut skipped,
    )
    .await?;
    for s in &skipped {
        progress.step(format!("skipped: {s}"));
    }
    // Each master handed its role to a replica on another host
    // first: give the masters back their spread (one host's loss
    // must not take out a majority of them).
    if deployment.inventory.deployment.topology == paddock_inventory::Topology::Cluster {
        crate::apply::restore_balance(fleet, targets, step_timeout, progress).await?;
    }
    Ok(())
}

/// Refuses a rolling restart of an unhealthy deployment: it waits for
/// health after each instance, which would never come.
async fn require_healthy(
    deployment: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
) -> Result<(), Error> {
    let observed = crate::form::observe_all(fleet, targets).await;
    let problems = crate::cluster::assess(&crate::fleet::members(targets), &observed);
    if !problems.is_empty() {
        return Err(Error::Unsupported(format!(
            "restart is rolling and waits for a healthy deployment after each instance, but {} is not healthy now:\n{}\n  \
             hint: `paddock apply` repairs it; `paddock stop` and `paddock start` do not wait for health",
            deployment.inventory.deployment.name,
            problems
                .iter()
                .take(12)
                .map(|p| format!("    - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    Ok(())
}

/// Restarts (or starts, if stopped) one instance outside the rolling
/// part: a sentinel, or one the inventory does not list.
async fn restart_other(
    deployment: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    sentinels: &[Target],
    i: &Instance,
    step_timeout: Duration,
    progress: &Progress,
) -> Result<Outcome, Error> {
    if i.state == InstanceState::Running {
        progress.step(format!("{}: restarting", i.label()));
        fleet.agent(i.host)?.stop(&i.name).await?;
    } else {
        progress.step(format!(
            "{}: starting (was {})",
            i.label(),
            i.state.as_str()
        ));
    }
    let outcome = start_one(fleet, i).await?;
    if is_sentinel(deployment, i) {
        // Rolling for sentinels too: the next one stops only once
        // this one guards the master again with the others.
        wait_sentinels_guard(deployment, fleet, targets, sentinels, i, step_timeout).await?;
    }
    Ok(outcome)
}

/// Waits until every sentinel guards the master the replicas follow
/// (if any), after sentinel `i` restarted.
async fn wait_sentinels_guard(
    deployment: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    sentinels: &[Target],
    i: &Instance,
    step_timeout: Duration,
) -> Result<(), Error> {
    let observed = crate::form::observe_all(fleet, targets).await;
    if let Some(master) = crate::fleet::followed_master(targets, &observed) {
        crate::sentinel::wait_guarding(
            fleet,
            sentinels,
            &deployment.inventory.deployment.name,
            master,
            targets.len().saturating_sub(1) as u32,
            Instant::now() + step_timeout,
        )
        .await
        .map_err(|problems| {
            Error::NotConverged(format!(
                "{} restarted, but the sentinels do not all guard the master yet:\n{}",
                i.label(),
                problems
                    .iter()
                    .map(|p| format!("    - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        })?;
    }
    Ok(())
}

/// What prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<String>,
    /// Instances the inventory does not list that still matter, and why.
    pub kept: Vec<(String, String)>,
}

impl PruneReport {
    /// What `paddock prune` prints; `cluster_inventory`: the inventory, when
    /// it is a cluster's (whose nodes `apply` then makes forget the removed).
    pub fn render(&self, purge_data: bool, cluster_inventory: Option<&Path>) -> String {
        let mut out = String::new();
        if self.removed.is_empty() && self.kept.is_empty() {
            out.push_str(
                "Nothing to prune: every instance of the deployment is in the inventory.\n",
            );
        }
        for r in &self.removed {
            let data = if purge_data {
                " and its data"
            } else {
                " (its data stays on disk)"
            };
            out.push_str(&format!("removed {r}{data}\n"));
        }
        for (k, why) in &self.kept {
            out.push_str(&format!("kept {k}: {why}\n"));
        }
        if let (false, Some(inventory)) = (self.removed.is_empty(), cluster_inventory) {
            out.push_str(&format!(
                "`paddock apply -i {}` makes the cluster forget the removed nodes.\n",
                inventory.display()
            ));
        }
        out
    }
}

/// What stop, start and restart print: each instance with its state now.
pub fn render_outcomes(verb: &str, done: &[Outcome]) -> String {
    if done.is_empty() {
        return format!("{verb} nothing: the deployment has no instances on its agents.\n");
    }
    done.iter()
        .map(|o| format!("{verb} {} (now {})\n", o.label, o.state.as_str()))
        .collect()
}

/// One instance's own view: CLUSTER NODES (cluster topology) and INFO
/// replication. None when it does not answer.
async fn observe_instance(fleet: &Fleet, i: &Instance, cluster: bool) -> Option<Observation> {
    let agent = fleet.agent(i.host).ok()?;
    let info = agent
        .redis(&i.name, &[&["INFO", "replication"]])
        .await
        .ok()?;
    let repl = crate::engine::observe::parse_replication(&info.first().and_then(Reply::text)?);
    let nodes = if cluster {
        let r = agent.redis(&i.name, &[&["CLUSTER", "NODES"]]).await.ok()?;
        parse_nodes(&r.first().and_then(Reply::text)?)
    } else {
        Vec::new()
    };
    Some(Observation {
        nodes,
        state_ok: true,
        link_up: repl.link_up,
        role_master: repl.role_master,
        master_addr: repl.master_addr,
        replicas_online: repl.replicas_online,
    })
}

/// `paddock prune`: stops and removes the instances of the deployment that
/// the inventory no longer lists, once they serve no slots and hold no
/// master role; their data stays on disk unless `purge_data`.
pub async fn prune(
    path: &Path,
    purge_data: bool,
    progress: bool,
    security: Security,
) -> Result<PruneReport, Error> {
    let progress = Progress::new(progress);
    leased(path, security, async |deployment, fleet| {
        let listed = list_deployment(deployment, fleet).await?;
        let targets = deployment.targets();
        let sentinels = deployment.sentinels(deployment.placed_master());
        let listed_by_inventory = |i: &Instance| {
            targets
                .iter()
                .chain(&sentinels)
                .any(|t: &Target| t.host == i.host && t.instance == i.name)
        };
        let cluster =
            deployment.inventory.deployment.topology == paddock_inventory::Topology::Cluster;
        let views: Vec<Option<Observation>> = join_all(listed.iter().map(|i| async move {
            if i.state == InstanceState::Running {
                observe_instance(fleet, i, cluster).await
            } else {
                None
            }
        }))
        .await;
        let mut report = PruneReport::default();
        let name = &deployment.inventory.deployment.name;
        for (k, i) in listed.iter().enumerate() {
            if listed_by_inventory(i) {
                continue;
            }
            let me = (deployment.inventory.hosts[i.host].address, i.port);
            let others: Vec<&Observation> = views
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .filter_map(|(_, o)| o.as_ref())
                .collect();
            if let Some(why) = prune_verdict(me, views[k].as_ref(), &others) {
                report.kept.push((i.label(), why));
                continue;
            }
            let agent = fleet.agent(i.host)?;
            if i.state != InstanceState::Stopped {
                progress.step(format!(
                    "{}: stopping (was {})",
                    i.label(),
                    i.state.as_str()
                ));
                agent.stop(&i.name).await?;
            }
            agent.remove(&i.name, name, purge_data).await?;
            progress.step(format!(
                "{}: removed{}",
                i.label(),
                if purge_data { " with its data" } else { "" }
            ));
            report.removed.push(i.label());
        }
        Ok(report)
    })
    .await
}

/// `paddock destroy`: stops and removes every instance of the deployment
/// on every agent (the inventory's and any it no longer lists); their data
/// stays on disk unless `purge_data`. The caller has confirmed.
pub async fn destroy(
    path: &Path,
    purge_data: bool,
    progress: bool,
    security: Security,
) -> Result<Vec<String>, Error> {
    let progress = Progress::new(progress);
    leased(path, security, async |deployment, fleet| {
        let listed = list_deployment(deployment, fleet).await?;
        stop_ordered(deployment, fleet, &listed, &progress).await?;
        let name = &deployment.inventory.deployment.name;
        let removes = listed.iter().map(|i| async move {
            fleet
                .agent(i.host)?
                .remove(&i.name, name, purge_data)
                .await?;
            Ok::<_, Error>(i.label())
        });
        let removed = join_all(removes)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        progress.step(format!("removed {} instance(s)", removed.len()));
        Ok(removed)
    })
    .await
}

/// Whether `destroy` may go ahead: `--yes`, or the deployment's name typed
/// on a terminal. Without a terminal nobody can type it, so only `--yes`.
pub fn destroy_confirmed(yes: bool, typed: Option<&str>, name: &str) -> bool {
    yes || typed.is_some_and(|t| t.trim() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(host: usize, name: &str) -> Instance {
        Instance {
            host,
            host_name: ["a", "b"][host].into(),
            name: name.into(),
            port: 7000,
            state: InstanceState::Running,
        }
    }

    #[test]
    fn select_by_host_or_instance() {
        let hosts = vec!["a".to_string(), "b".to_string()];
        let listed = vec![
            inst(0, "redis-7000"),
            inst(0, "redis-7001"),
            inst(1, "redis-7000"),
        ];
        let labels = |w: &[&str]| {
            let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            select(&hosts, &listed, &w).map(|v| v.iter().map(Instance::label).collect::<Vec<_>>())
        };
        type Case<'a> = (&'a [&'a str], Result<Vec<&'a str>, &'a str>);
        let cases: Vec<Case<'_>> = vec![
            (
                &[],
                Ok(vec!["a:redis-7000", "a:redis-7001", "b:redis-7000"]),
            ),
            (&["a"], Ok(vec!["a:redis-7000", "a:redis-7001"])),
            (
                &["b:redis-7000", "a:redis-7001"],
                Ok(vec!["a:redis-7001", "b:redis-7000"]),
            ),
            (
                &["a", "a:redis-7000"],
                Ok(vec!["a:redis-7000", "a:redis-7001"]),
            ),
            (
                &["c"],
                Err("no host named \"c\" in the inventory; its hosts are: a, b"),
            ),
            (&["b:redis-7009"], Err("it has: redis-7000")),
        ];
        for (wanted, want) in cases {
            match (labels(wanted), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{wanted:?}"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{wanted:?}: {e}"),
                (got, want) => panic!("{wanted:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn prune_keeps_what_serves_or_leads() {
        let ip: IpAddr = "127.0.1.2".parse().unwrap();
        let me = (ip, 7001);
        let nodes = |text: &str| Observation {
            nodes: parse_nodes(text),
            ..Default::default()
        };
        let replica = nodes(
            "r 127.0.1.2:7001@17001 myself,slave m 0 0 1 connected\n\
             m 127.0.1.1:7000@17000 master - 0 0 1 connected 0-5460\n",
        );
        let empty_master = nodes("e 127.0.1.2:7001@17001 myself,master - 0 0 0 connected\n");
        let serving = nodes("s 127.0.1.2:7001@17001 myself,master - 0 0 4 connected 0-5460\n");
        let peer_sees_slots = nodes(
            "m 127.0.1.1:7000@17000 myself,master - 0 0 1 connected 5461-10921\n\
             s 127.0.1.2:7001@17001 master,fail - 0 0 4 connected 0-5460\n",
        );
        let peer_sees_replica = nodes(
            "m 127.0.1.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
             r 127.0.1.2:7001@17001 slave,fail m 0 0 1 connected\n",
        );
        let standalone_master = Observation {
            role_master: Some(true),
            ..Default::default()
        };
        let follower = Observation {
            role_master: Some(false),
            master_addr: Some(me),
            ..Default::default()
        };
        let sentinel = Observation::default();
        type Case<'a> = (
            &'a str,
            Option<&'a Observation>,
            Vec<&'a Observation>,
            Option<&'a str>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "a cluster replica",
                Some(&replica),
                vec![&peer_sees_replica],
                None,
            ),
            (
                "an empty cluster master (a refused scale-out)",
                Some(&empty_master),
                vec![],
                None,
            ),
            (
                "a master serving slots",
                Some(&serving),
                vec![],
                Some("it serves slots 0-5460"),
            ),
            (
                "stopped, still assigned slots",
                None,
                vec![&peer_sees_slots],
                Some("the cluster still assigns it slots 0-5460"),
            ),
            ("stopped replica", None, vec![&peer_sees_replica], None),
            (
                "the replication master",
                Some(&standalone_master),
                vec![&follower],
                Some("it is a master (role:master)"),
            ),
            (
                "stopped, still followed",
                None,
                vec![&follower],
                Some("1 instance(s) replicate from it"),
            ),
            ("a sentinel of nobody", Some(&sentinel), vec![], None),
        ];
        for (name, own, others, want) in cases {
            assert_eq!(prune_verdict(me, own, &others).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn destroy_needs_yes_or_the_typed_name() {
        assert!(destroy_confirmed(true, None, "lab"));
        assert!(destroy_confirmed(false, Some("lab\n"), "lab"));
        assert!(!destroy_confirmed(false, Some("la"), "lab"));
        assert!(!destroy_confirmed(false, None, "lab"));
    }
}
