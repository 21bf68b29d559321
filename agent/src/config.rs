//! The agent's own configuration file (`paddockd --config FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

/// `agent.toml`. Every key but `listen` and `data_dir` has a default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address the gRPC API listens on, e.g. "192.168.56.11:7443".
    pub listen: SocketAddr,
    /// Where instance configs, data and logs live: `data_dir/instances/NAME/`.
    pub data_dir: PathBuf,
    /// The redis-server binary; a bare name is looked up in PATH.
    #[serde(default = "default_redis_server")]
    pub redis_server: PathBuf,
    /// The unprivileged user redis-server runs as when the agent runs as
    /// root (default "redis", created by Debian's redis-server package).
    /// Ignored when the agent is not root: Redis then runs as the agent's user.
    #[serde(default = "default_user")]
    pub user: String,
    /// Rotate an instance's log when it grows past this many bytes
    /// (default 16 MiB), so a crash-looping instance cannot fill the disk.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Rotated files kept per log (default 5).
    #[serde(default = "default_log_backups")]
    pub log_backups: u32,
    /// When a cluster master's redis-server dies, have one of its replicas
    /// take over at once, then restart it as a replica (default true).
    /// Off: it restarts in place and serves again after Redis's 2 s
    /// writable delay. Masters without persistence always hand over.
    #[serde(default = "default_true")]
    pub fast_failover: bool,
    /// Mutual TLS: the agent serves with `cert`/`key` and accepts only
    /// clients whose certificate chains to `ca`. Required unless
    /// `insecure_plaintext = true`.
    pub tls: Option<TlsFiles>,
    /// Serve plaintext gRPC: anyone who reaches the port can run Redis
    /// commands. For throwaway labs only.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_true() -> bool {
    true
}

fn default_log_max_bytes() -> u64 {
    16 << 20
}

fn default_log_backups() -> u32 {
    5
}

fn default_user() -> String {
    "redis".to_owned()
}

fn default_redis_server() -> PathBuf {
    PathBuf::from("redis-server")
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let message = match (&config.tls, config.insecure_plaintext) {
            (None, false) => {
                "no [tls] table: the agent serves mutual TLS only. Issue its certificate with \
                 `paddock certs issue -i INVENTORY HOST` and set [tls] ca, cert and key, \
                 or set insecure_plaintext = true for a throwaway lab"
            }
            (Some(_), true) => "both [tls] and insecure_plaintext = true: choose one",
            _ => return Ok(config),
        };
        Err(Error::Config {
            path: path.to_owned(),
            message: message.to_owned(),
        })
    }
}

/// Resolves a bare program name through PATH the way a shell would.
pub fn resolve_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_config_with_defaults() {
        let c = AgentConfig::parse(
            Path::new("agent.toml"),
            "listen = \"127.0.1.1:7443\"\ndata_dir = \"/var/lib/paddock\"\ninsecure_plaintext = true\n",
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.1.1:7443".parse().unwrap());
        assert_eq!(c.redis_server, PathBuf::from("redis-server"));
    }

    #[test]
    fn tls_is_required_unless_plaintext_is_asked_for() {
        let err = AgentConfig::parse(
            Path::new("agent.toml"),
            "listen = \"127.0.1.1:7443\"\ndata_dir = \"/d\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no [tls] table"), "{err}");
        let c = AgentConfig::parse(
            Path::new("agent.toml"),
            "listen = \"127.0.1.1:7443\"\ndata_dir = \"/d\"\n[tls]\nca = \"/c\"\ncert = \"/e\"\nkey = \"/k\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.unwrap().key, PathBuf::from("/k"));
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = AgentConfig::parse(
            Path::new("/etc/paddock/agent.toml"),
            "listen = \"127.0.1.1:7443\"\ndata_dir = \"/x\"\nlisten_port = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/paddock/agent.toml"), "{err}");
        assert!(err.contains("listen_port"), "{err}");
    }
}
