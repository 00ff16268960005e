//! The values options take: context vectors, counts, shares, times and
//! durations, each parsed with an error that says what to give instead.

use std::time::Duration;

use qis::{Subject, SubjectPattern};

/// Parse a whole number of at least 1.
pub(super) fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// A context vector given on the command line: numbers separated by commas,
/// `0.18,0.92,0.03,0.71` (negative ones too: `-0.2,0.5`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContextVector(pub Vec<f64>);

impl std::str::FromStr for ContextVector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|x| match x.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(format!(
                    "{x:?} in {s:?} is not a finite number: give numbers separated by commas, e.g. 0.18,0.92,0.03"
                )),
            })
            .collect::<Result<_, _>>()
            .map(ContextVector)
    }
}

/// Parse a neighbour count, 1 to 10000.
pub(super) fn parse_k(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(k) if (1..=qis::similar::MAX_SIMILAR_K).contains(&k) => Ok(k),
        _ => Err(format!(
            "{s:?} is not a number of neighbours from 1 to {}",
            qis::similar::MAX_SIMILAR_K
        )),
    }
}

pub(super) fn parse_subject(s: &str) -> Result<Subject, String> {
    s.parse::<Subject>().map_err(|e| e.message().to_string())
}

pub(super) fn parse_pattern(s: &str) -> Result<SubjectPattern, String> {
    SubjectPattern::new(s).map_err(|e| e.message().to_string())
}

/// Parse a share between 0 and 1.
pub(super) fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a share between 0 and 1, e.g. 0.6")),
    }
}

/// Parse finite, non-negative seconds since the Unix epoch.
pub(super) fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!(
            "{s:?} is not a time in seconds since the Unix epoch, e.g. 1764000000"
        )),
    }
}

/// Seconds in `s`: a number with one of `units` (name, seconds) after it,
/// or a bare number of seconds; `None` when it is not one.
fn seconds(s: &str, units: &[(&str, f64)]) -> Option<f64> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = units.iter().find(|(u, _)| *u == unit)?.1;
    let secs = num.trim().parse::<f64>().ok()? * scale;
    secs.is_finite().then_some(secs)
}

/// Parse a positive half-life: `90s`, `15m`, `6h`, `2d`, or bare seconds.
pub fn parse_half_life(s: &str) -> Result<Duration, String> {
    const UNITS: &[(&str, f64)] = &[
        ("ms", 0.001),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
        ("d", 86_400.0),
    ];
    match seconds(s, UNITS) {
        Some(secs) if secs > 0.0 && secs <= 1e12 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{s:?} is not a positive duration: use e.g. 90s, 15m, 6h or 2d"
        )),
    }
}

/// Parse `500ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds, up to
/// 24 h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: &[(&str, f64)] = &[("ms", 0.001), ("s", 1.0), ("m", 60.0)];
    match seconds(s, UNITS) {
        None => Err(format!("{s:?} is not a duration: use e.g. 500ms, 2s or 1m")),
        Some(secs) if (0.0..=86_400.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        Some(_) => Err(format!("{s:?} is not a duration between 0 and 24 h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_vectors() {
        let v = |s: &str| s.parse::<ContextVector>().map(|c| c.0);
        assert_eq!(v("0.18,0.92"), Ok(vec![0.18, 0.92]));
        assert_eq!(v("-0.2, 1e-3"), Ok(vec![-0.2, 0.001]));
        assert_eq!(v("7"), Ok(vec![7.0]));
        for bad in ["", "0.1,,0.2", "0.1,x", "nan", "0.1,inf"] {
            let e = v(bad).unwrap_err();
            assert!(e.contains("not a finite number"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("2h").is_err());
    }

    #[test]
    fn synth_values() {
        assert_eq!(parse_half_life("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_half_life("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_half_life("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_half_life("30"), Ok(Duration::from_secs(30)));
        assert!(parse_half_life("0s").is_err());
        assert!(parse_half_life("-1h").is_err());
        assert!(parse_half_life("1y").is_err());
        assert!(parse_share("0.6").is_ok() && parse_share("1.5").is_err());
        assert!(parse_secs("1764000000").is_ok() && parse_secs("-1").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").is_err() && positive("x").is_err());
        assert_eq!(parse_k("10"), Ok(10));
        assert!(parse_k("0").is_err());
        assert!(parse_k(&(qis::similar::MAX_SIMILAR_K + 1).to_string()).is_err());
    }
}
