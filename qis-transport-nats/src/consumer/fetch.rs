//! Fetching: a pull request that the server answers as soon as it has a
//! message (or when the wait is over), with idle heartbeats so a request
//! lost with its consumer leader is noticed; malformed bodies are
//! terminated on the server so they never come back.
//!
//! In a cluster a pull request lives on the consumer's leader. When that
//! leader steps down ("409 Leadership Change"), dies (the heartbeats stop),
//! or is being elected ("no responders"), or the connection moves to
//! another server, the request is lost: the fetch sends a new one, on a new
//! subscription, for the rest of its wait, instead of stalling or failing.
//! Deliveries the lost request had sent and nobody acked come back after
//! the ack wait, as redeliveries.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::StatusCode;
use bytes::Bytes;
use futures::StreamExt;
use qis_core::backend::value_token;
use qis_core::{Delivery, Error, ErrorKind, Position, Received, Result};
use tokio::time::Instant;

use super::ack::{AckInfo, ACK, TERM};
use super::NatsConsumer;
use crate::error::{self, err};

/// Waits shorter than this are sent as "no wait" pull requests.
const MIN_EXPIRES: Duration = Duration::from_millis(1);
/// Requests shorter than this ask for no heartbeats.
const MIN_HEARTBEAT_EXPIRES: Duration = Duration::from_millis(200);
/// The longest idle heartbeat interval asked for.
const MAX_HEARTBEAT: Duration = Duration::from_secs(1);
/// How late a heartbeat (or the end of a request) may be before the
/// request counts as lost, beyond two heartbeat intervals.
const SLACK: Duration = Duration::from_millis(500);
/// The first and the longest pause before pulling again after a lost request.
const FIRST_REPULL_PAUSE: Duration = Duration::from_millis(20);
const MAX_REPULL_PAUSE: Duration = Duration::from_millis(500);

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

/// How one pull request ended.
enum Ended {
    /// The server is done with it: the batch is full, there is nothing more
    /// (for now), or it expired. `any` says whether messages came at all
    /// (some may have been malformed, and not delivered).
    Done { any: bool },
    /// The cluster lost it (the reason is for the log): pull again.
    Lost(String),
}

/// The idle heartbeat to ask for on a request that expires after `expires`:
/// at most half of it, as the server requires.
fn heartbeat_for(expires: Duration) -> Duration {
    if expires < MIN_HEARTBEAT_EXPIRES {
        Duration::ZERO
    } else {
        (expires / 2).min(MAX_HEARTBEAT)
    }
}

