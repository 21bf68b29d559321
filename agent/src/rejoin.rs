//! Keeping the roles of a replication group (replication and sentinel
//! topologies) right across restarts of one of its redis-servers.
//!
//! Redis does not remember at start-up whose replica it was (REPLICAOF is a
//! runtime setting), so a restarted replica would come back as a second,
//! stale master. And a master that crashed comes back as master of whatever
//! it loads: nothing, if it keeps no data on disk, which its replicas then
//! copy. So before a member starts, the agent asks the group:
//!
//! - someone else is the master (the sentinels say so, or a peer is a master
//!   that has served replicas): start as its replica;
//! - this member was the master (the sentinels still name it, or replicas
//!   still point at it): when the agent may fail over (fast failover, or a
//!   master without data on disk), the best replica takes over first: the
//!   sentinels are asked for a failover (SENTINEL FAILOVER: they pick the
//!   replica and bump the epoch, so they all agree), or without sentinels
//!   the most up-to-date replica is promoted and the others re-pointed.
//!   The member then starts as a replica of the new master.
//! - nobody answers, or nothing was ever formed: start as configured.

use std::time::Duration;

use futures::future::join_all;
use paddock_knowledge::decide::{self, most_named};
use paddock_knowledge::info::Replication;
use paddock_knowledge::{Addr, RedisNode, procedure, sentinel};

use crate::handover::NoHeir;
use crate::redis_access::PeerNode;
use crate::spec::{Group, Peer};

pub use paddock_knowledge::decide::{
    decide, demotion, is_formed, majority_named, unsafe_to_start_empty,
};

const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the sentinels get to promote a replica after we asked.
const SENTINEL_FAILOVER_WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// What a peer said about its role.
pub type PeerRole = decide::PeerRole<Peer>;
/// Whom a member about to start follows, or hands over to.
pub type Decision = decide::Decision<Peer>;

/// How the member should start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    AsConfigured,
    ReplicaOf(Peer),
}

fn node(p: &Peer, password: &str) -> PeerNode {
    PeerNode::new(p.address, p.port, password, ASK_TIMEOUT)
}

fn nodes(ps: &[Peer], password: &str) -> Vec<PeerNode> {
    ps.iter().map(|p| node(p, password)).collect()
}

fn peer(a: Addr) -> Peer {
    Peer {
        address: a.ip,
        port: a.port,
    }
}

fn addr(p: Peer) -> Addr {
    Addr::new(p.address, p.port)
}

/// Parses INFO replication.
pub fn parse_role(info: &str) -> Option<PeerRole> {
    decide::PeerRole::from_info(&Replication::parse(info)).map(|r| r.map(peer))
}

async fn roles(peers: &[Peer], password: &str) -> Vec<Option<PeerRole>> {
    join_all(peers.iter().map(|p| async move {
        let info = node(p, password)
            .text(&["INFO", "replication"])
            .await
            .ok()?;
        parse_role(&info)
    }))
    .await
}

/// The master each sentinel names (None: it did not answer).
async fn sentinels_named(group: &Group, password: &str) -> Vec<Option<Peer>> {
    let name = group.master_name.as_str();
    join_all(group.sentinels.iter().map(|s| async move {
        let v = node(s, password)
            .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name])
            .await
            .ok()?;
        sentinel::parse_master_addr(&v).map(peer)
    }))
    .await
}

/// The master each sentinel names and its config epoch (SENTINEL MASTER),
/// None where a sentinel did not answer.
async fn sentinels_views(group: &Group, password: &str) -> Vec<Option<(Peer, u64)>> {
    procedure::sentinel_views(&nodes(&group.sentinels, password), &group.master_name)
        .await
        .into_iter()
        .map(|v| {
            let m = v.ok()?;
            Some((peer(m.addr), m.config_epoch?))
        })
        .collect()
}

/// Whether `p` is this member or one of its peers. What a sentinel names is
/// followed only then: a sentinel fed a forged hello must not make a member
/// replicate (and send the password to) an address outside the deployment.
fn is_member(me: Peer, group: &Group, p: &Peer) -> bool {
    *p == me || group.peers.contains(p)
}

/// The master the sentinels name, by majority of those that answer.
async fn sentinels_master(me: Peer, group: &Group, password: &str) -> Option<Peer> {
    let named: Vec<Option<Peer>> = sentinels_named(group, password)
        .await
        .into_iter()
        .map(|p| p.filter(|p| is_member(me, group, p)))
        .collect();
    most_named(&named)
}

async fn replicaof(p: &Peer, master: &Peer, password: &str) -> Result<(), String> {
    match procedure::repoint(&[node(p, password)], addr(*master))
        .await
        .pop()
    {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    }
}

/// What the member knows of itself before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    pub peer: Peer,
    /// When it was the master, a replica takes over first (else it starts
    /// as configured and keeps its role).
    pub promote: bool,
    /// It keeps no data on disk: it never starts as a master while a
    /// replica may hold the data set.
    pub dataless: bool,
    /// It has been part of a formed group (see [`unsafe_to_start_empty`]).
    pub formed: bool,
}

fn held(error: String) -> NoHeir {
    NoHeir { error }
}

