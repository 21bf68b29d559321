//! An inventory turned into targets: which agent runs which instance with
//! which spec, and the connections to those agents.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use futures::future::join_all;
use paddock_inventory::{Inventory, Placement, Role, Topology};

use crate::Error;
use crate::client::{
    AgentClient, Facts, Group, InstanceSpec, Peer, RedisMode, Reply, SentinelSpec,
};
use crate::cluster::Member;
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
    pub fn load(path: &Path, create_password: bool) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let inventory = paddock_inventory::parse(&path.display().to_string(), &text)?;
        let placement = paddock_inventory::place(&inventory);
        let password_path = secrets::password_path(
            path,
            &inventory.deployment.name,
            inventory.deployment.password_file.as_deref(),
        );
        let password = secrets::load_or_create(&password_path, create_password)?;
        let user_passwords = user_passwords(path, &inventory, create_password)?;
        let transport = crate::client::Transport::for_deployment(path, &inventory.deployment.name)?;
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
            ip: self.inventory.hosts[p.host].address,
            port: p.port,
        }
    }

    fn instances(
        &self,
        filter: impl Fn(&paddock_inventory::PlacedInstance) -> bool,
        master: Option<Peer>,
    ) -> Vec<Target> {
        let inv = &self.inventory;
        let topology = inv.deployment.topology;
        let sentinel_peers: Vec<Peer> = self.placement.sentinels().map(|p| self.peer(p)).collect();
        let members = crate::client::Members {
            redis: self
                .placement
                .instances
                .iter()
                .filter(|p| p.is_redis())
                .map(|p| self.peer(p))
                .collect(),
            sentinels: sentinel_peers.clone(),
        };
        // Before the first apply there is no password yet; a placeholder lets
        // plan compare specs (every instance then shows as changing anyway).
        let password = self.password.clone().unwrap_or_else(|| "0".repeat(64));
        self.placement
            .instances
            .iter()
            .filter(|p| filter(p))
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
                    spec: InstanceSpec {
                        name: p.name.clone(),
                        deployment: inv.deployment.name.clone(),
                        address: host.address.to_string(),
                        port: p.port,
                        mode: match (topology, p.role) {
                            (_, Role::Sentinel) => RedisMode::Sentinel,
                            (Topology::Cluster, _) => RedisMode::Cluster,
                            _ => RedisMode::Standalone,
                        },
                        maxmemory_bytes: inv.redis.maxmemory_bytes.unwrap_or(0),
                        maxmemory_policy: inv.redis.maxmemory_policy.as_str().to_owned(),
                        appendonly: inv.redis.appendonly,
                        rdb_snapshots: inv.redis.rdb_snapshots,
                        cluster_node_timeout_ms: inv.redis.cluster_node_timeout_ms,
                        min_replicas_to_write: inv.redis.min_replicas_to_write,
                        min_replicas_max_lag_s: inv.redis.min_replicas_max_lag_s,
                        password: password.clone(),
                        supervision: crate::client::Supervision {
                            start_timeout_ms: inv.supervision.start_timeout_ms,
                            start_retries: inv.supervision.start_retries,
                            backoff_max_ms: inv.supervision.backoff_max_ms,
                            stop_timeout_ms: inv.supervision.stop_timeout_ms,
                        },
                        users: inv
                            .users
                            .iter()
                            .zip(&self.user_passwords)
                            .map(|(u, p)| crate::client::AclUser {
                                name: u.name.clone(),
                                password: p.clone().unwrap_or_else(|| "0".repeat(64)),
                                rules: user_rules(&u.rules, inv.deployment.topology),
                            })
                            .collect(),
                        sentinel: match (&inv.sentinel, master) {
                            (Some(s), Some(master)) if p.role == Role::Sentinel => {
                                Some(SentinelSpec {
                                    master_name: inv.deployment.name.clone(),
                                    master,
                                    quorum: s.quorum,
                                    down_after_ms: s.down_after_ms,
                                    failover_timeout_ms: s.failover_timeout_ms,
                                })
                            }
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
                            sentinels: sentinel_peers.clone(),
                            master_name: inv.deployment.name.clone(),
                        }),
                        members: members.clone(),
                    },
                }
            })
            .collect()
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

