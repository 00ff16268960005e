//! The gateway over real HTTP on loopback: the error mapping (invalid
//! packet → 400 naming the field, missing or wrong token → 401, oversize →
//! 413, broker stopped → 503, …), the limits (429 beyond them), the
//! synthesis view, the OpenAPI document against the routes and the wire
//! types, and graceful shutdown.
//!
//! The broker-stopped case starts its own nats-server (`QIS_NATS_RESTART_BIN`
//! or `nats-server` on PATH) and kills it; without one it is ignored, or
//! failed with `QIS_REQUIRE_LIVE=1`.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use qis_conformance::ensure;
use qis_conformance::support::{
    block_on, consumer_from_start, deposit_seqs, eventually, free_port, nothing_more, pkt, trial,
    CaseResult, TempDir,
};
use qis_core::{DynTransport, Subject};
use serde_json::{json, Value};

/// Invalid packets are 400 with a message naming the field; nothing of a
/// batch with one bad packet is stored.
async fn invalid_packet_is_400_naming_the_field() -> CaseResult {
    let (g, backend) = memory_gateway(config()).await?;
    let http = client();
    let url = format!("{}/v1/packets", g.url());
    let good = packet_json("a", "energy-anomaly", 1);
    for (bad, field) in [
        (with(good.clone(), "confidence", json!(1.5)), "confidence"),
        (
            with(good.clone(), "confidence", json!("high")),
            "confidence",
        ),
        (with(good.clone(), "domain", json!("hvac.zone1")), "domain"),
        (with(good.clone(), "agent_id", json!("")), "agent_id"),
        (with(good.clone(), "timestamp", json!(-1.0)), "timestamp"),
        (
            with(good.clone(), "context_vector", json!([0.1, "x"])),
            "context_vector",
        ),
    ] {
        let (status, body) = post(&http, url.clone(), &bad).await?;
        ensure!(status == 400, "{field}: status {status}, body {body}");
        ensure!(
            kind(&body) == "invalid_packet",
            "{field}: kind {}",
            kind(&body)
        );
        ensure!(
            message(&body).contains(field),
            "the message {:?} does not name {field}",
            message(&body)
        );
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("conclusion");
    let (status, body) = post(&http, url.clone(), &missing).await?;
    ensure!(
        status == 400 && message(&body).contains("conclusion"),
        "a missing field: {status} {body}"
    );
    let mut refusals: Vec<Refusal> = vec![(
        url.clone(),
        json!("not a packet"),
        (400, "invalid_packet"),
        "a string".into(),
    )];
    // A subject outside the prefix, and a bad subject.
    for subject in ["elsewhere.hvac.x", "Qis..x"] {
        refusals.push((
            format!("{url}?subject={subject}"),
            good.clone(),
            (400, "invalid_subject"),
            format!("subject {subject}"),
        ));
    }
    all_refused(&http, refusals).await?;
    // A batch with one bad packet: 400 naming its index and field, nothing stored.
    let batch = json!({"packets": [
        {"packet": packet_json("a", "energy-anomaly", 2)},
        {"packet": with(packet_json("a", "energy-anomaly", 3), "confidence", json!(2.0))},
    ]});
    let (status, body) = post(&http, format!("{url}/batch"), &batch).await?;
    ensure!(status == 400, "bad batch: {status} {body}");
    ensure!(
        message(&body).starts_with("packets[1]") && message(&body).contains("confidence"),
        "bad batch message {:?}",
        message(&body)
    );
    let reader = all_reader(&backend, "auditor").await?;
    nothing_more(&reader, Duration::from_millis(300), "refusals were stored").await?;
    g.shutdown().await.map_err(|e| e.to_string())
}

async fn all_reader(
    backend: &DynTransport,
    name: &str,
) -> Result<Arc<dyn qis_core::DurableConsumer>, String> {
    let all = format!("{}.>", backend.prefix());
    consumer_from_start(&**backend, name, &all, Duration::from_secs(60)).await
}

/// A packet over 512 bytes, a body over max_body and a batch over
/// max_batch are 413, each with its own kind.
async fn oversize_is_413() -> CaseResult {
    let (g, _) = memory_gateway(config().max_body(16 * 1024).max_batch(3)).await?;
    let http = client();
    let big = with(
        packet_json("a", "energy-anomaly", 1),
        "conclusion",
        json!("x".repeat(600)),
    );
    let body = post_refused(
        &http,
        format!("{}/v1/packets", g.url()),
        &big,
        (413, "packet_too_large"),
        "600-byte conclusion",
    )
    .await?;
    ensure!(
        message(&body).contains("512"),
        "message {:?}",
        message(&body)
    );
    let huge = with(
        packet_json("a", "energy-anomaly", 1),
        "conclusion",
        json!("x".repeat(20_000)),
    );
    let four: Vec<Value> = (0..4)
        .map(|i| json!({"packet": packet_json("a", "energy-anomaly", i)}))
        .collect();
    let refusals = vec![
        (
            format!("{}/v1/packets", g.url()),
            huge,
            (413, "body_too_large"),
            "20 KB body".into(),
        ),
        (
            format!("{}/v1/packets/batch", g.url()),
            json!({"packets": four}),
            (413, "batch_too_large"),
            "4 of max 3".into(),
        ),
    ];
    all_refused(&http, refusals).await?;
    let three = &four[..3];
    let (status, body) = post(
        &http,
        format!("{}/v1/packets/batch", g.url()),
        &json!({"packets": three}),
    )
    .await?;
    ensure!(status == 201, "3 of max 3: {status} {body}");
    ensure!(
        body["receipts"].as_array().map(Vec::len) == Some(3),
        "receipts: {body}"
    );
    g.shutdown().await.map_err(|e| e.to_string())
}

/// With tokens configured, /v1/… needs one (header or access_token); the
/// page, /health and /openapi.json do not.
async fn missing_or_wrong_token_is_401() -> CaseResult {
    let tokens = qis_gateway::Tokens::new(["alpha", "beta+/="]).map_err(|e| e.to_string())?;
    let (g, _) = memory_gateway(config().tokens(tokens)).await?;
    let http = client();
    let url = format!("{}/v1/packets", g.url());
    let p = packet_json("a", "energy-anomaly", 1);
    let r = http
        .post(&url)
        .json(&p)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let challenge = r.headers().get("www-authenticate").cloned();
    let (status, body) = answer(r).await;
    ensure!(
        status == 401 && kind(&body) == "unauthorized",
        "no token: {status} {body}"
    );
    ensure!(challenge.is_some(), "a 401 without WWW-Authenticate");
    let (status, body) = answer(
        http.post(&url)
            .bearer_auth("gamma")
            .json(&p)
            .send()
            .await
            .map_err(|e| e.to_string())?,
    )
    .await;
    ensure!(
        status == 401 && kind(&body) == "unauthorized",
        "wrong token: {status} {body}"
    );
    for (i, token) in ["alpha", "beta+/="].iter().enumerate() {
        let p = packet_json("a", "energy-anomaly", 10 + i);
        let (status, body) = answer(
            http.post(&url)
                .bearer_auth(token)
                .json(&p)
                .send()
                .await
                .map_err(|e| e.to_string())?,
        )
        .await;
        ensure!(status == 201, "token {token}: {status} {body}");
    }
    let (status, _) = get(
        &http,
        format!("{}/v1/info?access_token=beta%2B%2F%3D", g.url()),
    )
    .await?;
    ensure!(status == 200, "access_token in the query: {status}");
    for open in ["/", "/health", "/openapi.json"] {
        let r = http
            .get(format!("{}{open}", g.url()))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        ensure!(r.status() == 200, "{open} without a token: {}", r.status());
    }
    g.shutdown().await.map_err(|e| e.to_string())
}

/// A nats-server with JetStream of this test's own, its data in `dir`.
fn own_nats(bin: &PathBuf, dir: &TempDir) -> Result<OwnServer, String> {
    let port = free_port();
    let mut command = Command::new(bin);
    command
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path());
    OwnServer::start("the nats-server", command, port, Duration::from_secs(10))
}

