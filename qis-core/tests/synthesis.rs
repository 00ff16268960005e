//! Synthesis: every method and option, the Bayesian figure at known points,
//! outliers, agreement, de-duplication and closing the loop.

use std::time::Duration;

use qis_core::{
    synthesize, synthesize_with, Delivery, ErrorKind, Fingerprint, Method, OutcomePacket, PacketId,
    Position, Received, Synthesis, SynthesisConfig, DEFAULT_RESOLUTION,
};

const T: f64 = 1_764_000_000.0;
const HOUR: f64 = 3600.0;
/// Near [0.2, 0.9, 0.05, 0.7]: every one in the bucket (0, 3, 0, 2) at resolution 4.
const NEAR: [[f64; 4]; 5] = [
    [0.22, 0.88, 0.07, 0.65],
    [0.18, 0.92, 0.03, 0.71],
    [0.20, 0.90, 0.05, 0.70],
    [0.21, 0.89, 0.06, 0.69],
    [0.19, 0.91, 0.04, 0.72],
];

fn pkt(agent: &str, problem: &str, conf: f64, ts: f64, cv: &[f64]) -> OutcomePacket {
    OutcomePacket {
        agent_id: agent.into(),
        domain: "hvac".into(),
        problem_class: problem.into(),
        conclusion: format!("{agent} sees {problem}"),
        confidence: conf,
        context_vector: cv.to_vec(),
        timestamp: ts,
        source_node: format!("node-{agent}"),
    }
}

fn x(agent: &str, conf: f64) -> OutcomePacket {
    pkt(agent, "energy-anomaly", conf, T, &NEAR[0])
}

fn y(agent: &str, conf: f64) -> OutcomePacket {
    pkt(agent, "refrigerant-loss", conf, T, &NEAR[0])
}

fn received(p: &OutcomePacket) -> Received {
    let body = p.encode().unwrap();
    Received {
        subject: format!("qis.iot.{}.{}", p.domain, p.problem_class),
        id: PacketId::of(&body),
        packet: p.clone(),
    }
}

fn config() -> SynthesisConfig {
    SynthesisConfig::default().with_now(T).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
    }};
}

/// The recommendation says `words`, somewhere in it.
#[track_caller]
fn assert_says(s: &Synthesis, words: &str) {
    assert!(
        s.recommendation.contains(words),
        "{:?} does not say {words:?}",
        s.recommendation
    );
}

/// The figures a synthesis concludes (not the counters of ignored packets,
/// the outlier list or the wording).
fn figures(s: &Synthesis) -> String {
    format!(
        "n={} problem={} votes={} strength={} weighted={} cws={} conf={} agreement={}/{:?} context={:?} posterior={:?} quorum={} alert={}",
        s.n_agents,
        s.consensus_problem,
        s.consensus_votes,
        s.consensus_strength,
        s.weighted_strength,
        s.confidence_weighted_strength,
        s.weighted_confidence,
        s.agreement_voters,
        s.agreement_fingerprint,
        s.consensus_context,
        s.posterior,
        s.quorum_met,
        s.alert
    )
}

// ── The seed's rules ───────────────────────────────────────────────────────

#[test]
fn seed_latest_vote_per_agent_wins() {
    let own = pkt("me", "x", 0.5, 1.0, &[]);
    let old = pkt("a", "y", 0.5, 1.0, &[]);
    let new = pkt("a", "x", 0.5, 2.0, &[]);
    let s = seed_rules(&own, [&new, &old]);
    assert_eq!(s.n_agents, 2);
    assert_eq!(s.consensus_votes, 2);
    assert_eq!(s.superseded_ignored, 1);
    assert_eq!(s.method, Method::Seed);
}

#[test]
fn seed_own_agent_twins_do_not_vote() {
    let own = pkt("me", "x", 0.5, 1.0, &[]);
    let mine_older = pkt("me", "y", 0.9, 0.5, &[]);
    let mine_newer = pkt("me", "y", 0.9, 5.0, &[]);
    let s = seed_rules(&own, [&mine_older, &mine_newer]);
    assert_eq!(s.n_agents, 1);
    assert_eq!(s.consensus_problem, "hvac.x");
    assert_eq!(s.superseded_ignored, 2);
}

#[test]
fn seed_equal_timestamps_go_to_the_later_arrival() {
    let own = pkt("me", "x", 0.5, 1.0, &[]);
    let a1 = pkt("a", "x", 0.5, 2.0, &[]);
    let a2 = pkt("a", "y", 0.5, 2.0, &[]);
    assert_eq!(seed_rules(&own, [&a1, &a2]).consensus_votes, 1);
    assert_eq!(seed_rules(&own, [&a2, &a1]).consensus_votes, 2);
}

#[test]
fn seed_ties_go_to_the_first_seen_and_lone_agents_alert_as_in_the_seed() {
    let own = x("me", 0.5);
    let s = seed_rules(&own, [&y("a", 0.9), &x("b", 0.1), &y("c", 0.9)]);
    assert_eq!(s.consensus_problem, "hvac.energy-anomaly");
    assert_eq!(s.consensus_strength, 0.5);
    assert_eq!(s.weighted_strength, 0.5);
    assert!((s.confidence_weighted_strength - 0.6 / 2.4).abs() < 1e-12);
    // The seed's vectors pin a lone agent's alert under `synthesize`.
    let alone = seed_rules(&own, [] as [&OutcomePacket; 0]);
    assert!(alone.alert && alone.quorum_met);
}

