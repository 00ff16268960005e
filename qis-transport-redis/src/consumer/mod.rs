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

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use async_trait::async_trait;
use qis_core::backend::token_value;
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

/// The token of a delivery: what an ack or nak needs to find it again.
#[derive(Debug)]
struct RedisAck {
    /// The stream key, shared with the other deliveries read from it.
    stream: std::sync::Arc<str>,
    entry: String,
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
            .map(|d| token_value::<RedisAck>(NAME, d))
            .collect::<Result<Vec<_>>>()?;
        self.xack(tokens.iter().map(|t| (&*t.stream, t.entry.as_str())))
            .await
    }

    /// `src/lua/nak.lua`: with no delay the entry's idle time is reset so that
    /// the next claim takes it; with a delay it waits in the delayed set.
    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let t = token_value::<RedisAck>(NAME, delivery)?;
        let mut inv = NAK.prepare_invoke();
        inv.key(&*t.stream)
            .key(&self.delayed_key)
            .key(&self.def_key)
            .arg(&self.name)
            .arg(MEMBER)
            .arg(&t.entry)
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
