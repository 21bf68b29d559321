//! Instance specs as the agent understands them, and redis.conf rendering.
//!
//! The spec itself is the shared model ([`paddock_model::InstanceSpec`]);
//! this module renders it. Redis reads its config line by line, so every
//! value we write is typed and either a bare token we produced ourselves or
//! quoted the way Redis's own CONFIG REWRITE quotes strings. Anything that
//! could smuggle a directive in (newline, NUL, other control characters) is
//! rejected before rendering.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

/// The model's name for it is `Supervision`.
pub use paddock_model::Supervision as SupervisionSpec;
pub use paddock_model::{
    AclUser, Group, InstanceSpec, MaxmemoryPolicy, Members, Mode, Peer, SentinelSpec,
    is_host_address, valid_acl_rule, valid_name,
};

use crate::error::Error;

impl From<paddock_model::Error> for Error {
    fn from(e: paddock_model::Error) -> Self {
        Error::InvalidSpec(e.to_string())
    }
}

impl From<SupervisionSpec> for crate::supervision::Settings {
    fn from(s: SupervisionSpec) -> Self {
        crate::supervision::Settings {
            start_timeout: s.start_timeout,
            start_retries: s.start_retries,
            backoff_max: s.backoff_max,
            stop_timeout: s.stop_timeout,
            ..crate::supervision::Settings::default()
        }
    }
}

/// Whether `ip` is assigned to this machine: binding a socket to it works
/// (EADDRNOTAVAIL otherwise). IO, at the edge of PutInstance.
pub fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Whether a socket bound to `a` and one bound to `b` can take the same port.
fn addresses_overlap(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// The ports an instance takes: its own, and the cluster bus (port + 10000).
fn ports_taken(mode: &Mode, port: u16) -> Vec<u16> {
    match mode {
        Mode::Cluster => vec![port, port.saturating_add(10000)],
        _ => vec![port],
    }
}

/// Pure: why `spec` cannot take its ports on this machine, next to the
/// agent's own listener and the other instances (`others`: name, address,
/// mode, port), or None.
pub fn port_clash<'a>(
    spec: &InstanceSpec,
    agent_listen: std::net::SocketAddr,
    others: impl IntoIterator<Item = (&'a str, IpAddr, &'a Mode, u16)>,
) -> Option<String> {
    let mine = ports_taken(&spec.mode, spec.port);
    if addresses_overlap(spec.address, agent_listen.ip()) && mine.contains(&agent_listen.port()) {
        return Some(format!(
            "instance {:?}: port {} (or its cluster bus port) is the agent's own port {}; give the deployment another [redis] port",
            spec.name,
            spec.port,
            agent_listen.port()
        ));
    }
    for (name, address, mode, port) in others {
        if name == spec.name || !addresses_overlap(spec.address, address) {
            continue;
        }
        let theirs = ports_taken(mode, port);
        if let Some(p) = mine.iter().find(|p| theirs.contains(p)) {
            return Some(format!(
                "instance {:?}: port {p} is taken by instance {name:?} on this host (ports {theirs:?}, the cluster bus is port + 10000); give the deployment another [redis] port",
                spec.name
            ));
        }
    }
    None
}

/// redis.conf from the model's spec (a trait: the spec is the model
/// crate's type, rendering is the agent's business).
pub trait Render {
    fn render(&self, dir: &Path) -> Result<String, Error>;
}

impl Render for InstanceSpec {
    /// Renders redis.conf (for a sentinel, the seed of the sentinel.conf that
    /// Sentinel then rewrites itself). `dir` is the instance directory.
    fn render(&self, dir: &Path) -> Result<String, Error> {
        self.validate()?;
        let dir = checked_dir(dir)?;
        let mut c = String::with_capacity(1024);
        let mut line = |s: String| {
            c.push_str(&s);
            c.push('\n');
        };
        render_common(self, dir, &mut line);
        if let Some(s) = &self.sentinel {
            render_sentinel(self, s, &mut line);
            return Ok(c);
        }
        render_server(self, &mut line);
        Ok(c)
    }
}

/// The instance directory as a string safe to write into the config.
fn checked_dir(dir: &Path) -> Result<&str, Error> {
    let dir = dir.to_str().ok_or_else(|| {
        Error::InvalidSpec(format!("data directory {} is not UTF-8", dir.display()))
    })?;
    if dir.chars().any(char::is_control) {
        return Err(Error::InvalidSpec(format!(
            "data directory {dir:?} contains a control character"
        )));
    }
    Ok(dir)
}

