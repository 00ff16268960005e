//! # qis-transport-sqlite
//!
//! The embedded default QIS transport: one SQLite file, no server, shared
//! safely by several processes and tasks.
//!
//! ```
//! use std::time::Duration;
//! use qis_core::{DurableConsumer, OutcomePacket, OutcomeTransport, OutcomeTransportExt};
//! use qis_transport_sqlite::{SqliteConfig, SqliteTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("qis-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("outcomes.db");
//! let transport = SqliteTransport::connect(SqliteConfig::new(&path)).await?;
//! let packet = OutcomePacket {
//!     agent_id: "hvac-building-a".into(),
//!     domain: "hvac".into(),
//!     problem_class: "energy-anomaly".into(),
//!     conclusion: "Compressor draw 18% above baseline.".into(),
//!     confidence: 0.87,
//!     context_vector: vec![0.18, 0.92, 0.03, 0.71],
//!     timestamp: 1_764_000_000.0,
//!     source_node: "building-a-floor-3".into(),
//! };
//! let receipt = transport.deposit(&packet).await?;
//! assert!(!receipt.duplicate);
//! assert!(transport.deposit(&packet).await?.duplicate); // same packet id: stored once
//!
//! // Another process opening the same file sees it; the consumer lives in
//! // the file and resumes by name. URLs take the shared keys (`prefix`,
//! // `max_age`, `max_bytes`) and the file's own (`busy_timeout`,
//! // `poll_interval`, `synchronous`).
//! let url = format!("sqlite://{}?max_age=24h&poll_interval=5ms", path.display());
//! let other = SqliteTransport::connect(url.parse()?).await?;
//! let twins = other.twins_consumer("building-b", "hvac", "energy-anomaly").await?;
//! let batch = twins.fetch(50, Duration::from_secs(1)).await?;
//! assert_eq!(batch.len(), 1);
//! twins.ack(&batch).await?;
//! assert_eq!(other.stored().await?.0, 1); // the backend's own methods stay at hand
//! other.close().await?;
//! transport.close().await?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! [`SqliteTransport::connect`] returns the transport behind
//! [`qis_core::Checked`], the checking layer every backend shares: it refuses
//! calls after `close()`, subjects outside the prefix, patterns that match
//! nothing, what the capabilities rule out and acks on the wrong consumer,
//! and opens the same `tracing` spans as every backend. This crate keeps
//! only what is SQLite's own.
//!
//! ## How it works
//!
//! - **The file.** WAL mode, `busy_timeout` (default 10 s) for lock waits,
//!   `BEGIN IMMEDIATE` for every write, `synchronous = FULL` by default, so a
//!   receipt means the packet is on disk (consumers' bookkeeping commits with
//!   `NORMAL`: see [Threads](#threads)). The tables are in [`schema`]'s docs.
//! - **Deposits** are rows (`seq`, `subject`, `packet_id` UNIQUE, `body`,
//!   `deposited_at_us`). A re-deposit of the same packet id returns the
//!   original's receipt marked `duplicate` ([`Capabilities::dedup`]). A batch
//!   is one transaction; deposits queued by many tasks while a commit runs
//!   are committed together in the next one.
//! - **Threads.** Each handle owns one connection on a dedicated OS thread
//!   (see [Threads](#threads) below), so blocking SQLite work never stalls
//!   the async runtime, plus a watch thread that polls for other processes'
//!   commits only while someone waits.
//! - **Durable consumers** are rows in the file (pattern, start, cursor, ack
//!   wait) with their in-flight deliveries (deadline, delivery count): resume
//!   by name from any process, shared work between handles, redelivery after
//!   the ack wait, `nak` with a delay. Opening an existing name with another
//!   pattern is [`ErrorKind::Conflict`]; opening it with another ack wait
//!   changes the ack wait for every handle. Consumer names are per prefix.
//! - **Patterns** are matched in Rust with [`SubjectPattern::matches`] (exact
//!   SPEC §3 semantics); SQL narrows the rows with the `(subject, seq)` index
//!   for an exact subject or a literal prefix (see `scan` in the source).
//! - **Live subscriptions** read new matching rows when woken: at once for
//!   deposits through the same handle, within [`SqliteConfig::poll_interval`]
//!   (default 5 ms) for other processes' deposits.
//! - **Retention** ([`SqliteConfig::retention`]): `max_age` (24 h) and
//!   `max_bytes` of bodies (50 MiB), the shared defaults of
//!   [`qis_core::config`], checked
//!   in every deposit and fetch transaction (two index lookups), pruning the
//!   oldest rows in one range delete when due, as the store's
//!   [`WhenFull`] policy allows (next section). Every handle applies its own
//!   settings, so give every process on a file the same retention.
//! - **Backlog** ([`DurableConsumer::backlog`], and
//!   [`OutcomeTransport::consumers`] for every consumer in the file without
//!   opening it): the rows after the consumer's cursor that match its
//!   pattern, and its deliveries not yet acked, counted in the file. Exact,
//!   except that a malformed row on a matching subject counts as waiting
//!   until a fetch passes it.
//! - **Similar twins** ([`OutcomeTransport::similar`], SPEC §9) by exact
//!   search: the rows under the pattern's literal prefix (found with the
//!   subject index) are scored in Rust, parsing only each body's context
//!   vector and decoding a packet only when it can enter the best `k`. Linear
//!   in those rows, about 1.5 ms per 1,000 on the development machine under
//!   load: p50 15.5 ms at 10,000 stored packets, 152 ms at 100,000 (`cargo
//!   bench -p qis-transport-chroma --bench similar`), so fast up to some
//!   tens of thousands of packets under a prefix. It runs on the handle's
//!   connection thread, so the handle's own deposits wait for it.
//!
//! ## A full outbox never loses silently
//!
//! On a device, the file is the outbox: packets wait in it until a
//! [`qis_core::Bridge`] has forwarded them to the hub. What retention does
//! when it reaches packets that a durable consumer on the file still *owes*
//! (after its cursor and matching its pattern, or delivered and not acked)
//! is the [`WhenFull`] policy (URL key `when_full`, builder
//! [`SqliteConfig::when_full`]):
//!
//! - **`refuse`** (the default): retention never removes an owed packet, by
//!   size or by age; it prunes the oldest rows up to the first owed one. A
//!   deposit that would then take the stored bodies past `max_bytes` fails
//!   with [`ErrorKind::StoreFull`] and stores nothing (each deposit call on
//!   its own; a batch all or nothing); what was stored stays. A re-deposit
//!   of a stored packet is still answered (a duplicate needs no room). The
//!   device retries later, once the bridge has forwarded and acked (which
//!   lets retention prune), or frees the store otherwise.
//! - **`drop_oldest`**: retention prunes as if nobody owed anything; the
//!   owed packets it removes are lost to their consumers, counted in the
//!   file ([`SqliteTransport::dropped`], shown by `qis status`) and logged
//!   with `tracing::warn!` (how many were removed, how many were owed, to
//!   which consumers).
//!
//! A file with **no durable consumer** owes nothing: retention is plain
//! retention under either policy, and `refuse` never refuses. A consumer
//! that is no longer used would hold the store for ever under `refuse`:
//! list who holds it with [`OutcomeTransport::consumers`] (or `qis status`)
//! and remove one with [`SqliteTransport::delete_consumer`].
//!
//! ```
//! use qis_core::{ConsumerConfig, ErrorKind, OutcomePacket, OutcomeTransport, OutcomeTransportExt};
//! use qis_transport_sqlite::{SqliteConfig, SqliteTransport, WhenFull};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("qis-doc-full-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("outbox.db");
//! let outbox = SqliteTransport::connect(SqliteConfig::new(&path).max_bytes(4096)).await?;
//! assert_eq!(outbox.config().when_full, WhenFull::Refuse);
//! // The bridge's consumer: it owes every packet until it has forwarded it.
//! let up = outbox.consumer(ConsumerConfig::new("up", "qis.iot.>".parse()?)?).await?;
//! let mut n = 0;
//! let refused = loop {
//!     let p = OutcomePacket {
//!         agent_id: "sensor-1".into(), domain: "hvac".into(), problem_class: "energy".into(),
//!         conclusion: format!("reading {n}"), confidence: 0.5, context_vector: vec![0.1],
//!         timestamp: 1_764_000_000.0, source_node: "device-7".into(),
//!     };
//!     match outbox.deposit(&p).await {
//!         Ok(_) => n += 1,
//!         Err(e) => break e,
//!     }
//! };
//! assert_eq!(refused.kind(), ErrorKind::StoreFull);
//! assert_eq!(outbox.stored().await?.0, n);           // nothing stored was lost
//! assert_eq!(outbox.consumers().await?[0].backlog.waiting, n); // who holds it
//! outbox.delete_consumer("up").await?;                // or let a bridge forward
//! # let _ = up;
//! # outbox.close().await?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//! - **Malformed rows** (written by someone else) are skipped with a
//!   `tracing::warn!`, counted in [`DurableConsumer::malformed_skipped`], and
//!   passed by the cursor so they are never delivered.
//!
//! ## Threads
//!
//! Every SQLite call may block: disk I/O, fsync, or waiting up to
//! `busy_timeout` for another process's write lock. A handle therefore owns
//! its connection on a dedicated thread fed by a channel rather than using
//! `spawn_blocking`: one owner keeps the connection (which is not `Sync`) and
//! its prepared-statement cache, never ties up tokio's blocking pool during a
//! lock wait, and sees the whole queue, which is what lets it group commits.
//! [`SqliteTransport`] clones share the handle; call [`SqliteTransport::connect`]
//! again for an independent one.
//!
//! A round trip to that thread costs two thread wake-ups, more than a fetch
//! of a hundred rows on a small or virtual machine. So a consumer's fetch,
//! ack and nak (up to 1,024 packets) run on the caller's thread, with a
//! second connection of the handle, whenever it is free and no other writer
//! holds the lock; they never wait there (a taken lock sends the call to the
//! thread, which waits up to `busy_timeout`), hold the caller's thread about
//! a microsecond per packet, and commit with `synchronous = NORMAL`: a power
//! loss may undo the last acks and cursor moves, and those packets are
//! delivered again (at least once, as a JetStream server between syncs).
//! With `synchronous = NORMAL` configured, deposits of up to 1,024 packets
//! take the same path; deposits that find it in use queue on the thread
//! and are committed together.
//!
//! ## What it does not do
//!
//! - **Fire-and-forget publish** ([`Capabilities::fire_and_forget`] is false,
//!   so [`OutcomeTransport::publish_encoded`] is [`ErrorKind::Unsupported`]):
//!   a file has no at-most-once path that skips storage. Deposit instead;
//!   live subscribers get deposits too.
//! - **In-memory databases** (`sqlite::memory:`) are refused: they cannot be
//!   shared between connections, let alone processes. Use
//!   [`qis_core::MemoryTransport`] in-process.
//! - **Network file systems**: WAL needs shared memory between the processes,
//!   so every process must be on the same machine, with the file on a local
//!   file system.

