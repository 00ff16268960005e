//! What a durable consumer still has to do, counted from its groups: the
//! group `lag` (Redis 7 `XINFO GROUPS`) and pending entries list of every
//! stream its pattern matches; and every consumer under the prefix, found by
//! its definition hash.

use std::collections::HashMap;

use qis_core::{Backlog, ConsumerInfo, Result, SubjectPattern};
use redis::Value;

use super::entry::{as_i64, value_str};
use crate::error::{redis_error, unexpected};
use crate::RedisTransport;

/// Entries read per `XRANGE` when a group's lag must be counted by hand.
const COUNT_CHUNK: usize = 1000;

/// The pairs of a reply that is a flat key-value array (RESP2) or a map (RESP3).
fn pairs(v: &Value) -> Vec<(&str, &Value)> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => value_str(k).map(|k| (k, v)),
                _ => None,
            })
            .collect(),
        Value::Map(kv) => kv
            .iter()
            .filter_map(|(k, v)| value_str(k).map(|k| (k, v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// One group as `XINFO GROUPS` describes it.
struct Group {
    pending: u64,
    /// `None` when Redis cannot tell (entries deleted in the middle, or a
    /// group created at an arbitrary id).
    lag: Option<u64>,
    last_delivered: String,
}

fn find_group(reply: &Value, name: &str) -> Option<Group> {
    let Value::Array(groups) = reply else {
        return None;
    };
    groups.iter().find_map(|g| {
        let fields: HashMap<&str, &Value> = pairs(g).into_iter().collect();
        if fields.get("name").and_then(|v| value_str(v)) != Some(name) {
            return None;
        }
        Some(Group {
            pending: fields
                .get("pending")
                .and_then(|v| as_i64(v))
                .unwrap_or(0)
                .max(0) as u64,
            lag: fields
                .get("lag")
                .and_then(|v| as_i64(v))
                .and_then(|l| u64::try_from(l).ok()),
            last_delivered: fields
                .get("last-delivered-id")
                .and_then(|v| value_str(v))
                .unwrap_or("0")
                .to_string(),
        })
    })
}

impl RedisTransport {
    /// The backlog of consumer `name` on `pattern`; `lazy_start` is where
    /// its group starts on a stream it has not discovered yet.
    pub(crate) async fn backlog_of(
        &self,
        name: &str,
        pattern: &SubjectPattern,
        lazy_start: &str,
    ) -> Result<Backlog> {
        let (_, subjects) = self.matching_subjects(pattern).await?;
        let streams: Vec<String> = subjects.iter().map(|s| self.keys().stream(s)).collect();
        let mut backlog = Backlog::default();
        if streams.is_empty() {
            return Ok(backlog);
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for s in &streams {
            pipe.cmd("XINFO").arg("GROUPS").arg(s);
        }
        let mut conn = self.conn();
        let replies: Vec<redis::RedisResult<Value>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, "reading consumer groups failed"))?;
        for (stream, reply) in streams.iter().zip(replies) {
            let reply = match reply {
                Ok(v) => v,
                // Trimmed away and deleted meanwhile: nothing waits there.
                Err(e) if e.to_string().contains("no such key") => continue,
                Err(e) => return Err(redis_error(e, "reading consumer groups failed")),
            };
            if !matches!(reply, Value::Array(_)) {
                return Err(unexpected("reading consumer groups", &reply));
            }
            match find_group(&reply, name) {
                Some(g) => {
                    backlog.unacked += g.pending;
                    backlog.waiting += match g.lag {
                        Some(lag) => lag,
                        None => self.count_after(stream, &g.last_delivered).await?,
                    };
                }
                // A stream its fetches have not found yet: all of it from
                // the consumer's start waits.
                None => backlog.waiting += self.count_after(stream, lazy_start).await?,
            }
        }
        Ok(backlog)
    }

    /// How many entries of `stream` come after entry id `after`.
    async fn count_after(&self, stream: &str, after: &str) -> Result<u64> {
        let mut conn = self.conn();
        if after == "0" || after == "0-0" {
            let n: u64 = redis::cmd("XLEN")
                .arg(stream)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "counting a stream failed"))?;
            return Ok(n);
        }
        let mut from = format!("({after}");
        let mut n = 0u64;
        loop {
            let ids: Vec<(String, Value)> = redis::cmd("XRANGE")
                .arg(stream)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(COUNT_CHUNK)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "counting a stream failed"))?;
            n += ids.len() as u64;
            match ids.last() {
                Some((last, _)) if ids.len() == COUNT_CHUNK => from = format!("({last}"),
                _ => return Ok(n),
            }
        }
    }

    /// Every durable consumer under the prefix (a definition hash
    /// `{ns}:c:{name}`), with its backlog.
    pub(crate) async fn list_consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let prefix = self.keys().consumer("");
        let mut conn = self.conn();
        let mut names = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .arg("TYPE")
                .arg("hash")
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "listing consumers failed"))?;
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
        names.sort();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let def: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.keys().consumer(&name))
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "reading a consumer definition failed"))?;
            let Some(pattern) = def.get("pattern") else {
                continue;
            };
            let lazy_start = def.get("lazy_start").map_or("0", String::as_str);
            let backlog = match SubjectPattern::new(pattern.as_str()) {
                Ok(p) => self.backlog_of(&name, &p, lazy_start).await?,
                Err(_) => Backlog::default(),
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
