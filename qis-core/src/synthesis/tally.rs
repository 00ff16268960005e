//! Counting the votes per problem, under each method, in fixed point.
//!
//! Every weight lies in `0..=1` and is summed as an integer number of
//! `2^-60` units (exact for any weight of at least 1/256): sums are then exact
//! and rounded once when read, so no figure depends on the order the
//! packets arrived in, not even in its last bit, and a tie is a tie.

use std::cmp::Ordering;

use super::config::{Method, SynthesisConfig};
use crate::packet::OutcomePacket;

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

/// The votes for one problem (or one vote: `votes` 1).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
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

impl Tally {
    /// One vote: what `packet` adds under `config`, ages measured from `now`.
    /// The same packet always adds the same, so a vote can be taken back.
    #[inline]
    pub fn of(config: &SynthesisConfig, now: f64, packet: &OutcomePacket) -> Tally {
        let c = fixed(packet.confidence);
        let (r, rc, w) = match (config.method(), config.half_life()) {
            (Method::Seed, _) => (ONE, c, ONE),
            (Method::Majority, None) => (ONE, c, ONE),
            (Method::ConfidenceWeighted, None) => (ONE, c, c),
            (method, Some(h)) => {
                let r = (-(now - packet.timestamp).max(0.0) / h.as_secs_f64()).exp2();
                let rc = fixed(r * packet.confidence.clamp(0.0, 1.0));
                let r = fixed(r);
                (r, rc, if method == Method::Majority { r } else { rc })
            }
        };
        Tally {
            votes: 1,
            weight: u128::from(w),
            confidence: u128::from(c),
            recency: u128::from(r),
            support: u128::from(rc),
        }
    }

    #[inline]
    pub fn add(&mut self, other: &Tally) {
        self.votes += other.votes;
        self.weight += other.weight;
        self.confidence += other.confidence;
        self.recency += other.recency;
        self.support += other.support;
    }

    /// Take back what [`add`](Self::add) added.
    #[inline]
    pub fn sub(&mut self, other: &Tally) {
        self.votes -= other.votes;
        self.weight -= other.weight;
        self.confidence -= other.confidence;
        self.recency -= other.recency;
        self.support -= other.support;
    }
}

/// The consensus problem: most votes (seed) or most weight (the others),
/// ties broken as [`Method`] documents. `first` gives each problem's first
/// voting slot (used by the seed's rule only); `own` is the own packet's
/// problem, if the own packet votes.
pub(crate) fn consensus(
    method: Method,
    tallies: &[Tally],
    keys: &[(&str, &str)],
    first: &[u32],
    own: Option<usize>,
) -> usize {
    let better = |a: usize, b: usize| -> Ordering {
        let (ta, tb) = (&tallies[a], &tallies[b]);
        match method {
            Method::Seed => ta.votes.cmp(&tb.votes).then(first[b].cmp(&first[a])),
            Method::Majority | Method::ConfidenceWeighted => ta
                .weight
                .cmp(&tb.weight)
                .then(ta.votes.cmp(&tb.votes))
                .then((own == Some(a)).cmp(&(own == Some(b))))
                .then(keys[b].cmp(&keys[a])),
        }
    };
    (0..tallies.len())
        .filter(|&i| tallies[i].votes > 0)
        .max_by(|&a, &b| better(a, b))
        .unwrap_or(0)
}
