//! The local lab: three agents on loopback addresses (127.0.1.1-3 by default)
//! acting as three machines, each with its own data directory under DIR.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::apply::{ApplyOptions, ApplyReport, apply};
use crate::client::AgentClient;

pub const DEFAULT_ADDRESSES: [&str; 3] = ["127.0.1.1", "127.0.1.2", "127.0.1.3"];
const STATE_FILE: &str = "lab.json";
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct LabOptions {
    pub dir: PathBuf,
    pub addresses: Vec<IpAddr>,
    pub redis_port: u16,
    pub agent_port: u16,
    /// cluster (3 masters x 1 replica), replication (1 master, a replica
    /// on every other box) or sentinel (the same, plus a sentinel per box).
    pub topology: paddock_inventory::Topology,
    /// Apply the lab's inventory once the agents are up.
    pub apply: bool,
    /// The agents' `fast_failover` (on by default; off to compare with
    /// restarting a crashed master in place).
    pub fast_failover: bool,
    pub progress: bool,
}

impl LabOptions {
    pub fn new(dir: PathBuf) -> Self {
        LabOptions {
            dir,
            addresses: DEFAULT_ADDRESSES
                .iter()
                .map(|a| a.parse().expect("valid literal"))
                .collect(),
            redis_port: 7000,
            agent_port: 7443,
            topology: paddock_inventory::Topology::Cluster,
            apply: true,
            fast_failover: true,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabState {
    agents: Vec<LabAgent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabAgent {
    host: String,
    listen: SocketAddr,
    pid: u32,
    dir: PathBuf,
}

pub struct LabUp {
    pub inventory: PathBuf,
    pub password_file: PathBuf,
    pub started_agents: usize,
    pub apply: Option<ApplyReport>,
}

pub fn inventory_path(dir: &Path) -> PathBuf {
    dir.join("inventory.toml")
}

/// The lab's inventory: a 3-master, 1-replica cluster on the lab's boxes,
/// or one master with a read replica on every other box (and, for the
/// sentinel topology, a sentinel on every box).
pub fn inventory_text(options: &LabOptions) -> String {
    let (masters, replicas) = match options.topology {
        paddock_inventory::Topology::Cluster => (3, 1),
        _ => (1, options.addresses.len().saturating_sub(1)),
    };
    let mut s = format!(
        "# The local lab, written by `paddock lab up`: each host is a paddockd agent\n\
         # on its own loopback address, standing in for a machine.\n\
         [deployment]\nname = \"lab\"\ntopology = \"{}\"\nmasters = {masters}\nreplicas_per_master = {replicas}\n\n\
         [redis]\n",
        options.topology
    );
    s.push_str(&format!(
        "port = {}\nmaxmemory = \"128mb\"\nmaxmemory_policy = \"noeviction\"\n\
         # Persistence on: a master restarted by its agent reloads its data.\nappendonly = true\n\
         cluster_node_timeout_ms = 5000\n",
        options.redis_port
    ));
    if options.topology == paddock_inventory::Topology::Sentinel {
        s.push_str(&format!(
            "\n# One sentinel per box; a majority must agree the master is down.\n             [sentinel]\ncount = {}\nport = 26379\n",
            options.addresses.len()
        ));
    }
    for (i, a) in options.addresses.iter().enumerate() {
        s.push_str(&format!(
            "\n[[hosts]]\nname = \"box{}\"\naddress = \"{a}\"\nagent_port = {}\n",
            i + 1,
            options.agent_port
        ));
    }
    s
}

/// The paddockd binary: $PADDOCKD, else next to this executable, else PATH.
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PADDOCKD") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name("paddockd");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("paddockd")
}

fn redis_server_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("redis-server").is_file()))
}

const INSTALL_HINT: &str = "install it with `sudo apt-get update && sudo apt-get install -y redis-server`, \
     then `sudo systemctl disable --now redis-server` so the distribution's own instance does not run beside the lab";

