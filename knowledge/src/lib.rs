//! What Paddock knows about Redis, written once for the agent and the
//! controller: typed parsers for Redis replies, the high-availability
//! decisions as pure functions, and the procedures that carry them out over
//! any [`RedisNode`] (redis-rs in the agent, the RedisCommand RPC in the
//! controller).

pub mod decide;
pub mod info;
pub mod node;
pub mod nodes;
pub mod procedure;
pub mod role;
pub mod sentinel;
pub mod value;

use std::fmt;
use std::net::IpAddr;

pub use node::RedisNode;

/// The oldest Redis Paddock runs: formation sends CLUSTER ADDSLOTSRANGE
/// and configs set `enable-*-command`, both new in 7.0.
pub const MIN_REDIS: (u32, u32) = (7, 0);
pub use value::Value;

/// A Redis endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub ip: IpAddr,
    pub port: u16,
}

impl Addr {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        Addr { ip, port }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis answered with an error reply. `code` is its first word
    /// (ERR, INPROG, LOADING, ...).
    #[error("{node}: {command}: {code} {message}")]
    Reply {
        node: String,
        command: String,
        code: String,
        message: String,
    },
    /// The node could not be asked (not answering, transport failure). The
    /// source is the caller's own error, for it to take back.
    #[error("{node}: {source}")]
    Unreachable {
        node: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A reply of an unexpected shape.
    #[error("{node}: unexpected reply to {command}")]
    Unexpected { node: String, command: String },
    /// A procedure did not reach its goal within its bounds.
    #[error("{0}")]
    NotDone(String),
}

impl Error {
    /// An error reply built from Redis's text ("CODE message").
    pub fn reply(node: impl Into<String>, command: impl Into<String>, text: &str) -> Self {
        let (code, message) = text.split_once(' ').unwrap_or((text, ""));
        Error::Reply {
            node: node.into(),
            command: command.into(),
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// The error reply's code, when this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Reply { code, .. } => Some(code),
            _ => None,
        }
    }
}
