//! Where the database file is and how the transport treats it.
//!
//! The settings every backend shares (`prefix`, retention by `max_age` and
//! `max_bytes`) are spelled as in [`qis_core::config`]; the rest are the
//! file's own: `busy_timeout`, `poll_interval`, `synchronous`, `when_full`,
//! `cache_size`.

use std::path::PathBuf;
use std::time::Duration;

use qis_core::config::{Retention, UrlOptions};
use qis_core::{Error, Result, Subject};

use crate::NAME;

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

/// What a store does when retention would have to remove packets that a
/// durable consumer on the file has not acked yet (see the crate docs,
/// "A full outbox").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Never remove a packet some durable consumer still owes (after its
    /// cursor and matching its pattern, or delivered and not acked), by size
    /// or by age; a deposit that would take the stored bodies past
    /// `max_bytes` fails with [`ErrorKind::StoreFull`](qis_core::ErrorKind::StoreFull) and stores nothing.
    /// A file with no durable consumer owes nothing: plain retention. The
    /// default.
    #[default]
    Refuse,
    /// Retention removes the oldest packets as usual, owed or not, counts
    /// the owed ones it removed ([`SqliteTransport::dropped`](crate::SqliteTransport::dropped))
    /// and says so with `tracing::warn!`.
    DropOldest,
}

impl WhenFull {
    /// The URL spelling: `refuse` or `drop_oldest`.
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::Refuse => "refuse",
            WhenFull::DropOldest => "drop_oldest",
        }
    }
}

impl std::fmt::Display for WhenFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to open the SQLite transport.
///
/// Every field is public; the builder methods are shorthands (`prefix`,
/// `max_age`, `max_bytes` and `retention` are the shared ones of
/// [`qis_core::config_builders!`]).
///
/// ```
/// use std::time::Duration;
/// use qis_transport_sqlite::SqliteConfig;
///
/// let c: SqliteConfig = "sqlite://data/outcomes.db?max_age=1h&poll_interval=10ms".parse().unwrap();
/// assert_eq!(c.path.to_str(), Some("data/outcomes.db"));
/// assert_eq!(c.retention.max_age, Duration::from_secs(3600));
/// assert_eq!(c.poll_interval, Duration::from_millis(10));
/// assert_eq!(c.prefix.as_str(), "qis.iot");
///
/// let c = SqliteConfig::new("/var/lib/qis/outcomes.db").max_bytes(10 << 20);
/// assert_eq!(c.retention.max_bytes, 10 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file. Created (with its directory left to you) if missing.
    /// Every process that opens the same file shares one store.
    pub path: PathBuf,
    /// The subject prefix this transport stores under (default `qis.iot`).
    /// Consumers are named within a prefix.
    pub prefix: Subject,
    /// Retention by age and by the total size of the stored bodies (defaults
    /// [`DEFAULT_MAX_AGE`](qis_core::config::DEFAULT_MAX_AGE), 24 h, and
    /// [`DEFAULT_MAX_BYTES`](qis_core::config::DEFAULT_MAX_BYTES), 50 MiB).
    /// Indexes and consumer state come on top of the bodies.
    pub retention: Retention,
    /// How long a write waits for another process holding the write lock
    /// before failing with [`ErrorKind::Timeout`](qis_core::ErrorKind::Timeout) (default 10 s).
    pub busy_timeout: Duration,
    /// How often the file is checked for commits by other processes while a
    /// fetch waits or a live subscription is open (default 5 ms). It bounds
    /// the extra latency of a packet deposited by another process.
    pub poll_interval: Duration,
    /// Commit durability of deposits (default [`Synchronous::Full`]).
    /// Consumers' fetches, acks and naks always commit with `NORMAL`: a
    /// power loss may undo the last of them, and those packets are then
    /// delivered again (at least once).
    pub synchronous: Synchronous,
    /// What happens when retention would remove packets a consumer still
    /// owes (default [`WhenFull::Refuse`]). Give every process on a file the
    /// same policy.
    pub when_full: WhenFull,
    /// The most memory SQLite's page cache of this handle may take (`PRAGMA
    /// cache_size`); `None` (the default) keeps SQLite's, 2 MiB. A device
    /// short of memory can give less (the edge agent uses 256 KiB); the file
    /// is read from the OS's cache then.
    pub cache_size: Option<u64>,
}

qis_core::config_builders!(SqliteConfig: prefix, retention, from_url);

