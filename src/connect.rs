//! Picking a transport at run time from a URL.

use std::sync::Arc;

use qis_core::{DynTransport, Error, ErrorKind, MemoryTransport, Result, Subject};

/// The configuration of any compiled-in transport. Build it from a URL with
/// [`TransportConfig::from_url`], or directly from a backend's typed config to
/// set what a URL cannot say (stream limits, TLS, credentials files…).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TransportConfig {
    /// `memory://`: an in-process store, new for each connect.
    Memory {
        /// The subject prefix.
        prefix: Subject,
    },
    /// `sqlite://path`: one file, no server.
    #[cfg(feature = "sqlite")]
    Sqlite(qis_transport_sqlite::SqliteConfig),
    /// `nats://host:port`: NATS JetStream.
    #[cfg(feature = "nats")]
    Nats(Box<qis_transport_nats::NatsConfig>),
    /// `redis://` or `rediss://`: Redis Streams and Pub/Sub.
    #[cfg(feature = "redis")]
    Redis(qis_transport_redis::RedisConfig),
    /// `kafka://host:port,host:port`: Kafka consumer groups.
    #[cfg(feature = "kafka")]
    Kafka(Box<qis_transport_kafka::KafkaConfig>),
}

#[cfg(any(
    not(feature = "sqlite"),
    not(feature = "nats"),
    not(feature = "redis"),
    not(feature = "kafka")
))]
fn not_compiled(scheme: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "connect",
        format!("the {scheme}:// transport is not compiled in: enable the `{feature}` feature of the qis crate (or `full`)"),
    )
}

impl TransportConfig {
    /// Parse a URL: `memory://`, `sqlite://path`, `nats://…`, `redis://…`,
    /// `rediss://…`, `kafka://host:port,…`. A scheme whose transport is not
    /// compiled in fails with [`ErrorKind::Unsupported`] naming the feature to
    /// enable; a malformed URL fails with [`ErrorKind::InvalidInput`].
    pub fn from_url(url: &str) -> Result<Self> {
        let Some((scheme, _rest)) = url.split_once("://").or_else(|| url.split_once(':')) else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "connect",
                format!("{url:?} is not a transport URL: use memory://, sqlite://PATH, nats://HOST:PORT, redis://HOST:PORT or kafka://HOST:PORT"),
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "memory" => Ok(TransportConfig::Memory {
                prefix: Subject::default(),
            }),
            "sqlite" => {
                #[cfg(feature = "sqlite")]
                return Ok(TransportConfig::Sqlite(qis_transport_sqlite::SqliteConfig::from_url(url)?));
                #[cfg(not(feature = "sqlite"))]
                return Err(not_compiled("sqlite", "sqlite"));
            }
            "nats" | "tls" => {
                #[cfg(feature = "nats")]
                return Ok(TransportConfig::Nats(Box::new(
                    qis_transport_nats::NatsConfig::from_url(url)?,
                )));
                #[cfg(not(feature = "nats"))]
                return Err(not_compiled("nats", "nats"));
            }
            "redis" | "rediss" => {
                #[cfg(feature = "redis")]
                return Ok(TransportConfig::Redis(qis_transport_redis::RedisConfig::from_url(url)?));
                #[cfg(not(feature = "redis"))]
                return Err(not_compiled("redis", "redis"));
            }
            "kafka" => {
                #[cfg(feature = "kafka")]
                return Ok(TransportConfig::Kafka(Box::new(
                    qis_transport_kafka::KafkaConfig::from_url(url)?,
                )));
                #[cfg(not(feature = "kafka"))]
                return Err(not_compiled("kafka", "kafka"));
            }
            other => Err(Error::new(
                ErrorKind::InvalidInput,
                "connect",
                format!("unknown transport scheme {other:?} in {url:?}: use memory, sqlite, nats, redis, rediss or kafka"),
            )),
        }
    }

    /// Use another subject prefix than the default `qis.iot`.
    pub fn with_prefix(self, prefix: Subject) -> Self {
        match self {
            TransportConfig::Memory { .. } => TransportConfig::Memory { prefix },
            #[cfg(feature = "sqlite")]
            TransportConfig::Sqlite(c) => TransportConfig::Sqlite(c.prefix(prefix)),
            #[cfg(feature = "nats")]
            TransportConfig::Nats(c) => TransportConfig::Nats(Box::new((*c).prefix(prefix))),
            #[cfg(feature = "redis")]
            TransportConfig::Redis(c) => TransportConfig::Redis(c.prefix(prefix)),
            #[cfg(feature = "kafka")]
            TransportConfig::Kafka(c) => TransportConfig::Kafka(Box::new((*c).prefix(prefix))),
        }
    }

    /// Connect, returning the transport as a trait object.
    pub async fn connect(self) -> Result<DynTransport> {
        tracing::debug!(config = ?self, "connecting");
        Ok(match self {
            TransportConfig::Memory { prefix } => Arc::new(MemoryTransport::new(prefix)),
            #[cfg(feature = "sqlite")]
            TransportConfig::Sqlite(c) => {
                Arc::new(qis_transport_sqlite::SqliteTransport::connect(c).await?)
            }
            #[cfg(feature = "nats")]
            TransportConfig::Nats(c) => {
                Arc::new(qis_transport_nats::NatsTransport::connect(*c).await?)
            }
            #[cfg(feature = "redis")]
            TransportConfig::Redis(c) => {
                Arc::new(qis_transport_redis::RedisTransport::connect(c).await?)
            }
            #[cfg(feature = "kafka")]
            TransportConfig::Kafka(c) => {
                Arc::new(qis_transport_kafka::KafkaTransport::connect(*c).await?)
            }
        })
    }
}

/// Connect to the transport a URL names, among those compiled in:
/// `memory://`, `sqlite://path` (feature `sqlite`, the default),
/// `nats://host:port` (`nats`), `redis://` / `rediss://` (`redis`),
/// `kafka://host:port,…` (`kafka`).
pub async fn connect(url: &str) -> Result<DynTransport> {
    TransportConfig::from_url(url)?.connect().await
}
