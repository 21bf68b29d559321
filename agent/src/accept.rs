//! Accepting gRPC connections before tonic sees them, so that clients who
//! have not authenticated cannot exhaust the agent: the TLS handshake runs
//! under a deadline, at most [`MAX_HANDSHAKES`] run at once (a new
//! connection pushes out the oldest unfinished one: a real client finishes
//! in a few round trips, an idle socket never does), and running out of
//! file descriptors backs off instead of spinning on `accept`.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;
use crate::error::Error;
use crate::lifecycle::{Lifecycle, Step};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Unfinished handshakes kept at once. The controller opens one connection
/// per command, so this is far above what legitimate clients need.
pub const MAX_HANDSHAKES: usize = 64;
/// Pause after `accept` failed for want of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the accept loop does after `accept` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAcceptError {
    /// The connection went away before we took it: take the next one.
    Retry,
    /// Out of descriptors or memory: drop the oldest unfinished handshake
    /// (frees a descriptor for the next client) and pause.
    EvictAndBackOff(Duration),
    /// Anything else: pause, so an error that repeats does not spin.
    BackOff(Duration),
}

/// Pure: the reaction to an `accept` error, by errno.
pub fn on_accept_error(errno: Option<i32>, pending_handshakes: usize) -> OnAcceptError {
    use nix::errno::Errno;
    let Some(errno) = errno.map(Errno::from_raw) else {
        return OnAcceptError::BackOff(ACCEPT_BACKOFF);
    };
    match errno {
        Errno::ECONNABORTED | Errno::EINTR | Errno::EAGAIN | Errno::EPROTO | Errno::EPERM => {
            OnAcceptError::Retry
        }
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
            if pending_handshakes > 0 =>
        {
            OnAcceptError::EvictAndBackOff(ACCEPT_BACKOFF)
        }
        _ => OnAcceptError::BackOff(ACCEPT_BACKOFF),
    }
}

/// The unfinished handshakes, oldest first.
#[derive(Default)]
struct Pending {
    tasks: VecDeque<AbortHandle>,
}

impl Pending {
    fn finished(&mut self, id: tokio::task::Id) {
        self.tasks.retain(|t| t.id() != id);
    }

