//! NATS-specific behaviour beyond the shared conformance suite: stream and
//! consumer conflicts, receipts of duplicates, fetch timing, acks, closing,
//! errors, and login / TLS options passed through to the server.
//!
//! Needs `QIS_NATS_URL` (scripts/servers/nats.sh start DIR); the auth and TLS
//! cases start their own nats-server (on PATH or `QIS_NATS_RESTART_BIN`).

mod common;

use std::time::{Duration, Instant};

use common::{shared_server, OwnServer};
use qis_conformance::libtest_mimic::Trial;
use qis_conformance::support::{
    block_on, context, deposit_one, deposit_seqs, eventually, fetch_once, free_port, fresh_prefix,
    installed, open_consumer, pkt, refused, tls_test_certs, trial, CaseResult, TempDir, TestCerts,
};
use qis_conformance::{ensure, CASE_LIMIT};
use qis_core::{
    Checked, ConsumerConfig, ErrorKind, OutcomeTransport, OutcomeTransportExt, Position,
    StartPosition, SubjectPattern,
};
use qis_transport_nats::{NatsConfig, NatsTransport};

async fn open(url: &str, prefix: &qis_core::Subject) -> Result<Checked<NatsTransport>, String> {
    NatsTransport::connect(
        NatsConfig::from_url(url)
            .map_err(context("config"))?
            .prefix(prefix.clone()),
    )
    .await
    .map_err(context("connect"))
}

/// What the server holds about consumer `name` of `t`'s stream.
async fn consumer_info(
    t: &NatsTransport,
    name: &str,
) -> Result<async_nats::jetstream::consumer::Info, String> {
    t.jetstream()
        .get_stream(t.stream_name())
        .await
        .map_err(|e| e.to_string())?
        .consumer_info(name)
        .await
        .map_err(|e| e.to_string())
}

fn cfg(name: &str, pattern: &str) -> ConsumerConfig {
    ConsumerConfig::new(name, SubjectPattern::new(pattern).unwrap()).unwrap()
}

async fn stream_with_other_limits_is_a_conflict(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = open(&url, &prefix).await?;
    // Same settings again: idempotent.
    let again = open(&url, &prefix).await?;
    again.close().await.map_err(context("close"))?;
    // The settings of `t`'s stream, changed one at a time below.
    let base = || NatsConfig::from_url(&url).unwrap().prefix(prefix.clone());
    for (what, config) in [
        ("max_age", base().max_age(Duration::from_secs(3600))),
        ("max_bytes", base().max_bytes(1 << 20)),
        (
            "storage",
            base().storage(qis_transport_nats::NatsStorage::Memory),
        ),
        ("dedup_window", base().dedup_window(Duration::from_secs(10))),
        (
            "subjects",
            NatsConfig::from_url(&url)
                .unwrap()
                .prefix(format!("{prefix}x").parse().unwrap())
                .stream(t.stream_name()),
        ),
        (
            "overlapping subjects",
            base().stream(format!("{}_OTHER", t.stream_name())),
        ),
    ] {
        match NatsTransport::connect(config).await {
            Err(err) => ensure!(
                err.kind() == ErrorKind::Conflict,
                "{what}: expected a conflict, got {err}"
            ),
            Ok(_) => return Err(format!("a stream with other {what} was used silently")),
        }
    }
    // The existing stream was left alone.
    let info = t
        .jetstream()
        .get_stream(t.stream_name())
        .await
        .map_err(|e| e.to_string())?
        .cached_info()
        .clone();
    ensure!(
        info.config.max_age == Duration::from_secs(86_400),
        "max_age changed to {:?}",
        info.config.max_age
    );
    ensure!(
        info.config.max_bytes == 50 * 1024 * 1024,
        "max_bytes changed"
    );
    ensure!(
        info.config.duplicate_window == Duration::from_secs(120),
        "duplicate window changed"
    );
    Ok(())
}

async fn concurrent_connects_create_the_stream_once(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let opened = futures::future::join_all((0..8).map(|_| open(&url, &prefix))).await;
    for t in opened {
        let t = t?;
        t.close().await.map_err(context("close"))?;
    }
    Ok(())
}

