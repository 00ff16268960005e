//! Retention by age and by size (SPEC §6.8), applied inside the transactions
//! that deposit and fetch.
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

use rusqlite::{OptionalExtension, Transaction};

use crate::config::SqliteConfig;
use crate::schema::{duration_ms, now_us};

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Packets removed.
    pub packets: u64,
    /// Body bytes removed.
    pub bytes: u64,
    /// Deliveries of the removed packets that consumers had fetched and not
    /// yet acked: they will not be delivered again (each is logged with
    /// `tracing::warn!`, per consumer).
    pub unacked: u64,
}

/// Prune what retention says must go.
pub(crate) fn prune(tx: &Transaction<'_>, config: &SqliteConfig) -> rusqlite::Result<Pruned> {
    let mut pruned = Pruned::default();
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
        add(
            &mut pruned,
            delete_before(tx, keep_from.unwrap_or(i64::MAX))?,
        );
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
            add(&mut pruned, delete_before(tx, last.saturating_add(1))?);
        }
    }
    if pruned.packets > 0 {
        tracing::debug!(
            packets = pruned.packets,
            bytes = pruned.bytes,
            unacked = pruned.unacked,
            "retention pruned the oldest packets"
        );
    }
    Ok(pruned)
}

/// The sum of the stored bodies' lengths.
pub(crate) fn stored_bytes(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.prepare_cached("SELECT value FROM qis_meta WHERE key = 'stored_bytes'")?
        .query_row([], |r| r.get(0))
        .optional()
        .map(|v| v.unwrap_or(0))
}

fn delete_before(tx: &Transaction<'_>, seq: i64) -> rusqlite::Result<Pruned> {
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
    let unacked = warn_unacked(tx, seq)?;
    tx.prepare_cached("DELETE FROM qis_pending WHERE seq < ?1")?
        .execute([seq])?;
    tx.prepare_cached("UPDATE qis_meta SET value = max(value - ?1, 0) WHERE key = 'stored_bytes'")?
        .execute([bytes])?;
    Ok(Pruned {
        packets: packets as u64,
        bytes: bytes as u64,
        unacked,
    })
}

/// Warn, per consumer, about its unacked deliveries of the packets before
/// `seq`, which are about to be removed; how many there are in all.
fn warn_unacked(tx: &Transaction<'_>, seq: i64) -> rusqlite::Result<u64> {
    let mut stmt = tx.prepare_cached(
        "SELECT c.prefix, c.name, count(*) FROM qis_pending p JOIN qis_consumers c ON c.id = p.consumer_id \
         WHERE p.seq < ?1 GROUP BY p.consumer_id",
    )?;
    let mut rows = stmt.query([seq])?;
    let mut total = 0;
    while let Some(r) = rows.next()? {
        let (prefix, name, unacked): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        tracing::warn!(
            transport = crate::NAME,
            prefix = %prefix,
            consumer = %name,
            unacked,
            "retention removed packets this consumer had fetched but not acked: they will not be redelivered"
        );
        total += unacked as u64;
    }
    Ok(total)
}

fn add(total: &mut Pruned, p: Pruned) {
    total.packets += p.packets;
    total.bytes += p.bytes;
    total.unacked += p.unacked;
}
