//! What a three-node JetStream cluster does beyond losing a stream leader
//! under load (tests/failover.rs):
//!
//! - a fetch waiting on the consumer's leader carries on when that leader
//!   steps down (409), is killed, or is paused (its heartbeats stop);
//! - replicas reach the stream and its durable consumers, and another count
//!   is a conflict;
//! - with two of three nodes gone a deposit fails with a typed error once
//!   `retry_for` is over, and is stored once when deposited again after the
//!   nodes are back.
//!
//! Each trial starts a private three-node cluster (`QIS_NATS_RESTART_BIN`,
//! or `nats-server` on PATH) on free loopback ports with its own stores.
//! Without a nats-server the trials are ignored with the reason; with
//! `QIS_REQUIRE_LIVE=1` they fail instead.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{
    connect, consumer_state, consumer_whole, on_own_cluster, Observers, OwnCluster, STREAM,
};
use qis_conformance::ensure;
use qis_conformance::support::{context, eventually, fresh_prefix, pkt, wait_for, CaseResult};
use qis_core::{ConsumerConfig, ErrorKind, OutcomeTransport, OutcomeTransportExt, SubjectPattern};
use qis_transport_nats::{NatsConfig, NatsTransport};

/// How the consumer's leader goes away under a waiting fetch.
#[derive(Debug, Clone, Copy)]
enum LeaderLoss {
    /// It hands over ("409 Leadership Change" to the waiting request).
    StepDown,
    /// SIGKILL (the heartbeats stop), started again afterwards.
    Kill,
    /// SIGSTOP (the heartbeats stop, the connection stays open), SIGCONT afterwards.
    Pause,
}

/// A fetch waiting on the consumer's leader when that leader goes away
/// carries on with the new one: a packet deposited after the change
/// arrives within the same fetch, long before its wait is over.
async fn a_waiting_fetch_outlives_its_consumer_leader(mut cluster: OwnCluster) -> CaseResult {
    const WAIT: Duration = Duration::from_secs(40);
    cluster.ready().await?;
    let url = cluster.url();
    let observers = Observers::connect(&cluster).await?;
    let t = connect(&url).await?;
    let c = t
        .consumer(ConsumerConfig::new("waiter", SubjectPattern::new("qis.iot.>").unwrap()).unwrap())
        .await
        .map_err(context("open consumer"))?;
    let c: Arc<dyn qis_core::DurableConsumer> = c;
    for (round, how) in [LeaderLoss::StepDown, LeaderLoss::Kill, LeaderLoss::Pause]
        .into_iter()
        .enumerate()
    {
        let fetching = {
            let c = c.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let got = c.fetch(10, WAIT).await;
                (got, started.elapsed())
            })
        };
        let (leader, _) = wait_for(
            "the fetch's pull request waiting on the consumer leader",
            Duration::from_secs(20),
            || async {
                consumer_state(observers.any(), "waiter")
                    .await
                    .filter(|(_, waiting)| *waiting > 0)
            },
        )
        .await?;
        let victim = cluster
            .index_of(&leader)
            .ok_or_else(|| format!("the consumer leader {leader} is not one of ours"))?;
        match how {
            LeaderLoss::StepDown => {
                let answer = observers
                    .any()
                    .client()
                    .request(
                        format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{STREAM}.waiter"),
                        bytes::Bytes::new(),
                    )
                    .await
                    .map_err(context("step down"))?;
                let json: serde_json::Value =
                    serde_json::from_slice(&answer.payload).map_err(context("step down answer"))?;
                ensure!(json["success"] == true, "step down refused: {json}");
            }
            LeaderLoss::Kill => cluster.kill(victim)?,
            LeaderLoss::Pause => cluster.pause(victim)?,
        }
        let new_leader = wait_for("a new consumer leader", Duration::from_secs(30), || async {
            for o in observers.avoiding(victim) {
                if let Some((l, _)) = consumer_state(o, "waiter")
                    .await
                    .filter(|(l, _)| *l != leader)
                {
                    return Some(l);
                }
            }
            None
        })
        .await?;
        let packet = pkt("waiter", "hvac", "energy-anomaly", round);
        t.deposit(&packet).await.map_err(context("deposit"))?;
        let (got, took) = tokio::time::timeout(WAIT + Duration::from_secs(10), fetching)
            .await
            .map_err(|_| "the fetch did not return within its wait".to_string())?
            .map_err(|e| e.to_string())?;
        let got = got.map_err(context("the fetch failed instead of carrying on"))?;
        eprintln!("{how:?}: consumer leader {leader} → {new_leader}; the waiting fetch returned {} after {took:.1?}", got.len());
        ensure!(
            got.len() == 1 && got[0].packet() == &packet,
            "the fetch waiting across the change ({how:?}) returned {} deliveries after {took:?}, not the packet deposited after it: it stalled on the lost request",
            got.len()
        );
        c.ack(&got).await.map_err(context("ack"))?;
        match how {
            LeaderLoss::StepDown => {}
            LeaderLoss::Kill => cluster.restart(victim)?,
            LeaderLoss::Pause => cluster.resume(victim)?,
        }
        // The next round loses one node of three, not a second one.
        eventually(
            "all three consumer replicas current again",
            Duration::from_secs(30),
            || consumer_whole(observers.any(), "waiter"),
        )
        .await?;
    }
    c.close().await.map_err(context("close consumer"))?;
    t.close().await.map_err(context("close"))?;
    observers.close().await
}

