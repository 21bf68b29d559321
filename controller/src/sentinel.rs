//! The sentinels of a sentinel topology: what each one sees, whether they
//! agree with the replication they watch, and bringing them up.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::client::{AgentClient, InstanceState, Peer, Reply};
use crate::fleet::start_instance as start;
use crate::fleet::{Fleet, Target};
use crate::problem::SentinelProblem;
use crate::progress::Progress;
use paddock_knowledge::sentinel::MasterState;
use paddock_model::SentinelSpec;

/// What one sentinel says about the master it monitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelView {
    pub master: Peer,
    pub flags: String,
    pub replicas: u32,
    pub other_sentinels: u32,
    /// The master answers this sentinel's pings, but not with PONG: it
    /// refuses the sentinel's credentials (auth-pass), so the sentinel
    /// will soon call it down and cannot fail it over.
    pub master_refuses: bool,
}

/// Sentinel pings every second; an answer that is not an acceptable one
/// for longer than this, while answers keep coming, is a refusal.
const REFUSED_AFTER_MS: u64 = 3000;

/// Pure: from SENTINEL MASTER's `last-ping-reply` (any answer) and
/// `last-ok-ping-reply` (PONG, LOADING or MASTERDOWN), in ms ago.
pub fn refuses(last_reply_ms: u64, last_ok_reply_ms: u64) -> bool {
    last_reply_ms < REFUSED_AFTER_MS && last_ok_reply_ms >= REFUSED_AFTER_MS
}

/// Parses the field/value list of SENTINEL MASTER.
pub fn parse_master(reply: &Reply) -> Option<SentinelView> {
    let m = MasterState::parse(&crate::node::value(reply.clone()).ok()?)?;
    Some(SentinelView {
        master: Peer {
            address: m.addr.ip,
            port: m.addr.port,
        },
        flags: m.flags_text(),
        replicas: m.replicas,
        other_sentinels: m.other_sentinels,
        master_refuses: match (m.last_ping_reply_ms, m.last_ok_ping_reply_ms) {
            (Some(reply), Some(ok)) => refuses(reply, ok),
            _ => false,
        },
    })
}

/// What asking one sentinel gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Guarding(SentinelView),
    /// It answers, but refuses the deployment's password: it runs with
    /// another one (a password rotation that did not reach it).
    RefusesPassword,
    /// Not answering, or not monitoring the master.
    Unseen,
}

impl Seen {
    pub fn view(&self) -> Option<&SentinelView> {
        match self {
            Seen::Guarding(v) => Some(v),
            _ => None,
        }
    }
}

/// Each sentinel's view.
pub async fn views(fleet: &Fleet, sentinels: &[Target], name: &str) -> Vec<Seen> {
    join_all(sentinels.iter().map(|s| async move {
        match fleet.read(s, &[&["SENTINEL", "MASTER", name]]).await {
            Ok(r) => r
                .first()
                .and_then(parse_master)
                .map_or(Seen::Unseen, Seen::Guarding),
            Err(Error::RedisAuth { .. }) => Seen::RefusesPassword,
            Err(_) => Seen::Unseen,
        }
    }))
    .await
}

/// The other sentinels one sentinel knows (SENTINEL SENTINELS): where, and
/// whether it sees them down (`s_down`, `o_down`, `disconnected` flags).
pub fn parse_sentinels(reply: &Reply) -> Option<Vec<(Peer, bool)>> {
    let peers = paddock_knowledge::sentinel::parse_peers(&crate::node::value(reply.clone()).ok()?)?;
    Some(
        peers
            .iter()
            .map(|p| {
                (
                    Peer {
                        address: p.addr.ip,
                        port: p.addr.port,
                    },
                    !p.down(),
                )
            })
            .collect(),
    )
}

/// Each sentinel's list of the others (None: not answering).
pub async fn peer_lists(
    fleet: &Fleet,
    sentinels: &[Target],
    name: &str,
) -> Vec<Option<Vec<(Peer, bool)>>> {
    join_all(sentinels.iter().map(|s| async move {
        let r = fleet
            .read(s, &[&["SENTINEL", "SENTINELS", name]])
            .await
            .ok()?;
        parse_sentinels(r.first()?)
    }))
    .await
}