// ── Quorum ─────────────────────────────────────────────────────────────────

#[test]
fn a_lone_agent_never_alerts_under_any_method() {
    let own = x("me", 1.0);
    for m in Method::ALL {
        let s = synthesize_with(&config().with_method(m), &own, [] as [&OutcomePacket; 0]);
        assert!(!s.alert, "{m}");
        assert!(!s.quorum_met, "{m}");
        assert_eq!(s.weighted_strength, 1.0, "{m}: it is the whole vote");
        assert!(s.recommendation.starts_with("Monitoring:"), "{m}");
        assert_says(&s, "lone view");
        // Its own packet echoed back, or an older one of its own, changes nothing.
        let older = pkt("me", "energy-anomaly", 0.9, T - 5.0, &NEAR[1]);
        let s = synthesize_with(&config().with_method(m), &own, [&own, &older]);
        assert!(!s.alert, "{m}");
        assert_eq!(s.n_agents, 1);
    }
}

#[test]
fn quorum_counts_distinct_agents_behind_the_consensus() {
    let own = x("me", 0.9);
    let twins = [x("a", 0.9), x("b", 0.9), y("c", 0.9), y("d", 0.9)];
    let c = config()
        .with_threshold(0.5)
        .unwrap()
        .with_method(Method::Majority);
    // 3 of 5 for energy-anomaly: 0.6 > 0.5.
    let s = synthesize_with(&c.with_quorum(3), &own, &twins);
    assert!(s.quorum_met && s.alert);
    assert_eq!(s.consensus_votes, 3);
    // Five agents vote, but only three back the consensus.
    let s = synthesize_with(&c.with_quorum(4), &own, &twins);
    assert!(!s.quorum_met && !s.alert);
    assert_says(&s, "below the quorum of 4");
    // Two agreeing agents meet the default quorum of 2.
    let s = synthesize_with(&config(), &own, [&twins[0]]);
    assert!(s.quorum_met && s.alert);
}

#[test]
fn threshold_is_strict() {
    let own = x("me", 0.9);
    let twins = [x("a", 0.9), x("b", 0.9), y("c", 0.9), y("d", 0.9)];
    let c = config().with_method(Method::Majority);
    assert!(!synthesize_with(&c, &own, &twins).alert, "0.6 is not > 0.6");
    assert!(synthesize_with(&c.with_threshold(0.59).unwrap(), &own, &twins).alert);
}

// ── Recency ────────────────────────────────────────────────────────────────

#[test]
fn an_old_vote_weighs_less_than_a_fresh_one() {
    let own = pkt("me", "x", 0.8, T, &[]);
    let a = pkt("a", "y", 0.8, T - 2.0 * HOUR, &[]);
    let b = pkt("b", "y", 0.8, T - 2.0 * HOUR, &[]);
    let majority = config().with_method(Method::Majority);
    let s = synthesize_with(&majority, &own, [&a, &b]);
    assert_eq!(s.consensus_problem, "hvac.y");
    assert_close!(s.weighted_strength, 2.0 / 3.0);
    // Half-life 1 h: each 2 h old vote weighs 1/4, so 1 against 0.5.
    let recent = majority.with_half_life(Duration::from_secs(3600)).unwrap();
    let s = synthesize_with(&recent, &own, [&a, &b]);
    assert_eq!(s.consensus_problem, "hvac.x");
    assert_close!(s.weighted_strength, 1.0 / 1.5);
    let s = synthesize_with(&recent.with_quorum(1), &own, [&a, &b]);
    assert!(
        s.recommendation
            .starts_with("ALERT: 1 of 3 agents report hvac.x (recency-weighted 67%)"),
        "{}",
        s.recommendation
    );
    // The head count is still the head count.
    assert_close!(s.consensus_strength, 1.0 / 3.0);
    // Confidence-weighted with recency: 0.8 against 2 × 0.8 × 0.25.
    let s = synthesize_with(
        &recent.with_method(Method::ConfidenceWeighted),
        &own,
        [&a, &b],
    );
    assert_eq!(s.consensus_problem, "hvac.x");
    assert_close!(s.weighted_strength, 0.8 / 1.2);
}

#[test]
fn recency_ages_from_now_and_never_below_zero() {
    let own = pkt("me", "x", 1.0, T, &[]);
    let future = pkt("a", "x", 1.0, T + 10.0 * HOUR, &[]);
    let old = pkt("b", "y", 1.0, T - HOUR, &[]);
    let c = config()
        .with_method(Method::Majority)
        .with_half_life(Duration::from_secs(3600))
        .unwrap();
    // The future vote weighs 1 (age 0), the hour-old one 1/2.
    let s = synthesize_with(&c, &own, [&future, &old]);
    assert_close!(s.weighted_strength, 2.0 / 2.5);
    // Measured an hour later, the own and future votes are 1 h and -9 h old.
    let s = synthesize_with(&c.with_now(T + HOUR).unwrap(), &own, [&future, &old]);
    assert_close!(s.weighted_strength, 1.5 / 1.75);
    assert_eq!(s.synthesized_at, T + HOUR);
}

#[test]
fn the_seed_method_ignores_the_half_life() {
    let own = pkt("me", "x", 0.8, T, &[]);
    let a = pkt("a", "y", 0.8, T - 9.0 * HOUR, &[]);
    let b = pkt("b", "y", 0.8, T - 9.0 * HOUR, &[]);
    let c = config().with_method(Method::Seed);
    let plain = synthesize_with(&c, &own, [&a, &b]);
    let recent = synthesize_with(
        &c.with_half_life(Duration::from_secs(60)).unwrap(),
        &own,
        [&a, &b],
    );
    assert_eq!(figures(&plain), figures(&recent));
    assert_eq!(recent.consensus_problem, "hvac.y");
}

