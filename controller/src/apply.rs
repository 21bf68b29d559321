//! `paddock apply`: push specs, start instances, form the cluster. A second
//! run on a healthy deployment changes nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::client::{InstanceState, Security};
use crate::cluster::Observation;
use crate::fleet::{Deployment, Fleet, Target, host_problems};
use crate::form;
use crate::plan::{Change, Observed, Plan, make_plan, observe};
use crate::progress::Progress;
use crate::secrets;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Form the cluster after starting instances (off: only configs and starts).
    pub form: bool,
    pub progress: bool,
    /// How long formation (and each step of a rolling restart) may take.
    pub converge_timeout: Duration,
    /// `--limit`: the hosts to change (names or addresses; empty: all).
    pub limit: Vec<String>,
    /// How the agents are reached (`--insecure-plaintext`).
    pub security: Security,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            form: true,
            progress: true,
            converge_timeout: Duration::from_secs(60),
            limit: Vec::new(),
            security: Security::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApplyReport {
    pub plan: Plan,
    pub changed: bool,
    pub total: Duration,
    /// From the first CLUSTER MEET to a converged cluster, when formation ran.
    pub formation: Option<Duration>,
    /// What was not done: hosts left alone, and a cluster repair that needs
    /// them.
    pub skipped: Vec<String>,
    /// Something was left undone that the deployment needs: a host whose
    /// agent did not answer, a repair or a restart that needed one.
    /// (Hosts left out by `--limit` alone are not.)
    pub incomplete: bool,
}

impl ApplyReport {
    /// 3 when a host's agent did not answer (done where it could be, as
    /// ansible-playbook for unreachable hosts); 1 when a repair or restart
    /// the deployment needs was skipped for another reason (`--limit`).
    pub fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        let unreachable = self
            .plan
            .skipped
            .iter()
            .any(|s| matches!(s.reason, crate::plan::SkipReason::Unreachable(_)));
        match (unreachable, self.incomplete) {
            (true, _) => Exit::Unreachable,
            (false, true) => Exit::Failed,
            (false, false) => Exit::Done,
        }
    }
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.skipped {
            writeln!(f, "{s}")?;
        }
        if self.changed {
            writeln!(
                f,
                "Applied {} change(s) in {:.3}s{}.",
                self.plan.changes.len(),
                self.total.as_secs_f64(),
                self.formation
                    .map(|t| format!(
                        " (cluster formed in {:.3}s from the first MEET)",
                        t.as_secs_f64()
                    ))
                    .unwrap_or_default()
            )
        } else {
            writeln!(
                f,
                "Nothing to do: {} is as the inventory says{} ({:.3}s).",
                self.plan.summary,
                if self.skipped.is_empty() {
                    ""
                } else {
                    " on the hosts acted on"
                },
                self.total.as_secs_f64()
            )
        }
    }
}

async fn observe_deployment(
    deployment: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    sentinels: &[Target],
    in_limit: &[bool],
) -> Result<Observed, Error> {
    let names: Vec<String> = deployment
        .inventory
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .collect();
    observe(
        fleet,
        targets,
        sentinels,
        &deployment.inventory.deployment.name,
        &names,
        in_limit,
    )
    .await
}

/// Dials every agent; fails when none of the hosts in the limit answers.
async fn connect_limited(deployment: &Deployment, in_limit: &[bool]) -> Result<Fleet, Error> {
    let fleet = Fleet::connect(deployment).await;
    if !(0..in_limit.len()).any(|h| in_limit[h] && fleet.reachable(h)) {
        let errors: Vec<String> = (0..in_limit.len())
            .filter(|&h| in_limit[h])
            .filter_map(|h| fleet.agent_error(h).map(str::to_owned))
            .collect();
        return Err(Error::AgentDown(errors.join("\n")));
    }
    Ok(fleet)
}

