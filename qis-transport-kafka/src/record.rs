//! How a packet is laid on a Kafka record, and read back.
//!
//! - key: the subject (UTF-8), so one subject always lands in one partition;
//! - value: the packet body (compact JSON, ≤ 512 bytes);
//! - headers: `qis-packet-id` (lowercase hex SHA-256 of the body) and
//!   `qis-subject` (the subject again, for tools that do not show keys).

use qis_core::{EncodedPacket, Received, Subject, SubjectPattern};
use rdkafka::message::{BorrowedMessage, Headers, Message};

/// Header carrying the packet id.
pub const HEADER_PACKET_ID: &str = "qis-packet-id";

/// Header carrying the subject (the record key is the subject too).
pub const HEADER_SUBJECT: &str = "qis-subject";

/// The headers of a packet's record, `(name, value)`: its id (`id_hex`,
/// lowercase hex) and its subject.
pub(crate) fn headers_of<'a>(
    packet: &'a EncodedPacket,
    id_hex: &'a str,
) -> [(&'static str, &'a [u8]); 2] {
    [
        (HEADER_PACKET_ID, id_hex.as_bytes()),
        (HEADER_SUBJECT, packet.subject().as_str().as_bytes()),
    ]
}

/// A record as taken from the consumer, owned so it can wait in a buffer.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub subject_header: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

