//! The controller's side of the agent API. The transport (mutual TLS, or
//! plaintext only when asked for by name) is configured here and only here;
//! messages are converted to the shared model (`paddock_model`, through its
//! `wire` module) before they leave this module.

use std::net::SocketAddr;
use std::time::Duration;

use paddock_proto::v1::{self as pb, agent_client};
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Error;

/// How long dialling an agent may take, TLS handshake included (a frozen
/// agent's kernel still accepts the TCP connection).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest any RPC may take (a StartInstance waits for Redis to load).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// The deadline of a read (instance list, dry-run put, a node's view): an
/// answering agent gives these in milliseconds.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the command line asks for: mutual TLS (the default), or plaintext
/// only when asked for by name (`--insecure-plaintext`; the agents must run
/// with `insecure_plaintext = true`; for throwaway labs only). Passed
/// explicitly from the flags to every [`Transport`] built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Security {
    #[default]
    MutualTls,
    InsecurePlaintext,
}

/// How the controller reaches agents.
#[derive(Clone)]
pub enum Transport {
    /// Mutual TLS: the agent must present a certificate from `ca` naming the
    /// address dialled; the controller presents its own.
    Mutual {
        ca: Vec<u8>,
        cert: Vec<u8>,
        key: Vec<u8>,
        /// Where they were read from, for messages about them.
        dir: PathBuf,
    },
    Plaintext,
}

impl Transport {
    /// The deployment's certificates (`paddock certs init`), or plaintext
    /// when asked for explicitly.
    pub fn for_deployment(
        inventory: &Path,
        deployment: &str,
        security: Security,
    ) -> Result<Transport, Error> {
        if security == Security::InsecurePlaintext {
            return Ok(Transport::Plaintext);
        }
        Transport::from_dir(&crate::certs::certs_dir(inventory, deployment), inventory)
    }

    pub fn from_dir(dir: &Path, inventory: &Path) -> Result<Transport, Error> {
        let ca = crate::certs::ca(dir);
        let me = crate::certs::controller(dir);
        let read = |p: &Path| std::fs::read(p);
        crate::secrets::warn_if_exposed(&me.key);
        match (read(&ca.cert), read(&me.cert), read(&me.key)) {
            (Ok(ca), Ok(cert), Ok(key)) => Ok(Transport::Mutual {
                ca,
                cert,
                key,
                dir: dir.to_owned(),
            }),
            _ => Err(Error::Certs(format!(
                "no certificates in {}.\n  hint: `paddock certs init -i {inv}`, then `paddock certs issue -i {inv} HOST` for every host \
                 and install each agent's certificate (see README); or, for a lab without TLS, pass --insecure-plaintext",
                dir.display(),
                inv = inventory.display()
            ))),
        }
    }
}

#[derive(Clone)]
pub struct AgentClient {
    host: String,
    addr: SocketAddr,
    /// How it was dialled: to find out why a TLS connection failed.
    transport: Transport,
    inner: agent_client::AgentClient<Channel>,
    /// Per-call deadline, sent as grpc-timeout so the agent drops the call
    /// too; None: [`REQUEST_TIMEOUT`].
    deadline: Option<Duration>,
}

/// The model's name for it is `Mode`.
pub use paddock_model::Mode as RedisMode;
/// What crosses the wire: the model shared with the agent.
pub use paddock_model::{
    AclUser, Facts, Group, HeldLease, InstanceSpec, InstanceState, InstanceStatus, KeyChange,
    LeaseId, MaxmemoryPolicy, Members, Peer, PutOutcome, Reply, SentinelSpec, Supervision,
};
use paddock_model::{LeaseRequest, LockReply, PutInstance, RedisCommand};

impl AgentClient {
    /// Dials the agent of `host` at `addr`.
    pub async fn connect(
        host: &str,
        addr: SocketAddr,
        transport: &Transport,
    ) -> Result<Self, Error> {
        Self::connect_within(host, addr, transport, CONNECT_TIMEOUT).await
    }

