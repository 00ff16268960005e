//! `rediss://` end to end: a redis-server of this test with TLS only (a
//! certificate authority and server certificate made with `openssl` in a
//! temporary directory), reached with the authority given as `tls_ca`:
//! deposit, durable fetch + ack and a live subscription work; without the
//! authority the server's certificate is refused. A second server asks for
//! client certificates: given as `tls_cert` + `tls_key` URL keys they are
//! presented; without them the server refuses the client. Needs the crate feature
//! `tls`; ignored with the reason when `redis-server` or `openssl` is
//! missing (a failure with `QIS_REQUIRE_LIVE=1`).

mod common;

use std::future::Future;
use std::time::Duration;

use common::Server;
use futures::StreamExt;
use qis_conformance::support::{
    block_on, deposit_one, fetch_once, installed, open_consumer, pkt, subscribe, tls_test_certs,
    trial, CaseResult, TestCerts,
};
use qis_core::Subject;
use qis_transport_redis::{RedisConfig, RedisTransport};

async fn scenario(port: u16, certs: TestCerts) -> CaseResult {
    let prefix = Subject::new("tls.iot").unwrap();
    let url = format!("rediss://127.0.0.1:{port}");
    let config = RedisConfig::from_url(&url)
        .map_err(|e| e.to_string())?
        .prefix(prefix.clone())
        .tls_ca(&certs.ca);
    let t = RedisTransport::connect(config)
        .await
        .map_err(|e| format!("TLS connect with the CA: {e}"))?;
    let mut live = subscribe(&t, "tls.iot.>").await?;
    let r = deposit_one(&t, &pkt("tls-agent", "hvac", "secure", 1)).await?;
    match tokio::time::timeout(Duration::from_secs(10), live.next()).await {
        Ok(Some(Ok(got))) if got.id == r.id => {}
        other => return Err(format!("live over TLS gave {other:?}")),
    }
    let c = open_consumer(&t, "tls-reader", "tls.iot.>").await?;
    let got = fetch_once(&c, 10, Duration::from_secs(5)).await?;
    if got.len() != 1 || got[0].id() != r.id {
        return Err(format!("fetch over TLS gave {} deliveries", got.len()));
    }
    c.ack(&got).await.map_err(|e| format!("ack: {e}"))?;

    // Without the authority, the self-made certificate is not trusted.
    let untrusted = RedisConfig::from_url(&url)
        .map_err(|e| e.to_string())?
        .prefix(prefix)
        .connect_timeout(Duration::from_secs(2));
    if RedisTransport::connect(untrusted).await.is_ok() {
        return Err("a server certificate from an unknown authority was accepted".into());
    }
    Ok(())
}

/// A server that asks for client certificates: the client certificate and
/// key given as URL keys are presented; without them the server refuses.
async fn client_certificate(port: u16, certs: TestCerts) -> CaseResult {
    let prefix = Subject::new("mtls.iot").unwrap();
    let url = format!(
        "rediss://127.0.0.1:{port}?prefix=mtls.iot&tls_ca={}&tls_cert={}&tls_key={}",
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    let config: RedisConfig = url.parse().map_err(|e| format!("{e}"))?;
    let t = RedisTransport::connect(config)
        .await
        .map_err(|e| format!("mutual TLS connect: {e}"))?;
    let r = deposit_one(&t, &pkt("tls-agent", "hvac", "secure", 2)).await?;
    let c = open_consumer(&t, "mtls-reader", "mtls.iot.>").await?;
    let got = fetch_once(&c, 10, Duration::from_secs(5)).await?;
    if got.len() != 1 || got[0].id() != r.id {
        return Err(format!(
            "fetch over mutual TLS gave {} deliveries",
            got.len()
        ));
    }
    c.ack(&got).await.map_err(|e| format!("ack: {e}"))?;

    // The CA alone is not enough for this server.
    let no_cert = RedisConfig::from_url(&format!("rediss://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .prefix(prefix)
        .tls_ca(&certs.ca)
        .connect_timeout(Duration::from_secs(2));
    if RedisTransport::connect(no_cert).await.is_ok() {
        return Err(
            "the server asks for a client certificate, yet a client without one connected".into(),
        );
    }
    Ok(())
}

/// Start a TLS-only server with fresh certificates (`auth_clients`: it asks
/// for a client certificate) and run `scenario` against its port.
fn run<F, Fut>(name: &str, auth_clients: bool, scenario: F) -> CaseResult
where
    F: FnOnce(u16, TestCerts) -> Fut,
    Fut: Future<Output = CaseResult>,
{
    let mut server = Server::new(name, &[], true);
    let certs = tls_test_certs(server.dir())?;
    let file = |f: &std::path::Path| f.to_string_lossy().into_owned();
    server.args = vec![
        "--tls-cert-file".into(),
        file(&certs.cert),
        "--tls-key-file".into(),
        file(&certs.key),
        "--tls-ca-cert-file".into(),
        file(&certs.ca),
        "--tls-auth-clients".into(),
        if auth_clients { "yes" } else { "no" }.into(),
        "--save".into(),
        String::new(),
    ];
    server.start()?;
    let r = block_on(Duration::from_secs(60), scenario(server.port, certs));
    server.stop()?;
    r
}

fn main() {
    let missing: Vec<&str> = [("redis-server", "--version"), ("openssl", "version")]
        .into_iter()
        .filter(|(p, a)| !installed(p, a))
        .map(|(p, _)| p)
        .collect();
    let ready = if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not installed (scripts/servers/redis.sh install; apt-get install openssl)",
            missing.join(" and ")
        ))
    };
    qis_conformance::run_trials(vec![
        trial(
            "rediss_with_ca_file_deposits_fetches_and_subscribes",
            &ready,
            |()| run("tls", false, scenario),
        ),
        trial("rediss_with_client_certificate", &ready, |()| {
            run("mtls", true, client_certificate)
        }),
    ]);
}
