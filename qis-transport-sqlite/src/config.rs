//! Where the database file is and how the transport treats it.

use std::path::PathBuf;
use std::time::Duration;

use qis_core::{Error, ErrorKind, Result, Subject};

use crate::NAME;

/// Default retention by age: 24 hours (SPEC §6.8).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Default retention by size: 50 MiB of stored bodies (SPEC §6.8).
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Default time a writer waits for another process's write lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default interval at which deposits by *other* processes are looked for
/// while someone waits (a `fetch` with a wait, or a live subscription).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How hard SQLite pushes each commit to the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `FULL`: every commit is fsynced before a deposit returns, so a receipt
    /// survives a power loss. The default.
    #[default]
    Full,
    /// `NORMAL`: in WAL mode a commit survives a crash of the process but the
    /// last commits may be lost on power loss. Faster on real disks.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// How to open the SQLite transport.
///
/// Every field is public; the builder methods are shorthands.
///
/// ```
/// use std::time::Duration;
/// use qis_transport_sqlite::SqliteConfig;
///
/// let c = SqliteConfig::from_url("sqlite://data/outcomes.db?max_age_s=3600&poll_ms=10").unwrap();
/// assert_eq!(c.path.to_str(), Some("data/outcomes.db"));
/// assert_eq!(c.max_age, Duration::from_secs(3600));
/// assert_eq!(c.prefix.as_str(), "qis.iot");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file. Created (with its directory left to you) if missing.
    /// Every process that opens the same file shares one store.
    pub path: PathBuf,
    /// The subject prefix this transport stores under (default `qis.iot`).
    /// Consumers are named within a prefix.
    pub prefix: Subject,
    /// Packets older than this are pruned (default 24 h).
    pub max_age: Duration,
    /// When the stored bodies add up to more than this, the oldest packets are
    /// pruned (default 50 MiB). Indexes and consumer state come on top.
    pub max_bytes: u64,
    /// How long a write waits for another process holding the write lock
    /// before failing with [`ErrorKind::Timeout`] (default 10 s).
    pub busy_timeout: Duration,
    /// How often the file is checked for commits by other processes while a
    /// fetch waits or a live subscription is open (default 5 ms). It bounds
    /// the extra latency of a packet deposited by another process.
    pub poll_interval: Duration,
    /// Commit durability (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
}

impl Default for SqliteConfig {
    /// `qis.db` in the working directory, prefix `qis.iot`, default retention.
    fn default() -> Self {
        SqliteConfig::new("qis.db")
    }
}

