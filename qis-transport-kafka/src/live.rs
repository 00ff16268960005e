//! Live subscriptions: a consumer outside any group, assigned every
//! partition at its current end, filtering subjects on the client.
//!
//! No group means no join delay and no commits: the subscription is active as
//! soon as the end offsets are read, and packets it does not get while it is
//! not polled are simply not seen (at-most-once, as a live feed).

use std::time::Duration;

use futures::StreamExt;
use qis_core::{Error, ErrorKind, LiveSubscription, Received, Result, Subject, SubjectPattern};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;

use crate::client::{base_config, ms, user_options, TracingContext};
use crate::config::KafkaConfig;
use crate::error::{join_error, kafka_error};
use crate::record::{decode, Decoded, RawRecord};
use crate::topic::{assign_at_end, partition_count};
use crate::NAME;

/// Packets a subscriber may have waiting before the reader thread waits for it.
const CHANNEL: usize = 1024;

const POLL: Duration = Duration::from_millis(50);

type LiveConsumer = BaseConsumer<TracingContext>;

/// Subscribe to `pattern`: positions are fixed at each partition's end before
/// this returns.
pub(crate) async fn subscribe(
    config: &KafkaConfig,
    topic: &str,
    pattern: SubjectPattern,
) -> Result<LiveSubscription> {
    let mut cc = base_config(config);
    // A group id of its own, never joined and never committed to: librdkafka
    // wants one for a consumer, the broker never hears of it.
    let group = format!("{}.live-{:016x}", config.prefix, rand::random::<u64>());
    cc.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", ms(config.fetch_wait_max).to_string());
    user_options(&mut cc, config);
    let consumer: LiveConsumer = cc
        .create_with_context(TracingContext)
        .map_err(|e| kafka_error("could not create a live consumer", e))?;
    let consumer = {
        let topic = topic.to_string();
        let timeout = config.request_timeout;
        tokio::task::spawn_blocking(move || -> Result<(LiveConsumer, Vec<RawRecord>)> {
            let partitions = partition_count(&consumer, &topic, timeout)?;
            let (_, newer) = assign_at_end(&consumer, &topic, partitions, timeout)?;
            Ok((consumer, newer))
        })
        .await
        .map_err(|e| join_error("starting the live subscription", e))??
    };
    let (consumer, newer) = consumer;

    let (tx, rx) = mpsc::channel(CHANNEL);
    let prefix = config.prefix.clone();
    let p = pattern.clone();
    std::thread::Builder::new()
        .name("qis-kafka-live".into())
        .spawn(move || read_loop(consumer, newer, prefix, p, tx))
        .map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                NAME,
                "could not start the live subscription thread",
            )
            .with_source(e)
        })?;
    tracing::debug!(%pattern, "live subscription active");
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(stream.boxed())
}

/// Read until the subscriber drops its stream.
fn read_loop(
    consumer: LiveConsumer,
    newer: Vec<RawRecord>,
    prefix: Subject,
    pattern: SubjectPattern,
    tx: mpsc::Sender<Result<Received>>,
) {
    let forward = |r: &RawRecord| -> bool {
        match decode(&prefix, &pattern, r) {
            Decoded::Packet(received) => tx.blocking_send(Ok(received)).is_ok(),
            Decoded::Other => true,
            Decoded::Malformed { subject, reason } => {
                tracing::warn!(%pattern, %subject, partition = r.partition, offset = r.offset, %reason, "skipping malformed live record");
                true
            }
        }
    };
    for r in &newer {
        if !forward(r) {
            return;
        }
    }
    let mut last_error = String::new();
    while !tx.is_closed() {
        match consumer.poll(POLL) {
            Some(Ok(m)) => {
                let r = RawRecord::from_message(&m);
                drop(m);
                if !forward(&r) {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                let msg = e.to_string();
                if msg != last_error {
                    tracing::warn!(%pattern, error = %msg, "live consumer error (librdkafka retries)");
                    last_error = msg;
                }
            }
            None => {}
        }
    }
    tracing::debug!(%pattern, "live subscription ended");
}
