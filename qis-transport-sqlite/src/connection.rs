//! The connection thread: each transport handle owns one SQLite connection on
//! a dedicated OS thread and talks to it through a channel.
//!
//! Why a thread and not `spawn_blocking`: every SQLite call may block (disk
//! I/O, fsync, waiting up to `busy_timeout` for another process's write
//! lock), and a `rusqlite::Connection` is `Send` but not `Sync`. One owner
//! thread keeps the connection and its prepared-statement cache in one place,
//! never ties up tokio's blocking pool for as long as a lock wait, and sees
//! the whole queue: deposits queued by many tasks while a commit runs are
//! committed together in the next transaction (group commit), which is what
//! makes many small concurrent deposits cheap.
//!
//! # The side connection
//!
//! A round trip to the thread costs two thread wake-ups, and on a small or
//! virtual machine whose other core is idle a wake-up costs more than a
//! consumer's fetch of a hundred rows (measured: fetch + ack ran at 0.4 of
//! plain SQLite plus decoding, the instructions at 0.9). So consumer calls
//! (fetch, ack, nak: [`Worker::quick`]), and deposits when the handle is
//! configured with `synchronous=NORMAL` ([`Worker::deposit`]), first try a
//! second connection, kept behind a mutex, on the caller's own thread. It
//! never waits:
//!
//! - not for the mutex (another task is using it: the call goes to the
//!   thread);
//! - not for another writer's lock (its busy timeout is zero; `SQLITE_BUSY`
//!   sends the call to the thread, which waits up to `busy_timeout`; every
//!   such call writes in one transaction that takes the lock first, so the
//!   failed try changed nothing);
//! - not for the disk: it commits with `synchronous=NORMAL` (deposits go
//!   there only when that is the configuration; for consumer bookkeeping it
//!   is always so: a power loss may undo the last cursor moves and acks, and
//!   those packets are delivered again, as a JetStream server that has not
//!   synced yet would), and it never runs a checkpoint itself: when its
//!   commits have grown the log past SQLite's usual 1,000 pages it asks the
//!   thread for a passive one.
//!
//! A call on it holds the caller's thread for as long as its SQL takes,
//! about a microsecond per packet; calls on more than [`QUICK_MAX`] packets
//! go to the thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, TryLockError};

use qis_core::{EncodedPacket, Error, ErrorKind, Receipt, Result};
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

use crate::config::{SqliteConfig, Synchronous};
use crate::{deposit, schema, NAME};

/// Most packets committed in one group transaction.
const MAX_GROUP_PACKETS: usize = 8192;

/// Most packets a call on the side connection may take (a fetch, an ack, a
/// deposit): a few milliseconds of the caller's thread at most.
const QUICK_MAX: usize = 1024;

/// Log size (pages) past which the side connection asks for a checkpoint:
/// SQLite's own `wal_autocheckpoint` default.
const CHECKPOINT_PAGES: i32 = 1000;

type Call = Box<dyn FnOnce(&mut Connection) + Send>;

/// Deposits waiting for their commit.
pub(crate) struct DepositRequest {
    pub(crate) packets: Vec<EncodedPacket>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Receipt>>>,
}

enum Request {
    Deposit(DepositRequest),
    Call(Call),
    Stop(oneshot::Sender<()>),
}

