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
use crate::client::{AgentClient, Security};
use crate::process::process_is;

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
    /// Stop an existing lab in `dir` and delete what the lab wrote there
    /// (inventory, certificates, password, boxes' data) before starting.
    pub reset: bool,
    /// Mutual TLS with the lab's own CA, or plaintext agents.
    pub security: Security,
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
            reset: false,
            security: Security::default(),
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
    /// The boxes this run added to an existing lab.
    pub added: Vec<String>,
    /// The running instances applying the grown inventory would move
    /// ("host:instance"): when there are any, apply is not run.
    pub held_back: Vec<String>,
}

impl LabUp {
    /// What growing an existing lab did: the boxes added, and why the
    /// inventory was not applied when it would move running instances.
    pub fn render_growth(&self) -> String {
        if self.added.is_empty() {
            return String::new();
        }
        let mut out = format!("lab: added {}\n", self.added.join(", "));
        if !self.held_back.is_empty() {
            out.push_str(&format!(
                "lab: the inventory was not applied: with the added boxes, placement would move {}.\n  \
                 The added boxes' agents run and carry no instances; the running deployment is unchanged.\n  \
                 hint: `apply` (and `lab up` without --no-apply) refuses this inventory, naming those instances, until paddock can move them\n",
                self.held_back.join(", ")
            ));
        }
        out
    }

    /// How to reach the lab, see it and stop it.
    pub fn render_how_to(&self, options: &LabOptions) -> String {
        use paddock_inventory::Topology;
        let first = options.addresses[0];
        let port = options.redis_port;
        let password = self.password_file.display();
        let cluster_flag = if options.topology == Topology::Cluster {
            "-c "
        } else {
            ""
        };
        let mut out = format!(
            "\nConnect:  REDISCLI_AUTH=\"$(cat {password})\" redis-cli {cluster_flag}-h {first} -p {port}\n"
        );
        if options.topology == Topology::Sentinel {
            out.push_str(&format!(
                "Sentinel: REDISCLI_AUTH=\"$(cat {password})\" redis-cli -h {first} -p 26379 SENTINEL GET-MASTER-ADDR-BY-NAME lab\n"
            ));
        }
        let dir = options.dir.display();
        out.push_str(&format!("Status:   paddock lab status --dir {dir}\n"));
        out.push_str(&format!("Stop:     paddock lab down --dir {dir}\n"));
        out
    }
}

/// The topology `lab up` brings up: the one asked for, else the existing
/// lab's (unless it is reset), else a cluster.
pub fn topology_choice(
    dir: &Path,
    asked: Option<&str>,
    reset: bool,
) -> paddock_inventory::Topology {
    use paddock_inventory::Topology;
    match asked {
        Some("replication") => Topology::Replication,
        Some("sentinel") => Topology::Sentinel,
        Some(_) => Topology::Cluster,
        None if reset => Topology::Cluster,
        None => existing_topology(dir).unwrap_or(Topology::Cluster),
    }
}

pub fn inventory_path(dir: &Path) -> PathBuf {
    dir.join("inventory.toml")
}

/// The inventory of the lab in `dir`; an error saying there is no lab there
/// (rather than "cannot read inventory.toml") when there is none.
pub fn existing_inventory(dir: &Path) -> Result<PathBuf, Error> {
    let path = inventory_path(dir);
    if path.is_file() {
        return Ok(path);
    }
    Err(Error::Lab(format!(
        "there is no lab in {} (no {}).\n  hint: start one with `paddock lab up --dir {}`",
        dir.display(),
        path.display(),
        dir.display()
    )))
}

/// The topology of the lab in `dir`, if there is one: what `lab up` keeps
/// when no topology is asked for.
pub fn existing_topology(dir: &Path) -> Option<paddock_inventory::Topology> {
    let bytes = fs::read(inventory_path(dir)).ok()?;
    let inv = paddock_inventory::parse_bytes("inventory.toml", &bytes).ok()?;
    Some(inv.deployment.topology)
}

