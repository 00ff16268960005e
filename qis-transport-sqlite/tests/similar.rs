//! Similar twins on SQLite beyond the shared cases: rows written by another
//! process are found, malformed rows are skipped, expired rows are not
//! returned.

use std::time::Duration;

use qis_conformance::support::{pkt, TempDir};
use qis_core::backend::InjectRaw;
use qis_core::{OutcomeTransport, OutcomeTransportExt, SimilarityQuery, SubjectPattern};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport};

fn query(v: &[f64]) -> SimilarityQuery {
    SimilarityQuery::new(SubjectPattern::new("qis.iot.>").unwrap(), v.to_vec(), 10).unwrap()
}

#[tokio::test]
async fn another_handles_rows_are_found_and_garbage_is_skipped() {
    let dir = TempDir::new("qis-sqlite-similar");
    let path = dir.path().join("s.db");
    let writer = SqliteTransport::connect(SqliteConfig::new(&path))
        .await
        .unwrap();
    let reader = SqliteTransport::connect(SqliteConfig::new(&path))
        .await
        .unwrap();
    let mut p = pkt("a", "hvac", "energy-anomaly", 1);
    p.context_vector = vec![1.0, 0.0];
    let r = writer.deposit(&p).await.unwrap();
    // Garbage on a matching subject: not JSON, JSON without a vector, a
    // packet with a valid vector but an invalid field.
    writer
        .inject_raw("qis.iot.hvac.energy-anomaly", b"not json")
        .await
        .unwrap();
    writer
        .inject_raw("qis.iot.hvac.energy-anomaly", br#"{"context_vector":"x"}"#)
        .await
        .unwrap();
    let mut bad = serde_json::to_value(&p).unwrap();
    bad["confidence"] = serde_json::json!(7.0);
    writer
        .inject_raw("qis.iot.hvac.energy-anomaly", bad.to_string().as_bytes())
        .await
        .unwrap();
    let got = reader.similar(&query(&[1.0, 0.0])).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].id(), r.id);
    assert_eq!(got[0].packet(), &p);
    writer.close().await.unwrap();
    reader.close().await.unwrap();
}

#[tokio::test]
async fn rows_past_max_age_are_not_returned() {
    let dir = TempDir::new("qis-sqlite-similar-age");
    let path = dir.path().join("s.db");
    let config = SqliteConfig::new(&path).max_age(Duration::from_millis(300));
    let t = SqliteTransport::connect(config).await.unwrap();
    let mut p = pkt("a", "hvac", "energy-anomaly", 1);
    p.context_vector = vec![1.0, 0.0];
    t.deposit(&p).await.unwrap();
    assert_eq!(t.similar(&query(&[1.0, 0.0])).await.unwrap().len(), 1);
    // Waiting for the packet to age is the scenario, not synchronisation.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = t.similar(&query(&[1.0, 0.0])).await.unwrap();
    assert!(got.is_empty(), "an expired packet came back: {got:?}");
    t.close().await.unwrap();
}
