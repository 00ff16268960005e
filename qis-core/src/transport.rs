//! The one transport trait every backend implements, and the types it speaks.
//!
//! The trait is small and object safe: backends implement [`OutcomeTransport`]
//! and [`DurableConsumer`]; the conveniences every caller wants live in
//! [`OutcomeTransportExt`], implemented once for all transports so backends
//! cannot diverge on them.

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::Stream;

use crate::error::{Error, ErrorKind, Result};
use crate::packet::{EncodedPacket, OutcomePacket, PacketId, Received};
use crate::similar::{merge, Scored, SimilarityQuery};
use crate::subject::{Subject, SubjectPattern};

/// What a transport can do. A backend fills in what it supports; asking for
/// something it lacks returns an [`ErrorKind::Unsupported`] error, never a
/// silent no-op. In JSON (the gateway's `GET /v1/info`), field for field;
/// `backlog` and `similarity` are false when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// Deposits are stored and durable consumers deliver them at least once.
    pub durable: bool,
    /// What was stored survives a restart of the server (or process).
    pub persistent: bool,
    /// [`OutcomeTransport::subscribe`]: live, at-most-once delivery to connected subscribers.
    pub live: bool,
    /// [`OutcomeTransport::publish_encoded`]: fire-and-forget, at-most-once, nothing stored.
    pub fire_and_forget: bool,
    /// The server matches subject patterns itself (otherwise the transport filters).
    pub native_wildcards: bool,
    /// An identical re-deposit (same packet id) is recognised and stored once.
    pub dedup: bool,
    /// [`DurableConsumer::nak`]: a delivery can be handed back for redelivery at once or after a delay.
    pub nak: bool,
    /// [`StartPosition::Since`] is supported.
    pub start_since: bool,
    /// Several handles on one named consumer share its work (a work queue):
    /// each packet goes to one of them.
    pub shared_consumers: bool,
    /// [`DurableConsumer::backlog`] and [`OutcomeTransport::consumers`]:
    /// the transport can say how much each durable consumer still has to do.
    #[serde(default)]
    pub backlog: bool,
    /// [`OutcomeTransport::similar`]: the stored packets under a pattern
    /// whose context vectors are most like a given one (see
    /// [`crate::similar`]).
    #[serde(default)]
    pub similarity: bool,
}

impl Capabilities {
    /// Every capability. A backend names what it lacks and takes the rest
    /// from here: `Capabilities { nak: false, ..Capabilities::ALL }`.
    pub const ALL: Capabilities = Capabilities {
        durable: true,
        persistent: true,
        live: true,
        fire_and_forget: true,
        native_wildcards: true,
        dedup: true,
        nak: true,
        start_since: true,
        shared_consumers: true,
        backlog: true,
        similarity: true,
    };

    /// No capability at all: what a backend that can do little starts
    /// from, naming what it has: `Capabilities { similarity: true,
    /// ..Capabilities::NONE }`. The same as `Capabilities::default()`, but
    /// usable in a `const`.
    pub const NONE: Capabilities = Capabilities {
        durable: false,
        persistent: false,
        live: false,
        fire_and_forget: false,
        native_wildcards: false,
        dedup: false,
        nak: false,
        start_since: false,
        shared_consumers: false,
        backlog: false,
        similarity: false,
    };
}

/// What a transport is: its backend's short name, what it can do and the
/// subject prefix it stores. A backend builds it once when it connects and
/// hands it out from [`OutcomeTransport::info`]; the trait's
/// [`name`](OutcomeTransport::name), [`capabilities`](OutcomeTransport::capabilities)
/// and [`prefix`](OutcomeTransport::prefix) read it.
///
/// ```
/// use qis_core::{Capabilities, Subject, TransportInfo};
///
/// let info = TransportInfo::new(
///     "mine",
///     Capabilities { nak: false, ..Capabilities::ALL },
///     Subject::new("qis.iot")?,
/// );
/// assert_eq!(info.name(), "mine");
/// assert!(!info.capabilities().nak);
/// assert_eq!(info.prefix().as_str(), "qis.iot");
/// # Ok::<(), qis_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportInfo {
    name: &'static str,
    capabilities: Capabilities,
    prefix: Subject,
}

