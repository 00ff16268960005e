//! Subject and pattern parsing: never a panic, and `matches` agrees with a
//! plain reference implementation of SPEC §3 on every valid subject.
//! Input: `pattern\nsubject` (or one string used as both).
#![no_main]

#[path = "../../qis-core/tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;
use props::reference_matches;
use qis_core::subject::is_token;
use qis_core::{Subject, SubjectPattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, text));
    let _ = is_token(subject);
    let parsed_subject = Subject::new(subject);
    if let Ok(s) = &parsed_subject {
        let exact = SubjectPattern::new(s.as_str()).expect("a subject is a valid pattern");
        assert!(exact.is_exact() && exact.matches(s.as_str()));
        assert!(s.all_below().matches(&format!("{s}.x")));
        let _ = s.contains(pattern);
        let _ = s.tokens().count();
    }
    if let Ok(p) = SubjectPattern::new(pattern) {
        let matched = p.matches(subject);
        if parsed_subject.is_ok() {
            let tokens: Vec<&str> = pattern.split('.').collect();
            let subject_tokens: Vec<&str> = subject.split('.').collect();
            assert_eq!(
                matched,
                reference_matches(&tokens, &subject_tokens),
                "{pattern:?} on {subject:?}"
            );
        }
        let literal = p.literal_prefix();
        if matched {
            assert!(
                subject.starts_with(&literal),
                "{subject:?} outside {literal:?}"
            );
        }
        let prefix = Subject::default();
        let _ = p.is_within(&prefix);
        let _ = p.overlaps(&prefix);
        let _ = p.is_exact();
    }
});
