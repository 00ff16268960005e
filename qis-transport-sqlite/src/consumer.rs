//! Durable consumers, kept in the file.
//!
//! A consumer is a row in `qis_consumers` (prefix, name, pattern, start,
//! cursor, ack wait) plus its in-flight deliveries in `qis_pending`, as runs
//! of consecutive rows sharing a redelivery deadline and a delivery count
//! (the `pending` module). Because all of it is in the file,
//! a consumer opened again by name — by another handle, another process, or
//! after a restart — resumes where it was, and several handles on one
//! consumer share its work: each fetch runs in one `BEGIN IMMEDIATE`
//! transaction, so a packet goes to one of them.
//!
//! Fetch hands out due redeliveries first (oldest first), then new packets
//! after the cursor. A malformed row is logged, counted and passed by the
//! cursor, so it is never delivered.
//!
//! Fetch, ack and nak usually run on the caller's thread (the connection
//! module's side connection) and commit with `synchronous=NORMAL`: a crash
//! of the process loses none of them, a power loss may undo the last ones,
//! and then those packets are delivered again — at least once, never lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use qis_core::backend::{seq_token, token_seq};
use qis_core::{
    Backlog, ConsumerConfig, ConsumerInfo, Delivery, DurableConsumer, Error, ErrorKind, Position,
    Received, Result, StartPosition, Subject, SubjectPattern,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::pending;
use crate::row::Row;
use crate::scan::Scan;
use crate::schema::{duration_ms, now_ms, now_us, sql_error, system_time_us};
use crate::{retention, SqliteConfig, SqliteTransport, NAME};

/// What a handle needs on the connection thread.
#[derive(Debug)]
struct Shared {
    id: i64,
    name: String,
    scan: Scan,
    malformed: AtomicU64,
}

/// A durable consumer handle on a [`SqliteTransport`].
#[derive(Debug)]
pub struct SqliteConsumer {
    transport: SqliteTransport,
    shared: Arc<Shared>,
}

/// The result of one take on the connection thread.
struct Taken {
    deliveries: Vec<Delivery>,
    /// The earliest redelivery deadline of this consumer (ms since the
    /// epoch), looked up only when nothing was taken.
    next_due_ms: Option<i64>,
}

/// An SQL error while `doing` something for consumer `name`.
fn consumer_sql_error(
    doing: &str,
    name: &str,
    settings: &SqliteConfig,
    e: rusqlite::Error,
) -> Error {
    sql_error(
        &format!("{doing} for consumer {name} in {}", settings.path.display()),
        e,
    )
}

/// Consumer `name`'s row was removed from the file while a handle was open.
fn no_longer_in(name: &str, settings: &SqliteConfig) -> Error {
    Error::new(
        ErrorKind::NotFound,
        NAME,
        format!(
            "consumer {name} is no longer in {}",
            settings.path.display()
        ),
    )
}

/// Open (create or resume) a consumer.
pub(crate) async fn open(
    transport: &SqliteTransport,
    config: ConsumerConfig,
) -> Result<SqliteConsumer> {
    let prefix = transport.prefix_subject().clone();
    let scan = Scan::new(&prefix, &config.pattern);
    let settings = transport.settings();
    let name = config.name.clone();
    let id = transport
        .worker()
        .call(move |conn| {
            create_or_resume(conn, &settings, &prefix, &config).map_err(|e| match e {
                Opened::Sql(e) => consumer_sql_error("opening", &config.name, &settings, e),
                Opened::Conflict(existing) => Error::new(
                    ErrorKind::Conflict,
                    NAME,
                    format!(
                        "consumer {} exists with pattern {existing}, not {}: use another name",
                        config.name, config.pattern
                    ),
                ),
            })
        })
        .await?;
    tracing::debug!(consumer = %name, id, "consumer opened");
    Ok(SqliteConsumer {
        transport: transport.clone(),
        shared: Arc::new(Shared {
            id,
            name,
            scan,
            malformed: AtomicU64::new(0),
        }),
    })
}

enum Opened {
    Sql(rusqlite::Error),
    Conflict(String),
}

impl From<rusqlite::Error> for Opened {
    fn from(e: rusqlite::Error) -> Self {
        Opened::Sql(e)
    }
}

fn create_or_resume(
    conn: &mut Connection,
    settings: &crate::SqliteConfig,
    prefix: &Subject,
    config: &ConsumerConfig,
) -> Result<i64, Opened> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, pattern FROM qis_consumers WHERE prefix = ?1 AND name = ?2",
            params![prefix.as_str(), config.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let ack_wait_ms = duration_ms(config.ack_wait).max(1);
    let id = match existing {
        Some((_, pattern)) if pattern != config.pattern.as_str() => {
            return Err(Opened::Conflict(pattern))
        }
        Some((id, _)) => {
            tx.execute(
                "UPDATE qis_consumers SET ack_wait_ms = ?1 WHERE id = ?2",
                params![ack_wait_ms, id],
            )?;
            id
        }
        None => {
            retention::prune(&tx, settings)?;
            let newest: i64 =
                tx.query_row("SELECT coalesce(max(seq), 0) FROM qis_outcomes", [], |r| {
                    r.get(0)
                })?;
            let (start, cursor) = match config.start {
                StartPosition::All => ("all".to_string(), 0),
                StartPosition::New => ("new".to_string(), newest),
                StartPosition::Since(t) => {
                    let us = system_time_us(t);
                    let first: Option<i64> = tx
                        .query_row(
                            "SELECT seq FROM qis_outcomes WHERE deposited_at_us >= ?1 ORDER BY seq LIMIT 1",
                            [us],
                            |r| r.get(0),
                        )
                        .optional()?;
                    (format!("since:{us}"), first.map_or(newest, |s| s - 1))
                }
            };
            tx.execute(
                "INSERT INTO qis_consumers (prefix, name, pattern, start, cursor, ack_wait_ms, created_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![prefix.as_str(), config.name, config.pattern.as_str(), start, cursor, ack_wait_ms, now_us()],
            )?;
            tx.last_insert_rowid()
        }
    };
    tx.commit()?;
    Ok(id)
}

impl SqliteConsumer {
    /// Take what is there now.
    async fn take(&self, max: usize, look_first: bool) -> Result<Taken> {
        let shared = self.shared.clone();
        let settings = self.transport.settings();
        let taken = {
            let (shared, settings) = (shared.clone(), settings.clone());
            self.transport
                .worker()
                .quick(max, move |conn| {
                    take(conn, &shared, &settings, max, look_first)
                })
                .await?
        };
        taken.map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => no_longer_in(&shared.name, &settings),
            e => consumer_sql_error("fetching", &shared.name, &settings, e),
        })
    }
}

