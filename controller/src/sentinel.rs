//! The sentinels of a sentinel topology: what each one sees, whether they
//! agree with the replication they watch, and bringing them up.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::Error;
use crate::apply::start;
use crate::client::{InstanceState, Peer, Reply};
use crate::fleet::{Fleet, Target};
use crate::progress::Progress;

/// What one sentinel says about the master it monitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelView {
    pub master: Peer,
    pub flags: String,
    pub replicas: u32,
    pub other_sentinels: u32,
}

/// Parses the field/value list of SENTINEL MASTER.
pub fn parse_master(reply: &Reply) -> Option<SentinelView> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let texts: Vec<String> = items.iter().filter_map(Reply::text).collect();
    let get = |key: &str| {
        texts
            .chunks(2)
            .find(|kv| kv.len() == 2 && kv[0] == key)
            .map(|kv| kv[1].clone())
    };
    Some(SentinelView {
        master: Peer {
            ip: get("ip")?.parse().ok()?,
            port: get("port")?.parse().ok()?,
        },
        flags: get("flags")?,
        replicas: get("num-slaves")?.parse().ok()?,
        other_sentinels: get("num-other-sentinels")?.parse().ok()?,
    })
}

/// Each sentinel's view (None: not answering, or not monitoring `name`).
pub async fn views(fleet: &Fleet, sentinels: &[Target], name: &str) -> Vec<Option<SentinelView>> {
    join_all(sentinels.iter().map(|s| async move {
        let r = fleet.read(s, &[&["SENTINEL", "MASTER", name]]).await.ok()?;
        parse_master(r.first()?)
    }))
    .await
}

/// The other sentinels one sentinel knows (SENTINEL SENTINELS): where, and
/// whether it sees them down (`s_down`, `o_down`, `disconnected` flags).
pub fn parse_sentinels(reply: &Reply) -> Option<Vec<(Peer, bool)>> {
    let Reply::Array(entries) = reply else {
        return None;
    };
    entries
        .iter()
        .map(|e| {
            let Reply::Array(items) = e else { return None };
            let texts: Vec<String> = items.iter().filter_map(Reply::text).collect();
            let get = |key: &str| {
                texts
                    .chunks(2)
                    .find(|kv| kv.len() == 2 && kv[0] == key)
                    .map(|kv| kv[1].clone())
            };
            let flags = get("flags")?;
            let down = flags
                .split(',')
                .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"));
            Some((
                Peer {
                    ip: get("ip")?.parse().ok()?,
                    port: get("port")?.parse().ok()?,
                },
                !down,
            ))
        })
        .collect()
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
        ip: sentinels[i].ip,
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
    views: &[Option<SentinelView>],
    master: Option<Peer>,
    replicas: u32,
) -> Vec<String> {
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
    views: &[Option<SentinelView>],
    master: Option<Peer>,
    replicas: u32,
    unmanaged: &[bool],
) -> Vec<String> {
    let others = sentinels.len().saturating_sub(1) as u32;
    let mut out = Vec::new();
    for ((s, v), _) in sentinels
        .iter()
        .zip(views)
        .zip(unmanaged)
        .filter(|(_, u)| !**u)
    {
        let label = s.label();
        let Some(v) = v else {
            out.push(format!(
                "{label}: not running, or not monitoring the master"
            ));
            continue;
        };
        if let Some(m) = master
            && v.master != m
        {
            out.push(format!(
                "{label}: names {}:{} as master, but the replicas follow {}:{}",
                v.master.ip, v.master.port, m.ip, m.port
            ));
        }
        if v.flags != "master" {
            out.push(format!("{label}: sees the master as {}", v.flags));
        }
        if v.replicas < replicas {
            out.push(format!(
                "{label}: knows {} of {replicas} replica(s)",
                v.replicas
            ));
        }
        if v.other_sentinels < others {
            out.push(format!(
                "{label}: knows {} of the {others} other sentinel(s)",
                v.other_sentinels
            ));
        }
    }
    out
}

/// The master the sentinels name, by majority of those that answer.
pub fn named_master(views: &[Option<SentinelView>]) -> Option<Peer> {
    let named: Vec<Peer> = views.iter().flatten().map(|v| v.master).collect();
    named
        .iter()
        .max_by_key(|m| named.iter().filter(|n| n == m).count())
        .copied()
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
                let (quorum, down_after, failover_timeout) = (
                    s.quorum.to_string(),
                    s.down_after_ms.to_string(),
                    s.failover_timeout_ms.to_string(),
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
                agent.put_instance_live(&t.spec).await?;
            }
            _ => {
                agent.put_instance(&t.spec, false).await?;
            }
        }
    }
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
    let name = match sentinels.first().and_then(|t| t.spec.sentinel.as_ref()) {
        Some(s) => s.master_name.clone(),
        None => return Ok(()),
    };
    wait_guarding(fleet, sentinels, &name, master, replicas, Instant::now() + timeout)
        .await
        .map_err(|problems| {
            Error::NotConverged(format!(
                "the sentinels did not agree in time:\n  - {}\n  hint: sentinels find replicas through the master and each other through it (hello messages every 2 s); they must reach the master's port",
                problems.join("\n  - ")
            ))
        })?;
    progress.step(format!(
        "{} sentinel(s) guard master {}:{}",
        sentinels.len(),
        master.ip,
        master.port
    ));
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
) -> Result<(), Vec<String>> {
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
                ip: ip.into(),
                port: 6379,
            },
            flags: flags.into(),
            replicas,
            other_sentinels: others,
        })
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

    #[test]
    fn the_majority_names_the_master() {
        let views = [
            view([127, 0, 1, 1], "master", 2, 2),
            view([127, 0, 1, 2], "master", 2, 2),
            view([127, 0, 1, 2], "master", 2, 2),
            None,
        ];
        assert_eq!(
            named_master(&views),
            view([127, 0, 1, 2], "master", 2, 2).map(|v| v.master)
        );
        assert_eq!(named_master(&[None]), None);
    }

    #[test]
    fn other_sentinels_vouch_for_a_silent_one() {
        let text = "[deployment]\nname = \"t\"\ntopology = \"sentinel\"\n\
             [[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[hosts]]\nname = \"b\"\naddress = \"10.0.0.2\"\n\
             [[hosts]]\nname = \"c\"\naddress = \"10.0.0.3\"\n";
        let inventory = paddock_inventory::parse("t.toml", text).unwrap();
        let d = crate::fleet::Deployment {
            inventory_path: "t.toml".into(),
            placement: paddock_inventory::place(&inventory),
            inventory,
            password_path: "pw".into(),
            password: None,
            user_passwords: Vec::new(),
            transport: crate::client::Transport::Plaintext,
        };
        let sentinels = d.sentinels(d.placed_master());
        assert_eq!(sentinels.len(), 3);
        let at = |n: u8| Peer {
            ip: sentinels[usize::from(n) - 1].ip,
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
