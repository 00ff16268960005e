//! [`SynthesisConfig`] and [`Method`]: how a synthesis counts votes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::fingerprint::DEFAULT_RESOLUTION;

/// The default alert threshold: strictly more than this weighted share of
/// the voters must back the consensus problem (the seed's 0.6).
pub const ALERT_THRESHOLD: f64 = 0.6;

/// The default quorum: distinct agents that must back the consensus problem
/// before an alert, so a lone agent never alerts about itself.
pub const DEFAULT_QUORUM: usize = 2;

/// The default outlier cut-off `k`: a voter is an outlier when its distance
/// from the median situation exceeds the median distance by more than `k`
/// robust standard deviations (3.5, the modified z-score cut-off of
/// Iglewicz and Hoaglin).
pub const DEFAULT_OUTLIER_K: f64 = 3.5;

/// How votes are weighed. Every method keeps one vote per agent (its latest)
/// and counts a packet delivered twice once; they differ in what a vote
/// weighs and how ties are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The seed's rules, kept for compatibility (`../shared/vectors/synthesis.json`):
    /// every vote weighs 1 and the half-life is ignored; a tie between problems
    /// goes to the one seen first (the own packet first), so it depends on the
    /// delivery order.
    Seed,
    /// A simple vote: every vote weighs 1, times its recency factor when a
    /// half-life is set. Ties go to the problem with more votes, then the
    /// agent's own problem, then the smallest `domain.problem_class`: the
    /// result never depends on the delivery order.
    Majority,
    /// The default: a vote weighs the agent's confidence, times its recency
    /// factor when a half-life is set, so a consensus held by unsure agents is
    /// weaker than its head count. Ties as [`Method::Majority`].
    #[default]
    ConfidenceWeighted,
}

impl Method {
    /// Every method, in the order of the docs.
    pub const ALL: [Method; 3] = [Method::Seed, Method::Majority, Method::ConfidenceWeighted];

    /// The name used in JSON and on the command line: `seed`, `majority`,
    /// `confidence-weighted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Seed => "seed",
            Method::Majority => "majority",
            Method::ConfidenceWeighted => "confidence-weighted",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = Error;

    /// Parse a name from [`Method::as_str`] (`confidence` and `vote` are
    /// accepted as short forms).
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "seed" => Ok(Method::Seed),
            "majority" | "vote" => Ok(Method::Majority),
            "confidence-weighted" | "confidence" => Ok(Method::ConfidenceWeighted),
            _ => Err(Error::core(
                ErrorKind::InvalidInput,
                format!(
                    "{s:?} is not a synthesis method: use seed, majority or confidence-weighted"
                ),
            )),
        }
    }
}

/// How [`synthesize_with`](super::synthesize_with) works: one struct, every
/// option with a documented default, builder-style `with_*` setters.
///
/// | option | default | meaning |
/// |---|---|---|
/// | [`method`](Self::method) | [`Method::ConfidenceWeighted`] | what a vote weighs |
/// | [`quorum`](Self::quorum) | [`DEFAULT_QUORUM`] (2) | distinct agents backing the consensus before an alert |
/// | [`threshold`](Self::threshold) | [`ALERT_THRESHOLD`] (0.6) | alert iff the weighted strength is strictly greater |
/// | [`half_life`](Self::half_life) | none | recency: a vote `h` old weighs half a fresh one |
/// | [`now`](Self::now) | the clock at synthesis | the time ages are measured from |
/// | [`outliers`](Self::outliers) | on | exclude voters far from the others on their problem |
/// | [`outlier_k`](Self::outlier_k) | [`DEFAULT_OUTLIER_K`] (3.5) | how far is far |
/// | [`resolution`](Self::resolution) | [`DEFAULT_RESOLUTION`] (4) | fingerprint buckets for agreement and outliers |
/// | [`prior`](Self::prior) | Beta(1, 1) | the prior of the Bayesian figure |
///
/// [`SynthesisConfig::seed`] is the seed's exact rules (method `Seed`, quorum
/// 1, outlier filter off): what [`synthesize`](super::synthesize) uses.
///
/// ```
/// use std::time::Duration;
/// use qis_core::{Method, SynthesisConfig};
/// let config = SynthesisConfig::default()
///     .with_method(Method::Majority)
///     .with_quorum(3)
///     .with_half_life(Duration::from_secs(3600))?
///     .with_now(1_764_000_000.0)?;
/// assert_eq!(config.quorum(), 3);
/// assert_eq!(config.threshold(), 0.6);
/// assert!(config.outliers());
/// // Settings that cannot work are errors, never panics.
/// assert!(SynthesisConfig::default().with_threshold(1.5).is_err());
/// # Ok::<(), qis_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SynthesisConfig {
    method: Method,
    quorum: usize,
    threshold: f64,
    #[serde(rename = "half_life_secs", serialize_with = "secs")]
    half_life: Option<Duration>,
    now: Option<f64>,
    outliers: bool,
    outlier_k: f64,
    resolution: u32,
    prior: (f64, f64),
}

