//! Where a new consumer starts: all history, only new packets, or since a time.

use std::time::{Duration, SystemTime};

use qis_core::{StartPosition, Subject};

use super::{deposit, open};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{collect, consumer, deposit_seqs, pkt, quiet, reader, seq_of, CaseResult};

/// `StartPosition::All` receives the history and what comes after;
/// `StartPosition::New` only what is deposited after it was created.
pub async fn start_all_receives_history_start_new_does_not(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    let t = open(&b, &prefix).await?;
    deposit_seqs(&*t, "old", "hvac", "energy-anomaly", 0..3).await?;
    let all = reader(&*t, "historian", &prefix, Duration::from_secs(60)).await?;
    let new = consumer(
        &*t,
        "newcomer",
        &format!("{prefix}.>"),
        StartPosition::New,
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&all, 3, Duration::from_secs(10)).await?;
    ensure!(
        got.iter().map(seq_of).collect::<Vec<_>>() == vec![0, 1, 2],
        "start=all did not receive the history in order"
    );
    let fresh = deposit(&t, &pkt("new", "hvac", "energy-anomaly", 3)).await?;
    let got_new = collect(&new, 1, Duration::from_secs(10)).await?;
    ensure!(
        got_new[0].id() == fresh.id,
        "start=new received history (seq {}) instead of the new packet",
        seq_of(&got_new[0])
    );
    let more = quiet(&new, Duration::from_millis(300)).await?;
    ensure!(
        more.is_empty(),
        "start=new received {} more packets",
        more.len()
    );
    let got_all = collect(&all, 1, Duration::from_secs(10)).await?;
    ensure!(
        got_all[0].id() == fresh.id,
        "start=all did not receive the new packet"
    );
    Ok(())
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
    let more = quiet(&c, Duration::from_millis(300)).await?;
    ensure!(
        more.is_empty(),
        "start=since received {} packets from before the mark",
        more.len()
    );
    Ok(())
}