impl TransportInfo {
    /// A transport's description: its backend name (`"sqlite"`, `"nats"`,
    /// …), its capabilities and the prefix it stores.
    pub fn new(name: &'static str, capabilities: Capabilities, prefix: Subject) -> Self {
        TransportInfo {
            name,
            capabilities,
            prefix,
        }
    }

    /// The backend's short name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What the transport can do.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// The subject prefix the transport stores.
    pub fn prefix(&self) -> &Subject {
        &self.prefix
    }
}

/// Where a new durable consumer starts. Applies when the consumer is created;
/// re-opening an existing consumer by name resumes where it was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// Every packet the transport still retains (the default).
    #[default]
    All,
    /// Only packets deposited after the consumer is created.
    New,
    /// Packets deposited at or after this time.
    Since(SystemTime),
}

/// The default ack wait: a delivery not acked within it is delivered again.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// How to open a durable consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// The durable name: 1–64 of `A-Z a-z 0-9 _ -`.
    pub name: String,
    /// Which subjects it receives.
    pub pattern: SubjectPattern,
    /// Where it starts when created.
    pub start: StartPosition,
    /// How long a delivery may stay unacked before it is delivered again.
    pub ack_wait: Duration,
}

impl ConsumerConfig {
    /// A consumer `name` on `pattern`, starting with all retained history,
    /// with the default ack wait.
    pub fn new(name: impl Into<String>, pattern: SubjectPattern) -> Result<Self> {
        let name = name.into();
        if !crate::backend::is_plain_name(&name, 64) {
            return Err(Error::core(
                ErrorKind::InvalidInput,
                format!(
                    "consumer name {name:?} is not valid: use 1 to 64 of A-Z, a-z, 0-9, '_' or '-'"
                ),
            ));
        }
        Ok(ConsumerConfig {
            name,
            pattern,
            start: StartPosition::All,
            ack_wait: DEFAULT_ACK_WAIT,
        })
    }

    /// Set the start position.
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// Set the ack wait.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }
}

/// Where a transport stored a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// A stream sequence or row id (NATS JetStream, SQLite, memory).
    Sequence(u64),
    /// A Kafka partition and offset.
    Offset {
        /// Partition.
        partition: i32,
        /// Offset within the partition.
        offset: i64,
    },
    /// A Redis stream entry id `ms-seq`.
    StreamId {
        /// Milliseconds part.
        ms: u64,
        /// Sequence part.
        seq: u64,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Sequence(s) => write!(f, "seq {s}"),
            Position::Offset { partition, offset } => {
                write!(f, "partition {partition} offset {offset}")
            }
            Position::StreamId { ms, seq } => write!(f, "id {ms}-{seq}"),
        }
    }
}

/// Proof that a deposit is durably stored.
///
/// De-duplication is per transport, not per subject: a packet is one fact,
/// identified by its packet id, and is stored once wherever it is deposited
/// first. A re-deposit that the transport recognises (on any subject, within
/// its de-duplication window) is not stored again; its receipt says
/// `duplicate` and names where the original is: its subject and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The subject it is stored under (for a duplicate: the original's).
    pub subject: Subject,
    /// The packet id.
    pub id: PacketId,
    /// Where it is stored (for a duplicate: where the original is).
    pub position: Position,
    /// The transport recognised an identical earlier deposit and did not store it again.
    pub duplicate: bool,
}

/// An opaque handle a backend puts in each [`Delivery`] to find it again on
/// ack or nak.
///
/// It also names the consumer handle that handed the delivery out: the
/// checking layer ([`crate::Checked`]) stamps it on every fetched delivery
/// and refuses, with [`ErrorKind::InvalidInput`], to ack or nak it on any
/// other consumer. Backends make and read tokens with the functions in
/// [`crate::backend`].
#[derive(Clone)]
pub struct AckToken {
    pub(crate) owner: u64,
    pub(crate) value: TokenValue,
}

/// What a backend keeps in a token: a number inline (no allocation per
/// delivery), or any value of its own.
#[derive(Clone)]
pub(crate) enum TokenValue {
    Seq(u64),
    Any(Arc<dyn Any + Send + Sync>),
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            TokenValue::Seq(s) => write!(f, "AckToken(consumer {}, {s})", self.owner),
            TokenValue::Any(_) => write!(f, "AckToken(consumer {}, ..)", self.owner),
        }
    }
}

