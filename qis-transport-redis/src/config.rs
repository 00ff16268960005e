//! How to reach Redis and how much to keep.

use std::time::Duration;

use qis_core::config::{
    Credentials, Retention, ServerUrl, TlsFiles, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DEDUP_WINDOW,
};
use qis_core::{Error, Result, Subject, MAX_PACKET_BYTES};

use crate::NAME;

/// Default time to wait for a reply to one command (blocking reads are not
/// bound by it: they have their own connection).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Redis port, used when a URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// Default time between two ticks of the retention sweep.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Configuration of a [`RedisTransport`](crate::RedisTransport).
///
/// Build it from a URL ([`RedisConfig::from_url`], or `str::parse`), with the
/// builder methods, or both:
///
/// ```
/// use std::time::Duration;
/// use qis_transport_redis::RedisConfig;
///
/// let c: RedisConfig = "rediss://edge:s3cret@cache.example:6380/2?prefix=lab.iot&max_age=1h&tls_ca=/etc/qis/ca.pem"
///     .parse()
///     .unwrap();
/// assert_eq!(c.url, "rediss://cache.example:6380/2");
/// assert_eq!(c.prefix.as_str(), "lab.iot");
/// assert_eq!(c.retention.max_age, Duration::from_secs(3600));
/// assert_eq!(c.credentials.user.as_deref(), Some("edge"));
/// assert_eq!(c.tls.ca.as_deref(), Some(std::path::Path::new("/etc/qis/ca.pem")));
///
/// let c = RedisConfig::default().max_len(10_000).dedup_window(Duration::ZERO);
/// assert_eq!(c.stream_max_len(), 10_000);
/// ```
///
/// # URL
///
/// `redis://[user:password@]host[:port][/db][?key=value&…]`, or `rediss://…`
/// for TLS (crate feature `tls`; append `#insecure` to skip the server
/// certificate check). The query keys are the shared ones (see
/// [`qis_core::config`]): `prefix`, `max_age`, `max_bytes`, `dedup_window`,
/// `connect_timeout`, `tls_ca`, `tls_cert`, `tls_key`; and Redis's own:
/// `max_len` (entries per subject stream), `response_timeout` (a duration),
/// `sweep_interval` (a duration; `0s` turns the background sweep off) and
/// `protocol` (`resp2`, the default, or `resp3`). Any other key is an
/// [`ErrorKind::InvalidInput`](qis_core::ErrorKind::InvalidInput) error naming the known ones.
///
/// User and password are sent with `AUTH` (an ACL user, or `:password@` for
/// the default user; a lone `secret@` is a password for the default user).
///
/// # Retention
///
/// Each subject is one Redis stream, bounded by age (`retention.max_age`)
/// and by length ([`max_len`](Self::max_len), by default
/// `retention.max_bytes` / 512 bytes, the largest a packet can be). The
/// bounds hold for every subject, whether it still receives deposits or
/// not:
///
/// - every deposit trims the streams it wrote (`XTRIM MAXLEN ~` and
///   `XTRIM MINID ~ now − max_age`: whole macro-nodes of up to 100
///   entries, so a busy stream may briefly hold a little more);
/// - the transport's **sweep**, a background task of every connected
///   transport, trims [`SWEEP_BATCH`](crate::SWEEP_BATCH) subjects of the
///   subject index per tick (every [`sweep_interval`](Self::sweep_interval)),
///   taking them in order with a cursor that wraps around, by length and
///   exactly by age (`XTRIM MINID now − max_age`). A stream left empty
///   whose last entry is older than `max_age` is deleted, with its consumer
///   groups and its subject-index entry; a later deposit creates them again.
///   A pass over all S subjects takes S / 100 ticks; one tick costs Redis
///   one `ZRANGEBYLEX` and one script over at most 100 streams, whatever
///   the number of subjects ever seen.
/// - a **consumer** trims the streams it reads (exactly by age) when it
///   finds them, and then 100 of them in turn per `sweep_interval` (at
///   least once a second), so a packet older than `max_age` reaches no
///   consumer that finds its stream after it expired; one already waiting
///   in a stream a consumer reads may still be delivered until the next
///   trim of that stream (by the consumer or the sweep).
///
/// Deliveries a consumer fetched and had not acked when retention removed
/// them are acked away and counted in a `tracing` warning (consumer,
/// subject, how many): they cannot be delivered again.
///
/// What retention does not remove: a durable consumer's definition
/// (`{ns}:c:{name}`, a few fields) and its group on the new-subjects
/// stream stay, so the consumer can be resumed by name however long after;
/// delete them by hand for a consumer that is gone for good.
///
/// `max_bytes` bounds each subject's stream, **not** the sum over
/// subjects: Redis has no total order of entries across streams that a
/// trim could cut cheaply (a global budget would mean comparing the oldest
/// entry of every stream on each deposit). The total is at most
/// subjects × max_len entries; to cap Redis as a whole, set its
/// `maxmemory` (with `maxmemory-policy noeviction`, so Redis refuses
/// deposits rather than evicting streams).
///
/// # Durability
///
/// A deposit returns once Redis has executed it and written it to its AOF
/// buffer; whether that is on disk depends on the server's `appendonly` /
/// `appendfsync` settings (`appendfsync always` for fsync before the reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis is, as the `redis` crate reads it:
    /// `redis://host:port[/db]`, or `rediss://host:port[/db][#insecure]`
    /// for TLS (needs the crate feature `tls`). [`from_url`](Self::from_url)
    /// puts the QIS keys and the credentials in their own fields, so this
    /// holds neither.
    pub url: String,
    /// User and password for `AUTH` (from the URL's user info).
    pub credentials: Credentials,
    /// The subject prefix this transport stores (default `qis.iot`). It is
    /// also the namespace of every Redis key the transport uses.
    pub prefix: Subject,
    /// Retention by age and by size of each subject's stream (defaults 24 h
    /// and 50 MiB); the size is applied as an entry count of
    /// `max_bytes / 512` unless [`max_len`](Self::max_len) is set.
    pub retention: Retention,
    /// The largest number of entries kept per subject stream; `None` derives
    /// it from `retention.max_bytes`.
    pub max_len: Option<u64>,
    /// An identical re-deposit (same packet id) within this window is
    /// recognised and not stored again; the receipt says `duplicate` and
    /// points at the original (default 2 minutes; zero: no de-duplication).
    /// Markers are kept per window-long bucket of server time, so a
    /// re-deposit is recognised for at least one window and at most two;
    /// their memory grows with deposit rate × window.
    pub dedup_window: Duration,
    /// How long to wait for the reply to one command (default 10 s).
    pub response_timeout: Duration,
    /// How long to wait for a connection to be set up (default 5 s).
    pub connect_timeout: Duration,
    /// Time between two ticks of the retention sweep (default 1 s; zero:
    /// no background sweep, deposits and consumers still trim what they
    /// touch). See "Retention" above.
    pub sweep_interval: Duration,
    /// For `rediss://`: PEM files of the certificate authority that signed
    /// the server's certificate (instead of the system's roots), and of a
    /// client certificate and key for servers that ask for one
    /// (`tls-auth-clients yes`). Needs the crate feature `tls`.
    pub tls: TlsFiles,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: format!("redis://127.0.0.1:{DEFAULT_PORT}"),
            credentials: Credentials::default(),
            prefix: Subject::default(),
            retention: Retention::default(),
            max_len: None,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            tls: TlsFiles::default(),
        }
    }
}

