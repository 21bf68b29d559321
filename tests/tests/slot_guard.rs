//! The guard's slot-move commands against a real agent (issue 15): MIGRATE
//! only in its KEYS form to a member, never with a caller's AUTH, COPY or
//! to an address outside the deployment (nothing dials there), and
//! PADDOCK.DIGEST gives digests, never values; all only with
//! allow_dangerous. On 127.0.156.x.

use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use paddock_proto::v1::agent_client::AgentClient;
use paddock_proto::v1::redis_value::Kind;
use paddock_tests::{Lab, agent_client, connect, redis_command, stderr};
use tonic::transport::Channel;

async fn refused(c: &mut AgentClient<Channel>, words: &str, allow: bool) {
    match redis_command(c, "redis-7000", words, allow).await {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {}
        other => panic!("{words} (allow_dangerous {allow}) was not refused: {other:?}"),
    }
}

/// Counts connections to an address outside the deployment: a MIGRATE
/// there would hand it the keys (and AUTH with the password).
fn tripwire(ip: IpAddr, port: u16) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind((ip, port)).expect("tripwire port free");
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut [0u8; 512]);
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_moves_stay_inside_the_deployment_and_values_stay_in_the_agent() {
    let lab = Lab::new(156);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let password = lab.password();
    let box1 = lab.addresses[0];
    let mut c = agent_client(&lab, 0).await;

    // A key box1's master serves, with a value that must not leave.
    let secret = "secret-value-0123456789";
    let mut key = None;
    let mut conn = connect(box1, 7000, &password).await.unwrap();
    for i in 0..500 {
        let k = format!("guarded-{i}");
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&k)
            .arg(secret)
            .query_async(&mut conn)
            .await;
        if set.is_ok() {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("a key box1's master serves");

    let rogue: IpAddr = "127.0.156.9".parse().unwrap();
    let dialled = tripwire(rogue, 7000);
    for words in [
        format!("MIGRATE 127.0.156.9 7000  0 1000 KEYS {key}"),
        format!("MIGRATE 127.0.156.9 7000  0 1000 REPLACE KEYS {key}"),
        format!("MIGRATE 127.0.156.2 7000  0 1000 AUTH {password} KEYS {key}"),
        format!("MIGRATE 127.0.156.2 7000  0 1000 AUTH2 default {password} KEYS {key}"),
        format!("MIGRATE 127.0.156.2 7000  0 1000 COPY KEYS {key}"),
        format!("MIGRATE 127.0.156.2 7000 {key} 0 1000"),
        format!("MIGRATE 127.0.156.2 7000  0 600000 KEYS {key}"),
        "CLUSTER GETKEYSINSLOT 0 100000".to_owned(),
        "CLUSTER COUNTKEYSINSLOT 16384".to_owned(),
    ] {
        for allow in [false, true] {
            refused(&mut c, &words, allow).await;
        }
    }
    // Without the flag, not even the right shapes run.
    for words in [
        format!("MIGRATE 127.0.156.2 7000  0 1000 KEYS {key}"),
        format!("PADDOCK.DIGEST {key}"),
        "CLUSTER COUNTKEYSINSLOT 0".to_owned(),
        "CLUSTER GETKEYSINSLOT 0 10".to_owned(),
    ] {
        refused(&mut c, &words, false).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        dialled.load(Ordering::SeqCst),
        0,
        "nothing dialled the rogue"
    );
    let v: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, secret, "the key stayed");

    // The digest: 64 hex digits per key, nil for a missing one, never the
    // value.
    let replies = redis_command(
        &mut c,
        "redis-7000",
        &format!("PADDOCK.DIGEST {key} {{{key}}}:missing"),
        true,
    )
    .await
    .expect("the digest runs with the flag");
    let Some(Kind::Array(items)) = replies.first().and_then(|r| r.kind.clone()) else {
        panic!("{replies:?}");
    };
    assert_eq!(items.items.len(), 2, "{items:?}");
    match &items.items[0].kind {
        Some(Kind::Bulk(d)) => {
            assert_eq!(d.len(), 64, "{d:?}");
            assert!(d.iter().all(u8::is_ascii_hexdigit), "{d:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(items.items[1].kind, Some(Kind::Nil(_))),
        "{items:?}"
    );
    assert!(
        !format!("{replies:?}").contains("secret-value"),
        "the value left the agent: {replies:?}"
    );
    // The same digest twice: it is a function of the value.
    let again = redis_command(&mut c, "redis-7000", &format!("PADDOCK.DIGEST {key}"), true)
        .await
        .unwrap();
    let Some(Kind::Array(again)) = again.first().and_then(|r| r.kind.clone()) else {
        panic!("{again:?}");
    };
    assert_eq!(again.items[0], items.items[0]);
}
