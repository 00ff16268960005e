//! The checking layer: [`Checked`].

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use crate::backend::{check_pattern_overlaps, check_under_prefix};
use crate::error::{Error, ErrorKind, Result};
use crate::packet::EncodedPacket;
use crate::similar::{Scored, SimilarityQuery};
use crate::subject::SubjectPattern;
use crate::transport::{
    Backlog, ConsumerConfig, ConsumerInfo, Delivery, DurableConsumer, LiveSubscription,
    OutcomeTransport, Receipt, StartPosition, TransportInfo,
};

/// The one checking layer every backend's `connect` applies.
///
/// [`Checked`] wraps a backend's transport (and every consumer it opens) and
/// does, once and the same way for every backend, what no backend should
/// repeat (the way OpenDAL wraps every service in its correctness layer):
///
/// - a transport or consumer used after `close()` answers
///   [`ErrorKind::Closed`]; closing twice is a no-op;
/// - a deposit or publish on a subject outside the transport's prefix, and a
///   consumer, subscription or similarity query on a pattern that can match
///   nothing under it, are [`ErrorKind::InvalidSubject`], before anything is
///   sent;
/// - a similarity query with a zero or empty vector returns nothing without
///   asking the backend (it has no direction to compare with);
/// - what [`Capabilities`](crate::Capabilities) rule out ([`publish_encoded`] without
///   `fire_and_forget`, [`subscribe`] without `live`, a consumer without
///   `durable`, [`StartPosition::Since`] without `start_since`, [`nak`]
///   without `nak`, [`backlog`] and [`consumers`] without `backlog`) is
///   [`ErrorKind::Unsupported`];
/// - a delivery acked or nak-ed on a consumer handle that did not hand it out
///   (another handle, another consumer, another transport) is
///   [`ErrorKind::InvalidInput`], and nothing in that call is acked;
/// - a fetch of zero packets is [`ErrorKind::InvalidInput`];
/// - every deposit, publish, consumer, fetch, ack, nak, backlog, consumers,
///   subscribe call and similarity query runs in a `tracing` span at debug
///   level named `qis.deposit`, `qis.deposit_batch`, `qis.publish`,
///   `qis.consumer`, `qis.fetch`, `qis.ack`, `qis.nak`, `qis.backlog`,
///   `qis.consumers`, `qis.subscribe`, `qis.similar`, with the same fields on
///   every backend: `transport`, `subject`, `packet_id`, `pattern`,
///   `consumer`, `count` (`max` on fetch, and `k` as `max` on a similarity
///   query).
///
/// [`publish_encoded`]: OutcomeTransport::publish_encoded
/// [`subscribe`]: OutcomeTransport::subscribe
/// [`nak`]: DurableConsumer::nak
/// [`backlog`]: DurableConsumer::backlog
/// [`consumers`]: OutcomeTransport::consumers
/// [`similar`]: OutcomeTransport::similar
///
/// ```
/// use qis_core::{ErrorKind, MemoryTransport, OutcomeTransport, SubjectPattern};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Every backend's constructor returns its transport behind the layer.
/// let transport = MemoryTransport::new(Default::default());
/// let elsewhere = SubjectPattern::new("other.>").unwrap();
/// let e = transport.subscribe(elsewhere).await.err().unwrap();
/// assert_eq!(e.kind(), ErrorKind::InvalidSubject);
/// transport.close().await.unwrap();
/// let e = transport.subscribe(SubjectPattern::new("qis.iot.>").unwrap()).await.err().unwrap();
/// assert_eq!(e.kind(), ErrorKind::Closed);
/// # }
/// ```
///
/// It dereferences to the backend's own type, so the backend's extra methods
/// (`SqliteTransport::prune`, `NatsTransport::jetstream`, …) stay at hand;
/// the [`OutcomeTransport`] methods called on it are the checked ones.
/// Clones share one closed state, as they share the backend's connection.
pub struct Checked<T> {
    inner: T,
    closed: Arc<AtomicBool>,
}