    /// Dials within `within`, TLS and HTTP/2 handshakes included.
    pub async fn connect_within(
        host: &str,
        addr: SocketAddr,
        transport: &Transport,
        within: Duration,
    ) -> Result<Self, Error> {
        let unreachable = |message: String| Error::AgentUnreachable {
            host: host.to_owned(),
            addr,
            message,
        };
        let scheme = match transport {
            Transport::Mutual { .. } => "https",
            Transport::Plaintext => "http",
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(within)
            .timeout(REQUEST_TIMEOUT)
            // An agent that stops answering mid-call (frozen, its machine
            // gone) is noticed within ~10 s, whatever the call's deadline.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let refused = |e: &(dyn std::error::Error + 'static)| match (tls_problem(e), transport) {
            (Some(p), Transport::Mutual { dir, .. }) => Error::Agent {
                host: host.to_owned(),
                message: explain_tls(p, host, addr, dir),
            },
            _ => unreachable(source_chain(e)),
        };
        if let Transport::Mutual { ca, cert, key, .. } = transport {
            // The agent's certificate must name the address we dial.
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key))
                .domain_name(addr.ip().to_string());
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| unreachable(source_chain(&e)))?;
        }
        // connect_timeout bounds the TCP connect only: a stopped agent's
        // kernel completes that, and the handshakes then wait forever.
        let channel = tokio::time::timeout(within, endpoint.connect())
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer within {} ms (the agent's process may be stopped or overloaded)",
                    within.as_millis()
                ))
            })?
            .map_err(|e| refused(&e))?;
        Ok(AgentClient {
            deadline: None,
            host: host.to_owned(),
            addr,
            transport: transport.clone(),
            inner: agent_client::AgentClient::new(channel)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The same connection, each call of which fails after `deadline` (or
    /// the shorter one it already had).
    pub fn with_deadline(&self, deadline: Duration) -> AgentClient {
        AgentClient {
            deadline: Some(self.deadline.map_or(deadline, |d| d.min(deadline))),
            ..self.clone()
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(d) = self.deadline {
            r.set_timeout(d);
        }
        r
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn rpc_error(&self, what: &str, status: tonic::Status) -> Error {
        // With TLS 1.3 the agent judges our certificate after the client
        // finished its handshake: its refusal reaches the first call only as
        // a transport error whose TLS cause h2 has turned into text. A
        // handshake of our own then finds the typed cause.
        let transport_failed = std::error::Error::source(&status)
            .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some());
        if let (true, Transport::Mutual { dir, .. }) = (transport_failed, &self.transport)
            && let Some(p) = probe_tls_blocking(self.addr, &self.transport)
        {
            return Error::Agent {
                host: self.host.clone(),
                message: format!("{what}: {}", explain_tls(p, &self.host, self.addr, dir)),
            };
        }
        Error::Agent {
            host: self.host.clone(),
            message: format!("{what}: {}", self.status_message(&status)),
        }
    }

    /// A status's message; a deadline says how long was waited.
    fn status_message(&self, status: &tonic::Status) -> String {
        match (status.code(), self.deadline) {
            (tonic::Code::DeadlineExceeded | tonic::Code::Cancelled, Some(d)) => {
                format!("no answer within {} ms", d.as_millis())
            }
            _ => status.message().to_owned(),
        }
    }

    /// An instance status as the agent reported it.
    fn status(&self, s: pb::InstanceStatus) -> Result<InstanceStatus, Error> {
        InstanceStatus::try_from(s).map_err(|e| Error::Agent {
            host: self.host.clone(),
            message: e.to_string(),
        })
    }

    pub async fn facts(&self) -> Result<Facts, Error> {
        let f = self
            .inner
            .clone()
            .get_facts(self.request(pb::GetFactsRequest {}))
            .await
            .map_err(|s| self.rpc_error("facts", s))?
            .into_inner();
        Ok(f.into())
    }

    /// Has the agent install redis-server if it is missing; the facts after.
    pub async fn ensure_redis(&self) -> Result<Facts, Error> {
        let f = self
            .inner
            .clone()
            .ensure_redis(self.request(pb::EnsureRedisRequest {}))
            .await
            .map_err(|s| self.rpc_error("install redis-server", s))?
            .into_inner();
        Ok(f.into())
    }

    pub async fn put_instance(
        &self,
        spec: &InstanceSpec,
        dry_run: bool,
    ) -> Result<PutOutcome, Error> {
        self.put_instance_with(spec, dry_run, false).await
    }

    /// Stores a spec whose settings the running process already has.
    pub async fn put_instance_live(&self, spec: &InstanceSpec) -> Result<PutOutcome, Error> {
        self.put_instance_with(spec, false, true).await
    }

    async fn put_instance_with(
        &self,
        spec: &InstanceSpec,
        dry_run: bool,
        live: bool,
    ) -> Result<PutOutcome, Error> {
        let r = self
            .inner
            .clone()
            .put_instance(
                self.request(
                    PutInstance {
                        spec: spec.clone(),
                        dry_run,
                        live,
                    }
                    .into(),
                ),
            )
            .await
            .map_err(|s| self.rpc_error(&format!("put {}", spec.name), s))?
            .into_inner();
        Ok(r.into())
    }

    pub async fn start(&self, name: &str) -> Result<InstanceStatus, Error> {
        let s = self
            .inner
            .clone()
            .start_instance(self.request(pb::InstanceRef { name: name.into() }))
            .await
            .map_err(|s| self.rpc_error(&format!("start {name}"), s))?
            .into_inner();
        self.status(s)
    }

    /// Starts a HELD instance empty: the operator accepted the data loss.
    pub async fn recover(&self, name: &str) -> Result<InstanceStatus, Error> {
        let s = self
            .inner
            .clone()
            .recover_instance(self.request(pb::RecoverInstanceRequest {
                name: name.into(),
                accept_data_loss: true,
            }))
            .await
            .map_err(|s| self.rpc_error(&format!("recover {name}"), s))?
            .into_inner();
        self.status(s)
    }

    pub async fn stop(&self, name: &str) -> Result<InstanceStatus, Error> {
        let s = self
            .inner
            .clone()
            .stop_instance(self.request(pb::InstanceRef { name: name.into() }))
            .await
            .map_err(|s| self.rpc_error(&format!("stop {name}"), s))?
            .into_inner();
        self.status(s)
    }

    /// Forgets a stopped instance of `deployment` on its agent (false: the
    /// agent had none by that name); Redis's data stays unless `purge_data`.
    pub async fn remove(
        &self,
        name: &str,
        deployment: &str,
        purge_data: bool,
    ) -> Result<bool, Error> {
        let r = self
            .inner
            .clone()
            .remove_instance(pb::RemoveInstanceRequest {
                name: name.into(),
                deployment: deployment.into(),
                purge_data,
            })
            .await
            .map_err(|s| self.rpc_error(&format!("remove {name}"), s))?
            .into_inner();
        Ok(r.removed)
    }

    pub async fn list(&self) -> Result<Vec<InstanceStatus>, Error> {
        let r = self
            .inner
            .clone()
            .list_instances(self.request(pb::ListInstancesRequest {}))
            .await
            .map_err(|s| self.rpc_error("list instances", s))?
            .into_inner();
        r.instances.into_iter().map(|s| self.status(s)).collect()
    }

    /// Runs a pipeline of commands on one instance; one reply per command.
    pub async fn redis(&self, instance: &str, commands: &[&[&str]]) -> Result<Vec<Reply>, Error> {
        self.redis_with(instance, commands, false).await
    }

    /// As [`AgentClient::redis`], for commands the agent refuses unless asked
    /// explicitly (REPLICAOF, ...).
    pub async fn redis_dangerous(
        &self,
        instance: &str,
        commands: &[&[&str]],
    ) -> Result<Vec<Reply>, Error> {
        self.redis_with(instance, commands, true).await
    }

    async fn redis_with(
        &self,
        instance: &str,
        commands: &[&[&str]],
        allow_dangerous: bool,
    ) -> Result<Vec<Reply>, Error> {
        let commands = commands
            .iter()
            .map(|c| c.iter().map(|a| a.as_bytes().to_vec()).collect())
            .collect();
        self.redis_bytes(instance, commands, allow_dangerous).await
    }

    /// As [`AgentClient::redis`] with arguments as bytes (key names are
    /// binary-safe).
    pub async fn redis_bytes(
        &self,
        instance: &str,
        commands: Vec<Vec<Vec<u8>>>,
        allow_dangerous: bool,
    ) -> Result<Vec<Reply>, Error> {
        let request: pb::RedisCommandRequest = RedisCommand {
            instance: instance.into(),
            commands,
            allow_dangerous,
        }
        .into();
        let r = self
            .inner
            .clone()
            .redis_command(self.request(request))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unauthenticated => Error::RedisAuth {
                    host: self.host.clone(),
                    instance: instance.into(),
                },
                _ => Error::Redis {
                    host: self.host.clone(),
                    instance: instance.into(),
                    message: self.status_message(&s),
                },
            })?
            .into_inner();
        Ok(r.replies.into_iter().map(Reply::from).collect())
    }
}

/// Whether a deployment lease was granted, and to whom it belongs if not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Granted,
    Held(HeldLease),
}

