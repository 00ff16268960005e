//! Durable consumers on Redis beyond the shared suite, against the server at
//! `QIS_REDIS_URL`: naks held past the ack wait do not hold back other
//! redeliveries, the ack wait is the consumer's (stored with it), `close()`
//! ends a fetch in flight, the backlog counts what is waiting and what is
//! unacked, and `consumers()` lists every consumer with that backlog.
//!
//! Without the server the cases are ignored with the reason (a failure with
//! `QIS_REQUIRE_LIVE=1`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

mod common;

use common::live::{connect_with, deposit, live_trials, raw, until_swept};
use qis_conformance::ensure;
use qis_conformance::support::{
    collect, collect_unacked, consumer_from_now, consumer_from_start, context, fetch_once,
    CaseResult,
};
use qis_core::{Backlog, Checked, DurableConsumer, ErrorKind, OutcomeTransport, Position, Subject};
use qis_transport_redis::RedisTransport;

/// Fetch on `c` until a delivery of `id` (`what`) arrives; fails after 5 s.
async fn until_back(
    c: &std::sync::Arc<dyn DurableConsumer>,
    id: qis_core::PacketId,
    what: &str,
) -> Result<qis_core::Delivery, String> {
    let within = Duration::from_secs(5);
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "{what} did not come back within {within:?}"
        );
        let got = fetch_once(c, 1, left.min(Duration::from_millis(500))).await?;
        if let Some(d) = got.into_iter().find(|d| d.id() == id) {
            return Ok(d);
        }
    }
}

/// A delivery nak'd with a delay longer than the ack wait does not hold
/// back the redelivery of another unacked delivery on the same stream, even
/// when fetches ask for one at a time.
async fn held_nak_does_not_hold_back_other_redeliveries(
    url: String,
    prefix: Subject,
) -> CaseResult {
    let t = connect_with(&url, &prefix, |c| c).await?;
    let held = deposit(&t, &prefix, "held", 1).await?;
    let other = deposit(&t, &prefix, "held", 2).await?;
    let ack_wait = Duration::from_millis(500);
    let c = consumer_from_start(&t, "patient", &format!("{prefix}.hvac.held"), ack_wait).await?;
    let first = collect_unacked(&c, 2, Duration::from_secs(5)).await?;
    let to_hold = first
        .iter()
        .find(|d| d.id() == held.id)
        .ok_or("the first packet was not delivered")?;
    c.nak(to_hold, Duration::from_secs(20))
        .await
        .map_err(context("nak"))?;
    // The other one was neither acked nor nak'd: it is due after the ack
    // wait, and must come back then, not after the 20 s hold of the first.
    let again = until_back(&c, other.id, "the unacked packet behind a held one").await?;
    ensure!(
        again.delivery_count >= 2,
        "redelivery count {}",
        again.delivery_count
    );
    c.ack(&[again]).await.map_err(context("ack"))?;
    let early = fetch_once(&c, 10, Duration::from_millis(800)).await?;
    ensure!(
        early.iter().all(|d| d.id() != held.id),
        "the packet held for 20 s came back at once"
    );
    Ok(())
}

/// The ack wait is the consumer's, stored with it: opening it again with
/// another ack wait changes it for every handle, including handles opened
/// before with the old one.
async fn reopening_with_another_ack_wait_applies_to_every_handle(
    url: String,
    prefix: Subject,
) -> CaseResult {
    let t = connect_with(&url, &prefix, |c| c).await?;
    let pattern = format!("{prefix}.hvac.waits");
    let r = deposit(&t, &prefix, "waits", 1).await?;
    let long = consumer_from_start(&t, "waiter", &pattern, Duration::from_secs(60)).await?;
    let first = collect_unacked(&long, 1, Duration::from_secs(5)).await?;
    ensure!(first[0].id() == r.id, "fetched another packet");
    let fetched = Instant::now();
    // Another handle shortens the consumer's ack wait to 500 ms ...
    let t2 = connect_with(&url, &prefix, |c| c).await?;
    let short = consumer_from_start(&t2, "waiter", &pattern, Duration::from_millis(500)).await?;
    // ... so the first handle, opened with 60 s, redelivers after 500 ms.
    let what = "the delivery (ack wait shortened to 500 ms by another handle)";
    let again = until_back(&long, r.id, what).await?;
    ensure!(
        fetched.elapsed() >= Duration::from_millis(400),
        "redelivered after {:?}, before the 500 ms ack wait",
        fetched.elapsed()
    );
    // Back to 60 s, from a third handle: the 500 ms handle now waits 60 s.
    let _third = consumer_from_start(&t, "waiter", &pattern, Duration::from_secs(60)).await?;
    drop(again);
    let early = fetch_once(&short, 10, Duration::from_millis(1500)).await?;
    ensure!(
        early.is_empty(),
        "a handle opened with 500 ms redelivered within 1.5 s after the ack wait became 60 s"
    );
    Ok(())
}

