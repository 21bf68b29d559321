//! The agent's own start and stop: SIGTERM with a client watching events,
//! and a listen address that only appears after the agent started (a boot
//! where the interface comes up late).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_tests::{Lab, bin_dir, process_is, stderr};

#[test]
fn sigterm_ends_open_event_streams_instead_of_waiting_for_them() {
    let lab = Lab::new(106);
    let up = lab.up(&["--no-apply"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let mut events = Command::new(bin_dir().join("paddock"))
        .args(["events", "-i", &inventory, "--seconds", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The client says so on stderr once it watches every agent.
    let mut watching = false;
    {
        use std::io::BufRead;
        let err = events.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(err).lines();
        if let Some(Ok(line)) = lines.next() {
            watching = line.contains("watching 3 agent(s)");
        }
    }
    assert!(watching, "paddock events did not start watching");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir().join("lab.json")).unwrap()).unwrap();
    let pid = state["agents"][0]["pid"].as_u64().unwrap() as u32;
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    while process_is(pid, "paddockd") && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let _ = events.kill();
    let _ = events.wait();
    // It took 16 s with a watching client (the server waited for the
    // stream); an agent with nothing to wait for stops in well under a
    // second. 5 s leaves room for a loaded machine.
    assert!(
        took < Duration::from_secs(5),
        "the agent took {took:?} to stop on SIGTERM with an events client"
    );
    // It stopped in the documented order, each step logged, and left
    // Redis running.
    let log = std::fs::read_to_string(
        std::path::Path::new(state["agents"][0]["dir"].as_str().unwrap()).join("agent.log"),
    )
    .unwrap();
    let at = |step: &str| {
        log.find(step)
            .unwrap_or_else(|| panic!("{step:?} not logged:\n{log}"))
    };
    let steps = [
        "shutdown 1/4: no longer accepting connections",
        "shutdown 2/4: ending open event and log streams",
        "shutdown 3/4: stopping supervision",
        "shutdown 4/4: waiting for the agent's tasks",
        "stopped serving; Redis instances keep running",
    ]
    .map(at);
    assert!(steps.is_sorted(), "steps out of order:\n{log}");
    assert!(!log.contains("tasks still running"), "{log}");
}

/// Stops the namespace's processes and removes it, also on a failed test.
struct Netns {
    name: String,
    agent: Option<std::process::Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn an_agent_whose_address_is_not_configured_yet_waits_for_it() {
    if let Some(why) = paddock_tests::netns::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    // A new network namespace: its loopback interface is down, so ::1 is
    // not configured (IPv6 adds it when the link comes up), as an address
    // of a machine at boot before its network is up. Nothing leaves it.
    let mut ns = Netns {
        name: format!("paddock-bind-{}", std::process::id()),
        agent: None,
    };
    let added = Command::new("ip")
        .args(["netns", "add", &ns.name])
        .status()
        .unwrap();
    assert!(added.success());
    let ip = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ip"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip {args:?}");
    };
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let config = dir.path().join("agent.toml");
    let text = paddock_controller::lab::AgentConfigFile {
        listen: "[::1]:7443".parse().unwrap(),
        data_dir: dir.path().join("data"),
        fast_failover: None,
        insecure_plaintext: true,
        tls: None,
    }
    .to_toml(None)
    .unwrap();
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let agent = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin_dir().join("paddockd"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    ns.agent = Some(agent);
    let agent = ns.agent.as_mut().unwrap();
    // Today's agent exits 3 at once (and systemd never restarts it).
    std::thread::sleep(Duration::from_secs(2));
    let exited = agent.try_wait().unwrap();
    let text = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(
        exited.is_none(),
        "the agent exited ({exited:?}) instead of waiting for its address:\n{text}"
    );
    assert!(text.contains("retrying"), "{text}");

    // The network comes up: the agent serves within its back-off (5 s).
    ip(&["link", "set", "lo", "up"]);
    let listening = |ns: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/tcp6"])
            .output()
            .unwrap();
        // [::1]:7443 in the kernel's notation, state LISTEN.
        String::from_utf8_lossy(&out.stdout).contains(
            "00000000000000000000000001000000:1D13 00000000000000000000000000000000:0000 0A",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !listening(&ns.name) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        listening(&ns.name),
        "the agent never listened once the address was there:\n{}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap()
    );
}

/// Runs the real `paddockd` with `config` and waits (up to 30 s) for it to
/// exit; kills it if it does not.
fn paddockd_exit(config: &std::path::Path) -> (Option<i32>, String) {
    let mut agent = Command::new(bin_dir().join("paddockd"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if agent.try_wait().unwrap().is_none() {
        let _ = agent.kill();
    }
    let out = agent.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

/// What the packaging README and the unit's RestartPreventExitStatus=2
/// promise: a problem only the operator can fix exits 2 (systemd does not
/// restart the agent into the same failure), and says which file.
#[test]
fn a_missing_tls_file_or_an_unusable_data_dir_exits_2_naming_it() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.125.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("agent.pem"), cert.pem()).unwrap();
    // agent.key was never copied to this machine.
    let missing_key = dir.path().join("agent.key");
    let data_dir = dir.path().join("data");
    let config = dir.path().join("tls.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.125.1:7443\"\ndata_dir = \"{}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            data_dir.display(),
            dir.path().join("ca.pem").display(),
            dir.path().join("agent.pem").display(),
            missing_key.display()
        ),
    )
    .unwrap();
    let (code, text) = paddockd_exit(&config);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&missing_key.display().to_string()),
        "the message names the missing file: {text}"
    );
    assert!(
        !data_dir.exists(),
        "nothing starts before the TLS files are read"
    );

    // data_dir under a regular file: it can never be created.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let unusable = file.join("data");
    let config = dir.path().join("data_dir.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.125.2:7443\"\ndata_dir = \"{}\"\ninsecure_plaintext = true\n",
            unusable.display()
        ),
    )
    .unwrap();
    let (code, text) = paddockd_exit(&config);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("data_dir {} is unusable", unusable.display())),
        "the message names data_dir: {text}"
    );
}

/// A listen port another process holds will not free itself: exit 3
/// (also in RestartPreventExitStatus=), naming the address.
#[test]
fn a_taken_listen_port_exits_3_naming_it() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let holder = std::net::TcpListener::bind("127.0.125.4:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{taken}\"\ndata_dir = \"{}\"\ninsecure_plaintext = true\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let (code, text) = paddockd_exit(&config);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains(&taken.to_string()), "{text}");
}
