//! The device agent: store and forward on a small device with a link that
//! drops.
//!
//! - It deposits its own outcomes to a local SQLite file, whether or not the
//!   hub is reachable (the file is its outbox; `when_full=refuse`, the
//!   default, refuses a deposit rather than dropping what was not forwarded).
//! - An **up** bridge forwards the packets produced on this node to the hub;
//!   a **down** bridge brings the others' packets on this device's domain
//!   into the local file. Both connect to the hub with backoff, so a hub that
//!   is unreachable at start (or later) is fine; the origin rule keeps the
//!   two from looping.
//! - It synthesises from the local file, online or not: a durable consumer
//!   on its own problem in the file (rebuilt from the whole cache at start)
//!   keeps the latest packet of each agent, and `qis::synthesize` runs on
//!   them.
//!
//! ```text
//! cargo run --example edge_device --features nats -- --hub nats://127.0.0.1:4222
//! cargo run --example edge_device --features nats -- --hub nats://hub:4222 \
//!     --device-db /var/lib/qis/device.db --node building-b-floor-2 --every 5s
//! # footprint run: forward 10,000 packets from the file, then exit
//! RUSTFLAGS="-C link-arg=-Wl,-z,pack-relative-relocs" \
//!     cargo build --profile edge --example edge_device --features nats
//! /usr/bin/time -v target/edge/examples/edge_device --hub nats://127.0.0.1:4222 \
//!     --generate 10000 --exit-when-forwarded
//! ```
//!
//! Flags: `--hub URL` (required; any transport URL compiled in),
//! `--device-db PATH` (default `edge_device.db`), `--node NAME` (default
//! `edge-device-1`), `--domain D` / `--problem-class P` (default `hvac` /
//! `energy-anomaly`), `--every DURATION` (how often it deposits, synthesises
//! and reports; default `2s`), `--generate N` (deposit N packets at once at
//! start instead of one per interval), `--exit-when-forwarded` (stop once
//! everything it deposited is on the hub), `--max-bytes BYTES` (the outbox
//! size; default 50 MiB), `--batch N` (packets per bridge batch; default
//! 100, small for a small device on a slow link). Ctrl-C stops both bridges
//! after their batch in flight.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qis::bridge::{Backoff, Bridge, BridgeConfig, Endpoint};
use qis::sqlite::{SqliteConfig, SqliteTransport};
use qis::{
    synthesize, ConsumerConfig, DurableConsumer, DynTransport, ErrorKind, OutcomePacket,
    OutcomeTransport, OutcomeTransportExt, Subject, SubjectPattern,
};

/// What the command line asked for.
struct Args {
    hub: String,
    device_db: String,
    node: String,
    domain: String,
    problem_class: String,
    every: Duration,
    generate: Option<u64>,
    exit_when_forwarded: bool,
    max_bytes: Option<u64>,
    batch: usize,
}

fn usage(problem: &str) -> ! {
    eprintln!("edge_device: {problem}");
    eprintln!(
        "usage: edge_device --hub URL [--device-db PATH] [--node NAME] [--domain D] [--problem-class P] \
         [--every 2s] [--generate N] [--exit-when-forwarded] [--max-bytes BYTES] [--batch N]"
    );
    std::process::exit(2)
}

fn duration(s: &str) -> Duration {
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = n
        .parse()
        .unwrap_or_else(|_| usage(&format!("{s:?} is not a duration (500ms, 2s, 1m)")));
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => usage(&format!("{s:?} is not a duration (500ms, 2s, 1m)")),
    };
    Duration::from_secs_f64(secs.max(0.001))
}

