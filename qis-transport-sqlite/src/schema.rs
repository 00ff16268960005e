//! The file format: tables, columns, types and indexes, and how another
//! program reads and writes it with plain SQLite.
//!
//! # Format version 2
//!
//! This is a stable, versioned format: a file in it has `PRAGMA user_version`
//! = **2** ([`SCHEMA_VERSION`]). A change that a reader or writer of an
//! earlier version would misread gets a new version; QIS refuses to open a
//! file of a version it does not know ([`ErrorKind::Conflict`]) rather than
//! guess. Additions that an older program need not know about (an index, a
//! table of its own) keep the version. A file with `user_version` 0 has no
//! QIS tables yet; the first QIS handle to open it creates them.
//!
//! Version 2 differs from version 1 only in QIS's own bookkeeping:
//! `qis_pending` holds runs of consecutive in-flight rows (`seq` to
//! `last_seq`) instead of a row per delivery. `qis_outcomes`, and so what
//! other programs read and write, is unchanged. A QIS handle opening a
//! version-1 file upgrades it in place, in one transaction (each in-flight
//! delivery becomes a run of one); a QIS build that knows only version 1
//! then refuses the file.
//!
//! The file is in WAL mode (a persistent setting of the file), so every
//! program using it must be on the same machine, with the file on a local
//! file system.
//!
//! ```sql
//! -- one row per stored packet; seq never goes back (AUTOINCREMENT), so a
//! -- consumer's cursor stays meaningful after retention empties the table
//! CREATE TABLE qis_outcomes (
//!     seq             INTEGER PRIMARY KEY AUTOINCREMENT,
//!     subject         TEXT    NOT NULL,          -- e.g. qis.iot.hvac.energy-anomaly
//!     packet_id       BLOB    NOT NULL UNIQUE,   -- SHA-256 of body (32 bytes)
//!     body            BLOB    NOT NULL,          -- the packet's JSON, <= 512 bytes
//!     deposited_at_us INTEGER NOT NULL           -- µs since the Unix epoch, never decreasing with seq
//! );
//! CREATE INDEX qis_outcomes_subject ON qis_outcomes (subject, seq);
//!
//! CREATE TABLE qis_consumers (
//!     id INTEGER PRIMARY KEY, prefix TEXT, name TEXT, pattern TEXT, start TEXT,
//!     cursor INTEGER,          -- every seq <= cursor was examined (delivered or not matching)
//!     ack_wait_ms INTEGER, created_at_us INTEGER, UNIQUE (prefix, name));
//!
//! -- deliveries not yet acked, as runs: every row from seq to last_seq was
//! -- delivered to the consumer deliveries times and may be delivered again
//! -- at due_at_ms; a consumer's runs never overlap
//! CREATE TABLE qis_pending (consumer_id INTEGER, seq INTEGER, last_seq INTEGER,
//!     due_at_ms INTEGER, deliveries INTEGER,
//!     PRIMARY KEY (consumer_id, seq)) WITHOUT ROWID;
//!
//! -- stored_bytes: the sum of length(body), kept in step by every insert and prune;
//! -- dropped: packets pruned while a consumer still owed them (when_full=drop_oldest),
//! --          added on the first such prune
//! CREATE TABLE qis_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
//! ```
//!
//! (Every column of `qis_consumers` and `qis_pending` is `NOT NULL`; the
//! exact statements are in this module's source.)
//!
//! # Reading
//!
//! Any program may read `qis_outcomes` at any time: `body` holds the
//! packet's JSON (SPEC §2), `subject` where it was deposited. A stored
//! packet's `seq` is the [`Position::Sequence`](qis_core::Position) of its
//! receipt. The other tables are QIS's own bookkeeping: read them if you
//! like, never write them.
//!
//! # Depositing from another program
//!
//! A program without QIS deposits a packet with plain SQLite, in one write
//! transaction, exactly like this (named parameters as in Python's
//! `sqlite3`; set a busy timeout, other processes hold the write lock now
//! and then):
//!
//! ```sql
//! BEGIN IMMEDIATE;
//! -- only if PRAGMA user_version is 2 (or 1: its qis_outcomes is the same)
//! INSERT INTO qis_outcomes (subject, packet_id, body, deposited_at_us)
//!     VALUES (:subject, :packet_id, :body,
//!             max(:now_us, coalesce((SELECT max(deposited_at_us) FROM qis_outcomes), 0)))
//!     ON CONFLICT (packet_id) DO NOTHING;
//! -- count the bytes only if the row was stored (not a duplicate)
//! UPDATE qis_meta SET value = value + length(:body)
//!     WHERE key = 'stored_bytes' AND changes() = 1;
//! COMMIT;
//! ```
//!
//! - `subject`: TEXT (UTF-8), a valid subject under the prefix of the QIS
//!   handles that should see it, e.g. the readable subject
//!   `{prefix}.{domain}.{problem_class}` (SPEC §3). A Python `str`.
//! - `packet_id`: BLOB, the 32-byte SHA-256 of exactly the `body` bytes
//!   (Python: `hashlib.sha256(body).digest()`). It is the de-duplication
//!   key: a packet already stored is not stored again.
//! - `body`: the packet as compact JSON (SPEC §2), at most 512 bytes, as a
//!   BLOB (Python `bytes`). TEXT holding the UTF-8 JSON (a Python `str`) is
//!   read too, but `length()` then counts characters, not bytes, for the
//!   size retention.
//! - `deposited_at_us`: microseconds since the Unix epoch, never less than
//!   the newest row's (the `max(…)` above): retention by age and
//!   [`StartPosition::Since`](qis_core::StartPosition) walk the rows in `seq`
//!   order and rely on it.
//! - The `UPDATE` keeps the size retention's counter in step; without it
//!   the store grows past `max_bytes` by what was not counted.
//! - Never update or delete rows: retention is QIS's job.
//!
//! QIS handles see such a row like their own deposits (a waiting `fetch` or
//! live subscription within [`SqliteConfig::poll_interval`](crate::SqliteConfig)).
//!
//! # Rows that break the rules
//!
//! SQLite does not enforce column types, so a row may hold what the format
//! does not allow: a subject stored as a BLOB or as TEXT that is not UTF-8,
//! a body that is a number, a body that is not a valid packet. Such a row is
//! skipped by every consumer and live subscription whose pattern its subject
//! (read as text) matches: logged with `tracing::warn!`, counted in
//! [`DurableConsumer::malformed_skipped`](qis_core::DurableConsumer), passed
//! by the consumer's cursor and never delivered. It never stops a fetch.
//! A subject outside the prefix is simply not seen.
//!
//! This module also opens connections and turns SQLite errors into QIS
//! errors.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qis_core::{Error, ErrorKind};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::config::SqliteConfig;
use crate::NAME;

