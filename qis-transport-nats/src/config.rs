//! [`NatsConfig`]: where the servers are, how to log in, and the stream's
//! limits. Parsing URLs is in `url.rs`; turning the login and TLS settings
//! into client options is in `connect.rs`.

use std::path::PathBuf;
use std::time::Duration;

use qis_core::config::{
    Credentials, Retention, TlsFiles, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DEDUP_WINDOW,
};
use qis_core::{Error, Result, Subject};

use crate::NAME;

/// The seed's stream name, used for the default prefix `qis.iot`.
pub const DEFAULT_STREAM: &str = "QIS_OUTCOMES";

/// The default port of a NATS server.
pub const DEFAULT_PORT: u16 = 4222;

/// The default of [`NatsConfig::retry_for`]: a JetStream cluster's Raft
/// election timeout is 4 to 9 s, so a deposit retried for 15 s outlasts
/// the election that follows the loss of a stream leader.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(15);

/// The most replicas a JetStream stream can have.
pub const MAX_REPLICAS: usize = 5;

/// Where JetStream keeps the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsStorage {
    /// On disk: survives a server restart (the default, as the seed).
    #[default]
    File,
    /// In the server's memory: lost when it restarts.
    Memory,
}

/// How to reach a NATS server (or cluster) and how the JetStream stream is
/// laid out.
///
/// Defaults follow the seed: stream `QIS_OUTCOMES` on `qis.iot.>`, file
/// storage, 24 h max age, 50 MiB max bytes, and a 2-minute de-duplication
/// window (the shared defaults of [`qis_core::config`]). Every field is
/// public; the builder methods are conveniences (`prefix`, `max_age`,
/// `max_bytes`, `retention`, `dedup_window`, `connect_timeout`, `tls_ca`,
/// `tls_client_cert`, `tls_client_key`, `user_password` and `token` are the
/// shared ones of [`qis_core::config_builders!`]).
///
/// ```
/// use std::time::Duration;
/// use qis_transport_nats::NatsConfig;
///
/// let config: NatsConfig = "nats://alice:secret@10.0.0.1:14222,10.0.0.2?stream=EDGE&max_age=1h"
///     .parse()
///     .unwrap();
/// assert_eq!(config.credentials.user.as_deref(), Some("alice"));
/// assert_eq!(config.servers, ["nats://10.0.0.1:14222", "nats://10.0.0.2:4222"]);
/// assert_eq!(config.stream_name(), "EDGE");
/// assert_eq!(config.retention.max_age, Duration::from_secs(3600));
///
/// let config = NatsConfig::default().dedup_window(Duration::from_secs(30));
/// assert_eq!(config.servers, ["nats://127.0.0.1:4222"]);
/// ```
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server addresses, `nats://host:port` or `tls://host:port`: the seed
    /// servers of one cluster, tried in turn (the client learns the rest of
    /// the cluster from them). Credentials never go here: they are in
    /// [`Self::credentials`].
    pub servers: Vec<String>,
    /// Subject prefix every deposit lies under (default `qis.iot`). Unless
    /// [`Self::stream`] is set, the stream name follows it.
    pub prefix: Subject,
    /// The JetStream stream name. `None` (the default) derives it from the
    /// prefix with [`stream_name_for`]: `QIS_OUTCOMES` for `qis.iot`.
    pub stream: Option<String>,
    /// Where the stream is stored (default [`NatsStorage::File`]).
    pub storage: NatsStorage,
    /// The stream's retention by age and by size (defaults 24 h, 50 MiB).
    pub retention: Retention,
    /// An identical deposit (same packet id, sent as `Nats-Msg-Id`) within
    /// this window is recognised and not stored again (default 2 min; at
    /// most the max age, as the server requires).
    pub dedup_window: Duration,
    /// How many publish acknowledgements a batch deposit keeps in flight
    /// (default 1024).
    pub ack_window: usize,
    /// How long to wait for the server on a request or a publish ack
    /// (default 5 s).
    pub request_timeout: Duration,
    /// How many servers of a JetStream cluster keep the stream (default 1;
    /// 1 to 5). Durable consumers follow their stream, so with 3 both the
    /// packets and every consumer's acks survive the loss of any one
    /// server. More replicas than the cluster has servers is refused when
    /// the stream is created; a single server takes only 1.
    pub replicas: usize,
    /// How long a deposit keeps trying after an attempt that failed in a
    /// way a cluster's leader election explains (no ack in time, "no
    /// responders", a lost connection, "temporarily unavailable"), always
    /// with the same `Nats-Msg-Id` so the server stores the packet once
    /// (default 15 s, enough for a three-node cluster to elect a new stream
    /// leader; zero: never retry), but never longer than half the
    /// [`Self::dedup_window`], so the server still recognises a retry of a
    /// packet it stored after all. After that the deposit fails with
    /// [`ErrorKind::Timeout`](qis_core::ErrorKind::Timeout) or [`ErrorKind::Unavailable`](qis_core::ErrorKind::Unavailable): the packet may
    /// or may not be stored, and depositing it again is safe within the
    /// window. A deposit returns within about `retry_for` plus twice
    /// `request_timeout`. Connecting (creating or checking the stream) and
    /// opening a consumer ask again for as long when the cluster answers
    /// late or says it is busy.
    pub retry_for: Duration,
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
    /// User and password, or a token (from the URL's `user:password@` or
    /// `token@`). Its `Debug` output never shows a secret.
    pub credentials: Credentials,
    /// A `.creds` file (JWT and NKey seed) for decentralised auth (URL key
    /// `creds`).
    pub creds: Option<PathBuf>,
    /// PEM files: CA certificates to trust, client certificate and key for
    /// mutual TLS.
    pub tls: TlsFiles,
    /// Refuse to talk to the server without TLS (set by a `tls://` URL).
    pub require_tls: bool,
    /// Connection name shown by the server's monitoring (default `qis`).
    pub connection_name: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec![format!("nats://127.0.0.1:{DEFAULT_PORT}")],
            prefix: Subject::default(),
            stream: None,
            storage: NatsStorage::File,
            retention: Retention::default(),
            dedup_window: DEFAULT_DEDUP_WINDOW,
            ack_window: 1024,
            request_timeout: Duration::from_secs(5),
            replicas: 1,
            retry_for: DEFAULT_RETRY_FOR,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_ack_pending: 100_000,
            confirm_acks: false,
            credentials: Credentials::default(),
            creds: None,
            tls: TlsFiles::default(),
            require_tls: false,
            connection_name: "qis".to_string(),
        }
    }
}