// ── Confidence weighting and method tie rules ──────────────────────────────

#[test]
fn confidence_weighting_lets_sure_agents_outweigh_unsure_ones() {
    let own = x("me", 0.1);
    let twins = [x("a", 0.1), y("b", 0.9), y("c", 0.9)];
    // Seed: 2-2, first seen (own) wins.
    let s = synthesize_with(&config().with_method(Method::Seed), &own, &twins);
    assert_eq!(s.consensus_problem, "hvac.energy-anomaly");
    // Majority: 2-2 in weight and votes: the own problem wins.
    let s = synthesize_with(&config().with_method(Method::Majority), &own, &twins);
    assert_eq!(s.consensus_problem, "hvac.energy-anomaly");
    assert_eq!(s.weighted_strength, 0.5);
    // Confidence-weighted: 1.8 against 0.2.
    let s = synthesize_with(&config(), &own, &twins);
    assert_eq!(s.consensus_problem, "hvac.refrigerant-loss");
    assert_close!(s.weighted_strength, 0.9);
    assert!(s.alert);
    assert_says(&s, "confidence-weighted 90%");
}

#[test]
fn majority_ties_without_the_own_problem_go_to_the_smallest_name() {
    let own = pkt("me", "zeta", 0.5, T, &[]);
    let twins = [
        pkt("a", "beta", 0.5, T, &[]),
        pkt("b", "alpha", 0.5, T, &[]),
    ];
    let c = config().with_method(Method::Majority);
    // 1-1-1: the own problem wins.
    assert_eq!(
        synthesize_with(&c, &own, &twins).consensus_problem,
        "hvac.zeta"
    );
    let more = [
        pkt("a", "beta", 0.5, T, &[]),
        pkt("b", "alpha", 0.5, T, &[]),
        pkt("c", "beta", 0.5, T, &[]),
        pkt("d", "alpha", 0.5, T, &[]),
    ];
    let s = synthesize_with(&c, &own, &more);
    assert_eq!(s.consensus_problem, "hvac.alpha");
    let reversed: Vec<_> = more.iter().rev().collect();
    assert_eq!(
        synthesize_with(&c, &own, reversed).consensus_problem,
        "hvac.alpha"
    );
}

#[test]
fn zero_confidence_carries_no_weight() {
    let own = x("me", 0.0);
    let s = synthesize_with(&config(), &own, [&x("a", 0.0)]);
    assert_eq!(s.weighted_strength, 0.0);
    assert!(!s.alert);
}

// ── The Bayesian figure ────────────────────────────────────────────────────

/// `I_x(a, b)` for whole-number shapes: `P(Binomial(a + b - 1, x) >= a)`.
fn beta_cdf_integer(a: u32, b: u32, x: f64) -> f64 {
    let n = a + b - 1;
    let choose = |n: u32, k: u32| (0..k).fold(1.0, |c, i| c * f64::from(n - i) / f64::from(i + 1));
    (a..=n)
        .map(|j| choose(n, j) * x.powi(j as i32) * (1.0 - x).powi((n - j) as i32))
        .sum()
}