impl SqliteConfig {
    /// The file at `path` with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            prefix: Subject::default(),
            max_age: DEFAULT_MAX_AGE,
            max_bytes: DEFAULT_MAX_BYTES,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            synchronous: Synchronous::Full,
        }
    }

    /// Parse a URL or a plain path.
    ///
    /// - `sqlite://relative/path.db` — relative to the working directory;
    /// - `sqlite:///abs/path.db` — absolute;
    /// - `sqlite:path.db` and a plain `path.db` also work.
    ///
    /// Query parameters: `prefix`, `max_age_s`, `max_bytes`, `busy_timeout_ms`,
    /// `poll_ms`, `synchronous` (`full` or `normal`). Percent-escapes in the
    /// path are decoded.
    ///
    /// In-memory databases (`sqlite::memory:`, `mode=memory`) are refused:
    /// an in-memory database is private to one connection, and this transport
    /// exists to share one store between processes. Use
    /// [`qis_core::MemoryTransport`] for an in-process store.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = match url.strip_prefix("sqlite:") {
            Some(r) => r.strip_prefix("//").unwrap_or(r),
            None if url.contains("://") => {
                return Err(invalid(format!(
                    "{url:?} is not an sqlite URL: use sqlite://relative/path.db or sqlite:///absolute/path.db"
                )))
            }
            None => url,
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(invalid(format!(
                "{url:?} names no file: use sqlite://relative/path.db or sqlite:///absolute/path.db"
            )));
        }
        if path == ":memory:" || path.starts_with(":memory") {
            return Err(invalid(format!(
                "{url:?}: an in-memory SQLite database is private to one connection, so it cannot be shared between processes; give a file path, or use the memory transport"
            )));
        }
        let mut config = SqliteConfig::new(percent_decode(path)?);
        for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "prefix" => config.prefix = value.parse().map_err(|e: Error| e.in_transport(NAME))?,
                "max_age_s" => config.max_age = Duration::from_secs(number(key, &value)?),
                "max_bytes" => config.max_bytes = number(key, &value)?,
                "busy_timeout_ms" => config.busy_timeout = Duration::from_millis(number(key, &value)?),
                "poll_ms" => config.poll_interval = Duration::from_millis(number(key, &value)?),
                "synchronous" => {
                    config.synchronous = match value.to_ascii_lowercase().as_str() {
                        "full" => Synchronous::Full,
                        "normal" => Synchronous::Normal,
                        _ => return Err(invalid(format!("synchronous={value}: use full or normal"))),
                    }
                }
                "mode" if value == "memory" => {
                    return Err(invalid(format!(
                        "{url:?}: an in-memory SQLite database cannot be shared between processes; give a file path"
                    )))
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {key:?} in {url:?}: use prefix, max_age_s, max_bytes, busy_timeout_ms, poll_ms or synchronous"
                    )))
                }
            }
        }
        Ok(config)
    }

    /// Store under another subject prefix.
    pub fn prefix(mut self, prefix: Subject) -> Self {
        self.prefix = prefix;
        self
    }

    /// Retention by age.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Retention by size of the stored bodies.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// How long a write waits for another process's write lock.
    pub fn busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// How often other processes' commits are looked for while someone waits.
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Commit durability.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.poll_interval.is_zero() {
            return Err(invalid("poll_interval is zero: use at least 1 ms"));
        }
        if self.max_bytes == 0 {
            return Err(invalid("max_bytes is zero: nothing could be stored"));
        }
        if self.max_age.is_zero() {
            return Err(invalid("max_age is zero: nothing could be retained"));
        }
        Ok(())
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, NAME, msg)
}

fn number(key: &str, value: &str) -> Result<u64> {
    value
        .parse()
        .map_err(|_| invalid(format!("{key}={value:?} is not a whole number")))
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(format!("{s:?} has a bad percent-escape")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("{s:?} does not decode to UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            SqliteConfig::from_url("sqlite://a/b.db").unwrap().path,
            PathBuf::from("a/b.db")
        );
        assert_eq!(
            SqliteConfig::from_url("sqlite:///abs/b.db").unwrap().path,
            PathBuf::from("/abs/b.db")
        );
        assert_eq!(
            SqliteConfig::from_url("sqlite:x.db").unwrap().path,
            PathBuf::from("x.db")
        );
        assert_eq!(
            SqliteConfig::from_url("x.db").unwrap().path,
            PathBuf::from("x.db")
        );
        assert_eq!(
            SqliteConfig::from_url("sqlite:///my%20dir/q.db")
                .unwrap()
                .path,
            PathBuf::from("/my dir/q.db")
        );
        let c = SqliteConfig::from_url(
            "sqlite://q.db?prefix=plant.one&max_bytes=1000&busy_timeout_ms=50&synchronous=normal",
        )
        .unwrap();
        assert_eq!(c.prefix.as_str(), "plant.one");
        assert_eq!(c.max_bytes, 1000);
        assert_eq!(c.busy_timeout, Duration::from_millis(50));
        assert_eq!(c.synchronous, Synchronous::Normal);
    }

    #[test]
    fn refused_forms() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://",
            "sqlite://q.db?mode=memory",
            "nats://localhost",
            "sqlite://q.db?prefix=Bad",
            "sqlite://q.db?max_bytes=lots",
            "sqlite://q.db?colour=blue",
            "sqlite://q%zz.db",
        ] {
            let e = SqliteConfig::from_url(url).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::InvalidSubject
                ),
                "{url}: {e}"
            );
            assert_eq!(e.transport(), NAME, "{url}");
        }
    }
}
