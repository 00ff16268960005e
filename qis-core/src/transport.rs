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
use crate::subject::{Subject, SubjectPattern};

/// What a transport can do. A backend fills in what it supports; asking for
/// something it lacks returns an [`ErrorKind::Unsupported`] error, never a
/// silent no-op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !ok {
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The subject it was stored under.
    pub subject: Subject,
    /// The packet id.
    pub id: PacketId,
    /// Where it was stored (for a duplicate: where the original is, if known).
    pub position: Position,
    /// The transport recognised an identical earlier deposit and did not store it again.
    pub duplicate: bool,
}

/// An opaque handle a backend puts in each [`Delivery`] to find it again on
/// ack or nak. Only the backend that made it can read it.
#[derive(Clone)]
pub struct AckToken(Arc<dyn Any + Send + Sync>);

impl AckToken {
    /// Wrap a backend's own value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        AckToken(Arc::new(value))
    }

    /// The backend's value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AckToken(..)")
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

impl Delivery {
    /// The packet.
    pub fn packet(&self) -> &OutcomePacket {
        &self.received.packet
    }

    /// The packet id.
    pub fn id(&self) -> PacketId {
        self.received.id
    }

    /// The subject it was deposited on.
    pub fn subject(&self) -> &str {
        &self.received.subject
    }
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
    /// The backend's short name (`"memory"`, `"sqlite"`, `"nats"`, …).
    fn name(&self) -> &'static str;

    /// What this transport can do.
    fn capabilities(&self) -> Capabilities;

    /// The subject prefix this transport stores (e.g. `qis.iot`).
    fn prefix(&self) -> &Subject;

    /// Store one packet durably and return its receipt.
    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt>;

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

    /// Flush what is pending and close connections.
    async fn close(&self) -> Result<()>;
}

/// A transport picked at run time.
pub type DynTransport = Arc<dyn OutcomeTransport>;

/// Check that `subject` lies under the transport's prefix.
pub fn check_under_prefix(
    transport: &'static str,
    prefix: &Subject,
    subject: &Subject,
) -> Result<()> {
    if subject.as_str().len() > prefix.as_str().len() && prefix.contains(subject.as_str()) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSubject,
            transport,
            format!("subject {subject} is not under this transport's prefix {prefix}: deposit under {prefix}.> or configure another prefix"),
        ))
    }
}

/// Check that a consumer or subscription pattern can match something under the
/// transport's prefix.
pub fn check_pattern_overlaps(
    transport: &'static str,
    prefix: &Subject,
    pattern: &SubjectPattern,
) -> Result<()> {
    if pattern.overlaps(prefix) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSubject,
            transport,
            format!("pattern {pattern} can match nothing under this transport's prefix {prefix}"),
        ))
    }
}

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
}

impl<T: OutcomeTransport + ?Sized> OutcomeTransportExt for T {}

/// A continuous at-least-once stream of deliveries from a durable consumer
/// (the seed's push consumer), built on [`DurableConsumer::fetch`]: it fetches
/// up to `batch` at a time, waiting up to `wait` per fetch. Ack each delivery
/// with the consumer; an unacked one comes back after the ack wait.
pub fn deliveries(
    consumer: Arc<dyn DurableConsumer>,
    batch: usize,
    wait: Duration,
) -> Pin<Box<dyn Stream<Item = Result<Delivery>> + Send>> {
    use futures::StreamExt;
    let batch = batch.max(1);
    Box::pin(
        futures::stream::unfold(consumer, move |c| async move {
            let r = c.fetch(batch, wait).await;
            Some((r, c))
        })
        .flat_map(|r| match r {
            Ok(v) => futures::stream::iter(v.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => futures::stream::iter(vec![Err(e)]),
        }),
    )
}
