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
use crate::retry::{retry_limit, Retries};
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
    // Right after an election the new leader may not answer yet: the read
    // is retried like a deposit, for as long as `retry_for` allows.
    let mut retries = Retries::new(retry_limit(&t.inner.config), false);
    loop {
        let e = match stream.get_raw_message(seq).await {
            Ok(original) => return named(receipt, seq, &original.subject),
            Err(e) if is_gone(&e) => {
                // Removed by retention (or by hand) since: the id is still in
                // the de-duplication window, the packet no longer stored.
                tracing::warn!(id = %receipt.id, seq, subject = %receipt.subject, "duplicate deposit of a packet the stream no longer holds");
                return Ok(receipt);
            }
            Err(e) => e,
        };
        let Some(pause) = retries.after_failure() else {
            return Err(err(
                ErrorKind::Unavailable,
                format!(
                    "packet {} is a duplicate of stream {} sequence {seq}, which could not be read ({} attempts over {:.1?}): retry",
                    receipt.id,
                    t.inner.stream,
                    retries.failures,
                    retries.elapsed()
                ),
            )
            .with_source(e));
        };
        tracing::debug!(id = %receipt.id, seq, error = %e, "reading a duplicate's original failed; retrying");
        tokio::time::sleep(pause).await;
    }
}

/// The receipt of a duplicate whose original is stored under `subject`.
fn named(receipt: Receipt, seq: u64, subject: &str) -> Result<Receipt> {
    match Subject::new(subject) {
        Ok(subject) => Ok(Receipt { subject, ..receipt }),
        Err(_) => Err(err(
            ErrorKind::Backend,
            format!(
                "packet {} is a duplicate of sequence {seq}, stored under {subject:?}, which is not a subject",
                receipt.id
            ),
        )),
    }
}

fn is_gone(e: &jetstream::stream::RawMessageError) -> bool {
    matches!(
        e.kind(),
        jetstream::stream::RawMessageErrorKind::NoMessageFound
    )
}