/// One delivery from a durable consumer. Ack it with
/// [`DurableConsumer::ack`] once handled, or it comes back after the ack wait.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subject, id and decoded packet.
    pub received: Received,
    /// Where it is stored.
    pub position: Position,
    /// 1 on first delivery, more on redelivery.
    pub delivery_count: u32,
    /// The backend's handle for ack / nak.
    pub token: AckToken,
}

crate::packet::received_accessors!(Delivery);

/// How much a durable consumer still has to do ([`DurableConsumer::backlog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// Matching packets stored and not yet delivered to this consumer.
    pub waiting: u64,
    /// Packets delivered and not yet acked: they come back after the ack
    /// wait unless acked.
    pub unacked: u64,
}

impl Backlog {
    /// Everything not yet acked: `waiting + unacked`.
    pub fn total(&self) -> u64 {
        self.waiting + self.unacked
    }
}

/// A durable consumer the transport keeps, as [`OutcomeTransport::consumers`]
/// lists it: without opening it (opening may create it, or on Kafka join its
/// group and move partitions away from a running member).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerInfo {
    /// The durable name.
    pub name: String,
    /// The pattern it was created with, where the transport keeps it.
    pub pattern: Option<String>,
    /// What it still has to do. Counted from outside the consumer, so a
    /// transport that only knows a consumer's in-flight deliveries inside
    /// the handle that holds them (Kafka) counts them as waiting.
    pub backlog: Backlog,
}

/// A live, at-most-once stream of packets. Malformed messages are skipped and
/// logged by the transport; an `Err` item reports a transport failure.
pub type LiveSubscription = Pin<Box<dyn Stream<Item = Result<Received>> + Send>>;

/// A durable, named consumer: pull packets matching its pattern, ack them.
///
/// # Behavior
///
/// - [`fetch`](Self::fetch) returns up to `max` deliveries, as soon as at
///   least one is there, or an empty vector once `wait` has passed.
/// - A delivery not acked within the ack wait is delivered again (its
///   `delivery_count` grows).
/// - A consumer opened again by name (another handle, process, or after a
///   restart) resumes after its last acked packet.
/// - A malformed message on a matching subject is logged with
///   `tracing::warn!`, counted in [`malformed_skipped`](Self::malformed_skipped),
///   removed from redelivery and never returned.
#[async_trait]
pub trait DurableConsumer: Send + Sync + fmt::Debug {
    /// The durable name.
    fn name(&self) -> &str;

    /// Fetch up to `max` deliveries, waiting at most `wait` for the first.
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledge deliveries: they will not be delivered to this consumer again.
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()>;

    /// Hand a delivery back to be delivered again after `delay` (zero: at once).
    /// Transports without [`Capabilities::nak`] return [`ErrorKind::Unsupported`].
    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()>;

    /// How many malformed messages this handle skipped.
    fn malformed_skipped(&self) -> u64;

    /// How much this consumer still has to do: matching packets stored and
    /// not yet delivered, and deliveries not yet acked. Counted by the
    /// server where it keeps the figure (NATS consumer info, Kafka high
    /// watermark minus the consumer's position, Redis group lag, SQLite rows
    /// after the cursor); each backend's docs say how exact it is.
    /// Transports without [`Capabilities::backlog`] return
    /// [`ErrorKind::Unsupported`].
    async fn backlog(&self) -> Result<Backlog> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "consumer",
            format!("consumer {} cannot count its backlog", self.name()),
        ))
    }

    /// Flush pending acknowledgements and release the handle. The consumer's
    /// state stays with the transport, to be resumed by name.
    async fn close(&self) -> Result<()>;
}