/// Pure: whether the other sentinels vouch for sentinel `i` (at least as
/// many of those that list it see it up as see it down, and one does).
pub fn vouched(sentinels: &[Target], lists: &[Option<Vec<(Peer, bool)>>], i: usize) -> bool {
    let me = Peer {
        address: sentinels[i].ip,
        port: sentinels[i].port,
    };
    let seen: Vec<bool> = lists
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(_, l)| {
            l.as_ref()?
                .iter()
                .find(|(p, _)| *p == me)
                .map(|(_, up)| *up)
        })
        .collect();
    let up = seen.iter().filter(|&&u| u).count();
    up > 0 && up * 2 >= seen.len()
}

/// What keeps the sentinels from guarding `master` with `replicas`
/// replicas: each must answer, name that master, see it up, and know every
/// replica and every other sentinel. Empty when all is well.
pub fn problems(
    sentinels: &[Target],
    views: &[Seen],
    master: Option<Peer>,
    replicas: u32,
) -> Vec<SentinelProblem> {
    problems_except(
        sentinels,
        views,
        master,
        replicas,
        &vec![false; sentinels.len()],
    )
}

/// As [`problems`], leaving out the sentinels marked in `unmanaged`
/// (their agent is unreachable and the other sentinels vouch for them:
/// that is reported once, for the host).
pub fn problems_except(
    sentinels: &[Target],
    views: &[Seen],
    master: Option<Peer>,
    replicas: u32,
    unmanaged: &[bool],
) -> Vec<SentinelProblem> {
    let others = sentinels.len().saturating_sub(1) as u32;
    let mut out = Vec::new();
    for ((s, v), _) in sentinels
        .iter()
        .zip(views)
        .zip(unmanaged)
        .filter(|(_, u)| !**u)
    {
        let label = s.label();
        let v = match v {
            Seen::Guarding(v) => v,
            Seen::RefusesPassword => {
                out.push(SentinelProblem::RefusesPassword { sentinel: label });
                continue;
            }
            Seen::Unseen => {
                out.push(SentinelProblem::NotMonitoring { sentinel: label });
                continue;
            }
        };
        if let Some(m) = master
            && v.master != m
        {
            out.push(SentinelProblem::NamesOther {
                sentinel: label.clone(),
                named: v.master,
                followed: m,
            });
        }
        if v.master_refuses {
            out.push(SentinelProblem::CredentialsRefused {
                sentinel: label.clone(),
            });
        }
        if v.flags != "master" {
            out.push(SentinelProblem::SeesMasterAs {
                sentinel: label.clone(),
                flags: v.flags.clone(),
            });
        }
        if v.replicas < replicas {
            out.push(SentinelProblem::MissesReplicas {
                sentinel: label.clone(),
                known: v.replicas,
                wanted: replicas,
            });
        }
        if v.other_sentinels < others {
            out.push(SentinelProblem::MissesSentinels {
                sentinel: label,
                known: v.other_sentinels,
                others,
            });
        }
    }
    out
}

/// The master the sentinels name, by majority of those that answer.
pub fn named_master(views: &[Seen]) -> Option<Peer> {
    let named: Vec<Option<Peer>> = views.iter().map(|v| v.view().map(|v| v.master)).collect();
    paddock_knowledge::decide::most_named(&named)
}

/// Writes the sentinels' specs (seeded with the current `master`), applies
/// changed settings to running sentinels live (SENTINEL SET: a restart
/// would cost them what they learned), starts the others, and waits until
/// they all guard the master.
pub async fn converge(
    fleet: &Fleet,
    sentinels: &[Target],
    master: Peer,
    replicas: u32,
    timeout: Duration,
    progress: &Progress,
) -> Result<(), Error> {
    stop_refusing_password(fleet, sentinels, progress).await?;
    put_specs(fleet, sentinels, progress).await?;
    start_stopped(fleet, sentinels, progress).await?;
    let name = match sentinels.first().and_then(|t| t.spec.sentinel.as_ref()) {
        Some(s) => s.master_name.clone(),
        None => return Ok(()),
    };
    set_refused_credentials(fleet, sentinels, &name, progress).await?;
    wait_guarding(fleet, sentinels, &name, master, replicas, Instant::now() + timeout)
        .await
        .map_err(|problems| {
            Error::NotConverged(format!(
                "the sentinels did not agree in time:\n  - {}\n  hint: sentinels find replicas through the master and each other through it (hello messages every 2 s); they must reach the master's port",
                crate::problem::join(&problems, "\n  - ")
            ))
        })?;
    progress.step(format!(
        "{} sentinel(s) guard master {}:{}",
        sentinels.len(),
        master.address,
        master.port
    ));
    Ok(())
}

