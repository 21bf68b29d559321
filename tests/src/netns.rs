//! Boxes as network namespaces: each box (and a "workstation") is a
//! namespace with one veth to a bridge that lives in a namespace of its own.
//! There is no default route anywhere and nothing in the root namespace, so
//! traffic to the boxes' addresses cannot leave the machine.
//!
//! Everything is removed on drop, also when the test panics: processes still
//! running in a namespace are killed by pid (`ip netns pids`), then the
//! namespaces are deleted. Namespaces left by a test process that was killed
//! outright carry its pid in their name and are swept by the next run.
//!
//! Needs root and `ip` (iproute2); [`Net::new`] returns None, after printing
//! why, when either is missing, so tests can skip visibly.

use std::net::IpAddr;
use std::process::{Command, Output};

const PREFIX: &str = "pdk";

/// One namespace and its address on the bridge.
#[derive(Debug, Clone)]
pub struct Ns {
    pub name: String,
    pub address: IpAddr,
}

pub struct Net {
    bridge: String,
    pub boxes: Vec<Ns>,
    pub workstation: Ns,
    /// Host-side veth names, in the bridge namespace, box order then
    /// workstation.
    links: Vec<String>,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills every process in `ns` by pid, then deletes it.
fn remove(ns: &str) {
    let pids = ip(&["netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Removes namespaces a killed test process left behind (its pid, in the
/// name, is gone).
fn sweep() {
    let list = ip(&["netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove(name);
        }
    }
}

/// Moves the calling thread into the namespace at `path` and gives it a
/// runtime: sockets it opens from then on live in that namespace.
fn enter(path: &str) -> tokio::runtime::Runtime {
    let file = std::fs::File::open(path).expect("namespace file");
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("network namespaces need root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("`ip` (iproute2) is not installed".into()),
    }
}

impl Net {
    /// Boxes at `boxes` and a workstation at `workstation`, all in one /24.
    /// `tag` (a few letters) keeps parallel tests' namespaces apart.
    pub fn new(tag: &str, boxes: &[&str], workstation: &str) -> Option<Net> {
        if let Some(why) = unavailable() {
            eprintln!("SKIPPED: {why}; this test runs as root in CI");
            return None;
        }
        sweep();
        let base = format!("{PREFIX}-{}-{tag}", std::process::id());
        let bridge = format!("{base}-br");
        let named = |i: usize, a: &str| Ns {
            name: format!("{base}-{i}"),
            address: a.parse().expect("address"),
        };
        let net = Net {
            bridge: bridge.clone(),
            boxes: boxes.iter().enumerate().map(|(i, a)| named(i, a)).collect(),
            workstation: Ns {
                name: format!("{base}-ws"),
                address: workstation.parse().expect("address"),
            },
            links: Vec::new(),
        };
        let mut net = net;
        ip_ok(&["netns", "add", &bridge]);
        ip_ok(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &bridge, "link", "set", "br0", "up"]);
        let members: Vec<Ns> = net
            .boxes
            .iter()
            .cloned()
            .chain([net.workstation.clone()])
            .collect();
        for (i, ns) in members.iter().enumerate() {
            ip_ok(&["netns", "add", &ns.name]);
            let link = format!("v{i}");
            ip_ok(&[
                "-n", &bridge, "link", "add", &link, "type", "veth", "peer", "name", "eth0",
                "netns", &ns.name,
            ]);
            net.links.push(link.clone());
            ip_ok(&["-n", &bridge, "link", "set", &link, "master", "br0", "up"]);
            let cidr = format!("{}/24", ns.address);
            ip_ok(&["-n", &ns.name, "addr", "add", &cidr, "dev", "eth0"]);
            ip_ok(&["-n", &ns.name, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", &ns.name, "link", "set", "lo", "up"]);
        }
        Some(net)
    }

    /// A command to run inside `ns`.
    pub fn command(&self, ns: &Ns, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name, program]);
        c
    }

    /// Runs `program args` inside `ns` and waits for it.
    pub fn run(&self, ns: &Ns, program: &str, args: &[&str]) -> Output {
        let out = self
            .command(ns, program)
            .args(args)
            .output()
            .expect("ip netns exec");
        eprintln!(
            "[{}] $ {program} {}\n{}{}",
            ns.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `f`'s future on a thread that entered `ns`: every socket it
    /// opens lives there (how the tests' own Redis clients reach the boxes
    /// from the workstation).
    pub fn block_on<F, Fut, T>(&self, ns: &Ns, f: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = T>,
        T: Send,
    {
        let path = format!("/run/netns/{}", ns.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || enter(&path).block_on(f()))
                .join()
                .expect("namespace thread")
        })
    }

    /// Like [`Net::block_on`], but leaves the thread running in the
    /// background (it ends with the test process).
    pub fn spawn_in<F, Fut>(&self, ns: &Ns, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", ns.name);
        let (ready, up) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = enter(&path);
            let _ = ready.send(());
            runtime.block_on(f());
        });
        let _ = up.recv();
    }

    /// Gives the workstation a path of its own to box `box_index` (a veth
    /// pair with host routes), so that taking the box's bridge link down
    /// partitions it from the other boxes while its clients still reach it:
    /// the split-brain case, with packets dropped silently as in a real
    /// partition.
    pub fn client_path(&self, box_index: usize) {
        let (ws, b) = (&self.workstation, &self.boxes[box_index]);
        let (ws_end, box_end) = (format!("cp{box_index}"), "cpws".to_owned());
        ip_ok(&[
            "-n", &ws.name, "link", "add", &ws_end, "type", "veth", "peer", "name", &box_end,
            "netns", &b.name,
        ]);
        ip_ok(&["-n", &ws.name, "link", "set", &ws_end, "up"]);
        ip_ok(&["-n", &b.name, "link", "set", &box_end, "up"]);
        let (ws_ip, box_ip) = (ws.address.to_string(), b.address.to_string());
        ip_ok(&[
            "-n", &ws.name, "route", "add", &box_ip, "dev", &ws_end, "src", &ws_ip,
        ]);
        ip_ok(&[
            "-n", &b.name, "route", "add", &ws_ip, "dev", &box_end, "src", &box_ip,
        ]);
    }

    /// Takes a box's link down (cut off) or up (healed).
    pub fn set_link(&self, box_index: usize, up: bool) {
        ip_ok(&[
            "-n",
            &self.bridge,
            "link",
            "set",
            &self.links[box_index],
            if up { "up" } else { "down" },
        ]);
    }

    /// Why `tc netem` cannot add delay here (the kernel lacks sch_netem, as
    /// some VM kernels do), if it cannot.
    pub fn netem_unavailable(&self) -> Option<String> {
        let ns = &self.workstation.name;
        let out = Command::new("ip")
            .args([
                "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                "1ms",
            ])
            .output()
            .ok()?;
        let _ = Command::new("ip")
            .args([
                "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lo", "root",
            ])
            .output();
        (!out.status.success()).then(|| {
            format!(
                "tc netem is not available on this kernel ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
    }

    /// Adds `ms` of delay (tc netem) to everything a box sends; 0 removes it.
    pub fn set_delay(&self, box_index: usize, ms: u32) {
        let ns = &self.boxes[box_index].name;
        let out = if ms == 0 {
            Command::new("ip")
                .args([
                    "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root",
                ])
                .output()
        } else {
            Command::new("ip")
                .args([
                    "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
                    "delay",
                ])
                .arg(format!("{ms}ms"))
                .output()
        }
        .expect("tc");
        assert!(
            out.status.success() || ms == 0,
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.boxes.iter().chain([&self.workstation]) {
            remove(&ns.name);
        }
        remove(&self.bridge);
    }
}
