//! What is Chroma's own beyond the shared cases: receipts of re-deposits,
//! one collection per vector length, tenants and databases, what it does
//! not support, malformed records, an unreachable server. Needs
//! `QIS_CHROMA_URL` (ignored without it, failed under `QIS_REQUIRE_LIVE=1`).

use std::time::Duration;

use qis_conformance::libtest_mimic::Trial;
use qis_conformance::support::{
    block_on, env_url, free_port, fresh_prefix, pkt, trial, CaseResult,
};
use qis_conformance::{ensure, run_trials};
use qis_core::backend::InjectRaw;
use qis_core::{
    Checked, ConsumerConfig, ErrorKind, OutcomeTransport, OutcomeTransportExt, Position,
    SimilarityQuery, Subject, SubjectPattern,
};
use qis_transport_chroma::{ChromaConfig, ChromaTransport};

const HOW: &str = "scripts/servers/chroma.sh start DIR, then source DIR/chroma.env";
const LIMIT: Duration = Duration::from_secs(120);

async fn connect(url: &str, prefix: &Subject) -> Result<Checked<ChromaTransport>, String> {
    let config: ChromaConfig = url.parse().map_err(|e| format!("{e}"))?;
    ChromaTransport::connect(config.prefix(prefix.clone()))
        .await
        .map_err(|e| format!("connect: {e}"))
}

fn query(pattern: String, v: &[f64], k: usize) -> SimilarityQuery {
    SimilarityQuery::new(SubjectPattern::new(pattern).unwrap(), v.to_vec(), k).unwrap()
}

/// A re-deposit, on the same subject or on its fingerprint leaf, alone or
/// twice in one batch, is told it is a duplicate and where the original is.
async fn redeposits_name_the_original(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = connect(&url, &prefix).await?;
    let p = pkt("agent-a", "hvac", "energy-anomaly", 1);
    let first = t.deposit(&p).await.map_err(|e| e.to_string())?;
    ensure!(!first.duplicate, "a first deposit was called a duplicate");
    ensure!(
        matches!(first.position, Position::Sequence(us) if us > 1_700_000_000_000_000),
        "the position {} is not the deposit time in microseconds",
        first.position
    );
    let again = t.deposit(&p).await.map_err(|e| e.to_string())?;
    let leaf = t
        .deposit_fingerprinted(&p, 4)
        .await
        .map_err(|e| e.to_string())?;
    for r in [&again, &leaf] {
        ensure!(r.duplicate, "a re-deposit was not recognised");
        ensure!(
            r.subject == first.subject && r.position == first.position && r.id == first.id,
            "the duplicate's receipt {r:?} does not name the original {first:?}"
        );
    }
    // In one batch: the second copy is the duplicate of the first.
    let q = pkt("agent-b", "hvac", "energy-anomaly", 2);
    let batch = t
        .deposit_batch(&[q.clone(), p.clone(), q.clone()])
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        batch.iter().map(|r| r.duplicate).collect::<Vec<_>>() == [false, true, true],
        "batch receipts: {batch:?}"
    );
    ensure!(batch[0].id == batch[2].id, "receipts out of input order");
    // Another handle (another process) sees the same.
    let other = connect(&url, &prefix).await?;
    ensure!(
        other
            .deposit(&p)
            .await
            .map_err(|e| e.to_string())?
            .duplicate,
        "another handle stored the packet again"
    );
    Ok(())
}

/// Each vector length has its own collection, named after the prefix.
async fn one_collection_per_length(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = connect(&url, &prefix).await?;
    for (i, len) in [2usize, 3, 0].into_iter().enumerate() {
        let mut p = pkt("agent", "hvac", "energy-anomaly", i);
        p.context_vector = vec![0.5; len];
        t.deposit(&p).await.map_err(|e| e.to_string())?;
    }
    let names = list_collections(&url).await?;
    for len in [2, 3, 0] {
        let want = t.collection_name(len);
        ensure!(
            names.contains(&want),
            "no collection {want} among {} on the server",
            names.len()
        );
    }
    ensure!(
        !names.contains(&t.collection_name(4)),
        "a collection for length 4 exists though nothing that long was deposited"
    );
    let got = t
        .similar(&query(format!("{prefix}.>"), &[1.0, 1.0, 1.0, 1.0], 5))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        got.is_empty(),
        "a length with no collection matched {got:?}"
    );
    Ok(())
}

async fn list_collections(url: &str) -> Result<Vec<String>, String> {
    // The server's own listing, through a plain HTTP client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = url.parse::<ChromaConfig>().map_err(|e| e.to_string())?;
    let listing = format!(
        "{}/api/v2/tenants/default_tenant/databases/default_database/collections?limit=100000",
        base.base_url()
    );
    let body = reqwest::get(&listing)
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .ok_or_else(|| format!("not a list: {body}"))?
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect())
}

