//! What both NATS benches (`nats`, one server; `cluster`, replication)
//! share: the packets, a fresh stream with a QIS handle and a raw
//! async-nats connection on it, and the raw client's side of each
//! operation, written as a user of async-nats without QIS would.

// Each bench uses part of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, message::PublishMessage};
use futures::StreamExt;
use qis_conformance::support::{bench, random_hex};
use qis_core::{Checked, DurableConsumer, EncodedPacket, OutcomePacket, OutcomeTransport, Subject};
use qis_transport_nats::{NatsConfig, NatsTransport};

/// Raw publishes awaiting their acks at once in a batch deposit.
pub const WINDOW: usize = 1_024;
/// Messages asked for by one fetch, on both sides.
pub const FETCH_BATCH: usize = 500;

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// `n` distinct packets from agent `bench-{tag}` on the readable subject
/// under `prefix`, or with `side`, on `{prefix}.{side}.hvac`.
pub fn packets_on(prefix: &Subject, side: Option<&str>, tag: &str, n: usize) -> Vec<EncodedPacket> {
    let subject = side.map(|s| {
        prefix
            .child(s)
            .and_then(|s| s.child("hvac"))
            .expect("a valid subject")
    });
    (0..n)
        .map(|i| {
            let p = bench::reading(&format!("bench-{tag}"), i);
            match &subject {
                Some(s) => EncodedPacket::new(&p, s.clone()),
                None => EncodedPacket::readable(&p, prefix),
            }
            .expect("a valid packet")
        })
        .collect()
}

/// A fresh prefix whose stream has `replicas` replicas (created by the QIS
/// transport), a QIS handle and a raw connection on it.
pub struct Setup {
    pub replicas: usize,
    pub prefix: Subject,
    pub qis: Checked<NatsTransport>,
    pub raw: jetstream::Context,
    pub stream: String,
}

pub async fn setup(url: &str, replicas: usize) -> BenchResult<Setup> {
    let prefix = Subject::new(format!("qb{}.iot", random_hex(5)))?;
    let config = NatsConfig::from_url(url)?
        .prefix(prefix.clone())
        .replicas(replicas);
    let client = async_nats::connect(&config.servers).await?;
    let qis = NatsTransport::connect(config).await?;
    let raw = jetstream::ContextBuilder::new()
        .max_ack_inflight(4096)
        .backpressure_on_inflight(true)
        .build(client);
    Ok(Setup {
        replicas,
        stream: qis.stream_name().to_string(),
        prefix,
        qis,
        raw,
    })
}

/// Delete the stream and close the QIS handle.
pub async fn teardown(s: Setup) -> BenchResult<()> {
    s.raw.delete_stream(&s.stream).await?;
    s.qis.close().await?;
    Ok(())
}

/// The raw publish of `p`, de-duplicated by its packet id as QIS does.
pub fn raw_message(p: &EncodedPacket) -> PublishMessage {
    PublishMessage::build()
        .payload(p.body().clone())
        .message_id(p.id().to_hex())
}

/// Raw JetStream publishes of `ps`, up to [`WINDOW`] acks in flight.
pub async fn raw_batch(js: &jetstream::Context, ps: &[EncodedPacket]) -> BenchResult<()> {
    let mut in_flight: VecDeque<PublishAckFuture> = VecDeque::with_capacity(WINDOW);
    for p in ps {
        if in_flight.len() >= WINDOW {
            in_flight.pop_front().expect("non-empty").await?;
        }
        in_flight.push_back(
            js.send_publish(p.subject().as_str().to_string(), raw_message(p))
                .await?,
        );
    }
    while let Some(ack) = in_flight.pop_front() {
        ack.await?;
    }
    Ok(())
}

/// A raw durable pull consumer like the one QIS makes.
pub async fn raw_consumer(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    filter: &str,
) -> BenchResult<consumer::PullConsumer> {
    Ok(js
        .get_stream(stream)
        .await?
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.into()),
            filter_subject: filter.to_string(),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await?)
}

/// One raw fetch of up to [`FETCH_BATCH`], acking each message as it
/// arrives; with `decode`, also parse each body as JSON into an
/// `OutcomePacket` (what any reader of the packets has to do). Returns how
/// many arrived.
pub async fn raw_fetch_ack(c: &consumer::PullConsumer, decode: bool) -> BenchResult<usize> {
    let mut batch = c
        .fetch()
        .max_messages(FETCH_BATCH)
        .expires(Duration::from_secs(1))
        .messages()
        .await?;
    let mut got = 0;
    while let Some(m) = batch.next().await {
        let m = m?;
        if decode {
            let p: OutcomePacket = serde_json::from_slice(&m.payload)?;
            std::hint::black_box(p);
        }
        m.ack().await?;
        got += 1;
    }
    Ok(got)
}

/// One QIS fetch of up to [`FETCH_BATCH`], all acked; how many arrived.
pub async fn qis_fetch_ack(c: &dyn DurableConsumer) -> BenchResult<usize> {
    let batch = c.fetch(FETCH_BATCH, Duration::from_secs(1)).await?;
    c.ack(&batch).await?;
    Ok(batch.len())
}
