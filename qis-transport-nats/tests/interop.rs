//! Interoperation with the seed's Python agents (`NATSOutcomeRouter`), on the
//! seed's own names: stream `QIS_OUTCOMES` on `qis.iot.>`.
//!
//! The seed's side is played by plain async-nats calls doing what its Python
//! does: `add_stream(name="QIS_OUTCOMES", subjects=["qis.iot.>"], max_bytes=50
//! MiB, max_age=86400)`, then `js.publish(subject, json.dumps(asdict(packet)))`
//! (Python's spaced JSON, no message id), and a pull consumer that reads
//! `json.loads(msg.data)` into `OutcomePacket(**data)`.
//!
//! Each test starts its own nats-server (on PATH or `QIS_NATS_RESTART_BIN`)
//! on a free loopback port, so the seed's names are fresh. Without one the
//! tests are ignored with the reason; with `QIS_REQUIRE_LIVE=1` they fail.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use common::OwnServer;
use futures::StreamExt;
use qis_conformance::support::{block_on, fetch_once, trial, CaseResult};
use qis_conformance::{ensure, CASE_LIMIT};
use qis_core::{synthesize, OutcomePacket, OutcomeTransport, OutcomeTransportExt, PacketId};
use qis_transport_nats::{NatsConfig, NatsTransport};

/// Agent A's packet exactly as the seed's `json.dumps(asdict(packet))` writes it.
const SEED_BODY: &str = r#"{"agent_id": "hvac-building-a", "domain": "hvac", "problem_class": "energy-anomaly", "conclusion": "Compressor draw 18% above baseline at 14:32. Possible refrigerant loss.", "confidence": 0.87, "context_vector": [0.18, 0.92, 0.03, 0.71], "timestamp": 1764000000.123456, "source_node": "building-a-floor-3"}"#;

const SEED_KEYS: [&str; 8] = [
    "agent_id",
    "domain",
    "problem_class",
    "conclusion",
    "confidence",
    "context_vector",
    "timestamp",
    "source_node",
];

/// The seed's `connect()`: create the stream with its settings.
async fn seed_connect(url: &str) -> Result<jetstream::Context, String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("seed connect: {e}"))?;
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "QIS_OUTCOMES".into(),
        subjects: vec!["qis.iot.>".into()],
        max_bytes: 50 * 1024 * 1024,
        max_age: Duration::from_secs(86_400),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("seed add_stream: {e}"))?;
    Ok(js)
}

