//! Every validation error, rendered exactly as the controller prints it.
//!
//! Documents are written with a leading newline for readability; `check`
//! strips it, so line 1 is the first line after `r#"`.

use paddock_inventory::{Diagnostic, User, parse};

/// Three valid hosts, appended to documents that need them (9 lines).
macro_rules! hosts3 {
    () => {
        r#"[[hosts]]
name = "a"
address = "10.0.0.1"
[[hosts]]
name = "b"
address = "10.0.0.2"
[[hosts]]
name = "c"
address = "10.0.0.3"
"#
    };
}

fn strip(s: &str) -> &str {
    s.strip_prefix('\n').unwrap_or(s)
}

#[track_caller]
fn check(document: &str, expected: &str) {
    match parse("inventory.toml", strip(document)) {
        Ok(inv) => panic!("expected errors, but it parsed: {inv:#?}"),
        Err(diagnostics) => assert_eq!(diagnostics.to_string(), strip(expected)),
    }
}

// ------------------------------------------------------------ TOML level

#[test]
fn toml_syntax_error_stops_everything() {
    check(
        r#"
[deployment]
name = "lab
topology = "cluster"
"#,
        r#"
inventory.toml:2:12: error: invalid TOML: invalid basic string, expected `"`
  hint: fix the TOML syntax here: strings need quotes, tables are written [name] or [[hosts]]"#,
    );
}

#[test]
fn duplicate_toml_key() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
name = "x"
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:1: error: invalid TOML: duplicate key
  hint: each key may appear only once in a table"#,
    );
}

#[test]
fn unknown_key_in_redis() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
prot = 7000
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:1: error: unknown key `prot` in [redis]
  hint: expected one of: port, maxmemory, maxmemory_policy, appendonly, rdb_snapshots, cluster_node_timeout_ms, min_replicas_to_write, min_replicas_max_lag_s"#,
    );
}

#[test]
fn unknown_table_at_top_level() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redsi]
port = 1
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:2: error: unknown table [redsi]
  hint: expected one of: deployment, redis, sentinel, supervision, hosts, users"#,
    );
}

#[test]
fn structural_errors_are_all_reported() {
    check(
        r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
prot = 1
port = "x"
[[hosts]]
nam = "a"
address = 1
[[hosts]]
"#,
        r#"
inventory.toml:5:1: error: unknown key `prot` in [redis]
  hint: expected one of: port, maxmemory, maxmemory_policy, appendonly, rdb_snapshots, cluster_node_timeout_ms, min_replicas_to_write, min_replicas_max_lag_s
inventory.toml:6:8: error: `port` in [redis] must be an integer, found a string
  hint: for example: port = 7000
inventory.toml:7:1: error: missing required key `name` in [[hosts]]
  hint: for example: name = "redis1"
inventory.toml:8:1: error: unknown key `nam` in [[hosts]]
  hint: expected one of: name, address, agent_port, zone
inventory.toml:9:11: error: `address` in [[hosts]] must be a string, found an integer
  hint: for example: address = "192.168.56.11"
inventory.toml:10:1: error: missing required key `name` in [[hosts]]
  hint: for example: name = "redis1"
inventory.toml:10:1: error: missing required key `address` in [[hosts]]
  hint: for example: address = "192.168.56.11""#,
    );
}

#[test]
fn wrong_types() {
    check(
        concat!(
            r#"
[deployment]
name = 1
topology = ["cluster"]
masters = 3.0
[redis]
appendonly = "yes"
maxmemory = true
"#,
            hosts3!()
        ),
        r#"
inventory.toml:2:8: error: `name` in [deployment] must be a string, found an integer
  hint: for example: name = "lab"
inventory.toml:3:12: error: `topology` in [deployment] must be a string, found an array
  hint: for example: topology = "cluster" (one of: cluster, replication, sentinel)
inventory.toml:4:11: error: `masters` in [deployment] must be an integer, found a float
  hint: for example: masters = 3
inventory.toml:6:14: error: `appendonly` in [redis] must be a boolean (true or false), found a string
  hint: for example: appendonly = true
inventory.toml:7:13: error: `maxmemory` in [redis] must be an integer or a string, found a boolean
  hint: for example: maxmemory = "256mb""#,
    );
}

#[test]
fn tables_of_the_wrong_shape() {
    check(
        concat!("deployment = 3\n", hosts3!()),
        r#"
inventory.toml:1:14: error: `deployment` at top level must be a table, found an integer
  hint: add a [deployment] table with at least `name` and `topology`"#,
    );
    check(
        r#"
[deployment]
name = "lab"
topology = "cluster"
[hosts]
name = "a"
"#,
        r#"
inventory.toml:4:1: error: `hosts` at top level must be an array of tables, found a table
  hint: add one [[hosts]] table with `name` and `address` per machine"#,
    );
    check(
        r#"
hosts = [1]
[deployment]
name = "lab"
topology = "cluster"
"#,
        r#"
inventory.toml:1:10: error: each entry of `hosts` must be a table, found an integer
  hint: add one [[hosts]] table with `name` and `address` per machine"#,
    );
}