fn parse_args() -> Args {
    let mut args = Args {
        hub: String::new(),
        device_db: "edge_device.db".into(),
        node: "edge-device-1".into(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        every: Duration::from_secs(2),
        generate: None,
        exit_when_forwarded: false,
        max_bytes: None,
        batch: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--hub" => args.hub = value(),
            "--device-db" => args.device_db = value(),
            "--node" => args.node = value(),
            "--domain" => args.domain = value(),
            "--problem-class" => args.problem_class = value(),
            "--every" => args.every = duration(&value()),
            "--generate" => {
                args.generate = Some(
                    value()
                        .parse()
                        .unwrap_or_else(|_| usage("--generate takes a count")),
                )
            }
            "--max-bytes" => {
                args.max_bytes = Some(
                    value()
                        .parse()
                        .unwrap_or_else(|_| usage("--max-bytes takes a number of bytes")),
                )
            }
            "--batch" => {
                args.batch = value()
                    .parse()
                    .ok()
                    .filter(|&b| b > 0)
                    .unwrap_or_else(|| usage("--batch takes a positive count"))
            }
            "--exit-when-forwarded" => args.exit_when_forwarded = true,
            "-h" | "--help" => usage("store and forward device agent"),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if args.hub.is_empty() {
        usage("--hub URL is required");
    }
    args
}

/// One of this device's outcomes: a reading of its `n`-th sensor.
fn outcome(args: &Args, n: u64) -> OutcomePacket {
    let drift = (n % 17) as f64 / 100.0;
    OutcomePacket {
        agent_id: format!("{}-sensor-{}", args.node, n % 4),
        domain: args.domain.clone(),
        problem_class: args.problem_class.clone(),
        conclusion: format!(
            "Compressor draw {:.0}% above baseline (reading {n}).",
            12.0 + drift * 100.0
        ),
        confidence: 0.7 + drift,
        context_vector: vec![0.18 + drift, 0.92, 0.03, 0.71],
        timestamp: qis::timestamp_now(),
        source_node: args.node.clone(),
    }
}

/// The twins seen in the local file so far: the latest packet of each agent.
struct Twins {
    consumer: Arc<dyn DurableConsumer>,
    latest: HashMap<String, OutcomePacket>,
}

impl Twins {
    /// Rebuilt from everything the file holds on this problem: the consumer
    /// is deleted and opened again with all retained history.
    async fn open(
        local: &SqliteTransport,
        dyn_local: &DynTransport,
        args: &Args,
    ) -> qis::Result<Twins> {
        let name = format!("synth-{}", args.node);
        local.delete_consumer(&name).await?;
        let subject = Subject::readable(dyn_local.prefix(), &args.domain, &args.problem_class)?;
        let consumer = dyn_local
            .consumer(ConsumerConfig::new(name, SubjectPattern::from(&subject))?)
            .await?;
        Ok(Twins {
            consumer,
            latest: HashMap::new(),
        })
    }

    /// Take in what arrived in the file since the last look.
    async fn refresh(&mut self) -> qis::Result<()> {
        loop {
            let got = self.consumer.fetch(500, Duration::ZERO).await?;
            if got.is_empty() {
                return Ok(());
            }
            for d in &got {
                let p = d.packet();
                let newer = self
                    .latest
                    .get(&p.agent_id)
                    .is_none_or(|old| old.timestamp <= p.timestamp);
                if newer {
                    self.latest.insert(p.agent_id.clone(), p.clone());
                }
            }
            // Acked as soon as it is in memory: the file owes this consumer
            // nothing, so it never holds the outbox.
            self.consumer.ack(&got).await?;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> qis::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let args = parse_args();
    let started = Instant::now();

    // The outbox: a local file, always reachable. A small page cache: the
    // agent writes and reads the file front to back, the OS caches it.
    let mut config = SqliteConfig::new(&args.device_db).cache_size(256 << 10);
    if let Some(b) = args.max_bytes {
        config = config.max_bytes(b);
    }
    let local = SqliteTransport::connect(config).await?;
    let dyn_local: DynTransport = Arc::new(local.clone());
    println!(
        "edge_device {}: outbox {} (when full: {}), hub {}",
        args.node,
        args.device_db,
        local.config().when_full,
        args.hub
    );

    // The hub: connected (again) by the bridges whenever they need it.
    let hub = {
        let url = args.hub.clone();
        Endpoint::connect(move || {
            let url = url.clone();
            Box::pin(async move { qis::connect(&url).await })
        })
    };
    let backoff = Backoff {
        max: Duration::from_secs(5),
        ..Backoff::default()
    };
    let up = Bridge::up(
        dyn_local.clone(),
        hub.clone(),
        args.node.clone(),
        BridgeConfig::new(format!("up-{}", args.node))?
            .batch(args.batch)
            .backoff(backoff),
    );
    // Down: the hub's packets on this device's domain, except its own.
    let hub_prefix = qis::TransportConfig::from_url(&args.hub)?.prefix().clone();
    let down_pattern = SubjectPattern::new(format!("{hub_prefix}.{}.>", args.domain))?;
    let down = Bridge::down(
        hub,
        dyn_local.clone(),
        args.node.clone(),
        BridgeConfig::new(format!("down-{}", args.node))?
            .pattern(down_pattern)
            .batch(args.batch)
            .backoff(backoff),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let up_run = tokio::spawn({
        let (up, rx) = (up.clone(), stop_rx.clone());
        async move { up.run_until(stopped(rx)).await }
    });
    let down_run = tokio::spawn({
        let (down, rx) = (down.clone(), stop_rx.clone());
        async move { down.run_until(stopped(rx)).await }
    });

    // Its own outcomes.
    let mut deposited = 0u64;
    if let Some(n) = args.generate {
        let mut next = 0;
        while next < n {
            let batch: Vec<OutcomePacket> = (next..n.min(next + 500))
                .map(|i| outcome(&args, i))
                .collect();
            local.deposit_batch(&batch).await?;
            next += batch.len() as u64;
        }
        deposited = n;
        println!("deposited {n} outcomes to the outbox");
    }

    let mut twins = Twins::open(&local, &dyn_local, &args).await?;
    let mut ticks = tokio::time::interval(args.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                println!("interrupted: finishing the batches in flight");
                break;
            }
            _ = ticks.tick() => {}
        }
        if args.generate.is_none() {
            match local.deposit(&outcome(&args, deposited)).await {
                Ok(_) => deposited += 1,
                Err(e) if e.kind() == ErrorKind::StoreFull => {
                    println!("outbox full, outcome not stored (retry once the hub is back): {e}");
                }
                Err(e) => return Err(e),
            }
        }
        twins.refresh().await?;
        let own = outcome(&args, deposited);
        let s = synthesize(&own, twins.latest.values());
        let (u, d) = (up.status(), down.status());
        println!(
            "{:>6.1}s  hub {}  up: forwarded {} dup {} waiting {}  down: forwarded {}  synth: {} agents, weighted confidence {:.2}, alert {}",
            started.elapsed().as_secs_f64(),
            if u.destination_connected || d.source_connected { "up" } else { "unreachable" },
            u.forwarded,
            u.duplicates,
            u.backlog.map_or("?".to_string(), |b| b.total().to_string()),
            d.forwarded,
            s.n_agents,
            s.weighted_confidence,
            s.alert,
        );
        if args.exit_when_forwarded && u.forwarded + u.duplicates >= deposited {
            let outstanding = dyn_local
                .consumers()
                .await?
                .into_iter()
                .find(|c| c.name == u.name)
                .map_or(u64::MAX, |c| c.backlog.total());
            if outstanding == 0 {
                println!("everything deposited is on the hub");
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    let up_final = up_run.await.expect("the up bridge task")?;
    let down_final = down_run.await.expect("the down bridge task")?;
    println!(
        "stopped after {:.1}s: up forwarded {} (duplicates {}), down forwarded {}",
        started.elapsed().as_secs_f64(),
        up_final.forwarded,
        up_final.duplicates,
        down_final.forwarded
    );
    local.close().await
}
