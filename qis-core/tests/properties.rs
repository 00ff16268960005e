//! Property tests of what the fuzz targets (`fuzz/`) check, run with every
//! `cargo test`: decoding what arrives from outside never panics, packets
//! round-trip through their wire form, subject and pattern parsing never
//! panics and `matches` agrees with a plain reading of SPEC §3, and URL
//! parsing never panics.

mod props;

use proptest::collection::vec;
use proptest::prelude::*;
use qis_core::config::{ServerUrl, UrlOptions};
use qis_core::{OutcomePacket, Subject, SubjectPattern};

use props::{decode_checked, read_all_options, reference_matches};

fn token() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,8}"
}

fn name() -> impl Strategy<Value = String> {
    // 1–128 bytes, no control characters, any script.
    "[^\\p{Cc}]{1,40}"
}

prop_compose! {
    fn packet()(
        agent_id in name(),
        domain in token(),
        problem_class in token(),
        conclusion in "[^\\p{Cc}]{1,80}|\\PC{1,40}",
        confidence in 0.0f64..=1.0,
        context_vector in vec(any::<f64>().prop_filter("finite", |x| x.is_finite()), 0..8),
        timestamp in 0.0f64..4e9,
        source_node in name(),
    ) -> OutcomePacket {
        OutcomePacket { agent_id, domain, problem_class, conclusion, confidence, context_vector, timestamp, source_node }
    }
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(body in vec(any::<u8>(), 0..700)) {
        decode_checked(&body);
    }

    #[test]
    fn valid_packets_round_trip(p in packet()) {
        if let Ok(body) = p.encode() {
            prop_assert!(body.len() <= 512);
            let back = OutcomePacket::decode(&body).unwrap();
            prop_assert_eq!(&back, &p);
            prop_assert_eq!(back.encode().unwrap(), body);
        }
    }

    #[test]
    fn damaged_bodies_never_panic(p in packet(), at in any::<prop::sample::Index>(), bytes in vec(any::<u8>(), 1..4), cut in any::<bool>()) {
        let mut body = p.encode().map(|b| b.to_vec()).unwrap_or_else(|_| b"{}".to_vec());
        let i = at.index(body.len() + 1);
        if cut {
            body.truncate(i);
        } else {
            body.splice(i..i, bytes);
        }
        decode_checked(&body);
    }

    #[test]
    fn parsing_any_subject_or_pattern_never_panics(s in "\\PC{0,40}|[a-z.*>_ -]{0,24}") {
        if let Ok(subject) = Subject::new(s.clone()) {
            let exact = SubjectPattern::new(subject.as_str()).unwrap();
            prop_assert!(exact.is_exact() && exact.matches(subject.as_str()));
        }
        if let Ok(p) = SubjectPattern::new(s.clone()) {
            let _ = p.matches(&s);
            let _ = p.literal_prefix();
            let _ = p.is_within(&Subject::default());
            let _ = p.overlaps(&Subject::default());
        }
    }

    #[test]
    fn matches_agrees_with_the_reference(
        subject in vec(prop::sample::select(vec!["a", "b", "hvac", "x-1"]), 1..6),
        pattern in vec(prop::sample::select(vec!["a", "b", "hvac", "x-1", "*"]), 0..6),
        tail in any::<bool>(),
    ) {
        let mut pattern = pattern;
        if tail || pattern.is_empty() {
            pattern.push(">");
        }
        let text = pattern.join(".");
        let subject_text = subject.join(".");
        let p = SubjectPattern::new(text.as_str()).unwrap();
        prop_assert_eq!(
            p.matches(&subject_text),
            reference_matches(&pattern, &subject),
            "{} on {}", text, subject_text
        );
        if p.matches(&subject_text) {
            prop_assert!(subject_text.starts_with(&p.literal_prefix()));
        }
    }

    #[test]
    fn parsing_any_url_never_panics(url in url_like()) {
        if let Ok(parsed) = ServerUrl::parse("proptest", &url, &["nats", "tls"], 4222) {
            prop_assert!(!parsed.hosts.is_empty());
            let _ = parsed.host_list();
            read_all_options(parsed.options);
        }
        if let Some((_, query)) = url.split_once('?') {
            if let Ok(options) = UrlOptions::parse("proptest", query) {
                read_all_options(options);
            }
        }
    }
}

/// Strings shaped like server URLs, with the parts that go wrong.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec!["nats", "NATS", "tls", "redis", "", "nats:/"]);
    let userinfo = "([a-z%0-9:@]{0,8}@)?";
    let host = "(\\[[0-9a-f:]{0,10}\\]|[a-z0-9.%-]{0,10})(:[0-9a-z]{0,6})?";
    let path = "(/[a-z%./]{0,8})?";
    let query = "(\\?([a-z_%]{0,10}(=[a-zA-Z0-9%.]{0,10})?&?){0,4})?";
    (scheme, userinfo, vec(host, 1..3), path, query, "\\PC{0,6}").prop_map(
        |(scheme, userinfo, hosts, path, query, junk)| {
            format!(
                "{scheme}://{userinfo}{}{path}{query}{junk}",
                hosts.join(",")
            )
        },
    )
}

/// Found by `valid_packets_round_trip`: without serde_json's exact float
/// parsing, `-4.645216658207551e60` came back one unit in the last place
/// off, so a re-encoded packet had another body and another packet id.
#[test]
fn every_float_survives_the_wire_exactly() {
    let p = OutcomePacket {
        agent_id: "a".into(),
        domain: "hvac".into(),
        problem_class: "x".into(),
        conclusion: "c".into(),
        confidence: 0.8199126707703766,
        context_vector: vec![
            -4.645216658207551e60,
            2.2026282687524894e263,
            -3.1006435130254746e-217,
        ],
        timestamp: 3395451527.951087,
        source_node: "n".into(),
    };
    let body = p.encode().unwrap();
    let back = OutcomePacket::decode(&body).unwrap();
    assert_eq!(back, p);
    assert_eq!(back.encode().unwrap(), body);
}
