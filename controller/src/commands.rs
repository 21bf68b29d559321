//! One function per `paddock` command: it runs the command, prints what
//! the command produced (through the output types' Display or render
//! functions, next to those types) and says how the command ends. `main.rs`
//! only parses the flags and calls these.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::Security;
use crate::exit::Exit;
use crate::{Error, apply, certs, failover, lab, lifecycle, status, watch};

// Everything a command prints goes through `output::write`, which survives
// a closed stdout (`paddock status | head -1`): these shadow std's macros,
// which panic there.
macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = crate::output::write(format_args!("{}\n", format_args!($($arg)*)));
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = crate::output::write(format_args!($($arg)*));
    }};
}

/// What every command gets from the global flags.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `--limit`: the hosts to act on (empty: all).
    pub limit: Vec<String>,
    /// `--insecure-plaintext` or mutual TLS.
    pub security: Security,
}

impl Context {
    /// Refuses `--limit` for a command that does not support it: silently
    /// acting on every host would be the opposite of what was asked.
    pub fn check_limit(&self, supported: bool) -> Result<(), Error> {
        if self.limit.is_empty() || supported {
            return Ok(());
        }
        Err(Error::Usage(
            "--limit is supported by status, plan, apply, failover and events; this command acts on the hosts it names".into(),
        ))
    }
}

fn done(ok: bool) -> Exit {
    if ok { Exit::Done } else { Exit::Failed }
}

/// Reads and parses an inventory (no validation beyond the parser's).
pub fn read_inventory(path: &Path) -> Result<paddock_inventory::Inventory, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::InventoryFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(paddock_inventory::parse_bytes(
        &path.display().to_string(),
        &bytes,
    )?)
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Io {
        path: PathBuf::from("<stdout>"),
        source: std::io::Error::other(e),
    })?;
    println!("{text}");
    Ok(())
}

pub fn certs_init(inventory: &Path) -> Result<Exit, Error> {
    let inv = read_inventory(inventory)?;
    let dir = certs::certs_dir(inventory, &inv.deployment.name);
    let created = certs::init(&dir, &inv.deployment.name)?;
    println!(
        "{} CA and controller certificate in {}",
        if created {
            "Created"
        } else {
            "Kept the existing"
        },
        dir.display()
    );
    Ok(Exit::Done)
}

pub fn certs_issue(inventory: &Path, host: &str, out: Option<&Path>) -> Result<Exit, Error> {
    let inv = read_inventory(inventory)?;
    let Some(h) = inv.hosts.iter().find(|h| h.name == host) else {
        let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "no host named {host:?} in {}; its hosts are: {}",
            inventory.display(),
            names.join(", ")
        )));
    };
    let dir = certs::certs_dir(inventory, &inv.deployment.name);
    let files = certs::issue(&dir, &h.name, h.address)?;
    println!(
        "Issued {host}'s certificate (names {host} and {}). Install on the host, referenced from agent.toml [tls]:\n  ca   = {}\n  cert = {}\n  key  = {}  (keep it 0600)",
        h.address,
        certs::ca(&dir).cert.display(),
        files.cert.display(),
        files.key.display()
    );
    if let Some(out) = out {
        certs::export(&dir, &files, out)?;
        println!(
            "Copied them to {} as ca.pem, agent.pem, agent.key",
            out.display()
        );
    }
    Ok(Exit::Done)
}

