//! What the `http://` transport does beyond the conformance suite: HTTPS
//! with a CA and a token from the URL, refusals with their kinds, batches
//! split to the gateway's limits, fetches longer than its long-poll, a
//! session the gateway forgot, the end of a live stream, and floats that
//! keep their packet id across the wire. Each case runs its own gateway in
//! this process, in front of an in-process store or a SQLite file.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use qis_conformance::ensure;
use qis_conformance::support::{
    collect, consumer_from_start, context, deposit_one, deposit_seqs, eventually, fetch_once,
    fresh_prefix, ids, next_live, nothing_more, open_consumer, pkt, seq_of, tls_test_certs,
    CaseResult, TempDir,
};
use qis_core::{
    DynTransport, EncodedPacket, ErrorKind, MemoryTransport, OutcomeTransport, OutcomeTransportExt,
    Subject,
};
use qis_gateway::{GatewayConfig, RunningGateway, Tokens};
use qis_transport_http::{HttpConfig, HttpTransport};

fn config() -> GatewayConfig {
    GatewayConfig::default().listen("127.0.0.1:0".parse().unwrap())
}

async fn gateway(config: GatewayConfig) -> Result<(RunningGateway, Subject), String> {
    let prefix = fresh_prefix();
    let backend: DynTransport = Arc::new(MemoryTransport::new(prefix.clone()));
    let g = qis_gateway::start(backend, config)
        .await
        .map_err(context("start the gateway"))?;
    Ok((g, prefix))
}

async fn device(g: &RunningGateway, prefix: &Subject) -> Result<DynTransport, String> {
    let t = HttpTransport::connect(HttpConfig::new(g.url()).prefix(prefix.clone()))
        .await
        .map_err(context("connect"))?;
    Ok(Arc::new(t))
}

