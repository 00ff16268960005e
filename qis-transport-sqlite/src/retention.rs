//! Retention by age and by size (SPEC §6.8), applied inside the transactions
//! that deposit and fetch, and what a full store does ([`WhenFull`]).
//!
//! The check is two index lookups (the oldest row's time, the stored-bytes
//! counter), so it runs on every deposit and fetch transaction. Pruning, when
//! due, deletes the oldest rows in one range delete on `seq`:
//!
//! - by age: every row deposited more than `max_age` ago (rows are in time
//!   order, so the walk stops at the first young row);
//! - by size: when the bodies add up to more than `max_bytes`, the oldest rows
//!   until they are under `max_bytes - max_bytes / 32`, so a full store prunes
//!   in steps of about 3% instead of a row on every deposit.
//!
//! Before deleting, it looks at what the durable consumers on the file still
//! owe: a row after a consumer's cursor that matches its pattern, or a row
//! delivered to one and not acked. Under [`WhenFull::Refuse`] the range stops
//! at the first owed row (nothing owed is ever deleted, and the rows after it
//! wait with it, as the delete is one range on `seq`); under
//! [`WhenFull::DropOldest`] the range is deleted anyway and the owed rows in
//! it are counted in the `dropped` counter of `qis_meta` and logged.

use std::collections::BTreeMap;

use qis_core::{Subject, SubjectPattern};
use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, Transaction};

use crate::config::{SqliteConfig, WhenFull};
use crate::row::Row;
use crate::scan::Scan;
use crate::schema::{duration_ms, now_us};

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Packets removed.
    pub packets: u64,
    /// Body bytes removed.
    pub bytes: u64,
    /// Of the packets removed, those a durable consumer still owed: lost to
    /// it. Only [`WhenFull::DropOldest`] removes them.
    pub dropped: u64,
}

/// Prune what retention says must go, as the store's [`WhenFull`] policy
/// allows.
pub(crate) fn prune(tx: &Transaction<'_>, config: &SqliteConfig) -> rusqlite::Result<Pruned> {
    let Some(cut) = cut(tx, config)? else {
        return Ok(Pruned::default());
    };
    let owed = Owed::load(tx, cut)?;
    let pruned = match config.when_full {
        WhenFull::Refuse => {
            let keep_from = match owed.first(tx, cut)? {
                Some((seq, _)) => seq,
                None => cut,
            };
            delete_before(tx, keep_from, 0)?
        }
        WhenFull::DropOldest => {
            let (count, holders) = owed.count(tx, cut)?;
            let pruned = delete_before(tx, cut, count)?;
            if count > 0 {
                add_dropped(tx, count)?;
                tracing::warn!(
                    path = %config.path.display(),
                    packets = pruned.packets,
                    bytes = pruned.bytes,
                    owed = count,
                    consumers = ?holders,
                    "the store is full (when_full=drop_oldest): dropped the oldest packets, some still owed to durable consumers; they will never be delivered to them"
                );
            }
            pruned
        }
    };
    if pruned.packets > 0 {
        tracing::debug!(
            packets = pruned.packets,
            bytes = pruned.bytes,
            dropped = pruned.dropped,
            "retention pruned the oldest packets"
        );
    }
    Ok(pruned)
}

/// The first `seq` retention keeps, when it wants to remove anything: every
/// row before it is too old, or among the oldest that take the bodies past
/// `max_bytes`.
fn cut(tx: &Transaction<'_>, config: &SqliteConfig) -> rusqlite::Result<Option<i64>> {
    let mut cut: Option<i64> = None;
    let max_age_us = duration_ms(config.retention.max_age).saturating_mul(1000);
    let cutoff = now_us().saturating_sub(max_age_us);
    let oldest: Option<i64> = tx
        .prepare_cached("SELECT deposited_at_us FROM qis_outcomes ORDER BY seq LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    if oldest.is_some_and(|t| t < cutoff) {
        let keep_from: Option<i64> = tx
            .prepare_cached(
                "SELECT seq FROM qis_outcomes WHERE deposited_at_us >= ?1 ORDER BY seq LIMIT 1",
            )?
            .query_row([cutoff], |r| r.get(0))
            .optional()?;
        cut = Some(keep_from.unwrap_or(i64::MAX));
    }
    let stored = stored_bytes(tx)?;
    let max = i64::try_from(config.retention.max_bytes).unwrap_or(i64::MAX);
    if stored > max {
        let target = max - max / 32;
        let excess = stored - target;
        let mut freed = 0i64;
        let mut last = None;
        {
            let mut oldest_first =
                tx.prepare_cached("SELECT seq, length(body) FROM qis_outcomes ORDER BY seq")?;
            let mut rows = oldest_first.query([])?;
            while let Some(r) = rows.next()? {
                let (seq, len): (i64, i64) = (r.get(0)?, r.get(1)?);
                freed += len;
                last = Some(seq);
                if freed >= excess {
                    break;
                }
            }
        }
        if let Some(last) = last {
            let by_size = last.saturating_add(1);
            cut = Some(cut.map_or(by_size, |c| c.max(by_size)));
        }
    }
    Ok(cut)
}

/// A durable consumer as retention sees it.
struct Holder {
    name: String,
    cursor: i64,
    /// `None` when the stored prefix or pattern does not parse (written by
    /// another version): it then holds every row after its cursor.
    scan: Option<Scan>,
}

