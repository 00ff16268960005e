//! Speed of local synthesis beside the seed's Python `synthesize_locally`,
//! timed on the same packets in the same run.
//!
//! `cargo bench -p qis-core --bench synthesis` (about a minute; needs `python3`
//! for the seed's column, which is skipped without it).
//!
//! For 1,000, 10,000 and 100,000 delivered packets (distinct agents, and
//! again with 10 % of the deliveries being redeliveries of others), plus the
//! own packet echoed back once:
//!
//! - **seed**: the seed's `synthesize_locally`, copied from
//!   `../shared/seed/seed_nats_router.py` without its `print`, run by
//!   `python3` on the same packets (written to a temporary JSON file and
//!   turned into the seed's `OutcomePacket` dataclasses before timing). It
//!   counts duplicates as votes; it is the reference for speed only.
//! - **qis seed rules**: `synthesize_with(&SynthesisConfig::seed(), &own, &deliveries)` over `&[Received]`:
//!   the seed's figures with de-duplication by the delivered packet id and
//!   one vote per agent, plus agreement and the Bayesian figure.
//! - **qis default**: `synthesize_with(&SynthesisConfig::default(), …)`:
//!   confidence-weighted, quorum, outlier filter on.
//!
//! Each figure is the fastest of several repetitions (at least 0.5 s of them
//! for Rust, as many runs for Python), in five rounds where Rust and Python
//! take turns, each round of either side in a process of its own, in µs per
//! packet (deliveries + own): on a shared machine the
//! fastest run is the one least disturbed by other work. The ratio is seed ÷ qis: how many times faster. The target is at
//! least 5× at 10,000 and 100,000 packets with de-duplication.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qis_conformance::support::bench;
use qis_core::{synthesize_with, OutcomePacket, PacketId, Received, SynthesisConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const T: f64 = 1_764_000_000.0;
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

/// The seed's `synthesize_locally`, verbatim but for its `print` (and the
/// `time` import it needs), timed over `reps` runs on the packets in `path`.
const SEED_PY: &str = r#"
import json, sys, time
from dataclasses import dataclass

@dataclass
class OutcomePacket:
    agent_id: str
    domain: str
    problem_class: str
    conclusion: str
    confidence: float
    context_vector: list
    timestamp: float
    source_node: str

class NATSOutcomeRouter:
    def __init__(self, agent_id):
        self.agent_id = agent_id

    def synthesize_locally(self, my_packet: OutcomePacket, twin_packets: list[OutcomePacket]) -> dict:
        all_packets = [my_packet] + twin_packets
        n = len(all_packets)
        synthesis_pairs = n * (n - 1) // 2  # N(N-1)/2
        # Confidence-weighted consensus
        total_weight = sum(p.confidence for p in all_packets)
        weighted_confidence = total_weight / n if n > 0 else 0.0
        # Count agreement on problem class
        problem_votes = {}
        for p in all_packets:
            key = f"{p.domain}.{p.problem_class}"
            problem_votes[key] = problem_votes.get(key, 0) + 1
        consensus_problem = max(problem_votes, key=problem_votes.get)
        consensus_strength = problem_votes[consensus_problem] / n
        synthesis = {
            "agent_id": self.agent_id,
            "synthesis_pairs": synthesis_pairs,
            "n_agents": n,
            "consensus_problem": consensus_problem,
            "consensus_strength": round(consensus_strength, 3),
            "weighted_confidence": round(weighted_confidence, 3),
            "recommendation": (
                f"ALERT: {n} agents agree on {consensus_problem} "
                f"(consensus={consensus_strength:.0%})"
                if consensus_strength > 0.6
                else f"Monitoring: weak signal on {consensus_problem} ({n} inputs)"
            ),
            "synthesized_at": time.time(),
        }
        return synthesis

data = json.load(open(sys.argv[1]))
reps = int(sys.argv[2])
own = OutcomePacket(**data["own"])
twins = [OutcomePacket(**p) for p in data["twins"]]
router = NATSOutcomeRouter(own.agent_id)
router.synthesize_locally(own, twins)
times = []
for _ in range(reps):
    t0 = time.perf_counter()
    router.synthesize_locally(own, twins)
    times.append(time.perf_counter() - t0)
print(min(times) * 1e6 / (len(twins) + 1))
"#;

const PROBLEMS: [&str; 3] = ["energy-anomaly", "refrigerant-loss", "filter-clog"];
const CENTRE: [f64; 4] = [0.2, 0.9, 0.05, 0.7];

fn packet(rng: &mut StdRng, i: usize) -> OutcomePacket {
    let r = rng.random::<f64>();
    let problem = PROBLEMS[if r < 0.8 {
        0
    } else if r < 0.95 {
        1
    } else {
        2
    }];
    OutcomePacket {
        agent_id: format!("hvac-agent-{i:06}"),
        domain: "hvac".into(),
        problem_class: problem.into(),
        conclusion: format!(
            "Compressor draw {}% above baseline; check the filter.",
            i % 40
        ),
        confidence: ((0.5 + rng.random::<f64>() * 0.49) * 100.0).round() / 100.0,
        context_vector: CENTRE
            .iter()
            .map(|c| ((c + (rng.random::<f64>() - 0.5) * 0.1) * 1000.0).round() / 1000.0)
            .collect(),
        timestamp: T - (rng.random::<f64>() * 3600.0).round(),
        source_node: format!("building-{}-floor-{}", i % 50, i % 7),
    }
}

fn received(p: OutcomePacket) -> Received {
    let body = p.encode().expect("a valid packet");
    Received {
        subject: format!("qis.iot.hvac.{}", p.problem_class),
        id: PacketId::of(&body),
        packet: p,
    }
}

/// `n` deliveries (the own packet's echo among them); with `dup`, a tenth of
/// them are redeliveries of others, in random order.
fn deliveries(n: usize, dup: bool) -> (OutcomePacket, Vec<Received>) {
    // Seeded: every run measures the same packets.
    let mut rng = StdRng::seed_from_u64(0x5eed ^ n as u64 ^ u64::from(dup));
    let own = packet(&mut rng, n + 1);
    let distinct = if dup { n - n / 10 } else { n } - 1;
    let mut v: Vec<Received> = (0..distinct)
        .map(|i| received(packet(&mut rng, i)))
        .collect();
    v.push(received(own.clone()));
    while v.len() < n {
        let again = v[rng.random_range(0..distinct)].clone();
        v.push(again);
    }
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
    // As a transport's decoder would: each delivery's strings allocated in
    // delivery order.
    let v = v.to_vec();
    (own, v)
}

/// Fastest µs per packet of `f` over at least `min_reps` runs and 0.5 s.
fn time_it(packets: usize, min_reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < min_reps || started.elapsed() < Duration::from_millis(500) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.iter().copied().fold(f64::INFINITY, f64::min) * 1e6 / packets as f64
}

/// Write the packets where the seed's Python can read them.
fn write_packets(own: &OutcomePacket, twins: &[Received]) -> Option<PathBuf> {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "qis-synthesis-bench-{}-{}.json",
        std::process::id(),
        twins.len()
    ));
    let body = serde_json::json!({
        "own": own,
        "twins": twins.iter().map(|r| &r.packet).collect::<Vec<_>>(),
    });
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(body.to_string().as_bytes()))
        .ok()?;
    Some(path)
}

