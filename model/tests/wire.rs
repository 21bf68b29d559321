//! Every message the model covers survives model -> proto -> model
//! unchanged, and proto input the model refuses is refused with the field
//! named.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use paddock_model::*;
use paddock_proto::v1 as pb;
use proptest::prelude::*;

/// model -> proto -> model.
fn through_pb<M, P>(m: M) -> M
where
    M: Into<P> + TryFrom<P>,
    <M as TryFrom<P>>::Error: std::fmt::Debug,
{
    M::try_from(m.into()).expect("what the model encodes, it decodes")
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (1u8..=223, any::<[u8; 3]>())
            .prop_map(|(a, [b, c, d])| IpAddr::from([a, b, c, d]))
            .prop_filter("host address", |ip| is_host_address(*ip)),
        any::<[u16; 8]>()
            .prop_map(IpAddr::from)
            .prop_filter("host address", |ip| is_host_address(*ip)),
    ]
}

fn peer() -> impl Strategy<Value = Peer> {
    (ip(), 1u16..).prop_map(|(address, port)| Peer { address, port })
}

fn ms(lo: u32) -> impl Strategy<Value = Duration> {
    (lo..).prop_map(|v| Duration::from_millis(u64::from(v)))
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,20}"
}

fn user() -> impl Strategy<Value = AclUser> {
    (
        "[a-z][a-z0-9_-]{0,10}",
        "[!-~]{16,40}",
        prop::collection::vec("[+~%&-][a-z@|:*]{1,10}", 0..4),
    )
        .prop_filter("not default", |(n, _, _)| n != "default")
        .prop_map(|(name, password, rules)| AclUser {
            name,
            password,
            rules,
        })
}

fn supervision() -> impl Strategy<Value = Supervision> {
    (ms(100), any::<u32>(), ms(50), ms(100)).prop_map(
        |(start_timeout, start_retries, backoff_max, stop_timeout)| Supervision {
            start_timeout,
            start_retries,
            backoff_max,
            stop_timeout,
        },
    )
}

fn members() -> impl Strategy<Value = Members> {
    (
        prop::collection::vec(peer(), 0..4),
        prop::collection::vec(peer(), 0..4),
    )
        .prop_map(|(redis, sentinels)| Members { redis, sentinels })
}

/// Valid specs of all three modes.
fn spec() -> impl Strategy<Value = InstanceSpec> {
    let base = (
        (name(), name(), ip(), 1u16..=55535),
        (any::<u64>(), 0usize..8, any::<bool>(), any::<bool>()),
        (ms(100), any::<u32>(), any::<u32>(), "[!-~]{16,64}"),
        (
            supervision(),
            prop::collection::vec(user(), 0..3),
            members(),
        ),
    );
    let sentinel = (name(), peer(), 1u32.., ms(100), ms(1000)).prop_map(
        |(master_name, master, quorum, down_after, failover_timeout)| SentinelSpec {
            master_name,
            master,
            quorum,
            down_after,
            failover_timeout,
        },
    );
    let group = (
        prop::collection::vec(peer(), 0..4),
        prop::collection::vec(peer(), 0..4),
        name(),
    )
        .prop_map(|(peers, sentinels, master_name)| Group {
            peers,
            sentinels,
            master_name,
        });
    (base, 0u8..3, sentinel, prop::option::of(group)).prop_map(
        |(
            (
                (name, deployment, address, port),
                (maxmemory, policy, aof, rdb),
                (timeout, mrw, lag, password),
                (supervision, users, members),
            ),
            mode,
            sentinel,
            group,
        )| {
            let mode = [Mode::Standalone, Mode::Cluster, Mode::Sentinel][usize::from(mode)];
            InstanceSpec {
                name,
                deployment,
                address,
                port,
                mode,
                maxmemory_bytes: maxmemory,
                maxmemory_policy: MaxmemoryPolicy::ALL[policy],
                appendonly: aof,
                rdb_snapshots: rdb,
                cluster_node_timeout: timeout,
                min_replicas_to_write: mrw,
                min_replicas_max_lag: Duration::from_secs(u64::from(lag)),
                password,
                supervision,
                users,
                sentinel: (mode == Mode::Sentinel).then_some(sentinel),
                group: group.filter(|_| mode == Mode::Standalone),
                members,
            }
        },
    )
}