use std::sync::Arc;

use async_trait::async_trait;
use qis_core::{
    Capabilities, Checked, ConsumerConfig, ConsumerInfo, DurableConsumer, EncodedPacket, Error,
    ErrorKind, LiveSubscription, OutcomeTransport, Receipt, Result, Scored, SimilarityQuery,
    Subject, SubjectPattern, TransportInfo,
};
use tokio::sync::watch;

mod config;
mod connection;
mod consumer;
mod deposit;
#[doc(hidden)]
pub mod fuzzing;
mod live;
mod pending;
mod retention;
mod row;
mod scan;
pub mod schema;
mod similar;

pub use config::{
    SqliteConfig, Synchronous, WhenFull, DEFAULT_BUSY_TIMEOUT, DEFAULT_POLL_INTERVAL,
};
pub use consumer::SqliteConsumer;
pub use retention::Pruned;

use connection::Worker;
use live::{Interest, Watcher};

/// The transport's name in errors and [`OutcomeTransport::name`].
pub const NAME: &str = "sqlite";

/// The SQLite transport. Clones share one connection; each
/// [`connect`](Self::connect) opens an independent one (as another process would).
///
/// [`connect`](Self::connect) returns it behind the checking layer,
/// [`Checked`], which dereferences to it for the methods of its own
/// ([`prune`](Self::prune), [`stored`](Self::stored), [`dropped`](Self::dropped),
/// [`delete_consumer`](Self::delete_consumer), [`config`](Self::config)).
#[derive(Clone)]
pub struct SqliteTransport {
    inner: Arc<Inner>,
}