/// The `q` quantile by bisection on the closed-form CDF (independent of statrs).
fn beta_quantile_integer(a: u32, b: u32, q: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if beta_cdf_integer(a, b, mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

#[test]
fn bayes_alone_with_the_uniform_prior() {
    // One voter at 0.79: Beta(1 + 0.79, 1 + 0.21).
    let s = synthesize_with(&config(), &x("me", 0.79), [] as [&OutcomePacket; 0]);
    assert_close!(s.posterior.alpha, 1.79);
    assert_close!(s.posterior.beta, 1.21);
    assert_close!(s.posterior.probability, 1.79 / 3.0);
}

#[test]
fn bayes_two_sure_agents() {
    // Beta(3, 1): CDF x^3, so the 5 % quantile is 0.05^(1/3).
    let s = synthesize_with(&config(), &x("me", 1.0), [&x("a", 1.0)]);
    assert_close!(s.posterior.alpha, 3.0);
    assert_close!(s.posterior.beta, 1.0);
    assert_close!(s.posterior.probability, 0.75);
    assert!((s.posterior.lower_bound - 0.05f64.powf(1.0 / 3.0)).abs() < 1e-7);
    assert!((s.posterior.quantile(0.5) - 0.5f64.powf(1.0 / 3.0)).abs() < 1e-7);
}

#[test]
fn bayes_dissenters_count_against() {
    // For: two sure agents; against: two dissenters (whatever their confidence).
    // Beta(1 + 2, 1 + 0 + 2) = Beta(3, 3).
    let s = synthesize_with(
        &config().with_method(Method::Majority),
        &x("me", 1.0),
        [&x("a", 1.0), &y("b", 0.3), &y("c", 0.9)],
    );
    assert_eq!(s.consensus_problem, "hvac.energy-anomaly");
    assert_close!(s.posterior.alpha, 3.0);
    assert_close!(s.posterior.beta, 3.0);
    assert_close!(s.posterior.probability, 0.5);
    let expected = beta_quantile_integer(3, 3, 0.05);
    assert!(
        (s.posterior.lower_bound - expected).abs() < 1e-7,
        "{} vs {expected}",
        s.posterior.lower_bound
    );
    // Half-sure supporters: each adds 0.5 to both shapes: Beta(2, 2).
    let s = synthesize_with(&config(), &x("me", 0.5), [&x("a", 0.5)]);
    assert_close!(s.posterior.alpha, 2.0);
    assert_close!(s.posterior.beta, 2.0);
    let expected = beta_quantile_integer(2, 2, 0.05);
    assert!((s.posterior.lower_bound - expected).abs() < 1e-7);
}

#[test]
fn bayes_prior_and_recency() {
    // Prior Beta(2, 8), one sure voter: Beta(3, 8).
    let s = synthesize_with(
        &config().with_prior(2.0, 8.0).unwrap(),
        &x("me", 1.0),
        [] as [&OutcomePacket; 0],
    );
    assert_close!(s.posterior.probability, 3.0 / 11.0);
    let expected = beta_quantile_integer(3, 8, 0.05);
    assert!((s.posterior.lower_bound - expected).abs() < 1e-7);
    // An hour-old sure supporter with a one-hour half-life adds 0.5: Beta(2.5, 1).
    let old = pkt("a", "energy-anomaly", 1.0, T - HOUR, &NEAR[1]);
    let s = synthesize_with(
        &config().with_half_life(Duration::from_secs(3600)).unwrap(),
        &x("me", 1.0),
        [&old],
    );
    assert_close!(s.posterior.alpha, 3.0 - 0.5);
    assert_close!(s.posterior.beta, 1.0);
    // Beta(a, 1): 0.05^(1/a).
    assert!((s.posterior.lower_bound - 0.05f64.powf(1.0 / 2.5)).abs() < 1e-7);
}

// ── Outliers ───────────────────────────────────────────────────────────────

fn swarm_of_four() -> (OutcomePacket, Vec<OutcomePacket>) {
    let own = pkt("me", "energy-anomaly", 0.8, T, &NEAR[0]);
    let twins = (1..4)
        .map(|i| pkt(&format!("a{i}"), "energy-anomaly", 0.7, T, &NEAR[i]))
        .collect();
    (own, twins)
}

#[test]
fn one_wild_agent_among_five_does_not_change_the_consensus() {
    let (own, twins) = swarm_of_four();
    for m in Method::ALL {
        let c = config().with_method(m).with_outliers(true);
        let honest = synthesize_with(&c, &own, &twins);
        assert!(honest.outliers.is_empty());
        let mut with_wild = twins.clone();
        with_wild.insert(
            1,
            pkt("wild", "energy-anomaly", 1.0, T, &[9.0, -7.0, 3.0, 12.0]),
        );
        let s = synthesize_with(&c, &own, &with_wild);
        assert_eq!(s.outliers, vec!["wild".to_string()], "{m}");
        assert_eq!(figures(&s), figures(&honest), "{m}");
        assert!(
            s.recommendation.ends_with("; 1 outlier excluded"),
            "{}",
            s.recommendation
        );
        // Without the filter the wild agent does move the figures.
        let unfiltered = synthesize_with(&c.with_outliers(false), &own, &with_wild);
        assert!(unfiltered.outliers.is_empty());
        assert_eq!(unfiltered.n_agents, 5);
        assert_eq!(unfiltered.agreement_voters, 4);
        assert_ne!(figures(&unfiltered), figures(&honest), "{m}");
    }
}

#[test]
fn the_own_agent_can_be_the_outlier() {
    let (_, twins) = swarm_of_four();
    let own = pkt("me", "energy-anomaly", 0.9, T, &[5.0, 5.0, 5.0, 5.0]);
    let mut more = twins.clone();
    more.push(pkt("a4", "energy-anomaly", 0.7, T, &NEAR[4]));
    let s = synthesize_with(&config(), &own, &more);
    assert_eq!(s.outliers, vec!["me".to_string()]);
    assert_eq!(s.n_agents, 4);
    assert_eq!(s.agreement, 1.0);
}

#[test]
fn a_neighbouring_bucket_is_not_an_outlier() {
    let (own, mut twins) = swarm_of_four();
    let mut near = NEAR[4];
    near[0] += 0.3; // one bucket over at resolution 4
    twins.push(pkt("a4", "energy-anomaly", 0.7, T, &near));
    let s = synthesize_with(&config(), &own, &twins);
    assert!(s.outliers.is_empty());
    assert_eq!((s.n_agents, s.agreement_voters), (5, 4));
}

#[test]
fn a_vector_of_another_length_is_an_outlier_only_against_a_majority() {
    let (own, mut twins) = swarm_of_four();
    twins.push(pkt("short", "energy-anomaly", 0.7, T, &[0.2, 0.9]));
    let s = synthesize_with(&config(), &own, &twins);
    assert_eq!(s.outliers, vec!["short".to_string()]);
    // Two of length 4, two of length 2: no majority situation, nobody flagged.
    let own = pkt("me", "energy-anomaly", 0.8, T, &NEAR[0]);
    let twins = [
        pkt("a", "energy-anomaly", 0.8, T, &NEAR[1]),
        pkt("b", "energy-anomaly", 0.8, T, &[0.2, 0.9]),
        pkt("c", "energy-anomaly", 0.8, T, &[0.2, 0.9]),
    ];
    let s = synthesize_with(&config(), &own, &twins);
    assert!(s.outliers.is_empty());
    // The agreement tie (2-2) goes to the own packet's bucket.
    assert_eq!(s.agreement_voters, 2);
    assert_eq!(s.consensus_context.len(), 4);
}

#[test]
fn small_problems_are_not_filtered_and_the_filter_can_be_off() {
    let own = pkt("me", "energy-anomaly", 0.8, T, &NEAR[0]);
    let wild = pkt("wild", "energy-anomaly", 0.8, T, &[9.0, 9.0, 9.0, 9.0]);
    let s = synthesize_with(&config(), &own, [&wild]);
    assert!(
        s.outliers.is_empty(),
        "two voters: nobody can tell who is odd"
    );
    let (own, mut twins) = swarm_of_four();
    twins.push(wild);
    let s = synthesize_with(&config().with_outliers(false), &own, &twins);
    assert!(s.outliers.is_empty());
    // A larger k keeps a moderately far agent.
    let (own, mut twins) = swarm_of_four();
    twins.push(pkt("far", "energy-anomaly", 0.8, T, &[1.4, 0.9, 0.05, 0.7]));
    assert_eq!(
        synthesize_with(&config(), &own, &twins).outliers,
        vec!["far"]
    );
    assert!(
        synthesize_with(&config().with_outlier_k(10.0).unwrap(), &own, &twins)
            .outliers
            .is_empty()
    );
}

// ── Agreement ──────────────────────────────────────────────────────────────

#[test]
fn agreement_below_100_percent_on_one_subject() {
    let a = [0.2, 0.9, 0.05, 0.7]; // bucket (0, 3, 0, 2)
    let b = [0.6, 0.1, 0.5, 0.3]; // bucket (2, 0, 2, 1)
    let own = pkt("me", "energy-anomaly", 0.8, T, &a);
    let twins = [
        pkt("t1", "energy-anomaly", 0.8, T, &b),
        pkt("t2", "energy-anomaly", 0.8, T, &a),
        pkt("t3", "energy-anomaly", 0.8, T, &b),
        pkt("t4", "energy-anomaly", 0.8, T, &[0.21, 0.91, 0.06, 0.71]),
    ];
    // Outliers off: with two clusters, the filter is not the point here.
    let c = config().with_outliers(false);
    let s = synthesize_with(&c, &own, &twins);
    assert_eq!(
        s.consensus_strength, 1.0,
        "one subject: the vote is unanimous"
    );
    assert_eq!(s.agreement_voters, 3);
    assert_close!(s.agreement, 0.6);
    let fp = Fingerprint::compute("hvac", "energy-anomaly", &a, DEFAULT_RESOLUTION).unwrap();
    assert_eq!(s.agreement_fingerprint.as_deref(), Some(fp.as_str()));
    assert_says(&s, "3 of 5 in one situation (60%)");
    assert!(!s.recommendation.contains("differ"));
    // The mean of the three in bucket a, to the last bit.
    let mean = [0.61 / 3.0, 2.71 / 3.0, 0.16 / 3.0, 2.11 / 3.0];
    assert_eq!(s.consensus_context.len(), 4);
    for (got, want) in s.consensus_context.iter().zip(mean) {
        assert!((got - want).abs() < 1e-15, "{:?}", s.consensus_context);
    }
    // At resolution 1 every vector is in bucket (0, 0, 0, 0).
    let s = synthesize_with(&c.with_resolution(1).unwrap(), &own, &twins);
    assert_eq!(s.agreement, 1.0);
    assert_says(&s, "all in one situation");
}

#[test]
fn scattered_situations_are_called_out() {
    let own = pkt("me", "energy-anomaly", 0.8, T, &[0.1, 0.1]);
    let twins: Vec<_> = (1..5)
        .map(|i| {
            pkt(
                &format!("t{i}"),
                "energy-anomaly",
                0.8,
                T,
                &[0.1 + 0.25 * i as f64, 0.1],
            )
        })
        .collect();
    let s = synthesize_with(&config().with_outliers(false), &own, &twins);
    assert!(s.alert);
    assert_eq!(s.agreement_voters, 1);
    assert_close!(s.agreement, 0.2);
    assert_says(&s, "1 of 5 in one situation (20%)");
    assert_says(&s, "situations differ, check before acting");
    // 1-1-1-1-1: the own packet's bucket wins the tie.
    assert_eq!(s.consensus_context, vec![0.1, 0.1]);
    // Without the own packet in the tie, the smallest bucket numbers win.
    let own = pkt("me", "other", 0.8, T, &[0.1, 0.1]);
    let s = synthesize_with(&config().with_outliers(false), &own, &twins);
    assert_eq!(s.consensus_problem, "hvac.energy-anomaly");
    assert_eq!(s.consensus_context, vec![0.1 + 0.25, 0.1]);
}

// ── De-duplication and one vote per agent ──────────────────────────────────

#[test]
fn duplicates_and_echoes_count_once_under_every_method() {
    let own = x("me", 0.8);
    let a_old = pkt("a", "refrigerant-loss", 0.6, T - 10.0, &NEAR[1]);
    let a = pkt("a", "energy-anomaly", 0.7, T, &NEAR[1]);
    let b = pkt("b", "energy-anomaly", 0.9, T, &NEAR[2]);
    let clean: Vec<Received> = [&a, &b].into_iter().map(received).collect();
    let noisy: Vec<Received> = [&a_old, &a, &b, &a, &own, &a_old, &b, &own, &a_old]
        .into_iter()
        .map(received)
        .collect();
    for m in Method::ALL {
        let c = config().with_method(m);
        let s0 = synthesize_with(&c, &own, &clean);
        let s = synthesize_with(&c, &own, &noisy);
        assert_eq!(figures(&s), figures(&s0), "{m}");
        assert_eq!(s.n_agents, 3);
        // a and b again, own twice, a_old twice again.
        assert_eq!(s.duplicates_ignored, 6, "{m}");
        assert_eq!(s.superseded_ignored, 1, "{m}: a_old once");
        // The same with bare packets (identity by content).
        let bare: Vec<&OutcomePacket> = noisy.iter().map(|r| &r.packet).collect();
        let s2 = synthesize_with(&c, &own, bare);
        assert_eq!(figures(&s2), figures(&s0), "{m}");
        assert_eq!((s2.duplicates_ignored, s2.superseded_ignored), (6, 1));
        // And with (id, packet) pairs.
        let pairs = noisy.iter().map(|r| (r.id, &r.packet));
        let s3 = synthesize_with(&c, &own, pairs);
        assert_eq!((s3.duplicates_ignored, s3.superseded_ignored), (6, 1));
    }
}

#[test]
fn deliveries_are_identified_by_the_id_they_came_with() {
    let own = x("me", 0.8);
    let a = x("a", 0.7);
    let delivery = |id: PacketId, n: u64| Delivery {
        received: Received {
            subject: "qis.iot.hvac.energy-anomaly".into(),
            id,
            packet: a.clone(),
        },
        position: Position::Sequence(n),
        delivery_count: 1,
        token: qis_core::backend::seq_token(n),
    };
    let id = PacketId::of(&a.encode().unwrap());
    // A redelivery: same id.
    let batch = vec![delivery(id, 1), delivery(id, 1)];
    let s = synthesize_with(&config(), &own, &batch);
    assert_eq!(
        (s.n_agents, s.duplicates_ignored, s.superseded_ignored),
        (2, 1, 0)
    );
    // The same content under another id (say a spaced body) is another
    // packet, but still one vote for its agent.
    let batch = vec![delivery(id, 1), delivery(PacketId::of(b"spaced"), 2)];
    let s = synthesize_with(&config(), &own, &batch);
    assert_eq!(
        (s.n_agents, s.duplicates_ignored, s.superseded_ignored),
        (2, 0, 1)
    );
}

// ── Closing the loop ───────────────────────────────────────────────────────

#[test]
fn the_next_packet_carries_the_consensus_and_counts_once() {
    let (own, twins) = swarm_of_four();
    let s = synthesize_with(&config().with_now(T + 60.0).unwrap(), &own, &twins);
    assert!(s.alert);
    let next = s.next_packet(&own).unwrap();
    assert_eq!(next.agent_id, "me");
    assert_eq!(next.source_node, own.source_node);
    assert_eq!(
        (next.domain.as_str(), next.problem_class.as_str()),
        ("hvac", "energy-anomaly")
    );
    assert_eq!(next.conclusion, s.recommendation);
    assert_eq!(next.confidence, s.posterior.probability);
    assert_eq!(next.context_vector, s.consensus_context);
    assert_eq!(next.timestamp, T + 60.0);
    let fp = Fingerprint::compute("hvac", "energy-anomaly", &next.context_vector, 4).unwrap();
    assert_eq!(Some(fp.as_str()), s.agreement_fingerprint.as_deref());
    assert!(next.encode().unwrap().len() <= 512);

    // A twin sees both the agent's observation and its synthesis: one vote,
    // the synthesis (the later one).
    let other = x("z", 0.5);
    let mut seen: Vec<&OutcomePacket> = twins.iter().collect();
    seen.push(&own);
    seen.push(&next);
    for m in Method::ALL {
        let c = config().with_method(m).with_now(T + 120.0).unwrap();
        let s2 = synthesize_with(&c, &other, seen.iter().copied());
        assert_eq!(s2.n_agents, 5, "{m}");
        assert_eq!(s2.superseded_ignored, 1, "{m}");
        // The agent itself, observing again, counts once too.
        let again = x("me", 0.6);
        let s3 = synthesize_with(&c, &again, seen.iter().copied());
        assert_eq!(s3.n_agents, 4, "{m}");
        assert_eq!(
            s3.superseded_ignored, 2,
            "{m}: its observation and its synthesis"
        );
    }
}

#[test]
fn the_next_packet_is_later_than_the_own_packet() {
    let own = x("me", 0.8);
    let s = synthesize_with(&config().with_now(T - 100.0).unwrap(), &own, [&x("a", 0.8)]);
    let next = s.next_packet(&own).unwrap();
    assert!(next.timestamp > own.timestamp);
    assert!(next.timestamp - own.timestamp < 1e-3);
}

/// The own packet and the synthesis with one twin that agrees with it, both
/// with a context vector of `len` values of many digits each.
fn agreed_on_a_vector_of(len: u32) -> (OutcomePacket, Synthesis) {
    let cv: Vec<f64> = (0..len)
        .map(|i| 0.123_456_789 + f64::from(i) * 1e-9)
        .collect();
    let own = pkt("me", "energy-anomaly", 0.8, T, &cv);
    let s = synthesize_with(&config(), &own, [&pkt("a", "energy-anomaly", 0.8, T, &cv)]);
    (own, s)
}

#[test]
fn the_next_packet_fits_in_512_bytes() {
    let (own, s) = agreed_on_a_vector_of(18);
    let next = s.next_packet(&own).unwrap();
    let body = next.encode().unwrap();
    assert!(body.len() <= 512 && body.len() > 480, "{}", body.len());
    assert!(next.conclusion.ends_with('…'), "{}", next.conclusion);
    assert!(s
        .recommendation
        .starts_with(next.conclusion.trim_end_matches('…')));
    // A context vector too long for any packet is an error, not a panic.
    let (own, s) = agreed_on_a_vector_of(60);
    let e = s.next_packet(&own).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PacketTooLarge);
}

// ── The result as JSON ─────────────────────────────────────────────────────

#[test]
fn the_whole_result_serialises() {
    let (own, twins) = swarm_of_four();
    let s = synthesize_with(
        &config().with_half_life(Duration::from_secs(600)).unwrap(),
        &own,
        &twins,
    );
    let v = serde_json::to_value(&s).unwrap();
    for key in [
        "method",
        "weighted_strength",
        "agreement",
        "agreement_voters",
        "agreement_fingerprint",
        "consensus_context",
        "posterior",
        "quorum_met",
        "outliers",
        "recommendation",
        "config",
    ] {
        assert!(v.get(key).is_some(), "{key} missing from {v}");
    }
    assert_eq!(v["method"], "confidence-weighted");
    assert_eq!(v["config"]["quorum"], 2);
    assert_eq!(v["config"]["half_life_secs"], 600.0);
    assert_eq!(v["config"]["now"], T);
    assert!(
        v["posterior"]["lower_bound"].as_f64().unwrap()
            < v["posterior"]["probability"].as_f64().unwrap()
    );
}

// ── Vectors of our own ─────────────────────────────────────────────────────

fn config_from(v: &serde_json::Value) -> SynthesisConfig {
    let mut c = SynthesisConfig::default()
        .with_method(v["method"].as_str().unwrap().parse().unwrap())
        .with_now(v["now"].as_f64().unwrap())
        .unwrap();
    if let Some(q) = v["quorum"].as_u64() {
        c = c.with_quorum(q as usize);
    }
    if let Some(t) = v["threshold"].as_f64() {
        c = c.with_threshold(t).unwrap();
    }
    if let Some(h) = v["half_life_secs"].as_f64() {
        c = c.with_half_life(Duration::from_secs_f64(h)).unwrap();
    }
    if let Some(o) = v["outliers"].as_bool() {
        c = c.with_outliers(o);
    }
    if let Some(r) = v["resolution"].as_u64() {
        c = c.with_resolution(r as u32).unwrap();
    }
    if let Some(p) = v["prior"].as_array() {
        c = c
            .with_prior(p[0].as_f64().unwrap(), p[1].as_f64().unwrap())
            .unwrap();
    }
    c
}

#[test]
fn vectors_of_every_method_and_option() {
    let path = format!(
        "{}/tests/vectors/synthesis_methods.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let config = config_from(&c["config"]);
        let own: OutcomePacket = serde_json::from_value(c["own"].clone()).unwrap();
        let twins: Vec<OutcomePacket> = serde_json::from_value(c["twins"].clone()).unwrap();
        let x = &c["expected"];
        let num = |k: &str| x[k].as_f64().unwrap();
        let bare = synthesize_with(&config, &own, &twins);
        let delivered: Vec<Received> = twins.iter().map(received).collect();
        let with_ids = synthesize_with(&config, &own, &delivered);
        for s in [&bare, &with_ids] {
            assert_eq!(
                s.consensus_problem,
                x["consensus_problem"].as_str().unwrap(),
                "{name}"
            );
            for (field, got) in [
                ("n_agents", s.n_agents),
                ("consensus_votes", s.consensus_votes),
                ("agreement_voters", s.agreement_voters),
                ("duplicates_ignored", s.duplicates_ignored),
                ("superseded_ignored", s.superseded_ignored),
            ] {
                assert_eq!(got as u64, x[field].as_u64().unwrap(), "{name}: {field}");
            }
            for (field, got) in [
                ("consensus_strength", s.consensus_strength),
                ("weighted_strength", s.weighted_strength),
                ("agreement", s.agreement),
                ("posterior_alpha", s.posterior.alpha),
                ("posterior_beta", s.posterior.beta),
                ("posterior_probability", s.posterior.probability),
            ] {
                assert!(
                    close(got, num(field)),
                    "{name}: {field} {got} vs {}",
                    num(field)
                );
            }
            assert_eq!(s.quorum_met, x["quorum_met"].as_bool().unwrap(), "{name}");
            assert_eq!(s.alert, x["alert"].as_bool().unwrap(), "{name}");
            assert_eq!(
                s.agreement_fingerprint.as_deref(),
                x["agreement_fingerprint"].as_str(),
                "{name}"
            );
            let context: Vec<f64> = serde_json::from_value(x["consensus_context"].clone()).unwrap();
            assert_eq!(s.consensus_context.len(), context.len(), "{name}");
            for (a, b) in s.consensus_context.iter().zip(&context) {
                assert!(
                    close(*a, *b),
                    "{name}: context {:?} vs {context:?}",
                    s.consensus_context
                );
            }
            assert!(
                (s.posterior.lower_bound - num("posterior_lower_bound")).abs() < 1e-7,
                "{name}: lower bound {} vs {}",
                s.posterior.lower_bound,
                num("posterior_lower_bound")
            );
            let outliers: Vec<String> = serde_json::from_value(x["outliers"].clone()).unwrap();
            assert_eq!(s.outliers, outliers, "{name}");
            assert!(s.recommendation.contains(&s.consensus_problem), "{name}");
            assert!(
                s.recommendation
                    .starts_with(if s.alert { "ALERT: " } else { "Monitoring: " }),
                "{name}"
            );
        }
    }
}

#[test]
fn the_mean_situation_stays_in_its_bucket_at_the_edges() {
    // Just below a bucket edge, and negative: rounding must not carry the
    // mean over the edge.
    for edge in [0.25f64, -0.5, 1e6, -1e6] {
        let below = f64::from_bits(if edge > 0.0 {
            edge.to_bits() - 1
        } else {
            edge.to_bits() + 1
        });
        let twins: Vec<_> = (0..5)
            .map(|i| pkt(&format!("t{i}"), "energy-anomaly", 0.8, T, &[below, below]))
            .collect();
        let own = pkt("me", "energy-anomaly", 0.8, T, &[below, below]);
        let s = synthesize_with(&config(), &own, &twins);
        let fp = Fingerprint::compute("hvac", "energy-anomaly", &s.consensus_context, 4).unwrap();
        assert_eq!(
            Some(fp.as_str()),
            s.agreement_fingerprint.as_deref(),
            "{edge}"
        );
        assert_eq!(s.agreement, 1.0);
    }
}

#[test]
fn the_own_echo_is_recognised_by_its_id() {
    // The transport hands the own packet back under the id of its compact
    // encoding; its decoded floats may differ from ours in the last bit.
    let own = x("me", 0.8);
    let mut decoded = own.clone();
    decoded.timestamp = f64::from_bits(own.timestamp.to_bits() + 1);
    let echo = Received {
        subject: "qis.iot.hvac.energy-anomaly".into(),
        id: PacketId::of(&own.encode().unwrap()),
        packet: decoded,
    };
    let s = synthesize_with(&config(), &own, [&echo, &received(&x("a", 0.8))]);
    assert_eq!((s.duplicates_ignored, s.superseded_ignored), (1, 0));
    assert_eq!(s.n_agents, 2);
}

#[test]
fn packets_that_were_never_validated_do_not_panic() {
    // Synthesis takes any OutcomePacket value; invalid numbers must not panic.
    let weird = [
        pkt(
            "nan",
            "energy-anomaly",
            f64::NAN,
            f64::NAN,
            &[f64::NAN, 0.5],
        ),
        pkt(
            "inf",
            "energy-anomaly",
            f64::INFINITY,
            f64::INFINITY,
            &[f64::INFINITY],
        ),
        pkt("neg", "energy-anomaly", -3.0, -1.0, &[-1e300, 1e300]),
        pkt("empty", "energy-anomaly", 0.5, T, &[]),
        pkt("", "", 2.0, T, &[0.1; 40]),
    ];
    let own = pkt("me", "energy-anomaly", 0.8, T, &NEAR[0]);
    for m in Method::ALL {
        for outliers in [false, true] {
            let c = config()
                .with_method(m)
                .with_outliers(outliers)
                .with_half_life(Duration::from_secs(60))
                .unwrap();
            let s = synthesize_with(&c, &own, &weird);
            assert_eq!(s.n_agents + s.outliers.len(), 6, "{m}");
            assert!(s.weighted_strength.is_finite() && s.posterior.probability.is_finite());
            assert!(serde_json::to_string(&s).is_ok());
        }
    }
}

/// The seed's exact rules.
fn seed_rules<'a, I>(own: &'a OutcomePacket, twins: I) -> qis_core::Synthesis
where
    I: IntoIterator,
    I::Item: qis_core::Twin<'a>,
{
    synthesize_with(&SynthesisConfig::seed(), own, twins)
}

