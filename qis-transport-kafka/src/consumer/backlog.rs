//! What a consumer group still has to do: per partition, the high watermark
//! minus where the group stands (this handle's own position for the
//! partitions it is assigned, the group's committed offset for the others),
//! and this handle's deliveries in flight; and every group under the prefix,
//! listed without joining it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use qis_core::{Backlog, ConsumerInfo, Result};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::state::{Shared, State};
use super::KafkaConsumer;
use crate::client::{base_config, user_options, TracingContext};
use crate::config::KafkaConfig;
use crate::error::{join_error, kafka_error};
use crate::topic::{assign_at_end, partition_count};

/// One partition's retained range: `(partition, log start, high watermark)`.
pub(super) type Range = (i32, i64, i64);

/// Each partition's `(low, high)` watermarks.
fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<(i64, i64)>> {
    (0..partitions)
        .map(|p| {
            consumer.fetch_watermarks(topic, p, timeout).map_err(|e| {
                kafka_error(
                    format!("could not read the offsets of {topic} partition {p}"),
                    e,
                )
            })
        })
        .collect()
}

/// The group's committed offset per partition (none where it has not
/// committed), and the metadata of the commits (the consumer's pattern).
fn committed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    group: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(HashMap<i32, i64>, Option<String>)> {
    let mut tpl = TopicPartitionList::with_capacity(partitions as usize);
    tpl.add_partition_range(topic, 0, partitions - 1);
    let got = consumer.committed_offsets(tpl, timeout).map_err(|e| {
        kafka_error(
            format!("could not read the committed offsets of group {group}"),
            e,
        )
    })?;
    let mut out = HashMap::new();
    let mut pattern = None;
    for e in got.elements_for_topic(topic) {
        if let Offset::Offset(o) = e.offset() {
            out.insert(e.partition(), o);
            if pattern.is_none() {
                // librdkafka panics on non-UTF-8 metadata; someone else's
                // commit must not take the process down.
                let m = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    e.metadata().to_string()
                }))
                .unwrap_or_default();
                pattern = Some(m).filter(|m| !m.is_empty());
            }
        }
    }
    Ok((out, pattern))
}

impl KafkaConsumer {
    /// This handle's view of its group's backlog (see the module docs).
    pub(super) async fn count_backlog(&self) -> Result<Backlog> {
        let consumer = self.consumer()?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || handle_backlog(&consumer, &shared))
            .await
            .map_err(|e| join_error("counting the backlog", e))?
    }
}

fn handle_backlog<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    sh: &Arc<Shared>,
) -> Result<Backlog> {
    let timeout = sh.request_timeout;
    let partitions = partition_count(consumer, &sh.topic, timeout)?;
    let marks = watermarks(consumer, &sh.topic, partitions, timeout)?;
    let (committed, _) = committed(consumer, &sh.topic, &sh.group, partitions, timeout)?;
    let ranges: Vec<Range> = (0..partitions)
        .zip(marks)
        .map(|(p, (low, high))| (p, low, high))
        .collect();
    let backlog = sh.lock().backlog(&ranges, &committed);
    Ok(backlog)
}

/// Every consumer group of this transport's prefix (`{prefix}.{name}`)
/// that has committed offsets on `topic`, with its backlog: the high
/// watermark minus the committed offset, over every partition. Deliveries a
/// live member holds unacked are behind its committed offset, so they count
/// as waiting here.
pub(crate) async fn list(config: &KafkaConfig, topic: &str) -> Result<Vec<ConsumerInfo>> {
    let config = config.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || list_blocking(&config, &topic))
        .await
        .map_err(|e| join_error("listing consumer groups", e))?
}

fn list_blocking(config: &KafkaConfig, topic: &str) -> Result<Vec<ConsumerInfo>> {
    let timeout = config.request_timeout;
    let mut cc = base_config(config);
    user_options(&mut cc, config);
    let probe: BaseConsumer<TracingContext> = cc
        .create_with_context(TracingContext)
        .map_err(|e| kafka_error("could not create a consumer", e))?;
    let groups = probe
        .fetch_group_list(None, timeout)
        .map_err(|e| kafka_error("could not list the consumer groups", e))?;
    let lead = format!("{}.", config.prefix);
    let mut names: Vec<String> = groups
        .groups()
        .iter()
        .filter_map(|g| g.name().strip_prefix(lead.as_str()))
        // Durable names have no dots: `{group}.probe-…` and
        // `{prefix}.probe.status-…` are this crate's own probes.
        .filter(|n| !n.is_empty() && !n.contains('.'))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let partitions = partition_count(&probe, topic, timeout)?;
    let lows = watermarks(&probe, topic, partitions, timeout)?;
    // The end as a fetch sees it (on Apache Kafka the listed end; brokers
    // whose listing lags behind the last batch are read to their end).
    let mut ends = base_config(config);
    ends.set(
        "group.id",
        format!("{lead}probe.status-{:016x}", rand::random::<u64>()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.partition.eof", "true");
    user_options(&mut ends, config);
    let end_reader: BaseConsumer<TracingContext> = ends
        .create_with_context(TracingContext)
        .map_err(|e| kafka_error("could not create a consumer", e))?;
    let (highs, _) = assign_at_end(&end_reader, topic, partitions, timeout)?;
    drop(end_reader);
    let marks: Vec<(i64, i64)> = lows
        .iter()
        .zip(&highs)
        .map(|(&(low, listed), &(_, end))| (low, listed.max(end)))
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let group = format!("{lead}{name}");
        let mut gc = base_config(config);
        gc.set("group.id", &group)
            .set("enable.auto.commit", "false");
        user_options(&mut gc, config);
        let reader: BaseConsumer<TracingContext> = gc
            .create_with_context(TracingContext)
            .map_err(|e| kafka_error("could not create a consumer", e))?;
        let (offsets, pattern) = committed(&reader, topic, &group, partitions, timeout)?;
        if offsets.is_empty() {
            // A group of this prefix on another topic.
            continue;
        }
        let mut backlog = Backlog::default();
        for (p, &(low, high)) in (0..partitions).zip(&marks) {
            let position = offsets.get(&p).copied().unwrap_or(low).max(low);
            backlog.waiting += (high - position).max(0) as u64;
        }
        out.push(ConsumerInfo {
            name,
            pattern,
            backlog,
        });
    }
    Ok(out)
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
