//! Entry points for the fuzz targets in the repository's `fuzz/` directory:
//! not a public API, and not covered by semver.
//!
//! What a reply from Redis (or from something pretending to be Redis) goes
//! through: the `redis` crate's RESP parser, then this crate's readers of
//! stream keys, entry ids and strings, and the error that describes a reply
//! of an unexpected shape.

use redis::Value;

use crate::consumer::{parse_entry_id, value_str};
use crate::error::unexpected;
use crate::keys::Keys;

/// Parse `bytes` as a RESP reply and hand every value in it to the
/// crate's reply readers.
pub fn reply(bytes: &[u8]) {
    if let Ok(v) = redis::parse_redis_value(bytes) {
        let keys = Keys::new("qis.iot");
        walk(&keys, &v, 0);
    }
}

fn walk(keys: &Keys, v: &Value, depth: usize) {
    if depth > 64 {
        return;
    }
    if let Some(s) = value_str(v) {
        let _ = parse_entry_id(s);
        let _ = keys.subject_of(s);
    }
    let _ = unexpected("reading a fuzzed reply", v);
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
