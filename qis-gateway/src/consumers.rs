//! `/v1/consumers…`: durable consumers over HTTP. Open one by name (a
//! session), fetch by long-poll, ack and nak by handle, read the backlog,
//! close; and the list the dashboard shows.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures::future::join_all;
use qis_core::{Backlog, ConsumerConfig, SubjectPattern};
use qis_transport_http::wire::{
    AckRequest, AckResponse, ConsumerSession, DeliveryJson, FetchRequest, FetchResponse,
    NakRequest, OpenConsumer, StoredConsumers,
};
use serde::Serialize;

use crate::error::ApiError;
use crate::sessions::InUse;
use crate::state::{JsonBody, Shared};

/// How long the list waits for one consumer's backlog.
const BACKLOG_WAIT: Duration = Duration::from_secs(2);

/// `POST /v1/consumers`: open (create or resume) a durable consumer; 201
/// and the session.
pub(crate) async fn open(
    State(s): State<Shared>,
    JsonBody(req): JsonBody<OpenConsumer>,
) -> Result<(StatusCode, Json<ConsumerSession>), ApiError> {
    s.sessions.check_room()?;
    let pattern = SubjectPattern::new(req.pattern.as_str())?;
    let mut config = ConsumerConfig::new(req.name, pattern)?.start(req.start.to_start()?);
    if let Some(ms) = req.ack_wait_ms {
        if ms == 0 {
            return Err(ApiError::invalid_input(
                "ack_wait_ms is 0: give the milliseconds a delivery may stay unacked, at least 1",
            ));
        }
        config = config.ack_wait(Duration::from_millis(ms));
    }
    let consumer = s.transport.consumer(config.clone()).await?;
    let session = s.sessions.insert(config, consumer);
    tracing::debug!(session = %session.id, consumer = %session.config.name, "consumer session opened");
    Ok((
        StatusCode::CREATED,
        Json(ConsumerSession {
            session: session.id.clone(),
            name: session.config.name.clone(),
            pattern: session.config.pattern.to_string(),
            ack_wait_ms: u64::try_from(session.config.ack_wait.as_millis()).unwrap_or(u64::MAX),
        }),
    ))
}

/// `POST /v1/consumers/{session}/fetch`: up to `max` deliveries, waiting up
/// to `wait_ms` for the first (a long-poll, bounded by `max_wait` and by
/// shutdown).
pub(crate) async fn fetch(
    State(s): State<Shared>,
    session: InUse,
    JsonBody(req): JsonBody<FetchRequest>,
) -> Result<Json<FetchResponse>, ApiError> {
    if req.max == 0 {
        return Err(ApiError::invalid_input("max is 0: fetch at least 1"));
    }
    let _permit = s.stream_permit("the fetch")?;
    let max = req
        .max
        .min(s.config.max_fetch)
        .min(s.sessions.room(&session)?);
    let wait = Duration::from_millis(req.wait_ms).min(s.config.max_wait);
    let got = tokio::select! {
        got = session.consumer.fetch(max, wait) => got?,
        // Shutting down: answer at once. What the backend had taken for
        // this fetch is delivered again after its ack wait.
        _ = s.shutdown.cancelled() => Vec::new(),
    };
    let handles = s.sessions.hand_out(&session, &got);
    let deliveries = got
        .into_iter()
        .zip(handles)
        .map(|(d, handle)| DeliveryJson {
            handle,
            id: d.id().to_hex(),
            subject: d.received.subject,
            packet: d.received.packet,
            position: d.position.into(),
            delivery_count: d.delivery_count,
        })
        .collect();
    Ok(Json(FetchResponse {
        deliveries,
        malformed_skipped: session.consumer.malformed_skipped(),
    }))
}

/// `POST /v1/consumers/{session}/ack`.
pub(crate) async fn ack(
    State(s): State<Shared>,
    session: InUse,
    JsonBody(req): JsonBody<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let taken = s.sessions.take(&session, &req.handles)?;
    let deliveries: Vec<_> = taken.deliveries.iter().map(|(_, d)| d.clone()).collect();
    if let Err(e) = session.consumer.ack(&deliveries).await {
        s.sessions.put_back(&session, taken.deliveries);
        return Err(e.into());
    }
    Ok(Json(AckResponse {
        done: deliveries.len(),
        expired: taken.expired,
    }))
}

