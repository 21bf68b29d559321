//! `paddockd`, the Paddock agent: supervises redis-server processes on one
//! machine and serves the gRPC API the controller drives.
//!
//! `main.rs` only parses flags, sets up logging and signals, then calls
//! [`run`]; tests call the same function in-process.

mod accept;
pub mod config;
pub mod diff;
mod digest;
mod endpoint;
pub mod error;
pub mod facts;
mod grpc;
pub mod guard;
mod handover;
mod install;
mod lifecycle;
mod locks;
pub mod logs;
mod notify;
mod redact;
pub mod redis_access;
mod rejoin;
pub mod spec;
mod store;
mod supervision;
pub mod supervisor;

use std::future::Future;
use std::time::Duration;

use paddock_proto::v1::agent_server::AgentServer;
use tokio::net::TcpListener;
use tracing::info;

use lifecycle::{Lifecycle, Step};

pub use config::AgentConfig;
pub use error::Error;

/// Largest request: the biggest spec or pipeline the controller sends is
/// far smaller, and tonic buffers a whole message before decoding it.
const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Largest reply: a big CLUSTER NODES or pipeline reply fits.
const MAX_REPLY_BYTES: usize = 16 << 20;

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

impl Error {
    /// A listen address that is not configured on this machine yet (its
    /// interface or DHCP lease comes later at boot): worth waiting for, as
    /// [`run_binding`] does, rather than exiting.
    pub fn address_not_yet_configured(&self) -> bool {
        matches!(self, Error::Listen { source, .. } if bind_retried(source.kind()))
    }
}

/// Which bind failures are retried: only an address that is not there yet.
/// A taken port or a forbidden one will not fix itself.
fn bind_retried(kind: std::io::ErrorKind) -> bool {
    kind == std::io::ErrorKind::AddrNotAvailable
}

/// Wait before bind attempt `attempt + 1`: 250 ms doubling to 5 s.
fn bind_retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