qis_core::config_builders!(NatsConfig: prefix, retention, dedup_window, connect_timeout, tls, credentials, from_url);

qis_core::setters!(NatsConfig {
    /// Set the stream name.
    stream: Option<String>,
    /// Set the storage type.
    storage: NatsStorage,
    /// Set how many publish acks a batch deposit keeps in flight.
    ack_window: usize,
    /// Set the request / publish-ack timeout.
    request_timeout: Duration,
    /// Set how many servers of the cluster keep the stream and its durable
    /// consumers (1 to 5).
    replicas: usize,
    /// Set how long a deposit keeps retrying through a leader election.
    retry_for: Duration,
    /// Set how many deliveries a consumer may have unacknowledged at once.
    max_ack_pending: i64,
    /// Make `ack()` and `nak()` wait for the server's confirmation.
    confirm_acks: bool,
    /// Log in with a `.creds` file (JWT and NKey seed).
    creds: Option<PathBuf>,
    /// Refuse to connect without TLS.
    require_tls: bool,
    /// The connection name the server's monitoring shows.
    connection_name: impl Into<String>,
});

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

impl NatsConfig {
    /// Connect to these servers (`nats://host:port` or `tls://host:port`),
    /// the seeds of one cluster.
    pub fn servers<S: Into<String>>(mut self, servers: impl IntoIterator<Item = S>) -> Self {
        self.servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// The stream name in effect: [`Self::stream`] or the one derived from the prefix.
    pub fn stream_name(&self) -> String {
        self.stream
            .clone()
            .unwrap_or_else(|| stream_name_for(&self.prefix))
    }

    /// The stream's subject filter, `{prefix}.>`.
    pub fn stream_subject(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The servers as one string, for messages.
    pub(crate) fn server_list(&self) -> String {
        self.servers.join(", ")
    }

    /// Check the values a server would refuse, with a message saying what to change.
    pub fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(Error::invalid_input(
                NAME,
                "no server is given: give at least one, e.g. nats://127.0.0.1:4222",
            ));
        }
        for s in &self.servers {
            s.parse::<async_nats::ServerAddr>().map_err(|e| {
                Error::invalid_input(NAME, format!(
                    "server {s:?} is not a NATS server address: use nats://host:port or tls://host:port"
                ))
                .with_source(e)
            })?;
        }
        let stream = self.stream_name();
        if !qis_core::backend::is_plain_name(&stream, 255) {
            return Err(Error::invalid_input(
                NAME,
                format!(
                "stream name {stream:?} is not valid: use 1 to 255 of A-Z, a-z, 0-9, '_' or '-'"
            ),
            ));
        }
        self.retention.check(NAME)?;
        if self.retention.max_bytes > i64::MAX as u64 {
            return Err(Error::invalid_input(
                NAME,
                format!(
                    "max_bytes {} is more than a NATS stream can hold: give a size up to 8 EiB",
                    self.retention.max_bytes
                ),
            ));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(Error::invalid_input(NAME, format!(
                "replicas {} is not possible: a JetStream stream has 1 to {MAX_REPLICAS} replicas (3 survive the loss of one server)",
                self.replicas
            )));
        }
        if self.ack_window == 0 {
            return Err(Error::invalid_input(
                NAME,
                "ack_window is zero: keep at least one publish ack in flight",
            ));
        }
        let c = &self.credentials;
        if c.password.is_some() != c.user.is_some() {
            return Err(Error::invalid_input(
                NAME,
                "give both user and password (user:password@host), or neither",
            ));
        }
        self.tls.check(NAME)
    }
}

