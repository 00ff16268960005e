//! The HTTP side: Chroma's API v2 over reqwest, and its errors as QIS errors.

use std::time::Duration;

use qis_core::{Error, ErrorKind, Result};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::config::ChromaConfig;
use crate::NAME;

/// A client for one server, tenant and database.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// `{base}/api/v2`.
    api: String,
    /// `{api}/tenants/{tenant}/databases/{database}`.
    db: String,
    tenant: String,
    database: String,
}

/// Chroma's error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

fn read_ca(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            NAME,
            format!("cannot read tls_ca {}", path.display()),
        )
        .with_source(e)
    })?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            NAME,
            format!("tls_ca {} holds no PEM certificate", path.display()),
        )
        .with_source(e)
    })
}

impl Client {
    pub(crate) fn new(config: &ChromaConfig) -> Result<Client> {
        // reqwest's rustls has no crypto provider of its own here: use ring,
        // which the workspace builds already (a no-op if one is installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca) = &config.tls.ca {
            for cert in read_ca(ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                NAME,
                "cannot build the HTTP client",
            )
            .with_source(e)
        })?;
        let api = format!("{}/api/v2", config.url);
        let db = format!(
            "{api}/tenants/{}/databases/{}",
            config.tenant, config.database
        );
        Ok(Client {
            http,
            api,
            db,
            tenant: config.tenant.clone(),
            database: config.database.clone(),
        })
    }

    /// `{api}/tenants/{tenant}/databases/{database}` + `path`.
    pub(crate) fn db_url(&self, path: &str) -> String {
        format!("{}{path}", self.db)
    }

    /// Send `body` (or nothing) and decode the JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<T> {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b).map_err(|e| {
                Error::new(
                    ErrorKind::Backend,
                    NAME,
                    format!("{what}: cannot encode the request"),
                )
                .with_source(e)
            })?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(what, url, e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(what, url, e))?;
        if !status.is_success() {
            return Err(status_error(what, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                NAME,
                format!(
                    "{what}: the server's answer is not what Chroma's API v2 sends: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            )
            .with_source(e)
        })
    }

    /// Check that the server answers and that the tenant exists; create the
    /// database if it does not exist.
    pub(crate) async fn open_database(&self) -> Result<()> {
        let _: Value = self
            .call(
                Method::GET,
                &format!("{}/heartbeat", self.api),
                None,
                "heartbeat",
            )
            .await?;
        let tenant = format!("{}/tenants/{}", self.api, self.tenant);
        let _: Value = self
            .call(Method::GET, &tenant, None, "looking up the tenant")
            .await
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::new(
                        ErrorKind::NotFound,
                        NAME,
                        format!(
                            "tenant {} does not exist on the server: create it, or use the default",
                            self.tenant
                        ),
                    )
                } else {
                    e
                }
            })?;
        match self
            .call::<Value>(Method::GET, &self.db, None, "looking up the database")
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let body = serde_json::json!({ "name": self.database });
                let created = self
                    .call::<Value>(
                        Method::POST,
                        &format!("{tenant}/databases"),
                        Some(&body),
                        "creating the database",
                    )
                    .await;
                match created {
                    Ok(_) => Ok(()),
                    // Someone else created it meanwhile.
                    Err(e) if e.kind() == ErrorKind::Conflict => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

fn transport_error(what: &str, url: &str, e: reqwest::Error) -> Error {
    let (kind, hint) = if e.is_timeout() {
        (
            ErrorKind::Timeout,
            "no answer within the request timeout (request_timeout)",
        )
    } else if e.is_connect() {
        (
            ErrorKind::Unavailable,
            "cannot connect: is `chroma run` listening there? (scripts/servers/chroma.sh start DIR)",
        )
    } else {
        (ErrorKind::Unavailable, "the connection failed")
    };
    Error::new(kind, NAME, format!("{what} at {url}: {hint}")).with_source(e)
}

fn status_error(what: &str, status: StatusCode, body: &[u8]) -> Error {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let detail = match &parsed {
        Some(b) if !b.message.is_empty() => format!("{}: {}", b.error, b.message),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    let kind = match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::InvalidInput,
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ErrorKind::Timeout,
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::BAD_GATEWAY
        | StatusCode::TOO_MANY_REQUESTS => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    };
    let kind = match parsed.as_ref().map(|b| b.error.as_str()) {
        Some("NotFoundError") => ErrorKind::NotFound,
        Some("UniqueConstraintError") => ErrorKind::Conflict,
        _ => kind,
    };
    Error::new(
        kind,
        NAME,
        format!("{what}: the server answered {status}: {detail}"),
    )
}
