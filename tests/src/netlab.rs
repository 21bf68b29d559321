//! A deployment on namespace boxes: three boxes each running a real
//! `paddockd` (mutual TLS, its own data directory), a workstation namespace
//! from which the real `paddock` CLI and the tests' clients work, and a
//! 3 x 2 cluster (or another topology) applied across them. Dropping it
//! kills every process in the namespaces (by pid) and removes them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use crate::netns::{Net, Ns};
use crate::{bin_dir, stdout};

pub const AGENT_PORT: u16 = 7443;
pub const REDIS_PORT: u16 = 7000;

pub struct NetLab {
    pub net: Net,
    pub dir: tempfile::TempDir,
    pub inventory: PathBuf,
    agents: Vec<Option<Child>>,
    /// Where the agents really listen (AGENT_PORT, unless a delaying proxy
    /// sits there in front of them).
    agent_port: u16,
}

/// The lab's inventory: a 3-master, 1-replica cluster with a short node
/// timeout, so fault tests finish quickly.
pub fn cluster_inventory(addresses: &[IpAddr], node_timeout_ms: u32) -> String {
    let mut s = format!(
        "[deployment]\nname = \"faults\"\ntopology = \"cluster\"\nmasters = 3\nreplicas_per_master = 1\n\n\
         [redis]\nport = {REDIS_PORT}\nmaxmemory = \"64mb\"\nappendonly = true\ncluster_node_timeout_ms = {node_timeout_ms}\n"
    );
    s.push_str(&hosts_toml(addresses));
    s
}

/// The `[[hosts]]` tables of the boxes at `addresses`: box1, box2, ...
pub fn hosts_toml(addresses: &[IpAddr]) -> String {
    paddock_controller::lab::hosts_toml(addresses, AGENT_PORT)
}

impl NetLab {
    /// Boxes at 10.`octet`.0.11-13, the workstation at 10.`octet`.0.1.
    /// None (after printing why) where namespaces cannot be made.
    pub fn new(tag: &str, octet: u8, node_timeout_ms: u32) -> Option<NetLab> {
        NetLab::with_inventory(tag, octet, |ips| cluster_inventory(ips, node_timeout_ms))
    }

