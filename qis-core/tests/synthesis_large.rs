//! Synthesis of large swarms: the shortcuts taken for speed at scale (the
//! agent table growing when the number of packets is not known up front,
//! medians in about one pass, the outlier filter settled by a bounding box,
//! sums without a conversion per voter) give the figures the rules define.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use qis_core::{synthesize_with, Method, OutcomePacket, PacketId, Received, SynthesisConfig};

const T: f64 = 1_764_000_000.0;

const PROBLEMS: [&str; 3] = ["energy-anomaly", "refrigerant-loss", "filter-clog"];

/// `n` agents on three problems around one situation, every `wild`-th of
/// them far away (0: none), some of them with a second, older packet, and a
/// tenth of the deliveries redelivered.
fn swarm(n: usize, wild: usize, seed: u64) -> (OutcomePacket, Vec<Received>) {
    // Seeded: every run checks the same swarm.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut packet = |i: usize, age: f64| {
        let r = rng.random::<f64>();
        let far = wild > 0 && i % wild == wild - 1;
        let cv: Vec<f64> = [0.2, 0.9, 0.05, 0.7]
            .iter()
            .map(|c| {
                let x = c + (rng.random::<f64>() - 0.5) * 0.3;
                if far {
                    x + 5.0 + rng.random::<f64>()
                } else {
                    // Some positions exactly on a bucket edge, some a hair
                    // above one (tiny positions inside their bucket).
                    match (rng.random::<f64>() * 20.0) as u32 {
                        0 => (x * 4.0).floor() / 4.0,
                        1 => (x * 4.0).floor() / 4.0 + 1e-12,
                        _ => x,
                    }
                }
            })
            .collect();
        OutcomePacket {
            agent_id: format!("agent-{i:05}"),
            domain: "hvac".into(),
            problem_class: PROBLEMS[(r * r * 3.0) as usize].into(),
            conclusion: "finding".into(),
            // Some confidences below 1/128 too.
            confidence: if i % 13 == 0 {
                0.004
            } else {
                0.5 + rng.random::<f64>() / 2.0
            },
            context_vector: cv,
            timestamp: T - age,
            source_node: "n".into(),
        }
    };
    let own = packet(n, 0.0);
    let mut v: Vec<Received> = Vec::new();
    for i in 0..n {
        v.push(received(packet(i, 60.0)));
        if i % 17 == 0 {
            v.push(received(packet(i, 600.0)));
        }
        if i % 10 == 0 {
            let again = v[v.len() / 2].clone();
            v.push(again);
        }
    }
    (own, v)
}

fn received(p: OutcomePacket) -> Received {
    Received {
        subject: "qis.iot.hvac".into(),
        id: PacketId::of(&p.encode().unwrap()),
        packet: p,
    }
}

fn configs() -> Vec<SynthesisConfig> {
    let base = SynthesisConfig::default().with_now(T).unwrap();
    vec![
        SynthesisConfig::seed().with_now(T).unwrap(),
        base,
        base.with_method(Method::Majority)
            .with_resolution(3)
            .unwrap(),
        base.with_half_life(std::time::Duration::from_secs(300))
            .unwrap(),
    ]
}

#[test]
fn an_input_without_a_size_hint_gives_the_same_figures() {
    let (own, twins) = swarm(3000, 500, 1);
    for c in configs() {
        let known = synthesize_with(&c, &own, &twins);
        // A filter's size hint is 0: the agent table starts small and grows.
        let unknown = synthesize_with(&c, &own, twins.iter().filter(|_| true));
        assert_eq!(known, unknown);
        assert!(known.duplicates_ignored > 0 && known.superseded_ignored > 0);
    }
}

#[test]
fn large_swarms_do_not_depend_on_the_delivery_order() {
    for (n, wild) in [(3000, 0), (3000, 400), (5000, 37)] {
        let (own, twins) = swarm(n, wild, n as u64 + wild as u64);
        let mut shuffled = twins.clone();
        let mut rng = StdRng::seed_from_u64(7);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.random_range(0..=i));
        }
        for c in configs().into_iter().skip(1) {
            let a = synthesize_with(&c, &own, &twins);
            let b = synthesize_with(&c, &own, &shuffled);
            assert_eq!(a, b, "{n} agents, every {wild}th wild");
        }
    }
}

/// The plain median (sorting).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        v[n / 2 - 1] + (v[n / 2] - v[n / 2 - 1]) / 2.0
    }
}

/// The outliers by the documented rule, computed plainly: per problem the
/// coordinate-wise median situation, the distances from it, and the cut at
/// `median(d) + k * max(1.4826 * MAD, 1 / resolution)`.
fn outliers_by_the_rule(own: &OutcomePacket, twins: &[Received], k: f64, res: f64) -> Vec<String> {
    // The votes: the latest packet per agent (the own packet for the own
    // agent); all vectors here have one length.
    let mut votes: std::collections::BTreeMap<&str, &OutcomePacket> = Default::default();
    for p in twins.iter().map(|r| &r.packet) {
        if p.agent_id == own.agent_id {
            continue;
        }
        let e = votes.entry(p.agent_id.as_str()).or_insert(p);
        if p.timestamp >= e.timestamp {
            *e = p;
        }
    }
    votes.insert(own.agent_id.as_str(), own);
    let mut out = Vec::new();
    for problem in PROBLEMS {
        let members: Vec<&OutcomePacket> = votes
            .values()
            .copied()
            .filter(|p| p.problem_class == problem)
            .collect();
        if members.len() < 3 {
            continue;
        }
        let centre: Vec<f64> = (0..4)
            .map(|j| {
                median(
                    &members
                        .iter()
                        .map(|p| p.context_vector[j])
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let d: Vec<f64> = members
            .iter()
            .map(|p| {
                p.context_vector
                    .iter()
                    .zip(&centre)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let md = median(&d);
        let mad = median(&d.iter().map(|x| (x - md).abs()).collect::<Vec<_>>());
        let cut = md + k * (1.4826 * mad).max(1.0 / res);
        out.extend(
            members
                .iter()
                .zip(&d)
                .filter(|(_, &d)| d > cut)
                .map(|(p, _)| p.agent_id.clone()),
        );
    }
    out.sort();
    out
}

#[test]
fn outliers_in_large_swarms_are_the_ones_the_rule_names() {
    for (n, wild, k) in [
        (3000, 0, 3.5),
        (3000, 400, 3.5),
        (5000, 37, 3.5),
        (4000, 0, 0.5),
    ] {
        let (own, twins) = swarm(n, wild, 99 + n as u64);
        let c = SynthesisConfig::default()
            .with_now(T)
            .unwrap()
            .with_outlier_k(k)
            .unwrap();
        let s = synthesize_with(&c, &own, &twins);
        let expected = outliers_by_the_rule(&own, &twins, k, 4.0);
        assert_eq!(
            s.outliers, expected,
            "{n} agents, every {wild}th wild, k {k}"
        );
        if let Some(wild_agents) = n.checked_div(wild) {
            assert!(
                s.outliers.len() >= wild_agents / 2,
                "{:?}",
                s.outliers.len()
            );
        }
    }
}
