//! Prints how long Paddock takes to deploy the lab's 3 x 2 cluster, and what
//! the agent costs as a supervisor.
//!
//!   cargo build --release --workspace --bins && target/release/paddock-bench [deploy|agent|failover|scale|reshard|all] [ROUNDS]
//!
//! `scale`: cold and no-op apply of a cluster of 10, 25 and 50 agents on
//! 127.0.2.x, one instance each.
//!
//! `reshard`: a quarter of the slots of 1,000,000 keys moved to a new
//! master by Paddock and by redis-cli, under a client's load, once per run
//! whatever ROUNDS says (paddock_tests::reshard; 127.0.170.x and 127.0.171.x).
//!
//! `--write BENCHMARKS.md` replaces the generated part of that file (between
//! its markers) with the printed tables; a single part (not `all`)
//! replaces only its own table there, dated, and keeps the others.
//!
//! `failover`: per topology, the longest gap of a client's writes when the
//! master's redis-server is SIGKILLed, with Paddock's defaults and with
//! Redis's own (the agent frozen), on 127.0.33.1-3.
//!
//! `agent`: one paddockd (127.0.32.1) with two redis-server instances;
//! SIGKILL of a redis-server to PING answered again by its replacement
//! (ROUNDS x 4 kills), the agent's resident memory, and its CPU time over
//! 10 idle seconds.
//!
//! Each round uses fresh agents on 127.0.31.1-3 (no Redis running) and
//! measures, with the redis crate as an independent observer:
//! - cold apply: `apply` start to cluster_state:ok on all six nodes;
//! - no-op apply: a second `paddock apply` process, start to exit;
//! - formation: first CLUSTER MEET to converged, on instances that have been
//!   running for 3 s (past Redis's 2 s writable delay for fresh masters).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use paddock_controller::apply::{ApplyOptions, apply};
use paddock_tests::ha::{Follow, Follower, write_through};
use paddock_tests::{Lab, connect, field, paddock, wait_until};

async fn all_ok(lab: &Lab, password: &str) -> bool {
    for (ip, port) in lab.nodes() {
        let Ok(mut c) = connect(ip, port, password).await else {
            return false;
        };
        let info: String = match redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await {
            Ok(i) => i,
            Err(_) => return false,
        };
        if field(&info, "cluster_state").as_deref() != Some("ok") {
            return false;
        }
    }
    true
}

fn quiet() -> ApplyOptions {
    ApplyOptions {
        progress: false,
        ..ApplyOptions::default()
    }
}

struct Round {
    cold: Duration,
    noop: Duration,
    formation: Duration,
}

async fn round() -> Round {
    // Cold: agents up, nothing else.
    let lab = Lab::new(31);
    assert!(lab.up(&["--no-apply"]).status.success(), "lab up failed");
    let inventory = lab.inventory();
    let t0 = Instant::now();
    apply(&inventory, &quiet()).await.expect("cold apply");
    let password = lab.password();
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(2), || {
        all_ok(&lab, &password)
    })
    .await;
    assert!(ok, "cluster never became ok");
    let cold = t0.elapsed();

    // No-op: the real CLI process, as an operator runs it.
    let t0 = Instant::now();
    let out = paddock(&["apply", "-i", &inventory.display().to_string()]);
    let noop = t0.elapsed();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Nothing to do"));
    drop(lab);

    // Formation of already-running instances.
    let lab = Lab::new(31);
    assert!(lab.up(&["--no-apply"]).status.success());
    let inventory = lab.inventory();
    let started = ApplyOptions {
        form: false,
        ..quiet()
    };
    apply(&inventory, &started).await.expect("start instances");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = apply(&inventory, &quiet()).await.expect("formation");
    let formation = report.formation.expect("formation ran");
    Round {
        cold,
        noop,
        formation,
    }
}

fn stats(label: &str, unit: &str, mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    format!(
        "| {label} | {median:.3} {unit} | {:.3} | {:.3} |",
        v[0],
        v[v.len() - 1]
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args
        .iter()
        .find(|a| a.parse::<usize>().is_err() && *a != "--write" && !a.ends_with(".md"))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5);
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut sections = Vec::new();
    if mode == "agent" || mode == "all" {
        sections.push(("The agent as a supervisor", agent_bench(rounds).await));
    }
    if mode == "deploy" || mode == "all" {
        sections.push((
            "Deploying the lab cluster (3 boxes x 2 instances)",
            deploy_bench(rounds).await,
        ));
    }
    if mode == "failover" || mode == "all" {
        sections.push((
            "Failover when a master's redis-server dies",
            failover_bench(rounds).await,
        ));
    }
    if mode == "scale" || mode == "all" {
        sections.push(("Apply as the fleet grows", scale_bench(rounds.min(3)).await));
    }
    if mode == "reshard" || mode == "all" {
        sections.push((
            "Moving a quarter of the slots to a new master",
            paddock_tests::reshard::reshard_bench().await,
        ));
    }
    let mut text = String::new();
    for (title, table) in &sections {
        let _ = writeln!(text, "### {title}\n\n{table}");
    }
    print!("{text}");
    if let Some(path) = write {
        if mode == "all" {
            rewrite(Path::new(&path), &text, rounds);
        } else {
            rewrite_sections(Path::new(&path), &sections, &mode, rounds);
        }
    }
}