fn nats_binary() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("QIS_NATS_RESTART_BIN") {
        return Ok(PathBuf::from(bin));
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("nats-server"))
                .find(|c| c.is_file())
        })
        .ok_or_else(|| "nats-server is not on PATH (scripts/servers/nats.sh install)".to_string())
}

/// The broker stopped under the gateway: deposits are 503 with a JSON
/// body and Retry-After, never a 500.
async fn broker_stopped_is_503(bin: PathBuf) -> CaseResult {
    let dir = TempDir::new("gw-nats");
    let mut nats = own_nats(&bin, &dir)?;
    let config =
        qis_transport_nats::NatsConfig::from_url(&format!("nats://127.0.0.1:{}", nats.port))
            .map_err(|e| e.to_string())?
            .request_timeout(Duration::from_secs(1));
    let backend: DynTransport = Arc::new(
        qis_transport_nats::NatsTransport::connect(config)
            .await
            .map_err(|e| format!("connect: {e}"))?,
    );
    let g = qis_gateway::start(backend, common::config())
        .await
        .map_err(|e| e.to_string())?;
    let http = client();
    let url = format!("{}/v1/packets", g.url());
    let (status, body) = post(&http, url.clone(), &packet_json("a", "energy-anomaly", 1)).await?;
    ensure!(status == 201, "with the broker up: {status} {body}");
    nats.stop();
    let r = http
        .post(&url)
        .json(&packet_json("a", "energy-anomaly", 2))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let retry = r.headers().get("retry-after").cloned();
    let (status, body) = answer(r).await;
    ensure!(status == 503, "with the broker stopped: {status} {body}");
    ensure!(
        ["unavailable", "timeout", "backend"].contains(&kind(&body)),
        "kind {}",
        kind(&body)
    );
    ensure!(retry.is_some(), "a 503 without Retry-After");
    let _ = tokio::time::timeout(Duration::from_secs(15), g.shutdown()).await;
    Ok(())
}

