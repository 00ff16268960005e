//! Durable consumers: one Kafka consumer group per durable name.
//!
//! Each handle is a group member with a background thread that polls
//! librdkafka (serving rebalances even while the caller does not fetch),
//! decodes records as they arrive and buffers them (pausing the partitions
//! when more than `consumer_buffer_bytes` wait). `fetch` turns buffered
//! records into deliveries; a delivery stays in the handle's in-flight table
//! until acked, and comes back from that table when its ack wait expires or
//! it is nak'd. The group's
//! committed offset of a partition is always the first offset this handle has
//! not finished with (the first unacked delivery, else the next record to
//! read), so after a crash, a close or a rebalance the next owner resumes
//! exactly after the contiguous run of acked packets.
//!
//! - [`open`](mod@open): the start position, a conflicting pattern refused, joining
//!   the group;
//! - [`group`]: the member's rebalance callbacks (eager or incremental);
//! - [`poller`]: its background thread, which also checks each newly
//!   assigned partition (the group's committed offset, what retention
//!   removed) and makes the final commit on close;
//! - [`state`]: what the handle and its thread share, offsets included;
//! - [`fetch`]: buffered records turned into deliveries, and redeliveries;
//! - [`commit`]: acks committed, up to the first unacked delivery of each
//!   partition;
//! - [`backlog`]: what the group still has to do, and the groups listed.

mod backlog;
mod commit;
mod fetch;
mod group;
mod open;
mod poller;
mod state;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qis_core::backend::{token_words, words_token};
use qis_core::{Backlog, Delivery, DurableConsumer, Error, ErrorKind, Result};

use crate::error::join_error;
use crate::NAME;
use group::GroupConsumer;
use state::Shared;

pub(crate) use backlog::list;
pub(crate) use open::open;

/// The token of a delivery at `partition` / `offset`, inline (no
/// allocation per delivery). (The checking layer makes sure it is acked on
/// the handle that fetched it.)
fn ack_token(partition: i32, offset: i64) -> qis_core::AckToken {
    // Bit for bit: read back exactly by `token_of`.
    words_token([u64::from(partition as u32), offset as u64, 0])
}

/// The partition and offset in a delivery's token.
fn token_of(d: &Delivery) -> Result<(i32, i64)> {
    let [partition, offset, _] = token_words(NAME, d)?;
    Ok((partition as u32 as i32, offset as i64))
}

/// A durable consumer handle: one member of the consumer group.
pub(crate) struct KafkaConsumer {
    shared: Arc<Shared>,
    consumer: Mutex<Option<Arc<GroupConsumer>>>,
    /// The poller thread; it ends with the result of its final commit.
    thread: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("name", &self.shared.name)
            .field("group", &self.shared.group)
            .field("topic", &self.shared.topic)
            .field("pattern", &self.shared.pattern)
            .finish()
    }
}

impl KafkaConsumer {
    /// The librdkafka consumer, until the handle is closed.
    fn consumer(&self) -> Result<Arc<GroupConsumer>> {
        self.consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            // Closed while a call was under way (the checking layer refuses
            // calls made after `close`).
            .ok_or_else(|| Error::consumer_closed(NAME, &self.shared.name))
    }
}

