//! Durable consumers: resuming by name, the ack wait, nak, acks only on the
//! handle that fetched, and sharing one consumer's work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qis_core::{Delivery, DurableConsumer, ErrorKind, Subject};

use super::{deposit, open};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{
    assert_unique, collect, collect_unacked, consumer_from_start, context, deposit_seqs,
    nothing_more, pkt, quiet, reader, seq_of, wait_for, CaseResult,
};

/// A consumer opened again by name on another handle ("another process")
/// resumes after its last ack: nothing acked comes back, nothing is skipped.
pub async fn consumer_resumes_by_name_after_last_ack(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    deposit_seqs(&*t, "device", "hvac", "energy-anomaly", 0..20).await?;
    let roamer = format!("{prefix}.hvac.>");
    let c = consumer_from_start(&*t, "roamer", &roamer, Duration::from_secs(60)).await?;
    let first = collect(&c, 10, Duration::from_secs(20)).await?;
    c.close().await.map_err(context("close consumer"))?;
    t.close().await.map_err(context("close transport"))?;
    drop(c);
    drop(t);

    // Another "process": a new transport handle, the same consumer name.
    let t2 = open(&b, &prefix).await?;
    let c2 = consumer_from_start(&*t2, "roamer", &roamer, Duration::from_secs(60)).await?;
    let rest = collect(&c2, 10, Duration::from_secs(20)).await?;
    let mut seqs: Vec<usize> = first.iter().chain(&rest).map(seq_of).collect();
    let before = seqs.clone();
    seqs.sort_unstable();
    ensure!(
        seqs == (0..20).collect::<Vec<_>>(),
        "after resume, got {before:?}: acked packets came back or some were skipped"
    );
    nothing_more(&c2, Duration::from_millis(500), "redelivered after resume").await?;
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
    let c = reader(&*t, "forgetful", &prefix, Duration::from_secs(1)).await?;
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
    nothing_more(&c, Duration::from_millis(2500), "an acked packet came back").await?;
    Ok(())
}

/// A nak'd delivery comes back at once, long before its ack wait.
pub async fn nak_redelivers(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let r = deposit(&t, &pkt("device", "hvac", "energy-anomaly", 1)).await?;
    let c = reader(&*t, "picky", &prefix, Duration::from_secs(60)).await?;
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

/// A delivery acked or nak-ed on a consumer handle that did not hand it out
/// (another consumer; another handle of the same consumer, on this transport
/// or on another one opened on the prefix: "another process") is
/// `InvalidInput`, and changes nothing: the delivery stays pending, comes
/// back after its ack wait (not at once, as the refused nak would have made
/// it), and the handle that fetched it acks it.
pub async fn ack_on_another_consumer_is_invalid_input(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let elsewhere = open(&b, &prefix).await?;
    let caps = t.capabilities();
    let r = deposit(&t, &pkt("device", "hvac", "energy-anomaly", 1)).await?;
    let ack_wait = Duration::from_secs(2);
    // The handles of the consumer "owner"; whichever fetches the packet
    // owns that delivery, the others did not hand it out.
    let mut handles = vec![("owner", reader(&*t, "owner", &prefix, ack_wait).await?)];
    if caps.shared_consumers {
        handles.push((
            "another handle of owner",
            reader(&*t, "owner", &prefix, ack_wait).await?,
        ));
        handles.push((
            "owner on another transport",
            reader(&*elsewhere, "owner", &prefix, ack_wait).await?,
        ));
    }
    let other = reader(&*t, "other", &prefix, ack_wait).await?;

    let (fetcher, got) = fetch_one(&handles, Duration::from_secs(10))
        .await
        .map_err(|m| format!("the packet was not delivered: {m}"))?;
    let fetched_at = Instant::now();
    ensure!(got.id() == r.id, "fetched another packet");
    let got = [got];
    let mut wrong: Vec<(&str, &Arc<dyn DurableConsumer>)> = handles
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != fetcher)
        .map(|(_, (who, c))| (*who, c))
        .collect();
    wrong.push(("another consumer", &other));
    for (who, c) in wrong {
        match c.ack(&got).await {
            Err(err) => ensure!(
                err.kind() == ErrorKind::InvalidInput,
                "ack on {who} (did not fetch it) gave {err}, not InvalidInput"
            ),
            Ok(()) => return Err(format!("ack on {who} (did not fetch it) succeeded")),
        }
        // Without the nak capability the layer refuses every nak first.
        let expected = if caps.nak {
            ErrorKind::InvalidInput
        } else {
            ErrorKind::Unsupported
        };
        match c.nak(&got[0], Duration::ZERO).await {
            Err(err) => ensure!(
                err.kind() == expected,
                "nak on {who} (did not fetch it) gave {err}, not {expected:?}"
            ),
            Ok(()) => return Err(format!("nak on {who} (did not fetch it) succeeded")),
        }
    }

    // Nothing was acked or nak-ed: the delivery comes back after its ack wait.
    let (refetcher, again) = fetch_one(&handles, Duration::from_secs(20))
        .await
        .map_err(|m| {
            format!(
                "the packet was not redelivered after its ack wait (a refused ack acked it?): {m}"
            )
        })?;
    ensure!(again.id() == r.id, "redelivered another packet");
    ensure!(
        again.delivery_count >= 2,
        "redelivery has delivery_count {}",
        again.delivery_count
    );
    ensure!(
        fetched_at.elapsed() >= Duration::from_secs(1),
        "redelivered after {:?}, well before the 2 s ack wait: a refused nak took effect",
        fetched_at.elapsed()
    );
    // The handle that handed out the redelivery acks it; then it is done.
    let (who, c) = &handles[refetcher];
    c.ack(std::slice::from_ref(&again))
        .await
        .map_err(|e| format!("ack on {who}, which fetched the redelivery: {e}"))?;
    let extra = futures::future::join_all(
        handles
            .iter()
            .map(|(_, c)| quiet(c, Duration::from_millis(2500))),
    )
    .await;
    for (got, (who, _)) in extra.into_iter().zip(&handles) {
        let got = got?;
        ensure!(
            got.is_empty(),
            "{} acked packets were delivered again to {who}",
            got.len()
        );
    }
    Ok(())
}