/// A backend closed under the gateway is 503 too (no server needed).
async fn closed_backend_is_503() -> CaseResult {
    let (g, backend) = memory_gateway(config()).await?;
    backend.close().await.map_err(|e| e.to_string())?;
    let (http, url) = (client(), g.url() + "/v1/packets");
    let packet = packet_json("a", "energy-anomaly", 1);
    post_refused(&http, url, &packet, (503, "closed"), "closed backend").await?;
    let _ = g.shutdown().await;
    Ok(())
}

/// What the backend cannot do is 501: fire-and-forget on SQLite.
async fn unsupported_is_501() -> CaseResult {
    let dir = TempDir::new("gw-sqlite");
    let g = sqlite_gateway(&dir, config()).await?;
    let (http, url) = (client(), g.url() + "/v1/publish");
    let packet = packet_json("a", "energy-anomaly", 1);
    post_refused(
        &http,
        url,
        &packet,
        (501, "unsupported"),
        "publish on SQLite",
    )
    .await?;
    g.shutdown().await.map_err(|e| e.to_string())
}

/// Where a consumer session the gateway opened takes fetches and acks.
#[derive(Clone)]
struct Session {
    fetch: String,
    ack: String,
}

async fn open_session(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    pattern: &str,
) -> Result<Session, String> {
    let (status, body) = post(
        http,
        format!("{base}/v1/consumers"),
        &json!({"name": name, "pattern": pattern}),
    )
    .await?;
    ensure!(status == 201, "open consumer {name}: {status} {body}");
    let at = format!(
        "{base}/v1/consumers/{}",
        body["session"].as_str().unwrap_or_default()
    );
    Ok(Session {
        fetch: format!("{at}/fetch"),
        ack: format!("{at}/ack"),
    })
}

