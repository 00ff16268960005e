//! Storing packets: one `BEGIN IMMEDIATE` transaction per group of queued
//! deposits, de-duplicated by packet id, retention applied in the same
//! transaction, and under `when_full=refuse` a deposit that would take the
//! store past `max_bytes` refused with `ErrorKind::StoreFull`. Also raw rows
//! for tests ([`InjectRaw`]).

use async_trait::async_trait;
use qis_core::backend::InjectRaw;
use qis_core::{EncodedPacket, Error, ErrorKind, PacketId, Position, Receipt, Result};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::config::{SqliteConfig, WhenFull};
use crate::retention;
use crate::row::Row;
use crate::schema::{now_us, sql_error};
use crate::{SqliteTransport, NAME};

const INSERT: &str = "INSERT INTO qis_outcomes (subject, packet_id, body, deposited_at_us) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (packet_id) DO NOTHING";
const FIND: &str = "SELECT seq, subject FROM qis_outcomes WHERE packet_id = ?1";

/// Store every packet of every request (a slice of packets) in one
/// transaction. Returns the outcome per request (a request refused because
/// the store is full gets [`ErrorKind::StoreFull`] and stores nothing; the
/// others are committed) and whether anything new was stored.
pub(crate) fn store_group(
    conn: &mut Connection,
    config: &SqliteConfig,
    group: &[&[EncodedPacket]],
) -> Result<(Vec<Result<Vec<Receipt>>>, bool)> {
    let ctx = |what: &str| format!("{what} in {}", config.path.display());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error(&ctx("taking the write lock to deposit"), e))?;
    let at = deposit_time(&tx).map_err(|e| sql_error(&ctx("reading the last deposit time"), e))?;
    let max_bytes = i64::try_from(config.retention.max_bytes).unwrap_or(i64::MAX);
    let refuse = config.when_full == WhenFull::Refuse;
    let mut stored_any = false;
    let mut out = Vec::with_capacity(group.len());
    // Each request on its own: one refused for a full store stores nothing
    // and leaves the others as they are. That takes a savepoint per
    // request, which costs a statement journal (a copy of every page the
    // request changes, in a temporary file: the pages written went up by
    // two thirds); a lone request is undone with the whole transaction.
    let savepoints = refuse && group.len() > 1;
    for request in group {
        if savepoints {
            tx.execute_batch("SAVEPOINT qis_request")
                .map_err(|e| sql_error(&ctx("starting a deposit"), e))?;
        }
        let (receipts, added) = store_request(&tx, config, request, at)?;
        if added > 0 {
            add_stored_bytes(&tx, added)
                .map_err(|e| sql_error(&ctx("counting stored bytes"), e))?;
        }
        let full = if refuse && added > 0 {
            store_full(&tx, config, max_bytes)
                .map_err(|e| sql_error(&ctx("applying retention"), e))?
        } else {
            None
        };
        match full {
            Some(e) if !savepoints => {
                tx.rollback()
                    .map_err(|e| sql_error(&ctx("undoing a refused deposit"), e))?;
                return Ok((vec![Err(e)], false));
            }
            Some(e) => {
                tx.execute_batch("ROLLBACK TO qis_request; RELEASE qis_request")
                    .map_err(|e| sql_error(&ctx("undoing a refused deposit"), e))?;
                out.push(Err(e));
            }
            None => {
                if savepoints {
                    tx.execute_batch("RELEASE qis_request")
                        .map_err(|e| sql_error(&ctx("finishing a deposit"), e))?;
                }
                stored_any |= added > 0;
                out.push(Ok(receipts));
            }
        }
    }
    retention::prune(&tx, config).map_err(|e| sql_error(&ctx("applying retention"), e))?;
    tx.commit()
        .map_err(|e| sql_error(&ctx("committing deposits"), e))?;
    Ok((out, stored_any))
}

