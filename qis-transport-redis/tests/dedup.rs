//! De-duplication on Redis, against the server at `QIS_REDIS_URL`: per
//! transport, not per subject, with the original's subject and position in
//! a duplicate's receipt, for the length of the window; atomic under
//! concurrent depositors of the same packets.
//!
//! Without the server the cases are ignored with the reason (a failure with
//! `QIS_REQUIRE_LIVE=1`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

mod common;

use common::live::{connect_with, deposit, live_trials};
use qis_conformance::ensure;
use qis_conformance::support::{context, pkt, CaseResult};
use qis_core::{EncodedPacket, OutcomeTransport, OutcomeTransportExt, Subject};

/// The packet [`deposit`] puts on `{prefix}.hvac.{problem}`.
fn packet(problem: &str, seq: usize) -> qis_core::OutcomePacket {
    pkt("redis-test", "hvac", problem, seq)
}

/// A packet deposited on its readable subject and then on its fingerprinted
/// one (or any other) is stored once; the second receipt is a duplicate
/// naming the original's subject and position, in a single deposit and in a
/// batch.
async fn duplicate_receipt_names_the_original(url: String, prefix: Subject) -> CaseResult {
    let t = connect_with(&url, &prefix, |c| c).await?;
    let p = packet("twice", 1);
    let original = t.deposit(&p).await.map_err(context("deposit"))?;
    let again = t
        .deposit_fingerprinted(&p, 4)
        .await
        .map_err(context("deposit fingerprinted"))?;
    ensure!(
        again.duplicate
            && again.id == original.id
            && again.subject == original.subject
            && again.position == original.position,
        "re-deposit on another subject: {again:?}, original {original:?}"
    );
    // In a batch: the original on one subject, the same packet on another.
    let q = packet("twice", 2);
    let batch = vec![
        EncodedPacket::readable(&q, &prefix).map_err(context("encode"))?,
        EncodedPacket::new(&q, Subject::new(format!("{prefix}.hvac.other")).unwrap())
            .map_err(context("encode"))?,
    ];
    let rs = t
        .deposit_encoded_batch(&batch)
        .await
        .map_err(context("batch"))?;
    ensure!(
        !rs[0].duplicate
            && rs[1].duplicate
            && rs[1].subject == rs[0].subject
            && rs[1].position == rs[0].position,
        "the same packet on two subjects in one batch: {rs:?}"
    );
    // Stored once: the other subject's stream was never written.
    let c = qis_conformance::support::open_consumer(&t, "all", &format!("{prefix}.>")).await?;
    let got = qis_conformance::support::quiet(&c, Duration::from_secs(1)).await?;
    ensure!(
        got.len() == 2,
        "{} deliveries of 2 distinct packets deposited 4 times",
        got.len()
    );
    Ok(())
}

/// A re-deposit is a duplicate within the window and stored again after it.
async fn dedup_window_expires(url: String, prefix: Subject) -> CaseResult {
    let t = connect_with(&url, &prefix, |c| {
        c.dedup_window(Duration::from_millis(300))
    })
    .await?;
    let first = deposit(&t, &prefix, "dup", 1).await?;
    let again = deposit(&t, &prefix, "dup", 1).await?;
    ensure!(
        again.duplicate && again.position == first.position,
        "re-deposit within the window: {again:?}"
    );
    let batch: Vec<EncodedPacket> = (0..3)
        .map(|_| EncodedPacket::readable(&packet("dup", 2), &prefix).unwrap())
        .collect();
    let rs = t
        .deposit_encoded_batch(&batch)
        .await
        .map_err(context("batch"))?;
    ensure!(
        !rs[0].duplicate && rs[1].duplicate && rs[2].duplicate,
        "a packet repeated in one batch: {rs:?}"
    );
    ensure!(
        rs[1].position == rs[0].position,
        "duplicate in a batch points elsewhere"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = deposit(&t, &prefix, "dup", 1).await?;
        if !r.duplicate {
            ensure!(
                r.position != first.position,
                "a fresh store reused the old position"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "still a duplicate 10 s after a 300 ms window"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let none = connect_with(&url, &prefix, |c| c.dedup_window(Duration::ZERO)).await?;
    let a = deposit(&none, &prefix, "nodedup", 1).await?;
    let b = deposit(&none, &prefix, "nodedup", 1).await?;
    ensure!(
        !a.duplicate && !b.duplicate && a.position != b.position,
        "dedup_window 0 still de-duplicated"
    );
    Ok(())
}

/// Depositors on their own connections deposit the same batch at once,
/// starting on a fresh de-duplication bucket (its first chunks are the ones
/// that create it): each packet is stored once, exactly one receipt per
/// packet is not a duplicate, every receipt of a packet names the same
/// position, and a consumer gets each packet once.
async fn concurrent_duplicates_store_once(url: String, prefix: Subject) -> CaseResult {
    const DEPOSITORS: usize = 6;
    const PACKETS: usize = 300;
    let batch: Vec<EncodedPacket> = (0..PACKETS)
        .map(|i| EncodedPacket::readable(&packet(&format!("p{}", i % 3), i), &prefix))
        .collect::<Result<_, _>>()
        .map_err(context("encode"))?;
    let mut ts = Vec::new();
    for _ in 0..DEPOSITORS {
        ts.push(connect_with(&url, &prefix, |c| c).await?);
    }
    let all = futures::future::join_all(ts.iter().map(|t| t.deposit_encoded_batch(&batch))).await;
    let mut stored = HashMap::new();
    let mut positions = HashMap::new();
    for rs in all {
        let rs = rs.map_err(context("concurrent batch"))?;
        ensure!(
            rs.len() == PACKETS,
            "{} receipts for {PACKETS} packets",
            rs.len()
        );
        for r in rs {
            if !r.duplicate {
                *stored.entry(r.id).or_insert(0) += 1;
            }
            let first = positions.entry(r.id).or_insert(r.position);
            ensure!(
                *first == r.position,
                "packet {} has receipts at {first} and {}",
                r.id,
                r.position
            );
        }
    }
    ensure!(
        stored.len() == PACKETS && stored.values().all(|n| *n == 1),
        "{} packets stored, {} of them more than once, by {DEPOSITORS} depositors of the same {PACKETS}",
        stored.len(),
        stored.values().filter(|n| **n > 1).count()
    );
    let c = qis_conformance::support::open_consumer(&ts[0], "all", &format!("{prefix}.>")).await?;
    let got = qis_conformance::support::quiet(&c, Duration::from_secs(1)).await?;
    let distinct: HashSet<_> = got.iter().map(|d| d.id()).collect();
    ensure!(
        got.len() == PACKETS && distinct.len() == PACKETS,
        "{} deliveries ({} distinct) of {PACKETS} packets",
        got.len(),
        distinct.len()
    );
    Ok(())
}

fn main() {
    qis_conformance::run_trials(live_trials!(
        duplicate_receipt_names_the_original,
        dedup_window_expires,
        concurrent_duplicates_store_once,
    ));
}
