//! Store and forward, proven with real hub servers of the test's own and
//! `qis bridge` processes:
//!
//! - **offline_{nats,redis,kafka}**: 5,000 packets deposited on the device's
//!   SQLite while the hub is stopped; a `qis bridge` started with the hub
//!   unreachable; the hub started; the bridge SIGKILLed twice with a batch in
//!   flight and started again; the hub ends up with every packet the device
//!   was given a receipt for: exactly once on NATS and Redis, every id on
//!   Kafka (which does not de-duplicate; the duplicates are printed).
//! - **down_direction**: packets deposited on the hub while the device is
//!   disconnected reach its file once the bridge reconnects (also across a
//!   hub restart), and `qis synth` on the file sees them with the hub down.
//! - **no_loop**: up and down bridges at once on overlapping patterns, with
//!   the device's retention pruning in between: every packet once on each
//!   side, and nothing more to forward once both sides hold everything.
//! - **full_outbox**: `when_full=refuse` refuses a deposit with `StoreFull`
//!   and loses nothing (the bridge later forwards it all and the store takes
//!   deposits again); `when_full=drop_oldest` drops, counts, and `qis status`
//!   says so.
//!
//! Each test starts its own servers on free ports (nats-server, redis-server,
//! tansu: see `support`); a missing binary makes the test ignored with the
//! reason, or failed with `QIS_REQUIRE_LIVE=1`.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::Arguments;
use qis::bridge::{Bridge, Endpoint};
use qis::{
    Backlog, ConsumerConfig, DurableConsumer, DynTransport, ErrorKind, OutcomePacket,
    OutcomeTransport, OutcomeTransportExt, PacketId, SubjectPattern,
};
use qis_conformance::support::{quick_bridge, run_until_signal, runtime, TempDir};
use serde_json::Value;
use support::{e, qis, trial, wait_until, BridgeProcess, Hub, HubKind, SqliteUrl, TestResult};

fn packet(node: &str, domain: &str, n: usize) -> OutcomePacket {
    OutcomePacket {
        agent_id: format!("{node}-agent-{}", n % 5),
        domain: domain.into(),
        problem_class: "energy-anomaly".into(),
        conclusion: format!("finding {n} on {node}"),
        confidence: 0.6 + (n % 4) as f64 / 10.0,
        context_vector: vec![0.18, 0.92, 0.03, 0.71],
        timestamp: 1_764_000_000.0 + n as f64,
        source_node: node.into(),
    }
}

fn pattern(s: &str) -> SubjectPattern {
    SubjectPattern::new(s).expect("a valid pattern")
}

/// Deposit `packets` on `url` in batches; the ids the transport gave
/// receipts for.
async fn deposit_all(url: &str, packets: &[OutcomePacket]) -> Result<Vec<PacketId>, String> {
    let t = qis::connect(url).await.map_err(e("connect"))?;
    let mut ids = Vec::with_capacity(packets.len());
    for chunk in packets.chunks(500) {
        let receipts = t.deposit_batch(chunk).await.map_err(e("deposit"))?;
        ids.extend(receipts.iter().map(|r| r.id));
    }
    t.close().await.map_err(e("close"))?;
    Ok(ids)
}

/// The backlog of consumer `name` in the file at `url` (without opening it).
async fn backlog(url: &str, name: &str) -> Result<Option<Backlog>, String> {
    let t = qis::connect(url).await.map_err(e("connect"))?;
    let listed = t.consumers().await.map_err(e("consumers"))?;
    t.close().await.map_err(e("close"))?;
    Ok(listed
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| c.backlog))
}

/// Reads everything on a transport with a consumer of its own, counting
/// each packet id.
struct Audit {
    transport: DynTransport,
    consumer: Arc<dyn DurableConsumer>,
    counts: HashMap<PacketId, u32>,
    packets: HashMap<PacketId, OutcomePacket>,
}

impl Audit {
    async fn open(url: &str, name: &str) -> Result<Audit, String> {
        let transport = qis::connect(url).await.map_err(e("audit connect"))?;
        let all = transport.prefix().all_below();
        let consumer = transport
            .consumer(ConsumerConfig::new(name, all).map_err(e("audit config"))?)
            .await
            .map_err(e("audit consumer"))?;
        Ok(Audit {
            transport,
            consumer,
            counts: HashMap::new(),
            packets: HashMap::new(),
        })
    }

