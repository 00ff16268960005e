//! Group membership: the librdkafka context that follows the group's
//! assignments, the background thread that polls for the member, and
//! waiting for members of this process that are leaving the group.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::state::{Buffered, Shared};
use crate::client::TracingContext;
use crate::record::{decode, RawRecord};

/// How long the background thread blocks in one librdkafka poll.
const POLL: Duration = Duration::from_millis(50);

/// At most this many records are moved from librdkafka to the buffer at once.
const POLL_BATCH: usize = 1_000;

/// Every group member this process opened (dead entries are pruned on open),
/// so a new member can wait for the ones that are leaving its group.
pub(super) static MEMBERS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// A group member's librdkafka consumer.
pub(super) type GroupConsumer = BaseConsumer<GroupContext>;

/// The librdkafka context of a group member: logs to `tracing`, and keeps
/// the handle's partition table in step with the group's assignment.
pub(super) struct GroupContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        TracingContext.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        TracingContext.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let sh = &self.shared;
        // Partitions may move: commit what this member finished, drop what it
        // buffered (the next owner reads it from the committed offset).
        let revoked: Vec<i32> = tpl
            .elements_for_topic(&sh.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let offsets = {
            let mut st = sh.lock();
            st.revoke(&revoked);
            st.pending_commits()
        };
        tracing::debug!(consumer = %sh.name, revoked = tpl.count(), "partitions revoked");
        if !offsets.is_empty() {
            if let Err(e) = consumer.commit(&sh.commit_list(&offsets), CommitMode::Sync) {
                tracing::warn!(consumer = %sh.name, error = %e, "could not commit before a rebalance; unacked packets may be delivered again");
                sh.commit_failed(&offsets);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let sh = &self.shared;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned: Vec<i32> = tpl
                    .elements_for_topic(&sh.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                {
                    let dropped = sh.lock().assign(&assigned, false, 0);
                    tracing::debug!(consumer = %sh.name, partitions = ?assigned, dropped, "partitions assigned");
                }
                sh.notify.notify_waiters();
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(consumer = %sh.name, error = %e, "consumer group rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(consumer = %self.shared.name, error = %e, "offset commit failed; it is retried with the next ack");
        }
    }
}

/// Wait (up to `timeout`) until the members of `sh`'s group that this
/// process dropped or closed have committed and left the group.
///
/// A handle's `Drop` cannot block: it only tells the poller thread to stop,
/// and the thread commits and sends LeaveGroup a moment later. A member that
/// joins in that moment starts a rebalance that still counts the leaving
/// member (it may even be elected leader); Kafka's coordinator drops it when
/// its LeaveGroup arrives, but some Kafka-protocol brokers keep waiting for
/// the departed leader's SyncGroup, and the new member never gets an
/// assignment. Joining after the leave avoids the extra rebalance either way.
pub(super) async fn wait_for_leaving(sh: &Shared, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let leaving = MEMBERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .find(|m| m.group == sh.group && m.brokers == sh.brokers && m.leaving());
        let Some(m) = leaving else { return };
        let notified = m.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !m.leaving() {
            continue;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            tracing::debug!(consumer = %sh.name, group = %sh.group, "a member of this process is still leaving the group; joining anyway");
            return;
        }
    }
}

/// The background thread: poll librdkafka (which also runs the rebalance
/// callbacks), buffer records, pause when the buffer is full. On stop, commit
/// the frontier and close the consumer (leaving the group at once).
pub(super) fn poll_loop(consumer: Arc<GroupConsumer>, sh: Arc<Shared>) {
    let mut paused_at: Option<u64> = None;
    let mut last_error = String::new();
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
        let mut batch = Vec::new();
        let mut timeout = POLL;
        while batch.len() < POLL_BATCH {
            match consumer.poll(timeout) {
                Some(Ok(m)) => {
                    let record = RawRecord::from_message(&m);
                    drop(m);
                    let decoded = decode(&sh.prefix, &sh.pattern, &record);
                    batch.push(Buffered { record, decoded });
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
        if !batch.is_empty() {
            let mut st = sh.lock();
            let mut added = false;
            for b in batch {
                added |= st.offer(b, 0);
            }
            if added {
                sh.notify.notify_waiters();
            }
        }
    }
    // Flush: commit the frontier, then close (LeaveGroup) on this thread.
    let offsets = sh.lock().pending_commits();
    if !offsets.is_empty() {
        if let Err(e) = consumer.commit(&sh.commit_list(&offsets), CommitMode::Sync) {
            tracing::warn!(consumer = %sh.name, error = %e, "could not commit acks on close; they may be delivered again");
        }
    }
    // The last reference: closing sends LeaveGroup and waits for it.
    drop(consumer);
    sh.left.store(true, Ordering::Release);
    sh.notify.notify_waiters();
}
