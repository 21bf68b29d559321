//! The high-availability decisions, as pure functions over typed
//! observations. IO is the callers' (see [`crate::procedure`]).

use std::time::Duration;

use crate::Addr;
use crate::info::{InfoRole, Replication};

/// The most up-to-date candidate: the highest replication offset among
/// those whose offset is known (the last one on a tie).
pub fn heir_by_offset<K: Copy>(candidates: &[(K, Option<i64>)]) -> Option<K> {
    candidates
        .iter()
        .filter_map(|(k, o)| o.map(|o| (*k, o)))
        .max_by_key(|(_, o)| *o)
        .map(|(k, _)| k)
}

// ---- The replication group's rejoin decision -------------------------

/// What a member of a replication group said about its role. `A` is the
/// caller's address type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRole<A = Addr> {
    Master {
        /// It has served replicas since it started (or is serving them).
        formed: bool,
        offset: i64,
    },
    Replica {
        master: Option<A>,
        offset: i64,
    },
}

impl PeerRole<Addr> {
    /// From INFO replication; None when it names no role.
    pub fn from_info(r: &Replication) -> Option<Self> {
        match r.role? {
            InfoRole::Master => Some(PeerRole::Master {
                formed: r.connected_replicas.unwrap_or(0) > 0
                    || r.master_repl_offset.unwrap_or(0) > 0,
                offset: r.master_repl_offset.unwrap_or(0),
            }),
            InfoRole::Replica => Some(PeerRole::Replica {
                master: r.master,
                offset: r.replica_offset.or(r.master_repl_offset).unwrap_or(0),
            }),
        }
    }
}

impl<A> PeerRole<A> {
    /// The same role with the master's address converted.
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> PeerRole<B> {
        match self {
            PeerRole::Master { formed, offset } => PeerRole::Master { formed, offset },
            PeerRole::Replica { master, offset } => PeerRole::Replica {
                master: master.map(f),
                offset,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<A = Addr> {
    /// Another member is the master; `repoint` still replicate this one.
    Follow { master: A, repoint: Vec<A> },
    /// Replicas still point at this member: it was the master.
    WasMaster { heir: A, others: Vec<A> },
    /// Nothing formed yet, or nobody answers.
    Nothing,
}

/// Decides, from the peers' roles alone, whom a member about to start
/// (`me`) replicates and, when it was the master, which replica should take
/// over (the most up-to-date one).
pub fn decide<A: Copy + Eq>(me: A, peers: &[A], roles: &[Option<PeerRole<A>>]) -> Decision<A> {
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
    let mine: Vec<(A, Option<i64>)> = peers
        .iter()
        .zip(roles)
        .filter_map(|(p, r)| match r {
            Some(PeerRole::Replica {
                master: Some(m),
                offset,
            }) if *m == me => Some((*p, Some(*offset))),
            _ => None,
        })
        .collect();
    match best_master {
        Some(m) => Decision::Follow {
            master: m,
            repoint: mine.iter().map(|(p, _)| *p).collect(),
        },
        None => match heir_by_offset(&mine) {
            Some(heir) => Decision::WasMaster {
                heir,
                others: mine
                    .iter()
                    .map(|(p, _)| *p)
                    .filter(|p| *p != heir)
                    .collect(),
            },
            None => Decision::Nothing,
        },
    }
}

/// Whether a member that keeps no data, found no master to follow and no
/// replica pointing at it, must still not start empty: it has been part of
/// a formed group and some peer did not answer, so that peer may be its
/// replica, holding the data set an empty master would have it copy.
pub fn unsafe_to_start_empty<A>(formed: bool, roles: &[Option<PeerRole<A>>]) -> bool {
    formed && roles.iter().any(Option::is_none)
}

/// Whether a member's own role shows it is part of a formed group.
pub fn is_formed<A>(role: &PeerRole<A>) -> bool {
    match role {
        PeerRole::Master { formed, .. } => *formed,
        PeerRole::Replica { master, offset } => master.is_some() && *offset > 0,
    }
}

/// The master a majority of all the group's sentinels names, with the
/// config epoch they name it under.
pub fn majority_named<A: Copy + Eq>(named: &[Option<(A, u64)>]) -> Option<(A, u64)> {
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

/// The master most of the answering sentinels name.
pub fn most_named<A: Copy + Eq>(named: &[Option<A>]) -> Option<A> {
    let answers: Vec<A> = named.iter().flatten().copied().collect();
    answers
        .iter()
        .max_by_key(|a| answers.iter().filter(|b| b == a).count())
        .copied()
}

/// The master this running member should follow instead of serving as a
/// master itself: a majority of the group's sentinels names another member
/// under a newer config epoch than the one they last named this member
/// under (`mine`). Sentinel reconfigures a stale master by itself only
/// seconds after a partition heals; in the meantime it would take writes
/// the new master never sees. A member the sentinels never named (a replica
/// they are promoting right now) is left alone.
pub fn demotion<A: Copy + Eq>(
    me: A,
    local: &PeerRole<A>,
    named: &[Option<(A, u64)>],
    mine: Option<u64>,
) -> Option<A> {
    if !matches!(local, PeerRole::Master { .. }) {
        return None;
    }
    let (master, epoch) = majority_named(named)?;
    (master != me && mine.is_some_and(|m| epoch > m)).then_some(master)
}

// ---- CLUSTER FAILOVER escalation --------------------------------------

/// The CLUSTER FAILOVER variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverMode {
    /// No option: the master hands over once the replica has everything.
    Coordinated,
    /// Without the master, with the majority's votes.
    Force,
    /// Without anyone's agreement: only when the master is known gone.
    Takeover,
}

impl FailoverMode {
    /// The command's arguments.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            FailoverMode::Coordinated => &["CLUSTER", "FAILOVER"],
            FailoverMode::Force => &["CLUSTER", "FAILOVER", "FORCE"],
            FailoverMode::Takeover => &["CLUSTER", "FAILOVER", "TAKEOVER"],
        }
    }
}

/// How a replica is asked to take over: the modes to send in order, each
/// given `retry_after` to show a promotion before the next is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    pub modes: &'static [FailoverMode],
    /// Once the list is used up, keep sending its last mode (until the
    /// caller's deadline) rather than give up.
    pub repeat_last: bool,
    pub retry_after: Duration,
}

/// What to do next about one replica taking over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverNext {
    Done,
    Wait,
    Send(FailoverMode),
    GiveUp,
}

