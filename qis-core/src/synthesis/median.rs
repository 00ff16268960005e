//! Medians for the outlier filter, exact and in about one pass.
//!
//! [`median`] is the plain definition (a selection). [`Medians::median`]
//! gives the same value for large inputs in about one pass: a sample of the
//! values brackets the middle ranks, one pass counts the values below the
//! bracket and keeps those inside it, and only those are selected from. A
//! bracket that misses the middle (unlikely; the sample is spread over the
//! input) falls back to the plain selection, so the value is always exact.

use std::cmp::Ordering;

/// Below this many values the plain selection is as fast.
const SMALL: usize = 256;

/// The median of `xs` (reordered); NaN if empty. For an even count, the mean
/// of the two middle values (`lower + (upper - lower) / 2`).
pub(crate) fn median(xs: &mut [f64]) -> f64 {
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    let (left, mid, _) = xs.select_nth_unstable_by(n / 2, f64::total_cmp);
    middle(n, left, *mid)
}

/// The median of `n` values given the upper middle one, `upper`, and values
/// `left` of it whose largest is the lower middle one: `upper` for an odd
/// count, else the mean of the two middle values.
fn middle(n: usize, left: &[f64], upper: f64) -> f64 {
    if n % 2 == 1 {
        upper
    } else {
        let lower = left.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lower + (upper - lower) / 2.0
    }
}

/// Scratch space for [`Medians::median`], allocated once per synthesis.
pub(crate) struct Medians {
    sample: Vec<f64>,
    inside: Vec<f64>,
}

impl Medians {
    /// Room for medians of up to `n` values.
    pub fn with_capacity(n: usize) -> Self {
        Medians {
            sample: Vec::with_capacity(sample_size(n)),
            inside: Vec::with_capacity(n),
        }
    }

    /// The same value as [`median`] (up to the sign of a zero), `xs`
    /// possibly reordered.
    pub fn median(&mut self, xs: &mut [f64]) -> f64 {
        let n = xs.len();
        if n < SMALL {
            return median(xs);
        }
        // The ranks wanted: `k` (the upper middle) and, for an even count,
        // `k - 1`.
        let k = n / 2;
        let low = if n % 2 == 0 { k - 1 } else { k };
        // A sample spread evenly over the input, sorted.
        let s = sample_size(n);
        let stride = n / s;
        self.sample.clear();
        self.sample
            .extend((0..s).map(|i| xs[i * stride + (stride / 2)]));
        if self.sample.iter().any(|x| x.is_nan()) {
            return median(xs);
        }
        self.sample.sort_unstable_by(f64::total_cmp);
        // The middle ranks sit near `k * s / n` in the sample; `spread`
        // sample positions either side is about three standard deviations.
        let spread = 3 * (s.isqrt() / 2) + 2;
        let at = |r: usize| (r * s / n).min(s - 1);
        let lo = self.sample[at(low).saturating_sub(spread)];
        let hi = self.sample[(at(k) + spread).min(s - 1)];
        // One pass: count the values below the bracket, keep those inside.
        let inside = &mut self.inside;
        inside.clear();
        let mut below = 0usize;
        let mut nan = false;
        for &x in xs.iter() {
            below += usize::from(x < lo);
            if (x >= lo) & (x <= hi) {
                inside.push(x);
            }
            nan |= x.is_nan();
        }
        if nan || below > low || below + inside.len() <= k {
            return median(xs);
        }
        let (left, mid, _) = inside.select_nth_unstable_by(k - below, total);
        // For an even count, `k - 1 >= below`: the lower middle value is
        // inside too, the largest of the values left of the upper one.
        middle(n, left, *mid)
    }
}

fn total(a: &f64, b: &f64) -> Ordering {
    a.total_cmp(b)
}

/// How many values of `n` to sample: about `4 √n`, enough to bracket the
/// middle within a few percent of the values, few enough to sort in a
/// fraction of the pass.
fn sample_size(n: usize) -> usize {
    (4 * n.isqrt()).clamp(16, n.max(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut [5.0]), 5.0);
        assert!(median(&mut []).is_nan());
    }

    /// A deterministic stream of numbers in `0..1`.
    fn numbers(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect()
    }

    #[test]
    fn the_bracketed_median_is_the_median() {
        let mut m = Medians::with_capacity(5000);
        for n in [255, 256, 257, 1000, 1001, 4999, 5000] {
            for seed in 0..4 {
                let mut xs = numbers(seed, n);
                let cases: Vec<Vec<f64>> = vec![
                    xs.clone(),
                    // Sorted, reversed, few distinct values, wild values.
                    {
                        xs.sort_unstable_by(f64::total_cmp);
                        xs.clone()
                    },
                    xs.iter().rev().copied().collect(),
                    xs.iter().map(|x| (x * 4.0).floor()).collect(),
                    xs.iter()
                        .enumerate()
                        .map(|(i, x)| if i % 97 == 0 { 1e300 } else { *x })
                        .collect(),
                    xs.iter()
                        .enumerate()
                        .map(|(i, x)| if i < n / 2 + 3 { -1e300 } else { *x })
                        .collect(),
                ];
                for case in cases {
                    let expected = median(&mut case.clone());
                    let got = m.median(&mut case.clone());
                    assert_eq!(got, expected, "n {n} seed {seed}");
                }
            }
        }
        let mut with_nan = numbers(9, 1000);
        with_nan[500] = f64::NAN;
        let expected = median(&mut with_nan.clone());
        assert_eq!(
            m.median(&mut with_nan).to_bits(),
            expected.to_bits(),
            "NaN falls back to the plain selection"
        );
    }
}
