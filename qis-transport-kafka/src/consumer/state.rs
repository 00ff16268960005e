//! What a handle, its poller thread and the rebalance callbacks share: the
//! records read ahead, the deliveries in flight, and per partition the
//! offset the group may commit (the frontier).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
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

/// The deliveries in flight on one partition, by offset: a queue in offset
/// order (a partition's records are handed out in order, and acks mostly
/// come in that order), an acked slot emptied in place and dropped once it
/// reaches the front. Cheaper per delivery than a `BTreeMap`, whose nodes
/// shift their entries on every insert and remove.
#[derive(Debug, Default)]
pub(super) struct InFlightTable {
    slots: VecDeque<(i64, Option<InFlight>)>,
    /// Slots holding a delivery.
    len: usize,
}

impl InFlightTable {
    fn position(&self, offset: i64) -> std::result::Result<usize, usize> {
        self.slots.binary_search_by_key(&offset, |(o, _)| *o)
    }

    /// Keep `f` as the delivery at `offset` (replacing one kept there).
    pub(super) fn insert(&mut self, offset: i64, f: InFlight) {
        match self.slots.back() {
            Some(&(last, _)) if last >= offset => match self.position(offset) {
                Ok(i) => {
                    if self.slots[i].1.replace(f).is_none() {
                        self.len += 1;
                    }
                }
                Err(i) => {
                    self.slots.insert(i, (offset, Some(f)));
                    self.len += 1;
                }
            },
            _ => {
                self.slots.push_back((offset, Some(f)));
                self.len += 1;
            }
        }
    }

    /// Forget the delivery at `offset`, returning it.
    pub(super) fn remove(&mut self, offset: i64) -> Option<InFlight> {
        let i = self.position(offset).ok()?;
        let f = self.slots[i].1.take()?;
        self.len -= 1;
        while matches!(self.slots.front(), Some((_, None))) {
            self.slots.pop_front();
        }
        // Acks out of order behind an old unacked delivery leave empty
        // slots: drop them once they outnumber the deliveries.
        if self.slots.len() > 2 * self.len + 64 {
            self.slots.retain(|(_, f)| f.is_some());
        }
        Some(f)
    }

    /// The delivery at `offset`.
    pub(super) fn get_mut(&mut self, offset: i64) -> Option<&mut InFlight> {
        let i = self.position(offset).ok()?;
        self.slots[i].1.as_mut()
    }

    /// The lowest offset in flight (the front slot always holds one).
    pub(super) fn first_offset(&self) -> Option<i64> {
        self.slots.front().map(|&(o, _)| o)
    }

    /// How many deliveries are in flight.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The deliveries with their offsets, lowest first.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (i64, &mut InFlight)> {
        self.slots
            .iter_mut()
            .filter_map(|(o, f)| f.as_mut().map(|f| (*o, f)))
    }

    /// The deliveries, lowest offset first.
    pub(super) fn values(&self) -> impl Iterator<Item = &InFlight> {
        self.slots.iter().filter_map(|(_, f)| f.as_ref())
    }
}

/// What a handle knows about one assigned partition. Everything here
/// belongs to one assignment: when the group takes the partition away, it
/// is forgotten, and if it comes back it starts again from the group's
/// committed offset.
#[derive(Debug, Default)]
pub(super) struct Part {
    /// The member's rebalance count when the partition was assigned:
    /// records polled before it were read under an earlier assignment.
    pub(super) since: u64,
    /// The assignment check (the group's committed offset, what retention
    /// removed) is still to be done by the poller thread.
    pub(super) unchecked: bool,
    /// The group's committed offset when this member got the partition:
    /// nothing below it is ever committed again.
    pub(super) floor: Option<i64>,
    /// The committed offset, until the first record of the assignment is
    /// read: a first record past it means records were removed meanwhile.
    pub(super) first_expected: Option<i64>,
    /// Given back after an eager revocation with its deliveries in flight,
    /// not checked yet against the group's committed offset.
    pub(super) restored: bool,
    /// The offset after the last record this handle finished reading
    /// (delivered, skipped or malformed).
    pub(super) handled_next: Option<i64>,
    /// The offset after the last record put in `buffer`.
    pub(super) fetched_next: Option<i64>,
    /// The offset last sent as the group's committed offset.
    pub(super) committed: Option<i64>,
    /// Delivered, not yet acked, by offset.
    pub(super) in_flight: InFlightTable,
    /// Read from the broker, not yet looked at by `fetch`.
    pub(super) buffer: VecDeque<Buffered>,
}

