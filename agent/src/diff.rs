//! What a new config changes, key by key, and whether the running process
//! takes each change live: one pure function, its answer sent with the
//! PutInstance reply so `paddock plan` shows it.

/// One changed setting (the shared model's type). Secrets are masked.
pub use paddock_model::KeyChange;

/// Settings the controller sets on the running process instead of
/// restarting it: a sentinel's with SENTINEL SET, a redis-server's with
/// CONFIG SET, its ACL users (`user NAME`) with ACL SETUSER / DELUSER.
pub fn live_settable(key: &str) -> bool {
    const LIVE: &[&str] = &[
        "sentinel down-after-milliseconds",
        "sentinel failover-timeout",
        "sentinel parallel-syncs",
        "sentinel quorum",
        "maxmemory",
        "maxmemory-policy",
        "min-replicas-to-write",
        "min-replicas-max-lag",
        "cluster-node-timeout",
        "save",
        "appendonly",
    ];
    LIVE.contains(&key) || key.starts_with("user ")
}

/// The key of a config line: the directive, with the user's name for
/// `user` and the option for `sentinel` (their masters' name dropped).
fn key_of(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
    let (key, value) = match first {
        "user" | "sentinel" => {
            let (second, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            (format!("{first} {second}"), rest)
        }
        _ => (first.to_owned(), rest),
    };
    Some((key, value.to_owned()))
}

/// A value with its secrets masked: passwords of `requirepass`,
/// `masterauth`, `auth-pass`, and `>password` / `#hash` rules of a user.
fn masked(key: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    match key {
        "requirepass" | "masterauth" | "sentinel sentinel-pass" => "********".into(),
        // `sentinel auth-pass NAME PASSWORD`
        "sentinel auth-pass" => match value.split_once(' ') {
            Some((name, _)) => format!("{name} ********"),
            None => "********".into(),
        },
        k if k.starts_with("user ") => value
            .split(' ')
            .map(|w| {
                let bare = w.trim_matches('"');
                if bare.starts_with('>') || bare.starts_with('#') {
                    w.replace(bare, &format!("{}********", &bare[..1]))
                } else {
                    w.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => value.to_owned(),
    }
}

fn settings(config: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (key, value) in config.lines().filter_map(key_of) {
        // A directive given on several lines (`save`): one setting.
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.push_str("; ");
                v.push_str(&value);
            }
            None => out.push((key, value)),
        }
    }
    out
}

/// Pure: the settings `new` changes from `old`, in `new`'s order, then the
/// ones it drops.
pub fn config_changes(old: &str, new: &str) -> Vec<KeyChange> {
    let (old, new) = (settings(old), settings(new));
    let find = |list: &[(String, String)], key: &str| {
        list.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let change = |key: &str, was: String, now: String| {
        // `sentinel monitor NAME IP PORT QUORUM` where only the quorum
        // moved: SENTINEL SET quorum.
        let (key, was, now) = match (key, was.rsplit_once(' '), now.rsplit_once(' ')) {
            ("sentinel monitor", Some((a, q0)), Some((b, q1))) if a == b => {
                let name = a.split(' ').next().unwrap_or_default();
                (
                    "sentinel quorum",
                    format!("{name} {q0}"),
                    format!("{name} {q1}"),
                )
            }
            _ => (key, was, now),
        };
        KeyChange {
            old: masked(key, &was),
            new: masked(key, &now),
            live: live_settable(key),
            key: key.to_owned(),
        }
    };
    let mut out: Vec<KeyChange> = new
        .iter()
        .filter(|(k, v)| find(&old, k) != *v)
        .map(|(k, v)| change(k, find(&old, k), v.clone()))
        .collect();
    out.extend(
        old.iter()
            .filter(|(k, _)| !new.iter().any(|(n, _)| n == k))
            .map(|(k, v)| change(k, v.clone(), String::new())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_listed_per_key_live_or_not_with_secrets_masked() {
        let old = "# header\nport 7000\nrequirepass \"old-secret\"\nmaxmemory 100mb\nsave 900 1\nsave 300 10\n\
                   user \"app\" on \">pw1\" \"~app:*\"\nappendonly no\n";
        let new = "# header\nport 7000\nrequirepass \"new-secret\"\nmaxmemory 200mb\nsave 900 1\n\
                   user \"app\" on \">pw1\" \"~app:*\" \"+@read\"\nappendonly yes\nuser \"ops\" on \">pw2\"\n";
        let got = config_changes(old, new);
        let table: Vec<(&str, &str, &str, bool)> = got
            .iter()
            .map(|c| (c.key.as_str(), c.old.as_str(), c.new.as_str(), c.live))
            .collect();
        assert_eq!(
            table,
            vec![
                ("requirepass", "********", "********", false),
                ("maxmemory", "100mb", "200mb", true),
                ("save", "900 1; 300 10", "900 1", true),
                (
                    "user \"app\"",
                    "on \">********\" \"~app:*\"",
                    "on \">********\" \"~app:*\" \"+@read\"",
                    true
                ),
                ("appendonly", "no", "yes", true),
                ("user \"ops\"", "", "on \">********\"", true),
            ]
        );
        for c in &got {
            for secret in ["old-secret", "new-secret", "pw1", "pw2"] {
                assert!(!c.old.contains(secret) && !c.new.contains(secret), "{c:?}");
            }
        }
        assert!(config_changes(new, new).is_empty());
        let gone = config_changes("maxmemory 1mb\n", "");
        assert_eq!(gone[0].new, "");
    }

    #[test]
    fn redis_settings_redis_takes_live_are_live_the_rest_restart() {
        let table: &[(&str, bool)] = &[
            ("maxmemory", true),
            ("maxmemory-policy", true),
            ("min-replicas-to-write", true),
            ("min-replicas-max-lag", true),
            ("cluster-node-timeout", true),
            ("save", true),
            ("appendonly", true),
            ("user \"app\"", true),
            ("masterauth", false),
            ("requirepass", false),
            ("port", false),
            ("bind", false),
            ("cluster-announce-ip", false),
            ("replica-announce-ip", false),
            ("appendfilename", false),
            ("sentinel monitor", false),
            ("sentinel auth-pass", false),
        ];
        for (key, live) in table {
            assert_eq!(live_settable(key), *live, "{key}");
        }
        let gone = config_changes("user \"old\" on \">pw\"\n", "");
        assert!(gone[0].live, "a user dropped is ACL DELUSER, live");
    }

    #[test]
    fn sentinel_timing_is_set_live_its_monitor_and_password_are_not() {
        let old = "sentinel monitor m 10.0.0.1 6379 2\nsentinel down-after-milliseconds m 5000\nsentinel auth-pass m \"a\"\n";
        let new = "sentinel monitor m 10.0.0.2 6379 2\nsentinel down-after-milliseconds m 3000\nsentinel auth-pass m \"b\"\n";
        let got = config_changes(old, new);
        let table: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|c| (c.key.as_str(), c.new.as_str(), c.live))
            .collect();
        let quorum = config_changes(
            "sentinel monitor m 10.0.0.1 6379 2\n",
            "sentinel monitor m 10.0.0.1 6379 3\n",
        );
        assert_eq!(
            (
                quorum[0].key.as_str(),
                quorum[0].new.as_str(),
                quorum[0].live
            ),
            ("sentinel quorum", "m 3", true)
        );
        assert_eq!(
            table,
            vec![
                ("sentinel monitor", "m 10.0.0.2 6379 2", false),
                ("sentinel down-after-milliseconds", "m 3000", true),
                ("sentinel auth-pass", "m ********", false),
            ]
        );
    }
}
