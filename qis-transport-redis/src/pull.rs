//! Durable consumers: consumer groups on the subject streams.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex as StdMutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use qis_core::{
    transport::check_pattern_overlaps, AckToken, ConsumerConfig, Delivery, DurableConsumer, Error,
    ErrorKind, OutcomePacket, PacketId, Received, Result, StartPosition, SubjectPattern,
};

use crate::deposit::{parse_entry_id, value_str};
use crate::{redis_error, unexpected, RedisTransport, NAME};

/// The one Redis consumer name used inside every group: handles of one
/// durable consumer share its pending entries.
const MEMBER: &str = "qis";

/// Longest a blocked read waits before looking again for redeliveries that
/// became due through another handle, or for new subjects another handle was
/// told about.
const MAX_BLOCK: Duration = Duration::from_secs(1);

/// Shortest gap between two looks for due redeliveries.
const MIN_CLAIM_GAP: Duration = Duration::from_millis(10);

/// Creates a consumer: its definition and a group on each existing stream it
/// matches, atomically with respect to deposits (so `new` misses nothing and
/// sees nothing old).
///
/// KEYS: 1 definition hash, 2 subject index, 3.. matching streams.
/// ARGV: 1 pattern, 2 start (description), 3 start id for streams found
/// later, 4 index size the caller saw, 5 group, 6 start id for the streams.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local existing = redis.call('HGET', KEYS[1], 'pattern')
if existing then return {'exists', existing} end
if redis.call('ZCARD', KEYS[2]) ~= tonumber(ARGV[4]) then return {'retry'} end
for i = 3, #KEYS do
  local r = redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[5], ARGV[6], 'MKSTREAM')
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'BUSYGROUP', 1, true) then
      redis.call('XGROUP', 'SETID', KEYS[i], ARGV[5], ARGV[6])
    else
      return redis.error_reply(r.err)
    end
  end
end
redis.call('HSET', KEYS[1], 'pattern', ARGV[1], 'start', ARGV[2], 'lazy_start', ARGV[3])
return {'created'}
"#,
    )
});

/// One look in Lua: the subject index size, due redeliveries (if asked),
/// then new entries read stream by stream (if asked), so that the total
/// never exceeds what was asked. The common read path does not use it:
/// native `XREADGROUP` is about three times cheaper for Redis than the same
/// read converted to Lua and back (see `RedisConsumer::look`).
///
/// KEYS: 1 subject index, 2 delayed naks, 3.. streams.
/// ARGV: 1 group, 2 member, 3 most to claim (0: no claim), 4 most to read
/// (0: no read), 5 ack wait ms, 6 which stream to read first (0-based).
/// Returns: index size, ms until the next redelivery is due (-1: unknown),
/// then per entry: stream key, entry id, fields, delivery count.
pub(crate) static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local group, member = ARGV[1], ARGV[2]
local remaining = tonumber(ARGV[3])
local ack_wait = tonumber(ARGV[5])
local out = {redis.call('ZCARD', KEYS[1]), -1}
if remaining > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local has_delay = redis.call('EXISTS', KEYS[2]) == 1
  local due = -1
  local function later(d)
    if d < 0 then d = 0 end
    if due < 0 or d < due then due = d end
  end
  local function held(key, id)
    if not has_delay then return nil end
    local at = redis.call('ZSCORE', KEYS[2], key .. ' ' .. id)
    if at and tonumber(at) > now then return tonumber(at) - now end
    return nil
  end
  for i = 3, #KEYS do
    local key = KEYS[i]
    if remaining > 0 then
      local p = redis.pcall('XPENDING', key, group, 'IDLE', ack_wait, '-', '+', remaining)
      if type(p) == 'table' and not p.err then
        for _, e in ipairs(p) do
          local id = e[1]
          local wait = held(key, id)
          if wait then
            later(wait)
          elseif remaining > 0 then
            local c = redis.call('XCLAIM', key, group, member, ack_wait, id)
            if c[1] then
              out[#out + 1] = key
              out[#out + 1] = c[1][1]
              out[#out + 1] = c[1][2]
              out[#out + 1] = e[4] + 1
              remaining = remaining - 1
            else
              redis.call('XACK', key, group, id)
            end
          end
        end
      end
    end
    local p2 = redis.pcall('XPENDING', key, group, '-', '+', 32)
    if type(p2) == 'table' and not p2.err then
      for _, e in ipairs(p2) do
        local wait = held(key, e[1])
        if wait then later(wait) else later(ack_wait - tonumber(e[3])) end
      end
    end
  end
  if has_delay then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now))
  end
  out[2] = due
end
remaining = tonumber(ARGV[4])
local n = #KEYS - 2
local first = tonumber(ARGV[6]) % math.max(n, 1)
for j = 0, n - 1 do
  if remaining <= 0 then break end
  local key = KEYS[3 + (first + j) % n]
  local r = redis.pcall('XREADGROUP', 'GROUP', group, member, 'COUNT', remaining, 'STREAMS', key, '>')
  if type(r) == 'table' and not r.err then
    for _, s in ipairs(r) do
      for _, e in ipairs(s[2]) do
        out[#out + 1] = key
        out[#out + 1] = e[1]
        out[#out + 1] = e[2]
        out[#out + 1] = 1
        remaining = remaining - 1
      end
    end
  end
end
return out
"#,
    )
});

/// Hands a delivery back: resets its idle time so it is claimed again after
/// `delay`; a delay longer than the ack wait is also kept in the delayed set.
///
/// KEYS: 1 stream, 2 delayed naks. ARGV: 1 group, 2 member, 3 entry id,
/// 4 ack wait ms, 5 delay ms. Returns 1 if the entry was pending.
pub(crate) static NAK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ack_wait = tonumber(ARGV[4])
local delay = tonumber(ARGV[5])
local idle = ack_wait - delay
if idle < 0 then idle = 0 end
local r = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', string.format('%d', idle), 'JUSTID')
if #r == 0 then return 0 end
local m = KEYS[1] .. ' ' .. ARGV[3]
if delay > ack_wait then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], string.format('%d', now + delay), m)
else
  redis.call('ZREM', KEYS[2], m)
end
return 1
"#,
    )
});

