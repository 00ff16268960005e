//! Durable consumers: a consumer group of the consumer's name on every
//! subject stream its pattern matches.
//!
//! - [`create`]: the definition hash and the groups (start positions);
//! - [`backlog`]: what a consumer still has to do, and every consumer listed;
//! - [`fetch`]: `XREADGROUP`, claims of due redeliveries, blocking reads;
//! - [`ack`]: `XACK` and nak;
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
use qis_core::{Backlog, Delivery, DurableConsumer, Result, SubjectPattern};
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::RedisTransport;

pub(crate) use ack::NAK;
pub(crate) use create::CREATE;
pub(crate) use entry::{parse_entry_id, value_str};
pub(crate) use fetch::FETCH;

/// The one Redis consumer name used inside every group: handles of one
/// durable consumer share its pending entries.
const MEMBER: &str = "qis";

/// The token of a delivery: what an ack or nak needs to find it again.
#[derive(Debug)]
struct RedisAck {
    stream: String,
    entry: String,
}

/// What one consumer handle's fetches share.
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

impl RedisConsumer {
    /// Look for due redeliveries no later than `at`.
    fn bring_claim_forward(&self, at: Instant) {
        let mut n = self.next_claim.lock().unwrap_or_else(|e| e.into_inner());
        if at < *n {
            *n = at;
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

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.ack_deliveries(deliveries).await
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.nak_delivery(delivery, delay).await
    }

    fn malformed_skipped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// The group lag (Redis 7 `XINFO GROUPS`) summed over the streams the
    /// pattern matches, counted with `XRANGE` where Redis cannot tell it, plus
    /// streams not discovered yet from the consumer's start; and the groups'
    /// pending entries as unacked.
    async fn backlog(&self) -> Result<Backlog> {
        self.transport
            .backlog_of(&self.name, &self.pattern, &self.lazy_start)
            .await
    }

    async fn close(&self) -> Result<()> {
        // Acks are confirmed before ack() returns: nothing is pending. The
        // checking layer refuses calls after this; drop what this handle holds.
        if let Ok(mut st) = self.state.try_lock() {
            st.blocking = None;
            st.buffer.clear();
        }
        Ok(())
    }
}
