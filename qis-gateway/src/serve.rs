//! Listening (HTTP or HTTPS), the background tasks, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use qis_core::{DynTransport, Error, ErrorKind, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

use crate::config::{GatewayConfig, TlsIdentity};
use crate::state::{AppState, Shared};
use crate::{routes, view, NAME};

/// Longest pause between sweeps of idle sessions and expired handles.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A gateway serving on its address. Stop it with [`shutdown`](Self::shutdown)
/// (or run it until a signal with [`run_until`](Self::run_until)): dropping
/// it leaves the server running until the runtime ends.
pub struct RunningGateway {
    addr: SocketAddr,
    https: bool,
    state: Shared,
    handle: Handle<SocketAddr>,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningGateway")
            .field("url", &self.url())
            .field("transport", &self.state.transport.name())
            .finish_non_exhaustive()
    }
}

/// Serve `transport` as configured: bind, start the background tasks (the
/// dashboard's view, the sweep of idle sessions) and return once listening.
/// The gateway owns the transport from now on and closes it at shutdown.
///
/// Binding fails with [`ErrorKind::Unavailable`] (the address is in use or
/// not this machine's); unreadable or mismatched TLS files, or limits of 0,
/// with [`ErrorKind::InvalidInput`].
pub async fn start(transport: DynTransport, config: GatewayConfig) -> Result<RunningGateway> {
    config.check()?;
    let tls = match &config.tls {
        Some(identity) => Some(tls_config(identity)?),
        None => None,
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            NAME,
            format!("cannot listen on {}: {e}", config.listen),
        )
        .with_source(e)
    })?;
    let addr = listener.local_addr().map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            NAME,
            format!("cannot read the bound address: {e}"),
        )
    })?;
    let bound = |e: std::io::Error| {
        Error::new(
            ErrorKind::Unavailable,
            NAME,
            format!("cannot serve on {addr}: {e}"),
        )
    };
    let state: Shared = Arc::new(AppState::new(transport, config));
    let app = routes::router(state.clone()).into_make_service();
    let handle = Handle::new();
    let https = tls.is_some();
    let server = match tls {
        Some(tls) => {
            let server = axum_server::tls_rustls::from_tcp_rustls(listener, tls)
                .map_err(bound)?
                .handle(handle.clone());
            tokio::spawn(server.serve(app))
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .map_err(bound)?
                .handle(handle.clone());
            tokio::spawn(server.serve(app))
        }
    };
    if handle.listening().await.is_none() {
        let why = match server.await {
            Ok(Err(e)) => e.to_string(),
            _ => "the server stopped at once".to_string(),
        };
        return Err(Error::new(
            ErrorKind::Unavailable,
            NAME,
            format!("cannot serve on {addr}: {why}"),
        ));
    }
    let mut tasks = vec![tokio::spawn(sweep(state.clone()))];
    if !state.view_from_deposits {
        tasks.push(tokio::spawn(view::feed(state.clone())));
    }
    tracing::info!(%addr, https, transport = state.transport.name(), prefix = %state.transport.prefix(), "gateway listening");
    Ok(RunningGateway {
        addr,
        https,
        state,
        handle,
        server,
        tasks,
    })
}

impl RunningGateway {
    /// The address it listens on (with the port chosen when asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:8080` (or `https://…`): what an
    /// `http://` transport connects to, and where the dashboard is.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.addr
        )
    }

    /// The transport it serves.
    pub fn transport(&self) -> &DynTransport {
        &self.state.transport
    }

    /// Serve until `signal` completes (Ctrl-C, SIGTERM) or the server fails,
    /// then [`shutdown`](Self::shutdown).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        let failed = tokio::select! {
            _ = signal => None,
            ended = &mut self.server => Some(match ended {
                Ok(Ok(())) => "the server stopped".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            }),
        };
        if let Some(why) = failed {
            let _ = self.close_backend().await;
            return Err(Error::new(
                ErrorKind::Unavailable,
                NAME,
                format!("the gateway on {} stopped: {why}", self.addr),
            ));
        }
        self.shutdown().await
    }

    /// Shut down gracefully: stop accepting connections, end event streams
    /// and answer waiting long-polls at once, let the requests in flight
    /// finish (up to `shutdown_grace`), then close every consumer session
    /// (flushing its acks) and the transport.
    pub async fn shutdown(mut self) -> Result<()> {
        tracing::info!(addr = %self.addr, "gateway shutting down");
        self.state.shutdown.cancel();
        self.handle
            .graceful_shutdown(Some(self.state.config.shutdown_grace));
        match (&mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "the server task failed"),
        }
        self.close_backend().await
    }

    async fn close_backend(&mut self) -> Result<()> {
        self.state.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let mut first_error = None;
        for session in self.state.sessions.drain() {
            if let Err(e) = session.close().await {
                tracing::warn!(session = %session.id, error = %e, "could not close a consumer session");
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = self.state.transport.close().await {
            first_error.get_or_insert(e);
        }
        tracing::info!(addr = %self.addr, "gateway stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// Close idle sessions and drop expired handles, until shutdown.
async fn sweep(s: Shared) {
    let every = (s.config.session_idle / 4).clamp(Duration::from_millis(100), SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = s.shutdown.cancelled() => return,
        }
        for session in s.sessions.sweep() {
            tracing::debug!(session = %session.id, consumer = %session.config.name, "closing an idle consumer session");
            if let Err(e) = session.close().await {
                tracing::warn!(session = %session.id, error = %e, "could not close an idle consumer session");
            }
        }
    }
}

/// rustls server settings from PEM files, with the ring provider, HTTP/1.1.
fn tls_config(identity: &TlsIdentity) -> Result<RustlsConfig> {
    let read = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::InvalidInput,
            NAME,
            format!("cannot read the TLS {what} from {}: {e}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(&identity.cert)
        .map_err(|e| read("certificate", &identity.cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| read("certificate", &identity.cert, &e))?;
    if certs.is_empty() {
        return Err(read(
            "certificate",
            &identity.cert,
            &"no certificate in the file",
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(&identity.key).map_err(|e| read("key", &identity.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!(
                    "the TLS certificate {} and key {} cannot be used together: {e}",
                    identity.cert.display(),
                    identity.key.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}
