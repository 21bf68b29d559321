//! The file format: serde structs that mirror the TOML (keeping every
//! value's span), and a table-driven structural check that runs first.
//!
//! Why both: serde stops at the first unknown key or wrong type, but an
//! operator with three typos should hear about all three at once. So
//! [`check_structure`] walks the parsed TOML against [`ROOT`] and reports
//! every unknown key, wrong type and missing required key. Only a document
//! that passes it is handed to serde (`deny_unknown_fields` stays on as a
//! backstop). A unit test keeps the two descriptions in step.
//!
//! Numbers are read as `i64` and strings as `String` on purpose: ranges,
//! patterns and enum spellings are checked in `validate`, where all such
//! problems can be reported together with a hint.

use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::Report;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInventory {
    pub deployment: Spanned<RawDeployment>,
    pub redis: Option<Spanned<RawRedis>>,
    pub sentinel: Option<Spanned<RawSentinel>>,
    pub supervision: Option<Spanned<RawSupervision>>,
    pub hosts: Spanned<Vec<Spanned<RawHost>>>,
    pub users: Option<Vec<Spanned<RawUser>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeployment {
    pub name: Spanned<String>,
    pub topology: Spanned<String>,
    pub masters: Option<Spanned<i64>>,
    pub replicas_per_master: Option<Spanned<i64>>,
    pub password_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub port: Option<Spanned<i64>>,
    pub maxmemory: Option<Spanned<RawSize>>,
    pub maxmemory_policy: Option<Spanned<String>>,
    pub appendonly: Option<bool>,
    pub rdb_snapshots: Option<bool>,
    pub cluster_node_timeout_ms: Option<Spanned<i64>>,
    pub min_replicas_to_write: Option<Spanned<i64>>,
    pub min_replicas_max_lag_s: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSentinel {
    pub count: Option<Spanned<i64>>,
    pub quorum: Option<Spanned<i64>>,
    pub port: Option<Spanned<i64>>,
    pub down_after_ms: Option<Spanned<i64>>,
    pub failover_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSupervision {
    pub start_timeout_ms: Option<Spanned<i64>>,
    pub start_retries: Option<Spanned<i64>>,
    pub backoff_max_ms: Option<Spanned<i64>>,
    pub stop_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub agent_port: Option<Spanned<i64>>,
    pub zone: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub name: Spanned<String>,
    pub rules: Spanned<String>,
}

/// `maxmemory` as written: a byte count or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer or a string such as \"256mb\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// What a value must look like.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    IntOrStr,
    Table(&'static TableSchema),
    /// An array of tables: `[[hosts]]` sections or `hosts = [{...}]`.
    Tables(&'static TableSchema),
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Bool => "a boolean (true or false)",
            Kind::IntOrStr => "an integer or a string",
            Kind::Table(_) => "a table",
            Kind::Tables(_) => "an array of tables",
        }
    }

    fn accepts(self, value: &DeValue<'_>) -> bool {
        matches!(
            (self, value),
            (Kind::Str, DeValue::String(_))
                | (Kind::Int, DeValue::Integer(_))
                | (Kind::Bool, DeValue::Boolean(_))
                | (Kind::IntOrStr, DeValue::Integer(_) | DeValue::String(_))
                | (Kind::Table(_), DeValue::Table(_))
                | (Kind::Tables(_), DeValue::Array(_))
        )
    }
}

#[derive(Debug)]
pub(crate) struct Field {
    pub key: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Shown when the key is missing or has the wrong type.
    pub hint: &'static str,
}

#[derive(Debug)]
pub(crate) struct TableSchema {
    /// How messages name the table: "in [redis]", "at top level".
    pub context: &'static str,
    pub top_level: bool,
    pub fields: &'static [Field],
}

impl TableSchema {
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.fields.iter().map(|f| f.key)
    }
}

const fn field(key: &'static str, kind: Kind, required: bool, hint: &'static str) -> Field {
    Field {
        key,
        kind,
        required,
        hint,
    }
}

pub(crate) const ROOT: TableSchema = TableSchema {
    context: "at top level",
    top_level: true,
    fields: &[
        field(
            "deployment",
            Kind::Table(&DEPLOYMENT),
            true,
            "add a [deployment] table with at least `name` and `topology`",
        ),
        field(
            "redis",
            Kind::Table(&REDIS),
            false,
            "write it as a [redis] table",
        ),
        field(
            "sentinel",
            Kind::Table(&SENTINEL),
            false,
            "write it as a [sentinel] table",
        ),
        field(
            "supervision",
            Kind::Table(&SUPERVISION),
            false,
            "write it as a [supervision] table",
        ),
        field(
            "hosts",
            Kind::Tables(&HOST),
            true,
            "add one [[hosts]] table with `name` and `address` per machine",
        ),
        field(
            "users",
            Kind::Tables(&USER),
            false,
            "add one [[users]] table with `name` and `rules` per Redis ACL user",
        ),
    ],
};

pub(crate) const DEPLOYMENT: TableSchema = TableSchema {
    context: "in [deployment]",
    top_level: false,
    fields: &[
        field("name", Kind::Str, true, "for example: name = \"lab\""),
        field(
            "topology",
            Kind::Str,
            true,
            "for example: topology = \"cluster\" (one of: cluster, replication, sentinel)",
        ),
        field("masters", Kind::Int, false, "for example: masters = 3"),
        field(
            "replicas_per_master",
            Kind::Int,
            false,
            "for example: replicas_per_master = 1",
        ),
        field(
            "password_file",
            Kind::Str,
            false,
            "for example: password_file = \"secrets/lab.redis-password\"",
        ),
    ],
};

pub(crate) const REDIS: TableSchema = TableSchema {
    context: "in [redis]",
    top_level: false,
    fields: &[
        field("port", Kind::Int, false, "for example: port = 7000"),
        field(
            "maxmemory",
            Kind::IntOrStr,
            false,
            "for example: maxmemory = \"256mb\"",
        ),
        field(
            "maxmemory_policy",
            Kind::Str,
            false,
            "for example: maxmemory_policy = \"allkeys-lru\"",
        ),
        field(
            "appendonly",
            Kind::Bool,
            false,
            "for example: appendonly = true",
        ),
        field(
            "rdb_snapshots",
            Kind::Bool,
            false,
            "for example: rdb_snapshots = true",
        ),
        field(
            "cluster_node_timeout_ms",
            Kind::Int,
            false,
            "for example: cluster_node_timeout_ms = 5000",
        ),
        field(
            "min_replicas_to_write",
            Kind::Int,
            false,
            "for example: min_replicas_to_write = 1",
        ),
        field(
            "min_replicas_max_lag_s",
            Kind::Int,
            false,
            "for example: min_replicas_max_lag_s = 10",
        ),
    ],
};

pub(crate) const SENTINEL: TableSchema = TableSchema {
    context: "in [sentinel]",
    top_level: false,
    fields: &[
        field("count", Kind::Int, false, "for example: count = 3"),
        field("quorum", Kind::Int, false, "for example: quorum = 2"),
        field("port", Kind::Int, false, "for example: port = 26379"),
        field(
            "down_after_ms",
            Kind::Int,
            false,
            "for example: down_after_ms = 5000",
        ),
        field(
            "failover_timeout_ms",
            Kind::Int,
            false,
            "for example: failover_timeout_ms = 60000",
        ),
    ],
};

pub(crate) const SUPERVISION: TableSchema = TableSchema {
    context: "in [supervision]",
    top_level: false,
    fields: &[
        field(
            "start_timeout_ms",
            Kind::Int,
            false,
            "for example: start_timeout_ms = 60000",
        ),
        field(
            "start_retries",
            Kind::Int,
            false,
            "for example: start_retries = 10",
        ),
        field(
            "backoff_max_ms",
            Kind::Int,
            false,
            "for example: backoff_max_ms = 5000",
        ),
        field(
            "stop_timeout_ms",
            Kind::Int,
            false,
            "for example: stop_timeout_ms = 10000",
        ),
    ],
};

pub(crate) const HOST: TableSchema = TableSchema {
    context: "in [[hosts]]",
    top_level: false,
    fields: &[
        field("name", Kind::Str, true, "for example: name = \"redis1\""),
        field(
            "address",
            Kind::Str,
            true,
            "for example: address = \"192.168.56.11\"",
        ),
        field(
            "agent_port",
            Kind::Int,
            false,
            "for example: agent_port = 7443",
        ),
        field("zone", Kind::Str, false, "for example: zone = \"rack-a\""),
    ],
};

pub(crate) const USER: TableSchema = TableSchema {
    context: "in [[users]]",
    top_level: false,
    fields: &[
        field("name", Kind::Str, true, "for example: name = \"app\""),
        field(
            "rules",
            Kind::Str,
            true,
            "for example: rules = \"~app:* +@read +@write -@dangerous\"",
        ),
    ],
};

/// Reports every unknown key, wrong type and missing required key in the
/// document. `root_span` locates "missing" errors for the top level.
pub(crate) fn check_structure(root: &Spanned<DeTable<'_>>, report: &mut Report<'_>) {
    check_table(root.get_ref(), root.span().start, &ROOT, report);
}

fn check_table(table: &DeTable<'_>, header: usize, schema: &TableSchema, report: &mut Report<'_>) {
    for (key, value) in table {
        let name: &str = key.get_ref();
        match schema.fields.iter().find(|f| f.key == name) {
            Some(field) => check_value(field, schema, value, report),
            None => report.error(
                key.span().start,
                match value.get_ref() {
                    // At top level, people think of `[redsi]` as a table.
                    DeValue::Table(_) if schema.top_level => {
                        format!("unknown table [{name}]")
                    }
                    _ => format!("unknown key `{name}` {}", schema.context),
                },
                format!(
                    "expected one of: {}",
                    schema.keys().collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
    for field in schema.fields.iter().filter(|f| f.required) {
        if table.get(field.key).is_none() {
            let what = match field.kind {
                Kind::Table(_) => format!("missing required table [{}]", field.key),
                Kind::Tables(_) => format!("missing required [[{}]] tables", field.key),
                _ => format!("missing required key `{}` {}", field.key, schema.context),
            };
            report.error(header, what, field.hint);
        }
    }
}

fn check_value(
    field: &Field,
    schema: &TableSchema,
    value: &Spanned<DeValue<'_>>,
    report: &mut Report<'_>,
) {
    let inner = value.get_ref();
    if !field.kind.accepts(inner) {
        report.error(
            value.span().start,
            format!(
                "`{}` {} must be {}, found {}",
                field.key,
                schema.context,
                field.kind.describe(),
                with_article(inner.type_str())
            ),
            field.hint,
        );
        return;
    }
    match (field.kind, inner) {
        (_, DeValue::Integer(int)) if i64::from_str_radix(int.as_str(), int.radix()).is_err() => {
            report.error(
                value.span().start,
                format!("`{}` {} is too large: {int}", field.key, schema.context),
                field.hint,
            );
        }
        (Kind::Table(sub), DeValue::Table(table)) => {
            check_table(table, value.span().start, sub, report);
        }
        (Kind::Tables(sub), DeValue::Array(items)) => {
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::Table(table) => check_table(table, item.span().start, sub, report),
                    other => report.error(
                        item.span().start,
                        format!(
                            "each entry of `{}` must be a table, found {}",
                            field.key,
                            with_article(other.type_str())
                        ),
                        field.hint,
                    ),
                }
            }
        }
        _ => {}
    }
}

fn with_article(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde's `deny_unknown_fields` lists the fields a struct accepts;
    /// they must be exactly the keys of the matching schema table.
    fn serde_fields<T: for<'de> Deserialize<'de> + std::fmt::Debug>() -> Vec<String> {
        let err = toml::from_str::<T>("zzz_not_a_key = 1").unwrap_err();
        let message = err.message();
        // serde writes "expected `a`", "expected `a` or `b`" or
        // "expected one of `a`, `b`, `c`".
        let list = message
            .split_once("expected one of ")
            .or_else(|| message.split_once("expected "))
            .map(|(_, list)| list)
            .unwrap_or_else(|| panic!("unexpected serde message: {message}"));
        list.split(", ")
            .flat_map(|s| s.split(" or "))
            .map(|s| s.trim_matches('`').to_owned())
            .collect()
    }

    fn schema_keys(schema: &TableSchema) -> Vec<String> {
        schema.keys().map(str::to_owned).collect()
    }

    #[test]
    fn schema_matches_serde_structs() {
        assert_eq!(serde_fields::<RawInventory>(), schema_keys(&ROOT));
        assert_eq!(serde_fields::<RawDeployment>(), schema_keys(&DEPLOYMENT));
        assert_eq!(serde_fields::<RawRedis>(), schema_keys(&REDIS));
        assert_eq!(serde_fields::<RawSentinel>(), schema_keys(&SENTINEL));
        assert_eq!(serde_fields::<RawSupervision>(), schema_keys(&SUPERVISION));
        assert_eq!(serde_fields::<RawHost>(), schema_keys(&HOST));
        assert_eq!(serde_fields::<RawUser>(), schema_keys(&USER));
    }

    #[test]
    fn articles() {
        assert_eq!(with_article("integer"), "an integer");
        assert_eq!(with_article("string"), "a string");
        assert_eq!(with_article("array"), "an array");
    }
}
