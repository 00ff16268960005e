//! A full outbox never loses silently: what `when_full=refuse` (the default)
//! and `when_full=drop_oldest` do when retention reaches packets a durable
//! consumer still owes; the backlog each consumer reports; and removing a
//! consumer that holds the store.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use qis_conformance::support::{open_consumer, pkt, TempDir};
use qis_core::{
    Checked, DurableConsumer, ErrorKind, OutcomePacket, OutcomeTransport, OutcomeTransportExt,
};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport, WhenFull};

const WAIT: Duration = Duration::from_secs(5);

/// The database file in `dir`.
fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("outcomes.db")
}

/// A packet on `domain`/`problem` from agent `agent-{tag}` (the tag makes
/// its id unique).
fn packet(domain: &str, problem: &str, tag: &str) -> OutcomePacket {
    pkt(&format!("agent-{tag}"), domain, problem, 0)
}

async fn open(config: SqliteConfig) -> Checked<SqliteTransport> {
    SqliteTransport::connect(config).await.unwrap()
}

/// Deposit numbered packets until the store refuses one; returns the ids
/// the store gave a receipt for, and the refusal.
async fn fill(t: &Checked<SqliteTransport>, limit: usize) -> (Vec<String>, qis_core::Error) {
    let mut stored = Vec::new();
    for i in 0..limit {
        match t.deposit(&packet("hvac", "x", &i.to_string())).await {
            Ok(r) => stored.push(r.id.to_hex()),
            Err(e) => return (stored, e),
        }
    }
    panic!("{limit} deposits and the store never refused one");
}

/// Every packet the consumer still has, fetched and acked.
async fn drain(c: &dyn DurableConsumer) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let got = c.fetch(500, Duration::from_millis(50)).await.unwrap();
        if got.is_empty() {
            return ids;
        }
        c.ack(&got).await.unwrap();
        ids.extend(got.iter().map(|d| d.id().to_hex()));
    }
}

#[tokio::test]
async fn refuse_fails_a_deposit_with_store_full_and_loses_nothing() {
    let dir = TempDir::new("refuse");
    let t = open(SqliteConfig::new(db(&dir)).max_bytes(4096)).await;
    assert_eq!(t.config().when_full, WhenFull::Refuse, "the default");
    let up = open_consumer(&t, "up", "qis.iot.>").await.unwrap();
    let (stored, refused) = fill(&t, 1000).await;
    assert_eq!(refused.kind(), ErrorKind::StoreFull, "{refused}");
    assert!(refused.is_transient());
    assert!(
        refused.message().contains("\"up\"") && refused.message().contains("drop_oldest"),
        "the message names who holds the store and what to do: {refused}"
    );
    let (n, bytes) = t.stored().await.unwrap();
    assert_eq!(
        n as usize,
        stored.len(),
        "the refused packet was not stored"
    );
    assert!(bytes <= 4096, "{bytes} bytes");
    assert_eq!(t.dropped().await.unwrap(), 0);

    // A batch is refused as a whole: nothing of it is stored.
    let batch: Vec<_> = (0..5)
        .map(|i| packet("hvac", "x", &format!("batch-{i}")))
        .collect();
    let e = t.deposit_batch(&batch).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StoreFull);
    assert_eq!(t.stored().await.unwrap().0 as usize, stored.len());
    // A re-deposit of a stored packet is still answered: it needs no room.
    assert!(
        t.deposit(&packet("hvac", "x", "0"))
            .await
            .unwrap()
            .duplicate
    );

    // The consumer gets every packet the store gave a receipt for.
    let got = drain(up.as_ref()).await;
    assert_eq!(
        got, stored,
        "every stored packet reaches the consumer, in order"
    );
    // Acked: nothing is owed any more, retention may prune, deposits go on
    // as long as the consumer keeps up.
    for i in 0..200 {
        t.deposit(&packet("hvac", "x", &format!("after-{i}")))
            .await
            .unwrap_or_else(|e| panic!("deposit {i} after the consumer caught up: {e}"));
        if i % 10 == 9 {
            drain(up.as_ref()).await;
        }
    }
}