/// Insert one request's packets; returns its receipts and the body bytes it
/// added.
fn store_request(
    tx: &Transaction<'_>,
    config: &SqliteConfig,
    request: &[EncodedPacket],
    at: i64,
) -> Result<(Vec<Receipt>, i64)> {
    let ctx = |what: &str| format!("{what} in {}", config.path.display());
    let mut insert = tx
        .prepare_cached(INSERT)
        .map_err(|e| sql_error(&ctx("preparing the insert"), e))?;
    let mut find = tx
        .prepare_cached(FIND)
        .map_err(|e| sql_error(&ctx("preparing the duplicate lookup"), e))?;
    let mut added: i64 = 0;
    let mut receipts = Vec::with_capacity(request.len());
    for p in request {
        let id = p.id();
        let n = insert
            .execute(params![
                p.subject().as_str(),
                &id.as_bytes()[..],
                &p.body()[..],
                at
            ])
            .map_err(|e| sql_error(&ctx(&format!("storing packet {id} on {}", p.subject())), e))?;
        let receipt = if n == 1 {
            added += p.body().len() as i64;
            Receipt {
                subject: p.subject().clone(),
                id,
                position: Position::Sequence(tx.last_insert_rowid() as u64),
                duplicate: false,
            }
        } else {
            // The original may be another program's row: read its subject
            // by storage class, as fetches do.
            let (seq, subject) = find
                .query_row([&id.as_bytes()[..]], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        Row::read(0, r.get_ref(1)?, ValueRef::Null).subject(),
                    ))
                })
                .map_err(|e| {
                    sql_error(&ctx(&format!("finding the original of duplicate {id}")), e)
                })?;
            tracing::debug!(subject = %p.subject(), id = %id, seq, "duplicate deposit recognised");
            Receipt {
                subject: subject.unwrap_or_else(|| p.subject().clone()),
                id,
                position: Position::Sequence(seq as u64),
                duplicate: true,
            }
        };
        receipts.push(receipt);
    }
    Ok((receipts, added))
}

/// Under [`WhenFull::Refuse`], with a request's rows in place: prune what
/// may go and, if the bodies still exceed `max_bytes`, the error that
/// refuses the request.
fn store_full(
    tx: &Transaction<'_>,
    config: &SqliteConfig,
    max_bytes: i64,
) -> rusqlite::Result<Option<Error>> {
    if retention::stored_bytes(tx)? <= max_bytes {
        return Ok(None);
    }
    retention::prune(tx, config)?;
    let stored = retention::stored_bytes(tx)?;
    if stored <= max_bytes {
        return Ok(None);
    }
    let holder = retention::Owed::load(tx, i64::MAX)?
        .first(tx, i64::MAX)?
        .map(|(_, name)| name)
        .unwrap_or_else(|| "?".into());
    Ok(Some(Error::new(
        ErrorKind::StoreFull,
        NAME,
        format!(
            "{} is full: its packets take {stored} of max_bytes {max_bytes} bytes and the oldest are still owed to durable consumer {holder:?} (when_full=refuse); nothing of this deposit was stored. Retry once the consumers have caught up (a bridge forwarding to its hub frees the space), delete a consumer that is no longer used (`qis status` shows who holds the store), raise max_bytes, or set when_full=drop_oldest",
            config.path.display()
        ),
    )))
}

/// A row written the way a foreign writer of garbage would: any subject, any
/// body, no check (tests of malformed-message handling). It wakes this
/// handle's waiting fetches and subscriptions like a deposit.
#[async_trait]
impl InjectRaw for SqliteTransport {
    async fn inject_raw(&self, subject: &str, body: &[u8]) -> Result<()> {
        let settings = self.settings();
        let subject = subject.to_string();
        let body = body.to_vec();
        self.worker()
            .call(move |conn| insert_raw(conn, &settings, &subject, &body))
            .await?;
        self.notify_local_change();
        Ok(())
    }
}

/// Store raw bytes without any check; returns the row's seq.
fn insert_raw(
    conn: &mut Connection,
    config: &SqliteConfig,
    subject: &str,
    body: &[u8],
) -> Result<u64> {
    let ctx = |what: &str| format!("{what} in {}", config.path.display());
    let mut run = || -> rusqlite::Result<u64> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = deposit_time(&tx)?;
        let id = PacketId::of(body);
        let n = tx.execute(INSERT, params![subject, &id.as_bytes()[..], body, at])?;
        let seq = if n == 1 {
            add_stored_bytes(&tx, body.len() as i64)?;
            tx.last_insert_rowid()
        } else {
            tx.query_row(FIND, [&id.as_bytes()[..]], |r| r.get(0))?
        };
        tx.commit()?;
        Ok(seq as u64)
    };
    run().map_err(|e| sql_error(&ctx("inserting a raw row"), e))
}

/// Now, but never before the last stored packet: `deposited_at_us` does not
/// decrease with `seq`, so age retention and "since" can walk from the oldest row.
fn deposit_time(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    let last: Option<i64> = tx
        .prepare_cached("SELECT deposited_at_us FROM qis_outcomes ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(now_us().max(last.unwrap_or(0)))
}

fn add_stored_bytes(tx: &Transaction<'_>, n: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE qis_meta SET value = value + ?1 WHERE key = 'stored_bytes'")?
        .execute([n])?;
    Ok(())
}