fn state() -> impl Strategy<Value = InstanceState> {
    prop::sample::select(vec![
        InstanceState::Unknown,
        InstanceState::Stopped,
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Backoff,
        InstanceState::Stopping,
        InstanceState::Exited,
        InstanceState::Fatal,
        InstanceState::Held,
    ])
}

/// Optional strings: the wire spells None as "", so Some is never empty.
fn some_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(".{1,30}")
}

/// NaN is not equal to itself: every other double.
fn reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        Just(Reply::Nil),
        any::<i64>().prop_map(Reply::Int),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(Reply::Bulk),
        ".{0,20}".prop_map(Reply::Simple),
        ".{0,20}".prop_map(Reply::Error),
        any::<f64>()
            .prop_filter("not NaN", |d| !d.is_nan())
            .prop_map(Reply::Double),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Reply::Array)
    })
}

fn lease_id() -> impl Strategy<Value = LeaseId> {
    (
        "[0-9a-f]{16,64}",
        "[ -~]{1,128}",
        "[a-zA-Z0-9]{0,64}",
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(token, holder, machine_id, pid_namespace, pid)| LeaseId {
            token,
            holder,
            machine_id,
            pid_namespace,
            pid,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn instance_specs_round_trip(s in spec()) {
        prop_assert_eq!(through_pb::<_, pb::InstanceSpec>(s.clone()), s);
    }

    #[test]
    fn put_instance_requests_round_trip(spec in spec(), dry_run in any::<bool>(), live in any::<bool>()) {
        let p = PutInstance { spec, dry_run, live };
        prop_assert_eq!(through_pb::<_, pb::PutInstanceRequest>(p.clone()), p);
    }

    #[test]
    fn put_outcomes_round_trip(
        changed in any::<bool>(), restart_needed in any::<bool>(),
        changes in prop::collection::vec((name(), some_text(), some_text(), any::<bool>()), 0..4),
    ) {
        let changes = changes
            .into_iter()
            .map(|(key, old, new, live)| KeyChange {
                key,
                old: old.unwrap_or_default(),
                new: new.unwrap_or_default(),
                live,
            })
            .collect();
        let o = PutOutcome { changed, restart_needed, changes };
        prop_assert_eq!(through_pb::<_, pb::PutInstanceResponse>(o.clone()), o);
    }

    #[test]
    fn instance_statuses_round_trip(
        name in name(), deployment in name(), port in any::<u16>(), state in state(),
        pid in prop::option::of(1u32..), restarts in any::<u32>(), last_exit in some_text(),
        config_digest in "[0-9a-f]{0,64}",
    ) {
        let s = InstanceStatus { name, deployment, port, state, pid, restarts, last_exit, config_digest };
        prop_assert_eq!(through_pb::<_, pb::InstanceStatus>(s.clone()), s);
    }

    #[test]
    fn state_events_round_trip(
        unix_ms in any::<i64>(), instance in name(), from in state(), to in state(),
        pid in prop::option::of(1u32..), detail in some_text(),
    ) {
        let e = StateEvent { unix_ms, instance, from, to, pid, detail };
        prop_assert_eq!(through_pb::<_, pb::StateEvent>(e.clone()), e);
    }

    #[test]
    fn facts_round_trip(
        hostname in ".{0,20}", os in ".{0,20}", kernel in ".{0,20}", cpus in any::<u32>(),
        memory in any::<(u64, u64, u64)>(), path in prop::option::of("/[a-z/]{1,20}"),
        redis_version in some_text(), agent_version in ".{0,10}", configured in "[a-z/-]{0,20}",
    ) {
        let f = Facts {
            hostname, os, kernel, cpus,
            memory_total_bytes: memory.0,
            memory_available_bytes: memory.1,
            data_dir_free_bytes: memory.2,
            redis_server_path: path.map(PathBuf::from),
            redis_version, agent_version,
            redis_server_configured: PathBuf::from(configured),
        };
        prop_assert_eq!(through_pb::<_, pb::Facts>(f.clone()), f);
    }

    #[test]
    fn redis_commands_round_trip(
        instance in name(),
        commands in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 1..4), 1..=MAX_PIPELINE),
        allow_dangerous in any::<bool>(),
    ) {
        let c = RedisCommand { instance, commands, allow_dangerous };
        prop_assert_eq!(through_pb::<_, pb::RedisCommandRequest>(c.clone()), c);
    }

    #[test]
    fn replies_round_trip(r in reply()) {
        prop_assert_eq!(through_pb::<_, pb::RedisValue>(r.clone()), r);
    }

    #[test]
    fn lease_requests_round_trip(deployment in name(), id in lease_id(), ttl in ms(0), force in any::<bool>()) {
        let r = LeaseRequest { deployment, id, ttl, force };
        prop_assert_eq!(through_pb::<_, pb::LockRequest>(r.clone()), r);
    }

    #[test]
    fn lock_replies_round_trip(
        granted in any::<bool>(),
        held in prop::option::of(("[ -~]{1,40}", any::<i64>(), "[a-z0-9]{0,32}", any::<u64>(), any::<u32>())),
    ) {
        let r = LockReply {
            granted,
            held: held.map(|(holder, since_unix_ms, machine_id, pid_namespace, pid)| HeldLease {
                holder, since_unix_ms, machine_id, pid_namespace, pid,
            }),
        };
        prop_assert_eq!(through_pb::<_, pb::LockResponse>(r.clone()), r);
    }

    /// What agents store on disk reads back as written.
    #[test]
    fn stored_specs_round_trip(s in spec()) {
        let text = toml::to_string(&s).unwrap();
        prop_assert_eq!(toml::from_str::<InstanceSpec>(&text).unwrap(), s);
    }
}

