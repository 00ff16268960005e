//! Counting the votes per problem, under each method, in fixed point.
//!
//! Every weight lies in `0..=1` and is summed as an integer number of
//! `2^-40` units: sums are then exact, so no figure depends on the order the
//! packets arrived in, not even in its last bit, and a tie is a tie.

use std::cmp::Ordering;
use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::config::{Method, SynthesisConfig};
use super::twin::Vote;

const UNIT: f64 = (1u64 << 40) as f64;

/// `x` (clamped to `0..=1`; NaN counts as 0) in `2^-40` units.
pub(crate) fn fixed(x: f64) -> u64 {
    (x.clamp(0.0, 1.0) * UNIT).round() as u64
}

/// A fixed-point sum back as a number.
pub(crate) fn real(x: u128) -> f64 {
    x as f64 / UNIT
}

/// `a / b` of two fixed-point sums, `None` when `b` is 0.
pub(crate) fn share(a: u128, b: u128) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The problems voted on, densely numbered.
pub(crate) struct Problems<'a> {
    /// `(domain, problem_class)` of each problem.
    pub keys: Vec<(&'a str, &'a str)>,
    /// The problem of each vote, by slot.
    pub of_vote: Vec<u32>,
}

impl<'a> Problems<'a> {
    pub fn index(votes: &[Vote<'a>]) -> Self {
        let mut ids: HashMap<(&'a str, &'a str), u32, RandomState> = HashMap::default();
        let mut keys = Vec::new();
        let mut of_vote = Vec::with_capacity(votes.len());
        for v in votes {
            let key = (v.packet.domain.as_str(), v.packet.problem_class.as_str());
            let id = *ids.entry(key).or_insert_with(|| {
                keys.push(key);
                (keys.len() - 1) as u32
            });
            of_vote.push(id);
        }
        Problems { keys, of_vote }
    }
}

/// The votes for one problem.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    /// The first slot that voted for it (slot 0 is the own packet).
    pub first: u32,
    /// Distinct agents.
    pub votes: u32,
    /// Summed method weight.
    pub weight: u128,
    /// Summed confidence.
    pub confidence: u128,
    /// Summed recency factor (1 each without a half-life).
    pub recency: u128,
    /// Summed recency × confidence.
    pub support: u128,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            first: u32::MAX,
            votes: 0,
            weight: 0,
            confidence: 0,
            recency: 0,
            support: 0,
        }
    }
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.first = self.first.min(other.first);
        self.votes += other.votes;
        self.weight += other.weight;
        self.confidence += other.confidence;
        self.recency += other.recency;
        self.support += other.support;
    }
}

/// The recency factor of a packet stamped `timestamp`.
fn recency(config: &SynthesisConfig, now: f64, timestamp: f64) -> f64 {
    match (config.method(), config.half_life()) {
        (Method::Seed, _) | (_, None) => 1.0,
        (_, Some(h)) => (-(now - timestamp).max(0.0) / h.as_secs_f64()).exp2(),
    }
}

/// Tally every vote not `excluded`.
pub(crate) fn tally(
    votes: &[Vote<'_>],
    problems: &Problems<'_>,
    excluded: Option<&[bool]>,
    config: &SynthesisConfig,
    now: f64,
) -> Vec<Tally> {
    let mut tallies = vec![Tally::default(); problems.keys.len()];
    for (slot, (v, &p)) in votes.iter().zip(&problems.of_vote).enumerate() {
        if excluded.is_some_and(|x| x[slot]) {
            continue;
        }
        let c = v.packet.confidence.clamp(0.0, 1.0);
        let r = recency(config, now, v.packet.timestamp);
        let w = match config.method() {
            Method::Seed => 1.0,
            Method::Majority => r,
            Method::ConfidenceWeighted => r * c,
        };
        let t = &mut tallies[p as usize];
        t.first = t.first.min(slot as u32);
        t.votes += 1;
        t.weight += u128::from(fixed(w));
        t.confidence += u128::from(fixed(c));
        t.recency += u128::from(fixed(r));
        t.support += u128::from(fixed(r * c));
    }
    tallies
}

/// The consensus problem: most votes (seed) or most weight (the others),
/// ties broken as [`Method`] documents.
pub(crate) fn consensus(method: Method, tallies: &[Tally], keys: &[(&str, &str)]) -> usize {
    let better = |a: usize, b: usize| -> Ordering {
        let (ta, tb) = (&tallies[a], &tallies[b]);
        match method {
            Method::Seed => ta.votes.cmp(&tb.votes).then(tb.first.cmp(&ta.first)),
            Method::Majority | Method::ConfidenceWeighted => ta
                .weight
                .cmp(&tb.weight)
                .then(ta.votes.cmp(&tb.votes))
                .then((ta.first == 0).cmp(&(tb.first == 0)))
                .then(keys[b].cmp(&keys[a])),
        }
    };
    (0..tallies.len())
        .filter(|&i| tallies[i].votes > 0)
        .max_by(|&a, &b| better(a, b))
        .unwrap_or(0)
}
