//! The checks the property tests (`tests/properties.rs`) and the fuzz
//! targets (`fuzz/fuzz_targets/`, which include this file by path) share:
//! one definition of what must hold, fed by proptest's strategies on every
//! `cargo test` and by libFuzzer's inputs in `scripts/fuzz.sh`.

// Each includer uses part of this module.
#![allow(dead_code)]

use qis_core::config::{Retention, TlsFiles, UrlOptions};
use qis_core::{OutcomePacket, PacketId, Received};

/// SPEC §3 read literally: `*` is one token, `>` one or more trailing
/// tokens. What `SubjectPattern::matches` must agree with.
pub fn reference_matches(pattern: &[&str], subject: &[&str]) -> bool {
    match (pattern.split_first(), subject.split_first()) {
        (Some((&">", [])), Some(_)) => true,
        (Some((&"*", p)), Some((_, s))) => reference_matches(p, s),
        (Some((lit, p)), Some((tok, s))) => lit == tok && reference_matches(p, s),
        (None, None) => true,
        _ => false,
    }
}

/// Decode `body` as every transport does: never a panic; the packet id is
/// the SHA-256 of the bytes received; what decodes re-encodes to a body
/// that decodes to the same packet, and encodes the same again.
pub fn decode_checked(body: &[u8]) {
    let decoded = OutcomePacket::decode(body);
    let received = Received::decode("qis.iot.hvac.energy-anomaly", body);
    assert_eq!(decoded.is_ok(), received.is_ok());
    if let Ok(r) = &received {
        assert_eq!(r.id, PacketId::of(body));
    }
    if let Ok(packet) = decoded {
        // Re-encoding may be refused (compact JSON of the same numbers can
        // be longer than what was received), never panic.
        if let Ok(encoded) = packet.encode() {
            let again = OutcomePacket::decode(&encoded).expect("an encoded packet decodes");
            assert_eq!(again, packet, "decode(encode(p)) != p");
            assert_eq!(
                again.encode().expect("encodes again"),
                encoded,
                "encoding is not stable"
            );
        }
    }
}

/// Read every kind of option a backend reads from its URL, then finish:
/// whatever the values, no reader panics.
pub fn read_all_options(mut o: UrlOptions) {
    let _ = o.prefix(&mut qis_core::Subject::default());
    let _ = o.retention(&mut Retention::default());
    o.tls(&mut TlsFiles::default());
    let _ = o.duration("max_age");
    let _ = o.duration("wait");
    let _ = o.bytes("max_bytes");
    let _ = o.bytes("size");
    let _ = o.number::<u64>("count");
    let _ = o.number::<i32>("signed");
    let _ = o.number::<f64>("ratio");
    let _ = o.boolean("flag");
    let _ = o.path("file");
    let _ = o.choice("storage", &["file", "memory"]);
    let _ = o.choice("mode", &["file", "memory"]);
    let _ = o.string("name");
    let _ = o.passthrough("librdkafka.");
    let _ = o.finish();
}
