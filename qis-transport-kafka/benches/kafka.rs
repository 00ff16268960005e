//! Throughput of the Kafka transport beside raw rdkafka doing the same work
//! in the same run, on the broker at `QIS_KAFKA_URL`:
//!
//! - batch deposit: `deposit_encoded_batch` in chunks of 1,000 vs. an
//!   idempotent `FutureProducer` (same settings, records, key and headers)
//!   queueing each chunk and awaiting the acknowledgements in order;
//! - fetch + ack: a durable consumer fetching up to 1,000 and acking each
//!   batch vs. a raw group consumer polling the same records and committing
//!   synchronously every 1,000.
//!
//! - one deposit, awaited: 300 `deposit_encoded` calls one after another,
//!   each awaited, vs. raw rdkafka sending one record and awaiting its
//!   acknowledgement.
//!
//! Raw deposits run twice over, with the transport's `linger` and with
//! `linger.ms=0`; the better of the two is the bar (both are printed).
//!
//! Each side runs twice, alternating, and the better run counts (the machine
//! may be busy with other work).
//!
//! Ratio = qis throughput / raw throughput (1.0 = as fast as raw). The bench
//! also times raw consuming that decodes each packet (`OutcomePacket::decode`:
//! JSON and validation), the work any QIS reader has to do; the packet id
//! travels in a header, so neither side hashes the body.
//!
//! Run: `cargo bench -p qis-transport-kafka` (with `scripts/servers/kafka.sh`).
#![allow(clippy::print_stdout, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use qis_conformance::support::bench;
use qis_core::{Checked, ConsumerConfig, EncodedPacket, OutcomeTransport, Subject, SubjectPattern};
use qis_transport_kafka::{KafkaConfig, KafkaTransport, HEADER_PACKET_ID, HEADER_SUBJECT};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use common::{packets, qis_consume, raw_member, raw_read, CHUNK};

/// Records per side and phase.
const N: usize = 30_000;
/// Deposits one at a time, each awaited.
const SINGLES: usize = 300;

fn raw_producer(config: &KafkaConfig) -> FutureProducer {
    raw_producer_lingering(config, config.linger)
}

fn raw_producer_lingering(config: &KafkaConfig, linger: Duration) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", linger.as_millis().to_string())
        .create()
        .expect("raw producer")
}

/// One record at a time, each acknowledgement awaited before the next.
async fn raw_singles(producer: &FutureProducer, topic: &str, packets: &[EncodedPacket]) {
    for p in packets {
        raw_deposit(producer, topic, std::slice::from_ref(p)).await;
    }
}

async fn qis_singles(t: &Checked<KafkaTransport>, packets: &[EncodedPacket]) {
    for p in packets {
        t.deposit_encoded(p).await.expect("deposit");
    }
}

async fn raw_deposit(producer: &FutureProducer, topic: &str, packets: &[EncodedPacket]) {
    for chunk in packets.chunks(CHUNK) {
        let mut in_flight = Vec::with_capacity(chunk.len());
        for p in chunk {
            let id = p.id().to_hex();
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: HEADER_PACKET_ID,
                    value: Some(id.as_bytes()),
                })
                .insert(Header {
                    key: HEADER_SUBJECT,
                    value: Some(p.subject().as_str().as_bytes()),
                });
            let record = FutureRecord::to(topic)
                .key(p.subject().as_str())
                .payload(p.body().as_ref())
                .headers(headers);
            in_flight.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queue"),
            );
        }
        for f in in_flight {
            f.await
                .expect("producer alive")
                .map_err(|(e, _)| e)
                .expect("stored");
        }
    }
}

async fn qis_deposit(t: &Checked<KafkaTransport>, packets: &[EncodedPacket]) {
    for chunk in packets.chunks(CHUNK) {
        t.deposit_encoded_batch(chunk).await.expect("deposit");
    }
}