fn valid() -> pb::InstanceSpec {
    pb::InstanceSpec {
        name: "redis-7000".into(),
        deployment: "lab".into(),
        address: "127.0.1.1".into(),
        port: 7000,
        mode: pb::RedisMode::Standalone as i32,
        maxmemory_bytes: 0,
        maxmemory_policy: "noeviction".into(),
        appendonly: true,
        rdb_snapshots: true,
        cluster_node_timeout_ms: 5000,
        password: "0123456789abcdef0123456789abcdef".into(),
        supervision: None,
        users: Vec::new(),
        sentinel: None,
        group: None,
        min_replicas_to_write: 0,
        min_replicas_max_lag_s: 10,
        members: None,
    }
}

fn pb_peer(address: &str, port: u32) -> pb::Peer {
    pb::Peer {
        address: address.into(),
        port,
    }
}

#[test]
fn invalid_specs_are_refused_naming_the_field() {
    let with = |f: &dyn Fn(&mut pb::InstanceSpec)| {
        let mut s = valid();
        f(&mut s);
        s
    };
    let sentinel = |master: Option<pb::Peer>| pb::SentinelSpec {
        master_name: "lab".into(),
        master,
        quorum: 2,
        down_after_ms: 1000,
        failover_timeout_ms: 5000,
    };
    let table: Vec<(pb::InstanceSpec, &str)> = vec![
        (with(&|s| s.name = "../etc".into()), "name"),
        (with(&|s| s.deployment = "Lab".into()), "deployment"),
        (with(&|s| s.address = "example.org".into()), "address"),
        (with(&|s| s.address = "0.0.0.0".into()), "address"),
        (with(&|s| s.address = "ff02::1".into()), "address"),
        (with(&|s| s.port = 70000), "port"),
        (with(&|s| s.port = 0), "port"),
        (with(&|s| s.port = 60000), "port"),
        (with(&|s| s.mode = 0), "mode"),
        (with(&|s| s.mode = 9), "mode"),
        (
            with(&|s| s.maxmemory_policy = "lru".into()),
            "maxmemory_policy",
        ),
        (
            with(&|s| s.cluster_node_timeout_ms = 99),
            "cluster_node_timeout_ms",
        ),
        (with(&|s| s.password = "short".into()), "password"),
        (
            with(&|s| s.password = "a password with spaces".into()),
            "password",
        ),
        (
            with(&|s| {
                s.users = vec![pb::AclUser {
                    name: "default".into(),
                    password: "0123456789abcdef".into(),
                    rules: vec![],
                }]
            }),
            "users",
        ),
        (
            with(&|s| {
                s.users = vec![pb::AclUser {
                    name: "app".into(),
                    password: "0123456789abcdef".into(),
                    rules: vec!["nopass".into()],
                }]
            }),
            "users",
        ),
        (
            with(&|s| {
                s.supervision = Some(pb::Supervision {
                    start_timeout_ms: 10,
                    start_retries: 1,
                    backoff_max_ms: 1000,
                    stop_timeout_ms: 1000,
                })
            }),
            "supervision",
        ),
        (
            with(&|s| s.mode = pb::RedisMode::Sentinel as i32),
            "sentinel",
        ),
        (
            with(&|s| s.sentinel = Some(sentinel(Some(pb_peer("127.0.1.2", 6379))))),
            "sentinel",
        ),
        (
            with(&|s| {
                s.mode = pb::RedisMode::Sentinel as i32;
                s.sentinel = Some(sentinel(None));
            }),
            "sentinel.master",
        ),
        (
            with(&|s| {
                s.mode = pb::RedisMode::Sentinel as i32;
                s.sentinel = Some(sentinel(Some(pb_peer("127.0.1.2", 0))));
            }),
            "sentinel.master",
        ),
        (
            with(&|s| {
                s.mode = pb::RedisMode::Sentinel as i32;
                let mut v = sentinel(Some(pb_peer("127.0.1.2", 6379)));
                v.quorum = 0;
                s.sentinel = Some(v);
            }),
            "sentinel",
        ),
        (
            with(&|s| {
                s.group = Some(pb::Group {
                    peers: vec![pb_peer("nowhere", 7000)],
                    sentinels: vec![],
                    master_name: "lab".into(),
                })
            }),
            "group.peers",
        ),
        (
            with(&|s| {
                s.group = Some(pb::Group {
                    peers: vec![pb_peer("224.0.0.1", 7000)],
                    sentinels: vec![],
                    master_name: "lab".into(),
                })
            }),
            "peers",
        ),
        (
            with(&|s| {
                s.group = Some(pb::Group {
                    peers: vec![],
                    sentinels: vec![pb_peer("127.0.1.9", 70000)],
                    master_name: "lab".into(),
                })
            }),
            "group.sentinels",
        ),
        (
            with(&|s| {
                s.mode = pb::RedisMode::Cluster as i32;
                s.group = Some(pb::Group::default());
            }),
            "group",
        ),
        (
            with(&|s| {
                s.members = Some(pb::Members {
                    redis: vec![pb_peer("127.0.1.1", 0)],
                    sentinels: vec![],
                })
            }),
            "members.redis",
        ),
        (
            with(&|s| {
                s.members = Some(pb::Members {
                    redis: vec![],
                    sentinels: vec![pb_peer("::x", 26379)],
                })
            }),
            "members.sentinels",
        ),
    ];
    assert!(InstanceSpec::try_from(valid()).is_ok(), "control");
    for (i, (s, field)) in table.into_iter().enumerate() {
        let e = InstanceSpec::try_from(s).expect_err(field);
        assert_eq!(e.field(), field, "row {i}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("field {field}: ")),
            "row {i}: {text}"
        );
        assert!(text.starts_with("instance \""), "row {i}: {text}");
    }
}