impl<T: OutcomeTransport> Checked<T> {
    /// Put `inner` behind the checking layer.
    pub fn new(inner: T) -> Self {
        Checked {
            inner,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<T> Checked<T> {
    /// The backend's transport, unchecked.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Whether [`close`](OutcomeTransport::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl<T> Deref for Checked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: Clone> Clone for Checked<T> {
    fn clone(&self) -> Self {
        Checked {
            inner: self.inner.clone(),
            closed: self.closed.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Checked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: OutcomeTransport> Checked<T> {
    fn open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::closed(self.inner.name()))
        } else {
            Ok(())
        }
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::unsupported(self.inner.name(), what)
    }
}

#[async_trait]
impl<T: OutcomeTransport> OutcomeTransport for Checked<T> {
    fn info(&self) -> &TransportInfo {
        self.inner.info()
    }

    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        self.open()?;
        let name = self.inner.name();
        check_under_prefix(name, self.prefix(), packet.subject())?;
        let span = tracing::debug_span!("qis.deposit", transport = name, subject = %packet.subject(), packet_id = %packet.id());
        self.inner.deposit_encoded(packet).instrument(span).await
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        self.open()?;
        let name = self.inner.name();
        for p in packets {
            check_under_prefix(name, self.prefix(), p.subject())?;
        }
        if packets.is_empty() {
            return Ok(Vec::new());
        }
        let span =
            tracing::debug_span!("qis.deposit_batch", transport = name, count = packets.len());
        self.inner
            .deposit_encoded_batch(packets)
            .instrument(span)
            .await
    }

    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        self.open()?;
        if !self.capabilities().fire_and_forget {
            return Err(self.unsupported("fire-and-forget publish"));
        }
        let name = self.inner.name();
        check_under_prefix(name, self.prefix(), packet.subject())?;
        let span = tracing::debug_span!("qis.publish", transport = name, subject = %packet.subject(), packet_id = %packet.id());
        self.inner.publish_encoded(packet).instrument(span).await
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        self.open()?;
        let caps = self.capabilities();
        if !caps.durable {
            return Err(self.unsupported("a durable consumer"));
        }
        if matches!(config.start, StartPosition::Since(_)) && !caps.start_since {
            return Err(self.unsupported("a consumer starting at a time"));
        }
        let name = self.inner.name();
        check_pattern_overlaps(name, self.prefix(), &config.pattern)?;
        let span = tracing::debug_span!("qis.consumer", transport = name, consumer = %config.name, pattern = %config.pattern);
        let consumer_name = config.name.clone();
        let inner = self.inner.consumer(config).instrument(span).await?;
        Ok(Arc::new(CheckedConsumer {
            inner,
            name: consumer_name,
            transport: name,
            id: NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed),
            stamped_inside: AtomicU64::new(0),
            nak: caps.nak,
            backlog: caps.backlog,
            closed: AtomicBool::new(false),
            transport_closed: self.closed.clone(),
        }))
    }

    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        self.open()?;
        if !self.capabilities().live {
            return Err(self.unsupported("a live subscription"));
        }
        let name = self.inner.name();
        check_pattern_overlaps(name, self.prefix(), &pattern)?;
        let span = tracing::debug_span!("qis.subscribe", transport = name, pattern = %pattern);
        self.inner.subscribe(pattern).instrument(span).await
    }

    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        self.open()?;
        if !self.capabilities().backlog {
            return Err(self.unsupported("listing consumers with their backlog"));
        }
        let span = tracing::debug_span!(
            "qis.consumers",
            transport = self.inner.name(),
            count = tracing::field::Empty
        );
        let got = self.inner.consumers().instrument(span.clone()).await?;
        span.record("count", got.len());
        Ok(got)
    }

    async fn similar(&self, query: &SimilarityQuery) -> Result<Vec<Scored>> {
        self.open()?;
        if !self.capabilities().similarity {
            return Err(self.unsupported("similarity search"));
        }
        let name = self.inner.name();
        check_pattern_overlaps(name, self.prefix(), query.pattern())?;
        if query.matches_nothing() {
            // A zero or empty vector has no direction: nothing is similar.
            return Ok(Vec::new());
        }
        let span = tracing::debug_span!(
            "qis.similar",
            transport = name,
            pattern = %query.pattern(),
            max = query.k(),
            count = tracing::field::Empty
        );
        let got = self.inner.similar(query).instrument(span.clone()).await?;
        span.record("count", got.len());
        Ok(got)
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.close().await
    }
}

