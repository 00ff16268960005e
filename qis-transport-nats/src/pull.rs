//! Durable pull consumers: JetStream durable consumers with explicit ack,
//! fetched in batches.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::{
    self, pull, AckPolicy, DeliverPolicy, FromConsumer, PullConsumer,
};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{ConsumerCreateStrictErrorKind, ConsumerUpdateErrorKind};
use async_nats::jetstream::{AckKind, ErrorCode};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use qis_core::{
    AckToken, ConsumerConfig, Delivery, DurableConsumer, Error, ErrorKind, Position, Received,
    Result, StartPosition, SubjectPattern,
};

use crate::errors::{self, err};
use crate::{server_filter, NatsTransport, NAME};
use qis_core::transport::check_pattern_overlaps;

/// Consumer metadata key holding the QIS pattern the consumer was created
/// with, so re-opening it with another pattern is refused even when both
/// narrow to the same server filter.
const PATTERN_KEY: &str = "qis_pattern";

/// Waits shorter than this are sent as "no wait" pull requests.
const MIN_EXPIRES: Duration = Duration::from_millis(1);

/// The ack-protocol payloads sent again, idempotently, to confirm.
const ACK: &[u8] = b"+ACK";
const TERM: &[u8] = b"+TERM";

/// A durable JetStream pull consumer, implementing [`DurableConsumer`].
///
/// Opened with [`qis_core::OutcomeTransport::consumer`]. Its state (what was
/// acked) lives on the server under its name: any handle opened by that name,
/// from any connection, resumes it, and several handles share its work.
pub struct NatsConsumer {
    transport: NatsTransport,
    name: String,
    pattern: SubjectPattern,
    consumer: PullConsumer,
    malformed: AtomicU64,
    /// The reply subject of the last ack or term sent and not yet confirmed:
    /// acking it again with a reply (idempotent) confirms everything before.
    unconfirmed: Mutex<Option<(async_nats::Subject, &'static [u8])>>,
}

impl fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConsumer")
            .field("name", &self.name)
            .field("pattern", &self.pattern.as_str())
            .field("stream", &self.transport.inner.stream)
            .field("malformed_skipped", &self.malformed.load(Ordering::Relaxed))
            .finish()
    }
}

/// What a [`Delivery`] from this transport carries for ack / nak: the
/// message's JetStream reply subject.
#[derive(Debug)]
struct NatsAck {
    reply: async_nats::Subject,
}

fn conflict(name: &str, msg: impl fmt::Display) -> Error {
    err(
        ErrorKind::Conflict,
        format!("consumer {name} {msg}: use another consumer name"),
    )
}

/// Check that an existing consumer is the one asked for.
fn check_existing(info: &consumer::Info, config: &ConsumerConfig, filter: &str) -> Result<()> {
    let c = &info.config;
    if c.deliver_subject.is_some() {
        return Err(conflict(
            &config.name,
            "exists as a push consumer, not a pull consumer",
        ));
    }
    if c.ack_policy != AckPolicy::Explicit {
        return Err(conflict(
            &config.name,
            format_args!("exists with ack policy {:?}, not explicit", c.ack_policy),
        ));
    }
    match c.metadata.get(PATTERN_KEY) {
        Some(p) if p != config.pattern.as_str() => Err(conflict(
            &config.name,
            format_args!("exists with pattern {p}, not {}", config.pattern),
        )),
        Some(_) => Ok(()),
        None => {
            let filters: Vec<&str> = if c.filter_subjects.is_empty() {
                vec![c.filter_subject.as_str()]
            } else {
                c.filter_subjects.iter().map(String::as_str).collect()
            };
            if filters == [filter] {
                Ok(())
            } else {
                Err(conflict(
                    &config.name,
                    format_args!("exists with filter {filters:?}, not {filter}"),
                ))
            }
        }
    }
}

fn deliver_policy(start: StartPosition) -> Result<DeliverPolicy> {
    Ok(match start {
        StartPosition::All => DeliverPolicy::All,
        StartPosition::New => DeliverPolicy::New,
        StartPosition::Since(t) => {
            let nanos = match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            };
            let start_time = async_nats::datetime::from_nanos(nanos.max(0)).map_err(|e| {
                err(
                    ErrorKind::InvalidInput,
                    "the start time cannot be represented: give a time after 1970",
                )
                .with_source(e)
            })?;
            DeliverPolicy::ByStartTime { start_time }
        }
    })
}

