//! What a durable consumer still has to do: matching entries not yet
//! delivered to its group, and deliveries not yet acked, summed over the
//! streams its pattern matches (see `lua/backlog.lua`); and every consumer
//! under the prefix, found by its definition hash, with that backlog.

use std::collections::HashMap;
use std::sync::LazyLock;

use qis_core::{Backlog, ConsumerInfo, Result, SubjectPattern};
use redis::{Script, Value};

use super::entry::as_i64;
use super::RedisConsumer;
use crate::error::{redis_error, unexpected};
use crate::retention::SWEEP_BATCH;
use crate::RedisTransport;

/// Counts a consumer's backlog on some of its streams.
pub(crate) static BACKLOG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../lua/field_fn.lua"),
        include_str!("../lua/backlog.lua")
    ))
});

/// The most entries counted one by one per stream, where Redis cannot say
/// a group's lag (entries deleted in the middle of the stream).
pub(crate) const COUNT_CAP: u64 = 10_000;

impl RedisConsumer {
    /// The backlog, from the subject index as it is now (not this handle's
    /// streams: it needs no fetch and does not wait for one in flight).
    pub(super) async fn count_backlog(&self) -> Result<Backlog> {
        self.transport
            .backlog_of(&self.name, &self.pattern, &self.lazy_start)
            .await
    }
}

impl RedisTransport {
    /// The backlog of consumer `name` on `pattern`; `lazy_start` is where
    /// its group starts on a stream it has no group on yet (one created, or
    /// created again after the sweep deleted it, since the consumer was).
    ///
    /// `waiting` is Redis's group lag where it knows it, the whole stream
    /// where the group has not read it yet, and otherwise a count of the
    /// entries after the group's last delivered one (at most 10,000 per
    /// stream); `unacked` is the size of the group's pending lists.
    pub(crate) async fn backlog_of(
        &self,
        name: &str,
        pattern: &SubjectPattern,
        lazy_start: &str,
    ) -> Result<Backlog> {
        let (_, subjects) = self.matching_subjects(pattern).await?;
        let keys = self.keys();
        let mut total = Backlog::default();
        for chunk in subjects.chunks(SWEEP_BATCH) {
            let mut inv = BACKLOG.prepare_invoke();
            for s in chunk {
                inv.key(keys.stream(s));
            }
            inv.arg(name).arg(lazy_start).arg(COUNT_CAP);
            let mut conn = self.conn();
            let v: Value = inv.invoke_async(&mut conn).await.map_err(|e| {
                redis_error(
                    e,
                    &format!("counting the backlog of consumer {name} failed"),
                )
            })?;
            let (waiting, unacked) = parse_backlog(&v)?;
            total.waiting += waiting;
            total.unacked += unacked;
        }
        Ok(total)
    }

    /// Every durable consumer under the prefix, with its backlog, without
    /// opening it: `SCAN` for the definition hashes `{ns}:c:{name}`. The
    /// definition outlives the consumer's groups (the retention sweep
    /// deletes an expired stream with its groups, never a definition), so a
    /// consumer whose streams are all gone is still listed.
    pub(crate) async fn list_consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let prefix = self.keys().consumer("");
        let mut conn = self.conn();
        let mut names = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                // A prefix's characters (`[a-z0-9_-]` and dots) are no glob.
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .arg("TYPE")
                .arg("hash")
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "listing consumers failed"))?;
            // Definitions only: a consumer name never holds a ':', so
            // `{ns}:c:{name}:delayed` (a sorted set anyway) is not one.
            names.extend(
                keys.iter()
                    .filter_map(|k| k.strip_prefix(prefix.as_str()))
                    .filter(|n| !n.is_empty() && !n.contains(':'))
                    .map(str::to_string),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key more than once.
        names.sort();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let def: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.keys().consumer(&name))
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "reading a consumer definition failed"))?;
            // Deleted since the scan, or not a definition of ours.
            let Some(pattern) = def.get("pattern") else {
                continue;
            };
            let lazy_start = def.get("lazy_start").map_or("0", String::as_str);
            let backlog = match SubjectPattern::new(pattern.as_str()) {
                Ok(p) => self.backlog_of(&name, &p, lazy_start).await?,
                Err(err) => {
                    tracing::warn!(consumer = %name, pattern = %pattern, error = %err, "a consumer definition holds an invalid pattern: its backlog is not counted");
                    Backlog::default()
                }
            };
            out.push(ConsumerInfo {
                name,
                pattern: Some(pattern.clone()),
                backlog,
            });
        }
        Ok(out)
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
