//! How to reach Redis and how much to keep.

use std::path::PathBuf;
use std::time::Duration;

use qis_core::{Error, ErrorKind, Result, Subject, MAX_PACKET_BYTES};

use crate::NAME;

/// Default retention by age: 24 hours, as the seed.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Default retention by size: 50 MiB, as the seed.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Default de-duplication window: an identical re-deposit within it is
/// recognised and not stored again.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(2 * 60);

/// Default time to wait for a reply to one command (blocking reads are not
/// bound by it: they have their own connection).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time to wait for a TCP (and TLS) connection to be set up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of a [`RedisTransport`](crate::RedisTransport).
///
/// Everything can also be given in the URL's query string, which
/// [`RedisConfig::from_url`] reads and removes before the URL reaches Redis:
/// `redis://user:password@127.0.0.1:6379/0?prefix=qis.iot&max_age=24h&max_bytes=52428800&dedup_window=2m`.
///
/// # Retention
///
/// Each subject is one Redis stream. Every deposit trims its stream with
/// `XADD … MAXLEN ~ n` (n = [`max_len`](Self::max_len), by default
/// [`max_bytes`](Self::max_bytes) / 512 bytes, the largest a packet can be)
/// and `XTRIM … MINID ~ now − max_age`. Redis trims whole macro-nodes, so a
/// stream may briefly hold a little more than the limits. `max_bytes` bounds
/// each subject's stream, not the sum over subjects.
///
/// # Durability
///
/// A deposit returns once Redis has executed it and written it to its AOF
/// buffer; whether that is on disk depends on the server's `appendonly` /
/// `appendfsync` settings (`appendfsync always` for fsync before the reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The Redis URL: `redis://[user[:password]@]host[:port][/db]`, or
    /// `rediss://…` for TLS (needs the crate feature `tls`; append
    /// `#insecure` to skip certificate checks). User and password are sent
    /// with `AUTH` (ACL user or the default user's password).
    pub url: String,
    /// The subject prefix this transport stores (default `qis.iot`). It is
    /// also the namespace of every Redis key the transport uses.
    pub prefix: Subject,
    /// Packets older than this are trimmed away (default 24 h; zero: never).
    pub max_age: Duration,
    /// The size each subject's stream is kept under (default 50 MiB),
    /// applied as an entry count of `max_bytes / 512` unless
    /// [`max_len`](Self::max_len) is set.
    pub max_bytes: u64,
    /// The largest number of entries kept per subject stream; `None` derives
    /// it from [`max_bytes`](Self::max_bytes).
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
    /// For `rediss://`: a PEM file of the certificate authority that signed
    /// the server's certificate, instead of the system's roots (needs the
    /// crate feature `tls`).
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".to_string(),
            prefix: Subject::default(),
            max_age: DEFAULT_MAX_AGE,
            max_bytes: DEFAULT_MAX_BYTES,
            max_len: None,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls_ca_file: None,
        }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, NAME, msg)
}

