//! Hostile input through RedisCommand: gRPC requests signed with the
//! controller's own certificate (the worst case: a stolen admin key) against
//! real agents and real Redis, on 127.0.45.x (cluster) and 127.0.46.x
//! (sentinel). Each reproduction of issue 12's items 2-4 is refused, Redis is
//! left as it was, the password goes nowhere outside the deployment, and
//! `paddock status` still sees a healthy deployment afterwards.

use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use paddock_proto::v1::agent_client::AgentClient;
use paddock_tests::{Lab, agent_client, connect, field, paddock, redis_command, stderr, stdout};
use tonic::transport::Channel;

/// Sends `words` with and without allow_dangerous; both must be refused.
async fn refused_both_ways(c: &mut AgentClient<Channel>, instance: &str, words: &str) {
    for allow in [false, true] {
        let r = redis_command(c, instance, words, allow).await;
        match r {
            Err(s) if s.code() == tonic::Code::PermissionDenied => {}
            other => {
                panic!("{words} (allow_dangerous {allow}) on {instance} was not refused: {other:?}")
            }
        }
    }
}

/// A plain TCP listener that counts who connects: stands in for a rogue
/// Redis that must never be dialled (it would receive AUTH <password>).
struct Tripwire {
    connections: Arc<AtomicUsize>,
}

