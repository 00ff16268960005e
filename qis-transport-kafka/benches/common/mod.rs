//! What the `kafka` bench and `fetch_profile` share: the packets, the raw
//! group member's consuming, and the transport's fetch + ack loop.

// Each bench uses some of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use qis_core::{DurableConsumer, EncodedPacket, OutcomePacket, Subject};
use qis_transport_kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::ClientConfig;

/// Records per fetch, and per raw commit.
pub const CHUNK: usize = 1_000;

/// `n` packets over four subjects under `prefix`.
pub fn packets(prefix: &Subject, n: usize) -> Vec<EncodedPacket> {
    let problems = [
        "energy-anomaly",
        "refrigerant-loss",
        "bearing-wear",
        "voltage-sag",
    ];
    (0..n)
        .map(|i| {
            let p = OutcomePacket {
                agent_id: format!("bench-agent-{}", i % 50),
                domain: "hvac".into(),
                problem_class: problems[i % problems.len()].into(),
                conclusion: format!(
                    "Compressor draw {}% above baseline over the last hour.",
                    i % 40
                ),
                confidence: (i % 100) as f64 / 100.0,
                context_vector: vec![0.18, 0.92, 0.03, 0.71],
                timestamp: 1_764_000_000.0 + i as f64,
                source_node: "bench-floor-3".into(),
            };
            EncodedPacket::readable(&p, prefix).expect("valid packet")
        })
        .collect()
}

/// A raw group member, subscribed, with its assignment: the consumer and
/// how many records it read while waiting for the assignment.
pub fn raw_member(config: &KafkaConfig, topic: &str, group: &str) -> (BaseConsumer, usize) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait_max.as_millis().to_string(),
        )
        // librdkafka stops fetching a partition while its local queue is
        // over `queued.min.messages` and looks again only after this
        // (default 1 s): a reader slower than the fetcher (the decoding
        // one, reading a full topic) then got nothing for 0.8-0.9 s in every
        // round. The transport's consumer drains that queue into its own
        // buffer, so it never waits on it.
        .set("fetch.queue.backoff.ms", "10")
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout.as_millis() / 4)
                .max(100)
                .to_string(),
        )
        .create()
        .expect("raw consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let join_deadline = Instant::now() + Duration::from_secs(30);
    let mut first = Vec::new();
    while c.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < join_deadline,
            "raw consumer got no assignment within 30 s"
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            first.push(m.detach());
        }
    }
    (c, first.len())
}

/// Raw: consume until `total` records (`first` of them read already), with
/// a synchronous commit every [`CHUNK`]; with `decode`, each packet is also
/// decoded and checked (`OutcomePacket::decode`), the work any QIS reader
/// does.
pub fn raw_read(c: &BaseConsumer, first: usize, total: usize, decode: bool) {
    let mut n = first;
    let mut since_commit = n;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n < total {
        assert!(
            Instant::now() < deadline,
            "raw consumer read {n} of {total} within 60 s"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if decode {
                    let body = rdkafka::Message::payload(&m).unwrap_or_default();
                    std::hint::black_box(OutcomePacket::decode(body).expect("a packet"));
                }
                n += 1;
                since_commit += 1;
                if since_commit >= CHUNK {
                    c.commit_consumer_state(CommitMode::Sync).expect("commit");
                    since_commit = 0;
                }
            }
            Some(Err(e)) => panic!("raw consumer: {e}"),
            None => {}
        }
    }
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
}

/// The transport: fetch up to [`CHUNK`] and ack each batch, until `total`.
pub async fn qis_consume(c: &Arc<dyn DurableConsumer>, total: usize) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n < total {
        assert!(
            Instant::now() < deadline,
            "qis consumer read {n} of {total} within 60 s"
        );
        let f0 = Instant::now();
        let batch = c
            .fetch(CHUNK, Duration::from_millis(500))
            .await
            .expect("fetch");
        let f1 = Instant::now();
        c.ack(&batch).await.expect("ack");
        n += batch.len();
        if std::env::var("QIS_BENCH_TRACE").is_ok() {
            println!(
                "fetch {} in {:?}, ack {:?}, n {n}",
                batch.len(),
                f1 - f0,
                f1.elapsed()
            );
        }
    }
    started.elapsed()
}
