//! Similar twins (SPEC §9, `qis_core::similar`): the `k` stored packets
//! under a pattern whose context vectors are most like a given one. Every
//! case needs [`Capabilities::similarity`](qis_core::Capabilities::similarity).

use std::collections::HashSet;

use qis_core::similar::{cosine, rank};
use qis_core::{
    synthesize, DynTransport, ErrorKind, Fingerprint, OutcomePacket, OutcomeTransportExt, PacketId,
    Scored, SimilarityQuery, Subject, SubjectPattern,
};

use super::{deposit, open};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{context, pkt, CaseResult};

/// A packet from [`pkt`] with context vector `cv`.
fn with_vector(agent: &str, domain: &str, problem: &str, seq: usize, cv: &[f64]) -> OutcomePacket {
    let mut p = pkt(agent, domain, problem, seq);
    p.context_vector = cv.to_vec();
    p
}

/// Run a similarity query.
async fn similar(
    t: &DynTransport,
    pattern: &str,
    vector: &[f64],
    k: usize,
    min_score: Option<f64>,
) -> Result<Vec<Scored>, String> {
    let pattern = SubjectPattern::new(pattern).map_err(context("pattern"))?;
    let mut q = SimilarityQuery::new(pattern, vector.to_vec(), k).map_err(context("query"))?;
    if let Some(min) = min_score {
        q = q.with_min_score(min).map_err(context("minimum score"))?;
    }
    t.similar(&q).await.map_err(context("similarity query"))
}

fn ids(got: &[Scored]) -> Vec<PacketId> {
    got.iter().map(|s| s.id()).collect()
}

fn agents(got: &[Scored]) -> Vec<String> {
    got.iter().map(|s| s.packet().agent_id.clone()).collect()
}

