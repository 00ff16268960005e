//! In-flight deliveries kept as runs of consecutive rows (file format 2):
//! a batch is one run, and acks, naks, partial redeliveries, retention and
//! the upgrade of a format-1 file cut the runs exactly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qis_core::{
    Checked, ConsumerConfig, Delivery, DurableConsumer, ErrorKind, OutcomeTransport,
    OutcomeTransportExt, PacketId, Position,
};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport, WhenFull};
use rusqlite::Connection;

use qis_conformance::support::{pkt, TempDir};

const WAIT: Duration = Duration::from_secs(10);
/// Long enough that nothing falls due between two steps of a test unless
/// the test waits for it.
const ACK_WAIT: Duration = Duration::from_secs(2);

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("outcomes.db")
}

async fn open(path: &Path) -> Checked<SqliteTransport> {
    SqliteTransport::connect(SqliteConfig::new(path))
        .await
        .unwrap()
}

async fn consumer(t: &Checked<SqliteTransport>) -> std::sync::Arc<dyn DurableConsumer> {
    let config = ConsumerConfig::new("runs", "qis.iot.>".parse().unwrap())
        .unwrap()
        .ack_wait(ACK_WAIT);
    t.consumer(config).await.unwrap()
}

async fn deposit(t: &Checked<SqliteTransport>, from: usize, n: usize) {
    for i in from..from + n {
        t.deposit(&pkt("device", "hvac", "energy-anomaly", i))
            .await
            .unwrap();
    }
}

fn seq(d: &Delivery) -> i64 {
    match d.position {
        Position::Sequence(s) => s as i64,
        ref p => panic!("no row seq: {p:?}"),
    }
}

fn seqs(ds: &[Delivery]) -> Vec<i64> {
    ds.iter().map(seq).collect()
}

/// The runs in the file, as `(first, last, deliveries)`.
fn runs(path: &Path) -> Vec<(i64, i64, i64)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, last_seq, deliveries FROM qis_pending ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Fetch until something comes (a redelivery waits for its deadline).
async fn next(c: &dyn DurableConsumer, max: usize) -> Vec<Delivery> {
    let got = c.fetch(max, WAIT).await.unwrap();
    assert!(!got.is_empty(), "nothing came back within {WAIT:?}");
    got
}

/// A file with ten packets, all fetched by one consumer and none acked.
struct TenInFlight {
    _dir: TempDir,
    path: PathBuf,
    t: Checked<SqliteTransport>,
    c: std::sync::Arc<dyn DurableConsumer>,
    batch: Vec<Delivery>,
}

async fn ten_in_flight(name: &str) -> TenInFlight {
    let dir = TempDir::new(name);
    let path = db(&dir);
    let t = open(&path).await;
    deposit(&t, 0, 10).await;
    let c = consumer(&t).await;
    let batch = next(c.as_ref(), 10).await;
    assert_eq!(seqs(&batch), (1..=10).collect::<Vec<_>>());
    assert_eq!(runs(&path), [(1, 10, 1)], "one batch, one run");
    TenInFlight {
        _dir: dir,
        path,
        t,
        c,
        batch,
    }
}

