//! A nats-server stopped and restarted under a depositor.
//!
//! This test starts its own nats-server (`QIS_NATS_RESTART_BIN`, or
//! `nats-server` on PATH) on a free loopback port with its own store
//! directory. A depositor deposits 1,000 packets one by one (the transport's
//! own retries turned off with `retry_for` zero), retrying each
//! failed deposit with the same packet (same id, so JetStream de-duplicates a
//! retry of something that was stored after all). At about one third the
//! server is stopped by PID (SIGTERM in one case, SIGKILL in the other) and
//! started again on the same store. Afterwards
//! a consumer on a new connection must receive every packet exactly once, and
//! every receipt the depositor got must point at that very packet.
//!
//! Without a nats-server the test is ignored with the reason; with
//! `QIS_REQUIRE_LIVE=1` it fails instead.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::OwnServer;
use qis_conformance::ensure;
use qis_conformance::support::{
    block_on, eventually, fetch_once, open_consumer, pkt, trial, wait_for, CaseResult,
};
use qis_core::{ErrorKind, OutcomeTransport, OutcomeTransportExt, Position, Receipt};
use qis_transport_nats::{NatsConfig, NatsTransport};

const PACKETS: usize = 1000;

#[derive(Default)]
struct Tally {
    done: AtomicUsize,
    failures: AtomicUsize,
    kinds: Mutex<HashMap<String, usize>>,
}

