//! The main job: a swarm of edge agents across several domains closes the QIS
//! loop on one transport — deposit outcomes, pull twins, synthesise locally,
//! emit new packets — and ends with a summary a person can read.
//!
//! ```text
//! cargo run --release --example swarm                      # SQLite, no server
//! cargo run --release --example swarm -- --url nats://127.0.0.1:4222 --agents 40 --rounds 5
//! ```
//!
//! Options: `--url URL` (default: a fresh SQLite file in the temp folder),
//! `--agents N` (default 24), `--rounds N` (default 4), `--prefix P` (default
//! `qis.iot`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use qis::{
    synthesize_with, ConsumerConfig, DurableConsumer, DynTransport, OutcomePacket,
    OutcomeTransportExt, StartPosition, Subject, SubjectPattern, Synthesis, SynthesisConfig,
};

/// The problems the fleet can run into: (domain, problem class, what a device says, typical context).
const PROBLEMS: &[(&str, &str, &str, [f64; 4])] = &[
    (
        "hvac",
        "energy-anomaly",
        "Compressor draw above baseline; possible refrigerant loss.",
        [0.18, 0.92, 0.03, 0.71],
    ),
    (
        "hvac",
        "refrigerant-loss",
        "Suction pressure falling over 6 h; charge low.",
        [0.61, 0.22, 0.40, 0.10],
    ),
    (
        "predictive-maintenance",
        "bearing-wear",
        "Harmonic at 47 Hz rising; inspect within 72 h.",
        [0.47, -0.20, 0.95, 0.30],
    ),
    (
        "predictive-maintenance",
        "gear-tooth-fatigue",
        "Sidebands around mesh frequency; tooth wear likely.",
        [0.12, 0.55, 0.33, -0.40],
    ),
    (
        "power",
        "voltage-sag",
        "Three sags below 0.9 pu in an hour on phase B.",
        [0.05, 0.81, 0.66, 0.20],
    ),
    (
        "environmental",
        "co2-spike",
        "CO2 above 1,400 ppm for 20 min; ventilation short.",
        [0.90, 0.10, 0.25, 0.75],
    ),
];

struct Args {
    url: Option<String>,
    agents: usize,
    rounds: usize,
    prefix: Subject,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: None,
        agents: 24,
        rounds: 4,
        prefix: Subject::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = Some(value()?),
            "--agents" => a.agents = value()?.parse().map_err(|e| format!("--agents: {e}"))?,
            "--rounds" => a.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--prefix" => a.prefix = value()?.parse().map_err(|e: qis::Error| e.to_string())?,
            "-h" | "--help" => {
                println!("usage: swarm [--url URL] [--agents N] [--rounds N] [--prefix P]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}; try --help")),
        }
    }
    if a.agents < 2 || a.rounds == 0 {
        return Err("need --agents ≥ 2 and --rounds ≥ 1".into());
    }
    Ok(a)
}

/// One edge device: it observes its own machine, deposits what it concluded,
/// pulls its twins' conclusions and synthesises.
struct Agent {
    id: String,
    node: String,
    domain: &'static str,
    /// What this device's machine really has (index into PROBLEMS).
    truth: usize,
    /// Seeded per agent, so every run tells the same story.
    rng: StdRng,
    twins: Arc<dyn DurableConsumer>,
    /// The latest packet from each twin agent (one vote per agent).
    known: HashMap<String, OutcomePacket>,
    last: Option<Synthesis>,
}

impl Agent {
    /// Local processing: raw signal → an outcome packet. The device usually
    /// reaches the right conclusion, sometimes a neighbouring one.
    fn observe(&mut self) -> OutcomePacket {
        let same_domain: Vec<usize> = (0..PROBLEMS.len())
            .filter(|&i| PROBLEMS[i].0 == self.domain)
            .collect();
        let pick = if self.rng.random::<f64>() < 0.75 {
            self.truth
        } else {
            same_domain[self.rng.random_range(0..same_domain.len())]
        };
        let (domain, problem, conclusion, ctx) = PROBLEMS[pick];
        let context_vector = ctx
            .iter()
            .map(|x| ((x + (self.rng.random::<f64>() - 0.5) * 0.1) * 1000.0).round() / 1000.0)
            .collect();
        OutcomePacket {
            agent_id: self.id.clone(),
            domain: domain.into(),
            problem_class: problem.into(),
            conclusion: conclusion.into(),
            confidence: ((0.55 + self.rng.random::<f64>() * 0.4) * 100.0).round() / 100.0,
            context_vector,
            timestamp: qis::timestamp_now(),
            source_node: self.node.clone(),
        }
    }

    /// Pull twins (durable, acked), then synthesise with our own packet. If
    /// the swarm agrees, emit a new packet carrying the consensus.
    async fn round(&mut self, t: &DynTransport) -> qis::Result<RoundStats> {
        let own = self.observe();
        t.deposit(&own).await?;
        let mut fetched = 0;
        loop {
            let batch = self.twins.fetch(256, Duration::from_millis(50)).await?;
            if batch.is_empty() {
                break;
            }
            fetched += batch.len();
            self.twins.ack(&batch).await?;
            for d in batch {
                let p = d.received.packet;
                let newer = self
                    .known
                    .get(&p.agent_id)
                    .is_none_or(|old| p.timestamp >= old.timestamp);
                if newer {
                    self.known.insert(p.agent_id.clone(), p);
                }
            }
        }
        // The defaults: confidence-weighted, a quorum of two, outliers excluded.
        let s = synthesize_with(&SynthesisConfig::default(), &own, self.known.values());
        let mut emitted = false;
        if s.alert {
            // New outcome packet: the loop continues with what the swarm
            // concluded; being this agent's latest, it replaces its vote.
            t.deposit(&s.next_packet(&own)?).await?;
            emitted = true;
        }
        let stats = RoundStats {
            deposited: 1 + emitted as usize,
            fetched,
            alert: s.alert,
        };
        self.last = Some(s);
        Ok(stats)
    }
}

