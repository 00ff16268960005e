//! The swarm scenario, run once on one backend, measured.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::ProgressBar;
use qis::{
    Capabilities, ConsumerConfig, DynTransport, EncodedPacket, ErrorKind, OutcomePacket, PacketId,
    Subject, TransportConfig,
};
use rand::Rng;

use super::similar::SimilarLatency;
use super::wire;
use crate::error::describe;

/// How long a connect may take before the backend counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deposits awaited one at a time stop after this long, whatever the count.
const SINGLE_CAP: Duration = Duration::from_secs(5);
/// How long to wait for one packet on the live subscription.
const LIVE_WAIT: Duration = Duration::from_secs(2);
/// The latency probe stops after this long.
const LATENCY_CAP: Duration = Duration::from_secs(10);
/// Packets in the latency probe, at most.
pub const LATENCY_PACKETS: usize = 200;
/// The fetch phase gives up after this long…
const FETCH_CAP: Duration = Duration::from_secs(30);
/// …or after this long without a new packet.
const FETCH_STALL: Duration = Duration::from_secs(10);
/// Packets per batch deposit.
pub const BATCH: usize = 100;
/// Deliveries asked for per fetch.
pub const FETCH_MAX: usize = 500;
/// Agents in the swarm.
pub const AGENTS: usize = 64;
/// Problem classes the swarm reports on (domain `hvac`).
pub const CLASSES: [&str; 4] = [
    "energy-anomaly",
    "filter-clog",
    "refrigerant-leak",
    "sensor-drift",
];
/// Extra deposits counted on the wire, at most.
pub const WIRE_PACKETS: usize = 200;

/// Packets over a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    /// How many packets.
    pub packets: usize,
    /// In how many seconds.
    pub secs: f64,
}

impl Rate {
    fn since(packets: usize, start: Instant) -> Self {
        Rate {
            packets,
            secs: start.elapsed().as_secs_f64(),
        }
    }

    /// Packets per second.
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.packets as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Deposit → live arrival times.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Live packets that arrived.
    pub received: usize,
    /// Packets deposited while subscribed.
    pub sent: usize,
}

/// What a packet costs beyond its body.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// Bytes on the loopback TCP connection(s) per deposit.
    Wire {
        /// Client → server.
        up: f64,
        /// Server → client.
        down: f64,
        /// Over how many deposits.
        packets: usize,
    },
    /// The database file at rest, per stored packet.
    Disk {
        /// Bytes per packet.
        bytes: f64,
        /// The write-ahead log had been folded back into the file (else its
        /// size is included).
        at_rest: bool,
    },
    /// Not measured, and why.
    NotMeasured(String),
}

/// Everything measured on one reachable backend.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The prefix the run used.
    pub prefix: String,
    /// What the backend says it can do.
    pub caps: Capabilities,
    /// Deposits awaited one at a time.
    pub single: Rate,
    /// Batch deposits.
    pub batch: Rate,
    /// Durable fetch + ack of everything deposited (distinct packets), when
    /// the backend has durable consumers.
    pub fetch_ack: Option<Rate>,
    /// Packets deposited in all.
    pub deposited: usize,
    /// Deliveries beyond the first of a packet (at-least-once redelivery).
    pub redelivered: usize,
    /// Deposit → live latency, when the backend has live subscriptions.
    pub live: Option<Latency>,
    /// Mean body size, bytes.
    pub body_mean: f64,
    /// Envelope measurement.
    pub envelope: Envelope,
    /// Similarity query latency, when the backend searches by similarity
    /// (and the phase was asked for): measured, or why it failed.
    pub similar: Option<Result<SimilarLatency, String>>,
}

/// How a backend's run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The transport is not compiled into this binary.
    NotBuilt(String),
    /// No URL, or the server could not be reached.
    Unreachable(String),
    /// Connected, then an operation failed.
    Failed {
        /// Which phase.
        phase: &'static str,
        /// The error.
        reason: String,
    },
    /// Measured.
    Measured(Box<Measurement>),
}

