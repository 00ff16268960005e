//! Ack (commit up to the first unacked delivery of each partition) and nak
//! (deliver again from the in-flight table after a delay).

use std::time::{Duration, Instant};

use qis_core::backend::token_value;
use qis_core::{Delivery, Error, ErrorKind, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{KafkaAck, KafkaConsumer};
use crate::error::{join_error, kafka_error};
use crate::NAME;

/// A commit refused because the group is moving partitions.
fn is_rebalance_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::NoOffset
                | RDKafkaErrorCode::State
                | RDKafkaErrorCode::AssignmentLost
        )
    )
}

impl KafkaConsumer {
    /// Drop the deliveries from the in-flight table and commit each
    /// partition's frontier that moved. A commit that does not finish
    /// within the request timeout (brokers that accept connections without
    /// answering) is a [`Timeout`](ErrorKind::Timeout): the acks stay
    /// recorded and are committed by a later ack or by `close`.
    pub(super) async fn ack_deliveries(&self, deliveries: &[Delivery]) -> Result<()> {
        let consumer = self.consumer()?;
        let tokens = deliveries
            .iter()
            .map(|d| token_value::<KafkaAck>(NAME, d).map(|t| (t.partition, t.offset)))
            .collect::<Result<Vec<_>>>()?;
        let sh = self.shared.clone();
        {
            let mut st = sh.lock();
            let not_held = tokens
                .iter()
                .filter(|&&(partition, offset)| !st.ack(partition, offset))
                .count();
            if not_held > 0 {
                tracing::debug!(consumer = %sh.name, not_held, "acks of deliveries this member no longer holds (their partition moved, or they were acked already): the partition's owner delivers them again");
            }
        }
        let timeout = sh.request_timeout;
        let task = tokio::task::spawn_blocking(move || {
            // Offsets are chosen and committed under the gate, so they
            // cannot reach the broker after a rebalance moved a partition.
            let Some(_gate) = sh.gate() else {
                return Err(None);
            };
            let offsets = sh.lock().pending_commits();
            if offsets.is_empty() {
                return Ok(());
            }
            consumer
                .commit(&sh.commit_list(&offsets), CommitMode::Sync)
                .map_err(|e| {
                    // Still under the gate: a revoke that follows sees these
                    // offsets as not committed.
                    sh.commit_failed(&offsets);
                    Some(e)
                })
        });
        let unfinished = || {
            Error::new(
                ErrorKind::Timeout,
                NAME,
                format!(
                    "the commit of consumer {}'s acks did not finish within {timeout:?}: check the brokers; the acks are kept and committed with a later ack or on close",
                    self.shared.name
                ),
            )
        };
        let result = match tokio::time::timeout(timeout, task).await {
            Err(_) => return Err(unfinished()),
            Ok(joined) => joined.map_err(|e| join_error("committing offsets", e))?,
        };
        match result {
            Ok(()) => Ok(()),
            Err(None) => Err(unfinished()),
            Err(Some(e)) if is_rebalance_error(&e) => {
                // The group is moving partitions; their next owner starts
                // from the last commit (at-least-once).
                tracing::debug!(consumer = %self.shared.name, error = %e, "ack commit refused during a rebalance");
                Ok(())
            }
            Err(Some(e)) => Err(kafka_error(
                format!("could not commit acks of consumer {}", self.shared.name),
                e,
            )),
        }
    }

    /// Make the delivery due again after `delay`.
    pub(super) async fn nak_delivery(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let t = token_value::<KafkaAck>(NAME, delivery)?;
        {
            let mut st = self.shared.lock();
            if let Some(f) = st
                .parts
                .get_mut(&t.partition)
                .and_then(|p| p.in_flight.get_mut(&t.offset))
            {
                f.due = Instant::now() + delay;
            }
        }
        self.shared.notify.notify_waiters();
        Ok(())
    }
}
