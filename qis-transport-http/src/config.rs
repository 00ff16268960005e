//! Where the gateway is and how to talk to it.
//!
//! The settings every backend shares are spelled as in [`qis_core::config`]
//! (`prefix`, `connect_timeout`, `tls_ca` / `tls_cert` / `tls_key`, a token
//! in the user info or `?token=`); `request_timeout` is this transport's own.

use std::time::Duration;

use qis_core::config::{Credentials, ServerUrl, TlsFiles, DEFAULT_CONNECT_TIMEOUT};
use qis_core::{Error, Result, Subject};

use crate::NAME;

/// Default time one request may take beyond the wait it asks for (a
/// fetch's long-poll): 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach a `qis serve` gateway.
///
/// ```
/// use std::time::Duration;
/// use qis_transport_http::HttpConfig;
///
/// let c: HttpConfig = "https://edge-7-token@gw.example:8443/qis?prefix=plant.iot&request_timeout=10s&tls_ca=/etc/qis/ca.pem"
///     .parse()
///     .unwrap();
/// assert_eq!(c.base_url, "https://gw.example:8443/qis");
/// assert_eq!(c.credentials.token.as_deref(), Some("edge-7-token"));
/// assert_eq!(c.prefix.as_str(), "plant.iot");
/// assert_eq!(c.request_timeout, Duration::from_secs(10));
///
/// let c = HttpConfig::new("http://127.0.0.1:8080").token("s3cret");
/// assert_eq!(c.credentials.token.as_deref(), Some("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// The gateway's base URL, `http://host:port[/path]` or `https://…`,
    /// without user info or query.
    pub base_url: String,
    /// The prefix this device expects (default `qis.iot`). A gateway serves
    /// one prefix, its backend's; connecting to a gateway that serves
    /// another is [`ErrorKind::Conflict`](qis_core::ErrorKind::Conflict), naming the one it serves.
    pub prefix: Subject,
    /// The bearer token, when the gateway requires one (`credentials.token`;
    /// a user and password are refused: the gateway takes tokens only).
    pub credentials: Credentials,
    /// For `https://`: CA certificates to trust instead of the system's
    /// (`tls_ca`), and a client certificate and key (`tls_cert`, `tls_key`)
    /// for a proxy in front of the gateway that asks for one.
    pub tls: TlsFiles,
    /// How long connecting (TCP and TLS) may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long one request may take beyond the wait it asks for (default
    /// 30 s).
    pub request_timeout: Duration,
}

qis_core::config_builders!(HttpConfig: prefix, connect_timeout, tls, credentials, from_url);

qis_core::setters!(HttpConfig {
    /// How long one request may take beyond the wait it asks for.
    request_timeout: Duration,
});

