//! Carrying out a plan's steps, phase by phase, in the plan's order:
//! install, promote, write configs, restart, start, restore timeouts, form,
//! repair open or unserved slots, spread masters, sentinels. Each phase reports the steps it carried out.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::client::Facts;
use crate::engine::step::{Handover, Plan, Step};
use crate::fleet::{Target, host_problems};

/// What one execution of a plan did.
#[derive(Debug, Default)]
pub struct Executed {
    pub steps: Vec<Step>,
    /// Changes left undone, and why (restarts whose replica cannot take
    /// over).
    pub skipped: Vec<String>,
    /// From the first CLUSTER MEET to a converged cluster.
    pub formation: Option<Duration>,
}

pub use crate::engine::scene::Scene;

pub(crate) use crate::fleet::start_instance as start;

/// Carries out `plan` (passwords already created by the caller). `facts`
/// are the hosts' as asked before planning; the hosts must be able to run
/// what is placed on them once redis-server is installed.
pub async fn execute(
    scene: &Scene<'_>,
    plan: &Plan,
    facts: &mut [Option<Facts>],
) -> Result<Executed, Error> {
    let mut done = Executed::default();
    install(scene, plan, facts, &mut done).await?;
    let problems = host_problems(scene.deployment, facts);
    if !problems.is_empty() {
        return Err(Error::HostCheck(problems));
    }
    promote(scene, plan, &mut done).await?;
    put_configs(scene, plan, &mut done).await?;
    let together = restart(scene, plan, &mut done).await?;
    start_instances(scene, plan, &together, &mut done).await?;
    node_timeouts(scene, plan, &mut done).await?;
    form(scene, plan, &mut done).await?;
    reshape(scene, plan, &mut done).await?;
    sentinels(scene, plan, &mut done).await?;
    Ok(done)
}

fn of<'p>(plan: &'p Plan, pick: impl Fn(&Step) -> bool + 'p) -> Vec<&'p Step> {
    plan.steps.iter().filter(|s| pick(s)).collect()
}

async fn install(
    scene: &Scene<'_>,
    plan: &Plan,
    facts: &mut [Option<Facts>],
    done: &mut Executed,
) -> Result<(), Error> {
    let hosts = &scene.deployment.inventory.hosts;
    let steps = of(plan, |s| matches!(s, Step::InstallRedis { .. }));
    let installs = steps.iter().map(|s| async move {
        let Step::InstallRedis { host } = s else {
            unreachable!()
        };
        let h = hosts
            .iter()
            .position(|x| x.name == *host)
            .expect("planned host");
        let agent = scene.fleet.agent(h)?;
        scene.progress.step(format!(
            "{}: redis-server is missing; its agent installs it",
            agent.host()
        ));
        agent.ensure_redis().await.map(|f| (h, f))
    });
    for r in join_all(installs).await {
        let (h, f) = r?;
        facts[h] = Some(f);
    }
    done.steps.extend(steps.into_iter().cloned());
    Ok(())
}

async fn promote(scene: &Scene<'_>, plan: &Plan, done: &mut Executed) -> Result<(), Error> {
    let steps = of(plan, |s| matches!(s, Step::PromoteHeir { .. }));
    if steps.is_empty() {
        return Ok(());
    }
    crate::form::promote_heirs(
        scene.fleet,
        scene.targets,
        scene.deployment.inventory.deployment.masters,
        Instant::now() + scene.timeout,
        scene.progress,
    )
    .await?;
    done.steps.extend(steps.into_iter().cloned());
    Ok(())
}

