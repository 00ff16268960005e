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
//! let config = RedisConfig::from_url("redis://127.0.0.1:16379")?;
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
//!   `rediss://` needs the crate feature `tls` (rustls with ring).

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
mod deposit;
mod keys;
mod live;
mod pull;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use qis_core::{
    Capabilities, ConsumerConfig, DurableConsumer, EncodedPacket, Error, ErrorKind,
    LiveSubscription, OutcomeTransport, Receipt, Result, Subject, SubjectPattern,
};

pub use config::{
    RedisConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DEDUP_WINDOW, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES,
    DEFAULT_RESPONSE_TIMEOUT,
};

use keys::Keys;

/// The transport's name in errors and logs.
pub(crate) const NAME: &str = "redis";

/// The Redis transport. Clones share connections; [`RedisTransport::connect`]
/// again gives an independent handle (new connections) on the same store.
#[derive(Clone)]
pub struct RedisTransport {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: RedisConfig,
    keys: Keys,
    client: redis::Client,
    conn: ConnectionManager,
    closed: AtomicBool,
}

impl fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("url", &redacted(&self.inner.config.url))
            .field("prefix", &self.inner.config.prefix.as_str())
            .finish_non_exhaustive()
    }
}

/// The URL with its password hidden, for logs and errors.
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".to_string(),
    }
}

/// Turn a client error into a QIS error: connection trouble is
/// [`ErrorKind::Unavailable`], a reply that took too long is
/// [`ErrorKind::Timeout`], anything else [`ErrorKind::Backend`].
pub(crate) fn redis_error(e: redis::RedisError, doing: &str) -> Error {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    let (kind, hint) = if e.is_timeout() {
        (
            ErrorKind::Timeout,
            "Redis did not answer in time; retry, or raise response_timeout",
        )
    } else if e.kind() == K::AuthenticationFailed
        || e.code() == Some("NOAUTH")
        || e.code() == Some("WRONGPASS")
    {
        (
            ErrorKind::Unavailable,
            "Redis refused the credentials: check user and password in the URL",
        )
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            K::Server(S::BusyLoading) | K::Server(S::MasterDown) | K::Server(S::TryAgain)
        )
    {
        (
            ErrorKind::Unavailable,
            "Redis cannot be reached right now; retry (the connection is re-established automatically)",
        )
    } else {
        (ErrorKind::Backend, "Redis reported an error")
    };
    Error::new(kind, NAME, format!("{doing}: {hint}: {e}")).with_source(e)
}

/// An error for a reply that does not have the expected shape.
pub(crate) fn unexpected(doing: &str, v: &Value) -> Error {
    let mut shown = format!("{v:?}");
    shown.truncate(200);
    Error::new(
        ErrorKind::Backend,
        NAME,
        format!("{doing}: unexpected reply from Redis: {shown}"),
    )
}

/// A client for `url` trusting the certificate authority in `path`.
#[cfg(feature = "tls")]
fn client_with_ca(url: &str, path: &std::path::Path) -> Result<redis::RedisResult<redis::Client>> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            NAME,
            format!("cannot read tls_ca_file {}: {e}", path.display()),
        )
        .with_source(e)
    })?;
    Ok(redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    ))
}

#[cfg(not(feature = "tls"))]
fn client_with_ca(
    _url: &str,
    _path: &std::path::Path,
) -> Result<redis::RedisResult<redis::Client>> {
    Err(Error::new(
        ErrorKind::Unsupported,
        NAME,
        "tls_ca_file needs the qis-transport-redis crate feature `tls`: enable it",
    ))
}

impl RedisTransport {
    /// Connect to Redis. Fails with [`ErrorKind::Unavailable`] when the
    /// server cannot be reached or refuses the credentials.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        config.check()?;
        let scheme = config.url.split("://").next().unwrap_or("");
        if scheme == "rediss" {
            #[cfg(feature = "tls")]
            {
                // Several transports may race here; only the first install wins.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::new(
                ErrorKind::Unsupported,
                NAME,
                "rediss:// (TLS) needs the qis-transport-redis crate feature `tls`: enable it, or use redis://",
            ));
        }
        let shown = redacted(&config.url);
        let client = match &config.tls_ca_file {
            None => redis::Client::open(config.url.as_str()),
            Some(path) => client_with_ca(&config.url, path)?,
        }
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!("{shown} is not a usable Redis URL: {e}"),
            )
            .with_source(e)
        })?;
        let cm_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connect_timeout))
            .set_number_of_retries(2)
            .set_min_delay(std::time::Duration::from_millis(50))
            .set_max_delay(std::time::Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), cm_config)
            .await
            .map_err(|e| redis_error(e, &format!("could not connect to Redis at {shown}")))?;
        // Load the scripts once, so the first batch does not meet NOSCRIPT
        // on every chunk in flight (after a server restart that happens once).
        let mut c = conn.clone();
        for script in [
            &*deposit::DEPOSIT,
            &*pull::FETCH,
            &*pull::CREATE,
            &*pull::NAK,
        ] {
            script
                .load_async(&mut c)
                .await
                .map_err(|e| redis_error(e, "loading the Lua scripts failed"))?;
        }
        let keys = Keys::new(config.prefix.as_str());
        tracing::debug!(url = %shown, prefix = %config.prefix, "connected to Redis");
        Ok(RedisTransport {
            inner: Arc::new(Inner {
                keys,
                config,
                client,
                conn,
                closed: AtomicBool::new(false),
            }),
        })
    }

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

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::closed(NAME))
        } else {
            Ok(())
        }
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

    #[tracing::instrument(level = "debug", skip_all, fields(subject = %packet.subject(), id = %packet.id()))]
    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        self.check_open()?;
        let mut r = self.deposit_many(std::slice::from_ref(packet)).await?;
        r.pop()
            .ok_or_else(|| Error::new(ErrorKind::Backend, NAME, "deposit returned no receipt"))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(n = packets.len()))]
    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        self.check_open()?;
        self.deposit_many(packets).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(subject = %packet.subject(), id = %packet.id()))]
    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        self.check_open()?;
        self.publish(packet).await
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        self.check_open()?;
        Ok(Arc::new(self.open_consumer(config).await?))
    }

    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        self.check_open()?;
        self.subscribe_live(pattern).await
    }

    async fn close(&self) -> Result<()> {
        // Deposits and acks are confirmed before they return, so nothing is
        // pending; later calls on this handle fail with Closed.
        self.inner.closed.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden() {
        let s = redacted("redis://user:secret@127.0.0.1:1/0");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("user"), "{s}");
    }
}
