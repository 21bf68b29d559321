//! What a new operator meets on the first day, outside of Redis itself:
//! output into a pipe that closes early (`| head -1`, `| grep -q`), error
//! messages, help text, and secrets next to an inventory kept in git.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use paddock_tests::{Lab, bin_dir, paddock, stderr, stdout};

/// Runs paddock with a stdout whose reader is already gone: the first write
/// fails with EPIPE (Rust ignores SIGPIPE), as after `| head -1` has read
/// its line.
fn closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(bin_dir().join("paddock"))
        .args(args)
        .env("PADDOCKD", bin_dir().join("paddockd"))
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run paddock");
    eprintln!("$ paddock {} >closed\n{}", args.join(" "), stderr(&out));
    out
}

fn assert_no_panic(args: &[&str], out: &Output) {
    assert_ne!(
        out.status.code(),
        Some(101),
        "paddock {args:?} panicked on a closed stdout: {}",
        stderr(out)
    );
    assert!(
        !stderr(out).contains("panicked"),
        "{args:?}: {}",
        stderr(out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_survives_a_closed_stdout() {
    let lab = Lab::new(104);
    let dir = lab.dir().display().to_string();
    let addresses = lab.addresses_arg();
    let args = [
        "lab",
        "up",
        "--dir",
        &dir,
        "--addresses",
        &addresses,
        "--topology",
        "replication",
    ];
    let up = closed_stdout(&args);
    assert_no_panic(&args, &up);
    assert!(up.status.success(), "lab up: {}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let inv = inventory.as_str();

    let commands: &[&[&str]] = &[
        &["--help"],
        &["status", "--help"],
        &["validate", "-i", inv],
        &["plan", "-i", inv],
        &["apply", "-i", inv],
        &["status", "-i", inv],
        &["status", "-i", inv, "--json"],
        &["lab", "status", "--dir", &dir],
        &["logs", "-i", inv, "box1", "redis-7000", "-n", "5"],
        &["failover", "-i", inv],
        &["rotate-password", "-i", inv],
        &["rotate-password", "-i", inv, "--finish"],
        &["unlock", "-i", inv, "--force"],
        &["certs", "init", "-i", inv],
        &["certs", "issue", "-i", inv, "box1"],
        &["completions", "bash"],
    ];
    for c in commands {
        let out = closed_stdout(c);
        assert_no_panic(c, &out);
        // status exits 1 for an unhealthy deployment; the rest succeed.
        let ok = out.status.success() || (c[0] == "status" && out.status.code() == Some(1));
        assert!(ok, "paddock {c:?} failed: {}", stderr(&out));
    }

    // `events` runs until told to stop: it must stop at its first line
    // that finds stdout closed (a crash of a replica makes one).
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let mut events = Command::new(bin_dir().join("paddock"))
        .args(["events", "-i", inv, "--seconds", "60"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::null())
        .spawn()
        .expect("events");
    // Let it subscribe before the crash.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = paddock(&["status", "-i", inv, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    let replica_pid = json["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|h| h["instances"].as_array().cloned().unwrap_or_default())
        .find(|i| matches!(i["role"].as_str(), Some("replica" | "slave")))
        .and_then(|i| i["pid"].as_u64())
        .expect("a replica's pid in status --json");
    paddock_tests::ha::kill9(replica_pid as u32);
    let mut exit = None;
    for _ in 0..300 {
        if let Some(s) = events.try_wait().expect("wait events") {
            exit = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(exit) = exit else {
        let _ = events.kill();
        let _ = events.wait();
        panic!("paddock events kept running for 30 s after its stdout closed");
    };
    assert_ne!(exit.code(), Some(101), "events panicked: {exit}");

    let args = ["lab", "down", "--dir", &dir];
    let down = closed_stdout(&args);
    assert_no_panic(&args, &down);
    assert!(down.status.success());
}

#[test]
fn an_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml").display().to_string();
    let out = paddock(&["plan", "-i", &missing]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause is printed more than once:\n{err}"
    );
    assert!(err.contains(&missing), "{err}");
}

/// Every subcommand (also ones added later), from `paddock ... --help`.
fn subcommands(prefix: &[&str]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push("--help");
    let help = stdout(&paddock(&args));
    let mut found = vec![prefix.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    let Some(list) = help.split("Commands:\n").nth(1) else {
        return found;
    };
    for line in list.lines().take_while(|l| !l.trim().is_empty()) {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name == "help" {
            continue;
        }
        let mut sub: Vec<&str> = prefix.to_vec();
        sub.push(name);
        found.extend(subcommands(&sub));
    }
    found
}

#[test]
fn help_shows_each_example_on_its_own_line_and_explains_common_flags() {
    let all = subcommands(&[]);
    assert!(all.len() > 15, "{all:?}");
    for c in &all {
        let mut args: Vec<&str> = c.iter().map(String::as_str).collect();
        args.push("--help");
        let help = stdout(&paddock(&args));
        for line in help.lines() {
            if line.contains("Example:") {
                assert!(
                    line.trim_start().starts_with("Example:")
                        && line.matches("Example:").count() == 1,
                    "{c:?}: an example shares its line:\n{line}"
                );
            }
        }
        let lines: Vec<&str> = help.lines().collect();
        for (flag, must_mention) in [
            ("-i, --inventory <INVENTORY>", "inventory"),
            ("--json", "JSON"),
            ("--timeout <TIMEOUT>", "seconds"),
        ] {
            let Some(at) = lines.iter().position(|l| l.trim() == flag) else {
                continue;
            };
            let text = lines.get(at + 1).map(|l| l.trim()).unwrap_or_default();
            assert!(
                !text.is_empty() && !text.starts_with('[') && !text.starts_with('-'),
                "{c:?}: {flag} has no help text:\n{help}"
            );
            assert!(
                text.contains(must_mention),
                "{c:?}: the help of {flag} does not mention {must_mention}: {text}"
            );
        }
    }
}

#[test]
fn secrets_next_to_the_inventory_stay_out_of_git() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.toml");
    std::fs::write(
        &inventory,
        "[deployment]\nname = \"shop\"\ntopology = \"replication\"\nreplicas_per_master = 1\n\n\
         [redis]\nport = 7000\n\n[[hosts]]\nname = \"a\"\naddress = \"127.0.104.21\"\n\
         [[hosts]]\nname = \"b\"\naddress = \"127.0.104.22\"\n",
    )
    .unwrap();
    let inv = inventory.display().to_string();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("git")
    };
    assert!(git(&["init", "-q"]).status.success());
    let out = paddock(&["certs", "init", "-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = paddock(&["certs", "issue", "-i", &inv, "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(git(&["add", "-A"]).status.success());
    let staged = stdout(&git(&["diff", "--cached", "--name-only"]));
    assert_eq!(
        staged.trim(),
        "inventory.toml",
        "git would commit more than the inventory:\n{staged}"
    );
}

#[test]
fn the_replication_example_documents_its_failover() {
    let text = std::fs::read_to_string(format!(
        "{}/../inventory/examples/replication.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert!(
        !text.to_lowercase().contains("no automatic failover:"),
        "{text}"
    );
    assert!(text.contains("READONLY"), "{text}");
    assert!(text.contains("sentinel"), "{text}");
}

/// A certificate and key signed by a CA of its own (not the lab's).
fn foreign_cert(client: bool) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.clone().self_signed(&ca_key).unwrap().pem();
    if !client {
        return (ca_pem, ca_key.serialize_pem());
    }
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn tls_failures_name_the_problem_and_the_file_and_the_agent_logs_them() {
    let lab = Lab::new(107);
    let up = lab.up(&["--no-apply"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();
    let certs = lab.dir().join(".paddock/lab/certs");
    let swap = |name: &str, text: &str| {
        let path = certs.join(name);
        let old = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text).unwrap();
        old
    };
    let all = |o: &Output| format!("{}{}", stdout(o), stderr(o));

    // The controller trusts another CA than the one that issued the
    // agents' certificates.
    let (other_ca, _) = foreign_cert(false);
    let ca = swap("ca.pem", &other_ca);
    let out = paddock(&["status", "-i", &inventory]);
    let text = all(&out);
    assert!(
        text.contains("presents a certificate of another CA")
            && text.contains(&certs.join("ca.pem").display().to_string()),
        "{text}"
    );
    assert!(!text.contains("BadSignature"), "{text}");
    swap("ca.pem", &ca);

    // The agents do not trust this controller's certificate.
    let (cert, key) = foreign_cert(true);
    let old_cert = swap("controller.pem", &cert);
    let old_key = swap("controller.key", &key);
    let out = paddock(&["status", "-i", &inventory]);
    let text = all(&out);
    assert!(
        text.contains("refused this controller's certificate")
            && text.contains(&certs.join("controller.pem").display().to_string()),
        "{text}"
    );
    assert!(
        !text.contains("transport error") && !text.contains("h2 protocol error"),
        "{text}"
    );
    swap("controller.pem", &old_cert);
    swap("controller.key", &old_key);
    let log = std::fs::read_to_string(lab.dir().join("box1/agent.log")).unwrap();
    // The agent says whom it refused and why.
    let refused = log.lines().find(|l| {
        l.contains("refused a TLS handshake")
            && l.contains("not of this agent's CA")
            && l.contains("peer=127.")
    });
    assert!(
        refused.is_some(),
        "the agent did not log the refused handshake:\n{log}"
    );
    let out = paddock(&["status", "-i", &inventory]);
    assert!(!all(&out).contains("refused"), "control: {}", all(&out));
}
