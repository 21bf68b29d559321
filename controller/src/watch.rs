//! `paddock logs` and `paddock events`: streams from the agents, printed as
//! they arrive.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;

use crate::Error;
use crate::client::{AgentClient, Security, StateEvent};
use crate::fleet::{Deployment, Fleet};
use crate::utc::format_utc;

/// Prints an instance's log: the last `lines` lines, then new ones with `follow`.
pub async fn logs(
    inventory: &Path,
    host: &str,
    instance: &str,
    lines: u32,
    follow: bool,
    security: Security,
) -> Result<(), Error> {
    let deployment = Deployment::load(inventory, false, security)?;
    let hosts = &deployment.inventory.hosts;
    let Some(index) = hosts.iter().position(|h| h.name == host) else {
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "no host named {host:?} in {}; its hosts are: {}",
            inventory.display(),
            names.join(", ")
        )));
    };
    let agent =
        AgentClient::connect(host, deployment.agent_addr(index), &deployment.transport).await?;
    let mut stream = std::pin::pin!(agent.tail_log(instance, lines, follow).await?);
    let mut out = std::io::stdout().lock();
    while let Some(batch) = stream.next().await {
        for line in batch? {
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
        let _ = out.flush();
    }
    Ok(())
}

/// Prints state transitions from every agent as they happen, until `count`
/// events or `duration` (when given) or the agents hang up.
/// Only the hosts in `limit` (empty: all); a host whose agent does not
/// answer is named and skipped, unless none answers.
pub async fn events(
    inventory: &Path,
    count: Option<usize>,
    duration: Option<Duration>,
    json: bool,
    limit: &[String],
    security: Security,
) -> Result<Vec<StateEvent>, Error> {
    let deployment = Deployment::load(inventory, false, security)?;
    let in_limit = crate::fleet::limit_hosts(&deployment.inventory, limit)?;
    let fleet = Fleet::connect(&deployment).await;
    let mut streams = Vec::new();
    let mut errors = Vec::new();
    for (h, host) in deployment.inventory.hosts.iter().enumerate() {
        if !in_limit[h] {
            continue;
        }
        match fleet.agent(h) {
            Ok(a) => streams.push(Box::pin(a.watch_events().await?)),
            Err(e) => {
                eprintln!("{}: skipped ({e})", host.name);
                errors.push(e.to_string());
            }
        }
    }
    if streams.is_empty() {
        return Err(Error::AgentDown(errors.join("\n")));
    }
    eprintln!(
        "watching {} agent(s) for instance state changes{}",
        streams.len(),
        if count.is_none() && duration.is_none() {
            " (Ctrl-C to stop)"
        } else {
            ""
        }
    );
    let mut merged = futures::stream::select_all(streams);
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut seen = Vec::new();
    loop {
        if count.is_some_and(|c| seen.len() >= c) {
            break;
        }
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, merged.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => merged.next().await,
        };
        let Some(event) = next else { break };
        let event = event?;
        let line = if json {
            serde_json::to_string(&event).unwrap_or_default()
        } else {
            format_event(&event)
        };
        seen.push(event);
        if !crate::output::write(format_args!("{line}\n")) {
            break; // stdout closed (e.g. piped into head)
        }
    }
    Ok(seen)
}

pub fn format_event(e: &StateEvent) -> String {
    let mut s = format!(
        "{} {} {} {} -> {}",
        format_utc(e.unix_ms),
        e.host,
        e.instance,
        e.from.as_str(),
        e.to.as_str()
    );
    if let Some(pid) = e.pid {
        s.push_str(&format!(" pid {pid}"));
    }
    if let Some(d) = &e.detail {
        s.push_str(&format!(" ({})", d.lines().next().unwrap_or_default()));
    }
    s
}