/// Installs redis-server through apt-get when it is missing and we are root
/// on a Debian-like system; otherwise says exactly how to install it.
fn ensure_redis_server(progress: bool) -> Result<(), Error> {
    if redis_server_installed() {
        return Ok(());
    }
    let root = nix::unistd::Uid::effective().is_root();
    let apt = Path::new("/usr/bin/apt-get").is_file();
    if !(root && apt) {
        return Err(Error::Lab(format!(
            "redis-server is not installed on this machine.\n  hint: {INSTALL_HINT}"
        )));
    }
    if progress {
        eprintln!(
            "redis-server is not installed: installing it with apt-get (Debian's redis-server package)"
        );
    }
    let apt_get = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // --no-upgrade: installing the missing package never upgrades one.
    let install = ["install", "-y", "-q", "--no-upgrade", "redis-server"];
    let installed = apt_get(&install) || (apt_get(&["update", "-q"]) && apt_get(&install));
    if !installed || !redis_server_installed() {
        return Err(Error::Lab(format!(
            "installing redis-server with apt-get failed (see its output above).\n  hint: {INSTALL_HINT}"
        )));
    }
    // The package starts its own instance on 6379; the lab does not need it.
    let _ = Command::new("systemctl")
        .args(["disable", "--now", "redis-server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(())
}

pub async fn up(options: &LabOptions) -> Result<LabUp, Error> {
    let progress = options.progress;
    tokio::task::spawn_blocking(move || ensure_redis_server(progress))
        .await
        .map_err(|e| Error::Lab(e.to_string()))??;
    if options.addresses.is_empty() {
        return Err(Error::Lab("the lab needs at least one address".into()));
    }
    let dir = &options.dir;
    fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let dir = dir.canonicalize().map_err(Error::io(dir))?;
    let mut state = read_state(&dir)?.unwrap_or(LabState { agents: Vec::new() });
    let binary = agent_binary();
    // The lab has its own CA, like any deployment (unless plaintext was
    // asked for by name).
    let certs = crate::certs::certs_dir(&inventory_path(&dir), "lab");
    let plaintext = matches!(
        crate::client::Transport::for_deployment(&inventory_path(&dir), "lab"),
        Ok(crate::client::Transport::Plaintext)
    );
    if !plaintext {
        crate::certs::init(&certs, "lab")?;
    }
    let transport = crate::client::Transport::for_deployment(&inventory_path(&dir), "lab")?;
    let mut started = 0;
    for (i, address) in options.addresses.iter().enumerate() {
        let host = format!("box{}", i + 1);
        let listen = SocketAddr::new(*address, options.agent_port);
        if let Some(a) = state.agents.iter().find(|a| a.host == host)
            && a.listen == listen
            && process_is(a.pid, "paddockd")
        {
            continue;
        }
        let box_dir = dir.join(&host);
        let data_dir = box_dir.join("data");
        fs::create_dir_all(&data_dir).map_err(Error::io(&data_dir))?;
        let config = box_dir.join("agent.toml");
        let tls = if plaintext {
            "insecure_plaintext = true\n".to_owned()
        } else {
            let files = crate::certs::issue(&certs, &host, *address)?;
            format!(
                "\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                crate::certs::ca(&certs).cert.display(),
                files.cert.display(),
                files.key.display()
            )
        };
        fs::write(
            &config,
            format!(
                "# paddockd config for lab host {host}\nlisten = \"{listen}\"\ndata_dir = \"{}\"\nfast_failover = {}\n{tls}",
                data_dir.display(),
                options.fast_failover
            ),
        )
        .map_err(Error::io(&config))?;
        let log_path = box_dir.join("agent.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(&log_path))?;
        let log_err = log.try_clone().map_err(Error::io(&log_path))?;
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C at the terminal does not stop the lab.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::Lab(format!(
                    "cannot start the agent {}: {e}\n  hint: build it with `cargo build --release` (paddockd sits next to paddock) or set PADDOCKD",
                    binary.display()
                ))
            })?;
        state.agents.retain(|a| a.host != host);
        state.agents.push(LabAgent {
            host: host.clone(),
            listen,
            pid: child.id(),
            dir: box_dir.clone(),
        });
        write_state(&dir, &state)?;
        wait_for_agent(&host, listen, child, &log_path, &transport).await?;
        started += 1;
    }
    // An existing inventory is the operator's (perhaps edited): keep it.
    let inventory = inventory_path(&dir);
    if !inventory.exists() {
        let text = inventory_text(options);
        fs::write(&inventory, text).map_err(Error::io(&inventory))?;
    }
    let apply_report = if options.apply {
        Some(
            apply(
                &inventory,
                &ApplyOptions {
                    progress: options.progress,
                    ..ApplyOptions::default()
                },
            )
            .await?,
        )
    } else {
        None
    };
    Ok(LabUp {
        password_file: dir.join(".paddock").join("lab").join("redis-password"),
        inventory,
        started_agents: started,
        apply: apply_report,
    })
}

async fn wait_for_agent(
    host: &str,
    listen: SocketAddr,
    mut child: std::process::Child,
    log: &Path,
    transport: &crate::client::Transport,
) -> Result<(), Error> {
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(Error::Lab(format!(
                "the agent of {host} exited ({status}) before serving on {listen}; last lines of {}:\n  {}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
            )));
        }
        if let Ok(agent) = AgentClient::connect(host, listen, transport).await
            && agent.facts().await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Lab(format!(
                "the agent of {host} did not answer on {listen} within {}s; see {}",
                AGENT_START_TIMEOUT.as_secs(),
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read_state(dir: &Path) -> Result<Option<LabState>, Error> {
    let path = dir.join(STATE_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Lab(format!(
                "{}: {e}; delete it if no lab is running",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

fn write_state(dir: &Path, state: &LabState) -> Result<(), Error> {
    let path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).map_err(|e| Error::Lab(e.to_string()))?;
    fs::write(&path, text).map_err(Error::io(path))
}

/// Whether `pid` is alive and its command line mentions `name`: a recycled
/// pid belonging to something else is never signalled.
fn process_is(pid: u32, name: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(name))
        .unwrap_or(false)
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// Stops what `pids` name; SIGKILL for whatever outlives the timeout.
fn stop_pids(pids: &[u32], name: &str) {
    for &p in pids {
        signal(p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while pids.iter().any(|&p| process_is(p, name)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for &p in pids {
        if process_is(p, name) {
            signal(p, Signal::SIGKILL);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabDown {
    pub agents: usize,
    /// Instances stopped through their agents.
    pub instances: usize,
    /// redis-server processes found by pidfile after the agents were gone.
    pub leftover_redis: usize,
}

/// Stops every instance through its agent (agents leave Redis running when
/// they exit, by design), then the agents, then any redis-server whose
/// pidfile is in the lab and is still alive.
pub async fn down(dir: &Path) -> Result<LabDown, Error> {
    let state = read_state(dir)?;
    let live: Vec<LabAgent> = state
        .iter()
        .flat_map(|s| &s.agents)
        .filter(|a| process_is(a.pid, "paddockd"))
        .cloned()
        .collect();
    let transport = crate::client::Transport::for_deployment(&inventory_path(dir), "lab")
        .unwrap_or(crate::client::Transport::Plaintext);
    let transport = &transport;
    let stops = live.iter().map(|a| async move {
        let Ok(agent) = AgentClient::connect(&a.host, a.listen, transport).await else {
            return 0;
        };
        let Ok(list) = agent.list().await else {
            return 0;
        };
        let agent = &agent;
        futures::future::join_all(
            list.iter()
                .filter(|i| i.state != crate::client::InstanceState::Stopped)
                .map(|i| agent.stop(&i.name)),
        )
        .await
        .iter()
        .filter(|r| r.is_ok())
        .count()
    });
    let instances: usize = futures::future::join_all(stops).await.into_iter().sum();
    let dir = dir.to_owned();
    let agent_pids: Vec<u32> = live.iter().map(|a| a.pid).collect();
    tokio::task::spawn_blocking(move || {
        stop_pids(&agent_pids, "paddockd");
        let mut redis = Vec::new();
        if let Ok(boxes) = fs::read_dir(&dir) {
            for b in boxes.flatten() {
                let Ok(entries) = fs::read_dir(b.path().join("data").join("instances")) else {
                    continue;
                };
                for i in entries.flatten() {
                    let pid = fs::read_to_string(i.path().join("redis.pid"))
                        .ok()
                        .and_then(|p| p.trim().parse::<u32>().ok());
                    if let Some(pid) = pid.filter(|&p| process_is(p, "redis-server")) {
                        redis.push(pid);
                    }
                }
            }
        }
        stop_pids(&redis, "redis-server");
        if state.is_some() {
            let path = dir.join(STATE_FILE);
            fs::remove_file(&path).map_err(Error::io(path))?;
        }
        Ok(LabDown {
            agents: agent_pids.len(),
            instances,
            leftover_redis: redis.len(),
        })
    })
    .await
    .map_err(|e| Error::Lab(e.to_string()))?
}
