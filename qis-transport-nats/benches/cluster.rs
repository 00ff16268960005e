//! What replication costs: QIS over NATS and raw async-nats on a stream with
//! one replica beside a stream with three, on the same three-node cluster
//! (`QIS_NATS_CLUSTER_URL`, from `scripts/servers/nats-cluster.sh`), in one
//! run:
//!
//! - batch deposit: JetStream publishes with `Nats-Msg-Id`, up to 1,024 acks
//!   in flight (an R3 ack waits until two of the three servers have the
//!   message);
//! - fetch + ack: a durable pull consumer (as replicated as its stream),
//!   batches of 500, every message acked.
//!
//! The four depositors (R1 raw, R1 QIS, R3 raw, R3 QIS) take turns in
//! chunks of 2,000, the first place rotating, so a busy machine slows all
//! alike; the readers drain their own subjects one after the other, in an
//! order that rotates by round. Throughput is the best of the rounds. The
//! ratios are a measure, not a target.
//!
//! Run: `source DIR/nats-cluster.env && cargo bench -p qis-transport-nats --bench cluster`
//! (start the cluster with `QIS_NATS_SYNC=always` to see what fsync on every
//! write costs as well).

mod common;

use std::time::{Duration, Instant};

use qis_conformance::support::bench;
use qis_core::{ConsumerConfig, EncodedPacket, OutcomeTransport, Subject, SubjectPattern};

use common::{
    packets_on, qis_fetch_ack, raw_batch, raw_consumer, raw_fetch_ack, setup, teardown,
    BenchResult, Setup, FETCH_BATCH, WINDOW,
};

const ROUNDS: usize = 4;
const BATCH: usize = 16_000;
const CHUNK: usize = 2_000;
const FETCH: usize = 16_000;
const REPLICAS: [usize; 2] = [1, 3];

/// `n` distinct packets on `{prefix}.{side}.hvac`.
fn packets(prefix: &Subject, side: &str, n: usize) -> Vec<EncodedPacket> {
    packets_on(prefix, Some(side), side, n)
}

/// Best throughput per (replica count, side).
#[derive(Default, Clone, Copy)]
struct Best {
    raw: f64,
    qis: f64,
}

fn keep_best(best: &mut f64, n: usize, took: Duration) {
    *best = best.max(n as f64 / took.as_secs_f64());
}

/// Batch deposits on both streams, the four depositors taking turns.
async fn batch_round(setups: &[Setup], round: usize, best: &mut [Best; 2]) -> BenchResult<()> {
    let ps: Vec<[Vec<EncodedPacket>; 2]> = setups
        .iter()
        .map(|s| {
            [
                packets(&s.prefix, &format!("raw{round}"), BATCH),
                packets(&s.prefix, &format!("qis{round}"), BATCH),
            ]
        })
        .collect();
    let mut took = [[Duration::ZERO; 2]; 2];
    for k in 0..BATCH / CHUNK {
        let range = k * CHUNK..(k + 1) * CHUNK;
        for turn in 0..4 {
            let who = (turn + k + round) % 4;
            let (r, side) = (who / 2, who % 2);
            let chunk = &ps[r][side][range.clone()];
            let t0 = Instant::now();
            if side == 0 {
                raw_batch(&setups[r].raw, chunk).await?;
            } else {
                let receipts = setups[r].qis.deposit_encoded_batch(chunk).await?;
                assert_eq!(receipts.len(), chunk.len());
            }
            took[r][side] += t0.elapsed();
        }
    }
    for r in 0..2 {
        keep_best(&mut best[r].raw, BATCH, took[r][0]);
        keep_best(&mut best[r].qis, BATCH, took[r][1]);
    }
    Ok(())
}

