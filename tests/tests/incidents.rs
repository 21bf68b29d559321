//! `paddock status` during incidents (issue 13, item 2): with one agent
//! frozen (SIGSTOP) or killed, or one redis-server frozen, status answers
//! within about 3 s, names the unreachable host, and shows its instances
//! as the other nodes see them (serving, UNMANAGED), not as "no master
//! serving slots". `--limit` restricts status and plan to some hosts, and
//! plan works on the reachable part, naming what it skipped.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use paddock_tests::{Lab, apply_agreeing, paddock, process_is, stderr, stdout};

/// What status must answer within, whatever the agents do. The design
/// bound is about 3 s (1.2 s dial + 1.5 s per call); twice that leaves room
/// for a busy 2-core CI machine without letting a hang pass.
const STATUS_BOUND: Duration = Duration::from_secs(6);

fn agent_pid(lab: &Lab, host: &str) -> u32 {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("lab.json")).unwrap())
            .unwrap();
    state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["host"] == host)
        .and_then(|a| a["pid"].as_u64())
        .unwrap() as u32
}

/// SIGCONTs a process we stopped when dropped, so a failing assertion
/// leaves nothing frozen (the lab's Drop then stops it).
struct Frozen {
    pid: u32,
    name: &'static str,
}

impl Frozen {
    fn new(pid: u32, name: &'static str) -> Frozen {
        assert!(process_is(pid, name), "pid {pid} is not {name}");
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        Frozen { pid, name }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if process_is(self.pid, self.name) {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGCONT);
        }
    }
}

/// Each node's maxmemory-policy and whether it reports cluster_state:ok, as
/// an independent client reads them.
fn policies(lab: &Lab) -> Vec<(std::net::IpAddr, u16, String, bool)> {
    let password = lab.password();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut out = Vec::new();
        for (ip, port) in lab.nodes() {
            let mut c = paddock_tests::connect(ip, port, &password).await.unwrap();
            let v: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut c)
                .await
                .unwrap();
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .unwrap();
            out.push((ip, port, v[1].clone(), info.contains("cluster_state:ok")));
        }
        out
    })
}

fn set_policy(inventory: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(inventory).unwrap();
    let (from, to) = (
        format!("maxmemory_policy = \"{from}\""),
        format!("maxmemory_policy = \"{to}\""),
    );
    assert!(text.contains(&from), "{text}");
    std::fs::write(inventory, text.replace(&from, &to)).unwrap();
}

/// `paddock status --json` (plus `extra`), how long it took, and its JSON.
fn timed_status(inventory: &Path, extra: &[&str]) -> (Duration, serde_json::Value) {
    let inventory = inventory.display().to_string();
    let mut args = vec!["status", "-i", inventory.as_str(), "--json"];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let out = paddock(&args);
    let took = started.elapsed();
    let json = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e})"));
    (took, json)
}

fn host<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {status}"))
}

