//! `paddock apply`: push specs, start instances, form the cluster. A second
//! run on a healthy deployment changes nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::client::InstanceState;
use crate::fleet::{Deployment, Fleet, Target, host_problems};
use crate::form;
use crate::plan::{Change, Plan, make_plan, observe};
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Form the cluster after starting instances (off: only configs and starts).
    pub form: bool,
    pub progress: bool,
    /// How long formation may take before apply gives up.
    pub converge_timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            form: true,
            progress: true,
            converge_timeout: Duration::from_secs(60),
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
}

/// Computes the plan without changing anything.
pub async fn plan(path: &Path) -> Result<Plan, Error> {
    let deployment = Deployment::load(path, false)?;
    let fleet = Fleet::connect_all(&deployment).await?;
    let targets = deployment.targets();
    let states = observe(&fleet, &targets).await?;
    let mut plan = make_plan(&deployment, &targets, &states);
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
    let started = Instant::now();
    let progress = Progress::new(options.progress);
    let deployment = Deployment::load(path, true)?;
    let fleet = &Fleet::connect_all(&deployment).await?;
    let targets = deployment.targets();
    let states = observe(fleet, &targets).await?;
    let plan = make_plan(&deployment, &targets, &states);
    let wants_form = plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::Cluster { .. }));
    if plan.is_empty()
        || (!options.form
            && !plan
                .changes
                .iter()
                .any(|c| !matches!(c, Change::Cluster { .. })))
    {
        return Ok(ApplyReport {
            plan,
            changed: false,
            total: started.elapsed(),
            formation: None,
        });
    }
    progress.step(format!(
        "deployment {}: {} change(s) planned",
        plan.summary,
        plan.changes.len()
    ));

    // The hosts must be able to run what is placed on them.
    let facts = join_all(
        (0..deployment.inventory.hosts.len()).map(|h| async move { fleet.agent(h)?.facts().await }),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>, Error>>()?;
    let problems = host_problems(&deployment, &facts);
    if !problems.is_empty() {
        return Err(Error::HostCheck(problems));
    }

    // Specs first, all agents in parallel.
    let to_put: Vec<(&Target, bool)> = targets
        .iter()
        .zip(&states)
        .filter(|(_, s)| s.status.is_none() || s.put.changed)
        .map(|(t, s)| (t, s.put.restart_needed))
        .collect();
    if !to_put.is_empty() {
        let puts = to_put
            .iter()
            .map(|(t, _)| async move { fleet.agent(t.host)?.put_instance(&t.spec, false).await });
        let outcomes = join_all(puts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        let changed = outcomes.iter().filter(|o| o.changed).count();
        progress.step(format!(
            "wrote {changed} config(s) on {} agent(s)",
            count_hosts(to_put.iter().map(|(t, _)| *t))
        ));
    }

    // Instances whose config changed under them restart to pick it up.
    let restarts: Vec<&Target> = to_put.iter().filter(|(_, r)| *r).map(|(t, _)| *t).collect();
    if !restarts.is_empty() {
        progress.step(format!(
            "restarting {} instance(s) for their new config",
            restarts.len()
        ));
        let stops = restarts
            .iter()
            .map(|t| async move { fleet.agent(t.host)?.stop(&t.instance).await });
        join_all(stops)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
    }

    // Start everything not running, masters and replicas at once: a fresh
    // master's 2 s writable delay starts with its process, so formation runs
    // inside it.
    let to_start: Vec<&Target> = targets
        .iter()
        .zip(&states)
        .filter(|(t, s)| !is_running(s) || restarts.iter().any(|r| r.label() == t.label()))
        .map(|(t, _)| t)
        .collect();
    if !to_start.is_empty() {
        progress.step(format!("starting {} instance(s)", to_start.len()));
        let starts = to_start.iter().map(|t| async move {
            let status = fleet.agent(t.host)?.start(&t.instance).await?;
            if status.state != InstanceState::Running {
                return Err(Error::Agent {
                    host: t.host_name.clone(),
                    message: format!(
                        "{} did not start: {} ({}); see its log under the agent's data_dir/instances/{}/redis.log",
                        t.instance,
                        status.state.as_str(),
                        status.last_exit.unwrap_or_else(|| "no exit recorded".into()),
                        t.instance
                    ),
                });
            }
            Ok(())
        });
        join_all(starts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        progress.step("all instances answer PING");
    }

    let mut formation = None;
    let drift = plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::RestoreNodeTimeout { .. }));
    if options.form && (wants_form || !to_start.is_empty() || drift) {
        let report = form::form(
            fleet,
            &targets,
            deployment.inventory.deployment.masters,
            options.converge_timeout,
            &progress,
        )
        .await?;
        formation = report.meet_to_converged;
    }
    Ok(ApplyReport {
        plan,
        changed: true,
        total: started.elapsed(),
        formation,
    })
}

fn is_running(s: &crate::plan::TargetState) -> bool {
    s.status
        .as_ref()
        .is_some_and(|st| st.state == InstanceState::Running)
}

fn count_hosts<'a>(targets: impl Iterator<Item = &'a Target>) -> usize {
    let mut hosts: Vec<usize> = targets.map(|t| t.host).collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts.len()
}
