//! Finding the stored packets that match a pattern, after a position.
//!
//! SQL narrows, Rust decides: the query returns candidate rows in `seq` order
//! and [`SubjectPattern::matches`] gives SPEC §3 semantics exactly. The query
//! depends on the pattern's form:
//!
//! - an exact subject: an equality lookup on the `(subject, seq)` index, which
//!   already returns rows in `seq` order;
//! - a pattern whose literal prefix is narrower than the transport prefix
//!   (`qis.iot.hvac.>`, `qis.iot.hvac.*.x`): a range on the same index
//!   (`subject >= 'qis.iot.hvac.' AND subject < 'qis.iot.hvac/'`), sorting only
//!   the `seq`s found there, then fetching those rows by `seq`;
//! - a pattern as wide as the prefix (`qis.iot.>`, `qis.iot.*.energy`):
//!   walking the table in `seq` order from the position, since most rows
//!   are candidates anyway.
//!
//! Every row examined moves the caller's position past it, matching or not,
//! so no row is looked at twice by the same consumer or subscription.

use qis_core::{Subject, SubjectPattern};
use rusqlite::Connection;

use crate::row::Row;

#[derive(Debug)]
enum Plan {
    Exact(String),
    Narrow { lo: String, hi: String },
    Wide { lo: String, hi: String },
}

/// A pattern turned into a query plan, within a transport prefix.
#[derive(Debug)]
pub(crate) struct Scan {
    prefix: Subject,
    pattern: SubjectPattern,
    plan: Plan,
    /// For a pattern `{literal}.>` with the literal at or below the prefix
    /// (`qis.iot.>`, `qis.iot.hvac.>`, the usual consumer): `{literal}.`.
    /// A subject then matches when it starts with it and its next token is
    /// not empty, which [`matches`](Self::matches) checks without splitting
    /// the subject into tokens.
    below: Option<String>,
}

const EXACT: &str =
    "SELECT seq, subject, body, packet_id FROM qis_outcomes INDEXED BY qis_outcomes_subject \
     WHERE subject = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
const NARROW: &str = "SELECT seq, subject, body, packet_id FROM qis_outcomes WHERE seq IN \
     (SELECT seq FROM qis_outcomes INDEXED BY qis_outcomes_subject \
      WHERE subject >= ?1 AND subject < ?2 AND seq > ?3 ORDER BY seq LIMIT ?4) ORDER BY seq";
const WIDE: &str = "SELECT seq, subject, body, packet_id FROM qis_outcomes NOT INDEXED \
     WHERE seq > ?3 AND subject >= ?1 AND subject < ?2 ORDER BY seq LIMIT ?4";
const COUNT_EXACT: &str = "SELECT count(*) FROM qis_outcomes INDEXED BY qis_outcomes_subject \
     WHERE subject = ?1 AND seq > ?2";
const SUBJECTS_NARROW: &str = "SELECT subject FROM qis_outcomes INDEXED BY qis_outcomes_subject \
     WHERE subject >= ?1 AND subject < ?2 AND seq > ?3";
const SUBJECTS_WIDE: &str = "SELECT subject FROM qis_outcomes NOT INDEXED \
     WHERE seq > ?3 AND subject >= ?1 AND subject < ?2";
/// Rows whose subject another program stored as a BLOB (SQLite sorts every
/// BLOB after every TEXT value, so none of the plans above sees them): one
/// range of the subject index, empty unless such rows were written.
const BLOB_SUBJECTS: &str =
    "SELECT seq, subject, body FROM qis_outcomes INDEXED BY qis_outcomes_subject \
     WHERE subject >= x'' AND seq > ?1 AND seq <= ?2";

impl Scan {
    pub(crate) fn new(prefix: &Subject, pattern: &SubjectPattern) -> Scan {
        let literal = pattern.literal_prefix();
        let prefix_tokens = prefix.tokens().count();
        let literal_tokens = if literal.is_empty() {
            0
        } else {
            literal.split('.').count()
        };
        let range = |base: &str| (format!("{base}."), format!("{base}/"));
        let plan = if pattern.is_exact() {
            Plan::Exact(pattern.as_str().to_string())
        } else if literal_tokens > prefix_tokens {
            let (lo, hi) = range(&literal);
            Plan::Narrow { lo, hi }
        } else {
            // Every subject this transport stores is below its prefix.
            let (lo, hi) = range(prefix.as_str());
            Plan::Wide { lo, hi }
        };
        let below = (!literal.is_empty()
            && pattern.as_str().strip_suffix(".>") == Some(literal.as_str())
            && prefix.contains(&literal))
        .then(|| format!("{literal}."));
        Scan {
            prefix: prefix.clone(),
            pattern: pattern.clone(),
            plan,
            below,
        }
    }

