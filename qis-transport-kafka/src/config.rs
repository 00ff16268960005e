//! [`KafkaConfig`]: where the brokers are, which topic a prefix maps to, how
//! the topic is created and how the clients behave.

use std::time::Duration;

use qis_core::{Error, ErrorKind, Result, Subject};

use crate::NAME;

/// Default retention: records older than this are deleted (24 h, as the seed).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Default retention: at most this many bytes in the topic (50 MiB, as the seed).
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

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
/// use qis_transport_kafka::KafkaConfig;
/// let config = KafkaConfig::from_url("kafka://broker-1:9092,broker-2:9092?partitions=6")?
///     .option("security.protocol", "SASL_SSL")
///     .option("sasl.mechanism", "SCRAM-SHA-512")
///     .option("sasl.username", "edge")
///     .option("sasl.password", "secret")
///     .option("ssl.ca.location", "/etc/qis/ca.pem");
/// assert_eq!(config.bootstrap_servers, "broker-1:9092,broker-2:9092");
/// assert_eq!(config.partitions, 6);
/// assert_eq!(config.topic_name(), "qis.iot");
/// # Ok::<(), qis_core::Error>(())
/// ```
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
    /// Retention by age: the topic's `retention.ms` (default 24 h).
    pub max_age: Duration,
    /// Retention by size for the whole topic (default 50 MiB). Kafka's
    /// `retention.bytes` is per partition, so the topic is created with
    /// `max_bytes / partitions`.
    pub max_bytes: u64,
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
    /// `linger.ms`; default 2 ms).
    pub linger: Duration,
    /// Extra librdkafka properties for every client (producer, consumers,
    /// admin), applied last so they win: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.location`, `client.id`, …
    pub client_options: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: format!("127.0.0.1:{DEFAULT_PORT}"),
            prefix: Subject::default(),
            topic: None,
            partitions: DEFAULT_PARTITIONS,
            replication_factor: 1,
            max_age: DEFAULT_MAX_AGE,
            max_bytes: DEFAULT_MAX_BYTES,
            deposit_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            fetch_wait_max: Duration::from_millis(10),
            linger: Duration::from_millis(2),
            consumer_buffer_bytes: 32 * 1024 * 1024,
            client_options: Vec::new(),
        }
    }
}

fn bad_url(url: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        NAME,
        format!("{url:?} is not a Kafka URL ({why}): use kafka://host:port[,host:port…][?prefix=qis.iot&partitions=3&librdkafka.option=value]"),
    )
}

fn millis(url: &str, key: &str, v: &str) -> Result<Duration> {
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| bad_url(url, format!("{key}={v} is not a number of milliseconds")))
}