/// A raw group member: subscribe, wait for the assignment, then time
/// consuming `total` records with a synchronous commit every `CHUNK`.
fn raw_consume(
    config: &KafkaConfig,
    topic: &str,
    group: &str,
    total: usize,
    decode: bool,
) -> Duration {
    let (c, first) = raw_member(config, topic, group);
    let started = Instant::now();
    raw_read(&c, first, total, decode);
    started.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// A deposit row against raw rdkafka timed twice, with the transport's
/// linger and with none: the better one is the bar, and both are shown.
fn report_lingers(
    what: &str,
    n: usize,
    linger: Duration,
    qis: Duration,
    raw: Duration,
    raw0: Duration,
) {
    report(what, bench::RAW, n, qis, raw.min(raw0));
    println!(
        "  (raw rdkafka with the transport's linger.ms={}: {:.0}/s, with linger.ms=0: {:.0}/s)",
        linger.as_millis(),
        rate(n, raw),
        rate(n, raw0)
    );
}

fn report(what: &str, baseline: &str, n: usize, qis: Duration, raw: Duration) {
    let (q, r) = (rate(n, qis), rate(n, raw));
    let label = if baseline == bench::RAW {
        what.to_string()
    } else {
        format!("  ({baseline})")
    };
    println!(
        "{label:<18} qis {q:>9.0}/s ({:>7.1} ms)   raw rdkafka {r:>9.0}/s ({:>7.1} ms)   ratio {:.2}",
        qis.as_secs_f64() * 1e3,
        raw.as_secs_f64() * 1e3,
        bench::record("kafka", what, baseline, q, r)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let Ok(url) = std::env::var("QIS_KAFKA_URL") else {
        println!(
            "QIS_KAFKA_URL is not set: start scripts/servers/kafka.sh and source its env file"
        );
        return;
    };
    let started = Instant::now();
    let prefix = Subject::new(format!("qtbench{:08x}.iot", rand::random::<u32>())).unwrap();
    let config = KafkaConfig::from_url(&url)
        .expect("url")
        .prefix(prefix.clone());
    let t = KafkaTransport::connect(config.clone())
        .await
        .expect("connect");
    let topic = t.topic().to_string();
    let raw = raw_producer(&config);
    let packets = packets(&prefix, N);
    println!(
        "kafka bench: {N} packets of ~{} bytes per side, topic {topic} ({} partitions)",
        packets[0].body().len(),
        t.partitions()
    );

    // Raw at the transport's linger and with none: the better one is the
    // bar, whichever the transport picks.
    let raw0 = raw_producer_lingering(&config, Duration::ZERO);
    // Warm the producers up (connections, producer ids).
    qis_deposit(&t, &packets[..100]).await;
    raw_deposit(&raw, &topic, &packets[..100]).await;
    raw_deposit(&raw0, &topic, &packets[..100]).await;

    // Alternate, best of two, so neither side pays for the other's leftovers.
    let (mut qd, mut rd, mut rd0) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        let s = Instant::now();
        raw_deposit(&raw, &topic, &packets).await;
        rd = rd.min(s.elapsed());
        let s = Instant::now();
        qis_deposit(&t, &packets).await;
        qd = qd.min(s.elapsed());
        let s = Instant::now();
        raw_deposit(&raw0, &topic, &packets).await;
        rd0 = rd0.min(s.elapsed());
    }
    report_lingers("batch deposit", N, config.linger, qd, rd, rd0);

    // Everything in the topic: 3 × 100 warm-up + 6 × N.
    let total = 300 + 6 * N;
    let pattern = SubjectPattern::new(format!("{prefix}.>")).unwrap();
    let mut qc = Duration::MAX;
    let mut rc = Duration::MAX;
    let mut dc = Duration::MAX;
    for round in 0..2 {
        // A fresh group per round and side; joining is not timed.
        let c = t
            .consumer(ConsumerConfig::new(format!("bench-{round}"), pattern.clone()).unwrap())
            .await
            .expect("consumer");
        qc = qc.min(qis_consume(&c, total).await);
        c.close().await.expect("close");
        let config = config.clone();
        let topic = topic.clone();
        let (c2, t2) = (config.clone(), topic.clone());
        let group = format!("{prefix}.raw-bench-{round}");
        let d =
            tokio::task::spawn_blocking(move || raw_consume(&config, &topic, &group, total, false))
                .await
                .expect("raw consume");
        rc = rc.min(d);
        let group = format!("{prefix}.raw-decode-bench-{round}");
        let d = tokio::task::spawn_blocking(move || raw_consume(&c2, &t2, &group, total, true))
            .await
            .expect("raw consume");
        dc = dc.min(d);
    }
    report("fetch + ack", bench::RAW, total, qc, rc);
    // What any QIS reader pays on top of raw consuming: decoding and
    // checking each packet.
    report("fetch + ack", bench::RAW_DECODE, total, qc, dc);

    // One deposit at a time, each awaited (after the consumers, so their
    // counts above stay exact). The better raw is the bar.
    let singles = &packets[..SINGLES];
    let (mut qs, mut rs, mut rl) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        let s = Instant::now();
        raw_singles(&raw0, &topic, singles).await;
        rs = rs.min(s.elapsed());
        let s = Instant::now();
        qis_singles(&t, singles).await;
        qs = qs.min(s.elapsed());
        let s = Instant::now();
        raw_singles(&raw, &topic, singles).await;
        rl = rl.min(s.elapsed());
    }
    report_lingers("one deposit", SINGLES, config.linger, qs, rl, rs);
    t.close().await.expect("close");
    println!("whole bench: {:.1} s", started.elapsed().as_secs_f64());
}
