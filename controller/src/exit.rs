//! The controller's exit codes: what a script running `paddock` can tell
//! apart without reading its output.

use crate::Error;

/// How a command ended. The numbers are documented (README, "Exit codes")
/// and scripts depend on them: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Done,
    /// 1: the command failed, or the deployment is not healthy.
    Failed,
    /// 2: the inventory or the command line is wrong.
    Usage,
    /// 3: an agent did not answer, so the work is not done everywhere.
    Unreachable,
    /// 4: another controller holds the deployment's lease.
    Locked,
    /// 2, from `plan --detailed-exitcode` only: changes are pending (as
    /// terraform's; that flag's callers know 2 is not a usage error there).
    ChangesPending,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Unreachable => 3,
            Exit::Locked => 4,
            Exit::ChangesPending => 2,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

impl Error {
    /// The exit code a command that ends with this error has. Exhaustive
    /// on purpose: a new variant must choose its code.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Inventory(_)
            | Error::InventoryFile { .. }
            | Error::Usage(_)
            | Error::Selection { .. } => Exit::Usage,
            Error::AgentUnreachable { .. } | Error::AgentDown(_) => Exit::Unreachable,
            Error::Locked { .. } => Exit::Locked,
            Error::Io { .. }
            | Error::Agent { .. }
            | Error::Redis { .. }
            | Error::RedisAuth { .. }
            | Error::NotConverged(_)
            | Error::HostCheck(_)
            | Error::Unsupported(_)
            | Error::Lab(_)
            | Error::Certs(_)
            | Error::SlotMove { .. }
            | Error::SlotMismatch { .. }
            | Error::AtomicMove { .. }
            | Error::Unhealthy(_) => Exit::Failed,
        }
    }
}

/// The error and its causes, each once: our errors' messages already
/// include their source, so a cause whose text is already there is skipped.
pub fn error_text(e: &Error) -> String {
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_error_has_its_documented_code() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let cases = [
            (Error::Usage("--force".into()), 2),
            (
                Error::InventoryFile {
                    path: "inv.toml".into(),
                    source: io(),
                },
                2,
            ),
            (
                Error::Selection {
                    target: "box9".into(),
                    message: "no such host".into(),
                },
                2,
            ),
            (
                Error::AgentUnreachable {
                    host: "box1".into(),
                    addr: "127.0.0.1:7443".parse().unwrap(),
                    message: "refused".into(),
                },
                3,
            ),
            (Error::AgentDown("box1: refused".into()), 3),
            (
                Error::Locked {
                    deployment: "lab".into(),
                    holder: "ops@ws pid 7".into(),
                    since: "2026-11-30T00:00:00.000Z".into(),
                    ttl_s: 600,
                },
                4,
            ),
            (Error::NotConverged("no".into()), 1),
            (Error::Unhealthy("open slots".into()), 1),
            (
                Error::SlotMove {
                    slot: 7,
                    node: "box1:redis-7000".into(),
                    step: "CLUSTER SETSLOT 7 NODE x".into(),
                    message: "ERR no".into(),
                },
                1,
            ),
            (
                Error::SlotMismatch {
                    slot: 7,
                    what: "differ".into(),
                    keys: vec!["\"k\"".into()],
                },
                1,
            ),
            (
                Error::AtomicMove {
                    from: "box3:redis-7000".into(),
                    to: "box1:redis-7000".into(),
                    slots: "0-99".into(),
                    message: "Valkey's migration ended failed".into(),
                },
                1,
            ),
            (
                Error::Io {
                    path: "x".into(),
                    source: io(),
                },
                1,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit().code(), code, "{error}");
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Error::Io {
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(error_text(&e), "/x: entity not found");
    }
}