/// How the lab `existing` describes differs from what `options` ask for
/// (empty when they agree): `lab up` does not silently bring up another lab
/// than the one asked for.
pub fn differences(existing: &paddock_inventory::Inventory, options: &LabOptions) -> Vec<String> {
    let mut out = Vec::new();
    if existing.deployment.topology != options.topology {
        out.push(format!(
            "it is a {} lab, not {}",
            existing.deployment.topology, options.topology
        ));
    }
    let addresses: Vec<IpAddr> = existing.hosts.iter().map(|h| h.address).collect();
    // A longer list adds boxes; every existing box keeps its address.
    let kept = addresses
        .iter()
        .zip(&options.addresses)
        .all(|(old, new)| old == new);
    if !kept || options.addresses.len() < addresses.len() {
        let list = |a: &[IpAddr]| {
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push(format!(
            "its boxes are at {}, not {}: {}",
            list(&addresses),
            list(&options.addresses),
            box_changes(&addresses, &options.addresses).join(", ")
        ));
    }
    if let Some(h) = existing
        .hosts
        .iter()
        .find(|h| h.agent_port != options.agent_port)
    {
        out.push(format!(
            "its agents listen on port {}, not {}",
            h.agent_port, options.agent_port
        ));
    }
    if existing.redis.port != options.redis_port {
        out.push(format!(
            "its Redis port is {}, not {}",
            existing.redis.port, options.redis_port
        ));
    }
    out
}

/// The existing boxes (box1, box2, ... at `old`) that `new` drops or
/// moves, each named with what happens to it.
fn box_changes(old: &[IpAddr], new: &[IpAddr]) -> Vec<String> {
    old.iter()
        .enumerate()
        .filter_map(|(i, address)| match new.get(i) {
            None => Some(format!(
                "box{} ({address}) would be removed, and lab up does not remove boxes",
                i + 1
            )),
            Some(other) if other != address => {
                Some(format!("box{} would move from {address} to {other}", i + 1))
            }
            Some(_) => None,
        })
        .collect()
}

/// `--addresses` as `lab up` takes it: three boxes or more (a cluster lab
/// has three masters on three boxes), each address once.
pub fn check_addresses(addresses: &[IpAddr]) -> Result<(), Error> {
    if addresses.len() < 3 {
        return Err(Error::Usage(format!(
            "--addresses needs three or more addresses (one per box), not {}",
            addresses.len()
        )));
    }
    for (i, a) in addresses.iter().enumerate() {
        if addresses[..i].contains(a) {
            return Err(Error::Usage(format!(
                "--addresses lists {a} twice: each box needs its own address"
            )));
        }
    }
    Ok(())
}

/// Refuses to bring up an existing lab other than the one `options` ask
/// for (the same one with more boxes is fine); returns its inventory.
fn check_same_lab(
    dir: &Path,
    options: &LabOptions,
) -> Result<Option<paddock_inventory::Inventory>, Error> {
    let path = inventory_path(dir);
    let Ok(bytes) = fs::read(&path) else {
        return Ok(None);
    };
    let existing = paddock_inventory::parse_bytes(&path.display().to_string(), &bytes)?;
    let diff = differences(&existing, options);
    if diff.is_empty() {
        return Ok(Some(existing));
    }
    Err(Error::Usage(format!(
        "{} already holds another lab: {}.\n  hint: `lab up` keeps a lab's boxes and can add boxes at the end of --addresses; to remove a box or change the lab, add --reset to stop it and start the lab asked for from scratch (its data is deleted), use the options it was made with, or use another --dir",
        dir.display(),
        diff.join("; ")
    )))
}

/// The lab's inventory text `existing` (perhaps edited by the operator)
/// with `[[hosts]]` tables for the boxes `options` add after its first
/// `existing_hosts`; nothing else in it changes.
pub fn grown_inventory_text(existing: &str, existing_hosts: usize, options: &LabOptions) -> String {
    let added = options.addresses.get(existing_hosts..).unwrap_or_default();
    let mut text = existing.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&numbered_hosts_toml(
        existing_hosts + 1,
        added,
        options.agent_port,
    ));
    text
}