#[derive(Default)]
struct RoundStats {
    deposited: usize,
    fetched: usize,
    alert: bool,
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("swarm: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("swarm: error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> qis::Result<()> {
    let run_id = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            % 0xffffff
    );
    let (url, temp_file) = match &args.url {
        Some(u) => (u.clone(), None),
        None => {
            let path = std::env::temp_dir().join(format!("qis-swarm-{run_id}.db"));
            (format!("sqlite://{}", path.display()), Some(path))
        }
    };
    let started = Instant::now();
    let t = qis::TransportConfig::from_url(&url)?
        .with_prefix(args.prefix.clone())
        .connect()
        .await?;
    let caps = t.capabilities();
    println!(
        "QIS swarm: {} agents, {} rounds, on {} ({url})",
        args.agents,
        args.rounds,
        t.name()
    );

    // Each agent opens its durable consumer on its domain before anything is
    // deposited in this run; it starts at the run's start time, so a shared
    // server's older runs don't muddle the story.
    let run_start = SystemTime::now() - Duration::from_millis(5);
    let start = if caps.start_since {
        StartPosition::Since(run_start)
    } else {
        StartPosition::All
    };
    let mut agents = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let truth = i % PROBLEMS.len();
        let domain = PROBLEMS[truth].0;
        let pattern = SubjectPattern::new(format!("{}.{domain}.*", args.prefix))?;
        let name = format!("swarm-{run_id}-agent-{i}");
        let twins = t
            .consumer(ConsumerConfig::new(name, pattern)?.start(start))
            .await?;
        agents.push(Agent {
            id: format!("{domain}-agent-{i:02}"),
            node: format!("site-{}-node-{}", i % 4, i),
            domain,
            truth,
            rng: StdRng::seed_from_u64(0x5eed ^ (i as u64 * 0x9e37_79b9)),
            twins,
            known: HashMap::new(),
            last: None,
        });
    }

    let mut total = RoundStats::default();
    for round in 1..=args.rounds {
        let round_started = Instant::now();
        let tasks: Vec<_> = agents
            .into_iter()
            .map(|mut a| {
                let t = t.clone();
                tokio::spawn(async move {
                    let r = a.round(&t).await;
                    (a, r)
                })
            })
            .collect();
        agents = Vec::with_capacity(tasks.len());
        let (mut deposited, mut fetched, mut alerts) = (0, 0, 0);
        for task in tasks {
            let (a, r) = task.await.expect("agent task");
            let s = r?;
            deposited += s.deposited;
            fetched += s.fetched;
            alerts += s.alert as usize;
            agents.push(a);
        }
        total.deposited += deposited;
        total.fetched += fetched;
        println!(
            "  round {round}/{}: {deposited} packets deposited, {fetched} twin packets pulled, {alerts}/{} agents alerting ({:.0} ms)",
            args.rounds,
            agents.len(),
            round_started.elapsed().as_secs_f64() * 1000.0
        );
    }

    // What the swarm concluded, per domain (each agent's last synthesis).
    let mut per_domain: BTreeMap<&str, Vec<&Synthesis>> = BTreeMap::new();
    for a in &agents {
        if let Some(s) = &a.last {
            per_domain.entry(a.domain).or_default().push(s);
        }
    }
    println!("\nWhat the swarm concluded:");
    for (domain, syntheses) in &per_domain {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for s in syntheses {
            *votes.entry(s.consensus_problem.as_str()).or_default() += 1;
        }
        let (problem, n) = votes
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(p, n)| (*p, *n))
            .unwrap_or(("-", 0));
        let best = syntheses
            .iter()
            .filter(|s| s.consensus_problem == problem)
            .max_by(|a, b| a.posterior.probability.total_cmp(&b.posterior.probability));
        let alerts = syntheses.iter().filter(|s| s.alert).count();
        let k = syntheses.len() as f64;
        let agreement = syntheses.iter().map(|s| s.agreement).sum::<f64>() / k;
        let p_real = syntheses
            .iter()
            .map(|s| s.posterior.probability)
            .sum::<f64>()
            / k;
        let outliers: usize = syntheses.iter().map(|s| s.outliers.len()).sum();
        println!(
            "  {}.{domain}.*: {n} of {} agents settle on {problem}; {alerts} alerting; situations agree {:.0}%, P(real) {p_real:.2} on average, {outliers} outlier{} excluded",
            args.prefix,
            syntheses.len(),
            agreement * 100.0,
            if outliers == 1 { "" } else { "s" },
        );
        println!(
            "      strongest view: {}",
            best.map(|s| s.recommendation.as_str()).unwrap_or("-")
        );
    }
    let dups: usize = agents
        .iter()
        .filter_map(|a| a.last.as_ref())
        .map(|s| s.duplicates_ignored)
        .sum();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\n{} packets deposited, {} twin packets pulled and acked, {dups} echoes of the agents' own packets ignored by the last synthesis; {:.2} s in all ({:.0} packets/s through {}).",
        total.deposited,
        total.fetched,
        secs,
        (total.deposited + total.fetched) as f64 / secs,
        t.name()
    );
    for a in &agents {
        a.twins.close().await?;
    }
    t.close().await?;
    if let Some(path) = temp_file {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    Ok(())
}
