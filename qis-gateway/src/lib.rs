//! # qis-gateway
//!
//! `qis serve`: an HTTP/JSON gateway in front of any QIS transport, for
//! devices that only speak HTTP (the `http://` transport,
//! `qis-transport-http`, or any HTTP client), and an operator dashboard.
//!
//! ```
//! use qis_core::MemoryTransport;
//! use qis_gateway::GatewayConfig;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = std::sync::Arc::new(MemoryTransport::new(Default::default()));
//! let config = GatewayConfig::default().listen("127.0.0.1:0".parse()?);
//! let gateway = qis_gateway::start(backend, config).await?;
//!
//! let packet = r#"{"agent_id": "hvac-building-a", "domain": "hvac",
//!     "problem_class": "energy-anomaly", "conclusion": "Compressor draw 18% above baseline.",
//!     "confidence": 0.87, "context_vector": [0.18, 0.92, 0.03, 0.71],
//!     "timestamp": 1764000000.0, "source_node": "building-a-floor-3"}"#;
//! # // This workspace builds reqwest without a default TLS provider.
//! # let _ = rustls::crypto::ring::default_provider().install_default();
//! let answer = reqwest::Client::new()
//!     .post(format!("{}/v1/packets", gateway.url()))
//!     .body(packet)
//!     .send()
//!     .await?;
//! assert_eq!(answer.status(), 201);
//! let receipt: serde_json::Value = answer.json().await?;
//! assert_eq!(receipt["subject"], "qis.iot.hvac.energy-anomaly");
//!
//! gateway.shutdown().await?; // finishes requests in flight, closes the backend
//! # Ok(()) }
//! ```
//!
//! ## Endpoints
//!
//! `/openapi.json` describes each one; in short (JSON bodies, `/v1/…`
//! behind the bearer token when tokens are configured):
//!
//! | endpoint | does |
//! |---|---|
//! | `GET /` | the dashboard |
//! | `GET /health` | 200 `{"status":"ok"}` while serving, 503 when shutting down |
//! | `GET /openapi.json` | the OpenAPI document |
//! | `GET /v1/info` | backend, prefix, capabilities, limits |
//! | `POST /v1/packets[?subject=…\|?fingerprint=4]` | deposit a packet (the body is the packet); 201 + receipt |
//! | `POST /v1/packets/batch` | `{"packets":[{"packet":…,"subject"?:…}]}`; 201 + receipts in order |
//! | `POST /v1/publish[?subject=…]` | fire-and-forget, if the backend has it; 202 |
//! | `POST /v1/consumers` | `{"name","pattern","start"?,"ack_wait_ms"?}`: open a consumer session; 201 |
//! | `GET /v1/consumers` | consumers open through the gateway, with backlog |
//! | `GET /v1/stored-consumers` | every durable consumer the backend keeps, with backlog (501 if it cannot list them) |
//! | `POST /v1/consumers/{session}/fetch` | `{"max","wait_ms"}`: long-poll; deliveries with handles |
//! | `POST /v1/consumers/{session}/ack` / `nak` | `{"handles":[…]}` / `{"handle","delay_ms"}` |
//! | `GET /v1/consumers/{session}/backlog` | `{"waiting","unacked"}` |
//! | `DELETE /v1/consumers/{session}` | close the session, flushing acks; 204 |
//! | `GET /v1/live[?pattern=…]` | Server-Sent Events: `ready`, then `packet`s |
//! | `GET /v1/synthesis[/{domain}/{problem_class}]` | the view's synthesis per problem class |
//!
//! The JSON shapes are `qis_transport_http::wire`'s. Packets are checked
//! exactly as by the library; errors are `{"error": {"kind", "message",
//! "transport"}}` with the statuses listed under [Errors](#errors).
//!
//! ## Errors
//!
//! Invalid packet, subject or input → 400 naming the field; missing or
//! wrong token → 401; unknown consumer session → 404; a consumer name
//! reopened with another pattern → 409; a packet over 512 bytes, a body over
//! `max_body` or a batch over `max_batch` → 413; the gateway's own limits
//! (`max_streams` long-polls and event streams, `max_sessions`,
//! `max_pending`) → 429 with `Retry-After`; a capability the backend lacks
//! → 501; the broker unreachable, a timeout, a backend failure, shutting
//! down → 503 with `Retry-After`. Never a 500 with a backtrace.
//!
//! ## Deployment
//!
//! Bearer tokens ([`Tokens`], one or several, from a file), HTTPS with
//! rustls ([`GatewayConfig::tls`]), limits on bodies, batches, fetches,
//! long-polls and streams, sessions closed after `session_idle`, and
//! graceful shutdown ([`RunningGateway::shutdown`]): requests in flight
//! finish, event streams end, waiting long-polls answer at once, every
//! session is closed (its acks flushed), then the transport.
//!
//! ## The dashboard
//!
//! `GET /` is one HTML page (script and style inline, no build step): live
//! packets over SSE (a bounded list, and per-class rates), per problem class
//! the synthesis of the gateway's view (agents, agreement, alert; see
//! [The view](#the-view)), and the consumers with their backlog, polled
//! every second. When the gateway requires a token, the page asks for one.
//!
//! ## The view
//!
//! What `/v1/synthesis` and the dashboard show is learned from a live
//! subscription to everything under the prefix since the gateway started,
//! bounded in memory (per domain the latest packet of at most 1,024 agents,
//! at most 256 classes). The synthesis of a class is the one its latest
//! reporter would compute with `qis_core::synthesize`: its packet as its own
//! and the latest packet of every agent of the domain heard within
//! `view_window` (an hour) as twins.

mod auth;
mod config;
mod consumers;
mod deposit;
mod error;
mod live;
mod openapi;
mod routes;
mod serve;
mod sessions;
mod state;
mod view;

pub use config::{
    GatewayConfig, TlsIdentity, Tokens, DEFAULT_LISTEN, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY,
    DEFAULT_MAX_FETCH, DEFAULT_MAX_PENDING, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_WAIT, DEFAULT_SESSION_IDLE, DEFAULT_SHUTDOWN_GRACE, DEFAULT_VIEW_WINDOW,
};
pub use openapi::OPENAPI;
pub use routes::endpoints;
pub use serve::{start, RunningGateway};

/// The name the gateway's own errors carry as their transport.
const NAME: &str = "gateway";