/// The instances placed for `old` that `new` places elsewhere or
/// otherwise ("host:instance"): applying `new` over a deployment of `old`
/// would move them. A cluster's placement keeps what runs
/// (`place_keeping`), so only the other topologies can move instances.
pub fn moved_instances(
    old: &paddock_inventory::Inventory,
    new: &paddock_inventory::Inventory,
) -> Vec<String> {
    let running: Vec<paddock_inventory::Existing> = paddock_inventory::place(old)
        .redis()
        .map(|i| paddock_inventory::Existing {
            host: i.host,
            port: i.port,
            name: i.name.clone(),
            shard: i.shard,
            role: i.role,
        })
        .collect();
    let named = |inv: &paddock_inventory::Inventory, placement: paddock_inventory::Placement| {
        placement
            .instances
            .into_iter()
            .map(|i| {
                let host = inv.hosts.get(i.host).map(|h| h.name.clone());
                (host.unwrap_or_default(), i)
            })
            .collect::<Vec<_>>()
    };
    let after = named(new, paddock_inventory::place_keeping(new, &running));
    named(old, paddock_inventory::place(old))
        .into_iter()
        .filter(|(host, i)| {
            !after.iter().any(|(h, j)| {
                h == host && j.name == i.name && j.shard == i.shard && j.role == i.role
            })
        })
        .map(|(host, i)| format!("{host}:{}", i.name))
        .collect()
}

