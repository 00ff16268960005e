//! # qis-transport-nats
//!
//! The reference QIS transport: NATS JetStream, as in the seed article.
//!
//! - **Deposit** ([`OutcomeTransport::deposit_encoded`]): a JetStream publish
//!   to the packet's subject with `Nats-Msg-Id` set to the packet id, so an
//!   identical re-deposit within the de-duplication window is stored once. The
//!   receipt carries the stream sequence and the duplicate flag of the server's
//!   ack; a duplicate's receipt names where the original is (its subject and
//!   sequence: de-duplication is per stream, across subjects). A batch
//!   deposit keeps up to [`NatsConfig::ack_window`] acks in flight.
//!   A deposit that gets no ack, "no responders" or "temporarily unavailable"
//!   (a cluster electing a leader) is retried with the same id for
//!   [`NatsConfig::retry_for`], then fails with a typed error.
//! - **Stream**: `QIS_OUTCOMES` on `qis.iot.>` (the seed's), file storage,
//!   24 h / 50 MiB retention, 2-minute de-duplication window, all set in
//!   [`NatsConfig`]. Created if missing; an existing stream with other settings
//!   is an [`ErrorKind::Conflict`], never silently used.
//! - **Durable consumers**: JetStream durable pull consumers with explicit ack,
//!   filtered by the server ([`server_filter`]); a consumer re-opened by name,
//!   from any connection, resumes after its last ack. Several handles on one
//!   name share its work. `fetch` is a pull request that the server answers
//!   as soon as it has a message (or when the wait is over), with idle
//!   heartbeats; a request lost with its consumer leader is sent again for
//!   the rest of the wait. Acks are sent
//!   like any publish; the consumer's `close()` waits until the server has
//!   processed them ([`NatsConfig::confirm_acks`] makes every `ack()` wait).
//! - **Backlog**: the server's consumer info, `num_pending` (matching, not yet
//!   delivered) and `num_ack_pending` (delivered, not acked); exact, as the
//!   server filter is the pattern. `consumers()` lists the stream's consumers
//!   with the same figures, without opening them. (With acks not confirmed,
//!   an ack just sent may not be counted yet.)
//! - **Live**: a core NATS subscription (at-most-once); **fire-and-forget**: a
//!   core NATS publish that live subscribers get and the stream does not store.
//! - Malformed bodies (someone else's garbage) are terminated on the server so
//!   they are never delivered again, logged with `tracing::warn!` and counted.
//! - **Retention and unacked deliveries**: the server applies `max_age` and
//!   `max_bytes` itself, removing the oldest messages whether or not a
//!   consumer has fetched them and not yet acked them. JetStream drops such a
//!   delivery from the consumer's pending set without telling the client (no
//!   advisory, no error on the next fetch), and a message that was acked by
//!   another handle of a shared consumer looks the same from here, so this
//!   transport cannot count those losses reliably and does not pretend to:
//!   unlike the SQLite and memory transports, it does not warn about them. Keep
//!   `max_age` well above the longest a device stays offline plus its ack
//!   wait, watch [`DurableConsumer::backlog`]
//!   (`unacked` is the server's pending count), and compare a stream's first
//!   sequence with the positions you have not acked if you must know.
//! - **Connecting**: to one server or to the seed servers of a cluster
//!   ([`NatsConfig::servers`], `nats://h1:4222,h2:4222` in a URL), with a
//!   user and password, a token or a `.creds` file, and TLS (`tls://`, a CA,
//!   a client certificate); reconnecting for ever when the connection drops.
//!
//! ```no_run
//! use std::time::Duration;
//! use qis_core::{DurableConsumer, OutcomePacket, OutcomeTransport, OutcomeTransportExt};
//! use qis_transport_nats::{NatsConfig, NatsTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! // One server, or the seed servers of a cluster; shared keys (`prefix`,
//! // `max_age`, `max_bytes`, `dedup_window`, …) and NATS's own (`stream`,
//! // `storage`, …) in the query.
//! let config: NatsConfig = "nats://127.0.0.1:4222,127.0.0.1:4223?max_age=24h&dedup_window=2m".parse()?;
//! let transport = NatsTransport::connect(config).await?;
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
//! // The backend's own methods stay at hand behind the checking layer.
//! println!("stream {}", transport.stream_name());
//! transport.close().await?;
//! # Ok(()) }
//! ```
//!
//! ## A three-node JetStream cluster
//!
//! Give the seed servers and three replicas:
//! `nats://10.0.0.1:4222,10.0.0.2:4222,10.0.0.3:4222?replicas=3`
//! ([`NatsConfig::replicas`]). `scripts/servers/nats-cluster.sh` starts such
//! a cluster on loopback, and the conformance suite runs on it; the
//! failover tests (`tests/failover.rs`, `tests/cluster.rs`) start clusters
//! of their own to kill and pause nodes.
//!
//! What it guarantees:
//!
//! - The stream and each durable consumer are Raft groups over the three
//!   servers: a receipt means two of the three have the packet, and losing
//!   any one server loses no receipted packet and no consumer's position.
//!   A durable consumer has as many replicas as its stream (QIS creates it
//!   without a count of its own; one found with fewer is a conflict).
//! - When a server is lost the others elect new leaders after Raft's
//!   election timeout (4 to 9 s; a step-down is quicker). Meanwhile a
//!   deposit is retried with the same `Nats-Msg-Id`, so the caller gets its
//!   receipt late, not an error; if an attempt that timed out was stored
//!   after all, the receipt says `duplicate` and names that copy's position.
//!   A fetch carries on: a pull request lost to a leadership change (409),
//!   to a dead or stopped leader (no idle heartbeats), to "no responders" or
//!   to a reconnect is sent again. Connecting (creating or checking the
//!   stream) and opening a consumer ask again while the cluster answers
//!   late or says it is busy. A server that stops answering without
//!   closing its connections (paused, overloaded) is left for another seed.
//!   Once the client has had no server at all for longer than `retry_for`,
//!   a fetch that found nothing fails with [`ErrorKind::Unavailable`]
//!   instead of returning empty batches forever (so a bridge can report
//!   its source gone); the client keeps reconnecting, and the next fetch
//!   after a server is back delivers again.
//! - Acks lost with a consumer leader are not losses: those packets are
//!   delivered again after the ack wait, with a higher delivery count
//!   (at-least-once). Keep processing idempotent by packet id.
//!
//! What it does not:
//!
//! - With two of the three servers gone there is no leader and no write:
//!   deposits fail with [`ErrorKind::Timeout`] or
//!   [`ErrorKind::Unavailable`] once `retry_for` is over (the packet may or
//!   may not be stored), never with a silent success, and fetches return
//!   nothing until a majority is back.
//! - The de-duplication window ([`NatsConfig::dedup_window`], 2 min) bounds
//!   it all: a packet deposited again after the window is stored again. The
//!   transport's own retries stop within half of it.
//! - Only durable, replicated consumers survive a server: a live
//!   subscription is core NATS and misses what is published while it
//!   reconnects; a consumer created elsewhere with one replica dies with
//!   its server.
//! - Power: by default JetStream acknowledges a write at once and writes it
//!   to disk (fsync) about every 2 minutes, so if the servers lose power
//!   together, acknowledged packets of the last interval can be lost
//!   (Jepsen, NATS 2.12.1, nats-server #7564). Setting the servers'
//!   `jetstream { sync_interval: always }` (`QIS_NATS_SYNC=always` for the
//!   script) fsyncs every write before the ack, at a cost in throughput
//!   that `cargo bench -p qis-transport-nats --bench cluster` measures: on
//!   the 2-core test machine a one-replica stream fell from about 50k to
//!   1.3k batch deposits/s, a three-replica one from 25–33k to 18–23k/s
//!   (Raft writes many messages per fsync).
//!   Jepsen still reported losses with disk corruption on a minority
//!   (#7549), a single power failure combined with pauses (#7567), and
//!   membership changes during partitions even with fsync on every write
//!   (#7545).
//! - Order: a retried deposit can land after packets deposited later.
//!
//! [`NatsTransport::connect`] returns the transport behind
//! [`qis_core::Checked`], the checking layer every backend shares: it refuses
//! calls after `close()`, subjects outside the prefix, patterns that match
//! nothing, what the capabilities rule out and acks on the wrong consumer,
//! and opens the same `tracing` spans as every backend. This crate keeps
//! only what is NATS's own.
//!
//! [`OutcomeTransport::deposit_encoded`]: qis_core::OutcomeTransport::deposit_encoded
//! [`ErrorKind::Conflict`]: qis_core::ErrorKind::Conflict
//! [`ErrorKind::Timeout`]: qis_core::ErrorKind::Timeout
//! [`ErrorKind::Unavailable`]: qis_core::ErrorKind::Unavailable

