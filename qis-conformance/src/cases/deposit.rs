//! Deposits: receipts, duplicates, batches, concurrency and order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use qis_core::{
    Delivery, DurableConsumer, DynTransport, EncodedPacket, OutcomeTransportExt, Receipt, Subject,
    DEFAULT_RESOLUTION,
};

use super::{deposit, open};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{
    assert_unique, collect, consumer_from_start, context, deposit_seqs, ids, nothing_more, pkt,
    reader, seq_of, CaseResult,
};

/// A deposit returns a receipt for the readable subject carrying the body's
/// SHA-256 id; a consumer then fetches exactly that packet, at the receipt's
/// position, as a first delivery.
pub async fn deposit_returns_receipt(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let p = pkt("agent-a", "hvac", "energy-anomaly", 1);
    let r = deposit(&t, &p).await?;
    let expected = EncodedPacket::readable(&p, &prefix).unwrap();
    ensure!(
        r.subject.as_str() == format!("{prefix}.hvac.energy-anomaly"),
        "receipt subject {} is not the readable subject",
        r.subject
    );
    ensure!(
        r.id == expected.id(),
        "receipt id is not the SHA-256 of the body"
    );
    ensure!(!r.duplicate, "a first deposit was reported as a duplicate");
    let c = reader(&*t, "reader", &prefix, Duration::from_secs(30)).await?;
    let got = collect(&c, 1, Duration::from_secs(10)).await?;
    ensure!(
        got[0].id() == r.id,
        "fetched a different packet id than deposited"
    );
    ensure!(
        got[0].packet() == &p,
        "fetched packet differs from the deposited one"
    );
    ensure!(
        got[0].subject() == r.subject.as_str(),
        "fetched subject differs"
    );
    ensure!(
        got[0].position == r.position,
        "fetched position {} differs from receipt {}",
        got[0].position,
        r.position
    );
    ensure!(
        got[0].delivery_count == 1,
        "first delivery has count {}",
        got[0].delivery_count
    );
    t.close().await.map_err(context("close"))
}

/// An identical re-deposit is reported as a duplicate with the same id and is
/// stored once.
pub async fn redeposit_is_recognised(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let p = pkt("agent-a", "hvac", "energy-anomaly", 1);
    let first = deposit(&t, &p).await?;
    let again = t.deposit(&p).await.map_err(context("re-deposit"))?;
    ensure!(
        again.duplicate,
        "an identical re-deposit was not recognised as a duplicate"
    );
    ensure!(again.id == first.id, "re-deposit changed the id");
    stored_once(&t, &prefix, &first).await.map(drop)
}

/// De-duplication is per transport, not per subject: a packet deposited on
/// its readable subject and then on its fingerprinted subject is stored
/// once, and the second receipt is a duplicate naming the original's
/// subject and position. A consumer on everything receives it once.
pub async fn duplicate_on_another_subject_names_the_original(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let p = pkt("agent-a", "hvac", "energy-anomaly", 1);
    let first = deposit(&t, &p).await?;
    let again = t
        .deposit_fingerprinted(&p, DEFAULT_RESOLUTION)
        .await
        .map_err(context("deposit on the fingerprinted subject"))?;
    let fingerprinted = p
        .fingerprinted_subject(&prefix, DEFAULT_RESOLUTION)
        .map_err(context("fingerprinted subject"))?;
    ensure!(
        again.duplicate,
        "the same packet on {fingerprinted} was stored again, not recognised as a duplicate of the one on {}",
        first.subject
    );
    ensure!(
        again.id == first.id,
        "the duplicate's receipt has another id"
    );
    ensure!(
        again.subject == first.subject,
        "the duplicate's receipt names {}, not the original's subject {}",
        again.subject,
        first.subject
    );
    ensure!(
        again.position == first.position,
        "the duplicate's receipt names {}, not the original's position {}",
        again.position,
        first.position
    );
    let got = stored_once(&t, &prefix, &first).await?;
    ensure!(
        got.subject() == first.subject.as_str(),
        "the packet arrived on {}, not on {}",
        got.subject(),
        first.subject
    );
    t.close().await.map_err(context("close"))
}

/// A batch of 500 returns its receipts in input order and is fetched in that
/// order.
pub async fn batch_deposit_keeps_order(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let receipts = deposit_seqs(&*t, "batcher", "hvac", "energy-anomaly", 0..500).await?;
    ensure!(
        receipts.len() == 500,
        "batch of 500 gave {} receipts",
        receipts.len()
    );
    for (i, r) in receipts.iter().enumerate() {
        let p = pkt("batcher", "hvac", "energy-anomaly", i);
        let id = EncodedPacket::readable(&p, &prefix).unwrap().id();
        ensure!(r.id == id, "receipts are not in input order");
        ensure!(!r.duplicate, "a fresh packet was reported duplicate");
    }
    let c = reader(&*t, "reader", &prefix, Duration::from_secs(60)).await?;
    let got = collect(&c, 500, Duration::from_secs(30)).await?;
    let seqs: Vec<usize> = got.iter().map(seq_of).collect();
    ensure!(
        seqs == (0..500).collect::<Vec<_>>(),
        "batch came back out of order: {:?}…",
        &seqs[..20.min(seqs.len())]
    );
    Ok(())
}

