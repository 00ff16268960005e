//! Faults: a consumer process killed mid-batch, a writer process killed
//! mid-deposit, the server restarted mid-stream. Nothing acknowledged is
//! lost. Each case prints its accounting on stderr:
//! `sent, acknowledged, delivered, redelivered, lost = 0`.
//!
//! The killed processes are this test binary started again as a child (see
//! the runner: [`crate::run`] does what a child is asked to and exits), on
//! the same backend through [`Backend::open`](crate::Backend::open), so
//! these cases need a store another process can open
//! ([`Capabilities::persistent`](qis_core::Capabilities)). The restart case
//! needs a private server ([`Backend::restartable`](crate::Backend::restartable)).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qis_core::{EncodedPacket, OutcomeTransportExt, PacketId, Subject};

use super::{deposit, open};
use crate::backend::{DynBackend, Stop};
use crate::child::{Child, Role};
use crate::ensure;
use crate::support::{
    assert_unique, context, deposit_seqs, eventually, fetch_once, pkt, quiet, reader, CaseResult,
};

/// What a fault case counts, printed as its last words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Packets deposited (or, for a writer killed mid-batch, sent to be).
    pub sent: usize,
    /// Packets acknowledged: acked by a consumer, or receipted to a writer.
    pub acknowledged: usize,
    /// Deliveries, first ones and repeats.
    pub delivered: usize,
    /// Deliveries of a packet delivered before.
    pub redelivered: usize,
    /// Acknowledged packets that were not delivered: must be 0.
    pub lost: usize,
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {}, acknowledged {}, delivered {}, redelivered {}, lost {}",
            self.sent, self.acknowledged, self.delivered, self.redelivered, self.lost
        )
    }
}

/// Print a case's accounting (the test output is where people read it).
fn report(b: &DynBackend, case: &str, accounting: &Accounting, more: &str) {
    eprintln!("[{}::{case}] {accounting}{more}", b.name());
}

/// How long a child may stay silent before the case fails.
const SILENCE: Duration = Duration::from_secs(60);

/// What the consumer processes said.
#[derive(Default)]
struct Consumed {
    sent: HashSet<PacketId>,
    seen: HashSet<PacketId>,
    delivered: usize,
    redelivered: usize,
    acked: HashMap<PacketId, usize>,
    /// Said `acking`, not yet `acked`, by the running child.
    acking: HashSet<PacketId>,
    /// Acks a kill interrupted (`acking` without `acked`): the store may or
    /// may not have them, so the packet is handled either way and may come
    /// back once more.
    interrupted: HashSet<PacketId>,
}

