//! A three-node JetStream cluster that loses a node and loses nothing.
//!
//! Each trial starts a private three-node cluster (`QIS_NATS_RESTART_BIN`,
//! or `nats-server` on PATH) on free loopback ports with its own stores, so
//! it can kill and pause nodes without touching the shared cluster of the
//! conformance run. Streams and consumers have three replicas.
//!
//! - **Failover**: 5,000 packets deposited in batches (acks in flight) while
//!   a durable consumer on another connection fetches and acks; a third of
//!   the way in the stream's leader is killed (SIGKILL), and started again
//!   once the others have elected a new leader and two thirds are done.
//! - **Pause**: the same, with the leader stopped (SIGSTOP) until the others
//!   have elected a new leader (so for longer than the election timeout)
//!   and two thirds are done, then resumed (SIGCONT).
//!
//! Afterwards each prints its counts and checks: every deposit that returned
//! a receipt was fetched, from the position its receipt names; nothing was
//! stored twice; no packet was delivered as new again after it was acked
//! (a lost ack comes back as a redelivery, with a higher delivery count);
//! every packet that is missing was reported failed to the depositor; no
//! fetch failed.
//!
//! Also: replicas are applied to the stream and its consumers and another
//! count is a conflict; with two of three nodes gone a deposit fails with a
//! typed error once `retry_for` is over, and is stored once when deposited
//! again after the nodes are back.
//!
//! Without a nats-server the trials are ignored with the reason; with
//! `QIS_REQUIRE_LIVE=1` they fail instead.

mod common;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::OwnCluster;
use qis_conformance::ensure;
use qis_conformance::support::{
    block_on, context, eventually, fresh_prefix, pkt, trial, CaseResult,
};
use qis_core::{
    ConsumerConfig, Delivery, EncodedPacket, ErrorKind, OutcomePacket, OutcomeTransport,
    OutcomeTransportExt, PacketId, Position, Receipt, SubjectPattern,
};
use qis_transport_nats::{NatsConfig, NatsTransport};

const PACKETS: usize = 5000;
const BATCH: usize = 50;
/// Short, so acks lost with a leader come back within the test.
const ACK_WAIT: Duration = Duration::from_secs(3);
const STREAM: &str = "QIS_OUTCOMES";

/// How the stream leader is disrupted.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// SIGKILL, started again later.
    Kill,
    /// SIGSTOP, SIGCONT later.
    Pause,
}

/// Check `get` every few milliseconds until it gives a value; fails with
/// "`what` did not happen within `within`" if it never does.
async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut get: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = get().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} did not happen within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(url: &str) -> Result<qis_core::Checked<NatsTransport>, String> {
    let config = NatsConfig::from_url(url)
        .map_err(context("config"))?
        .replicas(3);
    NatsTransport::connect(config)
        .await
        .map_err(context("connect"))
}

/// One connection to each node alone, to ask the cluster about itself
/// through a node that is neither killed nor paused.
struct Observers(Vec<qis_core::Checked<NatsTransport>>);

impl Observers {
    async fn connect(cluster: &OwnCluster) -> Result<Self, String> {
        let mut all = Vec::new();
        for i in 0..3 {
            all.push(connect(&cluster.node_url(i)).await?);
        }
        Ok(Observers(all))
    }

    /// The connections to the nodes other than `node`.
    fn avoiding(&self, node: usize) -> impl Iterator<Item = &NatsTransport> {
        self.0
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != node)
            .map(|(_, o)| &**o)
    }

    fn any(&self) -> &NatsTransport {
        &self.0[0]
    }

    async fn close(self) -> CaseResult {
        for o in self.0 {
            o.close().await.map_err(context("close observer"))?;
        }
        Ok(())
    }
}

/// The stream leader's server name, as the cluster reports it (`None` while
/// there is none or nobody answers).
async fn stream_leader(observer: &NatsTransport) -> Option<String> {
    let js = observer.jetstream();
    let stream = tokio::time::timeout(Duration::from_secs(2), js.get_stream(STREAM))
        .await
        .ok()?
        .ok()?;
    stream.cached_info().cluster.as_ref()?.leader.clone()
}

/// Whether all three replicas of the stream are current.
async fn replicas_current(observer: &NatsTransport) -> bool {
    let js = observer.jetstream();
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), js.get_stream(STREAM)).await
    else {
        return false;
    };
    let Some(cluster) = stream.cached_info().cluster.as_ref() else {
        return false;
    };
    cluster.leader.is_some()
        && cluster.replicas.len() == 2
        && cluster.replicas.iter().all(|r| r.current && !r.offline)
}