/// Consumer handle ids; 0 marks a token no checked consumer stamped.
static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

/// A consumer behind the checking layer.
struct CheckedConsumer {
    inner: Arc<dyn DurableConsumer>,
    name: String,
    transport: &'static str,
    /// This handle's id, stamped on every token it hands out.
    id: u64,
    /// When the backend's consumer is itself checked (a layer wrapped in a
    /// layer), the id that inner layer stamped; the tokens keep it.
    stamped_inside: AtomicU64,
    nak: bool,
    backlog: bool,
    closed: AtomicBool,
    transport_closed: Arc<AtomicBool>,
}

impl fmt::Debug for CheckedConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl CheckedConsumer {
    fn open(&self) -> Result<()> {
        if self.transport_closed.load(Ordering::Acquire) {
            Err(Error::closed(self.transport))
        } else if self.closed.load(Ordering::Acquire) {
            Err(Error::consumer_closed(self.transport, &self.name))
        } else {
            Ok(())
        }
    }

    fn check_owner(&self, d: &Delivery) -> Result<()> {
        let owner = d.token.owner;
        if owner != 0 && (owner == self.id || owner == self.stamped_inside.load(Ordering::Relaxed))
        {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::InvalidInput,
            self.transport,
            format!(
                "packet {} was not handed out by this handle of consumer {}: ack or nak a delivery on the consumer handle that fetched it",
                d.id(),
                self.name
            ),
        ))
    }
}

#[async_trait]
impl DurableConsumer for CheckedConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.open()?;
        if max == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                self.transport,
                "fetch of 0 packets: ask for at least 1",
            ));
        }
        let span = tracing::debug_span!(
            "qis.fetch",
            transport = self.transport,
            consumer = %self.name,
            max,
            count = tracing::field::Empty
        );
        let mut got = self.inner.fetch(max, wait).instrument(span.clone()).await?;
        for d in &mut got {
            if d.token.owner == 0 {
                d.token.owner = self.id;
            } else {
                self.stamped_inside.store(d.token.owner, Ordering::Relaxed);
            }
        }
        span.record("count", got.len());
        Ok(got)
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.open()?;
        for d in deliveries {
            self.check_owner(d)?;
        }
        if deliveries.is_empty() {
            return Ok(());
        }
        let span = tracing::debug_span!("qis.ack", transport = self.transport, consumer = %self.name, count = deliveries.len());
        self.inner.ack(deliveries).instrument(span).await
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.open()?;
        if !self.nak {
            return Err(Error::unsupported(self.transport, "nak"));
        }
        self.check_owner(delivery)?;
        let span = tracing::debug_span!("qis.nak", transport = self.transport, consumer = %self.name, packet_id = %delivery.id());
        self.inner.nak(delivery, delay).instrument(span).await
    }

    fn malformed_skipped(&self) -> u64 {
        self.inner.malformed_skipped()
    }

    async fn backlog(&self) -> Result<Backlog> {
        self.open()?;
        if !self.backlog {
            return Err(Error::unsupported(
                self.transport,
                "counting a consumer's backlog",
            ));
        }
        let span =
            tracing::debug_span!("qis.backlog", transport = self.transport, consumer = %self.name);
        self.inner.backlog().instrument(span).await
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if self.transport_closed.load(Ordering::Acquire) {
            // Closing the transport flushed this consumer's acks already.
            return Ok(());
        }
        self.inner.close().await
    }
}
