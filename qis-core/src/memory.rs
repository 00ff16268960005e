//! An in-process transport with the full durable semantics (ack wait,
//! redelivery, resume by name, start positions, live subscriptions).
//!
//! It is the conformance suite's always-on backend and a good fit for tests
//! and single-process simulations. Nothing survives the process.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{broadcast, Notify};

use crate::backend::{seq_token, token_seq, InjectRaw};
use crate::checked::Checked;
use crate::config::{Retention, UrlOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::packet::{EncodedPacket, PacketId, Received};
use crate::similar::{Nearest, Scored, SimilarityQuery};
use crate::subject::{Subject, SubjectPattern};
use crate::transport::{
    Backlog, Capabilities, ConsumerConfig, ConsumerInfo, Delivery, DurableConsumer,
    LiveSubscription, OutcomeTransport, Position, Receipt, StartPosition, TransportInfo,
};

const NAME: &str = "memory";

/// How to open an in-memory store.
///
/// ```
/// use std::time::Duration;
/// use qis_core::memory::MemoryConfig;
///
/// let c: MemoryConfig = "memory://?prefix=plant.one&max_age=1h".parse().unwrap();
/// assert_eq!(c.prefix.as_str(), "plant.one");
/// assert_eq!(c.retention.max_age, Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryConfig {
    /// The subject prefix (default `qis.iot`).
    pub prefix: Subject,
    /// Retention by age and size of the stored bodies (defaults 24 h, 50 MiB).
    pub retention: Retention,
}

crate::config_builders!(MemoryConfig: prefix, retention, from_url);

impl MemoryConfig {
    /// The URL schemes of this transport.
    pub const URL_SCHEMES: &'static [&'static str] = &["memory"];

    /// Parse `memory://` (or `memory:`) with the shared keys `prefix`,
    /// `max_age` and `max_bytes` in the query.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .split_once(':')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("memory"))
            .map(|(_, rest)| rest.trim_start_matches('/'))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    NAME,
                    format!("{url:?} is not a memory URL: use memory:// or memory://?prefix=a.b"),
                )
            })?;
        let (place, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !place.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!("{url:?} names {place:?}, but a memory store has no place: use memory:// or memory://?prefix=a.b"),
            ));
        }
        let mut options = UrlOptions::parse(NAME, query)?;
        let mut config = MemoryConfig::default();
        options.prefix(&mut config.prefix)?;
        options.retention(&mut config.retention)?;
        options.finish()?;
        Ok(config)
    }

    /// A new, empty store with this configuration.
    pub fn connect(self) -> Result<Checked<MemoryTransport>> {
        self.retention.check(NAME)?;
        Ok(MemoryTransport::with_config(self))
    }
}

#[derive(Debug)]
struct Stored {
    seq: u64,
    subject: Arc<str>,
    id: PacketId,
    body: Bytes,
    at: SystemTime,
}

#[derive(Debug)]
struct ConsumerState {
    pattern: SubjectPattern,
    ack_wait: Duration,
    /// Next sequence to look at.
    cursor: u64,
    /// seq -> (redeliver at, deliveries so far)
    pending: BTreeMap<u64, (Instant, u32)>,
}

#[derive(Debug)]
struct State {
    /// Stored packets in sequence order; `log[i].seq == first_seq + i`.
    log: VecDeque<Stored>,
    first_seq: u64,
    bytes: u64,
    by_id: HashMap<PacketId, u64>,
    consumers: HashMap<String, ConsumerState>,
}

impl State {
    fn next_seq(&self) -> u64 {
        self.first_seq + self.log.len() as u64
    }

    fn get(&self, seq: u64) -> Option<&Stored> {
        seq.checked_sub(self.first_seq)
            .and_then(|i| self.log.get(i as usize))
    }

    fn push(&mut self, subject: Arc<str>, id: PacketId, body: Bytes) -> u64 {
        let seq = self.next_seq();
        self.bytes += body.len() as u64;
        self.log.push_back(Stored {
            seq,
            subject,
            id,
            body,
            at: SystemTime::now(),
        });
        seq
    }

    /// What consumer `c` still has to do.
    fn backlog(&self, c: &ConsumerState) -> Backlog {
        let start = c.cursor.saturating_sub(self.first_seq) as usize;
        let waiting = self
            .log
            .range(start.min(self.log.len())..)
            .filter(|s| c.pattern.matches(&s.subject))
            .count() as u64;
        Backlog {
            waiting,
            unacked: c.pending.len() as u64,
        }
    }