/// An unknown session is 404; a handle never handed out is 400; a consumer
/// name reopened with another pattern is 409.
async fn unknown_session_404_bad_handle_400_conflict_409() -> CaseResult {
    let dir = TempDir::new("gw-sqlite");
    let g = sqlite_gateway(&dir, config()).await?;
    let http = client();
    let base = g.url();
    post_refused(
        &http,
        format!("{base}/v1/consumers/nope/fetch"),
        &json!({"max": 1}),
        (404, "not_found"),
        "unknown session",
    )
    .await?;
    let session = open_session(&http, &base, "reader", "qis.iot.>").await?;
    let mut refusals: Vec<Refusal> = ["x", "0", "999999999"]
        .into_iter()
        .map(|bad| {
            (
                session.ack.clone(),
                json!({"handles": [bad]}),
                (400, "invalid_input"),
                format!("handle {bad}"),
            )
        })
        .collect();
    let consumers = format!("{base}/v1/consumers");
    for (name, pattern, expected, what) in [
        (
            "reader",
            "qis.iot.hvac.>",
            (409, "conflict"),
            "reopened with another pattern",
        ),
        (
            "bad name!",
            "qis.iot.>",
            (400, "invalid_input"),
            "a bad name",
        ),
        (
            "w",
            "qis.iot.hv*",
            (400, "invalid_subject"),
            "a bad pattern",
        ),
    ] {
        let body = json!({"name": name, "pattern": pattern});
        refusals.push((consumers.clone(), body, expected, what.into()));
    }
    all_refused(&http, refusals).await?;
    let (status, body) = post(&http, session.fetch.clone(), &json!({"max": 0})).await?;
    ensure!(status == 400, "max 0: {status} {body}");
    g.shutdown().await.map_err(|e| e.to_string())
}

/// max_streams long-polls and event streams at once; one more is 429 with
/// Retry-After until one ends.
async fn streams_beyond_max_streams_are_429() -> CaseResult {
    let (g, _) = memory_gateway(config().max_streams(2)).await?;
    let http = client();
    let live = format!("{}/v1/live", g.url());
    let a = Events::ready(&http, live.clone(), "stream 1").await?;
    let b = Events::ready(&http, live.clone(), "stream 2").await?;
    match Events::open(&http, live.clone()).await {
        Ok(_) => return Err("a third stream was served with max_streams 2".into()),
        Err((status, body)) => ensure!(
            status == 429 && kind(&body) == "busy",
            "third stream: {status} {body}"
        ),
    }
    let session = open_session(
        &http,
        &g.url(),
        "poller",
        &format!("{}.>", g.transport().prefix()),
    )
    .await?;
    post_refused(
        &http,
        session.fetch.clone(),
        &json!({"max": 1, "wait_ms": 100}),
        (429, "busy"),
        "a long-poll beyond max_streams",
    )
    .await?;
    drop(a);
    let base = g.url();
    streams_open(&http, &base, 1, "a stream permit freed after a client left").await?;
    let c = Events::ready(&http, live, "stream after one left").await?;
    drop((b, c));
    g.shutdown().await.map_err(|e| e.to_string())
}

/// A session holds at most max_pending unacked deliveries: a fetch on a
/// full one is 429 until some are acked.
async fn unacked_beyond_max_pending_is_429() -> CaseResult {
    let (g, backend) = memory_gateway(config().max_pending(3).max_sessions(1)).await?;
    let http = client();
    let base = g.url();
    deposit_seqs(&*backend, "a", "hvac", "energy-anomaly", 0..5).await?;
    let session = open_session(&http, &base, "slow", &format!("{}.>", backend.prefix())).await?;
    let fetch = session.fetch.clone();
    let (status, body) = post(&http, fetch.clone(), &json!({"max": 10, "wait_ms": 1000})).await?;
    ensure!(status == 200, "first fetch: {status} {body}");
    let got = body["deliveries"].as_array().cloned().unwrap_or_default();
    ensure!(
        got.len() == 3,
        "a session of max_pending 3 got {} deliveries",
        got.len()
    );
    post_refused(
        &http,
        fetch.clone(),
        &json!({"max": 10}),
        (429, "busy"),
        "fetch on a full session",
    )
    .await?;
    let (status, body) = post(
        &http,
        session.ack.clone(),
        &json!({"handles": [got[0]["handle"]]}),
    )
    .await?;
    ensure!(status == 200 && body["done"] == 1, "ack: {status} {body}");
    let (status, body) = post(&http, fetch, &json!({"max": 10, "wait_ms": 1000})).await?;
    ensure!(
        status == 200 && body["deliveries"].as_array().map(Vec::len) == Some(1),
        "after one ack: {status} {body}"
    );
    // max_sessions 1: a second session is refused.
    post_refused(
        &http,
        format!("{base}/v1/consumers"),
        &json!({"name": "other", "pattern": format!("{}.>", backend.prefix())}),
        (429, "busy"),
        "a session beyond max_sessions",
    )
    .await?;
    g.shutdown().await.map_err(|e| e.to_string())
}

