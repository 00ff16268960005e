//! A group member that dies mid-batch (fetched, not acked) hands its packets
//! to the group's next member.
//!
//! Needs a broker: `QIS_KAFKA_URL` (see `scripts/servers/kafka.sh`). Without
//! it the tests are ignored with the reason, or fail with `QIS_REQUIRE_LIVE=1`.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{deposit_spread, drain, transport};
use qis_conformance::support::{collect_unacked, fresh_prefix};
use qis_core::{ConsumerConfig, DurableConsumer, OutcomeTransport, PacketId, SubjectPattern};

async fn failover(url: String, kill: impl AsyncFnOnce(Arc<dyn DurableConsumer>)) {
    let prefix = fresh_prefix();
    let t1 = transport(&url, &prefix).await;
    let t2 = transport(&url, &prefix).await;
    let pattern = SubjectPattern::new(format!("{prefix}.>")).unwrap();
    let cfg = ConsumerConfig::new("workers", pattern)
        .unwrap()
        .ack_wait(Duration::from_secs(300));

    let ids = deposit_spread(&t1, "worker-test", 6, 0..60).await;
    let a = t1.consumer(cfg.clone()).await.expect("member A");

    // A takes the whole batch (it owns every partition) and acks nothing.
    let held: HashSet<PacketId> = collect_unacked(&a, ids.len(), Duration::from_secs(20))
        .await
        .expect("member A fetches the whole batch")
        .iter()
        .map(|d| d.id())
        .collect();
    assert_eq!(held, ids);

    // B joins, then A dies without acking. The ack wait (300 s) is far
    // away: only the group hand-over can bring the packets to B in time.
    let b = t2.consumer(cfg).await.expect("member B");
    kill(a).await;
    let got = drain(&[&b], &held, Duration::from_secs(30), "to B from A").await;
    assert!(held.is_subset(&got));
    b.close().await.expect("close B");
    t1.close().await.expect("close t1");
    t2.close().await.expect("close t2");
}

async fn dropped_member_hands_unacked_packets_to_the_next(url: String) {
    failover(url, async |a| drop(a)).await;
}

async fn closed_member_hands_unacked_packets_to_the_next(url: String) {
    failover(url, async |a| a.close().await.expect("close A")).await;
}

async fn acked_packets_stay_acked_across_members(url: String) {
    let prefix = fresh_prefix();
    let t = transport(&url, &prefix).await;
    let ids = deposit_spread(&t, "worker-test", 6, 0..60).await;
    let pattern = SubjectPattern::new(format!("{prefix}.>")).unwrap();
    let cfg = ConsumerConfig::new("half", pattern).unwrap();
    let a = t.consumer(cfg.clone()).await.expect("member A");
    // A acks every other delivery, then is dropped.
    let mut acked = HashSet::new();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < ids.len() {
        assert!(
            Instant::now() < deadline,
            "member A fetched {} of {}",
            seen.len(),
            ids.len()
        );
        for d in a
            .fetch(100, Duration::from_millis(500))
            .await
            .expect("fetch")
        {
            if seen.insert(d.id()) && seen.len() % 2 == 0 {
                a.ack(std::slice::from_ref(&d)).await.expect("ack");
                acked.insert(d.id());
            }
        }
    }
    drop(a);
    let b = t.consumer(cfg).await.expect("member B");
    let unacked: HashSet<_> = ids.difference(&acked).copied().collect();
    let got = drain(&[&b], &unacked, Duration::from_secs(30), "to B from A").await;
    // At-least-once: acked packets after an unacked one in the same partition
    // may come again, but every unacked one must.
    assert!(unacked.is_subset(&got));
    b.close().await.expect("close B");
}

fn main() {
    qis_conformance::run_trials(broker_trials!(
        dropped_member_hands_unacked_packets_to_the_next,
        closed_member_hands_unacked_packets_to_the_next,
        acked_packets_stay_acked_across_members,
    ));
}
