//! Server URLs and their query options, parsed the same way for every
//! backend.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{Credentials, Retention, TlsFiles};
use crate::error::{Error, Result};
use crate::subject::Subject;

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
}
