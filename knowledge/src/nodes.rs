//! CLUSTER NODES and nodes.conf (the same line format; nodes.conf adds a
//! `vars` line, which is skipped).

use std::net::IpAddr;

use crate::Addr;

/// Hash slots of a Redis Cluster.
pub const SLOTS: u32 = 16384;

/// A CLUSTER NODES flag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Flag {
    Myself,
    Master,
    Replica,
    /// `fail?`: this node suspects it failed.
    PFail,
    Fail,
    Handshake,
    NoAddr,
    NoFailover,
    NoFlags,
    Other(String),
}

impl Flag {
    pub fn parse(s: &str) -> Flag {
        match s {
            "myself" => Flag::Myself,
            "master" => Flag::Master,
            "slave" => Flag::Replica,
            "fail?" => Flag::PFail,
            "fail" => Flag::Fail,
            "handshake" => Flag::Handshake,
            "noaddr" => Flag::NoAddr,
            "nofailover" => Flag::NoFailover,
            "noflags" => Flag::NoFlags,
            other => Flag::Other(other.to_owned()),
        }
    }

    /// The word Redis writes.
    pub fn as_str(&self) -> &str {
        match self {
            Flag::Myself => "myself",
            Flag::Master => "master",
            Flag::Replica => "slave",
            Flag::PFail => "fail?",
            Flag::Fail => "fail",
            Flag::Handshake => "handshake",
            Flag::NoAddr => "noaddr",
            Flag::NoFailover => "nofailover",
            Flag::NoFlags => "noflags",
            Flag::Other(s) => s,
        }
    }
}

/// Which way an open slot moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `[slot->-id]`: this node is giving the slot to `id`.
    Migrating,
    /// `[slot-<-id]`: this node is taking the slot from `id`.
    Importing,
}

/// A slot left open by a resharding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSlot {
    pub slot: u16,
    pub direction: Direction,
    pub node_id: String,
}

impl std::fmt::Display for OpenSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let arrow = match self.direction {
            Direction::Migrating => "->-",
            Direction::Importing => "-<-",
        };
        write!(f, "[{}{arrow}{}]", self.slot, self.node_id)
    }
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: String,
    /// None when the node has no address yet (`:0`, or an empty ip).
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub bus_port: Option<u16>,
    pub hostname: Option<String>,
    pub flags: Vec<Flag>,
    pub master_id: Option<String>,
    pub config_epoch: u64,
    /// The link state is `connected`.
    pub connected: bool,
    /// Inclusive slot ranges it serves.
    pub slots: Vec<(u32, u32)>,
    pub open_slots: Vec<OpenSlot>,
}

impl ClusterNode {
    pub fn has(&self, flag: &Flag) -> bool {
        self.flags.contains(flag)
    }
    pub fn is_myself(&self) -> bool {
        self.has(&Flag::Myself)
    }
    pub fn is_master(&self) -> bool {
        self.has(&Flag::Master)
    }
    pub fn is_replica(&self) -> bool {
        self.has(&Flag::Replica)
    }
    /// Flagged fail or noaddr: gone, as far as this node knows.
    pub fn is_gone(&self) -> bool {
        self.has(&Flag::Fail) || self.has(&Flag::NoAddr)
    }
    pub fn slot_count(&self) -> u32 {
        self.slots.iter().map(|(a, b)| b - a + 1).sum()
    }
    /// Its address, when it has a usable one.
    pub fn addr(&self) -> Option<Addr> {
        let ip = self.ip?;
        (self.port != 0).then_some(Addr {
            ip,
            port: self.port,
        })
    }
}

/// Parses CLUSTER NODES output or nodes.conf; lines that do not parse are
/// skipped.
pub fn parse(text: &str) -> Vec<ClusterNode> {
    text.lines().filter_map(parse_line).collect()
}

/// The line flagged `myself`.
pub fn myself(nodes: &[ClusterNode]) -> Option<&ClusterNode> {
    nodes.iter().find(|n| n.is_myself())
}

fn parse_line(line: &str) -> Option<ClusterNode> {
    let mut f = line.split_whitespace();
    let id = f.next()?.to_owned();
    let addr = f.next()?;
    let flags = f.next()?.split(',').map(Flag::parse).collect();
    let master = f.next()?;
    let _ping_sent = f.next()?;
    let _pong_recv = f.next()?;
    let config_epoch = f.next()?.parse().ok()?;
    let link = f.next()?;
    // "ip:port@cport[,hostname][,aux=...]"; ip may be empty.
    let mut parts = addr.split(',');
    let endpoint = parts.next()?;
    let hostname = parts.next().filter(|h| !h.is_empty() && !h.contains('='));
    let (host_port, bus) = match endpoint.split_once('@') {
        Some((hp, bus)) => (hp, Some(bus)),
        None => (endpoint, None),
    };
    let (ip, port) = host_port.rsplit_once(':')?;
    let mut slots = Vec::new();
    let mut open_slots = Vec::new();
    for s in f {
        if let Some(open) = s.strip_prefix('[') {
            open_slots.push(parse_open(open.strip_suffix(']')?)?);
            continue;
        }
        slots.push(match s.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let n = s.parse().ok()?;
                (n, n)
            }
        });
    }
    Some(ClusterNode {
        id,
        ip: ip.trim_matches(['[', ']']).parse().ok(),
        port: port.parse().ok()?,
        bus_port: bus.and_then(|b| b.parse().ok()),
        hostname: hostname.map(str::to_owned),
        flags,
        master_id: (master != "-").then(|| master.to_owned()),
        config_epoch,
        connected: link == "connected",
        slots,
        open_slots,
    })
}