/// `close()` on a consumer ends its fetch in flight promptly, with `Closed`
/// or an empty batch; closing the transport does too.
async fn close_ends_a_fetch_in_flight(url: String, prefix: Subject) -> CaseResult {
    for closing in ["consumer", "transport"] {
        let t = connect_with(&url, &prefix, |c| c).await?;
        let c = consumer_from_start(
            &t,
            &format!("closing-{closing}"),
            &format!("{prefix}.hvac.quiet"),
            Duration::from_secs(30),
        )
        .await?;
        let fetching = {
            let c = c.clone();
            tokio::spawn(async move { c.fetch(10, Duration::from_secs(30)).await })
        };
        // Give the fetch time to block on Redis (it must end either way).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let closed = Instant::now();
        match closing {
            "consumer" => c.close().await.map_err(context("close consumer"))?,
            _ => t.close().await.map_err(context("close transport"))?,
        }
        let r = tokio::time::timeout(Duration::from_secs(3), fetching)
            .await
            .map_err(|_| {
                format!("a fetch in flight went on for 3 s after the {closing} was closed")
            })?
            .map_err(context("join"))?;
        match r {
            Ok(batch) => ensure!(
                batch.is_empty(),
                "the fetch returned {} deliveries",
                batch.len()
            ),
            Err(e) => ensure!(
                e.kind() == ErrorKind::Closed,
                "the fetch ended with {e}, not Closed"
            ),
        }
        ensure!(
            closed.elapsed() < Duration::from_secs(2),
            "the fetch took {:?} to end after close",
            closed.elapsed()
        );
    }
    Ok(())
}

async fn backlog_of(c: &std::sync::Arc<dyn DurableConsumer>) -> Result<Backlog, String> {
    c.backlog().await.map_err(context("backlog"))
}

/// `c`'s backlog must be `waiting` and `unacked`; fails saying `when` and
/// what it is instead.
async fn backlog_is(
    c: &std::sync::Arc<dyn DurableConsumer>,
    waiting: u64,
    unacked: u64,
    when: &str,
) -> CaseResult {
    let b = backlog_of(c).await?;
    ensure!(b == Backlog { waiting, unacked }, "{when}: {b:?}");
    Ok(())
}

/// The backlog counts matching entries not yet delivered (across streams,
/// also streams the consumer has not read yet and streams where Redis
/// cannot say the group's lag) and deliveries not yet acked.
async fn backlog_counts_waiting_and_unacked(url: String, prefix: Subject) -> CaseResult {
    let t = connect_with(&url, &prefix, |c| c).await?;
    let mut receipts = Vec::new();
    for i in 0..3 {
        receipts.push(deposit(&t, &prefix, "a", i).await?);
    }
    for i in 3..5 {
        receipts.push(deposit(&t, &prefix, "b", i).await?);
    }
    deposit(&t, &prefix, "elsewhere", 9).await?;
    let pattern = format!("{prefix}.hvac.*");
    let c = consumer_from_start(&t, "counted", &pattern, Duration::from_secs(60)).await?;
    backlog_is(&c, 6, 0, "before any fetch").await?;
    let fetched = collect_unacked(&c, 3, Duration::from_secs(5)).await?;
    backlog_is(&c, 3, 3, "after fetching 3 of 6").await?;
    c.ack(&fetched).await.map_err(context("ack"))?;
    backlog_is(&c, 3, 0, "after acking them").await?;
    // A subject created after the consumer.
    deposit(&t, &prefix, "c", 10).await?;
    backlog_is(&c, 4, 0, "after a deposit on a new subject").await?;
    // An entry deleted in the middle of a stream (XDEL) leaves Redis unable
    // to say the group's lag; the count must stay right.
    let delivered: HashSet<_> = fetched.iter().map(|d| d.id()).collect();
    let waiting_one = receipts
        .iter()
        .find(|r| !delivered.contains(&r.id))
        .ok_or("every receipt was delivered")?;
    let Position::StreamId { ms, seq } = waiting_one.position else {
        return Err(format!("position {:?}", waiting_one.position));
    };
    let mut conn = raw(&url).await?;
    let removed: u64 = redis::cmd("XDEL")
        .arg(format!("{prefix}:s:{}", waiting_one.subject))
        .arg(format!("{ms}-{seq}"))
        .query_async(&mut conn)
        .await
        .map_err(context("xdel"))?;
    ensure!(removed == 1, "XDEL removed {removed}");
    backlog_is(&c, 3, 0, "after deleting one waiting entry").await?;
    collect(&c, 3, Duration::from_secs(5)).await?;
    backlog_is(&c, 0, 0, "after reading everything").await?;
    // A consumer that starts with new packets only has nothing waiting.
    let fresh = consumer_from_now(&t, "only-new", &pattern, Duration::from_secs(60)).await?;
    backlog_is(&fresh, 0, 0, "a start=new consumer").await?;
    t.close().await.map_err(context("close"))?;
    Ok(())
}