fn seed_python(path: &Path, reps: usize) -> Option<f64> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(SEED_PY)
        .arg(path)
        .arg(reps.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        println!("python3 failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Rounds per case: Rust and Python take turns, so that neither is measured
/// only while the machine is busy with something else.
const ROUNDS: usize = 5;

/// One round of the Rust side (`rules`: `seed` or `default`), timed in a
/// process of its own on the same packets, as each round of Python is: where
/// the process's memory lands moves the time (at 100,000 packets, 0.029 to
/// 0.094 µs a packet from one process to the next on identical input on the
/// 2-core development VM), so both sides take their fastest over as many
/// processes. `None` if the child cannot be run (then the caller times in
/// this process).
fn qis_round(n: usize, rules: &str, dup: bool, reps: usize) -> Option<f64> {
    let dup = if dup { "dup" } else { "nodup" };
    let out = Command::new(std::env::current_exe().ok()?)
        .args([
            "profile",
            &n.to_string(),
            rules,
            dup,
            "time",
            &reps.to_string(),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        println!(
            "timing process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// `… -- profile N seed|default [dup|nodup] [floor|time REPS]`: build the
/// packets for size `N` and run one synthesis `QIS_PROFILE_ITERS` times
/// (default 20), nothing else and no Python, for `perf record` or `valgrind
/// --tool=callgrind`. With `floor`, print instead the time to merely touch
/// what synthesis reads of each packet (the memory floor) beside one
/// synthesis; with `time`, only the fastest synthesis (µs per packet), which
/// is how the bench times each round of the Rust side.
fn profile(args: &[String]) {
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let config = match args.get(3).map(String::as_str) {
        Some("default") => SynthesisConfig::default().with_now(T).unwrap(),
        _ => SynthesisConfig::seed(),
    };
    let dup = args.get(4).is_some_and(|a| a == "dup");
    let iters: usize = std::env::var("QIS_PROFILE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (own, twins) = deliveries(n, dup);
    if let Ok(to) = std::env::var("QIS_PROFILE_JSON") {
        // The packets, for timing the seed's Python separately.
        if let Some(path) = write_packets(&own, &twins) {
            let _ = std::fs::rename(path, to);
        }
        return;
    }
    if args.get(5).is_some_and(|a| a == "time") {
        // One round of the bench's Rust side, in a process of its own.
        let reps = args.get(6).and_then(|a| a.parse().ok()).unwrap_or(20);
        let t = time_it(twins.len() + 1, reps, || {
            std::hint::black_box(synthesize_with(&config, &own, std::hint::black_box(&twins)));
        });
        println!("{t}");
        return;
    }
    if args.get(5).is_some_and(|a| a == "floor") {
        // The memory floor: touch what synthesis reads, nothing else.
        let t = time_it(twins.len() + 1, 20, || {
            let mut acc = 0u64;
            for r in std::hint::black_box(&twins) {
                let p = &r.packet;
                acc = acc
                    .wrapping_add(u64::from(r.id.as_bytes()[0]))
                    .wrapping_add(u64::from(p.agent_id.as_bytes()[0]))
                    .wrapping_add(u64::from(p.domain.as_bytes()[0]))
                    .wrapping_add(u64::from(p.problem_class.as_bytes()[0]))
                    .wrapping_add(p.context_vector.first().map_or(0, |x| x.to_bits()))
                    .wrapping_add(p.confidence.to_bits() ^ p.timestamp.to_bits());
            }
            std::hint::black_box(acc);
        });
        let t2 = time_it(twins.len() + 1, 20, || {
            std::hint::black_box(synthesize_with(&config, &own, std::hint::black_box(&twins)));
        });
        println!("floor {t:.4} µs/packet; synthesis {t2:.4}");
        return;
    }
    let mut agents = 0;
    for _ in 0..iters {
        agents +=
            std::hint::black_box(synthesize_with(&config, &own, std::hint::black_box(&twins)))
                .n_agents;
    }
    println!(
        "{iters} syntheses of {} packets, {agents} votes",
        twins.len() + 1
    );
}

fn main() {
    // `cargo bench` adds `--bench`.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.get(1).is_some_and(|a| a == "profile") {
        return profile(&args);
    }
    println!(
        "synthesis: µs per packet (fastest run), seed = the seed's Python synthesize_locally on the same packets"
    );
    println!(
        "{:>8} {:>5} {:>9} {:>15} {:>7} {:>13} {:>7}",
        "packets", "dups", "seed", "qis seed rules", "ratio", "qis default", "ratio"
    );
    let default = SynthesisConfig::default().with_now(T).unwrap();
    // `cargo bench -p qis-core --bench synthesis -- 10000` runs one size.
    let only: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    for n in SIZES
        .into_iter()
        .filter(|n| only.is_empty() || only.contains(n))
    {
        for dup in [false, true] {
            let (own, twins) = deliveries(n, dup);
            let packets = twins.len() + 1;
            let reps = (2_000_000 / n).clamp(5, 200);
            let check = synthesize_with(&SynthesisConfig::seed(), &own, &twins);
            assert_eq!(check.duplicates_ignored, packets - 1 - check.n_agents + 1);
            let path = write_packets(&own, &twins);
            let (mut seed_rules, mut full) = (f64::INFINITY, f64::INFINITY);
            let mut seed: Option<f64> = None;
            for _ in 0..ROUNDS {
                let round = |rules: &str, config: &SynthesisConfig| {
                    qis_round(n, rules, dup, reps).unwrap_or_else(|| {
                        time_it(packets, reps, || {
                            std::hint::black_box(synthesize_with(
                                config,
                                &own,
                                std::hint::black_box(&twins),
                            ));
                        })
                    })
                };
                seed_rules = seed_rules.min(round("seed", &SynthesisConfig::seed()));
                full = full.min(round("default", &default));
                if let Some(t) = path.as_deref().and_then(|p| seed_python(p, reps)) {
                    seed = Some(seed.map_or(t, |s| s.min(t)));
                }
            }
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
            let dups = if dup { "10%" } else { "0" };
            let ratio = |qis: f64, rules: &str| {
                seed.map_or("-".to_string(), |s| {
                    let r = bench::record_ratio(
                        "synthesis",
                        &format!("{n} packets, {dups} duplicates, {rules}"),
                        "seed (Python)",
                        qis,
                        s,
                        s / qis,
                        "µs per packet (lower is better; ratio seed/qis)",
                    );
                    format!("{r:.1}×")
                })
            };
            println!(
                "{n:>8} {:>5} {:>9} {seed_rules:>15.3} {:>7} {full:>13.3} {:>7}",
                dups,
                seed.map_or("-".to_string(), |s| format!("{s:.3}")),
                ratio(seed_rules, "seed rules"),
                ratio(full, "default rules"),
            );
        }
    }
}
