//! An inventory turned into targets: which agent runs which instance with
//! which spec, and the connections to those agents.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::join_all;
use paddock_inventory::{Inventory, Placement, Role, Topology};

use crate::Error;
use crate::client::{
    AclUser, AgentClient, Facts, Group, InstanceSpec, Members, Peer, RedisMode, Reply,
    SentinelSpec, Supervision,
};
use crate::client::{HeldLease, LeaseId, LockOutcome};
use crate::cluster::Member;
use crate::problem::HostProblem;
use crate::secrets;

/// One instance the inventory wants.
#[derive(Clone)]
pub struct Target {
    pub host: usize,
    pub host_name: String,
    pub instance: String,
    pub ip: IpAddr,
    pub port: u16,
    pub shard: u32,
    /// The role placement gave it; after a failover the live role may differ.
    pub placed_role: Role,
    pub spec: InstanceSpec,
}

impl Target {
    pub fn label(&self) -> String {
        format!("{}:{}", self.host_name, self.instance)
    }
}

pub struct Deployment {
    pub inventory_path: PathBuf,
    pub inventory: Inventory,
    pub placement: Placement,
    pub password_path: PathBuf,
    /// None until the first apply generates it.
    pub password: Option<String>,
    /// Each ACL user's generated password (None before the first apply).
    pub user_passwords: Vec<Option<String>>,
    pub transport: crate::client::Transport,
}

