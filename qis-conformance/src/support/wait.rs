//! Bounded waits: each ends by its deadline, and a wait for something that
//! must happen fails with a message saying what did not.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use qis_core::{Delivery, DurableConsumer, LiveSubscription, Received};

use super::{context, CaseResult};

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