/// Computes the plan without changing anything; `limit` (host names or
/// addresses) restricts it to those hosts' instances.
pub async fn plan(path: &Path, limit: &[String], security: Security) -> Result<Plan, Error> {
    let deployment = Deployment::load(path, false, security)?;
    let in_limit = crate::fleet::limit_hosts(&deployment.inventory, limit)?;
    let fleet = connect_limited(&deployment, &in_limit).await?;
    let targets = deployment.targets();
    let sentinels = deployment.sentinels(deployment.placed_master());
    let observed = observe_deployment(&deployment, &fleet, &targets, &sentinels, &in_limit).await?;
    let mut plan = make_plan(&deployment, &targets, &sentinels, &observed);
    // What apply would refuse or install on each host (apply asks only
    // when it has changes to make, so a no-op apply stays fast).
    // Only the hosts acted on: the others are skipped (and named) already.
    let facts = join_all((0..deployment.inventory.hosts.len()).map(|h| {
        let (fleet, acting) = (&fleet, &observed.acting);
        async move {
            if !acting[h] {
                return Ok(None);
            }
            fleet.agent(h)?.facts().await.map(Some)
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, Error>>()?;
    for (host, f) in deployment.inventory.hosts.iter().zip(&facts) {
        let Some(f) = f else { continue };
        let check = crate::fleet::redis_check(f);
        if check == crate::fleet::RedisCheck::Install {
            plan.changes.insert(
                0,
                Change::InstallRedis {
                    host: host.name.clone(),
                },
            );
        } else if let Some(problem) = check.problem(&host.name) {
            plan.changes.insert(0, Change::Refused { problem });
        }
    }
    if deployment.password.is_none() {
        plan.changes.insert(
            0,
            Change::Create {
                target: format!("password file {}", deployment.password_path.display()),
            },
        );
    }
    Ok(plan)
}

pub async fn apply(path: &Path, options: &ApplyOptions) -> Result<ApplyReport, Error> {
    let deployment = Deployment::load(path, false, options.security)?;
    let in_limit = crate::fleet::limit_hosts(&deployment.inventory, &options.limit)?;
    let fleet = connect_limited(&deployment, &in_limit).await?;
    let name = deployment.inventory.deployment.name.clone();
    let holder = crate::fleet::lock_holder();
    fleet.lock(&name, &holder).await?;
    let result = apply_locked(deployment, &fleet, options, &in_limit).await;
    fleet.unlock(&name, &holder).await;
    result
}

async fn apply_locked(
    mut deployment: Deployment,
    fleet: &Fleet,
    options: &ApplyOptions,
    in_limit: &[bool],
) -> Result<ApplyReport, Error> {
    let started = Instant::now();
    let progress = Progress::new(options.progress);
    let mut targets = deployment.targets();
    let mut sentinels = deployment.sentinels(deployment.placed_master());
    let observed = observe_deployment(&deployment, fleet, &targets, &sentinels, in_limit).await?;
    // Refused before anything is written or started: new instances of a
    // changed `masters` would otherwise be left as empty masters.
    if let Some(r) = crate::plan::reshard(&deployment, &observed) {
        return Err(Error::Reshard {
            deployment: deployment.inventory.deployment.name.clone(),
            serving: r.serving,
            wanted: r.wanted,
        });
    }
    let acting = observed.acting.clone();
    let acts_on = |t: &Target| acting[t.host];
    // Formation and repair may touch any node: only with every host.
    let whole = acting.iter().all(|&a| a);
    let mut skipped: Vec<String> = observed.skipped.iter().map(ToString::to_string).collect();
    let unreachable = observed
        .skipped
        .iter()
        .any(|s| matches!(s.reason, crate::plan::SkipReason::Unreachable(_)));
    let hosts_skipped = skipped.len();
    for s in &skipped {
        progress.step(s.clone());
    }
    if deployment.password.is_none() {
        // A new password pushed to running instances would lock every
        // client out: only a deployment that runs nowhere gets one.
        if observed
            .targets
            .iter()
            .chain(&observed.sentinels)
            .any(|s| s.status.is_some())
        {
            return Err(Error::Unsupported(format!(
                "the agents already run deployment {:?}, but its Redis password file {} is missing.\n  \
                 hint: copy it from the workstation that applied this deployment; \
                 creating a new one would change the password under every running client",
                deployment.inventory.deployment.name,
                deployment.password_path.display()
            )));
        }
        deployment.password = secrets::load_or_create(&deployment.password_path, true)?;
        targets = deployment.targets();
        sentinels = deployment.sentinels(deployment.placed_master());
    }
    // ACL users get their passwords on the apply that first declares them.
    if deployment.user_passwords.iter().any(Option::is_none) {
        deployment.create_user_passwords()?;
        targets = deployment.targets();
        sentinels = deployment.sentinels(deployment.placed_master());
    }
    let plan = make_plan(&deployment, &targets, &sentinels, &observed);
    let states = &observed.targets;
    if plan.is_empty() {
        return Ok(ApplyReport {
            plan,
            changed: false,
            total: started.elapsed(),
            formation: None,
            skipped,
            incomplete: unreachable,
        });
    }
    let orphans: Vec<&str> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Orphan { target } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    if !orphans.is_empty() {
        return Err(Error::Unsupported(format!(
            "the agents have instances of deployment {:?} that the inventory does not list: {}\n  \
             hint: they may hold its data (a changed [redis] port renames every instance); \
             put the inventory back, or remove them with `paddock prune -i INVENTORY` \
             (it keeps any that still serve slots or hold the master role), then apply again",
            deployment.inventory.deployment.name,
            orphans.join(", ")
        )));
    }
    progress.step(format!(
        "deployment {}: {} change(s) planned",
        plan.summary,
        plan.changes.len()
    ));

    // The hosts must be able to run what is placed on them; a host without
    // redis-server (and no path of its own configured) gets it installed by
    // its agent.
    let progress = &progress;
    let acting_hosts = &acting;
    let facts = join_all((0..deployment.inventory.hosts.len()).map(|h| async move {
        if !acting_hosts[h] {
            return Ok(None);
        }
        let agent = fleet.agent(h)?;
        let facts = agent.facts().await?;
        if crate::fleet::redis_check(&facts) != crate::fleet::RedisCheck::Install {
            return Ok(Some(facts));
        }
        progress.step(format!(
            "{}: redis-server is missing; its agent installs it",
            agent.host()
        ));
        agent.ensure_redis().await.map(Some)
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, Error>>()?;
    let problems = host_problems(&deployment, &facts);
    if !problems.is_empty() {
        return Err(Error::HostCheck(problems));
    }

    // A shard whose master is gone for good gets its replica promoted before
    // anything starts at the old master's address.
    if whole && observed.targets.iter().any(|s| s.cluster.is_some()) {
        form::promote_heirs(
            fleet,
            &targets,
            deployment.inventory.deployment.masters,
            Instant::now() + options.converge_timeout,
            progress,
        )
        .await?;
    }

    // Specs first, all agents in parallel.
    let to_put: Vec<&Target> = targets
        .iter()
        .zip(states)
        .filter(|(t, s)| acts_on(t) && (s.status.is_none() || s.put.changed))
        .map(|(t, _)| t)
        .collect();
    if !to_put.is_empty() {
        let puts = to_put
            .iter()
            .map(|t| async move { fleet.agent(t.host)?.put_instance(&t.spec, false).await });
        let outcomes = join_all(puts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        let written = outcomes.iter().filter(|o| o.changed).count();
        progress.step(format!("wrote {written} config(s)"));
    }

    // Running instances whose config changed restart to pick it up; also
    // those whose config an earlier, interrupted apply already wrote.
    let cluster_was_healthy = !plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::Cluster { .. }));
    let restarts: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(i, s)| acts_on(&targets[*i]) && is_running(s) && s.put.restart_needed)
        .map(|(i, _)| i)
        .collect();
    if !restarts.is_empty() {
        if cluster_was_healthy {
            rolling_restart(
                fleet,
                &targets,
                &sentinels,
                &deployment.inventory.deployment.name,
                &restarts,
                "for its new config",
                options.converge_timeout,
                progress,
                &mut skipped,
            )
            .await?;
        } else if !whole {
            // Restarting together is only safe when formation follows,
            // and it does not without every host.
            for &i in &restarts {
                let s = format!(
                    "{}: restart for its new config skipped: the cluster is not healthy and repairing it needs every host",
                    targets[i].label()
                );
                progress.step(s.clone());
                skipped.push(s);
            }
        } else {
            // Nothing healthy to protect: restart them together.
            progress.step(format!(
                "restarting {} instance(s) for their new config",
                restarts.len()
            ));
            let targets = &targets;
            let stops = restarts.iter().map(|&i| async move {
                fleet
                    .agent(targets[i].host)?
                    .stop(&targets[i].instance)
                    .await
            });
            join_all(stops)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, Error>>()?;
        }
    }

    // Start everything not running, masters and replicas at once: a fresh
    // master's 2 s writable delay starts with its process, so formation runs
    // inside it.
    let current = observe_deployment(&deployment, fleet, &targets, &[], in_limit).await?;
    let to_start: Vec<&Target> = targets
        .iter()
        .zip(&current.targets)
        .filter(|(t, s)| acts_on(t) && !is_running(s))
        .map(|(t, _)| t)
        .collect();
    if !to_start.is_empty() {
        progress.step(format!("starting {} instance(s)", to_start.len()));
        join_all(to_start.iter().map(|t| start(fleet, t)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        progress.step("all instances answer");
    }

    if plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::RestoreNodeTimeout { .. }))
    {
        progress.step("restoring cluster-node-timeout left short by an interrupted formation");
        let acted: Vec<Target> = targets.iter().filter(|t| acts_on(t)).cloned().collect();
        form::set_node_timeout(fleet, &acted, |t| t.spec.cluster_node_timeout_ms()).await?;
    }

    let mut formation = None;
    let repair = plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::Cluster { .. } | Change::Sentinels { .. }));
    if options.form && !whole {
        // The cluster as it is may be fine without the hosts left alone
        // (their Redis serves on); forming or repairing it is not.
        if repair {
            let s = "cluster repair: skipped, it needs every host (run apply without --limit once all agents answer)".to_owned();
            progress.step(s.clone());
            skipped.push(s);
        }
    } else if options.form {
        let report = form::form(
            fleet,
            &targets,
            deployment.inventory.deployment.masters,
            options.converge_timeout,
            progress,
        )
        .await?;
        formation = report.meet_to_converged;
        if targets
            .iter()
            .any(|t| t.spec.mode == crate::client::RedisMode::Cluster)
        {
            restore_balance(fleet, &targets, options.converge_timeout, progress).await?;
        }
        if !sentinels.is_empty() {
            // Seeded with the master the replicas follow now: after a
            // failover that is not the one placement chose.
            let observed = form::observe_all(fleet, &targets).await;
            let master = crate::fleet::followed_master(&targets, &observed)
                .unwrap_or_else(|| deployment.placed_master());
            crate::sentinel::converge(
                fleet,
                &deployment.sentinels(master),
                master,
                targets.len().saturating_sub(1) as u32,
                options.converge_timeout,
                progress,
            )
            .await?;
        }
    }
    Ok(ApplyReport {
        plan,
        changed: true,
        total: started.elapsed(),
        formation,
        incomplete: unreachable || skipped.len() > hosts_skipped,
        skipped,
    })
}

pub(crate) async fn start(fleet: &Fleet, t: &Target) -> Result<(), Error> {
    let status = fleet.agent(t.host)?.start(&t.instance).await?;
    if status.state != InstanceState::Running {
        return Err(Error::Agent {
            host: t.host_name.clone(),
            message: format!(
                "{} did not start: {} ({}); see `paddock logs -i INVENTORY {} {}`",
                t.instance,
                status.state.as_str(),
                status
                    .last_exit
                    .unwrap_or_else(|| "no exit recorded".into()),
                t.host_name,
                t.instance
            ),
        });
    }
    Ok(())
}

/// Restarts instances one at a time so the cluster keeps serving: replicas
/// first; a master hands its shard to an in-sync replica (CLUSTER FAILOVER,
/// which loses no acknowledged write) before it restarts, and comes back as
/// that replica's replica. After each restart the cluster must be healthy
/// again before the next one.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rolling_restart(
    fleet: &Fleet,
    targets: &[Target],
    sentinels: &[Target],
    master_name: &str,
    which: &[usize],
    why: &str,
    step_timeout: Duration,
    progress: &Progress,
    skipped: &mut Vec<String>,
) -> Result<(), Error> {
    let observed = form::observe_all(fleet, targets).await;
    let is_master = |i: usize| {
        observed[i].as_ref().is_some_and(|o| match o.myself() {
            Some(m) => m.is_master() && m.slot_count() > 0,
            // Replication and sentinel topologies: the master by role.
            None => o.role_master == Some(true),
        })
    };
    let mut order: Vec<usize> = which.iter().copied().filter(|&i| !is_master(i)).collect();
    order.extend(which.iter().copied().filter(|&i| is_master(i)));
    for i in order {
        let t = &targets[i];
        let observed = form::observe_all(fleet, targets).await;
        if t.spec.mode != crate::client::RedisMode::Cluster
            && observed[i].as_ref().and_then(|o| o.role_master) == Some(true)
            && targets.len() > 1
        {
            // The same coordinated switch as `paddock failover`: writes
            // paused until a replica has everything, so none is lost.
            crate::failover::hand_over_master(
                fleet,
                targets,
                sentinels,
                master_name,
                step_timeout,
                progress,
            )
            .await?;
        }
        let me = observed[i].as_ref().and_then(Observation::myself).cloned();
        if let Some(me) = me.filter(|m| m.is_master() && m.slot_count() > 0) {
            let replicas: Vec<usize> = (0..targets.len())
                .filter(|&j| {
                    observed[j].as_ref().is_some_and(|o| {
                        o.myself().and_then(|m| m.master_id.as_deref()) == Some(me.id.as_str())
                    })
                })
                .collect();
            // Only an agent that answers can be told to take over.
            let heir = replicas.iter().map(|&j| (j, &targets[j])).find(|(j, h)| {
                fleet.reachable(h.host)
                    && observed[*j]
                        .as_ref()
                        .is_some_and(|o| o.link_up == Some(true))
            });
            if heir.is_none() && replicas.iter().any(|&j| !fleet.reachable(targets[j].host)) {
                // Its replica serves behind an unreachable agent: a restart
                // in place would take the shard down for nothing.
                let s = format!(
                    "{}: restart for its new config skipped: its only replica's agent is unreachable, so it cannot hand its slots over",
                    t.label()
                );
                progress.step(s.clone());
                skipped.push(s);
                continue;
            }
            match heir {
                Some((j, heir)) => {
                    progress.step(format!(
                        "{}: handing its slots to {} (CLUSTER FAILOVER) before restarting",
                        t.label(),
                        heir.label()
                    ));
                    crate::failover::cluster_failover(
                        fleet,
                        targets,
                        j,
                        Instant::now() + step_timeout,
                    )
                    .await?;
                }
                None => progress.step(format!(
                    "{}: no in-sync replica to hand its slots to; restarting it in place",
                    t.label()
                )),
            }
        }
        progress.step(format!("{}: restarting {why}", t.label()));
        fleet.agent(t.host)?.stop(&t.instance).await?;
        start(fleet, t).await?;
        form::wait_healthy(fleet, targets, Instant::now() + step_timeout).await?;
    }
    Ok(())
}

/// Spreads the masters again when one host holds more than its share, or
/// so many that its loss would stop the cluster (`balance::judge`): one
/// coordinated CLUSTER FAILOVER at a time, the cluster healthy again after
/// each. Re-judged from what the nodes report after each round of moves.
pub(crate) async fn restore_balance(
    fleet: &Fleet,
    targets: &[Target],
    step_timeout: Duration,
    progress: &Progress,
) -> Result<(), Error> {
    // A round's moves reach the best spread the replicas allow; a second
    // round only runs if the cluster changed under us meanwhile.
    for _round in 0..3 {
        let observed = form::observe_all(fleet, targets).await;
        let balance = crate::balance::judge(&crate::balance::roles(targets, &observed));
        if balance.moves.is_empty() {
            for w in balance.warnings() {
                progress.step(format!("warning: {w}"));
            }
            for p in balance.blocked() {
                progress.step(format!("warning: {p}; {}", crate::balance::BLOCKED));
            }
            return Ok(());
        }
        for p in balance.fixable() {
            progress.step(format!("masters: {p}"));
        }
        for m in &balance.moves {
            let Some(heir) = targets.iter().position(|t| t.label() == m.to) else {
                continue;
            };
            progress.step(format!("{m}"));
            crate::failover::cluster_failover(fleet, targets, heir, Instant::now() + step_timeout)
                .await?;
            form::wait_healthy(fleet, targets, Instant::now() + step_timeout).await?;
        }
    }
    Ok(())
}

fn is_running(s: &crate::plan::TargetState) -> bool {
    s.status
        .as_ref()
        .is_some_and(|st| st.state == InstanceState::Running)
}
