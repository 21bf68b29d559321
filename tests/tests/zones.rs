//! Zones (issue 15, item 6): a six-box lab in three zones of two boxes.
//! Placement puts one master in each zone and each shard in two zones;
//! status is healthy. A failover that puts two masters in one zone (on two
//! boxes, so no host holds more than its share) makes status name the zone
//! whose loss would stop the cluster; failing back makes it healthy again.
//! And a six-box lab in two zones with two replicas per master: stopping
//! the one copy of a shard in the other zone leaves the shard in one zone,
//! which status says until the copy is back.

use std::time::Duration;

use paddock_tests::{Lab, paddock, stderr, stdout, wait_until};

/// The lab's own inventory, with zones: `lab up` keeps an inventory it
/// finds and starts an agent per address.
fn inventory(lab: &Lab, zones: &[&str]) -> String {
    inventory_with(lab, 1, zones)
}

fn inventory_with(lab: &Lab, replicas: u32, zones: &[&str]) -> String {
    let mut text = format!(
        "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\nmasters = 3\nreplicas_per_master = {replicas}\n\n\
         [redis]\nport = 7000\nmaxmemory = \"64mb\"\ncluster_node_timeout_ms = 2000\n",
    );
    for (i, (address, zone)) in lab.addresses.iter().zip(zones).enumerate() {
        text += &format!(
            "\n[[hosts]]\nname = \"box{}\"\naddress = \"{address}\"\nagent_port = 7443\nzone = \"{zone}\"\n",
            i + 1
        );
    }
    text
}

fn status(inventory: &str) -> (Option<i32>, String, serde_json::Value) {
    let text = paddock(&["status", "-i", inventory]);
    let json = paddock(&["status", "-i", inventory, "--json"]);
    let json = serde_json::from_slice(&json.stdout).unwrap_or_default();
    (text.status.code(), stdout(&text), json)
}

const ZONE_B_LOSS: &str =
    "losing zone b would take out 2 of the 3 masters (shard 0, 1): the 1 left are not a majority";

/// A lab of six boxes on 127.0.`octet`.1-6.
fn six_boxes(octet: u8) -> Lab {
    let mut lab = Lab::new(octet);
    lab.addresses = (1..=6)
        .map(|i| format!("127.0.{octet}.{i}").parse().expect("ip"))
        .collect();
    lab
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_a_zone_whose_loss_would_stop_the_cluster() {
    let lab = six_boxes(140);
    let path = lab.inventory();
    let inv = path.display().to_string();

    // Two zones: validate warns, whatever the placement (never applied).
    std::fs::write(&path, inventory(&lab, &["a", "a", "a", "b", "b", "b"])).unwrap();
    let out = paddock(&["validate", "-i", &inv]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("warning: losing zone `a` would take out 2 of the 3 masters"),
        "{}",
        stdout(&out)
    );

    std::fs::write(&path, inventory(&lab, &["a", "a", "b", "b", "c", "c"])).unwrap();
    let out = paddock(&["validate", "-i", &inv]);
    let v = stdout(&out);
    assert!(!v.contains("warning"), "{v}");
    // One master per zone, each shard in two zones.
    for line in [
        "box1           redis-7000       shard 0 master (zone a)",
        "box3           redis-7000       shard 1 master (zone b)",
        "box5           redis-7000       shard 2 master (zone c)",
        "box4           redis-7000       shard 0 replica (zone b)",
        "box6           redis-7000       shard 1 replica (zone c)",
        "box2           redis-7000       shard 2 replica (zone a)",
    ] {
        assert!(v.contains(line), "{line}\n{v}");
    }

    let up = lab.up(&[]);
    assert!(up.status.success(), "{}\n{}", stdout(&up), stderr(&up));
    let (code, text, _) = status(&inv);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Cluster healthy"), "{text}");
    assert!(!text.contains("zone"), "{text}");

    // Shard 0's replica, in zone b next to shard 1's master, takes over.
    let out = paddock(&["failover", "-i", &inv, "--to", "box4:redis-7000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut last = String::new();
    let reported = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let (code, text, _) = status(&inv);
        let hit = code == Some(1) && text.contains(ZONE_B_LOSS);
        last = text;
        async move { hit }
    })
    .await;
    assert!(reported, "{last}");
    let (_, text, json) = status(&inv);
    assert!(text.contains("NOT healthy"), "{text}");
    assert_eq!(json["healthy"], false);
    let problems: Vec<String> = json["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(problems.len(), 1, "only the zone: {problems:?}");
    assert!(problems[0].starts_with(ZONE_B_LOSS), "{problems:?}");
    assert_eq!(
        json["balance"],
        serde_json::json!([]),
        "hosts hold one master each"
    );

    // Back to zone a: healthy again.
    let out = paddock(&["failover", "-i", &inv, "--to", "box1:redis-7000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let healthy = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let (code, text, _) = status(&inv);
        last = text;
        async move { code == Some(0) }
    })
    .await;
    assert!(healthy, "{last}");
    assert!(!last.contains("zone"), "{last}");
}

const SHARD_0_IN_A: &str = "shard 0: its master and in-sync replicas (box1:redis-7000, box2:redis-7001) are all in zone a, so losing that zone loses the shard";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_a_shard_left_in_one_zone() {
    let lab = six_boxes(141);
    let path = lab.inventory();
    let inv = path.display().to_string();
    let zones = ["a", "a", "a", "b", "b", "b"];
    std::fs::write(&path, inventory_with(&lab, 2, &zones)).unwrap();
    let out = paddock(&["validate", "-i", &inv]);
    let v = stdout(&out);
    // Shard 0 in both zones: box1 and box2 in a, box5 in b.
    for line in [
        "box1           redis-7000       shard 0 master (zone a)",
        "box5           redis-7000       shard 0 replica (zone b)",
        "box2           redis-7001       shard 0 replica (zone a)",
    ] {
        assert!(v.contains(line), "{line}\n{v}");
    }

    let up = lab.up(&[]);
    assert!(up.status.success(), "{}\n{}", stdout(&up), stderr(&up));
    let (code, text, json) = status(&inv);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains(SHARD_0_IN_A), "{text}");
    // Two zones: one of them holds two masters, however they are placed;
    // a warning, not a problem.
    assert!(
        text.contains("warning: losing zone a would take out 2 of the 3 masters"),
        "{text}"
    );
    assert_eq!(json["healthy"], true);

    // Shard 0's copy in zone b stops: the two left are both in zone a.
    let out = paddock(&["stop", "-i", &inv, "box5:redis-7000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut last = String::new();
    let reported = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let (code, text, _) = status(&inv);
        let hit = code == Some(1) && text.contains(SHARD_0_IN_A);
        last = text;
        async move { hit }
    })
    .await;
    assert!(reported, "{last}");
    let (_, _, json) = status(&inv);
    let problems = json["problems"].as_array().expect("problems");
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.starts_with(SHARD_0_IN_A))),
        "{problems:?}"
    );

    let out = paddock(&["start", "-i", &inv, "box5:redis-7000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let healthy = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let (code, text, _) = status(&inv);
        last = text;
        async move { code == Some(0) }
    })
    .await;
    assert!(healthy, "{last}");
    assert!(!last.contains(SHARD_0_IN_A), "{last}");
}
