//! Live, at-most-once delivery: core NATS subscriptions, and fire-and-forget
//! core NATS publishes that the stream does not store.

use async_nats::HeaderMap;
use futures::StreamExt;
use qis_core::transport::{check_pattern_overlaps, check_under_prefix};
use qis_core::{EncodedPacket, LiveSubscription, Received, Result, SubjectPattern};

use crate::{errors, server_filter, NatsTransport, NAME};

/// The header JetStream checks before storing a message. No stream can have
/// this name (stream names have no dots), so a message carrying it is routed
/// to live subscribers but refused by every stream: fire-and-forget stays
/// out of the durable store, as the contract says.
const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
const NOT_STORED: &str = "qis.fire-and-forget";

/// Publish without storing: live subscribers that are connected get it.
pub(crate) async fn publish(t: &NatsTransport, packet: &EncodedPacket) -> Result<()> {
    check_under_prefix(NAME, &t.inner.config.prefix, packet.subject())?;
    let mut headers = HeaderMap::new();
    headers.insert(EXPECTED_STREAM, NOT_STORED);
    t.inner
        .client
        .publish_with_headers(
            packet.subject().as_str().to_string(),
            headers,
            packet.body().clone(),
        )
        .await
        .map_err(|e| errors::send("a fire-and-forget publish", e))
}

/// Subscribe to `pattern`; active on the server when this returns.
pub(crate) async fn subscribe(
    t: &NatsTransport,
    pattern: SubjectPattern,
) -> Result<LiveSubscription> {
    check_pattern_overlaps(NAME, &t.inner.config.prefix, &pattern)?;
    let filter = server_filter(&t.inner.config.prefix, &pattern)
        .expect("a pattern that overlaps the prefix has a filter under it");
    let subscriber = t
        .inner
        .client
        .subscribe(filter)
        .await
        .map_err(|e| errors::send("subscribing", e))?;
    // The server has registered the subscription once it answered a request
    // sent after it on the same connection.
    t.round_trip().await?;
    let stream = subscriber.filter_map(move |message| {
        let item = if !pattern.matches(message.subject.as_str()) {
            None
        } else {
            match Received::decode(message.subject.as_str(), &message.payload) {
                Ok(received) => Some(Ok(received)),
                Err(e) => {
                    tracing::warn!(subject = %message.subject, error = %e, "skipping malformed live message");
                    None
                }
            }
        };
        futures::future::ready(item)
    });
    Ok(Box::pin(stream))
}
