//! Redis stopped (SIGTERM: it flushes its AOF) and restarted in the middle of
//! 1,000 deposits, while a durable consumer consumes and acks; the depositor
//! retries each failure with the same packet, the consumer each failed
//! fetch. The consumer that consumed across the restart got every
//! acknowledged packet (redeliveries allowed: an ack lost in the outage
//! brings its packet back after the ack wait), and a consumer opened by name
//! afterwards on fresh connections gets every acknowledged packet exactly
//! once. The case prints its accounting (sent, acknowledged, delivered,
//! redelivered, lost).
//!
//! The test starts its own `redis-server` (AOF on, `appendfsync always`, data
//! in a temporary directory, a free loopback port) and stops it by PID. It is
//! ignored with the reason when `redis-server` is not installed, and fails
//! then if `QIS_REQUIRE_LIVE=1`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::Server;
use qis_conformance::support::{block_on, fetch_once, installed, pkt, trial, CaseResult};
use qis_core::{
    ConsumerConfig, DurableConsumer, EncodedPacket, OutcomeTransport, PacketId, StartPosition,
    Subject, SubjectPattern,
};
use qis_transport_redis::{RedisConfig, RedisTransport};

const TOTAL: usize = 1_000;
const RESTART_AT: usize = 500;
/// How long Redis stays down.
const OUTAGE: Duration = Duration::from_millis(1500);
/// The ack wait of the consumer across the restart.
const ACK_WAIT: Duration = Duration::from_secs(2);

async fn scenario(server: &mut Server) -> CaseResult {
    let prefix = Subject::new("restart.iot").unwrap();
    let config = RedisConfig::from_url(&format!("redis://127.0.0.1:{}", server.port))
        .map_err(|e| e.to_string())?
        .prefix(prefix.clone())
        .response_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1));
    let t = RedisTransport::connect(config.clone())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let pattern = SubjectPattern::new("restart.iot.>").unwrap();
    let consumer_config = ConsumerConfig::new("survivor", pattern.clone())
        .unwrap()
        .start(StartPosition::All);
    // Created before the deposits, so it must see every one of them.
    let c = t
        .consumer(consumer_config.clone())
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    c.close().await.map_err(|e| e.to_string())?;
    // The consumer that consumes across the restart, on connections of its own.
    let tc = RedisTransport::connect(config.clone())
        .await
        .map_err(|e| format!("connect consumer: {e}"))?;
    let across = tc
        .consumer(
            ConsumerConfig::new("across", pattern)
                .unwrap()
                .start(StartPosition::All)
                .ack_wait(ACK_WAIT),
        )
        .await
        .map_err(|e| format!("consumer: {e}"))?;

    let packets: Vec<EncodedPacket> = (0..TOTAL)
        .map(|i| {
            EncodedPacket::readable(
                &pkt("depositor", "hvac", &format!("class-{}", i % 4), i),
                &prefix,
            )
            .unwrap()
        })
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));

    // The depositor: one packet at a time, each retried (same packet) until
    // acknowledged, within a bound.
    let depositor = {
        let t = t.clone();
        let done = done.clone();
        let failures = failures.clone();
        let packets = packets.clone();
        tokio::spawn(async move {
            let mut acked = Vec::with_capacity(TOTAL);
            let mut duplicates = 0usize;
            for p in &packets {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match t.deposit_encoded(p).await {
                        Ok(r) => {
                            if r.duplicate {
                                duplicates += 1;
                            }
                            acked.push(r.id);
                            done.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(e) if Instant::now() < deadline => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            tracing::debug!(error = %e, "deposit failed; retrying the same packet");
                            // Back off a little while Redis is down.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => {
                            return Err(format!(
                                "packet {} never acknowledged within 60 s: {e}",
                                p.id()
                            ))
                        }
                    }
                }
            }
            Ok((acked, duplicates))
        })
    };

    let tally = Arc::new(Mutex::new(Tally::default()));
    let consuming = tokio::spawn(consume(across.clone(), tally.clone()));

    // The restart, in the middle of the deposits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < RESTART_AT {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} deposits acknowledged within 30 s before the restart",
                done.load(Ordering::SeqCst)
            ));
        }
        tokio::task::yield_now().await;
    }
    let at_stop = done.load(Ordering::SeqCst);
    let delivered_at_stop = tally.lock().unwrap().delivered.len();
    tokio::task::block_in_place(|| server.stop())?;
    let during = done.load(Ordering::SeqCst);
    // Stay down a while: longer than the client's reconnect budget, so the
    // depositor meets refused connections and must recover from them.
    tokio::task::block_in_place(|| {
        std::thread::sleep(OUTAGE);
        server.start()
    })?;
    let (acked, duplicates) = depositor
        .await
        .map_err(|e| format!("depositor panicked: {e}"))??;
    let failures = failures.load(Ordering::SeqCst);
    eprintln!(
        "restart: stopped after {at_stop} acknowledged deposits ({during} when it had exited), {failures} failed attempts retried, {duplicates} retries recognised as duplicates"
    );
    if at_stop >= TOTAL || during >= TOTAL {
        return Err(format!("the restart was not in the middle of the deposits ({at_stop} / {during} of {TOTAL} done)"));
    }
    if failures == 0 {
        return Err(
            "no deposit failed while Redis was down: the restart did not interrupt the depositor"
                .into(),
        );
    }
    let expected: HashSet<PacketId> = acked.iter().copied().collect();
    if expected.len() != TOTAL {
        return Err(format!(
            "{} distinct acknowledged ids, expected {TOTAL}",
            expected.len()
        ));
    }
    t.close().await.map_err(|e| e.to_string())?;

    // The consumer across the restart: every acknowledged packet delivered.
    let consumed = consuming
        .await
        .map_err(|e| format!("consumer panicked: {e}"))?;
    let tally = tally.lock().unwrap().clone();
    let lost = expected.difference(&tally.delivered).count();
    let unknown = tally.delivered.difference(&expected).count();
    eprintln!(
        "restart accounting (consumer across the restart): sent {TOTAL} ({} attempts), acknowledged {}, delivered {} ({} deliveries), redelivered {}, lost {lost}; {} fetch errors and {} ack errors retried; {delivered_at_stop} delivered before the stop",
        TOTAL + failures,
        expected.len(),
        tally.delivered.len(),
        tally.deliveries,
        tally.deliveries - tally.delivered.len(),
        tally.fetch_errors,
        tally.ack_errors,
    );
    consumed?;
    if lost != 0 || unknown != 0 {
        return Err(format!(
            "the consumer across the restart lost {lost} acknowledged packets and got {unknown} never acknowledged"
        ));
    }
    if delivered_at_stop == 0 || delivered_at_stop >= TOTAL {
        return Err(format!(
            "the consumer had {delivered_at_stop} of {TOTAL} packets when Redis stopped: the restart was not in the middle of its stream"
        ));
    }
    if tally.fetch_errors == 0 {
        return Err(
            "no fetch failed while Redis was down: the restart did not interrupt the consumer"
                .into(),
        );
    }
    tc.close().await.map_err(|e| e.to_string())?;

    // Another "process": fresh connections, the consumer re-opened by name.
    let t2 = RedisTransport::connect(config)
        .await
        .map_err(|e| format!("reconnect: {e}"))?;
    let c2 = t2
        .consumer(consumer_config)
        .await
        .map_err(|e| format!("re-open consumer: {e}"))?;
    let mut seen: HashSet<PacketId> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < TOTAL {
        if Instant::now() > deadline {
            return Err(format!(
                "consumer received {} of {TOTAL} acknowledged packets within 30 s",
                seen.len()
            ));
        }
        let batch = fetch_once(&c2, 500, Duration::from_secs(2)).await?;
        c2.ack(&batch).await.map_err(|e| format!("ack: {e}"))?;
        for d in batch {
            if !expected.contains(&d.id()) {
                return Err(format!(
                    "received packet {} that was never acknowledged",
                    d.id()
                ));
            }
            if !seen.insert(d.id()) {
                return Err(format!(
                    "packet {} was delivered twice (stored twice?)",
                    d.id()
                ));
            }
        }
    }
    let extra = fetch_once(&c2, 100, Duration::from_millis(500)).await?;
    if !extra.is_empty() {
        return Err(format!(
            "{} packets arrived beyond the {TOTAL} acknowledged",
            extra.len()
        ));
    }
    c2.close().await.map_err(|e| e.to_string())?;
    t2.close().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// What the consumer across the restart saw.