/// A database that does not exist is created; a tenant that does not exist
/// is NotFound. Databases are separate stores.
async fn databases_are_created_tenants_are_not(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let db = format!("qisdb{}", &prefix.as_str()[2..12]);
    let config: ChromaConfig = url.parse().map_err(|e| format!("{e}"))?;
    let in_db =
        ChromaTransport::connect(config.clone().database(db.clone()).prefix(prefix.clone()))
            .await
            .map_err(|e| format!("connect with a new database: {e}"))?;
    in_db
        .deposit(&pkt("a", "hvac", "energy-anomaly", 1))
        .await
        .map_err(|e| e.to_string())?;
    let default_db = connect(&url, &prefix).await?;
    let q = query(format!("{prefix}.>"), &[0.18, 0.92, 0.03, 0.71], 5);
    ensure!(
        in_db.similar(&q).await.map_err(|e| e.to_string())?.len() == 1,
        "the packet is not in its database"
    );
    ensure!(
        default_db
            .similar(&q)
            .await
            .map_err(|e| e.to_string())?
            .is_empty(),
        "the default database sees another database's packet"
    );
    let e = ChromaTransport::connect(config.tenant("no-such-tenant-qis"))
        .await
        .err()
        .ok_or("a missing tenant was accepted")?;
    ensure!(e.kind() == ErrorKind::NotFound, "missing tenant: {e}");
    Ok(())
}

/// Consumers, live subscriptions and publish are Unsupported, from the
/// checking layer; deposits and queries go on working.
async fn what_it_cannot_do_is_unsupported(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = connect(&url, &prefix).await?;
    let caps = t.capabilities();
    ensure!(
        caps.similarity && caps.dedup && caps.persistent && !caps.durable && !caps.live,
        "capabilities {caps:?}"
    );
    let p = pkt("a", "hvac", "energy-anomaly", 1);
    let pattern = SubjectPattern::new(format!("{prefix}.>")).unwrap();
    let kinds = [
        t.consumer(ConsumerConfig::new("c", pattern.clone()).unwrap())
            .await
            .err()
            .map(|e| e.kind()),
        t.subscribe(pattern).await.err().map(|e| e.kind()),
        t.publish(&p).await.err().map(|e| e.kind()),
    ];
    ensure!(
        kinds.iter().all(|k| *k == Some(ErrorKind::Unsupported)),
        "consumer, subscribe, publish gave {kinds:?}"
    );
    t.deposit(&p).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Records written by something else with bodies that are not packets are
/// skipped by queries, never returned.
async fn malformed_records_are_skipped(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = connect(&url, &prefix).await?;
    let subject = format!("{prefix}.hvac.energy-anomaly");
    t.inject_raw(
        &subject,
        br#"{"context_vector":[0.18,0.92,0.03,0.71],"confidence":9}"#,
    )
    .await
    .map_err(|e| e.to_string())?;
    let good = t
        .deposit(&pkt("a", "hvac", "energy-anomaly", 1))
        .await
        .map_err(|e| e.to_string())?;
    let got = t
        .similar(&query(format!("{prefix}.>"), &[0.18, 0.92, 0.03, 0.71], 5))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        got.len() == 1 && got[0].id() == good.id,
        "expected only the valid packet, got {got:?}"
    );
    Ok(())
}

fn main() {
    let url = env_url("QIS_CHROMA_URL", HOW);
    let live = |name: &str,
                f: fn(
        String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = CaseResult> + Send>,
    >| {
        trial(format!("chroma::{name}"), &url, move |u| {
            block_on(LIMIT, f(u))
        })
    };
    let mut trials: Vec<Trial> = vec![
        live("redeposits_name_the_original", |u| {
            Box::pin(redeposits_name_the_original(u))
        }),
        live("one_collection_per_length", |u| {
            Box::pin(one_collection_per_length(u))
        }),
        live("databases_are_created_tenants_are_not", |u| {
            Box::pin(databases_are_created_tenants_are_not(u))
        }),
        live("what_it_cannot_do_is_unsupported", |u| {
            Box::pin(what_it_cannot_do_is_unsupported(u))
        }),
        live("malformed_records_are_skipped", |u| {
            Box::pin(malformed_records_are_skipped(u))
        }),
    ];
    // No server needed: nothing listens on a fresh loopback port.
    trials.push(Trial::test(
        "chroma::unreachable_server_is_unavailable",
        || {
            block_on(Duration::from_secs(30), async {
                let url = format!("chroma://127.0.0.1:{}?connect_timeout=2s", free_port());
                let e = ChromaTransport::connect_url(&url)
                    .await
                    .err()
                    .ok_or("connected to nothing")?;
                ensure!(e.kind() == ErrorKind::Unavailable, "{e}");
                ensure!(
                    e.message().contains("chroma.sh"),
                    "the message says what to do: {e}"
                );
                Ok(())
            })
            .map_err(Into::into)
        },
    ));
    run_trials(trials);
}
