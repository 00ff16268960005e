//! # qis-transport-http
//!
//! The QIS transport of a device that only has HTTP: every call goes to a
//! `qis serve` gateway (the `qis-gateway` crate), which performs it on its
//! own backend (SQLite, NATS, Redis, Kafka, …). URLs `http://host:port` and
//! `https://host:port`; a bearer token as `token@host` or `?token=`.
//!
//! ```
//! use std::time::Duration;
//! use qis_core::{DurableConsumer, MemoryTransport, OutcomePacket, OutcomeTransport, OutcomeTransportExt};
//! use qis_transport_http::{HttpConfig, HttpTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A gateway in front of an in-process store (`qis serve --url sqlite://…` in real life).
//! let backend = std::sync::Arc::new(MemoryTransport::new(Default::default()));
//! let gateway = qis_gateway::start(
//!     backend,
//!     qis_gateway::GatewayConfig::default().listen("127.0.0.1:0".parse()?),
//! )
//! .await?;
//!
//! // The device: deposit and consume over HTTP.
//! let device = HttpTransport::connect(HttpConfig::new(gateway.url())).await?;
//! assert_eq!(device.gateway().transport, "memory"); // what the gateway fronts
//! let packet = OutcomePacket {
//!     agent_id: "hvac-building-a".into(),
//!     domain: "hvac".into(),
//!     problem_class: "energy-anomaly".into(),
//!     conclusion: "Compressor draw 18% above baseline.".into(),
//!     confidence: 0.87,
//!     context_vector: vec![0.18, 0.92, 0.03, 0.71],
//!     timestamp: 1_764_000_000.0,
//!     source_node: "building-a-floor-3".into(),
//! };
//! let receipt = device.deposit(&packet).await?;
//! assert_eq!(receipt.subject.as_str(), "qis.iot.hvac.energy-anomaly");
//! let twins = device.twins_consumer("building-b", "hvac", "energy-anomaly").await?;
//! let got = twins.fetch(10, Duration::from_secs(1)).await?; // a long-poll
//! twins.ack(&got).await?;
//! assert_eq!(got[0].packet(), &packet);
//! device.close().await?;
//! gateway.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! [`HttpTransport::connect`] returns the transport behind
//! [`qis_core::Checked`], like every backend.
//!
//! ## What goes through HTTP
//!
//! [`capabilities`](qis_core::OutcomeTransport::capabilities) are the
//! gateway's backend's, read from `GET /v1/info` at connect, since each call
//! is that backend's call: durable consumers, `nak`, a start time,
//! de-duplication and shared consumers exactly where the backend has them;
//! live subscriptions (over Server-Sent Events) where the backend has them;
//! fire-and-forget where the backend has it (the gateway offers
//! `POST /v1/publish` for every backend, and answers 501 where it lacks it).
//!
//! - **Deposits** send the packet's own bytes; the gateway checks and
//!   re-encodes it exactly as the library does, so the receipt's id is the
//!   packet id computed here. A batch is split to the gateway's `max_batch`
//!   and `max_body` and sent in order, one request after the other.
//! - **Consumers** are sessions on the gateway: a fetch is a long-poll
//!   (longer waits than the gateway's `max_wait` are several polls), each
//!   delivery carries the gateway's handle for ack and nak. A session the
//!   gateway forgot (idle too long, or it restarted) is opened again by name
//!   on the next fetch. [`DurableConsumer::malformed_skipped`](qis_core::DurableConsumer::malformed_skipped)
//!   is the count the gateway's consumer reports.
//! - **Live** subscriptions return once the gateway's backend subscription
//!   is active; the stream ends with one [`ErrorKind::Unavailable`](qis_core::ErrorKind::Unavailable)
//!   item if the connection does.
//! - **Errors** keep their kind across HTTP: the gateway answers
//!   `{"error": {"kind": …}}` and the kind comes back as the same
//!   [`ErrorKind`](qis_core::ErrorKind) ([`wire::error_kind`]). A refused
//!   token is `InvalidInput`, an unreachable or busy gateway `Unavailable`.
//!
//! The JSON protocol itself is [`wire`], shared with the gateway; without
//! the default `client` feature only it is built.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod wire;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod config;
#[cfg(feature = "client")]
mod consumer;
#[cfg(feature = "client")]
mod live;
#[cfg(feature = "client")]
mod transport;

#[cfg(feature = "client")]
pub use config::{HttpConfig, DEFAULT_REQUEST_TIMEOUT};
#[cfg(feature = "client")]
pub use transport::HttpTransport;

/// The transport's name, in errors and spans.
pub const NAME: &str = "http";
