//! One task owns the instance table. gRPC handlers talk to it through
//! [`SupervisorHandle`]; child exits, readiness and timers come back to it as
//! events on a channel, so no state is shared behind locks. What to do is
//! decided by the pure [`state::Machine`]; this module only carries it out.

mod process;
pub mod state;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use process::RunAs;
use state::{Action, Event, Machine};
pub use state::{Settings, State};

pub use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::lifecycle::{Lifecycle, Step};
use crate::spec::{Group, InstanceSpec, Mode, Peer, Render as _};
use crate::store::{self, InstanceDirs};

/// What the supervisor reports: the shared model's types.
pub use paddock_model::{InstanceStatus, PutOutcome, StateEvent as StateChange};

/// How often running replication-group members are looked at.
const GROUP_WATCH_EVERY: Duration = Duration::from_secs(1);

type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Command {
    Put {
        spec: Box<InstanceSpec>,
        dry_run: bool,
        live: bool,
        reply: Reply<PutOutcome>,
    },
    Start {
        name: String,
        reply: Reply<InstanceStatus>,
    },
    Stop {
        name: String,
        reply: Reply<InstanceStatus>,
    },
    Recover {
        name: String,
        reply: Reply<InstanceStatus>,
    },
    Remove {
        name: String,
        deployment: String,
        purge_data: bool,
        reply: Reply<bool>,
    },
    List {
        reply: oneshot::Sender<Vec<InstanceStatus>>,
    },
    Endpoint {
        name: String,
        reply: Reply<Endpoint>,
    },
    Secrets {
        name: String,
        reply: Reply<Vec<String>>,
    },
    Target {
        name: String,
        reply: Reply<Target>,
    },
}

/// What RedisCommand needs about an instance: where it answers, which
/// process answers (a cached connection is for that process only), and the
/// spec the guard checks commands against.
pub struct Target {
    pub endpoint: Endpoint,
    pub pid: Option<u32>,
    pub spec: InstanceSpec,
}

/// Something that happened to an instance's process, tagged with the
/// generation it happened under.
struct Tagged {
    name: String,
    generation: u64,
    event: Event,
    /// With HandedOver: start as a replica of this master.
    replica_of: Option<Peer>,
}

impl Tagged {
    fn new(name: String, generation: u64, event: Event) -> Self {
        Tagged {
            name,
            generation,
            event,
            replica_of: None,
        }
    }
}

/// What must happen before a crashed or stopped instance starts again.
enum Preparation {
    /// A cluster master: a replica takes its slots over.
    Cluster(Vec<crate::handover::Replica>),
    /// A replication group member: find its role, or hand the master's over.
    Group(Group),
}

#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Command>,
    changes: broadcast::Sender<StateChange>,
}

impl SupervisorHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Stores a spec. `live`: the running process already has these settings
    /// (the controller changed them at runtime), so no restart is needed.
    pub async fn put(
        &self,
        spec: InstanceSpec,
        dry_run: bool,
        live: bool,
    ) -> Result<PutOutcome, Error> {
        self.ask(|reply| Command::Put {
            spec: Box::new(spec),
            dry_run,
            live,
            reply,
        })
        .await?
    }

    /// Starts the instance and answers once it is RUNNING (answers PING) or
    /// its start has failed (BACKOFF, FATAL).
    pub async fn start(&self, name: String) -> Result<InstanceStatus, Error> {
        self.ask(|reply| Command::Start { name, reply }).await?
    }

    /// Starts a HELD instance as it is (empty), skipping the handover: an
    /// operator accepted losing what its replicas hold.
    pub async fn recover(&self, name: String) -> Result<InstanceStatus, Error> {
        self.ask(|reply| Command::Recover { name, reply }).await?
    }

    /// Stops the instance and answers once its process is gone.
    pub async fn stop(&self, name: String) -> Result<InstanceStatus, Error> {
        self.ask(|reply| Command::Stop { name, reply }).await?
    }

    /// Forgets a stopped instance of `deployment` (false: there was none);
    /// its data stays unless `purge_data`.
    pub async fn remove(
        &self,
        name: String,
        deployment: String,
        purge_data: bool,
    ) -> Result<bool, Error> {
        self.ask(|reply| Command::Remove {
            name,
            deployment,
            purge_data,
            reply,
        })
        .await?
    }

    pub async fn list(&self) -> Result<Vec<InstanceStatus>, Error> {
        self.ask(|reply| Command::List { reply }).await
    }

    pub async fn endpoint(&self, name: String) -> Result<Endpoint, Error> {
        self.ask(|reply| Command::Endpoint { name, reply }).await?
    }

    /// The passwords an instance's log lines may carry, to mask them.
    pub async fn secrets(&self, name: String) -> Result<Vec<String>, Error> {
        self.ask(|reply| Command::Secrets { name, reply }).await?
    }

    pub async fn target(&self, name: String) -> Result<Target, Error> {
        self.ask(|reply| Command::Target { name, reply }).await?
    }

    /// Every state transition from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }
}

struct Instance {
    spec: InstanceSpec,
    dirs: InstanceDirs,
    machine: Machine,
    /// The config text and spec the running process was started with: its
    /// address, port and password until it restarts, whatever was put since.
    running_config: Option<String>,
    running_spec: Option<InstanceSpec>,
    config_digest: String,
    /// Cancelled when the current process exits: stops its readiness probe.
    process_token: CancellationToken,
    /// Callers of start/stop waiting for the instance to settle.
    waiters: Vec<Reply<InstanceStatus>>,
    /// A handover was just tried for this master: start it as is.
    handed_over: bool,
    /// The next start is as a replica of this master.
    replica_of: Option<Peer>,
    /// A group watch of this instance is under way.
    watching: Arc<AtomicBool>,
    /// The newest config epoch under which a majority of the sentinels
    /// named this instance the master (u64::MAX: never seen).
    named_me_at: Arc<AtomicU64>,
}