/// What an ack or nak needs to find a delivery again.
#[derive(Debug)]
struct RedisAck {
    stream: String,
    entry: String,
}

/// One entry as read from Redis, not yet decoded.
struct RawEntry {
    stream: String,
    entry: String,
    fields: Value,
    count: u32,
}

struct FetchState {
    /// Stream keys with a group of this consumer, in discovery order.
    streams: Vec<String>,
    known: HashSet<String>,
    /// The subject index size at the last discovery (`None`: discover now).
    index_len: Option<i64>,
    /// Rotates which stream is read first, so a busy one starves none.
    rotate: usize,
    /// The connection for blocking reads.
    blocking: Option<MultiplexedConnection>,
    /// Deliveries read beyond `max` by a blocking read (rare), handed out first.
    buffer: VecDeque<Delivery>,
}

/// A durable consumer on Redis.
pub(crate) struct RedisConsumer {
    transport: RedisTransport,
    name: String,
    pattern: SubjectPattern,
    lazy_start: String,
    ack_wait: Duration,
    delayed_key: String,
    state: Mutex<FetchState>,
    next_claim: StdMutex<Instant>,
    malformed: AtomicU64,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("name", &self.name)
            .field("pattern", &self.pattern.as_str())
            .field("ack_wait", &self.ack_wait)
            .finish_non_exhaustive()
    }
}

/// Group start ids for `start`: (for the streams that exist now, for
/// streams found later).
fn start_ids(start: StartPosition) -> (String, String) {
    match start {
        StartPosition::All => ("0".into(), "0".into()),
        // A stream created after the consumer holds only new packets.
        StartPosition::New => ("$".into(), "0".into()),
        StartPosition::Since(t) => {
            let ms = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            // Deliver entries whose millisecond is at or after t's.
            let id = if ms == 0 {
                "0".to_string()
            } else {
                format!("{}-{}", ms - 1, u64::MAX)
            };
            (id.clone(), id)
        }
    }
}

fn describe(start: StartPosition) -> String {
    match start {
        StartPosition::All => "all".into(),
        StartPosition::New => "new".into(),
        StartPosition::Since(t) => format!(
            "since {} ms",
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ),
    }
}

/// The ZRANGEBYLEX bounds covering every subject `pattern` can match.
fn lex_range(pattern: &SubjectPattern) -> (String, String) {
    if pattern.is_exact() {
        let s = pattern.as_str();
        return (format!("[{s}"), format!("[{s}"));
    }
    let lp = pattern.literal_prefix();
    if lp.is_empty() {
        ("-".into(), "+".into())
    } else {
        // '/' is the byte after '.': every "{lp}.…" lies in [lp. , lp/).
        (format!("[{lp}."), format!("({lp}/"))
    }
}

