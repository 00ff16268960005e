//! The shared test vectors (copied from the project's shared/vectors into
//! tests/vectors/ as fixtures): packets, subjects, fingerprints, synthesis.

use qis_core::{
    synthesize_with, ErrorKind, Fingerprint, OutcomePacket, Subject, SubjectPattern,
    SynthesisConfig,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

#[test]
fn packets() {
    let v = load("packets.json");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 19);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let wire = c["wire"].as_str().unwrap().as_bytes();
        assert_eq!(
            wire.len() as u64,
            c["wire_bytes"].as_u64().unwrap(),
            "{name}: wire_bytes"
        );
        let r = OutcomePacket::decode(wire);
        if c["valid"].as_bool().unwrap() {
            let p = r.unwrap_or_else(|e| panic!("{name}: valid packet rejected: {e}"));
            let body = p.encode().unwrap();
            assert!(body.len() <= 512, "{name}: encodes to {} bytes", body.len());
            // Compact, exactly the eight keys, and it decodes to the same packet.
            let back: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(back.as_object().unwrap().len(), 8, "{name}");
            assert_eq!(
                OutcomePacket::decode(&body).unwrap(),
                p,
                "{name}: round trip"
            );
        } else {
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{name}: invalid packet accepted"));
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidPacket | ErrorKind::PacketTooLarge
                ),
                "{name}: kind {:?}",
                e.kind()
            );
            assert!(!e.message().is_empty());
        }
    }
}

#[test]
fn compact_encoding_matches_the_vector_text() {
    let v = load("packets.json");
    let spaced = v["cases"][0]["wire"].as_str().unwrap();
    let compact = v["cases"][1]["wire"].as_str().unwrap();
    let p = OutcomePacket::decode(spaced.as_bytes()).unwrap();
    assert_eq!(std::str::from_utf8(&p.encode().unwrap()).unwrap(), compact);
}

#[test]
fn subjects() {
    let v = load("subjects.json");
    for m in v["matches"].as_array().unwrap() {
        let pattern = m["pattern"].as_str().unwrap();
        let subject = m["subject"].as_str().unwrap();
        let p = SubjectPattern::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(
            p.matches(subject),
            m["matches"].as_bool().unwrap(),
            "{pattern} vs {subject}"
        );
    }
    for bad in v["invalid_patterns"].as_array().unwrap() {
        let bad = bad.as_str().unwrap();
        let e = SubjectPattern::new(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(e.kind(), ErrorKind::InvalidSubject, "{bad:?}");
    }
}

#[test]
fn fingerprints() {
    let v = load("fingerprint.json");
    let prefix = Subject::default();
    for c in v["cases"].as_array().unwrap() {
        let domain = c["domain"].as_str().unwrap();
        let problem = c["problem_class"].as_str().unwrap();
        let cv: Vec<f64> = c["context_vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let res = c["resolution"].as_u64().unwrap() as u32;
        assert_eq!(
            Fingerprint::canonical(domain, problem, &cv, res).unwrap(),
            c["canonical_input"].as_str().unwrap()
        );
        let fp = Fingerprint::compute(domain, problem, &cv, res).unwrap();
        assert_eq!(fp.as_str(), c["fingerprint"].as_str().unwrap());
        let packet = OutcomePacket {
            agent_id: "a".into(),
            domain: domain.into(),
            problem_class: problem.into(),
            conclusion: "c".into(),
            confidence: 0.5,
            context_vector: cv,
            timestamp: 0.0,
            source_node: "n".into(),
        };
        assert_eq!(
            packet.subject(&prefix).unwrap().as_str(),
            c["subject"].as_str().unwrap()
        );
        assert_eq!(
            packet.fingerprinted_subject(&prefix, res).unwrap().as_str(),
            c["fingerprinted_subject"].as_str().unwrap()
        );
    }
}

fn packet(v: &Value) -> OutcomePacket {
    serde_json::from_value(v.clone()).unwrap()
}

/// The vectors hold Python's `round(x, 3)`; compare within half a unit of
/// the third decimal (Python rounds the exact binary value, so 0.8025 → 0.802).
fn close3(x: f64, expected: f64) -> bool {
    (x - expected).abs() <= 0.0005 + 1e-12
}

#[test]
fn synthesis() {
    let v = load("synthesis.json");
    for c in v["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let own = packet(&c["own"]);
        let twins: Vec<_> = c["twins"].as_array().unwrap().iter().map(packet).collect();
        let x = &c["expected"];
        let whole = |k: &str| x[k].as_u64().unwrap();
        let text = |k: &str| x[k].as_str().unwrap();
        let check = |s: &qis_core::Synthesis| {
            assert_eq!(s.n_agents as u64, whole("n_agents"), "{name}");
            assert_eq!(s.synthesis_pairs, whole("synthesis_pairs"), "{name}");
            assert_eq!(s.consensus_problem, text("consensus_problem"), "{name}");
            for (k, got) in [
                ("consensus_strength", s.consensus_strength),
                ("weighted_confidence", s.weighted_confidence),
            ] {
                let want = x[k].as_f64().unwrap();
                assert!(close3(got, want), "{name}: {k} {got}, want {want}");
            }
            assert_eq!(s.alert, x["alert"].as_bool().unwrap(), "{name}");
            assert!(s.recommendation.contains(&s.consensus_problem), "{name}");
            assert!(
                s.recommendation
                    .starts_with(if s.alert { "ALERT" } else { "Monitoring" }),
                "{name}"
            );
        };
        let s = synthesize_with(&SynthesisConfig::seed(), &own, &twins);
        check(&s);
        // At-least-once delivery: every twin delivered twice, and the own
        // packet echoed back, give the same figures.
        let mut doubled: Vec<&OutcomePacket> = twins.iter().chain(&twins).collect();
        doubled.push(&own);
        let s2 = synthesize_with(&SynthesisConfig::seed(), &own, doubled);
        check(&s2);
        assert_eq!(s2.duplicates_ignored, twins.len() + 1, "{name}");
    }
}
