//! Riding out a JetStream cluster's leader election: which failures a retry
//! can cure, how long and how often to retry, and noticing that the server
//! this connection talks to has stopped answering.
//!
//! When a stream leader is lost, its followers elect another after their
//! Raft election timeout (4 to 9 s). Meanwhile a publish gets no answer (it
//! went to the lost leader), "no responders" (nobody takes the subject yet)
//! or a "temporarily unavailable" error. Each is retried with the same
//! `Nats-Msg-Id`, so a packet whose first attempt was stored after all is
//! recognised as a duplicate instead of being stored twice.

use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::ErrorCode;
use tokio::time::Instant;

use crate::NatsTransport;

/// The first pause between two attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How long the connection's own server may take to answer a probe before
/// the client is made to reconnect to another one.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// "Duplicate message id is in process": an earlier publish with the same
/// `Nats-Msg-Id` is proposed but not yet stored (no quorum yet).
const DUPLICATE_IN_PROCESS: ErrorCode = ErrorCode(10158);

/// A failed publish that another attempt with the same `Nats-Msg-Id` may cure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transient {
    /// No ack in time: the message may or may not be stored.
    NoAck,
    /// "No responders": no stream leader takes the subject right now (or
    /// the stream is gone, which is checked once).
    NoResponders,
    /// The connection broke before the ack came.
    ConnectionLost,
    /// The server said it cannot take it right now (no leader, no quorum).
    Unavailable,
    /// The server is still storing an earlier attempt with the same id
    /// (its leader waits for the others): its outcome is not known yet.
    InProcess,
}

impl Transient {
    /// What happened, in words.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Transient::NoAck => "no publish ack in time",
            Transient::NoResponders => "no responders (no stream leader)",
            Transient::ConnectionLost => "the connection broke",
            Transient::Unavailable => "JetStream temporarily unavailable",
            Transient::InProcess => "an earlier attempt with the same id is still in process",
        }
    }
}

/// Whether another attempt may cure `e`, and why.
pub(crate) fn transient(e: &PublishError) -> Option<Transient> {
    match e.kind() {
        PublishErrorKind::TimedOut => Some(Transient::NoAck),
        PublishErrorKind::StreamNotFound => Some(Transient::NoResponders),
        PublishErrorKind::BrokenPipe => Some(Transient::ConnectionLost),
        PublishErrorKind::Other => {
            let je =
                std::error::Error::source(e)?.downcast_ref::<async_nats::jetstream::Error>()?;
            if je.error_code() == DUPLICATE_IN_PROCESS {
                return Some(Transient::InProcess);
            }
            let during_election = matches!(
                je.error_code(),
                ErrorCode::CLUSTER_NOT_AVAILABLE
                    | ErrorCode::CLUSTER_NOT_LEADER
                    | ErrorCode::CLUSTER_NOT_ASSIGNED
            );
            (during_election || je.code() == 503).then_some(Transient::Unavailable)
        }
        _ => None,
    }
}

/// How long retries may go on: `retry_for`, but at most half the
/// de-duplication window, so that the server still recognises a retry of a
/// packet it stored after all.
pub(crate) fn retry_limit(config: &crate::NatsConfig) -> Duration {
    let window = config.dedup_window.min(config.retention.max_age);
    config.retry_for.min(window / 2)
}

/// The retries of one deposit (or of opening a consumer): a short, growing pause between attempts,
/// until [`NatsConfig::retry_for`](crate::NatsConfig::retry_for) has passed
/// since the first failure.
#[derive(Debug)]
pub(crate) struct Retries {
    retry_for: Duration,
    started: Option<Instant>,
    pause: Duration,
    /// Failed attempts so far.
    pub(crate) failures: u32,
}

impl Retries {
    /// Retries for `retry_for`; with `at_once`, the first goes without a pause.
    pub(crate) fn new(retry_for: Duration, at_once: bool) -> Self {
        Retries {
            retry_for,
            started: None,
            pause: if at_once {
                Duration::ZERO
            } else {
                FIRST_BACKOFF
            },
            failures: 0,
        }
    }

    /// After a failed attempt: how long to pause before the next one, or
    /// `None` when the time for retries is over.
    pub(crate) fn after_failure(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        self.failures += 1;
        let left = (started + self.retry_for).saturating_duration_since(now);
        if left.is_zero() {
            return None;
        }
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        Some(pause)
    }

