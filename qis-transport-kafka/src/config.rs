//! [`KafkaConfig`]: where the brokers are, which topic a prefix maps to, how
//! the topic is created and how the clients behave.

use std::time::Duration;

use qis_core::config::{Credentials, Retention, ServerUrl, TlsFiles, DEFAULT_CONNECT_TIMEOUT};
use qis_core::{Error, Result, Subject};

use crate::NAME;

/// Default partition count of a topic the transport creates.
pub const DEFAULT_PARTITIONS: i32 = 3;

/// The default Kafka port, used when a URL names none.
pub const DEFAULT_PORT: u16 = 9092;

/// How to reach Kafka and how to lay QIS subjects onto it.
///
/// Every subject under [`prefix`](Self::prefix) is stored in **one topic**
/// (named after the prefix, e.g. `qis.iot`), with the subject as the record key;
/// see the crate docs for why.
///
/// ```
/// use std::time::Duration;
/// use qis_transport_kafka::KafkaConfig;
///
/// let config: KafkaConfig = "kafka://edge:s3cret@broker-1:9093,broker-2:9093?partitions=6&max_age=12h&tls_ca=/etc/qis/ca.pem&librdkafka.sasl.mechanism=SCRAM-SHA-512"
///     .parse()?;
/// assert_eq!(config.bootstrap_servers, "broker-1:9093,broker-2:9093");
/// assert_eq!(config.partitions, 6);
/// assert_eq!(config.retention.max_age, Duration::from_secs(12 * 3600));
/// assert_eq!(config.topic_name(), "qis.iot");
/// // SASL over TLS: the credentials and the CA file set the protocol; the
/// // explicit librdkafka property picks the mechanism.
/// assert_eq!(config.librdkafka, [("sasl.mechanism".to_string(), "SCRAM-SHA-512".to_string())]);
///
/// let config = KafkaConfig::default()
///     .topic("outcomes")
///     .librdkafka("client.id", "plant-7");
/// assert_eq!(config.topic_name(), "outcomes");
/// # Ok::<(), qis_core::Error>(())
/// ```
///
/// # URL
///
/// `kafka://[user:password@]host[:port][,host[:port]…][?key=value&…]`; the
/// port defaults to 9092. Query keys:
///
/// - shared with every backend (see [`qis_core::config`]): `prefix`,
///   `max_age`, `max_bytes`, `connect_timeout`, `tls_ca`, `tls_cert`,
///   `tls_key`;
/// - Kafka's own, named like the fields below: `topic`, `partitions`,
///   `replication_factor`, `session_timeout`, `fetch_wait_max`, `linger`,
///   `deposit_timeout`, `request_timeout`, `join_timeout` (durations such as
///   `2s` or `500ms`) and `consumer_buffer_bytes` (a size such as `32MiB`);
/// - `librdkafka.<property>=value`: any librdkafka client property, passed
///   through as is (`librdkafka.client.id=plant-7`).
///
/// Any other key is an [`ErrorKind::InvalidInput`](qis_core::ErrorKind::InvalidInput) error naming the known ones.
///
/// # Security
///
/// `user:password@` are the SASL credentials (`sasl.username`,
/// `sasl.password`, mechanism `PLAIN` unless `librdkafka.sasl.mechanism`
/// says otherwise); `tls_ca`, `tls_cert` and `tls_key` are librdkafka's
/// `ssl.ca.location`, `ssl.certificate.location` and `ssl.key.location`.
/// They set `security.protocol` to what they need (`sasl_plaintext`, `ssl`
/// or `sasl_ssl`); `librdkafka.security.protocol` overrides it (e.g.
/// `sasl_ssl` to trust the system's CAs without a `tls_ca` file).
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// The bootstrap brokers, `host:port[,host:port…]` (librdkafka's
    /// `bootstrap.servers`).
    pub bootstrap_servers: String,
    /// The subject prefix this transport stores (default `qis.iot`).
    pub prefix: Subject,
    /// The topic to use; `None` (the default) uses the prefix itself
    /// (`qis.iot`), which is a valid topic name since tokens are
    /// `[a-z0-9_-]` joined by dots.
    pub topic: Option<String>,
    /// Partitions of the topic when the transport creates it (default 3).
    /// Subjects are spread over them by key; one subject stays in one
    /// partition, which is what keeps its order. An existing topic keeps its
    /// own count.
    pub partitions: i32,
    /// Replication factor when the transport creates the topic (default 1;
    /// use 3 on a production cluster).
    pub replication_factor: i32,
    /// Retention of the topic: `retention.ms` is `max_age` (default 24 h);
    /// `max_bytes` (default 50 MiB) bounds the whole topic, so as Kafka's
    /// `retention.bytes` is per partition the topic is created with
    /// `max_bytes / partitions`. Segments of a tenth of each make the bound
    /// hold (see the crate docs); an existing topic with other settings is a
    /// [`Conflict`](qis_core::ErrorKind::Conflict).
    pub retention: Retention,
    /// How long setting up one broker connection may take (librdkafka's
    /// `socket.connection.setup.timeout.ms`; default 5 s).
    pub connect_timeout: Duration,
    /// How long a deposit may wait for the broker's acknowledgement,
    /// retries included (librdkafka's `message.timeout.ms`; default 30 s).
    pub deposit_timeout: Duration,
    /// How long connecting, creating the topic and other metadata calls may
    /// take before the broker is reported unavailable (default 10 s).
    pub request_timeout: Duration,
    /// How long [`consumer`](qis_core::OutcomeTransport::consumer) waits for
    /// its consumer-group membership and partition assignment (default 30 s).
    pub join_timeout: Duration,
    /// The consumer-group session timeout: how soon the group notices a
    /// member that died without leaving (default 10 s; the broker's
    /// `group.min.session.timeout.ms` is usually 6 s).
    pub session_timeout: Duration,
    /// How long the broker may hold a fetch request when no data is there
    /// (librdkafka's `fetch.wait.max.ms`; default 10 ms). A broker that
    /// answers a waiting fetch as soon as data arrives (Apache Kafka) can use
    /// a larger value, which lowers idle load; a broker that holds every
    /// fetch for the full wait needs a small one for low latency.
    pub fetch_wait_max: Duration,
    /// How many bytes of records a durable consumer handle may read ahead of
    /// its fetches (default 32 MiB). Above it the handle pauses fetching from
    /// the brokers until its fetches drained half of it.
    pub consumer_buffer_bytes: usize,
    /// How long a producer may wait to fill a batch (librdkafka's
    /// `linger.ms`; default 0). Nothing is gained by lingering here: a batch
    /// deposit queues all its records before awaiting any, so they go out
    /// together anyway (measured: the same throughput as with 2 ms), while
    /// any linger is added to every single awaited deposit (2 ms made them
    /// about ten times slower).
    pub linger: Duration,
    /// SASL user name and password (from the URL's user info).
    pub credentials: Credentials,
    /// PEM files for TLS: the CA to trust, a client certificate and its key.
    pub tls: TlsFiles,
    /// More librdkafka properties for every client (producer, consumers,
    /// admin), applied last so they win: `security.protocol`,
    /// `sasl.mechanism`, `client.id`, … (URL keys `librdkafka.<property>`).
    pub librdkafka: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: format!("127.0.0.1:{DEFAULT_PORT}"),
            prefix: Subject::default(),
            topic: None,
            partitions: DEFAULT_PARTITIONS,
            replication_factor: 1,
            retention: Retention::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            deposit_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            fetch_wait_max: Duration::from_millis(10),
            linger: Duration::ZERO,
            consumer_buffer_bytes: 32 * 1024 * 1024,
            credentials: Credentials::default(),
            tls: TlsFiles::default(),
            librdkafka: Vec::new(),
        }
    }
}

