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
use std::pin::Pin;
use std::time::Duration;

use common::{openssl, Server};
use futures::StreamExt;
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use qis_core::{
    ConsumerConfig, EncodedPacket, OutcomePacket, OutcomeTransport, Subject, SubjectPattern,
};
use qis_transport_redis::{RedisConfig, RedisTransport};

fn packet(i: usize) -> OutcomePacket {
    OutcomePacket {
        agent_id: "tls-agent".into(),
        domain: "hvac".into(),
        problem_class: "secure".into(),
        conclusion: format!("finding {i}"),
        confidence: 0.9,
        context_vector: vec![0.5],
        timestamp: 1_764_000_000.0 + i as f64,
        source_node: "tls-test".into(),
    }
}

async fn scenario(server: &Server) -> Result<(), String> {
    let prefix = Subject::new("tls.iot").unwrap();
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let config = RedisConfig::from_url(&url)
        .map_err(|e| e.to_string())?
        .prefix(prefix.clone())
        .tls_ca(server.dir.join("ca.crt"));
    let t = RedisTransport::connect(config)
        .await
        .map_err(|e| format!("TLS connect with the CA: {e}"))?;
    let mut live = t
        .subscribe(SubjectPattern::new("tls.iot.>").unwrap())
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let p = EncodedPacket::readable(&packet(1), &prefix).unwrap();
    let r = t
        .deposit_encoded(&p)
        .await
        .map_err(|e| format!("deposit: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), live.next()).await {
        Ok(Some(Ok(got))) if got.id == r.id => {}
        other => return Err(format!("live over TLS gave {other:?}")),
    }
    let c = t
        .consumer(
            ConsumerConfig::new("tls-reader", SubjectPattern::new("tls.iot.>").unwrap()).unwrap(),
        )
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    let got = c
        .fetch(10, Duration::from_secs(5))
        .await
        .map_err(|e| format!("fetch: {e}"))?;
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

/// A certificate authority, a server certificate for 127.0.0.1 and a client
/// certificate, all signed by the authority, made in `dir`.
fn certificates(dir: &std::path::Path) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=qis-test-ca",
        ],
    )?;
    for (name, cn) in [("server", "/CN=127.0.0.1"), ("client", "/CN=qis-client")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                cn,
            ],
        )?;
    }
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n")
        .map_err(|e| e.to_string())?;
    for (name, ext) in [("server", "ext.cnf"), ("client", "client.cnf")] {
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        )?;
    }
    Ok(())
}

/// A scenario run against a started server.
type Scenario = for<'a> fn(&'a Server) -> Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

/// One trial.
type Case = fn() -> Result<(), Failed>;

/// Start a TLS-only server with fresh certificates (`auth_clients`: it asks
/// for a client certificate) and run `scenario` against it.
fn run(name: &str, auth_clients: bool, scenario: Scenario) -> Result<(), Failed> {
    let mut server = Server::new(name, &[], true)?;
    let dir = server.dir.clone();
    certificates(&dir)?;
    let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
    server.args = vec![
        "--tls-cert-file".into(),
        file("server.crt"),
        "--tls-key-file".into(),
        file("server.key"),
        "--tls-ca-cert-file".into(),
        file("ca.crt"),
        "--tls-auth-clients".into(),
        if auth_clients { "yes" } else { "no" }.into(),
        "--save".into(),
        String::new(),
    ];
    server.start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), scenario(&server))
            .await
            .unwrap_or_else(|_| Err("the TLS scenario did not finish within 60 s".into()))
    });
    drop(rt);
    server.stop()?;
    r.map_err(Failed::from)
}

/// A server that asks for client certificates: the client certificate and
/// key given as URL keys are presented; without them the server refuses.
async fn client_certificate(server: &Server) -> Result<(), String> {
    let prefix = Subject::new("mtls.iot").unwrap();
    let file = |f: &str| server.dir.join(f).to_string_lossy().into_owned();
    let url = format!(
        "rediss://127.0.0.1:{}?prefix=mtls.iot&tls_ca={}&tls_cert={}&tls_key={}",
        server.port,
        file("ca.crt"),
        file("client.crt"),
        file("client.key")
    );
    let config: RedisConfig = url.parse().map_err(|e| format!("{e}"))?;
    let t = RedisTransport::connect(config)
        .await
        .map_err(|e| format!("mutual TLS connect: {e}"))?;
    let p = EncodedPacket::readable(&packet(2), &prefix).unwrap();
    let r = t
        .deposit_encoded(&p)
        .await
        .map_err(|e| format!("deposit: {e}"))?;
    let c = t
        .consumer(
            ConsumerConfig::new("mtls-reader", SubjectPattern::new("mtls.iot.>").unwrap()).unwrap(),
        )
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    let got = c
        .fetch(10, Duration::from_secs(5))
        .await
        .map_err(|e| format!("fetch: {e}"))?;
    if got.len() != 1 || got[0].id() != r.id {
        return Err(format!(
            "fetch over mutual TLS gave {} deliveries",
            got.len()
        ));
    }
    c.ack(&got).await.map_err(|e| format!("ack: {e}"))?;

    // The CA alone is not enough for this server.
    let no_cert = RedisConfig::from_url(&format!("rediss://127.0.0.1:{}", server.port))
        .map_err(|e| e.to_string())?
        .prefix(prefix)
        .tls_ca(file("ca.crt"))
        .connect_timeout(Duration::from_secs(2));
    if RedisTransport::connect(no_cert).await.is_ok() {
        return Err(
            "the server asks for a client certificate, yet a client without one connected".into(),
        );
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let missing: Vec<&str> = [("redis-server", "--version"), ("openssl", "version")]
        .into_iter()
        .filter(|(p, a)| !common::installed(p, a))
        .map(|(p, _)| p)
        .collect();
    let cases: [(&str, Case); 2] = [
        (
            "rediss_with_ca_file_deposits_fetches_and_subscribes",
            || run("tls", false, |s| Box::pin(scenario(s))),
        ),
        ("rediss_with_client_certificate", || {
            run("mtls", true, |s| Box::pin(client_certificate(s)))
        }),
    ];
    let mut trials = Vec::new();
    for (name, case) in cases {
        let trial = if missing.is_empty() {
            Trial::test(name, case)
        } else {
            let why = format!(
                "{} not installed (scripts/servers/redis.sh install; apt-get install openssl)",
                missing.join(" and ")
            );
            if common::require_live() {
                Trial::test(name, move || {
                    Err(Failed::from(format!("{why}, but QIS_REQUIRE_LIVE=1")))
                })
            } else {
                Trial::ignorable_test(name, move || Ok(Completion::ignored_with(why)))
            }
        };
        trials.push(trial);
    }
    libtest_mimic::run(&args, trials).exit();
}