/// A fetch asks for more than max_fetch, and to wait longer than max_wait:
/// it gets at most max_fetch, and is answered after max_wait.
async fn fetch_is_bounded_by_max_fetch_and_max_wait() -> CaseResult {
    let (g, backend) =
        memory_gateway(config().max_fetch(4).max_wait(Duration::from_millis(300))).await?;
    let http = client();
    let base = g.url();
    deposit_seqs(&*backend, "a", "hvac", "energy-anomaly", 0..10).await?;
    let hvac = format!("{}.hvac.>", backend.prefix());
    let session = open_session(&http, &base, "bounded", &hvac).await?;
    let (status, body) = post(&http, session.fetch, &json!({"max": 100, "wait_ms": 1000})).await?;
    ensure!(
        status == 200 && body["deliveries"].as_array().map(Vec::len) == Some(4),
        "max_fetch 4: {status} {body}"
    );
    let other = format!("{}.other.>", backend.prefix());
    let empty = open_session(&http, &base, "idle", &other).await?;
    let started = Instant::now();
    let (status, body) = post(&http, empty.fetch, &json!({"max": 1, "wait_ms": 20000})).await?;
    ensure!(
        status == 200 && body["deliveries"] == json!([]),
        "an empty long-poll: {status} {body}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "a 20 s wait was not lowered to max_wait 300 ms: {:?}",
        started.elapsed()
    );
    g.shutdown().await.map_err(|e| e.to_string())
}

/// Per problem class, the synthesis of what the gateway saw: two of three
/// hvac agents report energy-anomaly, so it is the consensus at 2/3 and
/// alerts; nothing seen is 404.
async fn synthesis_per_problem_class() -> CaseResult {
    let (g, backend) = memory_gateway(config()).await?;
    let http = client();
    let base = g.url();
    for (agent, problem, seq) in [
        ("a", "energy-anomaly", 1),
        ("b", "energy-anomaly", 2),
        ("c", "refrigerant-loss", 3),
    ] {
        // Equally confident agents: the confidence-weighted strength (the
        // default method) is the share of votes, 2/3, above the 0.6 alert.
        let packet = with(
            packet_json(agent, problem, seq),
            "confidence",
            serde_json::json!(0.9),
        );
        let (status, body) = post(&http, format!("{base}/v1/packets"), &packet).await?;
        ensure!(status == 201, "deposit: {status} {body}");
    }
    let url = format!("{base}/v1/synthesis/hvac/energy-anomaly");
    eventually(
        "the view to count the three agents",
        Duration::from_secs(10),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                get(&http, url)
                    .await
                    .is_ok_and(|(s, b)| s == 200 && b["synthesis"]["n_agents"] == 3)
            }
        },
    )
    .await?;
    let (_, body) = get(&http, url).await?;
    let s = &body["synthesis"];
    ensure!(
        s["consensus_problem"] == "hvac.energy-anomaly",
        "consensus {s}"
    );
    ensure!(
        (s["consensus_strength"].as_f64().unwrap_or(0.0) - 2.0 / 3.0).abs() < 1e-9,
        "strength {s}"
    );
    ensure!(s["alert"] == true, "no alert at 2/3: {s}");
    ensure!(
        body["agents_reporting"] == 2 && body["packets"] == 2,
        "class figures {body}"
    );
    let (_, all) = get(&http, format!("{base}/v1/synthesis")).await?;
    ensure!(
        all["classes"].as_array().map(Vec::len) == Some(2),
        "two classes: {all}"
    );
    let (status, body) = get(&http, format!("{base}/v1/synthesis/hvac/unseen")).await?;
    ensure!(
        status == 404 && kind(&body) == "not_found",
        "an unseen class: {status} {body}"
    );
    drop(backend);
    g.shutdown().await.map_err(|e| e.to_string())
}

