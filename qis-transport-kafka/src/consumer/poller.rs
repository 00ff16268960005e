//! The background thread of a group member: it polls librdkafka (which also
//! runs the rebalance callbacks), checks newly assigned partitions, buffers
//! records, and pauses when the buffer is full. On stop it commits the
//! frontier and closes the consumer (leaving the group at once).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use qis_core::{Error, ErrorKind, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::group::GroupConsumer;
use super::state::{retention_gap, Buffered, Shared};
use crate::error::kafka_error;
use crate::record::{decode_with, RawRecord, SubjectCache};
use crate::NAME;

/// How long the background thread blocks in one librdkafka poll.
const POLL: Duration = Duration::from_millis(50);

/// At most this many records are moved from librdkafka to the buffer at once.
const POLL_BATCH: usize = 1_000;

/// Run until told to stop. Returns the error of the final commit, if it
/// failed: the acks it carried are lost, and their packets are delivered
/// again.
pub(super) fn poll_loop(consumer: Arc<GroupConsumer>, sh: Arc<Shared>) -> Result<()> {
    let mut paused_at: Option<u64> = None;
    let mut last_error = String::new();
    let mut subjects = SubjectCache::default();
    // Reused: a batch's records are moved out into the buffers each turn.
    let mut batch = Vec::new();
    while !sh.stop.load(Ordering::Acquire) {
        // Flow control: pausing costs a refetch (librdkafka drops what it
        // prefetched, and resumes with a delay), so the limit is generous and
        // only a consumer far behind its backlog reaches it.
        let (buffered, assignments) = {
            let st = sh.lock();
            (st.buffered_bytes, st.assignments)
        };
        if buffered >= sh.buffer_max && paused_at != Some(assignments) {
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.pause(&a);
            }
            paused_at = Some(assignments);
        } else if paused_at.is_some() && buffered <= sh.buffer_max / 2 {
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.resume(&a);
            }
            paused_at = None;
        }
        // Take what librdkafka has ready in one go (up to a batch), so a
        // waiting fetch wakes to a full batch rather than to one record.
        // Each record is tagged with the rebalance count it was read under.
        let mut timeout = POLL;
        while batch.len() < POLL_BATCH {
            match consumer.poll(timeout) {
                Some(Ok(m)) => {
                    let polled_in = sh.rebalances.load(Ordering::Acquire);
                    let record = RawRecord::from_message(&m);
                    drop(m);
                    let decoded = decode_with(&mut subjects, &sh.prefix, &sh.pattern, &record);
                    batch.push((Buffered { record, decoded }, polled_in));
                    timeout = Duration::ZERO;
                }
                // Reaching the end of a partition is news, not an error.
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!(consumer = %sh.name, error = %msg, "consumer error (librdkafka retries)");
                        last_error = msg;
                    }
                    break;
                }
                None => break,
            }
        }
        // Before any record of a new assignment is buffered.
        check_assigned(&consumer, &sh);
        check_first_records(&consumer, &sh, &batch);
        if !batch.is_empty() {
            let mut st = sh.lock();
            let mut added = false;
            for (b, polled_in) in batch.drain(..) {
                added |= st.offer(b, polled_in);
            }
            if added {
                sh.notify.notify_waiters();
            }
        }
    }
    // Flush: commit the frontier, then close (LeaveGroup) on this thread.
    let flushed = match sh.gate() {
        None => Err(Error::new(
            ErrorKind::Timeout,
            NAME,
            format!(
                "consumer {} closed while a commit of its acks was still waiting for the brokers (over {:?}): acks since its last commit may be delivered again",
                sh.name, sh.request_timeout
            ),
        )),
        Some(_gate) => {
            let offsets = sh.lock().pending_commits();
            match offsets.is_empty() {
                true => Ok(()),
                false => consumer
                .commit(&sh.commit_list(&offsets), CommitMode::Sync)
                .map_err(|e| {
                    tracing::warn!(consumer = %sh.name, error = %e, "could not commit acks on close; they will be delivered again");
                    kafka_error(
                        format!(
                            "consumer {} could not commit its acks when it closed (they will be delivered again)",
                            sh.name
                        ),
                        e,
                    )
                }),
            }
        }
    };
    // The last reference: closing sends LeaveGroup and waits for it.
    drop(consumer);
    sh.left.store(true, Ordering::Release);
    sh.notify.notify_waiters();
    flushed
}

/// For each partition assigned since the last call: read the group's
/// committed offset (one request): commits never go below it, and the
/// first record read is compared with it.
fn check_assigned(consumer: &GroupConsumer, sh: &Shared) {
    let unchecked = sh.lock().unchecked();
    if unchecked.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::with_capacity(unchecked.len());
    for &(p, _) in &unchecked {
        tpl.add_partition(&sh.topic, p);
    }
    let offset_of = |tpl: &TopicPartitionList, p: i32| {
        tpl.find_partition(&sh.topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            })
    };
    let committed = match consumer.committed_offsets(tpl, sh.request_timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(consumer = %sh.name, error = %e, "could not read the committed offsets of newly assigned partitions");
            TopicPartitionList::new()
        }
    };
    let mut st = sh.lock();
    for (p, since) in unchecked {
        let stale = st.checked(p, since, offset_of(&committed, p));
        if stale.in_flight > 0 {
            tracing::debug!(consumer = %sh.name, partition = p, unacked = stale.in_flight, "the group read on past this member's deliveries while it was away; dropped them");
        }
    }
}

/// Warn about records retention removed before the group acked them, seen
/// as a new assignment's first record past the group's committed offset
/// (confirmed by the partition's first retained offset).
fn check_first_records(consumer: &GroupConsumer, sh: &Shared, batch: &[(Buffered, u64)]) {
    let ahead = sh.lock().skipped_ahead(batch);
    for (p, committed, first_read) in ahead {
        let log_start = match consumer.fetch_watermarks(&sh.topic, p, sh.request_timeout) {
            Ok((low, _)) => low,
            Err(e) => {
                tracing::debug!(consumer = %sh.name, partition = p, error = %e, "could not read the first retained offset");
                continue;
            }
        };
        let lost = retention_gap(committed, first_read, log_start);
        if lost > 0 {
            let total = sh.retention_lost.fetch_add(lost, Ordering::Relaxed) + lost;
            tracing::warn!(
                consumer = %sh.name,
                topic = %sh.topic,
                partition = p,
                committed,
                log_start,
                lost,
                total,
                "retention removed records this consumer had not acked (fetched and unacked, or not yet delivered; of any subject under the prefix): they will not be delivered"
            );
        }
    }
}
