//! # qis — outcome routing at the edge
//!
//! Devices distil what they learned into small [`OutcomePacket`]s (≤ 512
//! bytes), address them by a deterministic semantic [`Subject`]
//! (`qis.iot.hvac.energy-anomaly`, optionally with a [`Fingerprint`] leaf), and
//! deposit them on a durable transport. Devices facing the same problem pull
//! their twins' packets and [`synthesize`] locally.
//!
//! This crate is the facade: it re-exports [`qis_core`] and the transports
//! compiled in by Cargo feature (`sqlite` (default), `nats`, `redis`, `kafka`,
//! `http` (a `qis serve` gateway), `chroma`, `full`), and picks one at run time from a URL with [`connect`].
//!
//! ```
//! use std::time::Duration;
//! use qis::{OutcomePacket, OutcomeTransportExt, DurableConsumer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis::Result<()> {
//! // `sqlite://qis.db` keeps outcomes in one file; `memory://` is in-process.
//! let transport = qis::connect("memory://").await?;
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
//! transport.deposit(&packet).await?;
//! let twins = transport.twins_consumer("building-b", "hvac", "energy-anomaly").await?;
//! let got = twins.fetch(10, Duration::from_millis(100)).await?;
//! twins.ack(&got).await?;
//! assert_eq!(got.len(), 1);
//! # Ok(()) }
//! ```

pub use qis_core::*;

#[cfg(feature = "chroma")]
pub use qis_transport_chroma as chroma;
#[cfg(feature = "http")]
pub use qis_transport_http as http;
#[cfg(feature = "kafka")]
pub use qis_transport_kafka as kafka;
#[cfg(feature = "nats")]
pub use qis_transport_nats as nats;
#[cfg(feature = "redis")]
pub use qis_transport_redis as redis;
#[cfg(feature = "sqlite")]
pub use qis_transport_sqlite as sqlite;

mod connect;
pub use connect::{connect, TransportConfig};

/// The README's code, compiled and run as doc tests so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
