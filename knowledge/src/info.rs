//! INFO: the generic sections, and typed views of the fields Paddock reads.

use std::net::IpAddr;

use redis::InfoDict;

use crate::Addr;

/// One `# Name` section of INFO and its fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub fields: Vec<(String, String)>,
}

/// INFO text split into its sections (fields before any header go into a
/// section with an empty name).
pub fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('#') {
            out.push(Section {
                name: name.trim().to_owned(),
                fields: Vec::new(),
            });
        } else if let Some((k, v)) = line.split_once(':') {
            if out.is_empty() {
                out.push(Section {
                    name: String::new(),
                    fields: Vec::new(),
                });
            }
            if let Some(s) = out.last_mut() {
                s.fields.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    out
}

/// One field of INFO text, as a string.
pub fn field(text: &str, key: &str) -> Option<String> {
    InfoDict::new(text).get(key)
}

/// `role` in INFO replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoRole {
    Master,
    Replica,
}

/// A `slaveN:ip=...,port=...,state=...,offset=...,lag=...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedReplica {
    pub addr: Addr,
    /// `online`, `wait_bgsave`, `send_bulk`...
    pub state: String,
    pub offset: i64,
    pub lag: i64,
}

impl ConnectedReplica {
    pub fn online(&self) -> bool {
        self.state == "online"
    }
}

/// INFO replication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replication {
    pub role: Option<InfoRole>,
    /// A replica's master (`master_host`/`master_port`).
    pub master: Option<Addr>,
    /// A replica's `master_link_status` is `up`.
    pub link_up: Option<bool>,
    pub connected_replicas: Option<u32>,
    pub replicas: Vec<ConnectedReplica>,
    pub master_repl_offset: Option<i64>,
    /// A replica's `slave_repl_offset`: how much of the stream it has.
    pub replica_offset: Option<i64>,
}

impl Replication {
    pub fn parse(text: &str) -> Self {
        let d = InfoDict::new(text);
        let get = |k: &str| d.get::<String>(k).map(|v| v.trim().to_owned());
        let role = match get("role").as_deref() {
            Some("master") => Some(InfoRole::Master),
            Some("slave") => Some(InfoRole::Replica),
            _ => None,
        };
        let replica = role == Some(InfoRole::Replica);
        let master = replica
            .then(|| {
                Some(Addr {
                    ip: get("master_host")?.parse().ok()?,
                    port: get("master_port")?.parse().ok()?,
                })
            })
            .flatten();
        Replication {
            role,
            master,
            link_up: replica.then(|| get("master_link_status").as_deref() == Some("up")),
            connected_replicas: get("connected_slaves").and_then(|n| n.parse().ok()),
            replicas: text
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.trim().split_once(':')?;
                    let n = k.strip_prefix("slave")?;
                    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
                    parse_connected_replica(v)
                })
                .collect(),
            master_repl_offset: get("master_repl_offset").and_then(|n| n.parse().ok()),
            replica_offset: get("slave_repl_offset").and_then(|n| n.parse().ok()),
        }
    }

    pub fn is_master(&self) -> bool {
        self.role == Some(InfoRole::Master)
    }

    /// The addresses of the replicas whose link is online.
    pub fn replicas_online(&self) -> Vec<Addr> {
        self.replicas
            .iter()
            .filter(|r| r.online())
            .map(|r| r.addr)
            .collect()
    }
}

fn parse_connected_replica(v: &str) -> Option<ConnectedReplica> {
    let kv = |key: &str| {
        v.split(',')
            .find_map(|f| f.trim().strip_prefix(key)?.strip_prefix('='))
    };
    Some(ConnectedReplica {
        addr: Addr {
            ip: kv("ip")?.parse::<IpAddr>().ok()?,
            port: kv("port")?.parse().ok()?,
        },
        state: kv("state")?.to_owned(),
        offset: kv("offset").and_then(|o| o.parse().ok()).unwrap_or(0),
        lag: kv("lag").and_then(|o| o.parse().ok()).unwrap_or(0),
    })
}

/// INFO server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Server {
    pub version: Option<String>,
    pub process_id: Option<u32>,
    pub run_id: Option<String>,
}

