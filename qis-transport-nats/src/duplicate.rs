//! Where a duplicate deposit's original is.
//!
//! De-duplication is per transport (see [`Receipt`]): JetStream recognises a
//! `Nats-Msg-Id` it has seen within the window on any subject of the stream.
//! Its ack for a duplicate carries the ORIGINAL's stream sequence but not
//! its subject, so the subject is read from the stream (one
//! `STREAM.MSG.GET` of that sequence), only for duplicates.

use async_nats::jetstream;
use qis_core::{ErrorKind, Position, Receipt, Result, Subject};

use crate::error::err;
use crate::NatsTransport;

/// A duplicate's receipt, naming the original's subject; other receipts as
/// they are.
pub(crate) async fn name_original(t: &NatsTransport, receipt: Receipt) -> Result<Receipt> {
    let Receipt {
        duplicate: true,
        position: Position::Sequence(seq),
        ..
    } = receipt
    else {
        return Ok(receipt);
    };
    let stream = t.inner.js.get_stream_no_info(&t.inner.stream).await.map_err(|e| {
        err(
            ErrorKind::Unavailable,
            format!(
                "packet {} is a duplicate of stream {} sequence {seq}, but the stream cannot be read: retry",
                receipt.id, t.inner.stream
            ),
        )
        .with_source(e)
    })?;
    match stream.get_raw_message(seq).await {
        Ok(original) => match Subject::new(original.subject.as_str()) {
            Ok(subject) => Ok(Receipt { subject, ..receipt }),
            Err(_) => Err(err(
                ErrorKind::Backend,
                format!(
                    "packet {} is a duplicate of sequence {seq}, stored under {:?}, which is not a subject",
                    receipt.id, original.subject
                ),
            )),
        },
        Err(e) if is_gone(&e) => {
            // Removed by retention (or by hand) since: the id is still in
            // the de-duplication window, the packet no longer stored.
            tracing::warn!(id = %receipt.id, seq, subject = %receipt.subject, "duplicate deposit of a packet the stream no longer holds");
            Ok(receipt)
        }
        Err(e) => Err(err(
            ErrorKind::Unavailable,
            format!(
                "packet {} is a duplicate of stream {} sequence {seq}, which could not be read: retry",
                receipt.id, t.inner.stream
            ),
        )
        .with_source(e)),
    }
}

fn is_gone(e: &jetstream::stream::RawMessageError) -> bool {
    matches!(
        e.kind(),
        jetstream::stream::RawMessageErrorKind::NoMessageFound
    )
}