/// Binds the configured address once it exists, retrying while it is not
/// configured (see [`Error::address_not_yet_configured`]).
async fn bind_when_available(config: &AgentConfig) -> Result<TcpListener, Error> {
    let mut attempt = 0u32;
    loop {
        match bind(config).await {
            Ok(l) => {
                if attempt > 0 {
                    info!(listen = %config.listen, "listen address available now; serving");
                }
                return Ok(l);
            }
            Err(e) if e.address_not_yet_configured() => {
                if attempt == 0 {
                    tracing::warn!(
                        "{e}: the address is not configured on this machine yet; supervising instances meanwhile and retrying (up to every 5 s)"
                    );
                }
                tokio::time::sleep(bind_retry_delay(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Like [`run`] when the listen address is not configured yet: supervises
/// the instances at once and serves once the address can be bound.
pub async fn run_binding(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve(config, None, shutdown).await
}

/// Serves until `shutdown` resolves.
///
/// Redis instances keep running when the agent stops or dies: the next agent
/// re-adopts them. Stopping instances is an explicit StopInstance.
///
/// Start-up order: drop privileges for children (resolve the Redis user),
/// raise the open-files limit children inherit, load and re-adopt instances,
/// serve, tell systemd READY=1. Shutdown order: STOPPING=1, stop accepting
/// RPCs, return.
pub async fn run(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve(config, Some(listener), shutdown).await
}

async fn serve(
    config: AgentConfig,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let life = Lifecycle::new();
    // Start-up reads and writes files (TLS, data_dir, the stored
    // instances): on the blocking pool, before anything is served.
    let (acceptor, run_as, supervisor) = {
        let (config, life) = (config.clone(), life.clone());
        tokio::task::spawn_blocking(move || start_up(&config, life))
            .await
            .map_err(|_| Error::ShuttingDown)??
    };
    rotate_logs(&config, &life);
    let mut shutdown = Box::pin(shutdown);
    let listener = match listener {
        Some(l) => Ok(l),
        None => tokio::select! {
            () = &mut shutdown => {
                life.stop_serving();
                life.finish(lifecycle::FINISH_WITHIN).await;
                info!("stopped before serving; Redis instances keep running");
                return Ok(());
            }
            l = bind_when_available(&config) => l,
        },
    };
    let served = match listener {
        Ok(listener) => {
            let addr = listener.local_addr().ok();
            info!(?addr, data_dir = %config.data_dir.display(), redis_user = ?run_as.map(|u| u.uid.as_raw()), "paddockd serving");
            serve_grpc(&config, listener, acceptor, supervisor, &life, shutdown).await
        }
        Err(e) => Err(e),
    };
    // Whatever ended serving, supervision ends in order too.
    life.stop_serving();
    life.finish(lifecycle::FINISH_WITHIN).await;
    served?;
    info!("stopped serving; Redis instances keep running");
    Ok(())
}

/// The TLS files first (a missing one stops the agent before anything
/// starts, exit 2), then [`prepare`], then the supervisor: the stored
/// instances loaded, running ones re-adopted.
fn start_up(
    config: &AgentConfig,
    life: Lifecycle,
) -> Result<
    (
        Option<tokio_rustls::TlsAcceptor>,
        Option<supervisor::RunAs>,
        supervisor::SupervisorHandle,
    ),
    Error,
> {
    let acceptor = config.tls.as_ref().map(accept::tls_acceptor).transpose()?;
    let run_as = prepare(config)?;
    let supervisor = supervisor::spawn(
        supervisor::SupervisorConfig {
            redis_server: config.redis_server.clone(),
            data_dir: config.data_dir.clone(),
            user: config.user.clone(),
            fast_failover: config.fast_failover,
            listen: config.listen,
        },
        life,
    )?;
    Ok((acceptor, run_as, supervisor))
}

/// Before anything is supervised: the Redis user (it may not exist yet,
/// before redis-server is installed: then it is looked up again at the
/// first start), data_dir, the open-files limit children inherit, and
/// warnings about exposed secrets.
fn prepare(config: &AgentConfig) -> Result<Option<supervisor::RunAs>, Error> {
    let run_as = match supervisor::resolve_run_as(&config.user) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "redis-server cannot be started until this is fixed");
            None
        }
    };
    // data_dir before the Redis user's view of it is judged: one that
    // cannot be created exits 2 naming it.
    store::create_layout(&config.data_dir).map_err(|e| e.in_data_dir(&config.data_dir))?;
    supervisor::check_reachable(&config.data_dir.join("instances").join("x"), run_as)?;
    raise_open_files_limit();
    for warning in exposed_secrets(config) {
        tracing::warn!("{warning}");
    }
    Ok(run_as)
}

/// Rotates the instances' logs every 5 s, off the runtime's threads,
/// until supervision stops.
fn rotate_logs(config: &AgentConfig, life: &Lifecycle) {
    let log_root = config.data_dir.clone();
    let rotation = logs::Rotation {
        max_bytes: config.log_max_bytes,
        backups: config.log_backups,
    };
    life.spawn(Step::Supervision, async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let dir = log_root.clone();
            let _ = tokio::task::spawn_blocking(move || logs::rotate_all(&dir, rotation)).await;
        }
    });
}

/// Serves gRPC on `listener` until `shutdown` resolves, then takes the
/// first shutdown steps (see [`lifecycle`]) and lets tonic finish the
/// RPCs under way.
async fn serve_grpc(
    config: &AgentConfig,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    supervisor: supervisor::SupervisorHandle,
    life: &Lifecycle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let service = grpc::AgentService {
        supervisor,
        connections: Default::default(),
        migrations: redis_access::Connections::with_response_timeout(grpc::MIGRATE_WAIT),
        locks: Default::default(),
        data_dir: config.data_dir.clone(),
        redis_server: config.redis_server.clone(),
        lifecycle: life.clone(),
    };
    let notifier = std::sync::Arc::new(notify::Notifier::from_env());
    notifier.notify("READY=1");
    if let Some(every) = notify::Notifier::watchdog_interval() {
        let notifier = notifier.clone();
        life.spawn(Step::Supervision, async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notifier.notify("WATCHDOG=1");
            }
        });
    }
    let stopping = life.clone();
    let shutdown = async move {
        shutdown.await;
        notifier.notify("STOPPING=1");
        stopping.stop_serving();
    };
    if acceptor.is_none() {
        tracing::warn!(
            "serving PLAINTEXT gRPC (insecure_plaintext = true): anyone who reaches this port can run Redis commands"
        );
    }
    let router = server_builder().add_service(
        AgentServer::new(service)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_REPLY_BYTES),
    );
    // The handshake (TLS, its deadline, the cap on unfinished ones) is done
    // by `accept`, so tonic gets connections that are already authenticated.
    let served = match acceptor {
        Some(acceptor) => {
            router
                .serve_with_incoming_shutdown(
                    accept::tls_incoming(listener, acceptor, life),
                    shutdown,
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(accept::plain_incoming(listener, life), shutdown)
                .await
        }
    };
    Ok(served?)
}