/// The format version: `PRAGMA user_version` of a file laid out as above.
pub const SCHEMA_VERSION: i64 = 2;

/// `CREATE TABLE IF NOT EXISTS` the in-flight runs' table under `$name`
/// (also the table a format-1 file's rows are copied into).
macro_rules! pending_table {
    ($name:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS ",
            $name,
            " (
    consumer_id INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    due_at_ms   INTEGER NOT NULL,
    deliveries  INTEGER NOT NULL,
    PRIMARY KEY (consumer_id, seq)
) WITHOUT ROWID;
"
        )
    };
}

const DDL: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS qis_outcomes (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    subject         TEXT    NOT NULL,
    packet_id       BLOB    NOT NULL UNIQUE,
    body            BLOB    NOT NULL,
    deposited_at_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS qis_outcomes_subject ON qis_outcomes (subject, seq);
CREATE TABLE IF NOT EXISTS qis_consumers (
    id            INTEGER PRIMARY KEY,
    prefix        TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    pattern       TEXT    NOT NULL,
    start         TEXT    NOT NULL,
    cursor        INTEGER NOT NULL,
    ack_wait_ms   INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    UNIQUE (prefix, name)
);
",
    pending_table!("qis_pending"),
    "CREATE TABLE IF NOT EXISTS qis_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO qis_meta (key, value)
    SELECT 'stored_bytes', coalesce(sum(length(body)), 0) FROM qis_outcomes;
"
);

