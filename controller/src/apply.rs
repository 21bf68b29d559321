//! `paddock plan` and `paddock apply`: observe, plan, execute exactly the
//! plan's steps, then observe again and re-plan until nothing is left (or
//! a bound is reached). A second run on a healthy deployment changes
//! nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::client::{Facts, Security};
use crate::engine::execute::execute;
use crate::engine::observe::{Observed, observe};
use crate::engine::plan::{Input, make_plan};
use crate::engine::scene::Scene;
use crate::engine::step::{Plan, Refusal, Step};
use crate::fleet::{Deployment, Fleet, Target};
use crate::progress::Progress;
use crate::secrets;

pub(crate) use crate::engine::rolling::{restore_balance, rolling_restart};

/// Rounds of observe, plan, execute after the first: the steps a phase's
/// outcome makes necessary (formation after starts, sentinels and the
/// masters' spread after a restart).
const MAX_ROUNDS: usize = 4;

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
    /// The plan of the first round, computed from the observations apply
    /// started from.
    pub plan: Plan,
    /// The steps carried out, per round: the first is `plan`'s.
    pub rounds: Vec<Vec<Step>>,
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

/// What `apply --json` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct AppliedJson {
    pub deployment: String,
    pub changed: bool,
    pub incomplete: bool,
    /// The steps carried out, per round of observe, plan, execute.
    pub rounds: Vec<Vec<Step>>,
    pub skipped: Vec<String>,
    /// What apply prints without `--json`.
    pub summary: String,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.skipped {
            writeln!(f, "{s}")?;
        }
        if self.changed {
            return writeln!(
                f,
                "Applied {} change(s) in {:.3}s{}.",
                self.steps().count(),
                self.total.as_secs_f64(),
                self.formation
                    .map(|t| format!(
                        " (cluster formed in {:.3}s from the first MEET)",
                        t.as_secs_f64()
                    ))
                    .unwrap_or_default()
            );
        }
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
            .any(|s| matches!(s.reason, crate::engine::observe::SkipReason::Unreachable(_)));
        match (unreachable, self.incomplete) {
            (true, _) => Exit::Unreachable,
            (false, true) => Exit::Failed,
            (false, false) => Exit::Done,
        }
    }

    /// Every step carried out, in order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.rounds.iter().flatten()
    }
    pub fn json(&self) -> AppliedJson {
        AppliedJson {
            deployment: self.plan.deployment.clone(),
            changed: self.changed,
            incomplete: self.incomplete,
            rounds: self.rounds.clone(),
            skipped: self.skipped.clone(),
            summary: self.to_string(),
        }
    }
}

/// The deployment loaded, its agents dialled, and what they report.
struct Observing<'a> {
    deployment: &'a Deployment,
    fleet: &'a Fleet,
    in_limit: &'a [bool],
}

impl Observing<'_> {
    async fn observe(
        &self,
        targets: &[Target],
        sentinels: &[Target],
        leaving: &[Target],
    ) -> Result<Observed, Error> {
        let names: Vec<String> = (self.deployment.inventory.hosts.iter())
            .map(|h| h.name.clone())
            .collect();
        observe(
            self.fleet,
            targets,
            sentinels,
            leaving,
            &self.deployment.inventory.deployment.name,
            &names,
            self.in_limit,
        )
        .await
    }

    /// Each acted-on host's facts (None for the others).
    async fn facts(&self, acting: &[bool]) -> Result<Vec<Option<Facts>>, Error> {
        join_all(
            (0..self.deployment.inventory.hosts.len()).map(|h| async move {
                if !acting[h] {
                    return Ok(None);
                }
                self.fleet.agent(h)?.facts().await.map(Some)
            }),
        )
        .await
        .into_iter()
        .collect()
    }
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

/// A plan with what it was computed from, to check it is still current.
pub struct Planned {
    pub plan: Plan,
    /// A digest of the inventory and of everything observed.
    pub fingerprint: String,
}

/// Computes the plan without changing anything; `limit` (host names or
/// addresses) restricts it to those hosts' instances.
pub async fn plan(path: &Path, limit: &[String], security: Security) -> Result<Plan, Error> {
    Ok(plan_with_fingerprint(path, limit, security).await?.plan)
}

