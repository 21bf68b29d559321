//! ROLE.

use crate::{Addr, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master {
        offset: i64,
        /// Each replica's address and acknowledged offset.
        replicas: Vec<(Addr, i64)>,
    },
    Replica {
        master: Option<Addr>,
        /// `connect`, `connecting`, `sync`, `connected`...
        state: String,
        offset: i64,
    },
    Sentinel {
        masters: Vec<String>,
    },
}

impl Role {
    pub fn parse(v: &Value) -> Option<Role> {
        let items = v.array()?;
        let text = |i: usize| items.get(i).and_then(Value::text);
        let int = |i: usize| items.get(i).and_then(Value::int);
        match text(0)?.as_str() {
            "master" => Some(Role::Master {
                offset: int(1)?,
                replicas: items
                    .get(2)
                    .and_then(Value::array)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| {
                        let r = r.array()?;
                        Some((
                            Addr {
                                ip: r.first()?.text()?.parse().ok()?,
                                port: r.get(1)?.int()?.try_into().ok()?,
                            },
                            r.get(2)?.int()?,
                        ))
                    })
                    .collect(),
            }),
            "slave" => Some(Role::Replica {
                master: Some(Addr {
                    ip: text(1)?.parse().ok()?,
                    port: int(2)?.try_into().ok()?,
                })
                .filter(|a| a.port != 0),
                state: text(3)?,
                offset: int(4)?,
            }),
            "sentinel" => Some(Role::Sentinel {
                masters: items
                    .get(1)
                    .and_then(Value::array)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::text)
                    .collect(),
            }),
            _ => None,
        }
    }

    pub fn is_master(&self) -> bool {
        matches!(self, Role::Master { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_each_role() {
        let master = Value::Array(vec![
            b("master"),
            Value::Int(3129659),
            Value::Array(vec![Value::Array(vec![
                b("127.0.130.2"),
                b("9001"),
                b("3129242"),
            ])]),
        ]);
        let replica = Value::Array(vec![
            b("slave"),
            b("127.0.130.1"),
            Value::Int(9000),
            b("connected"),
            Value::Int(3167038),
        ]);
        let sentinel = Value::Array(vec![b("sentinel"), Value::Array(vec![b("lab")])]);
        let a = |last: u8, port: u16| Addr::new([127, 0, 130, last].into(), port);
        let table = [
            (
                master,
                Some(Role::Master {
                    offset: 3129659,
                    replicas: vec![(a(2, 9001), 3129242)],
                }),
            ),
            (
                replica,
                Some(Role::Replica {
                    master: Some(a(1, 9000)),
                    state: "connected".into(),
                    offset: 3167038,
                }),
            ),
            (
                sentinel,
                Some(Role::Sentinel {
                    masters: vec!["lab".into()],
                }),
            ),
            (Value::Nil, None),
            (Value::Array(vec![b("leader")]), None),
        ];
        for (v, want) in table {
            assert_eq!(Role::parse(&v), want, "{v:?}");
        }
    }
}
