//! The Bayesian figure: how likely the consensus problem is real. See
//! [`Posterior`].

use serde::Serialize;
use statrs::distribution::{Beta, ContinuousCDF};

/// The quantile reported as [`Posterior::lower_bound`].
pub const LOWER_BOUND_QUANTILE: f64 = 0.05;

/// The posterior `Beta(alpha, beta)` of the probability that the consensus
/// problem is real.
///
/// The unknown is `p`, the probability that an agent in this swarm reporting
/// on this subject is right that the consensus problem is present. Its prior
/// is `Beta(alpha0, beta0)` (default `Beta(1, 1)`, uniform). Every voter is
/// one Bernoulli observation, with a soft outcome:
///
/// - a voter for the consensus problem with confidence `c` is a success with
///   weight `c` and a failure with weight `1 - c` (its own doubt);
/// - a voter for any other problem is a failure with weight 1;
/// - with a half-life, each observation is scaled by the voter's recency
///   factor, so stale votes say less ([`Method::Seed`](super::Method::Seed)
///   ignores recency);
/// - outliers say nothing.
///
/// The conjugate update gives `Beta(alpha, beta)` with
/// `alpha = alpha0 + Σ_for r·c` and
/// `beta = beta0 + Σ_for r·(1 - c) + Σ_against r`. The figure is its mean
/// `alpha / (alpha + beta)`, with the 5 % quantile as a lower credible bound
/// (there is a 95 % posterior probability that `p` is above it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Posterior {
    /// First shape: prior plus the evidence for.
    pub alpha: f64,
    /// Second shape: prior plus the evidence against.
    pub beta: f64,
    /// The posterior mean `alpha / (alpha + beta)`.
    pub probability: f64,
    /// The 5 % quantile: a 95 % credible lower bound of the probability.
    pub lower_bound: f64,
}

impl Posterior {
    /// The posterior after the evidence `for_` (Σ r·c of the supporters) and
    /// `against` (Σ r·(1 − c) of the supporters plus Σ r of the others).
    pub(crate) fn update((alpha0, beta0): (f64, f64), for_: f64, against: f64) -> Self {
        let alpha = alpha0 + for_;
        let beta = beta0 + against;
        let mut p = Posterior {
            alpha,
            beta,
            probability: alpha / (alpha + beta),
            lower_bound: f64::NAN,
        };
        p.lower_bound = p.quantile(LOWER_BOUND_QUANTILE);
        p
    }

    /// The `q` quantile of the posterior (`q` in `0..=1`): e.g. `quantile(0.5)`
    /// is the median; NaN if `q` is out of range or the shapes are not
    /// positive.
    pub fn quantile(&self, q: f64) -> f64 {
        match Beta::new(self.alpha, self.beta) {
            Ok(b) if (0.0..=1.0).contains(&q) => b.inverse_cdf(q),
            _ => f64::NAN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        // Beta(a, 1): CDF x^a, so the q quantile is q^(1/a).
        let p = Posterior::update((1.0, 1.0), 2.0, 0.0);
        assert_eq!((p.alpha, p.beta), (3.0, 1.0));
        assert!((p.probability - 0.75).abs() < 1e-12);
        assert!((p.lower_bound - 0.05f64.powf(1.0 / 3.0)).abs() < 1e-9);
        // Beta(1, b): CDF 1 - (1 - x)^b, so the q quantile is 1 - (1 - q)^(1/b).
        let p = Posterior::update((1.0, 1.0), 0.0, 3.0);
        assert!((p.lower_bound - (1.0 - 0.95f64.powf(0.25))).abs() < 1e-9);
        assert!(Posterior::update((1.0, 1.0), 0.0, 0.0)
            .quantile(2.0)
            .is_nan());
    }
}
