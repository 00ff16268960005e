//! Tokens, subjects and subject patterns (SPEC §3).
//!
//! A token matches `[a-z0-9][a-z0-9_-]{0,63}`. A subject is one or more tokens
//! joined by `.`. A pattern is a subject in which a whole token may be `*`
//! (exactly one token) or, as the last token only, `>` (one or more tokens).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

/// The default subject prefix, as the seed uses.
pub const DEFAULT_PREFIX: &str = "qis.iot";

/// Longest token, in bytes.
pub const MAX_TOKEN_LEN: usize = 64;

/// An [`ErrorKind::InvalidSubject`] error saying `message`.
fn invalid(message: impl Into<String>) -> Error {
    Error::core(ErrorKind::InvalidSubject, message)
}

fn token_error(what: &str, token: &str) -> Error {
    invalid(format!(
        "{what} {token:?} is not a valid token: use 1 to 64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit (no dots, spaces, upper case or wildcards)"
    ))
}

/// Whether `s` is a valid token.
pub fn is_token(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TOKEN_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Check that `s` is a token; `what` names the field in the error
/// (e.g. `"domain"`).
pub fn check_token(what: &str, s: &str) -> Result<()> {
    if is_token(s) {
        Ok(())
    } else {
        Err(token_error(what, s))
    }
}

/// A validated subject: one or more tokens joined by `.`, such as
/// `qis.iot.hvac.energy-anomaly`.
///
/// ```
/// use qis_core::Subject;
/// let s: Subject = "qis.iot.hvac.energy-anomaly".parse().unwrap();
/// assert_eq!(s.tokens().count(), 4);
/// assert!("qis..iot".parse::<Subject>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

impl Subject {
    /// Parse and validate a subject.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if s.is_empty() {
            return Err(invalid(
                "the subject is empty: give one or more tokens joined by '.', e.g. qis.iot",
            ));
        }
        for t in s.split('.') {
            check_token("subject token", t)?;
        }
        Ok(Subject(s))
    }

    /// The readable subject `{prefix}.{domain}.{problem_class}`.
    pub fn readable(prefix: &Subject, domain: &str, problem_class: &str) -> Result<Self> {
        check_token("domain", domain)?;
        check_token("problem_class", problem_class)?;
        Ok(Subject(format!("{}.{domain}.{problem_class}", prefix.0)))
    }

    /// This subject with one more token appended.
    pub fn child(&self, token: &str) -> Result<Self> {
        check_token("subject token", token)?;
        Ok(Subject(format!("{}.{token}", self.0)))
    }

    /// The subject as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tokens, in order.
    pub fn tokens(&self) -> std::str::Split<'_, char> {
        self.0.split('.')
    }

    /// Whether `other` starts with this subject's tokens (it is this subject or
    /// below it).
    pub fn contains(&self, other: &str) -> bool {
        other == self.0
            || (other.len() > self.0.len()
                && other.starts_with(self.0.as_str())
                && other.as_bytes()[self.0.len()] == b'.')
    }

    /// The pattern `{self}.>`: everything below this subject.
    pub fn all_below(&self) -> SubjectPattern {
        SubjectPattern::new(format!("{}.>", self.0)).expect("a subject followed by > is a pattern")
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Subject {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Subject::new(s)
    }
}

impl AsRef<str> for Subject {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Default for Subject {
    /// The default prefix, `qis.iot`.
    fn default() -> Self {
        Subject(DEFAULT_PREFIX.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PatternToken {
    Literal(String),
    One,
    Tail,
}

/// A validated subject pattern with NATS semantics: `*` matches exactly one
/// token, `>` (last token only) matches one or more trailing tokens.
///
/// ```
/// use qis_core::SubjectPattern;
/// let p: SubjectPattern = "qis.iot.*.energy-anomaly".parse().unwrap();
/// assert!(p.matches("qis.iot.hvac.energy-anomaly"));
/// assert!(!p.matches("qis.iot.hvac.refrigerant-loss"));
/// assert!("qis.iot.hv*".parse::<SubjectPattern>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectPattern {
    text: String,
    tokens: Vec<PatternToken>,
}

impl SubjectPattern {
    /// Parse and validate a pattern.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let text = s.into();
        if text.is_empty() {
            return Err(invalid(
                "the pattern is empty: give tokens joined by '.', with '*' for one token or a final '>' for the rest",
            ));
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, t) in parts.iter().enumerate() {
            let tok = match *t {
                "*" => PatternToken::One,
                ">" if i + 1 == parts.len() => PatternToken::Tail,
                ">" => {
                    return Err(invalid(format!(
                        "pattern {text:?}: '>' may only be the last token"
                    )))
                }
                t if is_token(t) => PatternToken::Literal(t.to_string()),
                t => {
                    return Err(invalid(format!(
                        "pattern {text:?}: {t:?} is neither a token ([a-z0-9][a-z0-9_-]{{0,63}}) nor a whole-token wildcard '*' or '>'"
                    )))
                }
            };
            tokens.push(tok);
        }
        Ok(SubjectPattern { text, tokens })
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `subject` matches this pattern.
    ///
    /// Every delivery of a durable consumer is matched, so this walks the
    /// bytes once: a literal token is compared in place, without searching
    /// for the dot after it first.
    pub fn matches(&self, subject: &str) -> bool {
        let s = subject.as_bytes();
        // Where the next token of `subject` starts; `None` once all are used.
        let mut at = Some(0);
        for tok in &self.tokens {
            let Some(start) = at else {
                return false;
            };
            let rest = &s[start..];
            let len = match tok {
                PatternToken::Literal(l) => {
                    let l = l.as_bytes();
                    if !rest.starts_with(l) || rest.get(l.len()).is_some_and(|&c| c != b'.') {
                        return false;
                    }
                    l.len()
                }
                PatternToken::One | PatternToken::Tail => {
                    let len = rest.iter().position(|&c| c == b'.').unwrap_or(rest.len());
                    if len == 0 {
                        return false;
                    }
                    if matches!(tok, PatternToken::Tail) {
                        return true;
                    }
                    len
                }
            };
            at = (start + len < s.len()).then_some(start + len + 1);
        }
        at.is_none()
    }

    /// Whether the pattern has no wildcard (it is one exact subject).
    pub fn is_exact(&self) -> bool {
        self.tokens
            .iter()
            .all(|t| matches!(t, PatternToken::Literal(_)))
    }

    /// The literal tokens before the first wildcard, joined by `.`
    /// (`"qis.iot"` for `qis.iot.*.x`; empty for `>`). Every matching subject
    /// starts with it; backends use it to narrow an index scan.
    pub fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for t in &self.tokens {
            match t {
                PatternToken::Literal(l) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(l);
                }
                _ => break,
            }
        }
        out
    }

