//! `paddock`, the Paddock controller: reads an inventory, plans the difference
//! between it and what the agents report, applies it, and shows status.
//!
//! `main.rs` parses flags and calls [`commands`], which runs each command,
//! prints its report and returns its [`exit::Exit`]; everything lives here so
//! tests and benchmarks drive the same code.

pub mod apply;
pub mod balance;
pub mod certs;
pub mod check;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod engine;
pub mod exit;
pub mod failover;
pub mod fleet;
pub mod form;
pub mod lab;
pub mod lifecycle;
pub mod node;
pub mod output;
pub mod problem;
pub mod process;
pub mod progress;
pub mod rebalance;
pub mod recover;
pub mod repair;
pub mod rotate;
pub mod secrets;
pub mod sentinel;
pub mod slots;
pub mod status;
pub mod utc;
pub mod watch;
pub mod zones;

use std::net::SocketAddr;
use std::path::PathBuf;

/// The controller's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Inventory(#[from] paddock_inventory::Diagnostics),
    /// The inventory file itself cannot be read.
    #[error("cannot read {path}: {source}")]
    InventoryFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The command line asks for something that cannot be done as asked
    /// (a flag without the flag it needs, a name the inventory lacks).
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach the agent of host {host} at {addr}: {message}\n  hint: is paddockd running there and listening on {addr}? (systemctl status paddockd)"
    )]
    AgentUnreachable {
        host: String,
        addr: SocketAddr,
        message: String,
    },
    #[error("agent of host {host}: {message}")]
    Agent { host: String, message: String },
    #[error("host {host}, instance {instance}: {message}")]
    Redis {
        host: String,
        instance: String,
        message: String,
    },
    /// The instance refuses the password the deployment has for it.
    #[error(
        "host {host}, instance {instance}: refuses the deployment's password (it runs with another one)"
    )]
    RedisAuth { host: String, instance: String },
    #[error("{0}")]
    NotConverged(String),
    /// An agent that could not be dialled earlier; the text names it.
    #[error("{0}")]
    AgentDown(String),
    #[error(
        "the hosts cannot run this deployment:\n  - {}",
        problem::join(.0, "\n  - ")
    )]
    HostCheck(Vec<problem::HostProblem>),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Lab(String),
    /// A `HOST[:INSTANCE]` argument that names nothing of the deployment.
    #[error("{target}: {message}")]
    Selection { target: String, message: String },
    #[error("certificates: {0}")]
    Certs(String),
    #[error(
        "deployment {deployment} is locked by {holder} since {since}: another controller is changing it.\n  hint: wait for it to finish; a controller that died releases the lock after {ttl_s} s"
    )]
    Locked {
        deployment: String,
        holder: String,
        since: String,
        ttl_s: u32,
    },
    /// A command of a slot move was refused; the slot may be left open for
    /// `paddock fix` to finish or roll back.
    #[error(
        "slot {slot}, {step} on {node}: {message}\n  hint: the slot may be left open (importing/migrating); `paddock fix` finishes or rolls it back"
    )]
    SlotMove {
        slot: u16,
        node: String,
        step: String,
        message: String,
    },
    /// A verified batch did not arrive as it left: the move stopped with
    /// the slot open and these keys on both sides or neither.
    #[error(
        "slot {slot}: moved keys do not match ({what}); stopped with the slot open. Keys: {}\n  hint: a client writing these keys during the move reads as a mismatch; check them on both masters, then `paddock fix` and run the move again",
        keys.join(", ")
    )]
    SlotMismatch {
        slot: u16,
        what: String,
        keys: Vec<String>,
    },
    /// Valkey's atomic migration of a move's slots did not finish; Valkey
    /// leaves no slot open (the slots stay on the source unless it
    /// reported success).
    #[error(
        "atomic migration of slots {slots} from {from} to {to}: {message}\n  hint: `paddock rebalance` (or `status`) shows where the slots are; run it again once the cause is fixed"
    )]
    AtomicMove {
        from: String,
        to: String,
        slots: String,
        message: String,
    },
    /// The cluster is not in a state the command can start from.
    #[error("{0}")]
    Unhealthy(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
