//! Similar twins: Chroma's HNSW index (cosine space) picks the candidates,
//! the scores are recomputed exactly from the stored packets.

use qis_core::similar::Nearest;
use qis_core::{PacketId, Received, Result, Scored, SimilarityQuery};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::collection::where_filter;
use crate::ChromaTransport;

/// Candidates asked for beyond `k`, so that records the exact score
/// rejects (a stored zero vector, a malformed body) or ranks differently
/// from Chroma's `f32` distance at the edge of the best `k` do not leave
/// the answer short.
fn first_ask(k: usize) -> usize {
    k + (k / 4).max(16)
}

/// Most candidates asked for in one query.
const MAX_ASK: usize = 100_000;

#[derive(Deserialize)]
struct QueryAnswer {
    ids: Vec<Vec<String>>,
    #[serde(default)]
    documents: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    metadatas: Option<Vec<Vec<Option<Value>>>>,
    #[serde(default)]
    distances: Option<Vec<Vec<Option<f64>>>>,
}

pub(crate) async fn similar(t: &ChromaTransport, query: &SimilarityQuery) -> Result<Vec<Scored>> {
    let dim = query.vector().len();
    let prefix = t.prefix_subject();
    let Ok(filter) = where_filter(prefix, query.pattern()) else {
        return Ok(Vec::new());
    };
    let client = t.client();
    let Some(collection) = t.collections().find(client, prefix, dim).await? else {
        // Nothing of this length was ever deposited under the prefix.
        return Ok(Vec::new());
    };
    let embedding: Vec<f32> = query.vector().iter().map(|&x| x as f32).collect();
    let url = client.db_url(&format!("/collections/{collection}/query"));
    let mut ask = first_ask(query.k()).min(MAX_ASK);
    loop {
        let mut body = json!({
            "query_embeddings": [embedding],
            "n_results": ask,
            "include": ["documents", "metadatas", "distances"],
        });
        if let Some(w) = &filter {
            body["where"] = w.clone();
        }
        let answer: QueryAnswer = match client
            .call(Method::POST, &url, Some(&body), "querying similar packets")
            .await
        {
            Err(e) if e.kind() == qis_core::ErrorKind::NotFound => {
                t.collections().forget(dim);
                return Ok(Vec::new());
            }
            other => other?,
        };
        let ids = answer.ids.into_iter().next().unwrap_or_default();
        let docs = answer
            .documents
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default();
        let metas = answer
            .metadatas
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default();
        let distances = answer
            .distances
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default();
        let returned = ids.len();
        let mut nearest = Nearest::new(query);
        for (n, id) in ids.iter().enumerate() {
            let subject = metas
                .get(n)
                .and_then(|m| m.as_ref())
                .and_then(|m| m.get("subject"))
                .and_then(Value::as_str);
            let doc = docs.get(n).and_then(|d| d.as_deref());
            let (Some(subject), Some(doc)) = (subject, doc) else {
                tracing::warn!(record = %id, "similarity search skipped a record without subject or body");
                continue;
            };
            if !(prefix.contains(subject) && query.pattern().matches(subject)) {
                continue;
            }
            let body = doc.as_bytes();
            let packet_id = id
                .parse::<PacketId>()
                .unwrap_or_else(|_| PacketId::of(body));
            match Received::decode_with_known_id(subject, body, packet_id) {
                Ok(r) => {
                    nearest.offer(r);
                }
                Err(e) => {
                    tracing::warn!(%subject, record = %id, error = %e, "similarity search skipped a malformed record")
                }
            }
        }
        // Chroma's cosine distance is 1 - similarity: once the farthest
        // candidate returned is below the minimum score, asking for more
        // cannot add anything.
        let farthest_below_min = match (query.min_score(), distances.last().copied().flatten()) {
            (Some(min), Some(d)) => 1.0 - d < min - 1e-6,
            _ => false,
        };
        if nearest.len() >= query.k() || returned < ask || ask >= MAX_ASK || farthest_below_min {
            return Ok(nearest.into_sorted());
        }
        ask = (ask * 4).min(MAX_ASK);
    }
}