async fn deposit_through_restart(server: OwnServer, graceful: bool) -> CaseResult {
    let url = server.url();
    let server = Arc::new(Mutex::new(server));
    // The depositor retries by itself here (the transport's own retries
    // off), so each failure while the server is down is seen; the cluster
    // tests (tests/failover.rs, tests/cluster.rs) cover the transport's own retries.
    let config = NatsConfig::from_url(&url)
        .map_err(|e| e.to_string())?
        .request_timeout(Duration::from_secs(1))
        .retry_for(Duration::ZERO);
    let t = NatsTransport::connect(config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    ensure!(
        t.stream_name() == "QIS_OUTCOMES",
        "stream {}",
        t.stream_name()
    );
    let packets: Vec<_> = (0..PACKETS)
        .map(|i| pkt("restart-depositor", "hvac", "energy-anomaly", i))
        .collect();

    let tally = Arc::new(Tally::default());
    let depositor = {
        let (t, tally, packets) = (t.clone(), tally.clone(), packets.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut receipts = Vec::with_capacity(PACKETS);
            for p in &packets {
                loop {
                    match t.deposit(p).await {
                        Ok(r) => {
                            receipts.push(r);
                            break;
                        }
                        Err(e) => {
                            tally.failures.fetch_add(1, Ordering::SeqCst);
                            *tally
                                .kinds
                                .lock()
                                .unwrap()
                                .entry(e.kind().to_string())
                                .or_default() += 1;
                            if !matches!(
                                e.kind(),
                                ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::Backend
                            ) {
                                return Err(format!(
                                    "a deposit failed with an unexpected error: {e}"
                                ));
                            }
                            if Instant::now() > deadline {
                                return Err(format!(
                                    "deposits kept failing for 120 s; last error: {e}"
                                ));
                            }
                            // Back off before the retry (pacing, not synchronisation).
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                tally.done.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<Vec<Receipt>, String>(receipts)
        })
    };

    eventually("a third of the deposits", Duration::from_secs(60), || {
        std::future::ready(tally.done.load(Ordering::SeqCst) >= PACKETS / 3)
    })
    .await?;
    let stopped_at = tally.done.load(Ordering::SeqCst);
    {
        let server = server.clone();
        tokio::task::spawn_blocking(move || server.lock().unwrap().stop(graceful))
            .await
            .map_err(|e| e.to_string())??;
    }
    let failures_before = tally.failures.load(Ordering::SeqCst);
    eventually(
        "a deposit failing while the server is down",
        Duration::from_secs(15),
        || std::future::ready(tally.failures.load(Ordering::SeqCst) > failures_before),
    )
    .await?;
    {
        let server = server.clone();
        tokio::task::spawn_blocking(move || server.lock().unwrap().restart())
            .await
            .map_err(|e| e.to_string())??;
    }
    let receipts = tokio::time::timeout(Duration::from_secs(150), depositor)
        .await
        .map_err(|_| "the depositor did not finish within 150 s of the restart".to_string())?
        .map_err(|e| e.to_string())??;
    let failures = tally.failures.load(Ordering::SeqCst);
    let duplicates = receipts.iter().filter(|r| r.duplicate).count();
    eprintln!(
        "restart ({}): stopped after {stopped_at} deposits; {failures} failed attempts {:?}; {duplicates} retries recognised as duplicates",
        if graceful { "SIGTERM" } else { "SIGKILL" },
        tally.kinds.lock().unwrap()
    );
    ensure!(receipts.len() == PACKETS, "{} receipts", receipts.len());

    // A reader on a new connection: every packet exactly once.
    let reader = NatsTransport::connect_url(&url)
        .await
        .map_err(|e| format!("reader connect: {e}"))?;
    let c = open_consumer(&reader, "auditor", "qis.iot.>").await?;
    let mut got = Vec::with_capacity(PACKETS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < PACKETS {
        ensure!(
            Instant::now() < deadline,
            "the reader received {} of {PACKETS} packets within 60 s",
            got.len()
        );
        let batch = fetch_once(&c, 500, Duration::from_secs(2)).await?;
        c.ack(&batch).await.map_err(|e| format!("ack: {e}"))?;
        got.extend(batch);
    }
    let extra = fetch_once(&c, 100, Duration::from_millis(500)).await?;
    ensure!(
        extra.is_empty(),
        "{} packets beyond the {PACKETS} deposited: something was stored twice",
        extra.len()
    );

    let mut by_seq = HashMap::new();
    let mut seen = HashSet::new();
    for d in &got {
        ensure!(seen.insert(d.id()), "packet {} was stored twice", d.id());
        by_seq.insert(d.position, d.id());
    }
    let expected: HashSet<_> = packets
        .iter()
        .map(|p| {
            qis_core::EncodedPacket::readable(p, reader.prefix())
                .unwrap()
                .id()
        })
        .collect();
    ensure!(
        seen == expected,
        "the stored packets differ from those deposited"
    );
    for r in &receipts {
        ensure!(
            by_seq.get(&r.position) == Some(&r.id),
            "the receipt for {} says {} but that is not where it is stored: success was reported for something not stored",
            r.id,
            r.position
        );
    }
    let info = reader
        .jetstream()
        .get_stream("QIS_OUTCOMES")
        .await
        .map_err(|e| e.to_string())?
        .cached_info()
        .clone();
    ensure!(
        info.state.messages == PACKETS as u64,
        "the stream holds {} messages",
        info.state.messages
    );
    ensure!(
        matches!(
            receipts.last().map(|r| r.position),
            Some(Position::Sequence(_))
        ),
        "receipts carry stream sequences"
    );
    reader.close().await.map_err(|e| e.to_string())?;
    t.close().await.map_err(|e| e.to_string())?;
    let server = Arc::try_unwrap(server).map_err(|_| "server still shared".to_string())?;
    let mut server = server.into_inner().unwrap();
    server.stop(true)?;
    Ok(())
}

/// A consumer whose server is gone rides out a short outage, then says so:
/// once the client has had no server for longer than `retry_for`, a fetch
/// is `Unavailable` (a bridge then reports its source gone) rather than an
/// endless run of empty batches; after the restart it delivers again.
async fn fetch_says_when_the_server_is_gone(mut server: OwnServer) -> CaseResult {
    let config = NatsConfig::from_url(&server.url())
        .map_err(|e| e.to_string())?
        .retry_for(Duration::from_secs(2));
    let t = NatsTransport::connect(config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let c = open_consumer(&t, "gone", "qis.iot.>").await?;
    server.stop(false)?;
    let started = Instant::now();
    let kind = wait_for(
        "a fetch to report the server gone",
        Duration::from_secs(20),
        || async {
            match c.fetch(10, Duration::from_millis(500)).await {
                Ok(batch) if batch.is_empty() => None,
                Ok(batch) => Some(Err(format!(
                    "{} deliveries from a stopped server",
                    batch.len()
                ))),
                Err(e) => Some(Ok(e.kind())),
            }
        },
    )
    .await??;
    ensure!(
        kind == ErrorKind::Unavailable,
        "a fetch failed with {kind:?}, not Unavailable"
    );
    ensure!(
        started.elapsed() >= Duration::from_secs(2),
        "the fetch gave up after {:?}, before retry_for (2 s) was over",
        started.elapsed()
    );
    server.restart()?;
    t.deposit(&pkt("gone", "hvac", "energy-anomaly", 1))
        .await
        .map_err(|e| format!("deposit after the restart: {e}"))?;
    let got = wait_for(
        "a delivery after the restart",
        Duration::from_secs(30),
        || async {
            c.fetch(10, Duration::from_millis(500))
                .await
                .ok()
                .filter(|b| !b.is_empty())
        },
    )
    .await?;
    ensure!(got.len() == 1, "{} deliveries after the restart", got.len());
    c.ack(&got).await.map_err(|e| format!("ack: {e}"))?;
    c.close().await.map_err(|e| e.to_string())?;
    t.close().await.map_err(|e| e.to_string())?;
    server.stop(true)
}

/// The scenario's own waits add up to under five minutes.
const LIMIT: Duration = Duration::from_secs(300);

fn main() {
    let bin = common::server_binary();
    let trials = vec![
        trial("deposits_survive_a_server_stop_and_restart", &bin, |_| {
            let server = OwnServer::start(&[])?;
            block_on(LIMIT, deposit_through_restart(server, true))
        }),
        trial("deposits_survive_a_server_kill_and_restart", &bin, |_| {
            let server = OwnServer::start(&[])?;
            block_on(LIMIT, deposit_through_restart(server, false))
        }),
        trial("fetch_says_when_the_server_is_gone", &bin, |_| {
            let server = OwnServer::start(&[])?;
            block_on(LIMIT, fetch_says_when_the_server_is_gone(server))
        }),
    ];
    qis_conformance::run_trials(trials);
}