#[test]
fn synthesize_uses_the_defaults_so_a_lone_agent_never_alerts() {
    let own = OutcomePacket {
        agent_id: "me".into(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        conclusion: "spike".into(),
        confidence: 0.99,
        context_vector: vec![0.2],
        timestamp: 1.0,
        source_node: "n".into(),
    };
    let alone = synthesize(&own, [] as [&OutcomePacket; 0]);
    assert!(
        !alone.alert && !alone.quorum_met,
        "{}",
        alone.recommendation
    );
    let defaults = SynthesisConfig::default();
    assert_eq!(
        (alone.config.method(), alone.config.quorum()),
        (defaults.method(), defaults.quorum())
    );
    assert!(
        seed_rules(&own, [] as [&OutcomePacket; 0]).alert,
        "the seed's rules alert alone"
    );
}

#[test]
fn an_all_zero_packet_id_is_still_told_apart_from_a_vote_without_one() {
    // The own packet cannot be encoded (confidence out of range), so its vote
    // has no id; a twin of the own agent delivered under an all-zero id (a
    // placeholder some callers use) is then compared by content, not taken
    // for the own packet's id.
    let own = x("me", 1.5);
    let zero = PacketId::from_bytes([0; 32]);
    let mut other = own.clone();
    other.conclusion = "another finding".into();
    let s = synthesize_with(&config(), &own, [(zero, &other)]);
    assert_eq!((s.duplicates_ignored, s.superseded_ignored), (0, 1));
    let s = synthesize_with(&config(), &own, [(zero, &own)]);
    assert_eq!((s.duplicates_ignored, s.superseded_ignored), (1, 0));
    // Between twins, the same all-zero id is the same delivery.
    let a = x("a", 0.8);
    let mut a2 = a.clone();
    a2.conclusion = "a's second finding".into();
    let s = synthesize_with(&config(), &x("me", 0.5), [(zero, &a), (zero, &a2)]);
    assert_eq!((s.n_agents, s.duplicates_ignored), (2, 1));
}
