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

/// The hex SHA-256 of a DUMP payload without its trailer. A set or hash
/// stored as a hash table dumps in the table's order, which depends on the
/// process's random hash seed: the same value dumps differently on two
/// nodes. Those are digested as the sorted digests of their elements
/// (strings decoded: integers as text, LZF uncompressed); anything else,
/// or a payload that does not parse, as its bytes.
pub fn value_digest(payload: &[u8]) -> String {
    let body = &payload[..payload.len().saturating_sub(DUMP_TRAILER)];
    let sum = match unordered(body) {
        Some(mut elements) => {
            elements.sort_unstable();
            let mut all = vec![body[0]];
            for e in elements {
                all.extend_from_slice(&e);
            }
            digest(&SHA256, &all)
        }
        None => digest(&SHA256, body),
    };
    hex(sum.as_ref())
}

/// RDB object types whose dump order is a hash table's.
const RDB_TYPE_SET: u8 = 2;
const RDB_TYPE_HASH: u8 = 4;

/// The per-element digests of a hash-table set (members) or hash (field
/// and value pairs); None for any other type or a malformed payload.
fn unordered(body: &[u8]) -> Option<Vec<[u8; 32]>> {
    let (&kind, rest) = body.split_first()?;
    let per = match kind {
        RDB_TYPE_SET => 1,
        RDB_TYPE_HASH => 2,
        _ => return None,
    };
    let mut r = Reader { data: rest, pos: 0 };
    let (n, false) = r.length()? else {
        return None;
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let mut element = Vec::new();
        for _ in 0..per {
            let s = r.string()?;
            // Length-prefixed, so field|value splits cannot collide.
            element.extend_from_slice(&(s.len() as u64).to_le_bytes());
            element.extend_from_slice(&s);
        }
        let d = digest(&SHA256, &element);
        out.push(d.as_ref().try_into().ok()?);
    }
    (r.pos == rest.len()).then_some(out)
}

/// Reads RDB lengths and strings; every read is bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A length, or (true) a special string encoding's number.
    fn length(&mut self) -> Option<(u64, bool)> {
        let b = self.byte()?;
        match b >> 6 {
            0 => Some((u64::from(b & 0x3f), false)),
            1 => Some(((u64::from(b & 0x3f) << 8) | u64::from(self.byte()?), false)),
            2 if b == 0x80 => Some((
                u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
                false,
            )),
            2 if b == 0x81 => Some((u64::from_be_bytes(self.take(8)?.try_into().ok()?), false)),
            3 => Some((u64::from(b & 0x3f), true)),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        match self.length()? {
            (n, false) => Some(self.take(usize::try_from(n).ok()?)?.to_vec()),
            (0, true) => Some((self.byte()? as i8).to_string().into_bytes()),
            (1, true) => Some(
                i16::from_le_bytes(self.take(2)?.try_into().ok()?)
                    .to_string()
                    .into_bytes(),
            ),
            (2, true) => Some(
                i32::from_le_bytes(self.take(4)?.try_into().ok()?)
                    .to_string()
                    .into_bytes(),
            ),
            (3, true) => {
                let (clen, false) = self.length()? else {
                    return None;
                };
                let (ulen, false) = self.length()? else {
                    return None;
                };
                let packed = self.take(usize::try_from(clen).ok()?)?;
                lzf_decompress(packed, usize::try_from(ulen).ok()?)
            }
            _ => None,
        }
    }
}

/// LZF (liblzf's format, as Redis writes it): a control byte below 32 is a
/// run of that many plus one literal bytes; otherwise a back reference.
fn lzf_decompress(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(out_len.min(1 << 20));
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let lit = input.get(i..i + ctrl + 1)?;
            out.extend_from_slice(lit);
            i += ctrl + 1;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i)?);
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            let start = out.len().checked_sub(back)?;
            for k in 0..len + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > out_len {
            return None;
        }
    }
    (out.len() == out_len).then_some(out)
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

    const TRAILER: &[u8] = b"\x0a\x00CRC64CRC";

    fn payload(parts: &[&[u8]]) -> Vec<u8> {
        let mut p = parts.concat();
        p.extend_from_slice(TRAILER);
        p
    }

    /// Hash-table sets and hashes digest the same in any order, with
    /// members stored as integers, plain or LZF-compressed strings.
    #[test]
    fn unordered_types_digest_by_content() {
        // {"a", "b"} in two orders.
        let ab = payload(&[&[2, 2], b"\x01a", b"\x01b"]);
        let ba = payload(&[&[2, 2], b"\x01b", b"\x01a"]);
        assert_eq!(value_digest(&ab), value_digest(&ba));
        let ac = payload(&[&[2, 2], b"\x01a", b"\x01c"]);
        assert_ne!(value_digest(&ab), value_digest(&ac));
        // A member as int8 (0xc0) reads as its text.
        let int = payload(&[&[2, 1], &[0xc0, 7]]);
        let text = payload(&[&[2, 1], b"\x017"]);
        assert_eq!(value_digest(&int), value_digest(&text));
        // int16 and int32, little-endian.
        let i16v = payload(&[&[2, 1], &[0xc1, 0x39, 0x30]]);
        assert_eq!(
            value_digest(&i16v),
            value_digest(&payload(&[&[2, 1], b"\x0512345"]))
        );
        let i32v = payload(&[&[2, 1], &[0xc2, 0x40, 0xe2, 0x01, 0x00]]);
        assert_eq!(
            value_digest(&i32v),
            value_digest(&payload(&[&[2, 1], b"\x06123456"]))
        );
        // "abcabcabc" LZF-compressed: 3 literals, then 6 bytes from 3 back.
        let lzf = payload(&[&[2, 1], &[0xc3, 6, 9], &[2, b'a', b'b', b'c', 0x80, 2]]);
        let plain = payload(&[&[2, 1], b"\x09abcabcabc"]);
        assert_eq!(value_digest(&lzf), value_digest(&plain));
        // A hash: pairs, in any order; field|value boundaries matter.
        let h1 = payload(&[&[4, 2], b"\x01f\x01x", b"\x01g\x01y"]);
        let h2 = payload(&[&[4, 2], b"\x01g\x01y", b"\x01f\x01x"]);
        assert_eq!(value_digest(&h1), value_digest(&h2));
        let h3 = payload(&[&[4, 2], b"\x02fx\x00", b"\x01g\x01y"]);
        assert_ne!(value_digest(&h1), value_digest(&h3));
        // A set and a hash with the same bytes differ.
        let s2 = payload(&[&[2, 4], b"\x01f\x01x", b"\x01g\x01y"]);
        assert_ne!(value_digest(&h1), value_digest(&s2));
    }

    /// Anything that does not parse is digested as bytes, never panics.
    #[test]
    fn malformed_payloads_fall_back_to_bytes() {
        for p in [
            payload(&[&[2, 3], b"\x01a"]),
            payload(&[&[2, 1], b"\x05a"]),
            payload(&[&[2, 1], b"\x01a", b"extra"]),
            payload(&[&[2, 1], &[0xc3, 6, 9], &[2, b'a']]),
            payload(&[&[2, 1], &[0xc3, 2, 9], &[0x80, 5]]),
            payload(&[&[2, 0xc0]]),
            payload(&[&[2]]),
        ] {
            let body = &p[..p.len() - DUMP_TRAILER];
            assert_eq!(
                value_digest(&p),
                hex(digest(&SHA256, body).as_ref()),
                "{p:?}"
            );
        }
        assert_eq!(lzf_decompress(&[0x20, 0], 3), None);
    }
}
