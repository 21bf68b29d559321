//! The agent's redis-server: a configured path that does not exist is an
//! error naming it (nothing installed, nothing upgraded), and a Redis older
//! than 7.0 is refused at plan and apply with the version it is.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use paddock_tests::{Lab, apply_agreeing, bin_dir, paddock, stderr, stdout, wait_until};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Replaces box3's agent with one whose config sets `redis_server`, and
/// records its pid in the lab's state so `lab down` stops it.
async fn restart_box3_agent(lab: &Lab, redis_server: &str, previous: Option<Child>) -> Child {
    let state_path = lab.dir().join("lab.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let agents = state["agents"].as_array_mut().unwrap();
    let box3 = agents.iter_mut().find(|a| a["host"] == "box3").unwrap();
    let pid = box3["pid"].as_u64().unwrap() as u32;
    match previous {
        Some(mut child) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        None => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            assert!(
                wait_until(
                    Duration::from_secs(20),
                    Duration::from_millis(20),
                    || async { !alive(pid) }
                )
                .await,
                "box3's agent stopped"
            );
        }
    }
    let config = lab.dir().join("box3/agent.toml");
    let text: String = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("redis_server"))
        .map(|l| format!("{l}\n"))
        .collect();
    // Top-level keys go before the [tls] table.
    let text = text.replacen(
        "listen =",
        &format!("redis_server = {redis_server:?}\nlisten ="),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(lab.dir().join("box3/agent-test.log")).unwrap();
    let child = Command::new(bin_dir().join("paddockd"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    box3["pid"] = child.id().into();
    std::fs::write(&state_path, serde_json::to_string_pretty(&state).unwrap()).unwrap();
    let inventory = lab.inventory().display().to_string();
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            let inventory = inventory.clone();
            async move {
                let out = paddock(&["plan", "-i", &inventory]);
                !stderr(&out).contains("box3")
            }
        })
        .await,
        "box3's agent answers again"
    );
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_configured_redis_server_or_an_old_redis_is_refused_by_name() {
    let lab = Lab::new(87);
    let up = lab.up(&["--no-apply"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let inventory = lab.inventory().display().to_string();

    // A path that does not exist: named as the agent config's field, and
    // apply installs nothing (it used to run apt-get install redis-server).
    let missing = "/nonexistent/paddock-test/bin/redis-server";
    let agent = restart_box3_agent(&lab, missing, None).await;
    let plan = paddock(&["plan", "-i", &inventory]);
    let text = stdout(&plan);
    assert!(
        text.contains(&format!(
            "host box3: the agent config's redis_server = \"{missing}\" does not exist"
        )) && text.contains("apply refuses until it is fixed"),
        "{text}\n{}",
        stderr(&plan)
    );
    let apply = apply_agreeing(&["-i", &inventory]);
    assert!(!apply.status.success());
    let err = stderr(&apply);
    assert!(
        err.contains(&format!("redis_server = \"{missing}\" does not exist")),
        "{err}"
    );
    assert!(!err.contains("apt-get"), "nothing installed: {err}");
    assert!(
        !lab.dir().join("box1/data/control/redis-7000").exists(),
        "apply refused before changing anything"
    );

    // A Redis older than 7.0 (a stand-in that answers --version as Redis
    // 6.0 does: the host's real Redis is 7).
    let old = lab.dir().join("redis-6.0");
    std::fs::write(
        &old,
        "#!/bin/sh\necho 'Redis server v=6.0.16 sha=00000000:0 malloc=jemalloc-5.2.1 bits=64 build=6d95e1af3a2c082a'\n",
    )
    .unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let old = old.display().to_string();
    let agent = restart_box3_agent(&lab, &old, Some(agent)).await;
    let plan = paddock(&["plan", "-i", &inventory]);
    let text = stdout(&plan);
    let want = format!(
        "host box3: redis-server 6.0.16 ({old}) is too old: Paddock needs Redis 7.0 or later"
    );
    assert!(text.contains(&want), "{text}\n{}", stderr(&plan));
    let apply = apply_agreeing(&["-i", &inventory]);
    assert!(!apply.status.success());
    assert!(stderr(&apply).contains(&want), "{}", stderr(&apply));
    let mut agent = agent;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
}
