//! `XACK` grouped by stream, and the nak script (the idle time reset, or
//! the delayed set).

use std::collections::HashMap;
use std::sync::LazyLock;

use qis_core::Result;
use redis::Script;

use super::RedisConsumer;
use crate::error::redis_error;

/// Hands a delivery back to be claimed again after a delay (see
/// `lua/nak.lua`).
pub(crate) static NAK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/nak.lua")));

impl RedisConsumer {
    /// `XACK` `(stream, entry id)` pairs, one command per stream, pipelined.
    pub(super) async fn xack<'a>(
        &self,
        items: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        // Deliveries come in runs of one stream (a fetch reads stream by
        // stream): the group is looked up when the stream changes, not
        // hashed per delivery.
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
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
