//! The SQLite row reader: a stored row holds whatever another program
//! wrote (any storage class, any bytes). Never a panic; a row read as a
//! packet has the packet id of its body bytes.
//! Input: subject class, body class, pattern choice, split point, bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qis_core::{PacketId, SubjectPattern};
use qis_transport_sqlite::fuzzing::read_row;

const PATTERNS: [&str; 4] = [
    ">",
    "qis.iot.>",
    "qis.iot.hvac.*",
    "qis.iot.hvac.energy-anomaly",
];

fuzz_target!(|data: &[u8]| {
    let [subject_class, body_class, pattern, split, rest @ ..] = data else {
        return;
    };
    let at = usize::from(*split).min(rest.len());
    let (subject, body) = rest.split_at(at);
    let pattern = SubjectPattern::new(PATTERNS[usize::from(*pattern) % PATTERNS.len()])
        .expect("a valid pattern");
    if let Ok(received) = read_row(*subject_class, subject, *body_class, body, &pattern) {
        assert_eq!(received.id, PacketId::of(body));
        assert_eq!(received.subject.as_bytes(), subject);
    }
});