/// HTTPS with the gateway's CA and a token, both from the URL; without the
/// token, with a wrong one, or without trusting the CA, connect fails with
/// the kind that says what to fix.
async fn https_with_ca_and_token_from_the_url() -> CaseResult {
    let dir = TempDir::new("http-tls");
    let certs = tls_test_certs(dir.path())?;
    let tokens = Tokens::new(["edge-7"]).map_err(|e| e.to_string())?;
    let (g, prefix) = gateway(config().tls(&certs.cert, &certs.key).tokens(tokens)).await?;
    ensure!(g.url().starts_with("https://"), "url {}", g.url());
    let port = g.local_addr().port();
    let ca = certs.ca.display();
    let url = format!("https://edge-7@127.0.0.1:{port}?prefix={prefix}&tls_ca={ca}");
    let t = HttpTransport::connect(url.parse().map_err(context("url"))?)
        .await
        .map_err(context("connect over https"))?;
    let r = deposit_one(&t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
    let c = open_consumer(&*t, "tls-reader", &format!("{prefix}.>")).await?;
    let got = collect(&c, 1, Duration::from_secs(10)).await?;
    ensure!(got[0].id() == r.id, "fetched another packet over https");
    for (what, url, kind) in [
        (
            "no token",
            format!("https://127.0.0.1:{port}?prefix={prefix}&tls_ca={ca}"),
            ErrorKind::InvalidInput,
        ),
        (
            "a wrong token",
            format!("https://nope@127.0.0.1:{port}?prefix={prefix}&tls_ca={ca}"),
            ErrorKind::InvalidInput,
        ),
        (
            "plain http to https",
            format!("http://edge-7@127.0.0.1:{port}?prefix={prefix}"),
            ErrorKind::Unavailable,
        ),
    ] {
        let e = HttpTransport::connect(url.parse().map_err(context("url"))?)
            .await
            .err()
            .ok_or(format!("connect with {what} succeeded"))?;
        ensure!(e.kind() == kind, "{what}: {e}");
    }
    t.close().await.map_err(context("close"))?;
    g.shutdown().await.map_err(context("shutdown"))
}

/// A prefix the gateway does not serve is Conflict naming the right one;
/// an unreachable gateway is Unavailable; a consumer name reopened with
/// another pattern is Conflict, across HTTP.
async fn refusals_keep_their_kind() -> CaseResult {
    let (g, prefix) = gateway(config()).await?;
    let e = HttpTransport::connect(HttpConfig::new(g.url()))
        .await
        .err()
        .ok_or("a gateway of another prefix was accepted")?;
    ensure!(
        e.kind() == ErrorKind::Conflict && e.message().contains(prefix.as_str()),
        "{e}"
    );
    let t = device(&g, &prefix).await?;
    open_consumer(&*t, "named", &format!("{prefix}.>")).await?;
    let e = consumer_from_start(
        &*t,
        "named",
        &format!("{prefix}.hvac.>"),
        Duration::from_secs(30),
    )
    .await
    .err()
    .ok_or("a name reopened with another pattern was accepted")?;
    ensure!(e.contains("conflict"), "reopened with another pattern: {e}");
    let url = g.url();
    g.shutdown().await.map_err(context("shutdown"))?;
    let e = HttpTransport::connect(HttpConfig::new(url).prefix(prefix))
        .await
        .err()
        .ok_or("a stopped gateway was reached")?;
    ensure!(e.kind() == ErrorKind::Unavailable, "a stopped gateway: {e}");
    Ok(())
}

/// A batch larger than the gateway's max_batch and max_body goes as several
/// requests, in order: receipts and deliveries keep the input order.
async fn batch_is_split_to_the_gateway_limits() -> CaseResult {
    let (g, prefix) = gateway(config().max_batch(7).max_body(2048)).await?;
    let t = device(&g, &prefix).await?;
    let packets: Vec<_> = (0..50)
        .map(|i| pkt("batcher", "hvac", "energy-anomaly", i))
        .collect();
    let receipts = t.deposit_batch(&packets).await.map_err(context("batch"))?;
    ensure!(receipts.len() == 50, "{} receipts for 50", receipts.len());
    for (p, r) in packets.iter().zip(&receipts) {
        ensure!(
            r.id == EncodedPacket::readable(p, &prefix).unwrap().id(),
            "receipts out of order"
        );
    }
    let c = open_consumer(&*t, "in-order", &format!("{prefix}.>")).await?;
    let got = collect(&c, 50, Duration::from_secs(10)).await?;
    ensure!(
        got.iter().map(seq_of).eq(0..50),
        "batch fetched out of order"
    );
    g.shutdown().await.map_err(context("shutdown"))
}

/// A fetch waiting longer than the gateway's max_wait is several
/// long-polls: a packet deposited after the first poll ended still arrives.
async fn long_fetch_spans_several_polls() -> CaseResult {
    let (g, prefix) = gateway(config().max_wait(Duration::from_millis(200))).await?;
    let t = device(&g, &prefix).await?;
    let c = open_consumer(&*t, "patient", &format!("{prefix}.>")).await?;
    let late = {
        let t = t.clone();
        tokio::spawn(async move {
            // Part of the scenario: deposit after a few of the gateway's polls.
            tokio::time::sleep(Duration::from_millis(700)).await;
            t.deposit(&pkt("late", "hvac", "energy-anomaly", 1)).await
        })
    };
    let got = fetch_once(&c, 1, Duration::from_secs(5)).await?;
    let r = late
        .await
        .map_err(|e| e.to_string())?
        .map_err(context("deposit"))?;
    ensure!(
        got.len() == 1 && got[0].id() == r.id,
        "a 5 s fetch over 200 ms polls got {:?}",
        ids(&got)
    );
    g.shutdown().await.map_err(context("shutdown"))
}

/// The gateway closes a session left idle; the next fetch opens the
/// consumer again by name and goes on after the last ack.
async fn forgotten_session_is_opened_again() -> CaseResult {
    let dir = TempDir::new("http-idle");
    let prefix = fresh_prefix();
    let backend: DynTransport = Arc::new(
        qis_transport_sqlite::SqliteTransport::connect(
            qis_transport_sqlite::SqliteConfig::new(dir.path().join("q.db")).prefix(prefix.clone()),
        )
        .await
        .map_err(context("sqlite"))?,
    );
    let g = qis_gateway::start(backend, config().session_idle(Duration::from_millis(300)))
        .await
        .map_err(context("start"))?;
    let t = device(&g, &prefix).await?;
    deposit_seqs(&*t, "a", "hvac", "energy-anomaly", 0..4).await?;
    let c = open_consumer(&*t, "sleepy", &format!("{prefix}.>")).await?;
    let first = fetch_once(&c, 2, Duration::from_secs(5)).await?;
    ensure!(first.len() == 2, "first fetch got {}", first.len());
    c.ack(&first).await.map_err(context("ack"))?;
    let health = format!("{}/health", g.url());
    eventually(
        "the gateway closing the idle session",
        Duration::from_secs(10),
        || {
            let health = health.clone();
            async move {
                let _ = rustls::crypto::ring::default_provider().install_default();
                match reqwest::get(&health).await {
                    Ok(r) => r.text().await.is_ok_and(|t| t.contains("\"sessions\":0")),
                    Err(_) => false,
                }
            }
        },
    )
    .await?;
    let rest = collect(&c, 2, Duration::from_secs(10)).await?;
    ensure!(
        rest.iter().map(seq_of).eq(2..4),
        "after reopening got {:?}",
        rest.iter().map(seq_of).collect::<Vec<_>>()
    );
    nothing_more(&c, Duration::from_millis(300), "acked packets came back").await?;
    g.shutdown().await.map_err(context("shutdown"))
}

/// A live subscription ends with one Unavailable item when the gateway
/// shuts down.
async fn live_stream_ends_when_the_gateway_stops() -> CaseResult {
    let (g, prefix) = gateway(config()).await?;
    let t = device(&g, &prefix).await?;
    let mut live = t
        .subscribe(prefix.all_below())
        .await
        .map_err(context("subscribe"))?;
    let r = deposit_one(&*t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
    let got = next_live(&mut live, Duration::from_secs(10))
        .await?
        .ok_or("no live packet")?;
    ensure!(got.id == r.id, "live got another packet");
    g.shutdown().await.map_err(context("shutdown"))?;
    let end = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .map_err(|_| "the live stream did not end within 10 s of the shutdown")?;
    match end {
        Some(Err(e)) => ensure!(e.kind() == ErrorKind::Unavailable, "the end was {e}"),
        other => {
            return Err(format!(
                "the end of the stream was {other:?}, not one Unavailable item"
            ))
        }
    }
    let after = tokio::time::timeout(Duration::from_secs(5), live.next()).await;
    ensure!(
        matches!(after, Ok(None)),
        "the stream went on after its end"
    );
    Ok(())
}

/// Random floats cross the wire exactly: the receipt's id is the packet id
/// computed on the device, and the fetched packet equals the deposited one.
async fn floats_keep_the_packet_id() -> CaseResult {
    let (g, prefix) = gateway(config()).await?;
    let t = device(&g, &prefix).await?;
    let mut packets = Vec::new();
    for i in 0..100 {
        let mut p = pkt("floats", "hvac", "energy-anomaly", i);
        p.confidence = rand::random::<f64>();
        p.context_vector = (0..8)
            .map(|_| {
                f64::from_bits(rand::random::<u64>() >> 2) * if rand::random() { 1.0 } else { -1.0 }
            })
            .map(|x| if x.is_finite() { x } else { 0.5 })
            .collect();
        p.timestamp = 1.7e9 + rand::random::<f64>() * 1e8;
        packets.push(p);
    }
    let receipts = t.deposit_batch(&packets).await.map_err(context("batch"))?;
    for (p, r) in packets.iter().zip(&receipts) {
        let local = EncodedPacket::readable(p, &prefix).unwrap().id();
        ensure!(
            r.id == local,
            "the gateway stored {:?} under another id than the device's",
            p.context_vector
        );
    }
    let c = open_consumer(&*t, "exact", &format!("{prefix}.>")).await?;
    let got = collect(&c, 100, Duration::from_secs(10)).await?;
    for (d, p) in got.iter().zip(&packets) {
        ensure!(
            d.packet() == p,
            "a fetched packet differs: {:?} vs {:?}",
            d.packet().context_vector,
            p.context_vector
        );
    }
    g.shutdown().await.map_err(context("shutdown"))
}

fn main() {
    qis_conformance::run_trials(
        qis_conformance::async_trials!("http", Duration::from_secs(60);
            https_with_ca_and_token_from_the_url,
            refusals_keep_their_kind,
            batch_is_split_to_the_gateway_limits,
            long_fetch_spans_several_polls,
            forgotten_session_is_opened_again,
            live_stream_ends_when_the_gateway_stops,
            floats_keep_the_packet_id,
        ),
    );
}