/// The transport trait: deposit, consume durably, subscribe live.
///
/// Use it as `Arc<dyn OutcomeTransport>` ([`DynTransport`]) to pick a backend
/// at run time. Packets are validated and size-checked when an
/// [`EncodedPacket`] is built, so nothing invalid reaches a backend.
///
/// # Behavior
///
/// - [`deposit_encoded`](Self::deposit_encoded) returns only once the packet is
///   durably stored; its subject must lie under [`prefix`](Self::prefix).
/// - [`deposit_encoded_batch`](Self::deposit_encoded_batch) keeps many
///   acknowledgements in flight and returns receipts in input order; on error,
///   some packets may have been stored: retrying is safe where
///   [`Capabilities::dedup`] holds, and synthesis counts a packet once anyway.
/// - Per-subject order is the order one publisher deposited in.
#[async_trait]
pub trait OutcomeTransport: Send + Sync + fmt::Debug {
    /// What this transport is: name, capabilities and prefix, built once
    /// when it connected. The three methods below read it; a backend
    /// implements this one.
    fn info(&self) -> &TransportInfo;

    /// The backend's short name (`"memory"`, `"sqlite"`, `"nats"`, …).
    fn name(&self) -> &'static str {
        self.info().name()
    }

    /// What this transport can do.
    fn capabilities(&self) -> Capabilities {
        self.info().capabilities()
    }

    /// The subject prefix this transport stores (e.g. `qis.iot`).
    fn prefix(&self) -> &Subject {
        self.info().prefix()
    }

    /// Store one packet durably and return its receipt. The default deposits
    /// a batch of one with [`deposit_encoded_batch`](Self::deposit_encoded_batch).
    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        let mut receipts = self
            .deposit_encoded_batch(std::slice::from_ref(packet))
            .await?;
        receipts.pop().ok_or_else(|| {
            Error::new(
                ErrorKind::Backend,
                self.name(),
                format!(
                    "no receipt came back for packet {} on {}",
                    packet.id(),
                    packet.subject()
                ),
            )
        })
    }

    /// Store many packets with acknowledgements in flight; receipts in input order.
    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>>;

    /// Fire-and-forget, at-most-once: live subscribers that are connected may
    /// get it; nothing is stored.
    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        let _ = packet;
        Err(Error::unsupported(self.name(), "fire-and-forget publish"))
    }

    /// Open (create or resume) a durable consumer.
    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>>;

    /// Subscribe live (at-most-once) to a pattern. Packets deposited or
    /// published after this returns are delivered while the stream is polled.
    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription>;

    /// The durable consumers under this transport's prefix, by name, each
    /// with its backlog, without opening any of them. Transports without
    /// [`Capabilities::backlog`] return [`ErrorKind::Unsupported`].
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        Err(Error::unsupported(self.name(), "listing consumers"))
    }

    /// The stored packets under the query's pattern whose context vectors are
    /// most like its vector, best first (the contract is in
    /// [`crate::similar`]). Transports without [`Capabilities::similarity`]
    /// return [`ErrorKind::Unsupported`].
    async fn similar(&self, query: &SimilarityQuery) -> Result<Vec<Scored>> {
        let _ = query;
        Err(Error::unsupported(self.name(), "similarity search"))
    }

    /// Flush what is pending and close connections.
    async fn close(&self) -> Result<()>;
}

/// A transport picked at run time.
pub type DynTransport = Arc<dyn OutcomeTransport>;

/// Conveniences for every transport.
#[async_trait]
pub trait OutcomeTransportExt: OutcomeTransport {
    /// Validate, encode and deposit `packet` on its readable subject
    /// `{prefix}.{domain}.{problem_class}`.
    async fn deposit(&self, packet: &OutcomePacket) -> Result<Receipt> {
        let enc = EncodedPacket::readable(packet, self.prefix())?;
        self.deposit_encoded(&enc).await
    }

    /// Deposit `packet` on its fingerprinted subject
    /// `{prefix}.{domain}.{problem_class}.{fingerprint}`.
    async fn deposit_fingerprinted(
        &self,
        packet: &OutcomePacket,
        resolution: u32,
    ) -> Result<Receipt> {
        let subject = packet.fingerprinted_subject(self.prefix(), resolution)?;
        let enc = EncodedPacket::new(packet, subject)?;
        self.deposit_encoded(&enc).await
    }