#[tokio::test]
async fn partial_acks_and_naks_cut_a_run_exactly() {
    let TenInFlight {
        _dir,
        path,
        c,
        batch,
        ..
    } = ten_in_flight("runs-cut").await;

    // Acks of rows 3-5 and 8 leave three runs.
    let acked: Vec<Delivery> = batch
        .iter()
        .filter(|d| matches!(seq(d), 3..=5 | 8))
        .cloned()
        .collect();
    c.ack(&acked).await.unwrap();
    assert_eq!(runs(&path), [(1, 2, 1), (6, 7, 1), (9, 10, 1)]);
    assert_eq!(c.backlog().await.unwrap().unacked, 6);

    // A nak of row 6 makes it alone due now.
    c.nak(&batch[5], Duration::ZERO).await.unwrap();
    assert_eq!(runs(&path), [(1, 2, 1), (6, 6, 1), (7, 7, 1), (9, 10, 1)]);
    let naked = next(c.as_ref(), 10).await;
    assert_eq!(seqs(&naked), [6]);
    assert_eq!(naked[0].delivery_count, 2);
    assert_eq!(naked[0].id(), batch[5].id());
    c.ack(&naked).await.unwrap();

    // The rest comes back after the ack wait, oldest first, each once.
    let again = next(c.as_ref(), 10).await;
    assert_eq!(seqs(&again), [1, 2, 7, 9, 10]);
    assert!(again.iter().all(|d| d.delivery_count == 2));
    let want: Vec<PacketId> = [0, 1, 6, 8, 9].iter().map(|&i| batch[i].id()).collect();
    assert_eq!(again.iter().map(|d| d.id()).collect::<Vec<_>>(), want);
    assert_eq!(runs(&path), [(1, 2, 2), (7, 7, 2), (9, 10, 2)]);

    // Acking what is not in flight (any more) changes nothing.
    c.ack(&acked).await.unwrap();
    assert_eq!(c.backlog().await.unwrap().unacked, 5);
    c.ack(&again).await.unwrap();
    assert_eq!(runs(&path), []);
    assert_eq!(c.backlog().await.unwrap().unacked, 0);
    assert!(c.fetch(10, ACK_WAIT * 2).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_redelivery_takes_what_max_allows_and_the_rest_stays_due() {
    let TenInFlight { _dir, path, c, .. } = ten_in_flight("runs-max").await;
    // Unacked: due again after the ack wait, four at a time.
    let first = next(c.as_ref(), 4).await;
    assert_eq!(seqs(&first), [1, 2, 3, 4]);
    assert_eq!(runs(&path), [(1, 4, 2), (5, 10, 1)]);
    let rest = c.fetch(10, Duration::ZERO).await.unwrap();
    assert_eq!(seqs(&rest), [5, 6, 7, 8, 9, 10], "still due: no waiting");
    assert!(rest.iter().all(|d| d.delivery_count == 2));
    // Acking across the two runs (different deadlines) removes both.
    let all: Vec<Delivery> = first.into_iter().chain(rest).collect();
    c.ack(&all).await.unwrap();
    assert_eq!(runs(&path), []);
}

#[tokio::test]
async fn retention_cuts_a_run_and_counts_what_it_owed() {
    let TenInFlight {
        _dir,
        path,
        t,
        c,
        batch,
    } = ten_in_flight("runs-prune").await;
    let (_, bytes) = t.stored().await.unwrap();

    // A handle that keeps less than the ten drops the oldest on its next
    // deposit: the front of the run.
    let small = SqliteTransport::connect(
        SqliteConfig::new(&path)
            .max_bytes(bytes - 1)
            .when_full(WhenFull::DropOldest),
    )
    .await
    .unwrap();
    deposit(&small, 10, 1).await;
    let (kept, _) = small.stored().await.unwrap();
    let pruned = 11 - kept as i64;
    assert!((1..10).contains(&pruned), "{pruned} pruned");
    assert_eq!(
        small.dropped().await.unwrap(),
        pruned as u64,
        "each was owed"
    );
    assert_eq!(runs(&path), [(pruned + 1, 10, 1)]);
    assert_eq!(c.backlog().await.unwrap().unacked, (10 - pruned) as u64);

    // The new packet (never delivered) and, after the ack wait, what is
    // left of the run, each once.
    let mut got = Vec::new();
    while got.len() < (11 - pruned) as usize {
        let more = next(c.as_ref(), 20).await;
        c.ack(&more).await.unwrap();
        got.extend(more);
    }
    got.sort_by_key(seq);
    assert_eq!(seqs(&got), ((pruned + 1)..=11).collect::<Vec<_>>());
    assert_eq!(got[0].id(), batch[pruned as usize].id());
    let counts: Vec<u32> = got.iter().map(|d| d.delivery_count).collect();
    assert_eq!(counts[..counts.len() - 1], vec![2; counts.len() - 1][..]);
    assert_eq!(counts.last(), Some(&1));
}

#[tokio::test]
async fn a_format_1_file_is_upgraded_with_its_deliveries_in_flight() {
    let dir = TempDir::new("runs-upgrade");
    let path = db(&dir);
    let t = open(&path).await;
    deposit(&t, 0, 5).await;
    let c = consumer(&t).await;
    let batch = next(c.as_ref(), 3).await;
    c.close().await.unwrap();
    t.close().await.unwrap();

    // As a format-1 build left it: a row per delivery (row 2 acked; row 1
    // delivered twice and due now, row 3 due in an hour).
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE qis_pending;
             CREATE TABLE qis_pending (
                 consumer_id INTEGER NOT NULL,
                 seq         INTEGER NOT NULL,
                 due_at_ms   INTEGER NOT NULL,
                 deliveries  INTEGER NOT NULL,
                 PRIMARY KEY (consumer_id, seq)
             ) WITHOUT ROWID;
             INSERT INTO qis_pending SELECT id, 1, 0, 2 FROM qis_consumers;
             INSERT INTO qis_pending SELECT id, 3, (unixepoch() + 3600) * 1000, 1 FROM qis_consumers;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }

    let t = open(&path).await;
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    assert_eq!(runs(&path), [(1, 1, 2), (3, 3, 1)]);
    let c = consumer(&t).await;
    assert_eq!(c.backlog().await.unwrap().unacked, 2);
    let got = next(c.as_ref(), 10).await;
    // Row 1 again (its third delivery), then the two never delivered.
    assert_eq!(seqs(&got), [1, 4, 5]);
    assert_eq!(got[0].id(), batch[0].id());
    assert_eq!(
        got.iter().map(|d| d.delivery_count).collect::<Vec<_>>(),
        [3, 1, 1]
    );
    assert_eq!(runs(&path), [(1, 1, 3), (3, 3, 1), (4, 5, 1)]);
}

#[tokio::test]
async fn a_file_of_an_unknown_format_is_refused() {
    let dir = TempDir::new("runs-future");
    let path = db(&dir);
    open(&path).await.close().await.unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 3;")
        .unwrap();
    let e = SqliteTransport::connect(SqliteConfig::new(&path))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("version 3"), "{e}");
}
