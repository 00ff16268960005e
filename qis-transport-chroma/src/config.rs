//! How to reach a Chroma server, and where in it to store.

use std::time::Duration;

use qis_core::config::{ServerUrl, TlsFiles, DEFAULT_CONNECT_TIMEOUT};
use qis_core::{Error, Result, Subject};

use crate::NAME;

/// The port `chroma run` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8000;

/// Default time one HTTP request may take, from sending to the last byte
/// of the answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Chroma's own default tenant.
pub const DEFAULT_TENANT: &str = "default_tenant";

/// Chroma's own default database.
pub const DEFAULT_DATABASE: &str = "default_database";

/// Configuration of a [`ChromaTransport`](crate::ChromaTransport).
///
/// ```
/// use std::time::Duration;
/// use qis_transport_chroma::ChromaConfig;
///
/// let c: ChromaConfig = "chroma://127.0.0.1:18000?prefix=plant.one&database=edge&request_timeout=5s"
///     .parse()
///     .unwrap();
/// assert_eq!(c.base_url(), "http://127.0.0.1:18000");
/// assert_eq!(c.prefix.as_str(), "plant.one");
/// assert_eq!((c.tenant.as_str(), c.database.as_str()), ("default_tenant", "edge"));
/// assert_eq!(c.request_timeout, Duration::from_secs(5));
///
/// let c = ChromaConfig::new("https://vectors.example").database("qis");
/// assert_eq!(c.database, "qis");
/// ```
///
/// # URL
///
/// `chroma://host[:port][?key=value&…]` (plain HTTP, port 8000 by default)
/// or `chromas://host[:port][?…]` (HTTPS). The query keys are the shared
/// `prefix`, `connect_timeout` and `tls_ca` (PEM CA certificates to trust
/// besides the system's, for `chromas://`), and Chroma's own `tenant`,
/// `database` (both must exist or be creatable: the transport creates the
/// database if it is missing, never the tenant) and `request_timeout`. Any
/// other key is an [`ErrorKind::InvalidInput`](qis_core::ErrorKind::InvalidInput) error naming the known ones.
///
/// There is no retention: Chroma keeps every record until its collection is
/// deleted, so `max_age` and `max_bytes` are refused rather than ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChromaConfig {
    /// The server's base URL, `http://host:port` or `https://host:port`.
    pub url: String,
    /// The subject prefix (default `qis.iot`); each prefix has collections of
    /// its own.
    pub prefix: Subject,
    /// The Chroma tenant (default `default_tenant`).
    pub tenant: String,
    /// The Chroma database (default `default_database`), created if missing.
    pub database: String,
    /// How long connecting may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long one request may take (default 30 s).
    pub request_timeout: Duration,
    /// CA certificates to trust for HTTPS (only `ca` is used: Chroma takes
    /// no client certificates).
    pub tls: TlsFiles,
}

qis_core::config_builders!(ChromaConfig: prefix, connect_timeout, tls, from_url);
qis_core::setters!(ChromaConfig {
    /// How long one request may take.
    request_timeout: Duration,
    /// Use this tenant (it must exist).
    tenant: impl Into<String>,
    /// Use this database (created if missing).
    database: impl Into<String>,
});

impl Default for ChromaConfig {
    fn default() -> Self {
        ChromaConfig::new(format!("http://127.0.0.1:{DEFAULT_PORT}"))
    }
}