impl HttpConfig {
    /// The URL schemes of this transport.
    pub const URL_SCHEMES: &'static [&'static str] = &["http", "https"];

    /// The gateway at `base_url` (`http://host:port`), every other setting at
    /// its default. The URL is checked by [`connect`](crate::HttpTransport::connect).
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            prefix: Subject::default(),
            credentials: Credentials::default(),
            tls: TlsFiles::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Parse `http://[token@]host[:port][/path][?key=value&…]` or `https://…`
    /// (default port 80 or 443). Keys: `token`, `prefix`, `connect_timeout`,
    /// `request_timeout` (durations: `5s`, `500ms`), and for `https://`
    /// `tls_ca`, `tls_cert`, `tls_key`. Anything else, several hosts, or a
    /// user and password is [`ErrorKind::InvalidInput`](qis_core::ErrorKind::InvalidInput).
    pub fn from_url(url: &str) -> Result<Self> {
        let https = url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let mut u = ServerUrl::parse(NAME, url, Self::URL_SCHEMES, if https { 443 } else { 80 })?;
        if u.hosts.len() != 1 {
            return Err(Error::invalid_input(
                NAME,
                format!(
                    "{} names {} hosts: give exactly one gateway",
                    redact(url),
                    u.hosts.len()
                ),
            ));
        }
        if u.credentials.user.is_some() || u.credentials.password.is_some() {
            return Err(Error::invalid_input(NAME,
                "the gateway takes a bearer token, not a user and password: give token@host or ?token=",
            ));
        }
        let mut config = HttpConfig::new(format!(
            "{}://{}{}",
            u.scheme,
            u.host_list(),
            if u.path.is_empty() {
                String::new()
            } else {
                format!("/{}", u.path)
            }
        ));
        config.credentials = u.credentials;
        let o = &mut u.options;
        if let Some(token) = o.string("token") {
            if config.credentials.token.is_some() {
                return Err(Error::invalid_input(
                    NAME,
                    "the token is given twice (user info and ?token=): give it once",
                ));
            }
            config.credentials.token = Some(token);
        }
        o.prefix(&mut config.prefix)?;
        o.durations([
            ("connect_timeout", &mut config.connect_timeout),
            ("request_timeout", &mut config.request_timeout),
        ])?;
        o.tls(&mut config.tls);
        u.options.finish()?;
        config.check()?;
        Ok(config)
    }

    /// Whether the base URL is `https://`.
    pub fn is_https(&self) -> bool {
        self.base_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// Refuse what cannot work: a base URL that is not `http(s)://host…`, TLS
    /// files for plain `http://`, half a client certificate, a user and
    /// password.
    pub fn check(&self) -> Result<()> {
        let lower = self.base_url.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(['?', '#', '@'])) {
            return Err(Error::invalid_input(NAME, format!(
                "{:?} is not a gateway base URL: use http://host:port or https://host:port (token and options as ?key=value)",
                redact(&self.base_url)
            )));
        }
        if self.tls.is_set() && !self.is_https() {
            return Err(Error::invalid_input(
                NAME,
                "tls_ca, tls_cert and tls_key need an https:// gateway URL",
            ));
        }
        self.tls.check(NAME)?;
        if self.credentials.user.is_some() || self.credentials.password.is_some() {
            return Err(Error::invalid_input(
                NAME,
                "the gateway takes a bearer token, not a user and password: use .token()",
            ));
        }
        Ok(())
    }
}

/// `url` with its user info and query replaced, for messages.
fn redact(url: &str) -> String {
    let no_query = url.split_once('?').map_or(url, |(u, _)| u);
    match no_query.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => no_query.to_string(),
        },
        None => no_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use qis_core::ErrorKind;

    use super::*;

    #[test]
    fn urls_and_defaults() {
        let c: HttpConfig = "http://127.0.0.1".parse().unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:80");
        assert_eq!(c.prefix.as_str(), "qis.iot");
        assert_eq!(c.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(c.credentials.token.is_none());
        let c: HttpConfig = "HTTPS://[::1]/gw/?token=t%40x&connect_timeout=2s"
            .parse()
            .unwrap();
        assert_eq!(c.base_url, "https://[::1]:443/gw");
        assert_eq!(c.credentials.token.as_deref(), Some("t@x"));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert!(!format!("{c:?}").contains("t@x"));
    }

    #[test]
    fn bad_urls_are_invalid_input() {
        for bad in [
            "http://a,b",
            "http://u:p@h",
            "http://tok@h?token=x",
            "http://h?tls_ca=ca.pem",
            "https://h?tls_cert=c.pem",
            "http://h?flavour=sweet",
            "http://h?request_timeout=soon",
            "nats://h",
        ] {
            let e = bad.parse::<HttpConfig>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
        }
        let e = "http://h?flavour=sweet".parse::<HttpConfig>().unwrap_err();
        assert!(e.message().contains("request_timeout"), "{e}");
        assert!(HttpConfig::new("ftp://h").check().is_err());
        assert!(HttpConfig::new("http://").check().is_err());
    }
}
