//! Partitions moving between the members of a group: with librdkafka's
//! cooperative (incremental) rebalancing, a member keeps the partitions it
//! was not asked to give up, and takes back the ones a departed member held.
//!
//! Needs a broker: `QIS_KAFKA_URL` (see `scripts/servers/kafka.sh`). Without
//! it the tests are ignored with the reason, or fail with `QIS_REQUIRE_LIVE=1`.

#[macro_use]
mod common;

use std::time::Duration;

use common::{deposit_spread, drain};
use qis_conformance::support::fresh_prefix;
use qis_core::{Checked, ConsumerConfig, OutcomeTransport, Subject, SubjectPattern};
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

/// A member keeps reading the partitions it kept when another joins, and
/// reads every partition again once that member left: an incremental assign
/// adds to its partitions, an incremental revoke removes only those revoked.
async fn cooperative_members_keep_and_regain_partitions(url: String) {
    let prefix = fresh_prefix();
    let t = cooperative(&url, &prefix).await;
    let pattern = SubjectPattern::new(format!("{prefix}.>")).unwrap();
    let cfg = ConsumerConfig::new("coop", pattern).unwrap();

    let a = t.consumer(cfg.clone()).await.expect("member A");
    let first = deposit_spread(&t, "rebalance-test", 12, 0..120).await;
    drain(&[&a], &first, Duration::from_secs(20), "A alone").await;

    // B joins: the partitions are split, both members together read all.
    let b = t.consumer(cfg.clone()).await.expect("member B");
    let second = deposit_spread(&t, "rebalance-test", 12, 120..240).await;
    drain(&[&a, &b], &second, Duration::from_secs(30), "A and B").await;

    // B leaves: A alone must read every partition again.
    b.close().await.expect("close B");
    let third = deposit_spread(&t, "rebalance-test", 12, 240..360).await;
    drain(&[&a], &third, Duration::from_secs(30), "A after B left").await;

    a.close().await.expect("close A");
    t.close().await.expect("close transport");
}

fn main() {
    qis_conformance::run_trials(broker_trials!(
        cooperative_members_keep_and_regain_partitions,
    ));
}