    /// Whether every subject this pattern can match lies under `prefix`
    /// (the pattern cannot reach outside a transport's prefix).
    pub fn is_within(&self, prefix: &Subject) -> bool {
        let n = prefix.tokens().count();
        self.tokens.len() > n
            && prefix
                .tokens()
                .zip(&self.tokens)
                .all(|(p, t)| matches!(t, PatternToken::Literal(l) if l == p))
    }

    /// Whether some subject under `prefix` could match this pattern.
    pub fn overlaps(&self, prefix: &Subject) -> bool {
        for (p, t) in prefix.tokens().zip(&self.tokens) {
            match t {
                PatternToken::Tail => return true,
                PatternToken::One => {}
                PatternToken::Literal(l) if l == p => {}
                PatternToken::Literal(_) => return false,
            }
        }
        self.tokens.len() > prefix.tokens().count()
            || matches!(self.tokens.last(), Some(PatternToken::Tail))
    }
}

impl fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for SubjectPattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SubjectPattern::new(s)
    }
}

impl From<&Subject> for SubjectPattern {
    fn from(s: &Subject) -> Self {
        SubjectPattern::new(s.as_str()).expect("every subject is a pattern")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token("hvac"));
        assert!(is_token("energy-anomaly"));
        assert!(is_token("a_b-0"));
        assert!(!is_token(""));
        assert!(!is_token("-a"));
        assert!(!is_token("Hvac"));
        assert!(!is_token("a.b"));
        assert!(!is_token(&"a".repeat(65)));
        assert!(is_token(&"a".repeat(64)));
    }

    /// `matches` as it was first written, token by token with `split`.
    fn matches_by_split(p: &SubjectPattern, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for tok in &p.tokens {
            match tok {
                PatternToken::Tail => return parts.next().is_some_and(|p| !p.is_empty()),
                PatternToken::One => match parts.next() {
                    Some(p) if !p.is_empty() => {}
                    _ => return false,
                },
                PatternToken::Literal(l) => match parts.next() {
                    Some(p) if p == l => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// Every string of up to `n` pieces from `pieces`, joined by `.`.
    fn joined(pieces: &[&str], n: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..n {
            let mut next = Vec::new();
            for s in &last {
                for p in pieces {
                    next.push(if s.is_empty() {
                        p.to_string()
                    } else {
                        format!("{s}.{p}")
                    });
                }
            }
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    #[test]
    fn matching_agrees_with_token_by_token_matching() {
        let patterns: Vec<SubjectPattern> = joined(&["a", "ab", "*", ">"], 4)
            .iter()
            .filter_map(|p| SubjectPattern::new(p.as_str()).ok())
            .collect();
        assert!(patterns.len() > 100);
        // Subjects include what a foreign publisher could send: empty
        // tokens, a trailing dot, prefixes of a literal.
        let subjects = joined(&["a", "ab", "b", "", "abc"], 5);
        for p in &patterns {
            for s in &subjects {
                assert_eq!(p.matches(s), matches_by_split(p, s), "{p} ~ {s:?}");
            }
        }
    }

    #[test]
    fn prefix_helpers() {
        let p: SubjectPattern = "qis.iot.*.x".parse().unwrap();
        assert_eq!(p.literal_prefix(), "qis.iot");
        let root: Subject = "qis.iot".parse().unwrap();
        assert!(p.is_within(&root));
        assert!(!SubjectPattern::new(">").unwrap().is_within(&root));
        assert!(SubjectPattern::new(">").unwrap().overlaps(&root));
        assert!(SubjectPattern::new("qis.*.hvac").unwrap().overlaps(&root));
        assert!(!SubjectPattern::new("other.>").unwrap().overlaps(&root));
        assert!(!SubjectPattern::new("qis.iot").unwrap().overlaps(&root));
        assert!(root.contains("qis.iot.hvac"));
        assert!(!root.contains("qis.iotx.hvac"));
    }
}