#[async_trait]
impl DurableConsumer for KafkaConsumer {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.fetch_deliveries(max, wait).await
    }

    /// Drop the deliveries from the in-flight table, then commit each
    /// partition's frontier that moved ([`commit`](Self::commit)).
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let consumer = self.consumer()?;
        // Every token is checked before any is acked.
        for d in deliveries {
            token_of(d)?;
        }
        {
            let mut st = self.shared.lock();
            let not_held = deliveries
                .iter()
                .filter_map(|d| token_of(d).ok())
                .filter(|&(partition, offset)| !st.ack(partition, offset))
                .count();
            if not_held > 0 {
                tracing::debug!(consumer = %self.shared.name, not_held, "acks of deliveries this member no longer holds (their partition moved, or they were acked already): the partition's owner delivers them again");
            }
        }
        self.commit(consumer).await
    }

    /// Make the delivery due again after `delay`: it stays in the in-flight
    /// table, which `fetch` serves first.
    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let (partition, offset) = token_of(delivery)?;
        {
            let mut st = self.shared.lock();
            if let Some(f) = st
                .parts
                .get_mut(&partition)
                .and_then(|p| p.in_flight.get_mut(offset))
            {
                f.due = std::time::Instant::now() + delay;
            }
        }
        self.shared.notify.notify_waiters();
        Ok(())
    }

    fn malformed_skipped(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    /// `waiting`: records from the consumer's position (this handle's on
    /// the partitions it holds, else the group's committed offset) to the
    /// high watermark, summed over the topic's partitions; they are records
    /// of any subject under the prefix, so an upper bound for a narrower
    /// pattern. `unacked`: this handle's deliveries in flight.
    async fn backlog(&self) -> Result<Backlog> {
        self.count_backlog().await
    }

    async fn close(&self) -> Result<()> {
        self.close_handle().await
    }
}

impl KafkaConsumer {
    /// Stop the poller thread, which commits what was acked and leaves the
    /// group. Fails when that final commit failed, or when the group took
    /// partitions from this member before its acks on them were committed:
    /// those acks are lost and their packets will be delivered again (SPEC
    /// §6.10). A second call does nothing.
    pub(crate) async fn close_handle(&self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let consumer = self
            .consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let name = self.shared.name.clone();
        let leaving = tokio::task::spawn_blocking(move || {
            let flushed = match thread.map(|t| t.join()) {
                None => Ok(()),
                Some(Ok(flushed)) => flushed,
                Some(Err(_)) => Err(Error::new(
                    ErrorKind::Backend,
                    NAME,
                    format!("the thread of consumer {name} panicked: acks since its last commit will be delivered again"),
                )),
            };
            drop(consumer);
            flushed
        });
        // The final commit and the group leave wait for the brokers; a
        // broker that accepts connections without answering would hold
        // them for ever. The thread finishes on its own if it ever can.
        let limit = self.shared.request_timeout * 2;
        let flushed = match tokio::time::timeout(limit, leaving).await {
            Ok(joined) => {
                let flushed = joined.map_err(|e| join_error("closing the consumer", e))?;
                // Out of the group (also when the thread panicked before
                // saying so).
                self.shared.left.store(true, Ordering::Release);
                self.shared.notify.notify_waiters();
                flushed
            }
            // Still leaving: the thread says when it left.
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                NAME,
                format!(
                    "consumer {} did not finish committing its acks and leaving its group within {limit:?}: check the brokers; acks since its last commit may be delivered again",
                    self.shared.name
                ),
            )),
        };
        flushed?;
        let moved = self.shared.uncommitted_revoked.swap(0, Ordering::Relaxed);
        if moved > 0 {
            return Err(Error::new(
                ErrorKind::Unavailable,
                NAME,
                format!(
                    "consumer {} lost {moved} partition(s) before it could commit its acks on them (its group session ended or the commit failed, e.g. while the brokers were unreachable): packets acked since the last commit will be delivered again",
                    self.shared.name
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // The poller thread commits what was acked and leaves the group: it
        // holds the last reference, so the leave is done when it ends.
        drop(
            self.consumer
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        self.shared.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back_bit_for_bit() {
        let body = br#"{"agent_id":"a","domain":"hvac","problem_class":"x","conclusion":"c","confidence":0.5,"context_vector":[],"timestamp":1.0,"source_node":"n"}"#;
        for (partition, offset) in [(0, 0), (7, 1_234_567), (i32::MAX, i64::MAX), (-1, -1001)] {
            let d = Delivery {
                received: qis_core::Received::decode("qis.iot.hvac.x", body).unwrap(),
                position: qis_core::Position::Offset { partition, offset },
                delivery_count: 1,
                token: ack_token(partition, offset),
            };
            assert_eq!(token_of(&d).unwrap(), (partition, offset));
        }
    }
}