async fn consumer_with_other_pattern_is_a_conflict(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = open(&url, &prefix).await?;
    // Re-opened on its pattern it is the same consumer; on another it is a
    // conflict, even where both select the same subjects (`>` and
    // `{prefix}.>` here).
    let (hvac, everything) = (format!("{prefix}.hvac.*"), format!("{prefix}.>"));
    for (name, pattern) in [("c1", hvac.as_str()), ("c2", ">")] {
        t.consumer(cfg(name, pattern))
            .await
            .map_err(context(&format!("open {name} on {pattern}")))?;
        t.consumer(cfg(name, pattern))
            .await
            .map_err(context(&format!("re-open {name} on {pattern}")))?;
        refused(
            &format!("re-opening {name} ({pattern}) on {everything}"),
            ErrorKind::Conflict,
            t.consumer(cfg(name, &everything)).await,
        )?;
    }
    // Re-opening with another ack wait changes it (as the in-memory transport does).
    t.consumer(cfg("c1", &format!("{prefix}.hvac.*")).ack_wait(Duration::from_secs(3)))
        .await
        .map_err(context("re-open with another ack wait"))?;
    let info = consumer_info(&t, "c1").await?;
    ensure!(
        info.config.ack_wait == Duration::from_secs(3),
        "ack wait is {:?}",
        info.config.ack_wait
    );
    refused(
        "a consumer on a pattern outside the prefix",
        ErrorKind::InvalidSubject,
        t.consumer(cfg("c3", "elsewhere.>")).await,
    )?;
    Ok(())
}

async fn patterns_reaching_outside_the_prefix_filter_on_the_server(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let root = prefix.tokens().next().unwrap().to_string();
    let t = open(&url, &prefix).await?;
    let a = deposit_one(&t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
    deposit_one(&t, &pkt("a", "power", "voltage-sag", 2)).await?;
    let b = deposit_one(&t, &pkt("a", "hvac", "refrigerant-loss", 3)).await?;
    let c = open_consumer(&t, "wide", &format!("{root}.*.hvac.*")).await?;
    let mut got = fetch_once(&c, 10, Duration::from_secs(2)).await?;
    c.ack(&got).await.map_err(context("ack"))?;
    got.extend(fetch_once(&c, 10, Duration::from_millis(300)).await?);
    let ids: Vec<_> = got.iter().map(|d| d.id()).collect();
    ensure!(
        ids == vec![a.id, b.id],
        "expected the two hvac packets, got {} deliveries",
        ids.len()
    );
    let info = consumer_info(&t, "wide").await?;
    ensure!(
        info.config.filter_subject == format!("{prefix}.hvac.*"),
        "the server filter is {:?}",
        info.config.filter_subject
    );
    Ok(())
}

async fn duplicate_receipt_points_at_the_original(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = open(&url, &prefix).await?;
    let p = pkt("a", "hvac", "energy-anomaly", 1);
    let first = t.deposit(&p).await.map_err(context("deposit"))?;
    deposit_one(&t, &pkt("a", "hvac", "energy-anomaly", 2)).await?;
    let again = t.deposit(&p).await.map_err(context("re-deposit"))?;
    ensure!(
        again.duplicate && !first.duplicate,
        "duplicate flags {} / {}",
        first.duplicate,
        again.duplicate
    );
    ensure!(
        again.position == first.position,
        "duplicate at {} but original at {}",
        again.position,
        first.position
    );
    ensure!(
        first.position == Position::Sequence(1),
        "first deposit in a fresh stream at {}",
        first.position
    );
    // In a batch too, from another connection.
    let t2 = open(&url, &prefix).await?;
    let rs = t2
        .deposit_batch(&[p.clone(), pkt("a", "hvac", "energy-anomaly", 3)])
        .await
        .map_err(context("batch"))?;
    ensure!(
        rs[0].duplicate && !rs[1].duplicate,
        "batch duplicate flags wrong"
    );
    ensure!(
        rs[1].position == Position::Sequence(3),
        "new packet at {}",
        rs[1].position
    );
    Ok(())
}

async fn fetch_returns_as_soon_as_packets_are_there(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = open(&url, &prefix).await?;
    let c = open_consumer(&t, "quick", &format!("{prefix}.>")).await?;
    // Nothing there: empty after about the wait.
    let started = Instant::now();
    let got = fetch_once(&c, 10, Duration::from_millis(400)).await?;
    let took = started.elapsed();
    ensure!(
        got.is_empty(),
        "fetch on an empty stream returned {}",
        got.len()
    );
    ensure!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "empty fetch took {took:?}"
    );
    // Zero wait: at once.
    let started = Instant::now();
    ensure!(
        fetch_once(&c, 10, Duration::ZERO).await?.is_empty(),
        "zero-wait fetch returned packets"
    );
    ensure!(
        started.elapsed() < Duration::from_millis(500),
        "zero-wait fetch took {:?}",
        started.elapsed()
    );
    // Packets there: at once, not after the wait.
    deposit_one(&t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
    let started = Instant::now();
    let got = fetch_once(&c, 10, Duration::from_secs(10)).await?;
    ensure!(got.len() == 1, "fetch returned {}", got.len());
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "fetch with a packet waiting took {:?}",
        started.elapsed()
    );
    c.ack(&got).await.map_err(context("ack"))?;
    // A packet arriving during the wait ends it.
    let depositor = {
        let t = t.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            t.deposit(&pkt("a", "hvac", "energy-anomaly", 2)).await
        })
    };
    let started = Instant::now();
    let got = fetch_once(&c, 10, Duration::from_secs(10)).await?;
    let took = started.elapsed();
    depositor
        .await
        .map_err(|e| e.to_string())?
        .map_err(context("deposit"))?;
    ensure!(got.len() == 1, "waiting fetch returned {}", got.len());
    ensure!(
        took < Duration::from_secs(2),
        "waiting fetch returned after {took:?}, not when the packet came"
    );
    c.ack(&got).await.map_err(context("ack"))?;
    // Nothing delivered into the void: the next fetch has no stray redelivery.
    let later = fetch_once(&c, 10, Duration::from_millis(300)).await?;
    ensure!(later.is_empty(), "{} unexpected deliveries", later.len());
    let info = consumer_info(&t, "quick").await?;
    ensure!(
        info.num_ack_pending == 0,
        "{} deliveries are pending",
        info.num_ack_pending
    );
    ensure!(
        info.num_redelivered == 0,
        "{} redeliveries",
        info.num_redelivered
    );
    Ok(())
}

