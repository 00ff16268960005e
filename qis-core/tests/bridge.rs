//! The bridge on memory transports: a destination that fails and comes back,
//! a source that cannot be reached at first, two bridges both ways, and a
//! shutdown that finishes its batch.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qis_conformance::support::{open_consumer, quick_bridge, quiet, run_until_signal};
use qis_core::bridge::{Bridge, BridgeConfig, BridgeStatus, Endpoint};
use qis_core::{
    Checked, DynTransport, Error, ErrorKind, MemoryTransport, OutcomePacket, OutcomeTransportExt,
    Result, Subject,
};

mod common;

use common::Doctored;

/// Packet `n` from node `node`'s agent.
fn packet(node: &str, n: usize) -> OutcomePacket {
    OutcomePacket {
        conclusion: format!("finding {n} on {node}"),
        source_node: node.into(),
        ..common::packet(&format!("{node}-agent"), n)
    }
}

fn memory() -> DynTransport {
    Arc::new(MemoryTransport::new(Subject::default()))
}

/// Every packet id stored on `t`, read by a fresh consumer.
async fn stored(t: &DynTransport) -> Vec<String> {
    let name = format!("audit{}", rand_suffix());
    let c = open_consumer(&**t, &name, "qis.iot.>").await.unwrap();
    let got = quiet(&c, Duration::from_millis(50)).await.unwrap();
    let mut ids: Vec<String> = got.iter().map(|d| d.id().to_hex()).collect();
    ids.sort();
    ids
}

/// A memory transport holding packets `0..n` from node `dev`.
async fn holding(n: usize) -> DynTransport {
    let t = memory();
    for i in 0..n {
        t.deposit(&packet("dev", i)).await.unwrap();
    }
    t
}