/// Stops the lab in `dir` and deletes what the lab wrote there, nothing else.
async fn reset(dir: &Path, security: Security) -> Result<(), Error> {
    down(dir, security).await?;
    let mut doomed = vec![inventory_path(dir), dir.join(".paddock").join("lab")];
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name
                .strip_prefix("box")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                doomed.push(e.path());
            }
        }
    }
    for path in doomed {
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(path)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The lab's inventory: a 3-master, 1-replica cluster on the lab's boxes,
/// or one master with a read replica on every other box (and, for the
/// sentinel topology, a sentinel on every box). Written with the toml
/// crate, as every TOML file the lab writes.
pub fn inventory_text(options: &LabOptions) -> String {
    #[derive(Serialize)]
    struct Deployment {
        name: &'static str,
        topology: String,
        masters: usize,
        replicas_per_master: usize,
    }
    #[derive(Serialize)]
    struct Redis {
        port: u16,
        maxmemory: &'static str,
        maxmemory_policy: &'static str,
        appendonly: bool,
        cluster_node_timeout_ms: u32,
    }
    #[derive(Serialize)]
    struct Sentinel {
        count: usize,
        port: u16,
    }
    let (masters, replicas) = match options.topology {
        paddock_inventory::Topology::Cluster => (3, 1),
        _ => (1, options.addresses.len().saturating_sub(1)),
    };
    let mut s = String::from(
        "# The local lab, written by `paddock lab up`: each host is a paddockd agent\n\
         # on its own loopback address, standing in for a machine.\n",
    );
    #[derive(Serialize)]
    struct DeploymentTable {
        deployment: Deployment,
    }
    #[derive(Serialize)]
    struct RedisTable {
        redis: Redis,
    }
    #[derive(Serialize)]
    struct SentinelTable {
        sentinel: Sentinel,
    }
    s.push_str(&to_toml(&DeploymentTable {
        deployment: Deployment {
            name: "lab",
            topology: options.topology.to_string(),
            masters,
            replicas_per_master: replicas,
        },
    }));
    s.push_str("\n# Persistence on: a master restarted by its agent reloads its data.\n");
    s.push_str(&to_toml(&RedisTable {
        redis: Redis {
            port: options.redis_port,
            maxmemory: "128mb",
            maxmemory_policy: "noeviction",
            appendonly: true,
            cluster_node_timeout_ms: 5000,
        },
    }));
    if options.topology == paddock_inventory::Topology::Sentinel {
        s.push_str("\n# One sentinel per box; a majority must agree the master is down.\n");
        s.push_str(&to_toml(&SentinelTable {
            sentinel: Sentinel {
                count: options.addresses.len(),
                port: 26379,
            },
        }));
    }
    s.push_str(&hosts_toml(&options.addresses, options.agent_port));
    s
}

/// `[[hosts]]` tables naming the boxes at `addresses` box1, box2, ...,
/// their agents on `agent_port`: the lab's, and other labs' of boxes.
pub fn hosts_toml(addresses: &[IpAddr], agent_port: u16) -> String {
    numbered_hosts_toml(1, addresses, agent_port)
}

/// `[[hosts]]` tables naming the boxes at `addresses` box`first`,
/// box`first + 1`, ...
fn numbered_hosts_toml(first: usize, addresses: &[IpAddr], agent_port: u16) -> String {
    #[derive(Serialize)]
    struct Host {
        name: String,
        address: IpAddr,
        agent_port: u16,
    }
    #[derive(Serialize)]
    struct Hosts {
        hosts: Vec<Host>,
    }
    let hosts = addresses
        .iter()
        .enumerate()
        .map(|(i, &address)| Host {
            name: format!("box{}", i + first),
            address,
            agent_port,
        })
        .collect();
    format!("\n{}", to_toml(&Hosts { hosts }))
}

/// Plain values (no paths, no maps): serializing them cannot fail.
fn to_toml(value: &impl Serialize) -> String {
    toml::to_string(value).unwrap_or_default()
}

/// A paddockd config file (agent.toml) as the lab and the end-to-end tests
/// write it. Serialized by the toml crate: a path with a quote or a
/// backslash is written as TOML needs.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfigFile {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// None: the agent's default (on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast_failover: Option<bool>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plaintext: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<AgentTlsFiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AgentConfigFile {
    /// The file's text, after a `# comment` line when one is given. Fails
    /// only for a path that is not UTF-8 (TOML strings are).
    pub fn to_toml(&self, comment: Option<&str>) -> Result<String, Error> {
        // A path that is not UTF-8 cannot be a TOML string.
        let body = toml::to_string(self)
            .map_err(|e| Error::Lab(format!("cannot write the agent's config: {e}")))?;
        Ok(match comment {
            Some(c) => format!("# {c}\n{body}"),
            None => body,
        })
    }
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

/// Starts the lab's agents and applies its inventory. A missing
/// redis-server is installed by the agents when apply asks them to, as on
/// any host (the one installer, `paddockd`'s).
pub async fn up(options: &LabOptions) -> Result<LabUp, Error> {
    check_addresses(&options.addresses)?;
    let dir = &options.dir;
    fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let dir = dir.canonicalize().map_err(Error::io(dir))?;
    let existing = if options.reset {
        reset(&dir, options.security).await?;
        None
    } else {
        check_same_lab(&dir, options)?
    };
    let mut state = read_state(&dir)?.unwrap_or(LabState { agents: Vec::new() });
    let binary = agent_binary();
    // The lab has its own CA, like any deployment (unless plaintext was
    // asked for by name).
    let certs = crate::certs::certs_dir(&inventory_path(&dir), "lab");
    let plaintext = options.security == Security::InsecurePlaintext;
    if !plaintext {
        crate::certs::init(&certs, "lab")?;
    }
    let transport =
        crate::client::Transport::for_deployment(&inventory_path(&dir), "lab", options.security)?;
    let mut started = Vec::new();
    let setup = AgentSetup {
        dir: &dir,
        binary: &binary,
        certs: &certs,
        plaintext,
        transport: &transport,
    };
    let outcome = start_agents(options, &setup, &mut state, &mut started).await;
    if let Err(e) = outcome {
        // Leave nothing of this attempt running: the agents started so far.
        let pids: Vec<u32> = started.clone();
        state.agents.retain(|a| !pids.contains(&a.pid));
        let _ = write_state(&dir, &state);
        let _ = tokio::task::spawn_blocking(move || stop_pids(&pids, "paddockd")).await;
        return Err(e);
    }
    finish_up(options, dir, existing, started.len()).await
}

/// What the lab's agents are started with.
struct AgentSetup<'a> {
    dir: &'a Path,
    binary: &'a Path,
    certs: &'a Path,
    plaintext: bool,
    transport: &'a crate::client::Transport,
}

