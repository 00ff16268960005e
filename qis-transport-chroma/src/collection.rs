//! Collections: one per prefix and vector length, their names and schema,
//! the metadata a record carries, and subject patterns as `where` filters.

use std::collections::HashMap;
use std::sync::Mutex;

use qis_core::{ErrorKind, OutcomePacket, Result, Subject, SubjectPattern};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client::Client;

/// The longest prefix whose collection names stay within Chroma's 512
/// characters (`qis_` + prefix + `_d` + the length of a vector, at most
/// 3 digits since a packet is at most 512 bytes).
pub(crate) const MAX_PREFIX_LEN: usize = 512 - 4 - 5;

/// The collection of `prefix` for vectors of length `dim`:
/// `qis_{prefix}_d{dim}`.
pub(crate) fn name(prefix: &Subject, dim: usize) -> String {
    format!("qis_{prefix}_d{dim}")
}

/// The embedding stored for a packet: its context vector in `f32`, or, for
/// an empty vector (which never matches), a placeholder in the `_d0`
/// collection, which is never queried.
pub(crate) fn embedding(cv: &[f64]) -> Vec<f32> {
    if cv.is_empty() {
        vec![1.0]
    } else {
        cv.iter().map(|&x| x as f32).collect()
    }
}

/// The schema of a new collection: an HNSW index in cosine space over the
/// embeddings, and no full-text index over the documents (the packet
/// bodies), which nothing searches.
fn schema() -> Value {
    json!({
        "defaults": {},
        "keys": {
            "#embedding": {"float_list": {"vector_index": {"enabled": true, "config": {"space": "cosine"}}}},
            "#document": {"string": {"fts_index": {"enabled": false, "config": {}}}}
        }
    })
}

#[derive(Deserialize)]
struct CollectionInfo {
    id: String,
}

/// Collection ids by vector length, looked up or created once per handle.
#[derive(Debug, Default)]
pub(crate) struct Collections {
    ids: Mutex<HashMap<usize, String>>,
}

