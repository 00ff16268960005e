//! What a handle, its poller thread and the rebalance callbacks share: the
//! records read ahead, the deliveries in flight, and per partition the
//! offset the group may commit (the frontier).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use qis_core::{Subject, SubjectPattern};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::record::{Decoded, RawRecord};

/// A delivery handed out and not yet acked: the record is kept to deliver
/// it again.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) record: RawRecord,
    pub(super) due: Instant,
    pub(super) count: u32,
}

/// What a handle knows about one assigned partition.
#[derive(Debug, Default)]
pub(super) struct Part {
    /// The offset after the last record this handle finished reading
    /// (delivered, skipped or malformed).
    pub(super) handled_next: Option<i64>,
    /// The offset after the last record put in `buffer`.
    pub(super) fetched_next: Option<i64>,
    /// The offset last sent as the group's committed offset.
    pub(super) committed: Option<i64>,
    /// Delivered, not yet acked, by offset.
    pub(super) in_flight: BTreeMap<i64, InFlight>,
    /// Read from the broker, not yet looked at by `fetch`.
    pub(super) buffer: VecDeque<Buffered>,
}

impl Part {
    /// The offset the group may commit: nothing before it is still owed.
    pub(super) fn frontier(&self) -> Option<i64> {
        self.in_flight.keys().next().copied().or(self.handled_next)
    }

    /// The frontier, if it moved past what was last committed.
    pub(super) fn to_commit(&self) -> Option<i64> {
        let f = self.frontier()?;
        match self.committed {
            Some(c) if c >= f => None,
            _ => Some(f),
        }
    }
}

/// A handle's partitions, as the group assigned them.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) parts: BTreeMap<i32, Part>,
    /// How many assignments the group gave this member so far.
    pub(super) assignments: u64,
    /// Records waiting in all buffers.
    pub(super) buffered: usize,
    /// Their size in bytes (keys and values).
    pub(super) buffered_bytes: usize,
}

/// A record read ahead, already decoded by the poller thread (so decoding
/// overlaps with the caller's work).
#[derive(Debug)]
pub(super) struct Buffered {
    pub(super) record: RawRecord,
    pub(super) decoded: Decoded,
}

impl State {
    /// Partitions the group gave this member; returns how many partitions it
    /// no longer has.
    pub(super) fn assign(
        &mut self,
        partitions: &[i32],
        _incremental: bool,
        _generation: u64,
    ) -> usize {
        // In-flight deliveries of partitions that moved away are the new
        // owner's now: it reads them from the committed offset. Partitions
        // kept keep their table.
        let before = self.parts.len();
        self.parts.retain(|p, _| partitions.contains(p));
        for &p in partitions {
            self.parts.entry(p).or_default();
        }
        self.recount();
        self.assignments += 1;
        before.saturating_sub(self.parts.len())
    }

    /// Partitions the group takes from this member: drop what was read
    /// ahead (the next owner reads it from the committed offset).
    pub(super) fn revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            if let Some(part) = self.parts.get_mut(p) {
                part.buffer.clear();
                part.fetched_next = part.handled_next;
            }
        }
        self.recount();
    }

    /// Buffer a record the poller read (polled while the member's
    /// generation counter was `_polled_in`), unless it is not new; returns
    /// whether it was buffered.
    pub(super) fn offer(&mut self, b: Buffered, _polled_in: u64) -> bool {
        let r = &b.record;
        let Some(part) = self.parts.get_mut(&r.partition) else {
            return false;
        };
        let fresh = part.fetched_next.is_none_or(|n| r.offset >= n)
            && part.handled_next.is_none_or(|n| r.offset >= n);
        if !fresh {
            return false;
        }
        part.fetched_next = Some(r.offset + 1);
        self.buffered += 1;
        self.buffered_bytes += r.size();
        part.buffer.push_back(b);
        true
    }

    /// Forget an acked delivery; false if this member does not hold it.
    pub(super) fn ack(&mut self, partition: i32, offset: i64) -> bool {
        self.parts
            .get_mut(&partition)
            .is_some_and(|part| part.in_flight.remove(&offset).is_some())
    }

    /// Take every partition's frontier that moved, marking it committed.
    pub(super) fn pending_commits(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&p, part) in self.parts.iter_mut() {
            if let Some(o) = part.to_commit() {
                part.committed = Some(o);
                out.push((p, o));
            }
        }
        out
    }

    /// Count the buffered records and bytes again (after a rebalance).
    pub(super) fn recount(&mut self) {
        self.buffered = self.parts.values().map(|p| p.buffer.len()).sum();
        self.buffered_bytes = self
            .parts
            .values()
            .flat_map(|p| p.buffer.iter())
            .map(|b| b.record.size())
            .sum();
    }
}

/// What the handle, its poller thread and the rebalance callbacks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) topic: String,
    pub(super) prefix: Subject,
    pub(super) pattern: SubjectPattern,
    pub(super) name: String,
    pub(super) group: String,
    pub(super) ack_wait: Duration,
    /// Pause fetching from the brokers above this many buffered bytes.
    pub(super) buffer_max: usize,
    pub(super) state: Mutex<State>,
    /// Wakes fetches: new records, an assignment, a nak.
    pub(super) notify: Notify,
    pub(super) malformed: AtomicU64,
    pub(super) stop: AtomicBool,
    /// The poller thread finished: it committed and left the group.
    pub(super) left: AtomicBool,
    /// The brokers (with `group`, which members are in the same group).
    pub(super) brokers: String,
}

impl Shared {
    /// Told to stop (dropped or closed), not yet out of the group.
    pub(super) fn leaving(&self) -> bool {
        self.stop.load(Ordering::Acquire) && !self.left.load(Ordering::Acquire)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent between
        // statements that could panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A commit list for `(partition, offset)` pairs; the metadata records
    /// the consumer's pattern so a re-open with another pattern is caught.
    pub(super) fn commit_list(&self, offsets: &[(i32, i64)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for &(p, o) in offsets {
            let mut e = tpl.add_partition(&self.topic, p);
            let _ = e.set_offset(Offset::Offset(o));
            e.set_metadata(self.pattern.as_str());
        }
        tpl
    }

    /// Forget what was marked committed for these partitions, so the next
    /// commit sends them again.
    pub(super) fn commit_failed(&self, offsets: &[(i32, i64)]) {
        let mut st = self.lock();
        for (p, o) in offsets {
            if let Some(part) = st.parts.get_mut(p) {
                if part.committed == Some(*o) {
                    part.committed = None;
                }
            }
        }
    }
}