/// Starts the agents that do not run yet, one at a time, each waited for;
/// `started` collects the pids of those it started (also on an error).
async fn start_agents(
    options: &LabOptions,
    setup: &AgentSetup<'_>,
    state: &mut LabState,
    started: &mut Vec<u32>,
) -> Result<(), Error> {
    let AgentSetup {
        dir,
        binary,
        certs,
        plaintext,
        transport,
    } = *setup;
    for (i, address) in options.addresses.iter().enumerate() {
        let host = format!("box{}", i + 1);
        let listen = SocketAddr::new(*address, options.agent_port);
        let config = dir.join(&host).join("agent.toml");
        if let Some(a) = state.agents.iter().find(|a| a.host == host)
            && a.listen == listen
            && agent_pid(a.pid, listen, &config).is_some()
        {
            continue;
        }
        let box_dir = dir.join(&host);
        let data_dir = box_dir.join("data");
        fs::create_dir_all(&data_dir).map_err(Error::io(&data_dir))?;
        let tls = if plaintext {
            None
        } else {
            let files = crate::certs::issue(certs, &host, *address)?;
            Some(AgentTlsFiles {
                ca: crate::certs::ca(certs).cert,
                cert: files.cert,
                key: files.key,
            })
        };
        let text = AgentConfigFile {
            listen,
            data_dir: data_dir.clone(),
            fast_failover: Some(options.fast_failover),
            insecure_plaintext: plaintext,
            tls,
        }
        .to_toml(Some(&format!("paddockd config for lab host {host}")))?;
        fs::write(&config, text).map_err(Error::io(&config))?;
        let log_path = box_dir.join("agent.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(&log_path))?;
        let log_err = log.try_clone().map_err(Error::io(&log_path))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(binary)
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
        started.push(child.id());
        write_state(dir, state)?;
        wait_for_agent(&host, listen, child, &log_path, log_start, transport).await?;
    }
    Ok(())
}

/// Writes the inventory (a new lab's, or the existing one with the added
/// boxes' hosts) and applies it, unless the added boxes would move
/// instances of the running deployment.
async fn finish_up(
    options: &LabOptions,
    dir: PathBuf,
    existing: Option<paddock_inventory::Inventory>,
    started: usize,
) -> Result<LabUp, Error> {
    let inventory = inventory_path(&dir);
    let mut added = Vec::new();
    let mut held_back = Vec::new();
    match &existing {
        None => {
            let text = inventory_text(options);
            fs::write(&inventory, text).map_err(Error::io(&inventory))?;
        }
        // An existing inventory is the operator's (perhaps edited): kept,
        // only the added boxes' hosts appended.
        Some(old) if options.addresses.len() > old.hosts.len() => {
            let text = fs::read_to_string(&inventory).map_err(Error::io(&inventory))?;
            let grown = grown_inventory_text(&text, old.hosts.len(), options);
            let new = paddock_inventory::parse(&inventory.display().to_string(), &grown)?;
            fs::write(&inventory, grown).map_err(Error::io(&inventory))?;
            added = new.hosts[old.hosts.len()..]
                .iter()
                .map(|h| h.name.clone())
                .collect();
            held_back = moved_instances(old, &new);
        }
        Some(_) => {}
    }
    let apply_report = if options.apply && held_back.is_empty() {
        Some(
            apply(
                &inventory,
                &ApplyOptions {
                    progress: options.progress,
                    security: options.security,
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
        added,
        held_back,
    })
}

/// Waits until the agent answers, or says why it will not: its exit is
/// noticed within a connection attempt (each bounded, as a port held by
/// something else may accept and never answer), and its own error line
/// (e.g. "cannot listen on ...: Address already in use") is quoted.
async fn wait_for_agent(
    host: &str,
    listen: SocketAddr,
    mut child: std::process::Child,
    log: &Path,
    log_start: u64,
    transport: &crate::client::Transport,
) -> Result<(), Error> {
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = fs::read(log).unwrap_or_default();
            let text = String::from_utf8_lossy(text.get(log_start as usize..).unwrap_or_default());
            let lines: Vec<&str> = text.lines().collect();
            // The agent prints why it exits as its last "paddockd: " line.
            let reason = lines
                .iter()
                .rev()
                .find(|l| l.starts_with("paddockd: "))
                .map(|l| format!(": {}", l.trim_start_matches("paddockd: ")))
                .unwrap_or_default();
            let tail = &lines[lines.len().saturating_sub(5)..];
            return Err(Error::Lab(format!(
                "the agent of {host} exited ({status}) before serving on {listen}{reason}\n  last lines of {}:\n  {}",
                log.display(),
                tail.join("\n  ")
            )));
        }
        let attempt = async {
            let agent = AgentClient::connect(host, listen, transport).await.ok()?;
            agent.facts().await.ok()
        };
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), attempt).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Lab(format!(
                "the agent of {host} did not answer on {listen} within {}s (stopped it); see {}",
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

/// The pid of the lab agent serving `listen` with `config`: the recorded
/// one if it still is that agent, else whichever process listens on
/// `listen` (an agent restarted by hand), if it is a paddockd run with
/// `config`. Nothing else is ever signalled.
fn agent_pid(recorded: u32, listen: SocketAddr, config: &Path) -> Option<u32> {
    if runs_config(recorded, config) {
        return Some(recorded);
    }
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| fs::read_to_string(t).ok())
        .find_map(|table| listening_inode(&table, listen))?;
    let pid = socket_owner(inode)?;
    runs_config(pid, config).then_some(pid)
}

/// The inode of the socket listening on `addr` in a /proc/net/tcp{,6} table.
fn listening_inode(table: &str, addr: SocketAddr) -> Option<u64> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        (*state == LISTEN && proc_net_addr(local)? == addr)
            .then(|| inode.parse().ok())
            .flatten()
    })
}