/// Parse `90`, `90s`, `500ms`, `2m`, `24h` or `7d`.
fn parse_duration(key: &str, v: &str) -> Result<Duration> {
    let bad = || {
        invalid(format!(
            "{key}={v:?} is not a duration: write a number with ms, s, m, h or d (e.g. 24h), or plain seconds"
        ))
    };
    let (num, unit_ms) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = v.strip_suffix('h') {
        (n, 3_600_000)
    } else if let Some(n) = v.strip_suffix('d') {
        (n, 86_400_000)
    } else {
        (v, 1_000)
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

impl RedisConfig {
    /// A configuration for `url`. The query parameters `prefix`, `max_age`,
    /// `max_bytes`, `max_len`, `dedup_window`, `response_timeout`,
    /// `connect_timeout` and `tls_ca_file` are read and removed; the rest of the URL (user,
    /// password, host, port, database, other parameters) goes to Redis.
    ///
    /// ```
    /// use qis_transport_redis::RedisConfig;
    /// let c = RedisConfig::from_url("redis://127.0.0.1:16379/0?prefix=lab.iot&max_age=1h").unwrap();
    /// assert_eq!(c.prefix.as_str(), "lab.iot");
    /// assert_eq!(c.max_age.as_secs(), 3600);
    /// assert_eq!(c.url, "redis://127.0.0.1:16379/0");
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = url::Url::parse(url).map_err(|e| {
            invalid(format!(
                "{url:?} is not a URL: write redis://[user[:password]@]host[:port][/db]"
            ))
            .with_source(e)
        })?;
        match parsed.scheme() {
            "redis" | "rediss" => {}
            other => {
                return Err(invalid(format!(
                    "URL scheme {other:?} is not for Redis: use redis:// or rediss://"
                )))
            }
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "{url:?} names no host: write redis://host[:port]"
            )));
        }
        let mut config = RedisConfig::default();
        let mut rest: Vec<(String, String)> = Vec::new();
        for (k, v) in parsed.query_pairs() {
            let v = v.into_owned();
            match k.as_ref() {
                "prefix" => {
                    config.prefix = Subject::new(v.as_str()).map_err(|e| e.in_transport(NAME))?
                }
                "max_age" => config.max_age = parse_duration("max_age", &v)?,
                "max_bytes" => {
                    config.max_bytes = v.parse().map_err(|_| {
                        invalid(format!("max_bytes={v:?} is not a whole number of bytes"))
                    })?
                }
                "max_len" => {
                    config.max_len = Some(v.parse().map_err(|_| {
                        invalid(format!("max_len={v:?} is not a whole number of entries"))
                    })?)
                }
                "dedup_window" => config.dedup_window = parse_duration("dedup_window", &v)?,
                "response_timeout" => {
                    config.response_timeout = parse_duration("response_timeout", &v)?
                }
                "connect_timeout" => {
                    config.connect_timeout = parse_duration("connect_timeout", &v)?
                }
                "tls_ca_file" => config.tls_ca_file = Some(PathBuf::from(v)),
                other => rest.push((other.to_string(), v)),
            }
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        config.url = parsed.to_string();
        config.check()?;
        Ok(config)
    }

    /// Set the subject prefix.
    pub fn prefix(mut self, prefix: Subject) -> Self {
        self.prefix = prefix;
        self
    }

    /// Set the retention by age.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Set the retention by size (per subject stream).
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Set the largest number of entries kept per subject stream.
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// Set the de-duplication window (zero: none).
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = window;
        self
    }

    /// Set the reply timeout of one command.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Trust the certificate authority in this PEM file for `rediss://`.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Set the connection set-up timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The entry count each subject stream is trimmed to.
    pub fn stream_max_len(&self) -> u64 {
        self.max_len
            .unwrap_or(self.max_bytes / MAX_PACKET_BYTES as u64)
            .max(1)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.max_bytes < MAX_PACKET_BYTES as u64 && self.max_len.is_none() {
            return Err(invalid(format!(
                "max_bytes {} is smaller than one packet ({MAX_PACKET_BYTES} bytes): raise it",
                self.max_bytes
            )));
        }
        if self.max_len == Some(0) {
            return Err(invalid("max_len 0 would keep nothing: give at least 1"));
        }
        if self.response_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(invalid(
                "response_timeout and connect_timeout must be above zero",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = RedisConfig::from_url("redis://127.0.0.1:16379").unwrap();
        assert_eq!(c.url, "redis://127.0.0.1:16379");
        assert_eq!(c.prefix.as_str(), "qis.iot");
        assert_eq!(c.max_age, DEFAULT_MAX_AGE);
        assert_eq!(c.stream_max_len(), 50 * 1024 * 1024 / 512);
    }

    #[test]
    fn query_is_ours_and_rest_passes() {
        let c = RedisConfig::from_url(
            "redis://u:p@localhost:1/2?prefix=a.b&dedup_window=500ms&max_len=10&protocol=resp2",
        )
        .unwrap();
        assert_eq!(c.prefix.as_str(), "a.b");
        assert_eq!(c.dedup_window, Duration::from_millis(500));
        assert_eq!(c.stream_max_len(), 10);
        assert_eq!(c.url, "redis://u:p@localhost:1/2?protocol=resp2");
    }

    #[test]
    fn bad_input_is_typed() {
        for u in [
            "nats://x",
            "not a url",
            "redis://h?max_age=soon",
            "redis://h?prefix=A.B",
            "redis://h?max_len=0",
        ] {
            let e = RedisConfig::from_url(u).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::InvalidSubject
                ),
                "{u}: {e}"
            );
        }
    }
}