/// Replicas reach the stream and its durable consumers; another count for
/// an existing stream is a conflict.
async fn replicas_are_kept_and_other_counts_conflict(cluster: OwnCluster) -> CaseResult {
    cluster.ready().await?;
    let t = connect(&cluster.url()).await?;
    let c = t
        .consumer(
            ConsumerConfig::new("replicated", SubjectPattern::new("qis.iot.>").unwrap()).unwrap(),
        )
        .await
        .map_err(context("open consumer"))?;
    let stream = t
        .jetstream()
        .get_stream(STREAM)
        .await
        .map_err(context("stream info"))?;
    let info = stream.cached_info();
    ensure!(
        info.config.num_replicas == 3,
        "the stream has {} replicas",
        info.config.num_replicas
    );
    let peers = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
    ensure!(peers == 2, "the stream has a leader and {peers} followers");
    let consumer = stream
        .consumer_info("replicated")
        .await
        .map_err(context("consumer info"))?;
    let peers = consumer.cluster.as_ref().map_or(0, |c| c.replicas.len());
    ensure!(
        peers == 2,
        "the durable consumer has a leader and {peers} followers: it would not survive its server"
    );
    c.close().await.map_err(context("close consumer"))?;

    // A consumer someone made with one replica on this stream of three
    // would not survive its server: refused, not resumed.
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("lonely".into()),
            filter_subject: "qis.iot.>".into(),
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(context("create an R1 consumer"))?;
    let e = t
        .consumer(ConsumerConfig::new("lonely", SubjectPattern::new("qis.iot.>").unwrap()).unwrap())
        .await
        .err()
        .ok_or("a consumer with 1 replica on a stream of 3 was resumed")?;
    ensure!(
        e.kind() == ErrorKind::Conflict && e.message().contains("1 replicas"),
        "{e}"
    );

    let one = NatsConfig::from_url(&cluster.url())
        .map_err(context("config"))?
        .replicas(1);
    let e = NatsTransport::connect(one)
        .await
        .err()
        .ok_or("connecting with replicas=1 to a stream of 3 was accepted")?;
    ensure!(e.kind() == ErrorKind::Conflict, "{e}");
    ensure!(e.message().contains("replicas 3 (want 1)"), "{e}");

    // More replicas than servers: refused, with what to change.
    let five = NatsConfig::from_url(&cluster.url())
        .map_err(context("config"))?
        .prefix(fresh_prefix())
        .replicas(5);
    let e = NatsTransport::connect(five)
        .await
        .err()
        .ok_or("a stream with 5 replicas was created on 3 servers")?;
    eprintln!("replicas=5 on three servers: {e}");
    ensure!(
        e.kind() == ErrorKind::Unavailable && e.message().contains("5 replicas"),
        "{e}"
    );
    t.close().await.map_err(context("close"))?;
    Ok(())
}

