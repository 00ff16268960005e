//! `GET /openapi.json`: the OpenAPI 3.1 document of every endpoint, written
//! by hand beside the code (no build step, no macros) and checked by tests
//! against the route table and the wire types.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The document.
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

/// `GET /openapi.json`.
pub(crate) async fn document() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}