fn lease_pb(deployment: &str, id: &LeaseId, ttl_ms: u32, force: bool) -> pb::LockRequest {
    LeaseRequest {
        deployment: deployment.into(),
        id: id.clone(),
        ttl: Duration::from_millis(u64::from(ttl_ms)),
        force,
    }
    .into()
}

impl AgentClient {
    pub async fn lock(
        &self,
        deployment: &str,
        id: &LeaseId,
        ttl_ms: u32,
    ) -> Result<LockOutcome, Error> {
        let r = self
            .inner
            .clone()
            .lock(self.request(lease_pb(deployment, id, ttl_ms, false)))
            .await
            .map_err(|s| self.rpc_error("lock", s))?
            .into_inner();
        let r = LockReply::from(r);
        if r.granted {
            return Ok(LockOutcome::Granted);
        }
        Ok(LockOutcome::Held(r.held.unwrap_or(HeldLease {
            holder: "(unknown)".into(),
            since_unix_ms: 0,
            machine_id: String::new(),
            pid_namespace: 0,
            pid: 0,
        })))
    }

    /// Releases our lease (`force`: whoever holds it): whether it is gone,
    /// and the lease released or (not gone) still held, if any.
    pub async fn unlock(
        &self,
        deployment: &str,
        id: &LeaseId,
        force: bool,
    ) -> Result<(bool, Option<HeldLease>), Error> {
        let r = self
            .inner
            .clone()
            .unlock(self.request(lease_pb(deployment, id, 0, force)))
            .await
            .map_err(|s| self.rpc_error("unlock", s))?
            .into_inner();
        let r = LockReply::from(r);
        Ok((r.granted, r.held))
    }
}

