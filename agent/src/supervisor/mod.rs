//! One task owns the instance table. gRPC handlers talk to it through
//! [`SupervisorHandle`]; child exits, readiness and timers come back to it as
//! [`Event`]s on a channel, so no state is shared behind locks.

mod process;
mod state;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use state::{State, backoff_delay};

use crate::Error;
use crate::spec::InstanceSpec;
use crate::store;

/// How long a stop waits after SIGTERM before SIGKILL to the process group.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an instance may take to answer PING before the start has failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Consecutive failed starts before an instance is FATAL.
const START_RETRIES: u32 = 10;
/// A process that lived this long resets the back-off.
const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub name: String,
    pub port: u16,
    pub state: State,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub config_digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub changed: bool,
    pub restart_needed: bool,
}

/// Where and how to reach an instance's Redis. Not `Debug`: it holds the password.
#[derive(Clone)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
    pub password: String,
}

enum Command {
    Put {
        spec: InstanceSpec,
        dry_run: bool,
        reply: oneshot::Sender<Result<PutOutcome, Error>>,
    },
    Start {
        name: String,
        reply: oneshot::Sender<Result<InstanceStatus, Error>>,
    },
    Stop {
        name: String,
        reply: oneshot::Sender<Result<InstanceStatus, Error>>,
    },
    List {
        reply: oneshot::Sender<Vec<InstanceStatus>>,
    },
    Endpoint {
        name: String,
        reply: oneshot::Sender<Result<Endpoint, Error>>,
    },
    StopAll {
        reply: oneshot::Sender<()>,
    },
}

enum Event {
    Exited {
        name: String,
        generation: u64,
        how: String,
    },
    Ready {
        name: String,
        generation: u64,
    },
    StartTimedOut {
        name: String,
        generation: u64,
    },
    RestartDue {
        name: String,
        generation: u64,
    },
    StopTimedOut {
        name: String,
        generation: u64,
    },
}

#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Command>,
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

    pub async fn put(&self, spec: InstanceSpec, dry_run: bool) -> Result<PutOutcome, Error> {
        self.ask(|reply| Command::Put {
            spec,
            dry_run,
            reply,
        })
        .await?
    }

    /// Starts the instance and answers once it is RUNNING (answers PING) or
    /// its start has failed.
    pub async fn start(&self, name: String) -> Result<InstanceStatus, Error> {
        self.ask(|reply| Command::Start { name, reply }).await?
    }

    /// Stops the instance and answers once its process is gone.
    pub async fn stop(&self, name: String) -> Result<InstanceStatus, Error> {
        self.ask(|reply| Command::Stop { name, reply }).await?
    }

    pub async fn list(&self) -> Result<Vec<InstanceStatus>, Error> {
        self.ask(|reply| Command::List { reply }).await
    }

    pub async fn endpoint(&self, name: String) -> Result<Endpoint, Error> {
        self.ask(|reply| Command::Endpoint { name, reply }).await?
    }

    pub async fn stop_all(&self) -> Result<(), Error> {
        self.ask(|reply| Command::StopAll { reply }).await
    }
}

struct Instance {
    spec: InstanceSpec,
    dir: PathBuf,
    state: State,
    pid: Option<u32>,
    /// Bumped at every spawn so that events of an earlier process are ignored.
    generation: u64,
    restarts: u32,
    consecutive_failures: u32,
    started_at: Option<Instant>,
    last_exit: Option<String>,
    /// The config text the running process was started with.
    running_config: Option<String>,
    config_digest: String,
    /// Cancelled when the current process exits: stops its readiness probe.
    process_token: CancellationToken,
    /// Callers of start/stop waiting for the instance to settle.
    waiters: Vec<oneshot::Sender<Result<InstanceStatus, Error>>>,
}

impl Instance {
    fn status(&self) -> InstanceStatus {
        InstanceStatus {
            name: self.spec.name.clone(),
            port: self.spec.port,
            state: self.state,
            pid: self.pid,
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            config_digest: self.config_digest.clone(),
        }
    }

    fn settle(&mut self) {
        let status = self.status();
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Ok(status.clone()));
        }
    }
}

struct Supervisor {
    redis_server: PathBuf,
    instances_dir: PathBuf,
    instances: BTreeMap<String, Instance>,
    events: mpsc::UnboundedSender<Event>,
    stop_all_waiters: Vec<oneshot::Sender<()>>,
}

