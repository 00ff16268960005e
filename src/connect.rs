//! Picking a transport at run time from a URL.
//!
//! Each backend declares its own URL schemes (`SqliteConfig::URL_SCHEMES`,
//! `NatsConfig::URL_SCHEMES`, …) and parses its own URLs (`FromStr`); this
//! module only routes a URL to the backend whose scheme it carries, among
//! those compiled in, the way sqlx's `AnyDriver`s declare `URL_SCHEMES`.

use std::sync::Arc;

use qis_core::memory::MemoryConfig;
use qis_core::{DynTransport, Error, ErrorKind, Result, Subject};

/// The configuration of any compiled-in transport. Build it from a URL with
/// [`TransportConfig::from_url`], or directly from a backend's typed config to
/// set what a URL cannot say.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TransportConfig {
    /// `memory://`: an in-process store, new for each connect.
    Memory(MemoryConfig),
    /// `sqlite://path`: one file, no server.
    #[cfg(feature = "sqlite")]
    Sqlite(qis_transport_sqlite::SqliteConfig),
    /// `nats://host:port`: NATS JetStream.
    #[cfg(feature = "nats")]
    Nats(Box<qis_transport_nats::NatsConfig>),
    /// `redis://` or `rediss://`: Redis Streams and Pub/Sub.
    #[cfg(feature = "redis")]
    Redis(Box<qis_transport_redis::RedisConfig>),
    /// `kafka://host:port,host:port`: Kafka consumer groups.
    #[cfg(feature = "kafka")]
    Kafka(Box<qis_transport_kafka::KafkaConfig>),
    /// `http://` or `https://`: a `qis serve` gateway in front of any backend.
    #[cfg(feature = "http")]
    Http(Box<qis_transport_http::HttpConfig>),
    /// `chroma://host:port` or `chromas://`: a ChromaDB server (deposits and
    /// similar twins; no consumers or live subscriptions).
    #[cfg(feature = "chroma")]
    Chroma(Box<qis_transport_chroma::ChromaConfig>),
}

/// The same expression `$e` for the config `$c` of whichever variant
/// `$config` is (every config has the shared fields, e.g. `prefix`).
macro_rules! each_config {
    ($config:expr, $c:ident => $e:expr) => {
        each_config!($config, $c => $e, [
            "sqlite" Sqlite, "nats" Nats, "redis" Redis, "kafka" Kafka, "http" Http, "chroma" Chroma
        ])
    };
    ($config:expr, $c:ident => $e:expr, [$($feature:literal $variant:ident),*]) => {
        match $config {
            TransportConfig::Memory($c) => $e,
            $(#[cfg(feature = $feature)] TransportConfig::$variant($c) => $e,)*
        }
    };
}

/// A backend compiled into this build.
struct Driver {
    /// The cargo feature that compiles it in (`None`: always there), for
    /// the test that checks [`OPTIONAL`].
    #[cfg(test)]
    feature: Option<&'static str>,
    schemes: &'static [&'static str],
    parse: fn(&str) -> Result<TransportConfig>,
}

/// Every [`Driver`]: memory's, then those of the optional backends compiled
/// in, each parsing its config type into the variant that holds it.
macro_rules! drivers {
    ($($feature:literal => $variant:ident($config:ty)),* $(,)?) => {
        &[
            Driver {
                #[cfg(test)]
                feature: None,
                schemes: MemoryConfig::URL_SCHEMES,
                parse: |url| Ok(TransportConfig::Memory(url.parse()?)),
            },
            $(
                #[cfg(feature = $feature)]
                Driver {
                    #[cfg(test)]
                    feature: Some($feature),
                    schemes: <$config>::URL_SCHEMES,
                    parse: |url| Ok(TransportConfig::$variant(url.parse::<$config>()?.into())),
                },
            )*
        ]
    };
}

const DRIVERS: &[Driver] = drivers![
    "sqlite" => Sqlite(qis_transport_sqlite::SqliteConfig),
    "nats" => Nats(qis_transport_nats::NatsConfig),
    "redis" => Redis(qis_transport_redis::RedisConfig),
    "kafka" => Kafka(qis_transport_kafka::KafkaConfig),
    "http" => Http(qis_transport_http::HttpConfig),
    "chroma" => Chroma(qis_transport_chroma::ChromaConfig),
];