qis_core::config_builders!(KafkaConfig: prefix, retention, connect_timeout, tls, credentials, from_url);

qis_core::setters!(KafkaConfig {
    /// Use this topic instead of the one named after the prefix.
    topic: Option<String>,
    /// Partition count for a topic the transport creates.
    partitions: i32,
    /// Replication factor for a topic the transport creates.
    replication_factor: i32,
});

impl KafkaConfig {
    /// The URL schemes of this transport.
    pub const URL_SCHEMES: &'static [&'static str] = &["kafka"];

    /// A configuration for the brokers in `url` (see [the type's
    /// docs](Self) for the keys).
    ///
    /// ```
    /// use std::time::Duration;
    /// use qis_core::ErrorKind;
    /// use qis_transport_kafka::KafkaConfig;
    ///
    /// let c = KafkaConfig::from_url("kafka://127.0.0.1:19092?session_timeout=2s&linger=5ms").unwrap();
    /// assert_eq!(c.session_timeout, Duration::from_secs(2));
    /// assert_eq!(c.linger, Duration::from_millis(5));
    ///
    /// // librdkafka properties are passed through only when prefixed.
    /// let e = KafkaConfig::from_url("kafka://127.0.0.1?session.timeout.ms=2000").unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
    /// assert!(e.message().contains("librdkafka.*"), "{e}");
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = ServerUrl::parse(NAME, url, Self::URL_SCHEMES, DEFAULT_PORT)?;
        let bootstrap_servers = parsed.host_list();
        let ServerUrl {
            credentials,
            path,
            mut options,
            ..
        } = parsed;
        if !path.trim_matches('/').is_empty() {
            return Err(Error::invalid_input(NAME, format!(
                "{url:?} has a path (/{path}), which Kafka does not use: write kafka://host:port[,host:port…][?key=value…]"
            )));
        }
        let mut c = KafkaConfig {
            bootstrap_servers,
            credentials,
            ..Default::default()
        };
        options.prefix(&mut c.prefix)?;
        options.retention(&mut c.retention)?;
        options.tls(&mut c.tls);
        c.topic = options.string("topic");
        options.numbers([
            ("partitions", &mut c.partitions),
            ("replication_factor", &mut c.replication_factor),
        ])?;
        options.durations([
            ("connect_timeout", &mut c.connect_timeout),
            ("session_timeout", &mut c.session_timeout),
            ("fetch_wait_max", &mut c.fetch_wait_max),
            ("linger", &mut c.linger),
            ("deposit_timeout", &mut c.deposit_timeout),
            ("request_timeout", &mut c.request_timeout),
            ("join_timeout", &mut c.join_timeout),
        ])?;
        if let Some(b) = options.bytes("consumer_buffer_bytes")? {
            c.consumer_buffer_bytes = usize::try_from(b).unwrap_or(usize::MAX);
        }
        c.librdkafka = options.passthrough("librdkafka.");
        options.finish()?;
        c.validate()?;
        Ok(c)
    }

    /// Add a librdkafka client property (applied last, so it wins).
    pub fn librdkafka(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.librdkafka.push((key.into(), value.into()));
        self
    }

    /// The topic this configuration stores into.
    pub fn topic_name(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| self.prefix.as_str().to_string())
    }

    /// Check values that librdkafka or the broker would otherwise refuse later.
    pub(crate) fn validate(&self) -> Result<()> {
        let topic = self.topic_name();
        let topic_ok = !topic.is_empty()
            && topic.len() <= 249
            && topic != "."
            && topic != ".."
            && topic
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if !topic_ok {
            return Err(Error::invalid_input(NAME, format!("topic {topic:?} is not a valid Kafka topic name: use 1 to 249 of a-z, A-Z, 0-9, '.', '_' or '-'")));
        }
        if self.partitions < 1 {
            return Err(Error::invalid_input(
                NAME,
                format!("partitions is {}: it must be at least 1", self.partitions),
            ));
        }
        if self.replication_factor < 1 {
            return Err(Error::invalid_input(
                NAME,
                format!(
                    "replication_factor is {}: it must be at least 1",
                    self.replication_factor
                ),
            ));
        }
        if self.bootstrap_servers.is_empty() {
            return Err(Error::invalid_input(
                NAME,
                "bootstrap_servers is empty: name at least one broker host:port",
            ));
        }
        self.retention.check(NAME)?;
        self.tls.check(NAME)?;
        let c = &self.credentials;
        if c.token.is_some() {
            return Err(Error::invalid_input(NAME,
                "a lone secret in the URL (secret@host) is not a Kafka credential: write kafka://user:password@host",
            ));
        }
        if c.user.is_some() != c.password.is_some() {
            return Err(Error::invalid_input(
                NAME,
                "SASL needs a user and a password: write kafka://user:password@host",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use qis_core::config::{DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES};

    use super::*;

    #[test]
    fn url_defaults_port_and_reads_query() {
        let c = KafkaConfig::from_url("kafka://127.0.0.1:19092").unwrap();
        assert_eq!(c.bootstrap_servers, "127.0.0.1:19092");
        assert_eq!(c.prefix.as_str(), "qis.iot");
        assert_eq!(c.topic_name(), "qis.iot");
        assert_eq!(c.retention.max_age, DEFAULT_MAX_AGE);
        assert_eq!(c.retention.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);

        let c = KafkaConfig::from_url(
            "kafka://a,b:1/?prefix=acme.site&partitions=6&librdkafka.client.id=x&topic=t1",
        )
        .unwrap();
        assert_eq!(c.bootstrap_servers, "a:9092,b:1");
        assert_eq!(c.prefix.as_str(), "acme.site");
        assert_eq!(c.partitions, 6);
        assert_eq!(c.topic_name(), "t1");
        assert_eq!(
            c.librdkafka,
            vec![("client.id".to_string(), "x".to_string())]
        );

        let c: KafkaConfig = "kafka://h?session_timeout=2s&fetch_wait_max=5ms&linger=7ms&deposit_timeout=1m&request_timeout=3s&join_timeout=1m&connect_timeout=1s&consumer_buffer_bytes=1MiB&max_bytes=1GiB&replication_factor=3"
            .parse()
            .unwrap();
        assert_eq!(c.session_timeout, Duration::from_secs(2));
        assert_eq!(c.fetch_wait_max, Duration::from_millis(5));
        assert_eq!(c.linger, Duration::from_millis(7));
        assert_eq!(c.deposit_timeout, Duration::from_secs(60));
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.join_timeout, Duration::from_secs(60));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.consumer_buffer_bytes, 1024 * 1024);
        assert_eq!(c.retention.max_bytes, 1024 * 1024 * 1024);
        assert_eq!(c.replication_factor, 3);
        assert!(c.librdkafka.is_empty());
    }

    #[test]
    fn url_userinfo_is_sasl_credentials_and_tls_keys_are_files() {
        let c = KafkaConfig::from_url(
            "kafka://edge:p%40ss@h:9093?tls_ca=ca.pem&tls_cert=c.pem&tls_key=c.key",
        )
        .unwrap();
        assert_eq!(c.bootstrap_servers, "h:9093");
        assert_eq!(c.credentials.user.as_deref(), Some("edge"));
        assert_eq!(c.credentials.password.as_deref(), Some("p@ss"));
        assert_eq!(c.tls.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn bad_urls_are_refused() {
        qis_conformance::support::assert_urls_refused::<KafkaConfig>(
            NAME,
            &[
                "nats://x",
                "kafka://",
                "kafka://h:notaport",
                "kafka://h?partitions=0",
                "kafka://h?partitions=many",
                "kafka://h/path",
                "kafka://h?prefix=Bad",
                "kafka://h?session.timeout.ms=2000",
                "kafka://h?security.protocol=ssl",
                "kafka://h?linger=soon",
                "kafka://h?max_age=0",
                "kafka://h?dedup_window=2m",
                "kafka://h?tls_cert=c.pem",
                "kafka://token@h",
                "kafka://user:@h",
                "kafka://h?topic=a%20b",
            ],
        );
    }

    #[test]
    fn unknown_keys_name_the_known_ones() {
        qis_conformance::support::assert_keys_refused::<KafkaConfig>(
            "kafka://h?",
            &["colour=blue"],
            &[
                "prefix",
                "session_timeout",
                "fetch_wait_max",
                "librdkafka.*",
            ],
        );
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(KafkaConfig::default().validate().is_ok());
        assert!(KafkaConfig::default().topic("a b").validate().is_err());
        assert!(KafkaConfig::default().partitions(0).validate().is_err());
    }
}
