//! # qis-transport-redis
//!
//! The QIS outcome transport over Redis (7.0 or later): **Streams** for
//! durable deposits and durable consumers, **Pub/Sub** for live
//! subscriptions and fire-and-forget publish.
//!
//! ```no_run
//! use std::time::Duration;
//! use qis_core::{DurableConsumer, OutcomePacket, OutcomeTransport, OutcomeTransportExt};
//! use qis_transport_redis::{RedisConfig, RedisTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! let config: RedisConfig = "redis://127.0.0.1:16379?prefix=qis.iot&max_age=24h&dedup_window=2m".parse()?;
//! // The transport behind qis-core's checking layer (`qis_core::Checked`).
//! let transport = RedisTransport::connect(config).await?;
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
//! println!("stored at {}", receipt.position);
//!
//! let twins = transport.twins_consumer("building-b", "hvac", "energy-anomaly").await?;
//! let batch = twins.fetch(50, Duration::from_secs(1)).await?;
//! twins.ack(&batch).await?;
//! transport.close().await?;
//! # Ok(()) }
//! ```
//!
//! # How QIS maps onto Redis
//!
//! - **One stream per subject**, `{prefix}:s:{subject}`; each entry has the
//!   fields `id` (the packet id) and `body` (the packet's JSON). The receipt's
//!   position is the entry id ([`Position::StreamId`](qis_core::Position)).
//!   A sorted set `{prefix}:subjects` indexes the subjects, so a pattern
//!   consumer finds streams created after it started (key layout below).
//! - **Deposit** is one Lua script per chunk of packets: it checks the
//!   de-duplication markers (a re-deposit within [`RedisConfig::dedup_window`]
//!   returns the original entry id with `duplicate: true`), appends with
//!   `XADD`, records the markers, trims with `XTRIM MAXLEN ~` and
//!   `XTRIM MINID ~`, updates the subject index, and publishes each body on
//!   its live channel when a live subscriber exists. A single deposit is a
//!   chunk of one; a batch deposit sends chunks of 128 with all chunks in
//!   flight at once, and returns receipts in input order.
//! - **Durable consumer** `name` = a consumer group `name` on every stream its
//!   pattern matches, created when the consumer is created (start all → `0`,
//!   new → `$`, since t → just before t's millisecond) and, for streams that
//!   appear later, when a fetch discovers them (from their start: all they
//!   hold is new; for `since`, from t). The definition (pattern, start) is
//!   kept in a hash: re-opening a name with another pattern is a
//!   [`Conflict`](qis_core::ErrorKind::Conflict). Fetch reads with
//!   `XREADGROUP` and claims deliveries unacked for longer than the ack wait
//!   (`XPENDING IDLE` + `XCLAIM`); when nothing is there it blocks with
//!   `XREADGROUP BLOCK` across the consumer's streams (on a connection of its
//!   own), bounded by the wait. Ack is `XACK`. Nak resets the entry's idle time
//!   so it is claimed again after the delay (delays longer than the ack wait
//!   are kept in a per-consumer sorted set). Several handles on one name share
//!   the work.
//! - **Live** subscriptions `PSUBSCRIBE` to `{prefix}:live:{pattern}` with the
//!   wildcards as Redis globs (which cross dots) and filter exactly with
//!   [`SubjectPattern::matches`](qis_core::SubjectPattern::matches).
//!   Fire-and-forget publish is a plain `PUBLISH`: nothing is stored.
//! - **Malformed** entries (no body, over 512 bytes, not a valid packet) are
//!   logged, counted and acked away: never redelivered.
//! - **Durability** is the server's: a deposit returns once Redis executed
//!   it; it survives a restart when the server persists (`appendonly yes`;
//!   `appendfsync always` to fsync before replying).
//! - **Auth and TLS** come from the URL: `redis://user:password@host:port/db`;
//!   `rediss://` needs the crate feature `tls` (rustls with ring; the `qis`
//!   facade's `redis` feature turns it on), with `tls_ca`, `tls_cert` and
//!   `tls_key` for a private CA and client certificates. See [`RedisConfig`]
//!   for every URL key.
//! - **Checks** every backend shares (closed handles, subjects outside the
//!   prefix, capabilities, acks on the wrong consumer) are done by
//!   [`qis_core::Checked`], which [`RedisTransport::connect`] applies.
//!
//! # Key layout
//!
//! Every key starts with the transport's subject prefix (`{ns}` below, e.g.
//! `qis.iot`), so transports on different prefixes never see each other's data.
//!
//! | key | type | what |
//! |---|---|---|
//! | `{ns}:s:{subject}` | stream | the packets of one subject; entry fields `id` (packet id, hex) and `body` (the JSON) |
//! | `{ns}:subjects` | sorted set (all scores 0) | every subject that has a stream, for pattern consumers to find streams (lexicographic range on the pattern's literal prefix) |
//! | `{ns}:new-subjects` | stream | one entry per new subject, to wake blocked pattern consumers |
//! | `{ns}:d:{window ms}:{bucket}` | hash with expiry | packet id → entry id of recent deposits, for de-duplication; one per `dedup_window` of server time (bucket = ⌊ms / window⌋), expiring when the next bucket is over |
//! | `{ns}:c:{consumer}` | hash | a durable consumer's definition: `pattern`, `start`, `lazy_start` |
//! | `{ns}:c:{consumer}:delayed` | sorted set | naks with a delay longer than the ack wait: `"{stream key} {entry id}"` scored by the retry time (ms) |
//!
//! Live packets go to the Pub/Sub channel `{ns}:live:{subject}`.
//!
//! # Bench
//!
//! `cargo bench -p qis-transport-redis` (with `QIS_REDIS_URL` set) compares
//! batch deposit and fetch + ack with the raw `redis` crate doing pipelined
//! `XADD` and `XREADGROUP` + `XACK` on the same server, and prints the ratio.

