//! Fetching: one pull request per fetch that the server answers as soon as
//! it has a message (or when the wait is over); malformed bodies are
//! terminated on the server so they never come back.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use qis_core::backend::value_token;
use qis_core::{Delivery, Error, ErrorKind, Position, Received, Result};

use super::ack::{ACK, TERM};
use super::NatsConsumer;
use crate::error::err;

/// Waits shorter than this are sent as "no wait" pull requests.
const MIN_EXPIRES: Duration = Duration::from_millis(1);

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

impl NatsConsumer {
    /// Fetch up to `max` deliveries, waiting at most `wait` for the first.
    pub(super) async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
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
                token: value_token(reply),
            }),
            Err(e) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(consumer = %self.name, subject, seq, error = %e, "terminating malformed message: it will not be delivered again");
                Accepted::Answer(reply, TERM)
            }
        }
    }
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