impl Holder {
    fn owes(&self, seq: i64, subject: &str) -> bool {
        seq > self.cursor && self.scan.as_ref().is_none_or(|s| s.matches(subject))
    }
}

/// What the durable consumers on the file owe below a cut.
pub(crate) struct Owed {
    /// Consumers whose cursor is before the cut.
    holders: Vec<Holder>,
    /// Rows before the cut delivered and not acked: seq → a consumer's name.
    pending: BTreeMap<i64, String>,
}

impl Owed {
    /// The consumers (of every prefix) and in-flight rows before `cut`.
    pub(crate) fn load(tx: &Transaction<'_>, cut: i64) -> rusqlite::Result<Owed> {
        let holders = tx
            .prepare_cached(
                "SELECT name, prefix, pattern, cursor FROM qis_consumers WHERE cursor < ?1 - 1",
            )?
            .query_map([cut], |r| {
                let (name, prefix, pattern, cursor): (String, String, String, i64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                let scan = match (Subject::new(prefix), SubjectPattern::new(pattern)) {
                    (Ok(prefix), Ok(pattern)) => Some(Scan::new(&prefix, &pattern)),
                    _ => None,
                };
                Ok(Holder { name, cursor, scan })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Each in-flight run's rows before the cut.
        let mut pending = BTreeMap::new();
        let mut runs = tx.prepare_cached(
            "SELECT p.seq, p.last_seq, c.name FROM qis_pending p JOIN qis_consumers c ON c.id = p.consumer_id WHERE p.seq < ?1",
        )?;
        let mut rows = runs.query([cut])?;
        while let Some(r) = rows.next()? {
            let (first, last, name): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            for seq in first..=last.min(cut - 1) {
                pending.insert(seq, name.clone());
            }
        }
        Ok(Owed { holders, pending })
    }

    /// Where the rows that may be owed start: the first in-flight row, or
    /// the first row after the earliest cursor.
    fn start(&self) -> Option<i64> {
        let pending = self.pending.keys().next().copied();
        let cursor = self.holders.iter().map(|h| h.cursor + 1).min();
        match (pending, cursor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Who owes the row `seq` on `subject`, if anyone does.
    fn owed_to(&self, seq: i64, subject: &str) -> Option<&str> {
        if let Some(name) = self.pending.get(&seq) {
            return Some(name);
        }
        self.holders
            .iter()
            .find(|h| h.owes(seq, subject))
            .map(|h| h.name.as_str())
    }

    /// Walk the rows from [`start`](Self::start) to `cut` in `seq` order,
    /// handing each owed one (seq, consumer) to `f` until it says stop.
    fn walk(
        &self,
        tx: &Transaction<'_>,
        cut: i64,
        mut f: impl FnMut(i64, &str) -> bool,
    ) -> rusqlite::Result<()> {
        let Some(start) = self.start() else {
            return Ok(());
        };
        let mut stmt = tx.prepare_cached(
            "SELECT seq, subject FROM qis_outcomes WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
        )?;
        let mut rows = stmt.query([start, cut])?;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            // Read by storage class: another program's row may hold a BLOB.
            let subject = Row::read(seq, r.get_ref(1)?, ValueRef::Null).subject;
            if let Some(name) = self.owed_to(seq, &subject) {
                if !f(seq, name) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The first owed row before `cut`, and to whom.
    pub(crate) fn first(
        &self,
        tx: &Transaction<'_>,
        cut: i64,
    ) -> rusqlite::Result<Option<(i64, String)>> {
        let mut first = None;
        self.walk(tx, cut, |seq, name| {
            first = Some((seq, name.to_string()));
            false
        })?;
        Ok(first)
    }

    /// How many rows before `cut` are owed, and to which consumers.
    fn count(&self, tx: &Transaction<'_>, cut: i64) -> rusqlite::Result<(u64, Vec<String>)> {
        let mut n = 0u64;
        let mut names: Vec<String> = Vec::new();
        self.walk(tx, cut, |_, name| {
            n += 1;
            if !names.iter().any(|m| m == name) {
                names.push(name.to_string());
            }
            true
        })?;
        Ok((n, names))
    }
}

/// The sum of the stored bodies' lengths.
pub(crate) fn stored_bytes(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    meta(tx, "stored_bytes")
}

/// Packets retention removed while a consumer still owed them.
pub(crate) fn dropped(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    meta(tx, "dropped")
}

fn meta(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached("SELECT value FROM qis_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
        .map(|v| v.unwrap_or(0))
}

fn add_dropped(tx: &Transaction<'_>, n: u64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO qis_meta (key, value) VALUES ('dropped', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
    )?
    .execute([n as i64])?;
    Ok(())
}

fn delete_before(tx: &Transaction<'_>, seq: i64, dropped: u64) -> rusqlite::Result<Pruned> {
    let (packets, bytes): (i64, i64) = tx
        .prepare_cached(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM qis_outcomes WHERE seq < ?1",
        )?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if packets == 0 {
        return Ok(Pruned::default());
    }
    tx.prepare_cached("DELETE FROM qis_outcomes WHERE seq < ?1")?
        .execute([seq])?;
    // In-flight deliveries of pruned packets can never be delivered again.
    crate::pending::cut_before(tx, seq)?;
    tx.prepare_cached("UPDATE qis_meta SET value = max(value - ?1, 0) WHERE key = 'stored_bytes'")?
        .execute([bytes])?;
    Ok(Pruned {
        packets: packets as u64,
        bytes: bytes as u64,
        dropped,
    })
}
