//! QIS over NATS beside raw async-nats doing the same operations, against one
//! server (`QIS_NATS_URL`) in one run:
//!
//! - single deposit: one JetStream publish with `Nats-Msg-Id`, ack awaited, ×N;
//! - batch deposit: the same with up to 1,024 acks in flight;
//! - fetch + ack: durable pull consumer, batches of 500, every message acked;
//! - deposit → live receipt: latency from starting a deposit until a live
//!   (core NATS) subscriber on the subject has it, p50 / p99.
//!
//! Both sides get pre-encoded packets (subject, body, packet id). Deposits
//! and latency samples take turns in small chunks (100 single deposits, a
//! batch of 2,000, one sample), so a busy machine slows both alike; the
//! fetch + ack readers run one after the other (a raw reader leaves acks for
//! the server to process after it stops the clock, QIS's `close()` waits for
//! them), in an order that rotates by round. Throughput is the best of
//! the rounds; latency percentiles pool all samples.
//!
//! Run: `QIS_NATS_URL=nats://127.0.0.1:14222 cargo bench -p qis-transport-nats`

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use qis_conformance::support::bench;
use qis_core::{ConsumerConfig, EncodedPacket, OutcomeTransport, Subject, SubjectPattern};

use common::{
    packets_on, qis_fetch_ack, raw_batch, raw_consumer, raw_fetch_ack, raw_message, teardown,
    BenchResult, Setup, FETCH_BATCH, WINDOW,
};

const ROUNDS: usize = 6;
const SINGLE: usize = 2_000;
const SINGLE_CHUNK: usize = 100;
const BATCH: usize = 20_000;
const BATCH_CHUNK: usize = 2_000;
const FETCH: usize = 20_000;
const LATENCY: usize = 2_000;

/// p50 and p99.
type Percentiles = (Duration, Duration);

fn packets(prefix: &Subject, tag: &str, n: usize) -> Vec<EncodedPacket> {
    packets_on(prefix, None, tag, n)
}

async fn setup(url: &str) -> BenchResult<Setup> {
    common::setup(url, 1).await
}

