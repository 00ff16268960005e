//! # qis-core
//!
//! The heart of QIS outcome routing: the [`OutcomePacket`] and its 512-byte
//! wire form, [`Subject`]s and [`SubjectPattern`]s, the semantic
//! [`Fingerprint`], local [`synthesize`], the [`OutcomeTransport`] trait every
//! backend implements, similar twins by context vector ([`similar`]), and
//! [`MemoryTransport`], a complete in-process backend.
//!
//! ```
//! use std::time::Duration;
//! use qis_core::{synthesize, MemoryTransport, OutcomePacket, OutcomeTransportExt, DurableConsumer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! let transport = MemoryTransport::new(Default::default());
//! let a = OutcomePacket {
//!     agent_id: "hvac-building-a".into(),
//!     domain: "hvac".into(),
//!     problem_class: "energy-anomaly".into(),
//!     conclusion: "Compressor draw 18% above baseline.".into(),
//!     confidence: 0.87,
//!     context_vector: vec![0.18, 0.92, 0.03, 0.71],
//!     timestamp: 1_764_000_000.0,
//!     source_node: "building-a-floor-3".into(),
//! };
//! let receipt = transport.deposit(&a).await?;
//! assert_eq!(receipt.subject.as_str(), "qis.iot.hvac.energy-anomaly");
//!
//! // Building B finds A's earlier packet: the consumer starts with history.
//! let mut b = a.clone();
//! b.agent_id = "hvac-building-b".into();
//! b.confidence = 0.79;
//! let twins = transport.twins_consumer("building-b", "hvac", "energy-anomaly").await?;
//! let batch = twins.fetch(50, Duration::from_millis(100)).await?;
//! twins.ack(&batch).await?;
//! let s = synthesize(&b, batch.iter().map(|d| d.packet()));
//! assert_eq!(s.n_agents, 2);
//! assert!(s.alert);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod bridge;
mod checked;
pub mod config;
mod error;
mod fingerprint;
pub mod memory;
mod packet;
pub mod similar;
pub mod subject;
mod synthesis;
pub mod transport;

pub use bridge::{Bridge, BridgeConfig, BridgeStatus};
pub use checked::Checked;
pub use error::{Error, ErrorKind, Result};
pub use fingerprint::{Fingerprint, DEFAULT_RESOLUTION};
pub use memory::MemoryTransport;
pub use packet::{
    timestamp_now, EncodedPacket, OutcomePacket, PacketId, Received, MAX_PACKET_BYTES,
};
pub use similar::{Scored, SimilarityQuery, DEFAULT_SIMILAR_K};
pub use subject::{Subject, SubjectPattern, DEFAULT_PREFIX};
pub use synthesis::{
    synthesize, synthesize_with, Method, Posterior, Synthesis, SynthesisConfig, Twin,
    ALERT_THRESHOLD, DEFAULT_OUTLIER_K, DEFAULT_QUORUM, LOWER_BOUND_QUANTILE,
};
pub use transport::{
    deliveries, AckToken, Backlog, Capabilities, ConsumerConfig, ConsumerInfo, Delivery,
    DurableConsumer, DynTransport, LiveSubscription, OutcomeTransport, OutcomeTransportExt,
    Position, Receipt, StartPosition, TransportInfo, DEFAULT_ACK_WAIT,
};

/// Re-exported so backends and users implement the traits with the same macro.
pub use async_trait::async_trait;
