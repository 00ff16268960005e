//! NATS URLs: `nats://` or `tls://`, credentials in the user info, a list
//! of seed servers, settings in the query, parsed with the shared
//! [`ServerUrl`] and [`UrlOptions`] of [`qis_core::config`].

use qis_core::config::{ServerUrl, UrlOptions};
use qis_core::{Error, Result};

use crate::config::{NatsConfig, NatsStorage, DEFAULT_PORT};
use crate::NAME;

impl NatsConfig {
    /// The URL schemes of this transport: `nats://` and `tls://` (which
    /// requires TLS).
    pub const URL_SCHEMES: &'static [&'static str] = &["nats", "tls"];

    /// Parse a URL such as `nats://127.0.0.1:4222`,
    /// `nats://user:pass@host:4222`, `nats://token@host`, `tls://host:4222`
    /// or, for a cluster, `nats://h1:4222,h2:4222,h3:4222` (seed servers; a
    /// missing port is 4222).
    ///
    /// Query keys, named like the fields they set:
    ///
    /// - shared with every backend: `prefix`, `max_age` and `max_bytes`
    ///   ([`Self::retention`]), `dedup_window`, `connect_timeout`,
    ///   `tls_ca`, `tls_cert`, `tls_key` ([`Self::tls`]);
    /// - NATS's own: `stream`, `storage` (`file` or `memory`), `replicas`
    ///   (1 to 5), `ack_window`, `request_timeout`, `retry_for`, `max_ack_pending`, `confirm_acks`, `creds` (a
    ///   `.creds` file), `require_tls`, `connection_name`.
    ///
    /// Durations are written `90s`, `2m`, `24h`, `500ms` (or a bare number
    /// of seconds), sizes `50MiB`, `1GB` (or a bare number of bytes). Any
    /// other key is an [`ErrorKind::InvalidInput`](qis_core::ErrorKind::InvalidInput)
    /// error naming these; so is a value the server would refuse
    /// ([`Self::validate`]).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = ServerUrl::parse(NAME, url, Self::URL_SCHEMES, DEFAULT_PORT)?;
        if !parsed.path.is_empty() {
            return Err(Error::invalid_input(NAME, format!(
                "{url:?} has a path ({:?}), which a NATS server address has not: name the stream with ?stream=NAME",
                parsed.path
            )));
        }
        let servers = parsed
            .hosts
            .iter()
            .map(|(host, port)| {
                if host.contains(':') {
                    format!("{}://[{host}]:{port}", parsed.scheme)
                } else {
                    format!("{}://{host}:{port}", parsed.scheme)
                }
            })
            .collect();
        let mut config = NatsConfig {
            servers,
            require_tls: parsed.scheme == "tls",
            credentials: parsed.credentials,
            ..NatsConfig::default()
        };
        read_options(&mut config, parsed.options)?;
        config.validate()?;
        Ok(config)
    }
}

