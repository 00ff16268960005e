//! Deposits: JetStream publishes with `Nats-Msg-Id` = packet id, one at a
//! time or many with their acks in flight. Also raw publishes for tests
//! ([`InjectRaw`]).

use std::collections::VecDeque;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_trait::async_trait;
use qis_core::backend::InjectRaw;
use qis_core::{EncodedPacket, ErrorKind, Position, Receipt, Result};

use crate::error::{self, err};
use crate::NatsTransport;

/// Send one publish; the returned future resolves to the server's ack.
async fn send(t: &NatsTransport, packet: &EncodedPacket) -> Result<PublishAckFuture> {
    let message = PublishMessage::build()
        .payload(packet.body().clone())
        .message_id(packet.id().to_hex());
    t.inner
        .js
        .send_publish(packet.subject().as_str().to_string(), message)
        .await
        .map_err(|e| publish_error(t, packet, e))
}

fn publish_error(
    t: &NatsTransport,
    packet: &EncodedPacket,
    e: async_nats::jetstream::context::PublishError,
) -> qis_core::Error {
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
    Ok(Receipt {
        subject: packet.subject().clone(),
        id: packet.id(),
        position: Position::Sequence(ack.sequence),
        duplicate: ack.duplicate,
    })
}

async fn settle(
    t: &NatsTransport,
    packet: &EncodedPacket,
    ack: PublishAckFuture,
) -> Result<Receipt> {
    let ack = ack.await.map_err(|e| publish_error(t, packet, e))?;
    crate::duplicate::name_original(t, receipt(t, packet, ack)?).await
}

/// Deposit one packet and wait for the server's ack.
pub(crate) async fn one(t: &NatsTransport, packet: &EncodedPacket) -> Result<Receipt> {
    let ack = send(t, packet).await?;
    settle(t, packet, ack).await
}

/// Deposit many packets in order, keeping up to `ack_window` acks in flight;
/// receipts come back in input order.
pub(crate) async fn batch(t: &NatsTransport, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
    let window = t.inner.config.ack_window.max(1);
    let mut receipts = Vec::with_capacity(packets.len());
    let mut in_flight: VecDeque<(usize, PublishAckFuture)> =
        VecDeque::with_capacity(window.min(packets.len()));
    for (i, p) in packets.iter().enumerate() {
        if in_flight.len() >= window {
            let (j, ack) = in_flight.pop_front().expect("window is not empty");
            receipts.push(settle(t, &packets[j], ack).await?);
        }
        match send(t, p).await {
            Ok(ack) => in_flight.push_back((i, ack)),
            // Those already sent may be stored; the caller may deposit them
            // again safely (de-duplication by packet id).
            Err(e) => return Err(e),
        }
    }
    while let Some((j, ack)) = in_flight.pop_front() {
        receipts.push(settle(t, &packets[j], ack).await?);
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
