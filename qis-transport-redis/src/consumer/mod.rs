//! Durable consumers: a consumer group of the consumer's name on every
//! subject stream its pattern matches.
//!
//! - [`create`]: the definition hash and the groups (start positions);
//! - [`fetch`]: `XREADGROUP`, claims of due redeliveries, blocking reads;
//! - [`ack`]: `XACK` and nak;
//! - [`backlog`]: what is waiting and what is unacked, and every consumer
//!   listed with it;
//! - [`entry`]: stream entries and the packets in them.

mod ack;
mod backlog;
mod create;
mod entry;
mod fetch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use qis_core::backend::token_words;
use qis_core::{Backlog, Delivery, DurableConsumer, Result, SubjectPattern};
use redis::aio::MultiplexedConnection;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use crate::error::redis_error;
use crate::{RedisTransport, NAME};

pub(crate) use ack::NAK;
pub(crate) use backlog::{parse_backlog, BACKLOG};
pub(crate) use create::CREATE;
pub(crate) use entry::{as_i64, decode_raw, parse_entry_id, parse_read, value_str};
pub(crate) use fetch::FETCH;

/// The one Redis consumer name used inside every group: handles of one
/// durable consumer share its pending entries.
const MEMBER: &str = "qis";

/// The stream keys this handle delivered from, numbered: a delivery's ack
/// token holds `[stream number, entry ms, entry seq]` inline
/// ([`words_token`](qis_core::backend::words_token)), so no token is
/// allocated per delivery. A number is never reused; a stream deleted (by
/// the sweep, or by this handle's trim as empty and expired) is forgotten,
/// and an ack or nak of a delivery from it does nothing (its entries are gone).
#[derive(Debug, Default)]
struct StreamIds {
    ids: HashMap<Arc<str>, u64>,
    keys: HashMap<u64, Arc<str>>,
    next: u64,
}

impl StreamIds {
    /// The number of stream `key`, given one if it has none.
    fn id_of(&mut self, key: &Arc<str>) -> u64 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.next;
        self.next += 1;
        self.ids.insert(Arc::clone(key), id);
        self.keys.insert(id, Arc::clone(key));
        id
    }

    /// The stream numbered `id`, unless it was forgotten.
    fn key(&self, id: u64) -> Option<&Arc<str>> {
        self.keys.get(&id)
    }

    /// Forget deleted streams.
    fn forget<'a>(&mut self, gone: impl IntoIterator<Item = &'a str>) {
        for key in gone {
            if let Some(id) = self.ids.remove(key) {
                self.keys.remove(&id);
            }
        }
    }
}

/// A stream entry id, `ms-seq`, written as one Redis argument without an
/// allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryId {
    ms: u64,
    seq: u64,
}

impl redis::ToRedisArgs for EntryId {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        // Two u64 in decimal and a dash: at most 41 bytes.
        let mut buf = [0u8; 41];
        let mut fmt = itoa::Buffer::new();
        let ms = fmt.format(self.ms).as_bytes();
        buf[..ms.len()].copy_from_slice(ms);
        let mut at = ms.len();
        buf[at] = b'-';
        at += 1;
        let seq = fmt.format(self.seq).as_bytes();
        buf[at..at + seq.len()].copy_from_slice(seq);
        out.write_arg(&buf[..at + seq.len()]);
    }
}

/// What one consumer handle's fetches share.
struct FetchState {
    /// Stream keys with a group of this consumer, in discovery order: the
    /// matching streams in the subject index when last looked (streams the
    /// sweep deleted leave it then).
    streams: Vec<String>,
    known: HashSet<String>,
    /// The subject-index version at the last discovery (`None`: discover now).
    index_version: Option<i64>,
    /// When this handle next trims some of the streams it reads.
    next_trim: Instant,
    /// Where in `streams` the next trim starts.
    trim_from: usize,
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
    /// The consumer's ack wait in ms as last read from its definition
    /// (where Redis keeps it; this handle's own until then).
    ack_wait_ms: AtomicU64,
    def_key: String,
    delayed_key: String,
    state: Mutex<FetchState>,
    /// Numbers the streams for the ack tokens (not in `state`: an ack does
    /// not wait for a fetch).
    stream_ids: StdMutex<StreamIds>,
    next_claim: StdMutex<Instant>,
    malformed: AtomicU64,
    /// Turns true on close: ends a fetch in flight.
    closed: watch::Sender<bool>,
    /// The transport's: turns true when the transport is closed.
    transport_closed: watch::Receiver<bool>,
}

impl std::fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RedisConsumer");
        d.field("name", &self.name)
            .field("pattern", &self.pattern.as_str())
            .field("ack_wait", &self.ack_wait());
        // How many streams this handle reads (unless a fetch holds them).
        if let Ok(st) = self.state.try_lock() {
            d.field("streams", &st.streams.len());
        }
        d.finish_non_exhaustive()
    }
}

