//! Counting the votes per problem, under each method, in fixed point.
//!
//! Every weight lies in `0..=1` and is summed as an integer number of
//! `2^-60` units (exact for any weight of at least 1/256): sums are then exact
//! and rounded once when read, so no figure depends on the order the
//! packets arrived in, not even in its last bit, and a tie is a tie.

use std::cmp::Ordering;

use super::ballot::Info;
use super::config::{Method, SynthesisConfig};

/// 1 in fixed point, as a number.
pub(crate) const UNIT: f64 = (1u64 << 60) as f64;
/// 1 in fixed point.
const ONE: u64 = 1 << 60;

/// `x` (clamped to `0..=1`; NaN counts as 0) in `2^-60` units, rounded
/// (half up: `f64::round` is a library call on baseline x86-64).
#[inline]
pub(crate) fn fixed(x: f64) -> u64 {
    (x.clamp(0.0, 1.0) * UNIT + 0.5) as u64
}

/// A fixed-point sum back as a number.
pub(crate) fn real(x: u128) -> f64 {
    x as f64 / UNIT
}

/// `a / b` of two fixed-point sums, `None` when `b` is 0.
pub(crate) fn share(a: u128, b: u128) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
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

/// Tally every vote not `excluded`, over `n_problems` problems.
pub(crate) fn tally(
    info: &[Info],
    n_problems: usize,
    excluded: Option<&[bool]>,
    config: &SynthesisConfig,
    now: f64,
) -> Vec<Tally> {
    let mut tallies = vec![Tally::default(); n_problems];
    for (slot, v) in info.iter().enumerate() {
        if excluded.is_some_and(|x| x[slot]) {
            continue;
        }
        let c = fixed(v.confidence);
        let (r, rc, w) = match (config.method(), config.half_life()) {
            (Method::Seed, _) => (ONE, c, ONE),
            (method, None) => (ONE, c, if method == Method::Majority { ONE } else { c }),
            (method, Some(h)) => {
                let r = (-(now - v.timestamp).max(0.0) / h.as_secs_f64()).exp2();
                let rc = fixed(r * v.confidence.clamp(0.0, 1.0));
                (
                    fixed(r),
                    rc,
                    if method == Method::Majority {
                        fixed(r)
                    } else {
                        rc
                    },
                )
            }
        };
        let t = &mut tallies[v.problem as usize];
        t.first = t.first.min(slot as u32);
        t.votes += 1;
        t.weight += u128::from(w);
        t.confidence += u128::from(c);
        t.recency += u128::from(r);
        t.support += u128::from(rc);
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