/// Hand out due redeliveries, then new packets. With `look_first`, look
/// without the write lock first: most wake-ups of a waiting fetch find
/// nothing for this consumer, and then no other writer is held up.
fn take(
    conn: &mut Connection,
    c: &Shared,
    settings: &crate::SqliteConfig,
    max: usize,
    look_first: bool,
) -> rusqlite::Result<Taken> {
    let now = now_ms();
    if look_first {
        let tx = conn.transaction()?;
        let (cursor, next_due) = state(&tx, c.id)?;
        let due = next_due.is_some_and(|d| d <= now);
        if !due && !c.scan.any_after(&tx, cursor)? {
            return Ok(Taken {
                deliveries: Vec::new(),
                next_due_ms: next_due,
            });
        }
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    retention::prune(&tx, settings)?;
    let (cursor, ack_wait_ms): (i64, i64) = match tx
        .prepare_cached("SELECT cursor, ack_wait_ms FROM qis_consumers WHERE id = ?1")?
        .query_row([c.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
    {
        Some(v) => v,
        None => return Err(rusqlite::Error::QueryReturnedNoRows),
    };
    let due_at = now.saturating_add(ack_wait_ms);
    let mut out = Vec::with_capacity(max.min(1024));

    // Redeliveries first, oldest packet first: each due run from its
    // first seq, as far as `max` allows.
    for run in pending::due(&tx, c.id, now, max)? {
        let room = max.saturating_sub(out.len());
        if room == 0 {
            break;
        }
        let upto = run.last.min(run.first.saturating_add(room as i64 - 1));
        let mut delivered = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, subject, body, packet_id FROM qis_outcomes \
                 WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
            )?;
            let mut rows = stmt.query(params![run.first, upto])?;
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                // A row pruned by retention meanwhile is simply not there;
                // one that no longer decodes leaves the run too.
                let row =
                    Row::read(seq, r.get_ref(1)?, r.get_ref(2)?).with_stored_id(r.get_ref(3)?);
                if let Some(received) = decode(&row) {
                    out.push(delivery(received, seq, run.deliveries + 1));
                    delivered.push(seq);
                }
            }
        }
        pending::redelivered(&tx, c.id, run, upto, &delivered, due_at)?;
    }

    // Then new packets after the cursor, straight into `out` (no second
    // vector of deliveries per fetch).
    let want = max.saturating_sub(out.len());
    let first_fresh = out.len();
    let new_cursor = c.scan.walk(&tx, cursor, want, |row| match decode(&row) {
        Some(received) => {
            out.push(delivery(received, row.seq, 1));
            true
        }
        None => {
            c.malformed.fetch_add(1, Ordering::Relaxed);
            false
        }
    })?;
    // One run per stretch of consecutive rows (every delivery made above
    // carries its row seq; all are after the cursor, so in no run yet).
    let fresh = out[first_fresh..].iter().filter_map(|d| match d.position {
        Position::Sequence(seq) => Some(seq as i64),
        _ => None,
    });
    for (first, last) in pending::consecutive(fresh) {
        let run = pending::Run {
            first,
            last,
            due_at_ms: due_at,
            deliveries: 1,
        };
        pending::insert(&tx, c.id, run)?;
    }
    if new_cursor != cursor {
        tx.prepare_cached("UPDATE qis_consumers SET cursor = ?1 WHERE id = ?2")?
            .execute(params![new_cursor, c.id])?;
    }
    // Only a fetch that got nothing waits, and only then for the earliest
    // redelivery: skip the look otherwise.
    let next_due_ms = if out.is_empty() {
        next_due(&tx, c.id)?
    } else {
        None
    };
    tx.commit()?;
    Ok(Taken {
        deliveries: out,
        next_due_ms,
    })
}