fn is_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code) || e.to_string().contains(code)
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => value_str(other).and_then(|s| s.parse().ok()),
    }
}

/// Parse an `XREADGROUP` reply (RESP2 arrays or RESP3 maps).
fn parse_read(v: Value, doing: &str) -> Result<Vec<RawEntry>> {
    let streams: Vec<(Value, Value)> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for s in items {
                match s {
                    Value::Array(mut kv) if kv.len() == 2 => {
                        let entries = kv.pop().unwrap_or(Value::Nil);
                        let key = kv.pop().unwrap_or(Value::Nil);
                        out.push((key, entries));
                    }
                    other => return Err(unexpected(doing, &other)),
                }
            }
            out
        }
        Value::Map(kv) => kv,
        other => return Err(unexpected(doing, &other)),
    };
    let mut out = Vec::new();
    for (key, entries) in streams {
        let stream = value_str(&key)
            .ok_or_else(|| unexpected(doing, &key))?
            .to_string();
        let Value::Array(entries) = entries else {
            continue;
        };
        for e in entries {
            let Value::Array(mut parts) = e else {
                return Err(unexpected(doing, &e));
            };
            if parts.len() != 2 {
                return Err(unexpected(doing, &Value::Array(parts)));
            }
            let fields = parts.pop().unwrap_or(Value::Nil);
            let id = parts.pop().unwrap_or(Value::Nil);
            let entry = value_str(&id)
                .ok_or_else(|| unexpected(doing, &id))?
                .to_string();
            out.push(RawEntry {
                stream: stream.clone(),
                entry,
                fields,
                count: 1,
            });
        }
    }
    Ok(out)
}

/// The `body` and `id` fields of an entry.
fn fields_of(fields: &Value) -> (Option<&[u8]>, Option<&[u8]>) {
    let pairs: Box<dyn Iterator<Item = (&Value, &Value)> + '_> = match fields {
        Value::Array(a) => Box::new(a.chunks_exact(2).map(|c| (&c[0], &c[1]))),
        Value::Map(m) => Box::new(m.iter().map(|(k, v)| (k, v))),
        _ => Box::new(std::iter::empty()),
    };
    let mut body = None;
    let mut id = None;
    for (k, v) in pairs {
        if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
            match k.as_slice() {
                b"body" => body = Some(v.as_slice()),
                b"id" => id = Some(v.as_slice()),
                _ => {}
            }
        }
    }
    (body, id)
}

/// Decode an entry's body; the packet id is the entry's `id` field when it
/// is one, else computed from the body.
fn decode_entry(subject: &str, fields: &Value) -> Result<Received> {
    let (body, id) = fields_of(fields);
    let body = body.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidPacket,
            NAME,
            "stream entry has no body field",
        )
    })?;
    let packet = OutcomePacket::decode(body)?;
    let id = id
        .and_then(|i| std::str::from_utf8(i).ok())
        .and_then(|i| i.parse::<PacketId>().ok())
        .unwrap_or_else(|| PacketId::of(body));
    Ok(Received {
        subject: subject.to_string(),
        id,
        packet,
    })
}