/// Works out how `me` should start.
pub async fn prepare(me: Me, group: &Group, password: &str) -> Result<Start, NoHeir> {
    if !group.sentinels.is_empty()
        && let Some(master) = sentinels_master(me.peer, group, password).await
    {
        if master != me.peer {
            return Ok(Start::ReplicaOf(master));
        }
        if !me.promote {
            return Ok(Start::AsConfigured);
        }
        return sentinel_failover(me.peer, group, password).await;
    }
    let roles = roles(&group.peers, password).await;
    match decide(me.peer, &group.peers, &roles) {
        Decision::Follow { master, repoint } => {
            // Best effort: the controller's next apply fixes a miss.
            let _ = procedure::repoint(&nodes(&repoint, password), addr(master)).await;
            Ok(Start::ReplicaOf(master))
        }
        // Sentinels watch this group but none answered: promoting behind
        // their back would fight them; an empty master would be copied.
        Decision::WasMaster { .. } if me.dataless && !group.sentinels.is_empty() => Err(held(
            "replicas still follow it and no sentinel answers to fail over".into(),
        )),
        Decision::WasMaster { .. } if !me.promote || !group.sentinels.is_empty() => {
            Ok(Start::AsConfigured)
        }
        Decision::WasMaster { heir, others } => {
            // Re-pointing the others is best effort, as above.
            procedure::promote_and_repoint(
                &node(&heir, password),
                addr(heir),
                &nodes(&others, password),
            )
            .await
            .map_err(|e| held(e.to_string()))?;
            Ok(Start::ReplicaOf(heir))
        }
        Decision::Nothing if me.dataless && unsafe_to_start_empty(me.formed, &roles) => {
            let silent: Vec<String> = group
                .peers
                .iter()
                .zip(&roles)
                .filter(|(_, r)| r.is_none())
                .map(|(p, _)| p.to_string())
                .collect();
            Err(held(format!(
                "{} does not answer and may be its replica",
                silent.join(", ")
            )))
        }
        Decision::Nothing => Ok(Start::AsConfigured),
    }
}

/// What a running member's watch found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Watch {
    pub formed: bool,
    /// The master it was just made a replica of.
    pub demoted_to: Option<Peer>,
    /// The config epoch under which a majority of the sentinels names it
    /// the master now.
    pub named_me_at: Option<u64>,
    /// It is a replica now: whatever epoch the sentinels named it master
    /// under belongs to an earlier reign, and must not make a later
    /// promotion look stale.
    pub is_replica: bool,
}

/// One look at a running member: is it part of a formed group, and does a
/// majority of the sentinels name another master under a newer epoch than
/// `mine` (then it follows that one at once).
pub async fn watch(
    me: Peer,
    group: &Group,
    password: &str,
    mine: Option<u64>,
) -> Result<Watch, String> {
    let info = node(&me, password)
        .text(&["INFO", "replication"])
        .await
        .map_err(|e| e.to_string())?;
    let role = parse_role(&info).ok_or_else(|| format!("{me}: no role in INFO replication"))?;
    let mut seen = Watch {
        formed: is_formed(&role),
        is_replica: matches!(role, PeerRole::Replica { .. }),
        ..Watch::default()
    };
    if group.sentinels.is_empty() || !matches!(role, PeerRole::Master { .. }) {
        return Ok(seen);
    }
    let named: Vec<Option<(Peer, u64)>> = sentinels_views(group, password)
        .await
        .into_iter()
        .map(|v| v.filter(|(p, _)| is_member(me, group, p)))
        .collect();
    seen.named_me_at = majority_named(&named)
        .filter(|(m, _)| *m == me)
        .map(|(_, e)| e);
    if let Some(master) = demotion(me, &role, &named, mine) {
        replicaof(&me, &master, password).await?;
        seen.demoted_to = Some(master);
    }
    Ok(seen)
}

/// Asks the sentinels to fail over now (the master's process is known
/// dead) and waits until they name the new master.
async fn sentinel_failover(me: Peer, group: &Group, password: &str) -> Result<Start, NoHeir> {
    procedure::sentinel_failover(
        &nodes(&group.sentinels, password),
        &group.master_name,
        addr(me),
        |a| is_member(me, group, &peer(a)),
        tokio::time::Instant::now() + SENTINEL_FAILOVER_WAIT,
        POLL,
    )
    .await
    .map(|m| Start::ReplicaOf(peer(m)))
    .map_err(|e| held(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(last: u8) -> Peer {
        Peer {
            address: [127, 0, 1, last].into(),
            port: 6379,
        }
    }

    fn replica_of(m: Peer, offset: i64) -> Option<PeerRole> {
        Some(PeerRole::Replica {
            master: Some(m),
            offset,
        })
    }

    #[test]
    fn parses_info_replication() {
        let master =
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n";
        assert_eq!(
            parse_role(master),
            Some(PeerRole::Master {
                formed: false,
                offset: 0
            })
        );
        let replica = "role:slave\r\nmaster_host:127.0.1.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\nslave_repl_offset:42\r\n";
        assert_eq!(parse_role(replica), replica_of(p(1), 42));
    }

    #[test]
    fn only_members_are_followed() {
        let group = Group {
            peers: vec![p(2), p(3)],
            sentinels: vec![],
            master_name: "lab".into(),
        };
        assert!(is_member(p(1), &group, &p(1)));
        assert!(is_member(p(1), &group, &p(3)));
        assert!(
            !is_member(p(1), &group, &p(9)),
            "an address outside the deployment"
        );
    }
}
