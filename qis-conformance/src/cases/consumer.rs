//! Durable consumers: resuming by name, the ack wait, nak, and sharing one
//! consumer's work.

use std::time::{Duration, Instant};

use qis_core::{OutcomeTransportExt, StartPosition, Subject};

use super::{deposit, open, reader};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{
    assert_unique, collect, collect_unacked, consumer, context, pkt, quiet, seq_of, CaseResult,
};

/// A consumer opened again by name on another handle ("another process")
/// resumes after its last ack: nothing acked comes back, nothing is skipped.
pub async fn consumer_resumes_by_name_after_last_ack(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let packets: Vec<_> = (0..20)
        .map(|i| pkt("device", "hvac", "energy-anomaly", i))
        .collect();
    t.deposit_batch(&packets)
        .await
        .map_err(context("deposit"))?;
    let c = consumer(
        &*t,
        "roamer",
        &format!("{prefix}.hvac.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let first = collect(&c, 10, Duration::from_secs(20)).await?;
    c.close().await.map_err(context("close consumer"))?;
    t.close().await.map_err(context("close transport"))?;
    drop(c);
    drop(t);

    // Another "process": a new transport handle, the same consumer name.
    let t2 = open(&b, &prefix).await?;
    let c2 = consumer(
        &*t2,
        "roamer",
        &format!("{prefix}.hvac.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let rest = collect(&c2, 10, Duration::from_secs(20)).await?;
    let mut seqs: Vec<usize> = first.iter().chain(&rest).map(seq_of).collect();
    let before = seqs.clone();
    seqs.sort_unstable();
    ensure!(
        seqs == (0..20).collect::<Vec<_>>(),
        "after resume, got {before:?}: acked packets came back or some were skipped"
    );
    let extra = quiet(&c2, Duration::from_millis(500)).await?;
    ensure!(
        extra.is_empty(),
        "{} acked packets were delivered again after resume",
        extra.len()
    );
    Ok(())
}

/// A delivery not acked comes back after the ack wait (not well before it)
/// with a higher delivery count, and not again once acked.
pub async fn unacked_delivery_comes_back_after_ack_wait(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let r = deposit(&t, &pkt("device", "hvac", "energy-anomaly", 1)).await?;
    let c = reader(&t, "forgetful", &prefix, Duration::from_secs(1)).await?;
    let first = collect_unacked(&c, 1, Duration::from_secs(10)).await?;
    ensure!(first[0].id() == r.id, "fetched another packet");
    let started = Instant::now();
    let again = collect_unacked(&c, 1, Duration::from_secs(20))
        .await
        .map_err(|m| format!("the unacked packet was not redelivered: {m}"))?;
    ensure!(again[0].id() == r.id, "redelivered another packet");
    ensure!(
        again[0].delivery_count >= 2,
        "redelivery has delivery_count {}",
        again[0].delivery_count
    );
    ensure!(
        started.elapsed() >= Duration::from_millis(500),
        "redelivered after {:?}, well before the 1 s ack wait",
        started.elapsed()
    );
    c.ack(&again).await.map_err(context("ack"))?;
    let extra = quiet(&c, Duration::from_millis(2500)).await?;
    ensure!(extra.is_empty(), "an acked packet was delivered again");
    Ok(())
}

/// A nak'd delivery comes back at once, long before its ack wait.
pub async fn nak_redelivers(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let r = deposit(&t, &pkt("device", "hvac", "energy-anomaly", 1)).await?;
    let c = reader(&t, "picky", &prefix, Duration::from_secs(60)).await?;
    let first = collect_unacked(&c, 1, Duration::from_secs(10)).await?;
    c.nak(&first[0], Duration::ZERO)
        .await
        .map_err(context("nak"))?;
    let again = collect(&c, 1, Duration::from_secs(10)).await.map_err(|m| {
        format!("a nak'd packet was not redelivered well before its 60 s ack wait: {m}")
    })?;
    ensure!(again[0].id() == r.id, "redelivered another packet");
    ensure!(
        again[0].delivery_count >= 2,
        "redelivery has delivery_count {}",
        again[0].delivery_count
    );
    Ok(())
}

/// Two handles on one named consumer share its work: 200 packets, each
/// delivered to one of them.
pub async fn shared_consumer_splits_work(b: DynBackend, prefix: Subject) -> CaseResult {
    let t1 = open(&b, &prefix).await?;
    let t2 = open(&b, &prefix).await?;
    let (c1, c2) = futures::future::join(
        reader(&t1, "workers", &prefix, Duration::from_secs(60)),
        reader(&t2, "workers", &prefix, Duration::from_secs(60)),
    )
    .await;
    let (c1, c2) = (c1?, c2?);
    let packets: Vec<_> = (0..200)
        .map(|i| pkt("producer", "hvac", "energy-anomaly", i))
        .collect();
    t1.deposit_batch(&packets)
        .await
        .map_err(context("deposit"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < 200 && Instant::now() < deadline {
        let (a, b2) = futures::future::join(
            c1.fetch(50, Duration::from_millis(300)),
            c2.fetch(50, Duration::from_millis(300)),
        )
        .await;
        let (a, b2) = (
            a.map_err(context("fetch 1"))?,
            b2.map_err(context("fetch 2"))?,
        );
        c1.ack(&a).await.map_err(context("ack 1"))?;
        c2.ack(&b2).await.map_err(context("ack 2"))?;
        got.extend(a);
        got.extend(b2);
    }
    ensure!(
        got.len() == 200,
        "two workers received {} of 200 packets within 30 s",
        got.len()
    );
    assert_unique(&got, "shared consumer")?;
    Ok(())
}