impl Instance {
    fn status(&self) -> InstanceStatus {
        let m = &self.machine;
        InstanceStatus {
            name: self.spec.name.clone(),
            port: self.spec.port,
            state: m.state.into(),
            pid: m.pid,
            restarts: m.restarts,
            last_exit: m.fatal_reason.clone().or_else(|| m.last_exit.clone()),
            config_digest: self.config_digest.clone(),
            deployment: self.spec.deployment.clone(),
        }
    }

    /// Every password of the spec and of the one the process runs with (two
    /// while a password rotation is under way), ACL users' included.
    fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for spec in std::iter::once(&self.spec).chain(self.running_spec.as_ref()) {
            out.push(spec.password.clone());
            out.extend(spec.users.iter().map(|u| u.password.clone()));
        }
        out.sort();
        out.dedup();
        out
    }

    fn endpoint(&self) -> Endpoint {
        let spec = match &self.running_spec {
            Some(running) if self.machine.state.has_process() => running,
            _ => &self.spec,
        };
        Endpoint {
            address: spec.address,
            port: spec.port,
            password: spec.password.clone(),
        }
    }
}

pub struct SupervisorConfig {
    pub redis_server: PathBuf,
    pub data_dir: PathBuf,
    /// The user redis-server runs as when the agent is root; looked up at
    /// every start, so the agent can run before redis-server (and its user)
    /// is installed.
    pub user: String,
    /// Hand a crashed cluster master's slots to a replica before restarting
    /// it (always done for masters without persistence).
    pub fast_failover: bool,
    /// The agent's own gRPC address: no instance may take its port.
    pub listen: std::net::SocketAddr,
}

struct Supervisor {
    config: SupervisorConfig,
    instances: BTreeMap<String, Instance>,
    events: mpsc::UnboundedSender<Tagged>,
    changes: broadcast::Sender<StateChange>,
    /// Every task the supervisor starts runs on it and ends when
    /// supervision stops (shutdown step 3).
    life: Lifecycle,
    /// Actions the machines asked for and not yet carried out, next first.
    pending: VecDeque<(String, Action)>,
}

/// Loads the stored instances, re-adopts those whose redis-server is still
/// running (same pid and start time: ours), starts those that should run and
/// do not, and spawns the task that owns them all.
pub fn spawn(config: SupervisorConfig, life: Lifecycle) -> Result<SupervisorHandle, Error> {
    let data_dir = config.data_dir.clone();
    let unusable = |e: Error| e.in_data_dir(&data_dir);
    store::create_layout(&config.data_dir).map_err(unusable)?;
    if let Ok(Some(user)) = resolve_run_as(&config.user) {
        store::check_not_redis_writable(&config.data_dir, user.uid, user.gid)?;
    }
    for name in store::migrate_legacy(&config.data_dir).map_err(unusable)? {
        info!(instance = %name, "moved the agent's files out of Redis's directory into control/");
    }
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (changes, _) = broadcast::channel(1024);
    let mut supervisor = Supervisor {
        config,
        instances: BTreeMap::new(),
        events: events_tx,
        changes: changes.clone(),
        life,
        pending: VecDeque::new(),
    };
    let owner = resolve_run_as(&supervisor.config.user)
        .ok()
        .flatten()
        .map(|u| (u.uid, u.gid));
    let stored = store::load_all(&supervisor.config.data_dir.join("control")).map_err(unusable)?;
    for (spec, config_text) in stored {
        let dirs = InstanceDirs::new(&supervisor.config.data_dir, &spec.name);
        let name = spec.name.clone();
        supervisor.insert(spec, dirs.clone(), &config_text);
        // Files Redis (or Sentinel's rewrite) left readable by others.
        if let Ok(redis) = store::Dir::open(&dirs.redis) {
            store::restrict_redis_files(&redis, owner);
        }
        if let Some(pid) = process::adoptable(&dirs.control) {
            info!(instance = %name, pid, "re-adopting running redis-server");
            supervisor.adopt(&name, pid, config_text);
        } else if store::wants_running(&dirs.control) {
            info!(instance = %name, "not running but should be; starting it");
            supervisor.feed(&name, Event::Start, None);
        }
    }
    let (tx, rx) = mpsc::channel(256);
    let life = supervisor.life.clone();
    life.spawn(Step::Supervision, supervisor.run(rx, events_rx));
    Ok(SupervisorHandle { tx, changes })
}

impl Supervisor {
    fn insert(&mut self, spec: InstanceSpec, dirs: InstanceDirs, config: &str) {
        let name = spec.name.clone();
        self.instances.insert(
            name,
            Instance {
                spec,
                dirs,
                machine: Machine::default(),
                running_config: None,
                running_spec: None,
                config_digest: store::digest(config),
                process_token: CancellationToken::new(),
                waiters: Vec::new(),
                handed_over: false,
                replica_of: None,
                watching: Arc::new(AtomicBool::new(false)),
                named_me_at: Arc::new(AtomicU64::new(u64::MAX)),
            },
        );
    }