    /// Whether a stored subject is one this scan delivers.
    pub(crate) fn matches(&self, subject: &str) -> bool {
        if let Some(below) = &self.below {
            return subject.starts_with(below.as_str())
                && subject
                    .as_bytes()
                    .get(below.len())
                    .is_some_and(|&b| b != b'.');
        }
        subject.len() > self.prefix.as_str().len()
            && self.prefix.contains(subject)
            && self.pattern.matches(subject)
    }

    /// Hand up to `limit` candidate rows after `after`, in `seq` order, to
    /// `f` as the statement reads them (borrowed, not copied) until it
    /// says stop. Returns how many it was handed.
    fn each_candidate(
        &self,
        conn: &Connection,
        after: i64,
        limit: usize,
        mut f: impl FnMut(Row<'_>) -> bool,
    ) -> rusqlite::Result<usize> {
        let limit = limit as i64;
        let mut stmt = conn.prepare_cached(match &self.plan {
            Plan::Exact(_) => EXACT,
            Plan::Narrow { .. } => NARROW,
            Plan::Wide { .. } => WIDE,
        })?;
        let mut rows = match &self.plan {
            Plan::Exact(subject) => stmt.query(rusqlite::params![subject, after, limit])?,
            Plan::Narrow { lo, hi } | Plan::Wide { lo, hi } => {
                stmt.query(rusqlite::params![lo, hi, after, limit])?
            }
        };
        let mut seen = 0;
        while let Some(r) = rows.next()? {
            seen += 1;
            if !f(Row::from_sql(r, 1, 2)?.with_stored_id(r.get_ref(3)?)) {
                break;
            }
        }
        Ok(seen)
    }

    /// How many stored rows after `after` this scan would deliver (malformed
    /// ones included: only reading them tells). Reads subjects only, from
    /// the index where the plan has one.
    pub(crate) fn count_after(&self, conn: &Connection, after: i64) -> rusqlite::Result<u64> {
        let count = |sql: &str, lo: &str, hi: &str| -> rusqlite::Result<u64> {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(rusqlite::params![lo, hi, after])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let subject: String = r.get(0)?;
                if self.matches(&subject) {
                    n += 1;
                }
            }
            Ok(n)
        };
        match &self.plan {
            Plan::Exact(subject) => conn
                .prepare_cached(COUNT_EXACT)?
                .query_row(rusqlite::params![subject, after], |r| r.get::<_, i64>(0))
                .map(|n| n as u64),
            Plan::Narrow { lo, hi } => count(SUBJECTS_NARROW, lo, hi),
            Plan::Wide { lo, hi } => count(SUBJECTS_WIDE, lo, hi),
        }
    }

    /// Whether any candidate row lies after `after` (a cheap look before
    /// taking the write lock).
    pub(crate) fn any_after(&self, conn: &Connection, after: i64) -> rusqlite::Result<bool> {
        Ok(self.each_candidate(conn, after, 1, |_| false)? > 0)
    }

