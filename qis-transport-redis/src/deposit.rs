//! Deposit (one Lua script per chunk of packets) and fire-and-forget publish.

use std::sync::LazyLock;

use futures::future::try_join_all;
use redis::{Script, Value};

use qis_core::{EncodedPacket, Error, PacketId, Position, Receipt, Result, Subject};

use crate::consumer::{parse_entry_id, value_str};
use crate::error::{redis_error, unexpected};
use crate::retention::{parse_dropped, warn_dropped, Dropped};
use crate::RedisTransport;

/// Packets per script call in a batch. Many chunks are in flight at once on
/// the multiplexed connection; each call holds the server for well under a
/// millisecond.
const CHUNK: usize = 128;

/// New-subject events kept (approximately) in `{ns}:new-subjects`.
const NEW_SUBJECTS_MAX_LEN: u64 = 10_000;

/// Stores a chunk of packets, atomically with their de-duplication markers
/// (see `lua/deposit.lua` for its keys, arguments and reply).
pub(crate) static DEPOSIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/field_fn.lua"),
        include_str!("lua/trim_fn.lua"),
        include_str!("lua/deposit.lua")
    ))
});

/// What the deposit script says of one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// An identical packet was deposited within the window: not stored again.
    pub duplicate: bool,
    /// Where it is stored (for a duplicate: where the original is).
    pub position: Position,
    /// For a duplicate, the original's subject (`None` for a new packet,
    /// and for markers written before the subject was kept).
    pub original_subject: Option<String>,
}

