//! `paddock rotate-password`: a new Redis password with no failed request.
//!
//! Phase one adds the new password next to the old one on every instance
//! (ACL SETUSER default >new: both are accepted), then switches masterauth
//! (replication links reconnect with the new one whenever they do), then
//! stores the new spec as already live (no restart) and the new password
//! file; clients switch at their pace. `--finish` then removes the old
//! password (ACL SETUSER default <old).
//!
//! Sentinels go through the same phases: their own password (ACL SETUSER,
//! as on Redis), what they authenticate to the master and replicas with
//! (SENTINEL SET auth-pass) and to each other (SENTINEL CONFIG SET
//! sentinel-pass: without it a sentinel sends its `requirepass`, which
//! ACL SETUSER does not change). Sentinel persists only on its own config
//! rewrites, so `--finish` sets auth-pass again after removing the old
//! password: a restarted sentinel then knows only the new one.

use std::path::{Path, PathBuf};

use futures::future::join_all;

use crate::Error;
use crate::client::Security;
use crate::fleet::{Deployment, Fleet, Target};
use crate::progress::Progress;
use crate::secrets;

fn previous_path(deployment: &Deployment) -> PathBuf {
    deployment.password_path.with_extension("previous")
}

async fn on_all(
    fleet: &Fleet,
    targets: &[Target],
    what: &str,
    command: &[&str],
) -> Result<(), Error> {
    let calls = targets.iter().map(|t| async move {
        let r = fleet
            .agent(t.host)?
            .redis_dangerous(&t.instance, &[command])
            .await?;
        match r[0].error() {
            Some(e) => Err(Error::Redis {
                host: t.host_name.clone(),
                instance: t.instance.clone(),
                message: format!("{what}: {e}"),
            }),
            None => Ok(()),
        }
    });
    join_all(calls).await.into_iter().collect()
}

pub async fn rotate(
    path: &Path,
    finish: bool,
    progress: bool,
    security: Security,
) -> Result<String, Error> {
    let progress = Progress::new(progress);
    let mut deployment = Deployment::load(path, false, security)?;
    let Some(old) = deployment.password.clone() else {
        return Err(Error::Unsupported(format!(
            "{} has no password yet: apply it first",
            path.display()
        )));
    };
    let fleet = Fleet::connect_all(&deployment).await?;
    crate::engine::shape::keep_placement(&mut deployment, &fleet, false).await?;
    let name = deployment.inventory.deployment.name.clone();
    let holder = crate::fleet::lock_holder();
    fleet.lock(&name, &holder).await?;
    let previous = previous_path(&deployment);
    let result = async {
        let targets = deployment.targets();
        let sentinels = deployment.sentinels(deployment.placed_master());
        let everything: Vec<Target> = targets.iter().chain(&sentinels).cloned().collect();
        let master_name = sentinels
            .first()
            .and_then(|s| s.spec.sentinel.as_ref())
            .map(|s| s.master_name.clone())
            .unwrap_or_default();
        if finish {
            let old = std::fs::read_to_string(&previous).map_err(|_| {
                Error::Unsupported("no password rotation is in progress (nothing to finish)".into())
            })?;
            let remove = format!("<{}", old.trim());
            progress.step("removing the old password from every instance");
            on_all(&fleet, &everything, "ACL SETUSER default <old", &["ACL", "SETUSER", "default", &remove]).await?;
            if let Some(current) = &deployment.password {
                // A config rewrite, so sentinel.conf forgets the old password.
                on_all(&fleet, &sentinels, "SENTINEL SET auth-pass", &["SENTINEL", "SET", &master_name, "auth-pass", current]).await?;
            }
            std::fs::remove_file(&previous).map_err(Error::io(&previous))?;
            return Ok("The old password no longer works anywhere.".to_owned());
        }
        if previous.exists() {
            return Err(Error::Unsupported(format!(
                "a rotation is in progress ({} exists): finish it with `paddock rotate-password -i {} --finish` first",
                previous.display(),
                path.display()
            )));
        }
        let new = secrets::generate();
        let add = format!(">{new}");
        progress.step("adding the new password next to the old one on every instance");
        on_all(&fleet, &everything, "ACL SETUSER default >new", &["ACL", "SETUSER", "default", &add]).await?;
        progress.step("replicas authenticate with the new password from now on (masterauth)");
        on_all(&fleet, &targets, "CONFIG SET masterauth", &["CONFIG", "SET", "masterauth", &new]).await?;
        if !sentinels.is_empty() {
            progress.step("sentinels authenticate with the new password from now on (auth-pass, sentinel-pass)");
            on_all(&fleet, &sentinels, "SENTINEL SET auth-pass", &["SENTINEL", "SET", &master_name, "auth-pass", &new]).await?;
            on_all(&fleet, &sentinels, "SENTINEL CONFIG SET sentinel-pass", &["SENTINEL", "CONFIG", "SET", "sentinel-pass", &new]).await?;
        }
        secrets::write_secret(&previous, &old, true)?;
        secrets::write_secret(&deployment.password_path, &new, false)?;
        deployment.password = Some(new);
        let targets = deployment.targets();
        let sentinels = deployment.sentinels(deployment.placed_master());
        let puts = targets.iter().chain(&sentinels).map(|t| {
            let fleet = &fleet;
            async move { fleet.agent(t.host)?.put_instance_live(&t.spec).await }
        });
        join_all(puts).await.into_iter().collect::<Result<Vec<_>, Error>>()?;
        Ok(format!(
            "Both passwords work now; the new one is in {}. Switch your clients, then run `paddock rotate-password -i {} --finish`.",
            deployment.password_path.display(),
            path.display()
        ))
    }
    .await;
    fleet.unlock(&name, &holder).await;
    result
}
