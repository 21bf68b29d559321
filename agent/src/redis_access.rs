//! Talking to the local Redis instances: readiness pings and the command
//! pipeline the controller sends through the agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value,
};
use tokio::sync::Mutex;

use crate::endpoint::Endpoint;
use crate::error::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cached connection may take to answer the PING that checks it
/// before a request; past that it is replaced.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// An authenticated connection to `endpoint`, with short connect timeouts.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    // Every instance has a password; an empty one means a Redis without
    // requirepass (the agent's own tests).
    if !endpoint.password.is_empty() {
        settings = settings.set_password(&endpoint.password);
    }
    let info = ConnectionAddr::Tcp(endpoint.address.to_string(), endpoint.port)
        .into_connection_info()?
        .set_redis_settings(settings);
    let client = redis::Client::open(info)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The expected process answers and has its data loaded.
    Ready,
    /// It answers but is still loading its data set.
    Loading,
    /// Another process answers on the port (an orphan, or someone else's).
    Impostor(u32),
    NotAnswering,
}

/// Asks the instance who it is and whether it has loaded its data (INFO is
/// served even while loading). Only the process we expect counts as ready:
/// an older redis-server still holding the port must not pass for ours.
pub async fn readiness(endpoint: &Endpoint, expected_pid: u32) -> Readiness {
    let Ok(mut conn) = connect(endpoint, Duration::from_millis(500)).await else {
        return Readiness::NotAnswering;
    };
    let info: String = match redis::cmd("INFO")
        .arg("server")
        .arg("persistence")
        .query_async(&mut conn)
        .await
    {
        Ok(i) => i,
        Err(e) if ReplyError::of(&e) == ReplyError::Loading => return Readiness::Loading,
        Err(_) => return Readiness::NotAnswering,
    };
    let server = paddock_knowledge::info::Server::parse(&info);
    let loading = paddock_knowledge::info::Persistence::parse(&info).loading;
    match server.process_id {
        Some(pid) if pid != expected_pid => Readiness::Impostor(pid),
        None => Readiness::NotAnswering,
        Some(_) if loading == Some(true) => Readiness::Loading,
        Some(_) => Readiness::Ready,
    }
}

/// The Redis error replies the agent decides on, by the code word the reply
/// starts with (never its free text, which Redis may reword).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// LOADING: the data set is still being loaded.
    Loading,
    /// INPROG: a Sentinel failover is already in progress.
    InProgress,
    /// Any other error reply, or no reply at all (IO, auth, parsing).
    Other,
}

impl ReplyError {
    pub fn of(e: &redis::RedisError) -> ReplyError {
        match e.code() {
            Some("LOADING") => ReplyError::Loading,
            Some("INPROG") => ReplyError::InProgress,
            _ => ReplyError::Other,
        }
    }
}

/// One multiplexed connection per instance process, reused across requests.
/// Every command the guard lets through leaves a connection as it found it;
/// a reply that shows otherwise (an error, a push, QUEUED) or a failure
/// drops it, so the next request starts on a fresh one.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<String, Cached>>>,
    response_timeout: Duration,
}

struct Cached {
    /// The port and process it was opened to: a restarted Redis (new pid)
    /// or a moved instance gets a new connection, never a stale one.
    port: u16,
    pid: Option<u32>,
    conn: MultiplexedConnection,
}

impl Default for Connections {
    fn default() -> Self {
        Connections::with_response_timeout(RESPONSE_TIMEOUT)
    }
}

/// A reply the way the wire carries it. Redis errors are values, not failures.
pub use paddock_model::Reply;

/// Whether a reply shows the connection may not be in its plain state any
/// more: a Redis error (a command half-applied to the connection), an
/// out-of-band push (subscribed), or QUEUED (inside MULTI).
fn unsettling(v: &Value) -> bool {
    match v {
        Value::ServerError(_) | Value::Push { .. } => true,
        Value::SimpleString(s) => s.eq_ignore_ascii_case("QUEUED"),
        _ => false,
    }
}

