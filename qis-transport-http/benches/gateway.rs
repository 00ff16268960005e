//! What the HTTP gateway costs, measured against the same backend used
//! directly, in the same run:
//!
//! - **deposits per second**: batches of `BATCH` through the gateway's batch
//!   endpoint (one keep-alive connection pool, `HttpTransport`) beside
//!   `deposit_batch` on the backend itself;
//! - **deposit → live event latency**, p50 and p99: one packet at a time
//!   deposited on the backend, timed until it arrives on a live
//!   subscription, through the gateway's Server-Sent Events beside the
//!   backend's own subscription.
//!
//! Backends: SQLite (a temp file, the embedded default) and the in-process
//! memory store (which shows the HTTP cost alone). Run:
//!
//! ```text
//! cargo bench -p qis-transport-http --bench gateway
//! QIS_BENCH_PACKETS=50000 cargo bench -p qis-transport-http --bench gateway
//! ```

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use qis_conformance::support::{fresh_prefix, pkt, TempDir};
use qis_core::{DynTransport, MemoryTransport, OutcomePacket, OutcomeTransportExt};
use qis_gateway::GatewayConfig;
use qis_transport_http::{HttpConfig, HttpTransport};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport};

const BATCH: usize = 500;
const LATENCY_SAMPLES: usize = 400;

fn packets(agent: &str, n: usize) -> Vec<OutcomePacket> {
    (0..n)
        .map(|i| pkt(agent, "hvac", "energy-anomaly", i))
        .collect()
}

/// Deposits per second of `deposit_batch` in batches of `BATCH`.
async fn deposit_rate(t: &DynTransport, agent: &str, n: usize) -> f64 {
    let all = packets(agent, n);
    let started = Instant::now();
    for chunk in all.chunks(BATCH) {
        t.deposit_batch(chunk).await.expect("batch deposit");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Deposit on `backend`, one at a time, and time each until `live` yields
/// it: the latencies, sorted.
async fn live_latency(
    backend: &DynTransport,
    subscriber: &DynTransport,
    agent: &str,
) -> Vec<Duration> {
    let mut live = subscriber
        .subscribe(backend.prefix().all_below())
        .await
        .expect("subscribe");
    let mut times = Vec::with_capacity(LATENCY_SAMPLES);
    for p in packets(agent, LATENCY_SAMPLES) {
        let started = Instant::now();
        let r = backend.deposit(&p).await.expect("deposit");
        loop {
            let got = tokio::time::timeout(Duration::from_secs(10), live.next())
                .await
                .expect("a live event within 10 s")
                .expect("the stream goes on")
                .expect("a packet");
            if got.id == r.id {
                break;
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn bench(name: &str, backend: DynTransport, n: usize) {
    let gateway = qis_gateway::start(
        backend.clone(),
        GatewayConfig::default().listen("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .expect("start the gateway");
    let device: DynTransport = Arc::new(
        HttpTransport::connect(HttpConfig::new(gateway.url()).prefix(backend.prefix().clone()))
            .await
            .expect("connect over http"),
    );
    // Warm up both paths (connections, caches, the file).
    deposit_rate(&backend, "warm-direct", BATCH).await;
    deposit_rate(&device, "warm-http", BATCH).await;

    let direct = deposit_rate(&backend, "direct", n).await;
    let http = deposit_rate(&device, "http", n).await;
    println!(
        "{name:>6} deposits/s  direct {direct:>9.0}   via gateway {http:>9.0}   gateway/direct {:.2}",
        http / direct
    );

    let direct_live = live_latency(&backend, &backend, "live-direct").await;
    let http_live = live_latency(&backend, &device, "live-http").await;
    let (d50, d99, h50, h99) = (
        pct(&direct_live, 0.5),
        pct(&direct_live, 0.99),
        pct(&http_live, 0.5),
        pct(&http_live, 0.99),
    );
    println!(
        "{name:>6} deposit→live p50  direct {:>10}   via SSE {:>10}   SSE/direct {:.2}",
        ms(d50),
        ms(h50),
        h50.as_secs_f64() / d50.as_secs_f64()
    );
    println!(
        "{name:>6} deposit→live p99  direct {:>10}   via SSE {:>10}   SSE/direct {:.2}",
        ms(d99),
        ms(h99),
        h99.as_secs_f64() / d99.as_secs_f64()
    );
    device.close().await.expect("close the device");
    gateway.shutdown().await.expect("shut the gateway down");
}

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test --benches` run
    // checks that it builds and does one small round.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("QIS_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1000 } else { 20_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        println!("{n} packets in batches of {BATCH}; {LATENCY_SAMPLES} latency samples; one keep-alive HTTP client");
        let dir = TempDir::new("bench-gateway");
        let sqlite: DynTransport = Arc::new(
            SqliteTransport::connect(SqliteConfig::new(dir.path().join("bench.db")).prefix(fresh_prefix()))
                .await
                .expect("sqlite"),
        );
        bench("sqlite", sqlite, n).await;
        let memory: DynTransport = Arc::new(MemoryTransport::new(fresh_prefix()));
        bench("memory", memory, n).await;
    });
}
