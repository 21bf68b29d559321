//! The tonic service: converts proto messages to domain types at the edge and
//! hands the work to the supervisor task. The only module that imports proto
//! types.

use std::path::PathBuf;

use paddock_proto::v1::{self as pb, agent_server::Agent};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::facts;
use crate::redis_access::{Connections, Reply};
use crate::spec::{Group, InstanceSpec, Members, Mode, Peer, SentinelSpec};
use crate::supervisor::{InstanceStatus, State, StateChange, SupervisorHandle};

/// Commands in one RedisCommand: formation sends a few per node; this
/// bounds what one request can make the agent buffer in replies.
const MAX_PIPELINE: usize = 256;

pub struct AgentService {
    pub supervisor: SupervisorHandle,
    pub connections: Connections,
    pub locks: crate::locks::Locks,
    pub data_dir: PathBuf,
    pub redis_server: PathBuf,
    /// Cancelled at shutdown: ends the open `logs -f` and `events` streams,
    /// which the server's graceful shutdown would otherwise wait for.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::UnknownInstance(_) => Status::not_found(message),
            Error::InvalidSpec(_) => Status::invalid_argument(message),
            Error::Redis { .. } => Status::unavailable(message),
            // Documented in the proto: Redis refused the spec's password.
            Error::RedisAuth { .. } => Status::unauthenticated(message),
            Error::ShuttingDown => Status::unavailable(message),
            Error::Precondition { .. } => Status::failed_precondition(message),
            _ => Status::internal(message),
        }
    }
}

impl TryFrom<pb::InstanceSpec> for InstanceSpec {
    type Error = Error;

    fn try_from(s: pb::InstanceSpec) -> Result<Self, Error> {
        let invalid =
            |field: &str, why: String| Error::InvalidSpec(format!("field {field}: {why}"));
        let mode = match pb::RedisMode::try_from(s.mode) {
            Ok(pb::RedisMode::Standalone) => Mode::Standalone,
            Ok(pb::RedisMode::Cluster) => Mode::Cluster,
            Ok(pb::RedisMode::Sentinel) => Mode::Sentinel,
            _ => {
                return Err(invalid(
                    "mode",
                    "must be standalone, cluster or sentinel".into(),
                ));
            }
        };
        let peer = |field: &str, p: pb::Peer| -> Result<Peer, Error> {
            Ok(Peer {
                address: p
                    .address
                    .parse()
                    .map_err(|e| invalid(field, format!("{:?}: {e}", p.address)))?,
                port: u16::try_from(p.port)
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or_else(|| invalid(field, format!("port {}", p.port)))?,
            })
        };
        let sentinel = match s.sentinel {
            Some(v) => Some(SentinelSpec {
                master: peer(
                    "sentinel.master",
                    v.master
                        .ok_or_else(|| invalid("sentinel.master", "missing".into()))?,
                )?,
                master_name: v.master_name,
                quorum: v.quorum,
                down_after_ms: v.down_after_ms,
                failover_timeout_ms: v.failover_timeout_ms,
            }),
            None => None,
        };
        let group = match s.group {
            Some(g) => Some(Group {
                peers: g
                    .peers
                    .into_iter()
                    .map(|p| peer("group.peers", p))
                    .collect::<Result<_, _>>()?,
                sentinels: g
                    .sentinels
                    .into_iter()
                    .map(|p| peer("group.sentinels", p))
                    .collect::<Result<_, _>>()?,
                master_name: g.master_name,
            }),
            None => None,
        };
        let members = match s.members {
            Some(m) => Members {
                redis: m
                    .redis
                    .into_iter()
                    .map(|p| peer("members.redis", p))
                    .collect::<Result<_, _>>()?,
                sentinels: m
                    .sentinels
                    .into_iter()
                    .map(|p| peer("members.sentinels", p))
                    .collect::<Result<_, _>>()?,
            },
            None => Members::default(),
        };
        let spec = InstanceSpec {
            address: s
                .address
                .parse()
                .map_err(|e| invalid("address", format!("{:?}: {e}", s.address)))?,
            port: u16::try_from(s.port).map_err(|_| invalid("port", s.port.to_string()))?,
            name: s.name,
            deployment: s.deployment,
            mode,
            maxmemory_bytes: s.maxmemory_bytes,
            maxmemory_policy: s.maxmemory_policy,
            appendonly: s.appendonly,
            rdb_snapshots: s.rdb_snapshots,
            cluster_node_timeout_ms: s.cluster_node_timeout_ms,
            min_replicas_to_write: s.min_replicas_to_write,
            min_replicas_max_lag_s: s.min_replicas_max_lag_s,
            password: s.password,
            supervision: s
                .supervision
                .map(|v| crate::spec::SupervisionSpec {
                    start_timeout_ms: v.start_timeout_ms,
                    start_retries: v.start_retries,
                    backoff_max_ms: v.backoff_max_ms,
                    stop_timeout_ms: v.stop_timeout_ms,
                })
                .unwrap_or_default(),
            users: s
                .users
                .into_iter()
                .map(|u| crate::spec::AclUser {
                    name: u.name,
                    password: u.password,
                    rules: u.rules,
                })
                .collect(),
            sentinel,
            group,
            members,
        };
        spec.validate()?;
        Ok(spec)
    }
}

