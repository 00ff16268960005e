//! Similar twins (SPEC §9): the `k` stored packets under a pattern whose
//! context vectors are most like a given one.
//!
//! Exact addresses find twins by the readable subject or by the fingerprint
//! leaf of a quantised context vector, and buckets are brittle at their
//! edges: at resolution 4, `0.249` and `0.251` land in different buckets
//! although they are each other's nearest neighbours. Similarity search is
//! the approximate lane beside the exact one.
//!
//! # The contract
//!
//! A transport with [`Capabilities::similarity`](crate::Capabilities::similarity)
//! answers [`OutcomeTransport::similar`](crate::OutcomeTransport::similar)
//! with a [`SimilarityQuery`] (pattern, vector, `k`, optional minimum score):
//!
//! - **Score.** The cosine similarity of the query vector and the packet's
//!   context vector, computed in `f64` from the packet as stored
//!   ([`cosine`]): `1.0` for the same direction, `0.0` orthogonal, `-1.0`
//!   opposite. Every backend reports this same figure, also one that finds
//!   its candidates in an approximate index over `f32` embeddings.
//! - **What never matches.** A packet whose vector has another length than
//!   the query's (no padding, no truncation), and a zero vector on either
//!   side (its direction is undefined): a zero or empty query vector returns
//!   nothing, and a stored zero vector is never returned.
//! - **Which and in what order.** Only packets on subjects the pattern
//!   matches; only those scoring at least the minimum score, if one is set;
//!   at most `k`, best first; equal scores in ascending packet id order
//!   ([`rank`]), so every backend gives the same answer for the same store.
//! - **Once each.** A packet is one fact: a re-deposit (the same packet id)
//!   is stored once and returned once.
//! - **Malformed** stored bodies (written by someone else) are skipped with a
//!   `tracing::warn!`, never returned.
//!
//! The checking layer ([`Checked`](crate::Checked)) returns
//! [`ErrorKind::Unsupported`] from a transport without the capability,
//! [`ErrorKind::InvalidSubject`] for a pattern that can match nothing under
//! the prefix, [`ErrorKind::Closed`] after `close()`, and runs each query in
//! a `qis.similar` span (fields `transport`, `pattern`, `max` = `k`,
//! `count` = packets returned). A query is validated when it is built, so no
//! backend sees a bad one.
//!
//! # Backends
//!
//! - **memory** and **sqlite**: exact search, every packet under the
//!   pattern's literal prefix scored in Rust ([`Nearest`] keeps the best `k`).
//!   Linear in the packets under that prefix: see each backend's docs for
//!   the sizes measured.
//! - **chroma** (`qis-transport-chroma`): a ChromaDB server's HNSW index in
//!   cosine space picks the candidates, the scores are recomputed exactly.
//!
//! # Feeding synthesis
//!
//! `&Scored` is a [`Twin`], so the result goes to
//! [`synthesize`](crate::synthesize) as it is:
//!
//! ```
//! use qis_core::{synthesize, MemoryTransport, OutcomePacket, OutcomeTransport, OutcomeTransportExt, SimilarityQuery};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! let transport = MemoryTransport::new(Default::default());
//! let p = |agent: &str, cv: Vec<f64>| OutcomePacket {
//!     agent_id: agent.into(), domain: "hvac".into(), problem_class: "energy-anomaly".into(),
//!     conclusion: "Compressor draw above baseline.".into(), confidence: 0.8,
//!     context_vector: cv, timestamp: 1_764_000_000.0, source_node: "n".into(),
//! };
//! // Two twins on fingerprint leaves: 0.249 and 0.251 fall in different
//! // buckets at resolution 4, but they are each other's nearest neighbours.
//! transport.deposit_fingerprinted(&p("a", vec![0.249, 0.9, 0.1, 0.7]), 4).await?;
//! transport.deposit_fingerprinted(&p("c", vec![0.9, 0.1, 0.9, 0.1]), 4).await?;
//! let own = p("b", vec![0.251, 0.9, 0.1, 0.7]);
//!
//! let below = own.subject(transport.prefix())?.all_below();
//! let query = SimilarityQuery::new(below, own.context_vector.clone(), 1)?;
//! let twins = transport.similar(&query).await?;
//! assert_eq!(twins[0].packet().agent_id, "a");
//! assert!(twins[0].score > 0.9999);
//!
//! // Or: the readable subject and every fingerprint leaf below it, at once.
//! let twins = transport.similar_twins(&own, 10, Some(0.99)).await?;
//! assert_eq!(twins.len(), 1);
//! let s = synthesize(&own, &twins);
//! assert_eq!(s.n_agents, 2);
//! # Ok(()) }
//! ```

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use crate::error::{Error, ErrorKind, Result};
use crate::packet::{OutcomePacket, PacketId, Received};
use crate::subject::SubjectPattern;
use crate::synthesis::Twin;

