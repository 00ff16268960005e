//! Durable consumers: one Kafka consumer group per durable name.
//!
//! Each handle is a group member with a background thread that polls
//! librdkafka (serving rebalances even while the caller does not fetch),
//! decodes records as they arrive and buffers them (pausing the partitions
//! when more than `consumer_buffer_bytes` wait). `fetch` turns buffered
//! records into deliveries; a
//! delivery stays in the handle's in-flight table until acked, and comes back
//! from that table when its ack wait expires or it is nak'd. The group's
//! committed offset of a partition is always the first offset this handle has
//! not finished with (the first unacked delivery, else the next record to
//! read), so after a crash, a close or a rebalance the next owner resumes
//! exactly after the contiguous run of acked packets.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use qis_core::transport::check_pattern_overlaps;
use qis_core::{
    AckToken, ConsumerConfig, Delivery, DurableConsumer, Error, ErrorKind, Position, Received,
    Result, StartPosition, Subject, SubjectPattern,
};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use tokio::sync::Notify;

use crate::client::{
    assign_at_end, base_config, join_error, kafka_error, ms, partition_count, user_options,
    TracingContext,
};
use crate::config::KafkaConfig;
use crate::record::{decode, Decoded, RawRecord};
use crate::NAME;

/// How long the background thread blocks in one librdkafka poll.
const POLL: Duration = Duration::from_millis(50);

/// At most this many records are moved from librdkafka to the buffer at once.
const POLL_BATCH: usize = 1_000;

/// Handle ids, so an ack token is only accepted by the handle that made it.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// Every group member this process opened (dead entries are pruned on open),
/// so a new member can wait for the ones that are leaving its group.
static MEMBERS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

type GroupConsumer = BaseConsumer<GroupContext>;

/// A delivery handed out and not yet acked: the record is kept to deliver
/// it again.
#[derive(Debug)]
struct InFlight {
    record: RawRecord,
    due: Instant,
    count: u32,
}

/// What a handle knows about one assigned partition.
#[derive(Debug, Default)]
struct Part {
    /// The offset after the last record this handle finished reading
    /// (delivered, skipped or malformed).
    handled_next: Option<i64>,
    /// The offset after the last record put in `buffer`.
    fetched_next: Option<i64>,
    /// The offset last sent as the group's committed offset.
    committed: Option<i64>,
    /// Delivered, not yet acked, by offset.
    in_flight: BTreeMap<i64, InFlight>,
    /// Read from the broker, not yet looked at by `fetch`.
    buffer: VecDeque<Buffered>,
}

impl Part {
    /// The offset the group may commit: nothing before it is still owed.
    fn frontier(&self) -> Option<i64> {
        self.in_flight.keys().next().copied().or(self.handled_next)
    }