    /// Looks at every running replication-group member: records that it is
    /// part of a formed group (see `store::mark_formed`), and makes a master
    /// that a majority of the sentinels no longer names follow the one they
    /// name. One look per member at a time.
    fn watch_groups(&self) {
        for instance in self.instances.values() {
            let Some(group) = &instance.spec.group else {
                continue;
            };
            if instance.machine.state != State::Running
                || instance.watching.swap(true, Ordering::AcqRel)
            {
                continue;
            }
            let endpoint = instance.endpoint();
            let me = Peer {
                address: endpoint.address,
                port: endpoint.port,
            };
            let group = group.clone();
            let dir = instance.dirs.control.clone();
            let name = instance.spec.name.clone();
            let watching = instance.watching.clone();
            let named_me_at = instance.named_me_at.clone();
            self.life.spawn(Step::Supervision, async move {
                let mine = match named_me_at.load(Ordering::Acquire) {
                    u64::MAX => None,
                    e => Some(e),
                };
                match crate::rejoin::watch(me, &group, &endpoint.password, mine).await {
                    Ok(seen) => {
                        if seen.is_replica {
                            named_me_at.store(u64::MAX, Ordering::Release);
                        } else if let Some(e) = seen.named_me_at
                            && mine.is_none_or(|m| e > m)
                        {
                            named_me_at.store(e, Ordering::Release);
                        }
                        if seen.formed
                            && let Err(e) = blocking(move || store::mark_formed(&dir)).await
                        {
                            warn!(instance = %name, error = %e, "cannot record that the group is formed");
                        }
                        if let Some(master) = seen.demoted_to {
                            warn!(instance = %name, %master, "the sentinels name another master: now its replica");
                        }
                    }
                    Err(e) => debug!(instance = %name, error = %e, "group watch"),
                }
                watching.store(false, Ordering::Release);
            });
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<Tagged>,
    ) {
        let mut watch_tick = tokio::time::interval(GROUP_WATCH_EVERY);
        watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // What the stored instances asked for at start-up.
        self.carry_out().await;
        loop {
            tokio::select! {
                Some(command) = commands.recv() => self.handle_command(command).await,
                _ = watch_tick.tick() => self.watch_groups(),
                Some(t) = events.recv() => self.handle_event(t),
                else => break,
            }
            self.carry_out().await;
        }
    }

    fn handle_event(&mut self, t: Tagged) {
        // After a handover (or one that may start it anyway) the next
        // spawn is a spawn; a held instance tries the handover again.
        if matches!(
            t.event,
            Event::HandedOver | Event::HandoverFailed { hold: false, .. }
        ) && let Some(i) = self.instances.get_mut(&t.name)
        {
            i.handed_over = true;
            i.replica_of = t.replica_of;
        }
        self.feed(&t.name, t.event, Some(t.generation))
    }

    /// Carries out the actions the machines asked for, in order: the
    /// actions of an event that an action fed come before the rest, as if
    /// each action were carried out where it was asked for. File IO is
    /// awaited on the blocking pool, so nothing else of the supervisor
    /// runs in between. Ends: every chain of actions reaches one that
    /// feeds nothing (a spawn, a timer, a signal, a reply).
    async fn carry_out(&mut self) {
        while let Some((name, action)) = self.pending.pop_front() {
            self.act(&name, action).await;
        }
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Put {
                spec,
                dry_run,
                live,
                reply,
            } => {
                let _ = reply.send(self.put(*spec, dry_run, live).await);
            }
            Command::Start { name, reply } => self.request(&name, Event::Start, reply).await,
            Command::Stop { name, reply } => self.request(&name, Event::Stop, reply).await,
            Command::Recover { name, reply } => self.recover(&name, reply).await,
            Command::Remove {
                name,
                deployment,
                purge_data,
                reply,
            } => {
                let _ = reply.send(self.remove(&name, &deployment, purge_data).await);
            }
            Command::List { reply } => {
                let _ = reply.send(self.instances.values().map(Instance::status).collect());
            }
            Command::Secrets { name, reply } => {
                let secrets = self
                    .instances
                    .get(&name)
                    .map(Instance::secrets)
                    .ok_or(Error::UnknownInstance(name));
                let _ = reply.send(secrets);
            }
            Command::Endpoint { name, reply } => {
                let endpoint = self
                    .instances
                    .get(&name)
                    .map(Instance::endpoint)
                    .ok_or(Error::UnknownInstance(name));
                let _ = reply.send(endpoint);
            }
            Command::Target { name, reply } => {
                let target = self
                    .instances
                    .get(&name)
                    .map(|i| Target {
                        endpoint: i.endpoint(),
                        pid: i.machine.pid,
                        spec: i.spec.clone(),
                    })
                    .ok_or(Error::UnknownInstance(name));
                let _ = reply.send(target);
            }
        }
    }