impl RawRecord {
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        RawRecord::from_parts(
            m.partition(),
            m.offset(),
            m.key(),
            || {
                m.headers()
                    .into_iter()
                    .flat_map(|h| h.iter().map(|h| (h.key, h.value)))
            },
            m.payload(),
        )
    }

    /// A record from its parts as the broker delivered them: key, headers
    /// (name and value, in order; asked for only when there is no key:
    /// librdkafka parses them on demand) and value.
    pub fn from_parts<'a, H>(
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        headers: impl FnOnce() -> H,
        payload: Option<&[u8]>,
    ) -> Self
    where
        H: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    {
        // The key is the subject; the header is read only for a record
        // without a key.
        let subject_header = match key {
            Some(_) => None,
            None => headers()
                .into_iter()
                .find(|(name, _)| *name == HEADER_SUBJECT)
                .and_then(|(_, value)| value.map(<[u8]>::to_vec)),
        };
        RawRecord {
            partition,
            offset,
            key: key.map(<[u8]>::to_vec),
            subject_header,
            payload: payload.map(<[u8]>::to_vec),
        }
    }

    /// Bytes held (key, header, value).
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.subject_header.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + 64
    }

    /// The subject the record claims: its key, else its `qis-subject` header.
    fn subject(&self) -> Option<&str> {
        self.key
            .as_deref()
            .or(self.subject_header.as_deref())
            .and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// What a record turned out to be for a consumer on a pattern.
#[derive(Debug)]
pub enum Decoded {
    /// A valid packet on a matching subject.
    Packet(Received),
    /// A subject the pattern does not match: not for this consumer.
    Other,
    /// Not a packet: the reason, and the subject if there was one.
    Malformed {
        /// The subject the record claimed (empty if it had none).
        subject: String,
        /// Why it is not a packet.
        reason: String,
    },
}

/// Read a record for a consumer of `pattern` on a transport of `prefix`.
/// The packet id is always computed from the body bytes (a `qis-packet-id`
/// header is never trusted).
pub(crate) fn decode(prefix: &Subject, pattern: &SubjectPattern, r: &RawRecord) -> Decoded {
    decode_with(&mut SubjectCache::default(), prefix, pattern, r)
}

/// Whether `subject`, a record's key, is a subject under `prefix` that
/// `pattern` matches (`Ok(false)`: one it does not); `Err` with the reason
/// when it is not a subject under the prefix.
fn check_subject(
    prefix: &Subject,
    pattern: &SubjectPattern,
    subject: &str,
) -> std::result::Result<bool, String> {
    let valid_subject = subject.len() > prefix.as_str().len()
        && prefix.contains(subject)
        && Subject::new(subject).is_ok();
    if !valid_subject {
        return Err(format!("key {subject:?} is not a subject under {prefix}"));
    }
    Ok(pattern.matches(subject))
}

/// How many subjects a [`SubjectCache`] keeps.
const RECENT_SUBJECTS: usize = 16;

/// The subjects a consumer's poller thread saw lately, each with whether
/// its pattern matches it: a record's key is checked as a subject once per
/// subject, not once per record (a partition's records share few keys).
/// Only valid subjects are kept, so a malformed key is judged (and
/// reported) every time.
#[derive(Debug, Default)]
pub(crate) struct SubjectCache {
    recent: Vec<(Box<str>, bool)>,
    next: usize,
}

impl SubjectCache {
    fn check(
        &mut self,
        prefix: &Subject,
        pattern: &SubjectPattern,
        subject: &str,
    ) -> std::result::Result<bool, String> {
        if let Some((_, matches)) = self.recent.iter().find(|(s, _)| **s == *subject) {
            return Ok(*matches);
        }
        let matches = check_subject(prefix, pattern, subject)?;
        let entry = (Box::from(subject), matches);
        if self.recent.len() < RECENT_SUBJECTS {
            self.recent.push(entry);
        } else {
            self.recent[self.next] = entry;
            self.next = (self.next + 1) % RECENT_SUBJECTS;
        }
        Ok(matches)
    }
}

/// [`decode`], with the subjects judged lately in `cache` (the cache is
/// for one prefix and pattern).
pub(crate) fn decode_with(
    cache: &mut SubjectCache,
    prefix: &Subject,
    pattern: &SubjectPattern,
    r: &RawRecord,
) -> Decoded {
    let Some(subject) = r.subject() else {
        return Decoded::Malformed {
            subject: String::new(),
            reason: "the record has no UTF-8 subject key".into(),
        };
    };
    match cache.check(prefix, pattern, subject) {
        Err(reason) => {
            return Decoded::Malformed {
                subject: subject.to_string(),
                reason,
            }
        }
        Ok(false) => return Decoded::Other,
        Ok(true) => {}
    }
    match Received::decode(subject, r.payload.as_deref().unwrap_or_default()) {
        Ok(received) => Decoded::Packet(received),
        Err(e) => Decoded::Malformed {
            subject: subject.to_string(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
#[path = "record_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: Option<&str>, body: &[u8]) -> RawRecord {
        RawRecord {
            partition: 0,
            offset: 0,
            key: key.map(|k| k.as_bytes().to_vec()),
            subject_header: None,
            payload: Some(body.to_vec()),
        }
    }

    #[test]
    fn garbage_and_foreign_keys_are_malformed() {
        let prefix = Subject::default();
        let all = SubjectPattern::new(">").unwrap();
        assert!(matches!(
            decode(&prefix, &all, &raw(None, b"{}")),
            Decoded::Malformed { .. }
        ));
        assert!(matches!(
            decode(&prefix, &all, &raw(Some("other.x.y"), b"{}")),
            Decoded::Malformed { .. }
        ));
        assert!(matches!(
            decode(&prefix, &all, &raw(Some("qis.iot.a.b"), b"\x00garbage")),
            Decoded::Malformed { .. }
        ));
        let hvac = SubjectPattern::new("qis.iot.hvac.>").unwrap();
        assert!(matches!(
            decode(
                &prefix,
                &hvac,
                &raw(Some("qis.iot.power.x"), b"\x00garbage")
            ),
            Decoded::Other
        ));
    }

    #[test]
    fn the_subject_cache_judges_as_without_it() {
        let prefix = Subject::new("qis.iot").unwrap();
        let hvac = SubjectPattern::new("qis.iot.hvac.>").unwrap();
        let body = br#"{"agent_id":"a","domain":"hvac","problem_class":"x","conclusion":"c","confidence":0.5,"context_vector":[],"timestamp":1.0,"source_node":"n"}"#;
        let mut cache = SubjectCache::default();
        let keys = [
            Some("qis.iot.hvac.x"),
            Some("qis.iot.power.x"),
            Some("qis.iot"),
            Some("qis.iotx.hvac.x"),
            Some("other.x.y"),
            Some("qis.iot..x"),
            None,
        ];
        // Twice over, and more subjects than the cache keeps in between.
        for round in 0..2 {
            for i in 0..(RECENT_SUBJECTS + 4) {
                let extra = format!("qis.iot.hvac.s{i}");
                for key in keys.iter().copied().chain([Some(extra.as_str())]) {
                    for payload in [&body[..], b"\x00garbage"] {
                        let r = raw(key, payload);
                        let want = format!("{:?}", decode(&prefix, &hvac, &r));
                        let got = format!("{:?}", decode_with(&mut cache, &prefix, &hvac, &r));
                        assert_eq!(got, want, "key {key:?}, round {round}");
                    }
                }
            }
        }
        assert!(cache.recent.len() <= RECENT_SUBJECTS);
    }
}