impl Part {
    fn assigned(since: u64) -> Part {
        Part {
            since,
            unchecked: true,
            ..Part::default()
        }
    }

    /// The offset the group may commit: nothing before it is still owed.
    pub(super) fn frontier(&self) -> Option<i64> {
        self.in_flight.first_offset().or(self.handled_next)
    }

    /// Whether the frontier moved past what was last committed: that
    /// progress (acks, skipped records) is lost if the partition goes now.
    pub(super) fn has_uncommitted(&self) -> bool {
        let done = self.committed.max(self.floor);
        self.frontier().is_some_and(|f| done.is_none_or(|d| f > d))
    }

    /// The frontier, if it moved past what was last committed and past the
    /// group's offset when the partition was assigned: a commit never moves
    /// the group's offset back.
    pub(super) fn to_commit(&self) -> Option<i64> {
        if self.unchecked {
            // The group's offset is not known yet.
            return None;
        }
        let f = self.frontier()?;
        let behind = |o: Option<i64>| o.is_some_and(|o| o >= f);
        if behind(self.committed) || behind(self.floor) {
            None
        } else {
            Some(f)
        }
    }
}

/// A handle's partitions, as the group assigned them.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) parts: BTreeMap<i32, Part>,
    /// Partitions revoked by an eager rebalance, kept until its assignment:
    /// given back to this member, they keep their deliveries in flight.
    pub(super) parked: BTreeMap<i32, Part>,
    /// How many assignments the group gave this member so far.
    pub(super) assignments: u64,
    /// Records waiting in all buffers.
    pub(super) buffered: usize,
    /// Their size in bytes (keys and values).
    pub(super) buffered_bytes: usize,
}

/// What a handle forgot of partitions taken from it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Revoked {
    /// Deliveries that were in flight: their next owner delivers them again.
    pub(super) in_flight: usize,
    /// Partitions whose progress (acks, skipped records) was not committed:
    /// those acks are lost.
    pub(super) uncommitted: usize,
}

impl Revoked {
    fn add(&mut self, part: &Part) {
        self.in_flight += part.in_flight.len();
        self.uncommitted += usize::from(part.has_uncommitted());
    }
}

/// A record read ahead, already decoded by the poller thread (so decoding
/// overlaps with the caller's work).
#[derive(Debug)]
pub(super) struct Buffered {
    pub(super) record: RawRecord,
    pub(super) decoded: Decoded,
}

impl State {
    /// Partitions the group gave this member under rebalance count
    /// `rebalance`. An `incremental` assignment (cooperative protocols: the
    /// `cooperative-sticky` assignor, `group.protocol=consumer`) adds to the
    /// partitions kept; an eager one names every partition the member has.
    /// A partition [parked](Self::revoke) by the eager revocation just
    /// before comes back with its deliveries in flight (nobody else can have
    /// read it in between); parked ones not given back are dropped.
    pub(super) fn assign(
        &mut self,
        partitions: &[i32],
        incremental: bool,
        rebalance: u64,
    ) -> Revoked {
        let mut dropped = Revoked::default();
        if !incremental {
            // Eager rebalances revoke everything first; a partition missing
            // here is not this member's any more.
            let gone: Vec<i32> = self
                .parts
                .keys()
                .filter(|p| !partitions.contains(p))
                .copied()
                .collect();
            dropped = self.revoke(&gone, false);
        }
        for &p in partitions {
            if self.parts.contains_key(&p) {
                continue;
            }
            let part = match self.parked.remove(&p) {
                Some(mut kept) => {
                    kept.since = rebalance;
                    kept.unchecked = true;
                    kept.restored = true;
                    kept
                }
                None => Part::assigned(rebalance),
            };
            self.parts.insert(p, part);
        }
        for (_, part) in std::mem::take(&mut self.parked) {
            dropped.add(&part);
        }
        self.assignments += 1;
        dropped
    }

