//! The one model of what crosses the wire between `paddock` (controller)
//! and `paddockd` (agent): instance specs, states, facts, events, Redis
//! replies, put outcomes and leases, as typed domain values (addresses are
//! `IpAddr`, policies and modes enums, timeouts `Duration`s).
//!
//! Both programs use these types; proto types appear only in [`wire`],
//! which converts each message both ways. Decoding validates: a message
//! the agent or controller would refuse never becomes a model value, and
//! the error names the field.

mod lease;
mod spec;
mod status;
pub mod wire;

pub use lease::{HeldLease, LeaseId, LeaseRequest, LockReply};
pub use spec::{
    AclUser, Group, InstanceSpec, MaxmemoryPolicy, Members, Mode, Peer, SentinelSpec, Supervision,
    is_host_address, valid_acl_rule, valid_name,
};
pub use status::{
    Facts, InstanceState, InstanceStatus, KeyChange, MAX_PIPELINE, PutInstance, PutOutcome,
    RedisCommand, Reply, StateEvent,
};

/// A value that is not a valid model value: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{}field {field}: {why}", instance_prefix(.instance))]
    Invalid {
        /// The instance the spec is for, when known.
        instance: Option<String>,
        /// The field's path in the message, e.g. `sentinel.master`.
        field: String,
        why: String,
    },
}

fn instance_prefix(instance: &Option<String>) -> String {
    instance
        .as_ref()
        .map(|n| format!("instance {n:?}: "))
        .unwrap_or_default()
}

impl Error {
    pub fn field(&self) -> &str {
        match self {
            Error::Invalid { field, .. } => field,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, why: impl Into<String>) -> Error {
        Error::Invalid {
            instance: None,
            field: field.into(),
            why: why.into(),
        }
    }

    /// The same error, about instance `name`.
    pub(crate) fn of(self, name: &str) -> Error {
        match self {
            Error::Invalid { field, why, .. } => Error::Invalid {
                instance: Some(name.to_owned()),
                field,
                why,
            },
        }
    }
}