impl Tripwire {
    fn listen(ip: IpAddr, port: u16) -> Tripwire {
        let listener = TcpListener::bind((ip, port)).expect("tripwire port free");
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                seen.fetch_add(1, Ordering::SeqCst);
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = stream.read(&mut [0u8; 512]);
            }
        });
        Tripwire { connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A rogue cluster-enabled redis-server outside the deployment, with a
/// password of its own, so that an AUTH with the lab's password shows in
/// its errorstats as WRONGPASS.
struct Rogue {
    child: Child,
    _dir: tempfile::TempDir,
}

const ROGUE_PASSWORD: &str = "rogue-password-0123456789";

impl Rogue {
    fn start(ip: IpAddr, port: u16) -> Rogue {
        let dir = tempfile::Builder::new()
            .prefix("paddock-rogue-")
            .tempdir()
            .unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", &ip.to_string(), "--port", &port.to_string()])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-announce-ip",
                &ip.to_string(),
            ])
            .args([
                "--requirepass",
                ROGUE_PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if nix::unistd::Uid::effective().is_root()
            && let Ok(Some(user)) = nix::unistd::User::from_name("redis")
        {
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        Rogue {
            child: cmd.spawn().expect("redis-server in PATH"),
            _dir: dir,
        }
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn query(ip: IpAddr, port: u16, password: &str, words: &[&str]) -> redis::Value {
    let mut c = connect(ip, port, password).await.expect("connect");
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    cmd.query_async(&mut c).await.expect(words[0])
}

async fn text(ip: IpAddr, port: u16, password: &str, words: &[&str]) -> String {
    match query(ip, port, password, words).await {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("{words:?}: {other:?}"),
    }
}

/// `paddock status` exits 0 and shows box1's redis-7000 running as master.
fn healthy(inventory: &str) {
    let out = paddock(&["status", "-i", inventory]);
    assert!(
        out.status.success(),
        "status calls the deployment unhealthy:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("box1") && l.contains("redis-7000"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains("RUNNING") && line.contains("master"),
        "status line of the master: {line:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_refuses_wiping_scripts_and_nodes_outside_the_deployment() {
    let lab = Lab::new(45);
    let up = lab.up(&[]);
    assert!(up.status.success(), "{}", stderr(&up));
    let password = lab.password();
    let inventory = lab.inventory().display().to_string();
    let box1 = lab.addresses[0];
    let mut c = agent_client(&lab, 0).await;

    // Data on box1's master that must survive.
    let mut kept = None;
    for i in 0..200 {
        let key = format!("kept-{i}");
        let mut conn = connect(box1, 7000, &password).await.unwrap();
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .query_async(&mut conn)
            .await;
        if set.is_ok() {
            kept = Some(key);
            break;
        }
    }
    let kept = kept.expect("a key box1's master serves");

    for words in [
        "FLUSHALL",
        "FLUSHDB",
        "SWAPDB 0 1",
        "RESTORE x 0 payload",
        "MIGRATE 127.0.45.2 7000 x 0 1000",
        "EVAL return 1 0",
        "EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff8db 0",
        "FCALL f 0",
        "FUNCTION LOAD #!lua",
        "SCRIPT FLUSH",
        "CONFIG SET maxmemory 1",
        "CONFIG SET maxmemory-policy allkeys-random",
        "CLIENT PAUSE 60000",
        "CLIENT KILL TYPE normal",
        "CLUSTER RESET HARD",
        "CONFIG GET requirepass",
        "ACL GETUSER default",
    ] {
        refused_both_ways(&mut c, "redis-7000", words).await;
    }
    let v = text(box1, 7000, &password, &["GET", &kept]).await;
    assert_eq!(v, "v", "the data set is intact");
    healthy(&inventory);

    // CLUSTER MEET of an address outside the deployment: refused, and the
    // node never heard of it.
    let rogue_ip: IpAddr = "127.0.45.9".parse().unwrap();
    let rogue = Rogue::start(rogue_ip, 7000);
    refused_both_ways(&mut c, "redis-7000", "CLUSTER MEET 127.0.45.9 7000").await;
    refused_both_ways(&mut c, "redis-7001", "CLUSTER MEET 127.0.45.9 7000 17000").await;
    for port in [7000, 7001] {
        let nodes = text(box1, port, &password, &["CLUSTER", "NODES"]).await;
        assert!(
            !nodes.contains("127.0.45.9"),
            "{port} met the rogue:\n{nodes}"
        );
    }

    // The rogue joins on its own (the cluster bus has no password); a
    // REPLICATE of it through the agent is still refused, and it never
    // receives the lab's password.
    paddock_tests::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { connect(rogue_ip, 7000, ROGUE_PASSWORD).await.is_ok() },
    )
    .await;
    query(
        rogue_ip,
        7000,
        ROGUE_PASSWORD,
        &["CLUSTER", "MEET", &box1.to_string(), "7000"],
    )
    .await;
    let rogue_id = text(rogue_ip, 7000, ROGUE_PASSWORD, &["CLUSTER", "MYID"]).await;
    let known =
        paddock_tests::wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            let (password, rogue_id) = (password.clone(), rogue_id.clone());
            async move {
                let nodes = text(box1, 7001, &password, &["CLUSTER", "NODES"]).await;
                nodes
                    .lines()
                    .any(|l| l.starts_with(&rogue_id) && !l.contains("handshake"))
            }
        })
        .await;
    assert!(known, "box1's replica learned of the rogue by gossip");
    let before = text(box1, 7001, &password, &["INFO", "replication"]).await;
    refused_both_ways(
        &mut c,
        "redis-7001",
        &format!("CLUSTER REPLICATE {rogue_id}"),
    )
    .await;
    refused_both_ways(&mut c, "redis-7001", &format!("CLUSTER FORGET {rogue_id}")).await;
    refused_both_ways(
        &mut c,
        "redis-7001",
        &format!("CLUSTER SETSLOT 0 NODE {rogue_id}"),
    )
    .await;
    refused_both_ways(
        &mut c,
        "redis-7001",
        "CLUSTER REPLICATE 0123456789abcdef0123456789abcdef01234567",
    )
    .await;
    let after = text(box1, 7001, &password, &["INFO", "replication"]).await;
    assert_eq!(
        field(&after, "master_host"),
        field(&before, "master_host"),
        "the replica still follows its master"
    );
    // A replica that followed the rogue would AUTH with the lab's password,
    // which the rogue answers WRONGPASS (counted in its errorstats).
    let errors = text(rogue_ip, 7000, ROGUE_PASSWORD, &["INFO", "errorstats"]).await;
    assert!(
        !errors.contains("WRONGPASS"),
        "someone tried a password on the rogue:\n{errors}"
    );
    let repl = text(rogue_ip, 7000, ROGUE_PASSWORD, &["INFO", "replication"]).await;
    assert_eq!(field(&repl, "connected_slaves").as_deref(), Some("0"));

    // The controller's own commands still pass (a read and a MEET of a member).
    let r = redis_command(&mut c, "redis-7000", "CLUSTER MEET 127.0.45.2 7000", false).await;
    assert!(r.is_ok(), "{r:?}");
    drop(rogue);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_lab_refuses_forged_hellos_rogue_masters_and_connection_poison() {
    let lab = Lab::new(46);
    let up = lab.up(&["--topology", "sentinel"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let password = lab.password();
    let inventory = lab.inventory().display().to_string();
    let [a, b, _] = [lab.addresses[0], lab.addresses[1], lab.addresses[2]];
    let mut c1 = agent_client(&lab, 0).await;
    let mut c2 = agent_client(&lab, 1).await;
    healthy(&inventory);

    query(a, 7000, &password, &["SET", "kept", "v"]).await;
    let rogue_ip: IpAddr = "127.0.46.9".parse().unwrap();
    let tripwire = Tripwire::listen(rogue_ip, 7000);

    // A forged hello would move every sentinel (and the password) to the
    // sender's address.
    let hello = format!(
        "__sentinel__:hello 127.0.46.9,26379,{},9,lab,127.0.46.9,7000,9",
        "f".repeat(40)
    );
    refused_both_ways(&mut c1, "redis-7000", &format!("PUBLISH {hello}")).await;
    refused_both_ways(&mut c1, "sentinel-26379", &format!("PUBLISH {hello}")).await;
    // Re-pointing at a rogue: refused even with allow_dangerous.
    refused_both_ways(&mut c2, "redis-7000", "REPLICAOF 127.0.46.9 7000").await;
    refused_both_ways(&mut c2, "redis-7000", "SLAVEOF 127.0.46.9 7000").await;
    refused_both_ways(
        &mut c1,
        "sentinel-26379",
        "SENTINEL MONITOR lab 127.0.46.9 7000 2",
    )
    .await;
    refused_both_ways(
        &mut c1,
        "sentinel-26379",
        "SENTINEL MONITOR evil 127.0.46.9 7000 1",
    )
    .await;
    refused_both_ways(&mut c1, "sentinel-26379", "SENTINEL SET lab auth-pass x").await;
    refused_both_ways(&mut c1, "sentinel-26379", "SENTINEL REMOVE other").await;
    refused_both_ways(&mut c1, "redis-7000", "FLUSHALL").await;
    let repl = text(b, 7000, &password, &["INFO", "replication"]).await;
    assert_eq!(field(&repl, "master_host"), Some(a.to_string()), "{repl}");
    let named = query(
        a,
        26379,
        &password,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "lab"],
    )
    .await;
    assert_eq!(
        named,
        redis::Value::Array(vec![
            redis::Value::BulkString(a.to_string().into_bytes()),
            redis::Value::BulkString(b"7000".to_vec()),
        ])
    );
    assert_eq!(text(a, 7000, &password, &["GET", "kept"]).await, "v");

    // Each of these changed the agent's shared connection to the master;
    // after each, status must still see a healthy, running master.
    for words in [
        "MULTI",
        "RESET",
        "SUBSCRIBE x",
        "PSUBSCRIBE x*",
        "SSUBSCRIBE x",
        "SELECT 1",
        "CLIENT REPLY OFF",
        "CLIENT REPLY SKIP",
        &format!("AUTH default {password}"),
        "AUTH default wrong-password-0123456789",
        "HELLO 3",
        &format!("HELLO 3 AUTH default {password}"),
        "BLPOP k 0",
        "BRPOP k 0",
        "BLMOVE a b LEFT RIGHT 0",
        "BZPOPMIN z 0",
        "XREAD BLOCK 0 STREAMS s $",
        "WAIT 5 0",
        "CLIENT PAUSE 600000 WRITE",
        "CLIENT PAUSE 1000 ALL",
    ] {
        refused_both_ways(&mut c1, "redis-7000", words).await;
        healthy(&inventory);
    }
    // What the controller's failover uses still runs, bounded.
    let r = redis_command(&mut c1, "redis-7000", "CLIENT PAUSE 100 WRITE", false).await;
    assert!(r.is_ok(), "{r:?}");
    let r = redis_command(&mut c1, "redis-7000", "CLIENT UNPAUSE", false).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        tripwire.connections(),
        0,
        "nobody dialled the rogue address"
    );
    healthy(&inventory);
}
