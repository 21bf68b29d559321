//! The real `paddockd` binary with real redis-server children, driven over
//! gRPC on its own loopback address (127.0.22.x).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use paddock_proto::v1::{self as pb, agent_client::AgentClient};
use tonic::transport::Channel;

const ADDRESS: &str = "127.0.22.1";

struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        // 0755: as root, redis-server runs as the redis user and must reach it.
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()
            .unwrap();
        let child = spawn_agent(dir.path(), ADDRESS);
        Agent { child, dir }
    }

    fn pidfile(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/instances")
            .join(name)
            .join("redis.pid")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The agent may not have stopped its Redis if the test failed midway.
        if let Some(pid) = read_pid(&self.pidfile("redis-7000"))
            && alive(pid)
        {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Starts the real binary on `address`:7443 with its data under `dir`.
fn spawn_agent(dir: &Path, address: &str) -> Child {
    agent_command(dir, address, "").spawn().unwrap()
}

/// Writes the agent's config (plaintext on `address`:7443, data under
/// `dir`, plus `extra` lines) and returns the command that runs it.
fn agent_command(dir: &Path, address: &str, extra: &str) -> Command {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}:7443\"\ndata_dir = \"{}\"\ninsecure_plaintext = true\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_paddockd"));
    command.arg("--config").arg(&config).stdin(Stdio::null());
    command
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("redis-server"))
        .unwrap_or(false)
}

async fn client() -> AgentClient<Channel> {
    client_at(ADDRESS).await
}

async fn client_at(address: &str) -> AgentClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = AgentClient::connect(format!("http://{address}:7443")).await {
            return c;
        }
        assert!(Instant::now() < deadline, "agent did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let mut agent = Agent::start();
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
    let conf_path = agent
        .dir
        .path()
        .join("data/instances/redis-7000/redis.conf");
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = running_pid(&mut c).await
            && pid != first.pid
        {
            break;
        }
        assert!(Instant::now() < deadline, "adopted instance not restarted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
async fn missing_redis_server_is_reported_with_how_to_install_it() {
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
    // Installing the package cannot put a binary at that path: the answer
    // says so and how to install it by hand.
    let err = c.ensure_redis(pb::EnsureRedisRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("apt-get install -y redis-server"),
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
