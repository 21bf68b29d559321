//! The agent's Debian package and the provisioning script, as an operator
//! uses them: build the .deb, install it with dpkg, check the unit with
//! systemd-analyze, then provision three network-namespace boxes (the
//! Vagrant lab's clusternodeA, B and C on 192.168.56.11-13, unreachable from
//! the root namespace) with packaging/provision.sh and form the cluster of
//! inventory/examples/vagrant-lab.toml from a fourth, "workstation"
//! namespace. Finally the package is purged and nothing of it is left.
//!
//! One test, because it installs and removes a system package: run as root
//! (CI does); elsewhere it skips saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use paddock_tests::netns::{Net, unavailable};
use paddock_tests::{bin_dir, stderr, stdout};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    eprintln!(
        "$ {program} {}\n{}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Removes the package even when the test fails half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "paddockd"]);
    }
}

/// systemd before 254 does not know RestartSteps= and RestartMaxDelaySec=
/// (the growing restart delay): it says so and ignores them. Anything else
/// it reports is a problem with the unit.
fn unit_problems(verify_output: &str) -> Vec<&str> {
    verify_output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !(l.contains("Unknown key 'RestartSteps'")
                || l.contains("Unknown key 'RestartMaxDelaySec'")
                || l.contains("Unknown key name 'RestartSteps'")
                || l.contains("Unknown key name 'RestartMaxDelaySec'"))
        })
        .collect()
}

/// The .deb asks for the Redis the README and the controller require
/// (7.0: ADDSLOTSRANGE, enable-*-command).
#[test]
fn the_package_depends_on_the_redis_the_readme_requires() {
    let build = std::fs::read_to_string(repo().join("packaging/deb/build.sh")).unwrap();
    let depends = build
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .expect("build.sh writes a Depends line");
    assert!(
        depends.contains("redis-server (>= 5:7.0)"),
        "Depends: {depends}"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("Redis 7.0 or later") && readme.contains("`redis-server (>= 5:7.0)`"),
        "README states the same requirement"
    );
}

