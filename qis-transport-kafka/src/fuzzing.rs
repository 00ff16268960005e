//! Entry points for fuzz targets (`cargo fuzz`): the parsing of records
//! read from the brokers, which anyone who can produce to the topic
//! controls. Not a stable API.

use qis_core::{Received, Subject, SubjectPattern};

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

/// Read a record with this key, `qis-subject` header and value as a
/// consumer of `pattern` under the prefix `qis.iot` does: the packet, if it
/// is one for that consumer.
pub fn read_record(
    key: Option<&[u8]>,
    subject_header: Option<&[u8]>,
    payload: Option<&[u8]>,
    pattern: &SubjectPattern,
) -> Option<Received> {
    let headers = [(crate::HEADER_SUBJECT, subject_header)];
    match decode_record(&Subject::default(), pattern, key, &headers, payload) {
        Decoded::Packet(received) => Some(received),
        Decoded::Other | Decoded::Malformed { .. } => None,
    }
}