/// `POST /v1/consumers/{session}/nak`.
pub(crate) async fn nak(
    State(s): State<Shared>,
    session: InUse,
    JsonBody(req): JsonBody<NakRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let mut taken = s
        .sessions
        .take(&session, std::slice::from_ref(&req.handle))?;
    let Some((n, delivery)) = taken.deliveries.pop() else {
        return Ok(Json(AckResponse {
            done: 0,
            expired: taken.expired,
        }));
    };
    if let Err(e) = session
        .consumer
        .nak(&delivery, Duration::from_millis(req.delay_ms))
        .await
    {
        s.sessions.put_back(&session, vec![(n, delivery)]);
        return Err(e.into());
    }
    Ok(Json(AckResponse {
        done: 1,
        expired: Vec::new(),
    }))
}

/// `GET /v1/consumers/{session}/backlog`.
pub(crate) async fn backlog(session: InUse) -> Result<Json<Backlog>, ApiError> {
    Ok(Json(session.consumer.backlog().await?))
}

/// `GET /v1/stored-consumers`: every durable consumer the backend keeps
/// under the prefix, opened through this gateway or not, with its backlog
/// (501 where the backend cannot list them).
pub(crate) async fn stored(State(s): State<Shared>) -> Result<Json<StoredConsumers>, ApiError> {
    let consumers = s.transport.consumers().await?;
    Ok(Json(StoredConsumers {
        consumers: consumers.into_iter().map(Into::into).collect(),
    }))
}

/// `DELETE /v1/consumers/{session}`: close the session, flushing its acks;
/// the consumer stays with the backend, to be resumed by name. 204.
pub(crate) async fn close(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let session = s.sessions.remove(&id)?;
    session.close().await?;
    tracing::debug!(session = %id, consumer = %session.config.name, "consumer session closed");
    Ok(StatusCode::NO_CONTENT)
}

/// One consumer in `GET /v1/consumers`.
#[derive(Debug, Serialize)]
pub(crate) struct ConsumerInfo {
    name: String,
    pattern: String,
    /// Sessions open on it through this gateway.
    sessions: usize,
    /// Deliveries handed out through this gateway and not yet acked.
    held: usize,
    /// Malformed messages its sessions skipped.
    malformed_skipped: u64,
    /// The backend's count, if it keeps one.
    backlog: Option<Backlog>,
    /// Why there is no backlog.
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog_error: Option<String>,
}

/// `GET /v1/consumers`: the consumers open through this gateway, by name
/// and pattern, with their backlog.
pub(crate) async fn list(State(s): State<Shared>) -> Json<serde_json::Value> {
    let mut by_name: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
    for session in s.sessions.all() {
        let key = (
            session.config.name.clone(),
            session.config.pattern.to_string(),
        );
        by_name.entry(key).or_default().push(session);
    }
    let infos = join_all(
        by_name
            .into_iter()
            .map(|((name, pattern), sessions)| async move {
                let backlog =
                    tokio::time::timeout(BACKLOG_WAIT, sessions[0].consumer.backlog()).await;
                let (backlog, backlog_error) = match backlog {
                    Ok(Ok(b)) => (Some(b), None),
                    Ok(Err(e)) => (None, Some(e.message().to_string())),
                    Err(_) => (None, Some(format!("no answer within {BACKLOG_WAIT:?}"))),
                };
                ConsumerInfo {
                    name,
                    pattern,
                    held: sessions.iter().map(|s| s.held()).sum(),
                    malformed_skipped: sessions
                        .iter()
                        .map(|s| s.consumer.malformed_skipped())
                        .sum(),
                    sessions: sessions.len(),
                    backlog,
                    backlog_error,
                }
            }),
    )
    .await;
    Json(serde_json::json!({ "consumers": infos }))
}
