//! The agent's part in a slot move: its own [`DIGEST_COMMAND`] (per key a
//! hash of the value, computed here from DUMP so values never leave the
//! agent) and the password it adds to MIGRATE (so it never crosses the
//! wire). The guard has already checked the commands; this only rewrites
//! them into what Redis runs and puts the replies back together.

use ring::digest::{SHA256, digest};

use crate::guard::{DIGEST_COMMAND, key_start};
use crate::redis_access::Reply;

/// DUMP's payload ends with the RDB version (2 bytes) and a CRC64 (8)
/// that covers it: two Redis versions dump equal values with different
/// trailers, so the digest leaves them out.
const DUMP_TRAILER: usize = 10;

/// How one checked command's replies come back from what Redis ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// One command, one reply.
    Plain,
    /// [`DIGEST_COMMAND`] of `keys` keys: ASKING + DUMP per key.
    Digest { keys: usize },
}

/// Whether a command is a MIGRATE, which the agent runs on a connection
/// that waits long enough for it.
pub fn is_migrate(args: &[Vec<u8>]) -> bool {
    args.first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"MIGRATE"))
}

/// The commands Redis runs for the checked `commands`: MIGRATE gets
/// `AUTH password` before its KEYS (the target is a member, which has the
/// same password); [`DIGEST_COMMAND`] becomes `ASKING` + `DUMP key` per
/// key (ASKING: on the target of a move the slot is still importing, and
/// a key there answers only to an asking client).
pub fn expand(commands: &[Vec<Vec<u8>>], password: &str) -> (Vec<Vec<Vec<u8>>>, Vec<Part>) {
    let mut run = Vec::new();
    let mut parts = Vec::new();
    for c in commands {
        let digest = c
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(DIGEST_COMMAND.as_bytes()));
        if digest {
            for k in &c[1..] {
                run.push(vec![b"ASKING".to_vec()]);
                run.push(vec![b"DUMP".to_vec(), k.clone()]);
            }
            parts.push(Part::Digest { keys: c.len() - 1 });
            continue;
        }
        let mut c = c.clone();
        if is_migrate(&c)
            && !password.is_empty()
            && let Some(keys) = key_start(&c)
        {
            c.splice(
                keys - 1..keys - 1,
                [b"AUTH".to_vec(), password.as_bytes().to_vec()],
            );
        }
        run.push(c);
        parts.push(Part::Plain);
    }
    (run, parts)
}

/// The replies of the checked commands from the replies of what ran.
pub fn assemble(parts: &[Part], replies: Vec<Reply>) -> Vec<Reply> {
    let mut replies = replies.into_iter();
    parts
        .iter()
        .map(|p| match p {
            Part::Plain => replies.next().unwrap_or(Reply::Nil),
            Part::Digest { keys } => {
                let mut out = Vec::with_capacity(*keys);
                let mut failed = None;
                for _ in 0..*keys {
                    let _asking = replies.next();
                    match key_digest(replies.next().unwrap_or(Reply::Nil)) {
                        Ok(d) => out.push(d),
                        Err(e) => failed = failed.or(Some(e)),
                    }
                }
                failed.unwrap_or(Reply::Array(out))
            }
        })
        .collect()
}

/// One DUMP reply as its digest: nil for a missing key (ASK: the source of
/// a move redirects for a key it no longer has), an error as it came.
fn key_digest(r: Reply) -> Result<Reply, Reply> {
    match r {
        Reply::Nil => Ok(Reply::Nil),
        Reply::Bulk(payload) => Ok(Reply::Bulk(value_digest(&payload).into_bytes())),
        Reply::Error(e) if e.split(' ').next() == Some("ASK") => Ok(Reply::Nil),
        Reply::Error(e) => Err(Reply::Error(e)),
        other => Err(Reply::Error(format!(
            "ERR DUMP answered {other:?}, not a payload"
        ))),
    }
}

/// The hex SHA-256 of a DUMP payload without its trailer.
pub fn value_digest(payload: &[u8]) -> String {
    let body = &payload[..payload.len().saturating_sub(DUMP_TRAILER)];
    hex(digest(&SHA256, body).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn migrate_gets_the_password_before_its_keys_and_digests_become_dumps() {
        let commands = vec![
            cmd("MIGRATE 10.0.0.2 7000  0 1000 REPLACE KEYS a KEYS"),
            cmd("PADDOCK.DIGEST a b"),
            cmd("CLUSTER COUNTKEYSINSLOT 5"),
        ];
        let (run, parts) = expand(&commands, "secret-password-0123");
        assert_eq!(
            run,
            vec![
                cmd("MIGRATE 10.0.0.2 7000  0 1000 REPLACE AUTH secret-password-0123 KEYS a KEYS"),
                cmd("ASKING"),
                cmd("DUMP a"),
                cmd("ASKING"),
                cmd("DUMP b"),
                cmd("CLUSTER COUNTKEYSINSLOT 5"),
            ]
        );
        assert_eq!(
            parts,
            vec![Part::Plain, Part::Digest { keys: 2 }, Part::Plain]
        );
        // No password (the agent's own tests' Redis): nothing added.
        let (run, _) = expand(&commands[..1], "");
        assert_eq!(run[0], commands[0]);
    }

    #[test]
    fn replies_come_back_one_per_command() {
        let ok = || Reply::Simple("OK".into());
        let parts = [Part::Plain, Part::Digest { keys: 3 }, Part::Plain];
        let replies = vec![
            ok(),
            ok(),
            Reply::Bulk(b"\x00\x01vXXXXXXXXXX".to_vec()),
            ok(),
            Reply::Nil,
            ok(),
            Reply::Error("ASK 5 10.0.0.2:7000".into()),
            Reply::Int(7),
        ];
        let out = assemble(&parts, replies);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], ok());
        assert_eq!(
            out[1],
            Reply::Array(vec![
                Reply::Bulk(value_digest(b"\x00\x01vXXXXXXXXXX").into_bytes()),
                Reply::Nil,
                Reply::Nil,
            ])
        );
        assert_eq!(out[2], Reply::Int(7));
        // Any other error is the command's reply.
        let out = assemble(
            &[Part::Digest { keys: 1 }],
            vec![ok(), Reply::Error("MOVED 5 10.0.0.3:7000".into())],
        );
        assert_eq!(out, vec![Reply::Error("MOVED 5 10.0.0.3:7000".into())]);
    }

    #[test]
    fn digests_leave_out_the_trailer() {
        // Same value, different RDB version and CRC: same digest.
        assert_eq!(
            value_digest(b"\x00\x01v\x0b\x00AAAAAAAA"),
            value_digest(b"\x00\x01v\x0c\x00BBBBBBBB")
        );
        assert_ne!(
            value_digest(b"\x00\x01v\x0b\x00AAAAAAAA"),
            value_digest(b"\x00\x01w\x0b\x00AAAAAAAA")
        );
        assert_eq!(value_digest(b"").len(), 64);
    }
}
