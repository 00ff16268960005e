//! What a gateway listens on, whom it lets in, and its limits.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qis_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::NAME;

/// Default address: loopback, port 8080.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default largest request body: 1 MiB (a full batch of 1,000 packets fits).
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// Default most packets in one batch deposit.
pub const DEFAULT_MAX_BATCH: usize = 1000;
/// Default most deliveries one fetch returns.
pub const DEFAULT_MAX_FETCH: usize = 1000;
/// Default longest fetch wait (a long-poll).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
/// Default most long-polls and event streams served at once.
pub const DEFAULT_MAX_STREAMS: usize = 256;
/// Default most consumer sessions open at once.
pub const DEFAULT_MAX_SESSIONS: usize = 1024;
/// Default most unacked deliveries one consumer session holds.
pub const DEFAULT_MAX_PENDING: usize = 10_000;
/// Default idle time after which a consumer session is closed.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(600);
/// Default window of the dashboard's and `/v1/synthesis`'s view: an agent
/// not heard from for longer does not vote.
pub const DEFAULT_VIEW_WINDOW: Duration = Duration::from_secs(3600);
/// Default time requests in flight may take to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How a gateway serves.
///
/// ```
/// use qis_gateway::{GatewayConfig, Tokens};
///
/// let config = GatewayConfig::default()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .tokens(Tokens::new(["s3cret"]).unwrap())
///     .max_batch(500);
/// assert!(config.tokens.required());
/// assert_eq!(config.max_batch, 500);
/// ```
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen (port 0: any free port; see
    /// [`RunningGateway::local_addr`](crate::RunningGateway::local_addr)).
    pub listen: SocketAddr,
    /// Bearer tokens of which a request to `/v1/…` must carry one; none:
    /// the API is open (fine on loopback, not beyond).
    pub tokens: Tokens,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsIdentity>,
    /// Largest request body, in bytes (larger: 413 `body_too_large`).
    pub max_body: u64,
    /// Most packets in one batch deposit (more: 413 `batch_too_large`).
    pub max_batch: usize,
    /// Most deliveries one fetch returns (a larger `max` is lowered).
    pub max_fetch: usize,
    /// Longest fetch wait (a longer `wait_ms` is lowered).
    pub max_wait: Duration,
    /// Most long-polls (fetches) and event streams served at once; one more
    /// is refused with 429 `busy`.
    pub max_streams: usize,
    /// Most consumer sessions open at once (one more: 429 `busy`).
    pub max_sessions: usize,
    /// Most unacked deliveries a consumer session holds; a fetch on a full
    /// session is refused with 429 `busy` until some are acked or nak-ed.
    pub max_pending: usize,
    /// A consumer session unused for this long is closed (its acks
    /// flushed); a client that comes back opens it again by name.
    pub session_idle: Duration,
    /// Agents not heard from within this window do not vote in the view's
    /// synthesis.
    pub view_window: Duration,
    /// At shutdown, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            tokens: Tokens::default(),
            tls: None,
            max_body: DEFAULT_MAX_BODY,
            max_batch: DEFAULT_MAX_BATCH,
            max_fetch: DEFAULT_MAX_FETCH,
            max_wait: DEFAULT_MAX_WAIT,
            max_streams: DEFAULT_MAX_STREAMS,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_pending: DEFAULT_MAX_PENDING,
            session_idle: DEFAULT_SESSION_IDLE,
            view_window: DEFAULT_VIEW_WINDOW,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),+ $(,)?) => {
        impl GatewayConfig {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )+
        }
    };
}

setters! {
    /// Where to listen.
    listen: SocketAddr,
    /// The bearer tokens to require.
    tokens: Tokens,
    /// Largest request body, in bytes.
    max_body: u64,
    /// Most packets in one batch.
    max_batch: usize,
    /// Most deliveries per fetch.
    max_fetch: usize,
    /// Longest fetch wait.
    max_wait: Duration,
    /// Most long-polls and event streams at once.
    max_streams: usize,
    /// Most consumer sessions at once.
    max_sessions: usize,
    /// Most unacked deliveries per session.
    max_pending: usize,
    /// Idle time after which a session is closed.
    session_idle: Duration,
    /// The view's window.
    view_window: Duration,
    /// Time for requests in flight at shutdown.
    shutdown_grace: Duration,
}

