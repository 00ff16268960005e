//! What every handler shares, and reading request bodies.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use qis_core::{Capabilities, DynTransport, ErrorKind, OutcomePacket};
use qis_transport_http::wire::{
    kind_name, AckRequest, BatchRequest, FetchRequest, Info, Limits, NakRequest, OpenConsumer,
};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::sessions::Sessions;
use crate::view::View;

/// The gateway's shared state.
pub(crate) struct AppState {
    pub transport: DynTransport,
    pub config: GatewayConfig,
    pub info: Info,
    pub sessions: Sessions,
    pub view: View,
    /// Permits for long-polls and event streams.
    streams: Arc<Semaphore>,
    /// Cancelled when the gateway shuts down: streams end, long-polls return.
    pub shutdown: CancellationToken,
    /// The backend has no live subscriptions: the view learns from the
    /// deposits made through the gateway instead.
    pub view_from_deposits: bool,
}

pub(crate) type Shared = Arc<AppState>;

impl AppState {
    pub fn new(transport: DynTransport, config: GatewayConfig) -> AppState {
        let info = Info {
            service: "qis-gateway".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            transport: transport.name().into(),
            prefix: transport.prefix().to_string(),
            // No similarity endpoint (yet): not a capability through the gateway.
            capabilities: Capabilities {
                similarity: false,
                ..transport.capabilities()
            },
            limits: Limits {
                max_body: config.max_body,
                max_batch: config.max_batch,
                max_fetch: config.max_fetch,
                max_wait_ms: u64::try_from(config.max_wait.as_millis()).unwrap_or(u64::MAX),
                max_streams: config.max_streams,
            },
        };
        AppState {
            sessions: Sessions::new(&config),
            view: View::new(config.view_window),
            streams: Arc::new(Semaphore::new(config.max_streams)),
            shutdown: CancellationToken::new(),
            view_from_deposits: !info.capabilities.live,
            transport,
            info,
            config,
        }
    }

    /// Long-polls and event streams being served now.
    pub fn streams_in_use(&self) -> usize {
        self.config.max_streams - self.streams.available_permits()
    }

    /// A permit for one long-poll or event stream, or 429 `busy`.
    pub fn stream_permit(&self, what: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::busy(format!(
                "this gateway already serves {} long-polls and event streams (max_streams): retry {what} later",
                self.config.max_streams
            ))
        })
    }
}

/// A request body of JSON type `T`, as a handler argument. A body that is
/// not JSON of that shape is a 400 of [`RequestBody::MALFORMED`], naming the
/// field (`packets[2].packet.confidence: invalid type …`); a body over
/// `max_body` is 413.
pub(crate) struct JsonBody<T>(pub T);

/// A type a request body is read as, and the error kind of a body that is
/// not one.
pub(crate) trait RequestBody: DeserializeOwned {
    /// The kind of the 400 answered to a body that is not this type.
    const MALFORMED: ErrorKind = ErrorKind::InvalidInput;
}

impl RequestBody for OutcomePacket {
    const MALFORMED: ErrorKind = ErrorKind::InvalidPacket;
}
impl RequestBody for BatchRequest {
    const MALFORMED: ErrorKind = ErrorKind::InvalidPacket;
}
impl RequestBody for OpenConsumer {}
impl RequestBody for FetchRequest {}
impl RequestBody for AckRequest {}
impl RequestBody for NakRequest {}

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await?;
        let kind = T::MALFORMED;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = if path.is_empty() || path == "." {
                format!("the body is not valid JSON for this request: {inner}")
            } else {
                format!("{path}: {inner}")
            };
            ApiError::new(crate::error::status_of(kind), kind_name(kind), message)
        })?;
        de.end().map_err(|e| {
            ApiError::new(
                crate::error::status_of(kind),
                kind_name(kind),
                format!("the body has more after its JSON value: {e}"),
            )
        })?;
        Ok(JsonBody(value))
    }
}
