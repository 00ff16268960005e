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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use qis_core::{EncodedPacket, Error, ErrorKind, Receipt, Result};
use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

use crate::config::SqliteConfig;
use crate::{deposit, schema, NAME};

/// Most packets committed in one group transaction.
const MAX_GROUP_PACKETS: usize = 8192;

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
        let (opened_tx, opened_rx) = oneshot::channel();
        let stopped = Arc::new(AtomicBool::new(false));
        let thread_stopped = stopped.clone();
        std::thread::Builder::new()
            .name("qis-sqlite".into())
            .spawn(move || {
                let conn = match schema::open(&config) {
                    Ok(c) => {
                        let _ = opened_tx.send(Ok(()));
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
        opened_rx.await.map_err(|_| {
            Error::new(
                ErrorKind::Backend,
                NAME,
                "the connection thread stopped while opening the file",
            )
        })??;
        Ok(Worker { tx, stopped })
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

    /// Store packets; queued deposits are committed together.
    pub(crate) async fn deposit(&self, packets: Vec<EncodedPacket>) -> Result<Vec<Receipt>> {
        let (reply, rx) = oneshot::channel();
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

    /// Finish every queued request, close the connection and end the thread.
    pub(crate) async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Stop(reply)).is_ok() {
            let _ = rx.await;
        }
    }
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
        deposit::store_group(conn, config, &group)
    }));
    match outcome {
        Ok(Ok((receipts, stored_any))) => {
            if stored_any {
                changes.send_modify(|v| *v = v.wrapping_add(1));
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