impl NatsConsumer {
    /// Create the durable consumer, or resume the existing one by name.
    pub(crate) async fn open(transport: &NatsTransport, config: ConsumerConfig) -> Result<Self> {
        let prefix = &transport.inner.config.prefix;
        check_pattern_overlaps(NAME, prefix, &config.pattern)?;
        let filter = server_filter(prefix, &config.pattern)
            .expect("a pattern that overlaps the prefix has a filter under it");
        let stream = transport
            .inner
            .js
            .get_stream_no_info(&transport.inner.stream)
            .await
            .map_err(|e| {
                errors::get_stream(transport.config().server_url(), &transport.inner.stream, e)
            })?;

        let mut consumer = None;
        for _ in 0..3 {
            match stream.consumer_info(&config.name).await {
                Ok(info) => {
                    check_existing(&info, &config, &filter)?;
                    if info.config.ack_wait != config.ack_wait {
                        let mut updated = pull::Config::try_from_consumer_config(
                            info.config.clone(),
                        )
                        .map_err(|e| {
                            conflict(
                                &config.name,
                                format_args!("cannot be read as a pull consumer: {e}"),
                            )
                        })?;
                        updated.ack_wait = config.ack_wait;
                        match stream.update_consumer(updated).await {
                            Ok(c) => {
                                consumer = Some(c);
                                break;
                            }
                            Err(e) if matches!(e.kind(), ConsumerUpdateErrorKind::DoesNotExist) => {
                                continue
                            }
                            Err(e) => {
                                return Err(err(
                                    ErrorKind::Backend,
                                    format!(
                                        "changing the ack wait of consumer {} failed",
                                        config.name
                                    ),
                                )
                                .with_source(e))
                            }
                        }
                    }
                    let c = pull::Config::try_from_consumer_config(info.config.clone()).map_err(
                        |e| {
                            conflict(
                                &config.name,
                                format_args!("cannot be read as a pull consumer: {e}"),
                            )
                        },
                    )?;
                    consumer = Some(consumer::Consumer::new(c, info, transport.inner.js.clone()));
                    break;
                }
                Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {}
                Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::StreamNotFound) => {
                    return Err(err(
                        ErrorKind::NotFound,
                        format!(
                            "stream {} is gone: connect again to recreate it",
                            transport.inner.stream
                        ),
                    )
                    .with_source(e))
                }
                Err(e) => {
                    let kind = match e.kind() {
                        ConsumerInfoErrorKind::TimedOut => ErrorKind::Timeout,
                        ConsumerInfoErrorKind::NoResponders | ConsumerInfoErrorKind::Request => {
                            ErrorKind::Unavailable
                        }
                        ConsumerInfoErrorKind::InvalidName => ErrorKind::InvalidInput,
                        _ => ErrorKind::Backend,
                    };
                    return Err(
                        err(kind, format!("looking up consumer {} failed", config.name))
                            .with_source(e),
                    );
                }
            }
            let create = pull::Config {
                durable_name: Some(config.name.clone()),
                description: Some(format!("QIS durable consumer on {}", config.pattern)),
                deliver_policy: deliver_policy(config.start)?,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                filter_subject: filter.clone(),
                max_ack_pending: transport.inner.config.max_ack_pending,
                metadata: HashMap::from([(
                    PATTERN_KEY.to_string(),
                    config.pattern.as_str().to_string(),
                )]),
                ..Default::default()
            };
            match stream.create_consumer_strict(create).await {
                Ok(c) => {
                    tracing::debug!(consumer = %config.name, filter = %filter, "created durable consumer");
                    consumer = Some(c);
                    break;
                }
                // Created by someone else meanwhile (or with other settings): look again.
                Err(e) if matches!(e.kind(), ConsumerCreateStrictErrorKind::AlreadyExists) => {
                    continue
                }
                Err(e) => {
                    let kind = match e.kind() {
                        ConsumerCreateStrictErrorKind::TimedOut => ErrorKind::Timeout,
                        ConsumerCreateStrictErrorKind::Request => ErrorKind::Unavailable,
                        ConsumerCreateStrictErrorKind::JetStream(je)
                            if je.error_code() == ErrorCode::CONSUMER_NAME_EXIST =>
                        {
                            continue
                        }
                        _ => ErrorKind::Backend,
                    };
                    return Err(
                        err(kind, format!("creating consumer {} failed", config.name))
                            .with_source(e),
                    );
                }
            }
        }
        let consumer = consumer.ok_or_else(|| {
            err(
                ErrorKind::Backend,
                format!(
                    "consumer {} kept changing while it was being opened: try again",
                    config.name
                ),
            )
        })?;
        Ok(NatsConsumer {
            transport: transport.clone(),
            name: config.name,
            pattern: config.pattern,
            consumer,
            malformed: AtomicU64::new(0),
            unconfirmed: Mutex::new(None),
        })
    }

    fn reply<'a>(&self, delivery: &'a Delivery) -> Result<&'a async_nats::Subject> {
        delivery
            .token
            .get::<NatsAck>()
            .map(|a| &a.reply)
            .ok_or_else(|| {
                err(
                    ErrorKind::InvalidInput,
                    "this delivery came from another transport",
                )
            })
    }

    /// Send an ack-protocol payload; with `confirm`, wait until the server
    /// has processed it (and everything this connection sent before).
    async fn send_ack(
        &self,
        reply: &async_nats::Subject,
        payload: Bytes,
        confirm: bool,
    ) -> Result<()> {
        if confirm {
            self.request_ack(reply, payload).await
        } else {
            self.publish_ack(reply, payload).await
        }
    }

    /// Send an ack-protocol payload (the hot path: kept to a small future).
    async fn publish_ack(&self, reply: &async_nats::Subject, payload: Bytes) -> Result<()> {
        self.transport
            .inner
            .client
            .publish(reply.clone(), payload)
            .await
            .map_err(|e| errors::send(&format!("acknowledging to consumer {}", self.name), e))
    }

    /// Send an ack-protocol payload and wait for the server's reply.
    async fn request_ack(&self, reply: &async_nats::Subject, payload: Bytes) -> Result<()> {
        Box::pin(self.transport.inner.client.request(reply.clone(), payload))
            .await
            .map(|_| ())
            .map_err(|e| errors::request(&format!("acknowledging to consumer {}", self.name), e))
    }

    fn remember(&self, reply: async_nats::Subject, payload: &'static [u8]) {
        *self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner()) = Some((reply, payload));
    }

    /// Wait until the server has processed every ack this handle sent: send
    /// the last ack (or term) again, with a reply, and wait for the reply.
    async fn confirm(&self) -> Result<()> {
        let last = self
            .unconfirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match last {
            Some((reply, payload)) => {
                self.send_ack(&reply, Bytes::from_static(payload), true)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Turn one fetched message into a delivery, or say what to send back
    /// for it. Synchronous: the common path allocates no future.
    fn accept(&self, message: async_nats::jetstream::Message) -> Accepted {
        let Some(reply) = message.reply.clone() else {
            tracing::warn!(consumer = %self.name, subject = %message.subject, "message without a reply subject skipped");
            return Accepted::Skip;
        };
        let (seq, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                tracing::warn!(consumer = %self.name, subject = %message.subject, error = %e, "message with an unreadable ack subject skipped");
                return Accepted::Skip;
            }
        };
        let subject = message.subject.as_str();
        if !self.pattern.matches(subject) {
            // The server filter is exact, so this is not expected; ack it away.
            tracing::debug!(consumer = %self.name, subject, seq, "acking away a message outside the pattern");
            return Accepted::Answer(reply, ACK);
        }
        // The deposit set Nats-Msg-Id to the packet id: no need to re-hash.
        let carried = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str());
        match Received::decode_with_id(subject, &message.payload, carried) {
            Ok(received) => Accepted::Deliver(Delivery {
                received,
                position: Position::Sequence(seq),
                delivery_count: u32::try_from(delivered.max(1)).unwrap_or(u32::MAX),
                token: AckToken::new(NatsAck { reply }),
            }),
            Err(e) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(consumer = %self.name, subject, seq, error = %e, "terminating malformed message: it will not be delivered again");
                Accepted::Answer(reply, TERM)
            }
        }
    }
}