/// The number of neighbours asked for when nothing else is said.
pub const DEFAULT_SIMILAR_K: usize = 10;

/// The most neighbours one query may ask for.
pub const MAX_SIMILAR_K: usize = 10_000;

/// A similarity query: the `k` packets under `pattern` whose context vectors
/// are most like `vector`, scoring at least `min_score` if set.
///
/// Built checked: the vector's numbers are finite, `k` is 1 to
/// [`MAX_SIMILAR_K`], a minimum score is within `-1.0..=1.0`; anything else
/// is [`ErrorKind::InvalidInput`].
///
/// ```
/// use qis_core::{ErrorKind, SimilarityQuery, SubjectPattern};
/// let pattern = SubjectPattern::new("qis.iot.hvac.>").unwrap();
/// let q = SimilarityQuery::new(pattern.clone(), vec![0.18, 0.92, 0.03, 0.71], 10)
///     .unwrap()
///     .with_min_score(0.9)
///     .unwrap();
/// assert_eq!((q.k(), q.min_score()), (10, Some(0.9)));
/// let e = SimilarityQuery::new(pattern, vec![f64::NAN], 10).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::InvalidInput);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityQuery {
    pattern: SubjectPattern,
    vector: Vec<f64>,
    norm: f64,
    k: usize,
    min_score: Option<f64>,
}

fn invalid(msg: String) -> Error {
    Error::core(ErrorKind::InvalidInput, msg)
}

impl SimilarityQuery {
    /// The `k` packets under `pattern` most like `vector`.
    pub fn new(pattern: SubjectPattern, vector: Vec<f64>, k: usize) -> Result<Self> {
        if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
            return Err(invalid(format!(
                "similarity query vector[{i}] = {} is not a finite number",
                vector[i]
            )));
        }
        if k == 0 || k > MAX_SIMILAR_K {
            return Err(invalid(format!(
                "similarity query for {k} neighbours: ask for 1 to {MAX_SIMILAR_K}"
            )));
        }
        let norm = norm(&vector);
        Ok(SimilarityQuery {
            pattern,
            vector,
            norm,
            k,
            min_score: None,
        })
    }

    /// Return only packets scoring at least `min_score` (a cosine
    /// similarity, `-1.0..=1.0`).
    pub fn with_min_score(mut self, min_score: f64) -> Result<Self> {
        if !(-1.0..=1.0).contains(&min_score) {
            return Err(invalid(format!(
                "minimum score {min_score} is not a cosine similarity: give a number from -1.0 to 1.0"
            )));
        }
        self.min_score = Some(min_score);
        Ok(self)
    }

    /// Which subjects are searched.
    pub fn pattern(&self) -> &SubjectPattern {
        &self.pattern
    }

    /// The vector packets are compared with.
    pub fn vector(&self) -> &[f64] {
        &self.vector
    }

    /// How many packets at most.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The lowest score returned, if set.
    pub fn min_score(&self) -> Option<f64> {
        self.min_score
    }

    /// Whether the query can match nothing at all: its vector is empty or
    /// zero (no direction to compare with).
    pub fn matches_nothing(&self) -> bool {
        self.norm == 0.0
    }

    /// The score of a stored context vector against this query: the cosine
    /// similarity, or `None` when the two can never match (other length, a
    /// zero vector) or it is below the minimum score.
    pub fn score(&self, stored: &[f64]) -> Option<f64> {
        if stored.len() != self.vector.len() || self.norm == 0.0 {
            return None;
        }
        let (mut dot, mut sq) = (0.0, 0.0);
        for (a, b) in self.vector.iter().zip(stored) {
            dot += a * b;
            sq += b * b;
        }
        if sq == 0.0 {
            return None;
        }
        let score = (dot / (self.norm * sq.sqrt())).clamp(-1.0, 1.0);
        match self.min_score {
            Some(min) if score < min => None,
            _ => Some(score),
        }
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The cosine similarity of two vectors, or `None` when they can never match:
/// different lengths, or either is zero (or empty).
///
/// ```
/// use qis_core::similar::cosine;
/// assert_eq!(cosine(&[1.0, 0.0], &[2.0, 0.0]), Some(1.0));
/// assert_eq!(cosine(&[1.0, 0.0], &[0.0, 3.0]), Some(0.0));
/// assert_eq!(cosine(&[1.0, 0.0], &[1.0, 0.0, 0.0]), None);
/// assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), None);
/// ```
pub fn cosine(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return None;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    Some((dot / (na * nb)).clamp(-1.0, 1.0))
}

/// One packet found by a similarity query, with its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The subject, packet id and decoded packet.
    pub received: Received,
    /// The cosine similarity of its context vector to the query's.
    pub score: f64,
}