async fn pending_acks(t: &NatsTransport, consumer: &str) -> Result<usize, String> {
    Ok(consumer_info(t, consumer).await?.num_ack_pending)
}

/// With `confirm_acks`, the server has processed the acks when `ack()`
/// returns; by default, when the consumer's `close()` returns. Acking again
/// is harmless either way.
async fn acks_are_confirmed_and_double_ack_is_harmless(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    for confirm in [true, false] {
        let mut config = NatsConfig::from_url(&url)
            .map_err(context("config"))?
            .prefix(prefix.clone());
        config.confirm_acks = confirm;
        let t = NatsTransport::connect(config)
            .await
            .map_err(context("connect"))?;
        let name = format!("acker-{confirm}");
        deposit_seqs(&t, &name, "hvac", "energy-anomaly", 0..50).await?;
        let c = t
            .consumer(cfg(&name, &format!("{prefix}.hvac.*")).start(StartPosition::New))
            .await
            .map_err(context("open"))?;
        // StartPosition::New: deposit after opening.
        deposit_seqs(&t, &name, "hvac", "energy-anomaly", 50..100).await?;
        let got = fetch_once(&c, 50, Duration::from_secs(2)).await?;
        ensure!(got.len() == 50, "fetched {}", got.len());
        c.ack(&got).await.map_err(context("ack"))?;
        if confirm {
            let pending = pending_acks(&t, &name).await?;
            ensure!(
                pending == 0,
                "{pending} acks still pending after a confirmed ack()"
            );
        }
        let started = Instant::now();
        c.ack(&got).await.map_err(context("second ack"))?;
        c.ack(&got[..1]).await.map_err(context("third ack"))?;
        c.close().await.map_err(context("close"))?;
        ensure!(
            started.elapsed() < Duration::from_secs(2),
            "acking again and closing took {:?}",
            started.elapsed()
        );
        let pending = pending_acks(&t, &name).await?;
        ensure!(
            pending == 0,
            "{pending} acks still pending after close() (confirm_acks {confirm})"
        );
        t.close().await.map_err(context("close transport"))?;
    }
    Ok(())
}

