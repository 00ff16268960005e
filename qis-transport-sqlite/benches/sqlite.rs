//! Throughput of the SQLite transport beside raw rusqlite doing the same
//! statements on the same schema with the same transaction sizes, in one run.
//! The raw connection has the transport's connection settings: WAL, the same
//! `synchronous`, and the query planner stability guarantee (so neither side
//! re-prepares a statement with a bound `LIMIT ?` on each execution).
//!
//! `cargo bench -p qis-transport-sqlite` (about 20 s; files in a temp dir).
//!
//! Two settings, because they measure different things:
//!
//! - `synchronous=NORMAL` on `/dev/shm` (tmpfs) where there is one: commits
//!   do not wait for a disk, so the figures show what the transport adds to
//!   SQLite's own work (5 rounds, the contestants alternating who goes first):
//!   - batch deposit: 20,000 packets (~330 B) in batches of 100. Raw: one
//!     `BEGIN IMMEDIATE` per 100 rows with a cached `INSERT` (same unique and
//!     subject indexes), `COMMIT`. The target is a ratio of at least 0.8.
//!   - fetch + ack: a consumer fetches 100 at a time and acks them. Raw: per
//!     100, select the next rows by `seq`, insert a pending row for each and
//!     move the cursor in one transaction, delete the pending rows in
//!     another — the straightforward bookkeeping, and the transport's own
//!     until file format 2, which keeps one row per run of consecutive
//!     deliveries instead (one insert and one delete per batch here).
//!     "raw + decode" also parses each body into an `OutcomePacket`, as any
//!     reader must (the transport does).
//! - `synchronous=FULL`, the default: every commit waits for fsync (3 rounds):
//!   the batch deposit again, and 300 single deposits from 16 concurrent
//!   tasks through one handle (queued deposits are committed together)
//!   beside raw single-row transactions.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qis_conformance::support::bench;
use qis_core::{Checked, ConsumerConfig, EncodedPacket, OutcomePacket, OutcomeTransport, Subject};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport, Synchronous};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, TransactionBehavior};

const PACKETS: usize = 20_000;
const BATCH: usize = 100;
const SINGLES: usize = 300;
const SINGLE_TASKS: usize = 16;
const ROUNDS_CPU: usize = 5;
const ROUNDS_DISK: usize = 3;

fn packets(n: usize, tag: &str) -> Vec<EncodedPacket> {
    let prefix = Subject::default();
    (0..n)
        .map(|i| {
            let p = OutcomePacket {
                agent_id: format!("bench-agent-{tag}-{}", i % 97),
                domain: ["hvac", "grid", "fleet", "water"][i % 4].into(),
                problem_class: ["energy-anomaly", "refrigerant-loss", "bearing-wear"][i % 3].into(),
                conclusion: format!("Compressor draw {i} above baseline for the third hour running; check the filter."),
                confidence: (i % 100) as f64 / 100.0,
                context_vector: vec![0.18, 0.92, 0.03, 0.71, 0.5, 0.25, 0.125, 0.0625],
                timestamp: 1_764_000_000.0 + i as f64,
                source_node: format!("building-{}-floor-{}", i % 13, i % 7),
            };
            EncodedPacket::readable(&p, &prefix).unwrap()
        })
        .collect()
}

struct Dir(PathBuf);

