//! Bridge throughput, SQLite → NATS and SQLite → Redis, beside the
//! destination's own batch deposit rate of the same packets with the same
//! batch size, in the same run.
//!
//! For each destination whose URL is set (`QIS_NATS_URL`, `QIS_REDIS_URL`;
//! one without it is skipped with a message), every round:
//!
//! - **deposit**: the destination's `deposit_encoded_batch` of N packets in
//!   batches of 500 (what the bridge does per batch, without the source);
//! - **bridge**: the same N packets stored in a fresh SQLite file first (not
//!   timed), then a [`Bridge`] with batches of 500 from that file to the
//!   destination, timed from its start until the destination has stored
//!   the N-th packet (fetch from the file, deposit, ack in the file, per
//!   batch, one batch at a time).
//!
//! Each round uses fresh prefixes, so nothing is a duplicate. The two take
//! turns, in an order that alternates by round; the figure is the best of
//! the rounds. The ratio bridge / deposit is printed (target ≥ 0.8). A first
//! row, SQLite → memory, shows what the source side alone allows (reading,
//! re-encoding and acking in the file).
//!
//! Run: `QIS_NATS_URL=nats://127.0.0.1:14222 QIS_REDIS_URL=redis://127.0.0.1:16379 \
//! cargo bench --bench bridge --features nats,redis`
//! (`QIS_BRIDGE_BENCH_PACKETS` changes N, default 20,000.)
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use qis::bridge::{Bridge, BridgeConfig};
use qis::{DynTransport, EncodedPacket, OutcomePacket, Subject};
use qis_conformance::support::bench;

const ROUNDS: usize = 3;
const BATCH: usize = 500;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn packets(n: usize, tag: &str) -> Vec<OutcomePacket> {
    (0..n)
        .map(|i| OutcomePacket {
            agent_id: format!("bench-{tag}-{}", i % 64),
            domain: "hvac".into(),
            problem_class: "energy-anomaly".into(),
            conclusion: format!(
                "Compressor draw {}% above baseline, sample {i}.",
                10 + i % 30
            ),
            confidence: 0.5 + (i % 50) as f64 / 100.0,
            context_vector: vec![0.18, 0.92, 0.03, 0.71, (i % 100) as f64 / 100.0],
            timestamp: 1_764_000_000.0 + i as f64,
            source_node: format!("bench-node-{}", i % 8),
        })
        .collect()
}

fn fresh(tag: &str) -> Subject {
    Subject::new(format!("qb{:08x}.{tag}", rand::random::<u32>())).expect("a valid prefix")
}

/// `url` with its prefix set to `prefix`.
async fn connect(url: &str, prefix: &Subject) -> BenchResult<DynTransport> {
    Ok(qis::TransportConfig::from_url(url)?
        .with_prefix(prefix.clone())
        .connect()
        .await?)
}

/// Packets per second of the destination's own batch deposits.
async fn deposit_rate(url: &str, n: usize) -> BenchResult<f64> {
    let prefix = fresh("dep");
    let t = connect(url, &prefix).await?;
    let encoded = packets(n, prefix.as_str())
        .iter()
        .map(|p| EncodedPacket::readable(p, &prefix))
        .collect::<qis::Result<Vec<_>>>()?;
    let started = Instant::now();
    for chunk in encoded.chunks(BATCH) {
        t.deposit_encoded_batch(chunk).await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    t.close().await?;
    Ok(rate)
}

/// Packets per second a bridge moves from a SQLite file to the destination.
async fn bridge_rate(url: &str, n: usize, dir: &std::path::Path) -> BenchResult<f64> {
    let prefix = fresh("brg");
    let file = dir.join(format!("{prefix}.db"));
    let source = qis::connect(&format!("sqlite://{}", file.display())).await?;
    let encoded = packets(n, prefix.as_str())
        .iter()
        .map(|p| EncodedPacket::readable(p, source.prefix()))
        .collect::<qis::Result<Vec<_>>>()?;
    for chunk in encoded.chunks(BATCH) {
        source.deposit_encoded_batch(chunk).await?;
    }
    let destination = connect(url, &prefix).await?;
    let bridge = Bridge::new(
        source.clone(),
        destination.clone(),
        BridgeConfig::new("bench")?.batch(BATCH),
    );
    let watch = bridge.clone();
    let started = Instant::now();
    let done = Arc::new(std::sync::Mutex::new(None));
    let stop = {
        let done = done.clone();
        async move {
            while watch.status().forwarded < n as u64 {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            *done.lock().unwrap() = Some(started.elapsed());
        }
    };
    let status = bridge.run_until(stop).await?;
    let elapsed = done.lock().unwrap().ok_or("the bridge stopped early")?;
    if status.forwarded != n as u64 || status.duplicates != 0 {
        return Err(format!("the bridge forwarded {status:?}, want {n} new packets").into());
    }
    source.close().await?;
    destination.close().await?;
    let _ = std::fs::remove_file(&file);
    Ok(n as f64 / elapsed.as_secs_f64())
}

async fn measure(name: &str, url: &str, n: usize) -> BenchResult<()> {
    let dir = std::env::temp_dir().join(format!("qis-bridge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mut deposit, mut bridge) = (0f64, 0f64);
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            deposit = deposit.max(deposit_rate(url, n).await?);
            bridge = bridge.max(bridge_rate(url, n, &dir).await?);
        } else {
            bridge = bridge.max(bridge_rate(url, n, &dir).await?);
            deposit = deposit.max(deposit_rate(url, n).await?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{:<16} {:>12.0} {:>12.0} {:>7.2}",
        format!("sqlite -> {name}"),
        bridge,
        deposit,
        bench::record(
            &format!("bridge sqlite -> {name}"),
            "forward a batch",
            "qis deposit",
            bridge,
            deposit
        )
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let n: usize = std::env::var("QIS_BRIDGE_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    println!(
        "bridge throughput, {n} packets, batches of {BATCH}, best of {ROUNDS} rounds (packets/s)"
    );
    println!(
        "{:<16} {:>12} {:>12} {:>7}",
        "path", "bridge", "deposit", "ratio"
    );
    // The source side alone: what a bridge from the file reaches when the
    // destination costs (almost) nothing.
    {
        let dir = std::env::temp_dir().join(format!("qis-bridge-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut best = 0f64;
        for _ in 0..ROUNDS {
            best = best.max(bridge_rate("memory://", n, &dir).await?);
        }
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "{:<16} {:>12.0} {:>12} {:>7}",
            "sqlite -> memory", best, "-", "-"
        );
    }
    let mut ran = false;
    for (name, var, compiled) in [
        ("nats", "QIS_NATS_URL", cfg!(feature = "nats")),
        ("redis", "QIS_REDIS_URL", cfg!(feature = "redis")),
    ] {
        match std::env::var(var) {
            Err(_) => println!("{name}: skipped, {var} is not set"),
            Ok(_) if !compiled => {
                println!("{name}: skipped, built without the `{name}` feature")
            }
            Ok(url) => {
                measure(name, &url, n).await?;
                ran = true;
            }
        }
    }
    if !ran {
        println!("nothing measured: set QIS_NATS_URL and/or QIS_REDIS_URL");
    }
    Ok(())
}
