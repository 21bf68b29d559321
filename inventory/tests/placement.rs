//! Placement: the required layouts, and invariants over many shapes.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use paddock_inventory::{
    Deployment, Host, Inventory, MaxmemoryPolicy, Placement, RedisSettings, Role, SentinelSettings,
    Supervision, Topology, parse, place,
};

fn example(text: &str) -> (Inventory, Placement) {
    let inv = parse("example.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let placement = place(&inv);
    (inv, placement)
}

/// `(name, host, shard, role)` per instance, in placement order.
fn summary(p: &Placement) -> Vec<(String, usize, u32, Role)> {
    p.instances
        .iter()
        .map(|i| (i.name.clone(), i.host, i.shard, i.role))
        .collect()
}

fn row(name: &str, host: usize, shard: u32, role: Role) -> (String, usize, u32, Role) {
    (name.to_owned(), host, shard, role)
}

#[test]
fn three_hosts_three_masters_one_replica_each() {
    let (_, p) = example(include_str!("../examples/vagrant-lab.toml"));
    use Role::*;
    assert_eq!(
        summary(&p),
        [
            row("redis-7000", 0, 0, Master),
            row("redis-7000", 1, 1, Master),
            row("redis-7000", 2, 2, Master),
            row("redis-7001", 1, 0, Replica),
            row("redis-7001", 2, 1, Replica),
            row("redis-7001", 0, 2, Replica),
        ]
    );
    // Every host: one master, and a replica of another host's master.
    for host in 0..3 {
        let on: Vec<_> = p.on_host(host).collect();
        assert_eq!(on.len(), 2);
        assert_eq!(on[0].role, Master);
        assert_eq!(on[1].role, Replica);
        assert_ne!(on[0].shard, on[1].shard);
    }
    assert_eq!(p.master_of(2).map(|m| m.host), Some(2));
    assert_eq!(p.replicas_of(2).map(|r| r.host).collect::<Vec<_>>(), [0]);
    assert_eq!(p.shard_members(1).count(), 2);
    assert_eq!(p.sentinels().count(), 0);
    assert_eq!(p.masters().count(), 3);
}

#[test]
fn memory_per_host() {
    let (inv, p) = example(include_str!("../examples/vagrant-lab.toml"));
    // Two instances of 256mb on each host.
    assert_eq!(p.maxmemory_on_host(&inv.redis, 0), Some(512 * 1024 * 1024));
    let (inv, p) = example(include_str!("../examples/sentinel.toml"));
    assert_eq!(inv.redis.maxmemory_bytes, None);
    assert_eq!(p.maxmemory_on_host(&inv.redis, 0), None);
}

#[test]
fn six_hosts_one_instance_each() {
    let (_, p) = example(include_str!("../examples/six-hosts.toml"));
    use Role::*;
    assert_eq!(
        summary(&p),
        [
            row("redis-7000", 0, 0, Master),
            row("redis-7000", 1, 1, Master),
            row("redis-7000", 2, 2, Master),
            row("redis-7000", 3, 0, Replica),
            row("redis-7000", 4, 1, Replica),
            row("redis-7000", 5, 2, Replica),
        ]
    );
}

#[test]
fn replication_one_plus_one_on_two_hosts() {
    let (_, p) = example(include_str!("../examples/replication.toml"));
    use Role::*;
    assert_eq!(
        summary(&p),
        [
            row("redis-6379", 0, 0, Master),
            row("redis-6379", 1, 0, Replica)
        ]
    );
}

#[test]
fn sentinel_classic_layout() {
    let (_, p) = example(include_str!("../examples/sentinel.toml"));
    use Role::*;
    assert_eq!(
        summary(&p),
        [
            row("redis-6379", 0, 0, Master),
            row("redis-6379", 1, 0, Replica),
            row("redis-6379", 2, 0, Replica),
            row("sentinel-26379", 0, 0, Sentinel),
            row("sentinel-26379", 1, 0, Sentinel),
            row("sentinel-26379", 2, 0, Sentinel),
        ]
    );
    assert_eq!(
        p.shard_members(0).count(),
        3,
        "sentinels are not shard members"
    );
    assert_eq!(p.on_host(1).count(), 2);
}

fn inventory(
    topology: Topology,
    hosts: usize,
    masters: u32,
    replicas: u32,
    sentinels: Option<u32>,
) -> Inventory {
    Inventory {
        deployment: Deployment {
            name: "prop".into(),
            topology,
            masters,
            replicas_per_master: replicas,
            password_file: None,
        },
        redis: RedisSettings {
            port: 7000,
            maxmemory_bytes: None,
            maxmemory_policy: MaxmemoryPolicy::NoEviction,
            appendonly: true,
            rdb_snapshots: true,
            cluster_node_timeout_ms: 5000,
            min_replicas_to_write: 0,
            min_replicas_max_lag_s: 10,
        },
        sentinel: sentinels.map(|count| SentinelSettings {
            count,
            quorum: count / 2 + 1,
            port: 26379,
            down_after_ms: 5000,
            failover_timeout_ms: 60000,
        }),
        supervision: Supervision::default(),
        hosts: (0..hosts)
            .map(|i| Host {
                name: format!("h{i}"),
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)),
                agent_port: 7443,
                zone: None,
            })
            .collect(),
        users: Vec::new(),
    }
}

