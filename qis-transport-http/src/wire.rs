//! The gateway's JSON protocol, version 1: the bodies `qis serve` (the
//! `qis-gateway` crate) reads and writes and this transport sends and reads.
//! One definition for both sides, so they cannot drift apart; the gateway's
//! `/openapi.json` describes the same shapes for other HTTP clients.
//!
//! Packets travel as the JSON object of [`OutcomePacket`] (the eight wire
//! keys). The gateway validates and re-encodes each one exactly as the
//! library does (compact JSON, 512-byte limit); floats are parsed exactly
//! (`serde_json`'s `float_roundtrip`), so the body it stores, and the packet
//! id, are the ones the device computed.
//!
//! Errors are `{"error": {"kind": …, "message": …, "transport": …}}` with a
//! [`kind`](ErrorDetail::kind) from [`kind_name`] or one of the HTTP-only
//! kinds ([`UNAUTHORIZED`], [`BODY_TOO_LARGE`], [`BATCH_TOO_LARGE`],
//! [`BUSY`]); [`error_kind`] maps a kind back to an [`ErrorKind`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qis_core::{
    Backlog, Capabilities, ConsumerInfo, Error, ErrorKind, OutcomePacket, PacketId, Position,
    Receipt, StartPosition, Subject,
};
use serde::{Deserialize, Serialize};

/// Every API path starts with this.
pub const API: &str = "/v1";

/// Kind of a request without a valid bearer token (HTTP 401).
pub const UNAUTHORIZED: &str = "unauthorized";
/// Kind of a request body over the gateway's `max_body` (HTTP 413).
pub const BODY_TOO_LARGE: &str = "body_too_large";
/// Kind of a batch over the gateway's `max_batch` packets (HTTP 413).
pub const BATCH_TOO_LARGE: &str = "batch_too_large";
/// Kind of a long-poll or event stream refused because the gateway already
/// serves `max_streams` of them, or of a fetch refused because the consumer
/// session holds too many unacked deliveries (HTTP 429).
pub const BUSY: &str = "busy";

/// An error body: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, in an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// `invalid_packet`, `packet_too_large`, `invalid_subject`,
    /// `invalid_input`, `unsupported`, `unavailable`, `timeout`,
    /// `not_found`, `conflict`, `closed`, `backend`, or an HTTP-only kind.
    pub kind: String,
    /// What is wrong and what to do, for people.
    pub message: String,
    /// Who raised it: `core` (packet and subject rules), the gateway's
    /// backend (`sqlite`, `nats`, …) or `gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

/// The wire name of an [`ErrorKind`].
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidPacket => "invalid_packet",
        ErrorKind::PacketTooLarge => "packet_too_large",
        ErrorKind::InvalidSubject => "invalid_subject",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Timeout => "timeout",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Closed => "closed",
        _ => "backend",
    }
}

/// The [`ErrorKind`] a client reports for a wire kind. The HTTP-only kinds
/// map to what a caller does about them: a refused token or an oversize
/// request is [`ErrorKind::InvalidInput`] (fix the call), a busy gateway
/// [`ErrorKind::Unavailable`] (retry later). An unknown kind is
/// [`ErrorKind::Backend`].
pub fn error_kind(name: &str) -> ErrorKind {
    match name {
        "invalid_packet" => ErrorKind::InvalidPacket,
        "packet_too_large" => ErrorKind::PacketTooLarge,
        "invalid_subject" => ErrorKind::InvalidSubject,
        "invalid_input" | UNAUTHORIZED | BODY_TOO_LARGE | BATCH_TOO_LARGE => {
            ErrorKind::InvalidInput
        }
        "unsupported" => ErrorKind::Unsupported,
        "unavailable" | BUSY => ErrorKind::Unavailable,
        "timeout" => ErrorKind::Timeout,
        "not_found" => ErrorKind::NotFound,
        "conflict" => ErrorKind::Conflict,
        "closed" => ErrorKind::Closed,
        _ => ErrorKind::Backend,
    }
}