/// No fire-and-forget publish (every packet is a row in the file) and no
/// native wildcards (the transport matches subjects itself).
const CAPABILITIES: Capabilities = Capabilities {
    fire_and_forget: false,
    native_wildcards: false,
    ..Capabilities::ALL
};

struct Inner {
    info: TransportInfo,
    config: Arc<SqliteConfig>,
    worker: Worker,
    watcher: Watcher,
    changes: Arc<watch::Sender<u64>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The connection thread ends when its channel closes with `worker`.
        self.watcher.stop();
    }
}

impl std::fmt::Debug for SqliteTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTransport")
            .field("path", &self.inner.config.path)
            .field("prefix", &self.inner.config.prefix.as_str())
            .finish()
    }
}

impl SqliteTransport {
    /// Open (creating if needed) the database file and start the handle's
    /// connection thread.
    ///
    /// Fails with [`ErrorKind::Unavailable`] when the file cannot be opened
    /// or created, [`ErrorKind::Conflict`] when it holds another schema
    /// version, [`ErrorKind::InvalidInput`] for a bad configuration.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %config.path.display(), prefix = %config.prefix))]
    pub async fn connect(config: SqliteConfig) -> Result<Checked<Self>> {
        config.check()?;
        let config = Arc::new(config);
        let changes = Arc::new(watch::channel(0u64).0);
        let worker = Worker::spawn(config.clone(), changes.clone()).await?;
        let watcher = Watcher::spawn(config.clone(), changes.clone()).map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                NAME,
                "cannot start the watch thread",
            )
            .with_source(e)
        })?;
        Ok(Checked::new(SqliteTransport {
            inner: Arc::new(Inner {
                info: TransportInfo::new(NAME, CAPABILITIES, config.prefix.clone()),
                config,
                worker,
                watcher,
                changes,
            }),
        }))
    }

    /// Open the file named by a URL (see [`SqliteConfig::from_url`]).
    pub async fn connect_url(url: &str) -> Result<Checked<Self>> {
        Self::connect(url.parse()?).await
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// Apply retention now, as the [`WhenFull`] policy allows (it is also
    /// applied on every deposit and fetch).
    /// After [`close`](OutcomeTransport::close): [`ErrorKind::Closed`].
    pub async fn prune(&self) -> Result<Pruned> {
        let settings = self.settings();
        self.worker()
            .call(move |conn| {
                let run = |conn: &mut rusqlite::Connection| {
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let pruned = retention::prune(&tx, &settings)?;
                    tx.commit()?;
                    Ok(pruned)
                };
                run(conn).map_err(|e| {
                    schema::sql_error(&format!("pruning {}", settings.path.display()), e)
                })
            })
            .await
    }

    /// How many packets are stored and the total size of their bodies.
    /// After [`close`](OutcomeTransport::close): [`ErrorKind::Closed`].
    pub async fn stored(&self) -> Result<(u64, u64)> {
        let settings = self.settings();
        self.worker()
            .call(move |conn| {
                let run = |conn: &mut rusqlite::Connection| -> rusqlite::Result<(u64, u64)> {
                    let tx = conn.transaction()?;
                    let n: i64 =
                        tx.query_row("SELECT count(*) FROM qis_outcomes", [], |r| r.get(0))?;
                    let bytes = retention::stored_bytes(&tx)?;
                    Ok((n as u64, bytes as u64))
                };
                run(conn).map_err(|e| {
                    schema::sql_error(&format!("counting in {}", settings.path.display()), e)
                })
            })
            .await
    }

    /// How many packets retention removed while a durable consumer still
    /// owed them ([`WhenFull::DropOldest`]), since the file was created, by
    /// every process on it. Under [`WhenFull::Refuse`] it does not grow.
    /// After [`close`](OutcomeTransport::close): [`ErrorKind::Closed`].
    pub async fn dropped(&self) -> Result<u64> {
        let settings = self.settings();
        self.worker()
            .call(move |conn| {
                conn.transaction()
                    .and_then(|tx| retention::dropped(&tx))
                    .map(|n| n as u64)
                    .map_err(|e| {
                        schema::sql_error(
                            &format!("reading the dropped counter of {}", settings.path.display()),
                            e,
                        )
                    })
            })
            .await
    }

    /// Remove the durable consumer `name` (under this transport's prefix)
    /// from the file, with its deliveries in flight: what it still owed no
    /// longer holds the store (see [`WhenFull::Refuse`]). Handles still open
    /// on it get [`ErrorKind::NotFound`] on their next fetch. Returns
    /// whether it existed. After [`close`](OutcomeTransport::close):
    /// [`ErrorKind::Closed`].
    pub async fn delete_consumer(&self, name: &str) -> Result<bool> {
        let settings = self.settings();
        let prefix = self.prefix_subject().clone();
        let owned = name.to_string();
        let deleted = self
            .worker()
            .call(move |conn| {
                consumer::delete(conn, &prefix, &owned).map_err(|e| {
                    schema::sql_error(
                        &format!("deleting consumer {owned} from {}", settings.path.display()),
                        e,
                    )
                })
            })
            .await?;
        if deleted {
            tracing::info!(consumer = name, path = %self.config().path.display(), "durable consumer deleted");
        }
        Ok(deleted)
    }

    pub(crate) fn settings(&self) -> Arc<SqliteConfig> {
        self.inner.config.clone()
    }

    pub(crate) fn prefix_subject(&self) -> &Subject {
        &self.inner.config.prefix
    }

    /// The connection thread. Once the handle is closed it answers every
    /// call with [`ErrorKind::Closed`].
    pub(crate) fn worker(&self) -> &Worker {
        &self.inner.worker
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub(crate) fn watch_interest(&self) -> Interest {
        self.inner.watcher.interest()
    }

    pub(crate) fn notify_local_change(&self) {
        connection::bump(&self.inner.changes);
    }
}

#[async_trait]
impl OutcomeTransport for SqliteTransport {
    fn info(&self) -> &TransportInfo {
        &self.inner.info
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        self.worker().deposit(packets).await
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        Ok(Arc::new(consumer::open(self, config).await?))
    }

    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        live::subscribe(self, pattern).await
    }

    /// The consumers under this transport's prefix kept in the file, each
    /// with its backlog as [`SqliteConsumer`]'s `backlog` counts it.
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let settings = self.settings();
        let prefix = self.prefix_subject().clone();
        self.worker()
            .call(move |conn| {
                consumer::list(conn, &prefix).map_err(|e| {
                    schema::sql_error(
                        &format!("listing consumers in {}", settings.path.display()),
                        e,
                    )
                })
            })
            .await
    }

    /// Exact search over the rows under the pattern's literal prefix (see
    /// the crate docs, *Similar twins*).
    async fn similar(&self, query: &SimilarityQuery) -> Result<Vec<Scored>> {
        similar::similar(self, query).await
    }

    /// Wait for every queued operation of this handle to finish, close its
    /// connection and stop its threads. Clones of this handle are closed too;
    /// other handles on the file are not affected.
    async fn close(&self) -> Result<()> {
        self.inner.worker.stop().await;
        self.inner.watcher.stop();
        Ok(())
    }
}
