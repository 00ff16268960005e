//! Durable pull consumers: JetStream durable consumers with explicit ack,
//! fetched in batches.
//!
//! Opening one ([`NatsConsumer::open`], here) creates the JetStream consumer
//! or resumes the existing one by name, refusing one that exists with
//! another pattern or kind; fetching is in `consumer/fetch.rs`, the ack
//! protocol in `consumer/ack.rs`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::{
    self, pull, AckPolicy, DeliverPolicy, FromConsumer, PullConsumer,
};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{ConsumerCreateStrictErrorKind, ConsumerUpdateErrorKind};
use async_nats::jetstream::ErrorCode;
use async_trait::async_trait;
use futures::TryStreamExt;
use qis_core::{
    Backlog, ConsumerConfig, ConsumerInfo, Delivery, DurableConsumer, Error, ErrorKind, Result,
    StartPosition, SubjectPattern,
};

use crate::error::{self, err};
use crate::filter::filter_for;
use crate::retry::{retry_limit, Races, Retries};
use crate::NatsTransport;

mod ack;
mod fetch;

/// Consumer metadata key holding the QIS pattern the consumer was created
/// with, so re-opening it with another pattern is refused even when both
/// narrow to the same server filter.
const PATTERN_KEY: &str = "qis_pattern";

/// A durable JetStream pull consumer, implementing [`DurableConsumer`].
///
/// Opened with [`qis_core::OutcomeTransport::consumer`]. Its state (what was
/// acked) lives on the server under its name: any handle opened by that name,
/// from any connection, resumes it, and several handles share its work.
pub struct NatsConsumer {
    transport: NatsTransport,
    name: String,
    pattern: SubjectPattern,
    consumer: PullConsumer,
    malformed: AtomicU64,
    /// The reply subject of the last ack or term sent and not yet confirmed:
    /// acking it again with a reply (idempotent) confirms everything before.
    unconfirmed: Mutex<Option<(async_nats::Subject, &'static [u8])>>,
}

impl fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConsumer")
            .field("name", &self.name)
            .field("pattern", &self.pattern.as_str())
            .field("stream", &self.transport.inner.stream)
            .field("malformed_skipped", &self.malformed.load(Ordering::Relaxed))
            .finish()
    }
}

fn conflict(name: &str, msg: impl fmt::Display) -> Error {
    err(
        ErrorKind::Conflict,
        format!("consumer {name} {msg}: use another consumer name"),
    )
}

/// Check that an existing consumer is the one asked for, and as replicated
/// as its stream (`replicas`).
fn check_existing(
    info: &consumer::Info,
    config: &ConsumerConfig,
    filter: &str,
    replicas: usize,
) -> Result<()> {
    let c = &info.config;
    // 0: it follows its stream's count.
    if c.num_replicas != 0 && c.num_replicas < replicas {
        return Err(conflict(
            &config.name,
            format_args!(
                "exists with {} replicas, fewer than its stream's {replicas}: it would not survive the loss of its server",
                c.num_replicas
            ),
        ));
    }
    if c.deliver_subject.is_some() {
        return Err(conflict(
            &config.name,
            "exists as a push consumer, not a pull consumer",
        ));
    }
    if c.ack_policy != AckPolicy::Explicit {
        return Err(conflict(
            &config.name,
            format_args!("exists with ack policy {:?}, not explicit", c.ack_policy),
        ));
    }
    match c.metadata.get(PATTERN_KEY) {
        Some(p) if p != config.pattern.as_str() => Err(conflict(
            &config.name,
            format_args!("exists with pattern {p}, not {}", config.pattern),
        )),
        Some(_) => Ok(()),
        None => {
            let filters: Vec<&str> = if c.filter_subjects.is_empty() {
                vec![c.filter_subject.as_str()]
            } else {
                c.filter_subjects.iter().map(String::as_str).collect()
            };
            if filters == [filter] {
                Ok(())
            } else {
                Err(conflict(
                    &config.name,
                    format_args!("exists with filter {filters:?}, not {filter}"),
                ))
            }
        }
    }
}

fn deliver_policy(start: StartPosition) -> Result<DeliverPolicy> {
    Ok(match start {
        StartPosition::All => DeliverPolicy::All,
        StartPosition::New => DeliverPolicy::New,
        StartPosition::Since(t) => {
            let nanos = match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            };
            let start_time = async_nats::datetime::from_nanos(nanos.max(0)).map_err(|e| {
                err(
                    ErrorKind::InvalidInput,
                    "the start time cannot be represented: give a time after 1970",
                )
                .with_source(e)
            })?;
            DeliverPolicy::ByStartTime { start_time }
        }
    })
}

