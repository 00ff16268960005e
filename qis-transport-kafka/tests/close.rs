//! Closing flushes acks, or says it could not (SPEC §6.10): a consumer's
//! `close` and the transport's `close` fail when the final commit of acked
//! offsets fails, and the transport's `close` closes (and commits for) every
//! consumer it opened.
//!
//! `transport_close_closes_its_consumers` needs the shared broker
//! (`QIS_KAFKA_URL`); `close_reports_a_failed_final_commit` and
//! `close_reports_acks_lost_with_the_session` each start a broker of their
//! own (tansu, via `scripts/servers/kafka.sh`) and freeze or kill it. Without
//! them the tests are ignored with the reason, or fail with
//! `QIS_REQUIRE_LIVE=1`.

#[macro_use]
mod common;
#[path = "common/private_broker.rs"]
mod private_broker;

use std::sync::Arc;
use std::time::Duration;

use common::{deposit_spread, drain, transport};
use private_broker::PrivateBroker;
use qis_conformance::support::{block_on, collect_unacked, fresh_prefix, pkt, trial};
use qis_conformance::CASE_LIMIT;
use qis_core::{
    ConsumerConfig, DurableConsumer, ErrorKind, OutcomeTransport, OutcomeTransportExt,
    SubjectPattern,
};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};

/// A member still open when its transport closes is closed with it: it
/// leaves the group, so the next member of the group gets every partition.
async fn transport_close_closes_its_consumers(url: String) {
    let prefix = fresh_prefix();
    let pattern = SubjectPattern::new(format!("{prefix}.>")).unwrap();
    let cfg = ConsumerConfig::new("closing", pattern).unwrap();
    let t1 = transport(&url, &prefix).await;
    let a = t1.consumer(cfg.clone()).await.expect("member A");
    t1.close().await.expect("close transport 1");
    assert_eq!(
        a.fetch(1, Duration::ZERO).await.unwrap_err().kind(),
        ErrorKind::Closed
    );

    // The handle `a` is still alive: only the transport's close can have
    // taken it out of the group.
    let t2 = transport(&url, &prefix).await;
    let b = t2.consumer(cfg).await.expect("member B");
    let want = deposit_spread(&t2, "close-test", 12, 0..60).await;
    drain(&[&b], &want, Duration::from_secs(20), "to B, A closed").await;
    drop(a);
    b.close().await.expect("close B");
    t2.close().await.expect("close transport 2");
}

/// How the broker goes away in [`acks_not_stored`].
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// SIGSTOP: connections stay open and nothing is answered; commits
    /// never finish (librdkafka's synchronous commit has no deadline), so
    /// the handle's request timeout (2 s here) bounds them while the
    /// members' sessions (12 s) last.
    Frozen,
    /// SIGKILL: connections drop; commits wait for a coordinator until the
    /// sessions (6 s) end and the group takes the partitions.
    Killed,
}

/// Two consumers fetch, the broker goes away, they ack: the acks cannot be
/// stored, and `close` (the consumer's, and the transport's for the other)
/// must say so instead of returning Ok.
async fn acks_not_stored(mut broker: PrivateBroker, outage: Outage) {
    let prefix = fresh_prefix();
    // Sessions long enough that no member's ends on a busy machine before
    // the outage, nor before the acks below reach the handles.
    let config = match outage {
        Outage::Frozen => {
            let mut c = KafkaConfig::from_url(&broker.url("12s")).unwrap();
            c.request_timeout = Duration::from_secs(2);
            c
        }
        Outage::Killed => KafkaConfig::from_url(&broker.url("6s")).unwrap(),
    };
    let t = KafkaTransport::connect(config.prefix(prefix.clone()))
        .await
        .expect("connect");
    let all = SubjectPattern::new(format!("{prefix}.>")).unwrap();
    let open = |name: &'static str| {
        let t = t.clone();
        let cfg = ConsumerConfig::new(name, all.clone())
            .unwrap()
            .ack_wait(Duration::from_secs(300));
        async move { t.consumer(cfg).await.expect("consumer") }
    };
    let (one, two): (Arc<dyn DurableConsumer>, Arc<dyn DurableConsumer>) =
        (open("one").await, open("two").await);
    t.deposit_batch(&[
        pkt("close-test", "hvac", "x", 0),
        pkt("close-test", "hvac", "y", 1),
    ])
    .await
    .expect("deposit");
    let got_one = collect_unacked(&one, 2, Duration::from_secs(20))
        .await
        .expect("consumer one fetches");
    let got_two = collect_unacked(&two, 2, Duration::from_secs(20))
        .await
        .expect("consumer two fetches");

    match outage {
        Outage::Frozen => broker.pause().expect("pause the broker"),
        Outage::Killed => broker.kill().expect("kill the broker"),
    }
    let (acked_one, acked_two) = futures::join!(one.ack(&got_one), two.ack(&got_two));
    eprintln!("{outage:?}: acks: {acked_one:?}, {acked_two:?}");

    let err = one
        .close()
        .await
        .expect_err("the consumer's close returned Ok though its acks were not committed");
    eprintln!("{outage:?}: consumer close: {err}");
    assert!(err.kind().is_transient(), "{err}");
    let err = t.close().await.expect_err(
        "the transport's close returned Ok though consumer two's acks were not committed",
    );
    eprintln!("{outage:?}: transport close: {err}");
    assert!(err.kind().is_transient(), "{err}");
}

fn main() {
    let mut trials = broker_trials!(transport_close_closes_its_consumers);
    for (name, outage) in [
        ("close_reports_a_failed_final_commit", Outage::Frozen),
        ("close_reports_acks_lost_with_the_session", Outage::Killed),
    ] {
        trials.push(trial(name, &private_broker::available(), move |()| {
            block_on(CASE_LIMIT, async move {
                let broker = PrivateBroker::start()?;
                acks_not_stored(broker, outage).await;
                Ok(())
            })
        }));
    }
    qis_conformance::run_trials(trials);
}
