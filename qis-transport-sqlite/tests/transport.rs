//! The SQLite transport's own behaviour, beyond the shared conformance suite:
//! things only a file can show (several handles, schema, retention, plans).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use qis_core::backend::InjectRaw;
use qis_core::{
    Checked, ConsumerConfig, EncodedPacket, ErrorKind, OutcomeTransport, OutcomeTransportExt,
    Position, StartPosition, Subject, SubjectPattern,
};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport, WhenFull};

use qis_conformance::support::{eventually, open_consumer, pkt, seq_of, TempDir};

const WAIT: Duration = Duration::from_secs(5);

/// The database file in `dir`.
fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("outcomes.db")
}

async fn open(dir: &TempDir) -> Checked<SqliteTransport> {
    SqliteTransport::connect(SqliteConfig::new(db(dir)))
        .await
        .unwrap()
}

fn pattern(s: &str) -> SubjectPattern {
    s.parse().unwrap()
}

#[tokio::test]
async fn deposit_dedup_returns_the_original_receipt() {
    let dir = TempDir::new("dedup");
    let t = open(&dir).await;
    let p = pkt("a", "hvac", "energy-anomaly", 0);
    let first = t.deposit(&p).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.subject.as_str(), "qis.iot.hvac.energy-anomaly");
    // Same body on another subject: still the same packet id, stored once.
    let again = t.deposit_fingerprinted(&p, 4).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.position, first.position);
    assert_eq!(again.subject, first.subject);
    // From another handle (another process) too.
    let other = open(&dir).await;
    let third = other.deposit(&p).await.unwrap();
    assert!(third.duplicate);
    assert_eq!(third.position, first.position);
    // Within one batch.
    let q = pkt("b", "hvac", "energy-anomaly", 0);
    let r = t
        .deposit_batch(&[q.clone(), q.clone(), p.clone()])
        .await
        .unwrap();
    assert!(!r[0].duplicate && r[1].duplicate && r[2].duplicate);
    assert_eq!(r[0].position, r[1].position);
    assert_eq!(t.stored().await.unwrap().0, 2);
}

#[tokio::test]
async fn batch_is_checked_before_anything_is_stored() {
    let dir = TempDir::new("batchcheck");
    let t = open(&dir).await;
    let good = EncodedPacket::readable(&pkt("1", "hvac", "x", 0), t.prefix()).unwrap();
    let outside = EncodedPacket::new(
        &pkt("2", "hvac", "x", 0),
        "other.place.hvac.x".parse().unwrap(),
    )
    .unwrap();
    let e = t.deposit_encoded_batch(&[good, outside]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSubject);
    assert_eq!(t.stored().await.unwrap().0, 0);
}