/// Read the deposit script's reply for `packets` packets: one [`Stored`]
/// per packet, and what the trims took from consumers before they acked.
pub(crate) fn parse_deposit_reply(
    v: &Value,
    packets: usize,
) -> Result<(Vec<Stored>, Vec<Dropped>)> {
    let doing = "deposit";
    let Value::Array(parts) = v else {
        return Err(unexpected(doing, v));
    };
    let [Value::Array(flat), dropped] = parts.as_slice() else {
        return Err(unexpected(doing, v));
    };
    if flat.len() != packets * 2 {
        return Err(unexpected(doing, v));
    }
    let stored = flat
        .chunks_exact(2)
        .map(|pair| {
            let duplicate = matches!(pair[0], Value::Int(1));
            let text = value_str(&pair[1]).ok_or_else(|| unexpected(doing, v))?;
            // A duplicate's marker is "{entry id} {subject}".
            let (id, original_subject) = match text.split_once(' ') {
                Some((id, subject)) if duplicate => (id, Some(subject.to_string())),
                _ => (text, None),
            };
            let position = parse_entry_id(id).ok_or_else(|| unexpected(doing, v))?;
            Ok(Stored {
                duplicate,
                position,
                original_subject,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((stored, parse_dropped(dropped, doing)?))
}

/// Lowercase hex of a packet id, without allocating.
fn encode_hex<'a>(id: &PacketId, out: &'a mut [u8; 64]) -> &'a [u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in id.as_bytes().iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    &out[..]
}

/// The receipt of `p` from what the script said of it. A duplicate's names
/// the original's subject and position (de-duplication is per transport).
fn receipt(p: &EncodedPacket, s: Stored) -> Receipt {
    let subject = match &s.original_subject {
        Some(original) if original != p.subject().as_str() => match Subject::new(original.as_str())
        {
            Ok(subject) => subject,
            Err(e) => {
                tracing::debug!(original = %original, error = %e, "a de-duplication marker names no valid subject; naming the deposit's");
                p.subject().clone()
            }
        },
        _ => p.subject().clone(),
    };
    if s.duplicate {
        tracing::debug!(subject = %p.subject(), original = %subject, id = %p.id(), position = %s.position, "duplicate deposit recognised");
    }
    Receipt {
        subject,
        id: p.id(),
        position: s.position,
        duplicate: s.duplicate,
    }
}

impl RedisTransport {
    /// Deposit in chunks with all chunks in flight; receipts in input order.
    pub(crate) async fn deposit_many(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        let chunks = packets.chunks(CHUNK).map(|chunk| async move {
            let items: Vec<(&str, PacketId, &[u8])> = chunk
                .iter()
                .map(|p| (p.subject().as_str(), p.id(), p.body().as_ref()))
                .collect();
            let stored = self.run_deposit(&items, true).await?;
            Ok::<_, Error>(
                chunk
                    .iter()
                    .zip(stored)
                    .map(|(p, s)| receipt(p, s))
                    .collect::<Vec<_>>(),
            )
        });
        let per_chunk = try_join_all(chunks).await?;
        Ok(per_chunk.into_iter().flatten().collect())
    }

    /// Run the deposit script on `(subject, packet id, body)` items; returns
    /// what it says of each item.
    async fn run_deposit(
        &self,
        items: &[(&str, PacketId, &[u8])],
        dedup: bool,
    ) -> Result<Vec<Stored>> {
        let keys = self.keys();
        let cfg = &self.inner.config;
        let dedup_ms = if dedup && !cfg.dedup_window.is_zero() {
            cfg.dedup_window.as_millis().max(1) as u64
        } else {
            0
        };
        // EVALSHA built directly (one copy of the arguments, not two).
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(DEPOSIT.get_hash())
            .arg(3 + items.len())
            .arg(keys.subjects())
            .arg(keys.new_subjects())
            .arg(keys.subjects_version());
        let mut key = String::with_capacity(128);
        for (subject, _, _) in items {
            key.clear();
            key.push_str(keys.stream_prefix());
            key.push_str(subject);
            cmd.arg(key.as_bytes());
        }
        cmd.arg(dedup_ms)
            .arg(cfg.stream_max_len())
            .arg(cfg.retention.max_age.as_millis() as u64)
            .arg(keys.live_prefix())
            .arg(NEW_SUBJECTS_MAX_LEN)
            .arg(keys.dedup_prefix(dedup_ms))
            .arg(keys.stream_prefix());
        let mut hex = [0u8; 64];
        for (_, id, body) in items {
            cmd.arg(encode_hex(id, &mut hex)).arg(*body);
        }
        let mut conn = self.conn();
        let v: Value = match cmd.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // The server lost its script cache (a restart): load and retry.
                DEPOSIT
                    .load_async(&mut conn)
                    .await
                    .map_err(|e| redis_error(e, "loading the deposit script failed"))?;
                cmd.query_async(&mut conn).await
            }
            other => other,
        }
        .map_err(|e| {
            redis_error(
                e,
                "deposit failed; it may or may not be stored, and retrying the same packet is safe",
            )
        })?;
        let (stored, dropped) = parse_deposit_reply(&v, items.len())?;
        warn_dropped(&dropped);
        Ok(stored)
    }

    /// Fire-and-forget: `PUBLISH` on the subject's live channel, nothing stored.
    pub(crate) async fn publish(&self, packet: &EncodedPacket) -> Result<()> {
        let mut conn = self.conn();
        let _: Value = redis::cmd("PUBLISH")
            .arg(self.keys().live_channel(packet.subject().as_str()))
            .arg(packet.body().as_ref())
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, "publish failed"))?;
        Ok(())
    }

    /// Store raw bytes on `subject` without any check, as a foreign publisher
    /// of garbage would: appended to the subject's stream (indexed, no
    /// de-duplication) and published on its live channel.
    pub(crate) async fn deposit_raw(&self, subject: &str, body: &[u8]) -> Result<()> {
        self.run_deposit(&[(subject, PacketId::of(body), body)], false)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_core() {
        let id = PacketId::of(b"abc");
        let mut buf = [0u8; 64];
        assert_eq!(encode_hex(&id, &mut buf), id.to_hex().as_bytes());
    }
}
