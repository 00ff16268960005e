//! Entry points for the fuzz targets in the repository's `fuzz/` directory:
//! not a public API, and not covered by semver.

use qis_core::{Received, Subject, SubjectPattern};

use crate::record::{decode, Decoded, RawRecord};

/// Read a record with this key, `qis-subject` header and value as a
/// consumer of `pattern` under the prefix `qis.iot` does. Returns the packet
/// if it is one for that consumer.
pub fn read_record(
    key: Option<&[u8]>,
    subject_header: Option<&[u8]>,
    payload: Option<&[u8]>,
    pattern: &SubjectPattern,
) -> Option<Received> {
    let record = RawRecord {
        partition: 0,
        offset: 0,
        key: key.map(<[u8]>::to_vec),
        subject_header: subject_header.map(<[u8]>::to_vec),
        payload: payload.map(<[u8]>::to_vec),
    };
    let _ = record.size();
    match decode(&Subject::default(), pattern, &record) {
        Decoded::Packet(received) => Some(received),
        Decoded::Other | Decoded::Malformed { .. } => None,
    }
}
