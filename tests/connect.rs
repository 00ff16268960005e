//! Picking a transport from a URL: `memory://` always works; each compiled-in
//! scheme parses (and `sqlite://path` works end to end); a scheme whose
//! feature is off fails with `Unsupported` naming the feature; a malformed URL
//! or an unknown scheme fails with `InvalidInput`.

use std::time::Duration;

use qis::{ErrorKind, OutcomePacket, OutcomeTransportExt, Subject, TransportConfig};

fn packet(agent: &str) -> OutcomePacket {
    OutcomePacket {
        agent_id: agent.into(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        conclusion: "Compressor draw 18% above baseline.".into(),
        confidence: 0.87,
        context_vector: vec![0.18, 0.92, 0.03, 0.71],
        timestamp: 1_764_000_000.0,
        source_node: "building-a-floor-3".into(),
    }
}

/// What consumer `consumer` finds of `t`'s twins on hvac.energy-anomaly
/// within `wait`, acked; the consumer is closed again.
async fn twins_found(t: &qis::DynTransport, consumer: &str, wait: Duration) -> Vec<qis::Delivery> {
    let twins = t
        .twins_consumer(consumer, "hvac", "energy-anomaly")
        .await
        .unwrap();
    let got = twins.fetch(10, wait).await.unwrap();
    twins.ack(&got).await.unwrap();
    twins.close().await.unwrap();
    got
}

fn error_of<T>(r: qis::Result<T>) -> qis::Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn memory_url_round_trips() {
    let t = qis::connect("memory://").await.expect("memory:// connects");
    assert_eq!(t.name(), "memory");
    assert_eq!(t.prefix().as_str(), "qis.iot");
    let r = t.deposit(&packet("a")).await.unwrap();
    assert_eq!(r.subject.as_str(), "qis.iot.hvac.energy-anomaly");
    let got = twins_found(&t, "b", Duration::from_millis(200)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id(), r.id);
    t.close().await.unwrap();
}

#[tokio::test]
async fn memory_url_takes_a_prefix() {
    let prefix = Subject::new("fleet.site1").unwrap();
    let t = TransportConfig::from_url("memory://")
        .unwrap()
        .with_prefix(prefix.clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(t.prefix(), &prefix);
    let r = t.deposit(&packet("a")).await.unwrap();
    assert_eq!(r.subject.as_str(), "fleet.site1.hvac.energy-anomaly");
}

#[test]
fn scheme_is_case_insensitive() {
    assert!(matches!(
        TransportConfig::from_url("MEMORY://").unwrap(),
        TransportConfig::Memory(_)
    ));
}

#[test]
fn malformed_urls_are_invalid_input() {
    for url in [
        "",
        "no scheme at all",
        "ftp://example.invalid/x",
        "localhost:4222",
        "://x",
        "mqtt://127.0.0.1:1883",
    ] {
        let e = error_of(TransportConfig::from_url(url));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url:?}: {e}");
        assert!(!e.message().is_empty());
    }
}

#[tokio::test]
async fn connect_reports_invalid_input_too() {
    let e = error_of(qis::connect("gopher://127.0.0.1:70").await);
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

/// A URL each scheme's transport would accept, and the feature it needs.
const SCHEMES: [(&str, &str); 8] = [
    ("sqlite://qis-connect-test-never-opened.db", "sqlite"),
    ("nats://127.0.0.1:4222", "nats"),
    ("tls://127.0.0.1:4222", "nats"),
    ("redis://127.0.0.1:6379", "redis"),
    ("rediss://127.0.0.1:6380", "redis"),
    ("kafka://127.0.0.1:9092", "kafka"),
    ("chroma://127.0.0.1:8000", "chroma"),
    ("chromas://vectors.example", "chroma"),
];

fn compiled(feature: &str) -> bool {
    match feature {
        "sqlite" => cfg!(feature = "sqlite"),
        "nats" => cfg!(feature = "nats"),
        "redis" => cfg!(feature = "redis"),
        "kafka" => cfg!(feature = "kafka"),
        "chroma" => cfg!(feature = "chroma"),
        _ => unreachable!(),
    }
}

#[test]
fn every_scheme_parses_or_names_its_feature() {
    for (url, feature) in SCHEMES {
        let parsed = TransportConfig::from_url(url);
        if compiled(feature) {
            let config = parsed.unwrap_or_else(|e| panic!("{url}: {e}"));
            let ok = match feature {
                #[cfg(feature = "sqlite")]
                "sqlite" => matches!(config, TransportConfig::Sqlite(_)),
                #[cfg(feature = "nats")]
                "nats" => matches!(config, TransportConfig::Nats(_)),
                #[cfg(feature = "redis")]
                "redis" => matches!(config, TransportConfig::Redis(_)),
                #[cfg(feature = "kafka")]
                "kafka" => matches!(config, TransportConfig::Kafka(_)),
                #[cfg(feature = "chroma")]
                "chroma" => matches!(config, TransportConfig::Chroma(_)),
                _ => false,
            };
            assert!(ok, "{url} parsed as {config:?}");
            // Parsing never touches the server or the file.
            let _ = config.with_prefix(Subject::new("cli.test").unwrap());
        } else {
            let e = error_of(parsed);
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{url}: {e}");
            assert!(
                e.message().contains(&format!("`{feature}`")),
                "{url}: the error should name the feature `{feature}`: {e}"
            );
        }
    }
}

/// `name: "feature", "url";`: a test, compiled without the feature, that
/// `qis::connect(url)` is `Unsupported` naming the feature.
macro_rules! without_feature {
    ($($name:ident: $feature:literal, $url:literal;)+) => {$(
        #[cfg(not(feature = $feature))]
        #[tokio::test]
        async fn $name() {
            let e = error_of(qis::connect($url).await);
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.message().contains(concat!("`", $feature, "`")), "{e}");
        }
    )+};
}

without_feature! {
    sqlite_without_its_feature_is_unsupported: "sqlite", "sqlite://qis.db";
    nats_without_its_feature_is_unsupported: "nats", "nats://127.0.0.1:4222";
    redis_without_its_feature_is_unsupported: "redis", "redis://127.0.0.1:6379";
    kafka_without_its_feature_is_unsupported: "kafka", "kafka://127.0.0.1:9092";
    chroma_without_its_feature_is_unsupported: "chroma", "chroma://127.0.0.1:8000";
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use qis_conformance::support::TempDir;

    #[tokio::test]
    async fn sqlite_url_works_end_to_end() {
        let dir = TempDir::new("connect");
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let writer = qis::connect(&url).await.unwrap();
        assert_eq!(writer.name(), "sqlite");
        let receipt = writer.deposit(&packet("hvac-building-a")).await.unwrap();
        writer.close().await.unwrap();

        // Another handle on the same file (another process, in real life) finds it.
        let reader = qis::connect(&url).await.unwrap();
        let got = twins_found(&reader, "building-b", Duration::from_secs(5)).await;
        reader.close().await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id(), receipt.id);
        assert_eq!(got[0].packet(), &packet("hvac-building-a"));
    }

    #[tokio::test]
    async fn sqlite_url_with_prefix() {
        let dir = TempDir::new("connect");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let t = TransportConfig::from_url(&url)
            .unwrap()
            .with_prefix(Subject::new("fleet.site1").unwrap())
            .connect()
            .await
            .unwrap();
        let r = t.deposit(&packet("a")).await.unwrap();
        assert_eq!(r.subject.as_str(), "fleet.site1.hvac.energy-anomaly");
        t.close().await.unwrap();
    }

    #[test]
    fn sqlite_url_without_a_path_is_invalid_input() {
        let e = error_of(TransportConfig::from_url("sqlite://"));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}
