//! Entry points for the fuzz targets in the repository's `fuzz/` directory:
//! not a public API, and not covered by semver.

use qis_core::{Received, Subject, SubjectPattern};
use rusqlite::types::ValueRef;

use crate::row::Row;
use crate::scan::Scan;

/// A value of SQLite storage class `class % 5` (NULL, INTEGER, REAL, TEXT,
/// BLOB) made from `bytes`, as another program may have stored it.
fn value(class: u8, bytes: &[u8]) -> ValueRef<'_> {
    let mut eight = [0u8; 8];
    let n = bytes.len().min(8);
    eight[..n].copy_from_slice(&bytes[..n]);
    match class % 5 {
        0 => ValueRef::Null,
        1 => ValueRef::Integer(i64::from_le_bytes(eight)),
        2 => ValueRef::Real(f64::from_le_bytes(eight)),
        3 => ValueRef::Text(bytes),
        _ => ValueRef::Blob(bytes),
    }
}

/// Read a stored row whose subject and body are these values, as every
/// fetch and live subscription does, and match its subject against
/// `pattern` under the prefix `qis.iot` as a consumer does. Returns the
/// packet, or why the row is skipped.
pub fn read_row(
    subject_class: u8,
    subject: &[u8],
    body_class: u8,
    body: &[u8],
    pattern: &SubjectPattern,
) -> Result<Received, String> {
    let row = Row::read(1, value(subject_class, subject), value(body_class, body));
    let prefix = Subject::default();
    let _ = Scan::new(&prefix, pattern).matches(&row.subject);
    let _ = row.subject();
    row.decode()
}
