//! Stream entries as Redis returns them, and the packets in them.

use std::sync::Arc;

use qis_core::{Error, ErrorKind, Position, Received, Result};
use redis::Value;

use crate::error::unexpected;
use crate::keys::Keys;
use crate::NAME;

/// One entry as read from Redis, not yet decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEntry {
    /// The stream key, shared by the entries read from one stream.
    pub(crate) stream: Arc<str>,
    /// The entry id, as Redis wrote it (the reply's bytes, not a copy).
    pub(crate) entry: String,
    /// The entry's field/value list (an array, or a map in RESP3).
    pub(crate) fields: Value,
    /// Its delivery count (1 for a first delivery).
    pub(crate) count: u32,
}

/// Parse a stream entry id `ms-seq` (decimal digits only, each part within
/// `u64`). Every delivery's position is one: a byte loop, not `split_once`
/// and two `str::parse`.
pub(crate) fn parse_entry_id(s: &str) -> Option<Position> {
    fn number(digits: &[u8]) -> Option<u64> {
        if digits.is_empty() {
            return None;
        }
        digits.iter().try_fold(0u64, |n, &d| {
            if d.is_ascii_digit() {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            } else {
                None
            }
        })
    }
    let b = s.as_bytes();
    let dash = b.iter().position(|&c| c == b'-')?;
    Some(Position::StreamId {
        ms: number(&b[..dash])?,
        seq: number(&b[dash + 1..])?,
    })
}

/// A bulk or simple string reply as text.
pub(crate) fn value_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A bulk or simple string reply as an owned string, without copying.
fn into_string(v: Value) -> std::result::Result<String, Value> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|e| Value::BulkString(e.into_bytes())),
        Value::SimpleString(s) => Ok(s),
        other => Err(other),
    }
}

/// An integer reply, or a string holding one.
pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => value_str(other).and_then(|s| s.parse().ok()),
    }
}

/// Parse an `XREADGROUP` reply (RESP2 arrays or RESP3 maps).
pub(crate) fn parse_read(v: Value, doing: &str) -> Result<Vec<RawEntry>> {
    let streams: Vec<(Value, Value)> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for s in items {
                match s {
                    Value::Array(mut kv) if kv.len() == 2 => {
                        let entries = kv.pop().unwrap_or(Value::Nil);
                        let key = kv.pop().unwrap_or(Value::Nil);
                        out.push((key, entries));
                    }
                    other => return Err(unexpected(doing, &other)),
                }
            }
            out
        }
        Value::Map(kv) => kv,
        other => return Err(unexpected(doing, &other)),
    };
    let mut out = Vec::new();
    for (key, entries) in streams {
        // One allocation per stream: the entries share its key.
        let stream: Arc<str> = value_str(&key)
            .ok_or_else(|| unexpected(doing, &key))?
            .into();
        let Value::Array(entries) = entries else {
            continue;
        };
        out.reserve(entries.len());
        for e in entries {
            let Value::Array(mut parts) = e else {
                return Err(unexpected(doing, &e));
            };
            if parts.len() != 2 {
                return Err(unexpected(doing, &Value::Array(parts)));
            }
            let fields = parts.pop().unwrap_or(Value::Nil);
            let id = parts.pop().unwrap_or(Value::Nil);
            let entry = into_string(id).map_err(|id| unexpected(doing, &id))?;
            out.push(RawEntry {
                stream: Arc::clone(&stream),
                entry,
                fields,
                count: 1,
            });
        }
    }
    Ok(out)
}

/// The reply of the Lua look (`lua/fetch.lua`).
#[derive(Debug)]
pub(crate) struct Look {
    /// The subject-index version.
    pub(crate) version: i64,
    /// Ms until the next redelivery is due (`None`: unknown).
    pub(crate) due: Option<u64>,
    /// The consumer's ack wait in ms, as Redis keeps it.
    pub(crate) ack_wait: Option<u64>,
    /// The entries claimed and read.
    pub(crate) entries: Vec<RawEntry>,
}

