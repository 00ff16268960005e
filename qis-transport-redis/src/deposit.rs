//! Deposit (one Lua script per chunk of packets) and fire-and-forget publish.

use std::sync::LazyLock;

use futures::future::try_join_all;
use redis::{Script, Value};

use qis_core::{
    transport::check_under_prefix, EncodedPacket, Error, ErrorKind, PacketId, Position, Receipt,
    Result,
};

use crate::{redis_error, unexpected, RedisTransport, NAME};

/// Packets per script call in a batch. Many chunks are in flight at once on
/// the multiplexed connection; each call holds the server for well under a
/// millisecond.
const CHUNK: usize = 128;

/// New-subject events kept (approximately) in `{ns}:new-subjects`.
const NEW_SUBJECTS_MAX_LEN: u64 = 10_000;

/// Stores a chunk of packets, atomically with their de-duplication markers.
///
/// KEYS: 1 subject index, 2 new-subject stream, then one stream key per
/// packet.
/// ARGV: 1 dedup window ms (0: off), 2 stream max length, 3 max age ms
/// (0: off), 4 live channel prefix, 5 new-subjects max length, 6 prefix of
/// the de-duplication buckets, 7 prefix of the stream keys, then per packet:
/// packet id, body.
/// Returns per packet: 0 or 1 (duplicate), entry id.
///
/// De-duplication markers live in hashes, one per window-long bucket of
/// server time (`{prefix}:d:{window}:{floor(now / window)}`: packet id →
/// entry id),
/// read with one `HMGET` per bucket (this one and the one before) and
/// written with one `HSET` per chunk; each bucket expires once the next one
/// is over. A re-deposit is thus recognised for at least one window and at
/// most two. Per packet the script costs one `XADD` and a hash field, which
/// keeps a batch deposit close to plain pipelined `XADD`s. Trimming and
/// indexing happen once per stream per chunk; nothing is published when no
/// live subscriber (a pattern subscription) exists.
pub(crate) static DEPOSIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local window = tonumber(ARGV[1])
local max_age = tonumber(ARGV[3])
local chan = ARGV[4]
local skip = #ARGV[7]
local n = #KEYS - 2
local live = redis.call('PUBSUB', 'NUMPAT') > 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = {}
local cur
local expire_at
if window > 0 then
  local b = math.floor(now / window)
  cur = ARGV[6] .. string.format('%d', b)
  expire_at = string.format('%d', (b + 2) * window)
  local prev = ARGV[6] .. string.format('%d', b - 1)
  local pids = {}
  for i = 1, n do pids[i] = ARGV[6 + 2 * i] end
  local a = redis.call('HMGET', cur, unpack(pids))
  local p = {}
  if redis.call('EXISTS', prev) == 1 then p = redis.call('HMGET', prev, unpack(pids)) end
  for i = 1, n do
    local v = a[i] or p[i]
    if v then known[pids[i]] = v end
  end
end
local out = {}
local fresh = {}
local touched = {}
local order = {}
local function remember()
  if #fresh > 0 then
    redis.call('HSET', cur, unpack(fresh))
    redis.call('PEXPIREAT', cur, expire_at)
  end
