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
//! [`ErrorKind::InvalidInput`] error naming the keys it knows.
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
//! assert_eq!(url.options.prefix().unwrap().unwrap().as_str(), "plant.one");
//! url.options.finish().unwrap();
//!
//! let mut url = ServerUrl::parse("demo", "nats://h1?colour=blue", &["nats"], 4222).unwrap();
//! url.options.prefix().unwrap();
//! let e = url.options.finish().unwrap_err();
//! assert!(e.message().contains("colour") && e.message().contains("prefix"), "{e}");
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::subject::Subject;

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

fn decode(transport: &'static str, s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            Error::invalid_input(transport, format!("{s:?} does not percent-decode to UTF-8"))
        })
}

/// A server URL: `scheme://[userinfo@]host[:port][,host[:port]…][/path][?query]`.
///
/// Several hosts separated by commas are seed servers of one cluster. IPv6
/// hosts are written in brackets (`[::1]:4222`).
#[derive(Debug)]
pub struct ServerUrl {
    /// The scheme, lower case.
    pub scheme: String,
    /// Credentials from the user info, percent-decoded.
    pub credentials: Credentials,
    /// Host and port of every server named, the default port filled in.
    pub hosts: Vec<(String, u16)>,
    /// The path after the hosts, without its leading `/` (often empty).
    pub path: String,
    /// The query options.
    pub options: UrlOptions,
}

impl ServerUrl {
    /// Parse `url` for `transport`, whose schemes are `schemes`.
    pub fn parse(
        transport: &'static str,
        url: &str,
        schemes: &[&str],
        default_port: u16,
    ) -> Result<Self> {
        let usage = || format!("use {}://host:port", schemes.first().copied().unwrap_or(""));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            Error::invalid_input(transport, format!("{url:?} is not a URL: {}", usage()))
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if !schemes.contains(&scheme.as_str()) {
            return Err(Error::invalid_input(
                transport,
                format!(
                    "URL scheme {scheme:?} is not for {transport}: use {}",
                    schemes.join("://, ") + "://"
                ),
            ));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut credentials = Credentials::default();
        if let Some(u) = userinfo {
            let non_empty = |s: String| (!s.is_empty()).then_some(s);
            match u.split_once(':') {
                Some((user, password)) => {
                    credentials.user = non_empty(decode(transport, user)?);
                    credentials.password = non_empty(decode(transport, password)?);
                }
                None => credentials.token = non_empty(decode(transport, u)?),
            }
        }
        let hosts = hosts
            .split(',')
            .map(|h| parse_host(transport, url, h, default_port))
            .collect::<Result<Vec<_>>>()?;
        Ok(ServerUrl {
            scheme,
            credentials,
            hosts,
            path: decode(transport, path)?,
            options: UrlOptions::parse(transport, query)?,
        })
    }

    /// The hosts as `host:port` joined by commas (IPv6 hosts in brackets).
    pub fn host_list(&self) -> String {
        self.hosts
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn parse_host(
    transport: &'static str,
    url: &str,
    h: &str,
    default_port: u16,
) -> Result<(String, u16)> {
    let no_host = || {
        Error::invalid_input(
            transport,
            format!("{url:?} names an empty host: use host:port"),
        )
    };
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(no_host)?;
        (host, after.strip_prefix(':'))
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty() {
        return Err(no_host());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse().map_err(|_| {
            Error::invalid_input(
                transport,
                format!("{url:?}: port {p:?} is not a number from 0 to 65535"),
            )
        })?,
    };
    Ok((host.to_string(), port))
}

/// The query options of a URL, read key by key.
///
/// Every key a backend asks for (present or not) becomes a known key; once the
/// backend has read what it supports, [`finish`](Self::finish) refuses any
/// key left over and names the known ones, so the list in the error is never
/// stale.
#[derive(Debug)]
pub struct UrlOptions {
    transport: &'static str,
    pairs: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl UrlOptions {
    /// Parse a query string (`a=1&b=2`, percent-escapes decoded). A key given
    /// twice is an error.
    pub fn parse(transport: &'static str, query: &str) -> Result<Self> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(transport, k)?, decode(transport, v)?);
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(Error::invalid_input(
                    transport,
                    format!("URL key {k:?} is given twice: give it once"),
                ));
            }
            pairs.push((k, v));
        }
        Ok(UrlOptions {
            transport,
            pairs,
            known: Vec::new(),
        })
    }

    /// The raw value of `key`, if given.
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        self.known.push(key);
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    fn parsed<T>(
        &mut self,
        key: &'static str,
        what: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.string(key) {
            None => Ok(None),
            Some(v) => parse(v.trim()).map(Some).ok_or_else(|| {
                Error::invalid_input(
                    self.transport,
                    format!("{key}={v:?} in the URL is not {what}"),
                )
            }),
        }
    }

    /// A duration: `90s`, `2m`, `24h`, `500ms`, `1h30m`, or a bare number of seconds.
    pub fn duration(&mut self, key: &'static str) -> Result<Option<Duration>> {
        self.parsed(key, "a duration (e.g. 90s, 2m, 24h, 500ms)", parse_duration)
    }

    /// A size: `50MiB`, `1GB`, `4096`, … (a bare number is bytes).
    pub fn bytes(&mut self, key: &'static str) -> Result<Option<u64>> {
        self.parsed(key, "a size (e.g. 50MiB, 1GB, 4096)", |v| {
            v.parse::<u64>()
                .ok()
                .or_else(|| v.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()))
        })
    }

    /// A number of type `T`.
    pub fn number<T: FromStr>(&mut self, key: &'static str) -> Result<Option<T>> {
        self.parsed(key, "a number", |v| v.parse().ok())
    }

    /// A boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
    pub fn boolean(&mut self, key: &'static str) -> Result<Option<bool>> {
        self.parsed(key, "true or false", |v| {
            match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" => Some(false),
                _ => None,
            }
        })
    }

