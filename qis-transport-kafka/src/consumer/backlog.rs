//! How much a consumer still has to do: per partition, the records after
//! its reading position up to the high watermark, and the deliveries this
//! handle has in flight.

use std::collections::HashMap;

use qis_core::{Backlog, Result};
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::state::State;
use super::KafkaConsumer;
use crate::error::{join_error, kafka_error};
use crate::topic::partition_count;

/// One partition's retained range: `(partition, log start, high watermark)`.
pub(super) type Range = (i32, i64, i64);

impl KafkaConsumer {
    /// Read the partitions' watermarks and the group's committed offsets
    /// from the brokers, and count against them.
    pub(super) async fn count_backlog(&self) -> Result<Backlog> {
        let consumer = self.consumer()?;
        let sh = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let timeout = sh.request_timeout;
            let partitions = partition_count(&*consumer, &sh.topic, timeout)?;
            let mut tpl = TopicPartitionList::with_capacity(partitions as usize);
            tpl.add_partition_range(&sh.topic, 0, partitions - 1);
            let committed = consumer.committed_offsets(tpl, timeout).map_err(|e| {
                kafka_error(
                    format!("could not read the committed offsets of group {}", sh.group),
                    e,
                )
            })?;
            let committed: HashMap<i32, i64> = committed
                .elements_for_topic(&sh.topic)
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect();
            let mut ranges = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                let (low, high) =
                    consumer
                        .fetch_watermarks(&sh.topic, p, timeout)
                        .map_err(|e| {
                            kafka_error(
                                format!("could not read the offsets of {} partition {p}", sh.topic),
                                e,
                            )
                        })?;
                ranges.push((p, low, high));
            }
            let backlog = sh.lock().backlog(&ranges, &committed);
            Ok(backlog)
        })
        .await
        .map_err(|e| join_error("counting the backlog", e))?
    }
}

impl State {
    /// The backlog against the partitions' `ranges` and the group's
    /// `committed` offsets. A partition's reading position is this handle's
    /// (after what it delivered or skipped) where it holds the partition,
    /// else the group's committed offset, never before the log start; the
    /// records from there to the high watermark are waiting. The high
    /// watermark is the one the brokers list, or on a partition this handle
    /// holds the end of what it read ahead if that is further: some
    /// Kafka-protocol brokers (tansu) list an end that lags behind the last
    /// batch. They are
    /// records of every subject under the prefix (subjects are keys in one
    /// topic; telling them apart means reading them), so `waiting` is an
    /// upper bound for a pattern narrower than the prefix, and on
    /// partitions other members hold it includes their deliveries in
    /// flight. `unacked` is this handle's deliveries in flight.
    pub(super) fn backlog(&self, ranges: &[Range], committed: &HashMap<i32, i64>) -> Backlog {
        let waiting = ranges
            .iter()
            .map(|&(p, low, high)| {
                let part = self.parts.get(&p);
                let position = part
                    .and_then(|part| part.handled_next)
                    .or_else(|| committed.get(&p).copied())
                    .unwrap_or(low)
                    .max(low);
                // What this handle has read shows the end too, where the
                // listed one lags (tansu lists the last batch's first offset).
                let end = part
                    .and_then(|part| part.fetched_next)
                    .map_or(high, |read| read.max(high));
                (end - position).max(0) as u64
            })
            .sum();
        Backlog {
            waiting,
            unacked: self.unacked() as u64,
        }
    }
}