/// What an exact search over `stored` (packet id, vector) must answer, best
/// first, with scores.
fn expected(
    stored: &[(PacketId, Vec<f64>)],
    vector: &[f64],
    k: usize,
    min: f64,
) -> Vec<(PacketId, f64)> {
    let mut v: Vec<(PacketId, f64)> = stored
        .iter()
        .filter_map(|(id, cv)| cosine(vector, cv).map(|s| (*id, s)))
        .filter(|(_, s)| *s >= min)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

/// Check `got` against `want`: the same packets in the same order, scores
/// within 1e-9, each a packet of the store with its subject and id.
fn same_answer(what: &str, got: &[Scored], want: &[(PacketId, f64)]) -> CaseResult {
    let want_ids: Vec<PacketId> = want.iter().map(|(id, _)| *id).collect();
    ensure!(
        ids(got) == want_ids,
        "{what}: returned {:?} (agents {:?}), an exact search gives {:?}",
        ids(got),
        agents(got),
        want_ids
    );
    for (s, (_, score)) in got.iter().zip(want) {
        let close = (s.score - score).abs() < 1e-9;
        ensure!(
            close,
            "{what}: packet {} scored {}, its cosine similarity is {score}",
            s.id(),
            s.score
        );
        let body = s.packet().encode().map_err(context("re-encode"))?;
        ensure!(
            PacketId::of(&body) == s.id(),
            "{what}: packet {} came back with another body",
            s.id()
        );
    }
    ensure!(
        got.windows(2)
            .all(|w| rank(&w[0], &w[1]) != std::cmp::Ordering::Greater),
        "{what}: results are not best first"
    );
    Ok(())
}

/// 40 packets with known vectors: the best 5 and the best 40 for two query
/// vectors are exactly those an exact search finds, best first, with their
/// cosine similarities as scores.
pub async fn similar_finds_exact_neighbours(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut stored = Vec::new();
    let mut packets = Vec::new();
    for i in 0..40 {
        // Points spread over a quarter circle in 3 of 4 dimensions, with a
        // fourth that grows: no two at the same angle from the queries.
        let a = i as f64 * 0.039;
        let cv = [a.cos(), a.sin(), 0.1 + i as f64 * 0.013, 0.5];
        packets.push(with_vector(
            &format!("agent-{i}"),
            "hvac",
            "energy-anomaly",
            i,
            &cv,
        ));
    }
    let receipts = t
        .deposit_batch(&packets)
        .await
        .map_err(context("batch deposit"))?;
    for (r, p) in receipts.iter().zip(&packets) {
        stored.push((r.id, p.context_vector.clone()));
    }
    let all = format!("{prefix}.>");
    for query in [[0.9, 0.45, 0.3, 0.5], [0.1, 1.0, 0.6, 0.4]] {
        for k in [5, 40] {
            let got = similar(&t, &all, &query, k, None).await?;
            same_answer(
                &format!("k = {k}, query {query:?}"),
                &got,
                &expected(&stored, &query, k, -1.0),
            )?;
        }
    }
    // One packet deposited on its own: it is found at once.
    let late = with_vector("late", "hvac", "energy-anomaly", 99, &[0.9, 0.45, 0.3, 0.5]);
    let r = deposit(&t, &late).await?;
    let got = similar(&t, &all, &late.context_vector, 1, None).await?;
    ensure!(
        ids(&got) == vec![r.id],
        "a packet just deposited with the query's own vector was not the nearest: got agents {:?}",
        agents(&got)
    );
    ensure!(
        got[0].subject() == r.subject.as_str(),
        "the result's subject {} is not the deposit's {}",
        got[0].subject(),
        r.subject
    );
    Ok(())
}

/// At resolution 4, 0.249 and 0.251 land in different fingerprint buckets,
/// yet they are each other's nearest neighbours, nearer than a packet that
/// shares 0.249's bucket: a similarity query under the readable subject
/// finds them across the edge, and the result feeds synthesis.
pub async fn similar_bridges_bucket_edges(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let below = [0.249, 0.5, 0.5, 0.5];
    let above = [0.251, 0.5, 0.5, 0.5];
    let same_bucket = [0.0, 0.5, 0.5, 0.5];
    let fp = |cv: &[f64]| Fingerprint::compute("hvac", "energy-anomaly", cv, 4).unwrap();
    ensure!(
        fp(&below) != fp(&above) && fp(&below) == fp(&same_bucket),
        "test premise: 0.249 and 0.251 should be in different buckets at resolution 4"
    );
    let a = with_vector("agent-a", "hvac", "energy-anomaly", 1, &below);
    let c = with_vector("agent-c", "hvac", "energy-anomaly", 2, &same_bucket);
    let far = with_vector(
        "agent-far",
        "hvac",
        "energy-anomaly",
        3,
        &[0.9, 0.0, 0.1, 0.0],
    );
    let mut receipts = Vec::new();
    for p in [&a, &c, &far] {
        receipts.push(
            t.deposit_fingerprinted(p, 4)
                .await
                .map_err(context("fingerprinted deposit"))?,
        );
    }
    let own = with_vector("agent-b", "hvac", "energy-anomaly", 4, &above);
    let readable = own.subject(&prefix).map_err(context("subject"))?;
    let got = similar(&t, &format!("{readable}.>"), &above, 2, None).await?;
    ensure!(
        agents(&got) == ["agent-a", "agent-c"],
        "the nearest to 0.251 should be 0.249 across the bucket edge, then the one in 0.249's bucket; got {:?}",
        agents(&got)
    );
    ensure!(
        got[0].subject() == receipts[0].subject.as_str(),
        "agent-a came back on {}, not its fingerprint leaf {}",
        got[0].subject(),
        receipts[0].subject
    );
    let near = got[0].score > 0.9999;
    ensure!(near, "0.249 vs 0.251 scored only {}", got[0].score);
    // The same through the convenience every device uses, fed to synthesis.
    let twins = t
        .similar_twins(&own, 10, Some(0.99))
        .await
        .map_err(context("similar_twins"))?;
    ensure!(
        agents(&twins) == ["agent-a"],
        "similar_twins with a 0.99 minimum gave {:?}",
        agents(&twins)
    );
    let s = synthesize(&own, &twins);
    ensure!(
        s.n_agents == 2,
        "synthesis of own + 1 similar twin counted {} agents",
        s.n_agents
    );
    Ok(())
}

/// With a minimum score, exactly the packets scoring at least it come back,
/// however large `k` is; a minimum nothing reaches gives nothing.
pub async fn similar_honours_min_score(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut stored = Vec::new();
    for i in 0..20 {
        let a = i as f64 * 0.08;
        let p = with_vector(
            &format!("agent-{i}"),
            "hvac",
            "filter-clog",
            i,
            &[a.cos(), a.sin()],
        );
        let r = deposit(&t, &p).await?;
        stored.push((r.id, p.context_vector));
    }
    let all = format!("{prefix}.>");
    let query = [1.0, 0.0];
    for min in [0.95, 0.5, -1.0] {
        let got = similar(&t, &all, &query, 100, Some(min)).await?;
        let want = expected(&stored, &query, 100, min);
        same_answer(&format!("minimum score {min}"), &got, &want)?;
        ensure!(
            got.iter().all(|s| s.score >= min),
            "a packet below the minimum score {min} came back"
        );
    }
    ensure!(
        expected(&stored, &query, 100, 0.95).len() < 20,
        "test premise: some packets score below 0.95"
    );
    let none = similar(&t, &all, &[-1.0, -0.01], 100, Some(0.9)).await?;
    ensure!(
        none.is_empty(),
        "a minimum no packet reaches gave {} packets",
        none.len()
    );
    Ok(())
}

/// A vector of another length never matches, whatever its numbers; a zero
/// vector, stored or asked, matches nothing.
pub async fn similar_never_matches_other_lengths(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let shapes: [&[f64]; 6] = [
        &[1.0, 0.0, 0.0],
        &[1.0, 0.0, 0.0, 0.0],
        &[1.0, 0.0, 0.0, 0.0, 0.0],
        &[1.0],
        &[],
        &[0.0, 0.0, 0.0, 0.0],
    ];
    let mut by_len = Vec::new();
    for (i, cv) in shapes.iter().enumerate() {
        let r = deposit(
            &t,
            &with_vector(&format!("len-{i}"), "hvac", "bearing-wear", i, cv),
        )
        .await?;
        by_len.push(r.id);
    }
    let all = format!("{prefix}.>");
    let got = similar(&t, &all, &[1.0, 0.0, 0.0, 0.0], 10, None).await?;
    ensure!(
        ids(&got) == vec![by_len[1]],
        "a 4-long query matched {:?}; only the 4-long non-zero vector may match",
        agents(&got)
    );
    let got = similar(&t, &all, &[0.5, 0.5, 0.5], 10, None).await?;
    ensure!(
        ids(&got) == vec![by_len[0]],
        "a 3-long query matched {:?}",
        agents(&got)
    );
    let got = similar(&t, &all, &[2.0], 10, None).await?;
    ensure!(
        ids(&got) == vec![by_len[3]],
        "a 1-long query matched {:?}",
        agents(&got)
    );
    for zero in [&[0.0, 0.0, 0.0, 0.0][..], &[]] {
        let got = similar(&t, &all, zero, 10, None).await?;
        ensure!(
            got.is_empty(),
            "a zero query vector of length {} matched {:?}",
            zero.len(),
            agents(&got)
        );
    }
    Ok(())
}

/// A packet deposited twice, and once more on its fingerprint leaf (the same
/// packet id), comes back once.
pub async fn similar_returns_a_redeposit_once(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let p = with_vector("agent-a", "hvac", "voltage-sag", 1, &[0.3, 0.4, 0.5]);
    let first = deposit(&t, &p).await?;
    deposit(&t, &p).await?;
    t.deposit_fingerprinted(&p, 4)
        .await
        .map_err(context("fingerprinted re-deposit"))?;
    let q = with_vector("agent-b", "hvac", "voltage-sag", 2, &[0.3, 0.4, 0.6]);
    let other = deposit(&t, &q).await?;
    let got = similar(&t, &format!("{prefix}.>"), &[0.3, 0.4, 0.5], 10, None).await?;
    ensure!(
        ids(&got) == vec![first.id, other.id],
        "expected the re-deposited packet once, then the other; got agents {:?}",
        agents(&got)
    );
    let twins = t
        .similar_twins(&p, 10, None)
        .await
        .map_err(context("similar_twins"))?;
    let unique: HashSet<PacketId> = ids(&twins).into_iter().collect();
    ensure!(
        unique.len() == twins.len() && twins.len() == 2,
        "similar_twins over the readable subject and its leaves gave {:?}",
        agents(&twins)
    );
    Ok(())
}

/// Only subjects the pattern matches are searched: exact subjects, `*`, `>`,
/// fingerprint leaves; nothing under another prefix; a pattern that can
/// match nothing under the prefix is refused.
pub async fn similar_respects_patterns(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let cv = [0.18, 0.92, 0.03, 0.71];
    let hvac_energy = with_vector("a", "hvac", "energy-anomaly", 1, &cv);
    let hvac_filter = with_vector("b", "hvac", "filter-clog", 2, &cv);
    let boiler_energy = with_vector("c", "boiler", "energy-anomaly", 3, &cv);
    let leaf = with_vector("d", "hvac", "energy-anomaly", 4, &cv);
    for p in [&hvac_energy, &hvac_filter, &boiler_energy] {
        deposit(&t, p).await?;
    }
    t.deposit_fingerprinted(&leaf, 4)
        .await
        .map_err(context("fingerprinted deposit"))?;
    let cases: [(String, &[&str]); 7] = [
        (format!("{prefix}.>"), &["a", "b", "c", "d"]),
        (format!("{prefix}.hvac.*"), &["a", "b"]),
        (format!("{prefix}.*.energy-anomaly"), &["a", "c"]),
        (format!("{prefix}.hvac.energy-anomaly"), &["a"]),
        (format!("{prefix}.hvac.energy-anomaly.>"), &["d"]),
        (format!("{prefix}.hvac.>"), &["a", "b", "d"]),
        (format!("{prefix}.*.*.*"), &["d"]),
    ];
    for (pattern, want) in cases {
        let got = similar(&t, &pattern, &cv, 10, None).await?;
        let mut got = agents(&got);
        got.sort();
        ensure!(
            got == want,
            "pattern {pattern} matched agents {got:?}, expected {want:?}"
        );
    }
    let e = t
        .similar(
            &SimilarityQuery::new(SubjectPattern::new("elsewhere.>").unwrap(), cv.to_vec(), 10)
                .unwrap(),
        )
        .await;
    ensure!(
        matches!(&e, Err(e) if e.kind() == ErrorKind::InvalidSubject),
        "a pattern outside the prefix gave {e:?}, not InvalidSubject"
    );
    // Another prefix on the same backend sees none of it.
    let other_prefix = Subject::new(format!("{}x.iot", prefix.tokens().next().unwrap()))
        .map_err(context("other prefix"))?;
    let other = open(&b, &other_prefix).await?;
    let got = similar(&other, &format!("{other_prefix}.>"), &cv, 10, None).await?;
    ensure!(
        got.is_empty(),
        "a transport on prefix {other_prefix} found {:?} deposited under {prefix}",
        agents(&got)
    );
    other.close().await.map_err(context("close"))?;
    Ok(())
}
