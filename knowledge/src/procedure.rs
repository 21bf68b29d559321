//! The high-availability procedures, written once over [`RedisNode`]:
//! each is bounded by a deadline on tokio's clock.

use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use crate::decide::{Escalation, FailoverMode, FailoverNext, most_named, next_failover, promoted};
use crate::nodes::{self, ClusterNode};
use crate::sentinel::MasterState;
use crate::{Addr, Error, RedisNode};

/// A replica's own line and its master's config epoch, from its CLUSTER
/// NODES.
async fn cluster_self<N: RedisNode>(node: &N) -> Result<(ClusterNode, Option<u64>), Error> {
    let all = nodes::parse(&node.text(&["CLUSTER", "NODES"]).await?);
    let me = nodes::myself(&all)
        .cloned()
        .ok_or_else(|| Error::Unexpected {
            node: node.name(),
            command: "CLUSTER NODES".into(),
        })?;
    let master_epoch = me
        .master_id
        .as_deref()
        .and_then(|m| all.iter().find(|n| n.id == m))
        .map(|n| n.config_epoch);
    Ok((me, master_epoch))
}

/// Has the cluster replica `node` take its master's slots over (CLUSTER
/// FAILOVER in the modes `escalation` gives), and waits until it serves
/// them under a config epoch newer than its master's. A node that already
/// is a master serving slots counts as done. `on_send` hears each request
/// before it is sent.
pub async fn cluster_failover<N: RedisNode>(
    node: &N,
    escalation: &Escalation,
    deadline: Instant,
    poll: Duration,
    mut on_send: impl FnMut(FailoverMode) + Send,
) -> Result<(), Error> {
    let (me, master_epoch) = cluster_self(node).await?;
    if me.master_id.is_none() && me.is_master() && me.slot_count() > 0 {
        return Ok(());
    }
    if me.master_id.is_none() {
        return Err(Error::NotDone(format!(
            "{} is not a replica of a known master, so it cannot take over",
            node.name()
        )));
    }
    // A replica whose master's line is gone reports that master's epoch
    // as its own.
    let master_epoch = master_epoch.unwrap_or(me.config_epoch);
    let mut sent = 0;
    let mut last: Option<(Instant, FailoverMode)> = None;
    let mut is_promoted = false;
    loop {
        let since = last.map(|(at, _)| at.elapsed());
        match next_failover(escalation, is_promoted, sent, since) {
            FailoverNext::Done => return Ok(()),
            FailoverNext::Send(mode) => {
                on_send(mode);
                node.command(mode.args()).await?;
                sent += 1;
                last = Some((Instant::now(), mode));
            }
            FailoverNext::Wait => {}
            FailoverNext::GiveUp => break,
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
        // A replica busy switching may not answer for a moment: that is
        // "not promoted yet", not a failure.
        is_promoted = cluster_self(node)
            .await
            .is_ok_and(|(me, _)| promoted(&me, master_epoch));
    }
    let asked = last.map_or("nothing".into(), |(_, m)| m.args().join(" "));
    Err(Error::NotDone(format!(
        "{} was asked to take over its master's slots ({asked}) but is not master under a newer config epoch",
        node.name()
    )))
}

/// REPLICAOF `to` on each node; the failures, after every node was asked.
pub async fn repoint<N: RedisNode>(nodes: &[N], to: Addr) -> Vec<Error> {
    let (ip, port) = (to.ip.to_string(), to.port.to_string());
    let mut errors = Vec::new();
    for n in nodes {
        if let Err(e) = n.command(&["REPLICAOF", &ip, &port]).await {
            errors.push(e);
        }
    }
    errors
}

/// Promotes `heir` (REPLICAOF NO ONE; an error there stops everything) and
/// points `others` at it. Ok carries the re-pointing failures, for the
/// caller to judge.
pub async fn promote_and_repoint<N: RedisNode>(
    heir: &N,
    heir_addr: Addr,
    others: &[N],
) -> Result<Vec<Error>, Error> {
    heir.command(&["REPLICAOF", "NO", "ONE"]).await?;
    Ok(repoint(others, heir_addr).await)
}

/// What each sentinel says of `master_name` (SENTINEL MASTER); None where
/// one did not answer or does not monitor it.
pub async fn sentinel_views<S: RedisNode>(
    sentinels: &[S],
    master_name: &str,
) -> Vec<Result<MasterState, Error>> {
    join_all(sentinels.iter().map(|s| async move {
        let v = s.command(&["SENTINEL", "MASTER", master_name]).await?;
        MasterState::parse(&v).ok_or_else(|| Error::Unexpected {
            node: s.name(),
            command: "SENTINEL MASTER".into(),
        })
    }))
    .await
}

/// Asks one sentinel after another for SENTINEL FAILOVER until one starts
/// it (one already failing over counts), then waits until most of the
/// sentinels that answer name a master other than `old` that `accept`s (a
/// member of the deployment). Returns it.
pub async fn sentinel_failover<S: RedisNode>(
    sentinels: &[S],
    master_name: &str,
    old: Addr,
    accept: impl Fn(Addr) -> bool,
    deadline: Instant,
    poll: Duration,
) -> Result<Addr, Error> {
    let mut errors = Vec::new();
    let mut started = false;
    for s in sentinels {
        match s.command(&["SENTINEL", "FAILOVER", master_name]).await {
            Ok(_) => started = true,
            Err(e) if e.code() == Some("INPROG") => started = true,
            Err(e) => errors.push(e.to_string()),
        }
        if started {
            break;
        }
    }
    if !started {
        return Err(Error::NotDone(format!(
            "no sentinel started the failover: {}",
            errors.join("; ")
        )));
    }
    loop {
        let named: Vec<Option<Addr>> = sentinel_views(sentinels, master_name)
            .await
            .into_iter()
            .map(|v| v.ok().map(|m| m.addr).filter(|a| accept(*a)))
            .collect();
        if let Some(m) = most_named(&named).filter(|m| *m != old) {
            return Ok(m);
        }
        if Instant::now() >= deadline {
            return Err(Error::NotDone(
                "the sentinels accepted the failover but named no new master in time".into(),
            ));
        }
        tokio::time::sleep(poll).await;
    }
}