#[test]
fn integer_too_large_for_any_field() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
port = 99999999999999999999
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:8: error: `port` in [redis] is too large: 99999999999999999999
  hint: for example: port = 7000"#,
    );
}

#[test]
fn missing_required_keys_and_tables() {
    check(
        concat!("# nothing\n", hosts3!()),
        r#"
inventory.toml:1:1: error: missing required table [deployment]
  hint: add a [deployment] table with at least `name` and `topology`"#,
    );
    check(
        r#"
[deployment]
name = "lab"
topology = "cluster"
"#,
        r#"
inventory.toml:1:1: error: missing required [[hosts]] tables
  hint: add one [[hosts]] table with `name` and `address` per machine"#,
    );
    check(
        concat!("[deployment]\nmasters = 3\n", hosts3!()),
        r#"
inventory.toml:1:1: error: missing required key `name` in [deployment]
  hint: for example: name = "lab"
inventory.toml:1:1: error: missing required key `topology` in [deployment]
  hint: for example: topology = "cluster" (one of: cluster, replication, sentinel)"#,
    );
}

#[test]
fn empty_hosts_array() {
    check(
        r#"
hosts = []
[deployment]
name = "lab"
topology = "cluster"
"#,
        r#"
inventory.toml:1:9: error: the inventory lists no hosts
  hint: add one [[hosts]] table with `name` and `address` per machine"#,
    );
}

// ------------------------------------------------------------ [deployment]

#[test]
fn bad_deployment_name() {
    check(
        concat!(
            r#"
[deployment]
name = "Lab_1"
topology = "cluster"
"#,
            hosts3!()
        ),
        r#"
inventory.toml:2:8: error: invalid deployment name `Lab_1`
  hint: use 1 to 40 lowercase letters, digits or '-', starting with a letter or digit"#,
    );
}

#[test]
fn unknown_topology() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "clutser"
"#,
            hosts3!()
        ),
        r#"
inventory.toml:3:12: error: unknown topology `clutser`
  hint: expected one of: cluster, replication, sentinel"#,
    );
}

#[test]
fn cluster_needs_three_masters() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
masters = 2
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:11: error: topology `cluster` needs at least 3 masters, found masters = 2
  hint: Redis Cluster needs 3 masters so that a majority survives a failure; for a single master use topology = "replication" or "sentinel""#,
    );
}

#[test]
fn cluster_masters_upper_bound() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
masters = 1001
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:11: error: topology `cluster` allows at most 1000 masters, found masters = 1001
  hint: Redis Cluster is designed for at most 1000 nodes"#,
    );
}

#[test]
fn replication_and_sentinel_have_one_master() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "replication"
masters = 2
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:11: error: topology `replication` has exactly one master, found masters = 2
  hint: remove `masters`, or use topology = "cluster" to shard data across several masters"#,
    );
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "sentinel"
masters = 3
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:11: error: topology `sentinel` has exactly one master, found masters = 3
  hint: remove `masters`, or use topology = "cluster" to shard data across several masters"#,
    );
}

#[test]
fn replicas_per_master_range() {
    for value in ["6", "-1"] {
        check(
            &format!(
                "\n[deployment]\nname = \"lab\"\ntopology = \"cluster\"\nreplicas_per_master = {value}\n{}",
                hosts3!()
            ),
            &format!(
                "\ninventory.toml:4:23: error: `replicas_per_master` in [deployment] must be between 0 and 5, found {value}\n  hint: use 0 (no replicas) up to 5"
            ),
        );
    }
}

#[test]
fn too_few_hosts_for_anti_affinity() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
replicas_per_master = 3
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:23: error: replicas_per_master = 3 needs 4 hosts (a replica never shares a host with its master), but the inventory has 3 hosts
  hint: add hosts or lower replicas_per_master"#,
    );
}

#[test]
fn too_few_hosts_with_default_replicas_points_at_table() {
    check(
        r#"
[deployment]
name = "lab"
topology = "replication"
[[hosts]]
name = "a"
address = "10.0.0.1"
"#,
        r#"
inventory.toml:1:1: error: replicas_per_master = 1 needs 2 hosts (a replica never shares a host with its master), but the inventory has 1 host
  hint: add hosts or lower replicas_per_master"#,
    );
}

#[test]
fn empty_password_file() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
password_file = ""
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:17: error: `password_file` in [deployment] is empty
  hint: omit password_file, or give a path relative to the inventory file"#,
    );
}

// ------------------------------------------------- config injection

#[test]
fn newline_in_a_value() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
password_file = """
x
include /etc/evil.conf"""
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:17: error: `password_file` in [deployment] contains a newline
  hint: Redis reads its config line by line, so this could inject configuration; remove it"#,
    );
}

#[test]
fn carriage_return_and_nul_in_values() {
    check(
        concat!(
            r#"
[deployment]
name = "lab\r"
topology = "cluster\u0000"
"#,
            hosts3!()
        ),
        r#"
inventory.toml:2:8: error: `name` in [deployment] contains a carriage return
  hint: Redis reads its config line by line, so this could inject configuration; remove it
inventory.toml:3:12: error: `topology` in [deployment] contains a NUL byte
  hint: Redis reads its config line by line, so this could inject configuration; remove it"#,
    );
}