    /// The frontier, if it moved past what was last committed.
    fn to_commit(&self) -> Option<i64> {
        let f = self.frontier()?;
        match self.committed {
            Some(c) if c >= f => None,
            _ => Some(f),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    parts: BTreeMap<i32, Part>,
    /// How many assignments the group gave this member so far.
    assignments: u64,
    /// Records waiting in all buffers.
    buffered: usize,
    /// Their size in bytes (keys and values).
    buffered_bytes: usize,
}

/// A record read ahead, already decoded by the poller thread (so decoding
/// overlaps with the caller's work).
#[derive(Debug)]
struct Buffered {
    record: RawRecord,
    decoded: Decoded,
}

impl State {
    fn recount(&mut self) {
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
struct Shared {
    topic: String,
    prefix: Subject,
    pattern: SubjectPattern,
    name: String,
    group: String,
    ack_wait: Duration,
    /// Pause fetching from the brokers above this many buffered bytes.
    buffer_max: usize,
    state: Mutex<State>,
    /// Wakes fetches: new records, an assignment, a nak.
    notify: Notify,
    malformed: AtomicU64,
    stop: AtomicBool,
    /// The poller thread finished: it committed and left the group.
    left: AtomicBool,
    /// The brokers (with `group`, which members are in the same group).
    brokers: String,
}

impl Shared {
    /// Told to stop (dropped or closed), not yet out of the group.
    fn leaving(&self) -> bool {
        self.stop.load(Ordering::Acquire) && !self.left.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent between
        // statements that could panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A commit list for `(partition, offset)` pairs; the metadata records
    /// the consumer's pattern so a re-open with another pattern is caught.
    fn commit_list(&self, offsets: &[(i32, i64)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for &(p, o) in offsets {
            let mut e = tpl.add_partition(&self.topic, p);
            let _ = e.set_offset(Offset::Offset(o));
            e.set_metadata(self.pattern.as_str());
        }
        tpl
    }

    /// Take every partition's frontier that moved, marking it committed.
    fn pending_commits(&self, st: &mut State) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&p, part) in st.parts.iter_mut() {
            if let Some(o) = part.to_commit() {
                part.committed = Some(o);
                out.push((p, o));
            }
        }
        out
    }

    /// Forget what was marked committed for these partitions, so the next
    /// commit sends them again.
    fn commit_failed(&self, offsets: &[(i32, i64)]) {
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

/// The librdkafka context of a group member: logs to `tracing`, and keeps
/// the handle's partition table in step with the group's assignment.
pub(crate) struct GroupContext {
    shared: Arc<Shared>,
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
        let offsets = {
            let mut st = sh.lock();
            let st = &mut *st;
            for e in tpl.elements_for_topic(&sh.topic) {
                if let Some(part) = st.parts.get_mut(&e.partition()) {
                    part.buffer.clear();
                    part.fetched_next = part.handled_next;
                }
            }
            st.recount();
            sh.pending_commits(st)
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
                    let mut st = sh.lock();
                    let st = &mut *st;
                    // In-flight deliveries of partitions that moved away are
                    // the new owner's now: it reads them from the committed
                    // offset. Partitions kept keep their table.
                    let before = st.parts.len();
                    st.parts.retain(|p, _| assigned.contains(p));
                    for &p in &assigned {
                        st.parts.entry(p).or_default();
                    }
                    st.recount();
                    st.assignments += 1;
                    tracing::debug!(consumer = %sh.name, partitions = ?assigned, dropped = before.saturating_sub(st.parts.len()), "partitions assigned");
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

/// The token in each delivery: which handle, partition and offset.
#[derive(Debug)]
struct KafkaAck {
    handle: u64,
    partition: i32,
    offset: i64,
}

/// A durable consumer handle: one member of the consumer group.
pub(crate) struct KafkaConsumer {
    id: u64,
    shared: Arc<Shared>,
    consumer: Mutex<Option<Arc<GroupConsumer>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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

fn closed(name: &str) -> Error {
    Error::new(
        ErrorKind::Closed,
        NAME,
        format!("consumer {name} is closed: open it again by name"),
    )
}

/// Open (create or resume) the durable consumer `cfg` on `topic`.
pub(crate) async fn open(
    config: &KafkaConfig,
    topic: &str,
    cfg: ConsumerConfig,
) -> Result<Arc<dyn DurableConsumer>> {
    check_pattern_overlaps(NAME, &config.prefix, &cfg.pattern)?;
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
    });
    // A handle of this group dropped just before must be out of the group
    // before this member joins, or the join races its LeaveGroup.
    wait_for_leaving(&shared, config.join_timeout).await;
    {
        let mut members = MEMBERS.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(&shared));
    }
    let mut cc = base_config(config);
    cc.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Only used when a committed offset is gone (retention deleted it)
        // or the topic gained partitions: start with what is retained.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", ms(config.fetch_wait_max).to_string())
        .set("session.timeout.ms", ms(config.session_timeout).to_string())
        .set(
            "heartbeat.interval.ms",
            (ms(config.session_timeout) / 4).max(100).to_string(),
        );
    user_options(&mut cc, config);
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
        id: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
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
            let _ = handle.close().await;
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
async fn wait_for_leaving(sh: &Shared, timeout: Duration) {
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

/// The background thread: poll librdkafka (which also runs the rebalance
/// callbacks), buffer records, pause when the buffer is full. On stop, commit
/// the frontier and close the consumer (leaving the group at once).
fn poll_loop(consumer: Arc<GroupConsumer>, sh: Arc<Shared>) {
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
            let st = &mut *st;
            let mut added = false;
            for b in batch {
                let r = &b.record;
                if let Some(part) = st.parts.get_mut(&r.partition) {
                    let fresh = part.fetched_next.is_none_or(|n| r.offset >= n)
                        && part.handled_next.is_none_or(|n| r.offset >= n);
                    if fresh {
                        part.fetched_next = Some(r.offset + 1);
                        st.buffered += 1;
                        st.buffered_bytes += r.size();
                        part.buffer.push_back(b);
                        added = true;
                    }
                }
            }
            if added {
                sh.notify.notify_waiters();
            }
        }
    }
    // Flush: commit the frontier, then close (LeaveGroup) on this thread.
    let offsets = {
        let mut st = sh.lock();
        sh.pending_commits(&mut st)
    };
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

fn is_rebalance_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::NoOffset
                | RDKafkaErrorCode::State
                | RDKafkaErrorCode::AssignmentLost
        )
    )
}

impl KafkaConsumer {
    fn consumer(&self) -> Result<Arc<GroupConsumer>> {
        self.consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| closed(&self.shared.name))
    }

    /// Take up to `max` deliveries: expired in-flight ones first, then new
    /// records. Returns them, the commits that skipped records allow, and
    /// when the next in-flight delivery expires.
    fn take(&self, max: usize) -> (Vec<Delivery>, Vec<(i32, i64)>, Option<Instant>) {
        let sh = &self.shared;
        let now = Instant::now();
        let mut st = sh.lock();
        let st = &mut *st;
        let mut out = Vec::with_capacity(max.min(st.buffered + 16));

        // Redeliveries.
        'parts: for (&p, part) in st.parts.iter_mut() {
            for (&offset, f) in part.in_flight.iter_mut() {
                if out.len() >= max {
                    break 'parts;
                }
                if f.due <= now {
                    // It decoded when first delivered; it decodes again.
                    if let Decoded::Packet(received) = decode(&sh.prefix, &sh.pattern, &f.record) {
                        f.count += 1;
                        f.due = now + sh.ack_wait;
                        tracing::debug!(consumer = %sh.name, subject = %received.subject, id = %received.id, partition = p, offset, count = f.count, "redelivering");
                        out.push(self.delivery(p, offset, received, f.count));
                    }
                }
            }
        }

        // New records, one partition at a time in turn.
        let mut progressed = true;
        while out.len() < max && st.buffered > 0 && progressed {
            progressed = false;
            for (&p, part) in st.parts.iter_mut() {
                if out.len() >= max {
                    break;
                }
                let Some(Buffered { record: r, decoded }) = part.buffer.pop_front() else {
                    continue;
                };
                st.buffered -= 1;
                st.buffered_bytes -= r.size();
                progressed = true;
                if part.handled_next.is_some_and(|n| r.offset < n) {
                    continue;
                }
                part.handled_next = Some(r.offset + 1);
                match decoded {
                    Decoded::Packet(received) => {
                        out.push(self.delivery(p, r.offset, received, 1));
                        let offset = r.offset;
                        let f = InFlight {
                            record: r,
                            due: now + sh.ack_wait,
                            count: 1,
                        };
                        part.in_flight.insert(offset, f);
                    }
                    Decoded::Other => {}
                    Decoded::Malformed { subject, reason } => {
                        sh.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(consumer = %sh.name, %subject, partition = p, offset = r.offset, %reason, "skipping malformed record");
                    }
                }
            }
        }

        // Skipped records let the committed offset move on by themselves,
        // but only where nothing is in flight (else the ack will commit).
        let commits = st
            .parts
            .iter_mut()
            .filter(|(_, part)| part.in_flight.is_empty())
            .filter_map(|(&p, part)| {
                let o = part.to_commit()?;
                part.committed = Some(o);
                Some((p, o))
            })
            .collect();
        let next_due = st
            .parts
            .values()
            .flat_map(|part| part.in_flight.values().map(|f| f.due))
            .min();
        (out, commits, next_due)
    }

    fn delivery(&self, partition: i32, offset: i64, received: Received, count: u32) -> Delivery {
        Delivery {
            received,
            position: Position::Offset { partition, offset },
            delivery_count: count,
            token: AckToken::new(KafkaAck {
                handle: self.id,
                partition,
                offset,
            }),
        }
    }

    fn token<'a>(&self, d: &'a Delivery) -> Result<&'a KafkaAck> {
        match d.token.get::<KafkaAck>() {
            Some(t) if t.handle == self.id => Ok(t),
            Some(_) => Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!(
                    "packet {} was fetched by another handle of consumer {}: ack or nak it on the handle that fetched it",
                    d.id(),
                    self.shared.name
                ),
            )),
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                "this delivery came from another transport",
            )),
        }
    }

    /// Commit in the background (skipped records only; losing it costs a
    /// re-read of records this consumer does not want).
    fn commit_async(&self, consumer: &GroupConsumer, offsets: &[(i32, i64)]) {
        if let Err(e) = consumer.commit(&self.shared.commit_list(offsets), CommitMode::Async) {
            tracing::debug!(consumer = %self.shared.name, error = %e, "could not queue an offset commit");
            self.shared.commit_failed(offsets);
        }
    }
}

