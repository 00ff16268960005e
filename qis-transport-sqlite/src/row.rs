//! Reading a stored row, whoever wrote it.
//!
//! Other programs may write `qis_outcomes` with plain SQLite (see
//! [`schema`](crate::schema)), and SQLite does not enforce column types: a
//! Python `str` body is stored as TEXT, a `bytes` subject as a BLOB, and a C
//! writer can store TEXT that is not UTF-8. So a row is read by the storage
//! class of each value, never with a typed getter that would fail the whole
//! fetch: a TEXT body is read as its bytes (a packet is UTF-8 JSON either
//! way), and anything that cannot be a packet becomes a reason, so the row
//! is skipped and counted like any malformed message.

use std::borrow::Cow;

use qis_core::{PacketId, Received, Subject};
use rusqlite::types::ValueRef;

/// One stored row, read leniently. It borrows the subject and body from the
/// statement that read them (nothing is copied until a packet is decoded).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row<'a> {
    /// Its `seq`.
    pub(crate) seq: i64,
    /// Its subject as text (lossily decoded if it was not UTF-8 TEXT), for
    /// matching against a pattern and for log lines.
    pub(crate) subject: Cow<'a, str>,
    /// Whether the subject was UTF-8 TEXT (read as it is).
    subject_readable: bool,
    /// The body bytes, or why the row cannot hold a packet.
    content: Result<&'a [u8], String>,
    /// The packet id stored with the row (the SHA-256 of the body, computed
    /// when it was stored), so a read does not hash the body again.
    id: Option<PacketId>,
}

impl<'a> Row<'a> {
    /// Read the `subject` and `body` values of row `seq` as SQLite holds them.
    pub(crate) fn read(seq: i64, subject: ValueRef<'a>, body: ValueRef<'a>) -> Row<'a> {
        let (subject, subject_ok) = match subject {
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => (Cow::Borrowed(s), Ok(())),
                Err(_) => (
                    String::from_utf8_lossy(t),
                    Err("its subject is TEXT that is not UTF-8".to_string()),
                ),
            },
            ValueRef::Blob(b) => (
                String::from_utf8_lossy(b),
                Err("its subject is stored as a BLOB; the format wants TEXT".to_string()),
            ),
            other => (
                Cow::Borrowed(""),
                Err(format!(
                    "its subject is stored as {}; the format wants TEXT",
                    storage_class(other)
                )),
            ),
        };
        let subject_readable = subject_ok.is_ok();
        let content = subject_ok.and_then(|()| match body {
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b),
            other => Err(format!(
                "its body is stored as {}; the format wants the packet's JSON as a BLOB (or TEXT)",
                storage_class(other)
            )),
        });
        Row {
            seq,
            subject,
            subject_readable,
            content,
            id: None,
        }
    }

    /// The row with its stored `packet_id` value, used as the packet id if
    /// it is a 32-byte BLOB (else the body is hashed when decoded).
    pub(crate) fn with_stored_id(mut self, packet_id: ValueRef<'_>) -> Row<'a> {
        if let ValueRef::Blob(b) = packet_id {
            self.id = <[u8; 32]>::try_from(b).ok().map(PacketId::from_bytes);
        }
        self
    }

    /// Read columns `subject_col` and `body_col` of a query row whose
    /// column 0 is `seq`.
    pub(crate) fn from_sql(
        r: &'a rusqlite::Row<'_>,
        subject_col: usize,
        body_col: usize,
    ) -> rusqlite::Result<Row<'a>> {
        Ok(Row::read(
            r.get(0)?,
            r.get_ref(subject_col)?,
            r.get_ref(body_col)?,
        ))
    }

    /// The subject, when it was stored as a valid subject in UTF-8 TEXT.
    pub(crate) fn subject(&self) -> Option<Subject> {
        self.subject_readable
            .then(|| Subject::new(self.subject.as_ref()).ok())
            .flatten()
    }

    /// The packet in the row, or why it is not one.
    pub(crate) fn decode(&self) -> Result<Received, String> {
        let body = self.content.as_ref().map_err(Clone::clone)?;
        match self.id {
            Some(id) => Received::decode_with_known_id(self.subject.as_ref(), body, id),
            None => Received::decode(self.subject.as_ref(), body),
        }
        .map_err(|e| e.to_string())
    }
}

fn storage_class(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"agent_id":"a","domain":"hvac","problem_class":"x","conclusion":"c","confidence":0.5,"context_vector":[0.1],"timestamp":1.0,"source_node":"n"}"#;

    #[test]
    fn a_text_body_is_read_like_a_blob() {
        let subject = ValueRef::Text(b"qis.iot.hvac.x");
        let blob = Row::read(1, subject, ValueRef::Blob(BODY.as_bytes()));
        let text = Row::read(1, subject, ValueRef::Text(BODY.as_bytes()));
        assert_eq!(blob, text);
        assert_eq!(text.decode().unwrap().packet.agent_id, "a");
    }

    #[test]
    fn what_cannot_be_a_packet_says_why() {
        let body = ValueRef::Blob(BODY.as_bytes());
        let blob_subject = Row::read(1, ValueRef::Blob(b"qis.iot.hvac.x"), body);
        assert_eq!(blob_subject.subject, "qis.iot.hvac.x");
        assert!(blob_subject.decode().unwrap_err().contains("BLOB"));
        let not_utf8 = Row::read(2, ValueRef::Text(b"qis.iot.\xff"), body);
        assert!(not_utf8.decode().unwrap_err().contains("not UTF-8"));
        let number = Row::read(3, ValueRef::Text(b"qis.iot.a.b"), ValueRef::Integer(7));
        assert!(number.decode().unwrap_err().contains("INTEGER"));
        let garbage = Row::read(4, ValueRef::Text(b"qis.iot.a.b"), ValueRef::Text(b"{"));
        assert!(garbage.decode().is_err());
    }
}
