//! Committing acks: up to the first unacked delivery of each partition.

use std::sync::Arc;

use qis_core::{Error, ErrorKind, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{GroupConsumer, KafkaConsumer};
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
    /// Commit each partition's frontier that moved, if any. A commit that
    /// does not finish within the request timeout (brokers that accept
    /// connections without answering) is a [`Timeout`](ErrorKind::Timeout):
    /// the acks stay recorded and are committed by a later ack or by `close`.
    pub(super) async fn commit(&self, consumer: Arc<GroupConsumer>) -> Result<()> {
        let sh = self.shared.clone();
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
}