/// One backend's row.
#[derive(Debug, Clone)]
pub struct BackendRun {
    /// Backend name.
    pub name: &'static str,
    /// The URL used (or empty).
    pub url: String,
    /// How it went.
    pub outcome: Outcome,
}

/// `n` distinct packets from a swarm of HVAC agents, encoded for `prefix`.
pub fn swarm(n: usize, prefix: &Subject) -> qis::Result<Vec<EncodedPacket>> {
    let mut rng = rand::rng();
    let t0 = qis::timestamp_now();
    let agents = AGENTS.min(n).max(1);
    (0..n)
        .map(|i| {
            let agent = i % agents;
            let round2 = |x: f64| (x * 100.0).round() / 100.0;
            let packet = OutcomePacket {
                agent_id: format!("hvac-agent-{agent:03}"),
                domain: "hvac".into(),
                problem_class: CLASSES[agent % CLASSES.len()].into(),
                conclusion: format!(
                    "Compressor draw {}% above baseline over the last {} cycles.",
                    rng.random_range(5..40),
                    rng.random_range(10..500)
                ),
                confidence: round2(rng.random_range(0.5..1.0)),
                context_vector: (0..4).map(|_| round2(rng.random::<f64>())).collect(),
                timestamp: t0 + i as f64 * 0.001,
                source_node: format!("site-{}-floor-{}", agent / 8, agent % 8),
            };
            EncodedPacket::readable(&packet, prefix)
        })
        .collect()
}

fn failed(name: &'static str, url: &str, phase: &'static str, e: &qis::Error) -> BackendRun {
    BackendRun {
        name,
        url: url.to_string(),
        outcome: Outcome::Failed {
            phase,
            reason: describe(e),
        },
    }
}

/// The file an `sqlite:` URL names.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next()?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The size of the database file once its last connection has closed and
/// SQLite has folded the write-ahead log back into it (waits up to 5 s); if
/// the log is still there, its size is added and the second value is false.
async fn sqlite_bytes_at_rest(db: &Path) -> (u64, bool) {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let deadline = Instant::now() + Duration::from_secs(5);
    while size(&wal) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = size(&wal);
    (size(db) + pending, pending == 0)
}

