//! `paddock failover`: a shard's replica takes over on request, no
//! acknowledged write is lost, and apply does not fight the new roles
//! while they keep one master per box.

use paddock_tests::{Lab, apply_agreeing, connect, paddock, stderr, stdout};
use redis::AsyncCommands;
use redis::cluster::ClusterClientBuilder;

const KEYS: usize = 3_000;

async fn role(lab: &Lab, box_index: usize, port: u16, password: &str) -> String {
    let mut c = connect(lab.addresses[box_index], port, password)
        .await
        .unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.unwrap();
    match &role[0] {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_loses_nothing_and_apply_keeps_the_new_roles() {
    let lab = Lab::new(27);
    assert!(lab.up(&[]).status.success());
    let inventory = lab.inventory().display().to_string();
    let password = lab.password();
    let seeds = lab.seeds();
    let client = ClusterClientBuilder::new(seeds)
        .password(password.clone())
        .build()
        .unwrap();
    let mut c = client.get_async_connection().await.unwrap();
    for i in 0..KEYS {
        let _: () = c.set(format!("mf:{i}"), i).await.unwrap();
    }

    // Straight after the writes: the coordinated failover itself waits for
    // the replica to have them.
    let out = paddock(&["failover", "-i", &inventory, "--shard", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("Shard 0: box2:redis-7001 is master now, box1:redis-7000 its replica"),
        "{}",
        stdout(&out)
    );
    assert_eq!(role(&lab, 1, 7001, &password).await, "master");
    assert_eq!(role(&lab, 0, 7000, &password).await, "slave");

    let mut c = client.get_async_connection().await.unwrap();
    for i in 0..KEYS {
        let v: Option<usize> = c.get(format!("mf:{i}")).await.unwrap();
        assert_eq!(v, Some(i), "mf:{i} after the failover");
    }

    // box2 now holds two masters: status says so, plan proposes to move
    // one. Spread again by hand (every shard to its replica, one master per
    // box), the new roles stand: the desired state is a healthy cluster of
    // the inventory's shape with its masters spread, not "box1 is master
    // forever".
    let status = paddock(&["status", "-i", &inventory]);
    assert_eq!(status.status.code(), Some(1), "{}", stdout(&status));
    assert!(
        stdout(&status).contains("box2 holds 2 of the 3 masters"),
        "{}",
        stdout(&status)
    );
    for to in ["box3:redis-7001", "box1:redis-7001"] {
        let out = paddock(&["failover", "-i", &inventory, "--to", to]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let again = apply_agreeing(&["-i", &inventory]);
    assert!(
        stdout(&again).contains("Nothing to do"),
        "{}",
        stdout(&again)
    );
    let status = paddock(&["status", "-i", &inventory, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let box1 = &s["hosts"][0]["instances"];
    let r7000 = box1
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "redis-7000")
        .unwrap();
    assert_eq!(r7000["role"], "replica");
    assert_eq!(r7000["master"], "box2:redis-7001");

    // And back, naming the replica.
    let out = paddock(&["failover", "-i", &inventory, "--to", "box1:redis-7000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(role(&lab, 0, 7000, &password).await, "master");

    // Naming the current master again is a no-op that says so (a re-run
    // switchover script must not fail).
    let out = paddock(&["failover", "-i", &inventory, "--to", "box1:redis-7000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("box1:redis-7000 is already its master; nothing to do"),
        "{}",
        stdout(&out)
    );
    assert_eq!(role(&lab, 0, 7000, &password).await, "master");

    let bad = paddock(&["failover", "-i", &inventory, "--shard", "9"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("there is no shard 9"),
        "{}",
        stderr(&bad)
    );
}
