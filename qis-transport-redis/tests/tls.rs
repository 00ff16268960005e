//! `rediss://` end to end: a redis-server of this test with TLS only (a
//! certificate authority and server certificate made with `openssl` in a
//! temporary directory), reached with the authority given as `tls_ca_file`:
//! deposit, durable fetch + ack and a live subscription work; without the
//! authority the server's certificate is refused. Needs the crate feature
//! `tls`; ignored with the reason when `redis-server` or `openssl` is
//! missing (a failure with `QIS_REQUIRE_LIVE=1`).

mod common;

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
        .tls_ca_file(server.dir.join("ca.crt"));
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

fn run() -> Result<(), Failed> {
    let mut server = Server::new("tls", &[], true)?;
    let dir = server.dir.clone();
    openssl(
        &dir,
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
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    )?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    )?;
    let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
    server.args = vec![
        "--tls-cert-file".into(),
        file("server.crt"),
        "--tls-key-file".into(),
        file("server.key"),
        "--tls-ca-cert-file".into(),
        file("ca.crt"),
        "--tls-auth-clients".into(),
        "no".into(),
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

fn main() {
    let args = Arguments::from_args();
    let name = "rediss_with_ca_file_deposits_fetches_and_subscribes";
    let missing: Vec<&str> = [("redis-server", "--version"), ("openssl", "version")]
        .into_iter()
        .filter(|(p, a)| !common::installed(p, a))
        .map(|(p, _)| p)
        .collect();
    let trial = if missing.is_empty() {
        Trial::test(name, run)
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
    libtest_mimic::run(&args, vec![trial]).exit();
}