/// Lines every instance gets, redis-server and sentinel alike.
fn render_common(spec: &InstanceSpec, dir: &str, line: &mut impl FnMut(String)) {
    line(format!(
        "# Rendered by paddockd for deployment {} instance {}. Do not edit: the next apply rewrites it.",
        spec.deployment, spec.name
    ));
    line(format!("bind {}", spec.address));
    line(format!("port {}", spec.port));
    line("protected-mode yes".into());
    line("daemonize no".into());
    // Redis reopens its log file for every line, so paddockd can rotate
    // it by renaming; stdout (startup errors only) goes to stdout.log.
    line(format!("logfile {}", quote(&format!("{dir}/redis.log"))));
    line(format!("dir {}", quote(dir)));
    line("pidfile redis.pid".into());
    line(format!("requirepass {}", quote(&spec.password)));
}

/// The seed of sentinel.conf: what it monitors and how.
fn render_sentinel(spec: &InstanceSpec, s: &SentinelSpec, line: &mut impl FnMut(String)) {
    // Sentinels announce themselves to each other; without this they
    // announce whatever source address the kernel picked.
    line(format!(
        "sentinel announce-ip {}",
        quote(&spec.address.to_string())
    ));
    line("sentinel resolve-hostnames no".into());
    let name = &s.master_name;
    line(format!(
        "sentinel monitor {name} {} {} {}",
        s.master.address, s.master.port, s.quorum
    ));
    line(format!(
        "sentinel auth-pass {name} {}",
        quote(&spec.password)
    ));
    line(format!(
        "sentinel down-after-milliseconds {name} {}",
        s.down_after.as_millis()
    ));
    line(format!(
        "sentinel failover-timeout {name} {}",
        s.failover_timeout.as_millis()
    ));
    line(format!("sentinel parallel-syncs {name} 1"));
}

/// The `save` points of a spec with RDB snapshots (CONFIG SET save takes
/// the same value).
pub const SNAPSHOT_SAVE: &str = "3600 1 300 100 60 10000";

/// The rest of a redis-server's config: auth, users, memory, persistence
/// and the per-mode settings.
fn render_server(spec: &InstanceSpec, line: &mut impl FnMut(String)) {
    line(format!("masterauth {}", quote(&spec.password)));
    render_users(&spec.users, line);
    line("enable-debug-command no".into());
    line("enable-module-command no".into());
    line("enable-protected-configs no".into());
    if spec.maxmemory_bytes > 0 {
        line(format!("maxmemory {}", spec.maxmemory_bytes));
    }
    line(format!("maxmemory-policy {}", spec.maxmemory_policy));
    line(format!(
        "appendonly {}",
        if spec.appendonly { "yes" } else { "no" }
    ));
    line("appendfilename appendonly.aof".into());
    line("dbfilename dump.rdb".into());
    // Redis's default waits 5 s for more replicas before a diskless full
    // sync starts; each master here has its few replicas known up front.
    line("repl-diskless-sync-delay 0".into());
    if spec.rdb_snapshots {
        line(format!("save {SNAPSHOT_SAVE}"));
    } else {
        line("save \"\"".into());
    }
    render_mode(spec, line);
}

/// One `user` line per ACL user, every token quoted.
fn render_users(users: &[AclUser], line: &mut impl FnMut(String)) {
    for u in users {
        let mut l = format!(
            "user {} on {}",
            quote(&u.name),
            quote(&format!(">{}", u.password))
        );
        for r in &u.rules {
            l.push(' ');
            l.push_str(&quote(r));
        }
        line(l);
    }
}