    async fn put(
        &mut self,
        spec: InstanceSpec,
        dry_run: bool,
        live: bool,
    ) -> Result<PutOutcome, Error> {
        let dirs = InstanceDirs::new(&self.config.data_dir, &spec.name);
        let (spec, config, fresh_seed) = self.accept_spec(spec, &dirs)?;
        if fresh_seed && !dry_run {
            let control = dirs.control.clone();
            blocking(move || store::forget_sentinel_seed(&control)).await?;
        }
        let control = dirs.control.clone();
        let stored = blocking(move || Ok(store::read_config(&control))).await?;
        let current = self.instances.get(&spec.name);
        let changed = match current {
            Some(i) => i.spec != spec || stored.as_deref() != Some(&config),
            None => true,
        };
        let restart_needed = current.is_some_and(|i| {
            i.machine.state.has_process() && i.running_config.as_deref() != Some(config.as_str())
        });
        let base = match current {
            Some(i) if i.machine.state.has_process() => i.running_config.clone(),
            Some(_) => stored.clone(),
            None => None,
        };
        let changes = crate::diff::config_changes(base.as_deref().unwrap_or_default(), &config);
        // A live put of the spec already stored (apply stores it, sets it
        // live, then says so) still marks what the process runs.
        let takes_live = live && restart_needed;
        if dry_run || !(changed || takes_live) {
            return Ok(PutOutcome {
                changed,
                restart_needed,
                changes,
            });
        }
        let owner = resolve_run_as(&self.config.user)
            .ok()
            .flatten()
            .map(|u| (u.uid, u.gid));
        let (d, stored_spec, c) = (dirs.clone(), spec.clone(), config.clone());
        blocking(move || store::write_instance(&d, &stored_spec, &c, owner)).await?;
        info!(instance = %spec.name, port = spec.port, "stored new spec and config");
        let restart_needed = self
            .take_spec(spec, dirs, config, live, restart_needed)
            .await?;
        Ok(PutOutcome {
            changed,
            restart_needed,
            changes,
        })
    }

    /// Checks a put spec against the other instances and renders it. A
    /// running sentinel keeps the master it was seeded with: it follows
    /// failovers itself, and a restart must not undo them. One that is not
    /// running starts afresh from what the controller says now (after a
    /// sentinel-less stretch its own memory may be stale), and learns any
    /// newer failover from the other sentinels' hello messages: the third
    /// value says its seed is to be forgotten.
    fn accept_spec(
        &self,
        spec: InstanceSpec,
        dirs: &InstanceDirs,
    ) -> Result<(InstanceSpec, String, bool), Error> {
        let config = spec.render(&dirs.redis)?;
        let others = self.instances.values().map(|i| {
            (
                i.spec.name.as_str(),
                i.spec.address,
                &i.spec.mode,
                i.spec.port,
            )
        });
        if let Some(why) = crate::spec::port_clash(&spec, self.config.listen, others) {
            return Err(Error::InvalidSpec(why));
        }
        let current = self.instances.get(&spec.name);
        if let Some(i) = current
            && i.spec.deployment != spec.deployment
        {
            // Same name means same directory and nodes.conf: two clusters
            // would merge. The operator must remove the other one first.
            return Err(Error::InvalidSpec(format!(
                "instance {:?} on this host belongs to deployment {:?}, not {:?}; give this deployment another port, or stop and remove the other first",
                spec.name, i.spec.deployment, spec.deployment
            )));
        }
        match current {
            Some(i)
                if i.spec.mode == Mode::Sentinel
                    && i.machine.state.has_process()
                    && i.spec.same_but_seed(&spec) =>
            {
                // Keep the seed; take the rest (the member list) as put.
                let mut kept = spec;
                kept.sentinel.clone_from(&i.spec.sentinel);
                let config = kept.render(&dirs.redis)?;
                Ok((kept, config, false))
            }
            Some(i) if i.spec.mode == Mode::Sentinel => Ok((spec, config, true)),
            _ => Ok((spec, config, false)),
        }
    }

    /// The table takes a stored spec. `live`: the running process already
    /// has its settings, so no restart is needed (returned: whether one is).
    async fn take_spec(
        &mut self,
        spec: InstanceSpec,
        dirs: InstanceDirs,
        config: String,
        live: bool,
        mut restart_needed: bool,
    ) -> Result<bool, Error> {
        let Some(i) = self.instances.get_mut(&spec.name) else {
            self.insert(spec, dirs, &config);
            return Ok(restart_needed);
        };
        if live && i.machine.state.has_process() {
            i.running_config = Some(config.clone());
            i.running_spec = Some(spec.clone());
            restart_needed = false;
            // The sentinel already runs these settings (SENTINEL SET
            // rewrote its sentinel.conf): keep that file and what it
            // learned across its next restart.
            if spec.mode == Mode::Sentinel {
                let (control, rendered) = (i.dirs.control.clone(), config.clone());
                blocking(move || store::mark_sentinel_seeded(&control, &rendered)).await?;
            }
        }
        if let Some(i) = self.instances.get_mut(&spec.name) {
            i.config_digest = store::digest(&config);
            i.spec = spec;
        }
        Ok(restart_needed)
    }

    /// An operator's start or stop: remembered on disk (so a restarted agent
    /// knows), fed to the machine, answered when the state settles.
    async fn request(&mut self, name: &str, event: Event, reply: Reply<InstanceStatus>) {
        let Some(instance) = self.instances.get(name) else {
            let _ = reply.send(Err(Error::UnknownInstance(name.to_owned())));
            return;
        };
        let running = event == Event::Start;
        let control = instance.dirs.control.clone();
        if let Err(e) = blocking(move || store::set_wants_running(&control, running)).await {
            let _ = reply.send(Err(e));
            return;
        }
        let Some(instance) = self.instances.get_mut(name) else {
            let _ = reply.send(Err(Error::UnknownInstance(name.to_owned())));
            return;
        };
        let settled = matches!(
            (running, instance.machine.state),
            (true, State::Running) | (false, State::Stopped)
        );
        if settled {
            let _ = reply.send(Ok(instance.status()));
            return;
        }
        instance.waiters.push(reply);
        self.feed(name, event, None);
    }