#[tokio::test]
async fn consumer_state_lives_in_the_file() {
    let dir = TempDir::new("resume");
    let a = open(&dir).await;
    for i in 0..5 {
        a.deposit(&pkt("device", "hvac", "energy-anomaly", i))
            .await
            .unwrap();
    }
    let first_wait = Duration::from_secs(2);
    let cfg = |ack_wait| {
        ConsumerConfig::new("b1", pattern("qis.iot.hvac.energy-anomaly"))
            .unwrap()
            .ack_wait(ack_wait)
    };
    let c = a.consumer(cfg(first_wait)).await.unwrap();
    let got = c.fetch(2, WAIT).await.unwrap();
    assert_eq!(got.len(), 2);
    c.ack(&got).await.unwrap();
    let unacked = c.fetch(1, WAIT).await.unwrap();
    let fetched_at = std::time::Instant::now();
    assert_eq!(unacked.len(), 1);
    a.close().await.unwrap();

    // "Another process": a new handle resumes after the last ack; the
    // unacked one comes back only after its ack wait.
    let b = open(&dir).await;
    let c = b.consumer(cfg(Duration::from_millis(300))).await.unwrap();
    // The delivery was handed out by the closed handle: this one cannot
    // ack or nak it (its redelivery is this handle's to ack).
    assert_eq!(
        c.nak(&unacked[0], Duration::ZERO).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let next = c.fetch(10, WAIT).await.unwrap();
    assert_eq!(next.len(), 2, "the two never delivered");
    assert!(next.iter().all(|d| d.delivery_count == 1));
    c.ack(&next).await.unwrap();
    // The original ack wait still governs the first delivery's deadline.
    let again = c.fetch(10, WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id(), unacked[0].id());
    assert_eq!(again[0].delivery_count, 2);
    assert!(
        fetched_at.elapsed() >= first_wait - Duration::from_millis(10),
        "back after {:?}, before the original ack wait",
        fetched_at.elapsed()
    );
    // Not acked: back after the (new) 300 ms ack wait, counted again.
    let redelivered_at = std::time::Instant::now();
    let third = c.fetch(10, WAIT).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].delivery_count, 3);
    let took = redelivered_at.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "back after {took:?}, not after the new 300 ms ack wait"
    );
    // nak makes it due now.
    c.nak(&third[0], Duration::ZERO).await.unwrap();
    let fourth = c.fetch(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(fourth.len(), 1);
    assert_eq!(fourth[0].delivery_count, 4);
    c.ack(&fourth).await.unwrap();
    assert!(c
        .fetch(10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn conflict_on_another_pattern_and_names_are_per_prefix() {
    let dir = TempDir::new("conflict");
    let t = open(&dir).await;
    open_consumer(&t, "c", "qis.iot.hvac.>").await.unwrap();
    let e = t
        .consumer(ConsumerConfig::new("c", pattern("qis.iot.>")).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // The same name under another prefix is another consumer.
    let other_prefix: Subject = "plant.two".parse().unwrap();
    let u = SqliteTransport::connect(SqliteConfig::new(db(&dir)).prefix(other_prefix))
        .await
        .unwrap();
    open_consumer(&u, "c", "plant.two.>").await.unwrap();
}

#[tokio::test]
async fn prefixes_sharing_a_file_do_not_see_each_other() {
    let dir = TempDir::new("prefixes");
    let a = open(&dir).await;
    let b =
        SqliteTransport::connect(SqliteConfig::new(db(&dir)).prefix("plant.two".parse().unwrap()))
            .await
            .unwrap();
    a.deposit(&pkt("a", "hvac", "x", 0)).await.unwrap();
    b.deposit(&pkt("b", "hvac", "x", 0)).await.unwrap();
    let c = open_consumer(&a, "all", ">").await.unwrap();
    let got = c.fetch(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].subject(), "qis.iot.hvac.x");
}

#[tokio::test]
async fn handles_share_one_consumer() {
    let dir = TempDir::new("shared");
    let a = open(&dir).await;
    let b = open(&dir).await;
    let n = 60;
    let batch: Vec<_> = (0..n).map(|i| pkt("device", "hvac", "x", i)).collect();
    a.deposit_batch(&batch).await.unwrap();
    let ca = open_consumer(&a, "work", "qis.iot.>").await.unwrap();
    let cb = open_consumer(&b, "work", "qis.iot.>").await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut from = [0usize; 2];
    while seen.len() < n {
        for (k, c) in [&ca, &cb].into_iter().enumerate() {
            let got = c.fetch(7, Duration::from_millis(200)).await.unwrap();
            from[k] += got.len();
            for d in &got {
                assert!(seen.insert(d.id()), "delivered twice: {}", d.id());
            }
            c.ack(&got).await.unwrap();
        }
    }
    assert!(
        from[0] > 0 && from[1] > 0,
        "both handles got work: {from:?}"
    );
}

#[tokio::test]
async fn start_positions() {
    let dir = TempDir::new("start");
    let t = open(&dir).await;
    t.deposit(&pkt("old", "hvac", "x", 0)).await.unwrap();
    let since = SystemTime::now();
    t.deposit(&pkt("mid", "hvac", "x", 0)).await.unwrap();
    let new = t
        .consumer(
            ConsumerConfig::new("new", pattern("qis.iot.>"))
                .unwrap()
                .start(StartPosition::New),
        )
        .await
        .unwrap();
    let since_c = t
        .consumer(
            ConsumerConfig::new("since", pattern("qis.iot.>"))
                .unwrap()
                .start(StartPosition::Since(since)),
        )
        .await
        .unwrap();
    t.deposit(&pkt("late", "hvac", "x", 0)).await.unwrap();
    let got: Vec<_> = new.fetch(10, WAIT).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|d| d.packet().agent_id.as_str())
            .collect::<Vec<_>>(),
        ["late"]
    );
    let got = since_c.fetch(10, WAIT).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|d| d.packet().agent_id.as_str())
            .collect::<Vec<_>>(),
        ["mid", "late"]
    );
}

