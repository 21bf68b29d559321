//! "A Redis node I can act on": the one seam between the procedures and
//! whatever carries commands to Redis.

use std::future::Future;

use crate::{Error, Value};

pub trait RedisNode: Sync {
    /// How messages name the node ("host:instance", "10.0.0.1:6379").
    fn name(&self) -> String;

    /// Runs one command. A Redis error reply is `Err(Error::Reply)`.
    fn command(&self, args: &[&str]) -> impl Future<Output = Result<Value, Error>> + Send;

    /// Runs a command whose reply must be text (INFO, CLUSTER NODES).
    fn text(&self, args: &[&str]) -> impl Future<Output = Result<String, Error>> + Send {
        async move {
            let v = self.command(args).await?;
            v.text().ok_or_else(|| Error::Unexpected {
                node: self.name(),
                command: args.join(" "),
            })
        }
    }
}