fn secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| d.as_secs_f64()).serialize(s)
}

impl Default for SynthesisConfig {
    fn default() -> Self {
        SynthesisConfig {
            method: Method::default(),
            quorum: DEFAULT_QUORUM,
            threshold: ALERT_THRESHOLD,
            half_life: None,
            now: None,
            outliers: true,
            outlier_k: DEFAULT_OUTLIER_K,
            resolution: DEFAULT_RESOLUTION,
            prior: (1.0, 1.0),
        }
    }
}

impl SynthesisConfig {
    /// The defaults (see the table above); the same as [`Default::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The seed's exact rules: method [`Method::Seed`], quorum 1 (so, as in
    /// the seed, a lone agent alerts), no outlier filter, threshold 0.6. The
    /// de-duplication and one-vote-per-agent fixes still apply.
    pub fn seed() -> Self {
        SynthesisConfig {
            method: Method::Seed,
            quorum: 1,
            outliers: false,
            ..Self::default()
        }
    }

    /// The method (default [`Method::ConfidenceWeighted`]).
    pub fn method(&self) -> Method {
        self.method
    }

    /// Distinct agents that must back the consensus problem before an alert
    /// (default 2). 0 and 1 both mean no quorum.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The alert threshold (default 0.6): an alert needs a weighted strength
    /// strictly greater.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The recency half-life (default none: age does not matter).
    pub fn half_life(&self) -> Option<Duration> {
        self.half_life
    }

    /// The time ages are measured from, in seconds since the Unix epoch
    /// (default none: the clock when the synthesis runs).
    pub fn now(&self) -> Option<f64> {
        self.now
    }

    /// Whether outliers are excluded (default on).
    pub fn outliers(&self) -> bool {
        self.outliers
    }

    /// The outlier cut-off `k` (default 3.5).
    pub fn outlier_k(&self) -> f64 {
        self.outlier_k
    }

    /// The fingerprint resolution used for agreement and as the outlier
    /// filter's smallest scale (default [`DEFAULT_RESOLUTION`]).
    pub fn resolution(&self) -> u32 {
        self.resolution
    }

    /// The Beta prior `(alpha, beta)` of the Bayesian figure (default (1, 1),
    /// uniform).
    pub fn prior(&self) -> (f64, f64) {
        self.prior
    }

    /// Set the method.
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Set the quorum.
    pub fn with_quorum(mut self, quorum: usize) -> Self {
        self.quorum = quorum;
        self
    }

