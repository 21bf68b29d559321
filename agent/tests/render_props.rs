//! Property tests: whatever spec the agent accepts, the redis.conf it
//! renders, read back with Redis's own tokenizing rules (sdssplitargs: one
//! directive per line, double quotes with \xHH and C escapes, single quotes),
//! holds exactly the directives we intend, with the values we put in.
//! Specs the agent refuses render nothing.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use std::time::Duration;

use paddock_agent::spec::{InstanceSpec, MaxmemoryPolicy, Mode, Render as _, SupervisionSpec};
use proptest::prelude::*;

/// Redis's sdssplitargs, for one line: None when the line is malformed
/// (Redis would refuse to start), else its arguments.
fn split_args(line: &str) -> Option<Vec<Vec<u8>>> {
    let b = line.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= b.len() {
                    return None;
                }
                if b[i] == b'\\'
                    && i + 3 < b.len()
                    && b[i + 1] == b'x'
                    && b[i + 2].is_ascii_hexdigit()
                    && b[i + 3].is_ascii_hexdigit()
                {
                    cur.push(
                        u8::from_str_radix(std::str::from_utf8(&b[i + 2..i + 4]).ok()?, 16).ok()?,
                    );
                    i += 3;
                } else if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                    cur.push(match b[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if b[i] == b'"' {
                    if i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(b[i]);
                }
            } else if insq {
                if i >= b.len() {
                    return None;
                }
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if b[i] == b'\'' {
                    if i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(b[i]);
                }
            } else if i >= b.len() || b[i].is_ascii_whitespace() {
                break;
            } else if b[i] == b'"' {
                inq = true;
            } else if b[i] == b'\'' {
                insq = true;
            } else {
                cur.push(b[i]);
            }
            i += 1;
        }
        out.push(cur);
    }
}

const INTENDED: &[&str] = &[
    "bind",
    "port",
    "replica-announce-ip",
    "protected-mode",
    "daemonize",
    "logfile",
    "dir",
    "pidfile",
    "requirepass",
    "masterauth",
    "enable-debug-command",
    "enable-module-command",
    "enable-protected-configs",
    "maxmemory",
    "maxmemory-policy",
    "appendonly",
    "appendfilename",
    "dbfilename",
    "repl-diskless-sync-delay",
    "save",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "cluster-enabled",
    "cluster-config-file",
    "cluster-node-timeout",
    "cluster-announce-ip",
];

fn spec(
    name: String,
    password: String,
    port: u16,
    policy: usize,
    cluster: bool,
    timeout: u32,
    maxmemory: u64,
) -> InstanceSpec {
    InstanceSpec {
        name,
        deployment: "prop".into(),
        address: IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)),
        port,
        mode: if cluster {
            Mode::Cluster
        } else {
            Mode::Standalone
        },
        maxmemory_bytes: maxmemory,
        maxmemory_policy: MaxmemoryPolicy::ALL[policy % MaxmemoryPolicy::ALL.len()],
        appendonly: cluster,
        rdb_snapshots: !cluster,
        cluster_node_timeout: Duration::from_millis(u64::from(timeout)),
        min_replicas_to_write: timeout % 3,
        min_replicas_max_lag: Duration::from_secs(10),
        password,
        supervision: SupervisionSpec::default(),
        users: Vec::new(),
        sentinel: None,
        group: None,
        members: Default::default(),
    }
}

fn check(conf: &str, password: &str, dir: &str) -> Result<(), TestCaseError> {
    for line in conf.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let args = split_args(line);
        prop_assert!(args.is_some(), "line Redis cannot parse: {line:?}");
        let args = args.unwrap();
        let directive = String::from_utf8_lossy(&args[0]).to_string();
        prop_assert!(
            INTENDED.contains(&directive.as_str()),
            "unintended directive {directive:?} in {line:?}"
        );
        if directive == "requirepass" || directive == "masterauth" {
            prop_assert_eq!(args.len(), 2);
            prop_assert_eq!(
                &args[1],
                password.as_bytes(),
                "password read back as written"
            );
        }
        if directive == "dir" {
            prop_assert_eq!(args.len(), 2);
            prop_assert_eq!(&args[1], dir.as_bytes(), "dir read back as written");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Anything at all: either refused, or safe.
    #[test]
    fn arbitrary_specs_are_refused_or_render_only_intended_directives(
        name in "\\PC{0,70}",
        password in "\\PC{0,80}",
        dir in "/\\PC{0,40}",
        port in 0u16..=65535,
        policy in 0usize..8,
        cluster in any::<bool>(),
        timeout in 0u32..=700_000,
        maxmemory in any::<u64>(),
    ) {
        let s = spec(name, password.clone(), port, policy, cluster, timeout, maxmemory);
        if let Ok(conf) = s.render(Path::new(&dir)) {
            check(&conf, &password, &dir)?;
        }
    }

    /// Valid specs with hostile but printable values (quotes, backslashes,
    /// spaces, `#`, directive names): always rendered, always safe.
    #[test]
    fn valid_specs_with_hostile_printable_values_render_safely(
        name in "[a-z0-9][a-z0-9-]{0,30}",
        password in "[!-~]{16,120}",
        dir in "/[ -~]{0,60}",
        port in 1u16..=55535,
        policy in 0usize..8,
        cluster in any::<bool>(),
        timeout in 100u32..=600_000,
        maxmemory in any::<u64>(),
    ) {
        let s = spec(name, password.clone(), port, policy, cluster, timeout, maxmemory);
        let conf = s.render(Path::new(&dir));
        prop_assert!(conf.is_ok(), "{:?}", conf.err());
        check(&conf.unwrap(), &password, &dir)?;
    }
}

#[test]
fn the_tokenizer_agrees_with_redis_on_known_lines() {
    assert_eq!(
        split_args("requirepass \"a\\\"b\\x41\""),
        Some(vec![b"requirepass".to_vec(), b"a\"bA".to_vec()])
    );
    assert_eq!(
        split_args("save \"\""),
        Some(vec![b"save".to_vec(), Vec::new()])
    );
    assert_eq!(
        split_args("dir \"/x\"y"),
        None,
        "closing quote must be followed by a space"
    );
    assert_eq!(split_args("dir \"/x"), None, "unbalanced quotes");
}