    /// One fetch; how many it got.
    async fn read(&mut self, wait: Duration) -> Result<usize, String> {
        let got = self
            .consumer
            .fetch(1000, wait)
            .await
            .map_err(e("audit fetch"))?;
        self.consumer.ack(&got).await.map_err(e("audit ack"))?;
        for d in &got {
            *self.counts.entry(d.id()).or_default() += 1;
            self.packets.insert(d.id(), d.packet().clone());
        }
        Ok(got.len())
    }

    /// Read until a fetch waiting `quiet` finds nothing.
    async fn read_to_end(&mut self, quiet: Duration) -> Result<(), String> {
        while self.read(quiet).await? > 0 {}
        Ok(())
    }

    fn total(&self) -> u64 {
        self.counts.values().map(|&c| c as u64).sum()
    }

    async fn close(self) -> Result<(), String> {
        let _ = self.consumer.close().await;
        self.transport.close().await.map_err(e("audit close"))
    }
}

/// The rows of the device's file delivered to a consumer and not acked
/// (the `qis_pending` table's runs, see `qis::sqlite::schema`).
fn pending_rows(db: &std::path::Path) -> Result<HashSet<i64>, String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(e("open the device's file"))?;
    let mut stmt = conn
        .prepare("SELECT seq, last_seq FROM qis_pending")
        .map_err(e("read qis_pending"))?;
    let runs = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(e("read qis_pending"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(e("read qis_pending"))?;
    Ok(runs
        .into_iter()
        .flat_map(|(first, last)| first..=last)
        .collect())
}

fn status(v: &Value, field: &str) -> u64 {
    v["status"][field].as_u64().unwrap_or(0)
}

/// A test's folder, its hub of `kind` (not started yet), the hub's URL and
/// the URL of the device's SQLite file.
struct Site {
    dir: TempDir,
    hub: Hub,
    hub_url: String,
    device: String,
}

impl Site {
    fn new(name: &str, kind: HubKind) -> Result<Site, String> {
        let dir = TempDir::new(name);
        let hub = Hub::new(kind, dir.path())?;
        Ok(Site {
            hub_url: hub.url(""),
            device: dir.sqlite("device.db", ""),
            hub,
            dir,
        })
    }
}

/// 5,000 packets stored on the device while the hub is down reach the hub
/// through a bridge that is SIGKILLed twice with a batch in flight.
fn offline(kind: HubKind) -> TestResult {
    const N: usize = 5000;
    let Site {
        dir,
        mut hub,
        hub_url,
        device,
    } = Site::new(&format!("offline-{}", kind.name()), kind)?;
    let rt = runtime();

    // The hub is not running: the device stores its packets anyway.
    let packets: Vec<_> = (0..N).map(|n| packet("device-1", "hvac", n)).collect();
    let ids = rt.block_on(deposit_all(&device, &packets))?;
    ensure!(
        ids.iter().collect::<HashSet<_>>().len() == N,
        "{} distinct receipts for {N} packets",
        ids.len()
    );

    let args = up_bridge(
        &device,
        &hub_url,
        &["--origin", "device-1", "--batch", "100"],
    );
    let mut run = 0;
    let mut bridge = BridgeProcess::start(dir.path(), &args, run)?;
    bridge.wait_for(
        "the bridge finding the hub unreachable",
        Duration::from_secs(30),
        |v| status(v, "failures") >= 1 && v["status"]["destination_connected"] == false,
    )?;
    ensure!(
        bridge.status_u64("forwarded") == 0,
        "forwarded to a hub that is not running: {:?}",
        bridge.last()
    );
    hub.start()?;

    // SIGKILL while a batch is in flight, twice: the killed process had
    // fetched rows from the file and not acked them (rows pending in the
    // file that were not pending after the previous kill). A kill that
    // lands between two batches does not count.
    let db = dir.path().join("device.db");
    let (mut kills, mut in_flight_kills) = (0, 0);
    let mut pending_before = pending_rows(&db)?;
    while in_flight_kills < 2 {
        ensure!(
            kills < 6,
            "{kills} SIGKILLs, only {in_flight_kills} with a batch in flight"
        );
        bridge.wait_for(
            "600 packets forwarded by this bridge process",
            Duration::from_secs(60),
            |v| status(v, "forwarded") + status(v, "duplicates") >= 600,
        )?;
        bridge.kill()?;
        kills += 1;
        let pending = pending_rows(&db)?;
        let cut_short = pending.difference(&pending_before).count();
        if cut_short > 0 {
            in_flight_kills += 1;
        }
        eprintln!(
            "offline {}: SIGKILL {kills}: {cut_short} packets of the killed process in flight",
            kind.name(),
        );
        pending_before = pending;
        run += 1;
        bridge = BridgeProcess::start(dir.path(), &args, run)?;
    }

    // Within a bounded wait the hub holds every packet.
    let mut audit = rt.block_on(Audit::open(&hub_url, "audit"))?;
    wait_until(
        &format!("all {N} packets on the {} hub", kind.name()),
        Duration::from_secs(120),
        || {
            rt.block_on(audit.read(Duration::from_millis(200)))?;
            Ok((audit.counts.len() < N).then(|| format!("{} distinct", audit.counts.len())))
        },
    )
    .map_err(|err| {
        format!(
            "{err}; bridge: {:?} {}",
            bridge.last(),
            bridge.stderr_tail()
        )
    })?;
    // The batches in flight at the kills came back to the bridge (after the
    // ack wait) and were sent again: the device owes nothing any more.
    wait_until(
        "the device's up consumer owing nothing",
        Duration::from_secs(60),
        || {
            let b = rt.block_on(backlog(&device, "up"))?;
            Ok(b.filter(|b| b.total() > 0).map(|b| format!("{b:?}")))
        },
    )?;
    let (code, last) = bridge.terminate(Duration::from_secs(20))?;
    ensure!(code == Some(0), "exit code {code:?} after SIGTERM");
    ensure!(
        last.as_ref().is_some_and(|v| v["stopped"] == true),
        "no final line: {last:?}"
    );
    rt.block_on(audit.read_to_end(Duration::from_secs(2)))?;

    let on_hub: HashSet<PacketId> = audit.counts.keys().copied().collect();
    let stored: HashSet<PacketId> = ids.iter().copied().collect();
    let missing = stored.difference(&on_hub).count();
    ensure!(
        missing == 0,
        "{missing} packets the device was told were stored are not on the hub"
    );
    ensure!(
        on_hub.len() == N,
        "{} packets on the hub that the device never stored",
        on_hub.len() - N
    );
    let duplicates = audit.total() - N as u64;
    eprintln!(
        "offline {}: {N} distinct packets on the hub, {duplicates} duplicates, after {kills} SIGKILLs ({in_flight_kills} with a batch in flight)",
        kind.name()
    );
    if kind != HubKind::Kafka {
        ensure!(
            duplicates == 0,
            "{duplicates} packets stored twice on {}, which de-duplicates",
            kind.name()
        );
    }
    rt.block_on(audit.close())?;
    Ok(())
}

/// What the hub received while the device was disconnected reaches the
/// device's file, and the device synthesises from it with the hub down.
fn down_direction() -> TestResult {
    let Site {
        dir,
        mut hub,
        hub_url,
        device,
    } = Site::new("down", HubKind::Nats)?;
    hub.start()?;
    let rt = runtime();

    // The device is disconnected (no bridge) while the hub receives the
    // others' packets, one of its own, and packets outside its domain.
    let others: Vec<_> = (0..20)
        .map(|n| {
            packet(
                if n % 2 == 0 {
                    "building-b"
                } else {
                    "building-c"
                },
                "hvac",
                n,
            )
        })
        .collect();
    let own: Vec<_> = (100..105).map(|n| packet("device-1", "hvac", n)).collect();
    let elsewhere: Vec<_> = (200..205)
        .map(|n| packet("building-b", "water", n))
        .collect();
    for batch in [&others, &own, &elsewhere] {
        rt.block_on(deposit_all(&hub_url, batch))?;
    }

    // It reconnects.
    let args = [
        "--from",
        &hub_url,
        "--to",
        &device,
        "--name",
        "down-device-1",
        "--except-origin",
        "device-1",
        "--pattern",
        "qis.iot.hvac.>",
        "--max-backoff",
        "300ms",
    ];
    let bridge = BridgeProcess::start(dir.path(), &args, 0)?;
    bridge.wait_for(
        "the others' 20 packets reaching the device",
        Duration::from_secs(30),
        |v| status(v, "forwarded") == 20 && status(v, "skipped") == 5,
    )?;

    // The hub goes away and comes back with more.
    hub.stop()?;
    bridge.wait_for(
        "the bridge noticing the hub is gone",
        Duration::from_secs(30),
        |v| v["status"]["source_connected"] == false,
    )?;
    hub.start()?;
    let later: Vec<_> = (300..310)
        .map(|n| packet("building-d", "hvac", n))
        .collect();
    wait_until(
        "a deposit on the restarted hub",
        Duration::from_secs(30),
        || Ok(rt.block_on(deposit_all(&hub_url, &later)).err()),
    )?;
    bridge.wait_for(
        "the packets deposited after the hub restart reaching the device",
        Duration::from_secs(60),
        |v| status(v, "forwarded") == 30,
    )?;
    let (code, _) = bridge.terminate(Duration::from_secs(20))?;
    ensure!(code == Some(0), "exit code {code:?} after SIGTERM");
    hub.stop()?;

    // With the hub down: the file holds the others' hvac packets, once each,
    // and nothing of the device's own or outside its domain.
    let mut audit = rt.block_on(Audit::open(&device, "audit"))?;
    rt.block_on(audit.read_to_end(Duration::from_millis(200)))?;
    let want: HashSet<PacketId> = others
        .iter()
        .chain(&later)
        .map(|p| qis::EncodedPacket::readable(p, &qis::Subject::default()).map(|e| e.id()))
        .collect::<Result<_, _>>()
        .map_err(e("encode"))?;
    let have: HashSet<PacketId> = audit.counts.keys().copied().collect();
    ensure!(
        have == want && audit.total() == want.len() as u64,
        "the device holds {} packets ({} deliveries), want the {} the others deposited on hvac",
        have.len(),
        audit.total(),
        want.len()
    );
    rt.block_on(audit.close())?;

    let own_file = dir.path().join("own.json");
    let mine = packet("device-1", "hvac", 999);
    std::fs::write(&own_file, serde_json::to_string(&mine).map_err(e("json"))?)
        .map_err(e("write own.json"))?;
    let (code, out, err) = qis(
        dir.path(),
        &[
            "--url",
            &device,
            "synth",
            "hvac",
            "energy-anomaly",
            "--consumer",
            "device-synth",
            "--own-json",
            own_file.to_str().ok_or("path")?,
            "--wait",
            "1s",
            "--json",
        ],
    )?;
    ensure!(code == Some(0), "qis synth exited {code:?}: {err}");
    let s: Value = serde_json::from_str(out.trim()).map_err(e("synth json"))?;
    let agents: HashSet<&str> = others
        .iter()
        .chain(&later)
        .map(|p| p.agent_id.as_str())
        .chain([mine.agent_id.as_str()])
        .collect();
    ensure!(
        s["n_agents"].as_u64() == Some(agents.len() as u64),
        "synthesis on the file with the hub down counted {} agents, want {}: {s}",
        s["n_agents"],
        agents.len()
    );
    ensure!(s["alert"] == true, "{s}");
    Ok(())
}

/// The options of `qis bridge` for the bridge `up` from `device` to `hub`,
/// with a short ack wait and backoff, and `extra` options.
fn up_bridge<'a>(device: &'a str, hub: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--from",
        device,
        "--to",
        hub,
        "--name",
        "up",
        "--ack-wait",
        "2s",
        "--max-backoff",
        "300ms",
    ];
    args.extend(extra);
    args
}