#[tokio::test]
async fn refuse_keeps_owed_packets_past_max_age_and_only_those() {
    let dir = TempDir::new("refuse-age");
    let t = open(SqliteConfig::new(db(&dir)).max_age(Duration::from_millis(200))).await;
    let c = open_consumer(&t, "hvac-only", "qis.iot.hvac.>")
        .await
        .unwrap();
    t.deposit(&packet("hvac", "x", "owed")).await.unwrap();
    t.deposit(&packet("water", "x", "not-owed")).await.unwrap();
    // Past max_age (the deposit times are in the file: the wait is the test's
    // subject, not a synchronisation).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pruned = t.prune().await.unwrap();
    assert_eq!(pruned.packets, 0, "the oldest packet is owed: {pruned:?}");
    assert_eq!(t.stored().await.unwrap().0, 2);
    let got = c.fetch(10, WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].packet().agent_id, "agent-owed");
    // Delivered, not acked: still owed.
    assert_eq!(t.prune().await.unwrap().packets, 0);
    c.ack(&got).await.unwrap();
    let pruned = t.prune().await.unwrap();
    assert_eq!(
        (pruned.packets, pruned.dropped),
        (2, 0),
        "nothing owed: plain retention"
    );
}

#[tokio::test]
async fn a_store_without_consumers_owes_nothing_and_never_refuses() {
    let dir = TempDir::new("no-consumers");
    let t = open(SqliteConfig::new(db(&dir)).max_bytes(4096)).await;
    for i in 0..300 {
        t.deposit(&packet("hvac", "x", &i.to_string()))
            .await
            .unwrap_or_else(|e| panic!("deposit {i}: {e}"));
    }
    let (n, bytes) = t.stored().await.unwrap();
    assert!(n < 300 && bytes <= 4096, "{n} packets, {bytes} bytes");
    assert_eq!(
        t.dropped().await.unwrap(),
        0,
        "pruning what nobody owes is no drop"
    );
}

#[tokio::test]
async fn drop_oldest_drops_counts_and_tells_the_consumer_what_is_left() {
    let dir = TempDir::new("drop");
    let t = open(
        SqliteConfig::new(db(&dir))
            .max_bytes(4096)
            .when_full(WhenFull::DropOldest),
    )
    .await;
    let c = open_consumer(&t, "up", "qis.iot.>").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            t.deposit(&packet("hvac", "x", &i.to_string()))
                .await
                .unwrap_or_else(|e| panic!("drop_oldest never refuses: deposit {i}: {e}"))
                .id
                .to_hex(),
        );
    }
    let (n, _) = t.stored().await.unwrap();
    let dropped = t.dropped().await.unwrap();
    assert_eq!(dropped, 200 - n, "every packet removed was owed to `up`");
    let b = c.backlog().await.unwrap();
    assert_eq!((b.waiting, b.unacked), (n, 0));
    let got = drain(c.as_ref()).await;
    assert_eq!(
        got,
        ids[dropped as usize..],
        "the newest are kept, in order"
    );
    // Another process on the file reads the same counter.
    let other = open(SqliteConfig::new(db(&dir))).await;
    assert_eq!(other.dropped().await.unwrap(), dropped);
}

