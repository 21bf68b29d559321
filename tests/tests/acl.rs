//! ACL users declared in the inventory: created, changed and removed by
//! apply live (ACL SETUSER / DELUSER, no restart), with generated passwords
//! kept 0600, and limited to their rules.

use std::os::unix::fs::PermissionsExt;

use paddock_tests::{Lab, apply_agreeing, paddock, stderr, stdout};
use redis::AsyncCommands;
use redis::cluster::ClusterClientBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_user_gets_exactly_its_rules() {
    let lab = Lab::new(35);
    assert!(lab.up(&[]).status.success());
    let inventory = lab.inventory().display().to_string();
    let mut text = std::fs::read_to_string(lab.inventory()).unwrap();
    text.push_str("\n[[users]]\nname = \"app\"\nrules = \"~app:* +@read +@write -@dangerous\"\n");
    std::fs::write(lab.inventory(), text).unwrap();

    let pids = || -> Vec<String> {
        (0..3)
            .flat_map(|b| ["redis-7000", "redis-7001"].map(|i| lab.pidfile(b, i)))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    };
    let running = pids();
    let plan = paddock(&["plan", "-i", &inventory]);
    assert_eq!(
        stdout(&plan)
            .matches("set live (CONFIG SET / ACL SETUSER, no restart)")
            .count(),
        6,
        "{}",
        stdout(&plan)
    );
    assert_eq!(stdout(&plan).matches("(restart needed)").count(), 0);
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pids(), running, "the user was created live: no restart");
    let pw_path = lab.dir().join(".paddock/lab/users/app.password");
    let mode = std::fs::metadata(&pw_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let app_password = std::fs::read_to_string(&pw_path).unwrap().trim().to_owned();
    assert!(app_password.len() >= 64);

    let seeds = lab.seeds();
    let app = ClusterClientBuilder::new(seeds)
        .username("app")
        .password(app_password.clone())
        .build()
        .unwrap();
    let mut c = app.get_async_connection().await.unwrap();
    for i in 0..100 {
        let _: () = c.set(format!("app:{i}"), i).await.unwrap();
    }
    let v: Option<i64> = c.get("app:42").await.unwrap();
    assert_eq!(v, Some(42));
    let outside: redis::RedisResult<()> = c.set("other:1", 1).await;
    assert!(
        outside
            .unwrap_err()
            .to_string()
            .to_lowercase()
            .contains("noperm"),
        "keys outside app:* are refused"
    );
    let wrong = paddock_tests::connect(lab.addresses[0], 7000, "not-the-password").await;
    assert!(wrong.is_err(), "a wrong default password gets nothing");
    let info = redis::ConnectionAddr::Tcp(lab.addresses[0].to_string(), 7000);
    let conn_info = redis::IntoConnectionInfo::into_connection_info(info)
        .unwrap()
        .set_redis_settings(
            redis::RedisConnectionInfo::default()
                .set_username("app")
                .set_password(std::fs::read_to_string(&pw_path).unwrap().trim()),
        );
    let mut direct = redis::Client::open(conn_info)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let flush: redis::RedisResult<()> = redis::cmd("FLUSHALL").query_async(&mut direct).await;
    assert!(
        flush
            .unwrap_err()
            .to_string()
            .to_lowercase()
            .contains("noperm"),
        "dangerous commands refused"
    );

    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));

    // The user's rules change (no more writes): set live, the same
    // processes; reads work, writes are refused.
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    std::fs::write(
        lab.inventory(),
        text.replace("+@read +@write -@dangerous", "+@read -@dangerous"),
    )
    .unwrap();
    let plan = paddock(&["plan", "-i", &inventory]);
    assert_eq!(
        stdout(&plan)
            .matches("set live (CONFIG SET / ACL SETUSER, no restart)")
            .count(),
        6,
        "{}",
        stdout(&plan)
    );
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&app_password), "no password shown");
    assert_eq!(pids(), running, "the rules changed live: no restart");
    let mut c = app.get_async_connection().await.unwrap();
    let v: Option<i64> = c.get("app:42").await.unwrap();
    assert_eq!(v, Some(42), "reads still allowed");
    let write: redis::RedisResult<()> = c.set("app:1", 1).await;
    assert!(
        write
            .unwrap_err()
            .to_string()
            .to_lowercase()
            .contains("noperm"),
        "writes refused now"
    );

    // The user is dropped from the inventory: ACL DELUSER, live; its
    // password no longer opens a connection.
    let text = std::fs::read_to_string(lab.inventory()).unwrap();
    let cut = text.find("\n[[users]]").unwrap();
    std::fs::write(lab.inventory(), &text[..cut]).unwrap();
    let out = apply_agreeing(&["-i", &inventory]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pids(), running, "the user was removed live: no restart");
    let gone = redis::Client::open(
        redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
            lab.addresses[0].to_string(),
            7000,
        ))
        .unwrap()
        .set_redis_settings(
            redis::RedisConnectionInfo::default()
                .set_username("app")
                .set_password(app_password.as_str()),
        ),
    )
    .unwrap()
    .get_multiplexed_async_connection()
    .await;
    assert!(gone.is_err(), "the removed user cannot log in");
    assert!(stdout(&apply_agreeing(&["-i", &inventory])).contains("Nothing to do"));
}