/// Config writes and settings set live (CONFIG SET, ACL SETUSER /
/// DELUSER on the running process, no restart), all instances at once;
/// carried out in the plan's order.
async fn put_configs(scene: &Scene<'_>, plan: &Plan, done: &mut Executed) -> Result<(), Error> {
    let steps = of(plan, |s| match s {
        Step::PutConfig { target, .. } | Step::SetLive { target, .. } => {
            scene.target(target).is_some()
        }
        _ => false,
    });
    if steps.is_empty() {
        return Ok(());
    }
    let puts = steps.iter().map(|s| async move {
        match s {
            Step::PutConfig { target, .. } => {
                let t = scene.target(target).expect("filtered");
                let put = scene.fleet.agent(t.host)?.put_instance(&t.spec, false);
                Ok(put.await?.changed)
            }
            Step::SetLive { target, keys } => {
                let t = scene.target(target).expect("filtered");
                scene.progress.step(format!(
                    "{target}: setting {} setting(s) live (CONFIG SET / ACL SETUSER)",
                    keys.len()
                ));
                crate::engine::live::set_live(scene.fleet, t.host, &t.host_name, &t.spec, keys)
                    .await
                    .map(|()| true)
            }
            _ => unreachable!(),
        }
    });
    let outcomes = join_all(puts)
        .await
        .into_iter()
        .collect::<Result<Vec<bool>, Error>>()?;
    let written = outcomes.iter().filter(|&&c| c).count();
    scene.progress.step(format!("wrote {written} config(s)"));
    done.steps.extend(steps.into_iter().cloned());
    Ok(())
}

/// Restarts: together (stopped here, started with the others) or one at a
/// time with a handover. Returns the ones stopped to start together.
async fn restart(
    scene: &Scene<'_>,
    plan: &Plan,
    done: &mut Executed,
) -> Result<Vec<String>, Error> {
    let mut together = Vec::new();
    let mut rolling = Vec::new();
    for s in &plan.steps {
        if let Step::Restart { target, handover } = s
            && let Some(i) = scene.index(target)
        {
            if *handover == Handover::Together {
                together.push(target.clone());
            } else {
                rolling.push(i);
            }
        }
    }
    if !together.is_empty() {
        // Nothing healthy to protect: stop them together; they start with
        // the others and formation follows.
        scene.progress.step(format!(
            "restarting {} instance(s) for their new config",
            together.len()
        ));
        let stops = together.iter().map(|l| async move {
            let t = scene.target(l).expect("planned target");
            scene.fleet.agent(t.host)?.stop(&t.instance).await
        });
        join_all(stops)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        done.steps.extend(together.iter().map(|l| Step::Restart {
            target: l.clone(),
            handover: Handover::Together,
        }));
    }
    if !rolling.is_empty() {
        let steps = crate::engine::rolling::rolling_restart(
            scene.fleet,
            scene.targets,
            scene.sentinels,
            &scene.deployment.inventory.deployment.name,
            &rolling,
            "for its new config",
            scene.timeout,
            scene.progress,
            &mut done.skipped,
        )
        .await?;
        done.steps.extend(steps);
    }
    Ok(together)
}

/// Starts the planned instances (and those stopped to restart together),
/// masters and replicas at once: a fresh master's 2 s writable delay starts
/// with its process, so formation runs inside it.
async fn start_instances(
    scene: &Scene<'_>,
    plan: &Plan,
    together: &[String],
    done: &mut Executed,
) -> Result<(), Error> {
    let steps = of(
        plan,
        |s| matches!(s, Step::Start { target, .. } if scene.target(target).is_some()),
    );
    let mut labels: Vec<&str> = together.iter().map(String::as_str).collect();
    for s in &steps {
        if let Step::Start { target, .. } = s {
            labels.push(target);
        }
    }
    if labels.is_empty() {
        return Ok(());
    }
    scene
        .progress
        .step(format!("starting {} instance(s)", labels.len()));
    let starts = labels.iter().map(|l| async move {
        let t = scene.target(l).expect("planned target");
        start(scene.fleet, t).await
    });
    join_all(starts)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, Error>>()?;
    scene.progress.step("all instances answer");
    done.steps.extend(steps.into_iter().cloned());
    Ok(())
}

async fn node_timeouts(scene: &Scene<'_>, plan: &Plan, done: &mut Executed) -> Result<(), Error> {
    let steps = of(plan, |s| matches!(s, Step::RestoreNodeTimeout { .. }));
    let acted: Vec<Target> = steps
        .iter()
        .filter_map(|s| match s {
            Step::RestoreNodeTimeout { target, .. } => scene.target(target).cloned(),
            _ => None,
        })
        .collect();
    if acted.is_empty() {
        return Ok(());
    }
    scene
        .progress
        .step("restoring cluster-node-timeout left short by an interrupted formation");
    crate::form::set_node_timeout(scene.fleet, &acted, |t| t.spec.cluster_node_timeout_ms())
        .await?;
    done.steps.extend(steps.into_iter().cloned());
    Ok(())
}