#[cfg(test)]
mod tests {
    use qis_core::ErrorKind;

    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let c = NatsConfig::default();
        assert_eq!(c.stream_name(), "QIS_OUTCOMES");
        assert_eq!(c.stream_subject(), "qis.iot.>");
        assert_eq!(c.retention.max_age, Duration::from_secs(86_400));
        assert_eq!(c.retention.max_bytes, 50 * 1024 * 1024);
        assert_eq!(c.dedup_window, Duration::from_secs(120));
        assert_eq!(c.storage, NatsStorage::File);
        assert!(c.ack_window >= 256);
        assert_eq!(c.replicas, 1);
        assert_eq!(c.retry_for, DEFAULT_RETRY_FOR);
        c.validate().unwrap();
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

    #[test]
    fn validate_names_what_to_change() {
        for c in [
            NatsConfig::default().servers(Vec::<String>::new()),
            NatsConfig::default().servers(["http://h:1"]),
            NatsConfig::default().stream("a.b"),
            NatsConfig::default().max_age(Duration::ZERO),
            NatsConfig::default().max_bytes(0),
            NatsConfig::default().max_bytes(u64::MAX),
            NatsConfig::default().ack_window(0),
            NatsConfig::default().replicas(0),
            NatsConfig::default().replicas(6),
            NatsConfig::default().tls_client_cert("c.pem"),
            NatsConfig {
                credentials: Credentials {
                    password: Some("p".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        ] {
            let e = c.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{c:?}");
            assert_eq!(e.transport(), NAME);
        }
    }
}