#[test]
fn the_package_installs_and_provisions_the_three_box_lab_over_namespaces() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}; this test runs as root in CI");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("paddock-pkg-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();

    // Build, list, install.
    let build = Command::new("bash")
        .arg(repo().join("packaging/deb/build.sh"))
        .env("PADDOCKD", bin_dir().join("paddockd"))
        .output()
        .unwrap();
    assert!(build.status.success(), "build.sh: {}", stderr(&build));
    let deb = stdout(&build).trim().to_owned();
    let contents = stdout(&run("dpkg-deb", &["--contents", &deb]));
    for path in [
        "./usr/bin/paddockd",
        "./lib/systemd/system/paddockd.service",
        "./etc/paddock/agent.toml",
    ] {
        assert!(
            contents.contains(path),
            "{path} not in the package:\n{contents}"
        );
    }
    // The README's requirement (Redis 7.0 or later), said by the package too.
    let depends = stdout(&run("dpkg-deb", &["--field", &deb, "Depends"]));
    assert!(
        depends.contains("redis-server (>= 5:7.0)"),
        "Depends: {depends}"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("Redis 7.0 or later"),
        "README names the requirement"
    );
    let installed = Installed;
    let out = run("dpkg", &["-i", &deb]);
    assert!(out.status.success(), "dpkg -i: {}", stderr(&out));
    let version = run("/usr/bin/paddockd", &["--version"]);
    assert!(
        stdout(&version).starts_with("paddockd "),
        "{}",
        stdout(&version)
    );
    // The shipped config is a commented template: check-config says what is
    // missing, and nothing was started by the install.
    let template = run("/usr/bin/paddockd", &["check-config"]);
    assert_eq!(template.status.code(), Some(2));
    assert!(
        stderr(&template).contains("/etc/paddock/agent.toml")
            && stderr(&template).contains("listen"),
        "{}",
        stderr(&template)
    );
    let verify = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/paddockd.service"],
    );
    let said = format!("{}{}", stdout(&verify), stderr(&verify));
    assert!(
        unit_problems(&said).is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    // Certificates from the workstation, for the Vagrant lab's inventory.
    let inventory = tmp.path().join("vagrant-lab.toml");
    std::fs::copy(
        repo().join("inventory/examples/vagrant-lab.toml"),
        &inventory,
    )
    .unwrap();
    let inv = inventory.display().to_string();
    let paddock = bin_dir().join("paddock");
    let paddock = paddock.to_str().unwrap();
    assert!(
        run(paddock, &["certs", "init", "-i", &inv])
            .status
            .success()
    );
    let hosts = ["clusternodeA", "clusternodeB", "clusternodeC"];
    for h in hosts {
        let out_dir = tmp.path().join("certs").join(h);
        let out = run(
            paddock,
            &[
                "certs",
                "issue",
                "-i",
                &inv,
                h,
                "--out",
                out_dir.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let Some(net) = Net::new(
        "pkg",
        &["192.168.56.11", "192.168.56.12", "192.168.56.13"],
        "192.168.56.1",
    ) else {
        return;
    };
    let script = repo().join("packaging/provision.sh");
    for (i, h) in hosts.iter().enumerate() {
        let dir = tmp.path().join(h);
        let listen = format!("{}:7443", net.boxes[i].address);
        let certs = tmp.path().join("certs").join(h);
        let (config, data) = (dir.join("agent.toml"), dir.join("data"));
        let args = [
            script.to_str().unwrap(),
            "--deb",
            &deb,
            "--listen",
            &listen,
            "--certs",
            certs.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ];
        let out = net.run(&net.boxes[i], "bash", &args);
        assert!(out.status.success(), "provision {h}: {}", stderr(&out));
        // Provisioning again changes nothing that is right already.
        if i == 0 {
            let again = net.run(&net.boxes[i], "bash", &args);
            assert!(again.status.success(), "re-provision: {}", stderr(&again));
        }
    }

    // The workstation forms the cluster across the boxes.
    let apply = net.run(&net.workstation, paddock, &["apply", "-i", &inv]);
    assert!(apply.status.success(), "apply: {}", stderr(&apply));
    let status = net.run(&net.workstation, paddock, &["status", "-i", &inv]);
    assert!(status.status.success(), "{}", stdout(&status));
    assert!(
        stdout(&status).contains("Cluster healthy"),
        "{}",
        stdout(&status)
    );
    let noop = net.run(&net.workstation, paddock, &["apply", "-i", &inv]);
    assert!(stdout(&noop).contains("Nothing to do"), "{}", stdout(&noop));
    let password = std::fs::read_to_string(tmp.path().join("secrets/vagrant-lab.redis-password"))
        .unwrap()
        .trim()
        .to_owned();
    let write = net
        .command(&net.workstation, "redis-cli")
        .env("REDISCLI_AUTH", &password)
        .args([
            "-c",
            "-h",
            "192.168.56.12",
            "-p",
            "7000",
            "SET",
            "hello",
            "world",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&write).trim(), "OK", "{}", stderr(&write));
    let read = net
        .command(&net.workstation, "redis-cli")
        .env("REDISCLI_AUTH", &password)
        .args(["-c", "-h", "192.168.56.13", "-p", "7001", "GET", "hello"])
        .output()
        .unwrap();
    assert_eq!(stdout(&read).trim(), "world", "{}", stderr(&read));

    // Nothing of the lab's range exists in the root namespace.
    let addrs = run("ip", &["-o", "addr", "show"]);
    assert!(
        !stdout(&addrs).contains("192.168.56."),
        "{}",
        stdout(&addrs)
    );

    drop(net);
    drop(installed);
    let gone = run("dpkg", &["-s", "paddockd"]);
    assert!(!gone.status.success(), "the package is purged");
    assert!(!Path::new("/usr/bin/paddockd").exists());
    assert!(!Path::new("/lib/systemd/system/paddockd.service").exists());
}

/// The Vagrantfile parses and names the three boxes at the inventory's
/// addresses (`vagrant validate`; CI installs Debian's vagrant package).
#[test]
fn the_vagrant_lab_validates_and_matches_the_inventory() {
    let dir = repo().join("packaging/vagrant");
    let text = std::fs::read_to_string(dir.join("Vagrantfile")).unwrap();
    let inventory =
        std::fs::read_to_string(repo().join("inventory/examples/vagrant-lab.toml")).unwrap();
    for (name, ip) in [
        ("clusternodeA", "192.168.56.11"),
        ("clusternodeB", "192.168.56.12"),
        ("clusternodeC", "192.168.56.13"),
    ] {
        assert!(
            text.contains(&format!("\"{name}\" => \"{ip}\"")),
            "Vagrantfile lacks {name} at {ip}"
        );
        let host = inventory
            .split("[[hosts]]")
            .find(|h| h.contains(&format!("name = \"{name}\"")))
            .unwrap_or_else(|| panic!("the inventory lacks {name}"));
        assert!(
            host.contains(&format!("address = \"{ip}\"")),
            "the inventory has {name} elsewhere than {ip}"
        );
    }
    if Command::new("vagrant").arg("--version").output().is_err() {
        eprintln!("SKIPPED `vagrant validate`: vagrant is not installed (CI installs it)");
        return;
    }
    // No hypervisor here: validate the Vagrantfile itself, not whether a
    // provider is installed.
    let out = Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(&dir)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vagrant validate: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("validated successfully"),
        "{}",
        stdout(&out)
    );
}
