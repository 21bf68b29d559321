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
    let r = paddock_knowledge::info::Replication::parse(info);
    ReplicationInfo {
        role_master: r
            .role
            .map(|role| role == paddock_knowledge::info::InfoRole::Master),
        master_addr: r.master.map(|a| (a.ip, a.port)),
        link_up: r.link_up,
        connected_replicas: r.connected_replicas,
        replicas_online: r.replicas_online().iter().map(|a| (a.ip, a.port)).collect(),
    }
}

/// A `key:value` field of INFO output.
pub fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(str::to_owned)
}
