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

use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::redis_access::connect;

const NODES_FILE: &str = "nodes.conf";

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
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| f.len() >= 8)
        .collect();
    let me = lines
        .iter()
        .find(|f| f[2].split(',').any(|flag| flag == "myself"))?;
    let serves_slots = me.len() > 8 && me[8..].iter().any(|s| !s.starts_with('['));
    if !me[2].split(',').any(|flag| flag == "master") || !serves_slots {
        return None;
    }
    let my_id = me[0];
    Some(
        lines
            .iter()
            // A replica flagged failing (frozen, cut off) is kept: it may
            // still hold the data set, so it must be asked again later.
            .filter(|f| f[3] == my_id && f[2].split(',').any(|flag| flag == "slave"))
            .filter(|f| !f[2].split(',').any(|flag| flag == "noaddr"))
            .filter_map(|f| {
                let (ip, port) = f[1].split('@').next()?.rsplit_once(':')?;
                Some(Replica {
                    ip: ip.parse().ok()?,
                    port: port.parse().ok()?,
                })
            })
            .collect(),
    )
}

fn endpoint(replica: &Replica, password: &str) -> Endpoint {
    Endpoint {
        address: replica.ip,
        port: replica.port,
        password: password.to_owned(),
    }
}

async fn role(replica: &Replica, password: &str) -> Option<String> {
    let mut conn = connect(&endpoint(replica, password), Duration::from_secs(2))
        .await
        .ok()?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.ok()?;
    match role.first()? {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

async fn failover(replica: &Replica, password: &str, mode: &str) -> Result<(), String> {
    let at = format!("{}:{}", replica.ip, replica.port);
    let mut conn = connect(&endpoint(replica, password), Duration::from_secs(2))
        .await
        .map_err(|e| format!("{at}: {e}"))?;
    redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .arg(mode)
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| format!("{at}: CLUSTER FAILOVER {mode}: {e}"))
}

async fn wait_master(replica: &Replica, password: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if role(replica, password).await.as_deref() == Some("master") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Why no replica took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoHeir {
    pub error: String,
}

/// Has one of `replicas` take over. Ok names the new master.
pub async fn hand_over(replicas: &[Replica], password: &str) -> Result<String, NoHeir> {
    let mut errors = Vec::new();
    for mode in ["FORCE", "TAKEOVER"] {
        for r in replicas {
            match role(r, password).await.as_deref() {
                // Already took over (a failover ran just before the exit).
                Some("master") => return Ok(format!("{}:{}", r.ip, r.port)),
                Some(_) => {}
                None => {
                    errors.push(format!("{}:{} does not answer", r.ip, r.port));
                    continue;
                }
            }
            match failover(r, password, mode).await {
                Ok(()) if wait_master(r, password, Duration::from_secs(3)).await => {
                    return Ok(format!("{}:{}", r.ip, r.port));
                }
                Ok(()) => errors.push(format!(
                    "{}:{} accepted CLUSTER FAILOVER {mode} but did not become master",
                    r.ip, r.port
                )),
                Err(e) => errors.push(e),
            }
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