end
for i = 1, n do
  local skey = KEYS[2 + i]
  local pid = ARGV[6 + 2 * i]
  local body = ARGV[7 + 2 * i]
  local v = known[pid]
  if v then
    out[#out + 1] = 1
    out[#out + 1] = v
  else
    local r = redis.pcall('XADD', skey, '*', 'id', pid, 'body', body)
    if type(r) == 'table' and r.err then
      remember()
      return redis.error_reply(r.err)
    end
    if window > 0 then
      known[pid] = r
      fresh[#fresh + 1] = pid
      fresh[#fresh + 1] = r
    end
    local subject = touched[skey]
    if not subject then
      subject = string.sub(skey, skip + 1)
      touched[skey] = subject
      order[#order + 1] = {skey, subject}
    end
    if live then redis.call('PUBLISH', chan .. subject, body) end
    out[#out + 1] = 0
    out[#out + 1] = r
  end
end
remember()
local minid = false
if max_age > 0 and now - max_age > 0 then minid = string.format('%d', now - max_age) end
for _, e in ipairs(order) do
  redis.call('XTRIM', e[1], 'MAXLEN', '~', ARGV[2])
  if minid then redis.call('XTRIM', e[1], 'MINID', '~', minid) end
  if redis.call('ZADD', KEYS[1], 'NX', 0, e[2]) == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 's', e[2])
  end
end
return out
"#,
    )
});

/// Lowercase hex of a packet id, without allocating.
fn encode_hex<'a>(id: &PacketId, out: &'a mut [u8; 64]) -> &'a [u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in id.as_bytes().iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    &out[..]
}

/// Parse a stream entry id `ms-seq`.
pub(crate) fn parse_entry_id(s: &str) -> Option<Position> {
    let (ms, seq) = s.split_once('-')?;
    Some(Position::StreamId {
        ms: ms.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

pub(crate) fn value_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

impl RedisTransport {
    /// Deposit in chunks with all chunks in flight; receipts in input order.
    pub(crate) async fn deposit_many(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        for p in packets {
            check_under_prefix(NAME, &self.inner.config.prefix, p.subject())?;
        }
        let chunks = packets.chunks(CHUNK).map(|chunk| async move {
            let items: Vec<(&str, PacketId, &[u8])> = chunk
                .iter()
                .map(|p| (p.subject().as_str(), p.id(), p.body().as_ref()))
                .collect();
            let ids = self.run_deposit(&items, true).await?;
            Ok::<_, Error>(
                chunk
                    .iter()
                    .zip(ids)
                    .map(|(p, (duplicate, position))| {
                        if duplicate {
                            tracing::debug!(subject = %p.subject(), id = %p.id(), %position, "duplicate deposit recognised");
                        }
                        Receipt {
                            subject: p.subject().clone(),
                            id: p.id(),
                            position,
                            duplicate,
                        }
                    })
                    .collect::<Vec<_>>(),
            )
        });
        let per_chunk = try_join_all(chunks).await?;
        Ok(per_chunk.into_iter().flatten().collect())
    }

    /// Run the deposit script on `(subject, packet id, body)` items; returns
    /// `(duplicate, position)` per item.
    async fn run_deposit(
        &self,
        items: &[(&str, PacketId, &[u8])],
        dedup: bool,
    ) -> Result<Vec<(bool, Position)>> {
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
            .arg(2 + items.len())
            .arg(keys.subjects())
            .arg(keys.new_subjects());
        let mut key = String::with_capacity(128);
        for (subject, _, _) in items {
            key.clear();
            key.push_str(keys.stream_prefix());
            key.push_str(subject);
            cmd.arg(key.as_bytes());
        }
        cmd.arg(dedup_ms)
            .arg(cfg.stream_max_len())
            .arg(cfg.max_age.as_millis() as u64)
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
        let doing = "deposit";
        let Value::Array(flat) = &v else {
            return Err(unexpected(doing, &v));
        };
        if flat.len() != items.len() * 2 {
            return Err(unexpected(doing, &v));
        }
        flat.chunks(2)
            .map(|pair| {
                let dup = matches!(pair[0], Value::Int(1));
                let pos = value_str(&pair[1])
                    .and_then(parse_entry_id)
                    .ok_or_else(|| unexpected(doing, &v))?;
                Ok((dup, pos))
            })
            .collect()
    }

    /// Fire-and-forget: `PUBLISH` on the subject's live channel, nothing stored.
    pub(crate) async fn publish(&self, packet: &EncodedPacket) -> Result<()> {
        check_under_prefix(NAME, &self.inner.config.prefix, packet.subject())?;
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
    /// de-duplication) and published on its live channel. For tests of
    /// malformed-message handling; never needed otherwise.
    pub async fn deposit_raw_unchecked(&self, subject: &str, body: &[u8]) -> Result<Position> {
        self.check_open()?;
        let r = self
            .run_deposit(&[(subject, PacketId::of(body), body)], false)
            .await?;
        r.into_iter()
            .next()
            .map(|(_, p)| p)
            .ok_or_else(|| Error::new(ErrorKind::Backend, NAME, "raw deposit returned nothing"))
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

    #[test]
    fn entry_ids() {
        assert_eq!(
            parse_entry_id("1764000000000-7"),
            Some(Position::StreamId {
                ms: 1_764_000_000_000,
                seq: 7
            })
        );
        assert_eq!(parse_entry_id("x-1"), None);
        assert_eq!(parse_entry_id("17"), None);
    }
}