/// Every problem of the inventory at once (exit 2), or its placement.
pub fn validate(inventory: &Path) -> Result<Exit, Error> {
    let inv = match read_inventory(inventory) {
        Ok(inv) => inv,
        Err(Error::Inventory(d)) => {
            eprintln!("{d}");
            eprintln!("{} problem(s) found", d.0.len());
            return Ok(Exit::Usage);
        }
        Err(e) => return Err(e),
    };
    let placement = paddock_inventory::place(&inv);
    println!(
        "{}: ok ({} topology, {} instances on {} hosts)",
        inventory.display(),
        inv.deployment.topology,
        placement.instances.len(),
        inv.hosts.len()
    );
    for p in &placement.instances {
        let host = &inv.hosts[p.host];
        let zone = host
            .zone
            .as_ref()
            .map(|z| format!(" (zone {z})"))
            .unwrap_or_default();
        println!(
            "  {:<14} {:<16} shard {} {}{zone}",
            host.name, p.name, p.shard, p.role
        );
    }
    for w in paddock_inventory::warnings(&inv) {
        println!("{}: {w}", inventory.display());
    }
    Ok(Exit::Done)
}

/// `paddock plan`: prints the plan (text or `--json`), saves it with
/// `--out`; with `--detailed-exitcode`, pending changes exit 2.
pub async fn plan(
    inventory: &Path,
    json: bool,
    detailed_exitcode: bool,
    out: Option<&Path>,
    ctx: &Context,
) -> Result<Exit, Error> {
    let pending = apply::plan_command(inventory, &ctx.limit, ctx.security, json, out).await?;
    Ok(if detailed_exitcode && pending {
        Exit::ChangesPending
    } else {
        Exit::Done
    })
}