fn problems(status: &serde_json::Value) -> Vec<String> {
    status["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// The host's agent is reported unreachable, and its two instances as
/// serving (a master with slots and a replica), from the others' view.
fn assert_unmanaged_but_serving(status: &serde_json::Value, name: &str) {
    let h = host(status, name);
    assert!(h["agent_error"].is_string(), "{name} unreachable: {h}");
    let instances = h["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{h}");
    for i in instances {
        assert_eq!(i["state"], "UNMANAGED", "{i}");
        assert_eq!(i["hearsay"], true, "{i}");
    }
    let roles: Vec<&str> = instances
        .iter()
        .map(|i| i["role"].as_str().unwrap_or("-"))
        .collect();
    assert!(
        roles.contains(&"master") && !roles.contains(&"-"),
        "each serving, one a master with slots: {roles:?}"
    );
    assert!(
        instances
            .iter()
            .any(|i| i["role"] == "master" && i["slot_count"].as_u64() > Some(0)),
        "{h}"
    );
    let p = problems(status);
    assert!(
        p.iter()
            .any(|p| p.starts_with(&format!("host {name}: agent unreachable"))),
        "{p:?}"
    );
    assert!(
        !p.iter()
            .any(|p| p.contains("no master serving slots")
                || p.contains("not running or not answering")),
        "a healthy Redis behind a dead agent is not a missing master: {p:?}"
    );
    assert_eq!(status["healthy"], false);
}

#[test]
fn status_answers_and_sees_through_a_frozen_or_dead_agent() {
    let lab = Lab::new(83);
    assert!(lab.up(&[]).status.success(), "lab up");
    let inventory = lab.inventory();
    let (took, s) = timed_status(&inventory, &[]);
    assert_eq!(s["healthy"], true, "{s}");
    eprintln!("status, all agents up: {took:?}");

    // apply --limit box1: only box1's instances take a config change (set
    // live: CONFIG SET, the same processes); the others, out of the limit
    // by choice, are named, and the exit status is 0.
    let box1_pids = || -> Vec<String> {
        ["redis-7000", "redis-7001"]
            .map(|i| std::fs::read_to_string(lab.pidfile(0, i)).unwrap())
            .to_vec()
    };
    let running = box1_pids();
    set_policy(&inventory, "noeviction", "allkeys-random");
    let apply = apply_agreeing(&["-i", &inventory.display().to_string(), "--limit", "box1"]);
    assert_eq!(apply.status.code(), Some(0), "apply --limit box1");
    let out = stdout(&apply);
    assert!(out.contains("box3: skipped (not in --limit)"), "{out}");
    for (ip, port, policy, ok) in policies(&lab) {
        assert!(ok, "{ip}:{port} cluster_state ok");
        assert_eq!(
            policy == "allkeys-random",
            ip == lab.addresses[0],
            "{ip}:{port}: {policy}"
        );
    }
    assert_eq!(
        box1_pids(),
        running,
        "set live: box1's instances kept running"
    );
    // Set live, nothing handed over: the masters keep their spread.
    let (_, s) = timed_status(&inventory, &[]);
    assert_eq!(s["healthy"], true, "no master moved: {s}");
    let whole = apply_agreeing(&["-i", &inventory.display().to_string()]);
    assert!(whole.status.success(), "apply: {}", stderr(&whole));
    let (_, s) = timed_status(&inventory, &[]);
    assert_eq!(s["healthy"], true, "{s}");

    // A frozen agent: its kernel still accepts the TCP connection, so only
    // a deadline on the handshake and on each call ends the wait.
    let box2 = agent_pid(&lab, "box2");
    {
        let _frozen = Frozen::new(box2, "paddockd");
        let (took, s) = timed_status(&inventory, &[]);
        eprintln!("status, box2's agent SIGSTOPped: {took:?}");
        assert!(took < STATUS_BOUND, "status took {took:?}");
        assert_unmanaged_but_serving(&s, "box2");
        // The text form names it too.
        let text = paddock(&["status", "-i", &inventory.display().to_string()]);
        assert_eq!(text.status.code(), Some(1));
        assert!(stdout(&text).contains("box2           agent unreachable"));
        assert!(stdout(&text).contains("UNMANAGED"));
    }
    let back = (0..50).any(|_| {
        let (_, s) = timed_status(&inventory, &[]);
        s["healthy"] == true || {
            std::thread::sleep(Duration::from_millis(200));
            false
        }
    });
    assert!(back, "healthy again once the agent runs on");

    // A frozen redis-server behind a live agent: the agent's own command
    // to it is cut at the call's deadline, and it does not hold up the
    // agent's other instance.
    let redis_pid: u32 = std::fs::read_to_string(lab.pidfile(0, "redis-7000"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    {
        let _frozen = Frozen::new(redis_pid, "redis-server");
        // Three times: which of the two calls reaches the agent first is
        // up to chance, and only a call queued behind the frozen one shows
        // the agent holding one instance's wait against another.
        for _ in 0..3 {
            let (took, s) = timed_status(&inventory, &[]);
            eprintln!("status, box1's redis-7000 SIGSTOPped: {took:?}");
            assert!(took < STATUS_BOUND, "status took {took:?}");
            let other = host(&s, "box1")["instances"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == "redis-7001")
                .cloned()
                .unwrap();
            assert_eq!(other["hearsay"], false, "answered itself: {other}");
            assert!(other["role"].is_string(), "{other}");
        }
    }

    // A dead agent: the same, and --limit restricts what is shown.
    kill(Pid::from_raw(box2 as i32), Signal::SIGKILL).unwrap();
    let (took, s) = timed_status(&inventory, &[]);
    eprintln!("status, box2's agent killed: {took:?}");
    assert!(took < STATUS_BOUND, "status took {took:?}");
    assert_unmanaged_but_serving(&s, "box2");
    let (_, limited) = timed_status(&inventory, &["--limit", "box1,127.0.83.3"]);
    let shown: Vec<&str> = limited["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["box1", "box3"]);
    let unknown = paddock(&[
        "status",
        "-i",
        &inventory.display().to_string(),
        "--limit",
        "box9",
    ]);
    assert!(!unknown.status.success());
    assert!(
        paddock_tests::stderr(&unknown).contains("no host \"box9\""),
        "names the unknown host"
    );

    // plan works on the reachable part and names what it skipped.
    let plan = paddock(&["plan", "-i", &inventory.display().to_string()]);
    assert!(plan.status.success(), "plan with box2's agent dead");
    let text = stdout(&plan);
    assert!(
        text.contains("box2: skipped (agent unreachable"),
        "names the skipped host: {text}"
    );
    assert!(
        !text.contains("box2:redis-"),
        "plans nothing on box2: {text}"
    );
    let plan = paddock(&[
        "plan",
        "-i",
        &inventory.display().to_string(),
        "--limit",
        "box1",
    ]);
    assert!(plan.status.success());
    assert!(stdout(&plan).contains("box3: skipped (not in --limit)"));

    // failover of a shard that does not involve box2 works without it.
    let (_, s) = timed_status(&inventory, &[]);
    let heir = ["box1", "box3"]
        .iter()
        .flat_map(|h| {
            host(&s, h)["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |i| (h, i))
        })
        .find(|(_, i)| {
            i["role"] == "replica"
                && i["master"]
                    .as_str()
                    .is_some_and(|m| !m.starts_with("box2:"))
        })
        .map(|(h, i)| format!("{h}:{}", i["name"].as_str().unwrap()))
        .expect("a shard with no member on box2");
    let failover = paddock(&[
        "failover",
        "-i",
        &inventory.display().to_string(),
        "--to",
        &heir,
    ]);
    assert!(failover.status.success(), "failover to {heir} without box2");
    assert!(paddock_tests::stderr(&failover).contains("box2: skipped (agent unreachable"));

    // events watch the agents that answer, naming the one that does not.
    let events = paddock(&[
        "events",
        "-i",
        &inventory.display().to_string(),
        "--seconds",
        "1",
    ]);
    assert!(events.status.success(), "events without box2");
    assert!(paddock_tests::stderr(&events).contains("box2: skipped"));

    // A config change applies to the other hosts; box2 is left alone and
    // named, and so is a master whose only replica is behind box2's agent
    // (it cannot hand its slots over, so it is not restarted).
    set_policy(&inventory, "allkeys-random", "allkeys-lru");
    let apply = apply_agreeing(&["-i", &inventory.display().to_string()]);
    // Exit 3 (an agent unreachable; 4 is "locked"): done where it could be.
    assert_eq!(apply.status.code(), Some(3), "apply without box2");
    let out = stdout(&apply);
    assert!(out.contains("box2: skipped (agent unreachable"), "{out}");
    let policies = policies(&lab);
    eprintln!("after apply without box2: {policies:?}");
    for (ip, port, policy, ok) in &policies {
        assert!(ok, "{ip}:{port} cluster_state ok");
        if *ip == lab.addresses[1] {
            // The whole apply above gave it the first change only.
            assert_eq!(policy, "allkeys-random", "box2 left alone");
        }
    }
    let changed = policies.iter().filter(|p| p.2 == "allkeys-lru").count();
    assert!(changed >= 2, "the other hosts' instances took the change");
}

/// The sentinel topology: with the master's agent dead, the master and
/// that box's sentinel show as serving (from the replicas' INFO
/// replication and the other sentinels), and the only problem is the
/// unreachable agent.
#[test]
fn sentinel_status_sees_through_a_dead_agent() {
    let lab = Lab::new(84);
    assert!(
        lab.up(&["--topology", "sentinel"]).status.success(),
        "lab up"
    );
    let inventory = lab.inventory();
    let (_, s) = timed_status(&inventory, &[]);
    assert_eq!(s["healthy"], true, "{s}");
    let master_host = s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["instances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["role"] == "master")
        })
        .map(|h| h["name"].as_str().unwrap().to_owned())
        .unwrap();
    let pid = agent_pid(&lab, &master_host);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let (took, s) = timed_status(&inventory, &[]);
    eprintln!("sentinel status, {master_host}'s agent killed: {took:?}");
    assert!(took < STATUS_BOUND, "status took {took:?}");
    let h = host(&s, &master_host);
    assert!(h["agent_error"].is_string(), "{h}");
    for i in h["instances"].as_array().unwrap() {
        assert_eq!(i["state"], "UNMANAGED", "{i}");
        assert_eq!(i["hearsay"], true, "{i}");
    }
    assert!(
        h["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["role"] == "master"),
        "{h}"
    );
    let p = problems(&s);
    assert_eq!(p.len(), 1, "only the unreachable agent: {p:?}");
    assert!(p[0].starts_with(&format!("host {master_host}: agent unreachable")));
    // plan has nothing to repair on the hosts that answer.
    let plan = paddock(&["plan", "-i", &inventory.display().to_string()]);
    assert!(plan.status.success());
    let text = stdout(&plan);
    assert!(
        text.contains(&format!("{master_host}: skipped (agent unreachable")),
        "{text}"
    );
    assert!(text.contains("No changes on the hosts acted on"), "{text}");
}
