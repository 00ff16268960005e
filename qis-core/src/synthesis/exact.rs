//! Exact sums of many numbers in fixed point without a conversion to integer
//! per number.
//!
//! The figures are sums of numbers in `[0, 1]` counted in `2^-60` units
//! (see [`super::tally`]), so that they are exact and do not depend on the
//! order of the terms. Converting every term to an integer is the costly
//! part of such a sum (a saturating conversion per term). A term that is
//! already a whole number of units, which every number in `[2^-8, 1]` is
//! (its last bit is worth at least `2^-60`), can instead be split exactly
//! into `h`, the term rounded to a multiple of `2^-30` (by adding and taking
//! away `1.5 * 2^22`, whose last bit is worth `2^-30`), and `x - h`, a
//! multiple of `2^-60` at most `2^-31` in size. Up to [`MAX_TERMS`] of each
//! add up exactly in a double, and the two sums become one integer at the
//! end ([`units`]). Terms that are not whole numbers of units (rare) are
//! converted on their own by the caller.

/// `1.5 * 2^22`: adding it rounds a number in `[0, 1]` to a multiple of
/// `2^-30`.
const SPLIT: f64 = 1.5 * (1u64 << 22) as f64;
/// `2^30`: a multiple of `2^-30` times this is a whole number.
const HIGH_UNITS: f64 = (1u64 << 30) as f64;
/// `2^60`: a multiple of `2^-60` times this is a whole number.
const UNITS: f64 = (1u64 << 60) as f64;

/// How many terms a pair of sums takes before [`units`] must be taken: the
/// high sum stays below `2^23` (exact in steps of `2^-30`), the low one below
/// `2^-7` in size (exact in steps of `2^-60`).
pub(crate) const MAX_TERMS: u32 = 1 << 22;

/// Add `x`, a whole number of `2^-60` units in `[0, 1]`, to the sums `high`
/// and `low`.
#[inline(always)]
pub(crate) fn add(high: &mut f64, low: &mut f64, x: f64) {
    let h = (x + SPLIT) - SPLIT;
    *high += h;
    *low += x - h;
}

/// The sums `high` and `low` (of at most [`MAX_TERMS`] terms) as a number of
/// `2^-60` units, exactly.
pub(crate) fn units(high: f64, low: f64) -> u128 {
    // `high * 2^30` is a whole number below 2^53, `low * 2^60` one below
    // 2^53 in size: both convert exactly.
    let high = (high * HIGH_UNITS) as u64;
    let low = (low * UNITS) as i64;
    (u128::from(high) << 30).wrapping_add(low as i128 as u128)
}

/// A sum of confidences in `2^-60` units, exact whatever the order of its
/// terms: a term in `[2^-7, 1]` or 0 goes to the two doubles ([`add`]), any
/// other is converted on its own. At most [`MAX_TERMS`] terms; a longer sum
/// is taken in blocks ([`units`](Sum::units), then a fresh `Sum`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sum {
    high: f64,
    low: f64,
    odd: u128,
}

impl Sum {
    /// Add the confidence `c` (in `[0, 1]`).
    #[inline(always)]
    pub(crate) fn add(&mut self, c: f64) {
        if (1.0 / 128.0..=1.0).contains(&c) | (c == 0.0) {
            add(&mut self.high, &mut self.low, c);
        } else {
            self.odd += u128::from(super::tally::fixed(c));
        }
    }

    /// The sum, in `2^-60` units.
    pub(crate) fn units(&self) -> u128 {
        self.odd + units(self.high, self.low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact() {
        // Terms in [2^-8, 1] and 0, each a whole number of units.
        let mut s = 0x5eedu64;
        let mut terms = vec![0.0, 1.0, 1.0 / 256.0, 0.5, 0.999_999_999_999_999_9];
        for _ in 0..100_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = (s >> 11) as f64 / (1u64 << 53) as f64;
            terms.push(if x < 1.0 / 256.0 { x + 1.0 / 256.0 } else { x });
        }
        let (mut high, mut low) = (0.0, 0.0);
        let mut expected = 0u128;
        for &x in &terms {
            add(&mut high, &mut low, x);
            // The plain conversion: exact, since `x * 2^60` is whole.
            expected += (x * UNITS) as u64 as u128;
        }
        assert_eq!(units(high, low), expected);
        assert_eq!(units(0.0, 0.0), 0);
    }
}
