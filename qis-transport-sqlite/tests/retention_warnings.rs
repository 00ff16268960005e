//! Retention may remove packets a consumer fetched and has not acked yet
//! (SPEC §6.8 bounds the store, not the consumers): never silently. Each
//! pruning pass counts those deliveries in `Pruned::unacked` and warns, per
//! consumer, with `tracing::warn!`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qis_conformance::support::{collect_unacked, consumer, pkt, TempDir};
use qis_core::{OutcomeTransport, OutcomeTransportExt, StartPosition};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport};

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
    let t = SqliteTransport::connect(SqliteConfig::new(dir.path().join("o.db")).max_age(max_age))
        .await
        .unwrap();
    let deposited = Instant::now();
    t.deposit_batch(&[
        pkt("a", "hvac", "energy-anomaly", 1),
        pkt("a", "hvac", "energy-anomaly", 2),
    ])
    .await
    .unwrap();
    let hasty = consumer(
        &*t,
        "hasty",
        "qis.iot.>",
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let fetched = collect_unacked(&hasty, 2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 2);
    let _idle = consumer(
        &*t,
        "idle",
        "qis.iot.>",
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    // The scenario: the packets grow older than max_age.
    tokio::time::sleep(
        (deposited + max_age + Duration::from_millis(100))
            .saturating_duration_since(Instant::now()),
    )
    .await;
    let pruned = t.prune().await.unwrap();
    assert_eq!(pruned.packets, 2, "{pruned:?}");
    assert_eq!(pruned.unacked, 2, "{pruned:?}");

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warning = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("consumer=hasty"))
        .unwrap_or_else(|| panic!("no warning names consumer hasty; log:\n{text}"));
    assert!(warning.contains("unacked=2"), "{warning}");
    assert!(
        !text.contains("consumer=idle"),
        "a consumer with nothing in flight was warned about: {text}"
    );
    t.close().await.unwrap();
}
