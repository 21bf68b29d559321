//! Prints how long Paddock takes to deploy the lab's 3 x 2 cluster.
//!
//!   cargo build --release --workspace --bins && target/release/paddock-bench [ROUNDS]
//!
//! Each round uses fresh agents on 127.0.31.1-3 (no Redis running) and
//! measures, with the redis crate as an independent observer:
//! - cold apply: `apply` start to cluster_state:ok on all six nodes;
//! - no-op apply: a second `paddock apply` process, start to exit;
//! - formation: first CLUSTER MEET to converged, on instances that have been
//!   running for 3 s (past Redis's 2 s writable delay for fresh masters).

use std::path::Path;
use std::time::{Duration, Instant};

use paddock_controller::apply::{ApplyOptions, apply};
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
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
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
    println!("| measurement ({rounds} rounds) | median | min | max |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        stats(
            "cold apply to cluster_state:ok everywhere (s)",
            "s",
            all.iter().map(|r| r.cold.as_secs_f64()).collect()
        )
    );
    println!(
        "{}",
        stats(
            "no-op re-apply, whole CLI process (ms)",
            "ms",
            all.iter().map(|r| r.noop.as_secs_f64() * 1e3).collect()
        )
    );
    println!(
        "{}",
        stats(
            "formation, first MEET to converged (ms)",
            "ms",
            all.iter()
                .map(|r| r.formation.as_secs_f64() * 1e3)
                .collect()
        )
    );
}
