//! Durable consumers: how to open one, what they deliver, how to ack it,
//! and a stream of deliveries built on fetch.

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::Stream;

use super::Position;
use crate::error::{Error, ErrorKind, Result};
use crate::packet::Received;
use crate::subject::SubjectPattern;

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
}

crate::setters!(ConsumerConfig {
    /// Set the start position.
    start: StartPosition,
    /// Set the ack wait.
    ack_wait: Duration,
});

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

/// What a backend keeps in a token: a number or three inline (no
/// allocation per delivery), or any value of its own.
#[derive(Clone)]
pub(crate) enum TokenValue {
    Seq(u64),
    Words([u64; 3]),
    Any(Arc<dyn Any + Send + Sync>),
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            TokenValue::Seq(s) => write!(f, "AckToken(consumer {}, {s})", self.owner),
            TokenValue::Words([a, b, c]) => {
                write!(f, "AckToken(consumer {}, {a}/{b}/{c})", self.owner)
            }
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
/// In JSON (the gateway's backlog answers), field for field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// A durable consumer the transport keeps, as [`OutcomeTransport::consumers`](crate::OutcomeTransport::consumers)
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
    /// Transports without [`Capabilities::nak`](crate::Capabilities::nak) return [`ErrorKind::Unsupported`].
    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()>;

    /// How many malformed messages this handle skipped.
    fn malformed_skipped(&self) -> u64;

    /// How much this consumer still has to do: matching packets stored and
    /// not yet delivered, and deliveries not yet acked. Counted by the
    /// server where it keeps the figure (NATS consumer info, Kafka high
    /// watermark minus the consumer's position, Redis group lag, SQLite rows
    /// after the cursor); each backend's docs say how exact it is.
    /// Transports without [`Capabilities::backlog`](crate::Capabilities::backlog) return
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
