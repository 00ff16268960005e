//! `DurableConsumer::backlog` on Kafka: records from the consumer's
//! position to the high watermark, and the handle's deliveries in flight.
//!
//! Needs a broker: `QIS_KAFKA_URL` (see `scripts/servers/kafka.sh`). Without
//! it the test is ignored with the reason, or fails with `QIS_REQUIRE_LIVE=1`.

#[macro_use]
mod common;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use common::transport;
use qis_conformance::support::{collect, collect_unacked, eventually, fresh_prefix, pkt};
use qis_core::backend::InjectRaw;
use qis_core::{
    Backlog, ConsumerConfig, DurableConsumer, OutcomeTransport, OutcomeTransportExt, SubjectPattern,
};

/// Wait (bounded) until the backlog is `want`; the high watermark a broker
/// reports may lag a moment behind the deposit's acknowledgement.
async fn backlog_becomes(c: &Arc<dyn DurableConsumer>, want: Backlog, what: &str) {
    let last = Cell::new(None);
    let reached = eventually(what, Duration::from_secs(10), || {
        let c = c.clone();
        let last = &last;
        async move {
            let b = c.backlog().await.expect("backlog");
            last.set(Some(b));
            b == want
        }
    })
    .await;
    if let Err(e) = reached {
        panic!("{e}: the backlog is {:?}, want {want:?}", last.get());
    }
}

async fn backlog_counts_waiting_and_unacked_packets(url: String) {
    let prefix = fresh_prefix();
    let t = transport(&url, &prefix).await;
    let pattern = SubjectPattern::new(format!("{prefix}.hvac.>")).unwrap();
    let c = t
        .consumer(ConsumerConfig::new("counted", pattern).unwrap())
        .await
        .expect("consumer");
    backlog_becomes(&c, Backlog::default(), "an empty backlog").await;

    let packets: Vec<_> = (0..10)
        .map(|i| pkt("backlog-test", "hvac", ["a", "b", "c"][i % 3], i))
        .collect();
    t.deposit_batch(&packets).await.expect("deposit");
    let ten = Backlog {
        waiting: 10,
        unacked: 0,
    };
    backlog_becomes(&c, ten, "10 packets waiting").await;

    // Four delivered, not acked: no longer waiting, not done either.
    let four = collect_unacked(&c, 4, Duration::from_secs(10))
        .await
        .expect("fetch 4");
    let split = Backlog {
        waiting: 6,
        unacked: 4,
    };
    assert_eq!(c.backlog().await.expect("backlog"), split);
    c.ack(&four).await.expect("ack");
    assert_eq!(
        c.backlog().await.expect("backlog"),
        Backlog {
            waiting: 6,
            unacked: 0
        }
    );
    collect(&c, 6, Duration::from_secs(10))
        .await
        .expect("fetch the rest");
    assert_eq!(c.backlog().await.expect("backlog"), Backlog::default());

    // A record of a subject the pattern does not match counts until the
    // handle has read past it (subjects are keys in one topic).
    t.inject_raw(&format!("{prefix}.power.x"), b"{}")
        .await
        .expect("inject");
    backlog_becomes(
        &c,
        Backlog {
            waiting: 1,
            unacked: 0,
        },
        "another subject's record counted",
    )
    .await;
    let none = c
        .fetch(10, Duration::from_millis(500))
        .await
        .expect("fetch");
    assert!(none.is_empty());
    backlog_becomes(&c, Backlog::default(), "the record read past").await;

    c.close().await.expect("close");
    t.close().await.expect("close transport");
}

fn main() {
    qis_conformance::run_trials(broker_trials!(backlog_counts_waiting_and_unacked_packets));
}
