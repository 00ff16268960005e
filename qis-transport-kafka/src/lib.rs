//! # qis-transport-kafka
//!
//! A QIS outcome transport over Apache Kafka (or any broker speaking the
//! Kafka protocol), built on librdkafka through `rdkafka`. Durable consumers
//! are Kafka consumer groups.
//!
//! ```no_run
//! use std::time::Duration;
//! use qis_core::{DurableConsumer, OutcomePacket, OutcomeTransport, OutcomeTransportExt};
//! use qis_transport_kafka::{KafkaConfig, KafkaTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! let config: KafkaConfig = "kafka://127.0.0.1:9092?prefix=qis.iot&partitions=3&max_age=24h".parse()?;
//! // The transport behind qis-core's checking layer (`qis_core::Checked`).
//! let transport = KafkaTransport::connect(config).await?;
//! let packet = OutcomePacket {
//!     agent_id: "hvac-building-a".into(),
//!     domain: "hvac".into(),
//!     problem_class: "energy-anomaly".into(),
//!     conclusion: "Compressor draw 18% above baseline.".into(),
//!     confidence: 0.87,
//!     context_vector: vec![0.18, 0.92, 0.03, 0.71],
//!     timestamp: 1_764_000_000.0,
//!     source_node: "building-a-floor-3".into(),
//! };
//! let receipt = transport.deposit(&packet).await?;
//! assert!(!receipt.duplicate); // receipt.position: partition and offset
//!
//! // A consumer group named "qis.iot.building-b", starting with history.
//! let twins = transport.twins_consumer("building-b", "hvac", "energy-anomaly").await?;
//! let batch = twins.fetch(50, Duration::from_secs(1)).await?;
//! twins.ack(&batch).await?;
//! twins.close().await?;
//! transport.close().await?;
//! # Ok(()) }
//! ```
//!
//! ## Subjects on Kafka: one topic per prefix, the subject as key
//!
//! Every subject under the prefix (`qis.iot.hvac.energy-anomaly`,
//! `qis.iot.hvac.energy-anomaly.<fingerprint>`, …) is stored in **one topic
//! named after the prefix** (`qis.iot`; [`KafkaConfig::topic`] overrides it).
//! Each record has the subject as its **key** and in a `qis-subject` header,
//! the packet body as its value, and the packet id in a `qis-packet-id`
//! header.
//!
//! - *Order*: records are partitioned by key (murmur2, as the Java client),
//!   so one subject always lands in one partition and keeps the order its
//!   publisher deposited in; the idempotent producer keeps that order across
//!   retries.
//! - *Bounded topic count*: fingerprinted subjects are unbounded in number;
//!   a topic per subject would create topics without end, each with its own
//!   files and metadata, and new topics would reach pattern (regex)
//!   subscribers only after a metadata refresh (up to minutes), so a packet
//!   on a brand-new subject could be missed by a consumer that is already
//!   running.
//! - *Wildcards*: Kafka has no subject wildcards. Consumers read the whole
//!   topic and keep the records whose key matches their
//!   [`SubjectPattern`] (`*` one token, `>` one or
//!   more trailing tokens; exactly SPEC §3). Records that do not match count
//!   as done for that consumer. The cost is that every consumer reads every
//!   record under the prefix; use more prefixes to split heavy traffic.
//! - The topic is created if missing (admin client), with
//!   [`KafkaConfig::partitions`] partitions (default 3), `retention.ms` =
//!   `max_age` (24 h) and `retention.bytes` = `max_bytes` (50 MiB) /
//!   partitions (Kafka counts bytes per partition), `cleanup.policy=delete`,
//!   and segments a tenth of those (`segment.ms`, `segment.bytes`, within
//!   1 s – 7 days and 1 MiB – 1 GiB). Kafka deletes whole segments only, so
//!   the segments are what make the retention hold: a record stays at most
//!   `max_age` + `segment.ms` (plus the broker's
//!   `log.retention.check.interval.ms`, 5 min by default), and the topic
//!   holds at most `max_bytes` + partitions × `segment.bytes`.
//! - An existing topic's settings are read (DescribeConfigs) and compared
//!   with the configuration's on the topic's own partition count: a topic
//!   that differs is an [`ErrorKind::Conflict`](qis_core::ErrorKind::Conflict)
//!   listing each difference and the `kafka-configs.sh` command that would
//!   align it; it is left as it is. Settings a broker does not report are
//!   not compared (tansu, the test broker, reports only those given when
//!   the topic was created, and enforces no retention with memory storage);
//!   a broker that refuses DescribeConfigs leaves the topic unchecked, with
//!   a warning.
//!
//! ## Deposits
//!
//! An idempotent producer (`enable.idempotence=true`, `acks=all`): the
//! receipt, with [`Position::Offset`](qis_core::Position::Offset), is
//! returned once the partition leader and its in-sync replicas stored the
//! record. A batch deposit queues every record first and then collects the
//! acknowledgements in order. Kafka does not recognise an identical
//! re-deposit (idempotence covers the producer's own retries only), so
//! `dedup` is false: a re-deposit is stored again, and synthesis counts a
//! packet id once anyway.
//!
//! ## Durable consumers
//!
//! A durable consumer `name` is the consumer group `{prefix}.{name}`.
//! Handles opened with the same name are members of the group and share its
//! partitions (`shared_consumers`): each packet goes to one of them. The
//! start position is fixed when the group is first created: the transport
//! commits each partition's start offset (low watermark for
//! [`StartPosition::All`](qis_core::StartPosition::All), high watermark for
//! `New`, `offsets_for_times` for `Since`), so a consumer created with `New`
//! and re-opened later still gets what was deposited in between.
//! [`consumer`](qis_core::OutcomeTransport::consumer) returns once the group
//! has assigned partitions to the new member (a group join takes a few
//! seconds on most brokers; bounded by `join_timeout`).
//!
//! Acks commit offsets, but only up to the first packet not acked yet in each
//! partition: the committed offset is the first unacked packet. A handle
//! keeps its unacked deliveries and delivers them again when their ack wait
//! expires or they are nak'd (so `nak` is supported); acked packets after an
//! unacked one are not delivered again by that handle. A handle that dies,
//! closes or loses a partition in a rebalance leaves the group's committed
//! offset at its first unacked packet, so the group's next owner of that
//! partition delivers it again, together with any packets after it that
//! were acked but not yet contiguous (at-least-once). `delivery_count`
//! counts deliveries by one handle; it starts again at 1 with a new owner.
//!
//! Rebalances, eager or incremental: a member whose partition is revoked
//! commits what it finished there and drops what it read ahead. An eager
//! rebalance gives partitions back in the same step, and a partition given
//! back keeps its deliveries in flight (unless the group's committed offset
//! moved past them meanwhile); a cooperative revocation (the
//! `cooperative-sticky` assignor, `librdkafka.partition.assignment.strategy`,
//! or the consumer group protocol, `librdkafka.group.protocol=consumer`,
//! whose assignments add partitions) or a lost session (the member was
//! away too long) forgets the partition's deliveries: its next owner
//! delivers them again. A member whose session ended commits nothing more
//! for those partitions, and no commit ever goes below the group's
//! committed offset found when the partition was assigned. An ack of a
//! delivery whose partition moved away is not stored. `close` (the
//! handle's, or the transport's, which closes every handle it opened)
//! commits what was acked and fails when that commit fails or does not
//! finish, or when partitions moved before their acks could be committed:
//! those packets will be delivered again. librdkafka's synchronous commit
//! has no deadline (brokers that accept connections without answering hold
//! it for ever), so an ack's commit is bounded by `request_timeout` (a
//! [`Timeout`](qis_core::ErrorKind::Timeout); the acks stay recorded for a
//! later commit) and `close` by twice that.
//!
//! Retention can remove records the group has not acked (a consumer away
//! for longer than `max_age`): when a member is assigned a partition whose
//! committed offset is below the first retained record, it warns
//! (`tracing::warn!`, with the count, for records of any subject under the
//! prefix) that they will not be delivered, and reading resumes at the
//! first retained record. A handle keeps the records of its own deliveries
//! in flight, so it can still deliver those again after retention removed
//! them from the brokers.
//!
//! [`backlog`](qis_core::DurableConsumer::backlog): `waiting` is, summed
//! over the topic's partitions, the records from the consumer's position
//! (this handle's where it holds the partition, else the group's committed
//! offset) to the high watermark. Subjects are keys in one topic, so these
//! are records of every subject under the prefix: an upper bound for a
//! narrower pattern. `unacked` is this handle's deliveries in flight.
//!
//! The committed offsets carry the consumer's pattern as commit metadata:
//! re-opening a name with another pattern fails with
//! [`ErrorKind::Conflict`](qis_core::ErrorKind::Conflict). (Apache Kafka
//! keeps commit metadata; a Kafka-compatible broker that drops it cannot
//! tell, and the consumer then resumes with the new pattern.)
//!
//! ## Backlog
//!
//! [`DurableConsumer::backlog`] counts,
//! per partition, the high watermark minus where the group stands (the
//! handle's own position in the partitions the group assigned to it, the
//! committed offset in the others), and the handle's deliveries in flight as
//! unacked. It counts every record after that position, whichever subject it
//! has: a consumer on a narrow pattern sees an upper bound (reading the
//! records is the only way to tell their subjects apart).
//! [`consumers`](qis_core::OutcomeTransport::consumers) lists the groups
//! `{prefix}.{name}` that have committed offsets on the topic, without
//! joining them; as the committed offset is a group's first unacked packet,
//! what a running member holds unacked counts as waiting there.
//!
//! ## Live subscriptions
//!
//! A live subscription is a consumer outside any group, assigned every
//! partition at its current end (positions fixed before `subscribe` returns,
//! so there is no group join delay), filtering keys on the client. It is
//! at-most-once: nothing is committed. Kafka has no publish that skips
//! storage (a produce with `acks=0` is still stored and would reach durable
//! consumers), so `fire_and_forget` is false and
//! [`publish_encoded`](qis_core::OutcomeTransport::publish_encoded) returns
//! [`ErrorKind::Unsupported`](qis_core::ErrorKind::Unsupported).
//!
//! ## Malformed records
//!
//! A record whose key is not a subject under the prefix, or whose value is
//! not a valid packet of at most 512 bytes, is logged with `tracing::warn!`
//! (subject, partition, offset), counted in
//! [`malformed_skipped`](qis_core::DurableConsumer::malformed_skipped) and
//! treated as done: its offset is committed past and it never comes back.
//!
//! ## Security and tuning
//!
//! `kafka://user:password@host` are the SASL credentials; the URL keys
//! `tls_ca`, `tls_cert` and `tls_key` are the TLS files; both set the
//! `security.protocol` they need. Any librdkafka property can be given
//! explicitly as `librdkafka.<property>=value` in the URL (or
//! [`KafkaConfig::librdkafka`]): `librdkafka.sasl.mechanism=SCRAM-SHA-512`,
//! `librdkafka.client.id=…`. See [`KafkaConfig`] for every key.
//! `fetch_wait_max` (default 10 ms) is how long the broker may hold an empty
//! fetch; a broker that answers waiting fetches as soon as data arrives can
//! use a larger value to cut idle load.
//!
//! ## Checks
//!
//! What every backend checks the same way (closed handles, subjects outside
//! the prefix, capabilities such as the missing fire-and-forget publish,
//! acks on a consumer handle that did not fetch the delivery) is done by
//! [`qis_core::Checked`], which [`KafkaTransport::connect`] applies.