fn state_to_pb(state: State) -> pb::InstanceState {
    match state {
        State::Stopped => pb::InstanceState::Stopped,
        State::Starting => pb::InstanceState::Starting,
        State::Running => pb::InstanceState::Running,
        State::Backoff => pb::InstanceState::Backoff,
        State::Stopping => pb::InstanceState::Stopping,
        State::Exited => pb::InstanceState::Exited,
        State::Fatal => pb::InstanceState::Fatal,
        State::Held => pb::InstanceState::Held,
    }
}

impl From<InstanceStatus> for pb::InstanceStatus {
    fn from(s: InstanceStatus) -> Self {
        pb::InstanceStatus {
            name: s.name,
            port: u32::from(s.port),
            state: state_to_pb(s.state) as i32,
            pid: s.pid.unwrap_or(0),
            restarts: s.restarts,
            last_exit: s.last_exit.unwrap_or_default(),
            config_digest: s.config_digest,
            deployment: s.deployment,
        }
    }
}

impl From<Reply> for pb::RedisValue {
    fn from(r: Reply) -> Self {
        use pb::redis_value::Kind;
        let kind = match r {
            Reply::Nil => Kind::Nil(true),
            Reply::Int(i) => Kind::Int(i),
            Reply::Bulk(b) => Kind::Bulk(b),
            Reply::Simple(s) => Kind::Simple(s),
            Reply::Error(e) => Kind::Error(e),
            Reply::Array(items) => Kind::Array(pb::RedisArray {
                items: items.into_iter().map(pb::RedisValue::from).collect(),
            }),
            Reply::Double(d) => Kind::Double(d),
        };
        pb::RedisValue { kind: Some(kind) }
    }
}

impl AgentService {
    async fn facts(&self) -> Result<Response<pb::Facts>, Status> {
        let data_dir = self.data_dir.clone();
        let redis_server = self.redis_server.clone();
        let f = tokio::task::spawn_blocking(move || facts::gather(&data_dir, &redis_server))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::Facts {
            hostname: f.hostname,
            os: f.os,
            kernel: f.kernel,
            cpus: f.cpus,
            memory_total_bytes: f.memory_total_bytes,
            memory_available_bytes: f.memory_available_bytes,
            data_dir_free_bytes: f.data_dir_free_bytes,
            redis_server_path: f
                .redis_server_path
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            redis_version: f.redis_version.unwrap_or_default(),
            agent_version: f.agent_version,
            redis_server_configured: self.redis_server.display().to_string(),
        }))
    }
}

fn held_to_pb(granted: bool, h: Option<crate::locks::HeldBy>) -> pb::LockResponse {
    let Some(h) = h else {
        return pb::LockResponse {
            granted,
            ..Default::default()
        };
    };
    pb::LockResponse {
        granted,
        holder: h.holder,
        since_unix_ms: h.since_unix_ms,
        machine_id: h.machine_id,
        pid_namespace: h.pid_namespace,
        pid: h.pid,
    }
}

