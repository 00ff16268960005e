//! An in-process transport with the full durable semantics (ack wait,
//! redelivery, resume by name, start positions, live subscriptions).
//!
//! It is the conformance suite's always-on backend and a good fit for tests
//! and single-process simulations. Nothing survives the process.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{broadcast, Notify};

use crate::backend::InjectRaw;
use crate::checked::Checked;
use crate::config::{Retention, UrlOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::packet::{EncodedPacket, PacketId, Received};
use crate::similar::{Nearest, Scored, SimilarityQuery};
use crate::subject::{Subject, SubjectPattern};
use crate::transport::{
    Capabilities, ConsumerConfig, ConsumerInfo, DurableConsumer, LiveSubscription,
    OutcomeTransport, Position, Receipt, StartPosition, TransportInfo,
};

mod consumer;
mod log;

use consumer::MemoryConsumer;
use log::{ConsumerState, State};

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