#[test]
fn newline_in_maxmemory_and_host_fields() {
    check(
        r#"
[deployment]
name = "lab"
topology = "replication"
replicas_per_master = 0
[redis]
maxmemory = "1mb\nloadmodule /tmp/x.so"
[[hosts]]
name = "a\n"
address = "10.0.0.1\n"
"#,
        r#"
inventory.toml:6:13: error: `maxmemory` in [redis] contains a newline
  hint: Redis reads its config line by line, so this could inject configuration; remove it
inventory.toml:8:8: error: `name` in [[hosts]] contains a newline
  hint: Redis reads its config line by line, so this could inject configuration; remove it
inventory.toml:9:11: error: `address` in [[hosts]] contains a newline
  hint: Redis reads its config line by line, so this could inject configuration; remove it"#,
    );
}

// ------------------------------------------------------------------ [redis]

#[test]
fn redis_port_range() {
    for value in ["80", "60000"] {
        check(
            &format!(
                "\n[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n{}[redis]\nport = {value}\n",
                hosts3!()
            ),
            &format!(
                "\ninventory.toml:14:8: error: `port` in [redis] must be between 1024 and 55535, found {value}\n  hint: the cluster bus uses port + 10000, which must stay within 65535; ports below 1024 need root"
            ),
        );
    }
}

#[test]
fn maxmemory_syntax() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
maxmemory = "256 MB"
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:13: error: invalid size `256 MB` for `maxmemory` in [redis]
  hint: write a whole number with an optional unit b, k, kb, m, mb, g or gb (case-insensitive), e.g. "256mb""#,
    );
}

#[test]
fn maxmemory_zero() {
    for value in ["0", "\"0mb\""] {
        check(
            &format!(
                "\n[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n[redis]\nmaxmemory = {value}\n{}",
                hosts3!()
            ),
            r#"
inventory.toml:5:13: error: `maxmemory` in [redis] must not be 0
  hint: omit maxmemory for no limit"#,
        );
    }
}

#[test]
fn maxmemory_negative_and_too_large() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
maxmemory = -5
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:13: error: `maxmemory` in [redis] must be positive, found -5
  hint: omit maxmemory for no limit, or give a size such as "256mb""#,
    );
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
maxmemory = "99999999999gb"
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:13: error: `maxmemory` in [redis] is too large: `99999999999gb`
  hint: give the memory Redis may use on one instance, e.g. "4gb""#,
    );
}

#[test]
fn unknown_maxmemory_policy() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
maxmemory_policy = "lru"
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:20: error: unknown maxmemory_policy `lru`
  hint: expected one of: noeviction, allkeys-lru, volatile-lru, allkeys-lfu, volatile-lfu, allkeys-random, volatile-random, volatile-ttl"#,
    );
}

#[test]
fn cluster_node_timeout_range() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
cluster_node_timeout_ms = 100
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:27: error: `cluster_node_timeout_ms` in [redis] must be between 500 and 600000, found 100
  hint: milliseconds a node may be unreachable before it counts as failing, e.g. 5000"#,
    );
}

// ------------------------------------------------------------ [supervision]

#[test]
fn unknown_key_in_supervision() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[supervision]
start_retries = 3
start_timeout = 60000
"#,
            hosts3!()
        ),
        r#"
inventory.toml:6:1: error: unknown key `start_timeout` in [supervision]
  hint: expected one of: start_timeout_ms, start_retries, backoff_max_ms, stop_timeout_ms"#,
    );
}

#[test]
fn supervision_wrong_types() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[supervision]
start_timeout_ms = "60s"
start_retries = 2.5
backoff_max_ms = true
stop_timeout_ms = 99999999999999999999
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:20: error: `start_timeout_ms` in [supervision] must be an integer, found a string
  hint: for example: start_timeout_ms = 60000
inventory.toml:6:17: error: `start_retries` in [supervision] must be an integer, found a float
  hint: for example: start_retries = 10
inventory.toml:7:18: error: `backoff_max_ms` in [supervision] must be an integer, found a boolean
  hint: for example: backoff_max_ms = 5000
inventory.toml:8:19: error: `stop_timeout_ms` in [supervision] is too large: 99999999999999999999
  hint: for example: stop_timeout_ms = 10000"#,
    );
    check(
        concat!(
            "supervision = 1\n",
            hosts3!(),
            "[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n"
        ),
        r#"
inventory.toml:1:15: error: `supervision` at top level must be a table, found an integer
  hint: write it as a [supervision] table"#,
    );
}

