//! The shipped examples parse, and omitted keys get their documented
//! defaults.

use std::net::IpAddr;

use paddock_inventory::{
    Deployment, Host, Inventory, MaxmemoryPolicy, RedisSettings, SentinelSettings, Supervision,
    Topology, parse,
};

fn ok(text: &str) -> Inventory {
    parse("inventory.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn host(name: &str, address: &str) -> Host {
    Host {
        name: name.into(),
        address: ip(address),
        agent_port: 7443,
        zone: None,
    }
}

#[test]
fn vagrant_lab_example() {
    let inv = ok(include_str!("../examples/vagrant-lab.toml"));
    assert_eq!(
        inv,
        Inventory {
            deployment: Deployment {
                name: "vagrant-lab".into(),
                topology: Topology::Cluster,
                masters: 3,
                replicas_per_master: 1,
                password_file: Some("secrets/vagrant-lab.redis-password".into()),
            },
            redis: RedisSettings {
                port: 7000,
                maxmemory_bytes: Some(256 * 1024 * 1024),
                maxmemory_policy: MaxmemoryPolicy::AllkeysLru,
                appendonly: true,
                rdb_snapshots: true,
                cluster_node_timeout_ms: 5000,
                min_replicas_to_write: 0,
                min_replicas_max_lag_s: 10,
            },
            sentinel: None,
            supervision: Supervision::default(),
            hosts: vec![
                host("clusternodeA", "192.168.56.11"),
                host("clusternodeB", "192.168.56.12"),
                host("clusternodeC", "192.168.56.13"),
            ],
            users: Vec::new(),
        }
    );
}

#[test]
fn six_hosts_example() {
    let inv = ok(include_str!("../examples/six-hosts.toml"));
    assert_eq!(inv.deployment.topology, Topology::Cluster);
    assert_eq!(
        (inv.deployment.masters, inv.deployment.replicas_per_master),
        (3, 1)
    );
    assert_eq!(inv.redis.maxmemory_bytes, Some(1 << 30));
    let hosts: Vec<_> = inv
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.address))
        .collect();
    assert_eq!(
        hosts,
        (1..=6)
            .map(|i| (
                ["redis1", "redis2", "redis3", "redis4", "redis5", "redis6"][i - 1],
                ip(&format!("192.168.56.{}", 20 + i))
            ))
            .collect::<Vec<_>>()
    );
}

#[test]
fn replication_example() {
    let inv = ok(include_str!("../examples/replication.toml"));
    assert_eq!(inv.deployment.topology, Topology::Replication);
    assert_eq!(
        (inv.deployment.masters, inv.deployment.replicas_per_master),
        (1, 1)
    );
    assert_eq!(inv.hosts.len(), 2);
    assert_eq!(inv.sentinel, None);
}

#[test]
fn sentinel_example() {
    let inv = ok(include_str!("../examples/sentinel.toml"));
    assert_eq!(inv.deployment.topology, Topology::Sentinel);
    assert_eq!(
        (inv.deployment.masters, inv.deployment.replicas_per_master),
        (1, 2)
    );
    assert_eq!(
        inv.sentinel,
        Some(SentinelSettings {
            count: 3,
            quorum: 2,
            port: 26379,
            down_after_ms: 5000,
            failover_timeout_ms: 60000,
        })
    );
    assert_eq!(inv.hosts.len(), 3);
}

const THREE_HOSTS: &str = r#"
[[hosts]]
name = "a"
address = "10.0.0.1"
[[hosts]]
name = "b"
address = "10.0.0.2"
[[hosts]]
name = "c"
address = "10.0.0.3"
"#;

