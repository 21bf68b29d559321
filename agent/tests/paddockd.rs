//! The real `paddockd` binary with real redis-server children, driven over
//! gRPC on its own loopback address (127.0.22.x).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures::FutureExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use paddock_proto::v1::{self as pb, agent_client::AgentClient};
use paddock_tests::agent::Agent;
use tonic::transport::Channel;

const ADDRESS: &str = "127.0.22.1";

/// The shared harness (paddock-tests), with this package's own binary.
const PADDOCKD: &str = env!("CARGO_BIN_EXE_paddockd");

fn start_agent() -> Agent {
    Agent::start(Path::new(PADDOCKD), ADDRESS)
}

fn spawn_agent(dir: &Path, address: &str) -> Child {
    paddock_tests::agent::spawn(Path::new(PADDOCKD), dir, address)
}

fn agent_command(dir: &Path, address: &str, extra: &str) -> Command {
    paddock_tests::agent::command(Path::new(PADDOCKD), dir, address, extra)
}

fn alive(pid: u32) -> bool {
    // A sentinel is redis-server too: "redis-server ADDR:PORT [sentinel]".
    paddock_tests::process_is(pid, "redis-server")
}

async fn client() -> AgentClient<Channel> {
    client_at(ADDRESS).await
}

async fn client_at(address: &str) -> AgentClient<Channel> {
    let url = format!("http://{address}:7443");
    paddock_tests::wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
        AgentClient::connect(url.clone()).map(Result::ok)
    })
    .await
    .expect("agent did not come up")
}

fn spec(maxmemory: u64) -> pb::InstanceSpec {
    spec_at(ADDRESS, maxmemory)
}

fn spec_at(address: &str, maxmemory: u64) -> pb::InstanceSpec {
    pb::InstanceSpec {
        name: "redis-7000".into(),
        deployment: "t".into(),
        address: address.into(),
        port: 7000,
        mode: pb::RedisMode::Standalone as i32,
        maxmemory_bytes: maxmemory,
        maxmemory_policy: "noeviction".into(),
        appendonly: false,
        rdb_snapshots: false,
        cluster_node_timeout_ms: 5000,
        min_replicas_to_write: 0,
        min_replicas_max_lag_s: 10,
        password: "s3cret-s3cret-s3cret-s3cret".into(),
        supervision: None,
        users: Vec::new(),
        sentinel: None,
        group: None,
        members: None,
    }
}

fn put(spec: pb::InstanceSpec, dry_run: bool) -> pb::PutInstanceRequest {
    pb::PutInstanceRequest {
        spec: Some(spec),
        dry_run,
        live: false,
    }
}

async fn ping(c: &mut AgentClient<Channel>) -> Option<pb::redis_value::Kind> {
    let r = c
        .redis_command(pb::RedisCommandRequest {
            instance: "redis-7000".into(),
            commands: vec![pb::RedisArgs {
                args: vec![b"PING".to_vec()],
            }],
            allow_dangerous: false,
        })
        .await
        .ok()?
        .into_inner();
    r.replies.into_iter().next()?.kind
}

