//! One configuration vocabulary for every backend.
//!
//! What backends share is spelled the same way on each of them, in URLs and
//! in builders, with defaults defined once here:
//!
//! | URL key | builder | meaning | default |
//! |---|---|---|---|
//! | `prefix` | `.prefix(Subject)` | subject prefix every deposit lies under | `qis.iot` |
//! | `max_age` | `.max_age(Duration)` | retention by age | [`DEFAULT_MAX_AGE`] (24 h) |
//! | `max_bytes` | `.max_bytes(u64)` | retention by size | [`DEFAULT_MAX_BYTES`] (50 MiB) |
//! | `dedup_window` | `.dedup_window(Duration)` | how long a packet id is remembered for de-duplication | [`DEFAULT_DEDUP_WINDOW`] (2 min) |
//! | `connect_timeout` | `.connect_timeout(Duration)` | how long connecting may take | [`DEFAULT_CONNECT_TIMEOUT`] (5 s) |
//! | `tls_ca` | `.tls_ca(path)` | PEM CA certificates to trust | none |
//! | `tls_cert`, `tls_key` | `.tls_client_cert(path)`, `.tls_client_key(path)` | PEM client certificate and key (mutual TLS) | none |
//! | `user:password@` | `.user_password(user, password)` | credentials in the URL's user info | none |
//!
//! Durations are written as `90s`, `2m`, `24h`, `500ms` (or a bare number
//! of seconds); sizes as `50MiB`, `1GB` (or a bare number of bytes). Each
//! backend reads only the keys it supports; a key it does not know is an
//! [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error naming the keys it knows.
//!
//! Backends parse their URLs with [`ServerUrl`] (a scheme, user info, one or
//! more `host:port`, a path) and [`UrlOptions`] (the query), and get the
//! shared builder methods from [`config_builders!`](crate::config_builders).
//!
//! ```
//! use std::time::Duration;
//! use qis_core::config::{ServerUrl, DEFAULT_MAX_BYTES};
//!
//! let mut url = ServerUrl::parse("demo", "nats://alice:s3cret@h1:4222,h2?max_age=1h&prefix=plant.one", &["nats"], 4222).unwrap();
//! assert_eq!(url.hosts, [("h1".to_string(), 4222), ("h2".to_string(), 4222)]);
//! assert_eq!(url.credentials.user.as_deref(), Some("alice"));
//! let mut retention = Default::default();
//! url.options.retention(&mut retention).unwrap();
//! assert_eq!(retention.max_age, Duration::from_secs(3600));
//! assert_eq!(retention.max_bytes, DEFAULT_MAX_BYTES);
//! let mut prefix = qis_core::Subject::default();
//! url.options.prefix(&mut prefix).unwrap();
//! assert_eq!(prefix.as_str(), "plant.one");
//! url.options.finish().unwrap();
//!
//! let mut url = ServerUrl::parse("demo", "nats://h1?colour=blue", &["nats"], 4222).unwrap();
//! url.options.prefix(&mut qis_core::Subject::default()).unwrap();
//! let e = url.options.finish().unwrap_err();
//! assert!(e.message().contains("colour") && e.message().contains("prefix"), "{e}");
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default retention by age: 24 hours (SPEC §6.8, as the seed).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Default retention by size: 50 MiB (SPEC §6.8, as the seed).
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Default de-duplication window: a packet id is remembered 2 minutes (the
/// NATS JetStream default).
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// Default time a connection attempt may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long packets are kept: by age and by total size, whichever bites first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Packets older than this are removed (default [`DEFAULT_MAX_AGE`]).
    pub max_age: Duration,
    /// When the stored packets add up to more than this many bytes, the
    /// oldest are removed (default [`DEFAULT_MAX_BYTES`]).
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: DEFAULT_MAX_AGE,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl Retention {
    /// Refuse a retention that would keep nothing.
    pub fn check(&self, transport: &'static str) -> Result<()> {
        if self.max_age.is_zero() {
            return Err(Error::invalid_input(
                transport,
                "max_age is zero: nothing could be retained; give how long packets are kept, e.g. 24h",
            ));
        }
        if self.max_bytes == 0 {
            return Err(Error::invalid_input(
                transport,
                "max_bytes is zero: nothing could be stored; give a size, e.g. 50MiB",
            ));
        }
        Ok(())
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates to trust for the server's certificate (URL key `tls_ca`).
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS, with [`Self::client_key`] (`tls_cert`).
    pub client_cert: Option<PathBuf>,
    /// Client key for mutual TLS, with [`Self::client_cert`] (`tls_key`).
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }

    /// Refuse a client certificate without its key, or the other way round.
    pub fn check(&self, transport: &'static str) -> Result<()> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(Error::invalid_input(
                transport,
                "give both tls_cert and tls_key (client certificate and key), or neither",
            ));
        }
        Ok(())
    }
}

/// Credentials from a URL's user info (`user:password@host`, or a lone
/// `token@host`). The `Debug` output never shows a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: Option<String>,
    /// Password, with or without a user (`:password@host`).
    pub password: Option<String>,
    /// A lone secret with no `:` (`token@host`).
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("token", &secret(&self.token))
            .finish()
    }
}

impl Credentials {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.password.is_none() && self.token.is_none()
    }
}

mod macros;
mod url;

pub use url::{ServerUrl, UrlOptions};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn retention_and_tls_checks() {
        let zero = Retention {
            max_age: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(zero.check("t").unwrap_err().kind(), ErrorKind::InvalidInput);
        let half = TlsFiles {
            client_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert_eq!(half.check("t").unwrap_err().kind(), ErrorKind::InvalidInput);
        assert!(Retention::default().check("t").is_ok());
    }
}