/// Parse the reply of the Lua look.
pub(crate) fn parse_look(v: Value) -> Result<Look> {
    let doing = "fetch";
    let Value::Array(items) = v else {
        return Err(unexpected(doing, &v));
    };
    if items.len() < 3 || (items.len() - 3) % 4 != 0 {
        return Err(unexpected(doing, &Value::Array(items)));
    }
    let version = as_i64(&items[0]).ok_or_else(|| unexpected(doing, &items[0]))?;
    let due = as_i64(&items[1]).and_then(|d| u64::try_from(d).ok());
    let ack_wait = as_i64(&items[2]).and_then(|d| u64::try_from(d).ok());
    let mut out = Vec::with_capacity((items.len() - 3) / 4);
    let mut it = items.into_iter().skip(3);
    while let (Some(k), Some(id), Some(fields), Some(n)) =
        (it.next(), it.next(), it.next(), it.next())
    {
        let (Some(stream), Some(entry)) = (value_str(&k), value_str(&id)) else {
            return Err(unexpected(doing, &k));
        };
        out.push(RawEntry {
            stream: stream.into(),
            entry: entry.to_string(),
            fields,
            count: as_i64(&n)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1)
                .max(1),
        });
    }
    Ok(Look {
        version,
        due,
        ack_wait,
        entries: out,
    })
}

/// Decode a raw entry into the packet it holds and its entry id (ms,
/// seq); an error ([`ErrorKind::InvalidPacket`]) for a malformed one.
pub(crate) fn decode_raw(keys: &Keys, e: &RawEntry) -> Result<(Received, u64, u64)> {
    let subject = keys.subject_of(&e.stream).unwrap_or(&e.stream);
    let Some(Position::StreamId { ms, seq }) = parse_entry_id(&e.entry) else {
        return Err(Error::new(
            ErrorKind::InvalidPacket,
            NAME,
            format!("stream entry id {:?} is not ms-seq", e.entry),
        ));
    };
    Ok((decode_entry(subject, &e.fields)?, ms, seq))
}

/// The `body` and `id` fields of an entry.
fn fields_of(fields: &Value) -> (Option<&[u8]>, Option<&[u8]>) {
    fn take<'a>(k: &Value, v: &'a Value, body: &mut Option<&'a [u8]>, id: &mut Option<&'a [u8]>) {
        if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
            match k.as_slice() {
                b"body" => *body = Some(v.as_slice()),
                b"id" => *id = Some(v.as_slice()),
                _ => {}
            }
        }
    }
    let (mut body, mut id) = (None, None);
    match fields {
        Value::Array(a) => {
            for pair in a.chunks_exact(2) {
                take(&pair[0], &pair[1], &mut body, &mut id);
            }
        }
        Value::Map(m) => {
            for (k, v) in m {
                take(k, v, &mut body, &mut id);
            }
        }
        _ => {}
    }
    (body, id)
}

/// Decode an entry's body; the packet id is the entry's `id` field when it
/// is one, else computed from the body.
pub(crate) fn decode_entry(subject: &str, fields: &Value) -> Result<Received> {
    let (body, id) = fields_of(fields);
    let body = body.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidPacket,
            NAME,
            "stream entry has no body field",
        )
    })?;
    Received::decode_with_id(subject, body, id.and_then(|i| std::str::from_utf8(i).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids() {
        assert_eq!(
            parse_entry_id("1764000000000-7"),
            Some(Position::StreamId {
                ms: 1_764_000_000_000,
                seq: 7
            })
        );
        assert_eq!(parse_entry_id("x-1"), None);
        assert_eq!(parse_entry_id("17"), None);
        assert_eq!(parse_entry_id("1-"), None);
        assert_eq!(parse_entry_id("-1"), None);
        assert_eq!(parse_entry_id("1-2-3"), None);
        assert_eq!(parse_entry_id("18446744073709551616-0"), None);
        assert_eq!(
            parse_entry_id("18446744073709551615-0"),
            Some(Position::StreamId {
                ms: u64::MAX,
                seq: 0
            })
        );
    }
}
