//! `XACK` grouped by stream, and the nak script (the idle time reset, or
//! the delayed set).

use std::collections::HashMap;
use std::sync::LazyLock;

use qis_core::Result;
use redis::{Script, ToRedisArgs};

use super::{EntryId, RedisConsumer};
use crate::error::redis_error;

/// Hands a delivery back to be claimed again after a delay (see
/// `lua/nak.lua`).
pub(crate) static NAK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/nak.lua")));

impl RedisConsumer {
    /// `XACK` the deliveries of these tokens (`[stream number, ms, seq]`),
    /// one command per stream, pipelined. Deliveries from a stream deleted
    /// since are skipped: their entries are gone.
    pub(super) async fn ack_tokens(&self, tokens: &[[u64; 3]]) -> Result<()> {
        // Tokens come in runs of one stream (a fetch reads stream by
        // stream): the run's group is looked up when the number changes.
        let mut groups: Vec<(u64, Vec<EntryId>)> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut last = usize::MAX;
        for &[stream, ms, seq] in tokens {
            if groups.get(last).is_none_or(|(g, _)| *g != stream) {
                last = *index.entry(stream).or_insert_with(|| {
                    groups.push((stream, Vec::new()));
                    groups.len() - 1
                });
            }
            groups[last].1.push(EntryId { ms, seq });
        }
        let mut pipe = redis::pipe();
        let mut gone = 0usize;
        {
            let ids = self.stream_ids();
            for (stream, entries) in &groups {
                match ids.key(*stream) {
                    Some(key) => {
                        pipe.cmd("XACK")
                            .arg(&**key)
                            .arg(&self.name)
                            .arg(entries)
                            .ignore();
                    }
                    None => gone += entries.len(),
                }
            }
        }
        if gone > 0 {
            tracing::debug!(consumer = %self.name, gone, "acks of deliveries whose stream was deleted: nothing to ack");
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let mut conn = self.transport.conn();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("ack for consumer {} failed", self.name)))
    }

    /// `XACK` `(stream, entry id)` pairs, one command per stream, pipelined.
    pub(super) async fn xack<'a, I: ToRedisArgs>(
        &self,
        items: impl Iterator<Item = (&'a str, I)>,
    ) -> Result<()> {
        // Deliveries come in runs of one stream (a fetch reads stream by
        // stream): the group is looked up when the stream changes, not
        // hashed per delivery.
        let mut groups: Vec<(&str, Vec<I>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut last = usize::MAX;
        for (s, id) in items {
            if groups.get(last).is_none_or(|(g, _)| *g != s) {
                last = *index.entry(s).or_insert_with(|| {
                    groups.push((s, Vec::new()));
                    groups.len() - 1
                });
            }
            groups[last].1.push(id);
        }
        if groups.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (s, ids) in &groups {
            pipe.cmd("XACK").arg(*s).arg(&self.name).arg(ids).ignore();
        }
        let mut conn = self.transport.conn();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("ack for consumer {} failed", self.name)))
    }
}