/// How the failover bench sets a lab up.
#[derive(Clone, Copy)]
enum Setup {
    /// Paddock's defaults: fast failover on, cluster-node-timeout 5 s,
    /// down-after-milliseconds 5 s.
    Paddock,
    /// Redis's own defaults (cluster-node-timeout 15 s, down-after 30 s,
    /// failover-timeout 180 s), and the agent of the master's box frozen
    /// (SIGSTOP) before the kill: only Redis's own detection acts.
    RedisAlone,
}

fn agent_pid(lab: &Lab, box_index: usize) -> u32 {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir().join("lab.json")).unwrap()).unwrap();
    state["agents"][box_index]["pid"].as_u64().unwrap() as u32
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Longest gap between two acknowledged writes when box1's master's
/// redis-server is SIGKILLed one second into `total` of writing. Cluster:
/// a key of box1's shard through a cluster client; replication and
/// sentinel: a client that asks each member's role, or Sentinel.
async fn failover_gap(topology: &str, setup: Setup, total: Duration) -> Duration {
    use redis::AsyncCommands;
    let lab = Lab::new(33);
    assert!(
        lab.up(&["--topology", topology, "--no-apply"])
            .status
            .success(),
        "lab up"
    );
    let inventory = lab.inventory();
    if let Setup::RedisAlone = setup {
        let text = std::fs::read_to_string(&inventory).unwrap();
        let text = text
            .replace(
                "cluster_node_timeout_ms = 5000",
                "cluster_node_timeout_ms = 15000",
            )
            .replace(
                "port = 26379\n",
                "port = 26379\ndown_after_ms = 30000\nfailover_timeout_ms = 180000\n",
            );
        std::fs::write(&inventory, text).unwrap();
    }
    let applied = paddock(&["apply", "-i", &inventory.display().to_string()]);
    assert!(applied.status.success(), "apply");
    let password = lab.password();
    let victim: u32 = std::fs::read_to_string(lab.pidfile(0, "redis-7000"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let agent = agent_pid(&lab, 0);
    let fault = move || {
        if let Setup::RedisAlone = setup {
            signal(agent, nix::sys::signal::Signal::SIGSTOP);
        }
        signal(victim, nix::sys::signal::Signal::SIGKILL);
    };
    let gap = if topology == "cluster" {
        let mut node = connect(lab.addresses[0], 7000, &password).await.unwrap();
        let mut key = String::new();
        for n in 0.. {
            key = format!("fo:{n}");
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query_async(&mut node)
                .await
                .unwrap();
            if slot <= 5460 {
                break;
            }
        }
        let client = redis::cluster::ClusterClientBuilder::new(lab.seeds())
            .password(password.clone())
            .connection_timeout(Duration::from_millis(200))
            .response_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let mut c = client.get_async_connection().await.unwrap();
        let start = Instant::now();
        let mut fault = Some(fault);
        let mut last_ok = Instant::now();
        let mut longest = Duration::ZERO;
        let mut i: u64 = 0;
        while start.elapsed() < total && i < 5_000_000 {
            i += 1;
            if start.elapsed() > Duration::from_secs(1)
                && let Some(f) = fault.take()
            {
                f();
            }
            let r =
                tokio::time::timeout(Duration::from_millis(300), c.set::<_, _, ()>(&key, i)).await;
            if matches!(r, Ok(Ok(()))) {
                let now = Instant::now();
                longest = longest.max(now - last_ok);
                last_ok = now;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        longest.max(last_ok.elapsed())
    } else {
        let follow = if topology == "sentinel" {
            Follow::Sentinel {
                sentinels: lab.addresses.iter().map(|&ip| (ip, 26379)).collect(),
                name: "lab".into(),
            }
        } else {
            Follow::Role(lab.addresses.iter().map(|&ip| (ip, 7000)).collect())
        };
        let mut follower = Follower::new(follow, &password);
        write_through(&mut follower, "fo", total, Duration::from_secs(1), fault)
            .await
            .longest_gap
    };
    signal(agent, nix::sys::signal::Signal::SIGCONT);
    gap
}

async fn failover_bench(rounds: usize) -> String {
    let mut out = String::new();
    let mut rows = Vec::new();
    for (topology, setup, total, label) in [
        (
            "cluster",
            Setup::Paddock,
            Duration::from_secs(8),
            "Paddock defaults (node timeout 5 s, fast failover)",
        ),
        (
            "cluster",
            Setup::RedisAlone,
            Duration::from_secs(30),
            "Redis alone (node timeout 15 s)",
        ),
        (
            "sentinel",
            Setup::Paddock,
            Duration::from_secs(8),
            "Paddock defaults (down-after 5 s, fast failover)",
        ),
        (
            "sentinel",
            Setup::RedisAlone,
            Duration::from_secs(45),
            "Redis alone (down-after 30 s)",
        ),
        (
            "replication",
            Setup::Paddock,
            Duration::from_secs(8),
            "Paddock defaults (fast failover)",
        ),
        (
            "replication",
            Setup::RedisAlone,
            Duration::from_secs(20),
            "Redis alone (no automatic failover)",
        ),
    ] {
        let mut gaps = Vec::new();
        for r in 0..rounds {
            let g = failover_gap(topology, setup, total).await;
            eprintln!(
                "{topology}, {label}, round {}: longest write gap {:.0} ms",
                r + 1,
                g.as_secs_f64() * 1e3
            );
            gaps.push(g.as_secs_f64() * 1e3);
        }
        let mut row = stats(
            &format!("{topology} master SIGKILL, longest gap of writes: {label} (ms)"),
            "ms",
            gaps,
        );
        if gaps_cover(&row, total) {
            row.push_str(&format!(
                " (writes never resumed within the {} s measured)",
                total.as_secs()
            ));
        }
        rows.push(row);
    }
    let _ = writeln!(
        out,
        "| failover measurement ({rounds} rounds) | median | min | max |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for r in rows {
        let _ = writeln!(out, "{r}");
    }
    out
}

/// Whether the median gap is (nearly) the whole measurement: no recovery.
fn gaps_cover(row: &str, total: Duration) -> bool {
    row.split('|')
        .nth(2)
        .and_then(|m| m.trim().split(' ').next()?.parse::<f64>().ok())
        .is_some_and(|median| median >= (total.as_secs_f64() - 1.5) * 1e3)
}

async fn deploy_bench(rounds: usize) -> String {
    let mut out = String::new();
    let bin = paddock_tests::bin_dir();
    eprintln!("binaries from {}, {rounds} round(s)", bin.display());
    assert!(Path::new("/proc/self").exists());
    let mut all = Vec::new();
    for i in 0..rounds {
        let r = round().await;
        eprintln!(
            "round {}: cold {:.3}s, no-op {:.1}ms, formation {:.1}ms",
            i + 1,
            r.cold.as_secs_f64(),
            r.noop.as_secs_f64() * 1e3,
            r.formation.as_secs_f64() * 1e3
        );
        all.push(r);
    }
    let _ = writeln!(
        out,
        "| measurement ({rounds} rounds) | median | min | max |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "{}",
        stats(
            "cold apply to cluster_state:ok everywhere (s)",
            "s",
            all.iter().map(|r| r.cold.as_secs_f64()).collect()
        )
    );
    let _ = writeln!(
        out,
        "{}",
        stats(
            "no-op re-apply, whole CLI process (ms)",
            "ms",
            all.iter().map(|r| r.noop.as_secs_f64() * 1e3).collect()
        )
    );
    let _ = writeln!(
        out,
        "{}",
        stats(
            "formation, first MEET to converged (ms)",
            "ms",
            all.iter()
                .map(|r| r.formation.as_secs_f64() * 1e3)
                .collect()
        )
    );
    out
}

/// Reads a field of /proc/PID/status in kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

async fn agent_bench(rounds: usize) -> String {
    let mut out = String::new();
    use paddock_controller::client::{AgentClient, InstanceSpec, RedisMode};
    const ADDR: &str = "127.0.32.1";
    let dir = paddock_tests::agent::temp_dir();
    let mut agent = paddock_tests::agent::command(
        &paddock_tests::bin_dir().join("paddockd"),
        dir.path(),
        ADDR,
        "",
    )
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let addr = format!("{ADDR}:7443").parse().unwrap();
    let client = loop {
        if let Ok(c) = AgentClient::connect(
            "bench",
            addr,
            &paddock_controller::client::Transport::Plaintext,
        )
        .await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let password = "bench-password-0123456789abcdef".to_owned();
    for port in [7000u16, 7001] {
        let spec = InstanceSpec {
            name: format!("redis-{port}"),
            deployment: "bench".into(),
            address: ADDR.parse().unwrap(),
            port,
            mode: RedisMode::Standalone,
            maxmemory_bytes: 0,
            maxmemory_policy: Default::default(),
            appendonly: false,
            rdb_snapshots: false,
            cluster_node_timeout: Duration::from_secs(5),
            min_replicas_to_write: 0,
            min_replicas_max_lag: Duration::from_secs(10),
            password: password.clone(),
            supervision: Default::default(),
            users: Vec::new(),
            sentinel: None,
            group: None,
            members: Default::default(),
        };
        client.put_instance(&spec, false).await.unwrap();
        client.start(&spec.name).await.unwrap();
    }
    let ip: std::net::IpAddr = ADDR.parse().unwrap();
    let mut restarts = Vec::new();
    for k in 0..rounds * 4 {
        let port = 7000 + (k % 2) as u16;
        let list = client.list().await.unwrap();
        let pid = list
            .iter()
            .find(|s| s.port == port)
            .and_then(|s| s.pid)
            .unwrap();
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Answered by the new process: a PONG from a pid that is not the old one.
        loop {
            if let Ok(mut c) = connect(ip, port, &password).await {
                let info: redis::RedisResult<String> =
                    redis::cmd("INFO").arg("server").query_async(&mut c).await;
                if let Ok(info) = info
                    && field(&info, "process_id")
                        .and_then(|p| p.parse::<u32>().ok())
                        .is_some_and(|p| p != pid)
                {
                    let pong: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        break;
                    }
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no restart");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        restarts.push(t0.elapsed().as_secs_f64() * 1e3);
        // Each instance is killed every 1.2 s, past the agent's 1 s
        // stable period: every kill is a crash, not a crash loop.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_kb = status_kb(agent.id(), "VmRSS:");
    let ticks0 = cpu_ticks(agent.id());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ticks = cpu_ticks(agent.id()) - ticks0;
    let hz = 100.0; // USER_HZ on Linux
    let cpu_pct = ticks as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    for port in [7000u16, 7001] {
        let _ = client.stop(&format!("redis-{port}")).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = writeln!(out, "| agent measurement | median | min | max |");
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "{}",
        stats(
            &format!(
                "SIGKILL of redis-server to PING answered again ({} kills, ms)",
                restarts.len()
            ),
            "ms",
            restarts
        )
    );
    let _ = writeln!(
        out,
        "| agent resident memory, idle, 2 instances | {:.1} MB | | |",
        rss_kb as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| agent CPU over 10 s idle | {cpu_pct:.2} % ({ticks} ticks of 10 ms) | | |"
    );
    out
}

const BEGIN: &str =
    "<!-- paddock-bench: begin (rewritten by `paddock-bench all N --write BENCHMARKS.md`) -->";
const END: &str = "<!-- paddock-bench: end -->";

/// The machine the figures were taken on: CPUs, memory, Redis's version.
fn machine() -> String {
    format!(
        "{} CPU(s), {} MiB, redis-server {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(|l| l
                .split_whitespace()
                .nth(1)
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0)
                / 1024))
            .unwrap_or(0),
        std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .unwrap_or("?")
                .trim_start_matches("v=")
                .to_owned())
            .unwrap_or_default()
    )
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Replaces the generated part of BENCHMARKS.md (between the markers) with
/// `tables`; everything around it (how to read the figures) stays.
fn rewrite(path: &Path, tables: &str, rounds: usize) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let machine = machine();
    let date = today();
    let generated = format!(
        "{BEGIN}\n\nMeasured {date} on {machine}, release build, {rounds} round(s) (the fleet sizes: up to 3; the reshard: once).\n\n{tables}{END}"
    );
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{generated}{}", &old[..a], &old[b + END.len()..]),
        _ => format!("{old}\n## Latest run\n\n{generated}\n"),
    };
    std::fs::write(path, new).expect("write BENCHMARKS.md");
    eprintln!("rewrote {}", path.display());
}

/// Cold and no-op apply of an N-instance cluster, one instance per agent,
/// for N = 10, 25 and 50 agents on 127.0.2.x.
async fn scale_bench(rounds: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| agents (one instance each) | cold apply, median | min | max | no-op apply, median |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for n in [10usize, 25, 50] {
        let mut cold = Vec::new();
        let mut noop = Vec::new();
        for r in 0..rounds {
            let dir = tempfile::Builder::new()
                .prefix("paddock-scale-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .tempdir()
                .unwrap();
            let addresses: Vec<String> = (1..=n).map(|i| format!("127.0.2.{i}")).collect();
            let d = dir.path().display().to_string();
            let up = paddock(&[
                "lab",
                "up",
                "--dir",
                &d,
                "--addresses",
                &addresses.join(","),
                "--no-apply",
            ]);
            assert!(up.status.success(), "lab up with {n} agents");
            let inventory = dir.path().join("inventory.toml");
            let text = std::fs::read_to_string(&inventory).unwrap();
            std::fs::write(
                &inventory,
                text.replace("masters = 3\n", &format!("masters = {}\n", n / 2)),
            )
            .unwrap();
            let t0 = Instant::now();
            apply(&inventory, &quiet()).await.expect("cold apply");
            cold.push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            let again = paddock(&["apply", "-i", &inventory.display().to_string()]);
            noop.push(t0.elapsed().as_secs_f64() * 1e3);
            assert!(String::from_utf8_lossy(&again.stdout).contains("Nothing to do"));
            let _ = paddock(&["lab", "down", "--dir", &d]);
            eprintln!(
                "{n} agents, round {}: cold {:.3} s, no-op {:.1} ms",
                r + 1,
                cold[r],
                noop[r]
            );
        }
        cold.sort_by(f64::total_cmp);
        noop.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "| {n} | {:.3} s | {:.3} | {:.3} | {:.1} ms |",
            cold[cold.len() / 2],
            cold[0],
            cold[cold.len() - 1],
            noop[noop.len() / 2]
        );
    }
    out
}

/// Replaces, in the generated part of BENCHMARKS.md, only the tables of
/// `sections` (one part run alone), each marked with its own date; the
/// other parts' tables and the common header stay as the last `all` wrote
/// them.
fn rewrite_sections(path: &Path, sections: &[(&str, String)], mode: &str, rounds: usize) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let note = format!(
        "Measured {} on {}, release build, by `paddock-bench {mode}` alone.",
        today(),
        machine()
    );
    let Some(new) = merge_sections(&old, sections, &note) else {
        let mut text = String::new();
        for (title, table) in sections {
            let _ = writeln!(text, "### {title}\n\n{table}");
        }
        return rewrite(path, &text, rounds);
    };
    std::fs::write(path, new).expect("write BENCHMARKS.md");
    eprintln!("rewrote the {mode} table(s) of {}", path.display());
}

/// `old` with each of `sections` (title, table) put in place of the
/// generated table of the same title, or after the last one, under `note`;
/// None when `old` has no generated part.
fn merge_sections(old: &str, sections: &[(&str, String)], note: &str) -> Option<String> {
    let (a, b) = (old.find(BEGIN)?, old.find(END)?);
    if b < a {
        return None;
    }
    let mut parts: Vec<String> = old[a + BEGIN.len()..b]
        .split("\n### ")
        .map(|p| p.trim().to_owned())
        .collect();
    for (title, table) in sections {
        let body = format!("{title}\n\n{note}\n\n{}", table.trim_end());
        match parts
            .iter_mut()
            .skip(1)
            .find(|p| p.lines().next() == Some(*title))
        {
            Some(p) => *p = body,
            None => parts.push(body),
        }
    }
    let header = parts.remove(0);
    let tables: Vec<String> = parts.iter().map(|p| format!("### {p}")).collect();
    Some(format!(
        "{}{BEGIN}\n\n{header}\n\n{}\n\n{END}{}",
        &old[..a],
        tables.join("\n\n"),
        &old[b + END.len()..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_part_replaces_only_its_own_table() {
        let old = format!(
            "intro\n\n{BEGIN}\n\nMeasured then.\n\n### A\n\n| a |\n\n### B\n\n| b |\n\n{END}\n\nafter\n"
        );
        let b = merge_sections(&old, &[("B", "| new b |\n".into())], "Today.").unwrap();
        assert_eq!(
            b,
            format!(
                "intro\n\n{BEGIN}\n\nMeasured then.\n\n### A\n\n| a |\n\n### B\n\nToday.\n\n| new b |\n\n{END}\n\nafter\n"
            )
        );
        let c = merge_sections(&b, &[("C", "| c |\n".into())], "Now.").unwrap();
        assert!(c.contains("### B\n\nToday.\n\n| new b |\n\n### C\n\nNow.\n\n| c |\n\n<!--"));
        assert!(c.starts_with("intro\n\n") && c.ends_with(&format!("{END}\n\nafter\n")));
        assert_eq!(merge_sections("no markers", &[], ""), None);
    }
}
