//! The one transport trait every backend implements, and the types it speaks.
//!
//! The trait is small and object safe: backends implement [`OutcomeTransport`]
//! and [`DurableConsumer`]; the conveniences every caller wants live in
//! [`OutcomeTransportExt`], implemented once for all transports so backends
//! cannot diverge on them.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;

use crate::error::{Error, ErrorKind, Result};
use crate::packet::{EncodedPacket, OutcomePacket, Received};
use crate::similar::{merge, Scored, SimilarityQuery};
use crate::subject::{Subject, SubjectPattern};

mod capabilities;
mod consumer;
mod receipt;

pub use capabilities::{Capabilities, TransportInfo};
pub(crate) use consumer::TokenValue;
pub use consumer::{
    deliveries, AckToken, Backlog, ConsumerConfig, ConsumerInfo, Delivery, DurableConsumer,
    StartPosition, DEFAULT_ACK_WAIT,
};
pub use receipt::{Position, Receipt};

/// A live, at-most-once stream of packets. Malformed messages are skipped and
/// logged by the transport; an `Err` item reports a transport failure.
pub type LiveSubscription = Pin<Box<dyn Stream<Item = Result<Received>> + Send>>;

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
