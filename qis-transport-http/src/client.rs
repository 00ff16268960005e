//! The HTTP client: one keep-alive connection pool per transport, the bearer
//! token on every request, TLS with rustls, and gateway answers turned into
//! values or typed errors.

use std::sync::Arc;
use std::time::Duration;

use qis_core::{Error, ErrorKind, Result};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;

use crate::config::HttpConfig;
use crate::wire::{error_kind, ErrorBody};
use crate::NAME;

/// The gateway's API as this transport calls it.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: Arc<str>,
    token: Option<Arc<str>>,
    pub(crate) request_timeout: Duration,
}

impl Api {
    pub(crate) fn new(config: &HttpConfig) -> Result<Api> {
        config.check()?;
        let tls = tls_config(config)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidInput,
                    NAME,
                    format!("cannot set up the HTTP client: {e}"),
                )
                .with_source(e)
            })?;
        Ok(Api {
            http,
            base: config.base_url.trim_end_matches('/').into(),
            token: config.credentials.token.as_deref().map(Arc::from),
            request_timeout: config.request_timeout,
        })
    }

    /// A request to `path` (`/v1/…`) with the token; it may take `wait`
    /// plus the request timeout.
    pub(crate) fn request(&self, method: Method, path: &str, wait: Duration) -> RequestBuilder {
        self.stream(method, path)
            .timeout(wait.saturating_add(self.request_timeout))
    }

    /// A request with no overall time limit (an event stream).
    pub(crate) fn stream(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Send `request`; a 2xx answer's JSON body as `T`, anything else as the
    /// gateway's typed error.
    pub(crate) async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(transport_error)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                NAME,
                format!("the gateway's answer is not what this client expects: {e}"),
            )
            .with_source(e)
        })
    }

    /// Send `request`; the response if 2xx, else the gateway's typed error.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await.map_err(transport_error)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(answer_error(response).await)
        }
    }
}

/// A failure to exchange a request with the gateway.
pub(crate) fn transport_error(e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_builder() {
        ErrorKind::InvalidInput
    } else if e.is_decode() {
        ErrorKind::Backend
    } else {
        ErrorKind::Unavailable
    };
    let what = if e.is_connect() {
        "cannot reach the gateway"
    } else if e.is_timeout() {
        "the gateway did not answer in time"
    } else {
        "the exchange with the gateway failed"
    };
    let url = e
        .url()
        .map(|u| format!(" ({}://{}{})", u.scheme(), host_port(u), u.path()))
        .unwrap_or_default();
    Error::new(kind, NAME, format!("{what}{url}: {e}")).with_source(e)
}

fn host_port(u: &reqwest::Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

/// The typed error of a non-2xx answer: the kind and message of its JSON
/// body, or, from a proxy that answered in its own words, a kind from the
/// status.
pub(crate) async fn answer_error(response: Response) -> Error {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody { error }) => {
            let by = error
                .transport
                .map(|t| format!(" ({t})"))
                .unwrap_or_default();
            Error::new(
                error_kind(&error.kind),
                NAME,
                format!("gateway{by}: {}", error.message),
            )
        }
        Err(_) => {
            let kind = match status {
                StatusCode::BAD_REQUEST
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNPROCESSABLE_ENTITY => ErrorKind::InvalidInput,
                StatusCode::NOT_FOUND => ErrorKind::NotFound,
                StatusCode::CONFLICT => ErrorKind::Conflict,
                StatusCode::NOT_IMPLEMENTED => ErrorKind::Unsupported,
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Unavailable,
                StatusCode::GATEWAY_TIMEOUT => ErrorKind::Timeout,
                _ => ErrorKind::Backend,
            };
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(200).collect();
            Error::new(
                kind,
                NAME,
                format!("HTTP {status} from the gateway: {text}"),
            )
        }
    }
}

/// The rustls client settings: the CA in `tls_ca` or the system's trust
/// store, and the client certificate if given. Always built (with the ring
/// provider), so no process-wide default provider is needed.
fn tls_config(config: &HttpConfig) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("TLS protocol versions", e))?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &config.tls.ca {
        for cert in
            CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, "CA certificates", e))?
        {
            let cert = cert.map_err(|e| file_error(ca, "CA certificates", e))?;
            roots
                .add(cert)
                .map_err(|e| tls_error(&format!("the CA certificate in {}", ca.display()), e))?;
        }
    } else if config.is_https() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                "the system's trust store has no CA certificates: give the gateway's CA with ?tls_ca=PATH",
            ));
        }
    }
    let builder = builder.with_root_certificates(roots);
    let tls = match (&config.tls.client_cert, &config.tls.client_key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error(cert, "a client certificate", e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| file_error(cert, "a client certificate", e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_error(key, "a private key", e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error("the client certificate and key", e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tls)
}

fn file_error(
    path: &std::path::Path,
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        NAME,
        format!("cannot read {what} from {}: {e}", path.display()),
    )
    .with_source(e)
}

fn tls_error(what: &str, e: rustls::Error) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        NAME,
        format!("{what} cannot be used for TLS: {e}"),
    )
    .with_source(e)
}
