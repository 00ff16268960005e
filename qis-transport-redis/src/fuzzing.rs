//! The code that reads bytes from Redis, for fuzz targets and property
//! tests. Hidden from the docs and not a stable API: what the transport
//! itself runs on every reply, with entry points that take raw RESP bytes.
//!
//! A fuzz target needs nothing else:
//!
//! ```
//! use qis_transport_redis::fuzzing;
//!
//! fn fuzz_one(data: &[u8]) {
//!     // Never panics, whatever the bytes: Ok or a typed error.
//!     let _ = fuzzing::read_reply(data);
//!     let _ = fuzzing::deposit_reply(data, 3);
//!     let _ = fuzzing::trim_reply(data);
//!     let _ = fuzzing::backlog_reply(data);
//!     if let Ok(s) = std::str::from_utf8(data) {
//!         let _ = fuzzing::entry_id(s);
//!     }
//! }
//! fuzz_one(b"*1\r\n*2\r\n$11\r\nqis.iot:s:x\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$4\r\nbody\r\n$2\r\n{}\r\n");
//! ```

use qis_core::{Error, ErrorKind, Position, Received, Result};
use redis::Value;

use crate::consumer::{decode_raw, parse_entry_id, parse_read};
use crate::keys::Keys;
use crate::NAME;

pub use crate::deposit::Stored;
pub use crate::retention::Dropped;

/// The namespace [`read_reply`] decodes stream keys with: stream
/// `qis.iot:s:{subject}` holds `{subject}`.
pub const PREFIX: &str = "qis.iot";

/// One entry of a read reply, as the transport sees it.
#[derive(Debug)]
pub struct Entry {
    /// The stream key.
    pub stream: String,
    /// The entry id as Redis wrote it.
    pub id: String,
    /// The packet and its position, or why the entry is malformed (the
    /// transport logs, counts and acks such entries away).
    pub decoded: Result<(Received, Position)>,
}

/// RESP bytes (one reply) as a [`redis::Value`], with the `redis` crate's
/// parser.
pub fn parse_resp(resp: &[u8]) -> Result<Value> {
    redis::parse_redis_value(resp)
        .map_err(|e| Error::new(ErrorKind::Backend, NAME, format!("not a RESP reply: {e}")))
}

/// An `XREADGROUP` reply (RESP2 arrays or a RESP3 map), each entry decoded
/// as a fetch decodes it.
pub fn read_value(v: Value) -> Result<Vec<Entry>> {
    let keys = Keys::new(PREFIX);
    Ok(parse_read(v, "fuzzing")?
        .into_iter()
        .map(|e| Entry {
            decoded: decode_raw(&keys, &e)
                .map(|(received, ms, seq)| (received, Position::StreamId { ms, seq })),
            stream: e.stream.to_string(),
            id: e.entry,
        })
        .collect())
}

/// [`read_value`] of RESP bytes: the whole path of a fetched reply.
pub fn read_reply(resp: &[u8]) -> Result<Vec<Entry>> {
    read_value(parse_resp(resp)?)
}

/// The deposit script's reply for `packets` packets (RESP bytes).
pub fn deposit_reply(resp: &[u8], packets: usize) -> Result<(Vec<Stored>, Vec<Dropped>)> {
    crate::deposit::parse_deposit_reply(&parse_resp(resp)?, packets)
}

/// The trim script's reply (RESP bytes): entries removed, deliveries
/// dropped before they were acked, subjects deleted.
pub fn trim_reply(resp: &[u8]) -> Result<(u64, Vec<Dropped>, Vec<String>)> {
    crate::retention::parse_trim_reply(&parse_resp(resp)?)
}

/// The backlog script's reply (RESP bytes): waiting, unacked.
pub fn backlog_reply(resp: &[u8]) -> Result<(u64, u64)> {
    crate::consumer::parse_backlog(&parse_resp(resp)?)
}

/// A stream entry id `ms-seq`.
pub fn entry_id(s: &str) -> Option<Position> {
    parse_entry_id(s)
}

/// Everything above on one input, for a fuzz target: the RESP parser, each
/// script reply reader, and the key, entry-id and error readers on every
/// value nested in the reply. Never panics.
pub fn reply(bytes: &[u8]) {
    let _ = read_reply(bytes);
    let _ = deposit_reply(bytes, 3);
    let _ = trim_reply(bytes);
    let _ = backlog_reply(bytes);
    if let Ok(v) = parse_resp(bytes) {
        walk(&Keys::new(PREFIX), &v, 0);
    }
}

fn walk(keys: &Keys, v: &Value, depth: usize) {
    if depth > 64 {
        return;
    }
    if let Some(s) = crate::consumer::value_str(v) {
        let _ = parse_entry_id(s);
        let _ = keys.subject_of(s);
    }
    let _ = crate::error::unexpected("reading a fuzzed reply", v);
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(items) | Value::Set(items) => Box::new(items.iter()),
        Value::Map(pairs) => Box::new(pairs.iter().flat_map(|(k, v)| [k, v])),
        Value::Attribute { data, .. } => Box::new(std::iter::once(&**data)),
        Value::Push { data, .. } => Box::new(data.iter()),
        _ => Box::new(std::iter::empty()),
    };
    for child in children {
        walk(keys, child, depth + 1);
    }
}
