//! The checking layer on similarity queries: what it refuses, what it
//! answers without the backend, and the span it opens.

use std::sync::{Arc, Mutex};

mod common;

use common::Doctored;

use qis_core::{
    Capabilities, Checked, ErrorKind, OutcomePacket, OutcomeTransport, OutcomeTransportExt,
    SimilarityQuery, SubjectPattern,
};

/// A packet from `agent` with context vector `cv`.
fn packet(agent: &str, cv: Vec<f64>) -> OutcomePacket {
    OutcomePacket {
        conclusion: "c".into(),
        context_vector: cv,
        ..common::packet(agent, 0)
    }
}

fn query(pattern: &str, v: Vec<f64>) -> SimilarityQuery {
    SimilarityQuery::new(SubjectPattern::new(pattern).unwrap(), v, 5).unwrap()
}

/// A memory store claiming durable and, if `similarity`, similarity; and
/// the count of the queries that reach it.
fn counting(similarity: bool) -> (Checked<Doctored>, Arc<Mutex<usize>>) {
    let caps = Capabilities {
        durable: true,
        similarity,
        ..Default::default()
    };
    let store = Doctored::new(caps);
    let calls = store.similar_calls.clone();
    (Checked::new(store), calls)
}

#[tokio::test]
async fn without_the_capability_a_query_is_unsupported_and_never_reaches_the_backend() {
    let (t, calls) = counting(false);
    t.deposit(&packet("a", vec![1.0])).await.unwrap();
    let e = t.similar(&query("qis.iot.>", vec![1.0])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let e = t
        .similar_twins(&packet("b", vec![1.0]), 5, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(*calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn patterns_outside_the_prefix_closed_transports_and_zero_vectors() {
    let (t, calls) = counting(true);
    t.deposit(&packet("a", vec![1.0, 0.0])).await.unwrap();
    let e = t
        .similar(&query("other.>", vec![1.0, 0.0]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSubject);
    // A zero vector has no direction: nothing, without asking the backend.
    for zero in [vec![0.0, 0.0], vec![]] {
        assert!(t
            .similar(&query("qis.iot.>", zero))
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(*calls.lock().unwrap(), 0);
    let got = t
        .similar(&query("qis.iot.>", vec![2.0, 0.0]))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(*calls.lock().unwrap(), 1);
    t.close().await.unwrap();
    let e = t
        .similar(&query("qis.iot.>", vec![1.0, 0.0]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
}