impl NatsConsumer {
    /// Create the durable consumer, or resume the existing one by name.
    pub(crate) async fn open(transport: &NatsTransport, config: ConsumerConfig) -> Result<Self> {
        let inner = &transport.inner;
        let filter = filter_for(&inner.config.prefix, &config.pattern)?;
        let stream = inner
            .js
            .get_stream_no_info(&inner.stream)
            .await
            .map_err(|e| error::get_stream(&inner.config.server_list(), &inner.stream, e))?;
        // A cluster electing leaders (or creating this consumer's own Raft
        // group) may answer late or not at all: retry those, as deposits do.
        let mut retries = Retries::new(retry_limit(&inner.config), false);
        let mut races = Races::default();
        let opening = Opening {
            transport,
            stream: &stream,
            config: &config,
            filter: &filter,
        };
        loop {
            match opening.once().await {
                Ok(Some(consumer)) => {
                    return Ok(NatsConsumer {
                        transport: transport.clone(),
                        name: config.name,
                        pattern: config.pattern,
                        consumer,
                        malformed: AtomicU64::new(0),
                        unconfirmed: Mutex::new(None),
                    })
                }
                // Another handle changed the consumer meanwhile: look again.
                Ok(None) => races.lost("consumer", &config.name, "opened")?,
                Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable) => {
                    let Some(pause) = retries.after_failure() else {
                        return Err(e);
                    };
                    tracing::debug!(consumer = %config.name, error = %e, "opening the consumer again");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Opening one durable consumer: on which stream, as configured, with
/// which server filter.
struct Opening<'a> {
    transport: &'a NatsTransport,
    stream: &'a async_nats::jetstream::stream::Stream<()>,
    config: &'a ConsumerConfig,
    filter: &'a str,
}

impl Opening<'_> {
    /// One attempt: resume the consumer if it exists, else create it.
    /// `None`: it changed meanwhile.
    async fn once(&self) -> Result<Option<PullConsumer>> {
        match self.stream.consumer_info(&self.config.name).await {
            Ok(info) => self.resume(info).await,
            Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => self.create().await,
            Err(e) => Err(lookup_error(self.transport, &self.config.name, e)),
        }
    }

    /// Resume an existing consumer: check it is the one asked for, and
    /// change its ack wait if another is asked for.
    async fn resume(&self, info: consumer::Info) -> Result<Option<PullConsumer>> {
        check_existing(
            &info,
            self.config,
            self.filter,
            self.transport.inner.config.replicas,
        )?;
        let as_pull = |info: &consumer::Info| {
            pull::Config::try_from_consumer_config(info.config.clone()).map_err(|e| {
                conflict(
                    &self.config.name,
                    format_args!("cannot be read as a pull consumer: {e}"),
                )
            })
        };
        if info.config.ack_wait == self.config.ack_wait {
            let c = as_pull(&info)?;
            return Ok(Some(consumer::Consumer::new(
                c,
                info,
                self.transport.inner.js.clone(),
            )));
        }
        let mut updated = as_pull(&info)?;
        updated.ack_wait = self.config.ack_wait;
        match self.stream.update_consumer(updated).await {
            Ok(c) => Ok(Some(c)),
            // Deleted meanwhile: look again.
            Err(e) if matches!(e.kind(), ConsumerUpdateErrorKind::DoesNotExist) => Ok(None),
            Err(e) => {
                let kind = match e.kind() {
                    ConsumerUpdateErrorKind::TimedOut => ErrorKind::Timeout,
                    ConsumerUpdateErrorKind::Request => ErrorKind::Unavailable,
                    _ => ErrorKind::Backend,
                };
                Err(err(
                    kind,
                    format!(
                        "changing the ack wait of consumer {} failed",
                        self.config.name
                    ),
                )
                .with_source(e))
            }
        }
    }

    /// Create the consumer; a race with another creator means: look again.
    async fn create(&self) -> Result<Option<PullConsumer>> {
        let create = pull::Config {
            durable_name: Some(self.config.name.clone()),
            description: Some(format!("QIS durable consumer on {}", self.config.pattern)),
            deliver_policy: deliver_policy(self.config.start)?,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            filter_subject: self.filter.to_string(),
            max_ack_pending: self.transport.inner.config.max_ack_pending,
            metadata: HashMap::from([(
                PATTERN_KEY.to_string(),
                self.config.pattern.as_str().to_string(),
            )]),
            // No count of its own: a durable consumer has as many replicas as
            // its stream, so with the stream it survives the loss of a server.
            num_replicas: 0,
            ..Default::default()
        };
        match self.stream.create_consumer_strict(create).await {
            Ok(c) => {
                tracing::debug!(consumer = %self.config.name, filter = self.filter, "created durable consumer");
                Ok(Some(c))
            }
            // Created by someone else meanwhile (or with other settings): look again.
            Err(e) if matches!(e.kind(), ConsumerCreateStrictErrorKind::AlreadyExists) => Ok(None),
            Err(e) => {
                let kind = match e.kind() {
                    ConsumerCreateStrictErrorKind::TimedOut => ErrorKind::Timeout,
                    ConsumerCreateStrictErrorKind::Request => ErrorKind::Unavailable,
                    ConsumerCreateStrictErrorKind::JetStream(je)
                        if je.error_code() == ErrorCode::CONSUMER_NAME_EXIST =>
                    {
                        return Ok(None)
                    }
                    _ => ErrorKind::Backend,
                };
                Err(err(
                    kind,
                    format!("creating consumer {} failed", self.config.name),
                )
                .with_source(e))
            }
        }
    }
}

/// What a consumer still has to do, as the server counts it: messages
/// matching its filter not yet delivered (`num_pending`) and delivered
/// without an ack (`num_ack_pending`).
fn backlog_of(info: &consumer::Info) -> Backlog {
    Backlog {
        waiting: info.num_pending,
        unacked: info.num_ack_pending as u64,
    }
}

/// Every consumer of the transport's stream, with its backlog, by name.
pub(crate) async fn list(transport: &NatsTransport) -> Result<Vec<ConsumerInfo>> {
    let inner = &transport.inner;
    let stream = inner
        .js
        .get_stream_no_info(&inner.stream)
        .await
        .map_err(|e| error::get_stream(&inner.config.server_list(), &inner.stream, e))?;
    let infos: Vec<consumer::Info> = stream.consumers().try_collect().await.map_err(|e| {
        err(
            ErrorKind::Unavailable,
            format!("listing the consumers of stream {} failed", inner.stream),
        )
        .with_source(e)
    })?;
    let mut out: Vec<ConsumerInfo> = infos
        .iter()
        .map(|info| {
            let c = &info.config;
            let pattern = c.metadata.get(PATTERN_KEY).cloned().or_else(|| {
                if c.filter_subjects.is_empty() {
                    Some(c.filter_subject.clone()).filter(|f| !f.is_empty())
                } else {
                    Some(c.filter_subjects.join(","))
                }
            });
            ConsumerInfo {
                name: info.name.clone(),
                pattern,
                backlog: backlog_of(info),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn lookup_error(
    transport: &NatsTransport,
    name: &str,
    e: async_nats::jetstream::context::ConsumerInfoError,
) -> Error {
    let kind = match e.kind() {
        ConsumerInfoErrorKind::StreamNotFound => {
            return err(
                ErrorKind::NotFound,
                format!(
                    "stream {} is gone: connect again to recreate it",
                    transport.inner.stream
                ),
            )
            .with_source(e)
        }
        ConsumerInfoErrorKind::TimedOut => ErrorKind::Timeout,
        ConsumerInfoErrorKind::NoResponders | ConsumerInfoErrorKind::Request => {
            ErrorKind::Unavailable
        }
        ConsumerInfoErrorKind::InvalidName => ErrorKind::InvalidInput,
        _ => ErrorKind::Backend,
    };
    err(kind, format!("looking up consumer {name} failed")).with_source(e)
}

#[async_trait]
impl DurableConsumer for NatsConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.pull(max, wait).await
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.ack_all(deliveries).await
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.nak_one(delivery, delay).await
    }

    fn malformed_skipped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// The server's own figures (consumer info): `num_pending` waiting,
    /// `num_ack_pending` unacked. Exact: the server filter is the pattern.
    async fn backlog(&self) -> Result<Backlog> {
        let info = self
            .consumer
            .get_info()
            .await
            .map_err(|e| lookup_error(&self.transport, &self.name, e))?;
        Ok(backlog_of(&info))
    }

    async fn close(&self) -> Result<()> {
        // Closing the transport drained the connection: nothing is left to
        // confirm, and nothing could be sent.
        if self.transport.is_closed() {
            return Ok(());
        }
        self.confirm().await?;
        self.transport
            .inner
            .client
            .flush()
            .await
            .map_err(|e| error::send(&format!("flushing acks of consumer {}", self.name), e))
    }
}