    /// Validate every packet first (nothing is sent if one is bad), then deposit
    /// them all on their readable subjects with acks in flight.
    async fn deposit_batch(&self, packets: &[OutcomePacket]) -> Result<Vec<Receipt>> {
        let enc = packets
            .iter()
            .map(|p| EncodedPacket::readable(p, self.prefix()))
            .collect::<Result<Vec<_>>>()?;
        self.deposit_encoded_batch(&enc).await
    }

    /// Fire-and-forget `packet` on its readable subject (at-most-once).
    async fn publish(&self, packet: &OutcomePacket) -> Result<()> {
        let enc = EncodedPacket::readable(packet, self.prefix())?;
        self.publish_encoded(&enc).await
    }

    /// Open a durable consumer `name` on the readable subject of
    /// `domain`/`problem_class`, starting with all retained history: the
    /// seed's twin query, done so that earlier deposits are found.
    async fn twins_consumer(
        &self,
        name: &str,
        domain: &str,
        problem_class: &str,
    ) -> Result<Arc<dyn DurableConsumer>> {
        let subject = Subject::readable(self.prefix(), domain, problem_class)?;
        self.consumer(ConsumerConfig::new(name, SubjectPattern::from(&subject))?)
            .await
    }

    /// The `k` packets on `own`'s problem whose situation is most like its
    /// own: on the readable subject `{prefix}.{domain}.{problem_class}` or
    /// any subject below it (fingerprint leaves), by cosine similarity of the
    /// context vectors, scoring at least `min_score` if given. Best first;
    /// `own` itself is returned too if it was deposited.
    async fn similar_twins(
        &self,
        own: &OutcomePacket,
        k: usize,
        min_score: Option<f64>,
    ) -> Result<Vec<Scored>> {
        let readable = own.subject(self.prefix())?;
        let mut lists = Vec::with_capacity(2);
        for pattern in [SubjectPattern::from(&readable), readable.all_below()] {
            let mut q = SimilarityQuery::new(pattern, own.context_vector.clone(), k)?;
            if let Some(min) = min_score {
                q = q.with_min_score(min)?;
            }
            lists.push(self.similar(&q).await?);
        }
        Ok(merge(k, lists))
    }
}

impl<T: OutcomeTransport + ?Sized> OutcomeTransportExt for T {}

/// Longest pause [`deliveries`] makes between fetches that fail transiently.
const MAX_STREAM_BACKOFF: Duration = Duration::from_secs(5);

/// A continuous at-least-once stream of deliveries from a durable consumer
/// (the seed's push consumer), built on [`DurableConsumer::fetch`]: it fetches
/// up to `batch` at a time, waiting up to `wait` per fetch. Ack each delivery
/// with the consumer; an unacked one comes back after the ack wait.
///
/// A fetch error is yielded as an `Err` item. After a transient one
/// ([`Error::is_transient`]: the server is unreachable, a timeout) the stream
/// goes on, pausing 100 ms before the next fetch and doubling the pause up to
/// 5 s while errors continue; after a permanent one (the consumer or
/// transport is closed, the consumer is gone, …) the stream ends.
pub fn deliveries(
    consumer: Arc<dyn DurableConsumer>,
    batch: usize,
    wait: Duration,
) -> Pin<Box<dyn Stream<Item = Result<Delivery>> + Send>> {
    struct State {
        consumer: Arc<dyn DurableConsumer>,
        buffered: std::collections::VecDeque<Delivery>,
        pause: Duration,
        ended: bool,
    }
    let batch = batch.max(1);
    let state = State {
        consumer,
        buffered: Default::default(),
        pause: Duration::ZERO,
        ended: false,
    };
    Box::pin(futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(d) = st.buffered.pop_front() {
                return Some((Ok(d), st));
            }
            if st.ended {
                return None;
            }
            if !st.pause.is_zero() {
                tokio::time::sleep(st.pause).await;
            }
            match st.consumer.fetch(batch, wait).await {
                Ok(got) => {
                    st.pause = Duration::ZERO;
                    st.buffered.extend(got);
                }
                Err(e) => {
                    if e.is_transient() {
                        st.pause =
                            (st.pause * 2).clamp(Duration::from_millis(100), MAX_STREAM_BACKOFF);
                    } else {
                        st.ended = true;
                    }
                    return Some((Err(e), st));
                }
            }
        }
    }))
}
