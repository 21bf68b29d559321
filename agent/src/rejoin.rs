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

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use futures::future::join_all;

use crate::endpoint::Endpoint;
use crate::handover::NoHeir;
use crate::redis_access::{ReplyError, connect};
use crate::spec::{Group, Peer};

const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the sentinels get to promote a replica after we asked.
const SENTINEL_FAILOVER_WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// What a peer said about its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRole {
    Master {
        /// It has served replicas since it started (or is serving them).
        formed: bool,
        offset: i64,
    },
    Replica {
        master: Option<Peer>,
        offset: i64,
    },
}

/// How the member should start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    AsConfigured,
    ReplicaOf(Peer),
}

fn endpoint(p: &Peer, password: &str) -> Endpoint {
    Endpoint {
        address: p.address,
        port: p.port,
        password: password.to_owned(),
    }
}

/// A query to a peer that failed: where, and the Redis error whole, so a
/// decision can go by its code ([`ReplyError`]).
#[derive(Debug)]
struct Failed {
    peer: Peer,
    error: redis::RedisError,
}

impl Failed {
    fn code(&self) -> ReplyError {
        ReplyError::of(&self.error)
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.peer, self.error)
    }
}

impl From<Failed> for String {
    fn from(f: Failed) -> String {
        f.to_string()
    }
}

async fn query<T: redis::FromRedisValue>(
    p: &Peer,
    password: &str,
    cmd: &redis::Cmd,
) -> Result<T, Failed> {
    let failed = |error| Failed { peer: *p, error };
    let mut conn = connect(&endpoint(p, password), ASK_TIMEOUT)
        .await
        .map_err(failed)?;
    cmd.query_async(&mut conn).await.map_err(failed)
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
}

/// Parses INFO replication.
pub fn parse_role(info: &str) -> Option<PeerRole> {
    let num = |k: &str| field(info, k).and_then(|v| v.parse::<i64>().ok());
    match field(info, "role")? {
        "master" => Some(PeerRole::Master {
            formed: num("connected_slaves").unwrap_or(0) > 0
                || num("master_repl_offset").unwrap_or(0) > 0,
            offset: num("master_repl_offset").unwrap_or(0),
        }),
        "slave" => Some(PeerRole::Replica {
            master: match (field(info, "master_host"), num("master_port")) {
                (Some(h), Some(port)) => h.parse().ok().map(|address| Peer {
                    address,
                    port: port as u16,
                }),
                _ => None,
            },
            offset: num("slave_repl_offset")
                .or_else(|| num("master_repl_offset"))
                .unwrap_or(0),
        }),
        _ => None,
    }
}

async fn roles(peers: &[Peer], password: &str) -> Vec<Option<PeerRole>> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("replication");
    join_all(peers.iter().map(|p| {
        let cmd = &cmd;
        async move {
            let info: String = query(p, password, cmd).await.ok()?;
            parse_role(&info)
        }
    }))
    .await
}

/// The master each sentinel names (None: it did not answer).
async fn sentinels_named(group: &Group, password: &str) -> Vec<Option<Peer>> {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(&group.master_name);
    join_all(group.sentinels.iter().map(|s| {
        let cmd = &cmd;
        async move {
            let (host, port): (String, u16) = query(s, password, cmd).await.ok()?;
            Some(Peer {
                address: host.parse().ok()?,
                port,
            })
        }
    }))
    .await
}

/// The master each sentinel names and its config epoch (SENTINEL MASTER),
/// None where a sentinel did not answer.
async fn sentinels_views(group: &Group, password: &str) -> Vec<Option<(Peer, u64)>> {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("MASTER").arg(&group.master_name);
    join_all(group.sentinels.iter().map(|s| {
        let cmd = &cmd;
        async move {
            let fields: Vec<String> = query(s, password, cmd).await.ok()?;
            let get = |k: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv.len() == 2 && kv[0] == k)
                    .map(|kv| kv[1].as_str())
            };
            Some((
                Peer {
                    address: get("ip")?.parse().ok()?,
                    port: get("port")?.parse().ok()?,
                },
                get("config-epoch")?.parse().ok()?,
            ))
        }
    }))
    .await
}

/// The master the sentinels name, by majority of those that answer.
/// Whether `p` is this member or one of its peers. What a sentinel names is
/// followed only then: a sentinel fed a forged hello must not make a member
/// replicate (and send the password to) an address outside the deployment.
fn is_member(me: Peer, group: &Group, p: &Peer) -> bool {
    *p == me || group.peers.contains(p)
}

async fn sentinels_master(me: Peer, group: &Group, password: &str) -> Option<Peer> {
    let answers: Vec<Peer> = sentinels_named(group, password)
        .await
        .into_iter()
        .flatten()
        .filter(|p| is_member(me, group, p))
        .collect();
    answers
        .iter()
        .max_by_key(|a| answers.iter().filter(|b| b == a).count())
        .copied()
}

