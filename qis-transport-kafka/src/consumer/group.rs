//! Group membership: the librdkafka context that follows the group's
//! assignments (eager or incremental), and waiting for members of this
//! process that are leaving the group.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::state::Shared;
use crate::client::TracingContext;

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

/// Whether the group rebalances incrementally (cooperative protocols).
fn cooperative(consumer: &BaseConsumer<GroupContext>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

/// The partitions of `topic` in a rebalance's list.
fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let sh = &self.shared;
        let revoked = partitions_of(tpl, &sh.topic);
        // The session ended and the group moved the partitions already:
        // a commit would be refused, or worse, land after their new owner's.
        let lost = consumer.assignment_lost();
        // No ack may commit while the partitions change hands. A commit that
        // does not finish means unreachable brokers: revoke without one.
        let gate = sh.gate();
        if gate.is_none() {
            tracing::warn!(consumer = %sh.name, "a commit of acks is still waiting for the brokers; revoking partitions without committing");
        }
        sh.rebalances.fetch_add(1, Ordering::AcqRel);
        // Commit what this member finished; the next owner resumes there.
        let offsets = if lost || gate.is_none() {
            Vec::new()
        } else {
            sh.lock().pending_commits()
        };
        if !offsets.is_empty() {
            if let Err(e) = consumer.commit(&sh.commit_list(&offsets), CommitMode::Sync) {
                tracing::warn!(consumer = %sh.name, error = %e, "could not commit before a rebalance; unacked packets may be delivered again");
                sh.commit_failed(&offsets);
            }
        }
        // An eager revocation (session intact) is followed by an assignment
        // of the same generation: partitions given back to this member keep
        // their deliveries in flight. Otherwise they are forgotten.
        let park = !lost && !cooperative(consumer);
        let dropped = sh.lock().revoke(&revoked, park);
        sh.forgot(dropped);
        if lost {
            tracing::warn!(consumer = %sh.name, partitions = ?revoked, unacked = dropped.in_flight, "the group took this member's partitions (its session ended): their unacked deliveries go to the next owner");
        } else {
            tracing::debug!(consumer = %sh.name, partitions = ?revoked, parked = park, unacked = dropped.in_flight, "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let sh = &self.shared;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions_of(tpl, &sh.topic);
                // Cooperative protocols (the cooperative-sticky assignor,
                // group.protocol=consumer) name only the partitions added.
                let incremental = cooperative(consumer);
                {
                    // New and given-back partitions commit nothing before the
                    // poller checked them: no gate needed.
                    let since = sh.rebalances.fetch_add(1, Ordering::AcqRel) + 1;
                    let dropped = sh.lock().assign(&assigned, incremental, since);
                    sh.forgot(dropped);
                    tracing::debug!(consumer = %sh.name, partitions = ?assigned, incremental, unacked_dropped = dropped.in_flight, "partitions assigned");
                }
                sh.notify.notify_waiters();
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(consumer = %sh.name, error = %e, "consumer group rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(consumer = %self.shared.name, error = %e, "offset commit failed; it is retried with the next ack");
            // An async commit (of skipped records) that failed is sent again.
            let failed: Vec<(i32, i64)> = offsets
                .elements_for_topic(&self.shared.topic)
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect();
            self.shared.commit_failed(&failed);
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
