//! Retention for every subject, idle or not: the trim script readers and
//! the sweep run, the sweep itself (a background task of each connected
//! transport, a bounded batch of subjects per tick), and the warning about
//! deliveries retention took before they were acked.
//!
//! How it works and what it costs is described in the docs of
//! [`RedisConfig`](crate::RedisConfig) ("Retention").

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use qis_core::Result;

use crate::consumer::{as_i64, value_str};
use crate::error::{redis_error, unexpected};
use crate::keys::Keys;
use crate::{RedisConfig, NAME};

/// Subjects one tick of the sweep trims.
pub const SWEEP_BATCH: usize = 100;

/// Trims streams, deletes the empty and expired ones (see `lua/trim.lua`).
pub(crate) static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/field_fn.lua"),
        include_str!("lua/trim_fn.lua"),
        include_str!("lua/trim.lua")
    ))
});

/// What a trim did.
#[derive(Debug, Default)]
pub(crate) struct Trimmed {
    /// Entries removed.
    pub(crate) removed: u64,
    /// Subjects whose streams were deleted (or found missing) and left the
    /// index.
    pub(crate) deleted: Vec<String>,
}

/// One report of deliveries retention removed before they were acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The subject whose stream was trimmed.
    pub subject: String,
    /// The consumer (its group) that had them pending.
    pub consumer: String,
    /// How many.
    pub unacked: u64,
}

/// Read the `{subject, group, count, ...}` list the scripts return.
pub(crate) fn parse_dropped(v: &Value, doing: &str) -> Result<Vec<Dropped>> {
    let Value::Array(items) = v else {
        return Err(unexpected(doing, v));
    };
    if items.len() % 3 != 0 {
        return Err(unexpected(doing, v));
    }
    items
        .chunks_exact(3)
        .map(|c| {
            match (
                value_str(&c[0]),
                value_str(&c[1]),
                as_i64(&c[2]).and_then(|n| u64::try_from(n).ok()),
            ) {
                (Some(subject), Some(consumer), Some(unacked)) => Ok(Dropped {
                    subject: subject.to_string(),
                    consumer: consumer.to_string(),
                    unacked,
                }),
                _ => Err(unexpected(doing, v)),
            }
        })
        .collect()
}

/// Warn about each report: those deliveries will not come again.
pub(crate) fn warn_dropped(dropped: &[Dropped]) {
    for d in dropped {
        tracing::warn!(
            transport = NAME,
            consumer = %d.consumer,
            subject = %d.subject,
            unacked = d.unacked,
            "retention removed packets this consumer had fetched but not acked: they will not be redelivered"
        );
    }
}

/// Read the trim script's reply: entries removed, dropped deliveries,
/// deleted subjects.
pub(crate) fn parse_trim_reply(v: &Value) -> Result<(u64, Vec<Dropped>, Vec<String>)> {
    let doing = "trim";
    let Value::Array(parts) = v else {
        return Err(unexpected(doing, v));
    };
    let [removed, dropped, deleted] = parts.as_slice() else {
        return Err(unexpected(doing, v));
    };
    let removed = as_i64(removed)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| unexpected(doing, v))?;
    let dropped = parse_dropped(dropped, doing)?;
    let Value::Array(deleted) = deleted else {
        return Err(unexpected(doing, v));
    };
    let deleted = deleted
        .iter()
        .map(|s| value_str(s).map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| unexpected(doing, v))?;
    Ok((removed, dropped, deleted))
}

/// What trimming needs: a connection, the key names and the bounds.
#[derive(Clone)]
pub(crate) struct Retainer {
    conn: ConnectionManager,
    keys: Keys,
    max_len: u64,
    max_age_ms: u64,
}

impl Retainer {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys, config: &RedisConfig) -> Self {
        Retainer {
            conn,
            keys,
            max_len: config.stream_max_len(),
            max_age_ms: config.retention.max_age.as_millis() as u64,
        }
    }

    /// Trim `streams` (stream keys) by length and exactly by age; delete the
    /// empty, expired ones. At most [`SWEEP_BATCH`] streams per script call,
    /// so no call holds Redis long.
    pub(crate) async fn trim(&self, streams: &[String]) -> Result<Trimmed> {
        let mut out = Trimmed::default();
        for chunk in streams.chunks(SWEEP_BATCH) {
            let mut inv = TRIM.prepare_invoke();
            inv.key(self.keys.subjects())
                .key(self.keys.subjects_version());
            for s in chunk {
                inv.key(s);
            }
            inv.arg(self.max_len)
                .arg(self.max_age_ms)
                .arg(self.keys.stream_prefix().len());
            let mut conn = self.conn.clone();
            let v: Value = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "trimming streams failed"))?;
            let (removed, dropped, deleted) = parse_trim_reply(&v)?;
            warn_dropped(&dropped);
            out.removed += removed;
            out.deleted.extend(deleted);
        }
        Ok(out)
    }

    /// One tick of the sweep: the next [`SWEEP_BATCH`] subjects after
    /// `cursor` in the index (wrapping around at its end), trimmed.
    pub(crate) async fn sweep_once(&self, cursor: &mut Option<String>) -> Result<Trimmed> {
        let min = match cursor.as_deref() {
            Some(c) => format!("({c}"),
            None => "-".to_string(),
        };
        let mut conn = self.conn.clone();
        let subjects: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(self.keys.subjects())
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_BATCH)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, "reading the subject index failed"))?;
        *cursor = if subjects.len() < SWEEP_BATCH {
            None
        } else {
            subjects.last().cloned()
        };
        let streams: Vec<String> = subjects.iter().map(|s| self.keys.stream(s)).collect();
        self.trim(&streams).await
    }
}

/// Start the sweep: every `interval`, one [`Retainer::sweep_once`], until
/// `closed` turns true or its sender goes. `None` when `interval` is zero.
pub(crate) fn spawn_sweep(
    retainer: Retainer,
    interval: Duration,
    mut closed: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut cursor = None;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
            match retainer.sweep_once(&mut cursor).await {
                Ok(t) => {
                    failing = false;
                    if t.removed > 0 || !t.deleted.is_empty() {
                        tracing::debug!(
                            removed = t.removed,
                            deleted = t.deleted.len(),
                            "retention sweep"
                        );
                    }
                }
                // Say it once per run of failures (Redis down: every tick).
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "retention sweep failed; retrying every tick");
                }
                Err(e) => tracing::debug!(error = %e, "retention sweep failed again"),
            }
        }
    }))
}
