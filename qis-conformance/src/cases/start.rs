//! Where a new consumer starts: all history, only new packets, or since a time.

use std::time::{Duration, SystemTime};

use qis_core::{StartPosition, Subject};

use super::{deposit, open};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{
    collect, consumer, consumer_from_now, deposit_seqs, next_is, nothing_more, pkt, reader, seq_of,
    CaseResult,
};

/// `StartPosition::All` receives the history and what comes after;
/// `StartPosition::New` only what is deposited after it was created.
pub async fn start_all_receives_history_start_new_does_not(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    let t = open(&b, &prefix).await?;
    deposit_seqs(&*t, "old", "hvac", "energy-anomaly", 0..3).await?;
    let all = reader(&*t, "historian", &prefix, Duration::from_secs(60)).await?;
    let new = consumer_from_now(
        &*t,
        "newcomer",
        &format!("{prefix}.>"),
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&all, 3, Duration::from_secs(10)).await?;
    ensure!(
        got.iter().map(seq_of).collect::<Vec<_>>() == vec![0, 1, 2],
        "start=all did not receive the history in order"
    );
    let fresh = deposit(&t, &pkt("new", "hvac", "energy-anomaly", 3)).await?;
    next_is(
        &new,
        &fresh,
        "start=new received history instead of the new packet",
    )
    .await?;
    nothing_more(&new, Duration::from_millis(300), "start=new received more").await?;
    next_is(&all, &fresh, "start=all did not receive the new packet").await
}

/// `StartPosition::Since` receives what was deposited at or after the time,
/// nothing from before.
pub async fn start_since_time(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    deposit_seqs(&*t, "old", "hvac", "energy-anomaly", 0..3).await?;
    // Separate the two groups on the clock (server timestamps may be in ms).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mark = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    deposit_seqs(&*t, "new", "hvac", "energy-anomaly", 3..5).await?;
    let c = consumer(
        &*t,
        "since",
        &format!("{prefix}.>"),
        StartPosition::Since(mark),
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&c, 2, Duration::from_secs(10)).await?;
    ensure!(
        got.iter().map(seq_of).collect::<Vec<_>>() == vec![3, 4],
        "start=since gave {:?}",
        got.iter().map(seq_of).collect::<Vec<_>>()
    );
    nothing_more(
        &c,
        Duration::from_millis(300),
        "start=since received packets from before the mark",
    )
    .await
}
