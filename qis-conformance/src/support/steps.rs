//! One-line test steps: the transport calls every test makes, each failing
//! with a message that says which step it was.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use qis_core::backend::InjectRaw;
use qis_core::{
    Checked, Delivery, DurableConsumer, Error, ErrorKind, LiveSubscription, OutcomePacket,
    OutcomeTransport, OutcomeTransportExt, Receipt, StartPosition, Subject, SubjectPattern,
    DEFAULT_ACK_WAIT,
};

use super::{collect, context, pkt, quiet, seq_of, CaseResult};

/// Deposit `packet` on its readable subject; its receipt.
pub async fn deposit_one(
    transport: &dyn OutcomeTransport,
    packet: &OutcomePacket,
) -> Result<Receipt, String> {
    transport.deposit(packet).await.map_err(context("deposit"))
}

/// Deposit packets `seqs` from `agent` on `domain`/`problem` (built by
/// [`pkt`]) in one batch; their receipts in order.
pub async fn deposit_seqs(
    transport: &dyn OutcomeTransport,
    agent: &str,
    domain: &str,
    problem: &str,
    seqs: Range<usize>,
) -> Result<Vec<Receipt>, String> {
    let packets: Vec<_> = seqs.map(|i| pkt(agent, domain, problem, i)).collect();
    transport
        .deposit_batch(&packets)
        .await
        .map_err(context("deposit"))
}

/// Open (create or resume) the durable consumer `name` on `pattern`,
/// starting with all history, with `ack_wait`.
pub async fn consumer_from_start(
    transport: &dyn OutcomeTransport,
    name: &str,
    pattern: &str,
    ack_wait: Duration,
) -> Result<Arc<dyn DurableConsumer>, String> {
    super::consumer(transport, name, pattern, StartPosition::All, ack_wait).await
}

/// Open (create or resume) the durable consumer `name` on `pattern`,
/// starting with what is deposited after it is created
/// ([`StartPosition::New`]), with `ack_wait`.
pub async fn consumer_from_now(
    transport: &dyn OutcomeTransport,
    name: &str,
    pattern: &str,
    ack_wait: Duration,
) -> Result<Arc<dyn DurableConsumer>, String> {
    super::consumer(transport, name, pattern, StartPosition::New, ack_wait).await
}

/// [`consumer_from_start`] with the default ack wait: the consumer a
/// default [`ConsumerConfig`](qis_core::ConsumerConfig) opens.
pub async fn open_consumer(
    transport: &dyn OutcomeTransport,
    name: &str,
    pattern: &str,
) -> Result<Arc<dyn DurableConsumer>, String> {
    consumer_from_start(transport, name, pattern, DEFAULT_ACK_WAIT).await
}

/// [`consumer_from_start`] on everything under `prefix` (`{prefix}.>`).
pub async fn reader(
    transport: &dyn OutcomeTransport,
    name: &str,
    prefix: &Subject,
    ack_wait: Duration,
) -> Result<Arc<dyn DurableConsumer>, String> {
    consumer_from_start(transport, name, &format!("{prefix}.>"), ack_wait).await
}

/// One fetch of at most `max` deliveries, waiting up to `wait`; nothing is
/// acked. For a wait until a number arrived, see [`collect`](super::collect).
pub async fn fetch_once(
    consumer: &Arc<dyn DurableConsumer>,
    max: usize,
    wait: Duration,
) -> Result<Vec<Delivery>, String> {
    consumer.fetch(max, wait).await.map_err(context("fetch"))
}

/// `result` must be refused with an error of `kind`: returns the error for
/// further checks, or fails with `<what> was accepted` or
/// `<what> gave <error>`.
pub fn refused<T>(
    what: &str,
    kind: ErrorKind,
    result: qis_core::Result<T>,
) -> Result<Error, String> {
    match result {
        Ok(_) => Err(format!("{what} was accepted; expected a {kind:?} error")),
        Err(err) if err.kind() == kind => Ok(err),
        Err(err) => Err(format!("{what} gave {err}; expected a {kind:?} error")),
    }
}

/// Open a live subscription on `pattern`.
pub async fn subscribe(
    transport: &dyn OutcomeTransport,
    pattern: &str,
) -> Result<LiveSubscription, String> {
    let pattern = SubjectPattern::new(pattern).map_err(context("pattern"))?;
    transport
        .subscribe(pattern)
        .await
        .map_err(context("subscribe"))
}

/// The next delivery (acked, within 10 s) must be the packet of `want`;
/// fails with `<what>` and the packet that came instead.
pub async fn next_is(
    consumer: &Arc<dyn DurableConsumer>,
    want: &Receipt,
    what: &str,
) -> CaseResult {
    let got = collect(consumer, 1, Duration::from_secs(10)).await?;
    if got[0].id() == want.id {
        Ok(())
    } else {
        Err(format!(
            "{what}: got packet {} (seq {}) on {}",
            got[0].id(),
            seq_of(&got[0]),
            got[0].subject()
        ))
    }
}

/// Nothing more arrives for `consumer` within `window` (whatever does is
/// acked); fails with `<what>` and how many came.
pub async fn nothing_more(
    consumer: &Arc<dyn DurableConsumer>,
    window: Duration,
    what: &str,
) -> CaseResult {
    let more = quiet(consumer, window).await?;
    if more.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {} more deliveries", more.len()))
    }
}

/// What a foreign publisher of garbage does, for
/// [`Backend::inject_raw`](crate::Backend::inject_raw): `writer`, a
/// connection of its own, writes `body` on `subject` with no checks, then
/// closes. The write's error first, then the close's.
pub async fn inject_once<T>(writer: Checked<T>, subject: &str, body: &[u8]) -> qis_core::Result<()>
where
    T: InjectRaw + OutcomeTransport,
{
    let sent = writer.inject_raw(subject, body).await;
    let closed = writer.close().await;
    sent.and(closed)
}
