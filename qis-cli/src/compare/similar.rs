//! The similarity phase of `qis compare`: query latency at a given number of
//! stored packets, on the backends that search by similarity.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use qis::{DynTransport, SimilarityQuery, Subject};
use rand::Rng;

use super::scenario::{swarm, BATCH};

/// Queries run at most…
pub const QUERIES: usize = 200;
/// …or for this long, whichever comes first (at least [`MIN_QUERIES`]).
const QUERY_CAP: Duration = Duration::from_secs(5);
/// Queries run even past the cap.
const MIN_QUERIES: usize = 5;
/// Neighbours asked for per query.
pub const K: usize = 10;

/// Query latency at a number of stored packets.
#[derive(Debug, Clone, Copy)]
pub struct SimilarLatency {
    /// Packets stored under the prefix when queried.
    pub stored: usize,
    /// Queries timed.
    pub queries: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

/// The `q` quantile of sorted `ms` (nearest rank).
pub fn quantile(ms: &[f64], q: f64) -> f64 {
    if ms.is_empty() {
        f64::NAN
    } else {
        ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1]
    }
}

/// Top the store up to `stored` packets (beyond the `already` deposited),
/// then time similarity queries for `K` neighbours under `PREFIX.>` with
/// random 4-number vectors, one at a time.
pub async fn measure(
    t: &DynTransport,
    prefix: &Subject,
    already: usize,
    stored: usize,
    bar: &ProgressBar,
) -> qis::Result<SimilarLatency> {
    bar.set_message("similar: fill");
    let extra = stored.saturating_sub(already);
    if extra > 0 {
        let packets = swarm(extra, prefix)?;
        for chunk in packets.chunks(BATCH) {
            t.deposit_encoded_batch(chunk).await?;
        }
    }
    bar.set_message("similar: query");
    let mut ms = Vec::with_capacity(QUERIES);
    let start = Instant::now();
    let mut rng = rand::rng();
    while ms.len() < QUERIES && (ms.len() < MIN_QUERIES || start.elapsed() < QUERY_CAP) {
        let v: Vec<f64> = (0..4).map(|_| rng.random::<f64>()).collect();
        let q = SimilarityQuery::new(prefix.all_below(), v, K)?;
        let at = Instant::now();
        t.similar(&q).await?;
        ms.push(at.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(SimilarLatency {
        stored: already.max(stored),
        queries: ms.len(),
        p50_ms: quantile(&ms, 0.50),
        p99_ms: quantile(&ms, 0.99),
    })
}
