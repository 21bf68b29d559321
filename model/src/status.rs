//! What agents report (instance states, events, facts, put outcomes, Redis
//! replies) and the requests that carry more than a name.

use std::path::PathBuf;

use serde::Serialize;

use crate::InstanceSpec;

/// An instance's supervision state (supervisord's states, plus HELD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InstanceState {
    /// A state this side does not know (a newer peer's).
    Unknown,
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
    /// Not started: a master without data on disk whose replicas may still
    /// hold its data.
    Held,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Unknown => "UNKNOWN",
            InstanceState::Stopped => "STOPPED",
            InstanceState::Starting => "STARTING",
            InstanceState::Running => "RUNNING",
            InstanceState::Backoff => "BACKOFF",
            InstanceState::Stopping => "STOPPING",
            InstanceState::Exited => "EXITED",
            InstanceState::Fatal => "FATAL",
            InstanceState::Held => "HELD",
        }
    }
}

/// One instance as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    /// The deployment the instance belongs to.
    pub deployment: String,
    pub port: u16,
    pub state: InstanceState,
    /// None when no process runs.
    pub pid: Option<u32>,
    /// Restarts the agent made after unexpected exits.
    pub restarts: u32,
    /// How the last process ended, or why the instance is FATAL.
    pub last_exit: Option<String>,
    /// Hash of the rendered config on disk.
    pub config_digest: String,
}

/// One instance state transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateEvent {
    /// Milliseconds since the Unix epoch, on the agent's clock.
    pub unix_ms: i64,
    pub instance: String,
    pub from: InstanceState,
    pub to: InstanceState,
    /// The process after the transition.
    pub pid: Option<u32>,
    /// How the last process ended, or why the instance is FATAL.
    pub detail: Option<String>,
}

/// Facts about an agent's machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub data_dir_free_bytes: u64,
    /// None when redis-server is not installed.
    pub redis_server_path: Option<PathBuf>,
    pub redis_version: Option<String>,
    pub agent_version: String,
    /// The agent config's `redis_server`, as written ("redis-server": the
    /// default, looked up in PATH).
    pub redis_server_configured: PathBuf,
}

/// PutInstance: store a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutInstance {
    pub spec: InstanceSpec,
    /// Compare only: report whether the spec would change anything.
    pub dry_run: bool,
    /// The running process already has these settings: no restart needed.
    pub live: bool,
}

/// What storing a spec did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PutOutcome {
    pub changed: bool,
    /// The instance is running with a config older than the one just written.
    pub restart_needed: bool,
    /// What the config changes from the one the process runs (or, not
    /// running, the one stored), key by key; secrets masked.
    pub changes: Vec<KeyChange>,
}

/// One changed config setting, as the agent reports it. Secrets are masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KeyChange {
    /// The directive: `maxmemory`, `user app`, `sentinel quorum`...
    pub key: String,
    /// Empty when the setting is new.
    pub old: String,
    /// Empty when the setting is gone.
    pub new: String,
    /// Redis takes it at runtime (CONFIG SET, ACL SETUSER, SENTINEL SET).
    pub live: bool,
}

/// Commands in one RedisCommand: bounds what one request can make the
/// agent buffer in replies.
pub const MAX_PIPELINE: usize = 256;

/// RedisCommand: a pipeline of commands for one local instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCommand {
    pub instance: String,
    /// 1 to [`MAX_PIPELINE`] commands, each with at least its name.
    pub commands: Vec<Vec<Vec<u8>>>,
    /// Also run commands that re-point Redis or change its credentials.
    pub allow_dangerous: bool,
}

/// A Redis reply as the agent relays it. A Redis error is a reply, not a
/// failed call.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Simple(String),
    Error(String),
    Array(Vec<Reply>),
    Double(f64),
}

impl Reply {
    /// The reply as text, for bulk and simple strings.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Simple(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }
}