impl GatewayConfig {
    /// Serve HTTPS with the PEM certificate chain `cert` and key `key`.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some(TlsIdentity {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Refuse limits that cannot work (zero of anything).
    pub fn check(&self) -> Result<()> {
        let zero = [
            ("max_body", self.max_body == 0),
            ("max_batch", self.max_batch == 0),
            ("max_fetch", self.max_fetch == 0),
            ("max_streams", self.max_streams == 0),
            ("max_sessions", self.max_sessions == 0),
            ("max_pending", self.max_pending == 0),
            ("session_idle", self.session_idle.is_zero()),
            ("view_window", self.view_window.is_zero()),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(Error::invalid_input(
                NAME,
                format!("{name} is 0: give at least 1"),
            ));
        }
        Ok(())
    }
}

/// The certificate chain and key of an HTTPS gateway (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The bearer tokens a gateway accepts. Only their SHA-256 digests are
/// kept, and a presented token is compared by its digest, so neither the
/// tokens nor the time a comparison takes reveal them.
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.digests.len())
    }
}

impl Tokens {
    /// These tokens; an empty one, or one with whitespace or control
    /// characters, is [`ErrorKind::InvalidInput`](qis_core::ErrorKind::InvalidInput).
    pub fn new<I, S>(tokens: I) -> Result<Tokens>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut digests = Vec::new();
        for (i, t) in tokens.into_iter().enumerate() {
            let t = t.as_ref();
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid_input(
                    NAME,
                    format!(
                        "token {} is empty or contains whitespace: a bearer token is one word",
                        i + 1
                    ),
                ));
            }
            digests.push(digest(t));
        }
        Ok(Tokens { digests })
    }

    /// The tokens in `path`, one per line; blank lines and lines starting
    /// with `#` are skipped. A file without a token is an error: a gateway
    /// told to require tokens never starts open.
    pub fn from_file(path: &Path) -> Result<Tokens> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid_input(
                NAME,
                format!("cannot read the tokens file {}: {e}", path.display()),
            )
            .with_source(e)
        })?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err(Error::invalid_input(
                NAME,
                format!(
                    "the tokens file {} holds no token: one per line",
                    path.display()
                ),
            ));
        }
        Tokens::new(lines)
    }

    /// These and `other`'s.
    pub fn and(mut self, other: Tokens) -> Tokens {
        self.digests.extend(other.digests);
        self
    }

    /// Whether requests must carry a token.
    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether `token` is one of them.
    pub fn accepts(&self, token: &str) -> bool {
        let d = digest(token);
        self.digests.contains(&d)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use qis_core::ErrorKind;

    use super::*;

    #[test]
    fn tokens_from_a_file() {
        let tmp = qis_conformance::support::TempDir::new("gw-tokens");
        let dir = tmp.path();
        let path = dir.join("tokens");
        std::fs::write(&path, "# fleet A\nalpha\n\n  beta  \n").unwrap();
        let t = Tokens::from_file(&path).unwrap();
        assert!(t.accepts("alpha") && t.accepts("beta"));
        assert!(!t.accepts("gamma") && !t.accepts(""));
        std::fs::write(&path, "# nothing\n").unwrap();
        assert_eq!(
            Tokens::from_file(&path).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert!(Tokens::new(["two words"]).is_err());
        assert!(!format!("{t:?}").contains("alpha"));
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(GatewayConfig::default().check().is_ok());
        let e = GatewayConfig::default().max_batch(0).check().unwrap_err();
        assert!(e.message().contains("max_batch"), "{e}");
    }
}