impl Connections {
    pub fn with_response_timeout(response_timeout: Duration) -> Self {
        Connections {
            inner: Arc::default(),
            response_timeout,
        }
    }

    /// Runs `commands` as one pipeline on the instance's process `pid`. The
    /// pipeline is written at most once: after a failure nobody knows which
    /// of its commands ran, so it is never re-sent (a retried INCR counts
    /// twice). A cached connection is checked with PING first, which is
    /// safe to repeat, and replaced if it does not answer.
    pub async fn run(
        &self,
        instance: &str,
        endpoint: &Endpoint,
        pid: Option<u32>,
        commands: &[Vec<Vec<u8>>],
    ) -> Result<Vec<Reply>, Error> {
        let fail = |message: String| Error::Redis {
            instance: instance.to_owned(),
            message,
        };
        let mut conn = self.get(instance, endpoint, pid).await?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for args in commands {
            let mut cmd = redis::Cmd::new();
            for a in args {
                cmd.arg(a.as_slice());
            }
            pipe.add_command(cmd);
        }
        match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Ok(values) => {
                if values.iter().any(unsettling) {
                    self.inner.lock().await.remove(instance);
                }
                Ok(values.into_iter().map(reply).collect())
            }
            Err(e) => {
                self.inner.lock().await.remove(instance);
                Err(fail(e.to_string()))
            }
        }
    }

    async fn get(
        &self,
        instance: &str,
        endpoint: &Endpoint,
        pid: Option<u32>,
    ) -> Result<MultiplexedConnection, Error> {
        // The table is locked only to read or write an entry, never across a
        // network wait: a frozen redis-server must not hold up the commands
        // to the agent's other instances.
        let cached = self
            .inner
            .lock()
            .await
            .get(instance)
            .filter(|c| c.port == endpoint.port && c.pid == pid)
            .map(|c| c.conn.clone());
        if let Some(mut conn) = cached {
            let ping_cmd = redis::cmd("PING");
            let ping = ping_cmd.query_async::<String>(&mut conn);
            let pong = tokio::time::timeout(PING_TIMEOUT.min(self.response_timeout), ping).await;
            if matches!(pong, Ok(Ok(p)) if p == "PONG") {
                return Ok(conn);
            }
        }
        self.inner.lock().await.remove(instance);
        let conn = connect(endpoint, self.response_timeout)
            .await
            .map_err(|e| match e.kind() {
                redis::ErrorKind::AuthenticationFailed => Error::RedisAuth {
                    instance: instance.to_owned(),
                },
                _ => Error::Redis {
                    instance: instance.to_owned(),
                    message: format!(
                        "not answering on {}:{}: {e}",
                        endpoint.address, endpoint.port
                    ),
                },
            })?;
        self.inner.lock().await.insert(
            instance.to_owned(),
            Cached {
                port: endpoint.port,
                pid,
                conn: conn.clone(),
            },
        );
        Ok(conn)
    }
}

/// A redis-rs value as the wire carries it (RESP3 maps flattened, booleans
/// as integers).
pub(crate) fn reply(v: Value) -> Reply {
    match v {
        Value::Nil => Reply::Nil,
        Value::Int(i) => Reply::Int(i),
        Value::BulkString(b) => Reply::Bulk(b),
        Value::Array(items) | Value::Set(items) => {
            Reply::Array(items.into_iter().map(reply).collect())
        }
        Value::SimpleString(s) => Reply::Simple(s),
        Value::Okay => Reply::Simple("OK".into()),
        Value::Map(pairs) => Reply::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [reply(k), reply(v)])
                .collect(),
        ),
        Value::Double(d) => Reply::Double(d),
        Value::Boolean(b) => Reply::Int(i64::from(b)),
        Value::VerbatimString { text, .. } => Reply::Bulk(text.into_bytes()),
        Value::ServerError(e) => Reply::Error(match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_owned(),
        }),
        Value::Attribute { data, .. } => reply(*data),
        Value::Push { data, .. } => Reply::Array(data.into_iter().map(reply).collect()),
        Value::BigNumber(n) => Reply::Simple(format!("{n:?}")),
        _ => Reply::Error("unsupported reply type".into()),
    }
}