pub async fn plan_with_fingerprint(
    path: &Path,
    limit: &[String],
    security: Security,
) -> Result<Planned, Error> {
    let mut deployment = Deployment::load(path, false, security)?;
    let mut in_limit = crate::fleet::limit_hosts(&deployment.inventory, limit)?;
    let fleet = connect_limited(&deployment, &in_limit).await?;
    let fleet = keep_placement(&mut deployment, fleet, &mut in_limit).await?;
    let scope = Observing {
        deployment: &deployment,
        fleet: &fleet,
        in_limit: &in_limit,
    };
    let targets = deployment.targets();
    let sentinels = deployment.sentinels(deployment.placed_master());
    let leaving = deployment.leaving();
    let observed = scope.observe(&targets, &sentinels, &leaving).await?;
    // What apply would refuse or install on each host (apply asks only
    // when it has changes to make, so a no-op apply stays fast).
    let facts = scope.facts(&observed.acting).await?;
    let plan = make_plan(&Input {
        deployment: &deployment,
        targets: &targets,
        sentinels: &sentinels,
        observed: &observed,
        leaving: &leaving,
        facts: Some(&facts),
        form: true,
    });
    Ok(Planned {
        plan,
        fingerprint: fingerprint(&deployment, &observed)?,
    })
}

/// The placement that keeps what the running cluster has
/// ([`crate::engine::shape::keep_placement`]); when it adds hosts the
/// inventory no longer lists, dials again (those hosts are in the limit
/// only without one).
async fn keep_placement(
    deployment: &mut Deployment,
    fleet: Fleet,
    in_limit: &mut Vec<bool>,
) -> Result<Fleet, Error> {
    if !crate::engine::shape::keep_placement(deployment, &fleet, true).await? {
        return Ok(fleet);
    }
    let all = in_limit.iter().all(|&l| l);
    in_limit.resize(deployment.inventory.hosts.len(), all);
    Ok(Fleet::connect(deployment).await)
}

/// A digest of the inventory file and of what was observed: anything that
/// differs means a saved plan is stale.
pub fn fingerprint(deployment: &Deployment, observed: &Observed) -> Result<String, Error> {
    use std::hash::{Hash, Hasher};
    let path = &deployment.inventory_path;
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    // A password file created since decides too (plan creates it or not).
    deployment.password.is_some().hash(&mut h);
    deployment
        .user_passwords
        .iter()
        .map(Option::is_some)
        .collect::<Vec<_>>()
        .hash(&mut h);
    let inventory = h.finish();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    observed.decisive().hash(&mut h);
    Ok(format!(
        "inventory:{inventory:016x} observed:{:016x}",
        h.finish()
    ))
}

pub async fn apply(path: &Path, options: &ApplyOptions) -> Result<ApplyReport, Error> {
    apply_checked(path, options, None).await
}

/// A plan saved by `paddock plan --out FILE`, for `paddock apply FILE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    /// The inventory it was planned from (absolute).
    pub inventory: std::path::PathBuf,
    pub limit: Vec<String>,
    /// A digest of the inventory, the password files' presence and
    /// everything observed.
    pub fingerprint: String,
    pub plan: Plan,
}

impl SavedPlan {
    pub fn load(file: &Path) -> Result<SavedPlan, Error> {
        let text = std::fs::read_to_string(file).map_err(Error::io(file))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Unsupported(format!(
                "{}: not a plan saved by `paddock plan --out`: {e}",
                file.display()
            ))
        })
    }
}

/// `paddock plan`: prints the plan (text or `--json`), saves it with
/// `--out`; returns whether changes are pending.
pub async fn plan_command(
    inventory: &Path,
    limit: &[String],
    security: Security,
    json: bool,
    out: Option<&Path>,
) -> Result<bool, Error> {
    let planned = plan_with_fingerprint(inventory, limit, security).await?;
    // Through `output`: a closed stdout (`| head`) is not a failure.
    if json {
        let text = serde_json::to_string_pretty(&planned.plan).expect("plan serializes");
        crate::output::write(format_args!("{text}\n"));
    } else {
        crate::output::write(format_args!("{}", planned.plan));
    }
    if let Some(out) = out {
        let saved = SavedPlan {
            inventory: std::path::absolute(inventory).map_err(Error::io(inventory))?,
            limit: limit.to_vec(),
            fingerprint: planned.fingerprint,
            plan: planned.plan.clone(),
        };
        let text = serde_json::to_string_pretty(&saved).expect("plan serializes");
        std::fs::write(out, text + "\n").map_err(Error::io(out))?;
        if !json {
            crate::output::write(format_args!(
                "Saved the plan to {}: `paddock apply {}` carries it out.\n",
                out.display(),
                out.display()
            ));
        }
    }
    Ok(!planned.plan.is_empty())
}

