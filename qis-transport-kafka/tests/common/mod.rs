//! What this crate's tests share beyond `qis_conformance::support`: where
//! the broker is, a transport on a prefix, and a trial that needs the broker.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qis_conformance::libtest_mimic::Trial;
use qis_conformance::support::{block_on, env_url, pkt, trial};
use qis_conformance::CASE_LIMIT;
use qis_core::{Checked, DurableConsumer, OutcomeTransportExt, PacketId, Subject};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};

/// The broker's URL from `QIS_KAFKA_URL`, or why there is none.
pub fn broker() -> Result<String, String> {
    env_url(
        "QIS_KAFKA_URL",
        "run scripts/servers/kafka.sh start DIR and source DIR/kafka.env",
    )
}

/// A trial running `test` (which panics on failure) with the broker's URL,
/// bounded by [`CASE_LIMIT`]; without a broker it is ignored with the reason
/// (a failure with `QIS_REQUIRE_LIVE=1`).
pub fn broker_trial<F, Fut>(name: &str, broker: &Result<String, String>, test: F) -> Trial
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    trial(name, broker, |url| {
        block_on(CASE_LIMIT, async {
            test(url).await;
            Ok(())
        })
    })
}

/// `broker_trials!(test_a, test_b)`: a [`broker_trial`] for each test on
/// the [`broker`], named after it.
macro_rules! broker_trials {
    ($($test:ident),+ $(,)?) => {{
        let broker = $crate::common::broker();
        vec![$($crate::common::broker_trial(stringify!($test), &broker, $test)),+]
    }};
}

/// A transport on `prefix` at the broker `url`.
pub async fn transport(url: &str, prefix: &Subject) -> Checked<KafkaTransport> {
    KafkaTransport::connect(KafkaConfig::from_url(url).unwrap().prefix(prefix.clone()))
        .await
        .expect("connect")
}

/// Deposit packets `seqs` of `agent` in one batch, spread over `subjects`
/// problem classes (`a`, `b`, …) on `fleet` so they land on several
/// partitions; their ids.
pub async fn deposit_spread(
    t: &Checked<KafkaTransport>,
    agent: &str,
    subjects: usize,
    seqs: std::ops::Range<usize>,
) -> HashSet<PacketId> {
    let problems = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
    let packets: Vec<_> = seqs
        .map(|i| pkt(agent, "fleet", problems[i % subjects], i))
        .collect();
    let receipts = t.deposit_batch(&packets).await.expect("deposit");
    receipts.into_iter().map(|r| r.id).collect()
}

/// Fetch (up to 100 a fetch, waiting up to 500 ms) and ack on each of
/// `members` in turn until every id in `want` arrived: the ids received.
/// Panics after `within`, naming `what` and how many of `want` arrived: a
/// member stopped reading partitions it was assigned, or the group did not
/// hand a member's partitions to the others.
pub async fn drain(
    members: &[&Arc<dyn DurableConsumer>],
    want: &HashSet<PacketId>,
    within: Duration,
    what: &str,
) -> HashSet<PacketId> {
    let deadline = Instant::now() + within;
    let mut got = HashSet::new();
    while !want.is_subset(&got) {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of the {} packets arrived within {within:?}",
            want.intersection(&got).count(),
            want.len()
        );
        for c in members {
            let batch = c
                .fetch(100, Duration::from_millis(500))
                .await
                .expect("fetch");
            c.ack(&batch).await.expect("ack");
            got.extend(batch.iter().map(|d| d.id()));
        }
    }
    got
}
