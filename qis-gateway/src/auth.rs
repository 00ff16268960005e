//! Bearer tokens: when the gateway has any, every `/v1/…` request carries
//! one, in `Authorization: Bearer <token>` or, for a browser's
//! `EventSource` that cannot set headers, the `access_token` query
//! parameter (RFC 6750). The dashboard page, `/health` and
//! `/openapi.json` are open: they hold no data.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::Shared;

/// The middleware in front of `/v1/…`.
pub(crate) async fn require_token(
    State(s): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    if !s.config.tokens.required() {
        return next.run(request).await;
    }
    match presented(&request) {
        None => ApiError::unauthorized(
            "this gateway requires a bearer token: send Authorization: Bearer <token>",
        )
        .into_response(),
        Some(token) if s.config.tokens.accepts(&token) => next.run(request).await,
        Some(_) => ApiError::unauthorized(
            "the bearer token is not accepted: check it with the gateway's operator",
        )
        .into_response(),
    }
}

fn presented(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    let query = request.uri().query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "access_token").then(|| percent_decode(v))
    })
}

/// A query value with its `%XX` escapes decoded (`+` is kept: tokens are
/// sent with `encodeURIComponent`, which escapes it).
fn percent_decode(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}
