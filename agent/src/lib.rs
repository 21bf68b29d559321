//! `paddockd`, the Paddock agent: supervises redis-server processes on one
//! machine and serves the gRPC API the controller drives.
//!
//! `main.rs` only parses flags, sets up logging and signals, then calls
//! [`run`]; tests call the same function in-process.

pub mod config;
pub mod facts;
mod grpc;
mod redis_access;
pub mod spec;
mod store;
pub mod supervisor;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use paddock_proto::v1::agent_server::AgentServer;
use tokio::net::TcpListener;
use tracing::info;

pub use config::AgentConfig;

/// Largest gRPC message either way: a big CLUSTER NODES or pipeline fits.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The agent's one error type. Variants carry what the operator needs to act.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid instance spec: {0}")]
    InvalidSpec(String),
    #[error("no instance named {0:?} on this agent; apply the inventory first")]
    UnknownInstance(String),
    #[error("instance {instance}: {message}")]
    Redis { instance: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// Binds the configured address. Split from [`run`] so callers learn about a
/// busy port before anything else starts.
pub async fn bind(config: &AgentConfig) -> Result<TcpListener, Error> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })
}

/// Serves until `shutdown` resolves, then stops every instance.
///
/// Shutdown order: stop accepting RPCs, then stop the Redis instances (SIGTERM,
/// SIGKILL after a timeout), then return.
pub async fn run(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce() + Send,
) -> Result<(), Error> {
    let supervisor = supervisor::spawn(config.redis_server.clone(), &config.data_dir)?;
    let service = grpc::AgentService {
        supervisor: supervisor.clone(),
        connections: Default::default(),
        data_dir: config.data_dir.clone(),
        redis_server: config.redis_server.clone(),
    };
    let addr = listener.local_addr().ok();
    info!(?addr, data_dir = %config.data_dir.display(), "paddockd serving");
    ready();
    // The transport is configured here and only here, so TLS slots in at one place.
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(60))
        .concurrency_limit_per_connection(256)
        .add_service(
            AgentServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    info!("RPCs stopped; stopping instances");
    supervisor.stop_all().await?;
    info!("all instances stopped");
    Ok(())
}