/// Fetch + ack on both streams: each reader drains its own subject, one
/// after the other.
async fn fetch_round(setups: &[Setup], round: usize, best: &mut [Best; 2]) -> BenchResult<()> {
    let mut raws = Vec::new();
    let mut qiss = Vec::new();
    for s in setups {
        for side in ["fraw", "fqis"] {
            s.qis
                .deposit_encoded_batch(&packets(&s.prefix, &format!("{side}{round}"), FETCH))
                .await?;
        }
        raws.push(
            raw_consumer(
                &s.raw,
                &s.stream,
                &format!("raw{round}"),
                &format!("{}.fraw{round}.>", s.prefix),
            )
            .await?,
        );
        qiss.push(
            s.qis
                .consumer(ConsumerConfig::new(
                    format!("qis{round}"),
                    SubjectPattern::new(format!("{}.fqis{round}.>", s.prefix))?,
                )?)
                .await?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let check = |n: usize, who: &str| -> BenchResult<()> {
        if Instant::now() > deadline {
            return Err(format!("fetch: {who} received {n} of {FETCH} within 120 s").into());
        }
        Ok(())
    };
    for turn in 0..4 {
        let who = (turn + round) % 4;
        let (r, side) = (who / 2, who % 2);
        let t0 = Instant::now();
        let mut n = 0;
        while n < FETCH {
            check(n, if side == 0 { "raw" } else { "qis" })?;
            n += if side == 0 {
                raw_fetch_ack(&raws[r], false).await?
            } else {
                qis_fetch_ack(qiss[r].as_ref()).await?
            };
        }
        if side == 1 {
            // Wait until the server has the acks, as the raw side's last
            // acks are still in flight too: close() confirms them.
            qiss[r].close().await?;
        }
        let took = t0.elapsed();
        if side == 0 {
            keep_best(&mut best[r].raw, FETCH, took);
        } else {
            keep_best(&mut best[r].qis, FETCH, took);
        }
    }
    Ok(())
}

async fn run(url: &str) -> BenchResult<()> {
    let started = Instant::now();
    let (mut batch, mut fetch) = ([Best::default(); 2], [Best::default(); 2]);
    for round in 0..ROUNDS {
        let mut setups = Vec::new();
        for replicas in REPLICAS {
            setups.push(setup(url, replicas).await?);
        }
        eprintln!("round {round}: batch deposits");
        batch_round(&setups, round, &mut batch).await?;
        eprintln!("round {round}: fetch + ack");
        fetch_round(&setups, round, &mut fetch).await?;
        for s in setups {
            debug_assert!(REPLICAS.contains(&s.replicas));
            teardown(s).await?;
        }
    }
    let mut out = format!(
        "\nReplication on a three-node NATS cluster ({url}; {ROUNDS} rounds, {:.1} s in all)\n\n",
        started.elapsed().as_secs_f64()
    );
    out.push_str(&format!(
        "{:<40} {:>11} {:>11} {:>11} {:>11} {:>10} {:>10} {:>10}\n",
        "operation (op/s)",
        "R1 raw",
        "R1 qis",
        "R3 raw",
        "R3 qis",
        "R3/R1 qis",
        "R3/R1 raw",
        "qis/raw R3"
    ));
    for (name, b) in [
        (
            format!("batch deposit, {WINDOW} acks in flight (x{BATCH})"),
            batch,
        ),
        (
            format!("fetch + ack, batches of {FETCH_BATCH} (x{FETCH})"),
            fetch,
        ),
    ] {
        bench::record("nats-cluster R1", &name, bench::RAW, b[0].qis, b[0].raw);
        bench::record("nats-cluster R3", &name, bench::RAW, b[1].qis, b[1].raw);
        out.push_str(&format!(
            "{:<40} {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>10.2} {:>10.2} {:>10.2}\n",
            name,
            b[0].raw,
            b[0].qis,
            b[1].raw,
            b[1].qis,
            b[1].qis / b[0].qis,
            b[1].raw / b[0].raw,
            b[1].qis / b[1].raw
        ));
    }
    out.push_str("\n(R3/R1: what three replicas cost, a measure, not a target)\n");
    // A bench binary reports on stdout.
    #[allow(clippy::print_stdout)]
    {
        println!("{out}");
    }
    Ok(())
}

fn main() {
    bench::run_on_server(
        "QIS_NATS_CLUSTER_URL",
        "start a cluster with scripts/servers/nats-cluster.sh start DIR and source DIR/nats-cluster.env",
        |url| async move { run(&url).await },
    );
}