/// What keeps the hosts from running the placement: redis-server missing, or
/// more maxmemory placed on a host than it has memory. Pure, for testing.
pub fn host_problems(deployment: &Deployment, facts: &[Facts]) -> Vec<String> {
    let inv = &deployment.inventory;
    let mut problems = Vec::new();
    for (h, (host, f)) in inv.hosts.iter().zip(facts).enumerate() {
        if f.redis_version.is_none() {
            problems.push(format!(
                "  - host {}: redis-server is not installed (the agent looked for {}); install it there with `apt-get install -y redis-server`",
                host.name,
                f.redis_server_path.as_deref().unwrap_or("redis-server in PATH")
            ));
        }
        if let Some(need) = deployment.placement.maxmemory_on_host(&inv.redis, h)
            && need > f.memory_total_bytes
        {
            let count = deployment
                .placement
                .on_host(h)
                .filter(|i| i.is_redis())
                .count();
            problems.push(format!(
                "  - host {}: {count} instance(s) x maxmemory {} MiB = {} MiB, but the host has {} MiB of memory; lower [redis] maxmemory or add hosts",
                host.name,
                inv.redis.maxmemory_bytes.unwrap_or(0) >> 20,
                need >> 20,
                f.memory_total_bytes >> 20
            ));
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
        ip: targets[i].ip,
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

/// How long a controller's lease on a deployment lasts unless released.
pub const LOCK_TTL_MS: u32 = 600_000;

/// Who this controller is, for "locked by ...": user@host pid N.
/// A lease holder (as [`lock_holder`] names them) that is a controller
/// process of this machine which no longer runs.
pub fn abandoned(holder: &str) -> bool {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let Some((who, pid)) = holder.rsplit_once(" pid ") else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let same_host = who.rsplit_once('@').is_some_and(|(_, h)| h == host.trim());
    let alive = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("paddock"));
    same_host && !alive
}

pub fn lock_holder() -> String {
    let user =
        std::env::var("USER").unwrap_or_else(|_| format!("uid {}", nix::unistd::Uid::effective()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user}@{} pid {}", host.trim(), std::process::id())
}

/// Connections to every host's agent, dialled in parallel.
pub struct Fleet {
    agents: Vec<Result<AgentClient, String>>,
}

impl Fleet {
    /// Dials every agent; unreachable ones are kept as their error message
    /// (status shows them).
    pub async fn connect(deployment: &Deployment) -> Fleet {
        let dials = deployment.inventory.hosts.iter().enumerate().map(|(i, h)| {
            AgentClient::connect(&h.name, deployment.agent_addr(i), &deployment.transport)
        });
        Fleet {
            agents: join_all(dials)
                .await
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect(),
        }
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

    pub fn agent_error(&self, host: usize) -> Option<&str> {
        self.agents[host].as_ref().err().map(String::as_str)
    }

    /// Takes the deployment's lease on every agent, in host order (so two
    /// controllers cannot each hold part of it). On refusal, releases what it
    /// took and says who holds it.
    pub async fn lock(&self, deployment: &str, holder: &str) -> Result<(), Error> {
        for h in 0..self.agents.len() {
            let mut outcome = self.agent(h)?.lock(deployment, holder, LOCK_TTL_MS).await?;
            if let crate::client::LockOutcome::Held { holder: other, .. } = &outcome
                && abandoned(other)
            {
                // A controller on this machine died mid-operation (killed,
                // or its terminal closed): its lease is ours to end, rather
                // than making the operator wait for it to expire.
                self.agent(h)?.unlock(deployment, other).await?;
                outcome = self.agent(h)?.lock(deployment, holder, LOCK_TTL_MS).await?;
            }
            if let crate::client::LockOutcome::Held {
                holder: other,
                since_unix_ms,
            } = outcome
            {
                self.unlock(deployment, holder).await;
                return Err(Error::Locked {
                    deployment: deployment.to_owned(),
                    holder: other,
                    since: crate::watch::format_utc(since_unix_ms),
                    ttl_s: LOCK_TTL_MS / 1000,
                });
            }
        }
        Ok(())
    }

    pub async fn unlock(&self, deployment: &str, holder: &str) {
        for a in self.agents.iter().flatten() {
            let _ = a.unlock(deployment, holder).await;
        }
    }

    /// Runs a command pipeline on a target's instance through its agent.
    pub async fn redis(&self, t: &Target, commands: &[&[&str]]) -> Result<Vec<Reply>, Error> {
        self.agent(t.host)?.redis(&t.instance, commands).await
    }
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
        }
    }

    #[test]
    fn refuses_more_maxmemory_than_a_host_has_naming_host_and_numbers() {
        let d = deployment("1gb");
        let ok = [facts(4096, true), facts(4096, true), facts(4096, true)];
        assert_eq!(host_problems(&d, &ok), Vec::<String>::new());
        let small = [facts(4096, true), facts(1536, true), facts(4096, true)];
        assert_eq!(
            host_problems(&d, &small),
            vec![
                "  - host b: 2 instance(s) x maxmemory 1024 MiB = 2048 MiB, but the host has 1536 MiB of memory; lower [redis] maxmemory or add hosts"
            ]
        );
    }

    #[test]
    fn only_a_dead_controller_of_this_machine_abandons_its_lease() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let host = host.trim();
        // Pids are below 2^22 on Linux: this one runs nowhere.
        assert!(abandoned(&format!("alice@{host} pid 9999999")));
        let me = lock_holder();
        assert!(!abandoned(&me), "this test process is alive: {me}");
        assert!(!abandoned("alice@another-host pid 9999999"));
        assert!(!abandoned("something else"));
    }

    #[test]
    fn reports_a_host_without_redis() {
        let d = deployment("64mb");
        let f = [facts(4096, true), facts(4096, true), facts(4096, false)];
        let p = host_problems(&d, &f);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("  - host c: redis-server is not installed"),
            "{p:?}"
        );
    }
}