    async fn remove(
        &mut self,
        name: &str,
        deployment: &str,
        purge_data: bool,
    ) -> Result<bool, Error> {
        let Some(instance) = self.instances.get(name) else {
            return Ok(false);
        };
        let refuse = |message: String| {
            Err(Error::Precondition {
                instance: name.to_owned(),
                message,
            })
        };
        if instance.spec.deployment != deployment {
            return refuse(format!(
                "belongs to deployment {:?}, not {deployment:?}",
                instance.spec.deployment
            ));
        }
        // Only a settled instance without a process: removing one that may
        // run (or is held, retrying a handover) would orphan a redis-server.
        if !matches!(
            instance.machine.state,
            State::Stopped | State::Exited | State::Fatal
        ) {
            return refuse(format!("is {:?}: stop it first", instance.machine.state));
        }
        let dirs = instance.dirs.clone();
        blocking(move || store::remove_instance(&dirs, purge_data)).await?;
        if let Some(i) = self.instances.remove(name) {
            i.process_token.cancel();
        }
        info!(instance = name, purge_data, "instance removed");
        Ok(true)
    }

    async fn recover(&mut self, name: &str, reply: Reply<InstanceStatus>) {
        let Some(instance) = self.instances.get_mut(name) else {
            let _ = reply.send(Err(Error::UnknownInstance(name.to_owned())));
            return;
        };
        if instance.machine.state != State::Held {
            let _ = reply.send(Err(Error::Precondition {
                instance: name.to_owned(),
                message: format!(
                    "is {:?}, not held: nothing to recover",
                    instance.machine.state
                ),
            }));
            return;
        }
        warn!(
            instance = name,
            "operator accepted data loss: starting the held master empty"
        );
        // The next spawn skips the handover.
        instance.handed_over = true;
        self.request(name, Event::Start, reply).await;
    }

    fn adopt(&mut self, name: &str, pid: u32, config: String) {
        let Some(instance) = self.instances.get_mut(name) else {
            return;
        };
        instance.running_config = Some(config);
        instance.running_spec = Some(instance.spec.clone());
        self.feed(name, Event::Adopted { pid }, None);
        let Some(instance) = self.instances.get_mut(name) else {
            return;
        };
        let generation = instance.machine.generation;
        let token = CancellationToken::new();
        instance.process_token = token.clone();
        let (dirs, secrets) = (instance.dirs.clone(), instance.secrets());
        self.watch_exit(name, generation, token.clone(), async move {
            process::wait_adopted(pid, &dirs, &secrets).await
        });
        self.probe(name, generation, token);
    }

    /// Feeds an event to an instance's machine and queues its actions for
    /// `carry_out`. `generation` None means "current" (commands, not
    /// process events).
    fn feed(&mut self, name: &str, mut event: Event, generation: Option<u64>) {
        let jitter = jitter();
        let Some(instance) = self.instances.get_mut(name) else {
            return;
        };
        // Masked again with the passwords known now (a rotation may have
        // added one since the process started).
        if let Event::Exited(report) = &mut event {
            let tail = std::mem::take(&mut report.log_tail);
            report.log_tail = crate::redact::lines(tail, &instance.secrets());
        }
        let before = instance.machine.state;
        let settings = Settings::from(instance.spec.supervision);
        let generation = generation.unwrap_or(instance.machine.generation);
        let actions = instance
            .machine
            .next(event, generation, machine_now(), &settings, jitter);
        let after = instance.machine.state;
        if before != after {
            let s = instance.status();
            let _ = self.changes.send(StateChange {
                unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
                instance: name.to_owned(),
                from: before.into(),
                to: after.into(),
                pid: s.pid,
                detail: s.last_exit.clone(),
            });
            match after {
                State::Backoff | State::Fatal | State::Held => {
                    warn!(instance = name, from = ?before, to = ?after, pid = s.pid, last_exit = s.last_exit.as_deref().unwrap_or(""), "state change")
                }
                _ if before == State::Running => {
                    warn!(instance = name, from = ?before, to = ?after, last_exit = s.last_exit.as_deref().unwrap_or(""), "state change")
                }
                _ => {
                    info!(instance = name, from = ?before, to = ?after, pid = s.pid, "state change")
                }
            }
        }
        // Before whatever was pending: see `carry_out`.
        for action in actions.into_iter().rev() {
            self.pending.push_front((name.to_owned(), action));
        }
    }

    async fn act(&mut self, name: &str, action: Action) {
        let Some(instance) = self.instances.get_mut(name) else {
            return;
        };
        let generation = instance.machine.generation;
        let later = |event: Event, delay| {
            let timer = Tagged::new(name.to_owned(), generation, event);
            schedule(&self.life, &self.events, timer, delay);
        };
        match action {
            Action::Spawn | Action::Handover => match self.preparation(name).await {
                Some(Preparation::Cluster(replicas)) => self.hand_over(name, replicas),
                Some(Preparation::Group(group)) => self.prepare_member(name, group),
                None if action == Action::Spawn => self.spawn_process(name).await,
                // HELD, and nothing to hand over any more: start it.
                None => self.feed(name, Event::HandedOver, Some(generation)),
            },
            Action::Signal(sig) => {
                if let Some(pid) = instance.machine.pid {
                    let sig = match sig {
                        state::Signal::Term => nix::sys::signal::Signal::SIGTERM,
                        state::Signal::Kill => nix::sys::signal::Signal::SIGKILL,
                    };
                    info!(instance = name, pid, signal = %sig, "signalling process group");
                    process::signal_group(pid, sig);
                }
            }
            Action::RetryAfter(delay) => later(Event::RetryDue, delay),
            Action::StopTimeoutAfter(delay) => later(Event::StopTimedOut, delay),
            Action::Settled => {
                let status = instance.status();
                for waiter in instance.waiters.drain(..) {
                    let _ = waiter.send(Ok(status.clone()));
                }
            }
        }
    }

