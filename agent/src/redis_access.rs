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

use crate::Error;
use crate::supervisor::Endpoint;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated connection to `endpoint`, with short connect timeouts.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let info = ConnectionAddr::Tcp(endpoint.address.to_string(), endpoint.port)
        .into_connection_info()?
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_password(&endpoint.password)
                .set_skip_set_lib_name(),
        );
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
        Err(e) if e.code() == Some("LOADING") => return Readiness::Loading,
        Err(_) => return Readiness::NotAnswering,
    };
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
            .map(str::to_owned)
    };
    match field("process_id").and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) if pid != expected_pid => Readiness::Impostor(pid),
        None => Readiness::NotAnswering,
        Some(_) if field("loading").as_deref() == Some("1") => Readiness::Loading,
        Some(_) => Readiness::Ready,
    }
}

/// One multiplexed connection per instance, reused across requests.
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<(String, u16), MultiplexedConnection>>>,
}

/// A reply the way the wire carries it. Redis errors are values, not failures.
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

impl Connections {
    pub async fn run(
        &self,
        instance: &str,
        endpoint: &Endpoint,
        commands: &[Vec<Vec<u8>>],
    ) -> Result<Vec<Reply>, Error> {
        let key = (instance.to_owned(), endpoint.port);
        // Retry once on a fresh connection: the cached one may belong to a
        // process that has since been restarted.
        for attempt in 0..2 {
            let mut conn = self.get(&key, endpoint, attempt > 0).await?;
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
                Ok(values) => return Ok(values.into_iter().map(Reply::from).collect()),
                Err(e)
                    if attempt == 0
                        && (e.is_io_error()
                            || e.is_connection_dropped()
                            || e.is_unrecoverable_error()) =>
                {
                    self.inner.lock().await.remove(&key);
                }
                Err(e) => {
                    self.inner.lock().await.remove(&key);
                    return Err(Error::Redis {
                        instance: instance.to_owned(),
                        message: e.to_string(),
                    });
                }
            }
        }
        unreachable!("the second attempt always returns")
    }

    async fn get(
        &self,
        key: &(String, u16),
        endpoint: &Endpoint,
        fresh: bool,
    ) -> Result<MultiplexedConnection, Error> {
        let mut map = self.inner.lock().await;
        if !fresh && let Some(c) = map.get(key) {
            return Ok(c.clone());
        }
        let conn = connect(endpoint, RESPONSE_TIMEOUT)
            .await
            .map_err(|e| Error::Redis {
                instance: key.0.clone(),
                message: format!(
                    "not answering on {}:{}: {e}",
                    endpoint.address, endpoint.port
                ),
            })?;
        map.insert(key.clone(), conn.clone());
        Ok(conn)
    }
}

impl From<Value> for Reply {
    fn from(v: Value) -> Self {
        match v {
            Value::Nil => Reply::Nil,
            Value::Int(i) => Reply::Int(i),
            Value::BulkString(b) => Reply::Bulk(b),
            Value::Array(items) | Value::Set(items) => {
                Reply::Array(items.into_iter().map(Reply::from).collect())
            }
            Value::SimpleString(s) => Reply::Simple(s),
            Value::Okay => Reply::Simple("OK".into()),
            Value::Map(pairs) => Reply::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [Reply::from(k), Reply::from(v)])
                    .collect(),
            ),
            Value::Double(d) => Reply::Double(d),
            Value::Boolean(b) => Reply::Int(i64::from(b)),
            Value::VerbatimString { text, .. } => Reply::Bulk(text.into_bytes()),
            Value::ServerError(e) => Reply::Error(match e.details() {
                Some(d) => format!("{} {d}", e.code()),
                None => e.code().to_owned(),
            }),
            Value::Attribute { data, .. } => Reply::from(*data),
            Value::Push { data, .. } => Reply::Array(data.into_iter().map(Reply::from).collect()),
            Value::BigNumber(n) => Reply::Simple(format!("{n:?}")),
            _ => Reply::Error("unsupported reply type".into()),
        }
    }
}