/// Run the scenario with `n` packets on the backend `name` at `url`, then,
/// where the backend searches by similarity and `similar_stored` > 0, time
/// similarity queries with that many packets stored.
pub async fn run(
    name: &'static str,
    url: &str,
    n: usize,
    similar_stored: usize,
    bar: &ProgressBar,
) -> BackendRun {
    let row = |outcome| BackendRun {
        name,
        url: url.to_string(),
        outcome,
    };
    let config = match TransportConfig::from_url(url) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            return row(Outcome::NotBuilt(describe(&e)))
        }
        Err(e) => return failed(name, url, "URL", &e),
    };
    let prefix = Subject::new(format!("cmp{:08x}.iot", rand::rng().random::<u32>()))
        .expect("a random hex token is a valid subject token");
    let disk = sqlite_path(url).filter(|_| name == "sqlite");
    // A file given with --urls may hold earlier packets: count only the growth.
    let disk_before = match &disk {
        Some(path) => sqlite_bytes_at_rest(path).await.0,
        None => 0,
    };
    let transport = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        config.with_prefix(prefix.clone()).connect(),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return row(Outcome::Unreachable(describe(&e))),
        Err(_) => {
            return row(Outcome::Unreachable(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
    };

    let packets = match swarm(n, &prefix) {
        Ok(p) => p,
        Err(e) => return failed(name, url, "packets", &e),
    };
    let body_mean = packets.iter().map(|p| p.body().len()).sum::<usize>() as f64 / n as f64;
    let measured = measure(&transport, &prefix, &packets, bar).await;
    let mut m = match measured {
        Ok(m) => m,
        Err((phase, e)) => {
            let _ = transport.close().await;
            return failed(name, url, phase, &e);
        }
    };
    if m.caps.similarity && similar_stored > 0 {
        let got =
            super::similar::measure(&transport, &prefix, m.deposited, similar_stored, bar).await;
        m.similar = Some(got.map_err(|e| describe(&e)));
    }
    let closed = transport.close().await;
    if let Err(e) = closed {
        return failed(name, url, "close", &e);
    }
    m.body_mean = body_mean;
    m.prefix = prefix.to_string();
    m.envelope = match (name, disk) {
        ("memory", _) => Envelope::NotMeasured("in process: no wire, no file".into()),
        (_, Some(path)) => {
            let (bytes, at_rest) = sqlite_bytes_at_rest(&path).await;
            Envelope::Disk {
                bytes: bytes.saturating_sub(disk_before) as f64 / m.deposited as f64,
                at_rest,
            }
        }
        _ => {
            bar.set_message("wire bytes");
            match swarm(WIRE_PACKETS.min(n) + 1, &prefix) {
                Ok(extra) => wire::measure(url, &prefix, &extra, body_mean, bar).await,
                Err(e) => Envelope::NotMeasured(describe(&e)),
            }
        }
    };
    row(Outcome::Measured(Box::new(m)))
}

type PhaseError = (&'static str, qis::Error);

/// How the packets are split between the phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Deposited one at a time, each awaited.
    pub single: usize,
    /// Deposited one at a time, each awaited and then awaited on the live
    /// subscription (only for backends with live subscriptions).
    pub latency: usize,
    /// Deposited in batches of [`BATCH`].
    pub batch: usize,
}

impl Plan {
    /// A quarter one at a time, up to [`LATENCY_PACKETS`] (a tenth at most)
    /// for the latency probe when `live`, the rest in batches.
    pub fn new(n: usize, live: bool) -> Self {
        let single = (n / 4).max(1).min(n);
        let latency = if live { LATENCY_PACKETS.min(n / 10) } else { 0 };
        Plan {
            single,
            latency,
            batch: n - single - latency,
        }
    }
}

/// Deposit each packet and wait for it on a live subscription before the
/// next: one packet in flight, so the figure is the unloaded deposit → live
/// latency. A packet not seen within [`LIVE_WAIT`] counts as lost (live is
/// at-most-once).
async fn live_latency(
    t: &DynTransport,
    prefix: &Subject,
    probe: &[EncodedPacket],
    bar: &ProgressBar,
) -> Result<Latency, PhaseError> {
    let mut live = t
        .subscribe(prefix.all_below())
        .await
        .map_err(|e| ("subscribe", e))?;
    let mut ms = Vec::with_capacity(probe.len());
    let start = Instant::now();
    for p in probe {
        let at = Instant::now();
        t.deposit_encoded(p).await.map_err(|e| ("deposit", e))?;
        let deadline = tokio::time::Instant::now() + LIVE_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, live.next()).await {
                Ok(Some(Ok(r))) if r.id == p.id() => {
                    ms.push(at.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "live subscription reported an error")
                }
                Ok(None) => {
                    return Err((
                        "live",
                        qis::Error::new(ErrorKind::Closed, t.name(), "the live subscription ended"),
                    ))
                }
                Err(_) => break,
            }
        }
        bar.inc(1);
        if start.elapsed() > LATENCY_CAP {
            break;
        }
    }
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if ms.is_empty() {
            f64::NAN
        } else {
            ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1]
        }
    };
    Ok(Latency {
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        received: ms.len(),
        sent: probe.len(),
    })
}

