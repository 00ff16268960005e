//! Opening a handle: the start position of a new consumer (committed once,
//! whoever joins first), a conflicting pattern refused, the group joined and
//! the first assignment awaited.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use qis_core::{ConsumerConfig, Error, ErrorKind, Result, StartPosition};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use tokio::sync::Notify;

use super::group::{wait_for_leaving, GroupConsumer, GroupContext, MEMBERS};
use super::poller::poll_loop;
use super::state::{Shared, State};
use super::KafkaConsumer;
use crate::client::{base_config, ms, user_options, TracingContext};
use crate::config::KafkaConfig;
use crate::error::{join_error, kafka_error};
use crate::topic::{assign_at_end, partition_count};
use crate::NAME;

/// Open (create or resume) the durable consumer `cfg` on `topic`.
pub(crate) async fn open(
    config: &KafkaConfig,
    topic: &str,
    cfg: ConsumerConfig,
) -> Result<Arc<KafkaConsumer>> {
    let group = format!("{}.{}", config.prefix, cfg.name);
    let shared = Arc::new(Shared {
        topic: topic.to_string(),
        prefix: config.prefix.clone(),
        pattern: cfg.pattern.clone(),
        name: cfg.name.clone(),
        group: group.clone(),
        ack_wait: cfg.ack_wait,
        buffer_max: config.consumer_buffer_bytes.max(1),
        state: Mutex::new(State::default()),
        notify: Notify::new(),
        malformed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        left: AtomicBool::new(false),
        brokers: config.bootstrap_servers.clone(),
        request_timeout: config.request_timeout,
        rebalances: AtomicU64::new(0),
        commit_gate: Mutex::new(()),
        retention_lost: AtomicU64::new(0),
        uncommitted_revoked: AtomicU64::new(0),
    });
    // A handle of this group dropped just before must be out of the group
    // before this member joins, or the join races its LeaveGroup.
    wait_for_leaving(&shared, config.join_timeout).await;
    {
        let mut members = MEMBERS.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(&shared));
    }
    let cc = member_config(config, &group);
    let consumer: GroupConsumer = cc
        .create_with_context(GroupContext {
            shared: shared.clone(),
        })
        .map_err(|e| kafka_error(format!("could not create a consumer for group {group}"), e))?;
    let consumer = Arc::new(consumer);

    // A consumer outside the group, to find the end of the topic.
    let mut probe = base_config(config);
    probe
        .set(
            "group.id",
            format!("{group}.probe-{:016x}", rand::random::<u64>()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", ms(config.fetch_wait_max).to_string());
    user_options(&mut probe, config);

    // Fix the start position (first open only), then join the group.
    {
        let consumer = consumer.clone();
        let shared = shared.clone();
        let start = cfg.start;
        let timeout = config.request_timeout;
        tokio::task::spawn_blocking(move || prepare(&consumer, &probe, &shared, start, timeout))
            .await
            .map_err(|e| join_error("preparing the consumer", e))??;
    }

    let handle = KafkaConsumer {
        shared: shared.clone(),
        consumer: Mutex::new(Some(consumer.clone())),
        thread: Mutex::new(None),
    };
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("qis-kafka-{}", cfg.name))
            .spawn(move || poll_loop(consumer, shared))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Backend,
                    NAME,
                    "could not start the consumer thread",
                )
                .with_source(e)
            })?
    };
    *handle.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);

    // Wait (bounded) for the group to assign partitions, so the first fetch
    // does not miss what is already there.
    let deadline = tokio::time::Instant::now() + config.join_timeout;
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.lock().assignments > 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            let _ = handle.close_handle().await;
            return Err(Error::new(
                ErrorKind::Timeout,
                NAME,
                format!(
                    "consumer {} got no partition assignment from group {group} within {:?}: check the brokers, or raise join_timeout",
                    cfg.name, config.join_timeout
                ),
            ));
        }
    }
    tracing::debug!(consumer = %cfg.name, group = %group, "consumer ready");
    Ok(Arc::new(handle))
}

/// The librdkafka properties of a group member of `group`.
///
/// Offsets are committed by the handle only (no auto-commit). The session
/// timeout and heartbeat interval are set for the classic group protocol;
/// with the new consumer protocol (`librdkafka.group.protocol=consumer`,
/// KIP-848) the broker sets them and librdkafka refuses them, so they are
/// left out. Either protocol may rebalance incrementally (the
/// `cooperative-sticky` assignor, or the consumer protocol): the handle
/// follows incremental assignments.
pub(super) fn member_config(config: &KafkaConfig, group: &str) -> ClientConfig {
    let mut cc = base_config(config);
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Only used when a committed offset is gone (retention deleted it)
        // or the topic gained partitions: start with what is retained.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", ms(config.fetch_wait_max).to_string())
        // When the poller falls behind and librdkafka's local queue passes
        // `queued.min.messages`, librdkafka looks at the partition again only
        // after this (1 s by default): a raw reader decoding a full topic
        // got nothing for 0.8-0.9 s each time (the kafka bench). The
        // handle's own buffer bounds what is read ahead.
        .set(
            "fetch.queue.backoff.ms",
            ms(config.fetch_wait_max).to_string(),
        );
    let consumer_protocol = config
        .librdkafka
        .iter()
        .any(|(k, v)| k == "group.protocol" && v.trim().eq_ignore_ascii_case("consumer"));
    if !consumer_protocol {
        cc.set("session.timeout.ms", ms(config.session_timeout).to_string())
            .set(
                "heartbeat.interval.ms",
                (ms(config.session_timeout) / 4).max(100).to_string(),
            );
    }
    user_options(&mut cc, config);
    cc
}