    /// Partitions taken from this member: what it read ahead is dropped
    /// (their next owner reads from the committed offset). With `park`
    /// (an eager revocation, the member's session intact) the rest is kept
    /// until the assignment that follows; else (a cooperative revocation,
    /// or partitions lost when the session ended: someone else may read
    /// them before they come back) the deliveries in flight and offsets are
    /// forgotten, and their next owner (maybe this member again) delivers
    /// the unacked ones again. Returns what was forgotten.
    pub(super) fn revoke(&mut self, partitions: &[i32], park: bool) -> Revoked {
        let mut dropped = Revoked::default();
        for p in partitions {
            let Some(mut part) = self.parts.remove(p) else {
                continue;
            };
            if park {
                part.buffer.clear();
                part.fetched_next = part.handled_next;
                self.parked.insert(*p, part);
            } else {
                dropped.add(&part);
            }
        }
        self.recount();
        dropped
    }

    /// The group's `committed` offset of a newly assigned partition, as the
    /// poller thread read it (under the assignment `since`): commits never
    /// go below it, and the first record read is compared with it. A
    /// partition given back after an eager revocation keeps its deliveries
    /// in flight unless the group's offset moved past what this member had
    /// finished (it was away long enough for another member to read on):
    /// then it starts afresh, and the dropped deliveries are returned.
    pub(super) fn checked(
        &mut self,
        partition: i32,
        since: u64,
        committed: Option<i64>,
    ) -> Revoked {
        let Some(part) = self.parts.get_mut(&partition).filter(|p| p.since == since) else {
            return Revoked::default();
        };
        let mut dropped = Revoked::default();
        if std::mem::take(&mut part.restored) {
            let finished = part.frontier();
            if committed.is_some_and(|c| finished.is_some_and(|f| c > f)) {
                dropped.in_flight = part.in_flight.len();
                *part = Part::assigned(since);
            }
        }
        part.unchecked = false;
        part.floor = committed;
        part.first_expected = committed;
        dropped
    }

    /// The first records of new assignments in a batch the poller read
    /// (each with the rebalance count it was polled in): for each partition
    /// whose first record lies past the group's committed offset, `(partition,
    /// committed, first offset read)`. Records may have been removed by
    /// retention in between ([`retention_gap`]).
    pub(super) fn skipped_ahead(&mut self, batch: &[(Buffered, u64)]) -> Vec<(i32, i64, i64)> {
        let mut out = Vec::new();
        // Only the first records of an assignment are compared.
        if !self.parts.values().any(|p| p.first_expected.is_some()) {
            return out;
        }
        for (b, polled_in) in batch {
            let r = &b.record;
            let Some(part) = self.parts.get_mut(&r.partition) else {
                continue;
            };
            if *polled_in < part.since || part.unchecked {
                continue;
            }
            if let Some(c) = part.first_expected.take() {
                if r.offset > c {
                    out.push((r.partition, c, r.offset));
                }
            }
        }
        out
    }

    /// Partitions still to be checked, with their rebalance count.
    pub(super) fn unchecked(&self) -> Vec<(i32, u64)> {
        self.parts
            .iter()
            .filter(|(_, part)| part.unchecked)
            .map(|(&p, part)| (p, part.since))
            .collect()
    }