mod client;
pub mod config;
mod consumer;
mod deposit;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod live;
mod record;
mod topic;

use std::sync::Arc;

use async_trait::async_trait;
use qis_core::backend::{InjectRaw, OpenHandles};
use qis_core::{
    Capabilities, Checked, ConsumerConfig, ConsumerInfo, DurableConsumer, EncodedPacket,
    LiveSubscription, OutcomeTransport, Receipt, Result, SubjectPattern, TransportInfo,
};
use rdkafka::producer::Producer as _;

pub use config::KafkaConfig;
pub use record::{HEADER_PACKET_ID, HEADER_SUBJECT};

/// The transport's name in errors and logs.
pub(crate) const NAME: &str = "kafka";

/// The Kafka transport. [`KafkaTransport::connect`] returns it behind the
/// checking layer ([`qis_core::Checked`]). Cheap to clone; clones share one
/// producer.
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<Inner>,
}

/// No fire-and-forget publish (every record is stored), no dedup (a
/// re-deposit is another record), no native wildcards (one topic: the
/// transport matches record keys) and no similarity search.
const CAPABILITIES: Capabilities = Capabilities {
    fire_and_forget: false,
    native_wildcards: false,
    dedup: false,
    similarity: false,
    ..Capabilities::ALL
};

struct Inner {
    info: TransportInfo,
    config: KafkaConfig,
    topic: String,
    partitions: i32,
    producer: deposit::Producer,
    /// The consumer handles this transport opened, closed with it.
    consumers: OpenHandles<consumer::KafkaConsumer>,
}

