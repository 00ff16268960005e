//! The ack protocol: each delivery's token is its JetStream reply subject;
//! `+ACK`, `-NAK` and `+TERM` are published to it, and sent again with a
//! reply (idempotently) when the server's confirmation is wanted.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use bytes::Bytes;
use qis_core::backend::token_value;
use qis_core::{Delivery, Result};

use super::NatsConsumer;
use crate::{error, NAME};

/// The ack-protocol payloads sent again, idempotently, to confirm.
pub(super) const ACK: &[u8] = b"+ACK";
pub(super) const TERM: &[u8] = b"+TERM";

/// The reply subject a delivery's token holds.
fn reply(delivery: &Delivery) -> Result<&async_nats::Subject> {
    token_value::<async_nats::Subject>(NAME, delivery)
}

impl NatsConsumer {
    /// Ack every delivery; with [`confirm_acks`](crate::NatsConfig::confirm_acks),
    /// wait for the server to confirm.
    pub(super) async fn ack_all(&self, deliveries: &[Delivery]) -> Result<()> {
        let Some((last, rest)) = deliveries.split_last() else {
            return Ok(());
        };
        for d in rest {
            self.send_ack(reply(d)?, Bytes::from_static(ACK), false)
                .await?;
        }
        let last = reply(last)?;
        if self.transport.inner.config.confirm_acks {
            // Confirming the last ack confirms them all: the server handles
            // one consumer's acks in the order a connection sent them.
            self.send_ack(last, Bytes::from_static(ACK), true).await?;
            *self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        } else {
            self.send_ack(last, Bytes::from_static(ACK), false).await?;
            self.remember(last.clone(), ACK);
        }
        Ok(())
    }

    /// Hand a delivery back, to come again after `delay`.
    pub(super) async fn nak_one(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let kind = if delay.is_zero() {
            AckKind::Nak(None)
        } else {
            AckKind::Nak(Some(delay))
        };
        self.send_ack(
            reply(delivery)?,
            kind.into(),
            self.transport.inner.config.confirm_acks,
        )
        .await
    }

    /// Send an ack-protocol payload; with `confirm`, wait until the server
    /// has processed it (and everything this connection sent before).
    async fn send_ack(
        &self,
        reply: &async_nats::Subject,
        payload: Bytes,
        confirm: bool,
    ) -> Result<()> {
        if confirm {
            self.request_ack(reply, payload).await
        } else {
            self.publish_ack(reply, payload).await
        }
    }

    /// Send an ack-protocol payload (the hot path: kept to a small future).
    pub(super) async fn publish_ack(
        &self,
        reply: &async_nats::Subject,
        payload: Bytes,
    ) -> Result<()> {
        self.transport
            .inner
            .client
            .publish(reply.clone(), payload)
            .await
            .map_err(|e| error::send(&format!("acknowledging to consumer {}", self.name), e))
    }

    /// Send an ack-protocol payload and wait for the server's reply.
    async fn request_ack(&self, reply: &async_nats::Subject, payload: Bytes) -> Result<()> {
        Box::pin(self.transport.inner.client.request(reply.clone(), payload))
            .await
            .map(|_| ())
            .map_err(|e| error::request(&format!("acknowledging to consumer {}", self.name), e))
    }

    /// Remember the last ack or term sent, for [`Self::confirm`].
    pub(super) fn remember(&self, reply: async_nats::Subject, payload: &'static [u8]) {
        *self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner()) = Some((reply, payload));
    }

    /// Wait until the server has processed every ack this handle sent: send
    /// the last ack (or term) again, with a reply, and wait for the reply.
    pub(super) async fn confirm(&self) -> Result<()> {
        let last = self
            .unconfirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match last {
            Some((reply, payload)) => {
                self.send_ack(&reply, Bytes::from_static(payload), true)
                    .await
            }
            None => Ok(()),
        }
    }
}
