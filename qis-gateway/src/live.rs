//! `GET /v1/live?pattern=…`: live packets as Server-Sent Events.
//!
//! The handler subscribes on the backend first; the stream's first event is
//! `ready`, so a client that has read it gets every packet deposited or
//! published after. Then one `packet` event per packet (at-most-once, like
//! every live subscription); a backend failure is an `error` event and the
//! stream goes on. Comments keep the connection alive every 15 s. The
//! stream holds one of the `max_streams` permits while it lasts and ends
//! when the gateway shuts down.

use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use qis_core::SubjectPattern;
use qis_transport_http::wire::{event, LivePacket};
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::Shared;

/// The query of `GET /v1/live`.
#[derive(Debug, Deserialize)]
pub(crate) struct LiveQuery {
    /// The pattern (default: everything under the prefix).
    pattern: Option<String>,
}

/// `GET /v1/live`.
pub(crate) async fn live(
    State(s): State<Shared>,
    query: Result<Query<LiveQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query?;
    let pattern = match query.pattern {
        Some(p) => SubjectPattern::new(p)?,
        None => s.transport.prefix().all_below(),
    };
    let permit = s.stream_permit("the event stream")?;
    let subscription = s.transport.subscribe(pattern.clone()).await?;
    tracing::debug!(%pattern, "live event stream opened");
    let ready = Event::default()
        .event(event::READY)
        .data(serde_json::json!({ "pattern": pattern.as_str() }).to_string());
    let packets = subscription.map(move |item| {
        // The permit lives as long as the stream.
        let _held = &permit;
        Ok(match item {
            Ok(r) => json_event(
                event::PACKET,
                &LivePacket {
                    id: r.id.to_hex(),
                    subject: r.subject,
                    packet: r.packet,
                },
            ),
            Err(e) => json_event(event::ERROR, &ApiError::from(e).body()),
        })
    });
    let stream = futures::stream::once(async { Ok(ready) })
        .chain(packets)
        .take_until(s.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn json_event<T: serde::Serialize>(name: &'static str, data: &T) -> Event {
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        format!(r#"{{"error":{{"kind":"backend","message":"cannot encode an event: {e}"}}}}"#)
    });
    Event::default().event(name).data(data)
}
