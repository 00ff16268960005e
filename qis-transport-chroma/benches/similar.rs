//! Similar twins: query latency and deposit throughput at 10,000 and
//! 100,000 stored packets, SQLite exact search beside Chroma, in one run,
//! with the raw references each is measured against:
//!
//! - **sqlite**: the transport's exact search over its file, against a
//!   plain Rust scan of the same vectors held in memory (the floor of any
//!   exact search: no file, no decoding);
//! - **chroma**: the transport's query (where filter, candidates beyond `k`,
//!   bodies decoded, scores recomputed), against the same `query` request
//!   sent raw with reqwest (`n_results` = k, no filter, no decoding); its
//!   batch deposit (look-up of the ids, then `add`) against raw `add`s of
//!   the same batches into a collection of its own.
//!
//! `QIS_CHROMA_URL=chroma://127.0.0.1:18000 cargo bench -p qis-transport-chroma --bench similar`
//! (a few minutes; without `QIS_CHROMA_URL` only SQLite runs). Packets have
//! 4-number context vectors, uniformly random; queries ask for the 10
//! nearest under `PREFIX.>` to a random vector, one at a time.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use qis_core::{Checked, EncodedPacket, OutcomePacket, OutcomeTransport, SimilarityQuery, Subject};
use qis_transport_chroma::{ChromaConfig, ChromaTransport};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport};
use serde_json::{json, Value};

const SIZES: [usize; 2] = [10_000, 100_000];
const BATCH: usize = 1000;
const QUERIES: usize = 100;
const K: usize = 10;
const DIM: usize = 4;

/// A small deterministic generator (xorshift), so every contestant gets the
/// same packets and queries.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn vector(&mut self) -> Vec<f64> {
        (0..DIM)
            .map(|_| (self.next() * 1000.0).round() / 1000.0)
            .collect()
    }
}

fn packets(range: std::ops::Range<usize>, prefix: &Subject, rng: &mut Rng) -> Vec<EncodedPacket> {
    range
        .map(|i| {
            let p = OutcomePacket {
                agent_id: format!("bench-agent-{}", i % 97),
                domain: "hvac".into(),
                problem_class: ["energy-anomaly", "filter-clog"][i % 2].into(),
                conclusion: format!("Compressor draw {i} above baseline."),
                confidence: (i % 100) as f64 / 100.0,
                context_vector: rng.vector(),
                timestamp: 1_764_000_000.0 + i as f64,
                source_node: format!("site-{}", i % 13),
            };
            EncodedPacket::readable(&p, prefix).unwrap()
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (q(0.5), q(0.99))
}

/// Deposit `batch`es, returning packets per second.
async fn deposit_all<T: OutcomeTransport>(t: &T, p: &[EncodedPacket]) -> f64 {
    let start = Instant::now();
    for chunk in p.chunks(BATCH) {
        t.deposit_encoded_batch(chunk).await.expect("deposit");
    }
    p.len() as f64 / start.elapsed().as_secs_f64()
}

/// p50/p99 of `QUERIES` similarity queries, in milliseconds.
async fn query_latency<T: OutcomeTransport>(t: &T, prefix: &Subject, seed: u64) -> (f64, f64) {
    let mut rng = Rng(seed);
    let mut v = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let q = SimilarityQuery::new(prefix.all_below(), rng.vector(), K).unwrap();
        let at = Instant::now();
        let got = t.similar(&q).await.expect("query");
        v.push(ms(at.elapsed()));
        assert_eq!(got.len(), K);
    }
    quantiles(v)
}

/// The floor of exact search: a scan of the vectors in memory.
fn raw_scan(vectors: &[Vec<f64>], seed: u64) -> (f64, f64) {
    let mut rng = Rng(seed);
    let mut v = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let q = rng.vector();
        let at = Instant::now();
        let mut best: Vec<(f64, usize)> = Vec::with_capacity(K + 1);
        for (i, cv) in vectors.iter().enumerate() {
            if let Some(s) = qis_core::similar::cosine(&q, cv) {
                if best.len() < K || s > best[best.len() - 1].0 {
                    best.push((s, i));
                    best.sort_by(|a, b| b.0.total_cmp(&a.0));
                    best.truncate(K);
                }
            }
        }
        std::hint::black_box(&best);
        v.push(ms(at.elapsed()));
    }
    quantiles(v)
}

/// Raw Chroma over reqwest: the same collection, a plain `query`.
struct RawChroma {
    http: reqwest::Client,
    db: String,
}