/// One instance state transition reported by the agent of `host`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StateEvent {
    pub unix_ms: i64,
    pub host: String,
    pub instance: String,
    pub from: InstanceState,
    pub to: InstanceState,
    pub pid: Option<u32>,
    pub detail: Option<String>,
}

impl StateEvent {
    fn at(host: String, e: paddock_model::StateEvent) -> StateEvent {
        let paddock_model::StateEvent {
            unix_ms,
            instance,
            from,
            to,
            pid,
            detail,
        } = e;
        StateEvent {
            unix_ms,
            host,
            instance,
            from,
            to,
            pid,
            detail,
        }
    }
}

impl AgentClient {
    /// The last `lines` lines of an instance's log, then (with `follow`) new
    /// lines as they come, until the stream is dropped.
    pub async fn tail_log(
        &self,
        instance: &str,
        lines: u32,
        follow: bool,
    ) -> Result<impl futures::Stream<Item = Result<Vec<String>, Error>> + use<>, Error> {
        let stream = self
            .inner
            .clone()
            .tail_log(pb::TailLogRequest {
                instance: instance.into(),
                lines,
                follow,
            })
            .await
            .map_err(|s| self.rpc_error(&format!("logs of {instance}"), s))?
            .into_inner();
        let host = self.host.clone();
        Ok(futures::StreamExt::map(stream, move |item| {
            item.map(|l| l.lines).map_err(|s| Error::Agent {
                host: host.clone(),
                message: s.message().to_owned(),
            })
        }))
    }