qis_core::setters!(SqliteConfig {
    /// How long a write waits for another process's write lock.
    busy_timeout: Duration,
    /// How often other processes' commits are looked for while someone waits.
    poll_interval: Duration,
    /// Commit durability.
    synchronous: Synchronous,
    /// What happens when retention would remove packets a consumer still owes.
    when_full: WhenFull,
});

impl Default for SqliteConfig {
    /// `qis.db` in the working directory, prefix `qis.iot`, default retention.
    fn default() -> Self {
        SqliteConfig::new("qis.db")
    }
}

impl SqliteConfig {
    /// The URL schemes of this transport.
    pub const URL_SCHEMES: &'static [&'static str] = &["sqlite"];

    /// The file at `path` with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            prefix: Subject::default(),
            retention: Retention::default(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            synchronous: Synchronous::Full,
            when_full: WhenFull::Refuse,
            cache_size: None,
        }
    }

    /// Parse a URL or a plain path.
    ///
    /// - `sqlite://relative/path.db` — relative to the working directory;
    /// - `sqlite:///abs/path.db` — absolute;
    /// - `sqlite:path.db` and a plain `path.db` also work.
    ///
    /// Percent-escapes in the path are decoded. The query takes the shared
    /// keys `prefix`, `max_age` (`24h`, `90s`, …) and `max_bytes` (`50MiB`,
    /// …), and the file's own `busy_timeout` and `poll_interval` (durations,
    /// e.g. `10s`, `5ms`), `synchronous` (`full` or `normal`), `when_full`
    /// (`refuse` or `drop_oldest`) and `cache_size` (bytes, e.g. `256KiB`).
    /// Any other key is an [`ErrorKind::InvalidInput`](qis_core::ErrorKind::InvalidInput) error naming these.
    ///
    /// In-memory databases (`sqlite::memory:`, `mode=memory`) are refused:
    /// an in-memory database is private to one connection, and this transport
    /// exists to share one store between processes. Use
    /// [`qis_core::MemoryTransport`] for an in-process store.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = match url.split_once(':') {
            Some((scheme, r)) if Self::URL_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => {
                r.strip_prefix("//").unwrap_or(r)
            }
            _ if url.contains("://") => {
                return Err(Error::invalid_input(NAME, format!(
                    "{url:?} is not an sqlite URL: use sqlite://relative/path.db or sqlite:///absolute/path.db"
                )))
            }
            _ => url,
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(Error::invalid_input(
                NAME,
                format!(
                "{url:?} names no file: use sqlite://relative/path.db or sqlite:///absolute/path.db"
            ),
            ));
        }
        let in_memory = path.starts_with(":memory")
            || query
                .split('&')
                .any(|kv| kv.eq_ignore_ascii_case("mode=memory"));
        if in_memory {
            return Err(Error::invalid_input(NAME, format!(
                "{url:?}: an in-memory SQLite database is private to one connection, so it cannot be shared between processes; give a file path, or use the memory transport"
            )));
        }
        let mut config = SqliteConfig::new(decode_path(url, path)?);
        let mut options = UrlOptions::parse(NAME, query)?;
        options.prefix(&mut config.prefix)?;
        options.retention(&mut config.retention)?;
        options.durations([
            ("busy_timeout", &mut config.busy_timeout),
            ("poll_interval", &mut config.poll_interval),
        ])?;
        if let Some(s) = options.choice("synchronous", &["full", "normal"])? {
            config.synchronous = match s {
                "normal" => Synchronous::Normal,
                _ => Synchronous::Full,
            };
        }
        if let Some(b) = options.bytes("cache_size")? {
            config.cache_size = Some(b);
        }
        if let Some(w) = options.choice("when_full", &["refuse", "drop_oldest"])? {
            config.when_full = match w {
                "drop_oldest" => WhenFull::DropOldest,
                _ => WhenFull::Refuse,
            };
        }
        options.finish()?;
        Ok(config)
    }

    /// The most memory SQLite's page cache of this handle may take.
    pub fn cache_size(mut self, bytes: u64) -> Self {
        self.cache_size = Some(bytes);
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.poll_interval.is_zero() {
            return Err(Error::invalid_input(
                NAME,
                "poll_interval is zero: use at least 1ms",
            ));
        }
        self.retention.check(NAME)
    }
}

