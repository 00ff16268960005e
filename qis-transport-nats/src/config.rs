//! [`NatsConfig`]: where the server is, how to log in, and the stream's limits.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use qis_core::{Error, ErrorKind, Result, Subject};

use crate::NAME;

/// The seed's stream name, used for the default prefix `qis.iot`.
pub const DEFAULT_STREAM: &str = "QIS_OUTCOMES";

/// The default port of a NATS server.
pub const DEFAULT_PORT: u16 = 4222;

/// Where JetStream keeps the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsStorage {
    /// On disk: survives a server restart (the default, as the seed).
    #[default]
    File,
    /// In the server's memory: lost when it restarts.
    Memory,
}

/// How to reach a NATS server and how the JetStream stream is laid out.
///
/// Defaults follow the seed: stream `QIS_OUTCOMES` on `qis.iot.>`, file
/// storage, 24 h max age, 50 MiB max bytes, and a 2-minute de-duplication
/// window. Every field is public; the builder methods are conveniences.
///
/// ```
/// use std::time::Duration;
/// use qis_transport_nats::NatsConfig;
///
/// let config = NatsConfig::from_url("nats://alice:secret@127.0.0.1:14222?stream=EDGE").unwrap()
///     .max_age(Duration::from_secs(3600));
/// assert_eq!(config.user.as_deref(), Some("alice"));
/// assert_eq!(config.stream_name(), "EDGE");
/// assert_eq!(config.server_url(), "nats://127.0.0.1:14222");
/// ```
#[derive(Clone)]
pub struct NatsConfig {
    /// Server address, `nats://host:port` (or `tls://host:port`). Credentials
    /// given as `user:pass@` or `token@` are moved into [`Self::user`] /
    /// [`Self::password`] / [`Self::token`] by [`Self::from_url`].
    pub url: String,
    /// Subject prefix every deposit lies under (default `qis.iot`).
    pub prefix: Subject,
    /// The JetStream stream name. `None` (the default) derives it from the
    /// prefix with [`stream_name_for`]: `QIS_OUTCOMES` for `qis.iot`.
    pub stream: Option<String>,
    /// Where the stream is stored (default [`NatsStorage::File`]).
    pub storage: NatsStorage,
    /// Packets older than this are removed (default 24 h).
    pub max_age: Duration,
    /// When the stream holds more bytes than this, the oldest packets are
    /// removed (default 50 MiB).
    pub max_bytes: u64,
    /// An identical deposit (same packet id, sent as `Nats-Msg-Id`) within
    /// this window is recognised and not stored again (default 2 min; at
    /// most [`Self::max_age`], as the server requires).
    pub duplicate_window: Duration,
    /// How many publish acknowledgements a batch deposit keeps in flight
    /// (default 1024).
    pub ack_window: usize,
    /// How long to wait for the server on a request or a publish ack
    /// (default 5 s).
    pub request_timeout: Duration,
    /// How long the first connection attempt may take (default 5 s).
    pub connect_timeout: Duration,
    /// Most deliveries a durable consumer may have unacknowledged at once
    /// (default 100 000; the server's own default is 1 000).
    pub max_ack_pending: i64,
    /// Whether `ack()` and `nak()` wait for the server to confirm (a double
    /// ack of the last delivery of each call). Default `false`: acks are sent
    /// like any NATS publish, and the consumer's `close()` confirms that the
    /// server has processed every ack sent before it.
    pub confirm_acks: bool,
    /// User name (with [`Self::password`]).
    pub user: Option<String>,
    /// Password (with [`Self::user`]).
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// A `.creds` file (JWT and NKey seed) for decentralised auth.
    pub credentials_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust for the server's TLS certificate.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with [`Self::tls_client_key`]).
    pub tls_client_cert: Option<PathBuf>,
    /// PEM client key for mutual TLS (with [`Self::tls_client_cert`]).
    pub tls_client_key: Option<PathBuf>,
    /// Refuse to talk to the server without TLS.
    pub require_tls: bool,
    /// Connection name shown by the server's monitoring (default `qis`).
    pub connection_name: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: format!("nats://127.0.0.1:{DEFAULT_PORT}"),
            prefix: Subject::default(),
            stream: None,
            storage: NatsStorage::File,
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 50 * 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
            ack_window: 1024,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_ack_pending: 100_000,
            confirm_acks: false,
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            require_tls: false,
            connection_name: "qis".to_string(),
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsConfig")
            .field("url", &self.url)
            .field("prefix", &self.prefix.as_str())
            .field("stream", &self.stream_name())
            .field("storage", &self.storage)
            .field("max_age", &self.max_age)
            .field("max_bytes", &self.max_bytes)
            .field("duplicate_window", &self.duplicate_window)
            .field("ack_window", &self.ack_window)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_ack_pending", &self.max_ack_pending)
            .field("confirm_acks", &self.confirm_acks)
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("token", &secret(&self.token))
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("require_tls", &self.require_tls)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// The stream name used for `prefix` when none is configured: the seed's
/// `QIS_OUTCOMES` for `qis.iot`, otherwise `QIS_` and the prefix in upper case
/// with `.` and `-` as `_` (`qt1a2b3c4d.iot` → `QIS_QT1A2B3C4D_IOT`).
pub fn stream_name_for(prefix: &Subject) -> String {
    if prefix.as_str() == qis_core::DEFAULT_PREFIX {
        return DEFAULT_STREAM.to_string();
    }
    let mut name = String::from("QIS_");
    name.extend(prefix.as_str().chars().map(|c| match c {
        '.' | '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, NAME, msg)
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(format!(
            "{key}={v:?} in the URL is not a boolean: use true or false"
        ))),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.parse().map_err(|_| {
        invalid(format!(
            "{key}={v:?} in the URL is not a non-negative whole number"
        ))
    })
}

impl NatsConfig {
    /// Parse a URL such as `nats://127.0.0.1:4222`,
    /// `nats://user:pass@host:4222`, `nats://token@host` or `tls://host:4222`.
    ///
    /// Query parameters set other fields: `prefix`, `stream`,
    /// `storage=file|memory`, `max_age_secs`, `max_bytes`,
    /// `duplicate_window_secs`, `ack_window`, `creds` (credentials file),
    /// `tls_ca`, `tls_cert`, `tls_key`, `require_tls=true`.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| {
            invalid(format!("{url:?} is not a URL: use nats://host:port")).with_source(e)
        })?;
        let mut config = NatsConfig::default();
        match parsed.scheme() {
            "nats" => {}
            "tls" => config.require_tls = true,
            other => {
                return Err(invalid(format!(
                    "URL scheme {other:?} is not for NATS: use nats://host:port or tls://host:port"
                )))
            }
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid(format!("{url:?} has no host: use nats://host:port")))?;
        let port = parsed.port().unwrap_or(DEFAULT_PORT);
        config.url = format!("{}://{host}:{port}", parsed.scheme());
        let user = percent_decode(parsed.username());
        match (user.is_empty(), parsed.password()) {
            (true, None) => {}
            (false, None) => config.token = Some(user),
            (_, Some(p)) => {
                config.user = Some(user);
                config.password = Some(percent_decode(p));
            }
        }
        for (k, v) in parsed.query_pairs() {
            let v = v.as_ref();
            match k.as_ref() {
                "prefix" => config.prefix = Subject::new(v).map_err(|e| e.in_transport(NAME))?,
                "stream" => config.stream = Some(v.to_string()),
                "storage" => {
                    config.storage = match v {
                        "file" => NatsStorage::File,
                        "memory" => NatsStorage::Memory,
                        _ => return Err(invalid(format!("storage={v:?}: use file or memory"))),
                    }
                }
                "max_age_secs" => config.max_age = Duration::from_secs(parse_num("max_age_secs", v)?),
                "max_bytes" => config.max_bytes = parse_num("max_bytes", v)?,
                "duplicate_window_secs" => {
                    config.duplicate_window = Duration::from_secs(parse_num("duplicate_window_secs", v)?)
                }
                "ack_window" => config.ack_window = parse_num("ack_window", v)?,
                "creds" => config.credentials_file = Some(PathBuf::from(v)),
                "tls_ca" => config.tls_ca = Some(PathBuf::from(v)),
                "tls_cert" => config.tls_client_cert = Some(PathBuf::from(v)),
                "tls_key" => config.tls_client_key = Some(PathBuf::from(v)),
                "require_tls" => config.require_tls = parse_bool("require_tls", v)?,
                other => {
                    return Err(invalid(format!(
                        "unknown URL parameter {other:?}: known are prefix, stream, storage, max_age_secs, max_bytes, duplicate_window_secs, ack_window, creds, tls_ca, tls_cert, tls_key, require_tls"
                    )))
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Set the subject prefix. Unless a stream name was set, the stream name
    /// follows the prefix (see [`stream_name_for`]).
    pub fn prefix(mut self, prefix: Subject) -> Self {
        self.prefix = prefix;
        self
    }

    /// Set the stream name.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = Some(name.into());
        self
    }

    /// Set the storage type.
    pub fn storage(mut self, storage: NatsStorage) -> Self {
        self.storage = storage;
        self
    }

    /// Set the retention max age.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Set the retention max bytes.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Set the de-duplication window.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Set how many publish acks a batch deposit keeps in flight.
    pub fn ack_window(mut self, window: usize) -> Self {
        self.ack_window = window;
        self
    }

    /// Set the request / publish-ack timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Log in with a user name and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Log in with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Log in with a `.creds` file.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }

    /// Trust the CA certificates in this PEM file (and use TLS).
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// Refuse to connect without TLS.
    pub fn require_tls(mut self, require: bool) -> Self {
        self.require_tls = require;
        self
    }

    /// The stream name in effect: [`Self::stream`] or the one derived from the prefix.
    pub fn stream_name(&self) -> String {
        self.stream
            .clone()
            .unwrap_or_else(|| stream_name_for(&self.prefix))
    }

    /// The server URL without credentials, as given to the client.
    pub fn server_url(&self) -> &str {
        &self.url
    }

    /// The stream's subject filter, `{prefix}.>`.
    pub fn stream_subject(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// Check the values a server would refuse, with a message saying what to change.
    pub fn validate(&self) -> Result<()> {
        let stream = self.stream_name();
        let ok = !stream.is_empty()
            && stream.len() <= 255
            && stream
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !ok {
            return Err(invalid(format!(
                "stream name {stream:?} is not valid: use 1 to 255 of A-Z, a-z, 0-9, '_' or '-'"
            )));
        }
        if self.max_age.is_zero() {
            return Err(invalid(
                "max_age is zero: give how long packets are kept, e.g. 24 h",
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > i64::MAX as u64 {
            return Err(invalid(format!(
                "max_bytes {} is not usable: give a positive size, e.g. 50 MiB",
                self.max_bytes
            )));
        }
        if self.ack_window == 0 {
            return Err(invalid(
                "ack_window is zero: keep at least one publish ack in flight",
            ));
        }
        if self.password.is_some() != self.user.is_some() {
            return Err(invalid("give both user and password, or neither"));
        }
        if self.tls_client_cert.is_some() != self.tls_client_key.is_some() {
            return Err(invalid(
                "give both tls_client_cert and tls_client_key, or neither",
            ));
        }
        Ok(())
    }

    /// The async-nats connect options these settings stand for.
    pub(crate) async fn connect_options(&self) -> Result<async_nats::ConnectOptions> {
        let mut opts = match &self.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| {
                    invalid(format!(
                        "could not read the credentials file {}: check the path and its contents",
                        path.display()
                    ))
                    .with_source(e)
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &self.token {
            opts = opts.token(t.clone());
        }
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls {
            opts = opts.require_tls(true);
        }
        Ok(opts
            .name(&self.connection_name)
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            .max_reconnects(None::<usize>)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!(transport = NAME, "connected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!(
                            transport = NAME,
                            "disconnected from the NATS server; reconnecting"
                        )
                    }
                    other => tracing::debug!(transport = NAME, event = %other, "connection event"),
                }
            }))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let c = NatsConfig::default();
        assert_eq!(c.stream_name(), "QIS_OUTCOMES");
        assert_eq!(c.stream_subject(), "qis.iot.>");
        assert_eq!(c.max_age, Duration::from_secs(86_400));
        assert_eq!(c.max_bytes, 50 * 1024 * 1024);
        assert_eq!(c.storage, NatsStorage::File);
        assert!(c.ack_window >= 256);
    }

    #[test]
    fn url_credentials_and_parameters() {
        let c = NatsConfig::from_url("nats://al%40ice:p%3Ass@localhost:14222?prefix=acme.edge&max_age_secs=60&storage=memory")
            .unwrap();
        assert_eq!(c.user.as_deref(), Some("al@ice"));
        assert_eq!(c.password.as_deref(), Some("p:ss"));
        assert_eq!(c.server_url(), "nats://localhost:14222");
        assert_eq!(c.prefix.as_str(), "acme.edge");
        assert_eq!(c.stream_name(), "QIS_ACME_EDGE");
        assert_eq!(c.max_age, Duration::from_secs(60));
        assert_eq!(c.storage, NatsStorage::Memory);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("p:ss"), "{dbg}");

        let t = NatsConfig::from_url("tls://s3cret@example.invalid").unwrap();
        assert_eq!(t.token.as_deref(), Some("s3cret"));
        assert!(t.require_tls);
        assert_eq!(t.server_url(), "tls://example.invalid:4222");
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        for url in [
            "http://x",
            "nats://",
            "not a url",
            "nats://h?bogus=1",
            "nats://h?max_bytes=-3",
            "nats://h?stream=a.b",
        ] {
            let e = NatsConfig::from_url(url).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::InvalidSubject
                ),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn derived_stream_names() {
        assert_eq!(
            stream_name_for(&"qt1a2b3c4d.iot".parse().unwrap()),
            "QIS_QT1A2B3C4D_IOT"
        );
        assert_eq!(stream_name_for(&"qis.iot".parse().unwrap()), "QIS_OUTCOMES");
        let c = NatsConfig::default().prefix("a-b.c".parse().unwrap());
        assert_eq!(c.stream_name(), "QIS_A_B_C");
        assert_eq!(c.stream("X").stream_name(), "X");
    }
}