impl RedisTransport {
    pub(crate) async fn open_consumer(&self, config: ConsumerConfig) -> Result<RedisConsumer> {
        let prefix = &self.inner.config.prefix;
        check_pattern_overlaps(NAME, prefix, &config.pattern)?;
        let keys = self.keys();
        let def_key = keys.consumer(&config.name);
        let mut conn = self.conn();
        // The new-subjects group first: a subject created from now on wakes us.
        self.ensure_groups(&config.name, &[keys.new_subjects()], "$")
            .await?;
        let (now_id, lazy_id) = start_ids(config.start);
        let mut lazy_start = None;
        for _ in 0..20 {
            let existing: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&def_key)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "reading the consumer definition failed"))?;
            if let Some(p) = existing.get("pattern") {
                if p != config.pattern.as_str() {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        NAME,
                        format!(
                            "consumer {} exists with pattern {p}, not {}: use another name",
                            config.name, config.pattern
                        ),
                    ));
                }
                lazy_start = Some(
                    existing
                        .get("lazy_start")
                        .cloned()
                        .unwrap_or_else(|| "0".into()),
                );
                break;
            }
            let (len, subjects) = self.matching_subjects(&config.pattern).await?;
            let mut inv = CREATE.prepare_invoke();
            inv.key(&def_key).key(keys.subjects());
            for s in &subjects {
                inv.key(keys.stream(s));
            }
            inv.arg(config.pattern.as_str())
                .arg(describe(config.start))
                .arg(&lazy_id)
                .arg(len)
                .arg(&config.name)
                .arg(&now_id);
            let v: Value = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "creating the consumer failed"))?;
            match &v {
                Value::Array(a) if a.first().and_then(value_str) == Some("created") => {
                    tracing::debug!(consumer = %config.name, pattern = %config.pattern, start = %describe(config.start), streams = subjects.len(), "durable consumer created");
                    lazy_start = Some(lazy_id.clone());
                    break;
                }
                // "exists" (created meanwhile by another handle: compare on the
                // next turn) or "retry" (a subject appeared meanwhile).
                Value::Array(_) => continue,
                other => return Err(unexpected("creating the consumer", other)),
            }
        }
        let lazy_start = lazy_start.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                NAME,
                "could not create the consumer: new subjects kept appearing; retry",
            )
        })?;
        Ok(RedisConsumer {
            transport: self.clone(),
            delayed_key: keys.delayed(&config.name),
            name: config.name,
            pattern: config.pattern,
            lazy_start,
            ack_wait: config.ack_wait.max(Duration::from_millis(1)),
            state: Mutex::new(FetchState {
                streams: Vec::new(),
                known: HashSet::new(),
                index_len: None,
                rotate: 0,
                blocking: None,
                buffer: VecDeque::new(),
            }),
            next_claim: StdMutex::new(Instant::now()),
            malformed: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// The subject index size and the subjects in it that `pattern` matches.
    async fn matching_subjects(&self, pattern: &SubjectPattern) -> Result<(i64, Vec<String>)> {
        let (min, max) = lex_range(pattern);
        let mut conn = self.conn();
        let (len, subjects): (i64, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("ZCARD")
            .arg(self.keys().subjects())
            .cmd("ZRANGEBYLEX")
            .arg(self.keys().subjects())
            .arg(min)
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, "reading the subject index failed"))?;
        let matching = subjects
            .into_iter()
            .filter(|s| pattern.matches(s))
            .collect();
        Ok((len, matching))
    }

    /// Create group `group` at `start` on each stream (creating empty streams
    /// as needed); an existing group is left as it is.
    async fn ensure_groups(&self, group: &str, streams: &[String], start: &str) -> Result<()> {
        if streams.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for s in streams {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(s)
                .arg(group)
                .arg(start)
                .arg("MKSTREAM");
        }
        let mut conn = self.conn();
        let results: Vec<redis::RedisResult<Value>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, "creating consumer groups failed"))?;
        for r in results {
            if let Err(e) = r {
                if !is_code(&e, "BUSYGROUP") {
                    return Err(redis_error(e, "creating a consumer group failed"));
                }
            }
        }
        Ok(())
    }
}