/// The path with its percent-escapes decoded; a `%` not followed by two hex
/// digits is an error, not a literal (the path would not be the one meant).
fn decode_path(url: &str, path: &str) -> Result<String> {
    let bad_escape = path.match_indices('%').any(|(i, _)| {
        path.get(i + 1..i + 3)
            .is_none_or(|h| !h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if bad_escape {
        return Err(Error::invalid_input(
            NAME,
            format!("{url:?} has a bad percent-escape in its path: write % as %25"),
        ));
    }
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| {
            Error::invalid_input(
                NAME,
                format!("{url:?}: the path does not percent-decode to UTF-8"),
            )
        })
}

#[cfg(test)]
mod tests {
    use qis_core::ErrorKind;

    use super::*;

    #[test]
    fn url_forms() {
        for (url, path) in [
            ("sqlite://a/b.db", "a/b.db"),
            ("sqlite:///abs/b.db", "/abs/b.db"),
            ("SQLITE:///abs/b.db", "/abs/b.db"),
            ("sqlite:x.db", "x.db"),
            ("x.db", "x.db"),
            ("sqlite:///my%20dir/q.db", "/my dir/q.db"),
        ] {
            assert_eq!(
                SqliteConfig::from_url(url).unwrap().path,
                PathBuf::from(path),
                "{url}"
            );
        }
    }

    #[test]
    fn query_keys() {
        let c: SqliteConfig = "sqlite://q.db?prefix=plant.one&max_age=90s&max_bytes=1000&busy_timeout=50ms&poll_interval=2ms&synchronous=normal&when_full=drop_oldest"
            .parse()
            .unwrap();
        assert_eq!(c.when_full, WhenFull::DropOldest);
        assert_eq!(c.prefix.as_str(), "plant.one");
        assert_eq!(c.retention.max_age, Duration::from_secs(90));
        assert_eq!(c.retention.max_bytes, 1000);
        assert_eq!(c.busy_timeout, Duration::from_millis(50));
        assert_eq!(c.poll_interval, Duration::from_millis(2));
        assert_eq!(c.synchronous, Synchronous::Normal);
        let c: SqliteConfig = "sqlite://q.db?max_bytes=1MiB&max_age=2&synchronous=FULL"
            .parse()
            .unwrap();
        assert_eq!(c.retention.max_bytes, 1 << 20);
        assert_eq!(c.retention.max_age, Duration::from_secs(2));
        assert_eq!(c.synchronous, Synchronous::Full);
        let d = SqliteConfig::new("q.db");
        assert_eq!(d.retention, Retention::default());
        assert_eq!(d.busy_timeout, DEFAULT_BUSY_TIMEOUT);
        assert_eq!(d.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(d.when_full, WhenFull::Refuse);
        let c: SqliteConfig = "sqlite://q.db?when_full=refuse&cache_size=256KiB"
            .parse()
            .unwrap();
        assert_eq!(c.when_full, WhenFull::Refuse);
        assert_eq!(c.cache_size, Some(256 << 10));
        assert_eq!(d.cache_size, None);
    }

    #[test]
    fn unknown_keys_name_the_known_ones() {
        // The old spellings are gone.
        qis_conformance::support::assert_keys_refused::<SqliteConfig>(
            "sqlite://q.db?",
            &[
                "max_age_s=60",
                "poll_ms=5",
                "busy_timeout_ms=50",
                "colour=blue",
            ],
            &[
                "prefix",
                "max_age",
                "max_bytes",
                "busy_timeout",
                "poll_interval",
                "synchronous",
                "when_full",
                "cache_size",
            ],
        );
    }

    #[test]
    fn refused_forms() {
        qis_conformance::support::assert_urls_refused::<SqliteConfig>(
            NAME,
            &[
                "sqlite::memory:",
                "sqlite://:memory:",
                "sqlite://",
                "sqlite://q.db?mode=memory",
                "nats://localhost",
                "sqlite://q.db?prefix=Bad",
                "sqlite://q.db?max_bytes=lots",
                "sqlite://q.db?poll_interval=soon",
                "sqlite://q.db?synchronous=off",
                "sqlite://q.db?when_full=block",
                "sqlite://q.db?colour=blue",
                "sqlite://q.db?prefix=a.b&prefix=c.d",
                "sqlite://q%zz.db",
                "sqlite://q%2.db",
                "sqlite://q%ff.db",
            ],
        );
    }

    #[test]
    fn check_refuses_what_keeps_nothing() {
        for c in [
            SqliteConfig::new("q.db").poll_interval(Duration::ZERO),
            SqliteConfig::new("q.db").max_age(Duration::ZERO),
            SqliteConfig::new("q.db").max_bytes(0),
        ] {
            assert_eq!(c.check().unwrap_err().kind(), ErrorKind::InvalidInput);
        }
    }
}