/// A sentinel that refuses the deployment's password cannot be told
/// anything live: it is stopped, so the put that follows seeds its
/// sentinel.conf afresh (current password, current master) and it is
/// started again with the others.
async fn stop_refusing_password(
    fleet: &Fleet,
    sentinels: &[Target],
    progress: &Progress,
) -> Result<(), Error> {
    let Some(name) = sentinels
        .first()
        .and_then(|t| t.spec.sentinel.as_ref())
        .map(|s| s.master_name.clone())
    else {
        return Ok(());
    };
    let seen = views(fleet, sentinels, &name).await;
    for (t, v) in sentinels.iter().zip(&seen) {
        if *v == Seen::RefusesPassword {
            progress.step(format!(
                "{}: refuses the deployment's password; restarting it from a fresh sentinel.conf",
                t.label()
            ));
            fleet.agent(t.host)?.stop(&t.instance).await?;
        }
    }
    Ok(())
}

/// Asks every agent (all at once) whether its sentinel's spec changed in
/// a way that needs a restart, then, one by one, applies such changes live
/// to the sentinel and writes every spec.
async fn put_specs(fleet: &Fleet, sentinels: &[Target], progress: &Progress) -> Result<(), Error> {
    let planned = join_all(
        sentinels
            .iter()
            .map(|t| async move { fleet.agent(t.host)?.put_instance(&t.spec, true).await }),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>, Error>>()?;
    for (t, p) in sentinels.iter().zip(&planned) {
        let agent = fleet.agent(t.host)?;
        match &t.spec.sentinel {
            Some(s) if p.restart_needed => {
                progress.step(format!(
                    "{}: new settings applied live (SENTINEL SET)",
                    t.label()
                ));
                set_live(agent, t, s).await?;
                agent.put_instance_live(&t.spec).await?;
            }
            _ => {
                agent.put_instance(&t.spec, false).await?;
            }
        }
    }
    Ok(())
}

/// SENTINEL SET of the spec's quorum and timeouts on the running sentinel.
async fn set_live(agent: &AgentClient, t: &Target, s: &SentinelSpec) -> Result<(), Error> {
    let (quorum, down_after, failover_timeout) = (
        s.quorum.to_string(),
        s.down_after.as_millis().to_string(),
        s.failover_timeout.as_millis().to_string(),
    );
    let r = agent
        .redis_dangerous(
            &t.instance,
            &[&[
                "SENTINEL",
                "SET",
                &s.master_name,
                "quorum",
                &quorum,
                "down-after-milliseconds",
                &down_after,
                "failover-timeout",
                &failover_timeout,
            ]],
        )
        .await?;
    if let Some(e) = r[0].error() {
        return Err(Error::Redis {
            host: t.host_name.clone(),
            instance: t.instance.clone(),
            message: format!("SENTINEL SET: {e}"),
        });
    }
    Ok(())
}

/// Starts (all at once) the sentinels their agents do not report running.
async fn start_stopped(
    fleet: &Fleet,
    sentinels: &[Target],
    progress: &Progress,
) -> Result<(), Error> {
    let lists = join_all(sentinels.iter().map(|t| async move {
        let list = fleet.agent(t.host)?.list().await?;
        Ok::<_, Error>(
            list.into_iter()
                .find(|s| s.name == t.instance)
                .is_some_and(|s| s.state == InstanceState::Running),
        )
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, Error>>()?;
    let to_start: Vec<&Target> = sentinels
        .iter()
        .zip(&lists)
        .filter(|(_, running)| !**running)
        .map(|(t, _)| t)
        .collect();
    if !to_start.is_empty() {
        progress.step(format!("starting {} sentinel(s)", to_start.len()));
        join_all(to_start.iter().map(|t| start(fleet, t)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
    }
    Ok(())
}

/// A sentinel the master refuses (its credentials are not the current
/// password: a rotation that did not reach it) gets them set live.
async fn set_refused_credentials(
    fleet: &Fleet,
    sentinels: &[Target],
    name: &str,
    progress: &Progress,
) -> Result<(), Error> {
    let seen = views(fleet, sentinels, name).await;
    for (t, v) in sentinels.iter().zip(&seen) {
        if !v.view().is_some_and(|v| v.master_refuses) {
            continue;
        }
        progress.step(format!(
            "{}: the master refuses its credentials; setting auth-pass and sentinel-pass",
            t.label()
        ));
        let agent = fleet.agent(t.host)?;
        let r = agent
            .redis_dangerous(
                &t.instance,
                &[
                    &["SENTINEL", "SET", name, "auth-pass", &t.spec.password],
                    &[
                        "SENTINEL",
                        "CONFIG",
                        "SET",
                        "sentinel-pass",
                        &t.spec.password,
                    ],
                ],
            )
            .await?;
        if let Some(e) = r.iter().find_map(Reply::error) {
            return Err(Error::Redis {
                host: t.host_name.clone(),
                instance: t.instance.clone(),
                message: format!("SENTINEL SET auth-pass: {e}"),
            });
        }
    }
    Ok(())
}

/// Polls until every sentinel guards `master` ([`problems`] is empty);
/// Err carries the problems left at `deadline`.
pub async fn wait_guarding(
    fleet: &Fleet,
    sentinels: &[Target],
    name: &str,
    master: Peer,
    replicas: u32,
    deadline: Instant,
) -> Result<(), Vec<SentinelProblem>> {
    loop {
        let views = views(fleet, sentinels, name).await;
        let problems = problems(sentinels, &views, Some(master), replicas);
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(problems);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ip: [u8; 4], flags: &str, replicas: u32, others: u32) -> Option<SentinelView> {
        Some(SentinelView {
            master: Peer {
                address: ip.into(),
                port: 6379,
            },
            flags: flags.into(),
            replicas,
            other_sentinels: others,
            master_refuses: false,
        })
    }

    #[test]
    fn a_master_that_answers_but_never_with_pong_refuses_the_sentinel() {
        // (last any reply, last acceptable reply) in ms ago.
        for (reply, ok, want) in [
            (200, 200, false),
            (900, 900, false),
            // Answers every second, but only with errors (NOAUTH).
            (300, 12_000, true),
            (0, 3000, true),
            // Silent: down, not refusing (Sentinel reports s_down).
            (12_000, 12_000, false),
        ] {
            assert_eq!(refuses(reply, ok), want, "{reply} {ok}");
        }
    }

    #[test]
    fn parses_sentinel_master() {
        let words = [
            "name",
            "lab",
            "ip",
            "127.0.1.2",
            "port",
            "6379",
            "flags",
            "master",
            "num-slaves",
            "2",
            "num-other-sentinels",
            "2",
            "quorum",
            "2",
        ];
        let reply = Reply::Array(
            words
                .iter()
                .map(|w| Reply::Bulk(w.as_bytes().to_vec()))
                .collect(),
        );
        assert_eq!(parse_master(&reply), view([127, 0, 1, 2], "master", 2, 2));
    }

    fn seen(v: Option<SentinelView>) -> Seen {
        v.map_or(Seen::Unseen, Seen::Guarding)
    }

    #[test]
    fn the_majority_names_the_master() {
        let views = [
            seen(view([127, 0, 1, 1], "master", 2, 2)),
            seen(view([127, 0, 1, 2], "master", 2, 2)),
            seen(view([127, 0, 1, 2], "master", 2, 2)),
            Seen::Unseen,
            Seen::RefusesPassword,
        ];
        assert_eq!(
            named_master(&views),
            view([127, 0, 1, 2], "master", 2, 2).map(|v| v.master)
        );
        assert_eq!(named_master(&[Seen::Unseen]), None);
    }

    fn sentinel_targets() -> Vec<Target> {
        let text = "[deployment]\nname = \"lab\"\ntopology = \"sentinel\"\nreplicas_per_master = 2\n\
             [[hosts]]\nname = \"box1\"\naddress = \"127.0.1.1\"\n[[hosts]]\nname = \"box2\"\naddress = \"127.0.1.2\"\n\
             [[hosts]]\nname = \"box3\"\naddress = \"127.0.1.3\"\n";
        let d = deployment_from(text);
        d.sentinels(d.placed_master())
    }

    /// A deployment of the inventory `text`, as loaded (no files read).
    fn deployment_from(text: &str) -> crate::fleet::Deployment {
        let inventory = paddock_inventory::parse("t.toml", text).unwrap();
        crate::fleet::Deployment {
            inventory_path: "t.toml".into(),
            placement: paddock_inventory::place(&inventory),
            inventory,
            password_path: "pw".into(),
            password: Some("0123456789abcdef0123456789abcdef".into()),
            user_passwords: Vec::new(),
            transport: crate::client::Transport::Plaintext,
        }
    }

    #[test]
    fn credentials_that_fail_are_named_per_sentinel() {
        let targets = sentinel_targets();
        assert_eq!(targets.len(), 3);
        let good = || seen(view([127, 0, 1, 1], "master", 2, 2));
        let master = good().view().map(|v| v.master);
        let refused_by_master = Seen::Guarding(SentinelView {
            master_refuses: true,
            ..good().view().unwrap().clone()
        });
        let cases = [
            ([good(), good(), good()], Vec::<&str>::new()),
            (
                [good(), refused_by_master, good()],
                vec!["the master refuses its credentials"],
            ),
            (
                [good(), good(), Seen::RefusesPassword],
                vec!["refuses the deployment's password"],
            ),
            (
                [Seen::Unseen, good(), good()],
                vec!["not running, or not monitoring the master"],
            ),
        ];
        for (views, want) in cases {
            let got = problems(&targets, &views, master, 2);
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!(g.to_string().contains(w), "{g} / {w}");
            }
        }
    }

    #[test]
    fn other_sentinels_vouch_for_a_silent_one() {
        let text = "[deployment]\nname = \"t\"\ntopology = \"sentinel\"\n\
             [[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[hosts]]\nname = \"b\"\naddress = \"10.0.0.2\"\n\
             [[hosts]]\nname = \"c\"\naddress = \"10.0.0.3\"\n";
        let d = deployment_from(text);
        let sentinels = d.sentinels(d.placed_master());
        assert_eq!(sentinels.len(), 3);
        let at = |n: u8| Peer {
            address: sentinels[usize::from(n) - 1].ip,
            port: sentinels[usize::from(n) - 1].port,
        };
        // (what sentinels 2 and 3 say of sentinel 1, vouched?)
        let table = [
            ((Some(true), Some(true)), true),
            ((Some(true), None), true),
            ((Some(false), Some(false)), false),
            ((Some(true), Some(false)), true),
            ((None, None), false),
        ];
        for ((by2, by3), want) in table {
            let list = |seen: Option<bool>, me: u8| {
                let mut l = vec![(at(if me == 2 { 3 } else { 2 }), true)];
                if let Some(up) = seen {
                    l.push((at(1), up));
                }
                Some(l)
            };
            let lists = vec![None, list(by2, 2), list(by3, 3)];
            assert_eq!(vouched(&sentinels, &lists, 0), want, "{by2:?} {by3:?}");
        }
        let port = at(2).port.to_string();
        let reply = Reply::Array(vec![Reply::Array(
            [
                "name",
                "x",
                "ip",
                "10.0.0.2",
                "port",
                &port,
                "flags",
                "s_down,sentinel",
            ]
            .map(|w| Reply::Bulk(w.as_bytes().to_vec()))
            .to_vec(),
        )]);
        assert_eq!(parse_sentinels(&reply), Some(vec![(at(2), false)]));
    }
}