impl ChromaConfig {
    /// The URL schemes of this transport.
    pub const URL_SCHEMES: &'static [&'static str] = &["chroma", "chromas"];

    /// A configuration for the server at `url` (`http://host:port` or
    /// `https://host:port`) with every default.
    pub fn new(url: impl Into<String>) -> Self {
        ChromaConfig {
            url: url.into().trim_end_matches('/').to_string(),
            prefix: Subject::default(),
            tenant: DEFAULT_TENANT.into(),
            database: DEFAULT_DATABASE.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            tls: TlsFiles::default(),
        }
    }

    /// Parse a `chroma://` or `chromas://` URL (see [the type's docs](Self)).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut u = ServerUrl::parse(NAME, url, Self::URL_SCHEMES, DEFAULT_PORT)?;
        if u.hosts.len() != 1 {
            return Err(Error::invalid_input(
                NAME,
                format!(
                    "{url:?} names {} servers: a Chroma URL names one host[:port]",
                    u.hosts.len()
                ),
            ));
        }
        if !u.credentials.is_empty() {
            return Err(Error::invalid_input(NAME, format!(
                "{url:?} carries credentials, which this transport does not send: use a server without authentication, or put it behind a proxy that adds them"
            )));
        }
        if !u.path.is_empty() {
            return Err(Error::invalid_input(
                NAME,
                format!(
                    "{url:?} has a path: name the tenant and database with ?tenant=…&database=…"
                ),
            ));
        }
        let http = if u.scheme == "chromas" {
            "https"
        } else {
            "http"
        };
        let mut c = ChromaConfig::new(format!("{http}://{}", u.host_list()));
        u.options.prefix(&mut c.prefix)?;
        if let Some(t) = u.options.string("tenant") {
            c.tenant = t;
        }
        if let Some(d) = u.options.string("database") {
            c.database = d;
        }
        if let Some(d) = u.options.duration("connect_timeout")? {
            c.connect_timeout = d;
        }
        if let Some(d) = u.options.duration("request_timeout")? {
            c.request_timeout = d;
        }
        u.options.tls(&mut c.tls);
        u.options.finish()?;
        Ok(c)
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.url
    }

    /// Refuse what cannot work, before connecting.
    pub fn check(&self) -> Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Error::invalid_input(
                NAME,
                format!("server URL {:?} is neither http:// nor https://", self.url),
            ));
        }
        for (what, name) in [("tenant", &self.tenant), ("database", &self.database)] {
            if !valid_chroma_name(name) {
                return Err(Error::invalid_input(NAME, format!(
                    "{what} {name:?} is not a Chroma name: use 3 to 512 of a-z, A-Z, 0-9, '.', '_' or '-', starting and ending with a letter or digit"
                )));
            }
        }
        if self.prefix.as_str().len() > crate::collection::MAX_PREFIX_LEN {
            return Err(Error::invalid_input(
                NAME,
                format!(
                    "prefix {} is {} bytes: Chroma collection names allow at most {} for it",
                    self.prefix,
                    self.prefix.as_str().len(),
                    crate::collection::MAX_PREFIX_LEN
                ),
            ));
        }
        if self.tls.client_cert.is_some() || self.tls.client_key.is_some() {
            return Err(Error::invalid_input(
                NAME,
                "Chroma takes no client certificates: remove tls_cert and tls_key",
            ));
        }
        if self.tls.ca.is_some() && !self.url.starts_with("https://") {
            return Err(Error::invalid_input(
                NAME,
                "tls_ca is set but the server is plain HTTP: use chromas:// (https://)",
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::invalid_input(
                NAME,
                "timeouts must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// Chroma's rule for tenant, database and collection names.
pub(crate) fn valid_chroma_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=512).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use qis_core::ErrorKind;

    use super::*;

    #[test]
    fn urls() {
        let c = ChromaConfig::from_url("chromas://vectors.example?tls_ca=/ca.pem").unwrap();
        assert_eq!(c.url, "https://vectors.example:8000");
        assert!(c.tls.ca.is_some());
        c.check().unwrap();
        for bad in [
            "chroma://a,b",
            "chroma://secret@h",
            "chroma://h/tenant",
            "chroma://h?max_age=1h",
            "nats://h",
        ] {
            let e = ChromaConfig::from_url(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        let e = ChromaConfig::from_url("chroma://h?colour=blue").unwrap_err();
        assert!(e.message().contains("database"), "{e}");
    }

    #[test]
    fn checks() {
        assert!(ChromaConfig::default().check().is_ok());
        assert!(ChromaConfig::default().database("x").check().is_err());
        assert!(ChromaConfig::default().tls_ca("/ca.pem").check().is_err());
        assert!(ChromaConfig::new("ftp://h").check().is_err());
        assert!(ChromaConfig::default()
            .request_timeout(Duration::ZERO)
            .check()
            .is_err());
    }
}
