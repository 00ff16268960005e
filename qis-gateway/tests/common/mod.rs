//! What the gateway's tests share: a gateway on an in-process store, an
//! HTTP client, packets as JSON, and reading an event stream.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use qis_conformance::support::{await_port, eventually, fresh_prefix, pkt, TempDir};
use qis_core::{DynTransport, MemoryTransport, OutcomePacket};
use qis_gateway::{GatewayConfig, RunningGateway};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport};
use serde_json::Value;

/// A config listening on a free loopback port.
pub fn config() -> GatewayConfig {
    GatewayConfig::default().listen("127.0.0.1:0".parse().unwrap())
}

/// A gateway in front of a fresh in-process store, and that store.
pub async fn memory_gateway(
    config: GatewayConfig,
) -> Result<(RunningGateway, DynTransport), String> {
    let backend: DynTransport = Arc::new(MemoryTransport::new(fresh_prefix()));
    let g = qis_gateway::start(backend.clone(), config)
        .await
        .map_err(|e| format!("start the gateway: {e}"))?;
    Ok((g, backend))
}

/// An HTTP client (rustls with the ring provider, for https too).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Packet `seq` of `agent` on hvac/`problem` as JSON.
pub fn packet_json(agent: &str, problem: &str, seq: usize) -> Value {
    serde_json::to_value(pkt(agent, "hvac", problem, seq)).unwrap()
}

/// The packet as JSON with `field` set to `value`.
pub fn with(mut packet: Value, field: &str, value: Value) -> Value {
    packet[field] = value;
    packet
}

/// The JSON of `packet`.
pub fn json_of(packet: &OutcomePacket) -> Value {
    serde_json::to_value(packet).unwrap()
}

/// Status, and the body as JSON (Null if it is not JSON).
pub async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// POST `body` as JSON to `url`.
pub async fn post(
    client: &reqwest::Client,
    url: String,
    body: &Value,
) -> Result<(u16, Value), String> {
    let r = client
        .post(&url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    Ok(answer(r).await)
}

/// POST `body` to `url`: the answer must be the error `expected` (status
/// and kind); fails saying `what` and the answer it got. Returns the error
/// body for further checks.
pub async fn post_refused(
    client: &reqwest::Client,
    url: String,
    body: &Value,
    expected: (u16, &str),
    what: &str,
) -> Result<Value, String> {
    let (status, body) = post(client, url, body).await?;
    if (status, kind(&body)) != expected {
        return Err(format!("{what}: {status} {body}"));
    }
    Ok(body)
}

/// One request a test expects refused: where, what is posted, the error
/// expected (status and kind), and what it is in a failure.
pub type Refusal = (String, Value, (u16, &'static str), String);

/// POST each of `refusals` in turn: each must be refused as expected (see
/// [`post_refused`]).
pub async fn all_refused(client: &reqwest::Client, refusals: Vec<Refusal>) -> Result<(), String> {
    for (url, body, expected, what) in refusals {
        post_refused(client, url, &body, expected, &what).await?;
    }
    Ok(())
}

/// A gateway in front of a SQLite file in `dir` (for what the memory store
/// does not show: no fire-and-forget, consumers that outlive a handle).
pub async fn sqlite_gateway(
    dir: &TempDir,
    config: GatewayConfig,
) -> Result<RunningGateway, String> {
    let backend = SqliteTransport::connect(SqliteConfig::new(dir.path().join("q.db")))
        .await
        .map_err(|e| format!("open the SQLite file: {e}"))?;
    qis_gateway::start(Arc::new(backend), config)
        .await
        .map_err(|e| format!("start the gateway: {e}"))
}

/// A program this test started (a nats-server, a chromedriver) listening
/// on loopback `port`, killed by its PID when stopped or dropped.
pub struct OwnServer {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
}

impl OwnServer {
    /// Spawn `command`, which listens on `port`, and wait up to `within`
    /// for the port; `what` names it in a failure.
    pub fn start(
        what: &str,
        mut command: Command,
        port: u16,
        within: Duration,
    ) -> Result<OwnServer, String> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {what}: {e}"))?;
        let mut server = OwnServer {
            child: Some(child),
            port,
        };
        await_port(&mut server.child, port, within).map_err(|e| format!("{what} {e}"))?;
        Ok(server)
    }

    /// Kill it (SIGKILL by PID) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait up to 10 s until the gateway at `base` counts `n` open streams
/// (long-polls and event streams) on `/health`; `what` says which.
pub async fn streams_open(
    client: &reqwest::Client,
    base: &str,
    n: u64,
    what: &str,
) -> Result<(), String> {
    eventually(what, Duration::from_secs(10), || async move {
        get(client, format!("{base}/health"))
            .await
            .is_ok_and(|(_, h)| h["streams"] == n)
    })
    .await
}

/// GET `url`.
pub async fn get(client: &reqwest::Client, url: String) -> Result<(u16, Value), String> {
    let r = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    Ok(answer(r).await)
}

/// The error kind of an error body.
pub fn kind(body: &Value) -> &str {
    body["error"]["kind"].as_str().unwrap_or("<no error body>")
}

/// The error message of an error body.
pub fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

/// An open event stream: the response and what was read of it.
pub struct Events {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    pub text: String,
}

impl Events {
    /// GET `url` as an event stream; Err(status) if refused.
    pub async fn open(client: &reqwest::Client, url: String) -> Result<Events, (u16, Value)> {
        let r = client
            .get(&url)
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| (0, Value::String(e.to_string())))?;
        if !r.status().is_success() {
            return Err(answer(r).await);
        }
        Ok(Events {
            stream: r.bytes_stream().boxed(),
            text: String::new(),
        })
    }

    /// [`open`](Self::open) `url` and wait (up to 5 s) for its `ready`
    /// event; fails naming `which` stream.
    pub async fn ready(
        client: &reqwest::Client,
        url: String,
        which: &str,
    ) -> Result<Events, String> {
        let mut events = Events::open(client, url)
            .await
            .map_err(|e| format!("{which}: {e:?}"))?;
        if events.until("event: ready", Duration::from_secs(5)).await {
            Ok(events)
        } else {
            Err(format!("{which} not ready within 5 s: {:?}", events.text))
        }
    }

    /// Read until `needle` has been seen, within `within`; false if the
    /// stream ended or the time passed first.
    pub async fn until(&mut self, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.text.contains(needle) {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return false,
            }
        }
        true
    }

    /// Whether the stream ends within `within`.
    pub async fn ends(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Some(Err(_))) | Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }
}
