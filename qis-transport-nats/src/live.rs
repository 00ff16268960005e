//! Live, at-most-once delivery: core NATS subscriptions, and fire-and-forget
//! core NATS publishes that the stream does not store.

use async_nats::HeaderMap;
use futures::StreamExt;
use qis_core::{EncodedPacket, LiveSubscription, Received, Result, SubjectPattern};

use crate::error;
use crate::filter::filter_for;
use crate::NatsTransport;

/// The header JetStream checks before storing a message. No stream can have
/// this name (stream names have no dots), so a message carrying it is routed
/// to live subscribers but refused by every stream: fire-and-forget stays
/// out of the durable store, as the contract says.
const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
const NOT_STORED: &str = "qis.fire-and-forget";

/// Publish without storing: live subscribers that are connected get it.
pub(crate) async fn publish(t: &NatsTransport, packet: &EncodedPacket) -> Result<()> {
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
        .map_err(|e| error::send("a fire-and-forget publish", e))
}

/// Subscribe to `pattern`; active on the server when this returns.
pub(crate) async fn subscribe(
    t: &NatsTransport,
    pattern: SubjectPattern,
) -> Result<LiveSubscription> {
    let filter = filter_for(&t.inner.config.prefix, &pattern)?;
    let subscriber = t
        .inner
        .client
        .subscribe(filter)
        .await
        .map_err(|e| error::send("subscribing", e))?;
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
