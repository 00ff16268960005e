//! Retention never removes packets a consumer fetched and has not acked yet
//! silently. By default (`when_full=refuse`) it does not remove them at
//! all; with `when_full=drop_oldest` it does, counts them in
//! `Pruned::dropped` (and in the store's dropped total) and warns with
//! `tracing::warn!`, naming the consumer.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qis_conformance::support::{collect_unacked, consumer_from_start, pkt, TempDir};
use qis_core::{OutcomeTransport, OutcomeTransportExt};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport, WhenFull};

/// Everything logged at WARN or above, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_unacked_deliveries_is_counted_and_warned() {
    let log = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    let dir = TempDir::new("prune-unacked");
    let max_age = Duration::from_secs(1);
    let path = dir.path().join("o.db");
    let t = SqliteTransport::connect(SqliteConfig::new(&path).max_age(max_age))
        .await
        .unwrap();
    let deposited = Instant::now();
    t.deposit_batch(&[
        pkt("a", "hvac", "energy-anomaly", 1),
        pkt("a", "hvac", "energy-anomaly", 2),
    ])
    .await
    .unwrap();
    let hasty = consumer_from_start(&*t, "hasty", "qis.iot.>", Duration::from_secs(60))
        .await
        .unwrap();
    let fetched = collect_unacked(&hasty, 2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 2);
    let _idle = consumer_from_start(&*t, "idle", "qis.iot.>", Duration::from_secs(60))
        .await
        .unwrap();

    // The scenario: the packets grow older than max_age.
    tokio::time::sleep(
        (deposited + max_age + Duration::from_millis(100))
            .saturating_duration_since(Instant::now()),
    )
    .await;
    // By default, nothing owed goes.
    let kept = t.prune().await.unwrap();
    assert_eq!((kept.packets, kept.dropped), (0, 0), "{kept:?}");
    t.close().await.unwrap();

    // Dropping the oldest is a choice, and it is counted and warned about.
    let t = SqliteTransport::connect(
        SqliteConfig::new(&path)
            .max_age(max_age)
            .when_full(WhenFull::DropOldest),
    )
    .await
    .unwrap();
    let pruned = t.prune().await.unwrap();
    assert_eq!(pruned.packets, 2, "{pruned:?}");
    assert_eq!(pruned.dropped, 2, "{pruned:?}");

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warning = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("hasty"))
        .unwrap_or_else(|| panic!("no warning names consumer hasty; log:\n{text}"));
    assert!(warning.contains("owed=2"), "{warning}");
    t.close().await.unwrap();
}
