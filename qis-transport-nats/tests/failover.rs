//! A three-node JetStream cluster that loses its stream leader under load
//! and loses nothing.
//!
//! Each trial starts a private three-node cluster (`QIS_NATS_RESTART_BIN`,
//! or `nats-server` on PATH) on free loopback ports with its own stores, so
//! it can kill and pause nodes without touching the shared cluster of the
//! conformance run. The stream and the consumer have three replicas.
//!
//! - **Kill**: 5,000 packets deposited in batches of 50 (acks in flight)
//!   while a durable consumer on another connection fetches and acks; a
//!   third of the way in the stream's leader is killed (SIGKILL), and
//!   started again once the others have elected a new leader and two thirds
//!   are done.
//! - **Pause**: the same, with the leader stopped (SIGSTOP) until the others
//!   have elected a new leader (so for longer than the election timeout)
//!   and two thirds are done, then resumed (SIGCONT).
//!
//! Afterwards each prints its counts (sent, acked, fetched, redelivered,
//! failed) and checks: every deposit that returned a receipt was fetched,
//! from the position its receipt names; nothing was stored twice; no packet
//! was delivered as new again after it was acked (a lost ack comes back as
//! a redelivery, with a higher delivery count); every packet that is
//! missing was reported failed to the depositor; no fetch or ack failed.
//!
//! Without a nats-server the trials are ignored with the reason; with
//! `QIS_REQUIRE_LIVE=1` they fail instead.

mod common;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{
    connect, on_own_cluster, replicas_current, stream_leader, Observers, OwnCluster, STREAM,
};
use qis_conformance::ensure;
use qis_conformance::support::{context, eventually, pkt, wait_for, CaseResult};
use qis_core::{
    ConsumerConfig, Delivery, EncodedPacket, ErrorKind, OutcomePacket, OutcomeTransport,
    OutcomeTransportExt, PacketId, Position, Receipt, SubjectPattern,
};
use qis_transport_nats::NatsTransport;

const PACKETS: usize = 5000;
const BATCH: usize = 50;
/// Short, so acks lost with a leader come back within the test.
const ACK_WAIT: Duration = Duration::from_secs(3);

/// How the stream leader is disrupted.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// SIGKILL, started again later.
    Kill,
    /// SIGSTOP, SIGCONT later.
    Pause,
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
    let all_fetched = eventually(
        "the consumer receiving every receipted deposit",
        Duration::from_secs(60),
        || {
            let f = fetched.lock().unwrap();
            std::future::ready(
                consumer_task.is_finished() || receipted.iter().all(|id| f.first.contains_key(id)),
            )
        },
    )
    .await;
    if consumer_task.is_finished() && !stop.load(Ordering::SeqCst) {
        consumer_task.await.map_err(|e| e.to_string())??;
        return Err("the consumer stopped before it had every receipted deposit".into());
    }
    if let Err(e) = all_fetched {
        let (got, errors) = {
            let f = fetched.lock().unwrap();
            (f.first.len(), f.fetch_errors.clone())
        };
        let info = match observer.jetstream().get_stream(STREAM).await {
            Ok(s) => match s.consumer_info("auditor").await {
                Ok(i) => format!(
                    "leader {:?}, pending {}, ack pending {}, waiting {}, delivered {:?}, ack floor {:?}",
                    i.cluster.as_ref().and_then(|c| c.leader.clone()),
                    i.num_pending,
                    i.num_ack_pending,
                    i.num_waiting,
                    i.delivered,
                    i.ack_floor
                ),
                Err(e) => format!("no consumer info: {e}"),
            },
            Err(e) => format!("no stream info: {e}"),
        };
        return Err(format!(
            "{e}: {got} of {} fetched; consumer: {info}; fetch errors: {errors:?}",
            receipted.len()
        ));
    }
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

fn main() {
    qis_conformance::run_trials(vec![
        on_own_cluster("failover_when_the_stream_leader_is_killed", |c| {
            lose_the_leader(c, Disruption::Kill)
        }),
        on_own_cluster("failover_when_the_stream_leader_is_paused", |c| {
            lose_the_leader(c, Disruption::Pause)
        }),
    ]);
}
