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
//!   de-duplication markers, appends with `XADD`, records the markers, trims
//!   the streams it wrote (`XTRIM MAXLEN ~`, `XTRIM MINID ~`), updates the
//!   subject index, and publishes each body on its live channel when a live
//!   subscriber exists. A single deposit is a chunk of one; a batch deposit
//!   sends chunks of 128 with all chunks in flight at once, and returns
//!   receipts in input order.
//! - **De-duplication is per transport, not per subject**: a packet is one
//!   fact, stored once wherever it is deposited first. A re-deposit of the
//!   same packet id on any subject within [`RedisConfig::dedup_window`] is
//!   not stored again; its receipt says `duplicate: true` and names the
//!   original's subject and position (the marker keeps both).
//! - **Retention** holds for every subject, whether it still receives
//!   deposits or not: deposits trim what they write, a background **sweep**
//!   of each connected transport trims a bounded batch of subjects per tick
//!   and deletes streams that are empty and expired (with their groups and
//!   index entries), and consumers trim the streams they read. Deliveries
//!   retention removes before they were acked are counted in a `tracing`
//!   warning. How it works, what it costs and what `max_bytes` means across
//!   many streams: [`RedisConfig`] ("Retention").
//! - **Durable consumer** `name` = a consumer group `name` on every stream its
//!   pattern matches, created when the consumer is created (start all → `0`,
//!   new → `$`, since t → just before t's millisecond) and, for streams that
//!   appear later, when a fetch discovers them (from their start: all they
//!   hold is new; for `since`, from t). The definition (pattern, start, ack
//!   wait) is kept in a hash: re-opening a name with another pattern is a
//!   [`Conflict`](qis_core::ErrorKind::Conflict); re-opening it with another
//!   ack wait changes the ack wait for every handle of the consumer, also
//!   handles opened before (fetches read it from Redis, and the claim and
//!   nak scripts apply the one Redis keeps). Fetch reads with `XREADGROUP`
//!   and claims deliveries unacked for longer than the ack wait
//!   (`XPENDING IDLE` + `XCLAIM`, page by page); when nothing is there it
//!   blocks with `XREADGROUP BLOCK` across the consumer's streams (on a
//!   connection of its own), bounded by the wait. Ack is `XACK`. Nak resets
//!   the entry's idle time so it is claimed again after the delay; a delay
//!   longer than the ack wait is kept in a per-consumer sorted set, and such
//!   a held entry is hidden again until it is due, so it never holds back
//!   other redeliveries. Several handles on one name share the work.
//! - **Close**: `close()` on a consumer (or on its transport) ends a fetch
//!   in flight promptly (at once when it is blocked on Redis): it returns
//!   [`Closed`](qis_core::ErrorKind::Closed), and whatever Redis had handed
//!   it meanwhile stays pending and is delivered again after the ack wait.
//!   Closing the transport also stops its sweep.
//! - **Backlog** ([`DurableConsumer::backlog`]):
//!   `unacked` is the size of the group's pending lists over the streams the
//!   pattern matches; `waiting` is the group's lag (Redis 7 `XINFO GROUPS`),
//!   the whole stream where the group has not read it yet, and, where Redis
//!   cannot say the lag (entries deleted from the middle of a stream with
//!   `XDEL`), a count of the entries after the group's last delivered one
//!   (at most 10,000 per stream). It is counted from the subject index, so
//!   it needs no fetch and does not wait for one in flight.
//!   [`consumers()`](qis_core::OutcomeTransport::consumers) finds every
//!   consumer's definition hash with `SCAN` and counts its backlog the same
//!   way, without opening it; a consumer whose streams the sweep deleted
//!   (with their groups) is still listed, as the definition stays.
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
//! | `{ns}:subjects` | sorted set (all scores 0) | every subject that has a stream, for pattern consumers to find streams (lexicographic range on the pattern's literal prefix) and for the sweep to walk (a cursor over the same order) |
//! | `{ns}:subjects:v` | string (counter) | raised whenever a subject enters or leaves the index, so readers know when to look again |
//! | `{ns}:new-subjects` | stream | one entry per new subject, to wake blocked pattern consumers |
//! | `{ns}:d:{window ms}:{bucket}` | hash with expiry | packet id → `"{entry id} {subject}"` of recent deposits, for de-duplication; one per `dedup_window` of server time (bucket = ⌊ms / window⌋), expiring when the next bucket is over; its field `encoding` (a 65-byte value) makes Redis keep it as a hash table from the start, not a listpack that is scanned per lookup |
//! | `{ns}:c:{consumer}` | hash | a durable consumer's definition: `pattern`, `start`, `lazy_start`, `ack_wait` (ms) |
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
mod retention;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use qis_core::backend::InjectRaw;
use qis_core::{
    Capabilities, ConsumerConfig, ConsumerInfo, DurableConsumer, EncodedPacket, LiveSubscription,
    OutcomeTransport, Receipt, Result, SubjectPattern, TransportInfo,
};

pub use config::{RedisConfig, DEFAULT_PORT, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SWEEP_INTERVAL};
pub use retention::SWEEP_BATCH;

use error::redacted;
use keys::Keys;
use retention::Retainer;

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

/// No native wildcards (a stream per subject: the transport finds the
/// streams a pattern matches) and no similarity search. Persistent:
/// Redis keeps streams across restarts with AOF or RDB on (as
/// scripts/servers/redis.sh starts it); that is server configuration.
pub(crate) const CAPABILITIES: Capabilities = Capabilities {
    native_wildcards: false,
    similarity: false,
    ..Capabilities::ALL
};

pub(crate) struct Inner {
    info: TransportInfo,
    config: RedisConfig,
    keys: Keys,
    client: redis::Client,
    conn: ConnectionManager,
    /// Trims streams (for consumers and the sweep).
    retainer: Retainer,
    /// Turns true on close: ends the sweep and every fetch in flight.
    closed: watch::Sender<bool>,
    /// The retention sweep (none when `sweep_interval` is zero).
    sweep: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(s) = &self.sweep {
            s.abort();
        }
    }
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

    pub(crate) fn retainer(&self) -> &Retainer {
        &self.inner.retainer
    }

    /// Turns true when the transport is closed.
    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.inner.closed.subscribe()
    }
}

#[async_trait]
impl OutcomeTransport for RedisTransport {
    fn info(&self) -> &TransportInfo {
        &self.inner.info
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

    /// Every consumer definition under the prefix (`SCAN` for the hashes
    /// `{ns}:c:*`), each with its backlog as the consumer counts it.
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        self.list_consumers().await
    }

    async fn close(&self) -> Result<()> {
        // Deposits and acks are confirmed before they return: nothing is
        // pending. Stop the sweep and end fetches in flight (they return
        // `Closed`); the connections close with the last clone.
        self.inner.closed.send_replace(true);
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