/// What [`NatsConsumer::accept`] made of a message. Consumed at once, so
/// the size difference costs nothing, while boxing would allocate per packet.
#[allow(clippy::large_enum_variant)]
enum Accepted {
    /// A packet for the caller.
    Deliver(Delivery),
    /// Not for the caller: send this ack-protocol payload back (ack it away,
    /// or terminate it as malformed).
    Answer(async_nats::Subject, &'static [u8]),
    /// Nothing can be done with it.
    Skip,
}

fn pull_error(
    name: &str,
    e: impl fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    let text = e.to_string();
    let (kind, msg) = if text.contains("Consumer Deleted") {
        (
            ErrorKind::NotFound,
            format!("consumer {name} was deleted on the server: open it again"),
        )
    } else if text.contains("MaxAckPending") {
        (
            ErrorKind::Backend,
            format!("consumer {name} has reached its max_ack_pending: ack or nak deliveries, or raise NatsConfig::max_ack_pending"),
        )
    } else {
        (
            ErrorKind::Unavailable,
            format!("fetching from consumer {name} failed: {text}"),
        )
    };
    err(kind, msg).with_source(e)
}

#[async_trait]
impl DurableConsumer for NatsConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(level = "debug", skip(self), fields(consumer = %self.name))]
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.transport.check_open()?;
        let max = max.max(1);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            // "No wait" with an expiry: the server answers as soon as it has
            // at least one message, or when the expiry passes.
            let mut request = self.consumer.fetch().max_messages(max);
            if remaining >= MIN_EXPIRES {
                request = request.expires(remaining);
            }
            let mut batch = request
                .messages()
                .await
                .map_err(|e| pull_error(&self.name, e))?;
            let mut out = Vec::with_capacity(max.min(1024));
            let mut got_any = false;
            while let Some(item) = batch.next().await {
                match item {
                    Ok(message) => {
                        got_any = true;
                        match self.accept(message) {
                            Accepted::Deliver(d) => out.push(d),
                            Accepted::Answer(reply, payload) => {
                                self.publish_ack(&reply, Bytes::from_static(payload))
                                    .await?;
                                self.remember(reply, payload);
                            }
                            Accepted::Skip => {}
                        }
                    }
                    Err(e) if out.is_empty() && !got_any => return Err(pull_error(&self.name, e)),
                    Err(e) => {
                        tracing::debug!(consumer = %self.name, error = %e, "pull request ended early");
                        break;
                    }
                }
            }
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            if !got_any {
                if remaining < MIN_EXPIRES {
                    return Ok(out);
                }
                // The server ended the request early without messages; don't spin.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(left.min(Duration::from_millis(10))).await;
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.transport.check_open()?;
        let Some((last, rest)) = deliveries.split_last() else {
            return Ok(());
        };
        for d in rest {
            self.send_ack(self.reply(d)?, Bytes::from_static(ACK), false)
                .await?;
        }
        let reply = self.reply(last)?;
        if self.transport.inner.config.confirm_acks {
            // Confirming the last ack confirms them all: the server handles
            // one consumer's acks in the order a connection sent them.
            self.send_ack(reply, Bytes::from_static(ACK), true).await?;
            *self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        } else {
            self.send_ack(reply, Bytes::from_static(ACK), false).await?;
            self.remember(reply.clone(), ACK);
        }
        Ok(())
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.transport.check_open()?;
        let kind = if delay.is_zero() {
            AckKind::Nak(None)
        } else {
            AckKind::Nak(Some(delay))
        };
        self.send_ack(
            self.reply(delivery)?,
            kind.into(),
            self.transport.inner.config.confirm_acks,
        )
        .await
    }

    fn malformed_skipped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    async fn close(&self) -> Result<()> {
        if self.transport.check_open().is_err() {
            return Ok(());
        }
        self.confirm().await?;
        self.transport
            .inner
            .client
            .flush()
            .await
            .map_err(|e| errors::send(&format!("flushing acks of consumer {}", self.name), e))
    }
}