#[tokio::test]
async fn backlog_counts_matching_waiting_and_unacked_rows() {
    let dir = TempDir::new("backlog");
    let t = open(SqliteConfig::new(db(&dir))).await;
    for i in 0..5 {
        t.deposit(&packet("hvac", "energy", &i.to_string()))
            .await
            .unwrap();
    }
    t.deposit(&packet("water", "leak", "w")).await.unwrap();
    let exact = t.twins_consumer("exact", "hvac", "energy").await.unwrap();
    let narrow = open_consumer(&t, "narrow", "qis.iot.hvac.>").await.unwrap();
    let wide = open_consumer(&t, "wide", "qis.iot.*.leak").await.unwrap();
    for (c, n) in [(&exact, 5), (&narrow, 5), (&wide, 1)] {
        let b = c.backlog().await.unwrap();
        assert_eq!((b.waiting, b.unacked), (n, 0), "{}", c.name());
    }
    let got = exact.fetch(2, WAIT).await.unwrap();
    let b = exact.backlog().await.unwrap();
    assert_eq!((b.waiting, b.unacked), (3, 2));
    exact.ack(&got[..1]).await.unwrap();
    assert_eq!(exact.backlog().await.unwrap().total(), 4);

    // The same figures from another process, without opening the consumers.
    let other = open(SqliteConfig::new(db(&dir))).await;
    let listed = other.consumers().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["exact", "narrow", "wide"]);
    assert_eq!(listed[0].pattern.as_deref(), Some("qis.iot.hvac.energy"));
    assert_eq!(listed[0].backlog, exact.backlog().await.unwrap());
    assert_eq!(listed[2].backlog.waiting, 1);
}

#[tokio::test]
async fn deleting_the_consumer_that_holds_the_store_frees_it() {
    let dir = TempDir::new("delete");
    let t = open(SqliteConfig::new(db(&dir)).max_bytes(4096)).await;
    let abandoned = open_consumer(&t, "abandoned", "qis.iot.>").await.unwrap();
    let (stored, refused) = fill(&t, 1000).await;
    assert_eq!(refused.kind(), ErrorKind::StoreFull);
    let listed = t.consumers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].backlog.waiting as usize,
        stored.len(),
        "who holds it, and how much"
    );

    assert!(t.delete_consumer("abandoned").await.unwrap());
    assert!(
        !t.delete_consumer("abandoned").await.unwrap(),
        "gone already"
    );
    assert!(t.consumers().await.unwrap().is_empty());
    t.deposit(&packet("hvac", "x", "after"))
        .await
        .expect("nothing is owed once the consumer is gone");
    let e = abandoned.fetch(1, Duration::ZERO).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(t.dropped().await.unwrap(), 0);
    let seen: HashSet<_> = stored.iter().collect();
    assert_eq!(seen.len(), stored.len());
}

/// Deposits from many tasks at once, some refused: each deposit is stored
/// whole or not at all, whether it was committed alone (on the caller's
/// thread with `synchronous=NORMAL`, or alone on the connection thread) or
/// together with others queued meanwhile (each then undone on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deposits_into_a_full_store_are_each_whole_or_refused() {
    for sync in [
        qis_transport_sqlite::Synchronous::Full,
        qis_transport_sqlite::Synchronous::Normal,
    ] {
        let dir = TempDir::new("refuse-many");
        let t = open(
            SqliteConfig::new(db(&dir))
                .max_bytes(16 << 10)
                .synchronous(sync),
        )
        .await;
        let up = open_consumer(&t, "up", "qis.iot.>").await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|k| {
                let t = t.clone();
                tokio::spawn(async move {
                    let batch: Vec<_> = (0..8)
                        .map(|i| packet("hvac", "x", &format!("{k}-{i}")))
                        .collect();
                    t.deposit_batch(&batch).await
                })
            })
            .collect();
        let mut expected = HashSet::new();
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(receipts) => {
                    assert_eq!(receipts.len(), 8);
                    expected.extend(receipts.iter().map(|r| r.id.to_hex()));
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::StoreFull, "{e}");
                    refused += 1;
                }
            }
        }
        assert!(
            refused > 0,
            "{sync:?}: 16 batches of 8 fit in 16 KiB: the test needs a full store"
        );
        let got: HashSet<String> = drain(up.as_ref()).await.into_iter().collect();
        assert_eq!(
            got, expected,
            "{sync:?}: exactly the accepted batches were stored"
        );
        t.close().await.unwrap();
    }
}