/// Fetch from all `handles` at once until one of them hands out a delivery:
/// which one, and the delivery (not acked).
async fn fetch_one(
    handles: &[(&str, Arc<dyn DurableConsumer>)],
    within: Duration,
) -> Result<(usize, Delivery), String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no handle received it within {within:?}"));
        }
        let wait = left.min(Duration::from_millis(500));
        let batches =
            futures::future::join_all(handles.iter().map(|(_, c)| c.fetch(1, wait))).await;
        let mut found = None;
        for (i, batch) in batches.into_iter().enumerate() {
            let batch = batch.map_err(context("fetch"))?;
            for d in batch {
                ensure!(
                    found.is_none(),
                    "one packet was handed out to two handles of one consumer at once"
                );
                found = Some((i, d));
            }
        }
        if let Some(found) = found {
            return Ok(found);
        }
    }
}

/// Two handles on one named consumer share its work: 200 packets, each
/// delivered to one of them.
pub async fn shared_consumer_splits_work(b: DynBackend, prefix: Subject) -> CaseResult {
    let t1 = open(&b, &prefix).await?;
    let t2 = open(&b, &prefix).await?;
    let (c1, c2) = futures::future::join(
        reader(&*t1, "workers", &prefix, Duration::from_secs(60)),
        reader(&*t2, "workers", &prefix, Duration::from_secs(60)),
    )
    .await;
    let (c1, c2) = (c1?, c2?);
    deposit_seqs(&*t1, "producer", "hvac", "energy-anomaly", 0..200).await?;
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

/// A consumer's backlog counts what waits and what it holds unacked, on the
/// handle and in the transport's list of consumers (read from another
/// handle, without opening it); acking moves both.
pub async fn consumers_listed_with_backlog(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    deposit_seqs(&*t, "device", "hvac", "energy-anomaly", 0..5).await?;
    let c = reader(&*t, "counted", &prefix, Duration::from_secs(60)).await?;
    let held = collect_unacked(&c, 2, Duration::from_secs(20)).await?;
    let own = c.backlog().await.map_err(context("backlog"))?;
    ensure!(
        own.waiting + own.unacked == 5 && own.unacked >= 2,
        "with 5 stored and {} held: {own:?}",
        held.len()
    );
    let other = open(&b, &prefix).await?;
    let listed = |want: u64| {
        let other = other.clone();
        async move {
            let all = other.consumers().await.ok()?;
            let c = all.into_iter().find(|c| c.name == "counted")?;
            (c.backlog.waiting + c.backlog.unacked == want).then_some(c)
        }
    };
    wait_for(
        "the consumer listed with 5 waiting or unacked",
        Duration::from_secs(20),
        || listed(5),
    )
    .await?;
    c.ack(&held).await.map_err(context("ack"))?;
    c.close().await.map_err(context("close consumer"))?;
    let after = wait_for(
        "the listed backlog to drop to 3 once 2 were acked",
        Duration::from_secs(20),
        || listed(3),
    )
    .await?;
    ensure!(
        after
            .pattern
            .as_deref()
            .is_none_or(|p| p == format!("{prefix}.>")),
        "listed with pattern {:?}",
        after.pattern
    );
    other.close().await.map_err(context("close"))?;
    t.close().await.map_err(context("close transport"))
}
