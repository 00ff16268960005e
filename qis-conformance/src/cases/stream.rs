//! The continuous delivery stream, and closing without losing acks.

use std::time::{Duration, Instant};

use futures::StreamExt;
use qis_core::{deliveries, OutcomeTransportExt, Subject};

use super::{deposit, open};
use crate::backend::DynBackend;
use crate::ensure;
use crate::support::{collect, context, deposit_seqs, next_is, pkt, reader, CaseResult};

/// The `deliveries` stream hands out packets deposited while it runs, in
/// order, without gaps.
pub async fn delivery_stream_is_continuous(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let c = reader(&*t, "pusher", &prefix, Duration::from_secs(60)).await?;
    let mut stream = deliveries(c.clone(), 10, Duration::from_millis(200));
    let producer = {
        let t = t.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                ids.push(
                    t.deposit(&pkt("streamer", "hvac", "energy-anomaly", i))
                        .await?
                        .id,
                );
            }
            Ok::<_, qis_core::Error>(ids)
        })
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 25 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(d))) => {
                c.ack(std::slice::from_ref(&d))
                    .await
                    .map_err(context("ack"))?;
                got.push(d.id());
            }
            Ok(Some(Err(err))) => return Err(format!("delivery stream error: {err}")),
            Ok(None) => return Err("delivery stream ended".into()),
            Err(_) => {
                return Err(format!(
                    "{} of 25 packets came through the delivery stream within 20 s",
                    got.len()
                ))
            }
        }
    }
    let sent = producer
        .await
        .map_err(|e| e.to_string())?
        .map_err(context("deposit"))?;
    ensure!(
        got == sent,
        "the delivery stream changed the order or the packets"
    );
    Ok(())
}

/// Acks made before `close` are not lost: after closing and opening again,
/// none of the acked packets comes back.
pub async fn close_flushes_acks(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    deposit_seqs(&*t, "device", "hvac", "energy-anomaly", 0..5).await?;
    let c = reader(&*t, "closer", &prefix, Duration::from_secs(60)).await?;
    collect(&c, 5, Duration::from_secs(10)).await?;
    c.close().await.map_err(context("close consumer"))?;
    t.close().await.map_err(context("close transport"))?;
    drop(c);
    drop(t);
    let t2 = open(&b, &prefix).await?;
    let sentinel = deposit(&t2, &pkt("device", "hvac", "energy-anomaly", 5)).await?;
    let c2 = reader(&*t2, "closer", &prefix, Duration::from_secs(60)).await?;
    next_is(&c2, &sentinel, "a packet acked before close came back").await
}
