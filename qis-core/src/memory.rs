//! An in-process transport with the full durable semantics (ack wait,
//! redelivery, resume by name, start positions, live subscriptions).
//!
//! It is the conformance suite's always-on backend and a good fit for tests
//! and single-process simulations. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{broadcast, Notify};

use crate::error::{Error, ErrorKind, Result};
use crate::packet::{EncodedPacket, PacketId, Received};
use crate::subject::{Subject, SubjectPattern};
use crate::transport::{
    check_pattern_overlaps, check_under_prefix, AckToken, Capabilities, ConsumerConfig, Delivery,
    DurableConsumer, LiveSubscription, OutcomeTransport, Position, Receipt, StartPosition,
};

const NAME: &str = "memory";

#[derive(Debug)]
struct Stored {
    seq: u64,
    subject: Arc<str>,
    body: Bytes,
    at: SystemTime,
}

#[derive(Debug)]
struct ConsumerState {
    pattern: SubjectPattern,
    ack_wait: Duration,
    /// Next log index to look at.
    cursor: usize,
    /// seq -> (redeliver at, deliveries so far)
    pending: BTreeMap<u64, (Instant, u32)>,
}

#[derive(Debug, Default)]
struct State {
    log: Vec<Stored>,
    by_id: HashMap<PacketId, u64>,
    consumers: HashMap<String, ConsumerState>,
}

#[derive(Debug)]
struct Shared {
    prefix: Subject,
    state: Mutex<State>,
    notify: Notify,
    live: broadcast::Sender<(Arc<str>, Bytes)>,
}

/// The in-memory transport. Clones share one store, so a clone is "another
/// process" for resume-by-name tests.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
}

impl MemoryTransport {
    /// A new, empty store for subjects under `prefix`.
    pub fn new(prefix: Subject) -> Self {
        let (live, _) = broadcast::channel(4096);
        MemoryTransport {
            shared: Arc::new(Shared {
                prefix,
                state: Mutex::new(State::default()),
                notify: Notify::new(),
                live,
            }),
        }
    }

    /// Store raw bytes on `subject` without any check, as a foreign publisher
    /// of garbage would. For tests of malformed-message handling.
    pub fn deposit_raw_unchecked(&self, subject: &str, body: &[u8]) {
        let mut st = self.lock();
        let seq = st.log.len() as u64 + 1;
        let subject: Arc<str> = subject.into();
        st.log.push(Stored {
            seq,
            subject: subject.clone(),
            body: Bytes::copy_from_slice(body),
            at: SystemTime::now(),
        });
        drop(st);
        let _ = self
            .shared
            .live
            .send((subject, Bytes::copy_from_slice(body)));
        self.shared.notify.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written
        // (every mutation is a single push or insert), so poisoning is ignored.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, st: &mut State, p: &EncodedPacket) -> Result<Receipt> {
        check_under_prefix(NAME, &self.shared.prefix, p.subject())?;
        if let Some(&seq) = st.by_id.get(&p.id()) {
            return Ok(Receipt {
                subject: p.subject().clone(),
                id: p.id(),
                position: Position::Sequence(seq),
                duplicate: true,
            });
        }
        let seq = st.log.len() as u64 + 1;
        let subject: Arc<str> = p.subject().as_str().into();
        st.log.push(Stored {
            seq,
            subject: subject.clone(),
            body: p.body().clone(),
            at: SystemTime::now(),
        });
        st.by_id.insert(p.id(), seq);
        let _ = self.shared.live.send((subject, p.body().clone()));
        Ok(Receipt {
            subject: p.subject().clone(),
            id: p.id(),
            position: Position::Sequence(seq),
            duplicate: false,
        })
    }
}