qis_core::config_builders!(RedisConfig: prefix, retention, dedup_window, connect_timeout, tls, credentials, from_url);

qis_core::setters!(RedisConfig {
    /// Set the reply timeout of one command.
    response_timeout: Duration,
    /// Set the time between two ticks of the retention sweep (zero: no
    /// background sweep).
    sweep_interval: Duration,
});

impl RedisConfig {
    /// The URL schemes of this transport: `redis` and `rediss` (TLS).
    pub const URL_SCHEMES: &'static [&'static str] = &["redis", "rediss"];

    /// A configuration from a URL (see [the type's docs](Self) for the keys).
    ///
    /// ```
    /// use qis_core::ErrorKind;
    /// use qis_transport_redis::RedisConfig;
    ///
    /// let c = RedisConfig::from_url("redis://127.0.0.1:16379/0?prefix=lab.iot&response_timeout=2s").unwrap();
    /// assert_eq!(c.url, "redis://127.0.0.1:16379/0");
    /// assert_eq!(c.response_timeout.as_secs(), 2);
    ///
    /// let e = RedisConfig::from_url("redis://127.0.0.1?max_age_s=60").unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
    /// assert!(e.message().contains("max_age"), "{e}");
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        // `#insecure` belongs to the redis crate; the rest is ours to read.
        let (without_fragment, fragment) = match url.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (url, None),
        };
        let parsed = ServerUrl::parse(NAME, without_fragment, Self::URL_SCHEMES, DEFAULT_PORT)?;
        let host = parsed.host_list();
        let ServerUrl {
            scheme,
            credentials,
            hosts,
            path,
            mut options,
        } = parsed;
        let insecure = match fragment {
            None => false,
            Some("insecure") if scheme == "rediss" => true,
            Some(other) => {
                return Err(Error::invalid_input(NAME, format!(
                    "URL fragment #{other} is not understood: only rediss://…#insecure (skip the certificate check) is"
                )))
            }
        };
        if hosts.len() != 1 {
            return Err(Error::invalid_input(
                NAME,
                format!(
                "the URL names {} servers; the Redis transport connects to one: redis://host:port",
                hosts.len()
            ),
            ));
        }
        let db = path.trim_matches('/');
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err(Error::invalid_input(
                NAME,
                format!("URL path /{db} is not a database number: use redis://host:port/0"),
            ));
        }
        let mut config = RedisConfig {
            credentials,
            ..Default::default()
        };
        options.prefix(&mut config.prefix)?;
        options.retention(&mut config.retention)?;
        options.tls(&mut config.tls);
        options.durations([
            ("dedup_window", &mut config.dedup_window),
            ("connect_timeout", &mut config.connect_timeout),
        ])?;
        // Redis's own keys.
        config.max_len = options.number("max_len")?;
        options.durations([
            ("response_timeout", &mut config.response_timeout),
            ("sweep_interval", &mut config.sweep_interval),
        ])?;
        let protocol = options.choice("protocol", &["resp2", "resp3"])?;
        options.finish()?;

        // What the redis crate reads: no credentials, no QIS keys.
        let mut redis_url = format!("{scheme}://{host}");
        if !db.is_empty() {
            redis_url.push('/');
            redis_url.push_str(db);
        }
        if let Some(p) = protocol {
            redis_url.push_str("?protocol=");
            redis_url.push_str(p);
        }
        if insecure {
            redis_url.push_str("#insecure");
        }
        config.url = redis_url;
        config.check()?;
        Ok(config)
    }

    /// Keep at most this many entries per subject stream (instead of
    /// `retention.max_bytes / 512`).
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// The entry count each subject stream is trimmed to.
    pub fn stream_max_len(&self) -> u64 {
        self.max_len
            .unwrap_or(self.retention.max_bytes / MAX_PACKET_BYTES as u64)
            .max(1)
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub(crate) fn is_tls(&self) -> bool {
        self.url
            .split_once("://")
            .is_some_and(|(s, _)| s.eq_ignore_ascii_case("rediss"))
    }

    /// Refuse values Redis would refuse later, or that would keep nothing.
    pub(crate) fn check(&self) -> Result<()> {
        self.retention.check(NAME)?;
        self.tls.check(NAME)?;
        if self.retention.max_bytes < MAX_PACKET_BYTES as u64 && self.max_len.is_none() {
            return Err(Error::invalid_input(
                NAME,
                format!(
                    "max_bytes {} is smaller than one packet ({MAX_PACKET_BYTES} bytes): raise it",
                    self.retention.max_bytes
                ),
            ));
        }
        if self.max_len == Some(0) {
            return Err(Error::invalid_input(
                NAME,
                "max_len 0 would keep nothing: give at least 1",
            ));
        }
        if self.response_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::invalid_input(
                NAME,
                "response_timeout and connect_timeout must be above zero",
            ));
        }
        if self.tls.is_set() && !self.is_tls() {
            return Err(Error::invalid_input(
                NAME,
                "tls_ca, tls_cert and tls_key are for TLS connections: use a rediss:// URL",
            ));
        }
        let c = &self.credentials;
        if c.user.is_some() && c.password.is_none() {
            return Err(Error::invalid_input(
                NAME,
                "a Redis user needs a password: write redis://user:password@host",
            ));
        }
        if c.token.is_some() && c.password.is_some() {
            return Err(Error::invalid_input(
                NAME,
                "give either a password or a token (a lone secret), not both",
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
    fn defaults() {
        let c = RedisConfig::from_url("redis://127.0.0.1:16379").unwrap();
        assert_eq!(c.url, "redis://127.0.0.1:16379");
        assert_eq!(c.prefix.as_str(), "qis.iot");
        assert_eq!(c.retention.max_age, DEFAULT_MAX_AGE);
        assert_eq!(c.retention.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(c.dedup_window, DEFAULT_DEDUP_WINDOW);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.sweep_interval, DEFAULT_SWEEP_INTERVAL);
        assert_eq!(c.stream_max_len(), 50 * 1024 * 1024 / 512);
        assert_eq!(
            RedisConfig::from_url("redis://h").unwrap().url,
            "redis://h:6379"
        );
    }

    #[test]
    fn query_keys_are_typed_and_the_rest_goes_to_redis() {
        let c: RedisConfig =
            "redis://u:p%40ss@localhost:1/2?prefix=a.b&dedup_window=500ms&max_len=10&max_bytes=1MiB&connect_timeout=3s&sweep_interval=0s&protocol=resp3"
                .parse()
                .unwrap();
        assert_eq!(c.prefix.as_str(), "a.b");
        assert_eq!(c.dedup_window, Duration::from_millis(500));
        assert_eq!(c.stream_max_len(), 10);
        assert_eq!(c.retention.max_bytes, 1024 * 1024);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.sweep_interval, Duration::ZERO);
        assert_eq!(c.credentials.user.as_deref(), Some("u"));
        assert_eq!(c.credentials.password.as_deref(), Some("p@ss"));
        assert_eq!(c.url, "redis://localhost:1/2?protocol=resp3");
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn tls_files_and_insecure() {
        let c = RedisConfig::from_url(
            "rediss://h:6380?tls_ca=ca.pem&tls_cert=client.pem&tls_key=client.key#insecure",
        )
        .unwrap();
        assert_eq!(c.url, "rediss://h:6380#insecure");
        assert_eq!(c.tls.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(
            c.tls.client_cert.as_deref(),
            Some(std::path::Path::new("client.pem"))
        );
        assert_eq!(
            c.tls.client_key.as_deref(),
            Some(std::path::Path::new("client.key"))
        );
        assert!(c.is_tls());
    }

    #[test]
    fn bad_input_is_typed() {
        qis_conformance::support::assert_urls_refused::<RedisConfig>(
            NAME,
            &[
                "nats://x",
                "not a url",
                "redis://h?max_age=soon",
                "redis://h?max_age=0",
                "redis://h?prefix=A.B",
                "redis://h?max_len=0",
                "redis://h?max_age_s=60",
                "redis://h?tls_ca_file=ca.pem",
                "redis://h?colour=blue",
                "redis://h?protocol=resp4",
                "redis://h?sweep_interval=often",
                "redis://h/db",
                "redis://a,b",
                "redis://h#insecure",
                "rediss://h#other",
                "redis://h?tls_ca=ca.pem",
                "rediss://h?tls_cert=c.pem",
                "redis://user:@h",
            ],
        );
    }

    #[test]
    fn unknown_keys_name_the_known_ones() {
        qis_conformance::support::assert_keys_refused::<RedisConfig>(
            "redis://h?",
            &["colour=blue"],
            &[
                "prefix",
                "max_len",
                "response_timeout",
                "sweep_interval",
                "tls_ca",
            ],
        );
    }
}