/// "0101007F:1D13" (the address as the kernel's u32 words in host byte
/// order, the port big-endian) as a socket address.
fn proc_net_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The process holding socket `inode` open.
fn socket_owner(inode: u64) -> Option<u32> {
    let target = PathBuf::from(format!("socket:[{inode}]"));
    fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        fs::read_dir(p.path().join("fd"))
            .ok()?
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l == target))
            .then_some(pid)
    })
}

/// Whether `pid` is a paddockd whose `--config` is `config`.
fn runs_config(pid: u32, config: &Path) -> bool {
    let Some(args) = crate::process::cmdline(pid) else {
        return false;
    };
    let is_paddockd = args
        .first()
        .is_some_and(|a| Path::new(a).file_name() == Some("paddockd".as_ref()));
    if !is_paddockd {
        return false;
    }
    let given = args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "--config" | "-c" => args.get(i + 1).cloned(),
        _ => a.strip_prefix("--config=").map(str::to_owned),
    });
    let Some(given) = given else {
        return false;
    };
    // A relative path is relative to the process's working directory.
    let given = match fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => cwd.join(given),
        Err(_) => PathBuf::from(given),
    };
    match (given.canonicalize(), config.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
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

impl std::fmt::Display for LabDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lab stopped: {} instance(s) and {} agent(s)",
            self.instances, self.agents
        )?;
        if self.leftover_redis > 0 {
            write!(
                f,
                ", plus {} leftover redis-server process(es)",
                self.leftover_redis
            )?;
        }
        Ok(())
    }
}

