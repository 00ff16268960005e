//! Connecting: the client (credentials, TLS files), the connection manager,
//! the Lua scripts.

use std::sync::Arc;
use std::time::Duration;

use qis_core::{Checked, Error, ErrorKind, Result, TransportInfo};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use tokio::sync::watch;

use crate::config::RedisConfig;
use crate::error::{redacted, redis_error};
use crate::keys::Keys;
use crate::retention::{self, spawn_sweep, Retainer};
use crate::{consumer, deposit, Inner, RedisTransport, CAPABILITIES, NAME};

impl RedisTransport {
    /// Connect to Redis and return the transport behind the checking layer
    /// ([`Checked`]). Fails with [`ErrorKind::Unavailable`] when the server
    /// cannot be reached or refuses the credentials, with
    /// [`ErrorKind::Unsupported`] for `rediss://` without the crate feature
    /// `tls`.
    pub async fn connect(config: RedisConfig) -> Result<Checked<Self>> {
        config.check()?;
        if config.is_tls() {
            #[cfg(feature = "tls")]
            {
                // Several transports may race here; only the first install wins.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::new(
                ErrorKind::Unsupported,
                NAME,
                "rediss:// (TLS) needs the qis-transport-redis crate feature `tls` (the qis facade's `redis` feature has it): enable it, or use redis://",
            ));
        }
        let shown = redacted(&config.url);
        let client = client(&config)?;
        let cm_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connect_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), cm_config)
            .await
            .map_err(|e| redis_error(e, &format!("could not connect to Redis at {shown}")))?;
        // Load the scripts once, so the first batch does not meet NOSCRIPT
        // on every chunk in flight (after a server restart that happens once).
        let mut c = conn.clone();
        for script in [
            &*deposit::DEPOSIT,
            &*consumer::FETCH,
            &*consumer::CREATE,
            &*consumer::NAK,
            &*consumer::BACKLOG,
            &*retention::TRIM,
        ] {
            script
                .load_async(&mut c)
                .await
                .map_err(|e| redis_error(e, "loading the Lua scripts failed"))?;
        }
        let keys = Keys::new(config.prefix.as_str());
        tracing::debug!(url = %shown, prefix = %config.prefix, "connected to Redis");
        let retainer = Retainer::new(conn.clone(), keys.clone(), &config);
        let (closed, closed_rx) = watch::channel(false);
        let sweep = spawn_sweep(retainer.clone(), config.sweep_interval, closed_rx);
        Ok(Checked::new(RedisTransport {
            inner: Arc::new(Inner {
                info: TransportInfo::new(NAME, CAPABILITIES, config.prefix.clone()),
                keys,
                config,
                client,
                conn,
                retainer,
                closed,
                sweep,
            }),
        }))
    }
}

/// The client for `config`: its URL, with the credentials and TLS files.
fn client(config: &RedisConfig) -> Result<redis::Client> {
    let unusable = |e: redis::RedisError| {
        Error::new(
            ErrorKind::InvalidInput,
            NAME,
            format!("{} is not a usable Redis URL: {e}", redacted(&config.url)),
        )
        .with_source(e)
    };
    let info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(unusable)?;
    let mut settings = info.redis_settings().clone();
    let c = &config.credentials;
    if let Some(user) = &c.user {
        settings = settings.set_username(user);
    }
    if let Some(secret) = c.password.as_ref().or(c.token.as_ref()) {
        settings = settings.set_password(secret);
    }
    let info = info.set_redis_settings(settings);
    if config.tls.is_set() {
        tls_client(info, config)?.map_err(unusable)
    } else {
        redis::Client::open(info).map_err(unusable)
    }
}

/// A client trusting the CA file given and presenting the client
/// certificate given.
#[cfg(feature = "tls")]
fn tls_client(
    info: redis::ConnectionInfo,
    config: &RedisConfig,
) -> Result<redis::RedisResult<redis::Client>> {
    fn read(key: &str, path: &std::path::Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!("cannot read {key} {}: {e}", path.display()),
            )
            .with_source(e)
        })
    }
    let tls = &config.tls;
    let root_cert = tls.ca.as_deref().map(|p| read("tls_ca", p)).transpose()?;
    let client_tls = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("tls_cert", cert)?,
            client_key: read("tls_key", key)?,
        }),
        _ => None,
    };
    Ok(redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    ))
}

#[cfg(not(feature = "tls"))]
fn tls_client(
    _info: redis::ConnectionInfo,
    _config: &RedisConfig,
) -> Result<redis::RedisResult<redis::Client>> {
    Err(Error::new(
        ErrorKind::Unsupported,
        NAME,
        "tls_ca, tls_cert and tls_key need the qis-transport-redis crate feature `tls`: enable it",
    ))
}
