//! The controller's commands as an operator runs them: validate, plan, an
//! apply that cannot converge in time, and the apply that finishes the job.

use paddock_tests::{Lab, apply_agreeing, connect, paddock, stderr, stdout};

fn example(name: &str) -> String {
    format!(
        "{}/../inventory/examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn validate_accepts_the_examples_and_reports_every_problem_with_its_position() {
    for name in [
        "vagrant-lab.toml",
        "six-hosts.toml",
        "replication.toml",
        "sentinel.toml",
    ] {
        let out = paddock(&["validate", "-i", &example(name)]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(stdout(&out).contains(": ok ("), "{name}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n\n[redis]\nport = 7000\nmaxmemory = \"lots\"\n\n\
         [[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n",
    )
    .unwrap();
    let out = paddock(&["validate", "-i", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = bad.display().to_string();
    assert!(
        err.contains(&format!("{file}:7:13: error:")),
        "maxmemory position:\n{err}"
    );
    assert!(
        err.contains(&format!("{file}:13:8: error: duplicate host name `a`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:14:11: error: duplicate address 10.0.0.1")),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_an_interrupted_formation_then_apply_finishes_it() {
    let lab = Lab::new(23);
    let up = lab.up(&["--no-apply"]);
    assert!(up.status.success());
    let inventory = lab.inventory().display().to_string();

    let plan = paddock(&["plan", "-i", &inventory]);
    assert!(plan.status.success());
    let text = stdout(&plan);
    for b in ["box1", "box2", "box3"] {
        for i in ["redis-7000", "redis-7001"] {
            assert!(
                text.contains(&format!("+ {b}:{i}: create instance")),
                "{text}"
            );
        }
    }
    assert!(
        !lab.dir().join("box1/data/instances/redis-7000").exists(),
        "plan wrote nothing"
    );

    // No time to converge: apply gives up naming nodes and the bus port.
    let out = apply_agreeing(&["-i", &inventory, "--timeout", "0"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("did not converge"), "{err}");
    assert!(err.contains("box"), "names a node: {err}");
    assert!(err.contains("port + 10000 (17000 for port 7000)"), "{err}");

    // The short formation node timeout was restored despite the failure.
    let password = lab.password();
    for (ip, port) in lab.nodes() {
        let mut c = connect(ip, port, &password).await.unwrap();
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("cluster-node-timeout")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v[1], "5000", "{ip}:{port}");
    }

    // The next apply finishes the formation; the one after has nothing to do.
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = paddock(&["status", "-i", &inventory, "--json"]);
    assert!(status.status.success());
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["healthy"], true);
    let roles: Vec<&str> = s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["instances"].as_array().unwrap())
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "master").count(), 3);
    assert_eq!(roles.iter().filter(|r| **r == "replica").count(), 3);
    let again = apply_agreeing(&["-i", &inventory]);
    assert!(stdout(&again).contains("Nothing to do"));
}

/// Every command's --help shows an example, and shell completions are valid
/// scripts that know the commands.
#[test]
fn every_command_has_an_example_and_completions_cover_them() {
    let commands: &[&[&str]] = &[
        &["validate"],
        &["plan"],
        &["apply"],
        &["status"],
        &["stop"],
        &["start"],
        &["restart"],
        &["prune"],
        &["destroy"],
        &["failover"],
        &["rebalance"],
        &["rotate-password"],
        &["logs"],
        &["events"],
        &["lab", "up"],
        &["lab", "status"],
        &["lab", "down"],
        &["certs", "init"],
        &["certs", "issue"],
        &["completions"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let out = paddock(&args);
        assert!(out.status.success(), "{c:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("Example: paddock "),
            "{c:?} --help has no example:\n{}",
            stdout(&out)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = paddock(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for sub in ["apply", "failover", "rebalance", "rotate-password", "lab"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        if shell == "bash" {
            let path = dir.path().join("paddock.bash");
            std::fs::write(&path, &script).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap();
            assert!(check.status.success(), "bash -n: {}", stderr(&check));
        }
    }
    let bad = paddock(&["completions", "tcsh"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("bash"), "{}", stderr(&bad));
}