#[derive(Debug, Default, Clone)]
struct Tally {
    delivered: HashSet<PacketId>,
    deliveries: usize,
    fetch_errors: usize,
    ack_errors: usize,
}

/// Fetch and ack until all [`TOTAL`] packets arrived and then for two more
/// ack waits (so deliveries whose ack was lost in the outage come back and
/// are counted), retrying failures while Redis is down.
async fn consume(c: Arc<dyn DurableConsumer>, tally: Arc<Mutex<Tally>>) -> CaseResult {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut all_since: Option<Instant> = None;
    loop {
        if all_since.is_some_and(|at| at.elapsed() > ACK_WAIT * 2) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let n = tally.lock().unwrap().delivered.len();
            return Err(format!(
                "the consumer across the restart got {n} of {TOTAL} packets within 90 s"
            ));
        }
        match c.fetch(100, Duration::from_millis(500)).await {
            Ok(batch) => {
                {
                    let mut t = tally.lock().unwrap();
                    t.deliveries += batch.len();
                    t.delivered.extend(batch.iter().map(|d| d.id()));
                    if all_since.is_none() && t.delivered.len() >= TOTAL {
                        all_since = Some(Instant::now());
                    }
                }
                if !batch.is_empty() && c.ack(&batch).await.is_err() {
                    // Not acked: they come back after the ack wait.
                    tally.lock().unwrap().ack_errors += 1;
                }
            }
            Err(e) => {
                tally.lock().unwrap().fetch_errors += 1;
                tracing::debug!(error = %e, "fetch failed; retrying");
                // Back off a little while Redis is down.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn run() -> CaseResult {
    let mut server = Server::new(
        "restart",
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        false,
    );
    server.start()?;
    let r = block_on(Duration::from_secs(170), scenario(&mut server));
    server.stop()?;
    r
}

fn main() {
    let ready = if installed("redis-server", "--version") {
        Ok(())
    } else {
        Err("redis-server is not installed (scripts/servers/redis.sh install)".to_string())
    };
    qis_conformance::run_trials(vec![trial(
        "redis_restart_mid_stream_delivers_every_acknowledged_packet",
        &ready,
        |()| run(),
    )]);
}