impl Server {
    pub fn parse(text: &str) -> Self {
        let d = InfoDict::new(text);
        let get = |k: &str| d.get::<String>(k).map(|v| v.trim().to_owned());
        Server {
            version: get("redis_version"),
            process_id: get("process_id").and_then(|p| p.parse().ok()),
            run_id: get("run_id"),
        }
    }
}

/// INFO persistence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Persistence {
    /// Still loading its data set.
    pub loading: Option<bool>,
}

impl Persistence {
    pub fn parse(text: &str) -> Self {
        Persistence {
            loading: field(text, "loading").map(|l| l.trim() == "1"),
        }
    }
}

/// The version in `redis-server --version` output
/// ("Redis server v=7.0.15 sha=..." -> "7.0.15").
pub fn version_from_banner(text: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// INFO replication of a redis-server 7.0.15 master with two replicas,
    /// one still syncing.
    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.130.2,port=7002,state=online,offset=1834,lag=0\r\nslave1:ip=127.0.130.3,port=7003,state=wait_bgsave,offset=0,lag=1\r\nmaster_failover_state:no-failover\r\nmaster_replid:2f6a8b0e0c5b1ae0d5f0c4d3b8d1f0e2a9c7b6d5\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:1834\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\nrepl_backlog_size:1048576\r\nrepl_backlog_first_byte_offset:1\r\nrepl_backlog_histlen:1834\r\n";
    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.130.1\r\nmaster_port:7001\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:1\r\nmaster_sync_in_progress:0\r\nslave_read_repl_offset:1834\r\nslave_repl_offset:1820\r\nslave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_repl_offset:1834\r\n";

    fn at(last: u8, port: u16) -> Addr {
        Addr::new([127, 0, 130, last].into(), port)
    }

    #[test]
    fn replication_of_a_master_and_a_replica() {
        let m = Replication::parse(MASTER);
        assert!(m.is_master());
        assert_eq!(m.master, None);
        assert_eq!(m.link_up, None);
        assert_eq!(m.connected_replicas, Some(2));
        assert_eq!(m.master_repl_offset, Some(1834));
        assert_eq!(
            m.replicas,
            vec![
                ConnectedReplica {
                    addr: at(2, 7002),
                    state: "online".into(),
                    offset: 1834,
                    lag: 0
                },
                ConnectedReplica {
                    addr: at(3, 7003),
                    state: "wait_bgsave".into(),
                    offset: 0,
                    lag: 1
                },
            ]
        );
        assert_eq!(m.replicas_online(), vec![at(2, 7002)]);
        let r = Replication::parse(REPLICA);
        assert_eq!(r.role, Some(InfoRole::Replica));
        assert_eq!(r.master, Some(at(1, 7001)));
        assert_eq!(r.link_up, Some(true));
        assert_eq!(r.replica_offset, Some(1820));
        let down = REPLICA.replace("link_status:up", "link_status:down");
        assert_eq!(Replication::parse(&down).link_up, Some(false));
        assert_eq!(Replication::parse("garbage"), Replication::default());
    }

    #[test]
    fn server_persistence_and_sections() {
        let text = "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\nprocess_id:4242\r\nrun_id:8d2a3f\r\n\r\n# Persistence\r\nloading:1\r\nasync_loading:0\r\n";
        assert_eq!(
            Server::parse(text),
            Server {
                version: Some("7.0.15".into()),
                process_id: Some(4242),
                run_id: Some("8d2a3f".into()),
            }
        );
        assert_eq!(Persistence::parse(text).loading, Some(true));
        assert_eq!(Persistence::parse("loading:0").loading, Some(false));
        let s = sections(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "Persistence");
        assert_eq!(s[1].fields[1], ("async_loading".into(), "0".into()));
        assert_eq!(field(text, "redis_mode").as_deref(), Some("cluster"));
    }

    #[test]
    fn version_banner() {
        let table = [
            (
                "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=c4f6e7a3ff5bda13\n",
                Some("7.0.15"),
            ),
            ("garbage", None),
        ];
        for (text, want) in table {
            assert_eq!(version_from_banner(text).as_deref(), want);
        }
    }
}