/// The query keys, into `config`; any key left over is an error.
fn read_options(config: &mut NatsConfig, mut o: UrlOptions) -> Result<()> {
    o.prefix(&mut config.prefix)?;
    o.retention(&mut config.retention)?;
    o.durations([
        ("dedup_window", &mut config.dedup_window),
        ("connect_timeout", &mut config.connect_timeout),
        ("retry_for", &mut config.retry_for),
        ("request_timeout", &mut config.request_timeout),
    ])?;
    o.tls(&mut config.tls);
    if let Some(s) = o.string("stream") {
        config.stream = Some(s);
    }
    if let Some(s) = o.choice("storage", &["file", "memory"])? {
        config.storage = match s {
            "memory" => NatsStorage::Memory,
            _ => NatsStorage::File,
        };
    }
    o.numbers([
        ("replicas", &mut config.replicas),
        ("ack_window", &mut config.ack_window),
    ])?;
    o.numbers([("max_ack_pending", &mut config.max_ack_pending)])?;
    if let Some(p) = o.path("creds") {
        config.creds = Some(p);
    }
    o.booleans([
        ("confirm_acks", &mut config.confirm_acks),
        ("require_tls", &mut config.require_tls),
    ])?;
    if let Some(s) = o.string("connection_name") {
        config.connection_name = s;
    }
    o.finish()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    #[test]
    fn credentials_and_parameters() {
        let c: NatsConfig = "nats://al%40ice:p%3Ass@localhost:14222?prefix=acme.edge&max_age=60&max_bytes=1MiB&dedup_window=30s&storage=memory"
            .parse()
            .unwrap();
        assert_eq!(c.credentials.user.as_deref(), Some("al@ice"));
        assert_eq!(c.credentials.password.as_deref(), Some("p:ss"));
        assert_eq!(c.servers, ["nats://localhost:14222"]);
        assert_eq!(c.prefix.as_str(), "acme.edge");
        assert_eq!(c.stream_name(), "QIS_ACME_EDGE");
        assert_eq!(c.retention.max_age, Duration::from_secs(60));
        assert_eq!(c.retention.max_bytes, 1 << 20);
        assert_eq!(c.dedup_window, Duration::from_secs(30));
        assert_eq!(c.storage, NatsStorage::Memory);
        assert!(!c.require_tls);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("p:ss"), "{dbg}");

        let t = NatsConfig::from_url("tls://s3cret@example.invalid").unwrap();
        assert_eq!(t.credentials.token.as_deref(), Some("s3cret"));
        assert!(t.require_tls);
        assert_eq!(t.servers, ["tls://example.invalid:4222"]);
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn every_key_of_its_own() {
        let c: NatsConfig = "nats://h?stream=EDGE&ack_window=64&request_timeout=1500ms&connect_timeout=2s&max_ack_pending=500&confirm_acks=true&creds=/etc/qis.creds&require_tls=yes&connection_name=edge-7&tls_ca=ca.pem&tls_cert=c.pem&tls_key=k.pem&replicas=3&retry_for=20s"
            .parse()
            .unwrap();
        assert_eq!(c.replicas, 3);
        assert_eq!(c.retry_for, Duration::from_secs(20));
        assert_eq!(c.stream_name(), "EDGE");
        assert_eq!(c.ack_window, 64);
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.max_ack_pending, 500);
        assert!(c.confirm_acks && c.require_tls);
        assert_eq!(c.creds, Some(PathBuf::from("/etc/qis.creds")));
        assert_eq!(c.connection_name, "edge-7");
        assert_eq!(c.tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.tls.client_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(c.tls.client_key, Some(PathBuf::from("k.pem")));
    }

    #[test]
    fn seed_servers_of_a_cluster() {
        let c = NatsConfig::from_url("nats://u:p@n1:4222,n2:5222,n3,[::1]:6222").unwrap();
        assert_eq!(
            c.servers,
            [
                "nats://n1:4222",
                "nats://n2:5222",
                "nats://n3:4222",
                "nats://[::1]:6222"
            ]
        );
        assert_eq!(c.credentials.user.as_deref(), Some("u"));
        let t = NatsConfig::from_url("tls://n1,n2").unwrap();
        assert_eq!(t.servers, ["tls://n1:4222", "tls://n2:4222"]);
    }

    #[test]
    fn unknown_and_old_keys_name_the_known_ones() {
        qis_conformance::support::assert_keys_refused::<NatsConfig>(
            "nats://h?",
            &[
                "max_age_secs=60",
                "duplicate_window_secs=60",
                "tls_ca_file=x",
                "bogus=1",
            ],
            &["prefix", "max_age", "dedup_window", "stream", "creds"],
        );
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        qis_conformance::support::assert_urls_refused::<NatsConfig>(
            NAME,
            &[
                "http://x",
                "nats://",
                "not a url",
                "nats://h?bogus=1",
                "nats://h?max_bytes=-3",
                "nats://h?max_age=soon",
                "nats://h?storage=tape",
                "nats://h?confirm_acks=maybe",
                "nats://h?stream=a.b",
                "nats://h?replicas=0",
                "nats://h?replicas=7",
                "nats://h?replicas=three",
                "nats://h?retry_for=forever",
                "nats://h?prefix=Bad",
                "nats://h/stream",
                "nats://h:port",
                "nats://a,,b",
                "nats://:only-a-password@h",
                "nats://h?tls_cert=c.pem",
            ],
        );
    }
}