async fn form(scene: &Scene<'_>, plan: &Plan, done: &mut Executed) -> Result<(), Error> {
    let masters = scene.deployment.inventory.deployment.masters;
    for s in &plan.steps {
        match s {
            Step::FormCluster { .. } => {
                let report = crate::form::form_keeping(
                    scene.fleet,
                    scene.targets,
                    &scene.deployment.leaving(),
                    masters,
                    scene.timeout,
                    scene.progress,
                )
                .await?;
                done.formation = report.meet_to_converged;
            }
            Step::FixSlots { .. } => {
                // Re-observed: what the plan showed may have moved on.
                let report = crate::engine::fix::fix_slots(scene).await?;
                scene.progress.step(format!(
                    "repaired {} slot(s), {} key(s) moved",
                    report.slots, report.keys
                ));
            }
            Step::Rebalance { .. } => {
                crate::engine::rolling::restore_balance(
                    scene.fleet,
                    scene.targets,
                    scene.timeout,
                    scene.progress,
                )
                .await?;
            }
            _ => continue,
        }
        done.steps.push(s.clone());
    }
    Ok(())
}

/// A change of shape: take-overs from masters that leave, slot moves
/// (`engine::migrate`, over the targets and the instances that leave), then
/// the removal of drained nodes.
async fn reshape(scene: &Scene<'_>, plan: &Plan, done: &mut Executed) -> Result<(), Error> {
    for s in &plan.steps {
        if let Step::TakeOver { target, from } = s {
            let i = scene.index(target).expect("planned target");
            scene.progress.step(format!(
                "{target}: taking over from {from} (CLUSTER FAILOVER)"
            ));
            crate::failover::cluster_failover(
                scene.fleet,
                scene.targets,
                i,
                Instant::now() + scene.timeout,
            )
            .await?;
            done.steps.push(s.clone());
        }
    }
    let leaving = scene.deployment.leaving();
    let all: Vec<Target> = scene.targets.iter().chain(&leaving).cloned().collect();
    let wide = Scene {
        targets: &all,
        ..*scene
    };
    for s in &plan.steps {
        if let Step::MoveSlots { moves } = s {
            let slots: u32 = moves.iter().map(|m| m.slots()).sum();
            scene
                .progress
                .step(format!("moving {slots} slot(s) in {} move(s)", moves.len()));
            crate::engine::migrate::move_slots(&wide, moves).await?;
            done.steps.push(s.clone());
        }
    }
    let removals: Vec<&Step> = of(plan, |s| matches!(s, Step::RemoveNode { .. }));
    if removals.is_empty() {
        return Ok(());
    }
    let gone: Vec<(Target, String)> = removals
        .iter()
        .filter_map(|s| match s {
            Step::RemoveNode { target, node_id } => leaving
                .iter()
                .find(|t| t.label() == *target)
                .map(|t| (t.clone(), node_id.clone())),
            _ => None,
        })
        .collect();
    crate::engine::remove::remove_nodes(scene, &gone).await?;
    done.steps.extend(removals.into_iter().cloned());
    Ok(())
}

fn is_sentinel_step(scene: &Scene<'_>, s: &Step) -> bool {
    let sentinel = |l: &str| scene.sentinels.iter().any(|t| t.label() == l);
    match s {
        Step::PutConfig { target, .. }
        | Step::SetLive { target, .. }
        | Step::Start { target, .. } => sentinel(target),
        Step::RepairSentinels { .. } => true,
        _ => false,
    }
}

/// The sentinels, seeded with the master the replicas follow now: after a
/// failover that is not the one placement chose.
async fn sentinels(scene: &Scene<'_>, plan: &Plan, done: &mut Executed) -> Result<(), Error> {
    let steps = of(plan, |s| is_sentinel_step(scene, s));
    if steps.is_empty() || scene.sentinels.is_empty() {
        return Ok(());
    }
    let observed = crate::form::observe_all(scene.fleet, scene.targets).await;
    let d = scene.deployment;
    let master = crate::fleet::followed_master(scene.targets, &observed)
        .unwrap_or_else(|| d.placed_master());
    crate::sentinel::converge(
        scene.fleet,
        &d.sentinels(master),
        master,
        scene.targets.len().saturating_sub(1) as u32,
        scene.timeout,
        scene.progress,
    )
    .await?;
    done.steps.extend(steps.into_iter().cloned());
    Ok(())
}