/// Decides, from the peers' roles alone, whom to replicate and, when this
/// member was the master, which replica should take over.
pub fn decide(me: Peer, peers: &[Peer], roles: &[Option<PeerRole>]) -> Decision {
    let best_master = peers
        .iter()
        .zip(roles)
        .filter_map(|(p, r)| match r {
            Some(PeerRole::Master {
                formed: true,
                offset,
            }) => Some((*p, *offset)),
            _ => None,
        })
        .max_by_key(|(_, offset)| *offset)
        .map(|(p, _)| p);
    let mine: Vec<(Peer, i64)> = peers
        .iter()
        .zip(roles)
        .filter_map(|(p, r)| match r {
            Some(PeerRole::Replica {
                master: Some(m),
                offset,
            }) if *m == me => Some((*p, *offset)),
            _ => None,
        })
        .collect();
    match best_master {
        Some(m) => Decision::Follow {
            master: m,
            repoint: mine.iter().map(|(p, _)| *p).collect(),
        },
        None if !mine.is_empty() => {
            let heir = mine.iter().max_by_key(|(_, o)| *o).map(|(p, _)| *p);
            let heir = heir.unwrap_or(mine[0].0);
            Decision::WasMaster {
                heir,
                others: mine
                    .iter()
                    .map(|(p, _)| *p)
                    .filter(|p| *p != heir)
                    .collect(),
            }
        }
        None => Decision::Nothing,
    }
}

/// Whether a member that keeps no data, found no master to follow and no
/// replica pointing at it, must still not start empty: it has been part of
/// a formed group and some peer did not answer, so that peer may be its
/// replica, holding the data set an empty master would have it copy.
pub fn unsafe_to_start_empty(formed: bool, roles: &[Option<PeerRole>]) -> bool {
    formed && roles.iter().any(Option::is_none)
}

/// The master a majority of all the group's sentinels names, with the
/// config epoch they name it under.
pub fn majority_named(named: &[Option<(Peer, u64)>]) -> Option<(Peer, u64)> {
    let majority = named.len() / 2 + 1;
    named
        .iter()
        .flatten()
        .find(|(m, _)| named.iter().flatten().filter(|(n, _)| n == m).count() >= majority)
        .map(|(m, _)| {
            let epoch = named
                .iter()
                .flatten()
                .filter(|(n, _)| n == m)
                .map(|(_, e)| *e)
                .max();
            (*m, epoch.unwrap_or(0))
        })
}

/// The master this running member should follow instead of serving as a
/// master itself: a majority of the group's sentinels names another member
/// under a newer config epoch than the one they last named this member
/// under (`mine`). Sentinel reconfigures a stale master by itself only
/// seconds after a partition heals; in the meantime it would take writes
/// the new master never sees. A member the sentinels never named (a replica
/// they are promoting right now) is left alone.
pub fn demotion(
    me: Peer,
    local: &PeerRole,
    named: &[Option<(Peer, u64)>],
    mine: Option<u64>,
) -> Option<Peer> {
    if !matches!(local, PeerRole::Master { .. }) {
        return None;
    }
    let (master, epoch) = majority_named(named)?;
    (master != me && mine.is_some_and(|m| epoch > m)).then_some(master)
}

/// Whether a member's own role shows it is part of a formed group.
pub fn is_formed(role: &PeerRole) -> bool {
    match role {
        PeerRole::Master { formed, .. } => *formed,
        PeerRole::Replica { master, offset } => master.is_some() && *offset > 0,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Another member is the master; `repoint` still replicate this one.
    Follow { master: Peer, repoint: Vec<Peer> },
    /// Replicas still point at this member: it was the master.
    WasMaster { heir: Peer, others: Vec<Peer> },
    /// Nothing formed yet, or nobody answers.
    Nothing,
}

async fn replicaof(p: &Peer, master: Option<&Peer>, password: &str) -> Result<(), String> {
    let mut cmd = redis::cmd("REPLICAOF");
    match master {
        Some(m) => cmd.arg(m.address.to_string()).arg(m.port),
        None => cmd.arg("NO").arg("ONE"),
    };
    Ok(query::<()>(p, password, &cmd).await?)
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
            for p in &repoint {
                // Best effort: the controller's next apply fixes a miss.
                let _ = replicaof(p, Some(&master), password).await;
            }
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
            replicaof(&heir, None, password).await.map_err(held)?;
            for p in &others {
                let _ = replicaof(p, Some(&heir), password).await;
            }
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
    let mut cmd = redis::cmd("INFO");
    cmd.arg("replication");
    let info: String = query(&me, password, &cmd).await?;
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
        replicaof(&me, Some(&master), password).await?;
        seen.demoted_to = Some(master);
    }
    Ok(seen)
}