    /// Drop what retention no longer allows; warn about unacked deliveries
    /// that go with it.
    fn prune(&mut self, retention: &Retention) {
        let oldest_allowed = SystemTime::now().checked_sub(retention.max_age);
        let mut dropped = 0u64;
        while let Some(front) = self.log.front() {
            let too_old = oldest_allowed.is_some_and(|t| front.at < t);
            if !too_old && self.bytes <= retention.max_bytes {
                break;
            }
            let gone = self.log.pop_front().expect("front exists");
            self.bytes -= gone.body.len() as u64;
            if self.by_id.get(&gone.id) == Some(&gone.seq) {
                self.by_id.remove(&gone.id);
            }
            self.first_seq += 1;
            dropped += 1;
        }
        if dropped == 0 {
            return;
        }
        for (name, c) in &mut self.consumers {
            let unacked = c.pending.range(..self.first_seq).count();
            if unacked > 0 {
                tracing::warn!(
                    transport = NAME,
                    consumer = %name,
                    unacked,
                    "retention removed packets this consumer had fetched but not acked: they will not be redelivered"
                );
                c.pending = c.pending.split_off(&self.first_seq);
            }
            c.cursor = c.cursor.max(self.first_seq);
        }
    }
}

#[derive(Debug)]
struct Shared {
    info: TransportInfo,
    config: MemoryConfig,
    state: Mutex<State>,
    notify: Notify,
    live: broadcast::Sender<(Arc<str>, Bytes)>,
}

/// The in-memory transport. Every handle on one store shares its packets and
/// consumers; [`handle`](Self::handle) opens another, as another process
/// would open the same file or server.
///
/// A re-deposit of a packet id still retained is recognised whatever subject
/// it is deposited on: its receipt is the original's (subject and position)
/// marked `duplicate`.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
}

impl MemoryTransport {
    /// A new, empty store for subjects under `prefix` with the default
    /// retention, behind the [checking layer](crate::Checked).
    pub fn new(prefix: Subject) -> Checked<Self> {
        MemoryTransport::with_config(MemoryConfig {
            prefix,
            ..Default::default()
        })
    }

    fn with_config(config: MemoryConfig) -> Checked<Self> {
        let (live, _) = broadcast::channel(4096);
        // Everything but persistence: the store lives and dies with the process.
        let capabilities = Capabilities {
            persistent: false,
            ..Capabilities::ALL
        };
        Checked::new(MemoryTransport {
            shared: Arc::new(Shared {
                info: TransportInfo::new(NAME, capabilities, config.prefix.clone()),
                config,
                state: Mutex::new(State {
                    log: VecDeque::new(),
                    first_seq: 1,
                    bytes: 0,
                    by_id: HashMap::new(),
                    consumers: HashMap::new(),
                }),
                notify: Notify::new(),
                live,
            }),
        })
    }

    /// Another handle on the same store, with its own closed state: what
    /// another process connecting to the same server would get.
    pub fn handle(&self) -> Checked<Self> {
        Checked::new(self.clone())
    }

