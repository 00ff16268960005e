//! Errors as HTTP answers: a status and `{"error": {"kind", "message",
//! "transport"}}`, never a backtrace.
//!
//! | kind | status |
//! |---|---|
//! | `invalid_packet`, `invalid_subject`, `invalid_input` | 400 |
//! | `unauthorized` | 401 (with `WWW-Authenticate: Bearer`) |
//! | `not_found` (unknown consumer session, nothing seen for a class) | 404 |
//! | `conflict` (a consumer name reopened with another pattern, …) | 409 |
//! | `packet_too_large`, `body_too_large`, `batch_too_large` | 413 |
//! | `busy` (too many long-polls, streams or sessions; a full session) | 429 (with `Retry-After`) |
//! | `unsupported` (the backend lacks the capability) | 501 |
//! | `unavailable`, `timeout`, `backend`, `closed` (broker failure, gateway shutting down) | 503 (with `Retry-After`) |
//!
//! 501, not 422, for what the backend cannot do: the request is well
//! formed and would work in front of another backend; the server lacks
//! the function. 429, not 503, for the gateway's own limits, so that a
//! client, and an operator reading logs, tells "too many of you" from
//! "the broker is down".

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use qis_core::{Error, ErrorKind};
use qis_transport_http::wire::{
    kind_name, ErrorBody, ErrorDetail, BATCH_TOO_LARGE, BODY_TOO_LARGE, BUSY, UNAUTHORIZED,
};

use crate::NAME;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub transport: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            transport: Some(NAME),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED, message)
    }

    pub fn busy(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, BUSY, message)
    }

    pub fn batch_too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, BATCH_TOO_LARGE, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The error as an SSE `error` event's data.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_string(),
                message: self.message.clone(),
                transport: self.transport.map(str::to_string),
            },
        }
    }
}

/// The status of a library error kind.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidPacket | ErrorKind::InvalidSubject | ErrorKind::InvalidInput => {
            StatusCode::BAD_REQUEST
        }
        ErrorKind::PacketTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        // Unavailable, Timeout, Backend, Closed (the gateway is shutting
        // down), and any kind added later: the broker side failed.
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError {
            status: status_of(e.kind()),
            kind: kind_name(e.kind()),
            message: e.message().to_string(),
            transport: Some(e.transport()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                BODY_TOO_LARGE,
                "the request body is larger than this gateway's max_body: send less (split a batch)",
            )
        } else {
            ApiError::invalid_input(format!("the request body could not be read: {r}"))
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid_input(format!("bad query string: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, kind = self.kind, message = %self.message, "request failed");
        } else {
            tracing::debug!(status = %self.status, kind = self.kind, message = %self.message, "request refused");
        }
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"qis\""),
                );
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_failures_are_503_and_bad_input_4xx() {
        for (kind, status) in [
            (ErrorKind::InvalidPacket, 400),
            (ErrorKind::InvalidSubject, 400),
            (ErrorKind::InvalidInput, 400),
            (ErrorKind::PacketTooLarge, 413),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Unsupported, 501),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Timeout, 503),
            (ErrorKind::Backend, 503),
            (ErrorKind::Closed, 503),
        ] {
            assert_eq!(status_of(kind).as_u16(), status, "{kind:?}");
        }
    }
}
