//! A consumer's in-flight deliveries, kept as runs of consecutive row seqs.
//!
//! A row of `qis_pending` is a *run*: every row seq from `seq` to `last_seq`
//! was delivered to the consumer and is not acked yet, and all of them share
//! one redelivery deadline and one delivery count. A consumer's runs never
//! overlap. A fetch of new packets delivers consecutive rows (when its
//! pattern takes every subject in that stretch of the file), so it writes
//! one run, and acking that batch deletes it: two B-tree writes per batch
//! instead of two per packet, the largest cost of a fetch and ack in the
//! `sqlite` bench (profiled with callgrind: 21.2k instructions a packet
//! with a row per delivery, 15.6k with runs). A partial ack or a nak splits
//! a run; a pattern that skips rows makes shorter runs (at worst one per
//! delivery, as before runs).

use rusqlite::{params, OptionalExtension, Transaction};

/// One run of in-flight deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub first: i64,
    pub last: i64,
    pub due_at_ms: i64,
    pub deliveries: i64,
}

/// Increasing `seqs` as runs of consecutive values `(first, last)`.
pub(crate) fn consecutive(seqs: impl IntoIterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// What is left of `run` without the seqs `first..=last`: up to two runs
/// with its deadline and count (none when it is all inside).
pub(crate) fn without(run: Run, first: i64, last: i64) -> impl Iterator<Item = Run> {
    let before = (run.first < first).then(|| Run {
        last: run.last.min(first - 1),
        ..run
    });
    let after = (run.last > last).then(|| Run {
        first: run.first.max(last + 1),
        ..run
    });
    before.into_iter().chain(after)
}

/// Write `run` for consumer `id`.
pub(crate) fn insert(tx: &Transaction<'_>, id: i64, run: Run) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO qis_pending (consumer_id, seq, last_seq, due_at_ms, deliveries) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, run.first, run.last, run.due_at_ms, run.deliveries])
    .map(|_| ())
}

fn delete(tx: &Transaction<'_>, id: i64, first: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM qis_pending WHERE consumer_id = ?1 AND seq = ?2")?
        .execute(params![id, first])
        .map(|_| ())
}

fn run_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        first: r.get(0)?,
        last: r.get(1)?,
        due_at_ms: r.get(2)?,
        deliveries: r.get(3)?,
    })
}

/// Consumer `id`'s runs holding any seq of `first..=last`, in seq order:
/// the run starting at or before `first` (if it reaches it) and those
/// starting inside.
fn overlapping(tx: &Transaction<'_>, id: i64, first: i64, last: i64) -> rusqlite::Result<Vec<Run>> {
    let start = tx
        .prepare_cached("SELECT max(seq) FROM qis_pending WHERE consumer_id = ?1 AND seq <= ?2")?
        .query_row(params![id, first], |r| r.get::<_, Option<i64>>(0))?
        .unwrap_or(first);
    tx.prepare_cached(
        "SELECT seq, last_seq, due_at_ms, deliveries FROM qis_pending \
         WHERE consumer_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
    )?
    .query_map(params![id, start, last], run_of)?
    .filter(|r| !matches!(r, Ok(run) if run.last < first))
    .collect()
}

/// Remove the seqs `first..=last` from consumer `id`'s runs (an ack): a
/// run that is exactly that is deleted in one statement; otherwise every
/// run they touch is cut.
pub(crate) fn remove(tx: &Transaction<'_>, id: i64, first: i64, last: i64) -> rusqlite::Result<()> {
    let exact = tx
        .prepare_cached(
            "DELETE FROM qis_pending WHERE consumer_id = ?1 AND seq = ?2 AND last_seq = ?3",
        )?
        .execute(params![id, first, last])?;
    if exact == 1 {
        return Ok(());
    }
    for run in overlapping(tx, id, first, last)? {
        delete(tx, id, run.first)?;
        for rest in without(run, first, last) {
            insert(tx, id, rest)?;
        }
    }
    Ok(())
}