impl Deployment {
    /// Reads and validates the inventory. `create_password` on apply only.
    pub fn load(
        path: &Path,
        create_password: bool,
        security: crate::client::Security,
    ) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::InventoryFile {
            path: path.to_owned(),
            source,
        })?;
        let inventory = paddock_inventory::parse_bytes(&path.display().to_string(), &bytes)?;
        let placement = paddock_inventory::place(&inventory);
        let password_path = secrets::password_path(
            path,
            &inventory.deployment.name,
            inventory.deployment.password_file.as_deref(),
        );
        let password = secrets::load_or_create(&password_path, create_password)?;
        let user_passwords = user_passwords(path, &inventory, create_password)?;
        let transport =
            crate::client::Transport::for_deployment(path, &inventory.deployment.name, security)?;
        Ok(Deployment {
            user_passwords,
            transport,
            inventory_path: path.to_owned(),
            inventory,
            placement,
            password_path,
            password,
        })
    }

    /// Creates the passwords of ACL users the inventory declares for the
    /// first time.
    pub fn create_user_passwords(&mut self) -> Result<(), Error> {
        self.user_passwords = user_passwords(&self.inventory_path, &self.inventory, true)?;
        Ok(())
    }

    pub fn agent_addr(&self, host: usize) -> SocketAddr {
        let h = &self.inventory.hosts[host];
        SocketAddr::new(h.address, h.agent_port)
    }

    /// The redis-server instances with their specs, in placement order
    /// (masters first). Sentinels are in [`Deployment::sentinels`].
    pub fn targets(&self) -> Vec<Target> {
        self.instances(|p| p.is_redis(), None)
    }

    /// The sentinels (sentinel topology; empty otherwise), each seeded with
    /// `master` as the master to monitor.
    pub fn sentinels(&self, master: Peer) -> Vec<Target> {
        self.instances(|p| !p.is_redis(), Some(master))
    }

    /// Where placement put the master (before any failover).
    pub fn placed_master(&self) -> Peer {
        let p = self
            .placement
            .instances
            .iter()
            .find(|p| p.role == Role::Master)
            .unwrap_or(&self.placement.instances[0]);
        self.peer(p)
    }

    fn peer(&self, p: &paddock_inventory::PlacedInstance) -> Peer {
        Peer {
            address: self.inventory.hosts[p.host].address,
            port: p.port,
        }
    }

    /// The running instances a change of shape removes
    /// ([`paddock_inventory::Placement::leaving`]), as targets: drained,
    /// stopped and forgotten by apply. Their host may be one the inventory
    /// no longer lists (added by [`crate::engine::shape::keep_placement`]).
    pub fn leaving(&self) -> Vec<Target> {
        self.build(self.placement.leaving.iter(), None)
    }

    fn instances(
        &self,
        filter: impl Fn(&paddock_inventory::PlacedInstance) -> bool,
        master: Option<Peer>,
    ) -> Vec<Target> {
        self.build(
            self.placement.instances.iter().filter(|p| filter(p)),
            master,
        )
    }

    fn build<'p>(
        &self,
        placed: impl Iterator<Item = &'p paddock_inventory::PlacedInstance>,
        master: Option<Peer>,
    ) -> Vec<Target> {
        let inv = &self.inventory;
        // Instances that leave are members until they are removed: the
        // guard lets slots move to and from members only, and FORGET them.
        // Sorted, so a spec does not change with the shards' numbering.
        let mut redis: Vec<Peer> = (self.placement.instances.iter())
            .chain(&self.placement.leaving)
            .filter(|p| p.is_redis())
            .map(|p| self.peer(p))
            .collect();
        if !self.placement.leaving.is_empty() || inv.deployment.topology == Topology::Cluster {
            redis.sort_by_key(|p| (p.address, p.port));
            redis.dedup();
        }
        let members = Members {
            redis,
            sentinels: self.placement.sentinels().map(|p| self.peer(p)).collect(),
        };
        placed
            .map(|p| {
                let host = &inv.hosts[p.host];
                Target {
                    host: p.host,
                    host_name: host.name.clone(),
                    instance: p.name.clone(),
                    ip: host.address,
                    port: p.port,
                    shard: p.shard,
                    placed_role: p.role,
                    spec: self.spec(p, master, &members),
                }
            })
            .collect()
    }

    /// The inventory's wishes for one placed instance, as the spec its agent
    /// gets: the one place inventory settings become spec fields.
    fn spec(
        &self,
        p: &paddock_inventory::PlacedInstance,
        master: Option<Peer>,
        members: &Members,
    ) -> InstanceSpec {
        let inv = &self.inventory;
        let topology = inv.deployment.topology;
        // Before the first apply there is no password yet; a placeholder lets
        // plan compare specs (every instance then shows as changing anyway).
        let placeholder = || "0".repeat(64);
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        InstanceSpec {
            name: p.name.clone(),
            deployment: inv.deployment.name.clone(),
            address: inv.hosts[p.host].address,
            port: p.port,
            mode: match (topology, p.role) {
                (_, Role::Sentinel) => RedisMode::Sentinel,
                (Topology::Cluster, _) => RedisMode::Cluster,
                _ => RedisMode::Standalone,
            },
            maxmemory_bytes: inv.redis.maxmemory_bytes.unwrap_or(0),
            maxmemory_policy: inv.redis.maxmemory_policy,
            appendonly: inv.redis.appendonly,
            rdb_snapshots: inv.redis.rdb_snapshots,
            cluster_node_timeout: ms(inv.redis.cluster_node_timeout_ms),
            min_replicas_to_write: inv.redis.min_replicas_to_write,
            min_replicas_max_lag: Duration::from_secs(u64::from(inv.redis.min_replicas_max_lag_s)),
            password: self.password.clone().unwrap_or_else(placeholder),
            supervision: Supervision {
                start_timeout: ms(inv.supervision.start_timeout_ms),
                start_retries: inv.supervision.start_retries,
                backoff_max: ms(inv.supervision.backoff_max_ms),
                stop_timeout: ms(inv.supervision.stop_timeout_ms),
            },
            users: inv
                .users
                .iter()
                .zip(&self.user_passwords)
                .map(|(u, password)| AclUser {
                    name: u.name.clone(),
                    password: password.clone().unwrap_or_else(placeholder),
                    rules: user_rules(&u.rules, topology),
                })
                .collect(),
            sentinel: match (&inv.sentinel, master) {
                (Some(s), Some(master)) if p.role == Role::Sentinel => Some(SentinelSpec {
                    master_name: inv.deployment.name.clone(),
                    master,
                    quorum: s.quorum,
                    down_after: ms(s.down_after_ms),
                    failover_timeout: ms(s.failover_timeout_ms),
                }),
                _ => None,
            },
            group: (topology != Topology::Cluster && p.is_redis()).then(|| Group {
                peers: self
                    .placement
                    .instances
                    .iter()
                    .filter(|o| o.is_redis() && (o.host, &o.name) != (p.host, &p.name))
                    .map(|o| self.peer(o))
                    .collect(),
                sentinels: members.sentinels.clone(),
                master_name: inv.deployment.name.clone(),
            }),
            members: members.clone(),
        }
    }
}