/// What consumer `id` still has to do: matching rows after its cursor, and
/// rows delivered and not acked. `None` when it is gone.
fn backlog_of(tx: &Transaction<'_>, id: i64, scan: &Scan) -> rusqlite::Result<Option<Backlog>> {
    let cursor: Option<i64> = tx
        .prepare_cached("SELECT cursor FROM qis_consumers WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let waiting = scan.count_after(tx, cursor)?;
    let unacked = pending::count(tx, id)?;
    Ok(Some(Backlog { waiting, unacked }))
}

/// Every consumer under `prefix`, by name, with its backlog.
pub(crate) fn list(conn: &mut Connection, prefix: &Subject) -> rusqlite::Result<Vec<ConsumerInfo>> {
    let tx = conn.transaction()?;
    let rows: Vec<(i64, String, String)> = tx
        .prepare_cached(
            "SELECT id, name, pattern FROM qis_consumers WHERE prefix = ?1 ORDER BY name",
        )?
        .query_map([prefix.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, name, pattern) in rows {
        // A pattern another version wrote and this one cannot read: count
        // every row under the prefix.
        let scan_pattern =
            SubjectPattern::new(pattern.as_str()).unwrap_or_else(|_| prefix.all_below());
        let scan = Scan::new(prefix, &scan_pattern);
        if let Some(backlog) = backlog_of(&tx, id, &scan)? {
            out.push(ConsumerInfo {
                name,
                pattern: Some(pattern),
                backlog,
            });
        }
    }
    Ok(out)
}

/// Remove consumer `name` under `prefix` and its in-flight deliveries.
/// Whether it existed.
pub(crate) fn delete(
    conn: &mut Connection,
    prefix: &Subject,
    name: &str,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id: Option<i64> = tx
        .query_row(
            "SELECT id FROM qis_consumers WHERE prefix = ?1 AND name = ?2",
            params![prefix.as_str(), name],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = id {
        tx.execute("DELETE FROM qis_pending WHERE consumer_id = ?1", [id])?;
        tx.execute("DELETE FROM qis_consumers WHERE id = ?1", [id])?;
    }
    tx.commit()?;
    Ok(id.is_some())
}

fn state(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<(i64, Option<i64>)> {
    let cursor: i64 = tx
        .prepare_cached("SELECT cursor FROM qis_consumers WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    Ok((cursor, next_due(tx, id)?))
}

fn next_due(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached("SELECT min(due_at_ms) FROM qis_pending WHERE consumer_id = ?1")?
        .query_row([id], |r| r.get(0))
}

/// Decode a stored row; `None` (logged) when it is not a valid packet.
fn decode(row: &Row) -> Option<Received> {
    match row.decode() {
        Ok(received) => Some(received),
        Err(error) => {
            tracing::warn!(subject = %row.subject, seq = row.seq, %error, "skipping malformed stored packet; it will not be delivered");
            None
        }
    }
}

fn delivery(received: Received, seq: i64, n: i64) -> Delivery {
    Delivery {
        received,
        position: Position::Sequence(seq as u64),
        delivery_count: u32::try_from(n).unwrap_or(u32::MAX),
        token: seq_token(seq as u64),
    }
}

/// Sorted, de-duplicated `seqs` as runs of consecutive values `(first, last)`.
fn runs(mut seqs: Vec<i64>) -> Vec<(i64, i64)> {
    seqs.sort_unstable();
    seqs.dedup();
    pending::consecutive(seqs)
}

/// The row seq in a delivery's token.
fn row_seq(d: &Delivery) -> Result<i64> {
    let seq = token_seq(NAME, d)?;
    i64::try_from(seq).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            NAME,
            format!("packet {} has no row seq {seq} in this file", d.id()),
        )
    })
}

#[async_trait]
impl DurableConsumer for SqliteConsumer {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        // Polling the file for other processes' commits starts only once this
        // fetch has to wait; a commit between the take and then still wakes
        // it (the watch thread compares with what it saw before it paused).
        let mut interest = None;
        loop {
            let mut changes = self.transport.changes();
            let taken = self.take(max, interest.is_some()).await?;
            if !taken.deliveries.is_empty() {
                return Ok(taken.deliveries);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            if interest.is_none() {
                interest = Some(self.transport.watch_interest());
            }
            let mut until = deadline;
            if let Some(due) = taken.next_due_ms {
                let in_ms = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                until = until.min(now + Duration::from_millis(in_ms + 1));
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let seqs = deliveries.iter().map(row_seq).collect::<Result<Vec<_>>>()?;
        // A fetched batch is mostly consecutive rows, one in-flight run:
        // acking all of it deletes that run in one statement.
        let runs = runs(seqs);
        let id = self.shared.id;
        self.transport
            .worker()
            .quick(deliveries.len(), move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for &(first, last) in &runs {
                    pending::remove(&tx, id, first, last)?;
                }
                tx.commit()
            })
            .await?
            .map_err(|e| {
                consumer_sql_error("acking", &self.shared.name, &self.transport.settings(), e)
            })
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let seq = row_seq(delivery)?;
        let id = self.shared.id;
        let due = now_ms().saturating_add(duration_ms(delay));
        self.transport
            .worker()
            .quick(1, move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                pending::set_due(&tx, id, seq, due)?;
                tx.commit()
            })
            .await?
            .map_err(|e| {
                consumer_sql_error("nak", &self.shared.name, &self.transport.settings(), e)
            })?;
        self.transport.notify_local_change();
        Ok(())
    }

    fn malformed_skipped(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    /// Matching rows after the cursor (malformed ones included, as only
    /// reading tells them apart) and deliveries not acked yet, counted in the
    /// file: exact, and the same from every handle and process.
    async fn backlog(&self) -> Result<Backlog> {
        let shared = self.shared.clone();
        let settings = self.transport.settings();
        self.transport
            .worker()
            .call(move |conn| {
                let found = conn
                    .transaction()
                    .and_then(|tx| backlog_of(&tx, shared.id, &shared.scan))
                    .map_err(|e| {
                        sql_error(
                            &format!(
                                "counting the backlog of consumer {} in {}",
                                shared.name,
                                settings.path.display()
                            ),
                            e,
                        )
                    })?;
                found.ok_or_else(|| no_longer_in(&shared.name, &settings))
            })
            .await
    }

    async fn close(&self) -> Result<()> {
        // Acks are committed before `ack` returns (module docs: on power
        // loss the last of them may be undone): nothing is pending here.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn acked_seqs_become_runs() {
        assert_eq!(runs(vec![]), []);
        assert_eq!(runs(vec![7]), [(7, 7)]);
        assert_eq!(
            runs(vec![5, 3, 4, 9, 10, 4, 12]),
            [(3, 5), (9, 10), (12, 12)]
        );
    }
}
