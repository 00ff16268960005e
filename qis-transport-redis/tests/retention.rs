//! Retention on Redis beyond the deposit path, against the server at
//! `QIS_REDIS_URL`: a subject nobody deposits to any more is still trimmed
//! (for a new reader, and by the transport's sweep, which also deletes its
//! empty stream, index entry and groups), and deliveries retention takes
//! from a consumer before they were acked are counted in a warning.
//!
//! Without the server the cases are ignored with the reason (a failure with
//! `QIS_REQUIRE_LIVE=1`).

use std::time::Duration;

mod common;

use common::live::{
    capture_warnings, captured, connect_with, deposit, live_trials, raw, stream_keys, until_swept,
};
use qis_conformance::ensure;
use qis_conformance::support::{
    collect, collect_unacked, consumer_from_start, context, eventually, fetch_once, open_consumer,
    CaseResult,
};
use qis_core::Subject;

/// The max age of these cases: short, so packets expire while they run.
const MAX_AGE: Duration = Duration::from_secs(1);

/// A packet on a subject that receives no more deposits is not delivered to
/// a consumer opened after it expired (the confirmed defect: with
/// `max_age = 1 s`, a packet 3 s old on an idle subject was delivered).
async fn idle_subject_expires_for_a_new_consumer(url: String, prefix: Subject) -> CaseResult {
    // The sweep is off here: this is about what a reader trims itself.
    let t = connect_with(&url, &prefix, |c| {
        c.max_age(MAX_AGE).sweep_interval(Duration::ZERO)
    })
    .await?;
    let old = deposit(&t, &prefix, "idle", 1).await?;
    // Activity elsewhere, as on a busy server: it must not matter.
    deposit(&t, &prefix, "busy", 2).await?;
    // Let the packet age past max_age (part of the scenario, not a sync).
    tokio::time::sleep(MAX_AGE * 3).await;
    deposit(&t, &prefix, "busy", 3).await?;
    let c = open_consumer(&t, "late-reader", &format!("{prefix}.hvac.idle")).await?;
    let got = fetch_once(&c, 10, Duration::from_millis(500)).await?;
    ensure!(
        got.is_empty(),
        "a packet {:?} old on an idle subject was delivered with max_age {MAX_AGE:?} (id {}, receipt {})",
        MAX_AGE * 3,
        got[0].id(),
        old.position
    );
    Ok(())
}

/// The transport's sweep trims idle subjects and deletes their streams once
/// they are empty and expired, with their subject-index entries and consumer
/// groups, without any deposit or fetch on them.
async fn sweep_deletes_idle_expired_streams(url: String, prefix: Subject) -> CaseResult {
    let subjects = 40;
    let t = connect_with(&url, &prefix, |c| c.max_age(MAX_AGE)).await?;
    for i in 0..subjects {
        deposit(&t, &prefix, &format!("idle-{i}"), i).await?;
    }
    // A consumer with a group on every stream, which then goes away.
    let c = open_consumer(&t, "gone", &format!("{prefix}.hvac.*")).await?;
    let got = fetch_once(&c, 10, Duration::from_secs(5)).await?;
    c.ack(&got).await.map_err(context("ack"))?;
    c.close().await.map_err(context("close"))?;
    // A consumer that stays open across the deletions and reads on.
    let watcher = open_consumer(&t, "watcher", &format!("{prefix}.hvac.*")).await?;
    collect(&watcher, subjects, Duration::from_secs(10)).await?;
    let mut conn = raw(&url).await?;
    let before = stream_keys(&mut conn, &prefix).await?.len();
    ensure!(
        before == subjects,
        "{before} streams after depositing on {subjects} subjects"
    );
    until_swept(
        &conn,
        &prefix,
        "the sweep deleting every idle, expired stream and its index entry",
    )
    .await?;
    // The subject works again: a deposit recreates it and a consumer reads it.
    let r = deposit(&t, &prefix, "idle-0", 100).await?;
    let c = open_consumer(&t, "gone", &format!("{prefix}.hvac.*")).await?;
    let got = fetch_once(&c, 10, Duration::from_secs(5)).await?;
    ensure!(
        got.len() == 1 && got[0].id() == r.id,
        "after the sweep, a new deposit on a deleted subject gave {} deliveries",
        got.len()
    );
    let got = collect(&watcher, 1, Duration::from_secs(5)).await?;
    ensure!(
        got[0].id() == r.id,
        "the consumer open across the deletions got another packet"
    );
    // And it let go of the deleted streams: it reads the one that exists.
    let shown = format!("{watcher:?}");
    ensure!(
        shown.contains("streams: 1,") || shown.contains("streams: 1 "),
        "the consumer handle still holds deleted streams: {shown}"
    );
    Ok(())
}

/// Deliveries fetched and not acked that retention removes are counted in a
/// warning naming the consumer and the subject, and leave the group's
/// pending list.
async fn retention_warns_about_unacked_deliveries(url: String, prefix: Subject) -> CaseResult {
    let t = connect_with(&url, &prefix, |c| c.max_age(MAX_AGE)).await?;
    let unacked = 5;
    for i in 0..unacked {
        deposit(&t, &prefix, "unacked", i).await?;
    }
    let (name, subject) = ("slowpoke", format!("{prefix}.hvac.unacked"));
    let c = consumer_from_start(&t, name, &subject, Duration::from_secs(60)).await?;
    collect_unacked(&c, unacked, Duration::from_secs(5)).await?;
    // One warning, or several if the sweep met them in two steps.
    let counted = || -> usize {
        captured(&[&format!("consumer={name}"), &format!("subject={subject}")])
            .iter()
            .filter_map(|l| l.split("unacked=").nth(1))
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .filter_map(|n| n.parse::<usize>().ok())
            .sum()
    };
    eventually(
        "warnings counting the 5 unacked deliveries retention removed",
        Duration::from_secs(20),
        || {
            let n = counted();
            async move { n >= unacked }
        },
    )
    .await?;
    ensure!(
        counted() == unacked,
        "the warnings counted {} unacked deliveries removed, not {unacked}",
        counted()
    );
    let mut conn = raw(&url).await?;
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(format!("{prefix}:s:{subject}"))
        .arg(name)
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut conn)
        .await
        .or_else(|e| {
            // The stream may be deleted already (empty and expired).
            if e.code() == Some("NOGROUP") {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        })
        .map_err(context("xpending"))?;
    ensure!(
        pending.is_empty(),
        "{} removed entries are still pending for {name}",
        pending.len()
    );
    Ok(())
}

fn main() {
    capture_warnings();
    qis_conformance::run_trials(live_trials!(
        idle_subject_expires_for_a_new_consumer,
        sweep_deletes_idle_expired_streams,
        retention_warns_about_unacked_deliveries,
    ));
}
