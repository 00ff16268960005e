//! Live subscriptions over Server-Sent Events (`GET /v1/live`).
//!
//! [`subscribe`] returns once the gateway's `ready` event says its backend
//! subscription is active, so a packet deposited after it returns is
//! delivered, as on every transport. `packet` events become items;
//! an `error` event becomes an `Err` item and the stream goes on; the
//! connection ending (the gateway shut down, the network failed) is one
//! [`ErrorKind::Unavailable`] item, then the end of the stream.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use qis_core::{Error, ErrorKind, LiveSubscription, Received, Result, SubjectPattern};
use reqwest::header::ACCEPT;
use reqwest::Method;

use crate::client::Api;
use crate::wire::{error_kind, event, parse_id, ErrorBody, LivePacket, API};
use crate::NAME;

/// Subscribe to `pattern`; wait up to `ready_within` (plus the request
/// timeout) for the gateway's backend subscription.
pub(crate) async fn subscribe(
    api: &Api,
    pattern: &SubjectPattern,
    ready_within: Duration,
) -> Result<LiveSubscription> {
    let request = api
        .stream(Method::GET, &format!("{API}/live?pattern={pattern}"))
        .header(ACCEPT, "text/event-stream");
    let within = ready_within.saturating_add(api.request_timeout);
    let ready = async {
        let response = api.send(request).await?;
        let mut events = response.bytes_stream().eventsource();
        match events.next().await {
            Some(Ok(e)) if e.event == event::READY => Ok(events),
            Some(Ok(e)) if e.event == event::ERROR => Err(error_event(&e)),
            Some(Ok(e)) => Err(Error::new(
                ErrorKind::Backend,
                NAME,
                format!(
                    "the gateway's event stream began with {:?}, not {:?}",
                    e.event,
                    event::READY
                ),
            )),
            Some(Err(e)) => Err(ended(&e.to_string())),
            None => Err(ended("the stream closed before it was ready")),
        }
    };
    let events = tokio::time::timeout(within, ready).await.map_err(|_| {
        Error::new(
            ErrorKind::Timeout,
            NAME,
            format!(
                "the gateway did not start the live subscription to {pattern} within {within:?}"
            ),
        )
    })??;
    tracing::debug!(%pattern, "live subscription through the gateway is active");
    Ok(Box::pin(packets(events)))
}

/// Events to packets; the end of the connection is one error item.
fn packets<S, E>(events: S) -> impl Stream<Item = Result<Received>> + Send
where
    S: Stream<Item = std::result::Result<Event, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    futures::stream::unfold(Some(events), |state| async move {
        let mut events = state?;
        loop {
            match events.next().await {
                Some(Ok(e)) if e.event == event::PACKET => {
                    return Some((packet(&e.data), Some(events)));
                }
                Some(Ok(e)) if e.event == event::ERROR => {
                    return Some((Err(error_event(&e)), Some(events)));
                }
                // Keep-alive comments never arrive as events; other event
                // names are for newer clients.
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some((Err(ended(&e.to_string())), None)),
                None => return Some((Err(ended("the gateway closed the stream")), None)),
            }
        }
    })
}

fn packet(data: &str) -> Result<Received> {
    let p: LivePacket = serde_json::from_str(data).map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            NAME,
            format!("the gateway sent a live packet this client cannot read: {e}"),
        )
    })?;
    p.packet.validate().map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            NAME,
            format!("the gateway sent an invalid live packet: {e}"),
        )
    })?;
    Ok(Received {
        subject: p.subject,
        id: parse_id(NAME, &p.id)?,
        packet: p.packet,
    })
}

fn error_event(e: &Event) -> Error {
    match serde_json::from_str::<ErrorBody>(&e.data) {
        Ok(ErrorBody { error }) => Error::new(
            error_kind(&error.kind),
            NAME,
            format!("gateway: {}", error.message),
        ),
        Err(_) => Error::new(
            ErrorKind::Backend,
            NAME,
            format!("gateway error event: {}", e.data),
        ),
    }
}

fn ended(why: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        NAME,
        format!("the live stream from the gateway ended: {why}; subscribe again"),
    )
}