impl Consumed {
    fn record(&mut self, line: &str) -> CaseResult {
        let mut words = line.split(' ');
        let (event, id) = (words.next(), words.next());
        let id = || -> Result<PacketId, String> {
            let id: PacketId = id
                .ok_or_else(|| format!("no packet id in {line:?}"))?
                .parse()
                .map_err(context("packet id"))?;
            ensure!(
                self.sent.contains(&id),
                "the consumer got packet {id}, which was never deposited"
            );
            Ok(id)
        };
        match event {
            Some("delivered") => {
                let id = id()?;
                let count: u32 = words.next().and_then(|n| n.parse().ok()).unwrap_or(1);
                self.delivered += 1;
                if !self.seen.insert(id) || count > 1 {
                    self.redelivered += 1;
                }
            }
            Some("acking") => {
                self.acking.insert(id()?);
            }
            Some("acked") => {
                let id = id()?;
                self.acking.remove(&id);
                *self.acked.entry(id).or_default() += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Record what a killed child wrote before it died (still in the pipe).
    async fn drain(&mut self, child: &mut Child) -> CaseResult {
        while let Some(line) = child.next_line(SILENCE).await? {
            self.record(&line)?;
        }
        self.interrupted.extend(self.acking.drain());
        Ok(())
    }

    /// Packets acked, or whose ack a kill interrupted.
    fn handled(&self) -> usize {
        self.acked.len()
            + self
                .interrupted
                .iter()
                .filter(|id| !self.acked.contains_key(*id))
                .count()
    }

    /// Whether a packet coming back after the last run closed cleanly is
    /// one whose only ack a kill interrupted before the store had it.
    fn may_come_back(&self, id: &PacketId) -> bool {
        self.interrupted.contains(id) && !self.acked.contains_key(id)
    }
}

/// A consumer process is killed with SIGKILL twice, once holding half a
/// batch fetched and not acked, once at an arbitrary point; started again
/// by name each time, it goes on, and a third run acks every packet. Every
/// deposited packet is acked (exactly once, or delivered again after a
/// kill), none is lost, and once the last run closed cleanly nothing comes
/// back. A kill may land inside an ack: the store may or may not have it,
/// so that packet counts as handled, and may come back once more. So may a
/// packet acked just before a kill where acks are confirmed only on close
/// (NATS by default): the last run acks it again.
pub async fn consumer_killed_mid_batch_resumes_by_name(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    const PACKETS: usize = 200;
    let t = open(&b, &prefix).await?;
    let receipts = deposit_seqs(&*t, "device", "hvac", "energy-anomaly", 0..PACKETS).await?;
    let mut tally = Consumed {
        sent: receipts.iter().map(|r| r.id).collect(),
        ..Consumed::default()
    };
    let ack_wait = Duration::from_secs(2);
    let role = |hold_after| Role::Consume {
        name: "survivor".into(),
        ack_wait,
        batch: 20,
        hold_after,
    };

    // 1. Killed while holding a batch half acked.
    let mut child = Child::spawn(&b, &prefix, &role(Some(60)))?;
    loop {
        let line = child.expect_line(SILENCE).await?;
        tally.record(&line)?;
        if line == "holding" {
            break;
        }
    }
    child.kill()?;
    tally.drain(&mut child).await?;
    let first_kill = tally.acked.len();

    // 2. Killed wherever it is once it acked 60 more.
    let mut child = Child::spawn(&b, &prefix, &role(None))?;
    while tally.acked.len() < first_kill + 60 {
        let line = child.expect_line(SILENCE).await?;
        tally.record(&line)?;
    }
    child.kill()?;
    tally.drain(&mut child).await?;
    let second_kill = tally.acked.len();

    // 3. Runs until every packet is acked (or its ack was interrupted by a
    // kill and took effect), then stops cleanly.
    let mut child = Child::spawn(&b, &prefix, &role(None))?;
    while tally.handled() < PACKETS {
        let line = child.expect_line(SILENCE).await?;
        tally.record(&line)?;
    }
    // Where `ack()` returns before the store confirms (NATS unless
    // `confirm_acks`: its `close()` confirms), a killed run's last acks may
    // have died in the client's buffer: their packets come back after the
    // ack wait. This run acks them too, and stops once nothing has come for
    // longer than the ack wait.
    loop {
        match child.next_line(ack_wait + Duration::from_secs(1)).await {
            Ok(Some(line)) => tally.record(&line)?,
            Ok(None) => return Err(child.ended()),
            Err(_quiet) => break,
        }
    }
    let mut late = Ok(());
    child
        .finish(SILENCE, |line| {
            if let Err(e) = tally.record(line) {
                late = Err(e);
            }
        })
        .await?;
    late?;

    // Everything was acked: nothing comes back, even after the ack wait,
    // but a packet whose ack a kill interrupted before the store had it.
    let c = reader(&*t, "survivor", &prefix, ack_wait).await?;
    let extra = quiet(&c, ack_wait + Duration::from_secs(1)).await?;
    let (came_back, extra): (Vec<_>, Vec<_>) = extra
        .into_iter()
        .partition(|d| tally.may_come_back(&d.id()));
    let accounting = Accounting {
        sent: PACKETS,
        acknowledged: tally.handled(),
        delivered: tally.delivered + came_back.len(),
        redelivered: tally.redelivered + came_back.len(),
        lost: PACKETS - tally.handled(),
    };
    let acked_twice = tally.acked.values().filter(|&&n| n > 1).count();
    report(
        &b,
        "consumer_killed_mid_batch_resumes_by_name",
        &accounting,
        &format!(
            " (killed after {first_kill} and {second_kill} acked; {acked_twice} acked again after a kill; {} acks interrupted by a kill, {} of them delivered after the clean close; {} others delivered after it)",
            tally.interrupted.len(),
            came_back.len(),
            extra.len()
        ),
    );
    ensure!(
        accounting.lost == 0,
        "{} packets were never acked",
        accounting.lost
    );
    ensure!(
        extra.is_empty(),
        "{} packets came back after every packet was acked and the consumer closed cleanly",
        extra.len()
    );
    t.close().await.map_err(context("close"))
}

/// What the writer processes said.
#[derive(Default)]
struct Written {
    attempted: HashSet<PacketId>,
    receipted: HashSet<PacketId>,
    sending: usize,
}

impl Written {
    fn record(&mut self, line: &str, agent: &str, prefix: &Subject, batch: usize) -> CaseResult {
        if let Some(k) = line.strip_prefix("sending ") {
            self.sending = k.parse().map_err(context("batch number"))?;
            for i in self.sending * batch..(self.sending + 1) * batch {
                let p = pkt(agent, "hvac", "energy-anomaly", i);
                let id = EncodedPacket::readable(&p, prefix)
                    .map_err(context("encode"))?
                    .id();
                self.attempted.insert(id);
            }
        } else if let Some(id) = line.strip_prefix("stored ") {
            self.receipted
                .insert(id.parse().map_err(context("packet id"))?);
        }
        Ok(())
    }
}

/// A writer process depositing batches is killed with SIGKILL, twice, at
/// an arbitrary point (for SQLite, most likely inside a write
/// transaction). Afterwards the store takes deposits again, and every
/// packet a writer got a receipt for is there, once.
pub async fn writer_killed_mid_deposit_keeps_every_receipt(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    const BATCH: usize = 50;
    let mut written = Written::default();
    let mut kills = Vec::new();
    for (agent, kill_after) in [("writer-1", 3 * BATCH), ("writer-2", 2 * BATCH)] {
        let mut child = Child::spawn(
            &b,
            &prefix,
            &Role::Deposit {
                name: agent.into(),
                batch: BATCH,
            },
        )?;
        let stored_before = written.receipted.len();
        while written.receipted.len() < stored_before + kill_after {
            let line = child.expect_line(SILENCE).await?;
            written.record(&line, agent, &prefix, BATCH)?;
        }
        child.kill()?;
        while let Some(line) = child.next_line(SILENCE).await? {
            written.record(&line, agent, &prefix, BATCH)?;
        }
        kills.push(format!("{agent} in batch {}", written.sending));
    }
    let Written {
        attempted,
        receipted,
        ..
    } = written;

    // The store takes deposits again, and holds every receipted packet.
    let t = open(&b, &prefix).await?;
    let sentinel = deposit(&t, &pkt("sentinel", "hvac", "energy-anomaly", 0)).await?;
    let c = reader(&*t, "auditor", &prefix, Duration::from_secs(60)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut ids = HashSet::new();
    while !(ids.contains(&sentinel.id) && receipted.is_subset(&ids)) {
        ensure!(
            Instant::now() < deadline,
            "within 60 s the auditor received {} packets, {} of the {} receipted ones, sentinel {}",
            got.len(),
            receipted.intersection(&ids).count(),
            receipted.len(),
            if ids.contains(&sentinel.id) {
                "included"
            } else {
                "missing"
            }
        );
        let batch = fetch_once(&c, 500, Duration::from_secs(1)).await?;
        c.ack(&batch).await.map_err(context("ack"))?;
        ids.extend(batch.iter().map(|d| d.id()));
        got.extend(batch);
    }
    got.extend(quiet(&c, Duration::from_millis(500)).await?);
    assert_unique(&got, "after the writers were killed")?;
    let sent_ids = attempted;
    let stored: HashSet<PacketId> = got
        .iter()
        .map(|d| d.id())
        .filter(|id| *id != sentinel.id)
        .collect();
    ensure!(
        stored.is_subset(&sent_ids),
        "the store holds packets no writer sent"
    );
    let accounting = Accounting {
        sent: sent_ids.len(),
        acknowledged: receipted.len(),
        delivered: stored.len(),
        redelivered: 0,
        lost: receipted.difference(&stored).count(),
    };
    report(
        &b,
        "writer_killed_mid_deposit_keeps_every_receipt",
        &accounting,
        &format!(
            " (killed {}; {} stored without a receipt)",
            kills.join(" and "),
            stored.difference(&receipted).count()
        ),
    );
    ensure!(
        accounting.lost == 0,
        "{} receipted packets are not in the store",
        accounting.lost
    );
    t.close().await.map_err(context("close"))
}

/// While one task deposits 300 packets (retrying what fails) and another
/// fetches and acks, the backend's private server is restarted twice:
/// stopped cleanly at a third, killed at two thirds. Every receipted packet
/// is delivered.
pub async fn server_restarted_mid_stream_keeps_every_ack(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    const PACKETS: usize = 300;
    let server: Arc<dyn crate::PrivateServer> = b
        .restartable()
        .ok_or("the backend has no private server")?
        .start()
        .await
        .map_err(context("start a private server"))?
        .into();
    let t = server.open(&prefix).await.map_err(context("open"))?;
    let c = reader(&*t, "steady", &prefix, Duration::from_secs(5)).await?;
    let progress = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let depositor = {
        let (t, progress, failures) = (t.clone(), progress.clone(), failures.clone());
        tokio::spawn(async move {
            let mut receipts = Vec::with_capacity(PACKETS);
            for i in 0..PACKETS {
                let p = pkt("streamer", "hvac", "energy-anomaly", i);
                loop {
                    match t.deposit(&p).await {
                        Ok(r) => {
                            receipts.push(r.id);
                            break;
                        }
                        Err(e) if e.is_transient() => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            // Pacing the retries while the server is away.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err(format!("deposit {i}: {e}")),
                    }
                }
                progress.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, String>(receipts)
        })
    };
    let delivered = Arc::new(Mutex::new(Consumed::default()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (c, delivered, done) = (c.clone(), delivered.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let batch = match c.fetch(50, Duration::from_millis(500)).await {
                    Ok(batch) => batch,
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(format!("fetch: {e}")),
                };
                let acked = c.ack(&batch).await;
                let mut d = delivered.lock().unwrap_or_else(|e| e.into_inner());
                for delivery in &batch {
                    d.delivered += 1;
                    if !d.seen.insert(delivery.id()) || delivery.delivery_count > 1 {
                        d.redelivered += 1;
                    }
                    if acked.is_ok() {
                        *d.acked.entry(delivery.id()).or_default() += 1;
                    }
                }
                match acked {
                    Err(e) if !e.is_transient() => return Err(format!("ack: {e}")),
                    _ => {}
                }
            }
            Ok(())
        })
    };

    let mut restarts = Vec::new();
    for (at, stop) in [(PACKETS / 3, Stop::Graceful), (2 * PACKETS / 3, Stop::Kill)] {
        eventually(
            &format!("{at} deposits before the restart"),
            Duration::from_secs(60),
            || std::future::ready(progress.load(Ordering::SeqCst) >= at),
        )
        .await?;
        let began = Instant::now();
        server
            .restart(stop)
            .await
            .map_err(context(&format!("restart the server ({stop})")))?;
        restarts.push(format!("{stop} after {at} ({:?} down)", began.elapsed()));
    }
    let receipts = tokio::time::timeout(Duration::from_secs(120), depositor)
        .await
        .map_err(|_| "the depositor did not finish within 120 s of the restarts".to_string())?
        .map_err(context("depositor task"))??;
    let receipted: HashSet<PacketId> = receipts.iter().copied().collect();
    let all_seen = eventually(
        "every receipted packet delivered",
        Duration::from_secs(60),
        || {
            let seen = delivered
                .lock()
                .map(|d| receipted.is_subset(&d.seen))
                .unwrap_or(false);
            std::future::ready(seen)
        },
    )
    .await;
    done.store(true, Ordering::SeqCst);
    reader.await.map_err(context("reader task"))??;
    let accounting = {
        let d = delivered.lock().unwrap_or_else(|e| e.into_inner());
        Accounting {
            sent: PACKETS,
            acknowledged: receipted.len(),
            delivered: d.delivered,
            redelivered: d.redelivered,
            lost: receipted.difference(&d.seen).count(),
        }
    };
    report(
        &b,
        "server_restarted_mid_stream_keeps_every_ack",
        &accounting,
        &format!(
            " (restarts: {}; {} deposit attempts failed and were retried)",
            restarts.join(", "),
            failures.load(Ordering::SeqCst)
        ),
    );
    all_seen?;
    ensure!(
        accounting.lost == 0,
        "{} receipted packets were never delivered",
        accounting.lost
    );
    c.close().await.map_err(context("close consumer"))?;
    t.close().await.map_err(context("close"))
}