/// What `GET /v1/info` answers: what the gateway fronts and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// Always `qis-gateway`.
    pub service: String,
    /// The gateway's version.
    pub version: String,
    /// The backend's name (`sqlite`, `nats`, …).
    pub transport: String,
    /// The subject prefix the backend stores under.
    pub prefix: String,
    /// What the backend can do, through the gateway.
    pub capabilities: CapabilitiesJson,
    /// The gateway's request limits.
    pub limits: Limits,
}

/// [`Capabilities`] as JSON, field for field (it is the same type).
pub type CapabilitiesJson = Capabilities;

/// The gateway's request limits, in [`Info`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest request body, in bytes (larger: 413 [`BODY_TOO_LARGE`]).
    pub max_body: u64,
    /// Most packets in one batch deposit (more: 413 [`BATCH_TOO_LARGE`]).
    pub max_batch: usize,
    /// Most deliveries one fetch returns (a larger `max` is lowered to it).
    pub max_fetch: usize,
    /// Longest wait of one fetch, in milliseconds (a longer `wait_ms` is
    /// lowered to it).
    pub max_wait_ms: u64,
    /// Most long-polls and event streams served at once (more: 429 [`BUSY`]).
    pub max_streams: usize,
}

/// One packet of a batch deposit: the packet and, optionally, the subject to
/// deposit it on (default: its readable subject).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepositItem {
    /// A subject under the prefix; default `{prefix}.{domain}.{problem_class}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The packet.
    pub packet: OutcomePacket,
}

/// The body of `POST /v1/packets/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The packets, deposited with acknowledgements in flight; receipts come
    /// back in this order.
    pub packets: Vec<DepositItem>,
}

/// The answer to `POST /v1/packets/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReceipts {
    /// One receipt per packet, in input order.
    pub receipts: Vec<ReceiptJson>,
}

/// A [`Receipt`] as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptJson {
    /// The subject it is stored under (for a duplicate: the original's).
    pub subject: String,
    /// The packet id: lowercase hex SHA-256 of the body.
    pub id: String,
    /// Where the backend stored it.
    pub position: PositionJson,
    /// The backend recognised an identical earlier deposit.
    pub duplicate: bool,
}

impl From<&Receipt> for ReceiptJson {
    fn from(r: &Receipt) -> Self {
        ReceiptJson {
            subject: r.subject.to_string(),
            id: r.id.to_hex(),
            position: r.position.into(),
            duplicate: r.duplicate,
        }
    }
}

impl ReceiptJson {
    /// Back to a [`Receipt`]; a malformed subject or id is
    /// [`ErrorKind::Backend`] (the gateway answered nonsense).
    pub fn into_receipt(self, transport: &'static str) -> qis_core::Result<Receipt> {
        Ok(Receipt {
            subject: Subject::new(self.subject).map_err(|e| nonsense(transport, e))?,
            id: parse_id(transport, &self.id)?,
            position: self.position.into(),
            duplicate: self.duplicate,
        })
    }
}

/// A [`Position`] as JSON: `{"sequence": 7}`, `{"partition": 0, "offset":
/// 12}` or `{"ms": 1764000000000, "seq": 0}`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PositionJson {
    Sequence { sequence: u64 },
    Offset { partition: i32, offset: i64 },
    StreamId { ms: u64, seq: u64 },
}

impl From<Position> for PositionJson {
    fn from(p: Position) -> Self {
        match p {
            Position::Sequence(sequence) => PositionJson::Sequence { sequence },
            Position::Offset { partition, offset } => PositionJson::Offset { partition, offset },
            Position::StreamId { ms, seq } => PositionJson::StreamId { ms, seq },
        }
    }
}