/// Sentinels more than hosts: they share hosts and take consecutive ports.
#[test]
fn more_sentinels_than_hosts() {
    let p = place(&inventory(Topology::Sentinel, 2, 1, 1, Some(5)));
    let sentinels: Vec<_> = p.sentinels().map(|s| (s.host, s.name.as_str())).collect();
    assert_eq!(
        sentinels,
        [
            (0, "sentinel-26379"),
            (1, "sentinel-26379"),
            (0, "sentinel-26380"),
            (1, "sentinel-26380"),
            (0, "sentinel-26381"),
        ]
    );
}

/// Over every small shape: anti-affinity, balance, and per-host ports
/// that are unique and consecutive from the configured first port.
#[test]
fn invariants_over_many_shapes() {
    let mut checked = 0;
    for hosts in 1..=8usize {
        for masters in 1..=6u32 {
            for replicas in 0..=3u32 {
                if replicas as usize + 1 > hosts {
                    continue;
                }
                let inv = inventory(Topology::Cluster, hosts, masters, replicas, None);
                let p = place(&inv);
                let shape = format!("{hosts} hosts, {masters} masters x {replicas} replicas");
                check_invariants(&p, hosts, masters, replicas, &shape);
                // Through the parser too: every valid shape must be
                // accepted (no false port clash) and placed the same way.
                if masters >= 3 {
                    let text = toml_for("cluster", hosts, masters, replicas, "");
                    let parsed = parse("p.toml", &text).unwrap_or_else(|e| panic!("{shape}: {e}"));
                    assert_eq!(place(&parsed), p, "{shape}");
                }
                if masters == 1 {
                    for count in 1..=9 {
                        let sentinel = format!("[sentinel]\ncount = {count}\n");
                        let text = toml_for("sentinel", hosts, 1, replicas, &sentinel);
                        let parsed =
                            parse("p.toml", &text).unwrap_or_else(|e| panic!("{shape}: {e}"));
                        let p = place(&parsed);
                        check_invariants(&p, hosts, 1, replicas, &shape);
                        check_sentinels(&p, hosts, count, &shape);
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 100);
}

fn toml_for(topology: &str, hosts: usize, masters: u32, replicas: u32, extra: &str) -> String {
    let mut text = format!(
        "[deployment]\nname = \"prop\"\ntopology = \"{topology}\"\nmasters = {masters}\nreplicas_per_master = {replicas}\n{extra}"
    );
    for h in 0..hosts {
        text += &format!(
            "[[hosts]]\nname = \"h{h}\"\naddress = \"10.0.0.{}\"\n",
            h + 1
        );
    }
    text
}

fn check_sentinels(p: &Placement, hosts: usize, count: u32, shape: &str) {
    let sentinels: Vec<_> = p.sentinels().collect();
    assert_eq!(sentinels.len(), count as usize, "{shape}");
    for (k, s) in sentinels.iter().enumerate() {
        assert_eq!(s.host, k % hosts, "{shape}");
    }
    for h in 0..hosts {
        let ports: Vec<u16> = p
            .sentinels()
            .filter(|s| s.host == h)
            .map(|s| s.port)
            .collect();
        let expected: Vec<u16> = (26379..).take(ports.len()).collect();
        assert_eq!(ports, expected, "{shape}: sentinel ports on host {h}");
    }
}

fn check_invariants(p: &Placement, hosts: usize, masters: u32, replicas: u32, shape: &str) {
    let redis: Vec<_> = p.redis().collect();
    assert_eq!(redis.len(), (masters * (1 + replicas)) as usize, "{shape}");

    for shard in 0..masters {
        let members: Vec<_> = p.shard_members(shard).collect();
        assert_eq!(members.len(), 1 + replicas as usize, "{shape}");
        let distinct: BTreeSet<_> = members.iter().map(|m| m.host).collect();
        assert_eq!(
            distinct.len(),
            members.len(),
            "{shape}: shard {shard} shares a host"
        );
        assert_eq!(members[0].role, Role::Master, "{shape}");
    }

    let loads: Vec<usize> = (0..hosts)
        .map(|h| p.on_host(h).filter(|i| i.is_redis()).count())
        .collect();
    let (min, max) = (loads.iter().min(), loads.iter().max());
    assert!(
        max.zip(min).is_some_and(|(max, min)| max - min <= 1),
        "{shape}: unbalanced loads {loads:?}"
    );

    for h in 0..hosts {
        let ports: Vec<u16> = p
            .on_host(h)
            .filter(|i| i.is_redis())
            .map(|i| i.port)
            .collect();
        let expected: Vec<u16> = (7000..).take(ports.len()).collect();
        assert_eq!(ports, expected, "{shape}: host {h}");
        for i in p.on_host(h).filter(|i| i.is_redis()) {
            assert_eq!(i.name, format!("redis-{}", i.port), "{shape}");
        }
    }
}

#[test]
fn place_does_not_panic_on_hand_built_nonsense() {
    assert!(
        place(&inventory(Topology::Cluster, 0, 3, 1, None))
            .instances
            .is_empty()
    );
    // More replicas than hosts allow: still places every instance.
    let p = place(&inventory(Topology::Cluster, 1, 3, 2, None));
    assert_eq!(p.instances.len(), 9);
}
