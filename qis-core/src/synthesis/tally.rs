//! Counting the votes per problem, under each method, in fixed point.
//!
//! Every weight lies in `0..=1` and is summed as an integer number of
//! `2^-60` units (exact for any weight of at least 1/256): sums are then exact
//! and rounded once when read, so no figure depends on the order the
//! packets arrived in, not even in its last bit, and a tie is a tie.

use std::cmp::Ordering;

use super::ballot::Ballot;
use super::config::{Method, SynthesisConfig};
use super::exact;

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
    /// One vote: what a packet with `confidence` and `timestamp` adds under
    /// `config`, ages measured from `now`. The same packet always adds the
    /// same, so a vote can be taken back.
    #[inline]
    pub fn of(config: &SynthesisConfig, now: f64, confidence: f64, timestamp: f64) -> Tally {
        let c = fixed(confidence);
        let (r, rc, w) = match (config.method(), config.half_life()) {
            (Method::Seed, _) => (ONE, c, ONE),
            (Method::Majority, None) => (ONE, c, ONE),
            (Method::ConfidenceWeighted, None) => (ONE, c, c),
            (method, Some(h)) => {
                let r = (-(now - timestamp).max(0.0) / h.as_secs_f64()).exp2();
                let rc = fixed(r * confidence.clamp(0.0, 1.0));
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

/// The votes per problem, every slot counted (outliers are taken back by the
/// caller with [`Tally::sub`]), and each problem's first slot (for the seed's
/// tie rule). Without a half-life a vote adds 1 or its confidence, so only
/// the votes and the confidences are summed and the rest follows from them;
/// those sums were made as the votes were taken in
/// ([`Running`](super::ballot::Running)) unless a vote was replaced. With a
/// half-life, each vote's recency factor is computed.
pub(crate) fn count<T>(
    ballot: &Ballot<'_, T>,
    config: &SynthesisConfig,
    now: f64,
) -> (Vec<Tally>, Vec<u32>) {
    let n_problems = ballot.problems.len();
    let mut tallies = vec![Tally::default(); n_problems];
    let mut first = vec![u32::MAX; n_problems];
    let half_life = config
        .half_life()
        .filter(|_| config.method() != Method::Seed);
    if half_life.is_some() {
        for (i, s) in ballot.slots.iter().enumerate() {
            let p = s.problem as usize;
            if first[p] == u32::MAX {
                first[p] = i as u32;
            }
            tallies[p].add(&Tally::of(config, now, s.confidence, s.timestamp));
        }
        return (tallies, first);
    }
    let running = &ballot.running;
    if running.valid && ballot.slots.len() <= exact::MAX_TERMS as usize {
        // Counted as the votes were taken in, the same way as below.
        for ((t, f), c) in tallies.iter_mut().zip(&mut first).zip(&running.problems) {
            t.votes = c.votes;
            t.confidence = c.sum.units();
            *f = c.first;
        }
        return (finish(tallies, config), first);
    }
    // Per problem: the confidences summed as `exact` says, in blocks of at
    // most `MAX_TERMS` slots; one outside `[2^-7, 1]` (its fixed-point value
    // is then not simply `c * 2^60`) is converted on its own.
    let mut sums = vec![exact::Sum::default(); n_problems];
    let block = exact::MAX_TERMS as usize;
    for (b, slots) in ballot.slots.chunks(block).enumerate() {
        for (i, s) in slots.iter().enumerate() {
            let p = s.problem as usize;
            if first[p] == u32::MAX {
                first[p] = (b * block + i) as u32;
            }
            tallies[p].votes += 1;
            sums[p].add(s.confidence);
        }
        for (t, sum) in tallies.iter_mut().zip(&mut sums) {
            t.confidence += std::mem::take(sum).units();
        }
    }
    (finish(tallies, config), first)
}

/// The figures that follow from the votes and the confidences without a
/// half-life.
fn finish(mut tallies: Vec<Tally>, config: &SynthesisConfig) -> Vec<Tally> {
    for t in &mut tallies {
        t.recency = u128::from(t.votes) * u128::from(ONE);
        t.support = t.confidence;
        t.weight = match config.method() {
            Method::ConfidenceWeighted => t.confidence,
            Method::Seed | Method::Majority => t.recency,
        };
    }
    tallies
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