/// Below and above each range, all reported together.
#[test]
fn supervision_ranges() {
    let start_timeout = "milliseconds a start may take before Redis answers (a Redis still loading its data keeps starting), e.g. 60000";
    let retries = "failed starts in a row before the instance is marked FATAL, e.g. 10";
    let backoff = "the longest wait in milliseconds between restarts (the first is immediate, then 50 ms doubling), e.g. 5000";
    let stop = "milliseconds between SIGTERM and SIGKILL to the process group, e.g. 10000";
    for (start_timeout_ms, start_retries, backoff_max_ms, stop_timeout_ms) in [
        ("999", "-1", "99", "99"),
        ("3600001", "101", "300001", "600001"),
    ] {
        check(
            &format!(
                "\n[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n[supervision]\nstart_timeout_ms = {start_timeout_ms}\nstart_retries = {start_retries}\nbackoff_max_ms = {backoff_max_ms}\nstop_timeout_ms = {stop_timeout_ms}\n{}",
                hosts3!()
            ),
            &format!(
                "
inventory.toml:5:20: error: `start_timeout_ms` in [supervision] must be between 1000 and 3600000, found {start_timeout_ms}
  hint: {start_timeout}
inventory.toml:6:17: error: `start_retries` in [supervision] must be between 0 and 100, found {start_retries}
  hint: {retries}
inventory.toml:7:18: error: `backoff_max_ms` in [supervision] must be between 100 and 300000, found {backoff_max_ms}
  hint: {backoff}
inventory.toml:8:19: error: `stop_timeout_ms` in [supervision] must be between 100 and 600000, found {stop_timeout_ms}
  hint: {stop}"
            ),
        );
    }
}

/// A bad [supervision] value does not hide problems elsewhere.
#[test]
fn supervision_reported_with_other_problems() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
port = 80
[supervision]
stop_timeout_ms = 0
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:8: error: `port` in [redis] must be between 1024 and 55535, found 80
  hint: the cluster bus uses port + 10000, which must stay within 65535; ports below 1024 need root
inventory.toml:7:19: error: `stop_timeout_ms` in [supervision] must be between 100 and 600000, found 0
  hint: milliseconds between SIGTERM and SIGKILL to the process group, e.g. 10000"#,
    );
}

// --------------------------------------------------------------- [sentinel]

#[test]
fn quorum_larger_than_count() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "sentinel"
[sentinel]
count = 3
quorum = 4
"#,
            hosts3!()
        ),
        r#"
inventory.toml:6:10: error: `quorum` in [sentinel] is 4, more than the 3 sentinels (`count`)
  hint: quorum is how many sentinels must agree that the master is down; use at most 3 (a majority is 2)"#,
    );
}

#[test]
fn quorum_zero() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "sentinel"
[sentinel]
quorum = 0
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:10: error: `quorum` in [sentinel] must be between 1 and 9, found 0
  hint: quorum is how many sentinels must agree that the master is down; usually a majority of count"#,
    );
}

#[test]
fn sentinel_ranges() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "sentinel"
[sentinel]
count = 10
port = 80
down_after_ms = 50
failover_timeout_ms = 999
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:9: error: `count` in [sentinel] must be between 1 and 9, found 10
  hint: use an odd number such as 3 or 5, so that a majority can agree
inventory.toml:6:8: error: `port` in [sentinel] must be between 1024 and 65535, found 80
  hint: ports below 1024 need root; the usual sentinel port is 26379
inventory.toml:7:17: error: `down_after_ms` in [sentinel] must be between 100 and 600000, found 50
  hint: milliseconds without a reply before a sentinel considers an instance down, e.g. 5000
inventory.toml:8:23: error: `failover_timeout_ms` in [sentinel] must be at least 1000, found 999
  hint: milliseconds, e.g. 60000"#,
    );
}

#[test]
fn sentinel_table_with_wrong_topology() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[sentinel]
count = 3
"#,
            hosts3!()
        ),
        r#"
inventory.toml:4:1: error: [sentinel] is only allowed with topology = "sentinel", but topology is "cluster"
  hint: remove the [sentinel] table, or set topology = "sentinel""#,
    );
}

#[test]
fn sentinel_fields_checked_even_when_topology_is_unknown() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "x"
[sentinel]
count = 30
"#,
            hosts3!()
        ),
        r#"
inventory.toml:3:12: error: unknown topology `x`
  hint: expected one of: cluster, replication, sentinel
inventory.toml:5:9: error: `count` in [sentinel] must be between 1 and 9, found 30
  hint: use an odd number such as 3 or 5, so that a majority can agree"#,
    );
}

// ----------------------------------------------------------------- [[hosts]]

#[test]
fn bad_host_names() {
    check(
        r#"
[deployment]
name = "lab"
topology = "cluster"
[[hosts]]
name = "../etc"
address = "10.0.0.1"
[[hosts]]
name = "a..b"
address = "10.0.0.2"
[[hosts]]
name = "c/d"
address = "10.0.0.3"
"#,
        r#"
inventory.toml:5:8: error: invalid host name `../etc`
  hint: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit and without ".." (it names a directory)
inventory.toml:8:8: error: invalid host name `a..b`
  hint: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit and without ".." (it names a directory)
inventory.toml:11:8: error: invalid host name `c/d`
  hint: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit and without ".." (it names a directory)"#,
    );
}

#[test]
fn duplicate_host_name_points_at_the_second() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
"#,
            hosts3!(),
            r#"[[hosts]]
name = "b"
address = "10.0.0.4"
"#
        ),
        r#"
inventory.toml:14:8: error: duplicate host name `b`
  hint: host names must be unique; `b` is already used at line 8"#,
    );
}

#[test]
fn duplicate_address() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
"#,
            hosts3!(),
            r#"[[hosts]]
