//! The semantic fingerprint (SPEC §4).
//!
//! `canonical = "qis-fp-v1\n" + domain + "\n" + problem_class + "\n" + join(",", buckets)`
//! with `bucket_i = floor(context_vector[i] * resolution)` as a base-10 integer,
//! and the fingerprint is the lowercase hex SHA-256 of `canonical`.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::subject::check_token;

/// The default bucket resolution.
pub const DEFAULT_RESOLUTION: u32 = 4;

/// A 64-character lowercase hex fingerprint; agents with similar context
/// vectors (same buckets) get the same one.
///
/// ```
/// use qis_core::Fingerprint;
/// let a = Fingerprint::compute("hvac", "energy-anomaly", &[0.18, 0.92, 0.03, 0.71], 4).unwrap();
/// let b = Fingerprint::compute("hvac", "energy-anomaly", &[0.22, 0.88, 0.07, 0.65], 4).unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a.as_str().len(), 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The canonical input string that is hashed.
    pub fn canonical(
        domain: &str,
        problem_class: &str,
        context_vector: &[f64],
        resolution: u32,
    ) -> Result<String> {
        check_token("domain", domain)?;
        check_token("problem_class", problem_class)?;
        if resolution == 0 {
            return Err(Error::core(
                ErrorKind::InvalidInput,
                "fingerprint resolution must be a positive integer (default 4)",
            ));
        }
        let mut s = String::with_capacity(
            16 + domain.len() + problem_class.len() + context_vector.len() * 4,
        );
        s.push_str("qis-fp-v1\n");
        s.push_str(domain);
        s.push('\n');
        s.push_str(problem_class);
        s.push('\n');
        for (i, &x) in context_vector.iter().enumerate() {
            let b = (x * f64::from(resolution)).floor();
            // i64::MIN is exactly representable; i64::MAX + 1 = 2^63 is the first value out.
            // (NaN and the infinities fall outside the range too.)
            if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&b) {
                return Err(Error::core(
                    ErrorKind::InvalidInput,
                    format!(
                        "context_vector[{i}] = {x} gives bucket {b} at resolution {resolution}, outside the signed 64-bit range: scale the vector down"
                    ),
                ));
            }
            if i > 0 {
                s.push(',');
            }
            // `as i64` turns -0.0 into 0, so "-0" is never written.
            let _ = write!(s, "{}", b as i64);
        }
        Ok(s)
    }

    /// Compute the fingerprint.
    pub fn compute(
        domain: &str,
        problem_class: &str,
        context_vector: &[f64],
        resolution: u32,
    ) -> Result<Self> {
        let canonical = Self::canonical(domain, problem_class, context_vector, resolution)?;
        Ok(Fingerprint(hex::encode(Sha256::digest(
            canonical.as_bytes(),
        ))))
    }

    /// The hex text, usable as a subject token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_bucket_is_an_error() {
        let e = Fingerprint::compute("a", "b", &[1e300], 4).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(Fingerprint::compute("a", "b", &[0.1], 0).is_err());
    }

    #[test]
    fn negative_zero_is_zero() {
        let c = Fingerprint::canonical("a", "b", &[-0.0, -0.1], 4).unwrap();
        assert!(c.ends_with("\n0,-1"), "{c}");
    }
}
