//! `POST /v1/packets`, `POST /v1/packets/batch`, `POST /v1/publish`: packets
//! in, checked exactly as the library checks them.
//!
//! A packet arrives as its JSON object (any whitespace; unknown keys are
//! ignored, as when decoding) and is validated and encoded compactly by
//! [`EncodedPacket`], so the 512-byte limit applies to the compact body that
//! is stored, whose SHA-256 is the packet id. Nothing of a batch is deposited
//! if one of its packets is refused.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use qis_core::{EncodedPacket, OutcomePacket, Subject};
use qis_transport_http::wire::{BatchReceipts, BatchRequest, ReceiptJson};
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::{JsonBody, Shared};

/// Where to deposit one packet.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Target {
    /// A subject under the prefix (default: the packet's readable subject).
    subject: Option<String>,
    /// Deposit on the fingerprinted subject at this resolution instead.
    fingerprint: Option<u32>,
}

/// The packet encoded for its subject, or the library's error, with `at`
/// (`packets[3]: `) before the message when given.
fn encode(
    s: &Shared,
    packet: &OutcomePacket,
    target: &Target,
    at: &str,
) -> Result<EncodedPacket, ApiError> {
    let prefix = s.transport.prefix();
    let at_field = |e: qis_core::Error| {
        let mut e = ApiError::from(e);
        e.message = format!("{at}{}", e.message);
        e
    };
    // The packet's own rules first, so a bad domain is an invalid packet
    // naming the field rather than a bad subject made of it.
    packet.validate().map_err(at_field)?;
    let subject = match (&target.subject, target.fingerprint) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_input(
                "give subject or fingerprint, not both",
            ))
        }
        (Some(subject), None) => Subject::new(subject.as_str()),
        (None, Some(resolution)) => packet.fingerprinted_subject(prefix, resolution),
        (None, None) => packet.subject(prefix),
    };
    subject
        .and_then(|subject| EncodedPacket::new(packet, subject))
        .map_err(at_field)
}

/// `POST /v1/packets`: deposit one packet; 201 and its receipt.
pub(crate) async fn deposit(
    State(s): State<Shared>,
    target: Result<Query<Target>, QueryRejection>,
    JsonBody(packet): JsonBody<OutcomePacket>,
) -> Result<(StatusCode, Json<ReceiptJson>), ApiError> {
    let Query(target) = target?;
    let encoded = encode(&s, &packet, &target, "")?;
    let receipt = s.transport.deposit_encoded(&encoded).await?;
    if s.view_from_deposits {
        s.view.observe(encoded.subject().as_str(), &packet);
    }
    Ok((StatusCode::CREATED, Json(ReceiptJson::from(&receipt))))
}

/// `POST /v1/packets/batch`: deposit many with acknowledgements in flight;
/// 201 and the receipts in input order.
pub(crate) async fn deposit_batch(
    State(s): State<Shared>,
    JsonBody(batch): JsonBody<BatchRequest>,
) -> Result<(StatusCode, Json<BatchReceipts>), ApiError> {
    let max = s.config.max_batch;
    if batch.packets.len() > max {
        return Err(ApiError::batch_too_large(format!(
            "the batch has {} packets; this gateway takes at most {max} per request (max_batch): split it",
            batch.packets.len()
        )));
    }
    let encoded = batch
        .packets
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let target = Target {
                subject: item.subject.clone(),
                fingerprint: None,
            };
            encode(&s, &item.packet, &target, &format!("packets[{i}]: "))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let receipts = s.transport.deposit_encoded_batch(&encoded).await?;
    if s.view_from_deposits {
        for (e, item) in encoded.iter().zip(&batch.packets) {
            s.view.observe(e.subject().as_str(), &item.packet);
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(BatchReceipts {
            receipts: receipts.iter().map(ReceiptJson::from).collect(),
        }),
    ))
}

/// `POST /v1/publish`: fire-and-forget (at-most-once, nothing stored) where
/// the backend has it; 202.
pub(crate) async fn publish(
    State(s): State<Shared>,
    target: Result<Query<Target>, QueryRejection>,
    JsonBody(packet): JsonBody<OutcomePacket>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Query(target) = target?;
    let encoded = encode(&s, &packet, &target, "")?;
    s.transport.publish_encoded(&encoded).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))))
}
