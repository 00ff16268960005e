//! A durable consumer on the memory store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{MemoryTransport, NAME};
use crate::backend::{seq_token, token_seq};
use crate::error::{Error, ErrorKind, Result};
use crate::packet::Received;
use crate::transport::{Backlog, Delivery, DurableConsumer, Position};

#[derive(Debug)]
pub(super) struct MemoryConsumer {
    pub(super) transport: MemoryTransport,
    pub(super) name: String,
    pub(super) malformed: AtomicU64,
}

impl MemoryConsumer {
    /// Its state left the store (it cannot: consumers are never removed).
    fn gone(&self) -> Error {
        Error::new(
            ErrorKind::NotFound,
            NAME,
            format!("consumer {} is gone", self.name),
        )
    }

    fn try_take(&self, max: usize) -> Result<Vec<Delivery>> {
        let mut st = self.transport.lock();
        st.prune(&self.transport.shared.config.retention);
        let st = &mut *st;
        let next = st.first_seq + st.log.len() as u64;
        let c = st
            .consumers
            .get_mut(&self.name)
            .ok_or_else(|| self.gone())?;
        let now = Instant::now();
        let mut out = Vec::new();
        let mut picked: Vec<(u64, u32)> = Vec::new();
        for (&seq, &(due, n)) in c.pending.iter() {
            if out.len() + picked.len() >= max {
                break;
            }
            if due <= now {
                picked.push((seq, n + 1));
            }
        }
        for (seq, n) in picked {
            c.pending.insert(seq, (now + c.ack_wait, n));
            let Some(s) = seq
                .checked_sub(st.first_seq)
                .and_then(|i| st.log.get(i as usize))
            else {
                c.pending.remove(&seq);
                continue;
            };
            match Received::decode_with_known_id(&*s.subject, &s.body, s.id) {
                Ok(received) => out.push(Delivery {
                    received,
                    position: Position::Sequence(seq),
                    delivery_count: n,
                    token: seq_token(seq),
                }),
                Err(_) => {
                    c.pending.remove(&seq);
                }
            }
        }
        while out.len() < max && c.cursor < next {
            let s = &st.log[(c.cursor - st.first_seq) as usize];
            c.cursor += 1;
            if !c.pattern.matches(&s.subject) {
                continue;
            }
            match Received::decode_with_known_id(&*s.subject, &s.body, s.id) {
                Ok(received) => {
                    c.pending.insert(s.seq, (now + c.ack_wait, 1));
                    out.push(Delivery {
                        received,
                        position: Position::Sequence(s.seq),
                        delivery_count: 1,
                        token: seq_token(s.seq),
                    });
                }
                Err(e) => {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(consumer = %self.name, subject = %s.subject, seq = s.seq, error = %e, "skipping malformed message");
                }
            }
        }
        Ok(out)
    }

    fn next_due(&self) -> Option<Instant> {
        let st = self.transport.lock();
        st.consumers
            .get(&self.name)
            .and_then(|c| c.pending.values().map(|(d, _)| *d).min())
    }
}

#[async_trait]
impl DurableConsumer for MemoryConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.transport.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.try_take(max.max(1))?;
            if !got.is_empty() {
                return Ok(got);
            }
            let mut until = deadline;
            if let Some(due) = self.next_due() {
                until = until.min(tokio::time::Instant::from_std(due));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let mut st = self.transport.lock();
        let c = st
            .consumers
            .get_mut(&self.name)
            .ok_or_else(|| self.gone())?;
        let seqs = deliveries
            .iter()
            .map(|d| token_seq(NAME, d))
            .collect::<Result<Vec<_>>>()?;
        for seq in seqs {
            c.pending.remove(&seq);
        }
        Ok(())
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let seq = token_seq(NAME, delivery)?;
        {
            let mut st = self.transport.lock();
            if let Some(c) = st.consumers.get_mut(&self.name) {
                if let Some(p) = c.pending.get_mut(&seq) {
                    p.0 = Instant::now() + delay;
                }
            }
        }
        self.transport.shared.notify.notify_waiters();
        Ok(())
    }

    fn malformed_skipped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    async fn backlog(&self) -> Result<Backlog> {
        let mut st = self.transport.lock();
        st.prune(&self.transport.shared.config.retention);
        let c = st.consumers.get(&self.name).ok_or_else(|| self.gone())?;
        Ok(st.backlog(c))
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