/// Asks the sentinels to fail over now (the master's process is known
/// dead) and waits until they name the new master.
async fn sentinel_failover(me: Peer, group: &Group, password: &str) -> Result<Start, NoHeir> {
    let mut errors = Vec::new();
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("FAILOVER").arg(&group.master_name);
    let mut accepted = false;
    for s in &group.sentinels {
        match query::<String>(s, password, &cmd).await {
            Ok(_) => {
                accepted = true;
                break;
            }
            // Another sentinel already runs a failover: wait for it.
            Err(e) if e.code() == ReplyError::InProgress => {
                accepted = true;
                break;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !accepted {
        return Err(NoHeir {
            error: format!("no sentinel started a failover: {}", errors.join("; ")),
        });
    }
    let deadline = Instant::now() + SENTINEL_FAILOVER_WAIT;
    while Instant::now() < deadline {
        if let Some(master) = sentinels_master(me, group, password).await
            && master != me
        {
            return Ok(Start::ReplicaOf(master));
        }
        tokio::time::sleep(POLL).await;
    }
    Err(NoHeir {
        error: format!(
            "the sentinels did not name a new master within {} s",
            SENTINEL_FAILOVER_WAIT.as_secs()
        ),
    })
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
    fn a_restarted_replica_follows_the_master_that_served_replicas() {
        let fresh = Some(PeerRole::Master {
            formed: false,
            offset: 0,
        });
        let served = Some(PeerRole::Master {
            formed: true,
            offset: 10,
        });
        // First start: nothing formed, every member a bare master.
        assert_eq!(
            decide(p(3), &[p(1), p(2)], &[fresh.clone(), fresh]),
            Decision::Nothing
        );
        assert_eq!(
            decide(p(3), &[p(1), p(2)], &[served, replica_of(p(1), 10)]),
            Decision::Follow {
                master: p(1),
                repoint: vec![]
            }
        );
    }

    #[test]
    fn a_crashed_master_hands_over_to_its_most_up_to_date_replica() {
        assert_eq!(
            decide(
                p(1),
                &[p(2), p(3)],
                &[replica_of(p(1), 7), replica_of(p(1), 9)]
            ),
            Decision::WasMaster {
                heir: p(3),
                others: vec![p(2)]
            }
        );
        // A replica already took over (a failover ran first): follow it and
        // re-point whoever still points at the dead master.
        let promoted = Some(PeerRole::Master {
            formed: true,
            offset: 9,
        });
        assert_eq!(
            decide(p(1), &[p(2), p(3)], &[replica_of(p(1), 7), promoted]),
            Decision::Follow {
                master: p(3),
                repoint: vec![p(2)]
            }
        );
        assert_eq!(decide(p(1), &[p(2)], &[None]), Decision::Nothing);
    }

    #[test]
    fn a_dataless_member_that_was_formed_waits_for_silent_peers() {
        let replica = replica_of(p(1), 9);
        // First start: nothing formed yet, peers still starting.
        assert!(!unsafe_to_start_empty(false, &[None, None]));
        // Formed before, and a peer is silent: it may be our replica.
        assert!(unsafe_to_start_empty(true, &[None, replica.clone()]));
        // Everyone answered and none follows us: nothing to wipe.
        assert!(!unsafe_to_start_empty(true, &[replica.clone(), replica]));
    }

    #[test]
    fn a_master_follows_the_one_a_majority_of_sentinels_names_under_a_newer_epoch() {
        let master = PeerRole::Master {
            formed: true,
            offset: 5,
        };
        let replica = PeerRole::Replica {
            master: Some(p(2)),
            offset: 5,
        };
        let named = |v: &[Option<(u8, u64)>]| {
            v.iter()
                .map(|o| o.map(|(last, e)| (p(last), e)))
                .collect::<Vec<_>>()
        };
        // Cut off: only the local sentinel answers, and it still names us.
        assert_eq!(
            demotion(p(1), &master, &named(&[Some((1, 0)), None, None]), Some(0)),
            None
        );
        // One sentinel alone is no majority of three.
        assert_eq!(
            demotion(p(1), &master, &named(&[Some((2, 1)), None, None]), Some(0)),
            None
        );
        // Healed: two of three name the promoted replica under epoch 1.
        let healed = named(&[Some((1, 0)), Some((2, 1)), Some((2, 1))]);
        assert_eq!(demotion(p(1), &master, &healed, Some(0)), Some(p(2)));
        // A replica being promoted right now: the sentinels still name the
        // old master under the old epoch, and never named it: left alone.
        let promoting = named(&[None, Some((1, 0)), Some((1, 0))]);
        assert_eq!(demotion(p(3), &master, &promoting, None), None);
        assert_eq!(demotion(p(3), &master, &promoting, Some(0)), None);
        // Already a replica: nothing to do.
        assert_eq!(demotion(p(1), &replica, &healed, Some(0)), None);
        // The sentinels name us: we stay.
        let us = named(&[Some((1, 3)), Some((1, 3)), None]);
        assert_eq!(demotion(p(1), &master, &us, Some(3)), None);
        assert_eq!(majority_named(&us), Some((p(1), 3)));
    }

    #[test]
    fn formed_means_served_or_followed() {
        assert!(!is_formed(&PeerRole::Master {
            formed: false,
            offset: 0
        }));
        assert!(is_formed(&PeerRole::Master {
            formed: true,
            offset: 0
        }));
        assert!(is_formed(&PeerRole::Replica {
            master: Some(p(1)),
            offset: 3
        }));
        assert!(!is_formed(&PeerRole::Replica {
            master: Some(p(1)),
            offset: 0
        }));
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