#[tokio::test]
async fn patterns_of_every_form_match_exactly_and_in_order() {
    let dir = TempDir::new("patterns");
    let t = open(&dir).await;
    let subjects = [
        "qis.iot.hvac.energy",
        "qis.iot.hvac.energy.fp1",
        "qis.iot.hvac.leak",
        "qis.iot.grid.energy",
        "qis.iot.hvacx.energy",
        "qis.iot.hvac-2.energy",
    ];
    let mut all = Vec::new();
    for round in 0..3 {
        for (i, s) in subjects.iter().enumerate() {
            let p = pkt(&format!("{round}-{i}"), "d", "p", 0);
            all.push(EncodedPacket::new(&p, s.parse().unwrap()).unwrap());
        }
    }
    t.deposit_encoded_batch(&all).await.unwrap();
    for (i, pat) in [
        "qis.iot.hvac.energy",
        "qis.iot.hvac.>",
        "qis.iot.hvac.*",
        "qis.iot.*.energy",
        "qis.iot.>",
        ">",
        "*.*.hvac.*.*",
        "qis.iot.hvac.energy.>",
    ]
    .into_iter()
    .enumerate()
    {
        let pat = pattern(pat);
        let expected: Vec<String> = all
            .iter()
            .filter(|p| pat.matches(p.subject().as_str()))
            .map(|p| p.subject().to_string())
            .collect();
        let c = t
            .consumer(ConsumerConfig::new(format!("c{i}"), pat.clone()).unwrap())
            .await
            .unwrap();
        let mut got = Vec::new();
        loop {
            // Small fetches exercise the cursor across chunks.
            let batch = c.fetch(2, Duration::from_millis(50)).await.unwrap();
            if batch.is_empty() {
                break;
            }
            c.ack(&batch).await.unwrap();
            got.extend(batch.iter().map(|d| d.subject().to_string()));
        }
        assert_eq!(got, expected, "pattern {pat}");
    }
}

#[tokio::test]
async fn malformed_rows_are_skipped_counted_and_never_redelivered() {
    let dir = TempDir::new("malformed");
    let t = open(&dir).await;
    t.deposit(&pkt("before", "hvac", "x", 0)).await.unwrap();
    t.inject_raw("qis.iot.hvac.x", b"not json").await.unwrap();
    t.inject_raw("qis.iot.hvac.x", &[b'{'; 600]).await.unwrap();
    t.deposit(&pkt("after", "hvac", "x", 0)).await.unwrap();
    let cfg = ConsumerConfig::new("m", pattern("qis.iot.hvac.x"))
        .unwrap()
        .ack_wait(Duration::from_millis(100));
    let c = t.consumer(cfg).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let b = c.fetch(10, Duration::from_millis(300)).await.unwrap();
        c.ack(&b).await.unwrap();
        got.extend(b);
    }
    assert_eq!(got.len(), 2);
    assert_eq!(c.malformed_skipped(), 2);
}