/// Give `seq`, if consumer `id` has it in flight, the deadline `due_at_ms`
/// (a nak): its run is split around it. Whether it was in flight.
pub(crate) fn set_due(
    tx: &Transaction<'_>,
    id: i64,
    seq: i64,
    due_at_ms: i64,
) -> rusqlite::Result<bool> {
    let run = tx
        .prepare_cached(
            "SELECT seq, last_seq, due_at_ms, deliveries FROM qis_pending \
             WHERE consumer_id = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![id, seq], run_of)
        .optional()?;
    let Some(run) = run.filter(|r| r.last >= seq) else {
        return Ok(false);
    };
    delete(tx, id, run.first)?;
    for rest in without(run, seq, seq) {
        insert(tx, id, rest)?;
    }
    insert(
        tx,
        id,
        Run {
            first: seq,
            last: seq,
            due_at_ms,
            ..run
        },
    )?;
    Ok(true)
}

/// Consumer `id`'s runs due by `now_ms`, oldest seq first, at most `max`.
pub(crate) fn due(
    tx: &Transaction<'_>,
    id: i64,
    now_ms: i64,
    max: usize,
) -> rusqlite::Result<Vec<Run>> {
    tx.prepare_cached(
        "SELECT seq, last_seq, due_at_ms, deliveries FROM qis_pending \
         WHERE consumer_id = ?1 AND due_at_ms <= ?2 ORDER BY seq LIMIT ?3",
    )?
    .query_map(params![id, now_ms, max as i64], run_of)?
    .collect()
}

/// Replace `run` (as read): it was redelivered from its first seq up to
/// `upto`, of which the seqs `delivered` (increasing) still had a packet.
/// They get the deadline `due_at_ms` and one delivery more; the seqs after
/// `upto` keep theirs; those without a packet leave.
pub(crate) fn redelivered(
    tx: &Transaction<'_>,
    id: i64,
    run: Run,
    upto: i64,
    delivered: &[i64],
    due_at_ms: i64,
) -> rusqlite::Result<()> {
    delete(tx, id, run.first)?;
    for (first, last) in consecutive(delivered.iter().copied()) {
        insert(
            tx,
            id,
            Run {
                first,
                last,
                due_at_ms,
                deliveries: run.deliveries + 1,
            },
        )?;
    }
    if upto < run.last {
        insert(
            tx,
            id,
            Run {
                first: upto + 1,
                ..run
            },
        )?;
    }
    Ok(())
}

/// How many deliveries consumer `id` has in flight.
pub(crate) fn count(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<u64> {
    tx.prepare_cached(
        "SELECT coalesce(sum(last_seq - seq + 1), 0) FROM qis_pending WHERE consumer_id = ?1",
    )?
    .query_row([id], |r| r.get::<_, i64>(0))
    .map(|n| n.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: i64, last: i64) -> Run {
        Run {
            first,
            last,
            due_at_ms: 7,
            deliveries: 2,
        }
    }

    #[test]
    fn seqs_become_runs() {
        assert_eq!(consecutive([]), []);
        assert_eq!(consecutive([7]), [(7, 7)]);
        assert_eq!(
            consecutive([3, 4, 5, 9, 10, 12]),
            [(3, 5), (9, 10), (12, 12)]
        );
    }

    #[test]
    fn cutting_a_run_keeps_what_is_outside() {
        let cut = |first, last| without(run(10, 20), first, last).collect::<Vec<_>>();
        assert_eq!(cut(10, 20), []);
        assert_eq!(cut(0, 30), []);
        assert_eq!(cut(10, 12), [run(13, 20)]);
        assert_eq!(cut(18, 25), [run(10, 17)]);
        assert_eq!(cut(14, 15), [run(10, 13), run(16, 20)]);
        assert_eq!(cut(15, 15), [run(10, 14), run(16, 20)]);
        // Outside it entirely: the run stays whole.
        assert_eq!(cut(21, 30), [run(10, 20)]);
        assert_eq!(cut(0, 9), [run(10, 20)]);
    }
}