impl RedisConsumer {
    fn check_open(&self) -> Result<()> {
        self.transport.check_open()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                NAME,
                format!("consumer {} is closed: open it again by name", self.name),
            ));
        }
        Ok(())
    }

    fn token<'a>(&self, d: &'a Delivery) -> Result<&'a RedisAck> {
        d.token.get::<RedisAck>().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                NAME,
                "this delivery came from another transport",
            )
        })
    }

    fn bring_claim_forward(&self, at: Instant) {
        let mut n = self.next_claim.lock().unwrap_or_else(|e| e.into_inner());
        if at < *n {
            *n = at;
        }
    }

    /// Find streams the pattern matches that have no group of ours yet.
    async fn discover(&self, st: &mut FetchState) -> Result<()> {
        let (len, subjects) = self.transport.matching_subjects(&self.pattern).await?;
        let keys = self.transport.keys();
        let fresh: Vec<String> = subjects
            .iter()
            .map(|s| keys.stream(s))
            .filter(|k| !st.known.contains(k))
            .collect();
        self.transport
            .ensure_groups(&self.name, &fresh, &self.lazy_start)
            .await?;
        if !fresh.is_empty() {
            tracing::debug!(consumer = %self.name, new_streams = fresh.len(), "consumer found streams");
        }
        for k in fresh {
            st.known.insert(k.clone());
            st.streams.push(k);
        }
        st.index_len = Some(len);
        Ok(())
    }

    /// Run the Lua look: claim up to `claim_max` due redeliveries, then
    /// read up to `read_max` new entries from `streams` (in that order).
    async fn look_lua(
        &self,
        streams: &[&str],
        claim_max: usize,
        read_max: usize,
    ) -> Result<(i64, Option<u64>, Vec<RawEntry>)> {
        let keys = self.transport.keys();
        let mut inv = FETCH.prepare_invoke();
        inv.key(keys.subjects()).key(&self.delayed_key);
        for s in streams {
            inv.key(*s);
        }
        inv.arg(&self.name)
            .arg(MEMBER)
            .arg(claim_max)
            .arg(read_max)
            .arg(self.ack_wait.as_millis() as u64)
            .arg(0);
        let mut conn = self.transport.conn();
        let v: Value = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("fetch for consumer {} failed", self.name)))?;
        let doing = "fetch";
        let Value::Array(items) = v else {
            return Err(unexpected(doing, &v));
        };
        if items.len() < 2 || (items.len() - 2) % 4 != 0 {
            return Err(unexpected(doing, &Value::Array(items)));
        }
        let len = as_i64(&items[0]).ok_or_else(|| unexpected(doing, &items[0]))?;
        let due = as_i64(&items[1]).and_then(|d| u64::try_from(d).ok());
        let mut out = Vec::with_capacity((items.len() - 2) / 4);
        let mut it = items.into_iter().skip(2);
        while let (Some(k), Some(id), Some(fields), Some(n)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            let (Some(stream), Some(entry)) = (value_str(&k), value_str(&id)) else {
                return Err(unexpected(doing, &k));
            };
            out.push(RawEntry {
                stream: stream.to_string(),
                entry: entry.to_string(),
                fields,
                count: as_i64(&n)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1)
                    .max(1),
            });
        }
        Ok((len, due, out))
    }

    /// One non-blocking look: the subject index size, the next redelivery
    /// hint (when claiming) and at most `max` entries.
    ///
    /// New entries are read with native `XREADGROUP` over the streams that
    /// may hold more, `COUNT remaining / streams` each (so the total never
    /// exceeds `max`); streams that returned less than their share are done,
    /// the others are read again with what remains. When fewer entries
    /// remain than streams, the Lua look reads stream by stream instead.
    async fn look(
        &self,
        st: &mut FetchState,
        max: usize,
        claim: bool,
    ) -> Result<(i64, Option<u64>, Vec<RawEntry>)> {
        st.rotate = st.rotate.wrapping_add(1);
        let n = st.streams.len();
        let first = if n == 0 { 0 } else { st.rotate % n };
        let mut candidates: Vec<&str> = (0..n)
            .map(|i| st.streams[(first + i) % n].as_str())
            .collect();
        let mut len = None;
        let mut due = None;
        let mut out = Vec::new();
        if claim {
            let (l, d, claimed) = self.look_lua(&candidates, max, 0).await?;
            len = Some(l);
            due = d;
            out = claimed;
        }
        let doing = "fetch";
        loop {
            let remaining = max.saturating_sub(out.len());
            if remaining == 0 || candidates.is_empty() {
                break;
            }
            if remaining < candidates.len() {
                let (l, _, read) = self.look_lua(&candidates, 0, remaining).await?;
                len.get_or_insert(l);
                out.extend(read);
                break;
            }
            let share = remaining / candidates.len();
            let mut pipe = redis::pipe();
            if len.is_none() {
                pipe.cmd("ZCARD").arg(self.transport.keys().subjects());
            }
            let read = pipe.cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.name)
                .arg(MEMBER)
                .arg("COUNT")
                .arg(share)
                .arg("STREAMS")
                .arg(&candidates);
            for _ in &candidates {
                read.arg(">");
            }
            let mut conn = self.transport.conn();
            let mut replies: Vec<Value> = match pipe.query_async(&mut conn).await {
                Ok(r) => r,
                Err(e) if is_code(&e, "NOGROUP") => {
                    // A stream or group vanished (deleted by hand?): recreate
                    // the groups on the next turn.
                    tracing::warn!(consumer = %self.name, error = %e, "a consumer group is missing; recreating");
                    st.known.clear();
                    st.streams.clear();
                    st.index_len = None;
                    return Ok((-1, due, out));
                }
                Err(e) => {
                    return Err(redis_error(
                        e,
                        &format!("fetch for consumer {} failed", self.name),
                    ))
                }
            };
            let reply = replies.pop().unwrap_or(Value::Nil);
            if len.is_none() {
                let l = replies.pop().unwrap_or(Value::Nil);
                len = Some(as_i64(&l).ok_or_else(|| unexpected(doing, &l))?);
            }
            let entries = parse_read(reply, doing)?;
            if entries.is_empty() {
                break;
            }
            let mut per_stream: HashMap<&str, usize> = HashMap::new();
            for e in &entries {
                *per_stream.entry(e.stream.as_str()).or_default() += 1;
            }
            candidates.retain(|s| per_stream.get(s).copied().unwrap_or(0) >= share);
            out.extend(entries);
        }
        let len = match len {
            Some(l) => l,
            None => {
                let mut conn = self.transport.conn();
                redis::cmd("ZCARD")
                    .arg(self.transport.keys().subjects())
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_error(e, "reading the subject index failed"))?
            }
        };
        Ok((len, due, out))
    }

    /// Block until an entry arrives on one of our streams or a new subject
    /// appears, at most `block`.
    async fn block_read(
        &self,
        st: &mut FetchState,
        max: usize,
        block: Duration,
    ) -> Result<Vec<RawEntry>> {
        let new_subjects = self.transport.keys().new_subjects();
        if st.blocking.is_none() {
            let cfg = &self.transport.inner.config;
            let c = self
                .transport
                .client()
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(cfg.connect_timeout))
                        .set_response_timeout(None),
                )
                .await
                .map_err(|e| redis_error(e, "could not open the connection for blocking reads"))?;
            st.blocking = Some(c);
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.name)
            .arg(MEMBER)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS");
        for s in &st.streams {
            cmd.arg(s);
        }
        cmd.arg(&new_subjects);
        for _ in 0..=st.streams.len() {
            cmd.arg(">");
        }
        let guard = block + self.transport.inner.config.response_timeout;
        let conn = st.blocking.as_mut().expect("set above");
        let r = tokio::time::timeout(guard, cmd.query_async::<Value>(conn)).await;
        let v = match r {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                st.blocking = None;
                if is_code(&e, "NOGROUP") {
                    // A stream or group vanished (deleted by hand?): find and
                    // recreate the groups, then look again.
                    tracing::warn!(consumer = %self.name, error = %e, "a consumer group is missing; recreating");
                    st.known.clear();
                    st.streams.clear();
                    st.index_len = None;
                    self.transport
                        .ensure_groups(&self.name, std::slice::from_ref(&new_subjects), "$")
                        .await?;
                    return Ok(Vec::new());
                }
                return Err(redis_error(
                    e,
                    &format!("blocking fetch for consumer {} failed", self.name),
                ));
            }
            Err(_) => {
                st.blocking = None;
                return Err(Error::new(
                    ErrorKind::Timeout,
                    NAME,
                    format!("Redis did not answer a blocking read within {guard:?}"),
                ));
            }
        };
        let mut entries = parse_read(v, "blocking fetch")?;
        let (news, data): (Vec<RawEntry>, Vec<RawEntry>) =
            entries.drain(..).partition(|e| e.stream == new_subjects);
        if !news.is_empty() {
            // A subject appeared: discover on the next turn; the event itself
            // needs no redelivery.
            st.index_len = None;
            let ids: Vec<&str> = news.iter().map(|e| e.entry.as_str()).collect();
            let mut conn = self.transport.conn();
            let _: Value = redis::cmd("XACK")
                .arg(&new_subjects)
                .arg(&self.name)
                .arg(&ids)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "acking new-subject events failed"))?;
        }
        Ok(data)
    }

    /// Decode entries into deliveries; malformed ones are logged, counted and
    /// acked away.
    async fn accept(&self, entries: Vec<RawEntry>) -> Result<Vec<Delivery>> {
        let keys = self.transport.keys();
        let mut out = Vec::with_capacity(entries.len());
        let mut bad: Vec<RawEntry> = Vec::new();
        for e in entries {
            let subject = keys.subject_of(&e.stream).unwrap_or(&e.stream);
            let decoded = match parse_entry_id(&e.entry) {
                Some(position) => decode_entry(subject, &e.fields).map(|r| (r, position)),
                None => Err(Error::new(
                    ErrorKind::InvalidPacket,
                    NAME,
                    format!("stream entry id {:?} is not ms-seq", e.entry),
                )),
            };
            match decoded {
                Ok((received, position)) => out.push(Delivery {
                    received,
                    position,
                    delivery_count: e.count,
                    token: AckToken::new(RedisAck {
                        stream: e.stream,
                        entry: e.entry,
                    }),
                }),
                Err(err) => {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(consumer = %self.name, %subject, position = %e.entry, error = %err, "skipping malformed stream entry (acked, never redelivered)");
                    bad.push(e);
                }
            }
        }
        if !bad.is_empty() {
            self.xack(bad.iter().map(|e| (e.stream.as_str(), e.entry.as_str())))
                .await?;
        }
        Ok(out)
    }

    async fn xack<'a>(&self, items: impl Iterator<Item = (&'a str, &'a str)>) -> Result<()> {
        let mut by_stream: HashMap<&str, Vec<&str>> = HashMap::new();
        for (s, id) in items {
            by_stream.entry(s).or_default().push(id);
        }
        if by_stream.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (s, ids) in &by_stream {
            pipe.cmd("XACK").arg(*s).arg(&self.name).arg(ids).ignore();
        }
        let mut conn = self.transport.conn();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("ack for consumer {} failed", self.name)))
    }
}

