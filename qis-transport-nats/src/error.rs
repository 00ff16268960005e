//! Turning async-nats errors into [`qis_core::Error`]s with the right kind and
//! a message a person can act on.

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::ErrorCode;
use async_nats::ConnectErrorKind;
use qis_core::{Error, ErrorKind};

use crate::NAME;

pub(crate) fn err(kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, NAME, msg)
}

pub(crate) fn connect(url: &str, e: async_nats::ConnectError) -> Error {
    let (kind, msg) = match e.kind() {
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => (
            ErrorKind::InvalidInput,
            format!("the NATS server at {url} refused the login: check user/password, token or credentials file"),
        ),
        ConnectErrorKind::Tls => (
            ErrorKind::Unavailable,
            format!("TLS with the NATS server at {url} failed: check tls_ca, the client certificate and require_tls"),
        ),
        ConnectErrorKind::TimedOut => (
            ErrorKind::Unavailable,
            format!("the NATS server at {url} did not answer in time: is it running and reachable?"),
        ),
        _ => (
            ErrorKind::Unavailable,
            format!("cannot reach the NATS server at {url}: is it running (nats-server -js) and reachable?"),
        ),
    };
    err(kind, msg).with_source(e)
}

/// The server answered that JetStream is off or did not answer at all.
pub(crate) fn jetstream_unavailable(url: &str) -> String {
    format!("JetStream does not answer at {url}: start nats-server with -js (JetStream enabled)")
}

pub(crate) fn get_stream(
    url: &str,
    stream: &str,
    e: async_nats::jetstream::context::GetStreamError,
) -> Error {
    let (kind, msg) = match e.kind() {
        GetStreamErrorKind::JetStream(je) if is_jetstream_off(&je) => {
            (ErrorKind::Unavailable, jetstream_unavailable(url))
        }
        GetStreamErrorKind::JetStream(je) => (
            ErrorKind::Backend,
            format!("looking up stream {stream} failed: {je}"),
        ),
        GetStreamErrorKind::Request => (ErrorKind::Unavailable, jetstream_unavailable(url)),
        _ => (
            ErrorKind::InvalidInput,
            format!("stream name {stream:?} is not valid"),
        ),
    };
    err(kind, msg).with_source(e)
}

pub(crate) fn create_stream(
    url: &str,
    stream: &str,
    subject: &str,
    replicas: usize,
    e: async_nats::jetstream::context::CreateStreamError,
) -> Error {
    let (kind, msg) = match e.kind() {
        CreateStreamErrorKind::JetStream(je) if je.error_code() == ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED => (
            ErrorKind::InvalidInput,
            format!("stream {stream} cannot have {replicas} replicas: the server at {url} is not part of a JetStream cluster; use replicas=1, or a cluster of at least {replicas} servers"),
        ),
        CreateStreamErrorKind::JetStream(je) if matches!(je.error_code(), ErrorCode::CLUSTER_NO_PEERS | ErrorCode::INSUFFICIENT_RESOURCES) => (
            ErrorKind::Unavailable,
            format!("stream {stream} with {replicas} replicas cannot be placed ({je}): the cluster needs at least {replicas} servers with JetStream up and room to spare; start more servers or use fewer replicas"),
        ),
        CreateStreamErrorKind::JetStream(je) if je.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP => (
            ErrorKind::Conflict,
            format!("another stream already captures subjects overlapping {subject}: use that stream's name (NatsConfig::stream) or another prefix"),
        ),
        CreateStreamErrorKind::JetStream(je) if is_jetstream_off(&je) => (ErrorKind::Unavailable, jetstream_unavailable(url)),
        CreateStreamErrorKind::JetStream(je) => (
            ErrorKind::Backend,
            format!("creating stream {stream} on {subject} failed: {je}"),
        ),
        CreateStreamErrorKind::JetStreamUnavailable | CreateStreamErrorKind::TimedOut => {
            (ErrorKind::Unavailable, jetstream_unavailable(url))
        }
        _ => (ErrorKind::Backend, format!("creating stream {stream} on {subject} failed")),
    };
    err(kind, msg).with_source(e)
}

pub(crate) fn is_jetstream_off(e: &async_nats::jetstream::Error) -> bool {
    matches!(
        e.error_code(),
        ErrorCode::JETSTREAM_NOT_ENABLED | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
    )
}

pub(crate) fn publish(
    subject: &str,
    stream: &str,
    timeout: std::time::Duration,
    e: async_nats::jetstream::context::PublishError,
) -> Error {
    let (kind, msg) = match e.kind() {
        PublishErrorKind::TimedOut => (
            ErrorKind::Timeout,
            format!("no publish ack for {subject} within {timeout:?}: the packet may or may not be stored; depositing it again is safe (the same packet id is de-duplicated)"),
        ),
        PublishErrorKind::StreamNotFound => (
            ErrorKind::Unavailable,
            format!("no stream takes {subject}: stream {stream} was deleted or JetStream is unavailable; connect again to recreate it"),
        ),
        PublishErrorKind::BrokenPipe => (
            ErrorKind::Unavailable,
            format!("the connection broke while depositing on {subject}; depositing it again is safe"),
        ),
        PublishErrorKind::MaxAckPending => (
            ErrorKind::Unavailable,
            format!("too many publish acks in flight while depositing on {subject}: lower the ack window"),
        ),
        _ => (ErrorKind::Backend, format!("depositing on {subject} failed: {e}")),
    };
    err(kind, msg).with_source(e)
}

pub(crate) fn request(what: &str, e: async_nats::RequestError) -> Error {
    use async_nats::RequestErrorKind as K;
    let kind = match e.kind() {
        K::TimedOut => ErrorKind::Timeout,
        K::NoResponders => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    };
    err(kind, format!("{what} failed: {e}")).with_source(e)
}

pub(crate) fn send(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    err(
        ErrorKind::Unavailable,
        format!("{what} failed: the connection to the NATS server is closed or broken"),
    )
    .with_source(e)
}