impl From<PositionJson> for Position {
    fn from(p: PositionJson) -> Self {
        match p {
            PositionJson::Sequence { sequence } => Position::Sequence(sequence),
            PositionJson::Offset { partition, offset } => Position::Offset { partition, offset },
            PositionJson::StreamId { ms, seq } => Position::StreamId { ms, seq },
        }
    }
}

/// Where a new consumer starts: `"all"`, `"new"` or `{"since": seconds}`
/// (seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartJson {
    /// All retained history (the default).
    #[default]
    All,
    /// Only packets deposited after the consumer is created.
    New,
    /// Packets deposited at or after this time, in seconds since the Unix epoch.
    Since(f64),
}

impl From<StartPosition> for StartJson {
    fn from(s: StartPosition) -> Self {
        match s {
            StartPosition::All => StartJson::All,
            StartPosition::New => StartJson::New,
            StartPosition::Since(t) => StartJson::Since(
                t.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
            ),
        }
    }
}

impl StartJson {
    /// The [`StartPosition`]; a negative or non-finite time is
    /// [`ErrorKind::InvalidInput`].
    pub fn to_start(self) -> qis_core::Result<StartPosition> {
        Ok(match self {
            StartJson::All => StartPosition::All,
            StartJson::New => StartPosition::New,
            StartJson::Since(s) => {
                let d = Duration::try_from_secs_f64(s).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        "gateway",
                        format!(
                            "start since {s} is not a time: give seconds since the Unix epoch, ≥ 0"
                        ),
                    )
                })?;
                StartPosition::Since(SystemTime::UNIX_EPOCH + d)
            }
        })
    }
}

/// The body of `POST /v1/consumers`: open (create or resume) a durable
/// consumer by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenConsumer {
    /// The durable name: 1–64 of `A-Z a-z 0-9 _ -`.
    pub name: String,
    /// The subject pattern it receives (`qis.iot.hvac.>`).
    pub pattern: String,
    /// Where it starts when created (default: all history).
    #[serde(default)]
    pub start: StartJson,
    /// How long a delivery may stay unacked before it is delivered again, in
    /// milliseconds (default 30 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait_ms: Option<u64>,
}

/// The answer to `POST /v1/consumers`: a consumer session, the gateway's
/// handle on the backend's consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSession {
    /// The session id, for `/v1/consumers/{session}/…`.
    pub session: String,
    /// The durable name.
    pub name: String,
    /// The pattern.
    pub pattern: String,
    /// The ack wait, in milliseconds.
    pub ack_wait_ms: u64,
}

/// The body of `POST /v1/consumers/{session}/fetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// At most this many deliveries (≥ 1).
    pub max: usize,
    /// Wait up to this long for the first, in milliseconds (a long-poll;
    /// default 0: answer at once).
    #[serde(default)]
    pub wait_ms: u64,
}

/// The answer to a fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchResponse {
    /// The deliveries, possibly none.
    pub deliveries: Vec<DeliveryJson>,
    /// Malformed messages this session's consumer skipped so far.
    pub malformed_skipped: u64,
}

/// One delivery: the packet and an opaque `handle` to ack or nak it with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryJson {
    /// Opaque: give it back to ack or nak this delivery on the same session.
    pub handle: String,
    /// The subject it was deposited on.
    pub subject: String,
    /// The packet id.
    pub id: String,
    /// The packet.
    pub packet: OutcomePacket,
    /// Where the backend stores it.
    pub position: PositionJson,
    /// 1 on first delivery, more on redelivery.
    pub delivery_count: u32,
}

/// The body of `POST /v1/consumers/{session}/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    /// Handles of deliveries fetched on this session.
    pub handles: Vec<String>,
}

/// The answer to an ack or a nak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckResponse {
    /// How many deliveries were acked (or nak-ed).
    pub done: usize,
    /// Handles this session handed out that it no longer holds: acked
    /// before, or expired (a handle lives twice the ack wait, at least a
    /// minute); such a packet is delivered again unless it was acked.
    pub expired: Vec<String>,
}