crate::packet::received_accessors!(Scored);

impl<'a> Twin<'a> for &'a Scored {
    fn packet(&self) -> &'a OutcomePacket {
        &self.received.packet
    }
    fn id(&self) -> Option<PacketId> {
        Some(self.received.id)
    }
}

/// The order of results: higher score first, equal scores by ascending
/// packet id. `Less` means `a` comes first.
pub fn rank(a: &Scored, b: &Scored) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then_with(|| a.received.id.cmp(&b.received.id))
}

/// A heap entry ordered so that the *worst* result is the greatest (at the
/// top of the max-heap, ready to be dropped).
struct Worst(Scored);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        rank(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        rank(&self.0, &other.0)
    }
}

/// The best `k` of the packets offered to it, for backends that search
/// exactly: offer every candidate, take the result in [`rank`] order.
///
/// It scores with [`SimilarityQuery::score`], keeps at most `k` in a heap
/// (`O(n log k)` for `n` candidates), refuses a packet id it already holds,
/// and only decodes a body whose vector can beat the worst kept.
///
/// ```
/// use qis_core::similar::Nearest;
/// use qis_core::{OutcomePacket, Received, SimilarityQuery, SubjectPattern};
///
/// let q = SimilarityQuery::new(SubjectPattern::new("qis.iot.>").unwrap(), vec![1.0, 0.0], 1).unwrap();
/// let mut nearest = Nearest::new(&q);
/// for (i, v) in [[0.0, 1.0], [1.0, 0.1]].into_iter().enumerate() {
///     let p = OutcomePacket { agent_id: format!("a{i}"), domain: "hvac".into(), problem_class: "x".into(),
///         conclusion: "c".into(), confidence: 0.5, context_vector: v.to_vec(), timestamp: 1.0,
///         source_node: "n".into() };
///     let body = p.encode().unwrap();
///     nearest.offer(Received::decode("qis.iot.hvac.x", &body).unwrap());
/// }
/// let best = nearest.into_sorted();
/// assert_eq!(best.len(), 1);
/// assert_eq!(best[0].packet().agent_id, "a1");
/// ```
pub struct Nearest<'q> {
    query: &'q SimilarityQuery,
    heap: BinaryHeap<Worst>,
    held: HashSet<PacketId>,
}

impl<'q> Nearest<'q> {
    /// An empty collector for `query`.
    pub fn new(query: &'q SimilarityQuery) -> Self {
        Nearest {
            query,
            heap: BinaryHeap::with_capacity(query.k.min(1024) + 1),
            held: HashSet::new(),
        }
    }

    /// Offer a decoded packet; it is kept if it is among the best `k` so far.
    /// Returns whether it was kept.
    pub fn offer(&mut self, received: Received) -> bool {
        match self.query.score(&received.packet.context_vector) {
            Some(score) => self.offer_scored(Scored { received, score }),
            None => false,
        }
    }

    /// Offer a packet already scored (by the caller, with
    /// [`SimilarityQuery::score`]). Returns whether it was kept.
    pub fn offer_scored(&mut self, scored: Scored) -> bool {
        let id = scored.received.id;
        if self.held.contains(&id) {
            return false;
        }
        if self.heap.len() >= self.query.k {
            let beats = self
                .heap
                .peek()
                .is_some_and(|worst| rank(&scored, &worst.0) == Ordering::Less);
            if !beats {
                return false;
            }
            if let Some(dropped) = self.heap.pop() {
                self.held.remove(&dropped.0.received.id);
            }
        }
        self.held.insert(id);
        self.heap.push(Worst(scored));
        true
    }