    /// As [`NetLab::new`], with the inventory `inventory` makes from the
    /// boxes' addresses (deployment name "faults", agents on AGENT_PORT).
    pub fn with_inventory(
        tag: &str,
        octet: u8,
        inventory: impl FnOnce(&[IpAddr]) -> String,
    ) -> Option<NetLab> {
        let addresses: Vec<String> = (11..=13).map(|i| format!("10.{octet}.0.{i}")).collect();
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let net = Net::new(tag, &refs, &format!("10.{octet}.0.1"))?;
        let dir = tempfile::Builder::new()
            .prefix("paddock-netlab-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()
            .expect("temp dir");
        let inventory_text = inventory;
        let inventory = dir.path().join("inventory.toml");
        let ips: Vec<IpAddr> = net.boxes.iter().map(|b| b.address).collect();
        std::fs::write(&inventory, inventory_text(&ips)).unwrap();
        let certs = paddock_controller::certs::certs_dir(&inventory, "faults");
        paddock_controller::certs::init(&certs, "faults").expect("CA");
        let mut lab = NetLab {
            net,
            dir,
            inventory,
            agents: Vec::new(),
            agent_port: AGENT_PORT,
        };
        for (i, ip) in ips.iter().enumerate() {
            let host = format!("box{}", i + 1);
            let files = paddock_controller::certs::issue(&certs, &host, *ip).expect("cert");
            let box_dir = lab.box_dir(i);
            std::fs::create_dir_all(box_dir.join("data")).unwrap();
            let config = paddock_controller::lab::AgentConfigFile {
                listen: std::net::SocketAddr::new(*ip, AGENT_PORT),
                data_dir: box_dir.join("data"),
                fast_failover: None,
                insecure_plaintext: false,
                tls: Some(paddock_controller::lab::AgentTlsFiles {
                    ca: paddock_controller::certs::ca(&certs).cert,
                    cert: files.cert,
                    key: files.key,
                }),
            };
            std::fs::write(box_dir.join("agent.toml"), config.to_toml(None).unwrap()).unwrap();
            lab.agents.push(None);
            lab.start_agent(i);
        }
        Some(lab)
    }

    pub fn box_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("box{}", i + 1))
    }

    pub fn workstation(&self) -> &Ns {
        &self.net.workstation
    }

    pub fn addresses(&self) -> Vec<IpAddr> {
        self.net.boxes.iter().map(|b| b.address).collect()
    }

    /// Every Redis node: two per box.
    pub fn nodes(&self) -> Vec<(IpAddr, u16)> {
        self.addresses()
            .into_iter()
            .flat_map(|a| [(a, REDIS_PORT), (a, REDIS_PORT + 1)])
            .collect()
    }

    pub fn password(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(".paddock/faults/redis-password"))
            .expect("password file")
            .trim()
            .to_owned()
    }

    /// Starts box `i`'s agent inside its namespace and waits until it listens.
    pub fn start_agent(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.box_dir(i).join("agent.log"))
            .unwrap();
        let child = self
            .net
            .command(
                &self.net.boxes[i],
                bin_dir().join("paddockd").to_str().unwrap(),
            )
            .arg("--config")
            .arg(self.box_dir(i).join("agent.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start paddockd");
        self.agents[i] = Some(child);
        let at = (self.net.boxes[i].address, self.agent_port);
        let up = self.net.block_on(self.workstation(), || async move {
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(at).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        });
        assert!(up, "agent of box{} did not listen", i + 1);
    }

    /// Puts `ms` of latency each way between the controller and every agent,
    /// in userspace (for kernels without `tc netem`): each agent moves to
    /// AGENT_PORT + 1 and a proxy in its box, on AGENT_PORT, holds every
    /// chunk of bytes for `ms` before passing it on.
    pub fn delay_agents(&mut self, ms: u64) {
        self.agent_port = AGENT_PORT + 1;
        for i in 0..self.net.boxes.len() {
            self.kill_agent(i);
            let config = self.box_dir(i).join("agent.toml");
            let text = std::fs::read_to_string(&config).unwrap().replace(
                &format!(":{AGENT_PORT}\""),
                &format!(":{}\"", AGENT_PORT + 1),
            );
            std::fs::write(&config, text).unwrap();
            self.start_agent(i);
            let ip = self.net.boxes[i].address;
            self.net.spawn_in(&self.net.boxes[i], move || async move {
                crate::delay::proxy((ip, AGENT_PORT).into(), (ip, AGENT_PORT + 1).into(), ms).await
            });
        }
    }

    /// SIGKILLs box `i`'s agent (its Redis processes keep running).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents[i].as_ref().map(Child::id)
    }

    /// The pid of a box's redis-server, from its pidfile.
    pub fn redis_pid(&self, i: usize, port: u16) -> u32 {
        let path = self
            .box_dir(i)
            .join(format!("data/instances/redis-{port}/redis.pid"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .unwrap()
    }

    /// The real `paddock` CLI, run in the workstation namespace.
    pub fn paddock(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        let inventory = self.inventory.display().to_string();
        full.extend(["-i", &inventory]);
        self.net.run(
            self.workstation(),
            bin_dir().join("paddock").to_str().unwrap(),
            &full,
        )
    }

    pub fn apply(&self) -> Output {
        self.paddock(&["apply"])
    }

    /// `paddock apply`, checked against the plan printed just before
    /// ([`crate::agree`]). For the deterministic applies (a fresh lab):
    /// after a fault Redis may fail over by itself between the two, and
    /// a timed apply must not count the plan.
    pub fn apply_agreeing(&self) -> Output {
        crate::agree(&[], |args| self.paddock(args))
    }

    /// `paddock status` finds nothing broken within `within`. Masters piled
    /// on one box by a failover (status's `balance`: unhealthy, and apply's
    /// to fix) are allowed: Redis and the agents fail over by themselves,
    /// but only apply spreads the masters again.
    pub fn healthy_within(&self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            let s = self.paddock(&["status", "--json"]);
            let serving = serde_json::from_slice::<serde_json::Value>(&s.stdout)
                .ok()
                .and_then(|v| Some(v["problems"].as_array()?.is_empty()))
                .unwrap_or(false);
            if s.status.success() || serving {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                eprintln!("not healthy:\n{}", stdout(&s));
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.box_dir(i).join("data")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for c in self.agents.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The Net's own drop kills what is left in the namespaces (Redis).
    }
}