    /// Prepares the files of the next process and spawns it, on the
    /// blocking pool (see [`blocking`]); then waits for its exit and probes
    /// its readiness in tasks of their own.
    async fn spawn_process(&mut self, name: &str) {
        let Some(instance) = self.instances.get_mut(name) else {
            return;
        };
        let generation = instance.machine.generation;
        let start = Start {
            redis_server: self.config.redis_server.clone(),
            user: self.config.user.clone(),
            dirs: instance.dirs.clone(),
            sentinel: instance.spec.mode == Mode::Sentinel,
            replica_of: instance.replica_of.take(),
        };
        let started = match blocking(move || Ok(start.run())).await {
            Ok(started) => started,
            Err(e) => Err((e.to_string(), None)),
        };
        let Some(instance) = self.instances.get_mut(name) else {
            return;
        };
        let (config, child) = match started {
            Ok(started) => started,
            Err((error, replica_of)) => {
                // Not started: the next start is still as that replica.
                instance.replica_of = replica_of;
                self.feed(name, Event::SpawnFailed { error }, Some(generation));
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        instance.running_config = Some(config);
        instance.running_spec = Some(instance.spec.clone());
        let token = CancellationToken::new();
        instance.process_token = token.clone();
        let (dirs, secrets) = (instance.dirs.clone(), instance.secrets());
        self.watch_exit(name, generation, token.clone(), async move {
            process::wait(child, &dirs, &secrets).await
        });
        self.feed(name, Event::Spawned { pid }, Some(generation));
        self.probe(name, generation, token);
    }

    /// A cluster master that keeps nothing on disk and has replicas must not
    /// come back as an empty master: its replicas would copy the emptiness.
    /// A member of a replication group must come back in its current role.
    async fn preparation(&mut self, name: &str) -> Option<Preparation> {
        let instance = self.instances.get_mut(name)?;
        if std::mem::take(&mut instance.handed_over) {
            return None;
        }
        let spec = &instance.spec;
        if let Some(group) = &spec.group {
            return Some(Preparation::Group(group.clone()));
        }
        let dataless = !spec.appendonly && !spec.rdb_snapshots;
        if spec.mode != Mode::Cluster || !(dataless || self.config.fast_failover) {
            return None;
        }
        let redis = instance.dirs.redis.clone();
        // nodes.conf is read on the blocking pool.
        blocking(move || Ok(crate::handover::replicas_if_master(&redis)))
            .await
            .ok()
            .flatten()
            .filter(|r| !r.is_empty())
            .map(Preparation::Cluster)
    }

    fn prepare_member(&mut self, name: &str, group: Group) {
        let Some(instance) = self.instances.get(name) else {
            return;
        };
        let spec = &instance.spec;
        let dataless = !spec.appendonly && !spec.rdb_snapshots;
        let me = crate::rejoin::Me {
            peer: Peer {
                address: spec.address,
                port: spec.port,
            },
            promote: dataless || self.config.fast_failover,
            dataless,
            formed: false,
        };
        let control = instance.dirs.control.clone();
        let generation = instance.machine.generation;
        let password = spec.password.clone();
        let events = self.events.clone();
        let name = name.to_owned();
        self.life.spawn(Step::Supervision, async move {
            let started = Instant::now();
            let mut me = me;
            me.formed = blocking(move || Ok(store::was_formed(&control)))
                .await
                .unwrap_or(false);
            let tagged = match crate::rejoin::prepare(me, &group, &password).await {
                Ok(crate::rejoin::Start::ReplicaOf(master)) => {
                    info!(instance = %name, %master, took_ms = started.elapsed().as_millis() as u64, "starting as a replica of the current master");
                    let mut t = Tagged::new(name, generation, Event::HandedOver);
                    t.replica_of = Some(master);
                    t
                }
                Ok(crate::rejoin::Start::AsConfigured) => {
                    Tagged::new(name, generation, Event::HandedOver)
                }
                Err(no_heir) => {
                    warn!(instance = %name, error = %no_heir.error, "no replica took over");
                    Tagged::new(
                        name,
                        generation,
                        Event::HandoverFailed {
                            error: no_heir.error,
                            hold: dataless,
                        },
                    )
                }
            };
            let _ = events.send(tagged);
        });
    }

    fn hand_over(&mut self, name: &str, replicas: Vec<crate::handover::Replica>) {
        let Some(instance) = self.instances.get(name) else {
            return;
        };
        let dataless = !instance.spec.appendonly && !instance.spec.rdb_snapshots;
        warn!(
            instance = name,
            replicas = replicas.len(),
            dataless,
            "cluster master down: a replica takes over before it restarts"
        );
        let generation = instance.machine.generation;
        let password = instance.spec.password.clone();
        let events = self.events.clone();
        let name = name.to_owned();
        self.life.spawn(Step::Supervision, async move {
            let event = match crate::handover::hand_over(&replicas, &password).await {
                Ok(new_master) => {
                    info!(instance = %name, %new_master, "replica took over; restarting as its replica");
                    Event::HandedOver
                }
                Err(no_heir) => {
                    warn!(instance = %name, error = %no_heir.error, "no replica took over");
                    Event::HandoverFailed {
                        error: no_heir.error,
                        hold: dataless,
                    }
                }
            };
            let _ = events.send(Tagged::new(name, generation, event));
        });
    }

    /// Probes until ready (Ready) or the start timeout (StartTimedOut).
    /// Waits for the process's end on a tracked task: cancels `token` (its
    /// readiness probe stops) and reports the exit, tagged with its
    /// generation.
    fn watch_exit(
        &self,
        name: &str,
        generation: u64,
        token: CancellationToken,
        wait: impl Future<Output = state::ExitReport> + Send + 'static,
    ) {
        let events = self.events.clone();
        let name = name.to_owned();
        self.life.spawn(Step::Supervision, async move {
            let report = wait.await;
            token.cancel();
            let _ = events.send(Tagged::new(name, generation, Event::Exited(report)));
        });
    }

    fn probe(&self, name: &str, generation: u64, token: CancellationToken) {
        let Some(instance) = self.instances.get(name) else {
            return;
        };
        let Some(pid) = instance.machine.pid else {
            return;
        };
        let endpoint = instance.endpoint();
        let timeout = Settings::from(instance.spec.supervision).start_timeout;
        let events = self.events.clone();
        let name = name.to_owned();
        self.life.spawn(Step::Supervision, async move {
            let event = match process::wait_ready(&endpoint, pid, timeout, &token).await {
                Some(true) => Event::Ready,
                Some(false) => Event::StartTimedOut,
                None => return,
            };
            let _ = events.send(Tagged::new(name, generation, event));
        });
    }
}

/// What starting an instance's next process needs, taken from the
/// supervisor so that it can run on the blocking pool.
struct Start {
    redis_server: PathBuf,
    user: String,
    dirs: InstanceDirs,
    sentinel: bool,
    /// Start as a replica of this master.
    replica_of: Option<Peer>,
}

impl Start {
    /// The config the process starts with, and the process. Err: why it
    /// could not start, and `replica_of` back when no process was tried.
    fn run(mut self) -> Result<(String, tokio::process::Child), (String, Option<Peer>)> {
        let prepared = resolve_run_as(&self.user).and_then(|run_as| {
            let config = store::read_config(&self.dirs.control)
                .ok_or_else(|| Error::InvalidSpec("redis.conf is missing; re-run apply".into()))?;
            Ok((run_as, config))
        });
        let (run_as, config) = match prepared {
            Ok(p) => p,
            Err(Error::InvalidSpec(m)) => return Err((m, self.replica_of)),
            Err(e) => return Err((e.to_string(), self.replica_of)),
        };
        let args = self.args(run_as).map_err(|e| match e {
            Error::InvalidSpec(m) => (m, None),
            e => (e.to_string(), None),
        })?;
        process::spawn(&self.redis_server, &self.dirs, &args, run_as)
            .map(|child| (config, child))
            .map_err(|e| (format!("{}: {e}", self.redis_server.display()), None))
    }

    /// The command line of the next process. A sentinel runs its own copy
    /// of the rendered config (Sentinel rewrites the file it runs with),
    /// made afresh only when the rendered config changed.
    fn args(&mut self, run_as: Option<RunAs>) -> Result<Vec<String>, Error> {
        let dirs = &self.dirs;
        let path = |file: &str| dirs.redis.join(file).to_string_lossy().into_owned();
        let owner = run_as.map(|u| (u.uid, u.gid));
        if self.sentinel {
            store::copy_run_config(dirs, store::SENTINEL_CONFIG_FILE, true, owner)?;
            return Ok(vec![path(store::SENTINEL_CONFIG_FILE), "--sentinel".into()]);
        }
        store::copy_run_config(dirs, store::RUNNING_CONFIG_FILE, false, owner)?;
        let mut args = vec![path(store::RUNNING_CONFIG_FILE)];
        if let Some(master) = self.replica_of.take() {
            args.extend([
                "--replicaof".into(),
                master.address.to_string(),
                master.port.to_string(),
            ]);
        }
        Ok(args)
    }
}

/// Runs blocking file IO (writes, fsync, renames, reads of nodes.conf) on
/// tokio's blocking pool. The supervisor awaits it, so commands and events
/// are still handled one at a time, in the order they came.
async fn blocking<T: Send + 'static>(
    io: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(io).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::ShuttingDown),
    }
}