impl RedisConsumer {
    /// Look for due redeliveries no later than `at`.
    fn bring_claim_forward(&self, at: Instant) {
        let mut n = self.next_claim.lock().unwrap_or_else(|e| e.into_inner());
        if at < *n {
            *n = at;
        }
    }

    /// The stream ids, locked (a poisoned lock is still consistent: each
    /// change is a whole insert or remove).
    fn stream_ids(&self) -> std::sync::MutexGuard<'_, StreamIds> {
        self.stream_ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The consumer's ack wait, as last read from Redis.
    fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms.load(Ordering::Relaxed))
    }

    /// Take the ack wait Redis keeps for the consumer; if it changed
    /// (another handle opened the consumer with another), look for due
    /// redeliveries at once.
    fn stored_ack_wait(&self, ms: u64) {
        let ms = ms.max(1);
        if self.ack_wait_ms.swap(ms, Ordering::Relaxed) != ms {
            self.bring_claim_forward(Instant::now());
        }
    }

    /// Whether this handle or its transport was closed.
    fn is_closed(&self) -> bool {
        *self.closed.borrow() || *self.transport_closed.borrow()
    }

    /// Resolves once this handle or its transport is closed.
    async fn closing(&self) {
        let mut mine = self.closed.subscribe();
        let mut theirs = self.transport_closed.clone();
        tokio::select! {
            _ = mine.wait_for(|c| *c) => {}
            _ = theirs.wait_for(|c| *c) => {}
        }
    }
}

#[async_trait]
impl DurableConsumer for RedisConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.fetch_deliveries(max, wait).await
    }

    /// `XACK`, one command per stream, pipelined.
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let tokens = deliveries
            .iter()
            .map(|d| token_words(NAME, d))
            .collect::<Result<Vec<_>>>()?;
        self.ack_tokens(&tokens).await
    }

    /// `src/lua/nak.lua`: with no delay the entry's idle time is reset so that
    /// the next claim takes it; with a delay it waits in the delayed set.
    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let [stream, ms, seq] = token_words(NAME, delivery)?;
        let Some(stream) = self.stream_ids().key(stream).cloned() else {
            tracing::debug!(consumer = %self.name, id = %delivery.id(), "nak of a delivery whose stream was deleted: nothing to hand back");
            return Ok(());
        };
        let mut inv = NAK.prepare_invoke();
        inv.key(&*stream)
            .key(&self.delayed_key)
            .key(&self.def_key)
            .arg(&self.name)
            .arg(MEMBER)
            .arg(EntryId { ms, seq })
            .arg(self.ack_wait().as_millis() as u64)
            .arg(delay.as_millis() as u64);
        let mut conn = self.transport.conn();
        let _: redis::Value = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("nak for consumer {} failed", self.name)))?;
        self.bring_claim_forward(Instant::now() + delay);
        Ok(())
    }

    fn malformed_skipped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// What waits (the group lag where Redis knows it, else counted) and
    /// what is unacked (the groups' pending entries) over the streams the
    /// pattern matches, streams this handle has not discovered yet included.
    async fn backlog(&self) -> Result<Backlog> {
        self.count_backlog().await
    }

    async fn close(&self) -> Result<()> {
        // Acks are confirmed before ack() returns: nothing is pending. End a
        // fetch in flight (it returns `Closed`; what it had read stays
        // pending and comes back after the ack wait); the checking layer
        // refuses calls after this.
        self.closed.send_replace(true);
        if let Ok(mut st) = self.state.try_lock() {
            st.blocking = None;
            st.buffer.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ToRedisArgs;

    #[test]
    fn entry_ids_are_written_as_redis_wrote_them() {
        for (ms, seq) in [
            (0, 0),
            (1_764_000_000_000, 7),
            (u64::MAX, u64::MAX),
            (9, 10),
        ] {
            let text = format!("{ms}-{seq}");
            assert_eq!(
                EntryId { ms, seq }.to_redis_args(),
                vec![text.clone().into_bytes()]
            );
            assert_eq!(
                parse_entry_id(&text),
                Some(qis_core::Position::StreamId { ms, seq })
            );
        }
    }

    #[test]
    fn stream_numbers_are_never_reused() {
        let mut ids = StreamIds::default();
        let (a, b): (Arc<str>, Arc<str>) = ("ns:s:a".into(), "ns:s:b".into());
        let na = ids.id_of(&a);
        let nb = ids.id_of(&b);
        assert_ne!(na, nb);
        assert_eq!(ids.id_of(&Arc::from("ns:s:a")), na);
        assert_eq!(ids.key(na).map(|k| &**k), Some("ns:s:a"));
        ids.forget(["ns:s:a", "ns:s:unknown"]);
        assert_eq!(ids.key(na), None);
        assert_eq!(ids.key(nb).map(|k| &**k), Some("ns:s:b"));
        // A stream created again under the same key gets a new number: an
        // old token never acks on it.
        let again = ids.id_of(&a);
        assert_ne!(again, na);
        assert_ne!(again, nb);
    }
}