/// Two of three nodes lost: no deposit succeeds, each fails with a typed
/// error once `retry_for` is over; deposited again when the nodes are back,
/// the packet is stored once.
async fn without_a_majority_deposits_fail(mut cluster: OwnCluster) -> CaseResult {
    cluster.ready().await?;
    let url = cluster.url();
    let setup = connect(&url).await?;
    setup
        .deposit(&pkt("majority", "hvac", "energy-anomaly", 0))
        .await
        .map_err(context("first deposit"))?;
    setup.close().await.map_err(context("close"))?;
    // Only the first node is left; the client knows no other.
    let retry_for = Duration::from_secs(3);
    let config = NatsConfig::from_url(&cluster.node_url(0))
        .map_err(context("config"))?
        .replicas(3)
        .request_timeout(Duration::from_secs(1))
        .retry_for(retry_for);
    let t = NatsTransport::connect(config)
        .await
        .map_err(context("connect"))?;
    cluster.kill(1)?;
    cluster.kill(2)?;
    let packet = pkt("majority", "hvac", "energy-anomaly", 1);
    let started = Instant::now();
    let e = t
        .deposit(&packet)
        .await
        .err()
        .ok_or("a deposit succeeded with two of three nodes gone")?;
    let took = started.elapsed();
    eprintln!("without a majority: {} after {took:.1?}: {e}", e.kind());
    ensure!(
        matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
        "{e}"
    );
    ensure!(
        took >= retry_for,
        "gave up after {took:?}, before retry_for"
    );
    ensure!(
        took < retry_for + Duration::from_secs(10),
        "took {took:?} to give up"
    );
    let batch = t
        .deposit_batch(&[pkt("majority", "hvac", "energy-anomaly", 2)])
        .await;
    ensure!(
        batch.is_err(),
        "a batch deposit succeeded without a majority"
    );

    cluster.restart(1)?;
    cluster.restart(2)?;
    cluster.ready().await?;
    // Until the cluster has settled (stream and meta leaders elected), a
    // deposit may still fail; only with a transient, typed error, after
    // which depositing again is safe.
    let deposited = || async {
        match t.deposit(&packet).await {
            Ok(r) => Some(Ok(r)),
            Err(e) if e.is_transient() => {
                eprintln!("with the nodes back, not yet: {e}");
                None
            }
            Err(e) => Some(Err(e)),
        }
    };
    let mut answers = Vec::new();
    for what in [
        "a deposit succeeding with the nodes back",
        "the same deposit answered again",
    ] {
        let answer = wait_for(what, Duration::from_secs(60), deposited).await?;
        answers.push(answer.map_err(context(what))?);
    }
    let (receipt, again) = (&answers[0], &answers[1]);
    ensure!(
        again.duplicate && again.position == receipt.position,
        "depositing it once more gave {again:?}, after {receipt:?}"
    );
    t.close().await.map_err(context("close"))?;
    Ok(())
}

fn main() {
    qis_conformance::run_trials(vec![
        on_own_cluster(
            "a_waiting_fetch_outlives_its_consumer_leader",
            a_waiting_fetch_outlives_its_consumer_leader,
        ),
        on_own_cluster(
            "replicas_are_kept_and_other_counts_conflict",
            replicas_are_kept_and_other_counts_conflict,
        ),
        on_own_cluster(
            "without_a_majority_deposits_fail_typed",
            without_a_majority_deposits_fail,
        ),
    ]);
}