name = "d"
address = "10.0.0.2"
"#
        ),
        r#"
inventory.toml:15:11: error: duplicate address 10.0.0.2
  hint: each host needs its own address; host `b` at line 9 already has it"#,
    );
}

#[test]
fn duplicate_ipv6_address_in_another_spelling() {
    check(
        r#"
[deployment]
name = "lab"
topology = "replication"
[[hosts]]
name = "a"
address = "fd00::1"
[[hosts]]
name = "b"
address = "fd00:0::1"
"#,
        r#"
inventory.toml:9:11: error: duplicate address fd00::1
  hint: each host needs its own address; host `a` at line 6 already has it"#,
    );
}

fn one_host(address: &str) -> String {
    format!(
        "\n[deployment]\nname = \"lab\"\ntopology = \"replication\"\nreplicas_per_master = 0\n[[hosts]]\nname = \"a\"\naddress = \"{address}\"\n"
    )
}

#[test]
fn host_name_instead_of_address() {
    check(
        &one_host("clusternodeA.local"),
        r#"
inventory.toml:7:11: error: `address` in [[hosts]] must be an IP address, found `clusternodeA.local`
  hint: use the IP address Redis should announce, e.g. "192.168.56.11" (host names are not resolved)"#,
    );
}

#[test]
fn address_mistakes_get_specific_hints() {
    check(
        &one_host("[fd00::1]"),
        r#"
inventory.toml:7:11: error: `address` in [[hosts]] must be an IP address, found `[fd00::1]`
  hint: write IPv6 addresses without brackets, e.g. "fd00::11""#,
    );
    check(
        &one_host("10.0.0.1:7443"),
        r#"
inventory.toml:7:11: error: `address` in [[hosts]] must be an IP address, found `10.0.0.1:7443`
  hint: give the IP address alone; the agent's port goes in agent_port"#,
    );
    check(
        &one_host("0.0.0.0"),
        r#"
inventory.toml:7:11: error: `address` in [[hosts]] must be a unicast address, found 0.0.0.0
  hint: use the IP address Redis should announce: the one other hosts reach this machine at"#,
    );
}

#[test]
fn agent_port_range() {
    check(
        &format!("{}agent_port = 0\n", one_host("10.0.0.1")),
        r#"
inventory.toml:8:14: error: `agent_port` in [[hosts]] must be between 1 and 65535, found 0
  hint: the port paddockd listens on, e.g. 7443"#,
    );
}

// -------------------------------------------------------------- port clashes

#[test]
fn agent_port_clashes_with_a_redis_port() {
    check(
        r#"
[deployment]
name = "lab"
topology = "cluster"
[[hosts]]
name = "a"
address = "10.0.0.1"
agent_port = 7001
[[hosts]]
name = "b"
address = "10.0.0.2"
[[hosts]]
name = "c"
address = "10.0.0.3"
"#,
        r#"
inventory.toml:7:14: error: port 7001 is used twice on host `a`: by redis-7001 and by the agent (agent_port)
  hint: host `a` uses redis ports 7000-7001, cluster bus ports 17000-17001 and agent_port 7001; change [redis] port or this host's agent_port so they do not overlap"#,
    );
}

#[test]
fn agent_port_clashes_with_cluster_bus_on_two_hosts() {
    check(
        r#"
[deployment]
name = "lab"
topology = "cluster"
[[hosts]]
name = "a"
address = "10.0.0.1"
agent_port = 17000
[[hosts]]
name = "b"
address = "10.0.0.2"
agent_port = 17001
[[hosts]]
name = "c"
address = "10.0.0.3"
"#,
        r#"
inventory.toml:7:14: error: port 17000 is used twice on host `a`: by the cluster bus of redis-7000 and by the agent (agent_port)
  hint: host `a` uses redis ports 7000-7001, cluster bus ports 17000-17001 and agent_port 17000; change [redis] port or this host's agent_port so they do not overlap
inventory.toml:11:14: error: port 17001 is used twice on host `b`: by the cluster bus of redis-7001 and by the agent (agent_port)
  hint: host `b` uses redis ports 7000-7001, cluster bus ports 17000-17001 and agent_port 17001; change [redis] port or this host's agent_port so they do not overlap"#,
    );
}

#[test]
fn redis_ports_run_into_the_default_agent_port_on_every_host() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
port = 7442
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:8: error: port 7443 is used twice on hosts `a`, `b` and `c`: by redis-7443 and by the agent (agent_port)
  hint: host `a` uses redis ports 7442-7443, cluster bus ports 17442-17443 and agent_port 7443; change [redis] port or this host's agent_port so they do not overlap"#,
    );
}

#[test]
fn sentinel_port_clashes_with_redis_port() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "sentinel"
replicas_per_master = 2
[redis]
port = 26379
"#,
            hosts3!()
        ),
        r#"
inventory.toml:6:8: error: port 26379 is used twice on hosts `a`, `b` and `c`: by redis-26379 and by sentinel-26379
  hint: host `a` uses redis port 26379, sentinel port 26379 and agent_port 7443; change [redis] port or [sentinel] port so they do not overlap"#,
    );
}