mod config;
mod connect;
mod consumer;
mod deposit;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod live;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use qis_core::backend::InjectRaw;
use qis_core::{
    Capabilities, ConsumerConfig, DurableConsumer, EncodedPacket, Error, ErrorKind,
    LiveSubscription, OutcomeTransport, Receipt, Result, Subject, SubjectPattern,
};

pub use config::{RedisConfig, DEFAULT_PORT, DEFAULT_RESPONSE_TIMEOUT};

use error::redacted;
use keys::Keys;

/// The transport's name in errors and logs.
pub(crate) const NAME: &str = "redis";

/// The Redis transport. [`RedisTransport::connect`] returns it behind the
/// checking layer ([`qis_core::Checked`]); clones share connections, and
/// connecting again gives an independent handle (new connections) on the
/// same store.
#[derive(Clone)]
pub struct RedisTransport {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: RedisConfig,
    keys: Keys,
    client: redis::Client,
    conn: ConnectionManager,
}

impl fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("url", &redacted(&self.inner.config.url))
            .field("prefix", &self.inner.config.prefix.as_str())
            .finish_non_exhaustive()
    }
}

impl RedisTransport {
    /// The configuration this transport was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.inner.client
    }
}

#[async_trait]
impl OutcomeTransport for RedisTransport {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: true,
            // Redis keeps streams across restarts with AOF or RDB on (as
            // scripts/servers/redis.sh starts it); that is server configuration.
            persistent: true,
            live: true,
            fire_and_forget: true,
            native_wildcards: false,
            dedup: true,
            nak: true,
            start_since: true,
            shared_consumers: true,
        }
    }

    fn prefix(&self) -> &Subject {
        &self.inner.config.prefix
    }

    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        let mut r = self.deposit_many(std::slice::from_ref(packet)).await?;
        r.pop()
            .ok_or_else(|| Error::new(ErrorKind::Backend, NAME, "deposit returned no receipt"))
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        self.deposit_many(packets).await
    }

    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        self.publish(packet).await
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        Ok(Arc::new(self.open_consumer(config).await?))
    }

    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        self.subscribe_live(pattern).await
    }

    async fn close(&self) -> Result<()> {
        // Deposits and acks are confirmed before they return: nothing is
        // pending. The connections close with the last clone.
        Ok(())
    }
}

/// Raw bytes appended to the subject's stream (indexed, no
/// de-duplication) and published on its live channel, as a foreign publisher
/// of garbage would: for tests of malformed-entry handling.
#[async_trait]
impl InjectRaw for RedisTransport {
    async fn inject_raw(&self, subject: &str, body: &[u8]) -> Result<()> {
        self.deposit_raw(subject, body).await
    }
}
