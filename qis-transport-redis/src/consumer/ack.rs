//! Ack (`XACK`) and nak (the idle time reset, or the delayed set).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use qis_core::backend::token_value;
use qis_core::{Delivery, Result};
use redis::{Script, Value};
use tokio::time::Instant;

use super::{RedisAck, RedisConsumer, MEMBER};
use crate::error::redis_error;
use crate::NAME;

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

    pub(super) async fn ack_deliveries(&self, deliveries: &[Delivery]) -> Result<()> {
        let tokens = deliveries
            .iter()
            .map(|d| token_value::<RedisAck>(NAME, d))
            .collect::<Result<Vec<_>>>()?;
        self.xack(tokens.iter().map(|t| (&*t.stream, t.entry.as_str())))
            .await
    }

    pub(super) async fn nak_delivery(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let t = token_value::<RedisAck>(NAME, delivery)?;
        let mut inv = NAK.prepare_invoke();
        inv.key(&*t.stream)
            .key(&self.delayed_key)
            .key(&self.def_key)
            .arg(&self.name)
            .arg(MEMBER)
            .arg(&t.entry)
            .arg(self.ack_wait().as_millis() as u64)
            .arg(delay.as_millis() as u64);
        let mut conn = self.transport.conn();
        let _: Value = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, &format!("nak for consumer {} failed", self.name)))?;
        self.bring_claim_forward(Instant::now() + delay);
        Ok(())
    }
}