#[test]
fn sentinel_port_clashes_with_agent_port() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "sentinel"
[sentinel]
port = 7443
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:8: error: port 7443 is used twice on hosts `a`, `b` and `c`: by sentinel-7443 and by the agent (agent_port)
  hint: host `a` uses redis port 7000, sentinel port 7443 and agent_port 7443; change [sentinel] port or this host's agent_port so they do not overlap"#,
    );
}

#[test]
fn sentinel_ports_past_65535() {
    check(
        r#"
[deployment]
name = "lab"
topology = "sentinel"
replicas_per_master = 0
[sentinel]
port = 65535
[[hosts]]
name = "a"
address = "10.0.0.1"
"#,
        r#"
inventory.toml:6:8: error: sentinel ports 65535-65537 on host `a` run past 65535
  hint: lower [sentinel] port or add hosts so that fewer instances share a host"#,
    );
}

#[test]
fn cluster_bus_ports_past_65535() {
    check(
        r#"
[deployment]
name = "lab"
topology = "cluster"
masters = 1000
replicas_per_master = 0
[redis]
port = 55535
[[hosts]]
name = "a"
address = "10.0.0.1"
"#,
        r#"
inventory.toml:7:8: error: cluster bus ports 65535-66534 on host `a` run past 65535
  hint: lower [redis] port or add hosts so that fewer instances share a host"#,
    );
}

// ------------------------------------------------------------- all at once

#[test]
fn many_problems_reported_together_in_file_order() {
    let text = strip(concat!(
        r#"
[deployment]
name = "Lab"
topology = "cluster"
masters = 2
replicas_per_master = 3
[redis]
maxmemory = "lots"
maxmemory_policy = "lru"
[sentinel]
"#,
        hosts3!(),
        r#"[[hosts]]
name = "a"
address = "node4"
"#
    ));
    let diagnostics = parse("inventory.toml", text).unwrap_err();
    assert_eq!(
        diagnostics.to_string(),
        strip(
            r#"
inventory.toml:2:8: error: invalid deployment name `Lab`
  hint: use 1 to 40 lowercase letters, digits or '-', starting with a letter or digit
inventory.toml:4:11: error: topology `cluster` needs at least 3 masters, found masters = 2
  hint: Redis Cluster needs 3 masters so that a majority survives a failure; for a single master use topology = "replication" or "sentinel"
inventory.toml:7:13: error: invalid size `lots` for `maxmemory` in [redis]
  hint: write a whole number with an optional unit b, k, kb, m, mb, g or gb (case-insensitive), e.g. "256mb"
inventory.toml:8:20: error: unknown maxmemory_policy `lru`
  hint: expected one of: noeviction, allkeys-lru, volatile-lru, allkeys-lfu, volatile-lfu, allkeys-random, volatile-random, volatile-ttl
inventory.toml:9:1: error: [sentinel] is only allowed with topology = "sentinel", but topology is "cluster"
  hint: remove the [sentinel] table, or set topology = "sentinel"
inventory.toml:20:8: error: duplicate host name `a`
  hint: host names must be unique; `a` is already used at line 11
inventory.toml:21:11: error: `address` in [[hosts]] must be an IP address, found `node4`
  hint: use the IP address Redis should announce, e.g. "192.168.56.11" (host names are not resolved)"#
        )
    );
    // The structured form carries the same information.
    assert_eq!(diagnostics.len(), 7);
    assert_eq!(
        diagnostics.0[0],
        Diagnostic {
            file: "inventory.toml".into(),
            line: 2,
            column: 8,
            message: "invalid deployment name `Lab`".into(),
            hint: Some(
                "use 1 to 40 lowercase letters, digits or '-', starting with a letter or digit"
                    .into()
            ),
        }
    );
}

#[test]
fn columns_count_chars_not_bytes() {
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
maxmemory_policy = "é" # maxmemory_policy = "é"
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:20: error: unknown maxmemory_policy `é`
  hint: expected one of: noeviction, allkeys-lru, volatile-lru, allkeys-lfu, volatile-lfu, allkeys-random, volatile-random, volatile-ttl"#,
    );
    check(
        concat!(
            r#"
[deployment]
name = "lab"
topology = "cluster"
[redis]
"é" = 1
"#,
            hosts3!()
        ),
        r#"
inventory.toml:5:1: error: unknown key `é` in [redis]
  hint: expected one of: port, maxmemory, maxmemory_policy, appendonly, rdb_snapshots, cluster_node_timeout_ms, min_replicas_to_write, min_replicas_max_lag_s"#,
    );
}

// ---------------------------------------------------------------- [[users]]

/// A deployment and three hosts (12 lines), then `users` from line 13.
macro_rules! with_users {
    ($users:expr) => {
        concat!(
            "\n[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n",
            hosts3!(),
            $users
        )
    };
}

const PASSWORD_HINT: &str = "passwords are generated by paddock; remove this rule";

#[test]
fn unknown_key_in_users() {
    check(
        with_users!(
            r#"[[users]]
name = "app"
rules = "+@read"
rule = "+@write"
"#
        ),
        r#"
inventory.toml:16:1: error: unknown key `rule` in [[users]]
  hint: expected one of: name, rules"#,
    );
}