    /// Set the alert threshold, within `0.0..=1.0` (otherwise an
    /// [`InvalidInput`](ErrorKind::InvalidInput) error).
    pub fn with_threshold(mut self, threshold: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(invalid(format!(
                "the alert threshold {threshold} is outside 0.0..=1.0: give a share of the weighted vote, e.g. 0.6"
            )));
        }
        self.threshold = threshold;
        Ok(self)
    }

    /// Weigh votes by recency: a vote `half_life` old weighs half a fresh
    /// one (`0.5^(age / half_life)`, age = `now - timestamp`, never below 0).
    /// `None` turns recency off. [`Method::Seed`] ignores it. A zero
    /// half-life is an [`InvalidInput`](ErrorKind::InvalidInput) error.
    pub fn with_half_life(mut self, half_life: impl Into<Option<Duration>>) -> Result<Self> {
        let h = half_life.into();
        if h == Some(Duration::ZERO) {
            return Err(invalid(
                "a half-life of zero would weigh every vote at nothing: give a positive duration, or none to turn recency off",
            ));
        }
        self.half_life = h;
        Ok(self)
    }

    /// Measure ages from `now` (seconds since the Unix epoch) instead of the
    /// clock; it is also the result's `synthesized_at`. A `now` that is not
    /// finite is an [`InvalidInput`](ErrorKind::InvalidInput) error.
    pub fn with_now(mut self, now: f64) -> Result<Self> {
        if !now.is_finite() {
            return Err(invalid(format!(
                "now {now} is not a time: give seconds since the Unix epoch"
            )));
        }
        self.now = Some(now);
        Ok(self)
    }

    /// This configuration as the figures were computed at `now`: finite,
    /// the clock's or one [`with_now`](Self::with_now) checked.
    pub(super) fn at(&self, now: f64) -> Self {
        SynthesisConfig {
            now: Some(now),
            ..*self
        }
    }

    /// Turn the outlier filter on or off (default on; off in
    /// [`SynthesisConfig::seed`]).
    ///
    /// For each problem with at least three voters:
    ///
    /// 1. The reference length is the most common context-vector length among
    ///    its voters (a tie goes to the longer). If fewer than three voters,
    ///    or not a strict majority, have it, nothing is flagged on that
    ///    problem: there is no majority situation to measure against.
    ///    Otherwise a voter whose vector has another length cannot be
    ///    compared with the majority and is an outlier.
    /// 2. The median situation is the coordinate-wise median of the
    ///    reference-length vectors; each voter's distance `d` is the Euclidean
    ///    distance of its vector from it.
    /// 3. A voter is an outlier when `d > median(d) + k · scale`, with
    ///    `scale = max(1.4826 · MAD(d), 1 / resolution)`: the MAD (median
    ///    absolute deviation) times 1.4826 estimates a standard deviation that
    ///    the outliers themselves cannot inflate, and one fingerprint bucket
    ///    width is its floor, so agents in neighbouring buckets are never
    ///    outliers. `k` is [`outlier_k`](Self::outlier_k).
    ///
    /// Every step is a median, so fewer than half of a problem's voters can
    /// be flagged and the result does not depend on the order of the voters.
    /// Outliers are left out of every figure (the own agent too, if it is
    /// one) and listed in [`Synthesis::outliers`](super::Synthesis::outliers).
    pub fn with_outliers(mut self, on: bool) -> Self {
        self.outliers = on;
        self
    }

    /// Set the outlier cut-off `k` (robust standard deviations), finite
    /// and positive (otherwise an [`InvalidInput`](ErrorKind::InvalidInput)
    /// error).
    pub fn with_outlier_k(mut self, k: f64) -> Result<Self> {
        if !(k.is_finite() && k > 0.0) {
            return Err(invalid(format!(
                "the outlier cut-off {k} must be finite and positive, e.g. {DEFAULT_OUTLIER_K}"
            )));
        }
        self.outlier_k = k;
        Ok(self)
    }

    /// Set the fingerprint resolution, at least 1 (0 is an
    /// [`InvalidInput`](ErrorKind::InvalidInput) error).
    pub fn with_resolution(mut self, resolution: u32) -> Result<Self> {
        if resolution == 0 {
            return Err(invalid(format!(
                "a fingerprint resolution of 0 has no buckets: give at least 1, e.g. {DEFAULT_RESOLUTION}"
            )));
        }
        self.resolution = resolution;
        Ok(self)
    }

    /// Set the Beta prior of the Bayesian figure: two finite positive
    /// shapes (otherwise an [`InvalidInput`](ErrorKind::InvalidInput) error).
    pub fn with_prior(mut self, alpha: f64, beta: f64) -> Result<Self> {
        if !(alpha.is_finite() && alpha > 0.0 && beta.is_finite() && beta > 0.0) {
            return Err(invalid(format!(
                "the Beta prior ({alpha}, {beta}) needs two finite positive shapes, e.g. (1, 1)"
            )));
        }
        self.prior = (alpha, beta);
        Ok(self)
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::core(ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.as_str().parse::<Method>().unwrap(), m);
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert!("bayes".parse::<Method>().is_err());
    }

    #[test]
    fn seed_preset() {
        let s = SynthesisConfig::seed();
        assert_eq!(s.method(), Method::Seed);
        assert_eq!(s.quorum(), 1);
        assert!(!s.outliers());
        let d = SynthesisConfig::default();
        assert_eq!(d.quorum(), 2);
        assert_eq!(d.method(), Method::ConfidenceWeighted);
        assert_eq!(d.resolution(), DEFAULT_RESOLUTION);
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let d = SynthesisConfig::default;
        let refused = [
            ("threshold 1.5", d().with_threshold(1.5).err()),
            ("threshold NaN", d().with_threshold(f64::NAN).err()),
            ("half-life 0", d().with_half_life(Duration::ZERO).err()),
            ("now inf", d().with_now(f64::INFINITY).err()),
            ("outlier k 0", d().with_outlier_k(0.0).err()),
            ("outlier k NaN", d().with_outlier_k(f64::NAN).err()),
            ("resolution 0", d().with_resolution(0).err()),
            ("prior (0, 1)", d().with_prior(0.0, 1.0).err()),
            ("prior (1, inf)", d().with_prior(1.0, f64::INFINITY).err()),
        ];
        for (what, e) in refused {
            let e = e.unwrap_or_else(|| panic!("{what} was accepted"));
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}");
        }
        assert!(d().with_threshold(1.0).is_ok() && d().with_threshold(0.0).is_ok());
        assert!(d().with_half_life(None).is_ok());
    }

    #[test]
    fn half_life_serialises_as_seconds() {
        let c = SynthesisConfig::default()
            .with_half_life(Duration::from_secs(90))
            .unwrap();
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["half_life_secs"], 90.0);
        assert_eq!(v["method"], "confidence-weighted");
    }
}
