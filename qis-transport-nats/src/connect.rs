//! Connecting: the login (user and password, token, `.creds` file), TLS and
//! timeouts of a [`NatsConfig`] as async-nats client options.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qis_core::{Error, Result};

use crate::config::NatsConfig;
use crate::NAME;

/// Since when the client has had no server, as its connection events say
/// (`None`: connected). Fetches use it to tell a reconnect they can ride
/// out from a server that is gone.
#[derive(Debug, Default, Clone)]
pub(crate) struct Offline(Arc<Mutex<Option<Instant>>>);

impl Offline {
    fn set(&self, offline: bool) {
        let mut since = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (offline, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, _) => *since = None,
            (true, Some(_)) => {}
        }
    }

    /// How long the client has been without a server (zero: connected).
    pub(crate) fn for_how_long(&self) -> Duration {
        let since = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// The async-nats connect options `config` stands for; connection events
/// update `offline`.
pub(crate) async fn options(
    config: &NatsConfig,
    offline: &Offline,
) -> Result<async_nats::ConnectOptions> {
    let mut opts = match &config.creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|e| {
                Error::invalid_input(
                    NAME,
                    format!(
                        "could not read the credentials file {}: check the path and its contents",
                        path.display()
                    ),
                )
                .with_source(e)
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    let login = &config.credentials;
    if let (Some(u), Some(p)) = (&login.user, &login.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &login.token {
        opts = opts.token(t.clone());
    }
    if let Some(ca) = &config.tls.ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls.client_cert, &config.tls.client_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if config.require_tls {
        opts = opts.require_tls(true);
    }
    Ok(opts
        .name(&config.connection_name)
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None::<usize>)
        .event_callback({
            let offline = offline.clone();
            move |event| {
                let offline = offline.clone();
                async move { on_event(&offline, event) }
            }
        }))
}

fn on_event(offline: &Offline, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            offline.set(false);
            tracing::info!(transport = NAME, "connected");
        }
        async_nats::Event::Disconnected => {
            offline.set(true);
            tracing::warn!(
                transport = NAME,
                "disconnected from the NATS server; reconnecting"
            )
        }
        other => tracing::debug!(transport = NAME, event = %other, "connection event"),
    }
}