async fn nak_with_delay_waits(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = open(&url, &prefix).await?;
    let r = deposit_one(&t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
    let c = open_consumer(&t, "later", &format!("{prefix}.>")).await?;
    let got = fetch_once(&c, 1, Duration::from_secs(2)).await?;
    ensure!(got.len() == 1, "fetched {}", got.len());
    let naked = Instant::now();
    c.nak(&got[0], Duration::from_millis(1500))
        .await
        .map_err(context("nak"))?;
    let early = fetch_once(&c, 1, Duration::from_millis(700)).await?;
    ensure!(
        early.is_empty(),
        "a packet nak'd with a 1.5 s delay came back after {:?}",
        naked.elapsed()
    );
    let again = fetch_once(&c, 1, Duration::from_secs(5)).await?;
    ensure!(
        again.len() == 1 && again[0].id() == r.id,
        "the nak'd packet did not come back"
    );
    ensure!(
        naked.elapsed() >= Duration::from_millis(1300),
        "came back after {:?}",
        naked.elapsed()
    );
    ensure!(
        again[0].delivery_count == 2,
        "delivery_count {}",
        again[0].delivery_count
    );
    c.ack(&again).await.map_err(context("ack"))
}

async fn closed_transport_says_closed(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = open(&url, &prefix).await?;
    let c = open_consumer(&t, "c", &format!("{prefix}.>")).await?;
    t.close().await.map_err(context("close"))?;
    t.close().await.map_err(context("close twice"))?;
    refused(
        "deposit after close",
        ErrorKind::Closed,
        t.deposit(&pkt("a", "hvac", "energy-anomaly", 1)).await,
    )?;
    refused(
        "fetch after close",
        ErrorKind::Closed,
        c.fetch(1, Duration::from_millis(10)).await,
    )?;
    Ok(())
}

/// A delivery acked or nak-ed on a consumer that did not hand it out is
/// refused, and the one that did can still ack it.
async fn ack_on_the_wrong_consumer_is_invalid_input(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = open(&url, &prefix).await?;
    let other = open(&url, &prefix).await?;
    deposit_one(&t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
    let a = open_consumer(&t, "a", &format!("{prefix}.>")).await?;
    let b = open_consumer(&t, "b", &format!("{prefix}.>")).await?;
    // The same consumer name on another connection is another handle too.
    let a_elsewhere = other
        .consumer(cfg("a", &format!("{prefix}.>")))
        .await
        .map_err(context("open a elsewhere"))?;
    let got = fetch_once(&a, 1, Duration::from_secs(2)).await?;
    ensure!(got.len() == 1, "fetched {}", got.len());
    for (which, wrong) in [("b", &b), ("a on another connection", &a_elsewhere)] {
        refused(
            &format!("ack on {which}"),
            ErrorKind::InvalidInput,
            wrong.ack(&got).await,
        )?;
        refused(
            &format!("nak on {which}"),
            ErrorKind::InvalidInput,
            wrong.nak(&got[0], Duration::ZERO).await,
        )?;
    }
    a.ack(&got).await.map_err(context("ack on a"))?;
    a.close().await.map_err(context("close a"))?;
    ensure!(
        pending_acks(&t, "a").await? == 0,
        "the delivery is still pending after its own consumer acked it"
    );
    Ok(())
}

/// A URL naming several seed servers reaches the cluster through any of
/// them: here the first answers nothing and the second is the server.
async fn seed_servers_reach_a_live_one(url: String) -> CaseResult {
    let config = NatsConfig::from_url(&url).map_err(context("config"))?;
    let live = config.servers[0]
        .split_once("://")
        .map(|(_, addr)| addr.to_string())
        .ok_or("no address in QIS_NATS_URL")?;
    let dead = format!("127.0.0.1:{}", free_port());
    let prefix = fresh_prefix();
    for seeds in [format!("{dead},{live}"), format!("{live},{dead}")] {
        let config = NatsConfig::from_url(&format!("nats://{seeds}"))
            .map_err(context("seed list"))?
            .prefix(prefix.clone());
        ensure!(config.servers.len() == 2, "servers {:?}", config.servers);
        let t = NatsTransport::connect(config)
            .await
            .map_err(context("connect through the seed list"))?;
        deposit_one(&t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
        t.close().await.map_err(context("close"))?;
    }
    Ok(())
}

/// A single server takes one replica only: more is a typed error saying
/// what to change, and nothing is created.
async fn replicas_beyond_one_need_a_cluster(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let config = NatsConfig::from_url(&url)
        .map_err(context("config"))?
        .prefix(prefix.clone())
        .replicas(3);
    let e = refused(
        "a stream with 3 replicas on a single server",
        ErrorKind::InvalidInput,
        NatsTransport::connect(config).await,
    )?;
    ensure!(e.message().contains("replicas"), "{e}");
    let t = open(&url, &prefix).await?;
    t.deposit(&pkt("a", "hvac", "energy-anomaly", 1))
        .await
        .map_err(context("deposit with one replica"))?;
    t.close().await.map_err(context("close"))
}

async fn unreachable_server_is_unavailable() -> CaseResult {
    let port = free_port();
    let started = Instant::now();
    let err = refused(
        "connecting to a port nothing listens on",
        ErrorKind::Unavailable,
        NatsTransport::connect_url(&format!("nats://127.0.0.1:{port}")).await,
    )?;
    ensure!(err.transport() == "nats", "transport {}", err.transport());
    ensure!(std::error::Error::source(&err).is_some(), "no source error");
    ensure!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

async fn user_password_and_token_login(
    server_user: OwnServer,
    server_token: OwnServer,
) -> CaseResult {
    let prefix = fresh_prefix();
    let good = format!("nats://alice:s3cr%40t@127.0.0.1:{}", server_user.port);
    let t = NatsTransport::connect(
        NatsConfig::from_url(&good)
            .map_err(context("config"))?
            .prefix(prefix.clone()),
    )
    .await
    .map_err(context("login with user:pass in the URL"))?;
    deposit_one(&t, &pkt("a", "hvac", "energy-anomaly", 1)).await?;
    let fields = NatsConfig::from_url(&server_user.url())
        .unwrap()
        .prefix(prefix.clone())
        .user_password("alice", "s3cr@t");
    NatsTransport::connect(fields)
        .await
        .map_err(context("login with user/password fields"))?;
    let bad = format!("nats://alice:wrong@127.0.0.1:{}", server_user.port);
    refused(
        "a wrong password",
        ErrorKind::InvalidInput,
        NatsTransport::connect_url(&bad).await,
    )?;
    refused(
        "no password",
        ErrorKind::InvalidInput,
        NatsTransport::connect_url(&server_user.url()).await,
    )?;

    let tok = format!("nats://t0ken@127.0.0.1:{}", server_token.port);
    NatsTransport::connect(NatsConfig::from_url(&tok).unwrap().prefix(prefix.clone()))
        .await
        .map_err(context("login with a token in the URL"))?;
    let fields = NatsConfig::from_url(&server_token.url())
        .unwrap()
        .prefix(prefix)
        .token("t0ken");
    NatsTransport::connect(fields)
        .await
        .map_err(context("login with the token field"))?;
    refused(
        "a wrong token",
        ErrorKind::InvalidInput,
        NatsTransport::connect_url(&format!("nats://nope@127.0.0.1:{}", server_token.port)).await,
    )?;
    Ok(())
}

async fn tls_with_own_ca(server: OwnServer, certs: TestCerts) -> CaseResult {
    let prefix = fresh_prefix();
    let config = NatsConfig::from_url(&server.url())
        .unwrap()
        .prefix(prefix.clone())
        .tls_ca(&certs.ca)
        .require_tls(true);
    let t = NatsTransport::connect(config)
        .await
        .map_err(context("connect with TLS"))?;
    let r = t
        .deposit(&pkt("a", "hvac", "energy-anomaly", 1))
        .await
        .map_err(context("deposit over TLS"))?;
    ensure!(!r.duplicate, "fresh deposit reported duplicate");
    let url = format!(
        "tls://127.0.0.1:{}?tls_ca={}",
        server.port,
        certs.ca.display()
    );
    NatsTransport::connect(
        NatsConfig::from_url(&url)
            .map_err(context("tls url"))?
            .prefix(prefix.clone()),
    )
    .await
    .map_err(context("connect with tls:// and tls_ca"))?;
    // Without the CA the server's certificate is not trusted.
    refused(
        "an untrusted certificate",
        ErrorKind::Unavailable,
        NatsTransport::connect(
            NatsConfig::from_url(&server.url())
                .unwrap()
                .prefix(prefix)
                .require_tls(true),
        )
        .await,
    )?;
    Ok(())
}

/// `backlog()` and `consumers()` report the server's consumer info:
/// matching packets not yet delivered, and delivered ones not yet acked.
async fn backlog_is_the_servers_count(url: String) -> CaseResult {
    let prefix = fresh_prefix();
    let t = open(&url, &prefix).await?;
    deposit_seqs(&t, "backlog", "hvac", "energy-anomaly", 0..5).await?;
    deposit_one(&t, &pkt("backlog", "water", "leak", 9)).await?;
    let c = open_consumer(&t, "exact", &format!("{prefix}.hvac.energy-anomaly")).await?;
    let b = c.backlog().await.map_err(context("backlog"))?;
    ensure!(
        (b.waiting, b.unacked) == (5, 0),
        "a new consumer: {b:?}, want 5 waiting (only the matching ones)"
    );
    let got = fetch_once(&c, 2, Duration::from_secs(2)).await?;
    ensure!(got.len() == 2, "fetched {}", got.len());
    let b = c.backlog().await.map_err(context("backlog"))?;
    ensure!(
        (b.waiting, b.unacked) == (3, 2),
        "after a fetch of 2: {b:?}"
    );
    c.ack(&got[..1]).await.map_err(context("ack"))?;
    // Acks are sent without waiting for the server (confirm_acks is off):
    // look until the server has counted it.
    let counted = eventually(
        "the server counting 3 waiting, 1 unacked after an ack of 1 of 2",
        Duration::from_secs(5),
        || async {
            c.backlog()
                .await
                .is_ok_and(|b| (b.waiting, b.unacked) == (3, 1))
        },
    )
    .await;
    if let Err(err) = counted {
        let b = c.backlog().await.map_err(context("backlog"))?;
        return Err(format!("{err}: it counts {b:?}"));
    }
    let listed = t.consumers().await.map_err(context("consumers"))?;
    ensure!(listed.len() == 1, "consumers: {listed:?}");
    ensure!(
        listed[0].name == "exact"
            && listed[0].pattern.as_deref() == Some(&*format!("{prefix}.hvac.energy-anomaly"))
            && listed[0].backlog.total() == 4,
        "consumers: {listed:?}"
    );
    c.close().await.map_err(context("close"))?;
    t.close().await.map_err(context("close transport"))?;
    Ok(())
}

fn main() {
    let shared = shared_server();
    let own = common::server_binary();
    let mut trials = Vec::new();
    macro_rules! shared_case {
        ($f:ident) => {
            trials.push(trial(stringify!($f), &shared, |url| {
                block_on(CASE_LIMIT, $f(url))
            }));
        };
    }
    shared_case!(stream_with_other_limits_is_a_conflict);
    shared_case!(concurrent_connects_create_the_stream_once);
    shared_case!(consumer_with_other_pattern_is_a_conflict);
    shared_case!(patterns_reaching_outside_the_prefix_filter_on_the_server);
    shared_case!(duplicate_receipt_points_at_the_original);
    shared_case!(fetch_returns_as_soon_as_packets_are_there);
    shared_case!(acks_are_confirmed_and_double_ack_is_harmless);
    shared_case!(nak_with_delay_waits);
    shared_case!(closed_transport_says_closed);
    shared_case!(ack_on_the_wrong_consumer_is_invalid_input);
    shared_case!(seed_servers_reach_a_live_one);
    shared_case!(replicas_beyond_one_need_a_cluster);
    shared_case!(backlog_is_the_servers_count);
    trials.push(Trial::test("unreachable_server_is_unavailable", || {
        Ok(block_on(CASE_LIMIT, unreachable_server_is_unavailable())?)
    }));
    trials.push(trial("user_password_and_token_login", &own, |_| {
        let user = OwnServer::start(&["--user", "alice", "--pass", "s3cr@t"])?;
        let token = OwnServer::start(&["--auth", "t0ken"])?;
        block_on(CASE_LIMIT, user_password_and_token_login(user, token))
    }));
    let tls_ready = own.and_then(|bin| {
        if installed("openssl", "version") {
            Ok(bin)
        } else {
            Err("openssl is needed to make test certificates".to_string())
        }
    });
    trials.push(trial("tls_with_own_ca", &tls_ready, |_| {
        let dir = TempDir::new("nats-certs");
        let certs = tls_test_certs(dir.path())?;
        let (cert, key) = (
            certs.cert.display().to_string(),
            certs.key.display().to_string(),
        );
        let server = OwnServer::start(&["--tls", "--tlscert", &cert, "--tlskey", &key])?;
        block_on(CASE_LIMIT, tls_with_own_ca(server, certs))
    }));
    qis_conformance::run_trials(trials);
}