    /// Makes room for one more; aborts (closes) the oldest when full.
    fn make_room(&mut self, cap: usize) {
        while self.tasks.len() >= cap {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) -> bool {
        match self.tasks.pop_front() {
            Some(t) => {
                t.abort();
                true
            }
            None => false,
        }
    }
}

/// The server side of mutual TLS: our certificate, and only clients whose
/// certificate chains to the configured CA.
pub fn tls_acceptor(tls: &TlsFiles) -> Result<TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path, what: &str| {
        let pem = std::fs::read(p).map_err(|source| Error::Unreadable {
            path: p.to_owned(),
            source,
        })?;
        if !String::from_utf8_lossy(&pem).contains(what) {
            return Err(Error::Config {
                path: p.to_owned(),
                message: format!(
                    "no PEM block \"{what}\" in it; `paddock certs issue` writes the agent's files"
                ),
            });
        }
        Ok(pem)
    };
    let unusable = |path: &std::path::Path, e: &dyn std::fmt::Display| Error::Config {
        path: path.to_owned(),
        message: format!("unusable TLS certificate or key: {e}"),
    };
    let certs = CertificateDer::pem_slice_iter(&read(&tls.cert, "BEGIN CERTIFICATE")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(&tls.cert, &e))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key, "PRIVATE KEY")?)
        .map_err(|e| unusable(&tls.key, &e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read(&tls.ca, "BEGIN CERTIFICATE")?) {
        let ca = ca.map_err(|e| unusable(&tls.ca, &e))?;
        roots.add(ca).map_err(|e| unusable(&tls.ca, &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|e| unusable(&tls.ca, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(&tls.cert, &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| unusable(&tls.cert, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections on `listener` and sends each one that finished its
/// handshake to `out`, until `out` is closed (the server stopped; the
/// listening socket is closed with this task).
async fn accept_loop<IO, F, Fut>(
    listener: TcpListener,
    out: mpsc::Sender<io::Result<IO>>,
    handshake: F,
) where
    IO: Send + 'static,
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Option<IO>> + Send + 'static,
{
    let mut pending = Pending::default();
    let mut handshakes: JoinSet<Option<IO>> = JoinSet::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = out.closed() => return,
            Some(done) = handshakes.join_next_with_id(), if !handshakes.is_empty() => {
                match done {
                    Ok((id, io)) => {
                        pending.finished(id);
                        if let Some(io) = io
                            && out.send(Ok(io)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => pending.finished(e.id()),
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    // Dead peers of long streams (events -f) are noticed.
                    let keepalive = socket2::TcpKeepalive::new()
                        .with_time(Duration::from_secs(60))
                        .with_interval(Duration::from_secs(10));
                    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
                    pending.make_room(MAX_HANDSHAKES);
                    let task = handshakes.spawn(handshake(tcp));
                    pending.tasks.push_back(task);
                }
                Err(e) => {
                    let action = on_accept_error(e.raw_os_error(), pending.tasks.len());
                    if action != OnAcceptError::Retry
                        && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                    {
                        tracing::warn!(error = %e, pending_handshakes = pending.tasks.len(), "cannot accept connections; backing off");
                        last_warning = Some(Instant::now());
                    }
                    match action {
                        OnAcceptError::Retry => {}
                        OnAcceptError::EvictAndBackOff(pause) => {
                            pending.evict_oldest();
                            tokio::time::sleep(pause).await;
                        }
                        OnAcceptError::BackOff(pause) => tokio::time::sleep(pause).await,
                    }
                }
            }
        }
    }
}

/// Connections that finished the TLS handshake within [`HANDSHAKE_TIMEOUT`].
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    life: &Lifecycle,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    life.spawn(
        Step::Accepting,
        accept_loop(listener, tx, move |tcp| {
            let acceptor = acceptor.clone();
            async move {
                let peer = tcp.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => Some(tls),
                    Ok(Err(e)) => {
                        let why = e
                            .get_ref()
                            .and_then(|i| i.downcast_ref::<rustls::Error>())
                            .map_or("the connection failed during the handshake", refusal);
                        tracing::warn!(
                            peer = %peer.map_or("?".into(), |p| p.to_string()),
                            error = %e,
                            "refused a TLS handshake: {why}"
                        );
                        None
                    }
                    Err(_) => {
                        tracing::info!(?peer, "TLS handshake not finished in time: closed");
                        None
                    }
                }
            }
        }),
    );
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Why a client's handshake was refused, for the operator reading the log.
fn refusal(e: &rustls::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::BadSignature | C::UnknownIssuer) => {
            "the client's certificate is not of this agent's CA ([tls] ca): a controller of another deployment, or this agent's ca file is another deployment's"
        }
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the client's certificate has expired or is not valid yet (check the clocks)",
        E::NoCertificatesPresented => "the client sent no certificate",
        E::InvalidMessage(_) => "the client does not speak TLS (a plaintext controller?)",
        E::AlertReceived(_) => {
            "the client refused this agent's certificate ([tls] cert): see the controller's message"
        }
        _ => "see the error",
    }
}

/// Plaintext connections (insecure_plaintext), with the same back-off.
pub fn plain_incoming(
    listener: TcpListener,
    life: &Lifecycle,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel(16);
    life.spawn(
        Step::Accepting,
        accept_loop(listener, tx, |tcp| async move { Some(tcp) }),
    );
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn accept_errors_back_off_instead_of_spinning() {
        let e = |errno: Errno| Some(errno as i32);
        let table = [
            (e(Errno::ECONNABORTED), 3, OnAcceptError::Retry),
            (e(Errno::EINTR), 0, OnAcceptError::Retry),
            (
                e(Errno::EMFILE),
                3,
                OnAcceptError::EvictAndBackOff(ACCEPT_BACKOFF),
            ),
            (
                e(Errno::ENFILE),
                1,
                OnAcceptError::EvictAndBackOff(ACCEPT_BACKOFF),
            ),
            (e(Errno::EMFILE), 0, OnAcceptError::BackOff(ACCEPT_BACKOFF)),
            (e(Errno::ENOBUFS), 0, OnAcceptError::BackOff(ACCEPT_BACKOFF)),
            (e(Errno::EBADF), 5, OnAcceptError::BackOff(ACCEPT_BACKOFF)),
            (None, 5, OnAcceptError::BackOff(ACCEPT_BACKOFF)),
        ];
        for (errno, pending, want) in table {
            assert_eq!(on_accept_error(errno, pending), want, "{errno:?} {pending}");
        }
    }

    /// A client that connects and never starts its handshake is closed
    /// once [`HANDSHAKE_TIMEOUT`] has passed on tokio's clock (paused here:
    /// the test does not wait 10 s), and not before.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_at_the_handshake_deadline() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.125.3".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("agent.pem"),
            key: dir.path().join("agent.key"),
        };
        std::fs::write(&files.ca, cert.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        let listener = TcpListener::bind("127.0.125.3:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let life = Lifecycle::new();
        let _incoming = tls_incoming(listener, tls_acceptor(&files).unwrap(), &life);
        let started = Instant::now();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        // Bounded, so a missing deadline fails instead of hanging.
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT * 6, client.read(&mut buf))
            .await
            .expect("still open a minute later");
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "closed without a byte: {read:?}"
        );
        assert!(
            started.elapsed() >= HANDSHAKE_TIMEOUT,
            "closed after {:?}",
            started.elapsed()
        );
        life.stop_serving();
        assert!(
            life.finish(Duration::from_secs(1)).await,
            "the accept loop ended"
        );
    }

    #[tokio::test]
    async fn a_full_set_of_handshakes_drops_the_oldest() {
        let mut pending = Pending::default();
        let mut set = JoinSet::new();
        for _ in 0..3 {
            pending.make_room(2);
            pending
                .tasks
                .push_back(set.spawn(std::future::pending::<()>()));
        }
        assert_eq!(pending.tasks.len(), 2);
        let first = set.join_next().await.unwrap().unwrap_err();
        assert!(first.is_cancelled(), "the oldest was closed");
        pending.finished(first.id());
        assert_eq!(pending.tasks.len(), 2, "the two newest still run");
        assert!(pending.evict_oldest());
        assert!(pending.evict_oldest());
        assert!(!pending.evict_oldest());
    }
}
