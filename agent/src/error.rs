//! The agent's one error type, and what each error means for `paddockd`'s
//! exit status. A leaf: it imports nothing of the crate, so every module
//! can use it without importing its users back.

use std::path::PathBuf;

/// Exit status: a problem an operator must fix (config, TLS files, the
/// Redis user, data_dir). The systemd unit's `RestartPreventExitStatus=`
/// lists it: restarting cannot help.
pub const EXIT_SETUP: u8 = 2;
/// Exit status: the listen port is taken or forbidden (also in
/// `RestartPreventExitStatus=`). An address that is not configured yet is
/// waited for instead.
pub const EXIT_LISTEN: u8 = 3;
/// Exit status: anything else (systemd restarts the agent).
pub const EXIT_FAILURE: u8 = 1;

/// The agent's one error type. Variants carry what the operator needs to act.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A file the agent needs before it can serve (its config, a TLS file)
    /// cannot be read.
    #[error("{path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// data_dir cannot be created, opened or read at start-up.
    #[error("data_dir {data_dir} is unusable: {source}")]
    DataDir {
        data_dir: PathBuf,
        #[source]
        source: Box<Error>,
    },
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
    /// The instance answers but refuses the password in its spec: it runs
    /// with another one (a password rotation that did not reach it).
    #[error(
        "instance {instance} refuses the password in its spec: it runs with another one (a password rotation that did not reach it?)"
    )]
    RedisAuth { instance: String },
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
    #[error("instance {instance}: {message}")]
    Precondition { instance: String, message: String },
    #[error("{0}")]
    Privileges(String),
}

impl Error {
    /// `paddockd`'s exit status when this error ends it. Exhaustive on
    /// purpose: a new variant must be given its status here.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. }
            | Error::Unreadable { .. }
            | Error::DataDir { .. }
            | Error::Privileges(_) => EXIT_SETUP,
            Error::Listen { .. } => EXIT_LISTEN,
            Error::Io { .. }
            | Error::InvalidSpec(_)
            | Error::UnknownInstance(_)
            | Error::Redis { .. }
            | Error::RedisAuth { .. }
            | Error::Serve(_)
            | Error::ShuttingDown
            | Error::Precondition { .. } => EXIT_FAILURE,
        }
    }

    /// This error, met while preparing data_dir at start-up: the directory
    /// is unusable (exit [`EXIT_SETUP`]). Errors that already say why
    /// (Redis could redirect it, a bad stored spec) are kept as they are.
    pub fn in_data_dir(self, data_dir: &std::path::Path) -> Error {
        match self {
            e @ Error::Io { .. } => Error::DataDir {
                data_dir: data_dir.to_owned(),
                source: Box::new(e),
            },
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_problems_exit_2_a_taken_port_3_the_rest_1() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let path = || PathBuf::from("/etc/paddock/agent.crt");
        let cases = [
            (
                Error::Config {
                    path: path(),
                    message: "x".into(),
                },
                2,
            ),
            (
                Error::Unreadable {
                    path: path(),
                    source: io(),
                },
                2,
            ),
            (
                Error::Io {
                    path: path(),
                    source: io(),
                }
                .in_data_dir(std::path::Path::new("/var/lib/paddock")),
                2,
            ),
            (Error::Privileges("user".into()), 2),
            (
                Error::Listen {
                    addr: "127.0.0.1:7443".parse().unwrap(),
                    source: io(),
                },
                3,
            ),
            (
                Error::Io {
                    path: path(),
                    source: io(),
                },
                1,
            ),
            (Error::ShuttingDown, 1),
            (Error::InvalidSpec("x".into()), 1),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
        }
    }

    #[test]
    fn an_unusable_data_dir_names_it_and_the_file() {
        let e = Error::Io {
            path: PathBuf::from("/srv/file/data"),
            source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        }
        .in_data_dir(std::path::Path::new("/srv/file/data"));
        let text = e.to_string();
        assert!(
            text.starts_with("data_dir /srv/file/data is unusable: /srv/file/data: "),
            "{text}"
        );
        // A refusal that already explains itself is kept.
        let kept = Error::Privileges("why".into()).in_data_dir(std::path::Path::new("/d"));
        assert_eq!(kept.to_string(), "why");
    }
}