    /// Buffer a record the poller read (polled when the member's rebalance
    /// count was `polled_in`), unless its partition is not this member's
    /// under the assignment it was read in, or it is not new; returns
    /// whether it was buffered.
    pub(super) fn offer(&mut self, b: Buffered, polled_in: u64) -> bool {
        let r = &b.record;
        let Some(part) = self.parts.get_mut(&r.partition) else {
            return false;
        };
        let fresh = polled_in >= part.since
            && part.fetched_next.is_none_or(|n| r.offset >= n)
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

    /// Forget an acked delivery; false if this member does not hold it (the
    /// partition moved, or it was acked already). An ack of a delivery
    /// handed out under an earlier assignment of the partition removes the
    /// same record's delivery under this one, if there is one: the packet
    /// was handled.
    pub(super) fn ack(&mut self, partition: i32, offset: i64) -> bool {
        self.parts
            .get_mut(&partition)
            .is_some_and(|part| part.in_flight.remove(offset).is_some())
    }

    /// Take every partition's frontier that moved, marking it committed.
    pub(super) fn pending_commits(&mut self) -> Vec<(i32, i64)> {
        self.commits(|_| true)
    }

    /// [`pending_commits`](Self::pending_commits) of the partitions with
    /// nothing in flight: records skipped (not for this consumer, or
    /// malformed) let the committed offset move on by themselves.
    pub(super) fn skipped_commits(&mut self) -> Vec<(i32, i64)> {
        self.commits(|part| part.in_flight.is_empty())
    }

    fn commits(&mut self, which: impl Fn(&Part) -> bool) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&p, part) in self.parts.iter_mut() {
            if !which(part) {
                continue;
            }
            if let Some(o) = part.to_commit() {
                part.committed = Some(o);
                out.push((p, o));
            }
        }
        out
    }

    /// Deliveries in flight on all partitions.
    pub(super) fn unacked(&self) -> usize {
        self.parts.values().map(|p| p.in_flight.len()).sum()
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

/// How many records retention removed before the group acked them: those
/// from the group's `committed` offset up to the first retained one
/// (`log_start`), and no further than the first record read after it
/// (`first_read`). Kafka resumes the group at the first retained record
/// (`auto.offset.reset=earliest`), so they are never delivered. Offsets are
/// contiguous in a topic only this transport writes (no transactions, no
/// compaction), so a first record past the committed offset is the sign;
/// the log start confirms it.
pub(super) fn retention_gap(committed: i64, first_read: i64, log_start: i64) -> u64 {
    let removed_up_to = first_read.min(log_start);
    if committed >= 0 && removed_up_to > committed {
        (removed_up_to - committed) as u64
    } else {
        0
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
    /// How long one broker request of the poller thread may take.
    pub(super) request_timeout: Duration,
    /// Rebalances this member went through (assignments and revocations);
    /// records are tagged with it when polled.
    pub(super) rebalances: AtomicU64,
    /// Held while offsets are chosen and committed, and while the rebalance
    /// callbacks change the partitions: a commit computed under one
    /// assignment never reaches the broker after the partition moved.
    pub(super) commit_gate: Mutex<()>,
    /// Records retention removed before the group acked them, as seen when
    /// this member was assigned their partition.
    pub(super) retention_lost: AtomicU64,
    /// Partitions taken from this member before what it acked on them could
    /// be committed (its session ended, or the commit failed): reported by
    /// `close`.
    pub(super) uncommitted_revoked: AtomicU64,
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

    /// Account for what a rebalance made this member forget: acks on
    /// partitions whose progress was not committed are lost (reported by
    /// `close`).
    pub(super) fn forgot(&self, dropped: Revoked) {
        if dropped.uncommitted > 0 {
            self.uncommitted_revoked
                .fetch_add(dropped.uncommitted as u64, Ordering::Relaxed);
            tracing::warn!(consumer = %self.name, partitions = dropped.uncommitted, "partitions moved before this member could commit its acks on them: those packets will be delivered again");
        }
    }

    /// Wait (up to the request timeout) for a commit under way, and keep
    /// others out. `None` when the commit under way did not finish in time:
    /// librdkafka's synchronous commit has no deadline of its own, and waits
    /// as long as the brokers accept connections without answering.
    pub(super) fn gate(&self) -> Option<MutexGuard<'_, ()>> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            if let Some(g) = self.try_gate() {
                return Some(g);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // A commit takes a broker round trip; this wait is bounded.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The gate, unless a commit is under way.
    pub(super) fn try_gate(&self) -> Option<MutexGuard<'_, ()>> {
        match self.commit_gate.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
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

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
