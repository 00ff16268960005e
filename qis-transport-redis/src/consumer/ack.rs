//! `XACK` grouped by stream, and the nak script (the idle time reset, or
//! the delayed set).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, LazyLock};

use qis_core::Result;
use redis::{Script, ToRedisArgs};

use super::{EntryId, RedisConsumer};
use crate::error::redis_error;

/// Hands a delivery back to be claimed again after a delay (see
/// `lua/nak.lua`).
pub(crate) static NAK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/nak.lua")));

/// Pairs grouped by their key, in the order each key first comes.
/// Deliveries come in runs of one stream (a fetch reads stream by stream),
/// so the group is looked up when the key changes, not hashed per item.
fn group_runs<K: Copy + Eq + Hash, V>(items: impl IntoIterator<Item = (K, V)>) -> Vec<(K, Vec<V>)> {
    let mut groups: Vec<(K, Vec<V>)> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut last = usize::MAX;
    for (k, v) in items {
        if groups.get(last).is_none_or(|(g, _)| *g != k) {
            last = *index.entry(k).or_insert_with(|| {
                groups.push((k, Vec::new()));
                groups.len() - 1
            });
        }
        groups[last].1.push(v);
    }
    groups
}

impl RedisConsumer {
    /// `XACK` the deliveries of these tokens (`[stream number, ms, seq]`),
    /// one command per stream, pipelined. Deliveries from a stream deleted
    /// since are skipped: their entries are gone.
    pub(super) async fn ack_tokens(&self, tokens: &[[u64; 3]]) -> Result<()> {
        let by_number = group_runs(
            tokens
                .iter()
                .map(|&[stream, ms, seq]| (stream, EntryId { ms, seq })),
        );
        let mut gone = 0usize;
        let by_key: Vec<(Arc<str>, Vec<EntryId>)> = {
            let ids = self.stream_ids();
            by_number
                .into_iter()
                .filter_map(|(stream, entries)| match ids.key(stream) {
                    Some(key) => Some((Arc::clone(key), entries)),
                    None => {
                        gone += entries.len();
                        None
                    }
                })
                .collect()
        };
        if gone > 0 {
            tracing::debug!(consumer = %self.name, gone, "acks of deliveries whose stream was deleted: nothing to ack");
        }
        self.send_xacks(&by_key).await
    }

    /// `XACK` `(stream, entry id)` pairs, one command per stream, pipelined.
    pub(super) async fn xack<'a, I: ToRedisArgs>(
        &self,
        items: impl Iterator<Item = (&'a str, I)>,
    ) -> Result<()> {
        self.send_xacks(&group_runs(items)).await
    }

    /// One `XACK` per stream with its entry ids, pipelined.
    async fn send_xacks<K: AsRef<str>, I: ToRedisArgs>(
        &self,
        groups: &[(K, Vec<I>)],
    ) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (stream, ids) in groups {
            pipe.cmd("XACK")
                .arg(stream.as_ref())
                .arg(&self.name)
                .arg(ids)
                .ignore();
        }
        let mut conn = self.transport.conn();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("ack for consumer {} failed", self.name)))
    }
}