/// What the depositor saw.
#[derive(Default)]
struct Deposits {
    done: AtomicUsize,
    receipts: Mutex<Vec<Receipt>>,
    failed: Mutex<HashSet<PacketId>>,
    errors: Mutex<Vec<String>>,
    /// The longest one batch deposit took (the stall while a leader is elected).
    longest: Mutex<Duration>,
}

/// What the consumer saw.
#[derive(Default)]
struct Fetched {
    /// First delivery of each packet: its position.
    first: HashMap<PacketId, Position>,
    /// Packets whose ack was sent.
    acked: HashSet<PacketId>,
    /// Deliveries of a packet seen before.
    redelivered: usize,
    /// Deliveries of an acked packet as if new (delivery count 1).
    new_after_ack: Vec<String>,
    fetch_errors: Vec<String>,
}

impl Fetched {
    fn record(&mut self, deliveries: &[Delivery]) {
        for d in deliveries {
            let id = d.id();
            match self.first.entry(id) {
                Entry::Vacant(v) => {
                    v.insert(d.position);
                }
                Entry::Occupied(_) => {
                    self.redelivered += 1;
                    if d.delivery_count <= 1 && self.acked.contains(&id) {
                        self.new_after_ack.push(format!(
                            "{id} at {} (delivery count {})",
                            d.position, d.delivery_count
                        ));
                    }
                }
            }
        }
    }
}

async fn depositor(
    t: qis_core::Checked<NatsTransport>,
    packets: Vec<OutcomePacket>,
    out: Arc<Deposits>,
) -> CaseResult {
    for chunk in packets.chunks(BATCH) {
        let started = Instant::now();
        let result = t.deposit_batch(chunk).await;
        {
            let mut longest = out.longest.lock().unwrap();
            *longest = (*longest).max(started.elapsed());
        }
        match result {
            Ok(receipts) => out.receipts.lock().unwrap().extend(receipts),
            Err(e) => {
                ensure!(
                    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
                    "a deposit failed with an unexpected error: {e}"
                );
                out.errors.lock().unwrap().push(e.to_string());
                let mut failed = out.failed.lock().unwrap();
                for p in chunk {
                    failed.insert(EncodedPacket::readable(p, t.prefix()).unwrap().id());
                }
            }
        }
        out.done.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    t.close().await.map_err(context("close depositor"))
}

/// Fetch and ack until `stop` is set and nothing has come for two ack waits.
async fn consumer(
    t: qis_core::Checked<NatsTransport>,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Fetched>>,
) -> CaseResult {
    let c = t
        .consumer(
            ConsumerConfig::new("auditor", SubjectPattern::new("qis.iot.>").unwrap())
                .unwrap()
                .ack_wait(ACK_WAIT),
        )
        .await
        .map_err(context("open consumer"))?;
    let mut last_delivery = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && last_delivery.elapsed() > ACK_WAIT * 2 {
            break;
        }
        match c.fetch(500, Duration::from_secs(1)).await {
            Ok(batch) if batch.is_empty() => {}
            Ok(batch) => {
                last_delivery = Instant::now();
                out.lock().unwrap().record(&batch);
                match c.ack(&batch).await {
                    Ok(()) => {
                        let mut f = out.lock().unwrap();
                        f.acked.extend(batch.iter().map(Delivery::id));
                    }
                    Err(e) => out.lock().unwrap().fetch_errors.push(format!("ack: {e}")),
                }
            }
            Err(e) => out.lock().unwrap().fetch_errors.push(format!("fetch: {e}")),
        }
    }
    c.close().await.map_err(context("close consumer"))?;
    t.close().await.map_err(context("close consumer transport"))
}