fn parse_open(s: &str) -> Option<OpenSlot> {
    let (slot, direction, id) = if let Some((slot, id)) = s.split_once("->-") {
        (slot, Direction::Migrating, id)
    } else {
        let (slot, id) = s.split_once("-<-")?;
        (slot, Direction::Importing, id)
    };
    Some(OpenSlot {
        slot: slot.parse().ok()?,
        direction,
        node_id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CLUSTER NODES of redis-server 7.0.15 (127.0.130.1:7001) with slot
    /// 100 migrating, and a node that never finished its handshake.
    const MIGRATING: &str = "\
f9cbd0c28ef128421d72f039b6f8245b3361850e 127.0.0.1:7004@17004 master - 1796007338175 1796007336943 4 disconnected 12288-16383
e165ae0041d605cebddd48ee5608f6c4932912e4 127.0.0.1:7002@17002 master - 1796007339200 1796007337000 2 disconnected 4096-8191
212b006c3974c1677e275e9ed8483117b7cea5d9 127.0.130.1:7001@17001 myself,master - 0 1796007340000 1 connected 0-4095 [100->-e165ae0041d605cebddd48ee5608f6c4932912e4]
15f9e04e605d91dac3204dd087787eb53f855aef 127.0.130.1:7003@17003 master - 0 1796007342352 3 connected 8192-12287
vars currentEpoch 4 lastVoteEpoch 0
";
    const IMPORTING: &str = "e165ae0041d605cebddd48ee5608f6c4932912e4 127.0.130.1:7002@17002 myself,master - 0 1796007337000 2 connected 4096-8191 [100-<-212b006c3974c1677e275e9ed8483117b7cea5d9]";

    #[test]
    fn parses_a_cluster_with_an_open_slot() {
        let nodes = parse(MIGRATING);
        assert_eq!(nodes.len(), 4, "the vars line is skipped");
        let me = myself(&nodes).unwrap();
        assert_eq!(me.id, "212b006c3974c1677e275e9ed8483117b7cea5d9");
        assert_eq!(me.addr(), Some(Addr::new([127, 0, 130, 1].into(), 7001)));
        assert_eq!(me.bus_port, Some(17001));
        assert_eq!(me.flags, vec![Flag::Myself, Flag::Master]);
        assert_eq!(me.config_epoch, 1);
        assert!(me.connected);
        assert_eq!(me.slots, vec![(0, 4095)]);
        assert_eq!(me.slot_count(), 4096);
        assert_eq!(
            me.open_slots,
            vec![OpenSlot {
                slot: 100,
                direction: Direction::Migrating,
                node_id: "e165ae0041d605cebddd48ee5608f6c4932912e4".into()
            }]
        );
        assert_eq!(
            me.open_slots[0].to_string(),
            "[100->-e165ae0041d605cebddd48ee5608f6c4932912e4]"
        );
        assert!(!nodes[0].connected);
        let imp = parse(IMPORTING).remove(0);
        assert_eq!(imp.open_slots[0].direction, Direction::Importing);
        assert_eq!(
            imp.open_slots[0].to_string(),
            "[100-<-212b006c3974c1677e275e9ed8483117b7cea5d9]"
        );
    }

    #[test]
    fn table_of_lines() {
        // (line, ip, port, hostname, flags, master, slots)
        type Row = (
            &'static str,
            Option<&'static str>,
            u16,
            Option<&'static str>,
            Vec<Flag>,
            Option<&'static str>,
            u32,
        );
        let table: Vec<Row> = vec![
            (
                "b2 127.0.1.2:7001@17001,,tls-port=0,shard-id=x slave a1 0 0 1 connected",
                Some("127.0.1.2"),
                7001,
                None,
                vec![Flag::Replica],
                Some("a1"),
                0,
            ),
            (
                "x 10.0.0.2:7000@17000,host1 master - 0 0 1 connected 0 2-3",
                Some("10.0.0.2"),
                7000,
                Some("host1"),
                vec![Flag::Master],
                None,
                3,
            ),
            (
                "g :0@0 master,fail,noaddr - 0 0 0 disconnected",
                None,
                0,
                None,
                vec![Flag::Master, Flag::Fail, Flag::NoAddr],
                None,
                0,
            ),
            (
                "h 127.0.0.9:7000@17000 handshake,fail? - 0 0 0 connected",
                Some("127.0.0.9"),
                7000,
                None,
                vec![Flag::Handshake, Flag::PFail],
                None,
                0,
            ),
        ];
        for (line, ip, port, host, flags, master, slots) in table {
            let n = parse(line).pop().unwrap_or_else(|| panic!("{line}"));
            assert_eq!(n.ip, ip.map(|i| i.parse().unwrap()), "{line}");
            assert_eq!(n.port, port, "{line}");
            assert_eq!(n.hostname.as_deref(), host, "{line}");
            assert_eq!(n.flags, flags, "{line}");
            assert_eq!(n.master_id.as_deref(), master, "{line}");
            assert_eq!(n.slot_count(), slots, "{line}");
        }
        assert!(parse("g :0@0 master,fail,noaddr - 0 0 0 disconnected")[0].is_gone());
        assert!(
            parse("g :0@0 master,fail,noaddr - 0 0 0 disconnected")[0]
                .addr()
                .is_none()
        );
        assert!(parse("too short").is_empty());
        assert!(parse("x 1.2.3.4:1@2 master - 0 0 1 connected notaslot").is_empty());
    }
}