    /// Every state transition on this agent from now on.
    pub async fn watch_events(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<StateEvent, Error>> + use<>, Error> {
        let stream = self
            .inner
            .clone()
            .watch_events(pb::WatchEventsRequest {})
            .await
            .map_err(|s| self.rpc_error("events", s))?
            .into_inner();
        let host = self.host.clone();
        Ok(futures::StreamExt::map(stream, move |item| match item {
            Ok(e) => Ok(StateEvent::at(host.clone(), e.into())),
            Err(s) => Err(Error::Agent {
                host: host.clone(),
                message: s.message().to_owned(),
            }),
        }))
    }
}

/// A refused TLS handshake, as the operator can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The agent's certificate is not signed by the deployment's CA.
    AgentOtherCa,
    /// The agent's certificate expired (or is not valid yet).
    AgentExpired,
    /// The agent's certificate does not name the address dialled.
    AgentNameMismatch,
    /// The agent refused this controller's certificate (another CA).
    ControllerRefused,
    /// The agent found this controller's certificate expired.
    ControllerExpired,
    /// The agent wanted a client certificate and got none.
    NoClientCertificate,
}

/// What a rustls error means for the operator; None for the rest.
pub fn classify_tls(e: &rustls::Error) -> Option<TlsProblem> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    Some(match e {
        E::InvalidCertificate(C::BadSignature | C::UnknownIssuer) => TlsProblem::AgentOtherCa,
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => TlsProblem::AgentExpired,
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            TlsProblem::AgentNameMismatch
        }
        E::AlertReceived(A::CertificateExpired) => TlsProblem::ControllerExpired,
        E::AlertReceived(A::CertificateRequired) => TlsProblem::NoClientCertificate,
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::DecryptError | A::AccessDenied) => {
            TlsProblem::ControllerRefused
        }
        _ => return None,
    })
}

/// The TLS problem somewhere in `e`'s chain (rustls errors travel inside
/// io::Errors, whose `source()` skips them).
pub fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<TlsProblem> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return classify_tls(t);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return classify_tls(inner);
        }
        next = e.source();
    }
    None
}

/// [`probe_tls`] from async code (a rare error path: blocking briefly is
/// fine; on a current-thread runtime it runs in place).
fn probe_tls_blocking(addr: SocketAddr, transport: &Transport) -> Option<TlsProblem> {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| probe_tls(addr, transport))
        }
        _ => probe_tls(addr, transport),
    }
}

/// One TLS handshake with the agent, read up to the first record after it,
/// where a TLS 1.3 server's verdict on the client certificate arrives.
/// Some(problem) when the handshake or that verdict failed; bounded by 2 s.
pub fn probe_tls(addr: SocketAddr, transport: &Transport) -> Option<TlsProblem> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let Transport::Mutual { ca, cert, key, .. } = transport else {
        return None;
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots.add(c.ok()?).ok()?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(key).ok()?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .ok()?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).ok()?;
    let limit = Duration::from_secs(2);
    let mut sock = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    sock.set_read_timeout(Some(limit)).ok()?;
    sock.set_write_timeout(Some(limit)).ok()?;
    let deadline = std::time::Instant::now() + limit;
    let mut reads_after_handshake = 0;
    while std::time::Instant::now() < deadline && reads_after_handshake < 1 {
        while conn.wants_write() {
            conn.write_tls(&mut sock).ok()?;
        }
        let handshaking = conn.is_handshaking();
        match conn.read_tls(&mut sock) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if let Err(e) = conn.process_new_packets() {
            return classify_tls(&e);
        }
        if !handshaking {
            reads_after_handshake += 1;
        }
    }
    None
}