/// Given whether the replica is promoted, how many requests were sent and
/// how long ago the last one was.
pub fn next_failover(
    e: &Escalation,
    promoted: bool,
    sent: usize,
    since_last: Option<Duration>,
) -> FailoverNext {
    if promoted {
        return FailoverNext::Done;
    }
    if since_last.is_some_and(|s| s < e.retry_after) {
        return FailoverNext::Wait;
    }
    match e.modes.get(sent) {
        Some(m) => FailoverNext::Send(*m),
        None if e.repeat_last => e
            .modes
            .last()
            .map_or(FailoverNext::GiveUp, |m| FailoverNext::Send(*m)),
        None => FailoverNext::GiveUp,
    }
}

/// Whether a replica took its master's slots over for real: it serves
/// slots under a config epoch newer than the master it replaced (Redis
/// 7.0 may let a replica "win" a stale election under its old epoch, then
/// be overruled within milliseconds).
pub fn promoted(me: &crate::nodes::ClusterNode, master_epoch: u64) -> bool {
    me.is_master() && me.slot_count() > 0 && me.config_epoch > master_epoch
}

// ---- Switchover -------------------------------------------------------

/// One step of a lossless replication switchover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchStep<A = Addr> {
    /// CLIENT PAUSE WRITE on the old master.
    PauseWrites(A),
    /// Until the replica's offset reaches the paused master's.
    WaitCaughtUp(A),
    /// REPLICAOF NO ONE.
    Promote(A),
    /// SENTINEL FAILOVER, then wait for the sentinels to name the new
    /// master (they choose it).
    SentinelFailover,
    /// Every other member (the old master too) replicates the new master.
    RepointOthers,
    /// CLIENT UNPAUSE on the old master, whatever happened before.
    Unpause(A),
}