impl RawChroma {
    fn new(base: &str) -> RawChroma {
        RawChroma {
            http: reqwest::Client::new(),
            db: format!("{base}/api/v2/tenants/default_tenant/databases/default_database"),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.db))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .expect("chroma answers");
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn collection(&self, name: &str) -> String {
        let body = json!({"name": name, "get_or_create": true, "schema": {"defaults": {}, "keys": {
            "#embedding": {"float_list": {"vector_index": {"enabled": true, "config": {"space": "cosine"}}}},
            "#document": {"string": {"fts_index": {"enabled": false, "config": {}}}}}}});
        self.post("/collections", &body).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn add(&self, id: &str, p: &[EncodedPacket]) -> f64 {
        let start = Instant::now();
        for chunk in p.chunks(BATCH) {
            let body = json!({
                "ids": chunk.iter().map(|e| e.id().to_hex()).collect::<Vec<_>>(),
                "embeddings": chunk.iter().map(|e| OutcomePacket::decode(e.body()).unwrap().context_vector.iter().map(|&x| x as f32).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "documents": chunk.iter().map(|e| String::from_utf8_lossy(e.body()).into_owned()).collect::<Vec<_>>(),
                "metadatas": chunk.iter().map(|e| json!({"subject": e.subject().as_str()})).collect::<Vec<_>>(),
            });
            self.post(&format!("/collections/{id}/add"), &body).await;
        }
        p.len() as f64 / start.elapsed().as_secs_f64()
    }

    async fn query_latency(&self, id: &str, seed: u64) -> (f64, f64) {
        let mut rng = Rng(seed);
        let mut v = Vec::with_capacity(QUERIES);
        for _ in 0..QUERIES {
            let e: Vec<f32> = rng.vector().iter().map(|&x| x as f32).collect();
            let body = json!({"query_embeddings": [e], "n_results": K, "include": ["distances"]});
            let at = Instant::now();
            self.post(&format!("/collections/{id}/query"), &body).await;
            v.push(ms(at.elapsed()));
        }
        quantiles(v)
    }
}

fn row(
    name: &str,
    n: usize,
    deposit: f64,
    deposit_ref: Option<f64>,
    q: (f64, f64),
    q_ref: (f64, f64),
) {
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    println!(
        "| {name} | {n} | {:.0} | {} | {:.2} | {:.2} | {:.3} | {} |",
        deposit,
        deposit_ref.map_or("—".into(), |r| format!("{r:.0} ({})", ratio(deposit, r))),
        q.0,
        q.1,
        q_ref.0,
        ratio(q.0, q_ref.0),
    );
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let run = format!("b{:x}", std::process::id());
    let prefix = Subject::new(format!("{run}.iot")).unwrap();
    let dir = std::env::temp_dir().join(format!("qis-bench-similar-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let chroma_url = std::env::var("QIS_CHROMA_URL")
        .ok()
        .filter(|u| !u.is_empty());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all = Vec::new();
    let sqlite: Checked<SqliteTransport> =
        SqliteTransport::connect(SqliteConfig::new(dir.join("bench.db")).prefix(prefix.clone()))
            .await
            .expect("sqlite");
    let chroma = match &chroma_url {
        Some(url) => Some(
            ChromaTransport::connect(url.parse::<ChromaConfig>().unwrap().prefix(prefix.clone()))
                .await
                .expect("chroma at QIS_CHROMA_URL"),
        ),
        None => {
            println!("QIS_CHROMA_URL is not set: Chroma is not measured (scripts/servers/chroma.sh start DIR)");
            None
        }
    };
    let raw = chroma
        .as_ref()
        .map(|c| RawChroma::new(c.config().base_url()));
    let raw_id = match &raw {
        Some(r) => Some(r.collection(&format!("qis_{run}_raw")).await),
        None => None,
    };

    println!(
        "similar twins: {DIM}-number vectors, batches of {BATCH}, {QUERIES} queries for the {K} nearest under PREFIX.>"
    );
    println!();
    println!("| backend | stored | deposit /s | raw deposit /s (ratio) | query p50 ms | query p99 ms | raw query p50 ms | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut stored = 0;
    for (round, n) in SIZES.into_iter().enumerate() {
        let fresh = packets(stored..n, &prefix, &mut rng);
        stored = n;
        all.extend(
            fresh
                .iter()
                .map(|e| OutcomePacket::decode(e.body()).unwrap().context_vector),
        );
        let seed = 7 + round as u64;
        let dep = deposit_all(&sqlite, &fresh).await;
        let q = query_latency(&sqlite, &prefix, seed).await;
        row("sqlite (exact)", n, dep, None, q, raw_scan(&all, seed));
        if let (Some(c), Some(r), Some(rid)) = (&chroma, &raw, &raw_id) {
            let dep = deposit_all(c, &fresh).await;
            let raw_dep = r.add(rid, &fresh).await;
            let q = query_latency(c, &prefix, seed).await;
            let cid = r.collection(&c.collection_name(DIM)).await;
            let raw_q = r.query_latency(&cid, seed).await;
            row("chroma (HNSW)", n, dep, Some(raw_dep), q, raw_q);
        }
    }
    println!();
    println!("raw references: sqlite = a scan of the same vectors in memory (cosine, best {K}); chroma = the same query request sent with reqwest (n_results {K}, no filter, no decoding), and raw adds of the same batches into another collection.");
    sqlite.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