#[tokio::test]
async fn fetch_returns_when_another_handle_deposits() {
    let dir = TempDir::new("wake");
    let a = open(&dir).await;
    let b = open(&dir).await;
    let c = open_consumer(&a, "w", "qis.iot.>").await.unwrap();
    let started = std::time::Instant::now();
    let fetch = tokio::spawn(async move { c.fetch(10, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.deposit(&pkt("1", "hvac", "x", 0)).await.unwrap();
    let got = tokio::time::timeout(WAIT, fetch)
        .await
        .expect("fetch woke")
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn live_sees_other_handles_and_own_deposits() {
    let dir = TempDir::new("live");
    let a = open(&dir).await;
    let b = open(&dir).await;
    let mut sub = a.subscribe(pattern("qis.iot.hvac.*")).await.unwrap();
    b.deposit(&pkt("1", "hvac", "x", 0)).await.unwrap();
    b.deposit(&pkt("2", "grid", "x", 0)).await.unwrap();
    a.deposit(&pkt("3", "hvac", "y", 0)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let r = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("live packet")
            .unwrap()
            .unwrap();
        got.push(r.packet.agent_id);
    }
    assert_eq!(got, ["1", "3"]);
}

#[tokio::test]
async fn retention_by_bytes_prunes_the_oldest() {
    let dir = TempDir::new("bytes");
    // The consumer below owes every packet: only drop_oldest prunes them
    // (the default refuses; tests/full.rs).
    let t = SqliteTransport::connect(
        SqliteConfig::new(db(&dir))
            .max_bytes(4096)
            .when_full(WhenFull::DropOldest),
    )
    .await
    .unwrap();
    let c = open_consumer(&t, "r", "qis.iot.>").await.unwrap();
    for i in 0..100 {
        t.deposit(&pkt("device", "hvac", "x", i)).await.unwrap();
    }
    let (n, bytes) = t.stored().await.unwrap();
    assert!(bytes <= 4096, "{bytes} bytes stored");
    assert!(n > 5 && n < 100, "{n} packets kept");
    assert_eq!(
        t.dropped().await.unwrap(),
        100 - n,
        "every pruned packet was owed"
    );
    let got = c.fetch(200, WAIT).await.unwrap();
    assert_eq!(got.len() as u64, n);
    assert_eq!(seq_of(got.last().unwrap()), 99);
}

#[tokio::test]
async fn retention_by_age_prunes_old_packets_and_their_deliveries() {
    let dir = TempDir::new("age");
    let cfg = SqliteConfig::new(db(&dir))
        .max_age(Duration::from_millis(300))
        .when_full(WhenFull::DropOldest);
    let t = SqliteTransport::connect(cfg).await.unwrap();
    t.deposit(&pkt("old", "hvac", "x", 0)).await.unwrap();
    let c = open_consumer(&t, "r", "qis.iot.>").await.unwrap();
    let first = c.fetch(1, WAIT).await.unwrap();
    assert_eq!(first.len(), 1);
    c.nak(&first[0], Duration::from_millis(50)).await.unwrap();
    eventually("the old packet was pruned", WAIT, || async {
        t.prune().await.unwrap();
        t.stored().await.unwrap().0 == 0
    })
    .await
    .unwrap();
    assert_eq!(t.dropped().await.unwrap(), 1, "the nak'd packet was owed");
    t.deposit(&pkt("new", "hvac", "x", 0)).await.unwrap();
    let got = c.fetch(10, WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].packet().agent_id, "new");
    // seq never goes back after the table was emptied.
    match got[0].position {
        Position::Sequence(s) => assert_eq!(s, 2),
        p => panic!("{p:?}"),
    }
}

#[tokio::test]
async fn closed_transport_says_closed() {
    let dir = TempDir::new("closed");
    let t = open(&dir).await;
    let c = open_consumer(&t, "c", "qis.iot.>").await.unwrap();
    let mut sub = t.subscribe(pattern("qis.iot.>")).await.unwrap();
    t.close().await.unwrap();
    assert_eq!(
        t.deposit(&pkt("1", "hvac", "x", 0))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
    assert_eq!(
        c.fetch(1, Duration::ZERO).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert!(tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("stream ended")
        .is_none());
    t.close().await.unwrap();
}

#[tokio::test]
async fn unopenable_file_is_unavailable() {
    let dir = TempDir::new("unopen");
    let e = SqliteTransport::connect(SqliteConfig::new(dir.path().join("missing-dir/x.db")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(e.transport(), "sqlite");
    std::fs::write(db(&dir), b"this is not a database, just some text that is long enough....................................................").unwrap();
    let e = SqliteTransport::connect(SqliteConfig::new(db(&dir)))
        .await
        .unwrap_err();
    assert_eq!(e.transport(), "sqlite");
}

#[tokio::test]
async fn fire_and_forget_is_unsupported() {
    let dir = TempDir::new("faf");
    let t = open(&dir).await;
    assert!(!t.capabilities().fire_and_forget);
    let e = t.publish(&pkt("1", "hvac", "x", 0)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[tokio::test]
async fn concurrent_depositors_lose_nothing() {
    let dir = TempDir::new("concurrent");
    let mut tasks = Vec::new();
    for h in 0..4 {
        let t = open(&dir).await;
        tasks.push(tokio::spawn(async move {
            let mut inner = Vec::new();
            for k in 0..4 {
                let t = t.clone();
                inner.push(tokio::spawn(async move {
                    for i in 0..25 {
                        t.deposit(&pkt(&format!("{h}-{k}-{i}"), "hvac", "x", 0))
                            .await
                            .unwrap();
                    }
                }));
            }
            for j in inner {
                j.await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t = open(&dir).await;
    assert_eq!(t.stored().await.unwrap().0, 400);
}

/// Another program holding the write lock: fetch and ack neither fail at
/// once nor hold the caller's thread on it; they wait on the connection
/// thread up to `busy_timeout` and then fail with `Timeout`. A try that found
/// the lock taken changed nothing: once it is free, the packet not yet
/// delivered comes, once, and the acks go through.
#[tokio::test]
async fn consumer_calls_wait_for_another_writer_and_a_busy_try_changes_nothing() {
    let dir = TempDir::new("busy");
    let config = SqliteConfig::new(db(&dir)).busy_timeout(Duration::from_millis(200));
    let t = SqliteTransport::connect(config).await.unwrap();
    let c = open_consumer(&t, "c", "qis.iot.>").await.unwrap();
    let first = t.deposit(&pkt("1", "hvac", "x", 0)).await.unwrap();
    let second = t.deposit(&pkt("2", "hvac", "x", 1)).await.unwrap();
    let got = c.fetch(1, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].position, first.position);

    let other = rusqlite::Connection::open(db(&dir)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let busy = c.fetch(10, Duration::ZERO).await.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Timeout, "{busy}");
    let busy = c.ack(&got).await.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Timeout, "{busy}");
    other.execute_batch("COMMIT").unwrap();

    let rest = c.fetch(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        rest.iter().map(|d| d.position).collect::<Vec<_>>(),
        [second.position],
        "the busy tries moved the cursor or marked packets delivered"
    );
    c.ack(&got).await.unwrap();
    c.ack(&rest).await.unwrap();
    let backlog = c.backlog().await.unwrap();
    assert_eq!((backlog.waiting, backlog.unacked), (0, 0));
    t.close().await.unwrap();
}

/// A consumer that only reads commits its bookkeeping on the caller's
/// thread without checkpointing there; it asks the connection thread for a
/// checkpoint instead, so the write-ahead log stays near SQLite's usual
/// 1,000 pages however long it runs.
#[tokio::test]
async fn a_reading_consumer_keeps_the_log_bounded() {
    let dir = TempDir::new("wal");
    let t = open(&dir).await;
    let packets: Vec<_> = (0..3000).map(|i| pkt("a", "hvac", "x", i)).collect();
    t.deposit_batch(&packets).await.unwrap();
    let wal = dir.path().join("outcomes.db-wal");
    let frame = 4096 + 24;
    let c = open_consumer(&t, "c", "qis.iot.>").await.unwrap();
    let mut delivered = 0;
    loop {
        let got = c.fetch(1, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        c.ack(&got).await.unwrap();
        delivered += got.len();
    }
    assert_eq!(delivered, packets.len());
    // Every checkpoint asked for has run once a later call came back.
    t.stored().await.unwrap();
    let bytes = std::fs::metadata(&wal).unwrap().len();
    assert!(
        bytes < 1500 * frame,
        "the log grew to {} frames: no checkpoint ran while the consumer read",
        bytes / frame
    );
    t.close().await.unwrap();
}

/// With `synchronous=NORMAL` deposits commit on the caller's thread too;
/// the log stays near SQLite's usual 1,000 pages all the same.
#[tokio::test]
async fn deposits_on_the_callers_thread_keep_the_log_bounded() {
    let dir = TempDir::new("wal-deposit");
    let config = SqliteConfig::new(db(&dir)).synchronous(qis_transport_sqlite::Synchronous::Normal);
    let t = SqliteTransport::connect(config).await.unwrap();
    let packets: Vec<_> = (0..6000).map(|i| pkt("a", "hvac", "x", i)).collect();
    for chunk in packets.chunks(20) {
        t.deposit_batch(chunk).await.unwrap();
    }
    // Every checkpoint asked for has run once a later call came back.
    t.stored().await.unwrap();
    let frame = 4096 + 24;
    let bytes = std::fs::metadata(dir.path().join("outcomes.db-wal"))
        .unwrap()
        .len();
    assert!(
        bytes < 1500 * frame,
        "the log grew to {} frames: it was not checkpointed and started over",
        bytes / frame
    );
    assert_eq!(t.stored().await.unwrap().0, 6000);
    t.close().await.unwrap();
}