/// The steps of a switchover away from `master`: to `heir` (plain
/// replication), or to whichever replica the sentinels choose, in which
/// case every replica must catch up first.
pub fn switchover_steps<A: Copy + Eq>(
    master: A,
    heir: A,
    replicas: &[A],
    sentinels: bool,
) -> Vec<SwitchStep<A>> {
    let mut steps = vec![SwitchStep::PauseWrites(master)];
    if sentinels {
        steps.extend(replicas.iter().map(|r| SwitchStep::WaitCaughtUp(*r)));
        steps.push(SwitchStep::SentinelFailover);
    } else {
        steps.push(SwitchStep::WaitCaughtUp(heir));
        steps.push(SwitchStep::Promote(heir));
    }
    steps.push(SwitchStep::RepointOthers);
    steps.push(SwitchStep::Unpause(master));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(last: u8) -> Addr {
        Addr::new([127, 0, 1, last].into(), 6379)
    }

    fn replica_of(m: Addr, offset: i64) -> Option<PeerRole> {
        Some(PeerRole::Replica {
            master: Some(m),
            offset,
        })
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
        assert!(!unsafe_to_start_empty(false, &[None::<PeerRole>, None]));
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
        assert!(!is_formed(&PeerRole::<Addr>::Master {
            formed: false,
            offset: 0
        }));
        assert!(is_formed(&PeerRole::<Addr>::Master {
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
    fn the_heir_is_the_most_up_to_date_known_replica() {
        type Candidates = &'static [(u8, Option<i64>)];
        let table: [(Candidates, Option<u8>); 5] = [
            (&[(1, Some(7)), (2, Some(9))], Some(2)),
            (&[(1, Some(9)), (2, None)], Some(1)),
            (&[(1, None), (2, None)], None),
            (&[], None),
            // A tie goes to the last one, as max_by_key does.
            (&[(1, Some(5)), (2, Some(5))], Some(2)),
        ];
        for (candidates, want) in table {
            assert_eq!(heir_by_offset(candidates), want, "{candidates:?}");
        }
    }

    #[test]
    fn force_then_takeover() {
        use FailoverMode::*;
        let e = Escalation {
            modes: &[Force, Force, Takeover],
            repeat_last: true,
            retry_after: Duration::from_secs(2),
        };
        let once = Escalation {
            modes: &[Force, Takeover],
            repeat_last: false,
            ..e
        };
        let s = |n| Some(Duration::from_secs(n));
        // (escalation, promoted, sent, since last) -> next
        let table = [
            (&e, false, 0, None, FailoverNext::Send(Force)),
            (&e, false, 1, s(1), FailoverNext::Wait),
            (&e, false, 1, s(2), FailoverNext::Send(Force)),
            (&e, false, 2, s(3), FailoverNext::Send(Takeover)),
            (&e, false, 5, s(3), FailoverNext::Send(Takeover)),
            (&e, true, 1, s(0), FailoverNext::Done),
            (&once, false, 1, s(3), FailoverNext::Send(Takeover)),
            (&once, false, 2, s(1), FailoverNext::Wait),
            (&once, false, 2, s(3), FailoverNext::GiveUp),
            (&once, true, 2, s(3), FailoverNext::Done),
        ];
        for (esc, promoted, sent, since, want) in table {
            assert_eq!(
                next_failover(esc, promoted, sent, since),
                want,
                "{:?} promoted={promoted} sent={sent} since={since:?}",
                esc.modes
            );
        }
        assert_eq!(Takeover.args(), ["CLUSTER", "FAILOVER", "TAKEOVER"]);
    }

    #[test]
    fn a_promotion_counts_only_under_a_newer_epoch() {
        let line = |flags: &str, epoch: u64, slots: &str| {
            crate::nodes::parse(&format!(
                "e7 127.0.1.1:7001@17001 {flags} - 0 0 {epoch} connected {slots}"
            ))
            .remove(0)
        };
        // (my line, the old master's epoch) -> promoted
        let table = [
            (line("myself,master", 9, "10923-16383"), 8, true),
            // Redis 7.0's stale election: master for a moment under its old epoch.
            (line("myself,master", 7, "10923-16383"), 8, false),
            (line("myself,slave", 8, ""), 8, false),
            (line("myself,master", 9, ""), 8, false),
        ];
        for (me, epoch, want) in table {
            assert_eq!(promoted(&me, epoch), want, "{me:?} vs {epoch}");
        }
    }

    #[test]
    fn switchover_steps_pause_catch_up_switch_and_always_unpause() {
        use SwitchStep::*;
        assert_eq!(
            switchover_steps(p(1), p(2), &[p(2), p(3)], false),
            vec![
                PauseWrites(p(1)),
                WaitCaughtUp(p(2)),
                Promote(p(2)),
                RepointOthers,
                Unpause(p(1))
            ]
        );
        assert_eq!(
            switchover_steps(p(1), p(2), &[p(2), p(3)], true),
            vec![
                PauseWrites(p(1)),
                WaitCaughtUp(p(2)),
                WaitCaughtUp(p(3)),
                SentinelFailover,
                RepointOthers,
                Unpause(p(1))
            ]
        );
    }

    #[test]
    fn most_named_counts_only_answers() {
        assert_eq!(
            most_named(&[None, Some(p(2)), Some(p(2)), Some(p(1))]),
            Some(p(2))
        );
        assert_eq!(most_named::<Addr>(&[None, None]), None);
    }

    #[test]
    fn the_role_from_info_replication() {
        let master =
            Replication::parse("role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n");
        assert_eq!(
            PeerRole::from_info(&master),
            Some(PeerRole::Master {
                formed: false,
                offset: 0
            })
        );
        let replica = Replication::parse(
            "role:slave\r\nmaster_host:127.0.1.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\nslave_repl_offset:42\r\n",
        );
        assert_eq!(PeerRole::from_info(&replica), replica_of(p(1), 42));
        assert_eq!(PeerRole::from_info(&Replication::default()), None);
    }
}
