//! Kafka-specific behaviour beyond the shared conformance suite.
//!
//! Needs a broker: `QIS_KAFKA_URL` (see `scripts/servers/kafka.sh`). Without
//! it the tests that need one are ignored with the reason, or fail with
//! `QIS_REQUIRE_LIVE=1`.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::transport;
use qis_conformance::libtest_mimic::Trial;
use qis_conformance::support::{block_on, eventually, fresh_prefix, pkt};
use qis_conformance::CASE_LIMIT;
use qis_core::backend::InjectRaw;
use qis_core::{
    ConsumerConfig, ErrorKind, OutcomePacket, OutcomeTransport, OutcomeTransportExt, Position,
    StartPosition, Subject, SubjectPattern,
};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};

fn packet(seq: usize) -> OutcomePacket {
    pkt("kafka-test", "hvac", "energy-anomaly", seq)
}

fn all(prefix: &Subject) -> SubjectPattern {
    SubjectPattern::new(format!("{prefix}.>")).unwrap()
}

async fn unreachable_broker_is_unavailable_quickly() {
    // Port 1 on loopback: nothing listens there.
    let mut config = KafkaConfig::from_url("kafka://127.0.0.1:1").unwrap();
    config.request_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = KafkaTransport::connect(config).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "unexpected error: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.transport(), "kafka");
}