    /// Several duration keys, each into its field; a field whose key is
    /// absent keeps its value.
    pub fn durations<const N: usize>(
        &mut self,
        fields: [(&'static str, &mut Duration); N],
    ) -> Result<()> {
        self.read_into(fields, Self::duration)
    }

    /// Several number keys of type `T`, each into its field, as
    /// [`durations`](Self::durations).
    pub fn numbers<T: FromStr, const N: usize>(
        &mut self,
        fields: [(&'static str, &mut T); N],
    ) -> Result<()> {
        self.read_into(fields, Self::number)
    }

    /// Several boolean keys, each into its field, as
    /// [`durations`](Self::durations).
    pub fn booleans<const N: usize>(
        &mut self,
        fields: [(&'static str, &mut bool); N],
    ) -> Result<()> {
        self.read_into(fields, Self::boolean)
    }

    fn read_into<T, const N: usize>(
        &mut self,
        fields: [(&'static str, &mut T); N],
        mut read: impl FnMut(&mut Self, &'static str) -> Result<Option<T>>,
    ) -> Result<()> {
        for (key, field) in fields {
            if let Some(v) = read(self, key)? {
                *field = v;
            }
        }
        Ok(())
    }

    /// A file path.
    pub fn path(&mut self, key: &'static str) -> Option<PathBuf> {
        self.string(key).map(PathBuf::from)
    }

    /// One of `choices` (case-insensitive), returned as given in `choices`.
    pub fn choice(
        &mut self,
        key: &'static str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>> {
        let what = format!("one of {}", choices.join(", "));
        self.parsed(key, &what, |v| {
            choices.iter().copied().find(|c| c.eq_ignore_ascii_case(v))
        })
    }

    /// The shared key `prefix`, a [`Subject`], into `prefix`.
    pub fn prefix(&mut self, prefix: &mut Subject) -> Result<()> {
        if let Some(v) = self.string("prefix") {
            *prefix = Subject::new(v).map_err(|e| e.in_transport(self.transport))?;
        }
        Ok(())
    }

    /// The shared keys `max_age` and `max_bytes`, into `retention`.
    pub fn retention(&mut self, retention: &mut Retention) -> Result<()> {
        if let Some(d) = self.duration("max_age")? {
            retention.max_age = d;
        }
        if let Some(b) = self.bytes("max_bytes")? {
            retention.max_bytes = b;
        }
        Ok(())
    }

    /// The shared keys `tls_ca`, `tls_cert` and `tls_key`, into `tls`.
    pub fn tls(&mut self, tls: &mut TlsFiles) {
        if let Some(p) = self.path("tls_ca") {
            tls.ca = Some(p);
        }
        if let Some(p) = self.path("tls_cert") {
            tls.client_cert = Some(p);
        }
        if let Some(p) = self.path("tls_key") {
            tls.client_key = Some(p);
        }
    }

    /// Every key starting with `prefix` (e.g. `librdkafka.`), with the prefix
    /// removed, for a backend that passes its client's own settings through.
    pub fn passthrough(&mut self, prefix: &'static str) -> Vec<(String, String)> {
        self.known.push(prefix);
        let (mut taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(k, _)| k.starts_with(prefix) && k.len() > prefix.len());
        self.pairs = kept;
        for (k, _) in &mut taken {
            k.drain(..prefix.len());
        }
        taken
    }

    /// Refuse any key no one asked for, naming the keys this backend knows.
    pub fn finish(self) -> Result<()> {
        if self.pairs.is_empty() {
            return Ok(());
        }
        let unknown: Vec<&str> = self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        let mut known = self.known.clone();
        known.dedup();
        let known: Vec<String> = known
            .iter()
            .map(|k| {
                if k.ends_with('.') {
                    format!("{k}*")
                } else {
                    k.to_string()
                }
            })
            .collect();
        Err(Error::invalid_input(
            self.transport,
            format!(
                "unknown URL key{} {}: the {} transport knows {}",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", "),
                self.transport,
                known.join(", ")
            ),
        ))
    }
}

fn parse_duration(v: &str) -> Option<Duration> {
    v.parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .or_else(|| humantime::parse_duration(v).ok())
}

/// Builder methods for the shared settings, the same names on every backend.
///
/// `config_builders!(MyConfig: prefix, retention, dedup_window,
/// connect_timeout, tls, credentials)` adds, for each part named, inherent
/// methods on `MyConfig` that set its fields:
///
/// | part | methods | field |
/// |---|---|---|
/// | `prefix` | `prefix(Subject)` | `prefix: Subject` |
/// | `retention` | `max_age(Duration)`, `max_bytes(u64)`, `retention(Retention)` | `retention: Retention` |
/// | `dedup_window` | `dedup_window(Duration)` | `dedup_window: Duration` |
/// | `connect_timeout` | `connect_timeout(Duration)` | `connect_timeout: Duration` |
/// | `tls` | `tls_ca(path)`, `tls_client_cert(path)`, `tls_client_key(path)` | `tls: TlsFiles` |
/// | `credentials` | `user_password(user, password)`, `token(secret)` | `credentials: Credentials` |
/// | `from_url` | `impl FromStr` calling `Self::from_url(&str) -> Result<Self>` | |
///
/// ```
/// use std::time::Duration;
/// use qis_core::config::Retention;
/// use qis_core::Subject;
///
/// #[derive(Default)]
/// pub struct MyConfig {
///     pub prefix: Subject,
///     pub retention: Retention,
/// }
/// qis_core::config_builders!(MyConfig: prefix, retention);
///
/// let c = MyConfig::default().max_age(Duration::from_secs(60));
/// assert_eq!(c.retention.max_age, Duration::from_secs(60));
/// ```
#[macro_export]
macro_rules! config_builders {
    ($ty:ty: $($part:ident),+ $(,)?) => {
        $( $crate::config_builders!(@part $ty, $part); )+
    };
    (@part $ty:ty, prefix) => {
        impl $ty {
            /// Store under another subject prefix (default `qis.iot`).
            pub fn prefix(mut self, prefix: $crate::Subject) -> Self {
                self.prefix = prefix;
                self
            }
        }
    };
    (@part $ty:ty, retention) => {
        impl $ty {
            /// Retention by age: packets older than this are removed (default 24 h).
            pub fn max_age(mut self, max_age: ::std::time::Duration) -> Self {
                self.retention.max_age = max_age;
                self
            }
            /// Retention by size: past this many bytes the oldest packets are removed (default 50 MiB).
            pub fn max_bytes(mut self, max_bytes: u64) -> Self {
                self.retention.max_bytes = max_bytes;
                self
            }
            /// Both retention limits at once.
            pub fn retention(mut self, retention: $crate::config::Retention) -> Self {
                self.retention = retention;
                self
            }
        }
    };
    (@part $ty:ty, dedup_window) => {
        impl $ty {
            /// How long a packet id is remembered to recognise a re-deposit (default 2 min).
            pub fn dedup_window(mut self, window: ::std::time::Duration) -> Self {
                self.dedup_window = window;
                self
            }
        }
    };
    (@part $ty:ty, connect_timeout) => {
        impl $ty {
            /// How long connecting may take (default 5 s).
            pub fn connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
                self.connect_timeout = timeout;
                self
            }
        }
    };
    (@part $ty:ty, tls) => {
        impl $ty {
            /// Trust the CA certificates in this PEM file for the server's certificate.
            pub fn tls_ca(mut self, path: impl Into<::std::path::PathBuf>) -> Self {
                self.tls.ca = Some(path.into());
                self
            }
            /// Present this PEM client certificate (mutual TLS; give the key too).
            pub fn tls_client_cert(mut self, path: impl Into<::std::path::PathBuf>) -> Self {
                self.tls.client_cert = Some(path.into());
                self
            }
            /// The PEM key of the client certificate.
            pub fn tls_client_key(mut self, path: impl Into<::std::path::PathBuf>) -> Self {
                self.tls.client_key = Some(path.into());
                self
            }
        }
    };
    (@part $ty:ty, from_url) => {
        impl ::std::str::FromStr for $ty {
            type Err = $crate::Error;
            /// Parse a URL, as [`Self::from_url`] does.
            fn from_str(url: &str) -> $crate::Result<Self> {
                <$ty>::from_url(url)
            }
        }
    };
    (@part $ty:ty, credentials) => {
        impl $ty {
            /// Log in with a user name and password.
            pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
                self.credentials.user = Some(user.into());
                self.credentials.password = Some(password.into());
                self
            }
            /// Log in with a token (a lone secret).
            pub fn token(mut self, token: impl Into<String>) -> Self {
                self.credentials.token = Some(token.into());
                self
            }
        }
    };
}

/// Plain builder setters, one per field, each with the doc comment given:
/// `setters!(MyConfig { /// doc
/// batch: usize, … })` adds `pub fn batch(mut self, batch: usize) -> Self`.
/// A field written `name: impl Into<T>` takes anything that converts into
/// its type `T`; one written `name: Option<T>` takes `impl Into<T>` and sets
/// `Some`.
///
/// ```
/// use std::path::PathBuf;
///
/// #[derive(Default)]
/// pub struct MyConfig {
///     pub batch: usize,
///     pub label: String,
///     pub dump: Option<PathBuf>,
/// }
/// qis_core::setters!(MyConfig {
///     /// Most packets per batch.
///     batch: usize,
///     /// A label for logs.
///     label: impl Into<String>,
///     /// Where to write a dump.
///     dump: Option<PathBuf>,
/// });
/// let c = MyConfig::default().batch(5).label("edge").dump("/tmp/d");
/// assert_eq!((c.batch, c.label.as_str()), (5, "edge"));
/// assert_eq!(c.dump, Some(PathBuf::from("/tmp/d")));
/// ```
#[macro_export]
macro_rules! setters {
    ($ty:ty { $($fields:tt)* }) => {
        impl $ty {
            $crate::setters!(@fn $($fields)*);
        }
    };
    (@fn) => {};
    (@fn $(#[$doc:meta])* $field:ident : Option<$t:ty> $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub fn $field(mut self, $field: impl Into<$t>) -> Self {
            self.$field = Some($field.into());
            self
        }
        $crate::setters!(@fn $($($rest)*)?);
    };
    (@fn $(#[$doc:meta])* $field:ident : impl Into<$t:ty> $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub fn $field(mut self, $field: impl Into<$t>) -> Self {
            self.$field = $field.into();
            self
        }
        $crate::setters!(@fn $($($rest)*)?);
    };
    (@fn $(#[$doc:meta])* $field:ident : $t:ty $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub fn $field(mut self, $field: $t) -> Self {
            self.$field = $field;
            self
        }
        $crate::setters!(@fn $($($rest)*)?);
    };
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorKind;

    use super::*;

    fn url(s: &str) -> Result<ServerUrl> {
        ServerUrl::parse("t", s, &["x", "xs"], 7)
    }

    #[test]
    fn hosts_ports_and_user_info() {
        let u = url("x://a,b:9,[::1]:10/p%20q").unwrap();
        assert_eq!(
            u.hosts,
            [("a".into(), 7), ("b".into(), 9), ("::1".into(), 10)]
        );
        assert_eq!(u.path, "p q");
        assert_eq!(u.host_list(), "a:7,b:9,[::1]:10");
        let u = url("XS://us%40er:p%3Ass@h").unwrap();
        assert_eq!(u.scheme, "xs");
        assert_eq!(u.credentials.user.as_deref(), Some("us@er"));
        assert_eq!(u.credentials.password.as_deref(), Some("p:ss"));
        let u = url("x://:only@h").unwrap();
        assert_eq!(u.credentials.user, None);
        assert_eq!(u.credentials.password.as_deref(), Some("only"));
        assert_eq!(
            url("x://tok@h").unwrap().credentials.token.as_deref(),
            Some("tok")
        );
        assert!(!format!("{:?}", url("x://u:secret@h").unwrap().credentials).contains("secret"));
    }

    #[test]
    fn bad_urls_are_invalid_input() {
        for bad in [
            "x:/h",
            "y://h",
            "x://",
            "x://h:port",
            "x://h:70000",
            "x://a,,b",
            "x://h?a=1&a=2",
            "x://[::1",
        ] {
            let e = url(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
            assert_eq!(e.transport(), "t");
        }
    }

    #[test]
    fn typed_values() {
        let mut o = UrlOptions::parse(
            "t",
            "max_age=90&max_bytes=1KiB&dedup_window=2m&flag=on&n=12&mode=Fast&librdkafka.linger.ms=0",
        )
        .unwrap();
        let mut r = Retention::default();
        o.retention(&mut r).unwrap();
        assert_eq!(r.max_age, Duration::from_secs(90));
        assert_eq!(r.max_bytes, 1024);
        assert_eq!(
            o.duration("dedup_window").unwrap(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(o.boolean("flag").unwrap(), Some(true));
        assert_eq!(o.number::<u32>("n").unwrap(), Some(12));
        assert_eq!(o.choice("mode", &["fast", "slow"]).unwrap(), Some("fast"));
        assert_eq!(
            o.passthrough("librdkafka."),
            [("linger.ms".to_string(), "0".to_string())]
        );
        assert_eq!(o.duration("absent").unwrap(), None);
        o.finish().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        for (q, key) in [
            ("max_age=soon", "max_age"),
            ("max_bytes=lots", "max_bytes"),
            ("flag=maybe", "flag"),
        ] {
            let mut o = UrlOptions::parse("t", q).unwrap();
            let mut r = Retention::default();
            let e = o
                .retention(&mut r)
                .and_then(|_| o.boolean("flag").map(|_| ()))
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().contains(key), "{e}");
        }
    }

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
