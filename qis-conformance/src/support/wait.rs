//! Bounded waits: each ends by its deadline, and a wait for something that
//! must happen fails with a message saying what did not.

use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use qis_core::{Delivery, DurableConsumer, LiveSubscription, Received};

use super::{context, CaseResult, InOrder};

/// Fetch and ack until `n` deliveries arrived; fails if they did not within
/// `within`.
pub async fn collect(
    consumer: &Arc<dyn DurableConsumer>,
    n: usize,
    within: Duration,
) -> Result<Vec<Delivery>, String> {
    fetch_until(consumer, n, within, true).await
}

/// [`collect`] without acking: the deliveries come back after the ack wait.
pub async fn collect_unacked(
    consumer: &Arc<dyn DurableConsumer>,
    n: usize,
    within: Duration,
) -> Result<Vec<Delivery>, String> {
    fetch_until(consumer, n, within, false).await
}

/// Fetch (at most `max` at a time) and ack until `n` packets arrived, each
/// once and in order within its stream ([`InOrder`]): `stream_of` says
/// which stream a delivery belongs to and its number there, or why it
/// should not have come. Fails if a fetch returns more than `max`, or if
/// the `n` did not arrive within `within`.
pub async fn collect_in_order<S, F>(
    consumer: &Arc<dyn DurableConsumer>,
    n: usize,
    max: usize,
    within: Duration,
    mut stream_of: F,
) -> CaseResult
where
    S: Eq + Hash + Display,
    F: FnMut(&Delivery) -> Result<(S, usize), String>,
{
    let deadline = Instant::now() + within;
    let mut order = InOrder::new();
    while order.count() < n {
        if Instant::now() >= deadline {
            return Err(format!(
                "consumer {} received {} of {n} packets within {within:?}",
                consumer.name(),
                order.count()
            ));
        }
        let got = consumer
            .fetch(max, Duration::from_secs(2))
            .await
            .map_err(context("fetch"))?;
        if got.len() > max {
            return Err(format!("fetch({max}) returned {}", got.len()));
        }
        for d in &got {
            let (stream, seq) = stream_of(d)?;
            order.check(d.id(), stream, seq)?;
        }
        consumer.ack(&got).await.map_err(context("ack"))?;
    }
    Ok(())
}

async fn fetch_until(
    consumer: &Arc<dyn DurableConsumer>,
    n: usize,
    within: Duration,
    ack: bool,
) -> Result<Vec<Delivery>, String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "consumer {} received {} of {n} expected packets within {within:?}",
                consumer.name(),
                out.len()
            ));
        }
        let batch = consumer
            .fetch((n - out.len()).min(500), left.min(Duration::from_secs(2)))
            .await
            .map_err(context("fetch"))?;
        if ack && !batch.is_empty() {
            consumer.ack(&batch).await.map_err(context("ack"))?;
        }
        out.extend(batch);
    }
    Ok(out)
}

/// Fetch (and ack) for all of `window`, returning whatever arrived: for
/// checking that nothing more comes.
pub async fn quiet(
    consumer: &Arc<dyn DurableConsumer>,
    window: Duration,
) -> Result<Vec<Delivery>, String> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(out);
        }
        let batch = consumer.fetch(100, left).await.map_err(context("fetch"))?;
        if !batch.is_empty() {
            consumer.ack(&batch).await.map_err(context("ack"))?;
        }
        out.extend(batch);
    }
}

/// The next live packet within `within`: `None` if nothing arrived, `Err` if
/// the stream failed or ended.
pub async fn next_live(
    subscription: &mut LiveSubscription,
    within: Duration,
) -> Result<Option<Received>, String> {
    match tokio::time::timeout(within, subscription.next()).await {
        Ok(Some(Ok(r))) => Ok(Some(r)),
        Ok(Some(Err(err))) => Err(format!("live stream error: {err}")),
        Ok(None) => Err("live stream ended".into()),
        Err(_) => Ok(None),
    }
}

/// Check `holds` every few milliseconds until it is true; fails with
/// "`what` did not happen within `within`" if it never is.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut holds: F) -> CaseResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if holds().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} did not happen within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Check `get` every few milliseconds until it gives a value, and return
/// it; fails with "`what` did not happen within `within`" if it never does.
/// [`eventually`] for a condition that carries a result.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut get: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = get().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} did not happen within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