/// HTTP/2 limits of every connection. TLS is set up in `accept`.
fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(300))
        .concurrency_limit_per_connection(256)
        .max_concurrent_streams(256)
        // A peer that stops answering pings is dropped, so dead clients of
        // long streams (`events`, `logs -f`) do not hold descriptors.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .http2_max_header_list_size(64 << 10)
}

/// What `paddockd check-config` checks, without starting anything: the
/// config parses, the TLS files are there and hold PEM, redis-server and
/// the Redis user exist, and that user can reach data_dir. Ok lists what
/// was found (and what will only be a problem later, e.g. no redis-server
/// yet); Err is what stops the agent from starting.
pub fn check_config(config: &AgentConfig) -> Result<Vec<String>, Error> {
    let mut notes = vec![format!("listen {}", config.listen)];
    config.tls.as_ref().map(accept::tls_acceptor).transpose()?;
    notes.push(match &config.tls {
        Some(tls) => format!(
            "mutual TLS: cert {}, key {}, client CA {}",
            tls.cert.display(),
            tls.key.display(),
            tls.ca.display()
        ),
        None => "PLAINTEXT gRPC (insecure_plaintext = true)".into(),
    });
    match config::resolve_program(&config.redis_server) {
        Some(p) => notes.push(format!("redis-server: {}", p.display())),
        None if config.redis_server == std::path::Path::new(install::DEFAULT_REDIS_SERVER) => notes.push(
            "redis-server: not in PATH yet (apply installs Debian's redis-server through the agent)"
                .into(),
        ),
        None => notes.push(format!(
            "redis-server: redis_server = {:?} does not exist; fix the path (apply refuses this host until then, and installs nothing)",
            config.redis_server.display().to_string()
        )),
    }
    let run_as = supervisor::resolve_run_as(&config.user);
    match &run_as {
        Ok(Some(u)) => notes.push(format!("Redis runs as {} (uid {})", config.user, u.uid)),
        Ok(None) => notes.push("Redis runs as the agent's own user (the agent is not root)".into()),
        Err(e) => notes.push(format!("Redis user: {e}")),
    }
    let run_as = run_as.ok().flatten();
    supervisor::check_reachable(&config.data_dir.join("instances").join("x"), run_as)?;
    if let Some(user) = run_as {
        store::check_not_redis_writable(&config.data_dir, user.uid, user.gid)?;
    }
    notes.push(format!("data_dir {}", config.data_dir.display()));
    notes.extend(exposed_secrets(config).map(|w| format!("WARNING: {w}")));
    Ok(notes)
}

/// Files holding a secret (the TLS private key) that group or others can
/// read, as warnings.
fn exposed_secrets(config: &AgentConfig) -> impl Iterator<Item = String> + '_ {
    use std::os::unix::fs::PermissionsExt;
    config.tls.iter().filter_map(|tls| {
        let mode = std::fs::metadata(&tls.key).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{} (the agent's private key) is readable by group or others (mode {mode:o}); `chmod 600 {}`",
                tls.key.display(),
                tls.key.display()
            )
        })
    })
}

/// Redis wants maxclients + 32 descriptors; children inherit our limit, so
/// lift the soft limit to the hard one.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_address_is_waited_for() {
        use std::io::ErrorKind::*;
        for (kind, retried) in [
            (AddrNotAvailable, true),
            (AddrInUse, false),
            (PermissionDenied, false),
            (InvalidInput, false),
        ] {
            assert_eq!(bind_retried(kind), retried, "{kind:?}");
        }
    }

    #[test]
    fn bind_retries_back_off_to_five_seconds() {
        let ms = |a| bind_retry_delay(a).as_millis();
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, 40].map(ms),
            [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]
        );
    }
}