/// The optional backends and their schemes, only to say which feature to
/// enable when a URL names one that is not compiled in. (A test checks that
/// it agrees with the backends' own `URL_SCHEMES`.)
const OPTIONAL: &[(&str, &[&str])] = &[
    ("sqlite", &["sqlite"]),
    ("nats", &["nats", "tls"]),
    ("redis", &["redis", "rediss"]),
    ("kafka", &["kafka"]),
    ("http", &["http", "https"]),
    ("chroma", &["chroma", "chromas"]),
];

fn compiled_schemes() -> Vec<&'static str> {
    DRIVERS
        .iter()
        .flat_map(|d| d.schemes.iter().copied())
        .collect()
}

impl TransportConfig {
    /// Parse a URL with the backend its scheme names. A scheme whose
    /// transport is not compiled in fails with [`ErrorKind::Unsupported`]
    /// naming the feature to enable; a malformed URL or an unknown scheme
    /// fails with [`ErrorKind::InvalidInput`].
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url
            .split_once("://")
            .or_else(|| url.split_once(':'))
            .map(|(s, _)| s.to_ascii_lowercase());
        let Some(scheme) = scheme else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "connect",
                format!(
                    "{url:?} is not a transport URL: use one of {}",
                    compiled_schemes()
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if let Some(d) = DRIVERS
            .iter()
            .find(|d| d.schemes.contains(&scheme.as_str()))
        {
            return (d.parse)(url);
        }
        if let Some((feature, _)) = OPTIONAL.iter().find(|(_, s)| s.contains(&scheme.as_str())) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "connect",
                format!("the {scheme}:// transport is not compiled in: enable the `{feature}` feature of the qis crate (or `full`)"),
            ));
        }
        Err(Error::new(
            ErrorKind::InvalidInput,
            "connect",
            format!(
                "unknown transport scheme {scheme:?} in {url:?}: this build knows {}",
                compiled_schemes().join(", ")
            ),
        ))
    }

    /// The subject prefix the transport will store under (the URL's
    /// `?prefix=`, or the default `qis.iot`): known before connecting, so a
    /// pattern for a side that is not reachable yet can be built.
    pub fn prefix(&self) -> &Subject {
        each_config!(self, c => &c.prefix)
    }

    /// Use another subject prefix than the default `qis.iot`.
    pub fn with_prefix(mut self, prefix: Subject) -> Self {
        each_config!(&mut self, c => c.prefix = prefix);
        self
    }

    /// Connect, returning the transport (behind the checking layer,
    /// [`qis_core::Checked`]) as a trait object.
    pub async fn connect(self) -> Result<DynTransport> {
        tracing::debug!(config = ?self, "connecting");
        Ok(match self {
            Self::Memory(c) => Arc::new(c.connect()?),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => Arc::new(crate::sqlite::SqliteTransport::connect(c).await?),
            #[cfg(feature = "nats")]
            Self::Nats(c) => Arc::new(crate::nats::NatsTransport::connect(*c).await?),
            #[cfg(feature = "redis")]
            Self::Redis(c) => Arc::new(crate::redis::RedisTransport::connect(*c).await?),
            #[cfg(feature = "kafka")]
            Self::Kafka(c) => Arc::new(crate::kafka::KafkaTransport::connect(*c).await?),
            #[cfg(feature = "http")]
            Self::Http(c) => Arc::new(crate::http::HttpTransport::connect(*c).await?),
            #[cfg(feature = "chroma")]
            Self::Chroma(c) => Arc::new(crate::chroma::ChromaTransport::connect(*c).await?),
        })
    }
}

impl std::str::FromStr for TransportConfig {
    type Err = Error;
    fn from_str(url: &str) -> Result<Self> {
        TransportConfig::from_url(url)
    }
}

/// Connect to the transport a URL names, among those compiled in:
/// `memory://`, `sqlite://path` (feature `sqlite`, the default),
/// `nats://host:port` (`nats`), `redis://` / `rediss://` (`redis`),
/// `kafka://host:port,…` (`kafka`), `http://` / `https://` (`http`, a
/// `qis serve` gateway), `chroma://host:port` (`chroma`). The transport is behind the checking
/// layer ([`qis_core::Checked`]).
pub async fn connect(url: &str) -> Result<DynTransport> {
    TransportConfig::from_url(url)?.connect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feature_hints_agree_with_the_backends() {
        let compiled = DRIVERS.iter().filter_map(|d| Some((d.feature?, d.schemes)));
        for (feature, schemes) in compiled {
            let hint = OPTIONAL.iter().find(|(f, _)| *f == feature).unwrap();
            assert_eq!(hint.1, schemes, "OPTIONAL is out of date for {feature}");
        }
    }
}
