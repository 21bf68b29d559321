//! SENTINEL replies: MASTERS / MASTER, GET-MASTER-ADDR-BY-NAME, SENTINELS
//! and REPLICAS.

use crate::{Addr, Value};

/// SENTINEL MASTER (one entry of SENTINEL MASTERS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterState {
    pub name: String,
    pub addr: Addr,
    /// `master`, `master,s_down`, `master,o_down,failover_in_progress`...
    pub flags: Vec<String>,
    pub replicas: u32,
    pub other_sentinels: u32,
    pub config_epoch: Option<u64>,
    pub quorum: Option<u32>,
    /// ms since the last answer to a ping, of any kind.
    pub last_ping_reply_ms: Option<u64>,
    /// ms since the last acceptable answer (PONG, LOADING, MASTERDOWN).
    pub last_ok_ping_reply_ms: Option<u64>,
}

impl MasterState {
    pub fn parse(v: &Value) -> Option<MasterState> {
        let pairs = v.pairs()?;
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        Some(MasterState {
            name: get("name")?.to_owned(),
            addr: Addr {
                ip: get("ip")?.parse().ok()?,
                port: get("port")?.parse().ok()?,
            },
            flags: get("flags")?.split(',').map(str::to_owned).collect(),
            replicas: get("num-slaves")?.parse().ok()?,
            other_sentinels: get("num-other-sentinels")?.parse().ok()?,
            config_epoch: get("config-epoch").and_then(|e| e.parse().ok()),
            quorum: get("quorum").and_then(|q| q.parse().ok()),
            last_ping_reply_ms: get("last-ping-reply").and_then(|q| q.parse().ok()),
            last_ok_ping_reply_ms: get("last-ok-ping-reply").and_then(|q| q.parse().ok()),
        })
    }

    /// SENTINEL MASTERS.
    pub fn parse_all(v: &Value) -> Option<Vec<MasterState>> {
        v.array()?.iter().map(MasterState::parse).collect()
    }

    pub fn flags_text(&self) -> String {
        self.flags.join(",")
    }
}

/// SENTINEL GET-MASTER-ADDR-BY-NAME: None for a nil reply (an unknown
/// name) or an address that does not parse.
pub fn parse_master_addr(v: &Value) -> Option<Addr> {
    let items = v.array()?;
    Some(Addr {
        ip: items.first()?.text()?.parse().ok()?,
        port: items.get(1)?.int()?.try_into().ok()?,
    })
}

/// One entry of SENTINEL SENTINELS or SENTINEL REPLICAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: Addr,
    pub flags: Vec<String>,
    /// A replica's `master-link-status` is `ok`.
    pub link_ok: Option<bool>,
}

impl Peer {
    /// Seen down (`s_down`, `o_down`) or not connected.
    pub fn down(&self) -> bool {
        self.flags
            .iter()
            .any(|f| matches!(f.as_str(), "s_down" | "o_down" | "disconnected"))
    }
}

/// SENTINEL SENTINELS / SENTINEL REPLICAS; None when an entry does not parse.
pub fn parse_peers(v: &Value) -> Option<Vec<Peer>> {
    v.array()?
        .iter()
        .map(|e| {
            let pairs = e.pairs()?;
            let get = |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            Some(Peer {
                addr: Addr {
                    ip: get("ip")?.parse().ok()?,
                    port: get("port")?.parse().ok()?,
                },
                flags: get("flags")?.split(',').map(str::to_owned).collect(),
                link_ok: get("master-link-status").map(|s| s == "ok"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(kv: &[&str]) -> Value {
        Value::Array(
            kv.iter()
                .map(|s| Value::Bulk(s.as_bytes().to_vec()))
                .collect(),
        )
    }

    /// SENTINEL MASTER lab of redis-sentinel 7.0.15 (abridged).
    fn master() -> Value {
        list(&[
            "name",
            "lab",
            "ip",
            "127.0.130.2",
            "port",
            "6379",
            "runid",
            "5f3a",
            "flags",
            "master",
            "link-pending-commands",
            "0",
            "link-refcount",
            "1",
            "last-ping-sent",
            "0",
            "last-ok-ping-reply",
            "411",
            "last-ping-reply",
            "411",
            "down-after-milliseconds",
            "5000",
            "info-refresh",
            "4470",
            "role-reported",
            "master",
            "role-reported-time",
            "63004",
            "config-epoch",
            "2",
            "num-slaves",
            "2",
            "num-other-sentinels",
            "2",
            "quorum",
            "2",
            "failover-timeout",
            "60000",
            "parallel-syncs",
            "1",
        ])
    }

    #[test]
    fn master_state() {
        let m = MasterState::parse(&master()).unwrap();
        assert_eq!(m.name, "lab");
        assert_eq!(m.addr, Addr::new([127, 0, 130, 2].into(), 6379));
        assert_eq!(m.flags_text(), "master");
        assert_eq!(
            (m.replicas, m.other_sentinels, m.config_epoch),
            (2, 2, Some(2))
        );
        assert_eq!(m.quorum, Some(2));
        assert_eq!(
            (m.last_ping_reply_ms, m.last_ok_ping_reply_ms),
            (Some(411), Some(411))
        );
        assert_eq!(
            MasterState::parse_all(&Value::Array(vec![master()]))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(MasterState::parse(&list(&["name", "lab"])), None);
        assert_eq!(MasterState::parse(&Value::Nil), None);
    }

    #[test]
    fn master_addr() {
        let table = [
            (
                list(&["127.0.130.2", "6379"]),
                Some(Addr::new([127, 0, 130, 2].into(), 6379)),
            ),
            (Value::Nil, None),
            (list(&["nohost", "6379"]), None),
        ];
        for (v, want) in table {
            assert_eq!(parse_master_addr(&v), want);
        }
    }

    #[test]
    fn sentinels_and_replicas() {
        let s = Value::Array(vec![
            list(&[
                "name",
                "9f1e",
                "ip",
                "127.0.130.3",
                "port",
                "26379",
                "flags",
                "sentinel",
            ]),
            list(&[
                "name",
                "a0c2",
                "ip",
                "127.0.130.4",
                "port",
                "26379",
                "flags",
                "s_down,sentinel,disconnected",
            ]),
        ]);
        let peers = parse_peers(&s).unwrap();
        assert_eq!(peers[0].addr, Addr::new([127, 0, 130, 3].into(), 26379));
        assert!(!peers[0].down());
        assert!(peers[1].down());
        let r = Value::Array(vec![list(&[
            "name",
            "127.0.130.5:6379",
            "ip",
            "127.0.130.5",
            "port",
            "6379",
            "flags",
            "slave",
            "master-link-status",
            "ok",
        ])]);
        assert_eq!(parse_peers(&r).unwrap()[0].link_ok, Some(true));
        assert_eq!(parse_peers(&Value::Array(vec![list(&["ip"])])), None);
    }
}