/// Settings that depend on the deployment mode.
fn render_mode(spec: &InstanceSpec, line: &mut impl FnMut(String)) {
    if spec.mode != Mode::Sentinel && spec.min_replicas_to_write > 0 {
        line(format!(
            "min-replicas-to-write {}",
            spec.min_replicas_to_write
        ));
        line(format!(
            "min-replicas-max-lag {}",
            spec.min_replicas_max_lag.as_secs()
        ));
    }
    if spec.mode == Mode::Standalone {
        // A master lists its replicas by the source address of their
        // link; Sentinel and clients must see the inventory address.
        line(format!("replica-announce-ip {}", spec.address));
    }
    if spec.mode == Mode::Cluster {
        line("cluster-enabled yes".into());
        line("cluster-config-file nodes.conf".into());
        line(format!(
            "cluster-node-timeout {}",
            spec.cluster_node_timeout.as_millis()
        ));
        // Redis dials the cluster bus from whatever source address the
        // kernel picks; without announcing the inventory address, peers
        // record the wrong one and handshakes never finish.
        line(format!("cluster-announce-ip {}", spec.address));
    }
}

/// Quotes a string the way Redis's CONFIG REWRITE does (sdscatrepr): double
/// quotes, backslash escapes, \xHH for anything not printable.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            b if b.is_ascii_graphic() || b == b' ' => out.push(b as char),
            b => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            name: "redis-7000".into(),
            deployment: "lab".into(),
            address: "127.0.1.1".parse().unwrap(),
            port: 7000,
            mode: Mode::Cluster,
            maxmemory_bytes: 256 << 20,
            maxmemory_policy: MaxmemoryPolicy::AllkeysLru,
            appendonly: true,
            rdb_snapshots: true,
            cluster_node_timeout: Duration::from_secs(5),
            min_replicas_to_write: 0,
            min_replicas_max_lag: Duration::from_secs(10),
            password: "0123456789abcdef0123456789abcdef".into(),
            supervision: SupervisionSpec::default(),
            users: Vec::new(),
            sentinel: None,
            group: None,
            members: Members::default(),
        }
    }

    fn sentinel_spec() -> InstanceSpec {
        InstanceSpec {
            name: "sentinel-26379".into(),
            port: 26379,
            mode: Mode::Sentinel,
            sentinel: Some(SentinelSpec {
                master_name: "lab".into(),
                master: Peer {
                    address: "127.0.1.2".parse().unwrap(),
                    port: 6379,
                },
                quorum: 2,
                down_after: Duration::from_secs(1),
                failover_timeout: Duration::from_secs(5),
            }),
            ..spec()
        }
    }

    #[test]
    fn renders_a_sentinel_that_announces_its_address_and_monitors_the_master() {
        let conf = sentinel_spec().render(Path::new("/d")).unwrap();
        for want in [
            "port 26379\n",
            "requirepass \"0123456789abcdef0123456789abcdef\"\n",
            "sentinel announce-ip \"127.0.1.1\"\n",
            "sentinel monitor lab 127.0.1.2 6379 2\n",
            "sentinel auth-pass lab \"0123456789abcdef0123456789abcdef\"\n",
            "sentinel down-after-milliseconds lab 1000\n",
            "sentinel failover-timeout lab 5000\n",
        ] {
            assert!(conf.contains(want), "missing {want:?} in\n{conf}");
        }
        assert!(!conf.contains("cluster-enabled"), "{conf}");
    }

    #[test]
    fn a_new_seed_master_is_not_a_change_but_a_new_timeout_is() {
        let a = sentinel_spec();
        let mut b = a.clone();
        b.sentinel.as_mut().unwrap().master.address = "127.0.1.3".parse().unwrap();
        assert!(a.same_but_seed(&b));
        b.sentinel.as_mut().unwrap().down_after = Duration::from_secs(2);
        assert!(!a.same_but_seed(&b));
    }

    #[test]
    fn renders_bind_announce_and_auth() {
        let conf = spec()
            .render(Path::new("/var/lib/paddock/instances/redis-7000"))
            .unwrap();
        for want in [
            "bind 127.0.1.1\n",
            "port 7000\n",
            "cluster-announce-ip 127.0.1.1\n",
            "requirepass \"0123456789abcdef0123456789abcdef\"\n",
            "masterauth \"0123456789abcdef0123456789abcdef\"\n",
            "dir \"/var/lib/paddock/instances/redis-7000\"\n",
            "maxmemory 268435456\n",
            "protected-mode yes\n",
        ] {
            assert!(conf.contains(want), "missing {want:?} in\n{conf}");
        }
    }

    #[test]
    fn rejects_values_that_could_inject_directives() {
        let mut s = spec();
        s.password = "aaaaaaaaaaaaaaaa\nloadmodule /tmp/x.so".into();
        assert!(s.render(Path::new("/d")).is_err());
        let mut s = spec();
        s.name = "../etc".into();
        assert!(s.render(Path::new("/d")).is_err());
        assert!(spec().render(Path::new("/d\ninclude /x")).is_err());
    }

    #[test]
    fn renders_acl_users_and_refuses_password_rules() {
        let mut s = spec();
        s.users = vec![AclUser {
            name: "app".into(),
            password: "app-password-0123456789".into(),
            rules: vec!["~app:*".into(), "+@read".into(), "-@dangerous".into()],
        }];
        let conf = s.render(Path::new("/d")).unwrap();
        assert!(
            conf.contains("user \"app\" on \">app-password-0123456789\" \"~app:*\" \"+@read\" \"-@dangerous\"\n"),
            "{conf}"
        );
        for bad in ["nopass", ">other", "#abc", "reset", "a\"b", "x y"] {
            s.users[0].rules = vec![bad.into()];
            assert!(s.render(Path::new("/d")).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spec_without_supervision_settings_gets_the_supervisors_defaults() {
        assert_eq!(
            crate::supervision::Settings::from(SupervisionSpec::default()),
            crate::supervision::Settings::default()
        );
    }

    #[test]
    fn quotes_like_config_rewrite() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("x\ny\u{1}"), "\"x\\ny\\x01\"");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let shown = format!("{:?}", spec());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn only_host_addresses_are_accepted_as_bind_and_peer_addresses() {
        for (address, ok) in [
            ("127.0.1.1", true),
            ("fd00::11", true),
            ("0.0.0.0", false),
            ("::", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("ff02::1", false),
        ] {
            let mut s = spec();
            s.address = address.parse().unwrap();
            assert_eq!(s.validate().is_ok(), ok, "{address}");
            let mut s = spec();
            s.mode = Mode::Standalone;
            s.group = Some(Group {
                peers: vec![Peer {
                    address: address.parse().unwrap(),
                    port: 7000,
                }],
                sentinels: Vec::new(),
                master_name: String::new(),
            });
            assert_eq!(s.validate().is_ok(), ok, "peer {address}");
        }
    }

    #[test]
    fn ports_clash_with_the_agent_and_other_instances_bus_included() {
        let listen: std::net::SocketAddr = "127.0.1.1:7443".parse().unwrap();
        let here: IpAddr = "127.0.1.1".parse().unwrap();
        let elsewhere: IpAddr = "127.0.1.2".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let with = |mode: Mode, port: u16| {
            let mut s = spec();
            s.name = format!("redis-{port}");
            s.mode = mode;
            s.port = port;
            s
        };
        let c = Mode::Cluster;
        let s = Mode::Standalone;
        // (new instance, its address, others, clash?)
        type Other<'a> = (&'a str, IpAddr, &'a Mode, u16);
        let table: Vec<(InstanceSpec, IpAddr, Vec<Other<'_>>, bool)> = vec![
            (with(s, 7000), here, vec![], false),
            (with(s, 7443), here, vec![], true),
            (with(s, 7443), elsewhere, vec![], false),
            (
                with(c, 7000),
                here,
                vec![("redis-7001", here, &c, 7001)],
                false,
            ),
            (with(s, 7001), here, vec![("redis-x", here, &s, 7001)], true),
            (
                with(s, 17000),
                here,
                vec![("redis-7000", here, &c, 7000)],
                true,
            ),
            (
                with(s, 17000),
                here,
                vec![("redis-7000", here, &s, 7000)],
                false,
            ),
            (
                with(c, 7000),
                here,
                vec![("redis-x", here, &s, 17000)],
                true,
            ),
            (
                with(s, 7001),
                here,
                vec![("redis-x", elsewhere, &s, 7001)],
                false,
            ),
            (with(s, 7001), here, vec![("redis-x", any, &s, 7001)], true),
            // The same instance again is a replacement, not a clash.
            (
                with(s, 7001),
                here,
                vec![("redis-7001", here, &s, 7001)],
                false,
            ),
        ];
        for (mut spec, address, others, clash) in table {
            spec.address = address;
            let why = port_clash(&spec, listen, others.clone());
            assert_eq!(
                why.is_some(),
                clash,
                "{} {address} {others:?}: {why:?}",
                spec.name
            );
        }
    }
}