/// `/openapi.json` documents exactly the routes the gateway serves, every
/// route answers its method, and the documented schemas have the fields
/// the wire types have.
async fn openapi_documents_every_endpoint() -> CaseResult {
    let (g, _) = memory_gateway(config()).await?;
    let http = client();
    let (status, doc) = get(&http, format!("{}/openapi.json", g.url())).await?;
    ensure!(
        status == 200 && doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not an OpenAPI 3 document"
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().ok_or("no paths")? {
        for method in item.as_object().ok_or("a path without operations")?.keys() {
            if method != "parameters" {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = qis_gateway::endpoints()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    ensure!(
        documented == served,
        "documented {:?}\nserved {:?}",
        documented.symmetric_difference(&served).collect::<Vec<_>>(),
        ()
    );
    for (method, path) in &served {
        if path == "/v1/live" {
            continue; // a stream: opened by the other cases
        }
        let url = format!("{}{}", g.url(), path.replace(['{', '}'], ""));
        let r = http
            .request(method.parse().map_err(|_| "a method")?, &url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let (status, body) = answer(r).await;
        ensure!(
            status != 405,
            "{method} {path} is documented but not served ({status})"
        );
        ensure!(
            !message(&body).starts_with("no such endpoint"),
            "{method} {path} fell through to no route"
        );
    }
    // The schemas name the fields the wire types serialize.
    let receipt = qis_core::Receipt {
        subject: Subject::new("qis.iot.hvac.x").unwrap(),
        id: qis_core::PacketId::of(b"x"),
        position: qis_core::Position::Sequence(1),
        duplicate: false,
    };
    use qis_transport_http::wire;
    let samples: Vec<(&str, Value)> = vec![
        (
            "Receipt",
            serde_json::to_value(wire::ReceiptJson::from(&receipt)).unwrap(),
        ),
        (
            "OutcomePacket",
            serde_json::to_value(pkt("a", "hvac", "x", 1)).unwrap(),
        ),
        ("Info", get(&http, format!("{}/v1/info", g.url())).await?.1),
        (
            "ConsumerSession",
            serde_json::to_value(wire::ConsumerSession {
                session: "s".into(),
                name: "n".into(),
                pattern: "p".into(),
                ack_wait_ms: 1,
            })
            .unwrap(),
        ),
        (
            "FetchResponse",
            serde_json::to_value(wire::FetchResponse {
                deliveries: vec![],
                malformed_skipped: 0,
            })
            .unwrap(),
        ),
        (
            "Delivery",
            serde_json::to_value(wire::DeliveryJson {
                handle: "1".into(),
                subject: "s".into(),
                id: "i".into(),
                packet: pkt("a", "hvac", "x", 1),
                position: wire::PositionJson::Sequence { sequence: 1 },
                delivery_count: 1,
            })
            .unwrap(),
        ),
        (
            "AckResponse",
            serde_json::to_value(wire::AckResponse {
                done: 1,
                expired: vec![],
            })
            .unwrap(),
        ),
        (
            "Backlog",
            serde_json::to_value(qis_core::Backlog::default()).unwrap(),
        ),
        (
            "LivePacket",
            serde_json::to_value(wire::LivePacket {
                subject: "s".into(),
                id: "i".into(),
                packet: pkt("a", "hvac", "x", 1),
            })
            .unwrap(),
        ),
        (
            "Error",
            serde_json::to_value(wire::ErrorBody {
                error: wire::ErrorDetail {
                    kind: "k".into(),
                    message: "m".into(),
                    transport: Some("t".into()),
                },
            })
            .unwrap(),
        ),
    ];
    for (name, sample) in samples {
        let schema = &doc["components"]["schemas"][name];
        let props: BTreeSet<&String> = schema["properties"]
            .as_object()
            .ok_or(format!("schema {name} has no properties"))?
            .keys()
            .collect();
        let fields: BTreeSet<&String> = sample
            .as_object()
            .ok_or(format!("{name} is not an object"))?
            .keys()
            .collect();
        ensure!(
            props == fields,
            "schema {name} documents {props:?}, the wire type has {fields:?}"
        );
        for r in schema["required"].as_array().into_iter().flatten() {
            ensure!(
                r.as_str()
                    .is_some_and(|r| fields.iter().any(|f| f.as_str() == r)),
                "schema {name} requires {r}, which the wire type lacks"
            );
        }
    }
    g.shutdown().await.map_err(|e| e.to_string())
}

/// Shutdown answers a waiting long-poll at once (200, no deliveries), ends
/// event streams, flushes the acks of open sessions: after it, the
/// consumer resumed on the same file gets nothing that was acked.
async fn graceful_shutdown_answers_waiters_and_flushes_acks() -> CaseResult {
    let dir = TempDir::new("gw-shutdown");
    let path = dir.path().join("q.db");
    let open = || async {
        qis_transport_sqlite::SqliteTransport::connect(qis_transport_sqlite::SqliteConfig::new(
            &path,
        ))
        .await
        .map_err(|e| e.to_string())
    };
    let backend: DynTransport = Arc::new(open().await?);
    deposit_seqs(&*backend, "a", "hvac", "energy-anomaly", 0..5).await?;
    let g = qis_gateway::start(backend, config().max_wait(Duration::from_secs(60)))
        .await
        .map_err(|e| e.to_string())?;
    let http = client();
    let base = g.url();
    let session = open_session(&http, &base, "keeper", "qis.iot.hvac.>").await?;
    let (_, body) = post(
        &http,
        session.fetch.clone(),
        &json!({"max": 10, "wait_ms": 2000}),
    )
    .await?;
    let handles: Vec<Value> = body["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["handle"].clone())
        .collect();
    ensure!(handles.len() == 5, "fetched {} of 5", handles.len());
    let (status, body) = post(&http, session.ack.clone(), &json!({"handles": handles})).await?;
    ensure!(status == 200 && body["done"] == 5, "ack: {status} {body}");
    // A long-poll of a minute and an event stream, both in progress.
    let poll = tokio::spawn({
        let (http, fetch) = (http.clone(), session.fetch.clone());
        async move { post(&http, fetch, &json!({"max": 1, "wait_ms": 60000})).await }
    });
    let mut events = Events::ready(&http, format!("{base}/v1/live"), "stream").await?;
    streams_open(&http, &base, 2, "the long-poll and the stream in progress").await?;
    let started = Instant::now();
    g.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    ensure!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
    let (status, body) = poll.await.map_err(|e| e.to_string())??;
    ensure!(
        status == 200 && body["deliveries"] == json!([]),
        "the waiting long-poll got {status} {body}"
    );
    ensure!(
        events.ends(Duration::from_secs(5)).await,
        "the event stream did not end at shutdown"
    );
    // The acks were flushed: the consumer resumed on the file has nothing.
    let again: DynTransport = Arc::new(open().await?);
    let c =
        consumer_from_start(&*again, "keeper", "qis.iot.hvac.>", Duration::from_secs(60)).await?;
    nothing_more(&c, Duration::from_millis(500), "came back after shutdown").await?;
    again.close().await.map_err(|e| e.to_string())
}

fn main() {
    let mut trials = qis_conformance::async_trials!("api", Duration::from_secs(120);
        invalid_packet_is_400_naming_the_field,
        oversize_is_413,
        missing_or_wrong_token_is_401,
        closed_backend_is_503,
        unsupported_is_501,
        unknown_session_404_bad_handle_400_conflict_409,
        streams_beyond_max_streams_are_429,
        unacked_beyond_max_pending_is_429,
        fetch_is_bounded_by_max_fetch_and_max_wait,
        synthesis_per_problem_class,
        openapi_documents_every_endpoint,
        graceful_shutdown_answers_waiters_and_flushes_acks,
    );
    trials.push(trial("api::broker_stopped_is_503", &nats_binary(), |bin| {
        block_on(Duration::from_secs(120), broker_stopped_is_503(bin))
    }));
    qis_conformance::run_trials(trials);
}
