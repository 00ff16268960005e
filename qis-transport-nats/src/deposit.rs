//! Deposits: JetStream publishes with `Nats-Msg-Id` = packet id, one at a
//! time or many with their acks in flight, retried with the same id through
//! a cluster's leader election (`retry.rs`). Also raw publishes for tests
//! ([`InjectRaw`]).

use std::collections::VecDeque;

use async_nats::jetstream::context::{
    GetStreamErrorKind, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::ErrorCode;
use async_trait::async_trait;
use qis_core::backend::InjectRaw;
use qis_core::{EncodedPacket, ErrorKind, Position, Receipt, Result};
use tokio::time::Instant;

use crate::error::{self, err};
use crate::retry::{retry_limit, transient, Retries, Transient};
use crate::NatsTransport;

/// Send one publish; the returned future resolves to the server's ack.
async fn send(
    t: &NatsTransport,
    packet: &EncodedPacket,
) -> std::result::Result<PublishAckFuture, PublishError> {
    let message = PublishMessage::build()
        .payload(packet.body().clone())
        .message_id(packet.id().to_hex());
    t.inner
        .js
        .send_publish(packet.subject().as_str().to_string(), message)
        .await
}

fn publish_error(t: &NatsTransport, packet: &EncodedPacket, e: PublishError) -> qis_core::Error {
    error::publish(
        packet.subject().as_str(),
        &t.inner.stream,
        t.inner.config.request_timeout,
        e,
    )
}

fn receipt(t: &NatsTransport, packet: &EncodedPacket, ack: PublishAck) -> Result<Receipt> {
    if ack.stream != t.inner.stream {
        return Err(err(
            ErrorKind::Backend,
            format!(
                "{} was stored by stream {}, not {}: another stream captures these subjects",
                packet.subject(),
                ack.stream,
                t.inner.stream
            ),
        ));
    }
    if ack.duplicate {
        tracing::debug!(subject = %packet.subject(), id = %packet.id(), seq = ack.sequence, "duplicate deposit recognised");
    }
    // For a duplicate the server names the sequence of the copy it already
    // has: the receipt points at what is stored.
    Ok(Receipt {
        subject: packet.subject().clone(),
        id: packet.id(),
        position: Position::Sequence(ack.sequence),
        duplicate: ack.duplicate,
    })
}

/// A publish sent and waiting for its ack.
struct Sent {
    /// Which packet of the batch.
    index: usize,
    /// When the ack is overdue: `request_timeout` after the send (the
    /// client's own timer only starts when the ack is first awaited, which
    /// for the last of a window is much later).
    due: Instant,
    ack: PublishAckFuture,
}

/// The ack of a sent publish, or a timeout once it is overdue.
async fn ack_by(
    due: Instant,
    ack: PublishAckFuture,
) -> std::result::Result<PublishAck, PublishError> {
    match tokio::time::timeout_at(due, ack).await {
        Ok(answer) => answer,
        Err(_) => Err(PublishError::new(PublishErrorKind::TimedOut)),
    }
}

/// Wait for the ack of a sent publish; a transient failure is retried, at
/// once if another retry of this batch succeeded (`recovered`): the cluster
/// answers again, and the ack was lost with the old leader.
async fn settle(
    t: &NatsTransport,
    packet: &EncodedPacket,
    sent: Sent,
    recovered: &mut bool,
) -> Result<Receipt> {
    let r = match ack_by(sent.due, sent.ack).await {
        Ok(ack) => receipt(t, packet, ack),
        Err(e) => {
            let r = retry(t, packet, e, *recovered).await;
            *recovered |= r.is_ok();
            r
        }
    };
    crate::duplicate::name_original(t, r?).await
}

/// One attempt: send and wait for the ack.
async fn attempt(
    t: &NatsTransport,
    packet: &EncodedPacket,
) -> std::result::Result<PublishAck, PublishError> {
    send(t, packet).await?.await
}

/// After a failed attempt: if the failure is transient, try again with the
/// same packet (so the same `Nats-Msg-Id`) until an ack comes or
/// `retry_for` has passed; then fail with the last reason. Never a new id,
/// never a success without the server's ack. `at_once`: the cluster is
/// known to answer again, so the first retry goes without a pause or a
/// check of the connection.
async fn retry(
    t: &NatsTransport,
    packet: &EncodedPacket,
    first: PublishError,
    at_once: bool,
) -> Result<Receipt> {
    let Some(mut why) = transient(&first) else {
        return Err(publish_error(t, packet, first));
    };
    let mut last = first;
    let mut retries = Retries::new(retry_limit(&t.inner.config), at_once);
    let mut stream_checked = false;
    loop {
        match why {
            _ if retries.failures == 0 && at_once => {}
            // Maybe the server this connection talks to is the one that
            // stopped: then every retry would go the same way.
            Transient::NoAck => t.check_server().await,
            // "No responders" also means "no such stream": look once.
            Transient::NoResponders if !stream_checked => {
                stream_checked = true;
                if stream_is_gone(t).await {
                    return Err(publish_error(t, packet, last));
                }
            }
            _ => {}
        }
        let Some(pause) = retries.after_failure() else {
            return Err(gave_up(t, packet, why, &retries, last));
        };
        tracing::debug!(subject = %packet.subject(), id = %packet.id(), failures = retries.failures, reason = why.describe(), "retrying a deposit with the same Nats-Msg-Id");
        tokio::time::sleep(pause).await;
        match attempt(t, packet).await {
            Ok(ack) => {
                tracing::debug!(subject = %packet.subject(), id = %packet.id(), failures = retries.failures, after = ?retries.elapsed(), duplicate = ack.duplicate, "deposit stored after retries");
                return receipt(t, packet, ack);
            }
            Err(e) => match transient(&e) {
                Some(w) => (why, last) = (w, e),
                None => return Err(publish_error(t, packet, e)),
            },
        }
    }
}

/// Whether the server says the stream does not exist (deleted): then "no
/// responders" will not go away by waiting.
async fn stream_is_gone(t: &NatsTransport) -> bool {
    let lookup = tokio::time::timeout(
        t.inner.config.request_timeout,
        t.inner.js.get_stream(&t.inner.stream),
    )
    .await;
    matches!(
        lookup,
        Ok(Err(e)) if matches!(e.kind(), GetStreamErrorKind::JetStream(je) if je.error_code() == ErrorCode::STREAM_NOT_FOUND)
    )
}

fn gave_up(
    t: &NatsTransport,
    packet: &EncodedPacket,
    why: Transient,
    retries: &Retries,
    last: PublishError,
) -> qis_core::Error {
    let kind = match why {
        Transient::NoAck | Transient::InProcess => ErrorKind::Timeout,
        _ => ErrorKind::Unavailable,
    };
    err(
        kind,
        format!(
            "depositing on {} failed {} times over {:.1?} (last: {}): stream {} has no leader that answers (a cluster needs a majority of its servers up); the packet may or may not be stored, and depositing it again is safe (the same packet id is de-duplicated within the dedup window)",
            packet.subject(),
            retries.failures,
            retries.elapsed(),
            why.describe(),
            t.inner.stream,
        ),
    )
    .with_source(last)
}

/// Deposit one packet and wait for the server's ack.
pub(crate) async fn one(t: &NatsTransport, packet: &EncodedPacket) -> Result<Receipt> {
    let r = match attempt(t, packet).await {
        Ok(ack) => receipt(t, packet, ack),
        Err(e) => {
            let started = Instant::now();
            let r = retry(t, packet, e, false).await;
            if r.is_ok() {
                tracing::info!(subject = %packet.subject(), after = ?started.elapsed(), "deposit stored after retries (leader election?)");
            }
            r
        }
    };
    crate::duplicate::name_original(t, r?).await
}

/// Deposit many packets in order, keeping up to `ack_window` acks in flight;
/// receipts come back in input order. A packet whose ack does not come (or
/// that could not be sent) is retried on its own, in its turn.
pub(crate) async fn batch(t: &NatsTransport, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
    let window = t.inner.config.ack_window.max(1);
    let timeout = t.inner.config.request_timeout;
    let mut receipts = Vec::with_capacity(packets.len());
    let mut in_flight: VecDeque<Sent> = VecDeque::with_capacity(window.min(packets.len()));
    let mut recovered = false;
    // An error returns at once: those already sent may be stored, and the
    // caller may deposit them again safely (de-duplication by packet id).
    for (i, p) in packets.iter().enumerate() {
        if in_flight.len() >= window {
            let sent = in_flight.pop_front().expect("window is not empty");
            receipts.push(settle(t, &packets[sent.index], sent, &mut recovered).await?);
        }
        match send(t, p).await {
            Ok(ack) => in_flight.push_back(Sent {
                index: i,
                due: Instant::now() + timeout,
                ack,
            }),
            Err(e) => {
                // Keep the receipts in order: those before this one first.
                while let Some(sent) = in_flight.pop_front() {
                    receipts.push(settle(t, &packets[sent.index], sent, &mut recovered).await?);
                }
                let r = retry(t, p, e, recovered).await?;
                recovered = true;
                receipts.push(r);
            }
        }
    }
    while let Some(sent) = in_flight.pop_front() {
        receipts.push(settle(t, &packets[sent.index], sent, &mut recovered).await?);
    }
    if recovered {
        tracing::info!(
            packets = packets.len(),
            "batch deposit stored after retries (leader election?)"
        );
    }
    Ok(receipts)
}

/// What a foreign publisher of garbage does: a plain JetStream publish of
/// `body` on `subject`, with no `Nats-Msg-Id` and no check, waiting for the
/// stream's ack (tests of malformed-message handling).
#[async_trait]
impl InjectRaw for NatsTransport {
    async fn inject_raw(&self, subject: &str, body: &[u8]) -> Result<()> {
        let failed = |e: async_nats::jetstream::context::PublishError| {
            err(
                ErrorKind::Backend,
                format!("a raw publish on {subject} failed"),
            )
            .with_source(e)
        };
        self.inner
            .js
            .publish(subject.to_string(), bytes::Bytes::copy_from_slice(body))
            .await
            .map_err(failed)?
            .await
            .map_err(failed)?;
        Ok(())
    }
}
