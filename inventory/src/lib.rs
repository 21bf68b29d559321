//! The Paddock inventory: one TOML file naming the machines and the Redis
//! topology to run on them.
//!
//! This crate turns the text of that file into a validated [`Inventory`]
//! ([`parse`]) and computes which instance runs where ([`place`]). It does
//! no IO: the caller reads the file and passes its text and a name to use in
//! messages.
//!
//! Validation reports every problem at once, each as a [`Diagnostic`] with
//! file, line, column and a hint on how to fix it:
//!
//! ```text
//! inventory.toml:12:1: error: unknown key `prot` in [redis]
//!   hint: expected one of: port, maxmemory, maxmemory_policy, appendonly, rdb_snapshots, cluster_node_timeout_ms, min_replicas_to_write, min_replicas_max_lag_s
//! ```
//!
//! It runs in three stages, each needing the previous one to succeed:
//! 1. TOML syntax (one error: after a syntax error nothing else is reliable);
//! 2. structure: unknown keys, wrong types, missing required keys (all);
//! 3. meaning: names, ranges, duplicates, injection-prone characters,
//!    placement feasibility and port clashes (all).
//!
//! See `examples/*.toml` for commented inventories of every topology.
//!
//! ```
//! let text = r#"
//! [deployment]
//! name = "lab"
//! topology = "replication"
//!
//! [[hosts]]
//! name = "a"
//! address = "10.0.0.1"
//!
//! [[hosts]]
//! name = "b"
//! address = "10.0.0.2"
//! "#;
//! let inventory = paddock_inventory::parse("inventory.toml", text).unwrap();
//! let placement = paddock_inventory::place(&inventory);
//! let names: Vec<_> = placement.instances.iter().map(|i| (i.host, i.name.as_str())).collect();
//! assert_eq!(names, [(0, "redis-7000"), (1, "redis-7000")]);
//! ```

mod acl;
mod diagnostic;
mod keeping;
mod model;
mod placement;
mod schema;
mod span;
mod validate;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use keeping::{Existing, place_keeping};
pub use model::{
    Deployment, Host, Inventory, MaxmemoryPolicy, RedisSettings, SentinelSettings, Supervision,
    Topology, User,
};
pub use placement::{
    FatalHostLoss, FatalZoneLoss, PlacedInstance, Placement, Role, ShardInOneZone, loss_is_fatal,
    master_limit, place,
};
pub use validate::{Warning, warnings};

use serde::Deserialize;

use diagnostic::Report;
use schema::RawInventory;

/// Parses and validates the bytes of an inventory file: like [`parse`],
/// but a file that is not UTF-8 gets the line and column of its first bad
/// byte instead of a bare read error.
///
/// # Errors
///
/// As [`parse`]; for bad UTF-8, that one problem.
pub fn parse_bytes(source_name: &str, bytes: &[u8]) -> Result<Inventory, Diagnostics> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(source_name, text),
        Err(e) => {
            // Positions are counted in the valid part before the bad byte.
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let mut report = Report::new(source_name, valid);
            report.error(
                valid.len(),
                format!(
                    "the file is not UTF-8: byte 0x{:02x} at offset {} is not valid UTF-8",
                    bytes[e.valid_up_to()],
                    e.valid_up_to()
                ),
                "save the inventory as UTF-8 (TOML files must be UTF-8)",
            );
            Err(report.finish())
        }
    }
}

/// Parses and validates the text of an inventory file.
///
/// `source_name` is only used in diagnostics (e.g. `"inventory.toml"`).
/// On success, [`place`] is guaranteed to find a valid placement.
///
/// # Errors
///
/// Every problem found, each with its position and a fix hint: a TOML
/// syntax error alone; otherwise all structural problems (unknown keys,
/// wrong types, missing keys); otherwise all semantic ones.
pub fn parse(source_name: &str, text: &str) -> Result<Inventory, Diagnostics> {
    let mut report = Report::new(source_name, text);

    let document = match toml::de::DeTable::parse(text) {
        Ok(document) => document,
        Err(err) => {
            let hint = if err.message().starts_with("duplicate key") {
                "each key may appear only once in a table"
            } else {
                "fix the TOML syntax here: strings need quotes, tables are written [name] or [[hosts]]"
            };
            let at = err.span().map_or(0, |s| s.start);
            report.error(at, format!("invalid TOML: {}", err.message()), hint);
            return Err(report.finish());
        }
    };

    schema::check_structure(&document, &mut report);
    if report.has_errors() {
        return Err(report.finish());
    }

    // The structural check mirrors these serde types, so this should not
    // fail; if it does (say, an integer too large for i64), say so plainly.
    let raw = match RawInventory::deserialize(toml::de::Deserializer::from(document)) {
        Ok(raw) => raw,
        Err(err) => {
            let at = err.span().map_or(0, |s| s.start);
            report.error(
                at,
                err.message().to_owned(),
                "see examples/*.toml for the expected format",
            );
            return Err(report.finish());
        }
    };

    match validate::validate(&raw, &mut report) {
        Some(inventory) if !report.has_errors() => Ok(inventory),
        _ => {
            if !report.has_errors() {
                // Defensive: a check returned "invalid" without saying why.
                report.error(
                    0,
                    "the inventory is invalid",
                    "this is a bug in paddock-inventory; please report it with the file",
                );
            }
            Err(report.finish())
        }
    }
}