/// A Redis the agent acts on directly (a peer of a replication group, a
/// replica taking over): the procedures of `paddock_knowledge` run over it.
/// Each command opens its own short connection, as the peer may be down.
pub struct PeerNode {
    pub endpoint: Endpoint,
    pub response_timeout: Duration,
}

impl PeerNode {
    pub fn new(
        address: std::net::IpAddr,
        port: u16,
        password: &str,
        response_timeout: Duration,
    ) -> Self {
        PeerNode {
            endpoint: Endpoint {
                address,
                port,
                password: password.to_owned(),
            },
            response_timeout,
        }
    }
}

impl paddock_knowledge::RedisNode for PeerNode {
    fn name(&self) -> String {
        paddock_knowledge::Addr::new(self.endpoint.address, self.endpoint.port).to_string()
    }

    async fn command(
        &self,
        args: &[&str],
    ) -> Result<paddock_knowledge::Value, paddock_knowledge::Error> {
        let unreachable = |e: redis::RedisError| paddock_knowledge::Error::Unreachable {
            node: self.name(),
            source: Box::new(e),
        };
        let mut conn = connect(&self.endpoint, self.response_timeout)
            .await
            .map_err(unreachable)?;
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(*a);
        }
        // A pipeline that keeps error replies as values: they become
        // Error::Reply below, a transport failure Error::Unreachable.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.add_command(cmd);
        let v = pipe
            .query_async::<Vec<Value>>(&mut conn)
            .await
            .map_err(unreachable)?
            .pop()
            .unwrap_or(Value::Nil);
        to_value(v)
            .map_err(|text| paddock_knowledge::Error::reply(self.name(), args.join(" "), &text))
    }
}

/// A redis-rs reply as the knowledge crate's value; Err carries the text
/// of an error reply.
pub fn to_value(v: Value) -> Result<paddock_knowledge::Value, String> {
    reply_value(reply(v))
}

fn reply_value(r: Reply) -> Result<paddock_knowledge::Value, String> {
    use paddock_knowledge::Value as K;
    Ok(match r {
        Reply::Nil => K::Nil,
        Reply::Int(i) => K::Int(i),
        Reply::Bulk(b) => K::Bulk(b),
        Reply::Simple(s) => K::Status(s),
        Reply::Error(e) => return Err(e),
        Reply::Array(items) => K::Array(
            items
                .into_iter()
                .map(reply_value)
                .collect::<Result<_, _>>()?,
        ),
        Reply::Double(d) => K::Double(d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_classified_by_their_code_word() {
        let server = |resp: &[u8]| match redis::parse_redis_value(resp).unwrap() {
            Value::ServerError(e) => redis::RedisError::from(e),
            v => panic!("not an error reply: {v:?}"),
        };
        let io =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let table = [
            (
                server(b"-LOADING Redis is loading the dataset in memory\r\n"),
                ReplyError::Loading,
            ),
            (
                server(b"-INPROG Failover already in progress\r\n"),
                ReplyError::InProgress,
            ),
            // The text does not decide: only the code word does.
            (
                server(b"-ERR INPROG LOADING is not a code here\r\n"),
                ReplyError::Other,
            ),
            (
                server(b"-NOGOODSLAVE No suitable replica\r\n"),
                ReplyError::Other,
            ),
            (io, ReplyError::Other),
        ];
        for (e, want) in table {
            assert_eq!(ReplyError::of(&e), want, "{e}");
        }
    }
}
