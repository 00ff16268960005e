//! Malformed packets: refused on the way in, skipped on the way out.

use std::time::Duration;

use qis_core::{DynTransport, EncodedPacket, ErrorKind, OutcomeTransportExt, Subject};

use super::{deposit, open};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{
    collect, context, ids, next_is, next_live, nothing_more, pkt, reader, refused, subscribe,
    CaseResult,
};

/// Write garbage on `<prefix>.hvac.energy-anomaly` as a foreign publisher
/// would: bytes that are no JSON, JSON that is no packet, an invalid packet
/// and an oversize one.
async fn inject_garbage(b: &DynBackend, t: &DynTransport, prefix: &Subject) -> CaseResult {
    let subject = format!("{prefix}.hvac.energy-anomaly");
    for g in garbage() {
        b.inject_raw(t, &subject, &g)
            .await
            .map_err(context("inject garbage"))?;
    }
    Ok(())
}

fn garbage() -> Vec<Vec<u8>> {
    let oversize = format!(
        "{{\"agent_id\": \"x\", \"domain\": \"hvac\", \"problem_class\": \"energy-anomaly\", \"conclusion\": \"{}\", \"confidence\": 0.5, \"context_vector\": [], \"timestamp\": 1.0, \"source_node\": \"n\"}}",
        "y".repeat(600)
    );
    vec![
        b"\x00\xff garbage".to_vec(),
        b"[1,2,3]".to_vec(),
        br#"{"agent_id": "x", "domain": "hvac", "problem_class": "energy-anomaly", "conclusion": "c", "confidence": 1.5, "context_vector": [], "timestamp": 1.0, "source_node": "n"}"#.to_vec(),
        oversize.into_bytes(),
    ]
}

/// Invalid packets (confidence out of range, oversize, a dotted domain, a
/// subject outside the prefix, a bad packet in a batch) are refused with the
/// right error kind, and none of them is stored.
pub async fn invalid_packets_rejected_before_send(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut bad = pkt("device", "hvac", "energy-anomaly", 1);
    bad.confidence = 1.5;
    refused(
        "a confidence of 1.5",
        ErrorKind::InvalidPacket,
        t.deposit(&bad).await,
    )?;
    let mut big = pkt("device", "hvac", "energy-anomaly", 2);
    big.conclusion = "x".repeat(600);
    refused(
        "a 600-byte conclusion",
        ErrorKind::PacketTooLarge,
        t.deposit(&big).await,
    )?;
    let mut bad_domain = pkt("device", "hvac", "energy-anomaly", 3);
    bad_domain.domain = "hvac.zone1".into();
    let err = t
        .deposit(&bad_domain)
        .await
        .err()
        .ok_or("a dotted domain was accepted")?;
    ensure!(
        err.kind() == ErrorKind::InvalidPacket || err.kind() == ErrorKind::InvalidSubject,
        "dotted domain gave {err}"
    );
    let outside = EncodedPacket::new(
        &pkt("device", "hvac", "energy-anomaly", 4),
        Subject::new("elsewhere.hvac.x").unwrap(),
    )
    .unwrap();
    refused(
        "a subject outside the prefix",
        ErrorKind::InvalidSubject,
        t.deposit_encoded(&outside).await,
    )?;
    let batch = vec![pkt("device", "hvac", "energy-anomaly", 5), bad.clone()];
    refused(
        "a batch with a bad packet",
        ErrorKind::InvalidPacket,
        t.deposit_batch(&batch).await,
    )?;

    let sentinel = deposit(&t, &pkt("device", "hvac", "energy-anomaly", 6)).await?;
    let c = reader(&*t, "auditor", &prefix, Duration::from_secs(60)).await?;
    next_is(&c, &sentinel, "something rejected was stored").await?;
    nothing_more(
        &c,
        Duration::from_millis(300),
        "rejected packets were stored",
    )
    .await
}

/// Garbage written between valid packets by a foreign publisher is skipped,
/// counted and never redelivered; the valid packets arrive in order.
pub async fn garbage_is_skipped_durable(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let c = reader(&*t, "sturdy", &prefix, Duration::from_secs(1)).await?;
    let a = deposit(&t, &pkt("device", "hvac", "energy-anomaly", 1)).await?;
    inject_garbage(&b, &t, &prefix).await?;
    let rest: Vec<_> = (2..4)
        .map(|i| pkt("device", "hvac", "energy-anomaly", i))
        .collect();
    let rs = t.deposit_batch(&rest).await.map_err(context("deposit"))?;
    let got = collect(&c, 3, Duration::from_secs(15)).await?;
    let want = vec![a.id, rs[0].id, rs[1].id];
    ensure!(
        ids(&got) == want,
        "expected the three valid packets in order around the garbage, got {:?}",
        ids(&got)
    );
    ensure!(
        c.malformed_skipped() >= 4,
        "malformed_skipped() is {}, expected ≥ 4",
        c.malformed_skipped()
    );
    // Garbage is not redelivered: wait past the 1 s ack wait.
    nothing_more(
        &c,
        Duration::from_millis(2500),
        "garbage or acked packets came back after the valid ones",
    )
    .await
}

/// Garbage written by a foreign publisher never reaches a live subscription;
/// the valid packet after it does.
pub async fn garbage_is_skipped_live(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut sub = subscribe(&*t, &format!("{prefix}.>")).await?;
    inject_garbage(&b, &t, &prefix).await?;
    let r = deposit(&t, &pkt("device", "hvac", "energy-anomaly", 1)).await?;
    let got = next_live(&mut sub, Duration::from_secs(10))
        .await?
        .ok_or("the valid packet after the garbage did not arrive live within 10 s")?;
    ensure!(
        got.id == r.id,
        "live delivered something other than the valid packet: {:?}",
        got.packet
    );
    Ok(())
}