/// Open a connection on the file, in WAL mode, with the schema in place.
pub(crate) fn open(config: &SqliteConfig) -> qis_core::Result<Connection> {
    let path = &config.path;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            NAME,
            format!(
                "cannot open {}: check that its directory exists and is writable",
                path.display()
            ),
        )
        .with_source(e)
    })?;
    let ctx = |what: &str| format!("{what} on {}", path.display());
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| sql_error(&ctx("setting busy_timeout"), e))?;
    // Switching to WAL needs a moment alone with the file; when several
    // processes create it at once, some get SQLITE_BUSY and retry here.
    let deadline = Instant::now() + config.busy_timeout;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => break,
            Ok(mode) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    NAME,
                    format!(
                        "{} stays in journal mode {mode} instead of WAL: it must be on a local file system that supports shared memory",
                        path.display()
                    ),
                ))
            }
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(sql_error(&ctx("switching to WAL"), e)),
        }
    }
    conn.pragma_update(None, "synchronous", config.synchronous.pragma())
        .map_err(|e| sql_error(&ctx("setting synchronous"), e))?;
    if let Some(bytes) = config.cache_size {
        // Negative: a size in KiB rather than a number of pages.
        let kib = i64::try_from(bytes / 1024).unwrap_or(i64::MAX).max(1);
        conn.pragma_update(None, "cache_size", -kib)
            .map_err(|e| sql_error(&ctx("setting cache_size"), e))?;
    }
    stable_plans(&conn).map_err(|e| sql_error(&ctx("fixing query plans"), e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| sql_error(&ctx("reading the schema version"), e))?;
    if version == 1 {
        upgrade_from_1(&mut conn).map_err(|e| sql_error(&ctx("upgrading from format 1"), e))?;
    } else if version != SCHEMA_VERSION {
        if version != 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                NAME,
                format!(
                    "{} has QIS schema version {version}, this build knows {SCHEMA_VERSION}: use another file or a matching qis version",
                    path.display()
                ),
            ));
        }
        create(&mut conn).map_err(|e| sql_error(&ctx("creating the tables"), e))?;
    }
    Ok(conn)
}

/// Format 1 → 2: each in-flight delivery becomes a run of one. Checked
/// again under the write lock, so processes opening the file at once upgrade
/// it once.
fn upgrade_from_1(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 1 {
        tx.execute_batch(concat!(
            pending_table!("qis_pending_2"),
            "INSERT INTO qis_pending_2 (consumer_id, seq, last_seq, due_at_ms, deliveries)
                 SELECT consumer_id, seq, seq, due_at_ms, deliveries FROM qis_pending;
             DROP TABLE qis_pending;
             ALTER TABLE qis_pending_2 RENAME TO qis_pending;"
        ))?;
        tx.pragma_update(None, "user_version", 2)?;
    }
    tx.commit()
}

/// Turn on the query planner stability guarantee: a prepared statement keeps
/// its plan whatever values are bound. Without it, the bundled SQLite
/// (built with `SQLITE_ENABLE_STAT4`) marks every statement with a bound
/// `LIMIT ?` to be compiled again on each execution — the fetch's two
/// queries were re-prepared on every fetch, 1.5k instructions per delivered
/// packet (callgrind). The transport's queries name their index where it
/// matters (`INDEXED BY`, `NOT INDEXED`), so no plan depends on the values.
pub(crate) fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
}

fn create(conn: &mut Connection) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock at once, so two processes creating the
    // file at the same time queue up instead of failing on a lock upgrade.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 0 {
        tx.execute_batch(DDL)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()
}

/// Whether SQLite gave up waiting for a lock.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// A SQLite error as a QIS error, with a kind a caller can branch on.
pub(crate) fn sql_error(what: &str, e: rusqlite::Error) -> Error {
    let (kind, hint) = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            ErrorKind::Timeout,
            "another process held the write lock for longer than busy_timeout; retry, or raise busy_timeout",
        ),
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::NoLargeFileSupport,
        ) => (
            ErrorKind::Unavailable,
            "the file cannot be read or written; check the disk, its space and permissions",
        ),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => (
            ErrorKind::Backend,
            "the file is not a SQLite database or is damaged; point the transport at another file",
        ),
        _ => (ErrorKind::Backend, "SQLite reported an error"),
    };
    Error::new(kind, NAME, format!("{what}: {hint}")).with_source(e)
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    system_time_us(SystemTime::now())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    now_us() / 1000
}

/// A time as microseconds since the Unix epoch (before it: 0).
pub(crate) fn system_time_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use rusqlite::config::DbConfig;

    /// Plans stay as prepared whatever is bound (see [`super::stable_plans`]).
    #[test]
    fn connections_keep_their_plans() {
        let tmp = qis_conformance::support::TempDir::new("sqlite-qpsg");
        let dir = tmp.path();
        let conn = super::open(&crate::SqliteConfig::new(dir.join("qpsg.db"))).unwrap();
        assert!(conn
            .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
            .unwrap());
        drop(conn);
    }
}