/// The time the state machine is told: tokio's clock (so paused-time
/// tests move it), as the std `Instant` the pure machine takes.
fn machine_now() -> std::time::Instant {
    Instant::now().into_std()
}

/// A timer of the state machine (back-off, stop timeout, HELD retry) on
/// tokio's clock: `timer` comes back on `events` after `delay`, unless
/// supervision stops first.
fn schedule(
    life: &Lifecycle,
    events: &mpsc::UnboundedSender<Tagged>,
    timer: Tagged,
    delay: Duration,
) {
    let events = events.clone();
    life.spawn(Step::Supervision, async move {
        tokio::time::sleep(delay).await;
        let _ = events.send(timer);
    });
}

/// A fraction in [0, 1) that spreads restarts of several instances apart.
fn jitter() -> f64 {
    rand::random::<f64>()
}

/// Resolves the user redis-server runs as. When the agent is root that is
/// `user` (never root itself); otherwise Redis runs as the agent's own user.
pub fn resolve_run_as(user: &str) -> Result<Option<RunAs>, Error> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let found = nix::unistd::User::from_name(user)
        .map_err(|e| Error::Privileges(format!("cannot look up user {user:?}: {e}")))?;
    let Some(u) = found else {
        return Err(Error::Privileges(format!(
            "user {user:?} does not exist; install redis-server (its package creates the redis user) or set `user` in the agent config"
        )));
    };
    if u.uid.is_root() {
        return Err(Error::Privileges(format!(
            "user {user:?} is root; redis-server never runs as root: set `user` to an unprivileged user"
        )));
    }
    Ok(Some(RunAs {
        uid: u.uid,
        gid: u.gid,
    }))
}