/// `paddock apply [FILE]`: a saved plan (refused when stale) or the
/// inventory's.
pub async fn apply_command(
    inventory: Option<&Path>,
    saved: Option<&Path>,
    options: &ApplyOptions,
) -> Result<ApplyReport, Error> {
    match (saved, inventory) {
        (Some(file), _) => {
            let saved = SavedPlan::load(file)?;
            let options = ApplyOptions {
                limit: saved_limit(file, &saved.limit, &options.limit)?,
                ..options.clone()
            };
            apply_checked(&saved.inventory, &options, Some(&saved)).await
        }
        (None, Some(inventory)) => apply(inventory, options).await,
        (None, None) => Err(Error::Unsupported(
            "apply needs -i INVENTORY or a plan file saved by `paddock plan --out`".into(),
        )),
    }
}

/// The hosts a saved plan is applied to: the ones it was planned for. A
/// different `--limit` on the command line would act on hosts the plan did
/// not look at (or skip ones it planned for), so it is refused, not ignored.
fn saved_limit(file: &Path, saved: &[String], given: &[String]) -> Result<Vec<String>, Error> {
    if given.is_empty() || given == saved {
        return Ok(saved.to_vec());
    }
    let shown = |l: &[String]| {
        if l.is_empty() {
            "no --limit (every host)".to_owned()
        } else {
            format!("--limit {}", l.join(","))
        }
    };
    Err(Error::Usage(format!(
        "{} was planned with {}, not {}: apply it without --limit, or plan again with the new one",
        file.display(),
        shown(saved),
        shown(given)
    )))
}

/// Applies, after checking (under the lock) that what is observed now is
/// what `expected` (a saved plan) was computed from.
pub async fn apply_checked(
    path: &Path,
    options: &ApplyOptions,
    expected: Option<&SavedPlan>,
) -> Result<ApplyReport, Error> {
    let mut deployment = Deployment::load(path, false, options.security)?;
    let mut in_limit = crate::fleet::limit_hosts(&deployment.inventory, &options.limit)?;
    let fleet = connect_limited(&deployment, &in_limit).await?;
    let fleet = keep_placement(&mut deployment, fleet, &mut in_limit).await?;
    let name = deployment.inventory.deployment.name.clone();
    let holder = crate::fleet::lock_holder();
    fleet.lock(&name, &holder).await?;
    let result = apply_locked(deployment, &fleet, options, &in_limit, expected).await;
    fleet.unlock(&name, &holder).await;
    result
}