/// Wait up to 5 s for `bridge`'s status to satisfy `holds`; panics with
/// "`what`: <status>" if it does not.
async fn until_status(bridge: &Bridge, what: &str, holds: impl Fn(&BridgeStatus) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !holds(&bridge.status()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            bridge.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rand_suffix() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A source holding one packet that cannot be reached for its first
/// `failures` connection attempts; the attempts counted.
async fn reachable_after(failures: u32) -> (Endpoint, Arc<AtomicU32>) {
    let store = MemoryTransport::new(Subject::default());
    store.deposit(&packet("dev", 1)).await.unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let store = store.inner().clone();
    let source = Endpoint::connect(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        let store = store.clone();
        Box::pin(async move {
            if n < failures {
                Err(Error::new(ErrorKind::Unavailable, "test", "not yet"))
            } else {
                Ok(Arc::new(store.handle()) as DynTransport)
            }
        })
    });
    (source, attempts)
}

/// A bridge run until its source has been quiet for `quiet_ms`.
async fn drained(
    from: impl Into<Endpoint>,
    to: impl Into<Endpoint>,
    config: BridgeConfig,
    quiet_ms: u64,
) -> Result<BridgeStatus> {
    Bridge::new(from, to, config)
        .drain(Duration::from_millis(quiet_ms))
        .await
}

#[tokio::test]
async fn a_destination_that_fails_gets_everything_once_it_is_back() {
    let device = holding(300).await;
    let hub_store = MemoryTransport::new(Subject::default());
    let hub: DynTransport = Arc::new(Checked::new(Doctored::failing(&hub_store, 3)));
    let bridge = Bridge::new(device.clone(), hub.clone(), quick_bridge("up").batch(64));
    let status = bridge.drain(Duration::from_millis(200)).await.unwrap();
    assert_eq!(status.forwarded, 300, "{status:?}");
    assert_eq!(status.failures, 3, "{status:?}");
    assert!(status.last_error.unwrap().contains("link is down"));
    let hub_ids = stored(&(Arc::new(hub_store.handle()) as DynTransport)).await;
    assert_eq!(
        hub_ids,
        stored(&device).await,
        "the hub holds each packet once"
    );
}

#[tokio::test]
async fn a_source_that_cannot_be_reached_at_first_is_connected_again() {
    let (source, attempts) = reachable_after(2).await;
    let hub = memory();
    let status = drained(source, hub.clone(), quick_bridge("up"), 200)
        .await
        .unwrap();
    assert_eq!(status.forwarded, 1, "{status:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_bridge_gives_up_when_its_backoff_is_exhausted() {
    let source = Endpoint::connect(|| {
        Box::pin(async { Err(Error::new(ErrorKind::Unavailable, "test", "never")) })
    });
    let mut config = quick_bridge("up");
    config.backoff.max_attempts = Some(3);
    let e = drained(source, memory(), config, 200).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn two_bridges_both_ways_never_loop() {
    let device = memory();
    let hub = memory();
    for n in 0..50 {
        device.deposit(&packet("dev", n)).await.unwrap();
        hub.deposit(&packet("other", n)).await.unwrap();
    }
    let up = Bridge::up(device.clone(), hub.clone(), "dev", quick_bridge("up"));
    let down = Bridge::down(hub.clone(), device.clone(), "dev", quick_bridge("down"));
    for _round in 0..3 {
        let u = up.drain(Duration::from_millis(100)).await.unwrap();
        let d = down.drain(Duration::from_millis(100)).await.unwrap();
        assert_eq!(
            u.forwarded, 50,
            "up forwards the device's own packets once: {u:?}"
        );
        assert_eq!(
            d.forwarded, 50,
            "down brings the others' packets once: {d:?}"
        );
    }
    let (on_device, on_hub) = (stored(&device).await, stored(&hub).await);
    assert_eq!(on_device.len(), 100);
    assert_eq!(on_device, on_hub, "each side holds every packet once");
}

#[tokio::test]
async fn shutdown_finishes_the_batch_in_flight_and_acks_it() {
    let device = holding(10).await;
    let hub = memory();
    let bridge = Bridge::new(device.clone(), hub.clone(), quick_bridge("up"));
    let (tx, run) = run_until_signal(&bridge);
    until_status(&bridge, "10 packets not forwarded within 5 s", |s| {
        s.forwarded >= 10
    })
    .await;
    tx.send(()).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the bridge stops within 5 s of the signal")
        .unwrap()
        .unwrap();
    assert_eq!(status.forwarded, 10);
    // Acked: the same consumer has nothing left.
    let again = drained(device, hub, quick_bridge("up"), 100).await.unwrap();
    assert_eq!((again.forwarded, again.duplicates), (0, 0), "{again:?}");
}

#[tokio::test]
async fn drain_does_not_take_an_unreachable_source_for_a_quiet_one() {
    // Unreachable for longer than the quiet period below.
    let (source, _) = reachable_after(6).await;
    let status = drained(source, memory(), quick_bridge("up"), 20)
        .await
        .unwrap();
    assert_eq!(
        status.forwarded, 1,
        "drain returned before the source was ever reached: {status:?}"
    );
}

#[tokio::test]
async fn a_destination_that_never_answers_exhausts_the_backoff() {
    let device = holding(5).await;
    let destination = Endpoint::connect(|| {
        Box::pin(async { Err(Error::new(ErrorKind::Unavailable, "test", "never")) })
    });
    let mut config = quick_bridge("up");
    config.backoff.max_attempts = Some(4);
    let bridge = Bridge::new(device, destination, config);
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        bridge.drain(Duration::from_millis(200)),
    )
    .await
    .expect("failures in a row count up to max_attempts, so the bridge gives up")
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn a_stopped_bridge_hands_back_what_it_could_not_forward() {
    let device = holding(10).await;
    let hub_store = MemoryTransport::new(Subject::default());
    let down: DynTransport = Arc::new(Checked::new(Doctored::failing(&hub_store, u32::MAX)));
    // A long ack wait: without the hand-back the next run would wait for it.
    let config = || quick_bridge("up").ack_wait(Duration::from_secs(60));
    let bridge = Bridge::new(device.clone(), down, config());
    let (tx, run) = run_until_signal(&bridge);
    until_status(&bridge, "the destination never failed", |s| s.failures >= 2).await;
    tx.send(()).unwrap();
    let stopped = run.await.unwrap().unwrap();
    assert_eq!(stopped.forwarded, 0);
    let hub: DynTransport = Arc::new(hub_store.handle());
    let again = drained(device.clone(), hub.clone(), config(), 200)
        .await
        .unwrap();
    assert_eq!(
        again.forwarded, 10,
        "the next run gets the batch at once, not after the ack wait: {again:?}"
    );
    assert_eq!(stored(&hub).await, stored(&device).await);
}