/// `paddock apply [-i INVENTORY | FILE]`: a saved plan (refused when
/// stale) or the inventory's; `--json` prints the steps carried out.
pub async fn apply(
    inventory: Option<&Path>,
    plan_file: Option<&Path>,
    timeout: Duration,
    json: bool,
    ctx: &Context,
) -> Result<Exit, Error> {
    let report = apply::apply_command(
        inventory,
        plan_file,
        &apply::ApplyOptions {
            converge_timeout: timeout,
            limit: ctx.limit.clone(),
            security: ctx.security,
            ..Default::default()
        },
    )
    .await?;
    if json {
        let text = serde_json::to_string_pretty(&report.json()).expect("a report serializes");
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(report.exit())
}

/// Status, as text or JSON: exit 1 when the deployment is not healthy.
pub async fn status(inventory: &Path, json: bool, ctx: &Context) -> Result<Exit, Error> {
    let s = status::status(inventory, &ctx.limit, ctx.security).await?;
    if json {
        print_json(&s)?;
    } else {
        print!("{s}");
    }
    Ok(done(s.healthy))
}

/// `paddock check`: exit 0 with no finding, 1 with findings, 3 when an
/// agent did not answer (the check is incomplete).
pub async fn check(inventory: &Path, json: bool, ctx: &Context) -> Result<Exit, Error> {
    let c = crate::check::check(inventory, ctx.security).await?;
    if json {
        print_json(&c)?;
    } else {
        print!("{c}");
    }
    Ok(if c.unreachable() {
        Exit::Unreachable
    } else {
        done(c.findings.is_empty())
    })
}

/// `paddock fix`: exit 0 when no open or unserved slot is left.
pub async fn fix(
    inventory: &Path,
    timeout: Duration,
    json: bool,
    ctx: &Context,
) -> Result<Exit, Error> {
    let r = crate::repair::fix(inventory, ctx.security, timeout).await?;
    if json {
        print_json(&r)?;
    } else {
        print!("{r}");
    }
    Ok(done(r.done()))
}

pub async fn recover(
    inventory: &Path,
    instance: &str,
    accept_data_loss: bool,
    ctx: &Context,
) -> Result<Exit, Error> {
    let loss = crate::recover::recover(inventory, instance, accept_data_loss, ctx.security).await?;
    println!("{loss}");
    println!("{instance} started empty; `paddock apply` re-forms its shard.");
    Ok(Exit::Done)
}

pub async fn stop(inventory: &Path, targets: &[String], ctx: &Context) -> Result<Exit, Error> {
    let done = lifecycle::stop(inventory, targets, true, ctx.security).await?;
    print!("{}", lifecycle::render_outcomes("Stopped", &done));
    Ok(Exit::Done)
}

pub async fn start(inventory: &Path, targets: &[String], ctx: &Context) -> Result<Exit, Error> {
    let done = lifecycle::start(inventory, targets, true, ctx.security).await?;
    print!("{}", lifecycle::render_outcomes("Started", &done));
    Ok(Exit::Done)
}

pub async fn restart(
    inventory: &Path,
    targets: &[String],
    timeout: Duration,
    ctx: &Context,
) -> Result<Exit, Error> {
    let done = lifecycle::restart(inventory, targets, timeout, true, ctx.security).await?;
    print!("{}", lifecycle::render_outcomes("Restarted", &done));
    Ok(Exit::Done)
}

/// Exit 1 when an instance the inventory no longer lists had to be kept.
pub async fn prune(inventory: &Path, purge_data: bool, ctx: &Context) -> Result<Exit, Error> {
    let report = lifecycle::prune(inventory, purge_data, true, ctx.security).await?;
    let cluster = read_inventory(inventory)
        .is_ok_and(|i| i.deployment.topology == paddock_inventory::Topology::Cluster);
    print!(
        "{}",
        report.render(purge_data, cluster.then_some(inventory))
    );
    Ok(done(report.kept.is_empty()))
}

/// Asks for the deployment's name on a terminal unless `yes`.
pub async fn destroy(
    inventory: &Path,
    yes: bool,
    purge_data: bool,
    ctx: &Context,
) -> Result<Exit, Error> {
    let name = read_inventory(inventory)?.deployment.name;
    let typed = if yes {
        None
    } else if std::io::stdin().is_terminal() {
        eprint!(
            "This stops and removes every instance of deployment {name}{}. Type its name to confirm: ",
            if purge_data {
                " and deletes their data"
            } else {
                ""
            }
        );
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(Error::io("<stdin>"))?;
        Some(line)
    } else {
        return Err(Error::Usage(format!(
            "destroy stops and removes every instance of deployment {name}; stdin is not a terminal, so it cannot ask for the name: add --yes"
        )));
    };
    if !lifecycle::destroy_confirmed(yes, typed.as_deref(), &name) {
        return Err(Error::Unsupported(format!(
            "not confirmed (the name typed is not {name:?}): nothing was changed"
        )));
    }
    let removed = lifecycle::destroy(inventory, purge_data, true, ctx.security).await?;
    println!(
        "Destroyed {name}: removed {} instance(s){}",
        removed.len(),
        if purge_data {
            " and their data"
        } else {
            "; their data stays on disk"
        }
    );
    Ok(Exit::Done)
}

/// Per host, whose lease was broken; exit 3 when an agent did not answer,
/// 1 when one refused.
pub async fn unlock(inventory: &Path, force: bool, ctx: &Context) -> Result<Exit, Error> {
    if !force {
        return Err(Error::Usage(
            "unlock breaks another controller's lease: add --force once you know it no longer runs"
                .into(),
        ));
    }
    let deployment = crate::fleet::Deployment::load(inventory, false, ctx.security)?;
    let fleet = crate::fleet::Fleet::connect(&deployment).await;
    let mut exit = Exit::Done;
    for (h, (host, outcome)) in fleet.break_lease(&deployment).await.into_iter().enumerate() {
        match outcome {
            Ok(Some(held)) => println!(
                "{host}: broke the lease of {} (since {})",
                held.holder,
                crate::utc::format_utc(held.since_unix_ms)
            ),
            Ok(None) => println!("{host}: no lease"),
            Err(e) => {
                exit = if fleet.reachable(h) && exit != Exit::Unreachable {
                    Exit::Failed
                } else {
                    Exit::Unreachable
                };
                println!("{host}: {e}");
            }
        }
    }
    Ok(exit)
}

pub async fn failover(
    inventory: &Path,
    shard: Option<u32>,
    to: Option<String>,
    timeout: Duration,
    ctx: &Context,
) -> Result<Exit, Error> {
    let choice = match (shard, to) {
        (Some(s), _) => failover::Choice::Shard(s),
        (None, Some(t)) => failover::Choice::Replica(t),
        (None, None) => failover::Choice::Default,
    };
    let report =
        failover::failover(inventory, &choice, timeout, true, &ctx.limit, ctx.security).await?;
    print!("{report}");
    Ok(Exit::Done)
}

/// `paddock rebalance`: the moves and what they moved, as text or JSON.
pub async fn rebalance(
    inventory: &Path,
    threshold_pct: f64,
    weights: Vec<(String, u32)>,
    json: bool,
    ctx: &Context,
) -> Result<Exit, Error> {
    let options = crate::rebalance::Options {
        threshold_pct,
        weights,
    };
    let report = crate::rebalance::rebalance(inventory, &options, true, ctx.security).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    Ok(Exit::Done)
}

pub async fn rotate_password(inventory: &Path, finish: bool, ctx: &Context) -> Result<Exit, Error> {
    let message = crate::rotate::rotate(inventory, finish, true, ctx.security).await?;
    println!("{message}");
    Ok(Exit::Done)
}

pub async fn logs(
    inventory: &Path,
    host: &str,
    instance: &str,
    lines: u32,
    follow: bool,
    ctx: &Context,
) -> Result<Exit, Error> {
    watch::logs(inventory, host, instance, lines, follow, ctx.security).await?;
    Ok(Exit::Done)
}

pub async fn events(
    inventory: &Path,
    count: Option<usize>,
    seconds: Option<u64>,
    json: bool,
    ctx: &Context,
) -> Result<Exit, Error> {
    watch::events(
        inventory,
        count,
        seconds.map(Duration::from_secs),
        json,
        &ctx.limit,
        ctx.security,
    )
    .await?;
    Ok(Exit::Done)
}

/// `lab up`'s flags as parsed.
pub struct LabUp {
    pub dir: PathBuf,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub agent_port: u16,
    pub no_apply: bool,
    pub no_fast_failover: bool,
    pub topology: Option<String>,
    pub reset: bool,
}

pub async fn lab_up(args: LabUp, ctx: &Context) -> Result<Exit, Error> {
    let options = lab::LabOptions {
        topology: lab::topology_choice(&args.dir, args.topology.as_deref(), args.reset),
        dir: args.dir,
        addresses: args.addresses,
        redis_port: args.port,
        agent_port: args.agent_port,
        apply: !args.no_apply,
        fast_failover: !args.no_fast_failover,
        progress: true,
        reset: args.reset,
        security: ctx.security,
    };
    let up = lab::up(&options).await?;
    eprintln!(
        "lab: {} agent(s) started, inventory at {}",
        up.started_agents,
        up.inventory.display()
    );
    eprint!("{}", up.render_growth());
    if let Some(report) = &up.apply {
        print!("{report}");
        let s = status::status(&up.inventory, &[], ctx.security).await?;
        print!("{s}");
    }
    print!("{}", up.render_how_to(&options));
    Ok(Exit::Done)
}

pub async fn lab_status(dir: &Path, json: bool, ctx: &Context) -> Result<Exit, Error> {
    status(&lab::existing_inventory(dir)?, json, ctx).await
}

pub async fn lab_down(dir: &Path, ctx: &Context) -> Result<Exit, Error> {
    let down = lab::down(dir, ctx.security).await?;
    println!("{down}");
    Ok(Exit::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_refused_where_a_command_does_not_support_it() {
        let none = Context::default();
        assert!(none.check_limit(false).is_ok());
        let some = Context {
            limit: vec!["box1".into()],
            ..Context::default()
        };
        assert!(some.check_limit(true).is_ok());
        assert_eq!(some.check_limit(false).unwrap_err().exit(), Exit::Usage);
    }
}