#[async_trait]
impl OutcomeTransport for MemoryTransport {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: true,
            persistent: false,
            live: true,
            fire_and_forget: true,
            native_wildcards: true,
            dedup: true,
            nak: true,
            start_since: true,
            shared_consumers: true,
        }
    }

    fn prefix(&self) -> &Subject {
        &self.shared.prefix
    }

    #[tracing::instrument(level = "debug", skip_all, fields(subject = %packet.subject(), id = %packet.id()))]
    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        let r = {
            let mut st = self.lock();
            self.store(&mut st, packet)?
        };
        self.shared.notify.notify_waiters();
        Ok(r)
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        let r = {
            let mut st = self.lock();
            packets
                .iter()
                .map(|p| self.store(&mut st, p))
                .collect::<Result<Vec<_>>>()?
        };
        self.shared.notify.notify_waiters();
        Ok(r)
    }

    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        check_under_prefix(NAME, &self.shared.prefix, packet.subject())?;
        let _ = self
            .shared
            .live
            .send((packet.subject().as_str().into(), packet.body().clone()));
        Ok(())
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        check_pattern_overlaps(NAME, &self.shared.prefix, &config.pattern)?;
        let mut st = self.lock();
        if let Some(existing) = st.consumers.get_mut(&config.name) {
            if existing.pattern != config.pattern {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    NAME,
                    format!(
                        "consumer {} exists with pattern {}, not {}: use another name",
                        config.name, existing.pattern, config.pattern
                    ),
                ));
            }
            existing.ack_wait = config.ack_wait;
        } else {
            let cursor = match config.start {
                StartPosition::All => 0,
                StartPosition::New => st.log.len(),
                StartPosition::Since(t) => st.log.partition_point(|s| s.at < t),
            };
            st.consumers.insert(
                config.name.clone(),
                ConsumerState {
                    pattern: config.pattern.clone(),
                    ack_wait: config.ack_wait,
                    cursor,
                    pending: BTreeMap::new(),
                },
            );
        }
        Ok(Arc::new(MemoryConsumer {
            transport: self.clone(),
            name: config.name,
            malformed: AtomicU64::new(0),
        }))
    }

    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        check_pattern_overlaps(NAME, &self.shared.prefix, &pattern)?;
        let rx = self.shared.live.subscribe();
        let stream = tokio_stream_from(rx).filter_map(move |(subject, body)| {
            let keep = pattern.matches(&subject);
            async move {
                if !keep {
                    return None;
                }
                match Received::decode(&*subject, &body) {
                    Ok(r) => Some(Ok(r)),
                    Err(e) => {
                        tracing::warn!(%subject, error = %e, "skipping malformed live message");
                        None
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A broadcast receiver as a stream; a lagging subscriber skips what it
/// missed (at-most-once) and logs how much.
fn tokio_stream_from(
    rx: broadcast::Receiver<(Arc<str>, Bytes)>,
) -> impl futures::Stream<Item = (Arc<str>, Bytes)> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(m) => return Some((m, rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "live subscriber lagged; packets dropped (at-most-once)"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[derive(Debug)]
struct MemoryConsumer {
    transport: MemoryTransport,
    name: String,
    malformed: AtomicU64,
}

#[derive(Debug)]
struct MemoryAck {
    seq: u64,
}

impl MemoryConsumer {
    fn try_take(&self, max: usize) -> Result<Vec<Delivery>> {
        let mut st = self.transport.lock();
        let st = &mut *st;
        let c = st.consumers.get_mut(&self.name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                NAME,
                format!("consumer {} is gone", self.name),
            )
        })?;
        let now = Instant::now();
        let mut out = Vec::new();
        let mut picked: Vec<(u64, u32)> = Vec::new();
        for (&seq, &(due, n)) in c.pending.iter() {
            if out.len() + picked.len() >= max {
                break;
            }
            if due <= now {
                picked.push((seq, n + 1));
            }
        }
        for (seq, n) in picked {
            c.pending.insert(seq, (now + c.ack_wait, n));
            let s = &st.log[(seq - 1) as usize];
            match Received::decode(&*s.subject, &s.body) {
                Ok(received) => out.push(Delivery {
                    received,
                    position: Position::Sequence(seq),
                    delivery_count: n,
                    token: AckToken::new(MemoryAck { seq }),
                }),
                Err(_) => {
                    c.pending.remove(&seq);
                }
            }
        }
        while out.len() < max && c.cursor < st.log.len() {
            let s = &st.log[c.cursor];
            c.cursor += 1;
            if !c.pattern.matches(&s.subject) {
                continue;
            }
            match Received::decode(&*s.subject, &s.body) {
                Ok(received) => {
                    c.pending.insert(s.seq, (now + c.ack_wait, 1));
                    out.push(Delivery {
                        received,
                        position: Position::Sequence(s.seq),
                        delivery_count: 1,
                        token: AckToken::new(MemoryAck { seq: s.seq }),
                    });
                }
                Err(e) => {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(consumer = %self.name, subject = %s.subject, seq = s.seq, error = %e, "skipping malformed message");
                }
            }
        }
        Ok(out)
    }

    fn next_due(&self) -> Option<Instant> {
        let st = self.transport.lock();
        st.consumers
            .get(&self.name)
            .and_then(|c| c.pending.values().map(|(d, _)| *d).min())
    }
}

#[async_trait]
impl DurableConsumer for MemoryConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(level = "debug", skip(self), fields(consumer = %self.name))]
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.transport.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.try_take(max.max(1))?;
            if !got.is_empty() {
                return Ok(got);
            }
            let mut until = deadline;
            if let Some(due) = self.next_due() {
                until = until.min(tokio::time::Instant::from_std(due));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let mut st = self.transport.lock();
        let c = st.consumers.get_mut(&self.name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                NAME,
                format!("consumer {} is gone", self.name),
            )
        })?;
        for d in deliveries {
            let t = d.token.get::<MemoryAck>().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    NAME,
                    "this delivery came from another transport",
                )
            })?;
            c.pending.remove(&t.seq);
        }
        Ok(())
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let t = delivery.token.get::<MemoryAck>().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                NAME,
                "this delivery came from another transport",
            )
        })?;
        {
            let mut st = self.transport.lock();
            if let Some(c) = st.consumers.get_mut(&self.name) {
                if let Some(p) = c.pending.get_mut(&t.seq) {
                    p.0 = Instant::now() + delay;
                }
            }
        }
        self.transport.shared.notify.notify_waiters();
        Ok(())
    }

    fn malformed_skipped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