/// `consumers()` lists every consumer under the prefix without opening it
/// (found by its definition, so none of another prefix), with the backlog
/// it counts itself: also a consumer that is closed, and one whose streams
/// (and groups) the retention sweep deleted; a stream created again is
/// counted from the consumer's start.
async fn consumers_are_listed_with_their_backlog(url: String, prefix: Subject) -> CaseResult {
    let t = connect_with(&url, &prefix, |c| c).await?;
    for i in 0..3 {
        deposit(&t, &prefix, "a", i).await?;
    }
    let all = format!("{prefix}.hvac.*");
    let c = consumer_from_start(&t, "c", &all, Duration::from_secs(60)).await?;
    // A stream that appears after the consumer, before any fetch found it.
    for i in 3..5 {
        deposit(&t, &prefix, "b", i).await?;
    }
    let got = collect_unacked(&c, 2, Duration::from_secs(5)).await?;
    backlog_is(&c, 3, 2, "after fetching 2 of 5").await?;
    c.ack(&got[..1]).await.map_err(context("ack"))?;
    let only_a = format!("{prefix}.hvac.a");
    let d = consumer_from_now(&t, "d", &only_a, Duration::from_secs(60)).await?;
    // A consumer of another prefix that starts like this one.
    let other_prefix = Subject::new(format!("{prefix}x")).map_err(context("prefix"))?;
    let other = connect_with(&url, &other_prefix, |c| c).await?;
    let everything = format!("{other_prefix}.>");
    consumer_from_start(&other, "elsewhere", &everything, Duration::from_secs(60)).await?;
    other.close().await.map_err(context("close other"))?;

    let listed = |t: &Checked<RedisTransport>| {
        let t = t.clone();
        async move {
            let infos = t.consumers().await.map_err(context("consumers"))?;
            Ok::<_, String>(
                infos
                    .into_iter()
                    .map(|i| (i.name, i.pattern, i.backlog))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let want_c = (
        "c".to_string(),
        Some(all.clone()),
        Backlog {
            waiting: 3,
            unacked: 1,
        },
    );
    let want_d = ("d".to_string(), Some(only_a.clone()), Backlog::default());
    let seen = listed(&t).await?;
    ensure!(
        seen == [want_c.clone(), want_d.clone()],
        "consumers while open: {seen:?}"
    );
    ensure!(
        seen[0].2 == backlog_of(&c).await? && seen[1].2 == backlog_of(&d).await?,
        "the listed backlogs are not the consumers' own: {seen:?}"
    );
    c.close().await.map_err(context("close c"))?;
    d.close().await.map_err(context("close d"))?;
    let seen = listed(&t).await?;
    ensure!(seen == [want_c, want_d], "consumers once closed: {seen:?}");

    // A transport with a short max age sweeps the streams away, with the
    // consumers' groups; then it stops (closed), so what follows stays.
    let sweeper = connect_with(&url, &prefix, |c| c.max_age(Duration::from_secs(1))).await?;
    let conn = raw(&url).await?;
    until_swept(&conn, &prefix, "the sweep deleting the expired streams").await?;
    sweeper.close().await.map_err(context("close sweeper"))?;
    let swept = || {
        [
            ("c".to_string(), Some(all.clone()), Backlog::default()),
            ("d".to_string(), Some(only_a.clone()), Backlog::default()),
        ]
    };
    let seen = listed(&t).await?;
    ensure!(seen == swept(), "consumers after the sweep: {seen:?}");
    // The stream again, without the groups: all of it waits for both (for
    // d too: a stream created after it holds only new packets).
    let again = deposit(&t, &prefix, "a", 9).await?;
    let one = Backlog {
        waiting: 1,
        unacked: 0,
    };
    let mut want = swept();
    want[0].2 = one;
    want[1].2 = one;
    let seen = listed(&t).await?;
    ensure!(seen == want, "consumers after a new deposit: {seen:?}");
    let d = consumer_from_now(&t, "d", &only_a, Duration::from_secs(60)).await?;
    let got = collect(&d, 1, Duration::from_secs(5)).await?;
    ensure!(
        got[0].id() == again.id,
        "d, reopened, got {} instead of the new packet",
        got[0].id()
    );
    let seen = listed(&t).await?;
    ensure!(
        seen[1].2 == Backlog::default() && seen[0].2 == one,
        "consumers after d read it: {seen:?}"
    );
    t.close().await.map_err(context("close"))?;
    Ok(())
}

fn main() {
    qis_conformance::run_trials(live_trials!(
        held_nak_does_not_hold_back_other_redeliveries,
        reopening_with_another_ack_wait_applies_to_every_handle,
        close_ends_a_fetch_in_flight,
        backlog_counts_waiting_and_unacked,
        consumers_are_listed_with_their_backlog,
    ));
}