/// Stops every instance through its agent (agents leave Redis running when
/// they exit, by design), then the agents, then any redis-server whose
/// pidfile is in the lab and is still alive.
pub async fn down(dir: &Path, security: Security) -> Result<LabDown, Error> {
    let state = read_state(dir)?;
    // An agent restarted by hand has another pid than the recorded one.
    let live: Vec<LabAgent> = state
        .iter()
        .flat_map(|s| &s.agents)
        .filter_map(|a| {
            let pid = agent_pid(a.pid, a.listen, &a.dir.join("agent.toml"))?;
            Some(LabAgent { pid, ..a.clone() })
        })
        .collect();
    let transport = crate::client::Transport::for_deployment(&inventory_path(dir), "lab", security)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_sockets_from_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0101007F:1D13 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0201007F:1D13 0101007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
";
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(listening_inode(v4, addr("127.0.1.1:7443")), Some(4242));
        // Established, not listening.
        assert_eq!(listening_inode(v4, addr("127.0.1.2:7443")), None);
        assert_eq!(listening_inode(v4, addr("127.0.1.1:7444")), None);
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1D13 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inode(v6, addr("[::1]:7443")), Some(77));
    }

    #[test]
    fn agent_configs_quote_paths_with_quotes_and_backslashes() {
        let odd = PathBuf::from("/tmp/it's \"the\" lab\\box1");
        let text = AgentConfigFile {
            listen: "127.0.0.1:7443".parse().unwrap(),
            data_dir: odd.join("data"),
            fast_failover: Some(false),
            insecure_plaintext: false,
            tls: Some(AgentTlsFiles {
                ca: odd.join("ca.pem"),
                cert: odd.join("box1.pem"),
                key: odd.join("box1.key"),
            }),
        }
        .to_toml(Some("paddockd config for lab host box1"))
        .unwrap();
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            back["data_dir"].as_str(),
            Some("/tmp/it's \"the\" lab\\box1/data")
        );
        assert_eq!(
            back["tls"]["key"].as_str(),
            Some("/tmp/it's \"the\" lab\\box1/box1.key")
        );
        assert_eq!(back["listen"].as_str(), Some("127.0.0.1:7443"));
        assert_eq!(back["fast_failover"].as_bool(), Some(false));
        assert!(!back.contains_key("insecure_plaintext"));
        assert!(text.starts_with("# paddockd config for lab host box1\n"));
    }

    #[test]
    fn every_lab_inventory_parses_as_the_lab_asked() {
        for topology in [
            paddock_inventory::Topology::Cluster,
            paddock_inventory::Topology::Replication,
            paddock_inventory::Topology::Sentinel,
        ] {
            let mut options = LabOptions::new(PathBuf::from("lab"));
            options.topology = topology;
            options.agent_port = 7444;
            let text = inventory_text(&options);
            let inv = paddock_inventory::parse("inventory.toml", &text)
                .unwrap_or_else(|d| panic!("{d}\n{text}"));
            assert_eq!(inv.deployment.topology, topology);
            assert!(differences(&inv, &options).is_empty(), "{text}");
            assert_eq!(inv.hosts[2].name, "box3");
            assert_eq!(
                inv.sentinel.is_some(),
                topology == paddock_inventory::Topology::Sentinel
            );
        }
    }

    #[test]
    fn names_how_an_existing_lab_differs() {
        let mut options = LabOptions::new(PathBuf::from("lab"));
        let existing =
            paddock_inventory::parse("inventory.toml", &inventory_text(&options)).unwrap();
        assert!(differences(&existing, &options).is_empty());
        options.topology = paddock_inventory::Topology::Sentinel;
        options.agent_port = 7444;
        assert_eq!(
            differences(&existing, &options),
            [
                "it is a cluster lab, not sentinel",
                "its agents listen on port 7443, not 7444"
            ]
        );
        let mut options = LabOptions::new(PathBuf::from("lab"));
        options.addresses.pop();
        options.redis_port = 7100;
        assert_eq!(
            differences(&existing, &options),
            [
                "its boxes are at 127.0.1.1,127.0.1.2,127.0.1.3, not 127.0.1.1,127.0.1.2: box3 (127.0.1.3) would be removed, and lab up does not remove boxes",
                "its Redis port is 7000, not 7100"
            ]
        );
    }

    fn ips(list: &str) -> Vec<IpAddr> {
        list.split(',').map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_longer_list_adds_boxes_and_any_other_is_refused_naming_the_box() {
        let mut options = LabOptions::new(PathBuf::from("lab"));
        options.addresses = ips("127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4");
        let four = paddock_inventory::parse("inventory.toml", &inventory_text(&options)).unwrap();
        let cases: [(&str, &str, &[&str]); 6] = [
            ("the same", "127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4", &[]),
            (
                "one more",
                "127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4,127.0.1.5",
                &[],
            ),
            (
                "three more",
                "127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4,127.0.1.5,127.0.1.6,127.0.1.7",
                &[],
            ),
            (
                "one fewer",
                "127.0.1.1,127.0.1.2,127.0.1.3",
                &["box4 (127.0.1.4) would be removed, and lab up does not remove boxes"],
            ),
            (
                "one changed",
                "127.0.1.1,127.0.1.9,127.0.1.3,127.0.1.4",
                &["box2 would move from 127.0.1.2 to 127.0.1.9"],
            ),
            (
                "reordered and longer",
                "127.0.1.2,127.0.1.1,127.0.1.3,127.0.1.4,127.0.1.5",
                &[
                    "box1 would move from 127.0.1.1 to 127.0.1.2",
                    "box2 would move from 127.0.1.2 to 127.0.1.1",
                ],
            ),
        ];
        for (name, asked, named) in cases {
            let mut options = options.clone();
            options.addresses = ips(asked);
            let diff = differences(&four, &options);
            if named.is_empty() {
                assert!(diff.is_empty(), "{name}: {diff:?}");
            } else {
                assert_eq!(diff.len(), 1, "{name}: {diff:?}");
                assert!(diff[0].ends_with(&named.join(", ")), "{name}: {}", diff[0]);
            }
        }
    }

    #[test]
    fn addresses_are_three_or_more_distinct_ones() {
        let cases = [
            ("127.0.1.1", Some("--addresses needs three or more")),
            (
                "127.0.1.1,127.0.1.2",
                Some("--addresses needs three or more"),
            ),
            (
                "127.0.1.1,127.0.1.2,127.0.1.1",
                Some("--addresses lists 127.0.1.1 twice"),
            ),
            ("127.0.1.1,127.0.1.2,127.0.1.3", None),
            ("127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4", None),
        ];
        for (list, refused) in cases {
            match (check_addresses(&ips(list)), refused) {
                (Ok(()), None) => {}
                (Err(e), Some(text)) => {
                    assert_eq!(e.exit(), crate::exit::Exit::Usage, "{list}");
                    assert!(e.to_string().contains(text), "{list}: {e}");
                }
                (got, _) => panic!("{list}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_grown_inventory_keeps_the_existing_text_and_shape() {
        use paddock_inventory::Topology;
        for topology in [Topology::Cluster, Topology::Replication, Topology::Sentinel] {
            let mut options = LabOptions::new(PathBuf::from("lab"));
            options.topology = topology;
            // An operator's edit, kept.
            let text =
                inventory_text(&options).replace("maxmemory = \"128mb\"", "maxmemory = \"64mb\"");
            let old = paddock_inventory::parse("inventory.toml", &text).unwrap();
            options.addresses = ips("127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4,127.0.1.5");
            let grown = grown_inventory_text(&text, 3, &options);
            assert!(grown.starts_with(&text), "{grown}");
            let new = paddock_inventory::parse("inventory.toml", &grown)
                .unwrap_or_else(|d| panic!("{d}\n{grown}"));
            let names: Vec<&str> = new.hosts.iter().map(|h| h.name.as_str()).collect();
            assert_eq!(names, ["box1", "box2", "box3", "box4", "box5"]);
            assert_eq!(new.hosts[4].address, options.addresses[4]);
            assert_eq!(new.hosts[4].agent_port, 7443);
            assert_eq!(new.deployment.masters, old.deployment.masters);
            assert_eq!(
                new.deployment.replicas_per_master,
                old.deployment.replicas_per_master
            );
            assert_eq!(
                new.sentinel.as_ref().map(|s| s.count),
                old.sentinel.as_ref().map(|s| s.count)
            );
            assert!(differences(&new, &options).is_empty());
        }
    }

    #[test]
    fn names_the_instances_added_boxes_would_move() {
        use paddock_inventory::Topology;
        let cases: [(Topology, &[&str]); 3] = [
            // 3 masters x 1 replica: a fresh placement would put replicas
            // on the fourth box instead of box2 and box1; the placement of
            // a running cluster keeps them.
            (Topology::Cluster, &[][..]),
            (Topology::Replication, &[][..]),
            (Topology::Sentinel, &[][..]),
        ];
        for (topology, moved) in cases {
            let mut options = LabOptions::new(PathBuf::from("lab"));
            options.topology = topology;
            let text = inventory_text(&options);
            let old = paddock_inventory::parse("inventory.toml", &text).unwrap();
            assert!(moved_instances(&old, &old).is_empty(), "{topology}");
            options.addresses = ips("127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4");
            let new = paddock_inventory::parse(
                "inventory.toml",
                &grown_inventory_text(&text, 3, &options),
            )
            .unwrap();
            assert_eq!(moved_instances(&old, &new), moved, "{topology}");
        }
    }
}