async fn raw_single(js: &jetstream::Context, ps: &[EncodedPacket]) -> BenchResult<()> {
    for p in ps {
        js.send_publish(p.subject().as_str().to_string(), raw_message(p))
            .await?
            .await?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Time `f` and add the elapsed time to `total`.
macro_rules! timed {
    ($total:expr, $f:expr) => {{
        let t0 = Instant::now();
        let r = $f;
        $total += t0.elapsed();
        r
    }};
}

/// Run `raw` and `qis`, the first one first when `raw_first`.
macro_rules! both {
    ($raw_first:expr, $raw:expr, $qis:expr) => {
        if $raw_first {
            $raw;
            $qis;
        } else {
            $qis;
            $raw;
        }
    };
}

#[derive(Default)]
struct Best {
    raw: f64,
    qis: f64,
}

impl Best {
    fn record(&mut self, n: usize, raw: Duration, qis: Duration) {
        self.raw = self.raw.max(n as f64 / raw.as_secs_f64());
        self.qis = self.qis.max(n as f64 / qis.as_secs_f64());
    }
}

/// One round of deposits, one by one (`single`) or in batches: the raw
/// client and QIS take turns chunk by chunk, each on its own packets.
async fn deposit_round(url: &str, round: usize, single: bool, best: &mut Best) -> BenchResult<()> {
    let (tag, n, chunk) = if single {
        ("single", SINGLE, SINGLE_CHUNK)
    } else {
        ("batch", BATCH, BATCH_CHUNK)
    };
    let s = setup(url).await?;
    let raw_ps = packets(&s.prefix, &format!("{tag}-raw-{round}"), n);
    let qis_ps = packets(&s.prefix, &format!("{tag}-qis-{round}"), n);
    let (mut raw_t, mut qis_t) = (Duration::ZERO, Duration::ZERO);
    for (k, (r, q)) in raw_ps.chunks(chunk).zip(qis_ps.chunks(chunk)).enumerate() {
        both!(
            k % 2 == 0,
            timed!(raw_t, {
                if single {
                    raw_single(&s.raw, r).await?
                } else {
                    raw_batch(&s.raw, r).await?
                }
            }),
            timed!(qis_t, {
                if single {
                    for p in q {
                        s.qis.deposit_encoded(p).await?;
                    }
                } else {
                    let receipts = s.qis.deposit_encoded_batch(q).await?;
                    assert_eq!(receipts.len(), q.len());
                }
            })
        );
    }
    best.record(n, raw_t, qis_t);
    teardown(s).await
}

/// Returns the raw-with-decode throughput of this round.
/// Each reader drains its own copy of the packets (on its own subject), one
/// after the other, so no side's leftover server work (acks still being
/// processed) lands in another side's time. Returns the raw-with-decode
/// throughput of this round.
async fn fetch_round(url: &str, round: usize, best: &mut Best) -> BenchResult<f64> {
    let s = setup(url).await?;
    for side in ["raw", "rawdecode", "qis"] {
        let ps = packets_on(
            &s.prefix,
            Some(side),
            &format!("fetch-{side}-{round}"),
            FETCH,
        );
        s.qis.deposit_encoded_batch(&ps).await?;
    }
    let raw = raw_consumer(&s.raw, &s.stream, "raw", &format!("{}.raw.>", s.prefix)).await?;
    let raw_decode = raw_consumer(
        &s.raw,
        &s.stream,
        "rawdecode",
        &format!("{}.rawdecode.>", s.prefix),
    )
    .await?;
    let qis = s
        .qis
        .consumer(ConsumerConfig::new(
            "qis",
            SubjectPattern::new(format!("{}.qis.>", s.prefix))?,
        )?)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let check = |n: usize, who: &str| -> BenchResult<()> {
        if Instant::now() > deadline {
            return Err(format!("fetch: {who} received {n} of {FETCH} within 60 s").into());
        }
        Ok(())
    };
    let (mut raw_t, mut qis_t, mut dec_t) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // The three readers take the first place in turn, round by round.
    for k in 0..3 {
        match (round + k) % 3 {
            0 => timed!(raw_t, {
                let mut n = 0;
                while n < FETCH {
                    check(n, "raw")?;
                    n += raw_fetch_ack(&raw, false).await?;
                }
            }),
            1 => timed!(qis_t, {
                let mut n = 0;
                while n < FETCH {
                    check(n, "qis")?;
                    n += qis_fetch_ack(qis.as_ref()).await?;
                }
                qis.close().await?;
            }),
            _ => timed!(dec_t, {
                let mut n = 0;
                while n < FETCH {
                    check(n, "raw + decode")?;
                    n += raw_fetch_ack(&raw_decode, true).await?;
                }
            }),
        }
    }
    best.record(FETCH, raw_t, qis_t);
    teardown(s).await?;
    Ok(FETCH as f64 / dec_t.as_secs_f64())
}

async fn latency_round(
    url: &str,
    round: usize,
    raw_l: &mut Vec<Duration>,
    qis_l: &mut Vec<Duration>,
) -> BenchResult<()> {
    let s = setup(url).await?;
    // Distinct subjects: each subscriber sees only its own side's deposits.
    let raw_ps = packets_on(&s.prefix, Some("raw"), &format!("lat-raw-{round}"), LATENCY);
    let qis_ps = packets_on(&s.prefix, Some("qis"), &format!("lat-qis-{round}"), LATENCY);
    let client = s.raw.client();
    let mut raw_sub = client
        .subscribe(raw_ps[0].subject().as_str().to_string())
        .await?;
    client.flush().await?;
    // A round trip so the subscription is registered before the first sample.
    s.raw.query_account().await?;
    let mut qis_sub = s
        .qis
        .subscribe(SubjectPattern::from(qis_ps[0].subject()))
        .await?;
    for (k, (r, q)) in raw_ps.iter().zip(&qis_ps).enumerate() {
        both!(
            k % 2 == 0,
            {
                let start = Instant::now();
                let deposit = async {
                    s.raw
                        .send_publish(r.subject().as_str().to_string(), raw_message(r))
                        .await?
                        .await
                };
                let live = async {
                    let m = raw_sub.next().await;
                    (m, start.elapsed())
                };
                let (ack, (m, took)) = tokio::join!(deposit, live);
                ack?;
                m.ok_or("live subscription ended")?;
                raw_l.push(took);
            },
            {
                let start = Instant::now();
                let live = async {
                    let m = qis_sub.next().await;
                    (m, start.elapsed())
                };
                let (receipt, (m, took)) = tokio::join!(s.qis.deposit_encoded(q), live);
                receipt?;
                m.ok_or("live subscription ended")??;
                qis_l.push(took);
            }
        );
    }
    drop(qis_sub);
    teardown(s).await
}

async fn run(url: &str) -> BenchResult<()> {
    let started = Instant::now();
    let (mut single, mut batch, mut fetch) = (Best::default(), Best::default(), Best::default());
    let mut fetch_decode_raw: f64 = 0.0;
    let (mut raw_l, mut qis_l) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        eprintln!("round {round}: single deposits");
        deposit_round(url, round, true, &mut single).await?;
        eprintln!("round {round}: batch deposits");
        deposit_round(url, round, false, &mut batch).await?;
        eprintln!("round {round}: fetch + ack");
        fetch_decode_raw = fetch_decode_raw.max(fetch_round(url, round, &mut fetch).await?);
        eprintln!("round {round}: deposit -> live receipt latency");
        latency_round(url, round, &mut raw_l, &mut qis_l).await?;
    }
    raw_l.sort_unstable();
    qis_l.sort_unstable();
    let raw_lat: Percentiles = (percentile(&raw_l, 0.5), percentile(&raw_l, 0.99));
    let qis_lat: Percentiles = (percentile(&qis_l, 0.5), percentile(&qis_l, 0.99));

    let mut out = String::new();
    out.push_str(&format!(
        "\nQIS over NATS vs raw async-nats ({url}; {ROUNDS} rounds, {:.1} s in all)\n\n",
        started.elapsed().as_secs_f64()
    ));
    out.push_str(&format!(
        "{:<44} {:>14} {:>14} {:>8}\n",
        "operation", "raw", "qis", "qis/raw"
    ));
    for (name, b) in [
        (format!("single deposit, ack awaited (x{SINGLE})"), &single),
        (
            format!("batch deposit, {WINDOW} acks in flight (x{BATCH})"),
            &batch,
        ),
        (
            format!("fetch + ack, batches of {FETCH_BATCH} (x{FETCH})"),
            &fetch,
        ),
    ] {
        out.push_str(&format!(
            "{:<44} {:>9.0} op/s {:>9.0} op/s {:>8.2}\n",
            name,
            b.raw,
            b.qis,
            bench::record("nats", &name, bench::RAW, b.qis, b.raw)
        ));
    }
    out.push_str(&format!(
        "{:<44} {:>9.0} op/s {:>14} {:>8.2}\n",
        "  raw fetch + JSON decode + ack (reference)",
        fetch_decode_raw,
        "",
        bench::record(
            "nats",
            &format!("fetch + ack, batches of {FETCH_BATCH} (x{FETCH})"),
            bench::RAW_DECODE,
            fetch.qis,
            fetch_decode_raw
        )
    ));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (name, r, q) in [
        ("deposit -> live receipt p50", raw_lat.0, qis_lat.0),
        ("deposit -> live receipt p99", raw_lat.1, qis_lat.1),
    ] {
        out.push_str(&format!(
            "{:<44} {:>11.0} us {:>11.0} us {:>8.2}\n",
            format!("{name} (x{})", raw_l.len()),
            us(r),
            us(q),
            bench::record_ratio(
                "nats",
                name,
                bench::RAW,
                us(q),
                us(r),
                us(r) / us(q),
                "µs (lower is better; ratio raw/qis)"
            )
        ));
    }
    out.push_str(
        "\n(latency ratio is raw/qis: above 1 means QIS is faster; target for every ratio: >= 0.9)\n",
    );
    // A bench binary reports on stdout.
    #[allow(clippy::print_stdout)]
    {
        println!("{out}");
    }
    Ok(())
}

fn main() {
    bench::run_on_server(
        "QIS_NATS_URL",
        "start a server with scripts/servers/nats.sh start DIR and source DIR/nats.env",
        |url| async move { run(&url).await },
    );
}
