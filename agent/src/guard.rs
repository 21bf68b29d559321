//! Which Redis commands the RedisCommand RPC runs. Whoever can call the agent
//! must not get, through it, what Redis would not give a client without the
//! password: the password itself, files written where Redis chooses, or a
//! stopped, wiped or re-pointed server. These are refused unless the caller
//! sets `allow_dangerous`:
//!
//! - SHUTDOWN, DEBUG, MODULE, MONITOR, SYNC, PSYNC, FLUSHALL, FLUSHDB, SWAPDB,
//!   ACL, REPLICAOF, SLAVEOF, FAILOVER, MIGRATE, RESTORE;
//! - CLUSTER RESET and CLUSTER FLUSHSLOTS;
//! - SENTINEL subcommands that fail over, re-point, reconfigure or reset a
//!   sentinel (only reading ones such as MASTER, REPLICAS, SENTINELS and
//!   GET-MASTER-ADDR-BY-NAME pass);
//! - CONFIG SET of anything but cluster-node-timeout, maxmemory and
//!   maxmemory-policy (dir, dbfilename, logfile, ... write files);
//!   CONFIG REWRITE (it would turn runtime values into config drift);
//! - CONFIG GET with a pattern (`*`, `?`, `[`) or of an authentication
//!   parameter (requirepass, masterauth, masteruser): never, even with the
//!   flag, since the password never leaves the agent.

const DENIED: [&str; 15] = [
    "SHUTDOWN",
    "DEBUG",
    "MODULE",
    "MONITOR",
    "SYNC",
    "PSYNC",
    "FLUSHALL",
    "FLUSHDB",
    "SWAPDB",
    "ACL",
    "REPLICAOF",
    "SLAVEOF",
    "FAILOVER",
    "MIGRATE",
    "RESTORE",
];
const SENTINEL_READS: [&str; 9] = [
    "MASTER",
    "MASTERS",
    "REPLICAS",
    "SLAVES",
    "SENTINELS",
    "GET-MASTER-ADDR-BY-NAME",
    "CKQUORUM",
    "MYID",
    "INFO-CACHE",
];
const CONFIG_SET_ALLOWED: [&str; 3] = ["cluster-node-timeout", "maxmemory", "maxmemory-policy"];

fn upper(arg: Option<&Vec<u8>>) -> String {
    arg.map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .unwrap_or_default()
}

/// Ok when the command may run; otherwise why not, for the caller.
pub fn check(args: &[Vec<u8>], allow_dangerous: bool) -> Result<(), String> {
    let name = upper(args.first());
    let sub = upper(args.get(1));
    if name == "CONFIG" && sub == "GET" {
        for p in &args[2..] {
            let p = String::from_utf8_lossy(p).to_ascii_lowercase();
            if p.contains(['*', '?', '['])
                || ["pass", "auth", "masteruser"].iter().any(|s| p.contains(s))
            {
                return Err(format!(
                    "CONFIG GET {p} is refused: patterns and authentication settings are never read through the agent"
                ));
            }
        }
        return Ok(());
    }
    if allow_dangerous {
        return Ok(());
    }
    let refused = |what: String| {
        Err(format!(
            "{what} is refused by the agent (it can stop, wipe, re-point Redis or write files); the controller must ask for it explicitly"
        ))
    };
    if DENIED.contains(&name.as_str()) {
        return refused(name);
    }
    if name == "CLUSTER" && (sub == "RESET" || sub == "FLUSHSLOTS") {
        return refused(format!("CLUSTER {sub}"));
    }
    if name == "SENTINEL" && !SENTINEL_READS.contains(&sub.as_str()) {
        return refused(format!("SENTINEL {sub}"));
    }
    if name == "CONFIG" && sub == "REWRITE" {
        return refused("CONFIG REWRITE".into());
    }
    if name == "CONFIG" && sub == "SET" {
        for pair in args[2..].chunks(2) {
            let p = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
            if !CONFIG_SET_ALLOWED.contains(&p.as_str()) {
                return refused(format!("CONFIG SET {p}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &str) -> Vec<Vec<u8>> {
        words.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn formation_commands_pass() {
        for c in [
            "CLUSTER NODES",
            "CLUSTER MEET 127.0.0.1 7000",
            "CLUSTER ADDSLOTSRANGE 0 5460",
            "cluster replicate abc",
            "INFO replication",
            "CONFIG SET cluster-node-timeout 500",
            "CONFIG GET cluster-node-timeout",
            "PING",
            "SENTINEL MASTER lab",
            "sentinel get-master-addr-by-name lab",
        ] {
            assert_eq!(check(&cmd(c), false), Ok(()), "{c}");
        }
    }

    #[test]
    fn dangerous_commands_need_the_flag() {
        for c in [
            "SHUTDOWN NOSAVE",
            "flushall",
            "CONFIG SET dir /etc",
            "CONFIG SET maxmemory 1 dbfilename x",
            "CONFIG REWRITE",
            "CLUSTER RESET HARD",
            "REPLICAOF 10.0.0.9 6379",
            "MODULE LOAD /tmp/x.so",
            "SENTINEL FAILOVER lab",
            "SENTINEL SET lab auth-pass x",
            "sentinel remove lab",
        ] {
            assert!(check(&cmd(c), false).is_err(), "{c}");
            assert_eq!(check(&cmd(c), true), Ok(()), "{c} with the flag");
        }
    }

    #[test]
    fn the_password_is_never_read() {
        for c in [
            "CONFIG GET requirepass",
            "CONFIG GET masterauth",
            "CONFIG GET *",
            "config get maxmemory re*",
        ] {
            assert!(check(&cmd(c), true).is_err(), "{c}");
        }
    }
}