mod config;
mod connect;
mod consumer;
mod deposit;
mod duplicate;
mod error;
mod filter;
mod live;
mod retry;
mod stream;
mod url;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::jetstream;
use async_trait::async_trait;
use qis_core::{
    Capabilities, Checked, ConsumerConfig, ConsumerInfo, DurableConsumer, EncodedPacket,
    LiveSubscription, OutcomeTransport, Receipt, Result, SubjectPattern, TransportInfo,
};

pub use config::{
    stream_name_for, NatsConfig, NatsStorage, DEFAULT_PORT, DEFAULT_RETRY_FOR, DEFAULT_STREAM,
    MAX_REPLICAS,
};
pub use consumer::NatsConsumer;
pub use filter::server_filter;

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
    info: TransportInfo,
    config: NatsConfig,
    stream: String,
    client: async_nats::Client,
    js: jetstream::Context,
    /// Set by `close()`, once the connection is drained: consumers then have
    /// nothing left to confirm when they are closed.
    closed: AtomicBool,
    /// Held while checking that the server still answers, so that many
    /// callers noticing a silence at once probe (and reconnect) once.
    probe: tokio::sync::Mutex<()>,
    /// Since when the client has had no server.
    offline: connect::Offline,
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("servers", &self.inner.config.servers)
            .field("prefix", &self.inner.config.prefix.as_str())
            .field("stream", &self.inner.stream)
            .finish()
    }
}