/// The lease request, checked (bounded strings) at the edge.
fn lease_request(r: pb::LockRequest) -> Result<(String, crate::locks::Owner), Status> {
    let owner = crate::locks::Owner {
        token: r.token,
        holder: r.holder,
        machine_id: r.machine_id,
        pid_namespace: r.pid_namespace,
        pid: r.pid,
    };
    crate::locks::check_request(&r.deployment, &owner).map_err(Status::invalid_argument)?;
    Ok((r.deployment, owner))
}

type RpcStream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

fn change_to_pb(c: StateChange) -> pb::StateEvent {
    pb::StateEvent {
        unix_ms: c.unix_ms,
        instance: c.instance,
        from: state_to_pb(c.from) as i32,
        to: state_to_pb(c.to) as i32,
        pid: c.pid.unwrap_or(0),
        detail: c.detail.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let r = request.into_inner();
        let ttl = std::time::Duration::from_millis(u64::from(r.ttl_ms));
        let (deployment, owner) = lease_request(r)?;
        let outcome = self
            .locks
            .lock(&deployment, owner, ttl, std::time::Instant::now());
        Ok(Response::new(match outcome {
            crate::locks::Outcome::Granted => held_to_pb(true, None),
            crate::locks::Outcome::Held(h) => held_to_pb(false, Some(h)),
            crate::locks::Outcome::Full => {
                return Err(Status::resource_exhausted(format!(
                    "this agent holds {} leases already; wait for them to expire",
                    crate::locks::MAX_LEASES
                )));
            }
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let r = request.into_inner();
        let force = r.force;
        let (deployment, owner) = lease_request(r)?;
        let released =
            self.locks
                .unlock(&deployment, &owner.token, force, std::time::Instant::now());
        Ok(Response::new(match released {
            Ok(broken) => held_to_pb(true, broken),
            Err(held) => held_to_pb(false, Some(held)),
        }))
    }

    type TailLogStream = RpcStream<pb::LogLines>;
    type WatchEventsStream = RpcStream<pb::StateEvent>;

    async fn tail_log(
        &self,
        request: Request<pb::TailLogRequest>,
    ) -> Result<Response<Self::TailLogStream>, Status> {
        let req = request.into_inner();
        // Confirms the instance exists; its name is then safe as a path part.
        let secrets = self.supervisor.secrets(req.instance.clone()).await?;
        let path = self
            .data_dir
            .join("instances")
            .join(&req.instance)
            .join(crate::store::LOG_FILE);
        let lines = req.lines.min(10_000) as usize;
        let (first, offset) = match crate::logs::last_lines(&path, lines) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0),
            Err(e) => return Err(Status::internal(format!("{}: {e}", path.display()))),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let _ = tx
            .send(Ok(pb::LogLines {
                lines: crate::redact::lines(first, &secrets),
            }))
            .await;
        if req.follow {
            let follow = crate::logs::follow(path, offset, async move |lines: Vec<String>| {
                if lines.is_empty() {
                    return !tx.is_closed();
                }
                let lines = crate::redact::lines(lines, &secrets);
                tx.send(Ok(pb::LogLines { lines })).await.is_ok()
            });
            let shutdown = self.shutdown.clone();
            // Dropping `follow` drops the sender: the stream ends.
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    _ = follow => {}
                }
            });
        }
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn watch_events(
        &self,
        _request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let mut changes = self.supervisor.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    () = shutdown.cancelled() => return,
                    c = changes.recv() => c,
                };
                let item = match change {
                    Ok(c) => Ok(change_to_pb(c)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        Err(Status::data_loss(format!(
                            "{n} events were dropped: the watcher was too slow"
                        )))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_facts(
        &self,
        _request: Request<pb::GetFactsRequest>,
    ) -> Result<Response<pb::Facts>, Status> {
        self.facts().await
    }

    async fn ensure_redis(
        &self,
        _request: Request<pb::EnsureRedisRequest>,
    ) -> Result<Response<pb::Facts>, Status> {
        let redis_server = self.redis_server.clone();
        let done = tokio::task::spawn_blocking(move || crate::install::ensure_redis(&redis_server))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::failed_precondition)?;
        tracing::info!("{done}");
        self.facts().await
    }

    async fn put_instance(
        &self,
        request: Request<pb::PutInstanceRequest>,
    ) -> Result<Response<pb::PutInstanceResponse>, Status> {
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let spec = InstanceSpec::try_from(spec)?;
        if !crate::spec::is_local_address(spec.address) {
            return Err(Status::invalid_argument(format!(
                "instance {:?}: field address: {} is not an address of this machine; the inventory must give each host its own address",
                spec.name, spec.address
            )));
        }
        let outcome = self.supervisor.put(spec, req.dry_run, req.live).await?;
        Ok(Response::new(pb::PutInstanceResponse {
            changed: outcome.changed,
            restart_needed: outcome.restart_needed,
            changes: outcome
                .changes
                .into_iter()
                .map(|c| pb::ConfigChange {
                    key: c.key,
                    old: c.old,
                    new: c.new,
                    live: c.live,
                })
                .collect(),
        }))
    }

    async fn start_instance(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let status = self.supervisor.start(request.into_inner().name).await?;
        Ok(Response::new(status.into()))
    }

    async fn recover_instance(
        &self,
        request: Request<pb::RecoverInstanceRequest>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let r = request.into_inner();
        if !r.accept_data_loss {
            return Err(Status::failed_precondition(format!(
                "instance {}: starting a held master empty loses the data its replicas hold; ask again with accept_data_loss",
                r.name
            )));
        }
        let status = self.supervisor.recover(r.name).await?;
        Ok(Response::new(status.into()))
    }

    async fn remove_instance(
        &self,
        request: Request<pb::RemoveInstanceRequest>,
    ) -> Result<Response<pb::RemoveInstanceResponse>, Status> {
        let r = request.into_inner();
        let removed = self
            .supervisor
            .remove(r.name, r.deployment, r.purge_data)
            .await?;
        Ok(Response::new(pb::RemoveInstanceResponse { removed }))
    }

    async fn stop_instance(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let status = self.supervisor.stop(request.into_inner().name).await?;
        Ok(Response::new(status.into()))
    }

    async fn list_instances(
        &self,
        _request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let instances = self.supervisor.list().await?;
        Ok(Response::new(pb::ListInstancesResponse {
            instances: instances.into_iter().map(Into::into).collect(),
        }))
    }

    async fn redis_command(
        &self,
        request: Request<pb::RedisCommandRequest>,
    ) -> Result<Response<pb::RedisCommandResponse>, Status> {
        let req = request.into_inner();
        if req.commands.is_empty() || req.commands.len() > MAX_PIPELINE {
            return Err(Status::invalid_argument(format!(
                "a pipeline has 1 to {MAX_PIPELINE} commands, not {}; split it",
                req.commands.len()
            )));
        }
        let commands: Vec<Vec<Vec<u8>>> = req.commands.into_iter().map(|c| c.args).collect();
        if commands.iter().any(Vec::is_empty) {
            return Err(Status::invalid_argument(
                "a command needs at least its name",
            ));
        }
        let target = self.supervisor.target(req.instance.clone()).await?;
        // A node named by id is checked by the address the local node lists
        // it at: read CLUSTER NODES first (a read, safe on any connection).
        let nodes = if target.spec.mode == Mode::Cluster
            && commands.iter().any(|c| crate::guard::names_a_node(c))
        {
            let nodes = [vec![b"CLUSTER".to_vec(), b"NODES".to_vec()]];
            match self
                .connections
                .run(&req.instance, &target.endpoint, target.pid, &nodes)
                .await?
                .first()
            {
                Some(Reply::Bulk(b)) => {
                    crate::guard::parse_cluster_nodes(&String::from_utf8_lossy(b))
                }
                _ => {
                    return Err(Status::unavailable(format!(
                        "instance {}: CLUSTER NODES did not answer, so the node named cannot be checked",
                        req.instance
                    )));
                }
            }
        } else {
            Vec::new()
        };
        let scope = crate::guard::Scope::of(&target.spec, &nodes);
        for c in &commands {
            crate::guard::check(c, &scope, req.allow_dangerous)
                .map_err(|r| Status::permission_denied(r.to_string()))?;
        }
        let replies = self
            .connections
            .run(&req.instance, &target.endpoint, target.pid, &commands)
            .await?;
        Ok(Response::new(pb::RedisCommandResponse {
            replies: replies.into_iter().map(Into::into).collect(),
        }))
    }
}