impl Dir {
    fn new(base: &Path) -> Dir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let d = base.join(format!("qis-sqlite-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A raw connection with the transport's pragmas, on a file whose schema the
/// transport created.
async fn raw_connection(path: &Path, sync: Synchronous) -> Connection {
    let t = SqliteTransport::connect(config(path, sync)).await.unwrap();
    t.close().await.unwrap();
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    let level = match sync {
        Synchronous::Full => "FULL",
        _ => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level).unwrap();
    // Plans that do not depend on bound values, as the transport sets: else
    // a statement with `LIMIT ?` may be compiled again on every execution.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .unwrap();
    conn
}

const RAW_INSERT: &str =
    "INSERT INTO qis_outcomes (subject, packet_id, body, deposited_at_us) VALUES (?1, ?2, ?3, ?4)";

fn raw_insert(conn: &mut Connection, chunk: &[EncodedPacket]) {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    {
        let mut stmt = tx.prepare_cached(RAW_INSERT).unwrap();
        let at = now_us();
        for p in chunk {
            stmt.execute(params![
                p.subject().as_str(),
                &p.id().as_bytes()[..],
                &p.body()[..],
                at
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn raw_fetch_ack(conn: &mut Connection, decode: bool) -> usize {
    conn.execute(
        "INSERT INTO qis_consumers (prefix, name, pattern, start, cursor, ack_wait_ms, created_at_us) VALUES ('qis.iot', ?1, 'qis.iot.>', 'all', 0, 30000, 0)",
        [if decode { "raw-decode" } else { "raw" }],
    )
    .unwrap();
    let id = conn.last_insert_rowid();
    let mut total = 0;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let cursor: i64 = tx
            .prepare_cached("SELECT cursor FROM qis_consumers WHERE id = ?1")
            .unwrap()
            .query_row([id], |r| r.get(0))
            .unwrap();
        let rows: Vec<(i64, String, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT seq, subject, body FROM qis_outcomes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .unwrap()
            .query_map(params![cursor, BATCH as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if rows.is_empty() {
            break;
        }
        if decode {
            for (_, _, body) in &rows {
                std::hint::black_box(OutcomePacket::decode(body).unwrap());
            }
        }
        let due = now_us() / 1000 + 30_000;
        {
            let mut pend = tx
                .prepare_cached("INSERT INTO qis_pending (consumer_id, seq, last_seq, due_at_ms, deliveries) VALUES (?1, ?2, ?2, ?3, 1)")
                .unwrap();
            for (seq, _, _) in &rows {
                pend.execute(params![id, seq, due]).unwrap();
            }
        }
        let last = rows.last().unwrap().0;
        tx.prepare_cached("UPDATE qis_consumers SET cursor = ?1 WHERE id = ?2")
            .unwrap()
            .execute(params![last, id])
            .unwrap();
        tx.commit().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut del = tx
                .prepare_cached("DELETE FROM qis_pending WHERE consumer_id = ?1 AND seq = ?2")
                .unwrap();
            for (seq, _, _) in &rows {
                del.execute(params![id, seq]).unwrap();
            }
        }
        tx.commit().unwrap();
        total += rows.len();
    }
    total
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Best throughput seen per contestant.
#[derive(Default)]
struct Best(Vec<f64>);

impl Best {
    fn add(&mut self, i: usize, v: f64) {
        if self.0.len() <= i {
            self.0.resize(i + 1, 0.0);
        }
        if v > self.0[i] {
            self.0[i] = v;
        }
    }
}

fn config(path: &Path, sync: Synchronous) -> SqliteConfig {
    SqliteConfig::new(path).synchronous(sync)
}

async fn qis_batch_deposit(
    path: &Path,
    sync: Synchronous,
    batch: &[EncodedPacket],
) -> (Checked<SqliteTransport>, f64) {
    let t = SqliteTransport::connect(config(path, sync)).await.unwrap();
    let s = Instant::now();
    for chunk in batch.chunks(BATCH) {
        t.deposit_encoded_batch(chunk).await.unwrap();
    }
    (t, rate(batch.len(), s.elapsed()))
}

async fn raw_batch_deposit(
    path: &Path,
    sync: Synchronous,
    batch: &[EncodedPacket],
) -> (Connection, f64) {
    let mut raw = raw_connection(path, sync).await;
    let s = Instant::now();
    for chunk in batch.chunks(BATCH) {
        raw_insert(&mut raw, chunk);
    }
    (raw, rate(batch.len(), s.elapsed()))
}

async fn qis_fetch_ack(t: &Checked<SqliteTransport>, n: usize) -> f64 {
    let c = t
        .consumer(ConsumerConfig::new("bench", "qis.iot.>".parse().unwrap()).unwrap())
        .await
        .unwrap();
    let s = Instant::now();
    let mut got_n = 0;
    loop {
        let got = c.fetch(BATCH, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        c.ack(&got).await.unwrap();
        got_n += got.len();
    }
    assert_eq!(got_n, n);
    rate(n, s.elapsed())
}

fn raw_fetch_ack_rate(raw: &mut Connection, n: usize, decode: bool) -> f64 {
    let s = Instant::now();
    assert_eq!(raw_fetch_ack(raw, decode), n);
    rate(n, s.elapsed())
}

/// `cargo bench -p qis-transport-sqlite -- profile qis|raw-decode [ROUNDS]`:
/// only fetch + ack of one contestant on tmpfs, for `perf` or callgrind
/// (`deposit-qis|deposit-raw`: only the batch deposit).
async fn profile(args: &[String]) {
    let who = args.get(2).map_or("qis", String::as_str);
    let rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let shm = Path::new("/dev/shm");
    let dir = Dir::new(if shm.is_dir() { shm } else { Path::new("/tmp") });
    let batch = packets(PACKETS, "b");
    let mut best = 0f64;
    for round in 0..rounds {
        let path = dir.0.join(format!("p-{round}.db"));
        if who == "deposit-raw" {
            let (_, r) = raw_batch_deposit(&path, Synchronous::Normal, &batch).await;
            best = best.max(r);
            continue;
        }
        let (t, r) = qis_batch_deposit(&path, Synchronous::Normal, &batch).await;
        if who == "deposit-qis" {
            t.close().await.unwrap();
            best = best.max(r);
            continue;
        }
        let r = if who == "qis" {
            qis_fetch_ack(&t, PACKETS).await
        } else {
            t.close().await.unwrap();
            let mut raw = raw_connection(&path, Synchronous::Normal).await;
            raw_fetch_ack_rate(&mut raw, PACKETS, who == "raw-decode")
        };
        best = best.max(r);
    }
    println!("{who}: best {best:.0} pkt/s over {rounds} rounds");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` adds `--bench`.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.get(1).is_some_and(|a| a == "profile") {
        return profile(&args).await;
    }
    let started = Instant::now();
    let disk = Dir::new(&std::env::temp_dir());
    // The CPU-bound section runs on tmpfs where there is one, so disk noise
    // (checkpoint fsyncs) does not drown the difference being measured.
    let shm = Path::new("/dev/shm");
    let cpu = if shm.is_dir() {
        Dir::new(shm)
    } else {
        Dir::new(&std::env::temp_dir())
    };
    let batch = packets(PACKETS, "b");
    let singles = packets(SINGLES, "s");
    let body = batch.iter().map(|p| p.body().len()).sum::<usize>() / batch.len();
    println!("qis-transport-sqlite bench: WAL, {PACKETS} packets of ~{body} B, {BATCH} per transaction, best of each");

    // What the transport adds to SQLite's own work: synchronous=NORMAL, so
    // commits do not wait for the disk.
    let (mut deposit, mut fetch) = (Best::default(), Best::default());
    for round in 0..ROUNDS_CPU {
        let qis_path = cpu.0.join(format!("n-qis-{round}.db"));
        let raw_path = cpu.0.join(format!("n-raw-{round}.db"));
        let sync = Synchronous::Normal;
        // Alternate who goes first, so neither always gets a warm cache.
        let ((t, q), (mut raw, r)) = if round % 2 == 0 {
            let a = qis_batch_deposit(&qis_path, sync, &batch).await;
            (a, raw_batch_deposit(&raw_path, sync, &batch).await)
        } else {
            let b = raw_batch_deposit(&raw_path, sync, &batch).await;
            (qis_batch_deposit(&qis_path, sync, &batch).await, b)
        };
        deposit.add(0, q);
        deposit.add(1, r);
        if round % 2 == 0 {
            fetch.add(0, qis_fetch_ack(&t, PACKETS).await);
            fetch.add(1, raw_fetch_ack_rate(&mut raw, PACKETS, false));
            fetch.add(2, raw_fetch_ack_rate(&mut raw, PACKETS, true));
        } else {
            fetch.add(2, raw_fetch_ack_rate(&mut raw, PACKETS, true));
            fetch.add(1, raw_fetch_ack_rate(&mut raw, PACKETS, false));
            fetch.add(0, qis_fetch_ack(&t, PACKETS).await);
        }
        t.close().await.unwrap();
    }
    println!(
        "synchronous=NORMAL on {} (CPU-bound: the transport's own cost), best of {ROUNDS_CPU}",
        cpu.0.parent().unwrap().display()
    );
    let ratio = bench::record(
        "sqlite",
        "batch deposit (NORMAL, tmpfs)",
        bench::RAW,
        deposit.0[0],
        deposit.0[1],
    );
    println!(
        "  batch deposit   qis {:>8.0} pkt/s   raw {:>8.0} pkt/s   ratio {ratio:.2}  (target >= 0.80: {})",
        deposit.0[0],
        deposit.0[1],
        if ratio >= 0.8 { "met" } else { "NOT MET" }
    );
    let op = "fetch + ack (NORMAL, tmpfs)";
    println!(
        "  fetch + ack     qis {:>8.0} pkt/s   raw {:>8.0} pkt/s   ratio {:.2}   raw + decode {:>8.0} pkt/s   ratio {:.2}",
        fetch.0[0],
        fetch.0[1],
        bench::record("sqlite", op, bench::RAW, fetch.0[0], fetch.0[1]),
        fetch.0[2],
        bench::record("sqlite", op, bench::RAW_DECODE, fetch.0[0], fetch.0[2]),
    );

    // The default: synchronous=FULL, every commit waits for fsync.
    let (mut deposit, mut single) = (Best::default(), Best::default());
    for round in 0..ROUNDS_DISK {
        let sync = Synchronous::Full;
        let (t, q) =
            qis_batch_deposit(&disk.0.join(format!("f-qis-{round}.db")), sync, &batch).await;
        t.close().await.unwrap();
        let (raw, r) =
            raw_batch_deposit(&disk.0.join(format!("f-raw-{round}.db")), sync, &batch).await;
        drop(raw);
        deposit.add(0, q);
        deposit.add(1, r);

        let t = SqliteTransport::connect(config(
            &disk.0.join(format!("f-qis-single-{round}.db")),
            sync,
        ))
        .await
        .unwrap();
        let s = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..SINGLE_TASKS {
            let t = t.clone();
            let mine: Vec<EncodedPacket> = singles
                .iter()
                .skip(k)
                .step_by(SINGLE_TASKS)
                .cloned()
                .collect();
            tasks.push(tokio::spawn(async move {
                for p in &mine {
                    t.deposit_encoded(p).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        single.add(0, rate(SINGLES, s.elapsed()));
        t.close().await.unwrap();
        let mut raw = raw_connection(&disk.0.join(format!("f-raw-single-{round}.db")), sync).await;
        let s = Instant::now();
        for p in &singles {
            raw_insert(&mut raw, std::slice::from_ref(p));
        }
        single.add(1, rate(SINGLES, s.elapsed()));
    }
    println!(
        "synchronous=FULL on {} (the default; disk-bound: every commit is fsynced), best of {ROUNDS_DISK}",
        disk.0.parent().unwrap().display()
    );
    println!(
        "  batch deposit   qis {:>8.0} pkt/s   raw {:>8.0} pkt/s   ratio {:.2}",
        deposit.0[0],
        deposit.0[1],
        bench::record(
            "sqlite",
            "batch deposit (FULL, disk)",
            bench::RAW,
            deposit.0[0],
            deposit.0[1]
        )
    );
    println!(
        "  {SINGLES} single deposits from {SINGLE_TASKS} tasks   qis {:>8.0} pkt/s   raw (one transaction each) {:>8.0} pkt/s   ratio {:.2}",
        single.0[0],
        single.0[1],
        bench::record(
            "sqlite",
            "single deposits, 16 tasks (FULL, disk)",
            bench::RAW,
            single.0[0],
            single.0[1]
        )
    );
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
