//! Handing a crashed Redis Cluster master's slots to one of its replicas
//! before the agent restarts it.
//!
//! Fast failover: the agent learns of a master's crash within milliseconds;
//! a replica that takes over at once serves writes again in a fraction of
//! the time Redis needs alone (cluster-node-timeout to detect, then an
//! election), or that the restarted master needs (its 2 s writable delay).
//!
//! Safe restart of a master that keeps no data on disk:
//! Such a master, restarted as it was, comes back empty under its old node
//! id, still master of its slots, and its replicas then copy the empty data
//! set: the best-known way to lose a whole Redis data set under a
//! supervisor. So before it is started again, one of its replicas takes its
//! slots over (CLUSTER FAILOVER FORCE, then TAKEOVER if the majority does not
//! answer in time: the old master is known dead, this is no partition). The
//! old master then starts, learns that its slots moved to a higher epoch, and
//! becomes a replica of the new master, syncing the data back.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use paddock_knowledge::decide::{Escalation, FailoverMode};
use paddock_knowledge::{nodes, procedure};

use crate::redis_access::PeerNode;

const NODES_FILE: &str = "nodes.conf";

/// FORCE needs the majority's votes; if they do not come within
/// `retry_after`, TAKEOVER: the old master is known dead, this is no
/// partition.
const ESCALATION: Escalation = Escalation {
    modes: &[FailoverMode::Force, FailoverMode::Takeover],
    repeat_last: false,
    retry_after: Duration::from_secs(3),
};
const POLL: Duration = Duration::from_millis(10);

/// A replica of this instance, per its nodes.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub ip: IpAddr,
    pub port: u16,
}

/// When this instance's nodes.conf says it is a master serving slots, its
/// replicas; None when it is not such a master (nothing to hand over).
pub fn replicas_if_master(dir: &Path) -> Option<Vec<Replica>> {
    // Redis's directory: never follow a link planted there.
    let text = crate::store::Dir::open(dir)
        .ok()?
        .read_to_string(NODES_FILE)
        .ok()?;
    let all = nodes::parse(&text);
    let me = nodes::myself(&all)?;
    if !me.is_master() || me.slot_count() == 0 {
        return None;
    }
    Some(
        all.iter()
            // A replica flagged failing (frozen, cut off) is kept: it may
            // still hold the data set, so it must be asked again later.
            .filter(|n| n.master_id.as_deref() == Some(me.id.as_str()) && n.is_replica())
            .filter(|n| !n.has(&nodes::Flag::NoAddr))
            .filter_map(|n| {
                let a = n.addr()?;
                Some(Replica {
                    ip: a.ip,
                    port: a.port,
                })
            })
            .collect(),
    )
}

/// Why no replica took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoHeir {
    pub error: String,
}

/// Has one of `replicas` take over. Ok names the new master.
pub async fn hand_over(replicas: &[Replica], password: &str) -> Result<String, NoHeir> {
    let mut errors = Vec::new();
    for r in replicas {
        let node = PeerNode::new(r.ip, r.port, password, Duration::from_secs(2));
        // Each mode gets its wait, plus a margin for the last look.
        let deadline = tokio::time::Instant::now()
            + ESCALATION.retry_after * ESCALATION.modes.len() as u32
            + Duration::from_millis(500);
        match procedure::cluster_failover(&node, &ESCALATION, deadline, POLL, |_| {}).await {
            Ok(()) => return Ok(format!("{}:{}", r.ip, r.port)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(NoHeir {
        error: if errors.is_empty() {
            "it has no replica".into()
        } else {
            errors.join("; ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a1 127.0.1.1:7000@17000,,tls-port=0,shard-id=x myself,master - 0 0 1 connected 0-5460
b2 127.0.1.2:7001@17001,,tls-port=0,shard-id=x slave a1 0 0 1 connected
c3 127.0.1.3:7000@17000 master - 0 0 3 connected 10923-16383
d4 127.0.1.3:7001@17001 slave c3 0 0 3 connected
vars currentEpoch 3 lastVoteEpoch 0
";

    #[test]
    fn finds_the_replicas_of_a_master_serving_slots() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODES_FILE), NODES).unwrap();
        assert_eq!(
            replicas_if_master(dir.path()),
            Some(vec![Replica {
                ip: "127.0.1.2".parse().unwrap(),
                port: 7001
            }])
        );
    }

    #[test]
    fn a_replica_or_a_slotless_master_has_nothing_to_hand_over() {
        let dir = tempfile::tempdir().unwrap();
        let replica = NODES.replace("myself,master", "master").replace(
            "b2 127.0.1.2:7001@17001,,tls-port=0,shard-id=x slave",
            "b2 127.0.1.2:7001@17001 myself,slave",
        );
        std::fs::write(dir.path().join(NODES_FILE), replica).unwrap();
        assert_eq!(replicas_if_master(dir.path()), None);
        std::fs::write(
            dir.path().join(NODES_FILE),
            "a1 127.0.1.1:7000@17000 myself,master - 0 0 0 connected\n",
        )
        .unwrap();
        assert_eq!(replicas_if_master(dir.path()), None);
        assert_eq!(replicas_if_master(Path::new("/nonexistent")), None);
    }
}
