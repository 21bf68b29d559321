//! The tonic service: converts proto messages to the shared model at the
//! edge (through `paddock_model::wire`, the one place that knows both) and
//! hands the work to the supervisor task. The only module of the agent that
//! imports proto types.

use std::path::PathBuf;

use paddock_proto::v1::{self as pb, agent_server::Agent};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::facts;
use crate::lifecycle::Step;
use crate::redis_access::{Connections, Reply};
use crate::spec::Mode;
use crate::supervisor::SupervisorHandle;
use paddock_model::{LeaseRequest, LockReply, PutInstance, RedisCommand};

/// How long a pipeline with a MIGRATE may take: its longest timeout and a
/// margin, under the controller's 90 s call deadline.
pub const MIGRATE_WAIT: std::time::Duration =
    std::time::Duration::from_millis(crate::guard::MAX_MIGRATE_TIMEOUT_MS + 15_000);

pub struct AgentService {
    pub supervisor: SupervisorHandle,
    pub connections: Connections,
    /// For pipelines with a MIGRATE, which may wait up to
    /// [`crate::guard::MAX_MIGRATE_TIMEOUT_MS`] on its target.
    pub migrations: Connections,
    pub locks: crate::locks::Locks,
    pub data_dir: PathBuf,
    pub redis_server: PathBuf,
    /// The open `logs -f` and `events` streams run on it and end at its
    /// shutdown step 2, which the server's graceful shutdown would
    /// otherwise wait for.
    pub lifecycle: crate::lifecycle::Lifecycle,
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

/// A request the model refuses: INVALID_ARGUMENT, naming the field.
fn invalid(e: paddock_model::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

impl AgentService {
    async fn facts(&self) -> Result<Response<pb::Facts>, Status> {
        let data_dir = self.data_dir.clone();
        let redis_server = self.redis_server.clone();
        let f = tokio::task::spawn_blocking(move || facts::gather(&data_dir, &redis_server))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(f.into()))
    }
}

type RpcStream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let r = LeaseRequest::try_from(request.into_inner()).map_err(invalid)?;
        let outcome = self
            .locks
            .lock(&r.deployment, r.id, r.ttl, tokio::time::Instant::now());
        let reply = |granted, held| Ok(Response::new(LockReply { granted, held }.into()));
        match outcome {
            crate::locks::Outcome::Granted => reply(true, None),
            crate::locks::Outcome::Held(h) => reply(false, Some(h)),
            crate::locks::Outcome::Full => Err(Status::resource_exhausted(format!(
                "this agent holds {} leases already; wait for them to expire",
                crate::locks::MAX_LEASES
            ))),
        }
    }

    async fn unlock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let r = LeaseRequest::try_from(request.into_inner()).map_err(invalid)?;
        let released = self.locks.unlock(
            &r.deployment,
            &r.id.token,
            r.force,
            tokio::time::Instant::now(),
        );
        let (granted, held) = match released {
            Ok(broken) => (true, broken),
            Err(held) => (false, Some(held)),
        };
        Ok(Response::new(LockReply { granted, held }.into()))
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
            let shutdown = self.lifecycle.token(Step::Streams).clone();
            // Dropping `follow` drops the sender: the stream ends.
            self.lifecycle.track(async move {
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
        let shutdown = self.lifecycle.token(Step::Streams).clone();
        self.lifecycle.track(async move {
            loop {
                let change = tokio::select! {
                    () = shutdown.cancelled() => return,
                    c = changes.recv() => c,
                };
                let item = match change {
                    // Not pb::StateEvent::from: prost names the getter of field `from` so.
                    Ok(c) => Ok(<pb::StateEvent as From<_>>::from(c)),
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
        let PutInstance {
            spec,
            dry_run,
            live,
        } = PutInstance::try_from(request.into_inner()).map_err(invalid)?;
        if !crate::spec::is_local_address(spec.address) {
            return Err(Status::invalid_argument(format!(
                "instance {:?}: field address: {} is not an address of this machine; the inventory must give each host its own address",
                spec.name, spec.address
            )));
        }
        let outcome = self.supervisor.put(spec, dry_run, live).await?;
        Ok(Response::new(outcome.into()))
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
        let RedisCommand {
            instance,
            commands,
            allow_dangerous,
        } = RedisCommand::try_from(request.into_inner()).map_err(invalid)?;
        let target = self.supervisor.target(instance.clone()).await?;
        // A node named by id is checked by the address the local node lists
        // it at: read CLUSTER NODES first (a read, safe on any connection).
        let nodes = if target.spec.mode == Mode::Cluster
            && commands.iter().any(|c| crate::guard::names_a_node(c))
        {
            let nodes = [vec![b"CLUSTER".to_vec(), b"NODES".to_vec()]];
            match self
                .connections
                .run(&instance, &target.endpoint, target.pid, &nodes)
                .await?
                .first()
            {
                Some(Reply::Bulk(b)) => {
                    crate::guard::parse_cluster_nodes(&String::from_utf8_lossy(b))
                }
                _ => {
                    return Err(Status::unavailable(format!(
                        "instance {}: CLUSTER NODES did not answer, so the node named cannot be checked",
                        instance
                    )));
                }
            }
        } else {
            Vec::new()
        };
        let scope = crate::guard::Scope::of(&target.spec, &nodes);
        for c in &commands {
            crate::guard::check(c, &scope, allow_dangerous)
                .map_err(|r| Status::permission_denied(r.to_string()))?;
        }
        let (run, parts) = crate::digest::expand(&commands, &target.spec.password);
        let connections = if commands.iter().any(|c| crate::digest::is_migrate(c)) {
            &self.migrations
        } else {
            &self.connections
        };
        let replies = connections
            .run(&instance, &target.endpoint, target.pid, &run)
            .await?;
        let replies = crate::digest::assemble(&parts, replies);
        Ok(Response::new(pb::RedisCommandResponse {
            replies: replies.into_iter().map(Into::into).collect(),
        }))
    }
}
