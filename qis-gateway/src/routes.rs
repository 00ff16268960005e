//! Every endpoint, in one table the router is built from, so the OpenAPI
//! document ([`crate::openapi`]) and the tests can check it.

use std::collections::BTreeMap;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use qis_transport_http::wire::Info;

use crate::error::ApiError;
use crate::state::Shared;
use crate::{auth, consumers, deposit, live, openapi, view};

/// One endpoint: method, path (`{name}` marks a path parameter), whether it
/// needs the bearer token, and its handler.
struct Route {
    method: &'static str,
    path: &'static str,
    open: bool,
    handler: MethodRouter<Shared>,
}

fn table() -> Vec<Route> {
    // Answered without the token.
    let open = [
        ("GET", "/", get(dashboard)),
        ("GET", "/health", get(health)),
        ("GET", "/openapi.json", get(openapi::document)),
    ];
    // Behind the token check.
    let api = [
        ("GET", "/v1/info", get(info)),
        ("POST", "/v1/packets", post(deposit::deposit)),
        ("POST", "/v1/packets/batch", post(deposit::deposit_batch)),
        ("POST", "/v1/publish", post(deposit::publish)),
        ("POST", "/v1/consumers", post(consumers::open)),
        ("GET", "/v1/consumers", get(consumers::list)),
        ("GET", "/v1/stored-consumers", get(consumers::stored)),
        (
            "DELETE",
            "/v1/consumers/{session}",
            delete(consumers::close),
        ),
        (
            "POST",
            "/v1/consumers/{session}/fetch",
            post(consumers::fetch),
        ),
        ("POST", "/v1/consumers/{session}/ack", post(consumers::ack)),
        ("POST", "/v1/consumers/{session}/nak", post(consumers::nak)),
        (
            "GET",
            "/v1/consumers/{session}/backlog",
            get(consumers::backlog),
        ),
        ("GET", "/v1/live", get(live::live)),
        ("GET", "/v1/synthesis", get(view::all)),
        (
            "GET",
            "/v1/synthesis/{domain}/{problem_class}",
            get(view::one),
        ),
    ];
    let open = open.into_iter().map(|r| (true, r));
    let api = api.into_iter().map(|r| (false, r));
    open.chain(api)
        .map(|(open, (method, path, handler))| Route {
            method,
            path,
            open,
            handler,
        })
        .collect()
}

/// Every endpoint the gateway serves, as (method, path) with `{name}` for a
/// path parameter: what `/openapi.json` documents.
pub fn endpoints() -> Vec<(&'static str, &'static str)> {
    table().iter().map(|r| (r.method, r.path)).collect()
}

/// The router: open routes, then the API behind the token check, a body
/// limit on all, and a JSON 404 for anything else.
pub(crate) fn router(state: Shared) -> Router {
    let mut open: BTreeMap<&str, MethodRouter<Shared>> = BTreeMap::new();
    let mut api: BTreeMap<&str, MethodRouter<Shared>> = BTreeMap::new();
    for r in table() {
        let group = if r.open { &mut open } else { &mut api };
        let merged = match group.remove(r.path) {
            Some(h) => h.merge(r.handler),
            None => r.handler,
        };
        group.insert(r.path, merged);
    }
    let api = api
        .into_iter()
        .fold(Router::new(), |router, (path, h)| router.route(path, h))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    open.into_iter()
        .fold(Router::new(), |router, (path, h)| router.route(path, h))
        .merge(api)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(
            usize::try_from(state.config.max_body).unwrap_or(usize::MAX),
        ))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint: /openapi.json lists them")
}

/// `GET /`: the dashboard, one page with its script and style inline.
async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../assets/dashboard.html"))
}

/// `GET /health`: 200 while serving, 503 once shutting down; with the
/// long-polls and event streams in progress and the open sessions.
async fn health(State(s): State<Shared>) -> impl IntoResponse {
    let shutting_down = s.shutdown.is_cancelled();
    let status = if shutting_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(serde_json::json!({
            "status": if shutting_down { "shutting_down" } else { "ok" },
            "transport": s.transport.name(),
            "prefix": s.transport.prefix().as_str(),
            "streams": s.streams_in_use(),
            "sessions": s.sessions.all().len(),
        })),
    )
}

/// `GET /v1/info`.
async fn info(State(s): State<Shared>) -> Json<Info> {
    Json(s.info.clone())
}