#[test]
fn a_missing_spec_and_bad_pipelines_are_refused_naming_the_field() {
    let e = PutInstance::try_from(pb::PutInstanceRequest {
        spec: None,
        dry_run: false,
        live: false,
    })
    .unwrap_err();
    assert_eq!(e.field(), "spec");
    let pipeline = |n: usize, args: Vec<Vec<u8>>| pb::RedisCommandRequest {
        instance: "redis-7000".into(),
        commands: vec![pb::RedisArgs { args }; n],
        allow_dangerous: false,
    };
    for (request, why) in [
        (
            pipeline(0, vec![b"PING".to_vec()]),
            "1 to 256 commands, not 0",
        ),
        (
            pipeline(257, vec![b"PING".to_vec()]),
            "1 to 256 commands, not 257",
        ),
        (pipeline(1, vec![]), "at least its name"),
    ] {
        let e = RedisCommand::try_from(request).unwrap_err();
        assert_eq!(e.field(), "commands");
        assert!(e.to_string().contains(why), "{e}");
    }
    let e = InstanceStatus::try_from(pb::InstanceStatus {
        name: "redis-7000".into(),
        port: 1 << 16,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.field(), "port");
}

#[test]
fn lease_requests_are_checked_naming_the_field() {
    let ok = || pb::LockRequest {
        deployment: "lab".into(),
        holder: "a@ws pid 1".into(),
        ttl_ms: 30_000,
        token: "a".repeat(16),
        machine_id: "m1".into(),
        pid_namespace: 4026531836,
        pid: 1,
        force: false,
    };
    assert!(LeaseRequest::try_from(ok()).is_ok(), "control");
    let with = |f: &dyn Fn(&mut pb::LockRequest)| {
        let mut r = ok();
        f(&mut r);
        r
    };
    let table: Vec<(pb::LockRequest, &str)> = vec![
        (with(&|r| r.deployment = String::new()), "deployment"),
        (with(&|r| r.deployment = "Lab/../x".into()), "deployment"),
        (with(&|r| r.holder = String::new()), "holder"),
        (with(&|r| r.holder = "h".repeat(129)), "holder"),
        (with(&|r| r.holder = "a\nb".into()), "holder"),
        (with(&|r| r.token = "abc".into()), "token"),
        (with(&|r| r.token = "z".repeat(16)), "token"),
        (with(&|r| r.machine_id = "m".repeat(65)), "machine_id"),
    ];
    for (r, field) in table {
        let e = LeaseRequest::try_from(r.clone()).unwrap_err();
        assert_eq!(e.field(), field, "{r:?}: {e}");
        assert!(
            e.to_string().starts_with(&format!("field {field}: ")),
            "{e}"
        );
    }
}

#[test]
fn states_a_newer_agent_may_add_are_unknown_not_errors() {
    let s = pb::InstanceStatus {
        name: "redis-7000".into(),
        port: 7000,
        state: 99,
        ..Default::default()
    };
    assert_eq!(
        InstanceStatus::try_from(s).unwrap().state,
        InstanceState::Unknown
    );
    assert_eq!(Reply::from(pb::RedisValue { kind: None }), Reply::Nil);
}

/// A spec.toml as agents before the model crate stored it still reads, with
/// its durations in the units it was written in.
#[test]
fn specs_stored_by_earlier_agents_read_back() {
    let text = r#"
name = "redis-7000"
deployment = "lab"
address = "127.0.1.1"
port = 7000
mode = "standalone"
maxmemory_bytes = 0
maxmemory_policy = "allkeys-lru"
appendonly = true
rdb_snapshots = true
cluster_node_timeout_ms = 5000
password = "0123456789abcdef0123456789abcdef"

[supervision]
start_timeout_ms = 2000
start_retries = 3
backoff_max_ms = 500
stop_timeout_ms = 3000
"#;
    let s: InstanceSpec = toml::from_str(text).unwrap();
    assert_eq!(s.maxmemory_policy, MaxmemoryPolicy::AllkeysLru);
    assert_eq!(s.cluster_node_timeout, Duration::from_secs(5));
    assert_eq!(s.min_replicas_max_lag, Duration::from_secs(10), "default");
    assert_eq!(s.min_replicas_to_write, 0, "default");
    assert_eq!(s.supervision.start_timeout, Duration::from_secs(2));
    assert_eq!(s.supervision.backoff_max, Duration::from_millis(500));
    assert!(s.validate().is_ok());
    let again = toml::to_string(&s).unwrap();
    for line in [
        "cluster_node_timeout_ms = 5000",
        "min_replicas_max_lag_s = 10",
        "maxmemory_policy = \"allkeys-lru\"",
        "start_timeout_ms = 2000",
    ] {
        assert!(again.contains(line), "{line} in\n{again}");
    }
}