fn building_b() -> OutcomePacket {
    OutcomePacket {
        agent_id: "hvac-building-b".into(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        conclusion: "Energy consumption spike detected 09:15-09:47. Thermal load mismatch.".into(),
        confidence: 0.79,
        context_vector: vec![0.22, 0.88, 0.07, 0.65],
        timestamp: 1_764_000_001.5,
        source_node: "building-b-floor-1".into(),
    }
}

async fn seed_packet_is_fetched_and_synthesised(server: OwnServer) -> CaseResult {
    let js = seed_connect(&server.url()).await?;
    let ack = js
        .publish(
            "qis.iot.hvac.energy-anomaly",
            SEED_BODY.as_bytes().to_vec().into(),
        )
        .await
        .map_err(|e| format!("seed publish: {e}"))?
        .await
        .map_err(|e| format!("seed publish ack: {e}"))?;
    ensure!(
        ack.stream == "QIS_OUTCOMES",
        "seed published to {}",
        ack.stream
    );

    // The project on the seed's defaults binds to the seed's stream (same
    // settings: no conflict) and finds the earlier packet.
    let t = NatsTransport::connect(NatsConfig::from_url(&server.url()).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| format!("connect to the seed's stream: {e}"))?;
    ensure!(
        t.stream_name() == "QIS_OUTCOMES" && t.prefix().as_str() == "qis.iot",
        "not the seed's names"
    );
    let twins = t
        .twins_consumer(
            "hvac-building-b-hvac-energy-anomaly",
            "hvac",
            "energy-anomaly",
        )
        .await
        .map_err(|e| format!("twins consumer: {e}"))?;
    let got = fetch_once(&twins, 20, Duration::from_secs(5)).await?;
    twins.ack(&got).await.map_err(|e| format!("ack: {e}"))?;
    ensure!(
        got.len() == 1,
        "fetched {} packets, expected the seed agent's one",
        got.len()
    );
    let d = &got[0];
    ensure!(
        d.subject() == "qis.iot.hvac.energy-anomaly",
        "subject {}",
        d.subject()
    );
    ensure!(
        d.id() == PacketId::of(SEED_BODY.as_bytes()),
        "the id is not the SHA-256 of the seed's bytes"
    );
    ensure!(
        twins.malformed_skipped() == 0,
        "the seed's packet was taken for malformed"
    );
    let a = d.packet();
    ensure!(
        a.agent_id == "hvac-building-a" && a.source_node == "building-a-floor-3",
        "fields differ: {a:?}"
    );
    ensure!(
        a.confidence == 0.87 && a.context_vector == vec![0.18, 0.92, 0.03, 0.71],
        "numbers differ: {a:?}"
    );
    ensure!(
        a.timestamp == 1_764_000_000.123456,
        "timestamp {}",
        a.timestamp
    );

    let b = building_b();
    let s = synthesize(&b, got.iter().map(|d| d.packet()));
    ensure!(s.n_agents == 2, "n_agents {}", s.n_agents);
    ensure!(
        s.synthesis_pairs == 1,
        "synthesis_pairs {}",
        s.synthesis_pairs
    );
    ensure!(
        s.consensus_problem == "hvac.energy-anomaly",
        "consensus {}",
        s.consensus_problem
    );
    ensure!(
        s.consensus_strength == 1.0 && s.alert,
        "strength {} alert {}",
        s.consensus_strength,
        s.alert
    );
    let mean_of_both = (s.weighted_confidence - 0.83).abs() < 1e-9;
    ensure!(
        mean_of_both,
        "weighted_confidence {}",
        s.weighted_confidence
    );
    t.close().await.map_err(|e| e.to_string())
}

async fn deposited_packet_reads_as_the_seed_json(server: OwnServer) -> CaseResult {
    let js = seed_connect(&server.url()).await?;
    let t = NatsTransport::connect_url(&server.url())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let b = building_b();
    let receipt = t.deposit(&b).await.map_err(|e| format!("deposit: {e}"))?;
    ensure!(
        receipt.subject.as_str() == "qis.iot.hvac.energy-anomaly",
        "subject {}",
        receipt.subject
    );

    // The seed's reader: a durable pull consumer on the subject, explicit ack.
    let stream = js
        .get_stream("QIS_OUTCOMES")
        .await
        .map_err(|e| e.to_string())?;
    let reader = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("hvac-building-a-hvac-energy-anomaly".into()),
            filter_subject: "qis.iot.hvac.energy-anomaly".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("seed pull_subscribe: {e}"))?;
    let mut messages = reader
        .fetch()
        .max_messages(50)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| format!("seed fetch: {e}"))?;
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .map_err(|_| "the seed's reader got nothing within 5 s".to_string())?
        .ok_or("the seed's fetch ended empty")?
        .map_err(|e| format!("seed fetch: {e}"))?;
    msg.ack().await.map_err(|e| format!("seed ack: {e}"))?;

    // `json.loads(msg.data)` then `OutcomePacket(**data)`: exactly the eight fields.
    let data: serde_json::Value =
        serde_json::from_slice(&msg.payload).map_err(|e| format!("json.loads: {e}"))?;
    let obj = data.as_object().ok_or("the body is not a JSON object")?;
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = SEED_KEYS.to_vec();
    want.sort_unstable();
    ensure!(
        keys == want,
        "keys {keys:?}, the seed's dataclass takes {want:?}"
    );
    for k in [
        "agent_id",
        "domain",
        "problem_class",
        "conclusion",
        "source_node",
    ] {
        ensure!(obj[k].is_string(), "{k} is not a string");
    }
    for k in ["confidence", "timestamp"] {
        ensure!(obj[k].is_number(), "{k} is not a number");
    }
    ensure!(
        obj["context_vector"]
            .as_array()
            .is_some_and(|v| v.iter().all(|x| x.is_number())),
        "context_vector is not a list of numbers"
    );
    ensure!(
        obj["agent_id"] == "hvac-building-b" && obj["confidence"] == 0.79,
        "values differ: {data}"
    );
    ensure!(
        msg.payload.len() <= 512,
        "{} bytes on the wire",
        msg.payload.len()
    );
    let msg_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_string())
        .ok_or("no Nats-Msg-Id header")?;
    ensure!(
        msg_id == receipt.id.to_hex(),
        "Nats-Msg-Id {msg_id} is not the packet id"
    );
    ensure!(
        msg_id == PacketId::of(&msg.payload).to_hex(),
        "Nats-Msg-Id is not the SHA-256 of the body"
    );
    t.close().await.map_err(|e| e.to_string())
}

fn main() {
    let bin = common::server_binary();
    let trials = vec![
        trial("seed_packet_is_fetched_and_synthesised", &bin, |_| {
            let server = OwnServer::start(&[])?;
            block_on(CASE_LIMIT, seed_packet_is_fetched_and_synthesised(server))
        }),
        trial("deposited_packet_reads_as_the_seed_json", &bin, |_| {
            let server = OwnServer::start(&[])?;
            block_on(CASE_LIMIT, deposited_packet_reads_as_the_seed_json(server))
        }),
    ];
    qis_conformance::run_trials(trials);
}
