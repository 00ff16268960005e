//! # qis-transport-nats
//!
//! The reference QIS transport: NATS JetStream, as in the seed article.
//!
//! - **Deposit** ([`OutcomeTransport::deposit_encoded`]): a JetStream publish
//!   to the packet's subject with `Nats-Msg-Id` set to the packet id, so an
//!   identical re-deposit within the de-duplication window is stored once. The
//!   receipt carries the stream sequence and the duplicate flag of the server's
//!   ack. A batch deposit keeps up to [`NatsConfig::ack_window`] acks in flight.
//! - **Stream**: `QIS_OUTCOMES` on `qis.iot.>` (the seed's), file storage,
//!   24 h / 50 MiB retention, 2-minute de-duplication window, all set in
//!   [`NatsConfig`]. Created if missing; an existing stream with other settings
//!   is an [`ErrorKind::Conflict`], never silently used.
//! - **Durable consumers**: JetStream durable pull consumers with explicit ack,
//!   filtered by the server ([`server_filter`]); a consumer re-opened by name,
//!   from any connection, resumes after its last ack. Several handles on one
//!   name share its work. `fetch` is one pull request that the server answers
//!   as soon as it has a message (or when the wait is over). Acks are sent
//!   like any publish; the consumer's `close()` waits until the server has
//!   processed them ([`NatsConfig::confirm_acks`] makes every `ack()` wait).
//! - **Live**: a core NATS subscription (at-most-once); **fire-and-forget**: a
//!   core NATS publish that live subscribers get and the stream does not store.
//! - Malformed bodies (someone else's garbage) are terminated on the server so
//!   they are never delivered again, logged with `tracing::warn!` and counted.
//!
//! ```no_run
//! use std::time::Duration;
//! use qis_core::{DurableConsumer, OutcomePacket, OutcomeTransport, OutcomeTransportExt};
//! use qis_transport_nats::{NatsConfig, NatsTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! let transport = NatsTransport::connect(NatsConfig::from_url("nats://127.0.0.1:4222")?).await?;
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
//! let receipt = transport.deposit(&packet).await?;
//! println!("stored at {} on {}", receipt.position, receipt.subject);
//!
//! let twins = transport.twins_consumer("building-b", "hvac", "energy-anomaly").await?;
//! let batch = twins.fetch(50, Duration::from_secs(2)).await?;
//! twins.ack(&batch).await?;
//! transport.close().await?;
//! # Ok(()) }
//! ```
//!
//! [`OutcomeTransport::deposit_encoded`]: qis_core::OutcomeTransport::deposit_encoded
//! [`ErrorKind::Conflict`]: qis_core::ErrorKind::Conflict

mod config;
mod deposit;
mod errors;
mod filter;
mod live;
mod pull;
mod stream;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::jetstream;
use async_trait::async_trait;
use qis_core::{
    Capabilities, ConsumerConfig, DurableConsumer, EncodedPacket, Error, LiveSubscription,
    OutcomeTransport, Receipt, Result, Subject, SubjectPattern,
};

pub use config::{stream_name_for, NatsConfig, NatsStorage, DEFAULT_PORT, DEFAULT_STREAM};
pub use filter::server_filter;
pub use pull::NatsConsumer;

/// The transport's name in errors and logs.
pub(crate) const NAME: &str = "nats";

/// A connection to a NATS server with JetStream, implementing
/// [`OutcomeTransport`]. Clones share the connection; [`Self::connect`] again
/// for an independent one.
#[derive(Clone)]
pub struct NatsTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    stream: String,
    client: async_nats::Client,
    js: jetstream::Context,
    closed: AtomicBool,
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("url", &self.inner.config.url)
            .field("prefix", &self.inner.config.prefix.as_str())
            .field("stream", &self.inner.stream)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl NatsTransport {
    /// Connect, then create the stream (or check the existing one).
    ///
    /// Errors: [`ErrorKind::Unavailable`] when the server or JetStream cannot
    /// be reached, [`ErrorKind::InvalidInput`] for a bad configuration or a
    /// refused login, [`ErrorKind::Conflict`] when the stream exists with
    /// other settings.
    #[tracing::instrument(level = "debug", skip_all, fields(url = %config.url, prefix = %config.prefix))]
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        config.validate()?;
        let options = config.connect_options().await?;
        let client = options
            .connect(config.server_url())
            .await
            .map_err(|e| errors::connect(config.server_url(), e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(config.ack_window.max(4096))
            .backpressure_on_inflight(true)
            .build(client.clone());
        stream::ensure(&js, &config).await?;
        Ok(NatsTransport {
            inner: Arc::new(Inner {
                stream: config.stream_name(),
                config,
                client,
                js,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Connect to `url` (see [`NatsConfig::from_url`]) with default settings.
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(NatsConfig::from_url(url)?).await
    }

    /// The settings this transport was opened with.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// The JetStream stream name.
    pub fn stream_name(&self) -> &str {
        &self.inner.stream
    }

    /// The underlying NATS client, for what QIS does not cover.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The underlying JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::closed(NAME))
        } else {
            Ok(())
        }
    }

    /// A round trip to the server: when it returns, the server has processed
    /// everything this connection sent before (subscriptions included).
    pub(crate) async fn round_trip(&self) -> Result<()> {
        let subject = format!(
            "_QIS.BARRIER.{}",
            self.inner.client.new_inbox().replace('.', "_")
        );
        match self
            .inner
            .client
            .request(subject, bytes::Bytes::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Err(e) => Err(errors::request("a round trip to the NATS server", e)),
        }
    }
}

#[async_trait]
impl OutcomeTransport for NatsTransport {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: true,
            persistent: self.inner.config.storage == NatsStorage::File,
            live: true,
            fire_and_forget: true,
            native_wildcards: true,
            dedup: true,
            nak: true,
            start_since: true,
            shared_consumers: true,
        }
    }

    fn prefix(&self) -> &Subject {
        &self.inner.config.prefix
    }

    #[tracing::instrument(level = "debug", skip_all, fields(subject = %packet.subject(), id = %packet.id()))]
    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        self.check_open()?;
        deposit::one(self, packet).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(count = packets.len()))]
    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        self.check_open()?;
        deposit::batch(self, packets).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(subject = %packet.subject(), id = %packet.id()))]
    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        self.check_open()?;
        live::publish(self, packet).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(consumer = %config.name, pattern = %config.pattern))]
    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        self.check_open()?;
        Ok(Arc::new(NatsConsumer::open(self, config).await?))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(pattern = %pattern))]
    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        self.check_open()?;
        live::subscribe(self, pattern).await
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let flushed = self.inner.client.flush().await;
        // Drain: subscriptions end, then the connection closes.
        let _ = self.inner.client.drain().await;
        flushed.map_err(|e| errors::send("flushing on close", e))
    }
}
