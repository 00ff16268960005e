//! Deposits: a packet is one record, its id the packet id, so a re-deposit
//! is recognised and never stored twice.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use qis_core::{EncodedPacket, ErrorKind, OutcomePacket, Position, Receipt, Result, Subject};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::collection::{embedding, metadata};
use crate::ChromaTransport;

/// Most records sent in one `get` or `add` request (Chroma's own limit is
/// larger; smaller requests keep each one short).
pub(crate) const MAX_REQUEST_RECORDS: usize = 1000;

#[derive(Deserialize)]
struct GetAnswer {
    ids: Vec<String>,
    #[serde(default)]
    metadatas: Option<Vec<Option<Value>>>,
}

/// Where an existing record is: its subject and deposit time.
#[derive(Clone)]
struct Original {
    subject: String,
    deposited_at_us: i64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn position(at_us: i64) -> Position {
    Position::Sequence(u64::try_from(at_us).unwrap_or(0))
}

/// Store `packets`, returning receipts in input order.
pub(crate) async fn deposit(
    t: &ChromaTransport,
    packets: &[EncodedPacket],
) -> Result<Vec<Receipt>> {
    // Packets were validated when encoded; decoding gives their fields back.
    let decoded = packets
        .iter()
        .map(|p| OutcomePacket::decode(p.body()))
        .collect::<Result<Vec<_>>>()?;
    let mut by_dim: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in decoded.iter().enumerate() {
        by_dim.entry(p.context_vector.len()).or_default().push(i);
    }
    let mut receipts: Vec<Option<Receipt>> = vec![None; packets.len()];
    for (dim, members) in by_dim {
        let group = deposit_group(t, dim, packets, &decoded, &members).await;
        let group = match group {
            // The collection was deleted behind this handle: look it up again once.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                t.collections().forget(dim);
                deposit_group(t, dim, packets, &decoded, &members).await?
            }
            other => other?,
        };
        for (i, r) in members.into_iter().zip(group) {
            receipts[i] = Some(r);
        }
    }
    Ok(receipts.into_iter().flatten().collect())
}

async fn deposit_group(
    t: &ChromaTransport,
    dim: usize,
    packets: &[EncodedPacket],
    decoded: &[OutcomePacket],
    members: &[usize],
) -> Result<Vec<Receipt>> {
    let client = t.client();
    let collection = t
        .collections()
        .get_or_create(client, t.prefix_subject(), dim)
        .await?;
    let ids: Vec<String> = members.iter().map(|&i| packets[i].id().to_hex()).collect();
    let existing = existing(t, &collection, &ids).await?;

    let at = now_us();
    let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
    let mut new = Vec::new();
    for (n, &i) in members.iter().enumerate() {
        if existing.contains_key(&ids[n]) || first_in_batch.contains_key(ids[n].as_str()) {
            continue;
        }
        first_in_batch.insert(&ids[n], i);
        new.push(i);
    }
    for chunk in new.chunks(MAX_REQUEST_RECORDS) {
        let body = json!({
            "ids": chunk.iter().map(|&i| packets[i].id().to_hex()).collect::<Vec<_>>(),
            "embeddings": chunk.iter().map(|&i| embedding(&decoded[i].context_vector)).collect::<Vec<_>>(),
            "documents": chunk.iter().map(|&i| String::from_utf8_lossy(packets[i].body()).into_owned()).collect::<Vec<_>>(),
            "metadatas": chunk.iter().map(|&i| {
                let p = &packets[i];
                metadata(p.subject().as_str(), &p.id().to_hex(), at, Some(&decoded[i]))
            }).collect::<Vec<_>>(),
        });
        let url = client.db_url(&format!("/collections/{collection}/add"));
        let _: Value = client
            .call(Method::POST, &url, Some(&body), "adding records")
            .await?;
    }

    Ok(members
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let p = &packets[i];
            let id = &ids[n];
            if let Some(o) = existing.get(id) {
                return Receipt {
                    subject: Subject::new(o.subject.clone())
                        .unwrap_or_else(|_| p.subject().clone()),
                    id: p.id(),
                    position: position(o.deposited_at_us),
                    duplicate: true,
                };
            }
            let first = first_in_batch[id.as_str()];
            Receipt {
                subject: packets[first].subject().clone(),
                id: p.id(),
                position: position(at),
                duplicate: first != i,
            }
        })
        .collect())
}

/// The records among `ids` that the collection holds already.
async fn existing(
    t: &ChromaTransport,
    collection: &str,
    ids: &[String],
) -> Result<HashMap<String, Original>> {
    let client = t.client();
    let url = client.db_url(&format!("/collections/{collection}/get"));
    let mut out = HashMap::new();
    for chunk in ids.chunks(MAX_REQUEST_RECORDS) {
        let body = json!({ "ids": chunk, "include": ["metadatas"] });
        let got: GetAnswer = client
            .call(Method::POST, &url, Some(&body), "looking up packet ids")
            .await?;
        let metas = got.metadatas.unwrap_or_default();
        for (n, id) in got.ids.into_iter().enumerate() {
            let meta = metas.get(n).and_then(|m| m.as_ref());
            let subject = meta
                .and_then(|m| m.get("subject"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let deposited_at_us = meta
                .and_then(|m| m.get("deposited_at_us"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            out.insert(
                id,
                Original {
                    subject,
                    deposited_at_us,
                },
            );
        }
    }
    Ok(out)
}

/// Write a raw record the way a foreign writer of garbage would: the body
/// as the document, the subject in the metadata, no checks. Its embedding is
/// the body's `context_vector` when the body has one (so a query reaches
/// it), else it goes to the `_d0` collection.
pub(crate) async fn inject_raw(t: &ChromaTransport, subject: &str, body: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct Loose {
        context_vector: Vec<f64>,
    }
    let cv = serde_json::from_slice::<Loose>(body)
        .map(|l| l.context_vector)
        .unwrap_or_default();
    let client = t.client();
    let collection = t
        .collections()
        .get_or_create(client, t.prefix_subject(), cv.len())
        .await?;
    let id = qis_core::PacketId::of(body).to_hex();
    let body_json = json!({
        "ids": [id],
        "embeddings": [embedding(&cv)],
        "documents": [String::from_utf8_lossy(body)],
        "metadatas": [metadata(subject, &id, now_us(), None)],
    });
    let url = client.db_url(&format!("/collections/{collection}/add"));
    let _: Value = client
        .call(Method::POST, &url, Some(&body_json), "adding a raw record")
        .await?;
    Ok(())
}
