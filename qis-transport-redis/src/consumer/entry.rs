//! Stream entries as Redis returns them, and the packets in them.

use qis_core::{Error, ErrorKind, OutcomePacket, PacketId, Position, Received, Result};
use redis::Value;

use crate::error::unexpected;
use crate::NAME;

/// One entry as read from Redis, not yet decoded.
pub(super) struct RawEntry {
    pub(super) stream: String,
    pub(super) entry: String,
    pub(super) fields: Value,
    pub(super) count: u32,
}

/// Parse a stream entry id `ms-seq`.
pub(crate) fn parse_entry_id(s: &str) -> Option<Position> {
    let (ms, seq) = s.split_once('-')?;
    Some(Position::StreamId {
        ms: ms.parse().ok()?,
        seq: seq.parse().ok()?,
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

pub(super) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => value_str(other).and_then(|s| s.parse().ok()),
    }
}

/// Parse an `XREADGROUP` reply (RESP2 arrays or RESP3 maps).
pub(super) fn parse_read(v: Value, doing: &str) -> Result<Vec<RawEntry>> {
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
        let stream = value_str(&key)
            .ok_or_else(|| unexpected(doing, &key))?
            .to_string();
        let Value::Array(entries) = entries else {
            continue;
        };
        for e in entries {
            let Value::Array(mut parts) = e else {
                return Err(unexpected(doing, &e));
            };
            if parts.len() != 2 {
                return Err(unexpected(doing, &Value::Array(parts)));
            }
            let fields = parts.pop().unwrap_or(Value::Nil);
            let id = parts.pop().unwrap_or(Value::Nil);
            let entry = value_str(&id)
                .ok_or_else(|| unexpected(doing, &id))?
                .to_string();
            out.push(RawEntry {
                stream: stream.clone(),
                entry,
                fields,
                count: 1,
            });
        }
    }
    Ok(out)
}

/// The `body` and `id` fields of an entry.
fn fields_of(fields: &Value) -> (Option<&[u8]>, Option<&[u8]>) {
    let pairs: Box<dyn Iterator<Item = (&Value, &Value)> + '_> = match fields {
        Value::Array(a) => Box::new(a.chunks_exact(2).map(|c| (&c[0], &c[1]))),
        Value::Map(m) => Box::new(m.iter().map(|(k, v)| (k, v))),
        _ => Box::new(std::iter::empty()),
    };
    let mut body = None;
    let mut id = None;
    for (k, v) in pairs {
        if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
            match k.as_slice() {
                b"body" => body = Some(v.as_slice()),
                b"id" => id = Some(v.as_slice()),
                _ => {}
            }
        }
    }
    (body, id)
}

/// Decode an entry's body; the packet id is the entry's `id` field when it
/// is one, else computed from the body.
pub(super) fn decode_entry(subject: &str, fields: &Value) -> Result<Received> {
    let (body, id) = fields_of(fields);
    let body = body.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidPacket,
            NAME,
            "stream entry has no body field",
        )
    })?;
    let packet = OutcomePacket::decode(body)?;
    let id = id
        .and_then(|i| std::str::from_utf8(i).ok())
        .and_then(|i| i.parse::<PacketId>().ok())
        .unwrap_or_else(|| PacketId::of(body));
    Ok(Received {
        subject: subject.to_string(),
        id,
        packet,
    })
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
    }
}
