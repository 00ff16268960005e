//! Similar twins through `qis::connect(url)`: the same query on every
//! compiled-in backend that has them (memory, SQLite, and Chroma with the
//! `chroma` feature and `QIS_CHROMA_URL`), each answer fed to synthesis.

use std::time::Duration;

use qis::{synthesize, OutcomePacket, OutcomeTransportExt, SimilarityQuery, SubjectPattern};
use qis_conformance::libtest_mimic::Trial;
#[cfg(feature = "chroma")]
use qis_conformance::support::trial;
#[cfg(feature = "sqlite")]
use qis_conformance::support::TempDir;
use qis_conformance::support::{block_on, fresh_prefix, pkt, CaseResult};
use qis_conformance::{ensure, run_trials};

fn with_vector(agent: &str, seq: usize, cv: &[f64]) -> OutcomePacket {
    let mut p = pkt(agent, "hvac", "energy-anomaly", seq);
    p.context_vector = cv.to_vec();
    p
}

/// Deposit three agents' packets (two on fingerprint leaves), find the two
/// most like our own across the bucket edge, and synthesise.
async fn twins_through_connect(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = qis::TransportConfig::from_url(&url)
        .map_err(|e| e.to_string())?
        .with_prefix(prefix.clone())
        .connect()
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    ensure!(t.capabilities().similarity, "{} lacks similarity", t.name());
    t.deposit_fingerprinted(&with_vector("a", 1, &[0.249, 0.5, 0.5, 0.5]), 4)
        .await
        .map_err(|e| e.to_string())?;
    t.deposit(&with_vector("c", 2, &[0.24, 0.52, 0.5, 0.49]))
        .await
        .map_err(|e| e.to_string())?;
    t.deposit_fingerprinted(&with_vector("far", 3, &[0.9, 0.0, 0.1, 0.0]), 4)
        .await
        .map_err(|e| e.to_string())?;
    let own = with_vector("b", 4, &[0.251, 0.5, 0.5, 0.5]);
    let twins = t
        .similar_twins(&own, 2, None)
        .await
        .map_err(|e| e.to_string())?;
    let agents: Vec<&str> = twins.iter().map(|s| s.packet().agent_id.as_str()).collect();
    ensure!(agents == ["a", "c"], "{}: twins {agents:?}", t.name());
    let s = synthesize(&own, &twins);
    ensure!(
        s.n_agents == 3,
        "{}: synthesis counted {} agents",
        t.name(),
        s.n_agents
    );
    let q = SimilarityQuery::new(
        SubjectPattern::new(format!("{prefix}.>")).unwrap(),
        own.context_vector.clone(),
        10,
    )
    .and_then(|q| q.with_min_score(0.999))
    .map_err(|e| e.to_string())?;
    let close = t.similar(&q).await.map_err(|e| e.to_string())?;
    ensure!(
        close.len() == 2,
        "{}: {} packets score ≥ 0.999",
        t.name(),
        close.len()
    );
    t.close().await.map_err(|e| e.to_string())
}

fn main() {
    let limit = Duration::from_secs(60);
    let mut trials = vec![Trial::test("memory::twins_through_connect", move || {
        block_on(limit, twins_through_connect("memory://".into())).map_err(Into::into)
    })];
    #[cfg(feature = "sqlite")]
    trials.push(Trial::test("sqlite::twins_through_connect", move || {
        let dir = TempDir::new("qis-facade-similar");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        block_on(limit, twins_through_connect(url)).map_err(Into::into)
    }));
    #[cfg(feature = "chroma")]
    trials.push(trial(
        "chroma::twins_through_connect",
        &qis_conformance::support::env_url(
            "QIS_CHROMA_URL",
            "scripts/servers/chroma.sh start DIR, then source DIR/chroma.env",
        ),
        move |url| block_on(limit, twins_through_connect(url)),
    ));
    run_trials(trials);
}
