//! Translating a [`SubjectPattern`] into the NATS subject filter the server
//! uses, so the server (not the client) picks the matching packets.

use qis_core::backend::check_pattern_overlaps;
use qis_core::{Error, ErrorKind, Result, Subject, SubjectPattern};

use crate::NAME;

/// The NATS filter that selects, among subjects under `prefix`, exactly those
/// `pattern` matches; `None` if it matches none of them.
///
/// QIS patterns have NATS semantics already; what needs care is a pattern
/// reaching outside the stream's subjects `{prefix}.>` (such as `>` or
/// `qis.*.hvac.*` for prefix `qis.iot`), which a JetStream consumer would
/// refuse as a filter. Because every prefix token is a literal, the overlap of
/// the pattern with `{prefix}.>` is itself one pattern: wildcards over prefix
/// tokens become those tokens, and a `>` over them becomes `{prefix}.>`.
///
/// ```
/// use qis_transport_nats::server_filter;
/// let prefix = "qis.iot".parse().unwrap();
/// let f = |p: &str| server_filter(&prefix, &p.parse().unwrap());
/// assert_eq!(f(">").as_deref(), Some("qis.iot.>"));
/// assert_eq!(f("qis.*.hvac.*").as_deref(), Some("qis.iot.hvac.*"));
/// assert_eq!(f("*.*.hvac").as_deref(), Some("qis.iot.hvac"));
/// assert_eq!(f("qis.iot.hvac.>").as_deref(), Some("qis.iot.hvac.>"));
/// assert_eq!(f("other.>"), None);
/// assert_eq!(f("qis.iot"), None);
/// ```
pub fn server_filter(prefix: &Subject, pattern: &SubjectPattern) -> Option<String> {
    if !pattern.overlaps(prefix) {
        return None;
    }
    let prefix_tokens: Vec<&str> = prefix.tokens().collect();
    let pattern_tokens: Vec<&str> = pattern.as_str().split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(pattern_tokens.len().max(prefix_tokens.len() + 1));
    for (i, p) in prefix_tokens.iter().enumerate() {
        match pattern_tokens.get(i).copied() {
            Some(">") => return Some(format!("{prefix}.>")),
            Some("*") => out.push(p),
            Some(t) if t == *p => out.push(p),
            _ => return None,
        }
    }
    out.extend(pattern_tokens[prefix_tokens.len()..].iter().copied());
    if out.len() <= prefix_tokens.len() {
        return None;
    }
    Some(out.join("."))
}

/// [`server_filter`], or the error for a pattern that can match nothing
/// under the prefix (which the checking layer refuses before this is asked).
pub(crate) fn filter_for(prefix: &Subject, pattern: &SubjectPattern) -> Result<String> {
    server_filter(prefix, pattern).ok_or_else(|| {
        check_pattern_overlaps(NAME, prefix, pattern)
            .err()
            .unwrap_or_else(|| {
                Error::new(
                    ErrorKind::InvalidSubject,
                    NAME,
                    format!("pattern {pattern} has no NATS filter under the prefix {prefix}"),
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a set of subjects under the prefix, the filter selects exactly what
    /// the pattern selects.
    #[test]
    fn filter_agrees_with_pattern_under_prefix() {
        let prefix: Subject = "qis.iot".parse().unwrap();
        let subjects = [
            "qis.iot.hvac",
            "qis.iot.hvac.energy-anomaly",
            "qis.iot.hvac.energy-anomaly.abc",
            "qis.iot.power.voltage-sag",
            "qis.iot.x.y.z.w",
        ];
        let patterns = [
            ">",
            "*.>",
            "*.*.>",
            "qis.>",
            "qis.*.>",
            "qis.*.hvac.*",
            "*.*.hvac.>",
            "qis.iot.*",
            "qis.iot.*.*",
            "qis.iot.hvac.>",
            "*.iot.*.energy-anomaly",
            "qis.iot.>",
            "*.*.*.*.*.*",
        ];
        for p in patterns {
            let pat: SubjectPattern = p.parse().unwrap();
            let filter: SubjectPattern = server_filter(&prefix, &pat).unwrap().parse().unwrap();
            assert!(filter.is_within(&prefix), "{p} -> {filter}");
            for s in subjects {
                assert_eq!(
                    pat.matches(s),
                    filter.matches(s),
                    "pattern {p}, filter {filter}, subject {s}"
                );
            }
        }
    }

    #[test]
    fn no_overlap_is_none() {
        let prefix: Subject = "qis.iot".parse().unwrap();
        for p in ["a.>", "qis.other.>", "qis.iot", "qis.*", "*"] {
            assert_eq!(server_filter(&prefix, &p.parse().unwrap()), None, "{p}");
        }
    }
}