/// The message for a TLS problem: what is wrong and which file to look at.
pub fn explain_tls(p: TlsProblem, host: &str, addr: SocketAddr, dir: &Path) -> String {
    let ca = crate::certs::ca(dir).cert;
    let me = crate::certs::controller(dir).cert;
    let reissue = format!(
        "issue it again with `paddock certs issue -i INVENTORY {host}` and install the three files on {host} (agent.toml [tls])"
    );
    match p {
        TlsProblem::AgentOtherCa => format!(
            "the agent at {addr} presents a certificate of another CA than this deployment's ({}).\n  hint: {host}'s agent.toml [tls] cert was issued for another deployment or by another CA: {reissue}",
            ca.display()
        ),
        TlsProblem::AgentExpired => format!(
            "the agent at {addr} presents an expired (or not yet valid) certificate.\n  hint: check both machines' clocks; {reissue}"
        ),
        TlsProblem::AgentNameMismatch => format!(
            "the agent at {addr} presents a certificate that does not name {}.\n  hint: it was issued for another host or address: {reissue}",
            addr.ip()
        ),
        TlsProblem::ControllerRefused => format!(
            "the agent at {addr} refused this controller's certificate ({}): it does not trust this deployment's CA.\n  hint: the [tls] ca of {host}'s agent.toml must be a copy of {}",
            me.display(),
            ca.display()
        ),
        TlsProblem::ControllerExpired => format!(
            "the agent at {addr} refused this controller's certificate ({}) as expired.\n  hint: check both machines' clocks; delete {} and its key, then `paddock certs init -i INVENTORY` issues a new one",
            me.display(),
            me.display()
        ),
        TlsProblem::NoClientCertificate => format!(
            "the agent at {addr} requires a client certificate and none was sent.\n  hint: this controller's is {}",
            me.display()
        ),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Many errors' messages already include their source's.
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_named() {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        let cases = [
            (
                E::InvalidCertificate(C::BadSignature),
                Some(TlsProblem::AgentOtherCa),
            ),
            (
                E::InvalidCertificate(C::UnknownIssuer),
                Some(TlsProblem::AgentOtherCa),
            ),
            (
                E::InvalidCertificate(C::Expired),
                Some(TlsProblem::AgentExpired),
            ),
            (
                E::InvalidCertificate(C::NotValidYet),
                Some(TlsProblem::AgentExpired),
            ),
            (
                E::InvalidCertificate(C::NotValidForName),
                Some(TlsProblem::AgentNameMismatch),
            ),
            (
                E::AlertReceived(A::UnknownCA),
                Some(TlsProblem::ControllerRefused),
            ),
            (
                E::AlertReceived(A::DecryptError),
                Some(TlsProblem::ControllerRefused),
            ),
            (
                E::AlertReceived(A::CertificateExpired),
                Some(TlsProblem::ControllerExpired),
            ),
            (
                E::AlertReceived(A::CertificateRequired),
                Some(TlsProblem::NoClientCertificate),
            ),
            (E::DecryptError, None),
        ];
        for (error, problem) in cases {
            assert_eq!(classify_tls(&error), problem, "{error:?}");
        }
    }

    #[test]
    fn a_tls_problem_is_found_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature),
        );
        assert_eq!(tls_problem(&io), Some(TlsProblem::AgentOtherCa));
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_problem(&plain), None);
    }

    #[test]
    fn every_tls_message_names_a_file_or_a_command() {
        let dir = Path::new("/inv/.paddock/d/certs");
        let addr: SocketAddr = "10.0.0.1:7443".parse().unwrap();
        for p in [
            TlsProblem::AgentOtherCa,
            TlsProblem::AgentExpired,
            TlsProblem::AgentNameMismatch,
            TlsProblem::ControllerRefused,
            TlsProblem::ControllerExpired,
            TlsProblem::NoClientCertificate,
        ] {
            let m = explain_tls(p, "a", addr, dir);
            assert!(
                m.contains("/inv/.paddock/d/certs/") || m.contains("paddock certs issue"),
                "{p:?}: {m}"
            );
            assert!(m.contains("hint:"), "{p:?}: {m}");
        }
    }
}