/// Every packet id in the SQLite file at `url` with its number of copies,
/// read by a consumer that is removed again (so it never holds the store).
async fn device_contents(url: &str) -> Result<HashMap<PacketId, u32>, String> {
    let mut a = Audit::open(url, "audit-device").await?;
    a.read_to_end(Duration::from_millis(50)).await?;
    let counts = std::mem::take(&mut a.counts);
    a.close().await?;
    let sqlite = qis::sqlite::SqliteTransport::connect(url.parse().map_err(e("url"))?)
        .await
        .map_err(e("device handle"))?;
    sqlite
        .delete_consumer("audit-device")
        .await
        .map_err(e("delete the audit consumer"))?;
    sqlite.close().await.map_err(e("close"))?;
    Ok(counts)
}

/// Up and down at once, on overlapping patterns, with the device pruning
/// in between: no packet goes back where it came from.
fn no_loop() -> TestResult {
    // `_dir` keeps the folder until the test ends.
    let Site {
        dir: _dir,
        mut hub,
        hub_url,
        device: device_url,
    } = Site::new("no-loop", HubKind::Nats)?;
    hub.start()?;
    let rt = runtime();
    rt.block_on(async {
        let device = qis::connect(&device_url).await.map_err(e("device"))?;
        let hub_t = qis::connect(&hub_url).await.map_err(e("hub"))?;
        let hub_side = {
            let url = hub_url.clone();
            Endpoint::connect(move || {
                let url = url.clone();
                Box::pin(async move { qis::connect(&url).await })
            })
        };
        // Up: everything of the device's (qis.iot.>); down: the hub's hvac
        // (qis.iot.hvac.>). They overlap on hvac.
        let up_config = || quick_bridge("up").pattern(pattern("qis.iot.>"));
        let down_config = || quick_bridge("down").pattern(pattern("qis.iot.hvac.>"));
        let up = Bridge::up(device.clone(), hub_side.clone(), "device-1", up_config());
        let down = Bridge::down(hub_side, device.clone(), "device-1", down_config());
        let (stop_up, up_run) = run_until_signal(&up);
        let (stop_down, down_run) = run_until_signal(&down);

        let mut on_hub_expected = HashSet::new();
        let mut own_hvac = 0u64;
        for round in 0..2 {
            let base = round * 1000;
            // The device's: hvac (overlapping the down pattern) and water.
            let mine: Vec<_> = (0..50)
                .map(|n| packet("device-1", if n % 2 == 0 { "hvac" } else { "water" }, base + n))
                .collect();
            own_hvac += mine.iter().filter(|p| p.domain == "hvac").count() as u64;
            // The others', on the hub: hvac.
            let theirs: Vec<_> = (0..50).map(|n| packet("building-b", "hvac", base + n)).collect();
            let mut this_round = HashSet::new();
            for p in &mine {
                this_round.insert(device.deposit(p).await.map_err(e("device deposit"))?.id);
            }
            for r in hub_t.deposit_batch(&theirs).await.map_err(e("hub deposit"))? {
                this_round.insert(r.id);
            }
            on_hub_expected.extend(this_round.iter().copied());

            // Both sides hold this round's packets: the hub all of them so
            // far, the device exactly this round's (the last round's were
            // pruned, and none may come back).
            let mut hub_audit = Audit::open(&hub_url, &format!("audit-hub-{round}")).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                hub_audit.read(Duration::from_millis(100)).await?;
                let have: HashSet<PacketId> = hub_audit.counts.keys().copied().collect();
                if on_hub_expected.is_subset(&have) {
                    break;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: the hub holds {} of {} packets after 30 s; up {:?}",
                    have.intersection(&on_hub_expected).count(),
                    on_hub_expected.len(),
                    up.status()
                );
            }
            hub_audit.close().await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let have = device_contents(&device_url).await?;
                let ids: HashSet<PacketId> = have.keys().copied().collect();
                if ids == this_round {
                    ensure!(
                        have.values().all(|&c| c == 1),
                        "round {round}: a packet is in the device's file twice"
                    );
                    break;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: the device holds {} packets ({} of this round's {}); down {:?}",
                    ids.len(),
                    ids.intersection(&this_round).count(),
                    this_round.len(),
                    down.status()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            if round == 0 {
                // Local retention: a handle with a short max_age prunes the
                // file once the packets are that old and nothing owes them
                // (forwarded and acked up; the others' skipped and acked).
                let pruner = qis::sqlite::SqliteTransport::connect(
                    qis::sqlite::SqliteConfig::from_url(&device_url)
                        .map_err(e("url"))?
                        .max_age(Duration::from_millis(300)),
                )
                .await
                .map_err(e("pruning handle"))?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    pruner.prune().await.map_err(e("prune"))?;
                    let (n, _) = pruner.stored().await.map_err(e("stored"))?;
                    if n == 0 {
                        break;
                    }
                    ensure!(
                        tokio::time::Instant::now() < deadline,
                        "the device still holds {n} packets of round 0 after 30 s of pruning"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                pruner.close().await.map_err(e("close"))?;
            }
        }
        let _ = stop_up.send(());
        let _ = stop_down.send(());
        let u = up_run.await.map_err(e("up task"))?.map_err(e("up"))?;
        let d = down_run.await.map_err(e("down task"))?.map_err(e("down"))?;
        // Exactly what each had to forward; nothing sent back.
        ensure!(
            (u.forwarded, u.duplicates, u.skipped) == (100, 0, 100),
            "up forwarded {} (duplicates {}, kept back {}): want the device's 100, none twice, the 100 that came down kept back",
            u.forwarded,
            u.duplicates,
            u.skipped
        );
        ensure!(
            (d.forwarded, d.duplicates, d.skipped) == (100, 0, own_hvac),
            "down forwarded {} (duplicates {}, kept back {}): want the others' 100, none twice, the device's own {own_hvac} on hvac kept back",
            d.forwarded,
            d.duplicates,
            d.skipped
        );
        // Every packet once on the hub.
        let mut hub_audit = Audit::open(&hub_url, "audit-final").await?;
        hub_audit.read_to_end(Duration::from_millis(300)).await?;
        ensure!(
            hub_audit.counts.len() == 200 && hub_audit.total() == 200,
            "the hub holds {} packets in {} copies, want 200 once each",
            hub_audit.counts.len(),
            hub_audit.total()
        );
        hub_audit.close().await?;
        // The counters stop growing: the same bridges run again find nothing.
        let again_up = Bridge::up(device.clone(), hub_t.clone(), "device-1", up_config());
        let again_down = Bridge::down(hub_t.clone(), device.clone(), "device-1", down_config());
        for (name, bridge) in [("up", again_up), ("down", again_down)] {
            let s = bridge.drain(Duration::from_millis(300)).await.map_err(e("drain"))?;
            ensure!(
                s.forwarded == 0 && s.duplicates == 0 && s.skipped == 0,
                "{name} found more to forward once both sides held everything: {s:?}"
            );
        }
        hub_t.close().await.map_err(e("close hub"))?;
        device.close().await.map_err(e("close device"))?;
        Ok::<(), String>(())
    })?;
    hub.stop()
}

/// Fill a store whose bridge cannot reach the hub: `refuse` refuses and
/// loses nothing; `drop_oldest` drops and counts.
fn full_outbox() -> TestResult {
    let dir = TempDir::new("full");
    let mut hub = Hub::new(HubKind::Nats, dir.path())?;
    let rt = runtime();

    // refuse (the default): the bridge's consumer is in the file, the hub is
    // down, the store fills up.
    let device = dir.sqlite("refuse.db", "max_bytes=16KiB");
    let hub_url = hub.url("prefix=hub.refuse");
    let args = up_bridge(&device, &hub_url, &[]);
    let bridge = BridgeProcess::start(dir.path(), &args, 0)?;
    bridge.wait_for(
        "the bridge opening its consumer on the device",
        Duration::from_secs(30),
        |v| v["status"]["source_connected"] == true,
    )?;
    let (stored, refused) = rt.block_on(async {
        let t = qis::connect(&device).await.map_err(e("device"))?;
        let mut stored = Vec::new();
        for n in 0..10_000 {
            match t.deposit(&packet("device-1", "hvac", n)).await {
                Ok(r) => stored.push(r.id),
                Err(err) => {
                    t.close().await.map_err(e("close"))?;
                    return Ok::<_, String>((stored, err));
                }
            }
        }
        Err("10,000 deposits into a 16 KiB store and none refused".to_string())
    })?;
    ensure!(
        refused.kind() == ErrorKind::StoreFull,
        "the full store answered {refused}"
    );
    let (code, out, err) = qis(dir.path(), &["--url", &device, "status"])?;
    ensure!(code == Some(0), "qis status: {err}");
    ensure!(
        out.contains(&format!("held by: up ({} packets)", stored.len())),
        "qis status should name the consumer holding the store:\n{out}"
    );
    hub.start()?;
    bridge.wait_for(
        "the bridge forwarding the whole outbox",
        Duration::from_secs(60),
        |v| status(v, "forwarded") + status(v, "duplicates") >= stored.len() as u64,
    )?;
    // Forwarded and acked: retention may prune, the store takes deposits.
    wait_until("a deposit accepted again", Duration::from_secs(30), || {
        let r = rt.block_on(async {
            let t = qis::connect(&device).await?;
            let r = t.deposit(&packet("device-1", "hvac", 20_000)).await;
            t.close().await?;
            r
        });
        Ok(r.err().map(|e| e.to_string()))
    })?;
    let (code, _) = bridge.terminate(Duration::from_secs(20))?;
    ensure!(code == Some(0), "exit code {code:?}");
    let mut audit = rt.block_on(Audit::open(&hub_url, "audit"))?;
    rt.block_on(audit.read_to_end(Duration::from_secs(1)))?;
    let missing = stored
        .iter()
        .filter(|id| !audit.counts.contains_key(id))
        .count();
    ensure!(
        missing == 0,
        "{missing} of the {} packets stored before the refusal are not on the hub",
        stored.len()
    );
    rt.block_on(audit.close())?;

    // drop_oldest: the same outbox drops the oldest and counts them.
    let device = dir.sqlite("drop.db", "max_bytes=16KiB&when_full=drop_oldest");
    let hub_url = hub.url("prefix=hub.drop");
    let deposited = 300;
    let dropped = rt.block_on(async {
        let t = qis::connect(&device).await.map_err(e("device"))?;
        // The bridge's consumer, as a bridge that never reached the hub left it.
        t.consumer(ConsumerConfig::new("up", pattern("qis.iot.>")).map_err(e("config"))?)
            .await
            .map_err(e("consumer"))?;
        for n in 0..deposited {
            t.deposit(&packet("device-1", "hvac", n))
                .await
                .map_err(e("drop_oldest never refuses"))?;
        }
        t.close().await.map_err(e("close"))?;
        let sqlite = qis::sqlite::SqliteTransport::connect(device.parse().map_err(e("url"))?)
            .await
            .map_err(e("device handle"))?;
        let dropped = sqlite.dropped().await.map_err(e("dropped"))?;
        let (kept, _) = sqlite.stored().await.map_err(e("stored"))?;
        sqlite.close().await.map_err(e("close"))?;
        ensure!(
            dropped > 0 && dropped + kept == deposited as u64,
            "dropped {dropped} and kept {kept} of {deposited}"
        );
        Ok::<u64, String>(dropped)
    })?;
    let (code, out, err) = qis(dir.path(), &["--url", &device, "status", "--json"])?;
    ensure!(code == Some(0), "qis status: {err}");
    let v: Value = serde_json::from_str(out.trim()).map_err(e("status json"))?;
    ensure!(
        v["store"]["dropped"].as_u64() == Some(dropped) && v["store"]["when_full"] == "drop_oldest",
        "qis status --json should report {dropped} dropped: {v}"
    );
    let bridge = BridgeProcess::start(
        dir.path(),
        &["--from", &device, "--to", &hub_url, "--name", "up"],
        1,
    )?;
    let kept = deposited as u64 - dropped;
    bridge.wait_for(
        "the bridge forwarding what was kept",
        Duration::from_secs(30),
        |v| status(v, "forwarded") == kept && v["status"]["backlog"]["waiting"] == 0,
    )?;
    let (code, _) = bridge.terminate(Duration::from_secs(20))?;
    ensure!(code == Some(0), "exit code {code:?}");
    let mut audit = rt.block_on(Audit::open(&hub_url, "audit"))?;
    rt.block_on(audit.read_to_end(Duration::from_secs(1)))?;
    ensure!(
        audit.counts.len() as u64 == kept && audit.total() == kept,
        "the hub holds {} packets, want the {kept} kept (of {deposited}; {dropped} dropped)",
        audit.counts.len()
    );
    rt.block_on(audit.close())?;
    hub.stop()
}

fn main() {
    let args = Arguments::from_args();
    let available = |kinds: &[HubKind]| -> Result<(), String> {
        for k in kinds {
            k.binary()?;
        }
        Ok(())
    };
    let mut trials = Vec::new();
    for kind in [HubKind::Nats, HubKind::Redis, HubKind::Kafka] {
        trials.push(trial(
            &format!("offline_{}", kind.name()),
            available(&[kind]),
            move || offline(kind),
        ));
    }
    trials.push(trial(
        "down_direction",
        available(&[HubKind::Nats]),
        down_direction,
    ));
    trials.push(trial("no_loop", available(&[HubKind::Nats]), no_loop));
    trials.push(trial(
        "full_outbox",
        available(&[HubKind::Nats]),
        full_outbox,
    ));
    libtest_mimic::run(&args, trials).exit();
}