/// Read the group's committed offsets; on a new group, commit the start
/// position (all / new / since) so that it holds from this moment, whoever
/// joins first. Then subscribe.
fn prepare(
    consumer: &GroupConsumer,
    probe: &ClientConfig,
    sh: &Shared,
    start: StartPosition,
    timeout: Duration,
) -> Result<()> {
    let partitions = partition_count(consumer, &sh.topic, timeout)?;
    if !read_committed(consumer, sh, partitions, timeout)? {
        let offsets = start_offsets(consumer, probe, sh, partitions, start, timeout)?;
        if let Err(e) = consumer.commit(&sh.commit_list(&offsets), CommitMode::Sync) {
            // Another member may have joined meanwhile and set the start.
            if !read_committed(consumer, sh, partitions, timeout)? {
                return Err(kafka_error(
                    format!("could not store the start position of consumer {}", sh.name),
                    e,
                ));
            }
        } else {
            tracing::debug!(consumer = %sh.name, ?start, ?offsets, "new consumer group; start position committed");
        }
    }
    consumer
        .subscribe(&[&sh.topic])
        .map_err(|e| kafka_error(format!("could not subscribe to topic {}", sh.topic), e))
}

/// Whether the group has committed offsets; fails with a conflict if they
/// were committed for another pattern.
fn read_committed(
    consumer: &GroupConsumer,
    sh: &Shared,
    partitions: i32,
    timeout: Duration,
) -> Result<bool> {
    let mut tpl = TopicPartitionList::with_capacity(partitions as usize);
    tpl.add_partition_range(&sh.topic, 0, partitions - 1);
    let committed = consumer.committed_offsets(tpl, timeout).map_err(|e| {
        kafka_error(
            format!("could not read the committed offsets of group {}", sh.group),
            e,
        )
    })?;
    let mut any = false;
    for e in committed.elements() {
        if let Offset::Offset(_) = e.offset() {
            any = true;
            // librdkafka panics on non-UTF-8 metadata; someone else's commit
            // must not take the process down.
            let metadata =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.metadata().to_string()))
                    .unwrap_or_default();
            if !metadata.is_empty() && metadata != sh.pattern.as_str() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    NAME,
                    format!(
                        "consumer {} exists with pattern {metadata}, not {}: use another name",
                        sh.name, sh.pattern
                    ),
                ));
            }
        }
    }
    Ok(any)
}

/// The first offset of every partition for a start position.
fn start_offsets(
    consumer: &GroupConsumer,
    probe: &ClientConfig,
    sh: &Shared,
    partitions: i32,
    start: StartPosition,
    timeout: Duration,
) -> Result<Vec<(i32, i64)>> {
    let watermarks = |p: i32| {
        consumer
            .fetch_watermarks(&sh.topic, p, timeout)
            .map_err(|e| {
                kafka_error(
                    format!("could not read the offsets of {} partition {p}", sh.topic),
                    e,
                )
            })
    };
    // The end as a fetch sees it, read by a throw-away consumer.
    let ends = || -> Result<Vec<(i32, i64)>> {
        let c: BaseConsumer<TracingContext> = probe
            .create_with_context(TracingContext)
            .map_err(|e| kafka_error("could not create a consumer", e))?;
        Ok(assign_at_end(&c, &sh.topic, partitions, timeout)?.0)
    };
    let mut out = Vec::with_capacity(partitions as usize);
    match start {
        StartPosition::All => {
            for p in 0..partitions {
                out.push((p, watermarks(p)?.0));
            }
        }
        StartPosition::New => out = ends()?,
        StartPosition::Since(t) => {
            let at = t
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
                .min(i64::MAX as u128) as i64;
            let mut tpl = TopicPartitionList::with_capacity(partitions as usize);
            for p in 0..partitions {
                tpl.add_partition_offset(&sh.topic, p, Offset::Offset(at))
                    .map_err(|e| kafka_error("could not build an offsets-for-times request", e))?;
            }
            let found = consumer.offsets_for_times(tpl, timeout).map_err(|e| {
                kafka_error(
                    format!("could not look up offsets by time in {}", sh.topic),
                    e,
                )
            })?;
            let mut end: Option<Vec<(i32, i64)>> = None;
            for e in found.elements_for_topic(&sh.topic) {
                let p = e.partition();
                let o = match e.offset() {
                    Offset::Offset(o) if o >= 0 => o,
                    // No record at or after the time: start at the end.
                    _ => {
                        if end.is_none() {
                            end = Some(ends()?);
                        }
                        end.as_ref()
                            .and_then(|v| v.iter().find(|(q, _)| *q == p))
                            .map_or(0, |(_, o)| *o)
                    }
                };
                out.push((p, o));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_group_protocol_leaves_session_settings_to_the_broker() {
        let classic = KafkaConfig::from_url("kafka://h?session_timeout=2s").unwrap();
        let c = member_config(&classic, "g");
        assert_eq!(c.get("session.timeout.ms"), Some("2000"));
        assert_eq!(c.get("heartbeat.interval.ms"), Some("500"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));

        let kip848 = KafkaConfig::from_url(
            "kafka://h?session_timeout=2s&librdkafka.group.protocol=consumer",
        )
        .unwrap();
        let c = member_config(&kip848, "g");
        assert_eq!(c.get("group.protocol"), Some("consumer"));
        assert_eq!(c.get("session.timeout.ms"), None);
        assert_eq!(c.get("heartbeat.interval.ms"), None);
        // librdkafka accepts the result (it refuses session settings with
        // the consumer protocol).
        let created: std::result::Result<BaseConsumer<TracingContext>, _> =
            c.create_with_context(TracingContext);
        assert!(created.is_ok(), "{:?}", created.err());
    }
}
