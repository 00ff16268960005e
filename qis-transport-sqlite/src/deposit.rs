//! Storing packets: one `BEGIN IMMEDIATE` transaction per group of queued
//! deposits, de-duplicated by packet id, retention applied in the same
//! transaction. Also raw rows for tests ([`InjectRaw`]).

use async_trait::async_trait;
use qis_core::backend::InjectRaw;
use qis_core::{EncodedPacket, PacketId, Position, Receipt, Result, Subject};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::config::SqliteConfig;
use crate::connection::DepositRequest;
use crate::retention;
use crate::row::Row;
use crate::schema::{now_us, sql_error};
use crate::SqliteTransport;

const INSERT: &str = "INSERT INTO qis_outcomes (subject, packet_id, body, deposited_at_us) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (packet_id) DO NOTHING";
const FIND: &str = "SELECT seq, subject FROM qis_outcomes WHERE packet_id = ?1";

/// Store every packet of every request in one transaction. Returns the
/// receipts per request and whether anything new was stored.
pub(crate) fn store_group(
    conn: &mut Connection,
    config: &SqliteConfig,
    group: &[DepositRequest],
) -> Result<(Vec<Vec<Receipt>>, bool)> {
    let ctx = |what: &str| format!("{what} in {}", config.path.display());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error(&ctx("taking the write lock to deposit"), e))?;
    let at = deposit_time(&tx).map_err(|e| sql_error(&ctx("reading the last deposit time"), e))?;
    let mut added_bytes: i64 = 0;
    let mut out = Vec::with_capacity(group.len());
    {
        let mut insert = tx
            .prepare_cached(INSERT)
            .map_err(|e| sql_error(&ctx("preparing the insert"), e))?;
        let mut find = tx
            .prepare_cached(FIND)
            .map_err(|e| sql_error(&ctx("preparing the duplicate lookup"), e))?;
        for request in group {
            let mut receipts = Vec::with_capacity(request.packets.len());
            for p in &request.packets {
                let id = p.id();
                let n = insert
                    .execute(params![
                        p.subject().as_str(),
                        &id.as_bytes()[..],
                        &p.body()[..],
                        at
                    ])
                    .map_err(|e| {
                        sql_error(&ctx(&format!("storing packet {id} on {}", p.subject())), e)
                    })?;
                let receipt = if n == 1 {
                    added_bytes += p.body().len() as i64;
                    Receipt {
                        subject: p.subject().clone(),
                        id,
                        position: Position::Sequence(tx.last_insert_rowid() as u64),
                        duplicate: false,
                    }
                } else {
                    // The original may be another program's row: read its
                    // subject by storage class, as fetches do.
                    let (seq, subject): (i64, Option<Subject>) = find
                        .query_row([&id.as_bytes()[..]], |r| {
                            Ok((
                                r.get(0)?,
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
            out.push(receipts);
        }
    }
    if added_bytes > 0 {
        add_stored_bytes(&tx, added_bytes)
            .map_err(|e| sql_error(&ctx("counting stored bytes"), e))?;
    }
    retention::prune(&tx, config).map_err(|e| sql_error(&ctx("applying retention"), e))?;
    tx.commit()
        .map_err(|e| sql_error(&ctx("committing deposits"), e))?;
    Ok((out, added_bytes > 0))
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

/// The receipts of a single deposit request, for the convenience of callers.
pub(crate) fn single(mut receipts: Vec<Receipt>, p: &EncodedPacket) -> Result<Receipt> {
    receipts.pop().ok_or_else(|| {
        qis_core::Error::new(
            qis_core::ErrorKind::Backend,
            crate::NAME,
            format!(
                "no receipt came back for packet {} on {}",
                p.id(),
                p.subject()
            ),
        )
    })
}