/// 50 concurrent depositors of 100 packets each: every packet is fetched
/// exactly once, and nothing more arrives.
pub async fn concurrent_depositors_nothing_lost_or_doubled(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut tasks = Vec::new();
    for w in 0..50 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let problem = [
                "energy-anomaly",
                "refrigerant-loss",
                "bearing-wear",
                "voltage-sag",
                "co2-spike",
            ][w % 5];
            let mut ids = Vec::with_capacity(100);
            for i in 0..100 {
                let r = t
                    .deposit(&pkt(&format!("agent-{w}"), "fleet", problem, i))
                    .await?;
                ids.push(r.id);
            }
            Ok::<_, qis_core::Error>(ids)
        }));
    }
    let mut expected = HashSet::new();
    for task in tasks {
        for id in task
            .await
            .map_err(|e| format!("depositor task: {e}"))?
            .map_err(context("concurrent deposit"))?
        {
            expected.insert(id);
        }
    }
    ensure!(
        expected.len() == 5000,
        "50 × 100 deposits gave {} distinct ids",
        expected.len()
    );
    let (c, got) = read_all(
        &t,
        &format!("{prefix}.fleet.*"),
        5000,
        "concurrent depositors",
    )
    .await?;
    let got_ids: HashSet<_> = ids(&got).into_iter().collect();
    ensure!(got_ids == expected, "fetched ids differ from deposited ids");
    nothing_more(&c, Duration::from_millis(500), "beyond the 5000 deposited").await?;
    Ok(())
}

/// One publisher's 1,000 packets over two subjects, deposited one by one and
/// in batches, arrive in its order on each subject.
pub async fn one_publisher_order_per_subject(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    // 1,000 packets from one publisher over two subjects: 200 one by one,
    // then 800 in batches of 100.
    let packets: Vec<_> = (0..1000)
        .map(|i| {
            pkt(
                "publisher",
                "hvac",
                if i % 2 == 0 {
                    "energy-anomaly"
                } else {
                    "refrigerant-loss"
                },
                i,
            )
        })
        .collect();
    for p in &packets[..200] {
        deposit(&t, p).await?;
    }
    for chunk in packets[200..].chunks(100) {
        t.deposit_batch(chunk)
            .await
            .map_err(context("batch deposit"))?;
    }
    let (_c, got) = read_all(&t, &format!("{prefix}.hvac.*"), 1000, "one publisher").await?;
    let mut last: HashMap<String, usize> = HashMap::new();
    for d in &got {
        let s = seq_of(d);
        if let Some(&prev) = last.get(d.subject()) {
            ensure!(
                s > prev,
                "on {} packet {s} arrived after {prev}",
                d.subject()
            );
        }
        last.insert(d.subject().to_string(), s);
    }
    ensure!(last.len() == 2, "expected two subjects, saw {}", last.len());
    Ok(())
}

/// After deposits of the packet of `first` (and its duplicates), a sentinel
/// is deposited; a new consumer must receive the packet once, then the
/// sentinel. The packet's delivery.
async fn stored_once(
    t: &DynTransport,
    prefix: &Subject,
    first: &Receipt,
) -> Result<Delivery, String> {
    let sentinel = deposit(t, &pkt("agent-b", "hvac", "energy-anomaly", 2)).await?;
    let c = reader(&**t, "reader", prefix, Duration::from_secs(30)).await?;
    let mut got = collect(&c, 2, Duration::from_secs(10)).await?;
    ensure!(
        ids(&got) == vec![first.id, sentinel.id],
        "expected the packet once then the sentinel, got {:?}",
        ids(&got)
    );
    Ok(got.swap_remove(0))
}

/// Open consumer `reader` on `pattern` from the start and collect `n`
/// packets (within 60 s), each exactly once (`who` names the depositors in
/// a failure); the consumer is returned to check that nothing more comes.
async fn read_all(
    t: &DynTransport,
    pattern: &str,
    n: usize,
    who: &str,
) -> Result<(Arc<dyn DurableConsumer>, Vec<Delivery>), String> {
    let c = consumer_from_start(&**t, "reader", pattern, Duration::from_secs(120)).await?;
    let got = collect(&c, n, Duration::from_secs(60)).await?;
    assert_unique(&got, who)?;
    Ok((c, got))
}