    /// How many packets are stored and the total size of their bodies.
    pub fn stored(&self) -> (u64, u64) {
        let st = self.lock();
        (st.log.len() as u64, st.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written
        // (every mutation is a single push or insert), so poisoning is ignored.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, st: &mut State, p: &EncodedPacket) -> Receipt {
        if let Some(original) = st.by_id.get(&p.id()).and_then(|&seq| st.get(seq)) {
            return Receipt {
                subject: Subject::new(&*original.subject).unwrap_or_else(|_| p.subject().clone()),
                id: p.id(),
                position: Position::Sequence(original.seq),
                duplicate: true,
            };
        }
        let subject: Arc<str> = p.subject().as_str().into();
        let seq = st.push(subject.clone(), p.id(), p.body().clone());
        st.by_id.insert(p.id(), seq);
        let _ = self.shared.live.send((subject, p.body().clone()));
        Receipt {
            subject: p.subject().clone(),
            id: p.id(),
            position: Position::Sequence(seq),
            duplicate: false,
        }
    }
}

#[async_trait]
impl InjectRaw for MemoryTransport {
    async fn inject_raw(&self, subject: &str, body: &[u8]) -> Result<()> {
        let subject: Arc<str> = subject.into();
        let body = Bytes::copy_from_slice(body);
        {
            let mut st = self.lock();
            st.push(subject.clone(), PacketId::of(&body), body.clone());
        }
        let _ = self.shared.live.send((subject, body));
        self.shared.notify.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl OutcomeTransport for MemoryTransport {
    fn info(&self) -> &TransportInfo {
        &self.shared.info
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        let r = {
            let mut st = self.lock();
            let r = packets
                .iter()
                .map(|p| self.store(&mut st, p))
                .collect::<Vec<_>>();
            st.prune(&self.shared.config.retention);
            r
        };
        self.shared.notify.notify_waiters();
        Ok(r)
    }

    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        let _ = self
            .shared
            .live
            .send((packet.subject().as_str().into(), packet.body().clone()));
        Ok(())
    }

    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let mut st = self.lock();
        st.prune(&self.shared.config.retention);
        let mut out: Vec<ConsumerInfo> = st
            .consumers
            .iter()
            .map(|(name, c)| ConsumerInfo {
                name: name.clone(),
                pattern: Some(c.pattern.as_str().to_string()),
                backlog: st.backlog(c),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        let mut st = self.lock();
        st.prune(&self.shared.config.retention);
        let next = st.next_seq();
        let first = st.first_seq;
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
                StartPosition::All => first,
                StartPosition::New => next,
                StartPosition::Since(t) => first + st.log.partition_point(|s| s.at < t) as u64,
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

    /// Exact search: every retained packet under the prefix on a matching
    /// subject is decoded and scored, under the store's lock (about 1 µs a
    /// packet).
    async fn similar(&self, query: &SimilarityQuery) -> Result<Vec<Scored>> {
        let mut st = self.lock();
        st.prune(&self.shared.config.retention);
        let prefix = &self.shared.config.prefix;
        let mut nearest = Nearest::new(query);
        for s in &st.log {
            if !(prefix.contains(&s.subject) && query.pattern().matches(&s.subject)) {
                continue;
            }
            match Received::decode_with_known_id(&*s.subject, &s.body, s.id) {
                Ok(r) => {
                    nearest.offer(r);
                }
                Err(e) => {
                    tracing::warn!(subject = %s.subject, seq = s.seq, error = %e, "similarity search skipped a malformed message")
                }
            }
        }
        Ok(nearest.into_sorted())
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

impl MemoryConsumer {
    /// Its state left the store (it cannot: consumers are never removed).
    fn gone(&self) -> Error {
        Error::new(
            ErrorKind::NotFound,
            NAME,
            format!("consumer {} is gone", self.name),
        )
    }

    fn try_take(&self, max: usize) -> Result<Vec<Delivery>> {
        let mut st = self.transport.lock();
        st.prune(&self.transport.shared.config.retention);
        let st = &mut *st;
        let next = st.first_seq + st.log.len() as u64;
        let c = st
            .consumers
            .get_mut(&self.name)
            .ok_or_else(|| self.gone())?;
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
            let Some(s) = seq
                .checked_sub(st.first_seq)
                .and_then(|i| st.log.get(i as usize))
            else {
                c.pending.remove(&seq);
                continue;
            };
            match Received::decode_with_known_id(&*s.subject, &s.body, s.id) {
                Ok(received) => out.push(Delivery {
                    received,
                    position: Position::Sequence(seq),
                    delivery_count: n,
                    token: seq_token(seq),
                }),
                Err(_) => {
                    c.pending.remove(&seq);
                }
            }
        }
        while out.len() < max && c.cursor < next {
            let s = &st.log[(c.cursor - st.first_seq) as usize];
            c.cursor += 1;
            if !c.pattern.matches(&s.subject) {
                continue;
            }
            match Received::decode_with_known_id(&*s.subject, &s.body, s.id) {
                Ok(received) => {
                    c.pending.insert(s.seq, (now + c.ack_wait, 1));
                    out.push(Delivery {
                        received,
                        position: Position::Sequence(s.seq),
                        delivery_count: 1,
                        token: seq_token(s.seq),
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
        let c = st
            .consumers
            .get_mut(&self.name)
            .ok_or_else(|| self.gone())?;
        let seqs = deliveries
            .iter()
            .map(|d| token_seq(NAME, d))
            .collect::<Result<Vec<_>>>()?;
        for seq in seqs {
            c.pending.remove(&seq);
        }
        Ok(())
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let seq = token_seq(NAME, delivery)?;
        {
            let mut st = self.transport.lock();
            if let Some(c) = st.consumers.get_mut(&self.name) {
                if let Some(p) = c.pending.get_mut(&seq) {
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

    async fn backlog(&self) -> Result<Backlog> {
        let mut st = self.transport.lock();
        st.prune(&self.transport.shared.config.retention);
        let c = st.consumers.get(&self.name).ok_or_else(|| self.gone())?;
        Ok(st.backlog(c))
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
