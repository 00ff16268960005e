//! Properties of record parsing over generated records: it never panics,
//! reads back exactly what a deposit writes, and never takes a foreign
//! record for a packet. (The fuzz targets drive the same code through
//! `crate::fuzzing`.)

use proptest::prelude::*;
use qis_core::{EncodedPacket, OutcomePacket, PacketId, Subject, SubjectPattern};

use super::*;

fn prefix() -> Subject {
    Subject::new("qis.iot").unwrap()
}

fn all() -> SubjectPattern {
    SubjectPattern::new("qis.iot.>").unwrap()
}

fn token() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,11}"
}

prop_compose! {
    fn packet()(
        agent_id in "[a-zA-Z0-9 ._-]{1,24}",
        domain in token(),
        problem_class in token(),
        conclusion in "[^\\p{Cc}]{1,60}",
        confidence in 0.0f64..=1.0,
        context_vector in prop::collection::vec(-1.0e6f64..1.0e6, 0..8),
        timestamp in 0.0f64..4.0e9,
        source_node in "[a-zA-Z0-9 ._-]{1,24}",
    ) -> OutcomePacket {
        OutcomePacket {
            agent_id,
            domain,
            problem_class,
            conclusion,
            confidence,
            context_vector,
            timestamp,
            source_node,
        }
    }
}

