//! Setting a redis-server's changed settings on the running process: the
//! commands (pure, from the spec, never from the masked key diff) and the
//! step that sends them.

use crate::Error;
use crate::client::{InstanceSpec, KeyChange};
use crate::fleet::Fleet;

/// Redis's `save` value for the spec (the one the agent renders).
const SNAPSHOTS: &str = "3600 1 300 100 60 10000";

/// One command to send, and what an error may name (never a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCommand {
    pub args: Vec<String>,
    pub label: String,
    /// A secret the command carries, masked out of Redis's error text.
    pub secret: Option<String>,
}

/// Pure: the commands that give the running process `spec`'s values of the
/// changed `keys`. Err names a key Redis does not take live.
pub fn commands(spec: &InstanceSpec, keys: &[KeyChange]) -> Result<Vec<LiveCommand>, String> {
    keys.iter().map(|k| command(spec, &k.key)).collect()
}

fn command(spec: &InstanceSpec, key: &str) -> Result<LiveCommand, String> {
    if let Some(quoted) = key.strip_prefix("user ") {
        let name = quoted.trim_matches('"');
        return Ok(match spec.users.iter().find(|u| u.name == name) {
            Some(u) => {
                let mut args = vec![
                    "ACL".to_owned(),
                    "SETUSER".into(),
                    u.name.clone(),
                    "reset".into(),
                    "on".into(),
                    format!(">{}", u.password),
                ];
                args.extend(u.rules.iter().cloned());
                LiveCommand {
                    args,
                    label: format!("ACL SETUSER {}", u.name),
                    secret: Some(u.password.clone()),
                }
            }
            None => LiveCommand {
                args: vec!["ACL".into(), "DELUSER".into(), name.to_owned()],
                label: format!("ACL DELUSER {name}"),
                secret: None,
            },
        });
    }
    let value = match key {
        "maxmemory" => spec.maxmemory_bytes.to_string(),
        "maxmemory-policy" => spec.maxmemory_policy.as_str().to_owned(),
        "min-replicas-to-write" => spec.min_replicas_to_write.to_string(),
        "min-replicas-max-lag" => spec.min_replicas_max_lag.as_secs().to_string(),
        "cluster-node-timeout" => spec.cluster_node_timeout.as_millis().to_string(),
        "save" if spec.rdb_snapshots => SNAPSHOTS.to_owned(),
        "save" => String::new(),
        "appendonly" => if spec.appendonly { "yes" } else { "no" }.to_owned(),
        other => return Err(format!("{other} cannot be set on the running process")),
    };
    Ok(LiveCommand {
        label: format!("CONFIG SET {key} {value}"),
        args: vec!["CONFIG".into(), "SET".into(), key.to_owned(), value],
        secret: None,
    })
}

/// Stores the new spec, sends the commands, then marks the spec as what
/// the process runs (no restart). Every reply is checked.
pub async fn set_live(
    fleet: &Fleet,
    host: usize,
    host_name: &str,
    spec: &InstanceSpec,
    keys: &[KeyChange],
) -> Result<(), Error> {
    let failed = |message: String| Error::Redis {
        host: host_name.to_owned(),
        instance: spec.name.clone(),
        message,
    };
    let commands = commands(spec, keys).map_err(failed)?;
    let agent = fleet.agent(host)?;
    // Stored first: the guard allows only the values the stored spec has.
    agent.put_instance(spec, false).await?;
    for c in &commands {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let replies = agent.redis_dangerous(&spec.name, &[&args]).await?;
        if let Some(e) = replies.first().and_then(|r| r.error()) {
            let e = match &c.secret {
                Some(s) if !s.is_empty() => e.replace(s.as_str(), "********"),
                _ => e.to_string(),
            };
            return Err(failed(format!("{}: {e}", c.label)));
        }
    }
    agent.put_instance_live(spec).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::AclUser;

    fn spec() -> InstanceSpec {
        let toml = "[deployment]\nname = \"t\"\ntopology = \"cluster\"\n";
        let d = crate::engine::tests::deployment(toml);
        let mut s = d.targets()[0].spec.clone();
        s.users = vec![AclUser {
            name: "app".into(),
            password: "app-password-0123456789".into(),
            rules: vec!["~app:*".into(), "+@read".into()],
        }];
        s
    }

    fn change(key: &str) -> KeyChange {
        KeyChange {
            key: key.into(),
            old: "********".into(),
            new: "********".into(),
            live: true,
        }
    }

    #[test]
    fn values_come_from_the_spec_users_get_reset_and_their_rules() {
        let s = spec();
        let table: &[(&str, &[&str])] = &[
            (
                "maxmemory",
                &["CONFIG", "SET", "maxmemory", &s.maxmemory_bytes.to_string()],
            ),
            (
                "maxmemory-policy",
                &[
                    "CONFIG",
                    "SET",
                    "maxmemory-policy",
                    s.maxmemory_policy.as_str(),
                ],
            ),
            (
                "appendonly",
                &[
                    "CONFIG",
                    "SET",
                    "appendonly",
                    if s.appendonly { "yes" } else { "no" },
                ],
            ),
            (
                "user \"app\"",
                &[
                    "ACL",
                    "SETUSER",
                    "app",
                    "reset",
                    "on",
                    ">app-password-0123456789",
                    "~app:*",
                    "+@read",
                ],
            ),
            ("user \"gone\"", &["ACL", "DELUSER", "gone"]),
        ];
        for (key, want) in table {
            let got = commands(&s, &[change(key)]).unwrap();
            assert_eq!(got[0].args, want.to_vec(), "{key}");
            assert!(!got[0].label.contains("app-password"), "{key}");
        }
        let save = commands(&s, &[change("save")]).unwrap();
        let want = if s.rdb_snapshots { SNAPSHOTS } else { "" };
        assert_eq!(save[0].args[3], want);
        assert!(commands(&s, &[change("port")]).is_err());
    }
}