/// A user's rules as written, plus, in a cluster, what every cluster client
/// needs to find and follow slots (appended last, so no rule of the
/// inventory takes them away).
fn user_rules(rules: &[String], topology: Topology) -> Vec<String> {
    let mut out = rules.to_vec();
    if topology == Topology::Cluster {
        for r in [
            "+cluster|slots",
            "+cluster|shards",
            "+cluster|nodes",
            "+asking",
            "+readonly",
            "+ping",
        ] {
            out.push(r.to_owned());
        }
    }
    out
}

/// `--limit HOST,...`: which hosts a command acts on (every host when
/// empty). Each entry is a host's name or address; an unknown one is an
/// error listing the known names.
pub fn limit_hosts(inventory: &Inventory, limit: &[String]) -> Result<Vec<bool>, Error> {
    if limit.is_empty() {
        return Ok(vec![true; inventory.hosts.len()]);
    }
    let mut picked = vec![false; inventory.hosts.len()];
    for want in limit {
        let want = want.trim();
        match inventory
            .hosts
            .iter()
            .position(|h| h.name == want || h.address.to_string() == want)
        {
            Some(h) => picked[h] = true,
            None => {
                return Err(Error::Usage(format!(
                    "--limit: no host {want:?} in the inventory; its hosts are {}",
                    inventory
                        .hosts
                        .iter()
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(picked)
}

pub use paddock_knowledge::MIN_REDIS;

/// What a host's facts say about its redis-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisCheck {
    Usable,
    /// None found and the agent config names none of its own: the agent
    /// may install Debian's package.
    Install,
    /// The agent config's `redis_server` names a binary that is not there.
    ConfiguredMissing {
        configured: String,
    },
    TooOld {
        version: String,
        path: String,
    },
    /// It is there but `--version` says nothing we can read.
    UnknownVersion {
        path: String,
    },
}

/// Pure: what to do about a host's redis-server.
pub fn redis_check(f: &Facts) -> RedisCheck {
    let Some(version) = &f.redis_version else {
        // An old agent does not report its config: treat as the default.
        let configured = &f.redis_server_configured;
        return if configured.as_os_str().is_empty() || configured == Path::new("redis-server") {
            match &f.redis_server_path {
                Some(path) => RedisCheck::UnknownVersion {
                    path: path.display().to_string(),
                },
                None => RedisCheck::Install,
            }
        } else {
            match &f.redis_server_path {
                Some(path) => RedisCheck::UnknownVersion {
                    path: path.display().to_string(),
                },
                None => RedisCheck::ConfiguredMissing {
                    configured: configured.display().to_string(),
                },
            }
        };
    };
    let path = f
        .redis_server_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) if (major, minor) >= MIN_REDIS => RedisCheck::Usable,
        (Some(Ok(_)), Some(Ok(_))) => RedisCheck::TooOld {
            version: version.clone(),
            path,
        },
        _ => RedisCheck::UnknownVersion { path },
    }
}

impl RedisCheck {
    /// Why this host cannot run Redis for us, and what to do; None when
    /// it can (or when apply will install it).
    pub fn problem(&self, host: &str) -> Option<HostProblem> {
        let host = host.to_owned();
        match self {
            RedisCheck::Usable | RedisCheck::Install => None,
            RedisCheck::ConfiguredMissing { configured } => {
                Some(HostProblem::RedisConfiguredMissing {
                    host,
                    configured: configured.clone(),
                })
            }
            RedisCheck::TooOld { version, path } => Some(HostProblem::RedisTooOld {
                host,
                version: version.clone(),
                path: path.clone(),
            }),
            RedisCheck::UnknownVersion { path } => Some(HostProblem::RedisUnknownVersion {
                host,
                path: path.clone(),
            }),
        }
    }
}

/// What keeps the hosts from running the placement: redis-server missing,
/// misconfigured or too old, or more maxmemory placed on a host than it
/// has memory. Pure, for testing. Hosts without facts (left alone by
/// `--limit`, or unreachable) are not checked.
pub fn host_problems(deployment: &Deployment, facts: &[Option<Facts>]) -> Vec<HostProblem> {
    let inv = &deployment.inventory;
    let mut problems = Vec::new();
    for (h, (host, f)) in inv.hosts.iter().zip(facts).enumerate() {
        let Some(f) = f else { continue };
        match redis_check(f) {
            RedisCheck::Install => problems.push(HostProblem::RedisNotInstalled {
                host: host.name.clone(),
                looked_for: f
                    .redis_server_path
                    .as_ref()
                    .map(|p| p.display().to_string()),
            }),
            check => problems.extend(check.problem(&host.name)),
        }
        if let Some(need) = deployment.placement.maxmemory_on_host(&inv.redis, h)
            && need > f.memory_total_bytes
        {
            let count = deployment
                .placement
                .on_host(h)
                .filter(|i| i.is_redis())
                .count();
            problems.push(HostProblem::NotEnoughMemory {
                host: host.name.clone(),
                instances: count,
                maxmemory_mib: inv.redis.maxmemory_bytes.unwrap_or(0) >> 20,
                need_mib: need >> 20,
                has_mib: f.memory_total_bytes >> 20,
            });
        }
    }
    problems
}

/// The member the others replicate (replication and sentinel topologies),
/// as an address: where the master is now, whatever placement chose.
pub fn followed_master(
    targets: &[Target],
    observed: &[Option<crate::cluster::Observation>],
) -> Option<Peer> {
    crate::cluster::replication_master(&members(targets), observed).map(|i| Peer {
        address: targets[i].ip,
        port: targets[i].port,
    })
}

pub fn members(targets: &[Target]) -> Vec<Member> {
    targets
        .iter()
        .map(|t| Member {
            cluster: t.spec.mode == RedisMode::Cluster,
            label: t.label(),
            ip: t.ip,
            port: t.port,
            shard: t.shard,
        })
        .collect()
}

fn user_passwords(
    path: &Path,
    inventory: &Inventory,
    create: bool,
) -> Result<Vec<Option<String>>, Error> {
    inventory
        .users
        .iter()
        .map(|u| {
            let p = secrets::user_password_path(path, &inventory.deployment.name, &u.name);
            secrets::load_or_create(&p, create)
        })
        .collect()
}

/// How long a lease lasts unless renewed: a controller that died (or lost
/// its network) blocks the deployment for at most this long.
pub const LOCK_TTL_MS: u32 = 30_000;
/// How often a running controller renews its lease.
pub const LOCK_RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Pure: whether a lease held by `held` was left by a controller that no
/// longer runs, so `me` may end it rather than wait for it to expire. Only
/// when both run on this machine (same machine id) in the same PID
/// namespace can the holder's pid be looked up here (`holder_alive`);
/// anything else (another machine with the same host name, a container,
/// `unshare --pid`, an older controller that sent no identity) waits for
/// the TTL.
pub fn abandoned(held: &HeldLease, me: &LeaseId, holder_alive: bool) -> bool {
    !held.machine_id.is_empty()
        && held.machine_id == me.machine_id
        && held.pid_namespace != 0
        && held.pid_namespace == me.pid_namespace
        && held.pid != 0
        && !holder_alive
}

/// This controller's lease identity: a fresh random token, user@host pid N
/// for people, the machine id and the PID namespace's inode.
pub fn lock_holder() -> LeaseId {
    use std::os::unix::fs::MetadataExt;
    let user =
        std::env::var("USER").unwrap_or_else(|_| format!("uid {}", nix::unistd::Uid::effective()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut holder = format!("{user}@{} pid {}", host.trim(), std::process::id());
    holder.retain(|c| c.is_ascii_graphic() || c == ' ');
    holder.truncate(128);
    let mut machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    machine_id.retain(|c| c.is_ascii_alphanumeric());
    machine_id.truncate(64);
    LeaseId {
        token: format!("{:032x}", rand::random::<u128>()),
        holder,
        machine_id,
        pid_namespace: std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino()),
        pid: std::process::id(),
    }
}

/// Connections to every host's agent, dialled in parallel.
pub struct Fleet {
    agents: Vec<Result<AgentClient, String>>,
    /// Renews our lease while we hold it.
    renewal: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Fleet {
    /// Dials every agent; unreachable ones are kept as their error message
    /// (status shows them).
    pub async fn connect(deployment: &Deployment) -> Fleet {
        Fleet::connect_within(deployment, crate::client::CONNECT_TIMEOUT, None).await
    }

    /// Dials every agent within `connect`; each call then fails after
    /// `deadline` (None: the client's default).
    pub async fn connect_within(
        deployment: &Deployment,
        connect: std::time::Duration,
        deadline: Option<std::time::Duration>,
    ) -> Fleet {
        let dials = deployment.inventory.hosts.iter().enumerate().map(|(i, h)| {
            AgentClient::connect_within(
                &h.name,
                deployment.agent_addr(i),
                &deployment.transport,
                connect,
            )
        });
        Fleet {
            agents: join_all(dials)
                .await
                .into_iter()
                .map(|r| match (r, deadline) {
                    (Ok(a), Some(d)) => Ok(a.with_deadline(d)),
                    (r, _) => r.map_err(|e| e.to_string()),
                })
                .collect(),
            renewal: Default::default(),
        }
    }

    /// Whether host `h`'s agent answered the dial.
    pub fn reachable(&self, host: usize) -> bool {
        self.agents[host].is_ok()
    }

    /// Dials every agent and fails with the first that cannot be reached.
    pub async fn connect_all(deployment: &Deployment) -> Result<Fleet, Error> {
        let fleet = Fleet::connect(deployment).await;
        if let Some(Err(message)) = fleet.agents.iter().find(|a| a.is_err()) {
            return Err(Error::AgentDown(message.clone()));
        }
        Ok(fleet)
    }

    pub fn agent(&self, host: usize) -> Result<&AgentClient, Error> {
        self.agents[host]
            .as_ref()
            .map_err(|message| Error::AgentDown(message.clone()))
    }

    /// Fills in what the other nodes report about the instances of hosts
    /// whose agent did not answer the dial (`cluster::hearsay`): a healthy
    /// Redis behind a dead agent still serves, and counts as serving.
    pub fn with_hearsay(
        &self,
        targets: &[Target],
        own: Vec<Option<crate::cluster::Observation>>,
    ) -> Vec<Option<crate::cluster::Observation>> {
        let all = members(targets);
        (0..targets.len())
            .map(|i| match &own[i] {
                None if !self.reachable(targets[i].host) => crate::cluster::hearsay(&all, &own, i),
                o => o.clone(),
            })
            .collect()
    }

    pub fn agent_error(&self, host: usize) -> Option<&str> {
        self.agents[host].as_ref().err().map(String::as_str)
    }

    /// Takes the deployment's lease on every agent, in host order (so two
    /// controllers cannot each hold part of it), and renews it every
    /// [`LOCK_RENEW_EVERY`] until [`Fleet::unlock`]. On refusal, releases
    /// what it took and says who holds it.
    /// Hosts whose agent is unreachable are skipped: nothing is changed
    /// there either.
    pub async fn lock(&self, deployment: &str, me: &LeaseId) -> Result<(), Error> {
        for h in (0..self.agents.len()).filter(|&h| self.reachable(h)) {
            let mut outcome = self.agent(h)?.lock(deployment, me, LOCK_TTL_MS).await?;
            if let LockOutcome::Held(other) = &outcome
                && abandoned(other, me, crate::process::process_is(other.pid, "paddock"))
            {
                // A controller of this machine and namespace died
                // mid-operation (killed, or its terminal closed): its lease
                // is ours to end, rather than waiting for it to expire.
                self.agent(h)?.unlock(deployment, me, true).await?;
                outcome = self.agent(h)?.lock(deployment, me, LOCK_TTL_MS).await?;
            }
            if let LockOutcome::Held(other) = outcome {
                self.unlock(deployment, me).await;
                return Err(Error::Locked {
                    deployment: deployment.to_owned(),
                    holder: other.holder,
                    since: crate::utc::format_utc(other.since_unix_ms),
                    ttl_s: LOCK_TTL_MS / 1000,
                });
            }
        }
        let agents: Vec<AgentClient> = self.agents.iter().flatten().cloned().collect();
        let (deployment, me) = (deployment.to_owned(), me.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOCK_RENEW_EVERY).await;
                for a in &agents {
                    // A failed renewal is retried at the next tick; the TTL
                    // is three ticks long.
                    let _ = a.lock(&deployment, &me, LOCK_TTL_MS).await;
                }
            }
        });
        if let Some(old) = self
            .renewal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(renew)
        {
            old.abort();
        }
        Ok(())
    }

    pub async fn unlock(&self, deployment: &str, me: &LeaseId) {
        if let Some(renew) = self
            .renewal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            renew.abort();
        }
        for a in self.agents.iter().flatten() {
            let _ = a.unlock(deployment, me, false).await;
        }
    }

    /// Breaks the deployment's lease on every agent, whoever holds it:
    /// per host, the lease broken (None: there was none) or why not.
    pub async fn break_lease(
        &self,
        deployment: &Deployment,
    ) -> Vec<(String, Result<Option<HeldLease>, String>)> {
        let me = lock_holder();
        let deployment_name = &deployment.inventory.deployment.name;
        let mut out = Vec::new();
        for (h, a) in self.agents.iter().enumerate() {
            let name = deployment.inventory.hosts[h].name.clone();
            out.push(match a {
                Err(e) => (name, Err(e.clone())),
                Ok(a) => (
                    name,
                    a.unlock(deployment_name, &me, true)
                        .await
                        .map(|(_, broken)| broken)
                        .map_err(|e| e.to_string()),
                ),
            });
        }
        out
    }

    /// Runs a command pipeline on a target's instance through its agent.
    pub async fn redis(&self, t: &Target, commands: &[&[&str]]) -> Result<Vec<Reply>, Error> {
        self.agent(t.host)?.redis(&t.instance, commands).await
    }

    /// As [`Fleet::redis`], for reads: within [`crate::client::READ_TIMEOUT`].
    pub async fn read(&self, t: &Target, commands: &[&[&str]]) -> Result<Vec<Reply>, Error> {
        self.agent(t.host)?
            .with_deadline(crate::client::READ_TIMEOUT)
            .redis(&t.instance, commands)
            .await
    }
}

/// Starts one instance; an error names why it did not stay up.
pub async fn start_instance(fleet: &Fleet, t: &Target) -> Result<(), Error> {
    let status = fleet.agent(t.host)?.start(&t.instance).await?;
    if status.state != crate::client::InstanceState::Running {
        return Err(Error::Agent {
            host: t.host_name.clone(),
            message: format!(
                "{} did not start: {} ({}); see `paddock logs -i INVENTORY {} {}`",
                t.instance,
                status.state.as_str(),
                status
                    .last_exit
                    .unwrap_or_else(|| "no exit recorded".into()),
                t.host_name,
                t.instance
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(maxmemory: &str) -> Deployment {
        let text = format!(
            "[deployment]\nname = \"t\"\ntopology = \"cluster\"\n[redis]\nmaxmemory = \"{maxmemory}\"\n\
             [[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[hosts]]\nname = \"b\"\naddress = \"10.0.0.2\"\n\
             [[hosts]]\nname = \"c\"\naddress = \"10.0.0.3\"\n"
        );
        let inventory = paddock_inventory::parse("t.toml", &text).unwrap();
        Deployment {
            inventory_path: PathBuf::from("t.toml"),
            placement: paddock_inventory::place(&inventory),
            inventory,
            password_path: PathBuf::from("pw"),
            password: None,
            user_passwords: Vec::new(),
            transport: crate::client::Transport::Plaintext,
        }
    }

    fn facts(memory_mib: u64, redis: bool) -> Facts {
        Facts {
            hostname: "h".into(),
            os: String::new(),
            kernel: String::new(),
            cpus: 2,
            memory_total_bytes: memory_mib << 20,
            memory_available_bytes: memory_mib << 20,
            data_dir_free_bytes: 0,
            redis_server_path: None,
            redis_version: redis.then(|| "7.0.15".into()),
            agent_version: "0.1.0".into(),
            redis_server_configured: "redis-server".into(),
        }
    }

    #[test]
    fn judges_the_hosts_redis_server() {
        let f = |configured: &str, path: Option<&str>, version: Option<&str>| Facts {
            redis_server_configured: configured.into(),
            redis_server_path: path.map(Into::into),
            redis_version: version.map(Into::into),
            ..facts(4096, false)
        };
        let table = [
            (
                f(
                    "redis-server",
                    Some("/usr/bin/redis-server"),
                    Some("7.0.15"),
                ),
                RedisCheck::Usable,
            ),
            (
                f("redis-server", Some("/usr/bin/redis-server"), Some("7.2.4")),
                RedisCheck::Usable,
            ),
            (
                f(
                    "/opt/valkey/bin/valkey-server",
                    Some("/opt/valkey/bin/valkey-server"),
                    Some("9.0.0"),
                ),
                RedisCheck::Usable,
            ),
            (f("redis-server", None, None), RedisCheck::Install),
            (f("", None, None), RedisCheck::Install),
            (
                f("/opt/redis/bin/redis-server", None, None),
                RedisCheck::ConfiguredMissing {
                    configured: "/opt/redis/bin/redis-server".into(),
                },
            ),
            (
                f(
                    "redis-server",
                    Some("/usr/bin/redis-server"),
                    Some("6.0.16"),
                ),
                RedisCheck::TooOld {
                    version: "6.0.16".into(),
                    path: "/usr/bin/redis-server".into(),
                },
            ),
            (
                f(
                    "redis-server",
                    Some("/usr/bin/redis-server"),
                    Some("6.2.14"),
                ),
                RedisCheck::TooOld {
                    version: "6.2.14".into(),
                    path: "/usr/bin/redis-server".into(),
                },
            ),
            (
                f("redis-server", Some("/usr/bin/redis-server"), None),
                RedisCheck::UnknownVersion {
                    path: "/usr/bin/redis-server".into(),
                },
            ),
        ];
        for (facts, want) in table {
            assert_eq!(redis_check(&facts), want, "{facts:?}");
        }
        let old = RedisCheck::TooOld {
            version: "6.0.16".into(),
            path: "/usr/bin/redis-server".into(),
        };
        assert!(old.problem("b").unwrap().to_string().contains("host b: redis-server 6.0.16 (/usr/bin/redis-server) is too old: Paddock needs Redis 7.0 or later"));
        let missing = RedisCheck::ConfiguredMissing {
            configured: "/opt/x".into(),
        };
        assert!(
            missing
                .problem("c")
                .unwrap()
                .to_string()
                .contains("redis_server = \"/opt/x\" does not exist")
        );
    }

    #[test]
    fn refuses_more_maxmemory_than_a_host_has_naming_host_and_numbers() {
        let d = deployment("1gb");
        let ok = [facts(4096, true), facts(4096, true), facts(4096, true)].map(Some);
        assert_eq!(host_problems(&d, &ok), Vec::<HostProblem>::new());
        let small = [facts(4096, true), facts(1536, true), facts(4096, true)].map(Some);
        let got: Vec<String> = host_problems(&d, &small)
            .iter()
            .map(|p| format!("  - {p}"))
            .collect();
        assert_eq!(
            got,
            vec![
                "  - host b: 2 instance(s) x maxmemory 1024 MiB = 2048 MiB, but the host has 1536 MiB of memory; lower [redis] maxmemory or add hosts"
            ]
        );
    }

    #[test]
    fn only_a_dead_controller_of_this_machine_and_namespace_abandons_its_lease() {
        let me = LeaseId {
            token: "0".repeat(32),
            holder: "me@ws pid 10".into(),
            machine_id: "m1".into(),
            pid_namespace: 4026531836,
            pid: 10,
        };
        let held = |machine_id: &str, pid_namespace: u64, pid: u32| HeldLease {
            holder: "other@ws pid 42".into(),
            since_unix_ms: 0,
            machine_id: machine_id.into(),
            pid_namespace,
            pid,
        };
        // (holder, holder alive?, abandoned?)
        let table = [
            (held("m1", 4026531836, 42), false, true),
            (held("m1", 4026531836, 42), true, false),
            // Same host name, another machine: its pid means nothing here.
            (held("m2", 4026531836, 42), false, false),
            // Another PID namespace (unshare --pid, a container).
            (held("m1", 4026532000, 42), false, false),
            // A holder that sent no identity.
            (held("", 0, 42), false, false),
            (held("m1", 0, 42), false, false),
            (held("m1", 4026531836, 0), false, false),
        ];
        for (h, alive, want) in table {
            assert_eq!(abandoned(&h, &me, alive), want, "{h:?} alive={alive}");
        }
        let mine = lock_holder();
        assert_eq!(mine.token.len(), 32);
        assert_ne!(mine.token, lock_holder().token, "a fresh token each time");
        assert_ne!(mine.pid_namespace, 0);
    }

    #[test]
    fn limit_picks_hosts_by_name_or_address_and_names_unknown_ones() {
        let d = deployment("64mb");
        let inv = &d.inventory;
        assert_eq!(limit_hosts(inv, &[]).unwrap(), vec![true, true, true]);
        assert_eq!(
            limit_hosts(inv, &["a".into(), "10.0.0.3".into()]).unwrap(),
            vec![true, false, true]
        );
        let e = limit_hosts(inv, &["d".into()]).unwrap_err().to_string();
        assert!(e.contains("no host \"d\"") && e.contains("a, b, c"), "{e}");
    }

    #[test]
    fn reports_a_host_without_redis() {
        let d = deployment("64mb");
        // b: left alone (--limit, or unreachable), so not checked.
        let f = [Some(facts(4096, true)), None, Some(facts(4096, false))];
        let p: Vec<String> = host_problems(&d, &f)
            .iter()
            .map(|p| format!("  - {p}"))
            .collect();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("  - host c: redis-server is not installed"),
            "{p:?}"
        );
    }
}
