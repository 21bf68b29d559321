//! `paddock lab up` with more boxes on an existing lab: the added boxes'
//! agents start, the running agents and their Redis are left alone (the
//! grown inventory is applied and moves nothing), a list
//! that drops a box is refused, and `lab down` stops every box.

use std::net::{IpAddr, SocketAddr};

use paddock_controller::client::{AgentClient, Security, Transport};
use paddock_tests::{Lab, paddock, process_is, stderr, stdout};

/// The recorded pid of each box's agent (lab.json), in box order.
fn agent_pids(lab: &Lab) -> Vec<(String, u32)> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir().join("lab.json")).unwrap()).unwrap();
    let mut pids: Vec<(String, u32)> = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["host"].as_str().unwrap().to_owned(),
                a["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    pids.sort();
    pids
}

/// The pids of the Redis instances of the first three boxes.
fn redis_pids(lab: &Lab) -> Vec<u32> {
    (0..3)
        .flat_map(|b| ["redis-7000", "redis-7001"].map(move |i| (b, i)))
        .map(|(b, i)| {
            std::fs::read_to_string(lab.pidfile(b, i))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_address_list_adds_boxes_and_keeps_the_running_ones() {
    let mut lab = Lab::new(145);
    let up = lab.up(&[]);
    assert!(up.status.success(), "lab up: {}", stderr(&up));
    let agents = agent_pids(&lab);
    assert_eq!(agents.len(), 3, "{agents:?}");
    let redis = redis_pids(&lab);

    let box4: IpAddr = "127.0.145.4".parse().unwrap();
    lab.addresses.push(box4);
    let grow = lab.up(&[]);
    let err = stderr(&grow);
    assert!(grow.status.success(), "lab up with a fourth box: {err}");
    assert!(err.contains("lab: added box4"), "{err}");
    // The running cluster's placement keeps every instance where it runs:
    // the lab applies the grown inventory, which moves nothing.
    assert!(!err.contains("the inventory was not applied"), "{err}");
    let plan = paddock(&["plan", "-i", &lab.inventory().display().to_string()]);
    assert!(stdout(&plan).contains("No changes"), "{}", stdout(&plan));

    let after = agent_pids(&lab);
    assert_eq!(after[..3], agents[..], "the running agents were replaced");
    assert_eq!(after[3].0, "box4");
    for (host, pid) in &after {
        assert!(process_is(*pid, "paddockd"), "{host}'s agent {pid} is gone");
    }
    assert_eq!(redis_pids(&lab), redis, "the running Redis were restarted");
    for pid in &redis {
        assert!(process_is(*pid, "redis-server"), "redis {pid} is gone");
    }

    // The inventory lists every box; the deployment's shape is unchanged.
    let inventory = std::fs::read_to_string(lab.inventory()).unwrap();
    assert_eq!(inventory.matches("[[hosts]]").count(), 4, "{inventory}");
    assert!(
        inventory.contains("name = \"box4\"\naddress = \"127.0.145.4\""),
        "{inventory}"
    );
    assert!(inventory.contains("masters = 3\n"), "{inventory}");
    assert!(
        inventory.contains("replicas_per_master = 1\n"),
        "{inventory}"
    );
    let inv = lab.inventory();

    // The fourth box's agent answers over mutual TLS with its own
    // certificate, issued by the lab's CA.
    let transport = Transport::for_deployment(&inv, "lab", Security::MutualTls).unwrap();
    let agent = AgentClient::connect("box4", SocketAddr::new(box4, 7443), &transport)
        .await
        .unwrap();
    let facts = agent.facts().await.unwrap();
    assert!(!facts.hostname.is_empty());

    // A list without box4 is refused before anything is stopped.
    lab.addresses.pop();
    let shrink = lab.up(&[]);
    let err = stderr(&shrink);
    assert_eq!(shrink.status.code(), Some(2), "{err}");
    assert!(
        err.contains("box4 (127.0.145.4) would be removed") && err.contains("--reset"),
        "{err}"
    );
    assert_eq!(agent_pids(&lab), after);
    for (host, pid) in &after {
        assert!(process_is(*pid, "paddockd"), "{host}'s agent {pid} is gone");
    }
    // Fewer than three boxes is a usage error naming the flag.
    lab.addresses.pop();
    let two = lab.up(&[]);
    assert_eq!(two.status.code(), Some(2), "{}", stderr(&two));
    assert!(stderr(&two).contains("--addresses"), "{}", stderr(&two));

    let down = lab.down();
    assert!(down.status.success(), "{}", stderr(&down));
    for (host, pid) in &after {
        assert!(!process_is(*pid, "paddockd"), "{host}'s agent {pid} runs");
    }
    for pid in &redis {
        assert!(!process_is(*pid, "redis-server"), "redis {pid} runs");
    }
}
