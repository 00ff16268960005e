//! The forwarding loop of a bridge.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::{Bridge, BridgeStatus};
use crate::error::{Error, ErrorKind, Result};
use crate::packet::EncodedPacket;
use crate::subject::Subject;
use crate::transport::{ConsumerConfig, Delivery, DurableConsumer, DynTransport, StartPosition};

/// How long closing a side may take before the bridge gives up on it.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// What to do after a failure.
enum Next {
    Retry,
    Stop,
}

pub(super) struct Run<'a> {
    bridge: &'a Bridge,
    source: Option<DynTransport>,
    consumer: Option<Arc<dyn DurableConsumer>>,
    destination: Option<DynTransport>,
    /// Failures in a row (reset by a forwarded batch).
    failures: u32,
    last_backlog: Option<Instant>,
    last_report: Instant,
}

impl<'a> Run<'a> {
    pub(super) fn new(bridge: &'a Bridge) -> Self {
        Run {
            bridge,
            source: None,
            consumer: None,
            destination: None,
            failures: 0,
            last_backlog: None,
            last_report: Instant::now(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut BridgeStatus)) {
        f(&mut self.bridge.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Forward until `shutdown` completes (or, with `quiet`, until nothing
    /// arrived for that long), then finish the batch in hand and close.
    ///
    /// Batches are pipelined: while batch k is deposited on the destination,
    /// the source acks batch k-1 (deposited already: its receipts are in)
    /// and fetches batch k+1. Deposits stay one batch at a time and in
    /// order, and nothing is acked before the destination's receipts, so the
    /// pipeline changes the speed, not what a crash can lose: at most the
    /// batch deposited and the batch fetched ahead are unacked, and both come
    /// back to the consumer.
    pub(super) async fn forward<F>(
        mut self,
        shutdown: F,
        quiet: Option<Duration>,
    ) -> Result<BridgeStatus>
    where
        F: Future<Output = ()> + Send,
    {
        let config = self.bridge.config.clone();
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        let mut stop = false;
        // Fetched, to be deposited next.
        let mut held: Vec<Delivery> = Vec::new();
        // Fetched ahead while `held` was being deposited.
        let mut ahead: Option<Vec<Delivery>> = None;
        // Deposited (receipts in), not acked yet.
        let mut deposited: Vec<Delivery> = Vec::new();
        // Whether the last deposit went through: only then is a batch
        // fetched ahead (a failing destination holds one batch, not more).
        let mut destination_ok = true;
        // Since when fetches have come back empty (a failed fetch is not a
        // quiet source: it says nothing about what the source holds).
        let mut quiet_since: Option<Instant> = None;
        let fetch_wait = quiet.map_or(config.fetch_wait, |q| q.min(config.fetch_wait));
        let result = loop {
            if !stop && (&mut shutdown).now_or_never().is_some() {
                stop = true;
            }
            if held.is_empty() {
                held = ahead.take().unwrap_or_default();
            }
            if held.is_empty() {
                // Nothing in hand: ack what was deposited, then wait for more.
                if !deposited.is_empty() {
                    let batch = std::mem::take(&mut deposited);
                    let acked = match &self.consumer {
                        Some(c) => c.ack(&batch).await,
                        None => Ok(()),
                    };
                    if let Err(e) = self.acked(acked, &mut shutdown, &mut stop).await {
                        break Err(e);
                    }
                    continue;
                }
                let quiet_enough =
                    quiet.is_some_and(|q| quiet_since.is_some_and(|t| t.elapsed() >= q));
                if stop || quiet_enough {
                    break Ok(());
                }
                let started = Instant::now();
                let fetched = match self.consumer().await {
                    Ok(c) => c.fetch(config.batch, fetch_wait).await,
                    Err(e) => Err(e),
                };
                match fetched {
                    Ok(batch) if batch.is_empty() => {
                        quiet_since.get_or_insert(started);
                        self.report(false).await;
                        continue;
                    }
                    Ok(batch) => {
                        quiet_since = None;
                        held = batch;
                    }
                    Err(e) => {
                        quiet_since = None;
                        match self.failed(Side::Source, e, &mut shutdown, &mut stop).await {
                            Ok(Next::Retry) => continue,
                            Ok(Next::Stop) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                }
            }

            // Deposit `held`; meanwhile the source acks the batch deposited
            // before and fetches the next one (not when stopping: the run
            // ends with the batches in hand).
            let consumer = self.consumer.clone();
            let to_ack = std::mem::take(&mut deposited);
            let fetch_ahead = !stop && destination_ok && ahead.is_none();
            let source_side = async move {
                let Some(c) = consumer else {
                    return (Ok(false), None);
                };
                // Whether a batch was acked (the run is healthy then).
                let acked = if to_ack.is_empty() {
                    Ok(false)
                } else {
                    c.ack(&to_ack).await.map(|()| true)
                };
                let fetched = if fetch_ahead && acked.is_ok() {
                    Some(c.fetch(config.batch, Duration::ZERO).await)
                } else {
                    None
                };
                (acked, fetched)
            };
            let (deposit, (acked, fetched)) = futures::join!(self.deposit(&held), source_side);

            let mut source_error = match acked {
                Ok(true) => {
                    self.acked_batch();
                    None
                }
                Ok(false) => None,
                Err(e) => Some(e),
            };
            match fetched {
                Some(Ok(batch)) if !batch.is_empty() => {
                    quiet_since = None;
                    ahead = Some(batch);
                }
                Some(Err(e)) => source_error = source_error.or(Some(e)),
                _ => {}
            }
            destination_ok = deposit.is_ok();
            match deposit {
                Ok(()) => deposited = std::mem::take(&mut held),
                Err(e) => {
                    match self
                        .failed(Side::Destination, e, &mut shutdown, &mut stop)
                        .await
                    {
                        // Keep the batch and deposit it again once back; on
                        // a stop it is left unacked and comes back next time.
                        Ok(Next::Retry) if !stop => {}
                        Ok(_) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
            if let Some(e) = source_error {
                // The consumer handle goes: what it handed out (deposited or
                // not) can only be acked on it, so it comes back to the next
                // handle after the ack wait and is sent again (recognised by
                // packet id where the destination de-duplicates).
                held.clear();
                ahead = None;
                deposited.clear();
                match self.failed(Side::Source, e, &mut shutdown, &mut stop).await {
                    Ok(_) => continue,
                    Err(e) => break Err(e),
                }
            }
            self.report(false).await;
        };
        // Fetched and not deposited (the destination is down, or the run
        // stops): handed back at once where the source can, so the next run
        // need not wait out the ack wait for them.
        held.extend(ahead.take().unwrap_or_default());
        self.hand_back(&held).await;
        self.report(true).await;
        self.close().await;
        result.map(|()| self.bridge.status())
    }

    /// Nak `unsent` (with no delay) on the source consumer, when it can.
    async fn hand_back(&mut self, unsent: &[Delivery]) {
        let (Some(c), Some(source)) = (&self.consumer, &self.source) else {
            return;
        };
        if unsent.is_empty() || !source.capabilities().nak {
            return;
        }
        for d in unsent {
            let naked = tokio::time::timeout(CLOSE_WITHIN, c.nak(d, Duration::ZERO)).await;
            if !matches!(naked, Ok(Ok(()))) {
                // It comes back after the ack wait instead.
                return;
            }
        }
        tracing::debug!(bridge = %self.bridge.config.name, count = unsent.len(), "unsent packets handed back to the source");
    }

    /// A batch acked on the source: the run is healthy.
    fn acked_batch(&mut self) {
        self.failures = 0;
        self.update(|s| {
            s.batches += 1;
            s.source_connected = true;
        });
    }

    /// After acking deposited packets on their own: count the batch, or
    /// handle the source's failure (what was not acked comes back).
    async fn acked<F>(
        &mut self,
        acked: Result<()>,
        shutdown: &mut std::pin::Pin<&mut futures::future::Fuse<F>>,
        stop: &mut bool,
    ) -> Result<()>
    where
        F: Future<Output = ()>,
    {
        match acked {
            Ok(()) => {
                self.acked_batch();
                self.report(false).await;
                Ok(())
            }
            Err(e) => self
                .failed(Side::Source, e, shutdown, stop)
                .await
                .map(|_| ()),
        }
    }

    /// The source consumer, connecting the source first if needed.
    async fn consumer(&mut self) -> Result<Arc<dyn DurableConsumer>> {
        if let Some(c) = &self.consumer {
            return Ok(c.clone());
        }
        let source = match &self.source {
            Some(t) => t.clone(),
            None => {
                let t = self.bridge.source.open().await?;
                self.source = Some(t.clone());
                t
            }
        };
        let config = &self.bridge.config;
        let pattern = config
            .pattern
            .clone()
            .unwrap_or_else(|| source.prefix().all_below());
        let c = source
            .consumer(
                ConsumerConfig::new(&config.name, pattern)?
                    .start(StartPosition::All)
                    .ack_wait(config.ack_wait),
            )
            .await?;
        tracing::info!(bridge = %config.name, source = source.name(), "bridge source connected");
        self.update(|s| s.source_connected = true);
        self.consumer = Some(c.clone());
        Ok(c)
    }

    async fn destination(&mut self) -> Result<DynTransport> {
        if let Some(t) = &self.destination {
            return Ok(t.clone());
        }
        let t = self.bridge.destination.open().await?;
        let dedup = t.capabilities().dedup;
        let name = &self.bridge.config.name;
        if !dedup && self.bridge.status().destination_dedup.is_none() {
            tracing::warn!(
                bridge = %name,
                destination = t.name(),
                "the destination does not recognise re-deposits (no dedup): a batch sent again after a crash or a lost ack is stored twice there; synthesis still counts a packet once"
            );
        }
        tracing::info!(bridge = %name, destination = t.name(), "bridge destination connected");
        self.update(|s| {
            s.destination_connected = true;
            s.destination_dedup = Some(dedup);
        });
        self.destination = Some(t.clone());
        Ok(t)
    }

    /// Deposit the admitted packets of `held` on the destination.
    async fn deposit(&mut self, held: &[Delivery]) -> Result<()> {
        let origin = &self.bridge.config.origin;
        let admitted: Vec<&Delivery> = held.iter().filter(|d| origin.admits(d.packet())).collect();
        let skipped = (held.len() - admitted.len()) as u64;
        if admitted.is_empty() {
            self.update(|s| s.skipped += skipped);
            return Ok(());
        }
        let destination = self.destination().await?;
        let from = self.source.as_ref().map(|s| s.prefix().clone());
        let to = destination.prefix().clone();
        let mut packets = Vec::with_capacity(admitted.len());
        let mut unsendable = 0u64;
        for d in admitted {
            match reroot(&d.received.subject, from.as_ref(), &to)
                .and_then(|subject| EncodedPacket::new(d.packet(), subject))
            {
                Ok(p) => packets.push(p),
                Err(e) => {
                    // Nothing can make this packet acceptable: skip it
                    // rather than block every packet behind it.
                    unsendable += 1;
                    tracing::warn!(bridge = %self.bridge.config.name, subject = %d.received.subject, packet_id = %d.id(), error = %e, "packet cannot be forwarded; skipped");
                }
            }
        }
        let skipped = skipped + unsendable;
        if packets.is_empty() {
            self.update(|s| s.skipped += skipped);
            return Ok(());
        }
        let receipts = destination.deposit_encoded_batch(&packets).await?;
        let duplicates = receipts.iter().filter(|r| r.duplicate).count() as u64;
        self.update(|s| {
            s.forwarded += receipts.len() as u64 - duplicates;
            s.duplicates += duplicates;
            s.skipped += skipped;
            s.destination_connected = true;
        });
        Ok(())
    }

    /// Record a failure of `side`, wait out the backoff and drop that side
    /// so it is connected again; or end the run if the error is permanent.
    async fn failed<F>(
        &mut self,
        side: Side,
        error: Error,
        shutdown: &mut std::pin::Pin<&mut futures::future::Fuse<F>>,
        stop: &mut bool,
    ) -> Result<Next>
    where
        F: Future<Output = ()>,
    {
        let name = self.bridge.config.name.clone();
        self.failures += 1;
        let failures = self.failures;
        let endpoint = match side {
            Side::Source => &self.bridge.source,
            Side::Destination => &self.bridge.destination,
        };
        let permanent = matches!(
            error.kind(),
            ErrorKind::InvalidInput
                | ErrorKind::InvalidSubject
                | ErrorKind::Conflict
                | ErrorKind::Unsupported
        ) || (error.kind() == ErrorKind::Closed && !endpoint.reconnects());
        self.update(|s| {
            s.failures += 1;
            s.last_error = Some(format!("{}: {error}", side.label()));
            match side {
                Side::Source => s.source_connected = false,
                Side::Destination => s.destination_connected = false,
            }
        });
        if permanent || self.bridge.config.backoff.exhausted(failures) {
            tracing::error!(bridge = %name, side = side.label(), error = %error, failures, "bridge stops");
            return Err(error);
        }
        let pause = self.bridge.config.backoff.delay(failures);
        tracing::warn!(bridge = %name, side = side.label(), error = %error, failures, retry_in = ?pause, "bridge side failed; retrying");
        self.drop_side(side).await;
        if !*stop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.as_mut() => *stop = true,
            }
        }
        Ok(if *stop { Next::Stop } else { Next::Retry })
    }

    /// Forget a failed side: a new consumer (and, where the endpoint can
    /// connect again, a new transport) is opened on the next use.
    async fn drop_side(&mut self, side: Side) {
        match side {
            Side::Source => {
                if let Some(c) = self.consumer.take() {
                    let _ = tokio::time::timeout(CLOSE_WITHIN, c.close()).await;
                }
                if self.bridge.source.reconnects() {
                    if let Some(t) = self.source.take() {
                        let _ = tokio::time::timeout(CLOSE_WITHIN, t.close()).await;
                    }
                }
            }
            Side::Destination => {
                if self.bridge.destination.reconnects() {
                    if let Some(t) = self.destination.take() {
                        let _ = tokio::time::timeout(CLOSE_WITHIN, t.close()).await;
                    }
                }
            }
        }
    }

    /// Refresh the backlog about once a second, and log a progress line
    /// every `report_every` (and at the end).
    async fn report(&mut self, last: bool) {
        let due = self
            .last_backlog
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due || last {
            self.last_backlog = Some(Instant::now());
            if let Some(c) = &self.consumer {
                let backlog = c.backlog().await.ok();
                self.update(|s| s.backlog = backlog);
            }
        }
        if last || self.last_report.elapsed() >= self.bridge.config.report_every {
            self.last_report = Instant::now();
            let s = self.bridge.status();
            tracing::info!(
                bridge = %s.name,
                forwarded = s.forwarded,
                duplicates = s.duplicates,
                skipped = s.skipped,
                waiting = s.backlog.map(|b| b.waiting),
                failures = s.failures,
                "bridge progress"
            );
        }
    }

    /// Close the consumer (flushing its acks) and the transports the bridge
    /// connected itself.
    async fn close(&mut self) {
        if let Some(c) = self.consumer.take() {
            if let Err(e) = tokio::time::timeout(CLOSE_WITHIN, c.close())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Timeout,
                        "bridge",
                        "closing the source consumer took too long",
                    ))
                })
            {
                tracing::warn!(bridge = %self.bridge.config.name, error = %e, "closing the source consumer failed; unflushed acks come back as redeliveries");
            }
        }
        if self.bridge.source.reconnects() {
            if let Some(t) = self.source.take() {
                let _ = tokio::time::timeout(CLOSE_WITHIN, t.close()).await;
            }
        }
        if self.bridge.destination.reconnects() {
            if let Some(t) = self.destination.take() {
                let _ = tokio::time::timeout(CLOSE_WITHIN, t.close()).await;
            }
        }
        self.update(|s| {
            s.source_connected = false;
            s.destination_connected = false;
        });
    }
}

/// `subject` moved from under `from` to under `to`.
fn reroot(subject: &str, from: Option<&Subject>, to: &Subject) -> Result<Subject> {
    match from {
        Some(from) if from != to => {
            let rest = subject
                .strip_prefix(from.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidSubject,
                        "bridge",
                        format!("subject {subject} is not under the source prefix {from}"),
                    )
                })?;
            Subject::new(format!("{to}.{rest}"))
        }
        _ => Subject::new(subject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_move_between_prefixes() {
        let a = Subject::new("qis.iot").unwrap();
        let b = Subject::new("site.one").unwrap();
        assert_eq!(
            reroot("qis.iot.hvac.x", Some(&a), &b).unwrap().as_str(),
            "site.one.hvac.x"
        );
        assert_eq!(
            reroot("qis.iot.hvac.x", Some(&a), &a).unwrap().as_str(),
            "qis.iot.hvac.x"
        );
        assert!(reroot("other.hvac.x", Some(&a), &b).is_err());
    }
}
