//! Partitions moving between the members of a group: with librdkafka's
//! cooperative (incremental) rebalancing, a member keeps the partitions it
//! was not asked to give up, and takes back the ones a departed member held.
//!
//! Needs a broker: `QIS_KAFKA_URL` (see `scripts/servers/kafka.sh`). Without
//! it the tests are ignored with the reason, or fail with `QIS_REQUIRE_LIVE=1`.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::broker;
use qis_conformance::support::{fresh_prefix, pkt};
use qis_core::{
    Checked, ConsumerConfig, DurableConsumer, OutcomeTransport, OutcomeTransportExt, PacketId,
    Subject, SubjectPattern,
};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};

/// A transport whose consumers use `partition.assignment.strategy=cooperative-sticky`.
async fn cooperative(url: &str, prefix: &Subject) -> Checked<KafkaTransport> {
    let config = KafkaConfig::from_url(url)
        .unwrap()
        .prefix(prefix.clone())
        .partitions(6)
        .librdkafka("partition.assignment.strategy", "cooperative-sticky");
    KafkaTransport::connect(config).await.expect("connect")
}

/// Deposit `n` packets over 12 subjects (so they spread over the partitions).
async fn deposit(t: &Checked<KafkaTransport>, from: usize, n: usize) -> HashSet<PacketId> {
    let problems = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
    let packets: Vec<_> = (from..from + n)
        .map(|i| pkt("rebalance-test", "fleet", problems[i % problems.len()], i))
        .collect();
    let receipts = t.deposit_batch(&packets).await.expect("deposit");
    receipts.into_iter().map(|r| r.id).collect()
}

/// Fetch and ack on every member until all of `want` arrived, or fail after `within`.
async fn drain(
    what: &str,
    members: &[&Arc<dyn DurableConsumer>],
    want: &HashSet<PacketId>,
    within: Duration,
) -> HashSet<PacketId> {
    let deadline = Instant::now() + within;
    let mut got = HashSet::new();
    while !want.is_subset(&got) {
        assert!(
            Instant::now() < deadline,
            "{what}: the group received {} of the {} packets within {within:?}: a member stopped reading partitions it was assigned",
            want.intersection(&got).count(),
            want.len()
        );
        for c in members {
            let batch = c
                .fetch(200, Duration::from_millis(200))
                .await
                .expect("fetch");
            c.ack(&batch).await.expect("ack");
            got.extend(batch.iter().map(|d| d.id()));
        }
    }
    got
}

/// A member keeps reading the partitions it kept when another joins, and
/// reads every partition again once that member left: an incremental assign
/// adds to its partitions, an incremental revoke removes only those revoked.
async fn cooperative_members_keep_and_regain_partitions(url: String) {
    let prefix = fresh_prefix();
    let t = cooperative(&url, &prefix).await;
    let pattern = SubjectPattern::new(format!("{prefix}.>")).unwrap();
    let cfg = ConsumerConfig::new("coop", pattern).unwrap();

    let a = t.consumer(cfg.clone()).await.expect("member A");
    let first = deposit(&t, 0, 120).await;
    drain("A alone", &[&a], &first, Duration::from_secs(20)).await;

    // B joins: the partitions are split, both members together read all.
    let b = t.consumer(cfg.clone()).await.expect("member B");
    let second = deposit(&t, 120, 120).await;
    drain("A and B", &[&a, &b], &second, Duration::from_secs(30)).await;

    // B leaves: A alone must read every partition again.
    b.close().await.expect("close B");
    let third = deposit(&t, 240, 120).await;
    drain("A after B left", &[&a], &third, Duration::from_secs(30)).await;

    a.close().await.expect("close A");
    t.close().await.expect("close transport");
}

fn main() {
    qis_conformance::run_trials(broker_trials!(
        &broker();
        cooperative_members_keep_and_regain_partitions,
    ));
}