#[test]
fn cluster_defaults() {
    let inv = ok(&format!(
        "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n{THREE_HOSTS}"
    ));
    assert_eq!(
        inv,
        Inventory {
            deployment: Deployment {
                name: "lab".into(),
                topology: Topology::Cluster,
                masters: 3,
                replicas_per_master: 1,
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
            sentinel: None,
            supervision: Supervision::default(),
            hosts: vec![
                host("a", "10.0.0.1"),
                host("b", "10.0.0.2"),
                host("c", "10.0.0.3")
            ],
            users: Vec::new(),
        }
    );
}

#[test]
fn replication_defaults_to_one_master() {
    let inv = ok(&format!(
        "[deployment]\nname = \"lab\"\ntopology = \"replication\"\n{THREE_HOSTS}"
    ));
    assert_eq!(
        (inv.deployment.masters, inv.deployment.replicas_per_master),
        (1, 1)
    );
    assert_eq!(inv.sentinel, None);
}

#[test]
fn sentinel_defaults() {
    let inv = ok(&format!(
        "[deployment]\nname = \"lab\"\ntopology = \"sentinel\"\n{THREE_HOSTS}"
    ));
    assert_eq!(inv.deployment.masters, 1);
    assert_eq!(
        inv.sentinel,
        Some(SentinelSettings {
            count: 3,
            quorum: 2,
            port: 26379,
            down_after_ms: 5000,
            failover_timeout_ms: 60000,
        })
    );
}

#[test]
fn quorum_defaults_to_majority() {
    for (count, quorum) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (9, 5)] {
        let inv = ok(&format!(
            "[deployment]\nname = \"lab\"\ntopology = \"sentinel\"\n[sentinel]\ncount = {count}\n{THREE_HOSTS}"
        ));
        assert_eq!(
            inv.sentinel.map(|s| s.quorum),
            Some(quorum),
            "count {count}"
        );
    }
}

#[test]
fn maxmemory_forms() {
    for (written, bytes) in [
        ("1048576", 1_048_576),
        ("\"1048576\"", 1_048_576),
        ("\"1048576b\"", 1_048_576),
        ("\"2000k\"", 2_000_000),
        ("\"1024KB\"", 1_048_576),
        ("\"3m\"", 3_000_000),
        ("\"3Mb\"", 3 * 1024 * 1024),
        ("\"2g\"", 2_000_000_000),
        ("\"2GB\"", 2 << 30),
    ] {
        let inv = ok(&format!(
            "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n[redis]\nmaxmemory = {written}\n{THREE_HOSTS}"
        ));
        assert_eq!(inv.redis.maxmemory_bytes, Some(bytes), "{written}");
    }
}

#[test]
fn every_policy_spelling() {
    for policy in MaxmemoryPolicy::ALL {
        let inv = ok(&format!(
            "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n[redis]\nmaxmemory_policy = \"{policy}\"\n{THREE_HOSTS}"
        ));
        assert_eq!(inv.redis.maxmemory_policy, policy);
    }
    assert_eq!(MaxmemoryPolicy::default().as_str(), "noeviction");
    assert_eq!(MaxmemoryPolicy::VolatileTtl.to_string(), "volatile-ttl");
}

#[test]
fn topology_names() {
    let names: Vec<_> = Topology::ALL.iter().map(|t| t.to_string()).collect();
    assert_eq!(names, ["cluster", "replication", "sentinel"]);
    assert_eq!(Topology::Sentinel.as_str(), "sentinel");
}