    /// Whether a packet scoring `score` could still be kept: fewer than `k`
    /// are held, or it beats the worst held (ties may, by packet id). Lets a
    /// backend skip decoding a body that cannot make it.
    pub fn could_keep(&self, score: f64) -> bool {
        self.heap.len() < self.query.k || self.heap.peek().is_some_and(|w| score >= w.0.score)
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The packets kept, best first ([`rank`]).
    pub fn into_sorted(self) -> Vec<Scored> {
        let mut v: Vec<Scored> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by(rank);
        v
    }
}

/// Merge several result lists into the best `k`, each packet id once (the
/// first time it is seen keeps its place if scores are equal).
pub fn merge(k: usize, lists: impl IntoIterator<Item = Vec<Scored>>) -> Vec<Scored> {
    let mut all: Vec<Scored> = Vec::new();
    for list in lists {
        for s in list {
            if !all.iter().any(|x| x.received.id == s.received.id) {
                all.push(s);
            }
        }
    }
    all.sort_by(rank);
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(agent: &str, cv: Vec<f64>) -> Received {
        let p = OutcomePacket {
            agent_id: agent.into(),
            domain: "hvac".into(),
            problem_class: "x".into(),
            conclusion: "c".into(),
            confidence: 0.5,
            context_vector: cv,
            timestamp: 1.0,
            source_node: "n".into(),
        };
        Received::decode("qis.iot.hvac.x", &p.encode().unwrap()).unwrap()
    }

    fn query(v: Vec<f64>, k: usize) -> SimilarityQuery {
        SimilarityQuery::new(SubjectPattern::new("qis.iot.>").unwrap(), v, k).unwrap()
    }

    #[test]
    fn scores_are_cosines_and_never_across_lengths_or_zero() {
        let q = query(vec![1.0, 1.0], 5);
        assert!((q.score(&[2.0, 2.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((q.score(&[-1.0, -1.0]).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(q.score(&[1.0]), None);
        assert_eq!(q.score(&[1.0, 1.0, 0.0]), None);
        assert_eq!(q.score(&[0.0, 0.0]), None);
        let zero = query(vec![0.0, 0.0], 5);
        assert!(zero.matches_nothing());
        assert_eq!(zero.score(&[1.0, 1.0]), None);
        let empty = query(vec![], 5);
        assert!(empty.matches_nothing());
        assert_eq!(empty.score(&[]), None);
    }

    #[test]
    fn bad_queries_are_refused() {
        let p = SubjectPattern::new("qis.iot.>").unwrap();
        for (v, k) in [
            (vec![f64::INFINITY], 1),
            (vec![1.0], 0),
            (vec![1.0], 10_001),
        ] {
            let e = SimilarityQuery::new(p.clone(), v, k).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        for s in [1.5, -1.01, f64::NAN] {
            let e = query(vec![1.0], 1).with_min_score(s).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{s}");
        }
    }

    #[test]
    fn nearest_keeps_the_best_k_in_rank_order_once_each() {
        let q = query(vec![1.0, 0.0], 2);
        let mut n = Nearest::new(&q);
        let far = received("far", vec![0.0, 1.0]);
        let near = received("near", vec![1.0, 0.05]);
        let mid = received("mid", vec![1.0, 0.5]);
        assert!(n.offer(far.clone()));
        assert!(n.offer(near.clone()));
        assert!(!n.offer(near.clone()), "the same packet id twice");
        assert!(n.offer(mid.clone()));
        assert!(!n.offer(far));
        let got = n.into_sorted();
        assert_eq!(
            got.iter().map(|s| s.received.id).collect::<Vec<_>>(),
            vec![near.id, mid.id]
        );
    }

    #[test]
    fn ties_go_to_the_lower_packet_id() {
        let q = query(vec![1.0, 0.0], 1);
        let a = received("a", vec![1.0, 0.0]);
        let b = received("b", vec![2.0, 0.0]);
        let first = a.id.min(b.id);
        for order in [[a.clone(), b.clone()], [b, a]] {
            let mut n = Nearest::new(&q);
            for r in order {
                n.offer(r);
            }
            assert_eq!(n.into_sorted()[0].received.id, first);
        }
    }

    #[test]
    fn minimum_score_filters() {
        let q = query(vec![1.0, 0.0], 5).with_min_score(0.9).unwrap();
        assert!(q.score(&[1.0, 0.1]).is_some());
        assert!(q.score(&[1.0, 1.0]).is_none());
    }

    #[test]
    fn merge_dedups_and_truncates() {
        let a = Scored {
            received: received("a", vec![1.0]),
            score: 0.5,
        };
        let b = Scored {
            received: received("b", vec![1.0]),
            score: 0.9,
        };
        let got = merge(1, [vec![a.clone()], vec![b.clone(), a]]);
        assert_eq!(got, vec![b]);
    }
}