#[async_trait]
impl DurableConsumer for KafkaConsumer {
    fn name(&self) -> &str {
        &self.shared.name
    }

    #[tracing::instrument(level = "debug", skip(self), fields(consumer = %self.shared.name))]
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let consumer = self.consumer()?;
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (got, commits, next_due) = self.take(max.max(1));
            if !commits.is_empty() {
                self.commit_async(&consumer, &commits);
            }
            drop(consumer);
            if !got.is_empty() {
                return Ok(got);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_due
                .map(tokio::time::Instant::from_std)
                .map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(consumer = %self.shared.name, count = deliveries.len()))]
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer()?;
        let offsets = {
            let tokens = deliveries
                .iter()
                .map(|d| self.token(d))
                .collect::<Result<Vec<_>>>()?;
            let mut st = self.shared.lock();
            for t in tokens {
                match st.parts.get_mut(&t.partition) {
                    Some(part) => {
                        part.in_flight.remove(&t.offset);
                    }
                    None => {
                        tracing::debug!(consumer = %self.shared.name, partition = t.partition, offset = t.offset, "ack for a partition this member no longer owns; its new owner may deliver it again");
                    }
                }
            }
            self.shared.pending_commits(&mut st)
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = self.shared.commit_list(&offsets);
        let result = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| join_error("committing offsets", e))?;
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_rebalance_error(&e) => {
                // The group is moving partitions; their next owner starts
                // from the last commit (at-least-once).
                tracing::debug!(consumer = %self.shared.name, error = %e, "ack commit refused during a rebalance");
                self.shared.commit_failed(&offsets);
                Ok(())
            }
            Err(e) => {
                self.shared.commit_failed(&offsets);
                Err(kafka_error(
                    format!("could not commit acks of consumer {}", self.shared.name),
                    e,
                ))
            }
        }
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let t = self.token(delivery)?;
        {
            let mut st = self.shared.lock();
            if let Some(f) = st
                .parts
                .get_mut(&t.partition)
                .and_then(|p| p.in_flight.get_mut(&t.offset))
            {
                f.due = Instant::now() + delay;
            }
        }
        self.shared.notify.notify_waiters();
        Ok(())
    }

    fn malformed_skipped(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    async fn close(&self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let consumer = self
            .consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        tokio::task::spawn_blocking(move || {
            if let Some(t) = thread {
                if t.join().is_err() {
                    tracing::error!("the consumer thread panicked");
                }
            }
            drop(consumer);
        })
        .await
        .map_err(|e| join_error("closing the consumer", e))?;
        // Out of the group (also when the thread panicked before saying so).
        self.shared.left.store(true, Ordering::Release);
        self.shared.notify.notify_waiters();
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