impl Collections {
    fn cached(&self, dim: usize) -> Option<String> {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dim)
            .cloned()
    }

    fn remember(&self, dim: usize, id: String) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dim, id);
    }

    /// The id of the collection for `dim`, created if missing.
    pub(crate) async fn get_or_create(
        &self,
        client: &Client,
        prefix: &Subject,
        dim: usize,
    ) -> Result<String> {
        if let Some(id) = self.cached(dim) {
            return Ok(id);
        }
        let body = json!({ "name": name(prefix, dim), "get_or_create": true, "schema": schema() });
        let info: CollectionInfo = client
            .call(
                Method::POST,
                &client.db_url("/collections"),
                Some(&body),
                "creating a collection",
            )
            .await?;
        self.remember(dim, info.id.clone());
        Ok(info.id)
    }

    /// The id of the collection for `dim`, or `None` if it does not exist
    /// (nothing of that length was ever deposited under the prefix).
    pub(crate) async fn find(
        &self,
        client: &Client,
        prefix: &Subject,
        dim: usize,
    ) -> Result<Option<String>> {
        if let Some(id) = self.cached(dim) {
            return Ok(Some(id));
        }
        let url = client.db_url(&format!("/collections/{}", name(prefix, dim)));
        match client
            .call::<CollectionInfo>(Method::GET, &url, None, "looking up a collection")
            .await
        {
            Ok(info) => {
                self.remember(dim, info.id.clone());
                Ok(Some(info.id))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Forget a collection id (it was deleted behind this handle's back).
    pub(crate) fn forget(&self, dim: usize) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dim);
    }
}

/// The metadata of one record: the subject, its tokens one by one (`t0`,
/// `t1`, …) and their count `ntok` for pattern filters, the packet id, the
/// time of the deposit, and the packet's fields other than the vector.
pub(crate) fn metadata(
    subject: &str,
    id: &str,
    deposited_at_us: i64,
    packet: Option<&OutcomePacket>,
) -> Value {
    let mut m = Map::new();
    m.insert("subject".into(), subject.into());
    m.insert("packet_id".into(), id.into());
    m.insert("deposited_at_us".into(), deposited_at_us.into());
    let mut n = 0usize;
    for (i, t) in subject.split('.').enumerate() {
        m.insert(format!("t{i}"), t.into());
        n += 1;
    }
    m.insert("ntok".into(), n.into());
    if let Some(p) = packet {
        m.insert("agent_id".into(), p.agent_id.clone().into());
        m.insert("domain".into(), p.domain.clone().into());
        m.insert("problem_class".into(), p.problem_class.clone().into());
        m.insert("conclusion".into(), p.conclusion.clone().into());
        m.insert("confidence".into(), p.confidence.into());
        m.insert("timestamp".into(), p.timestamp.into());
        m.insert("source_node".into(), p.source_node.clone().into());
    }
    Value::Object(m)
}

/// The `where` filter that selects exactly the subjects `pattern` matches
/// under `prefix`, or `Ok(None)` when every record under the prefix
/// matches; `Err(())` when no subject under the prefix can match.
///
/// The prefix's own tokens need no filter (the collection is the prefix's);
/// each literal token after them is an equality on `t{i}`; a `*` only
/// counts; the token count `ntok` is pinned, or bounded below after `>`.
pub(crate) fn where_filter(
    prefix: &Subject,
    pattern: &SubjectPattern,
) -> std::result::Result<Option<Value>, ()> {
    let prefix_tokens: Vec<&str> = prefix.tokens().collect();
    let tokens: Vec<&str> = pattern.as_str().split('.').collect();
    let mut conditions = Vec::new();
    let mut tail = false;
    for (i, t) in tokens.iter().enumerate() {
        match *t {
            ">" => {
                tail = true;
                // One or more tokens from here on; every stored subject has
                // more tokens than the prefix, so only a `>` past the first
                // token after the prefix needs a bound.
                if i > prefix_tokens.len() {
                    conditions.push(json!({ "ntok": { "$gte": i + 1 } }));
                }
            }
            "*" => {}
            literal => match prefix_tokens.get(i) {
                Some(p) if *p == literal => {}
                Some(_) => return Err(()),
                None => conditions.push(json!({ format!("t{i}"): { "$eq": literal } })),
            },
        }
    }
    if !tail {
        if tokens.len() <= prefix_tokens.len() {
            return Err(());
        }
        conditions.push(json!({ "ntok": { "$eq": tokens.len() } }));
    }
    Ok(match conditions.len() {
        0 => None,
        1 => conditions.pop(),
        _ => Some(json!({ "$and": conditions })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(p: &str) -> std::result::Result<Option<Value>, ()> {
        where_filter(&"qis.iot".parse().unwrap(), &p.parse().unwrap())
    }

    #[test]
    fn patterns_become_where_filters() {
        assert_eq!(filter("qis.iot.>"), Ok(None));
        assert_eq!(filter(">"), Ok(None));
        assert_eq!(
            filter("qis.iot.hvac.>"),
            Ok(Some(
                json!({"$and": [{"t2": {"$eq": "hvac"}}, {"ntok": {"$gte": 4}}]})
            ))
        );
        assert_eq!(
            filter("qis.*.*.energy"),
            Ok(Some(
                json!({"$and": [{"t3": {"$eq": "energy"}}, {"ntok": {"$eq": 4}}]})
            ))
        );
        assert_eq!(
            filter("qis.iot.hvac.energy"),
            Ok(Some(
                json!({"$and": [{"t2": {"$eq": "hvac"}}, {"t3": {"$eq": "energy"}}, {"ntok": {"$eq": 4}}]})
            ))
        );
        assert_eq!(filter("qis.iot.*"), Ok(Some(json!({"ntok": {"$eq": 3}}))));
        assert_eq!(filter("other.>"), Err(()));
        assert_eq!(filter("qis.iot"), Err(()));
        assert_eq!(filter("qis.*"), Err(()));
    }

    #[test]
    fn names_fit_chroma() {
        let n = name(&"qis.iot".parse().unwrap(), 4);
        assert_eq!(n, "qis_qis.iot_d4");
        assert!(crate::config::valid_chroma_name(&n));
        let long = Subject::new(vec!["a"; MAX_PREFIX_LEN / 2].join(".")).unwrap();
        assert!(crate::config::valid_chroma_name(&name(&long, 999)));
    }
}