fn pong() -> Option<pb::redis_value::Kind> {
    Some(pb::redis_value::Kind::Simple("PONG".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_writes_configs_supervises_and_restarts_redis() {
    let mut agent = start_agent();
    let mut c = client().await;

    let facts = c
        .get_facts(pb::GetFactsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        !facts.redis_version.is_empty(),
        "redis-server version in facts"
    );
    assert_eq!(facts.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(facts.memory_total_bytes > 0);

    // Put: changed, then unchanged; a dry run reports without writing.
    assert!(
        c.put_instance(put(spec(0), false))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    let conf_path = agent.dir.path().join("data/control/redis-7000/redis.conf");
    let conf = std::fs::read_to_string(&conf_path).unwrap();
    assert!(conf.contains("bind 127.0.22.1\n"), "{conf}");
    assert!(
        !c.put_instance(put(spec(0), false))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        c.put_instance(put(spec(1 << 20), true))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert_eq!(
        std::fs::read_to_string(&conf_path).unwrap(),
        conf,
        "dry run wrote nothing"
    );

    // Hostile spec: refused with the field named, nothing written.
    let mut evil = spec(0);
    evil.name = "../../etc".into();
    let err = c.put_instance(put(evil, false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("name"), "{}", err.message());

    // Start answers once Redis answers PING.
    let st = c
        .start_instance(pb::InstanceRef {
            name: "redis-7000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.state, pb::InstanceState::Running as i32);
    assert!(st.pid > 0);
    assert_eq!(ping(&mut c).await, pong());

    // The agent never hands out the password, and refuses dangerous commands.
    for (words, allow) in [
        ("CONFIG GET requirepass", true),
        ("CONFIG GET *", false),
        ("FLUSHALL", false),
        ("CONFIG SET dir /etc", false),
    ] {
        let err = c
            .redis_command(pb::RedisCommandRequest {
                instance: "redis-7000".into(),
                commands: vec![pb::RedisArgs {
                    args: words.split(' ').map(|w| w.as_bytes().to_vec()).collect(),
                }],
                allow_dangerous: allow,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{words}");
    }

    // Unauthenticated clients get nothing from Redis.
    let mut raw = redis::Client::open(format!("redis://{ADDRESS}:7000"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let denied: redis::RedisResult<String> = redis::cmd("GET").arg("x").query_async(&mut raw).await;
    assert!(denied.unwrap_err().to_string().contains("NOAUTH"));

    // SIGKILL: the agent notices and restarts it.
    kill(Pid::from_raw(st.pid as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let restarted = loop {
        let list = c
            .list_instances(pb::ListInstancesRequest {})
            .await
            .unwrap()
            .into_inner();
        let s = list.instances[0].clone();
        if s.state == pb::InstanceState::Running as i32 && s.pid != st.pid && s.pid != 0 {
            break s;
        }
        assert!(Instant::now() < deadline, "not restarted: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(restarted.restarts, 1);
    assert_eq!(restarted.last_exit, "killed by SIGKILL");
    assert_eq!(ping(&mut c).await, pong());

    // Stop answers once the process is gone.
    let stopped = c
        .stop_instance(pb::InstanceRef {
            name: "redis-7000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, pb::InstanceState::Stopped as i32);
    assert!(!alive(restarted.pid));

    // SIGTERM: clean exit.
    kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn bad_config_exits_2_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.22.2:7443\"\ndata_dir = \"/tmp/x\"\nlisten_prot = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_paddockd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(err.contains("listen_prot"), "{err}");
}

async fn running_pid(c: &mut AgentClient<Channel>) -> Option<u32> {
    let list = c
        .list_instances(pb::ListInstancesRequest {})
        .await
        .ok()?
        .into_inner();
    let s = list.instances.first()?;
    (s.state == pb::InstanceState::Running as i32).then_some(s.pid)
}

/// redis-server processes serving this address and port.
fn redis_processes(endpoint: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let c = String::from_utf8_lossy(c);
            c.contains("redis-server") && c.contains(endpoint)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_serving_while_the_agent_is_killed_and_restarted() {
    const ADDR: &str = "127.0.22.3";
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let mut agent = Agent {
        child: spawn_agent(dir.path(), ADDR),
        dir,
    };
    let mut c = client_at(ADDR).await;
    c.put_instance(put(spec_at(ADDR, 0), false)).await.unwrap();
    let first = c
        .start_instance(pb::InstanceRef {
            name: "redis-7000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.state, pb::InstanceState::Running as i32);

    // A client writes continuously for the whole test (bounded in count and time).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let password = spec(0).password;
        tokio::spawn(async move {
            let url = format!("redis://:{password}@{ADDR}:7000");
            let mut conn = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let (mut ok, mut failed) = (0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && ok + failed < 2_000_000
                && Instant::now() < deadline
            {
                let r: redis::RedisResult<()> = redis::pipe()
                    .cmd("PING")
                    .ignore()
                    .cmd("SET")
                    .arg("counter")
                    .arg(ok)
                    .ignore()
                    .query_async(&mut conn)
                    .await;
                match r {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        })
    };

    // SIGKILL, then SIGTERM: each time a new agent adopts the same process.
    for signal in [Signal::SIGKILL, Signal::SIGTERM] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        kill(Pid::from_raw(agent.child.id() as i32), signal).unwrap();
        agent.child.wait().unwrap();
        assert!(
            alive(first.pid),
            "redis-server outlived the agent ({signal})"
        );
        agent.child = spawn_agent(agent.dir.path(), ADDR);
        c = client_at(ADDR).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = running_pid(&mut c).await {
                assert_eq!(pid, first.pid, "re-adopted, not restarted ({signal})");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance not RUNNING after {signal}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            redis_processes(&format!("{ADDR}:7000")),
            1,
            "no second redis-server"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = writer.await.unwrap();
    assert!(ok > 100, "the client made progress: {ok}");
    assert_eq!(failed, 0, "no request failed ({ok} succeeded)");

    // The adopted process is still supervised: killed, it is restarted.
    kill(Pid::from_raw(first.pid as i32), Signal::SIGKILL).unwrap();
    let restarted =
        paddock_tests::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            let mut c = c.clone();
            async move {
                running_pid(&mut c)
                    .await
                    .is_some_and(|pid| pid != first.pid)
            }
        })
        .await;
    assert!(restarted, "adopted instance not restarted");
    c.stop_instance(pb::InstanceRef {
        name: "redis-7000".into(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_ready_watchdog_and_stopping_and_keeps_its_env_from_redis() {
    const ADDR: &str = "127.0.22.4";
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let child = agent_command(dir.path(), ADDR, "")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("PADDOCK_TEST_SECRET", "do-not-leak")
        .spawn()
        .unwrap();
    let mut agent = Agent { child, dir };
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    while !received.iter().any(|m: &String| m == "WATCHDOG=1") {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(received[0], "READY=1", "{received:?}");

    let mut c = client_at(ADDR).await;
    c.put_instance(put(spec_at(ADDR, 0), false)).await.unwrap();
    let st = c
        .start_instance(pb::InstanceRef {
            name: "redis-7000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let environ = std::fs::read(format!("/proc/{}/environ", st.pid)).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for leaked in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "PADDOCK_TEST_SECRET"] {
        assert!(!environ.contains(leaked), "{leaked} reached redis-server");
    }
    if nix::unistd::Uid::effective().is_root() {
        let status = std::fs::read_to_string(format!("/proc/{}/status", st.pid)).unwrap();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|u| u.split_whitespace().next().map(str::to_owned))
            .unwrap();
        assert_ne!(uid, "0", "redis-server must not run as root");
    }
    c.stop_instance(pb::InstanceRef {
        name: "redis-7000".into(),
    })
    .await
    .unwrap();

    kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGTERM).unwrap();
    loop {
        let n = socket.recv(&mut buf).expect("STOPPING=1 within 10 s");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
    assert!(agent.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_redis_server_that_does_not_exist_is_named_and_nothing_installed() {
    const ADDR: &str = "127.0.22.5";
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let child = agent_command(
        dir.path(),
        ADDR,
        "redis_server = \"/nonexistent/redis-server\"\n",
    )
    .spawn()
    .unwrap();
    let _agent = Agent { child, dir };
    let mut c = client_at(ADDR).await;
    let facts = c
        .get_facts(pb::GetFactsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(facts.redis_version, "", "no redis-server at that path");
    assert_eq!(facts.redis_server_configured, "/nonexistent/redis-server");
    // Installing the package cannot put a binary at that path (and must
    // not upgrade the host's Redis): the answer names the field and the
    // path, and nothing is installed.
    let err = c.ensure_redis(pb::EnsureRedisRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("redis_server = \"/nonexistent/redis-server\" does not exist")
            && err.message().contains("nothing was installed"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_start_goes_fatal_with_its_log() {
    const ADDR: &str = "127.0.22.6";
    // Something else holds the instance's port.
    let _squatter = std::net::TcpListener::bind((ADDR, 7000)).unwrap();
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let _agent = Agent {
        child: spawn_agent(dir.path(), ADDR),
        dir,
    };
    let mut c = client_at(ADDR).await;
    let mut s = spec_at(ADDR, 0);
    s.supervision = Some(pb::Supervision {
        start_timeout_ms: 5_000,
        start_retries: 1,
        backoff_max_ms: 100,
        stop_timeout_ms: 1_000,
    });
    c.put_instance(put(s, false)).await.unwrap();
    let st = c
        .start_instance(pb::InstanceRef {
            name: "redis-7000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.state, pb::InstanceState::Fatal as i32, "{st:?}");
    assert!(
        st.last_exit
            .starts_with("exited with status 1 (2 failed starts in a row); last log lines:"),
        "{}",
        st.last_exit
    );
    assert!(
        st.last_exit.contains("Address already in use"),
        "{}",
        st.last_exit
    );
}

/// The redis user, when the test runs as root (the agent then runs Redis as
/// that user); None, after printing why, when the test cannot run.
fn redis_user_or_skip() -> Option<nix::unistd::User> {
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIPPED: needs root (the agent runs Redis as the redis user)");
        return None;
    }
    let user = nix::unistd::User::from_name("redis").ok().flatten();
    if user.is_none() {
        println!("SKIPPED: no redis user (install redis-server)");
    }
    user
}

async fn state_of(c: &mut AgentClient<Channel>, name: &str) -> Option<pb::InstanceStatus> {
    c.list_instances(pb::ListInstancesRequest {})
        .await
        .ok()?
        .into_inner()
        .instances
        .into_iter()
        .find(|i| i.name == name)
}

/// Waits until `name` is RUNNING with a pid other than `not`.
async fn running_other_than(c: &mut AgentClient<Channel>, name: &str, not: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = state_of(c, name).await
            && s.state == pb::InstanceState::Running as i32
            && s.pid != 0
            && s.pid != not
        {
            return s.pid;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not running again: {:?}",
            state_of(c, name).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sentinel_spec_at(address: &str, down_after_ms: u32) -> pb::InstanceSpec {
    pb::InstanceSpec {
        name: "sentinel-26379".into(),
        port: 26379,
        mode: pb::RedisMode::Sentinel as i32,
        sentinel: Some(pb::SentinelSpec {
            master_name: "t".into(),
            master: Some(pb::Peer {
                address: address.into(),
                port: 7000,
            }),
            quorum: 1,
            down_after_ms,
            failover_timeout_ms: 60_000,
        }),
        ..spec_at(address, 0)
    }
}

fn owner_mode(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.mode() & 0o7777)
}

/// A spec that goes FATAL after a few quick failed starts.
fn quick(address: &str, maxmemory: u64) -> pb::InstanceSpec {
    pb::InstanceSpec {
        supervision: Some(pb::Supervision {
            start_timeout_ms: 10_000,
            start_retries: 2,
            backoff_max_ms: 100,
            stop_timeout_ms: 5_000,
        }),
        ..spec_at(address, maxmemory)
    }
}

/// Every name the agent writes or reads in an instance's directories, now
/// or in the layout before control/ existed.
const AGENT_NAMES: [&str; 22] = [
    "redis.conf",
    "redis.conf.prev",
    "spec.toml",
    "desired",
    "process",
    "sentinel.seed",
    "stdout.log",
    "stdout.log.1",
    "stdout.log.2",
    "redis.log.1",
    "redis.log.2",
    "running.conf",
    "sentinel.conf",
    "nodes.conf",
    ".running.conf.tmp",
    ".sentinel.conf.tmp",
    ".redis.conf.tmp",
    ".redis.conf.prev.tmp",
    ".spec.toml.tmp",
    ".desired.tmp",
    ".process.tmp",
    ".sentinel.seed.tmp",
];

/// The redis user owns Redis's directory and may plant a symlink under any
/// name in it (issue 12, item 1: root file takeover). Every write path of
/// the agent runs; no link target is written, chowned or chmodded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_the_redis_user_plants_are_never_followed() {
    let Some(redis_user) = redis_user_or_skip() else {
        return;
    };
    const ADDR: &str = "127.0.40.1";
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let child = agent_command(dir.path(), ADDR, "log_max_bytes = 1\nlog_backups = 2\n")
        .spawn()
        .unwrap();
    let mut agent = Agent { child, dir };
    let root = agent.dir.path().to_owned();
    let data = root.join("data");
    // Root's files the links point at.
    let victims: Vec<PathBuf> = (0..AGENT_NAMES.len())
        .map(|i| {
            let v = root.join(format!("victim-{i}"));
            std::fs::write(&v, format!("root's file {i}\n")).unwrap();
            std::fs::set_permissions(&v, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            v
        })
        .collect();
    let mut c = client_at(ADDR).await;
    c.put_instance(put(quick(ADDR, 0), false)).await.unwrap();
    c.put_instance(put(sentinel_spec_at(ADDR, 5000), false))
        .await
        .unwrap();

    // The layout: the agent's files where the redis user cannot write.
    for d in [&data, &data.join("instances"), &data.join("control")] {
        let (uid, mode) = owner_mode(d);
        assert_eq!(uid, 0, "{} is root's", d.display());
        assert_eq!(
            mode & 0o022,
            0,
            "{} is not group/world-writable",
            d.display()
        );
    }
    for name in ["redis-7000", "sentinel-26379"] {
        assert_eq!(
            owner_mode(&data.join("control").join(name)),
            (0, 0o700),
            "control/{name}"
        );
        assert_eq!(
            owner_mode(&data.join("instances").join(name)),
            (redis_user.uid.as_raw(), 0o700),
            "instances/{name}"
        );
        assert_eq!(
            owner_mode(&data.join("control").join(name).join("spec.toml")),
            (0, 0o600)
        );
    }

    // As the redis user could: a link under every name, in both of its dirs.
    for name in ["redis-7000", "sentinel-26379"] {
        let redis_dir = data.join("instances").join(name);
        for (n, victim) in AGENT_NAMES.iter().zip(&victims) {
            let link = redis_dir.join(n);
            std::os::unix::fs::symlink(victim, &link).unwrap();
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &link,
                Some(redis_user.uid),
                Some(redis_user.gid),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }

    // Start (desired, process record, running.conf, sentinel seeding, stdout.log).
    let r = |name: &str| pb::InstanceRef { name: name.into() };
    let st = c
        .start_instance(r("redis-7000"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.state, pb::InstanceState::Running as i32, "{st:?}");
    let s = c
        .start_instance(r("sentinel-26379"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.state, pb::InstanceState::Running as i32, "{s:?}");

    // Crash restart: SIGKILL redis-server and the sentinel.
    kill(Pid::from_raw(st.pid as i32), Signal::SIGKILL).unwrap();
    let pid = running_other_than(&mut c, "redis-7000", st.pid).await;
    kill(Pid::from_raw(s.pid as i32), Signal::SIGKILL).unwrap();
    running_other_than(&mut c, "sentinel-26379", s.pid).await;

    // PutInstance (redis.conf.prev), then a live put as rotate-password does.
    c.put_instance(put(quick(ADDR, 1 << 20), false))
        .await
        .unwrap();
    let mut rotated = quick(ADDR, 1 << 20);
    rotated.password = "n3w-s3cret-n3w-s3cret-n3w".into();
    c.put_instance(pb::PutInstanceRequest {
        spec: Some(rotated),
        dry_run: false,
        live: true,
    })
    .await
    .unwrap();
    // A sentinel setting changed live (seed kept), then while it is stopped
    // (seeded afresh at the next start).
    c.put_instance(pb::PutInstanceRequest {
        spec: Some(sentinel_spec_at(ADDR, 6000)),
        dry_run: false,
        live: true,
    })
    .await
    .unwrap();
    c.stop_instance(r("sentinel-26379")).await.unwrap();
    c.put_instance(put(sentinel_spec_at(ADDR, 7000), false))
        .await
        .unwrap();
    c.start_instance(r("sentinel-26379")).await.unwrap();
    // A restart with the new config.
    c.stop_instance(r("redis-7000")).await.unwrap();
    let st = c
        .start_instance(r("redis-7000"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.state, pb::InstanceState::Running as i32, "{st:?}");
    assert_ne!(st.pid, pid);

    // Log rotation (log_max_bytes = 1, every 5 s): redis.log is rotated
    // past the planted redis.log.1 and .2 (renamed, removed, not followed).
    let rotated_log = data.join("instances/redis-7000/redis.log.1");
    let rotated =
        paddock_tests::wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            std::future::ready(std::fs::symlink_metadata(&rotated_log).is_ok_and(|m| m.is_file()))
        })
        .await;
    assert!(rotated, "redis.log was not rotated");

    // redis.log itself a link: tail and the log tail in last_exit read
    // nothing through it.
    let redis_log = data.join("instances/redis-7000/redis.log");
    let _ = std::fs::remove_file(&redis_log);
    std::os::unix::fs::symlink(&victims[0], &redis_log).unwrap();
    let tail = c
        .tail_log(pb::TailLogRequest {
            instance: "redis-7000".into(),
            lines: 100,
            follow: false,
        })
        .await;
    match tail {
        // Refused, saying why (a link is not a log file).
        Err(e) => assert!(!e.message().contains("root's file"), "{e}"),
        Ok(tail) => {
            let mut tail = tail.into_inner();
            while let Some(Ok(lines)) = tail.message().await.transpose() {
                assert!(
                    !lines.lines.iter().any(|l| l.contains("root's file")),
                    "{:?}",
                    lines.lines
                );
            }
        }
    }
    // Redis cannot open its log through the link either (it is not root),
    // so its restarts fail; their reports quote nothing through the link.
    let pid = st.pid;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = state_of(&mut c, "redis-7000").await.unwrap();
        assert!(!s.last_exit.contains("root's file"), "{}", s.last_exit);
        if s.last_exit.contains("log file") {
            break;
        }
        assert!(Instant::now() < deadline, "no failed restart: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::remove_file(&redis_log).unwrap();
    c.start_instance(r("redis-7000")).await.unwrap();
    let restarted = running_other_than(&mut c, "redis-7000", pid).await;

    // An agent restart (adoption, the migration check) changes nothing either.
    kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGTERM).unwrap();
    agent.child.wait().unwrap();
    agent.child = agent_command(&root, ADDR, "log_max_bytes = 1\nlog_backups = 2\n")
        .spawn()
        .unwrap();
    c = client_at(ADDR).await;
    let adopted =
        paddock_tests::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            let mut c = c.clone();
            async move { running_pid_of(&mut c, "redis-7000").await == Some(restarted) }
        })
        .await;
    assert!(adopted, "not re-adopted");

    for (i, victim) in victims.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(victim).unwrap(),
            format!("root's file {i}\n"),
            "{} (planted as {}) was written through",
            victim.display(),
            AGENT_NAMES[i]
        );
        assert_eq!(
            owner_mode(victim),
            (0, 0o644),
            "{} (planted as {}) changed owner or mode",
            victim.display(),
            AGENT_NAMES[i]
        );
    }
    // What the agent wrote is in place, with the owners and modes it chose.
    assert_eq!(
        owner_mode(&data.join("instances/redis-7000/running.conf")),
        (redis_user.uid.as_raw(), 0o600)
    );
    assert_eq!(
        owner_mode(&data.join("instances/sentinel-26379/sentinel.conf")),
        (redis_user.uid.as_raw(), 0o600)
    );
    assert_eq!(
        owner_mode(&data.join("control/redis-7000/redis.conf")),
        (0, 0o600)
    );
    for name in ["redis-7000", "sentinel-26379"] {
        c.stop_instance(r(name)).await.unwrap();
    }
}

async fn running_pid_of(c: &mut AgentClient<Channel>, name: &str) -> Option<u32> {
    let s = state_of(c, name).await?;
    (s.state == pb::InstanceState::Running as i32).then_some(s.pid)
}

/// An instance stored the old way (the agent's files inside Redis's
/// directory) is moved to control/ by the next agent while its Redis keeps
/// running, and stays supervised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_layout_is_migrated_while_redis_runs() {
    let Some(redis_user) = redis_user_or_skip() else {
        return;
    };
    const ADDR: &str = "127.0.40.2";
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let mut agent = Agent {
        child: spawn_agent(dir.path(), ADDR),
        dir,
    };
    let root = agent.dir.path().to_owned();
    let mut c = client_at(ADDR).await;
    c.put_instance(put(quick(ADDR, 0), false)).await.unwrap();
    let st = c
        .start_instance(pb::InstanceRef {
            name: "redis-7000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGKILL).unwrap();
    agent.child.wait().unwrap();
    // What the previous agent version left: everything in Redis's directory,
    // redis.conf given to the redis user.
    let control = root.join("data/control/redis-7000");
    let redis_dir = root.join("data/instances/redis-7000");
    for entry in std::fs::read_dir(&control).unwrap().flatten() {
        std::fs::rename(entry.path(), redis_dir.join(entry.file_name())).unwrap();
    }
    std::fs::remove_dir(&control).unwrap();
    nix::unistd::chown(
        &redis_dir.join("redis.conf"),
        Some(redis_user.uid),
        Some(redis_user.gid),
    )
    .unwrap();

    agent.child = spawn_agent(&root, ADDR);
    c = client_at(ADDR).await;
    let adopted =
        paddock_tests::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            let mut c = c.clone();
            async move { running_pid_of(&mut c, "redis-7000").await == Some(st.pid) }
        })
        .await;
    assert!(adopted, "the running Redis was not re-adopted");
    for name in ["spec.toml", "desired", "process", "redis.conf"] {
        assert_eq!(
            owner_mode(&control.join(name)),
            (0, 0o600),
            "control/{name}"
        );
        assert!(
            !redis_dir.join(name).exists(),
            "{name} left in Redis's directory"
        );
    }
    assert_eq!(owner_mode(&control), (0, 0o700));
    // Still supervised from the new place: a crash is restarted.
    kill(Pid::from_raw(st.pid as i32), Signal::SIGKILL).unwrap();
    running_other_than(&mut c, "redis-7000", st.pid).await;
    assert!(ping_at(&mut c).await);
    // Redis's own rewrite of the file it runs with (as Sentinel makes it
    // do with every REPLICAOF) keeps it private: Redis runs with umask 077.
    let password = spec(0).password;
    let mut conn = redis::Client::open(format!("redis://:{password}@{ADDR}:7000"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("REWRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let running = redis_dir.join("running.conf");
    assert!(
        std::fs::read_to_string(&running)
            .unwrap()
            .contains("Generated by CONFIG REWRITE"),
        "rewritten"
    );
    assert_eq!(owner_mode(&running), (redis_user.uid.as_raw(), 0o600));
    c.stop_instance(pb::InstanceRef {
        name: "redis-7000".into(),
    })
    .await
    .unwrap();
}

async fn ping_at(c: &mut AgentClient<Channel>) -> bool {
    ping(c).await == pong()
}

/// A spec whose ACL rule Redis refuses (sent straight to the agent, past
/// the inventory's check): Redis echoes the whole `user` line, password
/// included. Neither the password nor the user's shows in last_exit, the
/// event stream, TailLog or the agent's own log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_redis_echoes_are_masked_everywhere_the_agent_passes_logs() {
    const ADDR: &str = "127.0.40.3";
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let agent_log = dir.path().join("agent.log");
    let child = agent_command(dir.path(), ADDR, "")
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();
    let _agent = Agent { child, dir };
    let mut c = client_at(ADDR).await;
    let mut events = c
        .watch_events(pb::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let user_password = "app-password-0123456789-xyz";
    let mut s = quick(ADDR, 0);
    s.users = vec![pb::AclUser {
        name: "app".into(),
        password: user_password.into(),
        rules: vec!["~app:*".into(), "allkey".into()],
    }];
    let password = s.password.clone();
    c.put_instance(put(s, false)).await.unwrap();
    c.start_instance(pb::InstanceRef {
        name: "redis-7000".into(),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = state_of(&mut c, "redis-7000").await.unwrap();
        if st.state == pb::InstanceState::Fatal as i32 {
            break st;
        }
        assert!(Instant::now() < deadline, "not FATAL: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Redis did echo the line: the redaction has something to do.
    assert!(st.last_exit.contains("user"), "{}", st.last_exit);
    let secret_free = |what: &str, text: &str| {
        for secret in [user_password, password.as_str()] {
            assert!(!text.contains(secret), "password in {what}: {text}");
        }
    };
    secret_free("last_exit", &st.last_exit);
    let mut tail = c
        .tail_log(pb::TailLogRequest {
            instance: "redis-7000".into(),
            lines: 1000,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut tailed = Vec::new();
    while let Some(lines) = tail.message().await.unwrap() {
        tailed.extend(lines.lines);
    }
    secret_free("TailLog", &tailed.join("\n"));
    let mut seen_fatal = false;
    while !seen_fatal {
        let e = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        secret_free("an event", &e.detail);
        seen_fatal = e.to == pb::InstanceState::Fatal as i32;
    }
    let log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(log.contains("FATAL") || log.contains("Fatal"), "{log}");
    secret_free("the agent's log", &log);
    // It is there, in Redis's own output (the test would prove nothing
    // otherwise), where only root and the Redis user can read it.
    let data = _agent.dir.path().join("data");
    let raw: String = [
        "control/redis-7000/stdout.log",
        "instances/redis-7000/redis.log",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(data.join(f)).unwrap_or_default())
    .collect();
    assert!(raw.contains(user_password), "{raw}");
}

/// An agent on 127.0.51.1 with nothing started; killed on drop.
struct Bare {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent checks what it is given, since the controller is not the only
/// possible client: bind addresses that are not this host's own unicast
/// address, ports that clash with its own listener or another instance
/// (cluster bus included), oversized requests and pipelines.
#[tokio::test]
async fn put_instance_refuses_addresses_and_ports_that_are_not_its_own() {
    const HERE: &str = "127.0.51.1";
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let _agent = Bare {
        child: spawn_agent(dir.path(), HERE),
        _dir: dir,
    };
    let mut c = client_at(HERE).await;
    let refused = async |c: &mut AgentClient<Channel>, s: pb::InstanceSpec| {
        let status = c.put_instance(put(s, false)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status.message().to_owned()
    };
    for address in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "ff02::1"] {
        let why = refused(&mut c, spec_at(address, 0)).await;
        assert!(why.contains("field address"), "{address}: {why}");
    }
    // TEST-NET-1: nobody's address, certainly not this machine's.
    let why = refused(&mut c, spec_at("192.0.2.1", 0)).await;
    assert!(why.contains("not an address of this machine"), "{why}");

    let mut own_port = spec_at(HERE, 0);
    own_port.port = 7443;
    own_port.name = "redis-7443".into();
    let why = refused(&mut c, own_port).await;
    assert!(why.contains("the agent's own port 7443"), "{why}");

    // A cluster instance on 7000 takes 17000 too.
    let mut first = spec_at(HERE, 0);
    first.mode = pb::RedisMode::Cluster as i32;
    c.put_instance(put(first, false))
        .await
        .expect("first instance");
    let mut same = spec_at(HERE, 0);
    same.name = "redis-other".into();
    let why = refused(&mut c, same).await;
    assert!(why.contains("taken by instance \"redis-7000\""), "{why}");
    let mut bus = spec_at(HERE, 0);
    bus.name = "redis-17000".into();
    bus.port = 17000;
    let why = refused(&mut c, bus).await;
    assert!(why.contains("port 17000 is taken"), "{why}");
    let mut next = spec_at(HERE, 0);
    next.name = "redis-7001".into();
    next.port = 7001;
    c.put_instance(put(next, true))
        .await
        .expect("control: a free port is accepted");

    // One request is bounded in size and in commands.
    let big = pb::RedisCommandRequest {
        instance: "redis-7000".into(),
        commands: vec![pb::RedisArgs {
            args: vec![b"PING".to_vec(), vec![b'x'; 8 << 20]],
        }],
        allow_dangerous: false,
    };
    let status = c.redis_command(big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    let many = pb::RedisCommandRequest {
        instance: "redis-7000".into(),
        commands: vec![
            pb::RedisArgs {
                args: vec![b"PING".to_vec()],
            };
            257
        ],
        allow_dangerous: false,
    };
    let status = c.redis_command(many).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("1 to 256 commands"), "{status:?}");
}
