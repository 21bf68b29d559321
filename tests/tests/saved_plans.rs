//! `paddock plan` as a program: `--json` prints the typed steps,
//! `--detailed-exitcode` tells scripts whether anything is pending, and a
//! plan saved with `--out` is applied as it was reviewed, or refused when
//! what it was computed from changed.

use paddock_tests::{Lab, apply_agreeing, paddock, stderr, stdout};

fn edit_inventory(lab: &Lab, from: &str, to: &str) {
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    assert!(text.contains(from), "{from:?} in {text}");
    std::fs::write(lab.inventory(), text.replace(from, to)).unwrap();
}

fn policies(lab: &Lab) -> Vec<String> {
    lab.nodes()
        .iter()
        .map(|&(ip, port)| {
            let out = std::process::Command::new("redis-cli")
                .args(["-h", &ip.to_string(), "-p", &port.to_string()])
                .args(["-a", &lab.password(), "--no-auth-warning"])
                .args(["CONFIG", "GET", "maxmemory-policy"])
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn plans_are_json_exit_codes_and_saved_files_refused_when_stale() {
    let lab = Lab::new(110);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inv = lab.inventory().display().to_string();
    let file = lab.dir().join("reviewed.plan");
    let file_arg = file.display().to_string();

    // Nothing pending: 0, and an empty list of steps.
    let plan = paddock(&["plan", "-i", &inv, "--detailed-exitcode", "--json"]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(json["steps"], serde_json::json!([]), "{json}");

    // A config change: 2, the typed steps, and the plan saved.
    edit_inventory(
        &lab,
        "maxmemory_policy = \"noeviction\"",
        "maxmemory_policy = \"allkeys-lru\"",
    );
    let plan = paddock(&[
        "plan",
        "-i",
        &inv,
        "--detailed-exitcode",
        "--out",
        &file_arg,
    ]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("update config"), "{}", stdout(&plan));
    // Key by key, old and new, and what it takes.
    assert_eq!(
        stdout(&plan)
            .matches("maxmemory-policy: noeviction -> allkeys-lru (set live)")
            .count(),
        6,
        "{}",
        stdout(&plan)
    );
    // Redis takes the policy live: CONFIG SET, no restart.
    assert_eq!(
        stdout(&plan)
            .matches("update config, set live (CONFIG SET / ACL SETUSER, no restart)")
            .count(),
        6,
        "{}",
        stdout(&plan)
    );
    assert!(
        !stdout(&plan).contains("restart needed")
            && !stdout(&plan).contains("restart for its new config"),
        "{}",
        stdout(&plan)
    );
    assert!(
        !stdout(&plan).contains(&lab.password()),
        "no password shown"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let steps = saved["plan"]["steps"].as_array().unwrap();
    assert_eq!(
        steps.iter().filter(|s| s["step"] == "set_live").count(),
        6,
        "{saved}"
    );

    // The inventory changed since: refused, naming why, nothing changed.
    edit_inventory(&lab, "allkeys-lru", "allkeys-random");
    let out = paddock(&["apply", &file_arg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the inventory changed since it was planned"),
        "{}",
        stderr(&out)
    );
    assert!(
        policies(&lab).iter().all(|p| p == "noeviction"),
        "{:?}",
        policies(&lab)
    );

    // Planned again, then an instance stops: what the agents report
    // differs, so the saved plan is refused too.
    let plan = paddock(&["plan", "-i", &inv, "--out", &file_arg]);
    assert!(plan.status.success());
    let stop = paddock(&["stop", "-i", &inv, "box2:redis-7001"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let out = paddock(&["apply", &file_arg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("what the agents report differs"),
        "{}",
        stderr(&out)
    );
    assert!(policies(&lab).iter().filter(|p| p.is_empty()).count() == 1);

    // Planned once more and applied as saved: --json names the steps.
    let plan = paddock(&["plan", "-i", &inv, "--out", &file_arg]);
    assert!(plan.status.success());
    let out = paddock(&["apply", "--json", &file_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(applied["rounds"][0], saved["plan"]["steps"], "{applied}");
    assert!(
        policies(&lab).iter().all(|p| p == "allkeys-random"),
        "{:?}",
        policies(&lab)
    );

    // Done: 0 again, and the same file is now stale.
    let plan = paddock(&["plan", "-i", &inv, "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));
    assert!(!paddock(&["apply", &file_arg]).status.success());
    // An error is 1.
    let missing = lab.dir().join("missing.toml").display().to_string();
    let plan = paddock(&["plan", "-i", &missing, "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(1));

    // And a change through the agreement check: the set-live plan printed
    // is what apply carried out, on the running processes (same pids).
    let pids = || -> Vec<String> {
        (0..3)
            .flat_map(|b| ["redis-7000", "redis-7001"].map(|i| lab.pidfile(b, i)))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    };
    let running = pids();
    edit_inventory(&lab, "allkeys-random", "allkeys-lru");
    let out = apply_agreeing(&["-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Applied"), "{}", stdout(&out));
    assert_eq!(pids(), running, "set live: nothing restarted");
    assert!(
        policies(&lab).iter().all(|p| p == "allkeys-lru"),
        "{:?}",
        policies(&lab)
    );
}
