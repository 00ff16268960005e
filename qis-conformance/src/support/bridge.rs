//! Bridges in tests: settings that react in milliseconds, and a bridge run
//! in the background until the test says stop.

use std::time::Duration;

use qis_core::bridge::{Backoff, Bridge, BridgeConfig, BridgeStatus};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bridge `name` with short waits: fetches wait 50 ms, a failed side is
/// retried after 5 ms and then at most every 50 ms, and a delivery not acked
/// within 5 s comes again.
pub fn quick_bridge(name: &str) -> BridgeConfig {
    BridgeConfig::new(name)
        .expect("a valid bridge name")
        .fetch_wait(Duration::from_millis(50))
        .ack_wait(Duration::from_secs(5))
        .backoff(Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
            ..Backoff::default()
        })
}

/// Run `bridge` on a task until the returned sender fires (or is dropped);
/// the task ends with the bridge's last status.
pub fn run_until_signal(
    bridge: &Bridge,
) -> (
    oneshot::Sender<()>,
    JoinHandle<qis_core::Result<BridgeStatus>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let bridge = bridge.clone();
    let run = tokio::spawn(async move {
        bridge
            .run_until(async {
                let _ = rx.await;
            })
            .await
    });
    (tx, run)
}