/// The handle on the connection thread.
#[derive(Debug)]
pub(crate) struct Worker {
    tx: mpsc::Sender<Request>,
    /// Set by the thread when it stops taking requests.
    stopped: Arc<AtomicBool>,
    /// The side connection (module docs); `None` once closed.
    side: Mutex<Option<Connection>>,
    /// The side connection asked for a checkpoint that has not run yet.
    checkpointing: Arc<AtomicBool>,
    /// With `synchronous=NORMAL`, deposits may go on the side connection:
    /// its configuration.
    side_deposits: Option<Arc<SqliteConfig>>,
    /// Bumped after every commit that stored packets.
    changes: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

fn closed() -> Error {
    Error::closed(NAME)
}

impl Worker {
    /// Start the thread and open the connection on it (creating the schema
    /// if needed). `changes` is bumped after every commit that stored packets.
    pub(crate) async fn spawn(
        config: Arc<SqliteConfig>,
        changes: Arc<watch::Sender<u64>>,
    ) -> Result<Worker> {
        let (tx, rx) = mpsc::channel::<Request>();
        let side_deposits = (config.synchronous == Synchronous::Normal).then(|| config.clone());
        let worker_changes = changes.clone();
        let side_tx = tx.clone();
        let checkpointing = Arc::new(AtomicBool::new(false));
        let side_checkpointing = checkpointing.clone();
        let (opened_tx, opened_rx) = oneshot::channel();
        let stopped = Arc::new(AtomicBool::new(false));
        let thread_stopped = stopped.clone();
        std::thread::Builder::new()
            .name("qis-sqlite".into())
            .spawn(move || {
                let opened = schema::open(&config).and_then(|c| {
                    let side = open_side(&config, &side_tx, side_checkpointing)?;
                    Ok((c, side))
                });
                let conn = match opened {
                    Ok((c, side)) => {
                        let _ = opened_tx.send(Ok(side));
                        c
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                run(conn, &config, &changes, rx, &thread_stopped);
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    NAME,
                    "cannot start the connection thread",
                )
                .with_source(e)
            })?;
        let side = opened_rx.await.map_err(|_| {
            Error::new(
                ErrorKind::Backend,
                NAME,
                "the connection thread stopped while opening the file",
            )
        })??;
        Ok(Worker {
            tx,
            stopped,
            side: Mutex::new(Some(side)),
            checkpointing,
            side_deposits,
            changes: worker_changes,
        })
    }

    /// Run `f`, a call on up to `packets` packets, on the side connection, on
    /// this thread, when it is free and no other writer holds the lock; else
    /// (or past [`QUICK_MAX`] packets) on the connection thread (module
    /// docs). `f` may run twice (busy, then on the thread): it must write in
    /// one transaction that takes the write lock before it reads (`BEGIN
    /// IMMEDIATE`, or a single statement), so a busy try changed nothing.
    /// The outer error is the handle's (closed, lost), the inner one
    /// SQLite's.
    pub(crate) async fn quick<T, F>(&self, packets: usize, f: F) -> Result<rusqlite::Result<T>>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let busy = |r: &rusqlite::Result<T>| matches!(r, Err(e) if schema::is_busy(e));
        if let Some(done) = self.on_side(packets, &f, busy) {
            return done;
        }
        self.call(move |conn| Ok(f(conn))).await
    }

    /// Run `f` on the connection thread and wait for its result.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let call: Call = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.tx.send(Request::Call(call)).map_err(|_| closed())?;
        rx.await.map_err(|_| self.lost())?
    }

    /// Run `f` on the side connection if it may take a call on `packets`
    /// packets now; `None` if not, or if `busy` says it found the write lock
    /// taken (then it changed nothing).
    fn on_side<R>(
        &self,
        packets: usize,
        f: impl FnOnce(&mut Connection) -> R,
        busy: impl FnOnce(&R) -> bool,
    ) -> Option<Result<R>> {
        // While a checkpoint is pending, calls queue up behind it: the
        // first one then writes on the thread's connection right after the
        // checkpoint, which is what lets SQLite start the log over. Were
        // the side connection to go on writing meanwhile, the log would
        // never be wholly checkpointed when a write begins, and would grow.
        if packets > QUICK_MAX || self.checkpointing.load(Ordering::Acquire) {
            return None;
        }
        let mut guard = match self.side.try_lock() {
            Ok(g) => g,
            // A panic in an earlier call: its transaction was rolled back
            // when it unwound, the connection is fine.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let conn = guard.as_mut()?;
        // As on the thread, a panic is an error, not the caller's panic.
        match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(r) if busy(&r) => {
                tracing::trace!("write lock taken: the call waits on the connection thread");
                None
            }
            Ok(done) => Some(Ok(done)),
            Err(_) => Some(Err(Error::new(
                ErrorKind::Backend,
                NAME,
                "a call on the side connection panicked; the operation may or may not have been applied",
            ))),
        }
    }