/// The refusal apply stops at, as the error it returns; host problems
/// are returned by execution (after installing redis-server).
fn refused(deployment: &Deployment, plan: &Plan) -> Option<Error> {
    let name = &deployment.inventory.deployment.name;
    for r in &plan.refusals {
        if let Refusal::PasswordMissing { path } = r {
            return Some(Error::Unsupported(format!(
                "the agents already run deployment {name:?}, but its Redis password file {path} is missing.\n  \
                 hint: copy it from the workstation that applied this deployment; \
                 creating a new one would change the password under every running client"
            )));
        }
    }
    let orphans: Vec<&str> = (plan.refusals.iter())
        .filter_map(|r| match r {
            Refusal::Orphan { target } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    (!orphans.is_empty()).then(|| {
        Error::Unsupported(format!(
            "the agents have instances of deployment {name:?} that the inventory does not list: {}\n  \
             hint: they may hold its data (a changed [redis] port renames every instance); \
             put the inventory back, or remove them with `paddock prune -i INVENTORY` \
             (it keeps any that still serve slots or hold the master role), then apply again",
            orphans.join(", ")
        ))
    })
}

/// Creates the passwords the plan says are missing; the targets' specs
/// carry them from then on.
fn create_passwords(deployment: &mut Deployment, plan: &Plan) -> Result<Vec<Step>, Error> {
    let mut done = Vec::new();
    for s in &plan.steps {
        match s {
            Step::CreatePassword { .. } => {
                deployment.password = secrets::load_or_create(&deployment.password_path, true)?;
            }
            Step::CreateUserPasswords { .. } => deployment.create_user_passwords()?,
            _ => continue,
        }
        done.push(s.clone());
    }
    Ok(done)
}

async fn apply_locked(
    mut deployment: Deployment,
    fleet: &Fleet,
    options: &ApplyOptions,
    in_limit: &[bool],
    expected: Option<&SavedPlan>,
) -> Result<ApplyReport, Error> {
    let started = Instant::now();
    let progress = Progress::new(options.progress);
    let targets = deployment.targets();
    let sentinels = deployment.sentinels(deployment.placed_master());
    let leaving = deployment.leaving();
    let scope = Observing {
        deployment: &deployment,
        fleet,
        in_limit,
    };
    let observed = scope.observe(&targets, &sentinels, &leaving).await?;
    if let Some(expected) = expected {
        stale(&expected.fingerprint, &fingerprint(&deployment, &observed)?)?;
    }
    let mut input = Input {
        deployment: &deployment,
        targets: &targets,
        sentinels: &sentinels,
        observed: &observed,
        leaving: &leaving,
        facts: None,
        form: options.form,
    };
    let mut skipped: Vec<String> = observed.skipped.iter().map(ToString::to_string).collect();
    let unreachable = (observed.skipped.iter())
        .any(|s| matches!(s.reason, crate::engine::observe::SkipReason::Unreachable(_)));
    let hosts_skipped = skipped.len();
    let quick = make_plan(&input);
    if quick.is_empty() {
        skipped.extend(quick.held_back.iter().cloned());
        return Ok(ApplyReport {
            incomplete: unreachable || skipped.len() > hosts_skipped,
            plan: quick,
            rounds: Vec::new(),
            changed: false,
            total: started.elapsed(),
            formation: None,
            skipped,
        });
    }
    for s in &skipped {
        progress.step(s.clone());
    }
    if let Some(e) = refused(&deployment, &quick) {
        return Err(e);
    }
    let mut facts = scope.facts(&observed.acting).await?;
    input.facts = Some(&facts);
    let plan = make_plan(&input);
    if let Some(e) = refused(&deployment, &plan) {
        return Err(e);
    }
    if expected.is_some_and(|e| !same_steps(&e.plan.steps, &plan.steps)) {
        return Err(Error::Unsupported(
            "the saved plan is stale: the hosts report other facts than when it was planned; nothing was changed.\n  hint: run `paddock plan --out FILE` again and review it".into(),
        ));
    }
    progress.step(format!(
        "deployment {}: {} change(s) planned",
        plan.summary,
        plan.len()
    ));
    let created = create_passwords(&mut deployment, &plan)?;
    let run = Run {
        deployment: &deployment,
        fleet,
        options,
        in_limit,
        progress: &progress,
    };
    let (mut rounds, mut formation, mut more) = run.rounds(&plan, &mut facts, &mut skipped).await?;
    let removed = rounds
        .iter()
        .flatten()
        .any(|s| matches!(s, Step::RemoveNode { .. }));
    if removed && !more {
        // The removed nodes are members no more: the specs say so now, so
        // the next apply has nothing to do.
        crate::engine::shape::keep_placement(&mut deployment, fleet, false).await?;
        let run = Run {
            deployment: &deployment,
            fleet,
            options,
            in_limit,
            progress: &progress,
        };
        let bound = Instant::now() + options.converge_timeout;
        (rounds, formation, more) = run
            .settle(rounds, formation, bound, &mut facts, &mut skipped)
            .await?;
    }
    rounds[0].splice(0..0, created);
    Ok(ApplyReport {
        incomplete: unreachable || skipped.len() > hosts_skipped || more,
        plan,
        rounds,
        changed: true,
        total: started.elapsed(),
        formation,
        skipped,
    })
}

/// The same steps, the estimates of slot moves aside (keys and bytes
/// change with every write; the slots that move do not).
fn same_steps(a: &[Step], b: &[Step]) -> bool {
    let plain = |steps: &[Step]| -> Vec<Step> {
        let mut steps = steps.to_vec();
        for s in &mut steps {
            if let Step::MoveSlots { moves } = s {
                for m in moves {
                    (m.keys, m.bytes, m.millis) = (0, 0, None);
                }
            }
        }
        steps
    };
    plain(a) == plain(b)
}

/// Refuses a saved plan whose observations are stale, naming why.
fn stale(expected: &str, now: &str) -> Result<(), Error> {
    if expected == now {
        return Ok(());
    }
    let part = |s: &str, key: &str| s.split(' ').find(|p| p.starts_with(key)).map(str::to_owned);
    let why = if part(expected, "inventory:") != part(now, "inventory:") {
        "the inventory changed since it was planned"
    } else {
        "what the agents report differs from what the plan was computed from"
    };
    Err(Error::Unsupported(format!(
        "the saved plan is stale: {why}; nothing was changed.\n  hint: run `paddock plan --out FILE` again and review it"
    )))
}

/// One apply's rounds of execute, observe, re-plan.
struct Run<'a> {
    deployment: &'a Deployment,
    fleet: &'a Fleet,
    options: &'a ApplyOptions,
    in_limit: &'a [bool],
    progress: &'a Progress,
}

impl Run<'_> {
    /// Executes `first`, then re-plans from what the nodes report until
    /// nothing is left, for at most [`MAX_ROUNDS`] more rounds and four
    /// times the converge timeout. Returns the steps per round, the
    /// formation time, and whether steps were left when the bound was hit.
    async fn rounds(
        &self,
        first: &Plan,
        facts: &mut [Option<Facts>],
        skipped: &mut Vec<String>,
    ) -> Result<(Vec<Vec<Step>>, Option<Duration>, bool), Error> {
        let d = self.deployment;
        let targets = d.targets();
        let sentinels = d.sentinels(d.placed_master());
        let scene = Scene {
            deployment: d,
            fleet: self.fleet,
            targets: &targets,
            sentinels: &sentinels,
            timeout: self.options.converge_timeout,
            progress: self.progress,
        };
        let bound = Instant::now() + self.options.converge_timeout * 4;
        let mut done = execute(&scene, first, facts).await?;
        skipped.extend(first.held_back.iter().cloned());
        skipped.append(&mut done.skipped);
        let rounds = vec![done.steps];
        self.settle(rounds, done.formation, bound, facts, skipped)
            .await
    }

    /// Observes, plans and executes again until nothing is left, for at
    /// most [`MAX_ROUNDS`] rounds and until `bound`.
    async fn settle(
        &self,
        mut rounds: Vec<Vec<Step>>,
        mut formation: Option<Duration>,
        bound: Instant,
        facts: &mut [Option<Facts>],
        skipped: &mut Vec<String>,
    ) -> Result<(Vec<Vec<Step>>, Option<Duration>, bool), Error> {
        let d = self.deployment;
        let targets = d.targets();
        let sentinels = d.sentinels(d.placed_master());
        let leaving = d.leaving();
        let scene = Scene {
            deployment: d,
            fleet: self.fleet,
            targets: &targets,
            sentinels: &sentinels,
            timeout: self.options.converge_timeout,
            progress: self.progress,
        };
        let scope = Observing {
            deployment: d,
            fleet: self.fleet,
            in_limit: self.in_limit,
        };
        for _ in 0..MAX_ROUNDS {
            let observed = scope.observe(&targets, &sentinels, &leaving).await?;
            let plan = make_plan(&Input {
                deployment: d,
                targets: &targets,
                sentinels: &sentinels,
                observed: &observed,
                leaving: &leaving,
                facts: None,
                form: self.options.form,
            });
            if plan.steps.is_empty() {
                return Ok((rounds, formation, false));
            }
            if let Some(e) = refused(d, &plan) {
                return Err(e);
            }
            if Instant::now() >= bound {
                break;
            }
            let mut done = execute(&scene, &plan, facts).await?;
            skipped.append(&mut done.skipped);
            formation = formation.or(done.formation);
            rounds.push(done.steps);
        }
        let s = "apply stopped re-planning at its bound with changes left; run `paddock plan` to see them".to_owned();
        self.progress.step(s.clone());
        skipped.push(s);
        Ok((rounds, formation, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_plans_moves_match_whatever_their_estimates() {
        let mv = |keys: u64, ranges: Vec<(u16, u16)>| {
            vec![Step::MoveSlots {
                moves: vec![crate::engine::step::PlannedMove {
                    from: "a:redis-7000".into(),
                    to: "b:redis-7000".into(),
                    from_id: "x".into(),
                    to_id: "y".into(),
                    ranges,
                    keys,
                    bytes: keys * 100,
                    millis: Some(keys),
                }],
            }]
        };
        assert!(same_steps(&mv(10, vec![(0, 9)]), &mv(12, vec![(0, 9)])));
        assert!(!same_steps(&mv(10, vec![(0, 9)]), &mv(10, vec![(0, 10)])));
    }

    #[test]
    fn a_saved_plan_runs_on_the_hosts_it_was_planned_for() {
        let file = Path::new("plan.json");
        let l = |s: &[&str]| s.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        // (saved, given, applied on, or refused)
        type Row = (
            &'static [&'static str],
            &'static [&'static str],
            Option<&'static [&'static str]>,
        );
        let rows: &[Row] = &[
            (&[], &[], Some(&[])),
            (&["box1"], &[], Some(&["box1"])),
            (&["box1"], &["box1"], Some(&["box1"])),
            (&["box1"], &["box2"], None),
            (&[], &["box2"], None),
        ];
        for (saved, given, want) in rows {
            let got = saved_limit(file, &l(saved), &l(given));
            match want {
                Some(w) => assert_eq!(got.unwrap(), l(w), "{saved:?} {given:?}"),
                None => {
                    let e = got.unwrap_err();
                    assert!(matches!(e, Error::Usage(_)), "{e}");
                    assert!(e.to_string().contains("plan.json"), "{e}");
                }
            }
        }
    }
}
