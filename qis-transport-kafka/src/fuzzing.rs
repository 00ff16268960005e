//! Entry points for fuzz targets (`cargo fuzz`): the parsing of records
//! read from the brokers, which anyone who can produce to the topic
//! controls. Not a stable API.

use qis_core::{Subject, SubjectPattern};

pub use crate::record::Decoded;
use crate::record::{decode, RawRecord};

/// Read a record as a durable consumer or live subscription on `pattern`
/// under `prefix` does: `key`, `headers` (name, value; in order) and
/// `value` as the broker delivered them. Never panics.
pub fn decode_record(
    prefix: &Subject,
    pattern: &SubjectPattern,
    key: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
    value: Option<&[u8]>,
) -> Decoded {
    let record = RawRecord::from_parts(0, 0, key, || headers.iter().copied(), value);
    decode(prefix, pattern, &record)
}

/// [`decode_record`] on one byte string, for a target that takes raw
/// bytes: split at the first two `0xFF` bytes into key, `qis-subject`
/// header value and record value (a part that is missing is absent; an
/// empty key is no key). Read on the default prefix `qis.iot` by a
/// consumer of `qis.iot.>`.
pub fn decode_bytes(data: &[u8]) -> Decoded {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let key = parts.next().filter(|k| !k.is_empty());
    let header = parts.next();
    let value = parts.next();
    let prefix = Subject::default();
    let pattern = SubjectPattern::new(format!("{prefix}.>")).expect("a valid pattern");
    decode_record(
        &prefix,
        &pattern,
        key,
        &[(crate::HEADER_SUBJECT, header)],
        value,
    )
}