    /// Store packets. With `synchronous=NORMAL` they go on the side
    /// connection when it is free (module docs); else (and when another
    /// writer holds the lock) to the thread, where queued deposits are
    /// committed together.
    pub(crate) async fn deposit(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        if let Some(config) = &self.side_deposits {
            let done = self.on_side(
                packets.len(),
                |conn| deposit::store_group(conn, config, &[packets]),
                // Only a taken lock makes the write fail with a timeout.
                |r| matches!(r, Err(e) if e.kind() == ErrorKind::Timeout),
            );
            match done {
                Some(Ok(Ok((mut outcomes, stored_any)))) => {
                    if stored_any {
                        bump(&self.changes);
                    }
                    return outcomes.pop().unwrap_or_else(|| Ok(Vec::new()));
                }
                Some(Ok(Err(e)) | Err(e)) => return Err(e),
                None => {}
            }
        }
        let (reply, rx) = oneshot::channel();
        let packets = packets.to_vec();
        self.tx
            .send(Request::Deposit(DepositRequest { packets, reply }))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| self.lost())?
    }

    fn lost(&self) -> Error {
        if self.stopped.load(Ordering::Acquire) {
            return closed();
        }
        Error::new(
            ErrorKind::Backend,
            NAME,
            "the connection thread dropped the request (it panicked); the operation may or may not have been applied",
        )
    }

    /// Finish every queued request, close the connections and end the thread.
    pub(crate) async fn stop(&self) {
        // Waits for a call running on it, which never waits itself.
        let side = match self.side.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        drop(side);
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Stop(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Tell the handle's waiting fetches and subscriptions that packets were
/// stored.
pub(crate) fn bump(changes: &watch::Sender<u64>) {
    changes.send_modify(|v| *v = v.wrapping_add(1));
}

/// Open the side connection (module docs). Its log hook asks the connection
/// thread, through `tx`, for a passive checkpoint once the log is past
/// [`CHECKPOINT_PAGES`], and sets `asked` until it has run; it replaces the
/// connection's own automatic checkpoints, which would wait for the disk on
/// the caller's thread.
fn open_side(
    config: &SqliteConfig,
    tx: &mpsc::Sender<Request>,
    asked: Arc<AtomicBool>,
) -> Result<Connection> {
    let mut conn = schema::open(config)?;
    let ctx = |e| {
        schema::sql_error(
            &format!(
                "setting up the side connection on {}",
                config.path.display()
            ),
            e,
        )
    };
    conn.busy_timeout(std::time::Duration::ZERO).map_err(ctx)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(ctx)?;
    let tx = tx.clone();
    conn.wal_hook(Some(move |_: &mut Wal, pages: i32| {
        if pages >= CHECKPOINT_PAGES && !asked.swap(true, Ordering::AcqRel) {
            let asked = asked.clone();
            let call: Call = Box::new(move |conn| {
                match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
                    Ok(_) => {}
                    // Another connection was checkpointing: it does the work.
                    Err(error) if schema::is_busy(&error) => {
                        tracing::debug!(%error, "checkpoint skipped: another one is running");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "checkpoint asked for by the side connection failed; the next commit asks again");
                    }
                }
                asked.store(false, Ordering::Release);
            });
            // Closed meanwhile: nothing to checkpoint for.
            let _ = tx.send(Request::Call(call));
        }
        Ok(())
    }))
    .map_err(ctx)?;
    Ok(conn)
}

fn run(
    mut conn: Connection,
    config: &SqliteConfig,
    changes: &watch::Sender<u64>,
    rx: mpsc::Receiver<Request>,
    stopped: &AtomicBool,
) {
    let mut carried: Option<Request> = None;
    let mut stop_reply = None;
    loop {
        let request = match carried.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        match request {
            Request::Call(call) => {
                // A panic drops the reply, so the caller gets an error; the
                // thread and its connection carry on.
                let _ = catch_unwind(AssertUnwindSafe(|| call(&mut conn)));
            }
            Request::Stop(reply) => {
                stopped.store(true, Ordering::Release);
                stop_reply = Some(reply);
                break;
            }
            Request::Deposit(first) => {
                let mut group = vec![first];
                let mut count = group[0].packets.len();
                while count < MAX_GROUP_PACKETS {
                    match rx.try_recv() {
                        Ok(Request::Deposit(d)) => {
                            count += d.packets.len();
                            group.push(d);
                        }
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&mut conn, config, changes, group);
            }
        }
    }
    stopped.store(true, Ordering::Release);
    drop(rx);
    drop(conn);
    if let Some(reply) = stop_reply {
        let _ = reply.send(());
    }
}

fn commit_group(
    conn: &mut Connection,
    config: &SqliteConfig,
    changes: &watch::Sender<u64>,
    group: Vec<DepositRequest>,
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let packets: Vec<&[EncodedPacket]> = group.iter().map(|r| r.packets.as_slice()).collect();
        deposit::store_group(conn, config, &packets)
    }));
    match outcome {
        Ok(Ok((receipts, stored_any))) => {
            if stored_any {
                bump(changes);
            }
            for (request, r) in group.into_iter().zip(receipts) {
                let _ = request.reply.send(r);
            }
        }
        Ok(Err(e)) => {
            // Every deposit in the group shares the failed transaction: each
            // caller gets the same kind and message; the source goes to one.
            let copies: Vec<Error> = (1..group.len())
                .map(|_| Error::new(e.kind(), NAME, e.message().to_string()))
                .collect();
            for (request, err) in group.into_iter().zip(std::iter::once(e).chain(copies)) {
                let _ = request.reply.send(Err(err));
            }
        }
        // A panic: the replies are dropped and every caller gets an error.
        Err(_) => {}
    }
}