#[test]
fn missing_user_keys() {
    check(
        with_users!(
            r#"[[users]]
rules = "+@read"
[[users]]
name = "app"
"#
        ),
        r#"
inventory.toml:13:1: error: missing required key `name` in [[users]]
  hint: for example: name = "app"
inventory.toml:15:1: error: missing required key `rules` in [[users]]
  hint: for example: rules = "~app:* +@read +@write -@dangerous""#,
    );
}

#[test]
fn bad_user_names() {
    let invalid = "use 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter";
    check(
        with_users!(
            r#"[[users]]
name = "App"
rules = "+@read"
[[users]]
name = "1app"
rules = "+@read"
[[users]]
name = "a.b"
rules = "+@read"
[[users]]
name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
rules = "+@read"
[[users]]
name = ""
rules = "+@read"
[[users]]
name = "default"
rules = "+@read"
"#
        ),
        &format!(
            r#"
inventory.toml:14:8: error: invalid user name `App`
  hint: {invalid}
inventory.toml:17:8: error: invalid user name `1app`
  hint: {invalid}
inventory.toml:20:8: error: invalid user name `a.b`
  hint: {invalid}
inventory.toml:23:8: error: invalid user name `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`
  hint: {invalid}
inventory.toml:26:8: error: invalid user name ``
  hint: {invalid}
inventory.toml:29:8: error: user name `default` is reserved
  hint: `default` is Redis's built-in user, which paddock configures itself; choose another name"#
        ),
    );
}

#[test]
fn duplicate_user_name_points_at_the_second() {
    check(
        with_users!(
            r#"[[users]]
name = "app"
rules = "+@read"
[[users]]
name = "ops"
rules = "+@all"
[[users]]
name = "app"
rules = "+@write"
"#
        ),
        r#"
inventory.toml:20:8: error: duplicate user name `app`
  hint: user names must be unique; `app` is already used at line 14"#,
    );
}

/// Every token that sets, drops or bypasses a password, each reported at
/// the value without echoing the password.
#[test]
fn password_rules_are_refused() {
    check(
        with_users!(
            r#"[[users]]
name = "app"
rules = "~app:* >s3cret <old #5e884898 !5e884898 nopass resetpass NoPass reset +@read"
"#
        ),
        &format!(
            r#"
inventory.toml:15:9: error: ACL rule `>…` in [[users]] would set a password
  hint: {PASSWORD_HINT}
inventory.toml:15:9: error: ACL rule `<…` in [[users]] would remove a password
  hint: {PASSWORD_HINT}
inventory.toml:15:9: error: ACL rule `#…` in [[users]] would set a password hash
  hint: {PASSWORD_HINT}
inventory.toml:15:9: error: ACL rule `!…` in [[users]] would remove a password hash
  hint: {PASSWORD_HINT}
inventory.toml:15:9: error: ACL rule `nopass` in [[users]] would let the user in without a password
  hint: {PASSWORD_HINT}
inventory.toml:15:9: error: ACL rule `resetpass` in [[users]] would drop the user's password
  hint: {PASSWORD_HINT}
inventory.toml:15:9: error: ACL rule `NoPass` in [[users]] would let the user in without a password
  hint: {PASSWORD_HINT}
inventory.toml:15:9: error: ACL rule `reset` in [[users]] would reset the user, dropping its password
  hint: passwords are generated by paddock and `reset` would drop it; remove this rule and list the permissions to grant"#
        ),
    );
}

/// Rules Redis refuses at start-up (it then echoes the whole `user` line,
/// password included, into its log): refused here, at the rule itself.
#[test]
fn rules_redis_would_refuse_are_named_with_their_column() {
    check(
        with_users!(
            r#"[[users]]
name = "app"
rules = "~app:* +notacommand +@nope %X~a (+get on) +config|get (~logs:* +get) allkey"
"#
        ),
        r#"
inventory.toml:15:17: error: ACL rule `+notacommand` in [[users]] names the unknown command `notacommand`; Redis would refuse to start
  hint: check the spelling against Redis's COMMAND LIST, or grant a group with +@category
inventory.toml:15:30: error: ACL rule `+@nope` in [[users]] names the unknown category `@nope`; Redis would refuse to start
  hint: categories are @all, @keyspace, @read, @write, @set, @sortedset, @list, @hash, @string, @bitmap, @hyperloglog, @geo, @stream, @pubsub, @admin, @fast, @slow, @blocking, @dangerous, @connection, @transaction, @scripting
inventory.toml:15:37: error: ACL rule `%X~a` in [[users]] has the permission `X`, which is neither R, W nor RW; Redis would refuse to start
  hint: write %R~pattern, %W~pattern or %RW~pattern
inventory.toml:15:48: error: ACL rule `on)` in [[users]] is not allowed inside a selector; Redis would refuse to start
  hint: put on, off, clearselectors and sanitize-payload outside the parentheses
inventory.toml:15:79: error: ACL rule `allkey` in [[users]] is not an ACL rule; Redis would refuse to start
  hint: use on, off, ~pattern, %R~pattern, %W~pattern, %RW~pattern, &pattern, +command, -command, +command|subcommand, +@category, -@category, allkeys, allchannels, allcommands, nocommands, resetkeys, resetchannels, clearselectors, or a selector (rules in parentheses)"#,
    );
}