    /// How long since the first failure.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// Lost races against another handle changing the same stream or consumer
/// while this one creates or opens it: each is a reason to look again,
/// until the third.
#[derive(Debug, Default)]
pub(crate) struct Races(u32);

impl Races {
    /// Count one more; at the third,
    /// [`ErrorKind::Backend`](qis_core::ErrorKind::Backend) saying `what`
    /// `name` kept changing while it was being `done` (`opened`).
    pub(crate) fn lost(&mut self, what: &str, name: &str, done: &str) -> qis_core::Result<()> {
        self.0 += 1;
        if self.0 >= 3 {
            return Err(crate::error::err(
                qis_core::ErrorKind::Backend,
                format!("{what} {name} kept changing while it was being {done}: try again"),
            ));
        }
        Ok(())
    }
}

impl NatsTransport {
    /// Make sure the server this connection talks to still answers: a
    /// server that is stopped (not dead: its TCP connection stays open)
    /// answers nothing, and the client would only notice after several
    /// missed pings. If a round trip takes longer than [`PROBE_WAIT`], make
    /// the client reconnect, to another server of the cluster when there is
    /// one. One probe at a time; the callers that waited find it answered.
    pub(crate) async fn check_server(&self) {
        let _one_at_a_time = self.inner.probe.lock().await;
        if self.inner.client.connection_state() != async_nats::connection::State::Connected {
            // Already reconnecting.
            return;
        }
        let answered = tokio::time::timeout(PROBE_WAIT, self.round_trip()).await;
        if !matches!(answered, Ok(Ok(()))) {
            tracing::warn!(
                transport = crate::NAME,
                server = %self.inner.client.server_info().server_name,
                "the server does not answer within {PROBE_WAIT:?}: reconnecting, to another server of the cluster if there is one"
            );
            if let Err(e) = self.inner.client.force_reconnect().await {
                tracing::warn!(transport = crate::NAME, error = %e, "could not ask the client to reconnect");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_stop_at_the_deadline() {
        let mut r = Retries::new(Duration::from_secs(60), false);
        let pauses: Vec<_> = (0..6).map(|_| r.after_failure().unwrap()).collect();
        assert_eq!(pauses[0], FIRST_BACKOFF);
        assert_eq!(pauses[1], FIRST_BACKOFF * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_BACKOFF);
        assert_eq!(r.failures, 6);
        let mut never = Retries::new(Duration::ZERO, false);
        assert_eq!(never.after_failure(), None);
        let mut quick = Retries::new(Duration::from_secs(60), true);
        assert_eq!(quick.after_failure(), Some(Duration::ZERO));
        assert_eq!(quick.after_failure(), Some(FIRST_BACKOFF));
    }

    #[test]
    fn retries_stay_within_the_dedup_window() {
        use crate::NatsConfig;
        let c = NatsConfig::default();
        assert_eq!(retry_limit(&c), c.retry_for);
        let short = NatsConfig::default().dedup_window(Duration::from_secs(10));
        assert_eq!(retry_limit(&short), Duration::from_secs(5));
        let young = NatsConfig::default().max_age(Duration::from_secs(4));
        assert_eq!(retry_limit(&young), Duration::from_secs(2));
    }

    #[test]
    fn which_publish_failures_are_transient() {
        let e = |k| PublishError::new(k);
        assert_eq!(
            transient(&e(PublishErrorKind::TimedOut)),
            Some(Transient::NoAck)
        );
        assert_eq!(
            transient(&e(PublishErrorKind::StreamNotFound)),
            Some(Transient::NoResponders)
        );
        assert_eq!(
            transient(&e(PublishErrorKind::BrokenPipe)),
            Some(Transient::ConnectionLost)
        );
        assert_eq!(transient(&e(PublishErrorKind::WrongLastSequence)), None);
        assert_eq!(transient(&e(PublishErrorKind::Other)), None);
        let from_server = |json: &str| {
            let je: async_nats::jetstream::Error = serde_json::from_str(json).unwrap();
            PublishError::with_source(PublishErrorKind::Other, je)
        };
        assert_eq!(
            transient(&from_server(
                r#"{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}"#
            )),
            Some(Transient::Unavailable)
        );
        assert_eq!(
            transient(&from_server(
                r#"{"code":500,"err_code":10009,"description":"JetStream cluster can not handle request"}"#
            )),
            Some(Transient::Unavailable)
        );
        assert_eq!(
            transient(&from_server(
                r#"{"code":409,"err_code":10158,"description":"duplicate message id is in process"}"#
            )),
            Some(Transient::InProcess)
        );
        assert_eq!(
            transient(&from_server(
                r#"{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}"#
            )),
            None
        );
    }
}
