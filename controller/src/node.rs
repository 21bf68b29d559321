//! A Redis instance the controller acts on through its agent's RedisCommand
//! RPC: the [`RedisNode`] the procedures of `paddock_knowledge` run over.

use paddock_knowledge::{RedisNode, Value};

use crate::Error;
use crate::client::{AgentClient, Reply};
use crate::fleet::{Fleet, Target};

#[derive(Clone)]
pub struct Node {
    client: AgentClient,
    instance: String,
    /// "host:instance", as `paddock status` names it (and [`error`] reads).
    label: String,
    /// Sends with `allow_dangerous` (REPLICAOF, SENTINEL FAILOVER, ...):
    /// only nodes made for a procedure that needs it.
    dangerous: bool,
}

impl Node {
    pub fn new(client: &AgentClient, host: &str, instance: &str) -> Self {
        Node {
            client: client.clone(),
            instance: instance.to_owned(),
            label: format!("{host}:{instance}"),
            dangerous: false,
        }
    }

    /// The instance of `t`, through its host's agent.
    pub fn of(fleet: &Fleet, t: &Target) -> Result<Self, Error> {
        Ok(Node::new(fleet.agent(t.host)?, &t.host_name, &t.instance))
    }

    /// The same node, allowed the commands the agent runs only when asked
    /// explicitly.
    pub fn dangerous(mut self) -> Self {
        self.dangerous = true;
        self
    }
}

/// The controller's error for `e`: a transport failure gives back the
/// controller's own error (so an agent that is down stays one), an error
/// reply is `Error::Redis` at the node it names ("host:instance", as
/// [`Node::name`] gives), a procedure that did not finish is NotConverged.
pub fn error(e: paddock_knowledge::Error) -> Error {
    use paddock_knowledge::Error as K;
    let at = |node: &str| {
        let (host, instance) = node.split_once(':').unwrap_or((node, ""));
        (host.to_owned(), instance.to_owned())
    };
    match e {
        K::Unreachable { source, node } => match source.downcast::<Error>() {
            Ok(e) => *e,
            Err(other) => {
                let (host, instance) = at(&node);
                Error::Redis {
                    host,
                    instance,
                    message: other.to_string(),
                }
            }
        },
        K::Reply {
            node,
            command,
            code,
            message,
        } => {
            let (host, instance) = at(&node);
            Error::Redis {
                host,
                instance,
                message: format!("{command}: {code} {message}"),
            }
        }
        K::NotDone(m) => Error::NotConverged(m),
        e @ K::Unexpected { .. } => Error::NotConverged(e.to_string()),
    }
}

impl RedisNode for Node {
    fn name(&self) -> String {
        self.label.clone()
    }

    async fn command(&self, args: &[&str]) -> Result<Value, paddock_knowledge::Error> {
        let commands: &[&[&str]] = &[args];
        let replies = if self.dangerous {
            self.client.redis_dangerous(&self.instance, commands).await
        } else {
            self.client.redis(&self.instance, commands).await
        }
        .map_err(|e| paddock_knowledge::Error::Unreachable {
            node: self.label.clone(),
            source: Box::new(e),
        })?;
        let reply = replies.into_iter().next().unwrap_or(Reply::Nil);
        value(reply)
            .map_err(|text| paddock_knowledge::Error::reply(&self.label, args.join(" "), &text))
    }
}

/// A reply as the knowledge crate's value; Err carries an error reply's text.
pub fn value(r: Reply) -> Result<Value, String> {
    Ok(match r {
        Reply::Nil => Value::Nil,
        Reply::Int(i) => Value::Int(i),
        Reply::Bulk(b) => Value::Bulk(b),
        Reply::Simple(s) => Value::Status(s),
        Reply::Error(e) => return Err(e),
        Reply::Array(items) => {
            Value::Array(items.into_iter().map(value).collect::<Result<_, _>>()?)
        }
        Reply::Double(d) => Value::Double(d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_is_an_error_wherever_it_is() {
        assert_eq!(value(Reply::Int(3)).unwrap(), Value::Int(3));
        assert_eq!(value(Reply::Error("ERR no".into())).unwrap_err(), "ERR no");
        let nested = Reply::Array(vec![
            Reply::Simple("OK".into()),
            Reply::Error("ERR x".into()),
        ]);
        assert!(value(nested).is_err());
    }

    #[test]
    fn errors_map_back_to_the_controllers() {
        let e = error(paddock_knowledge::Error::reply(
            "h1:i1",
            "REPLICAOF NO ONE",
            "ERR nope",
        ));
        assert!(
            matches!(&e, Error::Redis { host, instance, message } if host == "h1" && instance == "i1" && message == "REPLICAOF NO ONE: ERR nope"),
            "{e:?}"
        );
        let down = error(paddock_knowledge::Error::Unreachable {
            node: "h1:i1".into(),
            source: Box::new(Error::AgentDown("agent of h1 is down".into())),
        });
        assert!(matches!(down, Error::AgentDown(_)), "{down:?}");
    }
}