impl std::fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("bootstrap_servers", &self.inner.config.bootstrap_servers)
            .field("prefix", &self.inner.config.prefix)
            .field("topic", &self.inner.topic)
            .field("partitions", &self.inner.partitions)
            .finish()
    }
}

impl KafkaTransport {
    /// Connect to the brokers, create the topic if it is missing, and return
    /// the transport behind the checking layer ([`Checked`]). Fails with
    /// [`ErrorKind::Unavailable`](qis_core::ErrorKind::Unavailable) when no
    /// broker answers within `request_timeout`.
    pub async fn connect(config: KafkaConfig) -> Result<Checked<Self>> {
        config.validate()?;
        let topic = config.topic_name();
        let partitions = topic::ensure_topic(&config, &topic).await?;
        let producer = deposit::producer(&config)?;
        tracing::debug!(topic = %topic, partitions, brokers = %config.bootstrap_servers, "connected");
        Ok(Checked::new(KafkaTransport {
            inner: Arc::new(Inner {
                info: TransportInfo::new(NAME, CAPABILITIES, config.prefix.clone()),
                config,
                topic,
                partitions,
                producer,
                consumers: OpenHandles::default(),
            }),
        }))
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// The topic the prefix is stored in.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The topic's partition count when the transport connected.
    pub fn partitions(&self) -> i32 {
        self.inner.partitions
    }
}

#[async_trait]
impl OutcomeTransport for KafkaTransport {
    fn info(&self) -> &TransportInfo {
        &self.inner.info
    }

    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        let i = &self.inner;
        deposit::deposit_one(&i.producer, &i.topic, packet, i.config.deposit_timeout).await
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        let i = &self.inner;
        deposit::deposit_many(&i.producer, &i.topic, packets, i.config.deposit_timeout).await
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        let handle = consumer::open(&self.inner.config, &self.inner.topic, config).await?;
        self.inner.consumers.insert(Arc::downgrade(&handle));
        Ok(handle)
    }

    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        live::subscribe(&self.inner.config, &self.inner.topic, pattern).await
    }

    /// The consumer groups `{prefix}.{name}` with commits on the topic,
    /// listed and read without joining them; the backlog of each is the high
    /// watermark minus its committed offsets over every partition.
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        consumer::list(&self.inner.config, &self.inner.topic).await
    }

    /// Close every consumer handle this transport opened (each commits what
    /// was acked and leaves its group), then wait for pending deposits.
    /// Fails with the first error: a consumer whose final commit failed (its
    /// acks since the last commit will be delivered again), or deposits
    /// not acknowledged.
    async fn close(&self) -> Result<()> {
        let closed = self
            .inner
            .consumers
            .close_all(|c| async move { c.close_handle().await })
            .await;
        let inner = self.inner.clone();
        let flushed =
            tokio::task::spawn_blocking(move || inner.producer.flush(inner.config.deposit_timeout))
                .await
                .map_err(|e| error::join_error("flushing the producer", e))?
                .map_err(|e| error::kafka_error("could not flush pending deposits", e));
        closed.and(flushed)
    }
}

/// Raw bytes on the topic with `subject` as the key and no headers, the way
/// a foreign producer of garbage would: for tests of malformed-record
/// handling.
#[async_trait]
impl InjectRaw for KafkaTransport {
    async fn inject_raw(&self, subject: &str, body: &[u8]) -> Result<()> {
        deposit::raw(&self.inner.producer, &self.inner.topic, subject, body).await
    }
}
