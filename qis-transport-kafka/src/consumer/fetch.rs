//! Fetching: redeliveries of expired or nak'd deliveries first, then the
//! records the poller thread read ahead, one partition at a time in turn.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use qis_core::{Delivery, Position, Received, Result};
use rdkafka::consumer::{CommitMode, Consumer};

use super::group::GroupConsumer;
use super::state::{Buffered, InFlight};
use super::{ack_token, KafkaConsumer};
use crate::record::{decode, Decoded};

impl KafkaConsumer {
    /// Up to `max` deliveries, as soon as there is one, or none after `wait`.
    pub(super) async fn fetch_deliveries(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let consumer = self.consumer()?;
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // (The checking layer refuses 0.)
            let (got, next_due) = self.take(max.max(1));
            self.commit_skipped(&consumer);
            drop(consumer);
            if !got.is_empty() {
                return Ok(got);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_due
                .map(tokio::time::Instant::from_std)
                .map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Take up to `max` deliveries: expired in-flight ones first, then new
    /// records. Returns them and when the next in-flight delivery expires.
    fn take(&self, max: usize) -> (Vec<Delivery>, Option<Instant>) {
        let sh = &self.shared;
        let now = Instant::now();
        let mut st = sh.lock();
        let st = &mut *st;
        let mut out = Vec::with_capacity(max.min(st.buffered + 16));

        // Redeliveries.
        'parts: for (&p, part) in st.parts.iter_mut() {
            for (offset, f) in part.in_flight.iter_mut() {
                if out.len() >= max {
                    break 'parts;
                }
                if f.due <= now {
                    // It decoded when first delivered; it decodes again.
                    if let Decoded::Packet(received) = decode(&sh.prefix, &sh.pattern, &f.record) {
                        f.count += 1;
                        f.due = now + sh.ack_wait;
                        tracing::debug!(consumer = %sh.name, subject = %received.subject, id = %received.id, partition = p, offset, count = f.count, "redelivering");
                        out.push(self.delivery(p, offset, received, f.count));
                    }
                }
            }
        }

        // New records, one partition at a time in turn.
        let mut progressed = true;
        while out.len() < max && st.buffered > 0 && progressed {
            progressed = false;
            for (&p, part) in st.parts.iter_mut() {
                if out.len() >= max {
                    break;
                }
                let Some(Buffered { record: r, decoded }) = part.buffer.pop_front() else {
                    continue;
                };
                st.buffered -= 1;
                st.buffered_bytes -= r.size();
                progressed = true;
                if part.handled_next.is_some_and(|n| r.offset < n) {
                    continue;
                }
                part.handled_next = Some(r.offset + 1);
                match decoded {
                    Decoded::Packet(received) => {
                        out.push(self.delivery(p, r.offset, received, 1));
                        let offset = r.offset;
                        let f = InFlight {
                            record: r,
                            due: now + sh.ack_wait,
                            count: 1,
                        };
                        part.in_flight.insert(offset, f);
                    }
                    Decoded::Other => {}
                    Decoded::Malformed { subject, reason } => {
                        sh.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(consumer = %sh.name, %subject, partition = p, offset = r.offset, %reason, "skipping malformed record");
                    }
                }
            }
        }

        let next_due = st
            .parts
            .values()
            .flat_map(|part| part.in_flight.values().map(|f| f.due))
            .min();
        (out, next_due)
    }

    /// A delivery of `received`, read at `partition` / `offset`.
    fn delivery(&self, partition: i32, offset: i64, received: Received, count: u32) -> Delivery {
        Delivery {
            received,
            position: Position::Offset { partition, offset },
            delivery_count: count,
            token: ack_token(partition, offset),
        }
    }

    /// Commit in the background what skipped records allow on partitions
    /// with nothing in flight (else the next ack commits it). Skipped when a
    /// commit is under way: losing it costs a re-read of records this
    /// consumer does not want.
    fn commit_skipped(&self, consumer: &GroupConsumer) {
        let sh = &self.shared;
        let Some(_gate) = sh.try_gate() else {
            return;
        };
        let offsets = sh.lock().skipped_commits();
        if offsets.is_empty() {
            return;
        }
        if let Err(e) = consumer.commit(&sh.commit_list(&offsets), CommitMode::Async) {
            tracing::debug!(consumer = %sh.name, error = %e, "could not queue an offset commit");
            sh.commit_failed(&offsets);
        }
    }
}
