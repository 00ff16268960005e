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
    let route = |method, path, open, handler| Route {
        method,
        path,
        open,
        handler,
    };
    vec![
        route("GET", "/", true, get(dashboard)),
        route("GET", "/health", true, get(health)),
        route("GET", "/openapi.json", true, get(openapi::document)),
        route("GET", "/v1/info", false, get(info)),
        route("POST", "/v1/packets", false, post(deposit::deposit)),
        route(
            "POST",
            "/v1/packets/batch",
            false,
            post(deposit::deposit_batch),
        ),
        route("POST", "/v1/publish", false, post(deposit::publish)),
        route("POST", "/v1/consumers", false, post(consumers::open)),
        route("GET", "/v1/consumers", false, get(consumers::list)),
        route("GET", "/v1/stored-consumers", false, get(consumers::stored)),
        route(
            "DELETE",
            "/v1/consumers/{session}",
            false,
            delete(consumers::close),
        ),
        route(
            "POST",
            "/v1/consumers/{session}/fetch",
            false,
            post(consumers::fetch),
        ),
        route(
            "POST",
            "/v1/consumers/{session}/ack",
            false,
            post(consumers::ack),
        ),
        route(
            "POST",
            "/v1/consumers/{session}/nak",
            false,
            post(consumers::nak),
        ),
        route(
            "GET",
            "/v1/consumers/{session}/backlog",
            false,
            get(consumers::backlog),
        ),
        route("GET", "/v1/live", false, get(live::live)),
        route("GET", "/v1/synthesis", false, get(view::all)),
        route(
            "GET",
            "/v1/synthesis/{domain}/{problem_class}",
            false,
            get(view::one),
        ),
    ]
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