impl NatsTransport {
    /// Connect to the configured servers, then create the stream (or check
    /// the existing one).
    ///
    /// Errors: [`ErrorKind::Unavailable`] when no server or JetStream can be
    /// reached, [`ErrorKind::InvalidInput`] for a bad configuration or a
    /// refused login, [`ErrorKind::Conflict`] when the stream exists with
    /// other settings.
    ///
    /// [`ErrorKind::Unavailable`]: qis_core::ErrorKind::Unavailable
    /// [`ErrorKind::InvalidInput`]: qis_core::ErrorKind::InvalidInput
    /// [`ErrorKind::Conflict`]: qis_core::ErrorKind::Conflict
    #[tracing::instrument(level = "debug", skip_all, fields(servers = %config.server_list(), prefix = %config.prefix))]
    pub async fn connect(config: NatsConfig) -> Result<Checked<Self>> {
        config.validate()?;
        let offline = connect::Offline::default();
        let options = connect::options(&config, &offline).await?;
        let client = options
            .connect(&config.servers)
            .await
            .map_err(|e| error::connect(&config.server_list(), e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(config.ack_window.max(4096))
            .backpressure_on_inflight(true)
            .build(client.clone());
        stream::ensure(&js, &config).await?;
        // Everything but similarity search; persistent with file storage
        // (the default), not with memory storage.
        let capabilities = Capabilities {
            persistent: config.storage == NatsStorage::File,
            similarity: false,
            ..Capabilities::ALL
        };
        Ok(Checked::new(NatsTransport {
            inner: Arc::new(Inner {
                info: TransportInfo::new(NAME, capabilities, config.prefix.clone()),
                stream: config.stream_name(),
                config,
                client,
                js,
                closed: AtomicBool::new(false),
                probe: tokio::sync::Mutex::new(()),
                offline,
            }),
        }))
    }

    /// Connect to `url` (see [`NatsConfig::from_url`]).
    pub async fn connect_url(url: &str) -> Result<Checked<Self>> {
        Self::connect(url.parse()?).await
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

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
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
            Err(e) => Err(error::request("a round trip to the NATS server", e)),
        }
    }
}

#[async_trait]
impl OutcomeTransport for NatsTransport {
    fn info(&self) -> &TransportInfo {
        &self.inner.info
    }

    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        deposit::one(self, packet).await
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        deposit::batch(self, packets).await
    }

    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        live::publish(self, packet).await
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        Ok(Arc::new(NatsConsumer::open(self, config).await?))
    }

    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        live::subscribe(self, pattern).await
    }

    /// Every consumer of the transport's stream (one stream per prefix),
    /// from the server's consumer list, with `num_pending` /
    /// `num_ack_pending` as their backlog and the pattern QIS created them
    /// with (for others, their filter).
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        consumer::list(self).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let flushed = self.inner.client.flush().await;
        // Drain: subscriptions end, then the connection closes.
        let _ = self.inner.client.drain().await;
        flushed.map_err(|e| error::send("flushing on close", e))
    }
}