/// The body of `POST /v1/consumers/{session}/nak`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NakRequest {
    /// The handle of a delivery fetched on this session.
    pub handle: String,
    /// Deliver it again after this many milliseconds (default 0: at once).
    #[serde(default)]
    pub delay_ms: u64,
}

/// `GET /v1/stored-consumers`: every durable consumer the backend keeps
/// under the prefix (opened through this gateway or not), with its backlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConsumers {
    /// By name.
    pub consumers: Vec<StoredConsumer>,
}

/// One consumer of [`StoredConsumers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConsumer {
    /// The durable name.
    pub name: String,
    /// Its pattern, where the backend keeps it.
    pub pattern: Option<String>,
    /// What it still has to do.
    pub backlog: Backlog,
}

impl From<ConsumerInfo> for StoredConsumer {
    fn from(c: ConsumerInfo) -> Self {
        StoredConsumer {
            name: c.name,
            pattern: c.pattern,
            backlog: c.backlog,
        }
    }
}

impl From<StoredConsumer> for ConsumerInfo {
    fn from(c: StoredConsumer) -> Self {
        ConsumerInfo {
            name: c.name,
            pattern: c.pattern,
            backlog: c.backlog,
        }
    }
}

/// The SSE event names of `GET /v1/live`.
pub mod event {
    /// First event, once the backend subscription is active: every packet
    /// deposited or published after it is sent. Data: `{"pattern": …}`.
    pub const READY: &str = "ready";
    /// A packet: data is a [`LivePacket`](super::LivePacket).
    pub const PACKET: &str = "packet";
    /// The backend reported a failure: data is an
    /// [`ErrorBody`](super::ErrorBody). The stream goes on.
    pub const ERROR: &str = "error";
}

/// The data of a `packet` event of `GET /v1/live`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivePacket {
    /// The subject it was deposited or published on.
    pub subject: String,
    /// The packet id.
    pub id: String,
    /// The packet.
    pub packet: OutcomePacket,
}

/// A packet id from the gateway; malformed is [`ErrorKind::Backend`].
pub fn parse_id(transport: &'static str, hex: &str) -> qis_core::Result<PacketId> {
    hex.parse().map_err(|e| nonsense(transport, e))
}

fn nonsense(transport: &'static str, e: Error) -> Error {
    Error::new(
        ErrorKind::Backend,
        transport,
        format!("the gateway answered something this client does not understand: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for kind in [
            ErrorKind::InvalidPacket,
            ErrorKind::PacketTooLarge,
            ErrorKind::InvalidSubject,
            ErrorKind::InvalidInput,
            ErrorKind::Unsupported,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Closed,
            ErrorKind::Backend,
        ] {
            assert_eq!(error_kind(kind_name(kind)), kind);
        }
        assert_eq!(error_kind(BUSY), ErrorKind::Unavailable);
        assert_eq!(error_kind(UNAUTHORIZED), ErrorKind::InvalidInput);
        assert_eq!(error_kind("something new"), ErrorKind::Backend);
    }

    #[test]
    fn positions_and_starts_have_one_spelling() {
        for p in [
            Position::Sequence(7),
            Position::Offset {
                partition: 2,
                offset: 9,
            },
            Position::StreamId { ms: 5, seq: 1 },
        ] {
            let json = serde_json::to_string(&PositionJson::from(p)).unwrap();
            let back: PositionJson = serde_json::from_str(&json).unwrap();
            assert_eq!(Position::from(back), p, "{json}");
        }
        let s: StartJson = serde_json::from_str(r#"{"since": 1764000000.5}"#).unwrap();
        assert_eq!(s, StartJson::Since(1_764_000_000.5));
        assert_eq!(
            serde_json::from_str::<StartJson>(r#""new""#).unwrap(),
            StartJson::New
        );
        assert_eq!(
            StartJson::Since(-1.0).to_start().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
