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

/// Forget every consumer's deliveries of rows before `seq` (retention
/// removed those rows): runs wholly before it go, a run across it keeps
/// the rows from `seq` on (runs of one consumer never overlap, so none
/// starts at `seq` already).
pub(crate) fn cut_before(tx: &Transaction<'_>, seq: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM qis_pending WHERE last_seq < ?1")?
        .execute([seq])?;
    tx.prepare_cached("UPDATE qis_pending SET seq = ?1 WHERE seq < ?1 AND last_seq >= ?1")?
        .execute([seq])?;
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

/// The run bookkeeping against a model of one entry per delivery in flight:
/// random fetches (with rows the pattern skips), acks, naks, redeliveries
/// and retention cuts, and after each the file's runs must be exactly the
/// model's deliveries, disjoint and in order.
#[cfg(test)]
mod model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use proptest::sample::Index;
    use rusqlite::{Connection, TransactionBehavior};

    use super::*;

    const ID: i64 = 7;

    #[derive(Debug, Clone)]
    enum Op {
        /// New rows after the last; `true` ones are delivered.
        Fresh { rows: Vec<bool>, due: i64 },
        /// Ack these (picked among the rows so far, in flight or not).
        Ack { picks: Vec<Index> },
        /// Nak one (in flight or not) with a new deadline.
        Nak { pick: Index, due: i64 },
        /// A fetch's redeliveries at `now`, at most `max`.
        Redeliver { now: i64, max: usize, due: i64 },
        /// Retention removes every row before the picked one.
        Prune { pick: Index },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (prop::collection::vec(any::<bool>(), 1..12), 0..50i64)
                .prop_map(|(rows, due)| Op::Fresh { rows, due }),
            prop::collection::vec(any::<Index>(), 1..8).prop_map(|picks| Op::Ack { picks }),
            (any::<Index>(), 0..50i64).prop_map(|(pick, due)| Op::Nak { pick, due }),
            (0..60i64, 1..10usize, 0..50i64).prop_map(|(now, max, due)| Op::Redeliver {
                now,
                max,
                due
            }),
            any::<Index>().prop_map(|pick| Op::Prune { pick }),
        ]
    }

    /// seq → (deadline, deliveries), from the file's runs; checks that
    /// they are well formed and disjoint.
    fn in_file(conn: &Connection) -> BTreeMap<i64, (i64, i64)> {
        let mut stmt = conn
            .prepare("SELECT seq, last_seq, due_at_ms, deliveries FROM qis_pending WHERE consumer_id = ?1 ORDER BY seq")
            .unwrap();
        let runs: Vec<(i64, i64, i64, i64)> = stmt
            .query_map([ID], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut out = BTreeMap::new();
        let mut after = i64::MIN;
        for (first, last, due, n) in runs {
            assert!(first <= last, "run {first}..{last} is backwards");
            assert!(first > after, "run {first}..{last} overlaps the one before");
            after = last;
            for s in first..=last {
                out.insert(s, (due, n));
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn runs_hold_exactly_the_deliveries_in_flight(ops in prop::collection::vec(op(), 1..40)) {
            let mut conn = Connection::open_in_memory().unwrap();
            conn.execute_batch(
                "CREATE TABLE qis_pending (consumer_id INTEGER NOT NULL, seq INTEGER NOT NULL,
                 last_seq INTEGER NOT NULL, due_at_ms INTEGER NOT NULL, deliveries INTEGER NOT NULL,
                 PRIMARY KEY (consumer_id, seq)) WITHOUT ROWID;",
            )
            .unwrap();
            let mut model: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            let mut next = 1i64;
            for op in ops {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
                match op {
                    Op::Fresh { rows, due } => {
                        let mut delivered = Vec::new();
                        for d in rows {
                            if d {
                                delivered.push(next);
                                model.insert(next, (due, 1));
                            }
                            next += 1;
                        }
                        for (first, last) in consecutive(delivered) {
                            insert(&tx, ID, Run { first, last, due_at_ms: due, deliveries: 1 }).unwrap();
                        }
                    }
                    Op::Ack { picks } => {
                        let mut seqs: Vec<i64> = picks.iter().map(|i| 1 + i.index(next as usize) as i64).collect();
                        seqs.sort_unstable();
                        seqs.dedup();
                        for s in &seqs {
                            model.remove(s);
                        }
                        for (first, last) in consecutive(seqs) {
                            remove(&tx, ID, first, last).unwrap();
                        }
                    }
                    Op::Nak { pick, due } => {
                        let seq = 1 + pick.index(next as usize) as i64;
                        let had = model.get_mut(&seq).map(|e| e.0 = due).is_some();
                        prop_assert_eq!(set_due(&tx, ID, seq, due).unwrap(), had);
                    }
                    Op::Redeliver { now, max, due: new_due } => {
                        // As a fetch does: due runs in order, each from its
                        // first seq as far as the room left (every row is
                        // there, so each seq taken is delivered).
                        let mut taken: Vec<i64> = Vec::new();
                        for run in super::due(&tx, ID, now, max).unwrap() {
                            let room = max - taken.len();
                            if room == 0 {
                                break;
                            }
                            let upto = run.last.min(run.first + room as i64 - 1);
                            let delivered: Vec<i64> = (run.first..=upto).collect();
                            taken.extend(&delivered);
                            redelivered(&tx, ID, run, upto, &delivered, now + new_due).unwrap();
                        }
                        // The model: the due deliveries, oldest first, up to max.
                        let want: Vec<i64> = model
                            .iter()
                            .filter(|(_, (d, _))| *d <= now)
                            .map(|(s, _)| *s)
                            .take(max)
                            .collect();
                        prop_assert_eq!(&taken, &want);
                        for s in want {
                            let e = model.get_mut(&s).unwrap();
                            *e = (now + new_due, e.1 + 1);
                        }
                    }
                    Op::Prune { pick } => {
                        let cut = 1 + pick.index(next as usize) as i64;
                        model.retain(|s, _| *s >= cut);
                        cut_before(&tx, cut).unwrap();
                    }
                }
                prop_assert_eq!(count(&tx, ID).unwrap(), model.len() as u64);
                tx.commit().unwrap();
                prop_assert_eq!(&in_file(&conn), &model);
            }
        }
    }
}