/// Loads the stored specs (all instances start STOPPED) and spawns the task
/// that owns them.
pub fn spawn(redis_server: PathBuf, data_dir: &Path) -> Result<SupervisorHandle, Error> {
    let instances_dir = data_dir.join("instances");
    store::create_private_dir(&instances_dir)?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor {
        redis_server,
        instances_dir: instances_dir.clone(),
        instances: BTreeMap::new(),
        events: events_tx,
        stop_all_waiters: Vec::new(),
    };
    for (spec, config) in store::load_all(&instances_dir)? {
        let dir = instances_dir.join(&spec.name);
        supervisor.insert(spec, dir, &config);
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(supervisor.run(rx, events_rx));
    Ok(SupervisorHandle { tx })
}

impl Supervisor {
    fn insert(&mut self, spec: InstanceSpec, dir: PathBuf, config: &str) {
        let name = spec.name.clone();
        self.instances.insert(
            name,
            Instance {
                spec,
                dir,
                state: State::Stopped,
                pid: None,
                generation: 0,
                restarts: 0,
                consecutive_failures: 0,
                started_at: None,
                last_exit: None,
                running_config: None,
                config_digest: store::digest(config),
                process_token: CancellationToken::new(),
                waiters: Vec::new(),
            },
        );
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        loop {
            tokio::select! {
                Some(command) = commands.recv() => self.handle_command(command),
                Some(event) = events.recv() => self.handle_event(event),
                else => break,
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Put {
                spec,
                dry_run,
                reply,
            } => {
                let _ = reply.send(self.put(spec, dry_run));
            }
            Command::Start { name, reply } => self.start(&name, reply),
            Command::Stop { name, reply } => self.stop(&name, Some(reply)),
            Command::List { reply } => {
                let _ = reply.send(self.instances.values().map(Instance::status).collect());
            }
            Command::Endpoint { name, reply } => {
                let endpoint = self
                    .instances
                    .get(&name)
                    .map(|i| Endpoint {
                        address: i.spec.address,
                        port: i.spec.port,
                        password: i.spec.password.clone(),
                    })
                    .ok_or(Error::UnknownInstance(name));
                let _ = reply.send(endpoint);
            }
            Command::StopAll { reply } => {
                let names: Vec<String> = self.instances.keys().cloned().collect();
                for name in names {
                    self.stop(&name, None);
                }
                self.stop_all_waiters.push(reply);
                self.check_all_stopped();
            }
        }
    }

    fn put(&mut self, spec: InstanceSpec, dry_run: bool) -> Result<PutOutcome, Error> {
        let dir = self.instances_dir.join(&spec.name);
        let config = spec.render(&dir)?;
        let current = self.instances.get(&spec.name);
        let changed = match current {
            Some(i) => i.spec != spec || store::read_config(&dir).as_deref() != Some(&config),
            None => true,
        };
        let restart_needed = current.is_some_and(|i| {
            i.state.has_process() && i.running_config.as_deref() != Some(config.as_str())
        });
        if dry_run || !changed {
            return Ok(PutOutcome {
                changed,
                restart_needed,
            });
        }
        store::write_instance(&dir, &spec, &config)?;
        info!(instance = %spec.name, port = spec.port, "stored new spec and config");
        match self.instances.get_mut(&spec.name) {
            Some(i) => {
                i.spec = spec;
                i.config_digest = store::digest(&config);
            }
            None => self.insert(spec, dir, &config),
        }
        Ok(PutOutcome {
            changed,
            restart_needed,
        })
    }

    fn start(&mut self, name: &str, reply: oneshot::Sender<Result<InstanceStatus, Error>>) {
        let Some(instance) = self.instances.get_mut(name) else {
            let _ = reply.send(Err(Error::UnknownInstance(name.to_owned())));
            return;
        };
        match instance.state {
            State::Running => {
                let _ = reply.send(Ok(instance.status()));
            }
            State::Starting | State::Stopping => instance.waiters.push(reply),
            State::Stopped | State::Exited | State::Fatal | State::Backoff => {
                instance.consecutive_failures = 0;
                instance.waiters.push(reply);
                self.spawn_process(name);
            }
        }
    }

    fn spawn_process(&mut self, name: &str) {
        let events = self.events.clone();
        let redis_server = self.redis_server.clone();
        let Some(instance) = self.instances.get_mut(name) else {
            return;
        };
        instance.generation += 1;
        let generation = instance.generation;
        let config = match store::read_config(&instance.dir) {
            Some(c) => c,
            None => {
                instance.state = State::Fatal;
                instance.last_exit = Some("redis.conf is missing; re-run apply".into());
                instance.settle();
                return;
            }
        };
        match process::spawn(&redis_server, &instance.dir) {
            Ok(child) => {
                let pid = child.id();
                instance.pid = pid;
                instance.state = State::Starting;
                instance.started_at = Some(Instant::now());
                instance.running_config = Some(config);
                instance.process_token = CancellationToken::new();
                info!(instance = name, pid, "started redis-server");
                let token = instance.process_token.clone();
                let endpoint = Endpoint {
                    address: instance.spec.address,
                    port: instance.spec.port,
                    password: instance.spec.password.clone(),
                };
                let exit_events = events.clone();
                let exit_name = name.to_owned();
                let exit_token = token.clone();
                tokio::spawn(async move {
                    let how = process::wait(child).await;
                    exit_token.cancel();
                    let _ = exit_events.send(Event::Exited {
                        name: exit_name,
                        generation,
                        how,
                    });
                });
                let probe_name = name.to_owned();
                tokio::spawn(async move {
                    let event = match process::wait_ready(&endpoint, START_TIMEOUT, &token).await {
                        Some(true) => Event::Ready {
                            name: probe_name,
                            generation,
                        },
                        Some(false) => Event::StartTimedOut {
                            name: probe_name,
                            generation,
                        },
                        None => return,
                    };
                    let _ = events.send(event);
                });
            }
            Err(e) => {
                warn!(instance = name, error = %e, "could not start redis-server");
                instance.last_exit = Some(e.to_string());
                instance.state = State::Fatal;
                instance.pid = None;
                instance.settle();
            }
        }
    }

    fn stop(&mut self, name: &str, reply: Option<oneshot::Sender<Result<InstanceStatus, Error>>>) {
        let Some(instance) = self.instances.get_mut(name) else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::UnknownInstance(name.to_owned())));
            }
            return;
        };
        match instance.state {
            State::Starting | State::Running | State::Stopping => {
                if let Some(reply) = reply {
                    instance.waiters.push(reply);
                }
                if instance.state != State::Stopping {
                    instance.state = State::Stopping;
                    if let Some(pid) = instance.pid {
                        info!(instance = name, pid, "stopping redis-server (SIGTERM)");
                        process::signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                    }
                    let events = self.events.clone();
                    let generation = instance.generation;
                    let name = name.to_owned();
                    tokio::spawn(async move {
                        tokio::time::sleep(STOP_TIMEOUT).await;
                        let _ = events.send(Event::StopTimedOut { name, generation });
                    });
                }
            }
            State::Backoff | State::Exited | State::Fatal | State::Stopped => {
                // Invalidates any pending restart timer.
                instance.generation += 1;
                instance.state = State::Stopped;
                instance.settle();
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(instance.status()));
                }
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Exited {
                name,
                generation,
                how,
            } => self.exited(&name, generation, how),
            Event::Ready { name, generation } => {
                if let Some(i) = self.current(&name, generation)
                    && i.state == State::Starting
                {
                    i.state = State::Running;
                    info!(instance = %name, pid = i.pid, "redis-server is ready");
                    i.settle();
                }
            }
            Event::StartTimedOut { name, generation } => {
                if let Some(i) = self.current(&name, generation)
                    && i.state == State::Starting
                {
                    warn!(instance = %name, "redis-server did not answer PING in time; killing it");
                    if let Some(pid) = i.pid {
                        process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
            Event::RestartDue { name, generation } => {
                let due = self
                    .current(&name, generation)
                    .is_some_and(|i| i.state == State::Backoff);
                if due {
                    self.spawn_process(&name);
                }
            }
            Event::StopTimedOut { name, generation } => {
                if let Some(i) = self.current(&name, generation)
                    && i.state == State::Stopping
                    && let Some(pid) = i.pid
                {
                    warn!(instance = %name, pid, "still running after SIGTERM; sending SIGKILL");
                    process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }

    fn current(&mut self, name: &str, generation: u64) -> Option<&mut Instance> {
        self.instances
            .get_mut(name)
            .filter(|i| i.generation == generation)
    }

    fn exited(&mut self, name: &str, generation: u64, how: String) {
        let events = self.events.clone();
        let Some(instance) = self.current(name, generation) else {
            return;
        };
        instance.pid = None;
        instance.running_config = None;
        instance.last_exit = Some(how.clone());
        if instance.state == State::Stopping {
            info!(instance = name, %how, "redis-server stopped");
            instance.state = State::Stopped;
            instance.settle();
            self.check_all_stopped();
            return;
        }
        let lived = instance.started_at.map(|t| t.elapsed()).unwrap_or_default();
        if lived >= STABLE_AFTER {
            instance.consecutive_failures = 0;
        }
        instance.consecutive_failures += 1;
        instance.restarts += 1;
        if instance.consecutive_failures > START_RETRIES {
            warn!(instance = name, %how, "redis-server keeps failing; giving up (FATAL)");
            instance.state = State::Fatal;
            instance.settle();
            return;
        }
        let delay = backoff_delay(instance.consecutive_failures, jitter());
        warn!(instance = name, %how, delay_ms = delay.as_millis() as u64, "redis-server exited unexpectedly; restarting");
        instance.state = State::Backoff;
        if delay.is_zero() {
            self.spawn_process(name);
        } else {
            let name = name.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = events.send(Event::RestartDue { name, generation });
            });
        }
    }

    fn check_all_stopped(&mut self) {
        if self.stop_all_waiters.is_empty() {
            return;
        }
        if self.instances.values().all(|i| !i.state.has_process()) {
            for w in self.stop_all_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

/// A fraction in [0, 1) from the clock's low bits: enough to spread restarts
/// of several instances apart, no RNG dependency.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}