impl NatsConsumer {
    /// Fetch up to `max` deliveries, waiting at most `wait` for the first.
    pub(super) async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::with_capacity(max.min(1024));
        let mut pause = FIRST_REPULL_PAUSE;
        let mut existence_checked = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let ended = self.pull_once(max - out.len(), remaining, &mut out).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !out.is_empty() {
                return Ok(out);
            }
            if left.is_zero() {
                return self.empty_or_offline(out);
            }
            match ended {
                Ended::Done { any: _ } if remaining < MIN_EXPIRES => return Ok(out),
                // Only malformed messages came: pull again at once.
                Ended::Done { any: true } => {}
                // The server ended the request early without messages; don't spin.
                Ended::Done { any: false } => {
                    tokio::time::sleep(left.min(Duration::from_millis(10))).await
                }
                Ended::Lost(why) => {
                    tracing::debug!(consumer = %self.name, why, "pull request lost; pulling again");
                    if why.starts_with("no responders") && !existence_checked {
                        existence_checked = true;
                        self.check_exists().await?;
                    }
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(MAX_REPULL_PAUSE);
                }
            }
        }
    }

    /// An empty fetch, unless the client has had no server for longer than
    /// `retry_for`: then a reconnect is not something to ride out, and the
    /// caller hears [`ErrorKind::Unavailable`] (a bridge reports its source
    /// gone; the next fetch after the server is back carries on).
    fn empty_or_offline(&self, out: Vec<Delivery>) -> Result<Vec<Delivery>> {
        let inner = &self.transport.inner;
        let offline = inner.offline.for_how_long();
        if offline > inner.config.retry_for {
            return Err(err(
                ErrorKind::Unavailable,
                format!(
                    "consumer {}: no NATS server reachable for {:.0?} ({}); the client keeps reconnecting",
                    self.name,
                    offline,
                    inner.config.server_list()
                ),
            ));
        }
        Ok(out)
    }

    /// One pull request for up to `max` messages, expiring after
    /// `remaining`, on a subscription of its own; deliveries go to `out`.
    async fn pull_once(
        &self,
        max: usize,
        remaining: Duration,
        out: &mut Vec<Delivery>,
    ) -> Result<Ended> {
        let inner = &self.transport.inner;
        let inbox = async_nats::Subject::from(inner.client.new_inbox());
        let mut replies = inner
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| error::send(&format!("pulling from consumer {}", self.name), e))?;
        let expires = (remaining >= MIN_EXPIRES).then_some(remaining);
        let heartbeat = heartbeat_for(remaining);
        // "No wait" with an expiry: the server answers as soon as it has at
        // least one message, or when the expiry passes.
        let request = BatchConfig {
            batch: max,
            expires,
            no_wait: true,
            idle_heartbeat: heartbeat,
            ..Default::default()
        };
        self.consumer
            .request_batch(request, inbox)
            .await
            .map_err(|e| pull_error(&self.name, e))?;
        // Silence longer than this means the request is gone with its leader.
        let silence = if heartbeat.is_zero() {
            remaining + SLACK
        } else {
            heartbeat * 2 + SLACK
        };
        let mut wanted = max;
        let mut any = false;
        // One timer for the whole request, moved on only when it fires:
        // cheaper than a timeout per message.
        let mut heard = Instant::now();
        let watchdog = tokio::time::sleep_until(heard + silence);
        tokio::pin!(watchdog);
        loop {
            let next = tokio::select! {
                biased;
                next = replies.next() => next,
                () = &mut watchdog => {
                    if heard.elapsed() < silence {
                        watchdog.as_mut().reset(heard + silence);
                        continue;
                    }
                    if heartbeat.is_zero() {
                        return Ok(Ended::Done { any });
                    }
                    // Maybe it is our own server that stopped answering.
                    self.transport.check_server().await;
                    return Ok(Ended::Lost(format!(
                        "missed idle heartbeats ({silence:?} without a word)"
                    )));
                }
            };
            let Some(message) = next else {
                return Ok(Ended::Lost("the pull subscription ended".into()));
            };
            heard = Instant::now();
            match message.status {
                None | Some(StatusCode::OK) => {
                    any = true;
                    match self.accept(message) {
                        Accepted::Deliver(d) => out.push(d),
                        Accepted::Answer(reply, payload) => {
                            self.publish_ack(&reply, Bytes::from_static(payload))
                                .await?;
                            self.remember(reply, payload);
                        }
                        Accepted::Skip => {}
                    }
                    wanted -= 1;
                    if wanted == 0 {
                        return Ok(Ended::Done { any });
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // No messages (now), or the request expired.
                Some(StatusCode::NOT_FOUND) | Some(StatusCode::TIMEOUT) => {
                    return Ok(Ended::Done { any })
                }
                Some(StatusCode::NO_RESPONDERS) => {
                    return Ok(Ended::Lost(
                        "no responders: the consumer has no leader right now".into(),
                    ))
                }
                Some(StatusCode::REQUEST_TERMINATED) => {
                    let why = message.description.unwrap_or_default();
                    return match terminated(&self.name, &why) {
                        Some(e) => Err(e),
                        None => Ok(Ended::Lost(format!("409 {why}"))),
                    };
                }
                Some(status) => {
                    return Err(err(
                        ErrorKind::Backend,
                        format!(
                            "fetching from consumer {} failed: the server answered {status} {}",
                            self.name,
                            message.description.unwrap_or_default()
                        ),
                    ))
                }
            }
        }
    }

    /// After "no responders": fail if the consumer (or its stream) is gone,
    /// which no waiting cures; otherwise it is between leaders.
    async fn check_exists(&self) -> Result<()> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind as K;
        let inner = &self.transport.inner;
        let lookup = tokio::time::timeout(inner.config.request_timeout, async {
            let stream = inner.js.get_stream_no_info(&inner.stream).await.ok()?;
            Some(stream.consumer_info(&self.name).await)
        })
        .await;
        match lookup {
            Ok(Some(Err(e))) if matches!(e.kind(), K::NotFound | K::StreamNotFound) => Err(err(
                ErrorKind::NotFound,
                format!(
                    "consumer {} (or its stream {}) was deleted on the server: open it again",
                    self.name, inner.stream
                ),
            )
            .with_source(e)),
            _ => Ok(()),
        }
    }

    /// Turn one fetched message into a delivery, or say what to send back
    /// for it. Synchronous: the common path allocates no future. The
    /// message's reply subject moves into the delivery's token (no copy).
    fn accept(&self, mut message: async_nats::Message) -> Accepted {
        let Some(reply) = message.reply.take() else {
            tracing::warn!(consumer = %self.name, subject = %message.subject, "message without a reply subject skipped");
            return Accepted::Skip;
        };
        let Some(AckInfo {
            stream_sequence: seq,
            delivered,
        }) = AckInfo::parse(&reply)
        else {
            tracing::warn!(consumer = %self.name, subject = %message.subject, reply = %reply, "message with an unreadable ack subject skipped");
            return Accepted::Skip;
        };
        let subject = message.subject.as_str();
        if !self.pattern.matches(subject) {
            // The server filter is exact, so this is not expected; ack it away.
            tracing::debug!(consumer = %self.name, subject, seq, "acking away a message outside the pattern");
            return Accepted::Answer(reply, ACK);
        }
        // The deposit set Nats-Msg-Id to the packet id: no need to re-hash.
        let carried = message.headers.as_ref().and_then(message_id);
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

/// The `Nats-Msg-Id` header's (first) value. A deposit's message carries
/// that header alone, and the header map hashes a name with SipHash on
/// every look-up (0.24k instructions, 1 % of a delivery's fetch and ack):
/// a short map is walked instead, comparing names as `get` does after
/// hashing.
fn message_id(headers: &async_nats::HeaderMap) -> Option<&str> {
    const WALK: usize = 4;
    let id = async_nats::header::NATS_MESSAGE_ID;
    let value = if headers.len() <= WALK {
        headers
            .iter()
            .find_map(|(name, values)| (*name == id).then(|| values.first())?)
    } else {
        headers.get(id)
    };
    value.map(|v| v.as_str())
}

/// What a "409" that ends a pull request means: an error no new request
/// cures, or `None` for one that the cluster explains (a leadership change,
/// a server shutting down, too many waiting requests): pull again.
fn terminated(name: &str, why: &str) -> Option<Error> {
    let (kind, msg) = if why == "Consumer Deleted" {
        (
            ErrorKind::NotFound,
            format!("consumer {name} was deleted on the server: open it again"),
        )
    } else if why.contains("MaxAckPending") {
        (
            ErrorKind::Backend,
            format!("consumer {name} has reached its max_ack_pending: ack or nak deliveries, or raise NatsConfig::max_ack_pending"),
        )
    } else if why == "Consumer is push based" {
        (
            ErrorKind::Conflict,
            format!("consumer {name} is now a push consumer: use another consumer name"),
        )
    } else if why.starts_with("Exceeded MaxRequest") || why.contains("MaxBytes") {
        (
            ErrorKind::Backend,
            format!("consumer {name} refused the pull request ({why}): raise the consumer's limits or fetch fewer at once"),
        )
    } else {
        return None;
    };
    Some(err(kind, msg))
}

fn pull_error(
    name: &str,
    e: impl fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    err(
        ErrorKind::Unavailable,
        format!("fetching from consumer {name} failed: {e}"),
    )
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_found_among_any_number_of_headers() {
        let id = "ab".repeat(32);
        for others in [0, 1, 3, 4, 9] {
            let mut h = async_nats::HeaderMap::new();
            for i in 0..others {
                h.insert(format!("X-Other-{i}").as_str(), "v");
            }
            assert_eq!(message_id(&h), None, "{others} other headers, no id");
            h.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            // A second value is not the id.
            h.append(async_nats::header::NATS_MESSAGE_ID, "later");
            assert_eq!(message_id(&h), Some(id.as_str()), "{others} other headers");
            // A name that differs only in case is another header.
            let mut h = async_nats::HeaderMap::new();
            h.insert("nats-msg-id", id.as_str());
            assert_eq!(
                message_id(&h),
                async_nats::HeaderMap::get(&h, async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str())
            );
        }
    }

    #[test]
    fn heartbeats_are_at_most_half_the_expiry() {
        assert_eq!(heartbeat_for(Duration::from_millis(50)), Duration::ZERO);
        assert_eq!(
            heartbeat_for(Duration::from_millis(400)),
            Duration::from_millis(200)
        );
        assert_eq!(heartbeat_for(Duration::from_secs(30)), MAX_HEARTBEAT);
    }

    #[test]
    fn which_terminations_end_a_fetch() {
        let kind = |why: &str| terminated("c", why).map(|e| e.kind());
        assert_eq!(kind("Leadership Change"), None);
        assert_eq!(kind("Server Shutdown"), None);
        assert_eq!(kind("Exceeded MaxWaiting"), None);
        assert_eq!(kind("Consumer Deleted"), Some(ErrorKind::NotFound));
        assert_eq!(kind("Exceeded MaxAckPending"), Some(ErrorKind::Backend));
        assert_eq!(kind("Consumer is push based"), Some(ErrorKind::Conflict));
        assert_eq!(
            kind("Exceeded MaxRequestBatch of 10"),
            Some(ErrorKind::Backend)
        );
    }
}
