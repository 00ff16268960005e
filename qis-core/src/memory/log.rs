//! The store itself: the packet log, the index by packet id and the
//! consumers' cursors and pending deliveries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::NAME;
use crate::config::Retention;
use crate::packet::PacketId;
use crate::subject::SubjectPattern;
use crate::transport::Backlog;

#[derive(Debug)]
pub(super) struct Stored {
    pub(super) seq: u64,
    pub(super) subject: Arc<str>,
    pub(super) id: PacketId,
    pub(super) body: Bytes,
    pub(super) at: SystemTime,
}

#[derive(Debug)]
pub(super) struct ConsumerState {
    pub(super) pattern: SubjectPattern,
    pub(super) ack_wait: Duration,
    /// Next sequence to look at.
    pub(super) cursor: u64,
    /// seq -> (redeliver at, deliveries so far)
    pub(super) pending: BTreeMap<u64, (Instant, u32)>,
}

#[derive(Debug)]
pub(super) struct State {
    /// Stored packets in sequence order; `log[i].seq == first_seq + i`.
    pub(super) log: VecDeque<Stored>,
    pub(super) first_seq: u64,
    pub(super) bytes: u64,
    pub(super) by_id: HashMap<PacketId, u64>,
    pub(super) consumers: HashMap<String, ConsumerState>,
}

impl State {
    pub(super) fn next_seq(&self) -> u64 {
        self.first_seq + self.log.len() as u64
    }

    pub(super) fn get(&self, seq: u64) -> Option<&Stored> {
        seq.checked_sub(self.first_seq)
            .and_then(|i| self.log.get(i as usize))
    }

    pub(super) fn push(&mut self, subject: Arc<str>, id: PacketId, body: Bytes) -> u64 {
        let seq = self.next_seq();
        self.bytes += body.len() as u64;
        self.log.push_back(Stored {
            seq,
            subject,
            id,
            body,
            at: SystemTime::now(),
        });
        seq
    }

    /// What consumer `c` still has to do.
    pub(super) fn backlog(&self, c: &ConsumerState) -> Backlog {
        let start = c.cursor.saturating_sub(self.first_seq) as usize;
        let waiting = self
            .log
            .range(start.min(self.log.len())..)
            .filter(|s| c.pattern.matches(&s.subject))
            .count() as u64;
        Backlog {
            waiting,
            unacked: c.pending.len() as u64,
        }
    }

    /// Drop what retention no longer allows; warn about unacked deliveries
    /// that go with it.
    pub(super) fn prune(&mut self, retention: &Retention) {
        let oldest_allowed = SystemTime::now().checked_sub(retention.max_age);
        let mut dropped = 0u64;
        while let Some(front) = self.log.front() {
            let too_old = oldest_allowed.is_some_and(|t| front.at < t);
            if !too_old && self.bytes <= retention.max_bytes {
                break;
            }
            let gone = self.log.pop_front().expect("front exists");
            self.bytes -= gone.body.len() as u64;
            if self.by_id.get(&gone.id) == Some(&gone.seq) {
                self.by_id.remove(&gone.id);
            }
            self.first_seq += 1;
            dropped += 1;
        }
        if dropped == 0 {
            return;
        }
        for (name, c) in &mut self.consumers {
            let unacked = c.pending.range(..self.first_seq).count();
            if unacked > 0 {
                tracing::warn!(
                    transport = NAME,
                    consumer = %name,
                    unacked,
                    "retention removed packets this consumer had fetched but not acked: they will not be redelivered"
                );
                c.pending = c.pending.split_off(&self.first_seq);
            }
            c.cursor = c.cursor.max(self.first_seq);
        }
    }
}
