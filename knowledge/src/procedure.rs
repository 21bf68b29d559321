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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::Value;
    use crate::decide::FailoverMode::{Force, Takeover};

    /// A cluster replica of a dead master `m0` (epoch 8) that takes over
    /// when sent `promote_on`.
    struct Replica {
        promote_on: &'static str,
        refuse: bool,
        state: Mutex<(bool, Vec<String>)>,
    }

    impl Replica {
        fn new(promote_on: &'static str) -> Self {
            Replica {
                promote_on,
                refuse: false,
                state: Mutex::new((false, Vec::new())),
            }
        }
        fn sent(&self) -> Vec<String> {
            self.state.lock().unwrap().1.clone()
        }
    }

    impl RedisNode for Replica {
        fn name(&self) -> String {
            "box2:r1".into()
        }

        async fn command(&self, args: &[&str]) -> Result<Value, Error> {
            let mut s = self.state.lock().unwrap();
            match args {
                ["CLUSTER", "NODES"] => Ok(Value::Bulk(
                    if s.0 {
                        "r1 127.0.0.1:7001@17001 myself,master - 0 0 9 connected 0-100\n\
                         m0 127.0.0.1:7000@17000 master,fail - 0 0 8 disconnected\n"
                    } else {
                        "r1 127.0.0.1:7001@17001 myself,slave m0 0 0 8 connected\n\
                         m0 127.0.0.1:7000@17000 master,fail - 0 0 8 disconnected 0-100\n"
                    }
                    .as_bytes()
                    .to_vec(),
                )),
                ["CLUSTER", "FAILOVER", mode] => {
                    s.1.push((*mode).to_owned());
                    if self.refuse {
                        return Err(Error::reply(
                            self.name(),
                            args.join(" "),
                            "ERR Master is unknown",
                        ));
                    }
                    if *mode == self.promote_on {
                        s.0 = true;
                    }
                    Ok(Value::Status("OK".into()))
                }
                _ => Err(Error::reply(self.name(), args.join(" "), "ERR unknown")),
            }
        }
    }

    const ESCALATION: Escalation = Escalation {
        modes: &[Force, Takeover],
        repeat_last: false,
        retry_after: Duration::from_secs(3),
    };
    const POLL: Duration = Duration::from_millis(10);

    fn within(s: u64) -> Instant {
        Instant::now() + Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn force_is_enough_when_the_majority_votes() {
        let r = Replica::new("FORCE");
        let mut heard = Vec::new();
        cluster_failover(&r, &ESCALATION, within(10), POLL, |m| heard.push(m))
            .await
            .unwrap();
        assert_eq!(r.sent(), ["FORCE"]);
        assert_eq!(heard, [Force]);
    }

    #[tokio::test(start_paused = true)]
    async fn takeover_after_force_shows_nothing() {
        let r = Replica::new("TAKEOVER");
        cluster_failover(&r, &ESCALATION, within(10), POLL, |_| {})
            .await
            .unwrap();
        assert_eq!(r.sent(), ["FORCE", "TAKEOVER"]);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_by_the_escalation_and_the_deadline() {
        let r = Replica::new("never");
        let e = cluster_failover(&r, &ESCALATION, within(60), POLL, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotDone(_)), "{e}");
        assert_eq!(r.sent(), ["FORCE", "TAKEOVER"]);
        let repeat = Escalation {
            repeat_last: true,
            ..ESCALATION
        };
        let r = Replica::new("never");
        let started = Instant::now();
        let e = cluster_failover(&r, &repeat, within(10), POLL, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotDone(_)), "{e}");
        assert!(started.elapsed() <= Duration::from_secs(11));
        assert_eq!(r.sent(), ["FORCE", "TAKEOVER", "TAKEOVER", "TAKEOVER"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_reply_is_an_error() {
        let mut r = Replica::new("FORCE");
        r.refuse = true;
        let e = cluster_failover(&r, &ESCALATION, within(10), POLL, |_| {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("ERR"), "{e}");
    }

    /// A plain replication member: records what it was told; `refuse`
    /// answers REPLICAOF with an error.
    struct Member {
        refuse: bool,
        told: Mutex<Vec<String>>,
    }

    impl RedisNode for Member {
        fn name(&self) -> String {
            "m".into()
        }
        async fn command(&self, args: &[&str]) -> Result<Value, Error> {
            self.told.lock().unwrap().push(args.join(" "));
            if self.refuse {
                return Err(Error::reply("m", args.join(" "), "READONLY no"));
            }
            Ok(Value::Status("OK".into()))
        }
    }

    fn member(refuse: bool) -> Member {
        Member {
            refuse,
            told: Mutex::default(),
        }
    }

    #[tokio::test]
    async fn promote_then_repoint_every_other() {
        let heir_at = Addr::new([127, 0, 1, 2].into(), 6379);
        let heir = member(false);
        let others = [member(false), member(true)];
        let failures = promote_and_repoint(&heir, heir_at, &others).await.unwrap();
        assert_eq!(*heir.told.lock().unwrap(), ["REPLICAOF NO ONE"]);
        assert_eq!(
            *others[0].told.lock().unwrap(),
            ["REPLICAOF 127.0.1.2 6379"]
        );
        assert_eq!(failures.len(), 1, "the refusal is reported, not dropped");
        let refused = promote_and_repoint(&member(true), heir_at, &others).await;
        assert!(refused.is_err());
        assert_eq!(others[0].told.lock().unwrap().len(), 1, "nobody re-pointed");
    }

    /// A sentinel: answers SENTINEL FAILOVER with `failover` and names the
    /// shared master.
    struct Sentinel {
        failover: Result<(), &'static str>,
        master: Arc<Mutex<Addr>>,
        promote_to: Addr,
    }

    impl RedisNode for Sentinel {
        fn name(&self) -> String {
            "s".into()
        }
        async fn command(&self, args: &[&str]) -> Result<Value, Error> {
            let b = |s: String| Value::Bulk(s.into_bytes());
            match args {
                ["SENTINEL", "FAILOVER", _] => {
                    self.failover
                        .map_err(|e| Error::reply("s", "SENTINEL FAILOVER", e))?;
                    *self.master.lock().unwrap() = self.promote_to;
                    Ok(Value::Status("OK".into()))
                }
                ["SENTINEL", "MASTER", name] => {
                    let m = *self.master.lock().unwrap();
                    Ok(Value::Array(vec![
                        b("name".into()),
                        b((*name).into()),
                        b("ip".into()),
                        b(m.ip.to_string()),
                        b("port".into()),
                        b(m.port.to_string()),
                        b("flags".into()),
                        b("master".into()),
                        b("num-slaves".into()),
                        b("2".into()),
                        b("num-other-sentinels".into()),
                        b("2".into()),
                    ]))
                }
                _ => Err(Error::reply("s", args.join(" "), "ERR unknown")),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sentinel_failover_waits_for_the_new_master() {
        let old = Addr::new([127, 0, 1, 1].into(), 6379);
        let new = Addr::new([127, 0, 1, 2].into(), 6379);
        let master = Arc::new(Mutex::new(old));
        let s = |failover| Sentinel {
            failover,
            master: master.clone(),
            promote_to: new,
        };
        // The first refuses (no good replica), the second takes it.
        let sentinels = [s(Err("NOGOODSLAVE no")), s(Ok(())), s(Ok(()))];
        let named = sentinel_failover(&sentinels, "lab", old, |_| true, within(5), POLL)
            .await
            .unwrap();
        assert_eq!(named, new);
        // One already failing over counts as started; a master outside
        // the deployment is never followed.
        *master.lock().unwrap() = old;
        let busy = [s(Err("INPROG Failover already in progress"))];
        let e = sentinel_failover(&busy, "lab", old, |a| a != new, within(5), POLL)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("named no new master"), "{e}");
        let refused = [s(Err("NOGOODSLAVE no"))];
        let e = sentinel_failover(&refused, "lab", old, |_| true, within(5), POLL)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no sentinel started"), "{e}");
    }
}
