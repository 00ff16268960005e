//! Fetching: new entries with `XREADGROUP`, due redeliveries claimed with
//! `XPENDING IDLE` + `XCLAIM`, and a blocking read when nothing is there.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::Duration;

use qis_core::backend::value_token;
use qis_core::{Delivery, Error, ErrorKind, Result};
use redis::{AsyncConnectionConfig, Script, Value};
use tokio::time::Instant;

use super::entry::{as_i64, decode_entry, parse_entry_id, parse_read, value_str, RawEntry};
use super::{FetchState, RedisAck, RedisConsumer, MEMBER};
use crate::error::{is_code, redis_error, unexpected};
use crate::NAME;

/// Longest a blocked read waits before looking again for redeliveries that
/// became due through another handle, or for new subjects another handle was
/// told about.
const MAX_BLOCK: Duration = Duration::from_secs(1);

/// Shortest gap between two looks for due redeliveries.
const MIN_CLAIM_GAP: Duration = Duration::from_millis(10);

/// One look in Lua: due redeliveries and new entries, never more than asked
/// (see `lua/fetch.lua`). The common read path does not use it: native
/// `XREADGROUP` is about three times cheaper for Redis than the same read
/// converted to Lua and back (see `RedisConsumer::look`).
pub(crate) static FETCH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/fetch.lua")));

impl RedisConsumer {
    /// Up to `max` deliveries, as soon as there is one, or none after `wait`.
    pub(super) async fn fetch_deliveries(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        // The checking layer refuses 0; `COUNT 0` would read without a bound.
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
                    token: value_token(RedisAck {
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
}