async fn lose_the_leader(mut cluster: OwnCluster, how: Disruption) -> CaseResult {
    cluster.ready().await?;
    let url = cluster.url();
    let observers = Observers::connect(&cluster).await?;
    let observer = observers.any();
    let depositing = connect(&url).await?;
    let consuming = connect(&url).await?;
    let packets: Vec<OutcomePacket> = (0..PACKETS)
        .map(|i| pkt("failover", "hvac", "energy-anomaly", i))
        .collect();
    let all_ids: HashSet<PacketId> = packets
        .iter()
        .map(|p| EncodedPacket::readable(p, observer.prefix()).unwrap().id())
        .collect();

    let deposits = Arc::new(Deposits::default());
    let fetched = Arc::new(Mutex::new(Fetched::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer_task = tokio::spawn(consumer(consuming, stop.clone(), fetched.clone()));
    // The consumer exists before the first deposit.
    eventually(
        "the consumer to be created",
        Duration::from_secs(20),
        || async {
            let js = observer.jetstream();
            match js.get_stream(STREAM).await {
                Ok(s) => s.consumer_info("auditor").await.is_ok(),
                Err(_) => false,
            }
        },
    )
    .await?;
    let started = Instant::now();
    let depositor_task = tokio::spawn(depositor(depositing, packets, deposits.clone()));

    eventually("a third of the deposits", Duration::from_secs(60), || {
        std::future::ready(deposits.done.load(Ordering::SeqCst) >= PACKETS / 3)
    })
    .await?;
    let leader = stream_leader(observer)
        .await
        .ok_or("the stream has no leader before the disruption")?;
    let victim = cluster
        .index_of(&leader)
        .ok_or_else(|| format!("the stream leader {leader} is not one of ours"))?;
    let at = deposits.done.load(Ordering::SeqCst);
    let pid = cluster.pid(victim);
    let hit = Instant::now();
    match how {
        Disruption::Kill => cluster.kill(victim)?,
        Disruption::Pause => cluster.pause(victim)?,
    }
    eprintln!(
        "{how:?}: stream leader {leader} (pid {pid:?}) hit after {at} deposits, {:.1?} in",
        started.elapsed()
    );
    let new_leader = wait_for(
        "the others electing a new stream leader",
        Duration::from_secs(30),
        || async {
            for o in observers.avoiding(victim) {
                if let Some(l) = stream_leader(o).await.filter(|l| *l != leader) {
                    return Some(l);
                }
            }
            None
        },
    )
    .await?;
    let elected = hit.elapsed();
    eventually(
        "two thirds of the deposits while the old leader is out",
        Duration::from_secs(60),
        || std::future::ready(deposits.done.load(Ordering::SeqCst) >= 2 * PACKETS / 3),
    )
    .await?;
    match how {
        Disruption::Kill => cluster.restart(victim)?,
        Disruption::Pause => cluster.resume(victim)?,
    }
    eprintln!(
        "{how:?}: {} elected {elected:.1?} after; {leader} back {:.1?} after, at {} deposits",
        new_leader,
        hit.elapsed(),
        deposits.done.load(Ordering::SeqCst)
    );

    tokio::time::timeout(Duration::from_secs(90), depositor_task)
        .await
        .map_err(|_| "the depositor did not finish within 90 s".to_string())?
        .map_err(|e| e.to_string())??;
    let receipts = std::mem::take(&mut *deposits.receipts.lock().unwrap());
    let failed = std::mem::take(&mut *deposits.failed.lock().unwrap());
    let receipted: HashSet<PacketId> = receipts.iter().map(|r| r.id).collect();
    eventually(
        "the consumer receiving every receipted deposit",
        Duration::from_secs(60),
        || {
            let f = fetched.lock().unwrap();
            std::future::ready(receipted.iter().all(|id| f.first.contains_key(id)))
        },
    )
    .await?;
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(60), consumer_task)
        .await
        .map_err(|_| "the consumer did not stop within 60 s".to_string())?
        .map_err(|e| e.to_string())??;
    eventually(
        "all three stream replicas current again",
        Duration::from_secs(30),
        || replicas_current(observer),
    )
    .await?;
    let stored = observer
        .jetstream()
        .get_stream(STREAM)
        .await
        .map_err(context("stream info"))?
        .cached_info()
        .state
        .messages;

    let f = std::mem::take(&mut *fetched.lock().unwrap());
    let duplicates = receipts.iter().filter(|r| r.duplicate).count();
    eprintln!(
        "{how:?}: sent {PACKETS}, acked {} ({duplicates} as duplicates of an earlier attempt), fetched {}, redelivered {}, failed {}; stream holds {stored}; longest batch deposit {:.1?}; {:.1?} in all",
        receipts.len(),
        f.first.len(),
        f.redelivered,
        failed.len(),
        *deposits.longest.lock().unwrap(),
        started.elapsed()
    );
    if let Some(e) = deposits.errors.lock().unwrap().first() {
        eprintln!("{how:?}: first deposit error: {e}");
    }

    ensure!(
        f.fetch_errors.is_empty(),
        "{} fetches or acks failed instead of carrying on, first: {}",
        f.fetch_errors.len(),
        f.fetch_errors[0]
    );
    ensure!(
        receipts.len() + failed.len() == PACKETS,
        "{} receipts and {} failures for {PACKETS} deposits",
        receipts.len(),
        failed.len()
    );
    for r in &receipts {
        match f.first.get(&r.id) {
            None => {
                return Err(format!(
                    "packet {} has a receipt but was never fetched",
                    r.id
                ))
            }
            Some(p) => ensure!(
                *p == r.position,
                "the receipt of {} says {} but it was delivered from {p}",
                r.id,
                r.position
            ),
        }
    }
    for id in all_ids.difference(&f.first.keys().copied().collect()) {
        ensure!(
            failed.contains(id),
            "packet {id} is missing and its depositor was never told"
        );
    }
    ensure!(
        f.first.keys().all(|id| all_ids.contains(id)),
        "the consumer received packets nobody deposited"
    );
    ensure!(
        stored == f.first.len() as u64,
        "the stream holds {stored} messages for {} distinct packets: something was stored twice",
        f.first.len()
    );
    ensure!(
        f.new_after_ack.is_empty(),
        "{} packets were delivered as new again after they were acked, first: {}",
        f.new_after_ack.len(),
        f.new_after_ack[0]
    );
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
    let receipt = wait_for(
        "a deposit succeeding with the nodes back",
        Duration::from_secs(60),
        || async { t.deposit(&packet).await.ok() },
    )
    .await?;
    let again = t.deposit(&packet).await.map_err(context("deposit again"))?;
    ensure!(
        again.duplicate && again.position == receipt.position,
        "depositing it once more gave {again:?}, after {receipt:?}"
    );
    t.close().await.map_err(context("close"))?;
    Ok(())
}

/// The consumer's leader and whether a pull request waits on it.
async fn consumer_state(t: &NatsTransport, name: &str) -> Option<(String, usize)> {
    let js = t.jetstream();
    let info = tokio::time::timeout(Duration::from_secs(2), async {
        js.get_stream(STREAM)
            .await
            .ok()?
            .consumer_info(name)
            .await
            .ok()
    })
    .await
    .ok()??;
    Some((info.cluster.as_ref()?.leader.clone()?, info.num_waiting))
}

/// Whether the consumer has a leader and two current followers.
async fn consumer_whole(t: &NatsTransport, name: &str) -> bool {
    let js = t.jetstream();
    let info = tokio::time::timeout(Duration::from_secs(2), async {
        js.get_stream(STREAM)
            .await
            .ok()?
            .consumer_info(name)
            .await
            .ok()
    })
    .await;
    let Ok(Some(info)) = info else { return false };
    info.cluster.as_ref().is_some_and(|c| {
        c.leader.is_some()
            && c.replicas.len() == 2
            && c.replicas.iter().all(|r| r.current && !r.offline)
    })
}

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

/// The trials' own waits add up to well under this.
const LIMIT: Duration = Duration::from_secs(240);

fn main() {
    let bin = common::server_binary();
    let trials = vec![
        trial("failover_when_the_stream_leader_is_killed", &bin, |_| {
            let cluster = OwnCluster::start(false)?;
            block_on(LIMIT, lose_the_leader(cluster, Disruption::Kill))
        }),
        trial("failover_when_the_stream_leader_is_paused", &bin, |_| {
            let cluster = OwnCluster::start(false)?;
            block_on(LIMIT, lose_the_leader(cluster, Disruption::Pause))
        }),
        trial("a_waiting_fetch_outlives_its_consumer_leader", &bin, |_| {
            let cluster = OwnCluster::start(false)?;
            block_on(LIMIT, a_waiting_fetch_outlives_its_consumer_leader(cluster))
        }),
        trial("replicas_are_kept_and_other_counts_conflict", &bin, |_| {
            let cluster = OwnCluster::start(false)?;
            block_on(LIMIT, replicas_are_kept_and_other_counts_conflict(cluster))
        }),
        trial("without_a_majority_deposits_fail_typed", &bin, |_| {
            let cluster = OwnCluster::start(false)?;
            block_on(LIMIT, without_a_majority_deposits_fail(cluster))
        }),
    ];
    qis_conformance::run_trials(trials);
}
