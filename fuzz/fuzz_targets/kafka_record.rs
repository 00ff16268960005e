//! The Kafka record reader: key (the subject), `qis-subject` header and
//! value, each present or not, any bytes. Never a panic; a record read as a
//! packet matches the consumer's pattern and has the id of its value.
//! Input: flags (which parts are present), pattern choice, two split
//! points, bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qis_core::{PacketId, SubjectPattern};
use qis_transport_kafka::fuzzing::read_record;

const PATTERNS: [&str; 3] = [">", "qis.iot.>", "qis.iot.hvac.*"];

fuzz_target!(|data: &[u8]| {
    let [flags, pattern, a, b, rest @ ..] = data else {
        return;
    };
    let a = usize::from(*a).min(rest.len());
    let b = usize::from(*b).min(rest.len() - a);
    let (key, rest) = rest.split_at(a);
    let (header, value) = rest.split_at(b);
    let key = (flags & 1 != 0).then_some(key);
    let header = (flags & 2 != 0).then_some(header);
    let value = (flags & 4 != 0).then_some(value);
    let pattern = SubjectPattern::new(PATTERNS[usize::from(*pattern) % PATTERNS.len()])
        .expect("a valid pattern");
    if let Some(received) = read_record(key, header, value, &pattern) {
        assert!(pattern.matches(&received.subject));
        assert_eq!(received.id, PacketId::of(value.unwrap_or_default()));
    }
});
