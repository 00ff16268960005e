//! Fetching: new entries with `XREADGROUP`, due redeliveries claimed with
//! `XPENDING IDLE` + `XCLAIM`, and a blocking read when nothing is there.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use qis_core::backend::words_token;
use qis_core::{Delivery, Error, ErrorKind, Position, Result};
use redis::{AsyncConnectionConfig, Script, Value};
use tokio::time::Instant;

use super::create::trim_gap;
use super::entry::{as_i64, decode_raw, parse_look, parse_read, RawEntry};
use super::{FetchState, RedisConsumer, MEMBER};
use crate::error::{is_code, redis_error, unexpected};
use crate::retention::SWEEP_BATCH;
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
    /// Ends with [`ErrorKind::Closed`] when the consumer or its transport is
    /// closed meanwhile.
    pub(super) async fn fetch_deliveries(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        // The checking layer refuses 0; `COUNT 0` would read without a bound.
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        let mut st = tokio::select! {
            st = self.state.lock() => st,
            _ = self.closing() => return Err(Error::consumer_closed(NAME, &self.name)),
        };
        let st = &mut *st;
        loop {
            if self.is_closed() {
                return Err(Error::consumer_closed(NAME, &self.name));
            }
            if !st.buffer.is_empty() {
                let n = st.buffer.len().min(max);
                return Ok(st.buffer.drain(..n).collect());
            }
            if st.index_version.is_none() {
                self.discover(st).await?;
            }
            let now = Instant::now();
            if now >= st.next_trim {
                self.trim_streams(st).await?;
                st.next_trim = now + trim_gap(&self.transport.inner.config);
            }
            let claim = now >= *self.next_claim.lock().unwrap_or_else(|e| e.into_inner());
            let (version, due, entries) = self.look(st, max, claim).await?;
            if claim {
                let ack_wait = self.ack_wait();
                let gap = due
                    .map(Duration::from_millis)
                    .unwrap_or(ack_wait)
                    .min(ack_wait)
                    .max(MIN_CLAIM_GAP);
                *self.next_claim.lock().unwrap_or_else(|e| e.into_inner()) = now + gap;
            }
            let got = self.accept(entries).await?;
            if !got.is_empty() {
                self.bring_claim_forward(now + self.ack_wait());
                return Ok(got);
            }
            if Some(version) != st.index_version {
                st.index_version = None;
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
                self.bring_claim_forward(Instant::now() + self.ack_wait());
                if got.len() > max {
                    st.buffer.extend(got.drain(max..));
                }
                return Ok(got);
            }
        }
    }

    /// Trim the next [`SWEEP_BATCH`] of the streams this handle reads, in
    /// turn (retention for subjects nobody deposits to any more, bounded
    /// work per turn); streams deleted as empty and expired leave the
    /// handle.
    async fn trim_streams(&self, st: &mut FetchState) -> Result<()> {
        let n = st.streams.len();
        if n == 0 {
            return Ok(());
        }
        let from = st.trim_from % n;
        let batch: Vec<String> = (0..n.min(SWEEP_BATCH))
            .map(|i| st.streams[(from + i) % n].clone())
            .collect();
        st.trim_from = from + batch.len();
        let trimmed = self.transport.retainer().trim(&batch).await?;
        if !trimmed.deleted.is_empty() {
            let keys = self.transport.keys();
            let gone: HashSet<String> = trimmed.deleted.iter().map(|s| keys.stream(s)).collect();
            self.stream_ids().forget(gone.iter().map(String::as_str));
            st.streams.retain(|k| !gone.contains(k));
            st.known.retain(|k| !gone.contains(k));
            st.index_version = None;
        }
        Ok(())
    }

    /// Redis said a stream or group of ours is missing (the sweep deleted an
    /// empty, expired stream, or someone deleted a key): forget that stream
    /// (every stream, if the error does not say which), and look in the
    /// subject index again on the next turn.
    fn lost_group(&self, st: &mut FetchState, e: &redis::RedisError) {
        tracing::debug!(consumer = %self.name, error = %e, "a stream or group of this consumer is gone; looking again");
        // "NOGROUP No such key '{key}' or consumer group '{group}' in …"
        let text = e.to_string();
        let key = text
            .split_once("No such key '")
            .and_then(|(_, rest)| rest.split_once("' or consumer group"))
            .map(|(key, _)| key);
        match key {
            // The blocking read creates that group again.
            Some(key) if key == self.transport.keys().new_subjects() => {}
            Some(key) if st.known.contains(key) => {
                st.known.remove(key);
                st.streams.retain(|k| k != key);
            }
            _ => {
                st.known.clear();
                st.streams.clear();
            }
        }
        st.index_version = None;
    }

    /// Run the Lua look: claim up to `claim_max` due redeliveries, then
    /// read up to `read_max` new entries from `streams` (in that order).
    /// Takes the ack wait Redis keeps for the consumer.
    async fn look_lua(
        &self,
        streams: &[&str],
        claim_max: usize,
        read_max: usize,
    ) -> Result<(i64, Option<u64>, Vec<RawEntry>)> {
        let keys = self.transport.keys();
        let mut inv = FETCH.prepare_invoke();
        inv.key(keys.subjects_version())
            .key(&self.delayed_key)
            .key(&self.def_key);
        for s in streams {
            inv.key(*s);
        }
        inv.arg(&self.name)
            .arg(MEMBER)
            .arg(claim_max)
            .arg(read_max)
            .arg(self.ack_wait().as_millis() as u64)
            .arg(0);
        let mut conn = self.transport.conn();
        let v: Value = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("fetch for consumer {} failed", self.name)))?;
        let look = parse_look(v)?;
        if let Some(ms) = look.ack_wait {
            self.stored_ack_wait(ms);
        }
        Ok((look.version, look.due, look.entries))
    }

    /// One non-blocking look: the subject-index version, the next
    /// redelivery hint (when claiming) and at most `max` entries.
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
            let head = len.is_none();
            if head {
                pipe.cmd("GET")
                    .arg(self.transport.keys().subjects_version())
                    .cmd("HGET")
                    .arg(&self.def_key)
                    .arg("ack_wait");
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
                    self.lost_group(st, &e);
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
            if head {
                let ack_wait = replies.pop().unwrap_or(Value::Nil);
                if let Some(ms) = as_i64(&ack_wait).and_then(|ms| u64::try_from(ms).ok()) {
                    self.stored_ack_wait(ms);
                }
                let v = replies.pop().unwrap_or(Value::Nil);
                len = Some(match v {
                    Value::Nil => 0,
                    v => as_i64(&v).ok_or_else(|| unexpected(doing, &v))?,
                });
            }
            let entries = parse_read(reply, doing)?;
            if entries.is_empty() {
                break;
            }
            // A reply lists each stream's entries together: count the runs
            // (a hash per stream, not per entry). Streams that filled their
            // share may hold more.
            let mut runs: Vec<(&str, usize)> = Vec::new();
            for e in &entries {
                match runs.last_mut() {
                    Some((s, n)) if *s == &*e.stream => *n += 1,
                    _ => runs.push((&e.stream, 1)),
                }
            }
            let full: HashSet<&str> = runs
                .into_iter()
                .filter(|&(_, n)| n >= share)
                .map(|(s, _)| s)
                .collect();
            candidates.retain(|s| full.contains(s));
            out.extend(entries);
        }
        let len = match len {
            Some(l) => l,
            None => {
                let mut conn = self.transport.conn();
                let v: Option<i64> = redis::cmd("GET")
                    .arg(self.transport.keys().subjects_version())
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_error(e, "reading the subject index failed"))?;
                v.unwrap_or(0)
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
        let r = tokio::select! {
            r = tokio::time::timeout(guard, cmd.query_async::<Value>(conn)) => r,
            _ = self.closing() => {
                // Dropping the connection ends the read on the server too;
                // anything it had read stays pending (back after the ack wait).
                st.blocking = None;
                return Err(Error::consumer_closed(NAME, &self.name));
            }
        };
        let v = match r {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                st.blocking = None;
                if is_code(&e, "NOGROUP") {
                    self.lost_group(st, &e);
                    self.transport
                        .ensure_groups(&self.name, std::slice::from_ref(&new_subjects), "$", true)
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
            entries.drain(..).partition(|e| *e.stream == *new_subjects);
        if !news.is_empty() {
            // A subject appeared: discover on the next turn; the event itself
            // needs no redelivery.
            st.index_version = None;
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
        {
            let mut ids = self.stream_ids();
            // Entries come in runs of one stream: its number is looked up
            // when the stream changes.
            let mut last: Option<(Arc<str>, u64)> = None;
            for e in entries {
                match decode_raw(keys, &e) {
                    Ok((received, ms, seq)) => {
                        let stream = match &last {
                            Some((s, n)) if Arc::ptr_eq(s, &e.stream) || *s == e.stream => *n,
                            _ => {
                                let n = ids.id_of(&e.stream);
                                last = Some((Arc::clone(&e.stream), n));
                                n
                            }
                        };
                        out.push(Delivery {
                            received,
                            position: Position::StreamId { ms, seq },
                            delivery_count: e.count,
                            token: words_token([stream, ms, seq]),
                        });
                    }
                    Err(err) => {
                        self.malformed.fetch_add(1, Ordering::Relaxed);
                        let subject = keys.subject_of(&e.stream).unwrap_or(&e.stream);
                        tracing::warn!(consumer = %self.name, %subject, position = %e.entry, error = %err, "skipping malformed stream entry (acked, never redelivered)");
                        bad.push(e);
                    }
                }
            }
        }
        if !bad.is_empty() {
            self.xack(bad.iter().map(|e| (&*e.stream, e.entry.as_str())))
                .await?;
        }
        Ok(out)
    }
}
