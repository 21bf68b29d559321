//! Observing what the agents run and planning what apply would change: the
//! pieces live in [`crate::engine`]; the INFO parsers stay here.

pub use crate::engine::observe::{
    Observed, SkipReason, Skipped, TargetState, observe, observe_node, scope,
};
pub use crate::engine::plan::reshard;
pub use crate::engine::step::{Plan, Refusal, Step};

/// What INFO replication says: role, master address, link.
pub struct ReplicationInfo {
    pub role_master: Option<bool>,
    pub master_addr: Option<(std::net::IpAddr, u16)>,
    pub link_up: Option<bool>,
    pub connected_replicas: Option<u32>,
    /// `slaveN:ip=...,port=...,state=online` lines.
    pub replicas_online: Vec<(std::net::IpAddr, u16)>,
}

pub fn parse_replication(info: &str) -> ReplicationInfo {
    let field = |key: &str| info_field(info, key);
    let role = field("role");
    let replica = role.as_deref() == Some("slave");
    ReplicationInfo {
        role_master: role.as_deref().map(|r| r == "master"),
        master_addr: replica
            .then(|| {
                Some((
                    field("master_host")?.parse().ok()?,
                    field("master_port")?.parse().ok()?,
                ))
            })
            .flatten(),
        link_up: replica.then(|| field("master_link_status").as_deref() == Some("up")),
        connected_replicas: field("connected_slaves").and_then(|n| n.parse().ok()),
        replicas_online: info
            .lines()
            .filter(|l| {
                l.strip_prefix("slave")
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
            .filter_map(|l| {
                let kv = |key: &str| {
                    l.split_once(':')?
                        .1
                        .split(',')
                        .find_map(|f| f.trim().strip_prefix(key)?.strip_prefix('='))
                };
                (kv("state")? == "online")
                    .then_some((kv("ip")?.parse().ok()?, kv("port")?.parse().ok()?))
            })
            .collect(),
    }
}

/// A `key:value` field of INFO output.
pub fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(str::to_owned)
}
