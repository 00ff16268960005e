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

/// What a delivery's ack subject (its reply subject) says that a fetch
/// needs: where the message is stored and how often it was delivered.
///
/// `async_nats::jetstream::Message::info` reads the same subject, but it
/// needs a `jetstream::Message`, hence a clone of the JetStream context per
/// message, and it parses every token (the timestamp into a date); the two
/// numbers a delivery carries cost a tenth of that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AckInfo {
    /// The message's sequence number in its stream.
    pub(super) stream_sequence: u64,
    /// How many times it was delivered, this time included.
    pub(super) delivered: u64,
}

impl AckInfo {
    /// Read a `$JS.ACK.` subject in either form ADR-15 defines:
    /// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
    /// or with `<domain>.<account hash>.` before the stream and any number of
    /// tokens after the pending count (9 or more after the prefix). `None`
    /// for any other shape, or a delivered count or stream sequence that is
    /// not a number.
    pub(super) fn parse(reply: &str) -> Option<Self> {
        let rest = reply.strip_prefix("$JS.ACK.")?;
        // Where the first 9 dots are, and whether there are more.
        let (dots, found) = dots::<9>(rest.as_bytes());
        let n = found + 1;
        // Token `i` (below 9) of the `n`.
        let token = |i: usize| {
            let start = if i == 0 { 0 } else { dots[i - 1] + 1 };
            let end = if i < found { dots[i] } else { rest.len() };
            &rest[start..end]
        };
        // Where `<delivered>` is: after the stream and consumer names, and
        // after the domain and account hash in the extended form.
        let at = match n {
            7 => 2,
            n if n >= 9 => 4,
            _ => return None,
        };
        // Only the two numbers a delivery carries are read: a subject the
        // client would refuse for a bad time or pending count is still
        // acked (and not left to come back for ever).
        let number = |i: usize| token(i).parse::<u64>().ok();
        let info = AckInfo {
            delivered: number(at)?,
            stream_sequence: number(at + 1)?,
        };
        Some(info)
    }
}

/// Where the first `N` dots of `s` are, and how many there are (`N + 1`
/// when there are more than `N`). Eight bytes at a time: a subject is
/// read once per delivery and is mostly names and numbers between few
/// dots, so a word with no dot costs a handful of operations.
fn dots<const N: usize>(s: &[u8]) -> ([usize; N], usize) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut at = [0; N];
    let mut found = 0;
    let mut words = s.chunks_exact(8);
    let mut base = 0;
    for w in words.by_ref() {
        let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) ^ (ONES * u64::from(b'.'));
        // The top bit of each byte that is zero in `v` (a dot in `w`),
        // exactly: no byte's sum carries into the next.
        let mut zero = !(((v & LOW7) + LOW7) | v | LOW7);
        while zero != 0 {
            if found == N {
                return (at, N + 1);
            }
            at[found] = base + zero.trailing_zeros() as usize / 8;
            found += 1;
            zero &= zero - 1;
        }
        base += 8;
    }
    for (i, &c) in words.remainder().iter().enumerate() {
        if c == b'.' {
            if found == N {
                return (at, N + 1);
            }
            at[found] = base + i;
            found += 1;
        }
    }
    (at, found)
}

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
            self.publish_ack(reply(d)?, Bytes::from_static(ACK)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's own reading of `reply`, as (stream sequence, delivered).
    async fn client_reads(reply: &str) -> Option<(u64, u64)> {
        // A client that never connects: a context needs one, reading the
        // subject sends nothing.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .expect("a client that connects later");
        let m = async_nats::jetstream::Message {
            message: async_nats::Message {
                subject: "s".into(),
                reply: Some(reply.into()),
                payload: Bytes::new(),
                headers: None,
                status: None,
                description: None,
                length: 0,
            },
            context: async_nats::jetstream::new(client),
        };
        let info = m.info().ok()?;
        Some((info.stream_sequence, u64::try_from(info.delivered).ok()?))
    }

    #[tokio::test]
    async fn reads_ack_subjects_as_the_client_does() {
        for reply in [
            "$JS.ACK.S.c.1.42.7.1764000000000000000.0",
            "$JS.ACK.qis-iot.qis.3.18446744073709551615.9.1764000000000000000.12",
            "$JS.ACK._.ACCHASH.S.c.2.5.3.1764000000000000000.4.rnd",
            "$JS.ACK.hub.ACCHASH.S.c.1.6.6.1764000000000000000.0",
            "$JS.ACK.hub.ACCHASH.S.c.1.6.6.1764000000000000000.0.rnd.more.tokens",
            "$JS.ACK.S.c.x.42.7.1764000000000000000.0",
            "$JS.ACK.S.c.1.-42.7.1764000000000000000.0",
            "$JS.ACK.S.c.1.42.7.1764000000000000000",
            "$JS.ACK.S.c.1.42.7.1764000000000000000.0.8",
            "$JS.NAK.S.c.1.42.7.1764000000000000000.0",
            "_INBOX.abc",
            "",
        ] {
            let ours = AckInfo::parse(reply).map(|i| (i.stream_sequence, i.delivered));
            assert_eq!(ours, client_reads(reply).await, "{reply}");
        }
        // Names of every length, so that the dots fall at every place in
        // the words `dots` reads, and names with bytes over 0x7f.
        for len in 1..=17 {
            for consumer in ["c", "qis-cons", "ü.x"] {
                let stream = "S".repeat(len);
                for reply in [
                    format!("$JS.ACK.{stream}.{consumer}.3.{len}.7.1764000000000000000.0"),
                    format!(
                        "$JS.ACK.hub.ACC.{stream}.{consumer}.2.{len}.5.1764000000000000000.1.r"
                    ),
                ] {
                    let ours = AckInfo::parse(&reply).map(|i| (i.stream_sequence, i.delivered));
                    assert_eq!(ours, client_reads(&reply).await, "{reply}");
                }
            }
        }
        // Where the client refuses the time or the pending count, the
        // delivery still is one.
        for reply in [
            "$JS.ACK.S.c.1.42.7.notatime.0",
            "$JS.ACK.S.c.1.42.7.1764000000000000000.",
        ] {
            assert_eq!(client_reads(reply).await, None, "{reply}");
            assert_eq!(
                AckInfo::parse(reply),
                Some(AckInfo {
                    stream_sequence: 42,
                    delivered: 1
                }),
                "{reply}"
            );
        }
    }
}