#[async_trait]
impl DurableConsumer for RedisConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(level = "debug", skip(self), fields(consumer = %self.name))]
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.check_open()?;
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        let mut st = self.state.lock().await;
        let st = &mut *st;
        loop {
            if !st.buffer.is_empty() {
                let n = st.buffer.len().min(max);
                return Ok(st.buffer.drain(..n).collect());
            }
            if st.index_len.is_none() {
                self.discover(st).await?;
            }
            let now = Instant::now();
            let claim = now >= *self.next_claim.lock().unwrap_or_else(|e| e.into_inner());
            let (len, due, entries) = self.look(st, max, claim).await?;
            if claim {
                let gap = due
                    .map(Duration::from_millis)
                    .unwrap_or(self.ack_wait)
                    .min(self.ack_wait)
                    .max(MIN_CLAIM_GAP);
                *self.next_claim.lock().unwrap_or_else(|e| e.into_inner()) = now + gap;
            }
            let got = self.accept(entries).await?;
            if !got.is_empty() {
                self.bring_claim_forward(now + self.ack_wait);
                return Ok(got);
            }
            if Some(len) != st.index_len {
                st.index_len = None;
                if Instant::now() < deadline {
                    continue;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let next_claim = *self.next_claim.lock().unwrap_or_else(|e| e.into_inner());
            let until = deadline.min(next_claim).min(now + MAX_BLOCK);
            if until <= now {
                continue;
            }
            let entries = self.block_read(st, max, until - now).await?;
            let mut got = self.accept(entries).await?;
            if !got.is_empty() {
                self.bring_claim_forward(Instant::now() + self.ack_wait);
                if got.len() > max {
                    st.buffer.extend(got.drain(max..));
                }
                return Ok(got);
            }
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(consumer = %self.name, n = deliveries.len()))]
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.transport.check_open()?;
        let tokens = deliveries
            .iter()
            .map(|d| self.token(d))
            .collect::<Result<Vec<_>>>()?;
        self.xack(tokens.iter().map(|t| (t.stream.as_str(), t.entry.as_str())))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(consumer = %self.name, position = %delivery.position))]
    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.transport.check_open()?;
        let t = self.token(delivery)?;
        let mut inv = NAK.prepare_invoke();
        inv.key(&t.stream)
            .key(&self.delayed_key)
            .arg(&self.name)
            .arg(MEMBER)
            .arg(&t.entry)
            .arg(self.ack_wait.as_millis() as u64)
            .arg(delay.as_millis() as u64);
        let mut conn = self.transport.conn();
        let _: Value = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("nak for consumer {} failed", self.name)))?;
        self.bring_claim_forward(Instant::now() + delay);
        Ok(())
    }

    fn malformed_skipped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    async fn close(&self) -> Result<()> {
        // Acks are confirmed before ack() returns: nothing is pending.
        self.closed.store(true, Ordering::Release);
        if let Ok(mut st) = self.state.try_lock() {
            st.blocking = None;
            st.buffer.clear();
        }
        Ok(())
    }
}
