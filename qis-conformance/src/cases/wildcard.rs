//! Wildcards: every pattern of the subject vectors (`qis-core/tests/vectors/subjects.json`)
//! receives exactly the subjects it matches, durably and live.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use qis_core::{DynTransport, EncodedPacket, Subject, SubjectPattern};

use super::open;
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{collect, consumer_from_start, context, next_live, pkt, quiet, CaseResult};

/// (pattern, subject, matches) rows of the subject vectors.
type VectorTable = Vec<(String, String, bool)>;

/// The vector subjects and patterns, moved under the test prefix.
fn vector_cases(prefix: &Subject) -> (Vec<Subject>, Vec<String>, VectorTable) {
    let root = prefix.tokens().next().unwrap().to_string();
    // The one copy of the vectors, qis-core's. It lies outside this
    // package: a build from a git checkout or path has it; publishing this
    // crate needs the vectors shipped with it (or exported by qis-core).
    let text = include_str!("../../../qis-core/tests/vectors/subjects.json");
    let v: serde_json::Value = serde_json::from_str(text).expect("subjects.json");
    let mv = |s: &str| {
        if s == "qis" {
            root.clone()
        } else if let Some(rest) = s.strip_prefix("qis.") {
            format!("{root}.{rest}")
        } else {
            s.to_string()
        }
    };
    let mut subjects = Vec::new();
    let mut patterns = Vec::new();
    let mut table = Vec::new();
    for m in v["matches"].as_array().unwrap() {
        let pattern = mv(m["pattern"].as_str().unwrap());
        let subject = mv(m["subject"].as_str().unwrap());
        table.push((
            pattern.clone(),
            subject.clone(),
            m["matches"].as_bool().unwrap(),
        ));
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
        let s = Subject::new(subject).unwrap();
        if s.as_str().len() > prefix.as_str().len()
            && prefix.contains(s.as_str())
            && !subjects.contains(&s)
        {
            subjects.push(s);
        }
    }
    (subjects, patterns, table)
}

async fn deposit_on(
    t: &DynTransport,
    subject: &Subject,
    i: usize,
) -> Result<qis_core::Receipt, String> {
    let p = pkt("isolation", "hvac", "energy-anomaly", i);
    let enc = EncodedPacket::new(&p, subject.clone()).map_err(context("encode"))?;
    t.deposit_encoded(&enc).await.map_err(context("deposit"))
}

fn check_isolation(
    pattern: &str,
    got: &HashSet<String>,
    subjects: &[Subject],
    table: &[(String, String, bool)],
) -> CaseResult {
    let p = SubjectPattern::new(pattern).unwrap();
    let expected: HashSet<String> = subjects
        .iter()
        .filter(|s| p.matches(s.as_str()))
        .map(|s| s.to_string())
        .collect();
    ensure!(
        got == &expected,
        "pattern {pattern}: received subjects {got:?}, expected {expected:?}"
    );
    for (tp, ts, m) in table {
        if tp == pattern && subjects.iter().any(|s| s.as_str() == ts) {
            ensure!(
                got.contains(ts) == *m,
                "vector ({tp}, {ts}) expects matches={m}"
            );
        }
    }
    Ok(())
}

/// For every pattern of the subject vectors, a durable consumer receives
/// exactly the subjects the pattern matches.
pub async fn wildcard_isolation_durable(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let (subjects, patterns, table) = vector_cases(&prefix);
    let mut receipts = HashMap::new();
    for (i, s) in subjects.iter().enumerate() {
        receipts.insert(deposit_on(&t, s, i).await?.id, s.to_string());
    }
    let opened =
        futures::future::join_all(patterns.iter().enumerate().map(|(i, p)| {
            let t = t.clone();
            async move {
                consumer_from_start(&*t, &format!("iso-{i}"), p, Duration::from_secs(60)).await
            }
        }))
        .await;
    for (pattern, c) in patterns.iter().zip(opened) {
        let c = c?;
        let p = SubjectPattern::new(pattern.as_str()).unwrap();
        let n = subjects.iter().filter(|s| p.matches(s.as_str())).count();
        let mut got = collect(&c, n, Duration::from_secs(20)).await?;
        got.extend(quiet(&c, Duration::from_millis(300)).await?);
        let got: HashSet<String> = got.iter().map(|d| d.subject().to_string()).collect();
        check_isolation(pattern, &got, &subjects, &table)?;
    }
    Ok(())
}

/// For every pattern of the subject vectors, a live subscription receives
/// exactly the subjects the pattern matches.
pub async fn wildcard_isolation_live(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let (subjects, patterns, table) = vector_cases(&prefix);
    let mut subs = Vec::new();
    for p in &patterns {
        subs.push(
            t.subscribe(SubjectPattern::new(p.as_str()).unwrap())
                .await
                .map_err(context("subscribe"))?,
        );
    }
    // A sentinel on a subject every pattern here matches is deposited last;
    // live order per subscription is not promised across subjects, so each
    // subscription reads until it has seen everything it should, then a short
    // while more for anything it should not.
    for (i, s) in subjects.iter().enumerate() {
        deposit_on(&t, s, i).await?;
    }
    for (pattern, mut sub) in patterns.iter().zip(subs) {
        let p = SubjectPattern::new(pattern.as_str()).unwrap();
        let n = subjects.iter().filter(|s| p.matches(s.as_str())).count();
        let mut got = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut count = 0;
        loop {
            let wait = if count >= n {
                Duration::from_millis(300)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match next_live(&mut sub, wait).await? {
                Some(r) => {
                    count += 1;
                    got.insert(r.subject.clone());
                }
                None if count >= n => break,
                None => {
                    return Err(format!(
                        "pattern {pattern}: {count} of {n} live packets arrived within 10 s"
                    ))
                }
            }
        }
        ensure!(
            count == n,
            "pattern {pattern}: {count} live packets, expected {n}"
        );
        check_isolation(pattern, &got, &subjects, &table)?;
    }
    Ok(())
}