#[test]
fn quotes_backslashes_and_control_characters_in_rules() {
    let hint = "write each rule as printable ASCII without quotes or backslashes, rules separated by spaces, e.g. ~app:* +@read";
    check(
        with_users!(
            r#"[[users]]
name = "app"
rules = "~app:* '+get' +@read"
[[users]]
name = "ops"
rules = '~"ops" +ba\ck'
[[users]]
name = "etl"
rules = "+get	~etl:* ~é"
"#
        ),
        &format!(
            r#"
inventory.toml:15:9: error: ACL rule `'+get'` in [[users]] contains a quote
  hint: {hint}
inventory.toml:18:9: error: ACL rule `~"ops"` in [[users]] contains a quote
  hint: {hint}
inventory.toml:18:9: error: ACL rule `+ba\ck` in [[users]] contains a backslash
  hint: {hint}
inventory.toml:21:9: error: ACL rule `+get\t~etl:*` in [[users]] contains a tab
  hint: {hint}
inventory.toml:21:9: error: ACL rule `~é` in [[users]] contains the non-ASCII character `é`
  hint: {hint}"#
        ),
    );
}

#[test]
fn empty_and_too_long_rules() {
    let long = format!("+@read {}", "~k ".repeat(334));
    check(
        &format!(
            "{}[[users]]\nname = \"app\"\nrules = \"  \"\n[[users]]\nname = \"ops\"\nrules = \"{long}\"\n",
            with_users!("")
        ),
        r#"
inventory.toml:15:9: error: `rules` in [[users]] is empty
  hint: give the user's Redis ACL rules separated by spaces, e.g. "~app:* +@read +@write -@dangerous"
inventory.toml:18:9: error: `rules` in [[users]] is 1009 characters long, more than 1000
  hint: grant by key pattern and command category (e.g. ~app:* +@read) rather than command by command"#,
    );
}

#[test]
fn valid_users_parse_in_order() {
    let inventory = parse(
        "inventory.toml",
        strip(with_users!(
            r#"[[users]]
name = "app"
rules = "~app:* +@read  +@write   -@dangerous"
[[users]]
name = "ops_ro-1"
rules = " on ~* &* +@read +info "
"#
        )),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        inventory.users,
        vec![
            User {
                name: "app".into(),
                rules: vec![
                    "~app:*".into(),
                    "+@read".into(),
                    "+@write".into(),
                    "-@dangerous".into()
                ],
            },
            User {
                name: "ops_ro-1".into(),
                rules: ["on", "~*", "&*", "+@read", "+info"]
                    .map(String::from)
                    .to_vec(),
            },
        ]
    );
}

// ------------------------------------------------- hostile values (issue 12)

#[test]
fn broadcast_and_multicast_are_not_host_addresses() {
    for (address, shown) in [
        ("255.255.255.255", "255.255.255.255"),
        ("224.0.0.1", "224.0.0.1"),
        ("::", "::"),
        ("ff02::1", "ff02::1"),
    ] {
        check(
            &one_host(address),
            &format!(
                r#"
inventory.toml:7:11: error: `address` in [[hosts]] must be a unicast address, found {shown}
  hint: use the IP address Redis should announce: the one other hosts reach this machine at"#
            ),
        );
    }
}

#[test]
fn maxmemory_below_one_megabyte() {
    for (value, bytes) in [
        ("\"1\"", 1),
        ("\"1b\"", 1),
        ("1", 1),
        ("\"1000kb\"", 1_024_000),
    ] {
        check(
            &format!(
                "\n[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n[redis]\nmaxmemory = {value}\n{}",
                hosts3!()
            ),
            &format!(
                r#"
inventory.toml:5:13: error: `maxmemory` in [redis] is below the minimum of 1mb: {bytes} bytes
  hint: give the memory Redis may use on one instance, e.g. "256mb", or omit maxmemory for no limit"#
            ),
        );
    }
}

#[test]
fn maxmemory_past_u64() {
    for value in [
        "18446744073709551616",
        "18446744073709551615kb",
        "17179869184gb",
    ] {
        check(
            &format!(
                "\n[deployment]\nname = \"lab\"\ntopology = \"cluster\"\n[redis]\nmaxmemory = \"{value}\"\n{}",
                hosts3!()
            ),
            &format!(
                r#"
inventory.toml:5:13: error: `maxmemory` in [redis] is too large: `{value}`
  hint: give the memory Redis may use on one instance, e.g. "4gb""#
            ),
        );
    }
}

#[test]
fn non_utf8_inventory_gets_the_position_of_the_bad_byte() {
    let mut bytes = b"[deployment]\nname = \"lab\"\ntopology = \"cl".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(b"uster\"\n");
    let err = paddock_inventory::parse_bytes("inventory.toml", &bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "inventory.toml:3:15: error: the file is not UTF-8: byte 0xff at offset 40 is not valid UTF-8\n  hint: save the inventory as UTF-8 (TOML files must be UTF-8)"
    );
}