/// A record's key, headers and value.
type Record = (Vec<u8>, Vec<(&'static str, Vec<u8>)>, Vec<u8>);

/// The record a deposit of `p` writes.
fn written(p: &EncodedPacket) -> Record {
    let id_hex = p.id().to_hex();
    let headers = headers_of(p, &id_hex)
        .iter()
        .map(|(k, v)| (*k, v.to_vec()))
        .collect();
    (
        p.subject().as_str().as_bytes().to_vec(),
        headers,
        p.body().to_vec(),
    )
}

fn read(
    pattern: &SubjectPattern,
    key: Option<&[u8]>,
    headers: &[(&str, Vec<u8>)],
    value: Option<&[u8]>,
) -> Decoded {
    let r = RawRecord::from_parts(
        0,
        0,
        key,
        || headers.iter().map(|(k, v)| (*k, Some(v.as_slice()))),
        value,
    );
    decode(&prefix(), pattern, &r)
}

fn header_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(HEADER_SUBJECT), Just(HEADER_PACKET_ID), Just("other")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any key, headers and value: an outcome, never a panic; a packet only
    /// on a subject under the prefix that the pattern matches, with the id
    /// of the value's bytes.
    #[test]
    fn any_record_decodes_without_panicking(
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        headers in prop::collection::vec((header_name(), prop::collection::vec(any::<u8>(), 0..40)), 0..4),
        value in prop::option::of(prop::collection::vec(any::<u8>(), 0..600)),
    ) {
        match read(&all(), key.as_deref(), &headers, value.as_deref()) {
            Decoded::Packet(r) => {
                prop_assert!(r.subject.starts_with("qis.iot."));
                prop_assert_eq!(r.id, PacketId::of(value.as_deref().unwrap_or_default()));
            }
            Decoded::Other | Decoded::Malformed { .. } => {}
        }
    }

    /// What a deposit writes is read back: the same subject, id and fields,
    /// with or without the key (the `qis-subject` header then names it).
    #[test]
    fn a_deposited_record_reads_back(p in packet(), keyless in any::<bool>()) {
        let Ok(encoded) = EncodedPacket::readable(&p, &prefix()) else {
            // Too large once encoded: never deposited.
            return Ok(());
        };
        let (key, headers, value) = written(&encoded);
        let key = (!keyless).then_some(key.as_slice());
        match read(&all(), key, &headers, Some(&value)) {
            Decoded::Packet(r) => {
                prop_assert_eq!(r.subject.as_str(), encoded.subject().as_str());
                prop_assert_eq!(r.id, encoded.id());
                prop_assert_eq!(&r.packet.agent_id, &p.agent_id);
                prop_assert_eq!(&r.packet.conclusion, &p.conclusion);
                prop_assert_eq!(&r.packet.domain, &p.domain);
                prop_assert_eq!(&r.packet.problem_class, &p.problem_class);
                prop_assert_eq!(r.packet.context_vector.len(), p.context_vector.len());
            }
            other => prop_assert!(false, "read back as {:?}", other),
        }
    }

    /// The id is the value's hash whatever a `qis-packet-id` header claims,
    /// and the key names the subject whatever the `qis-subject` header says.
    #[test]
    fn headers_never_override_the_key_or_the_id(
        p in packet(),
        forged_id in "[0-9a-f]{64}",
        other_subject in token(),
    ) {
        let Ok(encoded) = EncodedPacket::readable(&p, &prefix()) else {
            return Ok(());
        };
        let (key, _, value) = written(&encoded);
        let headers = vec![
            (HEADER_PACKET_ID, forged_id.into_bytes()),
            (HEADER_SUBJECT, format!("qis.iot.{other_subject}.x").into_bytes()),
        ];
        match read(&all(), Some(&key), &headers, Some(&value)) {
            Decoded::Packet(r) => {
                prop_assert_eq!(r.id, encoded.id());
                prop_assert_eq!(r.subject.as_str(), encoded.subject().as_str());
            }
            other => prop_assert!(false, "read as {:?}", other),
        }
    }

    /// A subject under the prefix that the pattern does not match is not
    /// this consumer's, whatever the value holds.
    #[test]
    fn unmatched_subjects_are_other_whatever_the_value(
        domain in token(),
        problem in token(),
        value in prop::option::of(prop::collection::vec(any::<u8>(), 0..600)),
    ) {
        prop_assume!(domain != "hvac");
        let hvac = SubjectPattern::new("qis.iot.hvac.>").unwrap();
        let key = format!("qis.iot.{domain}.{problem}");
        let outcome = read(&hvac, Some(key.as_bytes()), &[], value.as_deref());
        prop_assert!(matches!(outcome, Decoded::Other), "{:?}", outcome);
    }

    /// A key that is not a subject strictly under the prefix is malformed,
    /// however valid the value.
    #[test]
    fn foreign_keys_are_malformed(p in packet(), key in "[ -~]{0,40}") {
        prop_assume!(!key.starts_with("qis.iot."));
        let Ok(encoded) = EncodedPacket::readable(&p, &prefix()) else {
            return Ok(());
        };
        let value = encoded.body().to_vec();
        let outcome = read(&all(), Some(key.as_bytes()), &[], Some(&value));
        prop_assert!(matches!(outcome, Decoded::Malformed { .. }), "{:?}", outcome);
    }
}

#[test]
fn the_fuzzing_entry_points_read_what_a_deposit_writes() {
    let p = OutcomePacket {
        agent_id: "a".into(),
        domain: "hvac".into(),
        problem_class: "x".into(),
        conclusion: "c".into(),
        confidence: 0.5,
        context_vector: vec![0.1],
        timestamp: 1.0,
        source_node: "n".into(),
    };
    let encoded = EncodedPacket::readable(&p, &prefix()).unwrap();
    let mut bytes = encoded.subject().as_str().as_bytes().to_vec();
    bytes.push(0xFF);
    bytes.push(0xFF);
    bytes.extend_from_slice(encoded.body());
    assert!(
        matches!(crate::fuzzing::decode_bytes(&bytes), Decoded::Packet(r) if r.id == encoded.id())
    );
    // No key: the header names the subject.
    let mut bytes = vec![0xFF];
    bytes.extend_from_slice(encoded.subject().as_str().as_bytes());
    bytes.push(0xFF);
    bytes.extend_from_slice(encoded.body());
    assert!(matches!(
        crate::fuzzing::decode_bytes(&bytes),
        Decoded::Packet(_)
    ));
    assert!(matches!(
        crate::fuzzing::decode_bytes(b""),
        Decoded::Malformed { .. }
    ));
}