async fn topic_follows_prefix_and_receipts_carry_offsets(url: String) {
    let prefix = fresh_prefix();
    let t = transport(&url, &prefix).await;
    assert_eq!(t.topic(), prefix.as_str());
    assert_eq!(t.partitions(), 3);
    let r1 = t.deposit(&packet(1)).await.unwrap();
    let r2 = t.deposit(&packet(2)).await.unwrap();
    match (r1.position, r2.position) {
        (
            Position::Offset {
                partition: p1,
                offset: o1,
            },
            Position::Offset {
                partition: p2,
                offset: o2,
            },
        ) => {
            assert_eq!(p1, p2, "one subject, one partition");
            assert!(o2 > o1, "offsets grow: {o1} then {o2}");
        }
        other => panic!("not offsets: {other:?}"),
    }
    assert!(!r1.duplicate);
    // Kafka does not recognise a re-deposit: it is stored again.
    let again = t.deposit(&packet(1)).await.unwrap();
    assert!(!again.duplicate);
    assert_ne!(again.position, r1.position);
    t.close().await.unwrap();
    let err = t.deposit(&packet(3)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

async fn fire_and_forget_is_unsupported(url: String) {
    let t = transport(&url, &fresh_prefix()).await;
    assert!(!t.capabilities().fire_and_forget);
    let err = t.publish(&packet(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

/// Whether the broker keeps offset-commit metadata (Apache Kafka does; some
/// Kafka-compatible brokers drop it, and then a changed pattern goes unseen).
fn broker_keeps_commit_metadata(config: &KafkaConfig, topic: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", format!("{topic}.metadata-probe"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut e = tpl.add_partition(topic, 0);
    e.set_offset(Offset::Offset(0)).unwrap();
    e.set_metadata("probe");
    c.commit(&tpl, CommitMode::Sync).unwrap();
    let mut q = TopicPartitionList::new();
    q.add_partition(topic, 0);
    let got = c.committed_offsets(q, Duration::from_secs(5)).unwrap();
    let kept = got
        .elements()
        .first()
        .is_some_and(|e| e.metadata() == "probe");
    kept
}

async fn reopening_with_another_pattern_is_a_conflict(url: String) {
    let prefix = fresh_prefix();
    let t = transport(&url, &prefix).await;
    let config = t.config().clone();
    let topic = t.topic().to_string();
    if !tokio::task::spawn_blocking(move || broker_keeps_commit_metadata(&config, &topic))
        .await
        .unwrap()
    {
        eprintln!("this broker drops offset-commit metadata: a changed pattern cannot be detected; skipping");
        return;
    }
    let c = t
        .consumer(ConsumerConfig::new("same", all(&prefix)).unwrap())
        .await
        .unwrap();
    c.close().await.unwrap();
    let other = SubjectPattern::new(format!("{prefix}.hvac.*")).unwrap();
    let err = t
        .consumer(ConsumerConfig::new("same", other).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // The same pattern again is fine.
    let c = t
        .consumer(ConsumerConfig::new("same", all(&prefix)).unwrap())
        .await
        .unwrap();
    c.close().await.unwrap();
}

/// The topic exists already: its retention settings must be the
/// configuration's, or connecting is a conflict naming each difference.
async fn an_existing_topic_with_other_retention_is_a_conflict(url: String) {
    let prefix = fresh_prefix();
    let config = |age_s: u64, bytes: u64| {
        KafkaConfig::from_url(&url)
            .unwrap()
            .prefix(prefix.clone())
            .max_age(Duration::from_secs(age_s))
            .max_bytes(bytes)
    };
    let mib = 1024 * 1024;
    let t = KafkaTransport::connect(config(3600, 30 * mib))
        .await
        .expect("create the topic");
    t.close().await.unwrap();
    // The same settings again: the topic is used as it is.
    let t = KafkaTransport::connect(config(3600, 30 * mib))
        .await
        .expect("the topic has the settings it was created with");
    t.close().await.unwrap();

    // Other settings: refused, naming each difference and only those.
    for ((max_age, max_bytes), differences, not) in [
        (
            (7200, 30 * mib),
            [
                "retention.ms 3600000 (want 7200000)",
                "segment.ms 360000 (want 720000)",
            ],
            Some("retention.bytes "),
        ),
        (
            (3600, 60 * mib),
            [
                "retention.bytes 10485760 (want 20971520)",
                "segment.bytes 1048576 (want 2097152)",
            ],
            None,
        ),
    ] {
        let err = KafkaTransport::connect(config(max_age, max_bytes))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        for difference in differences {
            assert!(err.message().contains(difference), "{err}");
        }
        if let Some(not) = not {
            assert!(!err.message().contains(not), "{err}");
        }
    }
}

async fn start_new_is_fixed_when_the_consumer_is_created(url: String) {
    let prefix = fresh_prefix();
    let t = transport(&url, &prefix).await;
    t.deposit_batch(&[packet(0), packet(1)]).await.unwrap();
    let cfg = ConsumerConfig::new("late", all(&prefix))
        .unwrap()
        .start(StartPosition::New);
    let c = t.consumer(cfg.clone()).await.unwrap();
    c.close().await.unwrap();
    // Deposited while the consumer is away: it must still get it.
    let r = t.deposit(&packet(2)).await.unwrap();
    let c = t.consumer(cfg).await.unwrap();
    let got = c.fetch(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.iter().map(|d| d.id()).collect::<Vec<_>>(), vec![r.id]);
    c.ack(&got).await.unwrap();
    c.close().await.unwrap();
}

async fn deliveries_are_acked_on_their_own_handle_and_closed_handles_refuse(url: String) {
    let prefix = fresh_prefix();
    let t = transport(&url, &prefix).await;
    t.deposit(&packet(0)).await.unwrap();
    let a = t
        .consumer(ConsumerConfig::new("one", all(&prefix)).unwrap())
        .await
        .unwrap();
    let b = t
        .consumer(ConsumerConfig::new("two", all(&prefix)).unwrap())
        .await
        .unwrap();
    let got = a.fetch(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    let err = b.ack(&got).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = b.nak(&got[0], Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Another handle (group member) of the same consumer did not fetch it either.
    let a2 = t
        .consumer(ConsumerConfig::new("one", all(&prefix)).unwrap())
        .await
        .unwrap();
    let err = a2.ack(&got).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = a2.nak(&got[0], Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    a2.close().await.unwrap();
    a.ack(&got).await.unwrap();
    a.close().await.unwrap();
    assert_eq!(
        a.fetch(1, Duration::ZERO).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    b.close().await.unwrap();
}

async fn foreign_records_are_skipped_and_counted(url: String) {
    let prefix = fresh_prefix();
    let t = transport(&url, &prefix).await;
    let c = t
        .consumer(ConsumerConfig::new("strict", all(&prefix)).unwrap())
        .await
        .unwrap();
    let subject = format!("{prefix}.hvac.energy-anomaly");
    // A key outside the prefix, a key that is no subject, a huge body.
    t.inject_raw("elsewhere.hvac.x", b"{}").await.unwrap();
    t.inject_raw("Not A Subject", b"{}").await.unwrap();
    t.inject_raw(&subject, &vec![b'x'; 100_000]).await.unwrap();
    let r = t.deposit(&packet(1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.is_empty() || c.malformed_skipped() < 3 {
        assert!(
            Instant::now() < deadline,
            "got {:?}, skipped {}",
            got.len(),
            c.malformed_skipped()
        );
        got.extend(c.fetch(10, Duration::from_millis(500)).await.unwrap());
    }
    assert_eq!(got.iter().map(|d| d.id()).collect::<Vec<_>>(), vec![r.id]);
    c.ack(&got).await.unwrap();
    c.close().await.unwrap();
}

/// Wait until `state` returns `want`; panic with what it last returned.
async fn until_eq<T, F, Fut>(what: &str, want: T, state: F)
where
    T: PartialEq + std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let within = Duration::from_secs(10);
    if let Err(err) = eventually(what, within, || async { state().await == want }).await {
        panic!("{err}: still {:?}, want {want:?}", state().await);
    }
}

async fn backlog_is_the_high_watermark_minus_the_position(url: String) {
    let prefix = fresh_prefix();
    let t = transport(&url, &prefix).await;
    // One subject: one partition, in order.
    let packets: Vec<_> = (0..6).map(packet).collect();
    t.deposit_batch(&packets).await.unwrap();
    let c = t
        .consumer(ConsumerConfig::new("c", all(&prefix)).unwrap())
        .await
        .unwrap();
    until_eq("a new consumer's backlog", (6, 0), || async {
        let b = c.backlog().await.unwrap();
        (b.waiting, b.unacked)
    })
    .await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "fetched {} of 2", got.len());
        got.extend(
            c.fetch(2 - got.len(), Duration::from_secs(5))
                .await
                .unwrap(),
        );
    }
    let b = c.backlog().await.unwrap();
    assert_eq!((b.waiting, b.unacked), (4, 2), "after a fetch of 2");
    c.ack(&got[..1]).await.unwrap();
    let b = c.backlog().await.unwrap();
    assert_eq!((b.waiting, b.unacked), (4, 1), "after an ack of 1");
    // From outside the group: the committed offset is the first unacked
    // packet, so the one in flight counts as waiting.
    until_eq(
        "the group's backlog from outside",
        (vec!["c".to_string()], 5),
        || async {
            let listed = t.consumers().await.unwrap();
            let names = listed.iter().map(|c| c.name.clone()).collect();
            (names, listed.iter().map(|c| c.backlog.waiting).sum::<u64>())
        },
    )
    .await;
    // The pattern is the commits' metadata, which some Kafka-protocol
    // brokers (tansu) do not keep.
    let listed = t.consumers().await.unwrap();
    let want = all(&prefix);
    assert!(
        listed[0]
            .pattern
            .as_deref()
            .is_none_or(|p| p == want.as_str()),
        "{listed:?}"
    );
    c.close().await.unwrap();
    t.close().await.unwrap();
}

fn main() {
    let mut trials = broker_trials!(
        topic_follows_prefix_and_receipts_carry_offsets,
        fire_and_forget_is_unsupported,
        reopening_with_another_pattern_is_a_conflict,
        an_existing_topic_with_other_retention_is_a_conflict,
        start_new_is_fixed_when_the_consumer_is_created,
        deliveries_are_acked_on_their_own_handle_and_closed_handles_refuse,
        foreign_records_are_skipped_and_counted,
        backlog_is_the_high_watermark_minus_the_position,
    );
    // Needs no broker.
    trials.push(Trial::test(
        "unreachable_broker_is_unavailable_quickly",
        || {
            let test = async {
                unreachable_broker_is_unavailable_quickly().await;
                Ok(())
            };
            Ok(block_on(CASE_LIMIT, test)?)
        },
    ));
    qis_conformance::run_trials(trials);
}