impl KafkaConfig {
    /// A configuration for the brokers in `url`:
    /// `kafka://[user:password@]host[:port][,host[:port]…][?query]`.
    ///
    /// The port defaults to 9092. `user:password` set `sasl.username` and
    /// `sasl.password` (pick the mechanism and protocol in the query). Query
    /// keys: `prefix`, `topic`, `partitions`, `replication_factor`, and the
    /// librdkafka names of the timing fields (`session.timeout.ms`,
    /// `fetch.wait.max.ms`, `linger.ms`, `message.timeout.ms`); any other key
    /// is passed to librdkafka as a client property
    /// (`security.protocol=SASL_SSL`, `ssl.ca.location=…`).
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| bad_url(url, "the scheme must be kafka://"))?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.trim_end_matches('/');
        if authority.contains('/') {
            return Err(bad_url(url, "a path is not used"));
        }
        let mut config = KafkaConfig::default();
        let hosts = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                config
                    .client_options
                    .push(("sasl.username".into(), decode(user)));
                if !pass.is_empty() {
                    config
                        .client_options
                        .push(("sasl.password".into(), decode(pass)));
                }
                hosts
            }
            None => authority,
        };
        let mut servers = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(bad_url(url, "a broker address is empty"));
            }
            let has_port = match host.rsplit_once(':') {
                // `[::1]:9092` or `host:9092`; a bare `[::1]` has no port.
                Some((h, p)) if !h.is_empty() && !p.contains(']') => {
                    p.parse::<u16>()
                        .map_err(|_| bad_url(url, format!("port {p:?} is not a number")))?;
                    true
                }
                _ => false,
            };
            if has_port {
                servers.push(host.to_string());
            } else {
                servers.push(format!("{host}:{DEFAULT_PORT}"));
            }
        }
        config.bootstrap_servers = servers.join(",");
        if let Some(q) = query {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                match &*k {
                    "prefix" => {
                        config.prefix =
                            Subject::new(v.as_ref()).map_err(|e| e.in_transport(NAME))?
                    }
                    "topic" => config.topic = Some(v.into_owned()),
                    "partitions" => {
                        config.partitions =
                            v.parse().ok().filter(|n: &i32| *n > 0).ok_or_else(|| {
                                bad_url(url, format!("partitions={v} is not a positive number"))
                            })?
                    }
                    "replication_factor" => {
                        config.replication_factor =
                            v.parse().ok().filter(|n: &i32| *n > 0).ok_or_else(|| {
                                bad_url(
                                    url,
                                    format!("replication_factor={v} is not a positive number"),
                                )
                            })?
                    }
                    // librdkafka names of properties the config has fields for.
                    "session.timeout.ms" => config.session_timeout = millis(url, &k, &v)?,
                    "fetch.wait.max.ms" => config.fetch_wait_max = millis(url, &k, &v)?,
                    "linger.ms" => config.linger = millis(url, &k, &v)?,
                    "message.timeout.ms" => config.deposit_timeout = millis(url, &k, &v)?,
                    _ => config.client_options.push((k.into_owned(), v.into_owned())),
                }
            }
        }
        Ok(config)
    }

    /// Use another subject prefix (and, unless [`topic`](Self::topic) is set,
    /// the topic of that name).
    pub fn prefix(mut self, prefix: Subject) -> Self {
        self.prefix = prefix;
        self
    }

    /// Use this topic instead of the one named after the prefix.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Partition count for a topic the transport creates.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Retention limits of a topic the transport creates.
    pub fn retention(mut self, max_age: Duration, max_bytes: u64) -> Self {
        self.max_age = max_age;
        self.max_bytes = max_bytes;
        self
    }

    /// Add a librdkafka client property (SASL, TLS, client id, tuning).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client_options.push((key.into(), value.into()));
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
            return Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!("topic {topic:?} is not a valid Kafka topic name: use 1 to 249 of a-z, A-Z, 0-9, '.', '_' or '-'"),
            ));
        }
        if self.partitions < 1 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!("partitions is {}: it must be at least 1", self.partitions),
            ));
        }
        if self.replication_factor < 1 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!(
                    "replication_factor is {}: it must be at least 1",
                    self.replication_factor
                ),
            ));
        }
        if self.bootstrap_servers.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                "bootstrap_servers is empty: name at least one broker host:port",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_defaults_port_and_reads_query() {
        let c = KafkaConfig::from_url("kafka://127.0.0.1:19092").unwrap();
        assert_eq!(c.bootstrap_servers, "127.0.0.1:19092");
        assert_eq!(c.prefix.as_str(), "qis.iot");
        assert_eq!(c.topic_name(), "qis.iot");

        let c = KafkaConfig::from_url("kafka://a,b:1?prefix=acme.site&partitions=6&client.id=x")
            .unwrap();
        assert_eq!(c.bootstrap_servers, "a:9092,b:1");
        assert_eq!(c.prefix.as_str(), "acme.site");
        assert_eq!(c.partitions, 6);
        assert_eq!(
            c.client_options,
            vec![("client.id".to_string(), "x".to_string())]
        );

        let c =
            KafkaConfig::from_url("kafka://h?session.timeout.ms=2000&fetch.wait.max.ms=5").unwrap();
        assert_eq!(c.session_timeout, Duration::from_secs(2));
        assert_eq!(c.fetch_wait_max, Duration::from_millis(5));
        assert!(c.client_options.is_empty());
    }

    #[test]
    fn url_userinfo_is_sasl_credentials() {
        let c = KafkaConfig::from_url("kafka://edge:p%40ss@h:9093").unwrap();
        assert_eq!(c.bootstrap_servers, "h:9093");
        assert!(c
            .client_options
            .contains(&("sasl.username".into(), "edge".into())));
        assert!(c
            .client_options
            .contains(&("sasl.password".into(), "p@ss".into())));
    }

    #[test]
    fn bad_urls_are_refused() {
        for u in [
            "nats://x",
            "kafka://",
            "kafka://h:notaport",
            "kafka://h?partitions=0",
            "kafka://h/path",
            "kafka://h?prefix=Bad",
        ] {
            let e = KafkaConfig::from_url(u).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::InvalidSubject
                ),
                "{u}: {e}"
            );
        }
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(KafkaConfig::default().validate().is_ok());
        assert!(KafkaConfig::default().topic("a b").validate().is_err());
        assert!(KafkaConfig::default().partitions(0).validate().is_err());
    }
}
