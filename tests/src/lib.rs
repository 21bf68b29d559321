//! Helpers for end-to-end tests: a lab of real `paddockd` agents on its own
//! loopback addresses, driven through the real `paddock` binary, and an
//! independent Redis client (the redis crate) to check what users would.
//!
//! Every lab gets addresses no other test uses, and its `Drop` runs
//! `paddock lab down`, so a failing test leaves nothing running.

pub mod agent;
pub mod consistency;
pub mod delay;
pub mod ha;
pub mod netlab;
pub mod netns;
pub mod reshard;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

/// Where `paddock` and `paddockd` were built: $PADDOCK_BIN_DIR, else the
/// profile directory this test binary sits in (target/<profile>/deps/..).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PADDOCK_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("profile dir").to_owned()
    } else {
        deps.to_owned()
    };
    for bin in ["paddock", "paddockd"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            dir.join(bin).display()
        );
    }
    dir
}

pub fn paddock(args: &[&str]) -> Output {
    let out = Command::new(bin_dir().join("paddock"))
        .args(args)
        .env("PADDOCKD", bin_dir().join("paddockd"))
        .output()
        .expect("run paddock");
    eprintln!(
        "$ paddock {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `paddock apply ARGS` checked against the plan: runs `paddock plan --json`
/// with the same inventory and `--limit`, then `paddock apply --json ARGS`,
/// and asserts that the steps apply carried out are the steps plan printed
/// just before. Returns apply's output with its text summary as stdout,
/// as `paddock apply` without `--json` prints it.
///
/// The rule: apply plans from the same observations, so its first round
/// must be exactly plan's steps (kinds, targets, handovers, keys), compared
/// without the free-text lists (the problems the nodes report and the
/// moves' wording, which may move on between the two observations). Later
/// rounds are what apply found after executing the first (formation once
/// nodes run, sentinels and the masters' spread after a restart): plan
/// could not know them. A plan that refuses must make apply fail having
/// carried out nothing.
pub fn apply_agreeing(args: &[&str]) -> Output {
    agree(args, paddock)
}

/// [`apply_agreeing`] through any way of running `paddock` (a network
/// namespace's workstation).
pub fn agree(args: &[&str], run: impl Fn(&[&str]) -> Output) -> Output {
    // The flags plan takes too: the inventory and --limit.
    let mut plan_args = vec!["plan", "--json"];
    let mut i = 0;
    while i < args.len() {
        if matches!(args[i], "-i" | "--inventory" | "--limit") && i + 1 < args.len() {
            plan_args.extend([args[i], args[i + 1]]);
            i += 1;
        }
        i += 1;
    }
    let plan = run(&plan_args);
    // A plan that cannot observe (no agent answers) has nothing to compare:
    // apply must then fail too.
    let plan: Option<serde_json::Value> = plan
        .status
        .success()
        .then(|| serde_json::from_slice(&plan.stdout).expect("plan --json"));
    let mut apply_args = vec!["apply", "--json"];
    apply_args.extend_from_slice(args);
    let mut out = run(&apply_args);
    if !out.status.success() {
        return out;
    }
    let plan = plan.expect("plan failed where apply succeeded");
    let refused = plan["refusals"].as_array().is_some_and(|r| !r.is_empty());
    assert!(!refused, "plan refused but apply succeeded: {plan}");
    let applied: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("apply --json prints JSON");
    let planned = steps_compared(&plan["steps"]);
    let first = steps_compared(&applied["rounds"][0]);
    assert_eq!(
        first, planned,
        "the steps apply carried out first are the steps plan printed just before"
    );
    out.stdout = applied["summary"]
        .as_str()
        .expect("summary")
        .as_bytes()
        .to_vec();
    out
}

/// Steps without their free-text lists (see [`apply_agreeing`]).
fn steps_compared(steps: &serde_json::Value) -> Vec<serde_json::Value> {
    let Some(steps) = steps.as_array() else {
        return Vec::new();
    };
    steps
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("problems");
                o.remove("moves");
            }
            s
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
}

impl Lab {
    /// A lab on 127.0.`octet`.1-3; each test file picks its own octet.
    pub fn new(octet: u8) -> Lab {
        Lab {
            // 0755: redis-server runs as the unprivileged redis user when
            // the tests run as root, and must be able to reach its data.
            dir: tempfile::Builder::new()
                .prefix("paddock-lab-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .tempdir()
                .expect("temp dir"),
            addresses: (1..=3)
                .map(|i| format!("127.0.{octet}.{i}").parse().expect("ip"))
                .collect(),
            port: 7000,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir().join("inventory.toml")
    }

    pub fn addresses_arg(&self) -> String {
        self.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `paddock lab up` with this lab's directory and addresses.
    pub fn up(&self, extra: &[&str]) -> Output {
        let dir = self.dir().display().to_string();
        let addresses = self.addresses_arg();
        let mut args = vec!["lab", "up", "--dir", &dir, "--addresses", &addresses];
        args.extend_from_slice(extra);
        paddock(&args)
    }

    pub fn down(&self) -> Output {
        paddock(&["lab", "down", "--dir", &self.dir().display().to_string()])
    }

    pub fn password(&self) -> String {
        std::fs::read_to_string(self.dir().join(".paddock/lab/redis-password"))
            .expect("the lab's password file")
            .trim()
            .to_owned()
    }

    /// Every Redis node of the lab: two per box.
    pub fn nodes(&self) -> Vec<(IpAddr, u16)> {
        self.addresses
            .iter()
            .flat_map(|&a| [(a, self.port), (a, self.port + 1)])
            .collect()
    }

    /// Every node as a redis URL, the seeds of a cluster client.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes()
            .iter()
            .map(|(ip, port)| format!("redis://{ip}:{port}"))
            .collect()
    }

    pub fn pidfile(&self, box_index: usize, instance: &str) -> PathBuf {
        self.dir()
            .join(format!("box{}", box_index + 1))
            .join("data/instances")
            .join(instance)
            .join("redis.pid")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// A plain connection to one node, authenticated, with short timeouts.
pub async fn connect(
    ip: IpAddr,
    port: u16,
    password: &str,
) -> redis::RedisResult<MultiplexedConnection> {
    let info = ConnectionAddr::Tcp(ip.to_string(), port)
        .into_connection_info()?
        .set_redis_settings(RedisConnectionInfo::default().set_password(password));
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A `key:value` field of INFO-style output.
pub fn field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(str::to_owned)
}

/// Polls `check` every `every` until it returns true or `timeout` passes.
/// The one polling loop of the end-to-end tests and the agent's tests.
pub async fn wait_until<F, Fut>(timeout: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(timeout, every, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Polls `check` every `every` until it returns Some (that value) or
/// `timeout` passes (None).
pub async fn wait_for<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Whether a process with this pid exists and its command line mentions
/// `name`: the controller's own check.
pub use paddock_controller::process::process_is;

/// A gRPC client of box `box_index`'s agent holding the controller's
/// certificate: whatever it may send, anyone with the controller's key may.
pub async fn agent_client(
    lab: &Lab,
    box_index: usize,
) -> paddock_proto::v1::agent_client::AgentClient<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let certs = lab.dir().join(".paddock/lab/certs");
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).expect("lab certificate");
    let ip = lab.addresses[box_index];
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(
            read("controller.pem"),
            read("controller.key"),
        ))
        .domain_name(ip.to_string());
    let channel = Endpoint::from_shared(format!("https://{ip}:7443"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("the agent answers over mutual TLS");
    paddock_proto::v1::agent_client::AgentClient::new(channel)
}

/// One RedisCommand RPC of a single command, `words` split on spaces.
pub async fn redis_command(
    client: &mut paddock_proto::v1::agent_client::AgentClient<tonic::transport::Channel>,
    instance: &str,
    words: &str,
    allow_dangerous: bool,
) -> Result<Vec<paddock_proto::v1::RedisValue>, tonic::Status> {
    use paddock_proto::v1::{RedisArgs, RedisCommandRequest};
    client
        .redis_command(RedisCommandRequest {
            instance: instance.into(),
            commands: vec![RedisArgs {
                args: words.split(' ').map(|w| w.as_bytes().to_vec()).collect(),
            }],
            allow_dangerous,
        })
        .await
        .map(|r| r.into_inner().replies)
}

/// `redis-cli --cluster check` of the lab's cluster passes: every node
/// agrees on the slots and all 16384 are covered, with no warning or
/// error. Retried for 20 s (replicas learn a move's new owners by gossip);
/// the last output is printed when it never passes.
pub async fn cluster_check_passes(lab: &Lab, password: &str) -> bool {
    let (ip, port) = lab.nodes()[0];
    let target = format!("{ip}:{port}");
    let mut last = String::new();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let args = [
            "-a",
            password,
            "--no-auth-warning",
            "--cluster",
            "check",
            target.as_str(),
        ]
        .map(str::to_owned);
        let out = tokio::task::spawn_blocking(move || {
            Command::new("redis-cli")
                .args(&args)
                .output()
                .expect("redis-cli")
        })
        .await
        .expect("redis-cli task");
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success()
            && last.contains("[OK] All nodes agree about slots configuration.")
            && last.contains("[OK] All 16384 slots covered.")
            && !last.contains("[WARNING]")
            && !last.contains("[ERR]")
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("redis-cli --cluster check:\n{last}");
    false
}
