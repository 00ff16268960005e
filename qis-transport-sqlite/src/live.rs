//! Live subscriptions, and noticing what other processes commit.
//!
//! A deposit through this handle wakes local waiters (fetches, subscriptions)
//! at once. Commits by other processes (or other handles) are noticed by the
//! watch thread, which polls `PRAGMA data_version` on its own connection
//! every [`SqliteConfig::poll_interval`](crate::SqliteConfig::poll_interval)
//! (default 5 ms) — but only while someone waits: with no fetch waiting and
//! no subscription open it sleeps on a condition variable and costs nothing.
//! So a packet deposited by another process reaches a waiting fetch or a live
//! subscriber within about one poll interval plus the time to read it.
//!
//! A subscription remembers the newest `seq` when it is created (so it is
//! active when `subscribe` returns) and reads the rows after it that match,
//! in order, when woken. Delivery is at-most-once: nothing is acked, and a
//! subscriber that falls further behind than retention keeps misses what was
//! pruned. Malformed rows are logged and skipped.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use qis_core::{ErrorKind, LiveSubscription, Received, Result, SubjectPattern};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::watch;

use crate::config::SqliteConfig;
use crate::scan::Scan;
use crate::schema::sql_error;
use crate::SqliteTransport;

/// Rows read per wake-up of a subscription.
const LIVE_CHUNK: usize = 256;

#[derive(Debug, Default)]
struct WatchState {
    interested: usize,
    stop: bool,
}

#[derive(Debug, Default)]
struct WatchShared {
    state: Mutex<WatchState>,
    wake: Condvar,
}

impl WatchShared {
    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watch thread's handle.
#[derive(Debug)]
pub(crate) struct Watcher {
    shared: Arc<WatchShared>,
}

/// While held, the watch thread polls for other processes' commits.
#[derive(Debug)]
pub(crate) struct Interest {
    shared: Arc<WatchShared>,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.interested = st.interested.saturating_sub(1);
    }
}

impl Watcher {
    /// Start the watch thread; it bumps `changes` when the file changes.
    pub(crate) fn spawn(
        config: Arc<SqliteConfig>,
        changes: Arc<watch::Sender<u64>>,
    ) -> std::io::Result<Watcher> {
        let shared = Arc::new(WatchShared::default());
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("qis-sqlite-watch".into())
            .spawn(move || watch_loop(&config, &changes, &thread_shared))?;
        Ok(Watcher { shared })
    }

    /// Ask the thread to poll until the returned guard is dropped.
    pub(crate) fn interest(&self) -> Interest {
        let mut st = self.shared.lock();
        st.interested += 1;
        if st.interested == 1 {
            self.shared.wake.notify_all();
        }
        Interest {
            shared: self.shared.clone(),
        }
    }

    /// End the thread.
    pub(crate) fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
    }
}

fn watch_loop(config: &SqliteConfig, changes: &watch::Sender<u64>, shared: &WatchShared) {
    let mut conn: Option<Connection> = None;
    let mut last: Option<i64> = None;
    let mut warned = false;
    loop {
        {
            let mut st = shared.lock();
            while st.interested == 0 && !st.stop {
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stop {
                return;
            }
        }
        if conn.is_none() {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            match Connection::open_with_flags(&config.path, flags) {
                Ok(c) => {
                    let _ = c.busy_timeout(config.busy_timeout);
                    conn = Some(c);
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(path = %config.path.display(), error = %e, "cannot open the file to watch for other processes' deposits; retrying");
                        warned = true;
                    }
                }
            }
        }
        if let Some(c) = &conn {
            match c.pragma_query_value(None, "data_version", |r| r.get::<_, i64>(0)) {
                Ok(v) => {
                    if last != Some(v) {
                        // The first reading after a pause may be a change
                        // nobody saw: waking waiters for nothing is harmless.
                        last = Some(v);
                        crate::connection::bump(changes);
                    }
                    warned = false;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(path = %config.path.display(), error = %e, "cannot poll the file for other processes' deposits; retrying");
                        warned = true;
                    }
                }
            }
        }
        let st = shared.lock();
        if st.stop {
            return;
        }
        let _ = shared.wake.wait_timeout(st, config.poll_interval);
    }
}

struct Live {
    transport: SqliteTransport,
    scan: Arc<Scan>,
    after: i64,
    buffered: VecDeque<Received>,
    changes: watch::Receiver<u64>,
    _interest: Interest,
}

/// Subscribe to `pattern`: active when this returns.
pub(crate) async fn subscribe(
    transport: &SqliteTransport,
    pattern: SubjectPattern,
) -> Result<LiveSubscription> {
    let scan = Arc::new(Scan::new(transport.prefix_subject(), &pattern));
    let interest = transport.watch_interest();
    let changes = transport.changes();
    let settings = transport.settings();
    let after = transport
        .worker()
        .call(move |conn| {
            conn.prepare_cached("SELECT coalesce(max(seq), 0) FROM qis_outcomes")
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map_err(|e| sql_error(&format!("subscribing in {}", settings.path.display()), e))
        })
        .await?;
    tracing::debug!(%pattern, after, "live subscription opened");
    let live = Live {
        transport: transport.clone(),
        scan,
        after,
        buffered: VecDeque::new(),
        changes,
        _interest: interest,
    };
    let stream = futures::stream::unfold(live, |mut live| async move {
        loop {
            if let Some(r) = live.buffered.pop_front() {
                return Some((Ok(r), live));
            }
            live.changes.borrow_and_update();
            match read_after(&live).await {
                Ok((rows, after)) => {
                    live.after = after;
                    live.buffered.extend(rows);
                    if live.buffered.is_empty() && live.changes.changed().await.is_err() {
                        return None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Closed => return None,
                Err(e) => {
                    // Report it, then give the file a moment before retrying.
                    let pause = live
                        .transport
                        .settings()
                        .poll_interval
                        .max(Duration::from_millis(50));
                    let _ = tokio::time::timeout(pause, live.changes.changed()).await;
                    return Some((Err(e), live));
                }
            }
        }
    });
    Ok(stream.boxed())
}

async fn read_after(live: &Live) -> Result<(Vec<Received>, i64)> {
    let scan = live.scan.clone();
    let after = live.after;
    let settings = live.transport.settings();
    live.transport
        .worker()
        .call(move |conn| {
            let run = |conn: &mut Connection| -> rusqlite::Result<(Vec<Received>, i64)> {
                // One read transaction: the walk and its idea of the newest row agree.
                let tx = conn.transaction()?;
                let mut out = Vec::new();
                let after = scan.walk(&tx, after, LIVE_CHUNK, |row| {
                    match row.decode() {
                        Ok(r) => {
                            out.push(r);
                            true
                        }
                        Err(error) => {
                            tracing::warn!(subject = %row.subject, seq = row.seq, %error, "skipping malformed live packet");
                            false
                        }
                    }
                })?;
                tx.commit()?;
                Ok((out, after))
            };
            run(conn).map_err(|e| sql_error(&format!("reading live packets in {}", settings.path.display()), e))
        })
        .await
}