#[test]
fn inline_tables_ipv6_and_custom_ports() {
    let inv = ok(r#"
deployment = { name = "v6", topology = "replication", replicas_per_master = 0 }
redis = { port = 6379, appendonly = false, rdb_snapshots = false }
hosts = [{ name = "only.host_1", address = "fd00::11", agent_port = 9443 }]
"#);
    assert_eq!(inv.deployment.replicas_per_master, 0);
    assert_eq!(inv.redis.port, 6379);
    assert!(!inv.redis.appendonly && !inv.redis.rdb_snapshots);
    assert_eq!(
        inv.hosts,
        [Host {
            name: "only.host_1".into(),
            address: ip("fd00::11"),
            agent_port: 9443,
            zone: None,
        }]
    );
}

/// Every key of the format in one file: all are accepted together.
#[test]
fn every_key_at_once() {
    let inv = ok(r#"
[deployment]
name = "all-keys"
topology = "sentinel"
masters = 1
replicas_per_master = 2
password_file = "pw"
[redis]
port = 6379
maxmemory = 1048576
maxmemory_policy = "volatile-lfu"
appendonly = false
rdb_snapshots = false
cluster_node_timeout_ms = 600000
[sentinel]
count = 5
quorum = 5
port = 26000
down_after_ms = 100
failover_timeout_ms = 1000
[supervision]
start_timeout_ms = 1000
start_retries = 0
backoff_max_ms = 300000
stop_timeout_ms = 600000
[[hosts]]
name = "a"
address = "127.0.1.1"
agent_port = 1
zone = "z1"
[[hosts]]
name = "b"
address = "127.0.1.2"
agent_port = 65535
zone = "z2"
[[hosts]]
name = "c"
address = "127.0.1.3"
zone = "z1"
"#);
    assert_eq!(inv.deployment.password_file.as_deref(), Some("pw"));
    let zones: Vec<_> = inv.hosts.iter().map(|h| h.zone.as_deref()).collect();
    assert_eq!(zones, [Some("z1"), Some("z2"), Some("z1")]);
    assert_eq!(inv.redis.cluster_node_timeout_ms, 600_000);
    assert_eq!(
        inv.supervision,
        Supervision {
            start_timeout_ms: 1000,
            start_retries: 0,
            backoff_max_ms: 300_000,
            stop_timeout_ms: 600_000,
        }
    );
    assert_eq!(
        inv.sentinel,
        Some(SentinelSettings {
            count: 5,
            quorum: 5,
            port: 26000,
            down_after_ms: 100,
            failover_timeout_ms: 1000,
        })
    );
}

#[test]
fn supervision_defaults_and_values() {
    let defaults = Supervision {
        start_timeout_ms: 60_000,
        start_retries: 10,
        backoff_max_ms: 5000,
        stop_timeout_ms: 10_000,
    };
    assert_eq!(Supervision::default(), defaults);

    // Absent table, empty table, and a table naming only some keys.
    let absent = ok(&format!(
        "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n{THREE_HOSTS}"
    ));
    assert_eq!(absent.supervision, defaults);
    let empty = ok(&format!(
        "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n[supervision]\n{THREE_HOSTS}"
    ));
    assert_eq!(empty.supervision, defaults);
    let some = ok(&format!(
        "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n[supervision]\nstart_retries = 3\nstop_timeout_ms = 2500\n{THREE_HOSTS}"
    ));
    assert_eq!(
        some.supervision,
        Supervision {
            start_retries: 3,
            stop_timeout_ms: 2500,
            ..defaults
        }
    );

    // Every key given, as an inline table, at the ends of their ranges.
    let all = ok(&format!(
        "supervision = {{ start_timeout_ms = 3600000, start_retries = 100, backoff_max_ms = 100, stop_timeout_ms = 100 }}\n[deployment]\nname = \"lab\"\ntopology = \"replication\"\n{THREE_HOSTS}"
    ));
    assert_eq!(
        all.supervision,
        Supervision {
            start_timeout_ms: 3_600_000,
            start_retries: 100,
            backoff_max_ms: 100,
            stop_timeout_ms: 100,
        }
    );
}

#[test]
fn min_replicas_to_write_defaults_per_topology() {
    let with = |topology: &str, extra: &str| {
        ok(&format!(
            "[deployment]\nname = \"lab\"\ntopology = \"{topology}\"\n{extra}{THREE_HOSTS}"
        ))
    };
    let got = |inv: Inventory| {
        (
            inv.redis.min_replicas_to_write,
            inv.redis.min_replicas_max_lag_s,
        )
    };
    assert_eq!(got(with("replication", "")), (1, 10));
    assert_eq!(got(with("sentinel", "")), (1, 10));
    assert_eq!(got(with("cluster", "masters = 3\n")), (0, 10));
    // A lone master has no replica to wait for.
    assert_eq!(
        got(with("replication", "replicas_per_master = 0\n")),
        (0, 10)
    );
    assert_eq!(
        got(with(
            "cluster",
            "masters = 3\n[redis]\nmin_replicas_to_write = 1\nmin_replicas_max_lag_s = 2\n"
        )),
        (1, 2)
    );
}

#[test]
fn min_replicas_to_write_above_the_replica_count_is_refused() {
    let text = format!(
        "[deployment]\nname = \"lab\"\ntopology = \"replication\"\n[redis]\nmin_replicas_to_write = 2\n{THREE_HOSTS}"
    );
    let err = parse("inventory.toml", &text).unwrap_err().to_string();
    assert!(err.contains("inventory.toml:5:"), "{err}");
    assert!(err.contains("min_replicas_to_write = 2"), "{err}");
    assert!(err.contains("at most 1"), "{err}");
    let text = format!(
        "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\nmasters = 3\n[redis]\nmin_replicas_max_lag_s = 0\n{THREE_HOSTS}"
    );
    let err = parse("inventory.toml", &text).unwrap_err().to_string();
    assert!(err.contains("min_replicas_max_lag_s"), "{err}");
}
