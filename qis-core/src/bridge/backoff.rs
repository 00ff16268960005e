//! Exponential backoff with jitter, bounded.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// How long a bridge waits before trying a failed side again: `initial`,
/// then `multiplier` times longer after each failure in a row, at most `max`,
/// each pause moved at random by up to `jitter` of itself (so a fleet of
/// devices does not reconnect in lockstep). A success resets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first pause (default 100 ms).
    pub initial: Duration,
    /// The longest pause (default 30 s).
    pub max: Duration,
    /// Growth per failure in a row (default 2).
    pub multiplier: f64,
    /// Share of each pause moved at random, 0 to 1 (default 0.25).
    pub jitter: f64,
    /// Give up after this many failures in a row and return the last error
    /// (default `None`: keep trying).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.25,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The pause after `failures` failures in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(failures.saturating_sub(1).min(64) as i32);
        let base = self.initial.as_secs_f64() * exp;
        let base = base.min(self.max.as_secs_f64());
        let spread = base * self.jitter * (rand::random::<f64>() * 2.0 - 1.0);
        Duration::from_secs_f64((base + spread).clamp(0.0, self.max.as_secs_f64()))
    }

    /// Whether `failures` in a row are past [`max_attempts`](Self::max_attempts).
    pub fn exhausted(&self, failures: u32) -> bool {
        self.max_attempts.is_some_and(|m| failures >= m)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let ok = !self.initial.is_zero()
            && self.max >= self.initial
            && self.multiplier >= 1.0
            && (0.0..=1.0).contains(&self.jitter);
        if ok {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                "bridge",
                format!("backoff {self:?} is not usable: initial > 0, max ≥ initial, multiplier ≥ 1, jitter in 0..=1"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_bound_with_jitter_inside_it() {
        let b = Backoff::default();
        for _ in 0..100 {
            let first = b.delay(1);
            assert!(
                first >= Duration::from_millis(75) && first <= Duration::from_millis(125),
                "{first:?}"
            );
            let fourth = b.delay(4);
            assert!(
                fourth >= Duration::from_millis(600) && fourth <= Duration::from_millis(1000),
                "{fourth:?}"
            );
            assert!(b.delay(100) <= b.max);
        }
        assert!(!b.exhausted(1_000));
        let few = Backoff {
            max_attempts: Some(3),
            ..b
        };
        assert!(!few.exhausted(2) && few.exhausted(3));
    }
}