async fn measure(
    t: &DynTransport,
    prefix: &Subject,
    packets: &[EncodedPacket],
    bar: &ProgressBar,
) -> Result<Measurement, PhaseError> {
    let caps = t.capabilities();
    let n = packets.len();
    let plan = Plan::new(n, caps.live);

    bar.set_message("deposit 1×1");
    let start = Instant::now();
    let mut single_done = 0;
    for p in &packets[..plan.single] {
        t.deposit_encoded(p).await.map_err(|e| ("deposit", e))?;
        single_done += 1;
        bar.inc(1);
        if start.elapsed() > SINGLE_CAP {
            break;
        }
    }
    let single = Rate::since(single_done, start);
    // The bar counts the packets the single phase skipped after its cap.
    bar.inc((plan.single - single_done) as u64);

    let probe = &packets[plan.single..plan.single + plan.latency];
    let live = if probe.is_empty() {
        None
    } else {
        bar.set_message("live latency");
        Some(live_latency(t, prefix, probe, bar).await?)
    };

    bar.set_message("deposit batch");
    let rest = &packets[plan.single + plan.latency..];
    let start = Instant::now();
    for chunk in rest.chunks(BATCH) {
        t.deposit_encoded_batch(chunk)
            .await
            .map_err(|e| ("batch deposit", e))?;
        bar.inc(chunk.len() as u64);
    }
    let batch = Rate::since(rest.len(), start);
    let deposited = single_done + probe.len() + rest.len();

    let (fetch_ack, redelivered) = if caps.durable {
        let (rate, redelivered) = fetch_all(t, prefix, deposited, bar).await?;
        (Some(rate), redelivered)
    } else {
        bar.inc(deposited as u64);
        (None, 0)
    };

    Ok(Measurement {
        prefix: String::new(),
        caps,
        single,
        batch,
        fetch_ack,
        deposited,
        redelivered,
        live,
        body_mean: 0.0,
        envelope: Envelope::NotMeasured(String::new()),
        similar: None,
    })
}

/// A new durable consumer on `PREFIX.>` fetching and acking until every one
/// of `deposited` packets came (or the caps): the rate of distinct packets,
/// and the redeliveries seen.
async fn fetch_all(
    t: &DynTransport,
    prefix: &Subject,
    deposited: usize,
    bar: &ProgressBar,
) -> Result<(Rate, usize), PhaseError> {
    bar.set_message("fetch + ack");
    let config = ConsumerConfig::new("compare", prefix.all_below()).map_err(|e| ("consumer", e))?;
    let consumer = t.consumer(config).await.map_err(|e| ("consumer", e))?;
    let mut seen: HashSet<PacketId> = HashSet::with_capacity(deposited);
    let mut redelivered = 0;
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let fetched = async {
        while seen.len() < deposited
            && start.elapsed() < FETCH_CAP
            && last_progress.elapsed() < FETCH_STALL
        {
            let batch = consumer
                .fetch(FETCH_MAX, Duration::from_secs(1))
                .await
                .map_err(|e| ("fetch", e))?;
            if batch.is_empty() {
                continue;
            }
            consumer.ack(&batch).await.map_err(|e| ("ack", e))?;
            for d in &batch {
                if seen.insert(d.id()) {
                    bar.inc(1);
                } else {
                    redelivered += 1;
                }
            }
            last_progress = Instant::now();
        }
        Ok::<(), PhaseError>(())
    }
    .await;
    let fetch_ack = Rate::since(seen.len(), start);
    let closed = consumer.close().await.map_err(|e| ("consumer close", e));
    fetched?;
    closed?;

    Ok((fetch_ack, redelivered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_packets_are_distinct_and_small() {
        let p = swarm(300, &Subject::default()).unwrap();
        let ids: HashSet<_> = p.iter().map(|e| e.id()).collect();
        assert_eq!(ids.len(), 300);
        assert!(p.iter().all(|e| e.body().len() <= qis::MAX_PACKET_BYTES));
    }

    #[test]
    fn plans_add_up() {
        for n in [4, 5, 100, 2000, 10_001] {
            for live in [false, true] {
                let p = Plan::new(n, live);
                assert_eq!(p.single + p.latency + p.batch, n, "{n} {live}");
                assert!(p.single >= 1);
            }
        }
        assert_eq!(
            Plan::new(2000, true),
            Plan {
                single: 500,
                latency: 200,
                batch: 1300
            }
        );
        assert_eq!(Plan::new(2000, false).latency, 0);
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db?poll_interval=5ms"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(sqlite_path("sqlite://x.db"), Some(PathBuf::from("x.db")));
        assert_eq!(sqlite_path("nats://x"), None);
    }
}