/// Checks that `user` can reach `dir` (every ancestor searchable), so a
/// data_dir under a private directory fails at start-up with a clear message
/// rather than as a crash-looping Redis.
pub fn check_reachable(dir: &Path, run_as: Option<RunAs>) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let Some(user) = run_as else { return Ok(()) };
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let searchable = if meta.uid() == user.uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            return Err(Error::Privileges(format!(
                "{} (mode {:o}) cannot be entered by the user redis-server runs as (uid {}), so data_dir {} is unreachable; `chmod o+x {}` or choose another data_dir",
                ancestor.display(),
                mode & 0o7777,
                user.uid,
                dir.display(),
                ancestor.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use state::ExitReport;

    fn crash() -> Event {
        Event::Exited(ExitReport {
            description: "exited with status 1".into(),
            clean: false,
            log_tail: vec![],
        })
    }

    /// Carries out a machine's actions the way `Supervisor::act` does for
    /// timers (through [`schedule`], on tokio's clock); `on_spawn` and
    /// `on_handover` stand in for the process side and answer at once.
    /// Returns when the machine settles with no timer pending.
    async fn drive(
        machine: &mut Machine,
        first: Event,
        settings: &Settings,
        mut answer: impl FnMut(&Action, &Machine) -> Vec<Event>,
        rounds: usize,
    ) {
        let life = Lifecycle::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut queue = vec![(first, machine.generation)];
        for _ in 0..rounds {
            while let Some((event, generation)) = queue.pop() {
                for action in machine.next(event, generation, machine_now(), settings, 0.0) {
                    match action {
                        Action::RetryAfter(delay) => {
                            let timer =
                                Tagged::new("x".into(), machine.generation, Event::RetryDue);
                            schedule(&life, &tx, timer, delay);
                        }
                        Action::Settled => {}
                        ref a => {
                            let g = machine.generation;
                            queue.extend(answer(a, machine).into_iter().rev().map(|e| (e, g)));
                        }
                    }
                }
            }
            match tokio::time::timeout(Duration::from_secs(3600), rx.recv()).await {
                Ok(Some(t)) => queue.push((t.event, t.generation)),
                _ => return,
            }
        }
    }

    /// A process that exits at once is respawned after exactly the delays
    /// the machine chose (0, then 50 ms doubling to 5 s), measured on the
    /// paused clock the supervisor's timers run on, until FATAL.
    #[tokio::test(start_paused = true)]
    async fn a_crashing_process_is_respawned_after_the_machines_backoff() {
        let settings = Settings::default();
        let t0 = Instant::now();
        let mut spawned_at = Vec::new();
        let mut machine = Machine::default();
        drive(
            &mut machine,
            Event::Start,
            &settings,
            |action, _| {
                assert_eq!(action, &Action::Spawn);
                spawned_at.push(t0.elapsed().as_millis());
                vec![Event::Spawned { pid: 42 }, crash()]
            },
            100,
        )
        .await;
        let gaps: Vec<u128> = spawned_at.windows(2).map(|w| w[1] - w[0]).collect();
        let expected: Vec<u128> = (1..=settings.start_retries)
            .map(|failures| state::backoff_delay(failures, 0.0, &settings).as_millis())
            .collect();
        assert_eq!(gaps, expected);
        assert_eq!(gaps[..6], [0, 50, 100, 200, 400, 800]);
        assert_eq!(machine.state, State::Fatal);
    }

    /// A HELD master's handover is tried again on the HELD schedule (0.25 s
    /// doubling to 2 s) while no replica takes over, and it starts as soon
    /// as one does.
    #[tokio::test(start_paused = true)]
    async fn a_held_master_retries_the_handover_on_its_schedule() {
        let settings = Settings::default();
        let t0 = Instant::now();
        let mut tried_at = Vec::new();
        let mut machine = Machine::default();
        let mut started = None;
        drive(
            &mut machine,
            Event::Start,
            &settings,
            |action, m| match action {
                // The first spawn is prepared by a handover that fails.
                Action::Spawn
                    if m.hold_attempts == 0 && started.is_none() && tried_at.is_empty() =>
                {
                    tried_at.push(t0.elapsed().as_millis());
                    vec![Event::HandoverFailed {
                        error: "no replica answers".into(),
                        hold: true,
                    }]
                }
                Action::Handover if tried_at.len() < 7 => {
                    tried_at.push(t0.elapsed().as_millis());
                    vec![Event::HandoverFailed {
                        error: "no replica answers".into(),
                        hold: true,
                    }]
                }
                Action::Handover => {
                    tried_at.push(t0.elapsed().as_millis());
                    vec![Event::HandedOver]
                }
                Action::Spawn => {
                    started = Some(t0.elapsed().as_millis());
                    vec![Event::Spawned { pid: 42 }, Event::Ready]
                }
                other => panic!("{other:?}"),
            },
            100,
        )
        .await;
        let gaps: Vec<u128> = tried_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, [250, 500, 1000, 2000, 2000, 2000, 2000]);
        assert_eq!(started, tried_at.last().copied(), "started at the handover");
        assert_eq!(machine.state, State::Running);
    }
}
