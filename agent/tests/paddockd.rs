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
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{ADDRESS}:7443\"\ndata_dir = \"{}\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_paddockd"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
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

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("redis-server"))
        .unwrap_or(false)
}

async fn client() -> AgentClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = AgentClient::connect(format!("http://{ADDRESS}:7443")).await {
            return c;
        }
        assert!(Instant::now() < deadline, "agent did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spec(maxmemory: u64) -> pb::InstanceSpec {
    pb::InstanceSpec {
        name: "redis-7000".into(),
        deployment: "t".into(),
        address: ADDRESS.into(),
        port: 7000,
        mode: pb::RedisMode::Standalone as i32,
        maxmemory_bytes: maxmemory,
        maxmemory_policy: "noeviction".into(),
        appendonly: false,
        rdb_snapshots: false,
        cluster_node_timeout_ms: 5000,
        password: "s3cret-s3cret-s3cret-s3cret".into(),
    }
}

fn put(spec: pb::InstanceSpec, dry_run: bool) -> pb::PutInstanceRequest {
    pb::PutInstanceRequest {
        spec: Some(spec),
        dry_run,
    }
}

async fn ping(c: &mut AgentClient<Channel>) -> Option<pb::redis_value::Kind> {
    let r = c
        .redis_command(pb::RedisCommandRequest {
            instance: "redis-7000".into(),
            commands: vec![pb::RedisArgs {
                args: vec![b"PING".to_vec()],
            }],
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