    /// Walk the rows after `after` in `seq` order, handing each matching row
    /// to `take`, which says whether it counted (a malformed row does not).
    /// Stops after `want` counted rows. Returns the new position: the last
    /// row examined, or the newest row in the table when every candidate was
    /// examined. Call it inside a transaction so the newest row is the one
    /// the walk saw.
    ///
    /// Rows whose subject is a BLOB (written by another program) are handed
    /// to `take` too, after the others, when their subject read as text
    /// matches: they are malformed, and the caller counts them once as the
    /// position passes them.
    pub(crate) fn walk(
        &self,
        conn: &Connection,
        after: i64,
        want: usize,
        mut take: impl FnMut(Row<'_>) -> bool,
    ) -> rusqlite::Result<i64> {
        let mut position = after;
        if want == 0 {
            return Ok(position);
        }
        let newest: i64 = conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM qis_outcomes")?
            .query_row([], |r| r.get(0))?;
        let chunk = want.min(1024);
        let mut taken = 0;
        loop {
            let seen = self.each_candidate(conn, position, chunk, |row| {
                position = row.seq;
                if self.matches(&row.subject) && take(row) {
                    taken += 1;
                }
                taken < want
            })?;
            if taken == want {
                self.blob_subjects(conn, after, position, &mut take)?;
                return Ok(position);
            }
            if seen < chunk {
                let position = position.max(newest);
                self.blob_subjects(conn, after, position, &mut take)?;
                return Ok(position);
            }
        }
    }

    /// Hand the matching rows with a BLOB subject in `(after, upto]` to `take`.
    fn blob_subjects(
        &self,
        conn: &Connection,
        after: i64,
        upto: i64,
        take: &mut impl FnMut(Row<'_>) -> bool,
    ) -> rusqlite::Result<()> {
        if upto <= after {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(BLOB_SUBJECTS)?;
        let mut rows = stmt.query(rusqlite::params![after, upto])?;
        while let Some(r) = rows.next()? {
            let row = Row::from_sql(r, 1, 2)?;
            if self.matches(&row.subject) {
                take(row);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(p: &str) -> Scan {
        Scan::new(&"qis.iot".parse().unwrap(), &p.parse().unwrap())
    }

    #[test]
    fn plans() {
        assert!(matches!(scan("qis.iot.hvac.x").plan, Plan::Exact(_)));
        assert!(
            matches!(scan("qis.iot.hvac.>").plan, Plan::Narrow { ref lo, ref hi } if lo == "qis.iot.hvac." && hi == "qis.iot.hvac/")
        );
        assert!(matches!(scan("qis.iot.>").plan, Plan::Wide { ref lo, .. } if lo == "qis.iot."));
        assert!(matches!(scan(">").plan, Plan::Wide { ref lo, .. } if lo == "qis.iot."));
        assert!(matches!(scan("*.iot.hvac").plan, Plan::Wide { .. }));
    }

    /// The queries use the index the module docs promise, not a full scan.
    #[test]
    fn query_plans_use_the_index() {
        let tmp = qis_conformance::support::TempDir::new("sqlite-plan");
        let dir = tmp.path();
        let conn = crate::schema::open(&crate::SqliteConfig::new(dir.join("plan.db"))).unwrap();
        let plan = |sql: &str, n: usize| -> String {
            let params: Vec<i64> = vec![0; n];
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap();
            rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
        };
        let exact = plan(EXACT, 3);
        assert!(
            exact.contains("USING INDEX qis_outcomes_subject (subject=? AND seq>?)"),
            "{exact}"
        );
        assert!(!exact.contains("TEMP B-TREE"), "{exact}");
        let narrow = plan(NARROW, 4);
        assert!(
            narrow.contains("COVERING INDEX qis_outcomes_subject (subject>? AND subject<?)"),
            "{narrow}"
        );
        assert!(narrow.contains("INTEGER PRIMARY KEY (rowid=?)"), "{narrow}");
        let blobs = plan(BLOB_SUBJECTS, 2);
        assert!(
            blobs.contains("USING INDEX qis_outcomes_subject (subject>?)"),
            "{blobs}"
        );
        let wide = plan(WIDE, 4);
        assert!(wide.contains("INTEGER PRIMARY KEY (rowid>?)"), "{wide}");
        assert!(!wide.contains("TEMP B-TREE"), "{wide}");
        drop(conn);
    }

    /// The shortcut for `{literal}.>` answers exactly as the pattern does.
    #[test]
    fn the_tail_shortcut_matches_like_the_pattern() {
        let prefix: Subject = "qis.iot".parse().unwrap();
        let subjects = [
            "qis.iot",
            "qis.iot.",
            "qis.iot..",
            "qis.iot..x",
            "qis.iot.h",
            "qis.iot.hvac",
            "qis.iot.hvac.",
            "qis.iot.hvac.x",
            "qis.iot.hvac..x",
            "qis.iot.hvacx.y",
            "qis.iot.hvac.x.y.z",
            "qis.iotx.hvac",
            "qis.io",
            "other.iot.hvac",
            "",
            ".",
            "qis.iot.hvac/x",
            "qis.iot.é",
            "qis.iot.hvac.é.",
        ];
        for pattern in [
            "qis.iot.>",
            "qis.iot.hvac.>",
            "qis.iot.hvac.x.>",
            "qis.>",
            "other.>",
        ] {
            let fast = Scan::new(&prefix, &pattern.parse().unwrap());
            let mut slow = Scan::new(&prefix, &pattern.parse().unwrap());
            let shortcut = slow.below.take();
            assert_eq!(
                shortcut.is_some(),
                !matches!(pattern, "qis.>" | "other.>"),
                "{pattern}"
            );
            for s in subjects {
                assert_eq!(fast.matches(s), slow.matches(s), "{pattern} on {s:?}");
            }
        }
    }

    #[test]
    fn matching_stays_under_the_prefix() {
        let s = scan(">");
        assert!(s.matches("qis.iot.hvac"));
        assert!(!s.matches("qis.iot"));
        assert!(!s.matches("other.iot.hvac"));
        assert!(!s.matches("qis.iotx.hvac"));
    }
}
