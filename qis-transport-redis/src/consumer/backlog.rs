//! The backlog: matching entries not yet delivered to the consumer's group,
//! and deliveries not yet acked, summed over the streams its pattern
//! matches (see `lua/backlog.lua`).

use std::sync::LazyLock;

use qis_core::{Backlog, Result};
use redis::{Script, Value};

use super::entry::as_i64;
use super::RedisConsumer;
use crate::error::{redis_error, unexpected};
use crate::retention::SWEEP_BATCH;

/// Counts a consumer's backlog on some of its streams.
pub(crate) static BACKLOG: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/backlog.lua")));

/// The most entries counted one by one per stream, where Redis cannot say
/// a group's lag (entries deleted in the middle of the stream).
pub(crate) const COUNT_CAP: u64 = 10_000;

impl RedisConsumer {
    /// The backlog, from the subject index as it is now (not this handle's
    /// streams: it needs no fetch and does not wait for one in flight).
    ///
    /// `waiting` is Redis's group lag where it knows it, the whole stream
    /// where the group has not read it yet, and otherwise a count of the
    /// entries after the group's last delivered one (at most 10,000 per
    /// stream); `unacked` is the size of the group's pending lists.
    pub(super) async fn count_backlog(&self) -> Result<Backlog> {
        let (_, subjects) = self.transport.matching_subjects(&self.pattern).await?;
        let keys = self.transport.keys();
        let mut total = Backlog::default();
        for chunk in subjects.chunks(SWEEP_BATCH) {
            let mut inv = BACKLOG.prepare_invoke();
            for s in chunk {
                inv.key(keys.stream(s));
            }
            inv.arg(&self.name).arg(&self.lazy_start).arg(COUNT_CAP);
            let mut conn = self.transport.conn();
            let v: Value = inv.invoke_async(&mut conn).await.map_err(|e| {
                redis_error(
                    e,
                    &format!("counting the backlog of consumer {} failed", self.name),
                )
            })?;
            let (waiting, unacked) = parse_backlog(&v)?;
            total.waiting += waiting;
            total.unacked += unacked;
        }
        Ok(total)
    }
}

/// Read the backlog script's `{waiting, unacked}`.
pub(crate) fn parse_backlog(v: &Value) -> Result<(u64, u64)> {
    let doing = "backlog";
    let Value::Array(parts) = v else {
        return Err(unexpected(doing, v));
    };
    let count = |p: &Value| as_i64(p).and_then(|n| u64::try_from(n).ok());
    match parts.as_slice() {
        [w, u] => match (count(w), count(u)) {
            (Some(w), Some(u)) => Ok((w, u)),
            _ => Err(unexpected(doing, v)),
        },
        _ => Err(unexpected(doing, v)),
    }
}
