//! Live subscriptions and fire-and-forget publishing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use qis_core::{OutcomeTransportExt, Subject};

use super::{deposit, open};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{context, next_is, next_live, pkt, reader, subscribe, CaseResult};

/// A live subscription receives the deposits its pattern matches, and no
/// others.
pub async fn live_subscription_receives_matching(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut sub = subscribe(&*t, &format!("{prefix}.*.energy-anomaly")).await?;
    let want1 = deposit(&t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
    let other = deposit(&t, &pkt("a", "hvac", "refrigerant-loss", 2)).await?;
    let want2 = deposit(&t, &pkt("a", "power", "energy-anomaly", 3)).await?;
    let mut got = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = next_live(&mut sub, left).await?.ok_or_else(|| {
            format!(
                "{} of 2 matching packets arrived live within 10 s",
                got.len()
            )
        })?;
        ensure!(
            r.id != other.id,
            "live subscription received a non-matching subject {}",
            r.subject
        );
        got.insert(r.id);
    }
    ensure!(
        got == HashSet::from([want1.id, want2.id]),
        "live received other packets"
    );
    Ok(())
}

/// A fire-and-forget packet reaches a live subscriber and is not stored.
pub async fn fire_and_forget_reaches_live_not_store(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut sub = subscribe(&*t, &format!("{prefix}.>")).await?;
    let p = pkt("telemetry", "hvac", "energy-anomaly", 1);
    t.publish(&p).await.map_err(context("publish"))?;
    let r = next_live(&mut sub, Duration::from_secs(10))
        .await?
        .ok_or("a fire-and-forget packet did not arrive live within 10 s")?;
    ensure!(r.packet == p, "live received another packet");
    let sentinel = deposit(&t, &pkt("durable", "hvac", "energy-anomaly", 2)).await?;
    let c = reader(&*t, "store-check", &prefix, Duration::from_secs(60)).await?;
    next_is(&c, &sentinel, "a fire-and-forget packet was stored").await
}
