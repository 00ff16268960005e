//! Redis-specific behaviour beyond the shared conformance suite, against the
//! server at `QIS_REDIS_URL` (`scripts/servers/redis.sh start DIR`). Without
//! it the cases are ignored with the reason (a failure with
//! `QIS_REQUIRE_LIVE=1`); the cases that need no server always run.

use std::time::{Duration, Instant};

mod common;

use common::live::{connect_with, live_trials, pending, raw, LIMIT};
use qis_conformance::ensure;
use qis_conformance::libtest_mimic::Trial;
use qis_conformance::support::{
    block_on, collect_in_order, consumer_from_now, consumer_from_start, context, deposit_seqs,
    fetch_once, open_consumer, pkt, random_hex, reader, refused, seq_of, CaseResult,
};
use qis_core::backend::InjectRaw;
use qis_core::{
    Checked, ConsumerConfig, EncodedPacket, ErrorKind, OutcomeTransport, Subject, SubjectPattern,
};
use qis_transport_redis::{RedisConfig, RedisTransport};

/// A packet on `{prefix}.hvac.{problem}`, told apart by `seq`.
fn packet(problem: &str, seq: usize) -> qis_core::OutcomePacket {
    pkt("behaviour", "hvac", problem, seq)
}

async fn connect(url: &str, prefix: &Subject) -> Result<Checked<RedisTransport>, String> {
    connect_with(url, prefix, |c| c).await
}

async fn deposit(
    t: &Checked<RedisTransport>,
    prefix: &Subject,
    problem: &str,
    seq: usize,
) -> Result<qis_core::Receipt, String> {
    let p = EncodedPacket::readable(&packet(problem, seq), prefix).map_err(context("encode"))?;
    t.deposit_encoded(&p).await.map_err(context("deposit"))
}

/// A delay longer than the ack wait is honoured (the delayed set), a short
/// one too (the idle reset), and neither comes back early.
async fn nak_delays_are_honoured(url: String, prefix: Subject) -> CaseResult {
    let t = connect(&url, &prefix).await?;
    let r = deposit(&t, &prefix, "nak", 1).await?;
    for (name, ack_wait, delay) in [
        (
            "long-delay",
            Duration::from_millis(300),
            Duration::from_millis(1500),
        ),
        (
            "short-delay",
            Duration::from_secs(30),
            Duration::from_millis(400),
        ),
    ] {
        let c = reader(&t, name, &prefix, ack_wait).await?;
        let first = fetch_once(&c, 10, Duration::from_secs(5)).await?;
        ensure!(
            first.len() == 1 && first[0].id() == r.id,
            "{name}: first fetch gave {} deliveries",
            first.len()
        );
        let naked = Instant::now();
        c.nak(&first[0], delay).await.map_err(context("nak"))?;
        let early = fetch_once(&c, 10, delay.mul_f64(0.7)).await?;
        ensure!(
            early.is_empty(),
            "{name}: the nak'd packet came back after {:?}, before its {delay:?} delay",
            naked.elapsed()
        );
        let deadline = Instant::now() + delay + Duration::from_secs(5);
        let again = loop {
            let got = fetch_once(&c, 10, Duration::from_millis(500)).await?;
            if !got.is_empty() {
                break got;
            }
            ensure!(
                Instant::now() < deadline,
                "{name}: the nak'd packet did not come back within {delay:?} + 5 s"
            );
        };
        ensure!(
            naked.elapsed() >= delay.mul_f64(0.9),
            "{name}: back after {:?}, before the {delay:?} delay",
            naked.elapsed()
        );
        ensure!(
            again[0].id() == r.id && again[0].delivery_count >= 2,
            "{name}: redelivery {:?} count {}",
            again[0].id(),
            again[0].delivery_count
        );
        c.ack(&again).await.map_err(context("ack"))?;
    }
    Ok(())
}

/// fetch(max) never hands out more than max, across many streams, with the
/// native path (max ≥ streams) and the Lua path (max < streams).
async fn fetch_never_exceeds_max(url: String, prefix: Subject) -> CaseResult {
    let t = connect(&url, &prefix).await?;
    let subjects = 6;
    let per = 20;
    let packets: Vec<EncodedPacket> = (0..subjects * per)
        .map(|i| {
            EncodedPacket::readable(&packet(&format!("p{}", i % subjects), i), &prefix).unwrap()
        })
        .collect();
    t.deposit_encoded_batch(&packets)
        .await
        .map_err(context("batch"))?;
    for (name, max) in [("one", 1usize), ("four", 4), ("seven", 7), ("many", 50)] {
        let c = consumer_from_start(
            &t,
            name,
            &format!("{prefix}.hvac.*"),
            Duration::from_secs(60),
        )
        .await?;
        collect_in_order(&c, subjects * per, max, Duration::from_secs(30), |d| {
            Ok((d.subject().to_string(), seq_of(d)))
        })
        .await
        .map_err(|e| format!("max {max}: {e}"))?;
        let extra = fetch_once(&c, max, Duration::from_millis(200)).await?;
        ensure!(
            extra.is_empty(),
            "max {max}: {} extra deliveries",
            extra.len()
        );
    }
    Ok(())
}

/// A pattern consumer blocked in fetch wakes for a subject created after it
/// started, and a `new` consumer reads such a stream from its start.
async fn blocked_fetch_sees_new_subjects(url: String, prefix: Subject) -> CaseResult {
    let t = connect(&url, &prefix).await?;
    deposit(&t, &prefix, "old", 0).await?;
    let c = consumer_from_now(
        &t,
        "watcher",
        &format!("{prefix}.>"),
        Duration::from_secs(60),
    )
    .await?;
    let t2 = connect(&url, &prefix).await?;
    let p2 = prefix.clone();
    let started = Instant::now();
    let later = tokio::spawn(async move {
        // Deposit once the fetch below is (very likely) blocked.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = deposit(&t2, &p2, "brand-new", 1).await?;
        let b = deposit(&t2, &p2, "brand-new", 2).await?;
        Ok::<_, String>((a, b))
    });
    let got = fetch_once(&c, 10, Duration::from_secs(8)).await?;
    let took = started.elapsed();
    let (a, _b) = later.await.map_err(context("join"))??;
    ensure!(
        !got.is_empty(),
        "the blocked fetch did not wake for a new subject within 8 s"
    );
    ensure!(
        got[0].id() == a.id,
        "start=new consumer got {:?} first, not the first packet of the new subject",
        seq_of(&got[0])
    );
    ensure!(
        took < Duration::from_secs(3),
        "the blocked fetch took {took:?} to see the new subject"
    );
    let mut all = got;
    while all.len() < 2 {
        let more = fetch_once(&c, 10, Duration::from_secs(3)).await?;
        ensure!(
            !more.is_empty(),
            "the second packet of the new subject never came"
        );
        all.extend(more);
    }
    ensure!(
        all.iter().all(|d| d.subject().ends_with("brand-new")),
        "start=new got history"
    );
    Ok(())
}

/// Entries without a body field, or with garbage, are skipped, counted and
/// acked away; the valid ones after them arrive.
async fn malformed_entries_are_acked_away(url: String, prefix: Subject) -> CaseResult {
    let t = connect(&url, &prefix).await?;
    let c = reader(&t, "sturdy", &prefix, Duration::from_millis(500)).await?;
    let good1 = deposit(&t, &prefix, "mixed", 1).await?;
    let subject = format!("{prefix}.hvac.mixed");
    let mut conn = raw(&url).await?;
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}:s:{subject}"))
        .arg("*")
        .arg("foo")
        .arg("bar")
        .query_async(&mut conn)
        .await
        .map_err(context("raw xadd"))?;
    t.inject_raw(&subject, &[0xff; 600])
        .await
        .map_err(context("raw"))?;
    t.inject_raw(&subject, b"{\"agent_id\": 5}")
        .await
        .map_err(context("raw"))?;
    let good2 = deposit(&t, &prefix, "mixed", 2).await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        ensure!(
            Instant::now() < deadline,
            "valid packets around garbage: got {} of 2",
            got.len()
        );
        let b = fetch_once(&c, 10, Duration::from_secs(1)).await?;
        c.ack(&b).await.map_err(context("ack"))?;
        got.extend(b);
    }
    ensure!(
        got[0].id() == good1.id && got[1].id() == good2.id,
        "valid packets out of order or wrong"
    );
    ensure!(
        c.malformed_skipped() == 3,
        "malformed_skipped() = {}, expected 3",
        c.malformed_skipped()
    );
    // Past the ack wait nothing comes back: the garbage was acked.
    let more = fetch_once(&c, 10, Duration::from_millis(1500)).await?;
    ensure!(more.is_empty(), "{} deliveries came back", more.len());
    let pending = pending(&mut conn, &format!("{prefix}:s:{subject}"), "sturdy").await?;
    ensure!(
        pending.is_empty(),
        "{} entries still pending",
        pending.len()
    );
    Ok(())
}

/// Streams are trimmed by length (MAXLEN ~) and by age (MINID ~).
async fn retention_trims_streams(url: String, prefix: Subject) -> CaseResult {
    let mut conn = raw(&url).await?;
    let cfg = RedisConfig::from_url(&url)
        .map_err(context("config"))?
        .prefix(prefix.clone());
    let by_len = RedisTransport::connect(cfg.clone().max_len(100))
        .await
        .map_err(context("connect"))?;
    deposit_seqs(&by_len, "behaviour", "hvac", "long", 0..1000).await?;
    let len: u64 = redis::cmd("XLEN")
        .arg(format!("{prefix}:s:{prefix}.hvac.long"))
        .query_async(&mut conn)
        .await
        .map_err(context("xlen"))?;
    ensure!(
        (100..=300).contains(&len),
        "max_len 100 kept {len} of 1000 entries"
    );

    let by_age = RedisTransport::connect(cfg.max_age(Duration::from_secs(1)))
        .await
        .map_err(context("connect"))?;
    deposit_seqs(&by_age, "behaviour", "hvac", "aging", 0..250).await?;
    // Keep depositing until the old entries are older than max_age and trimmed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 1000;
    loop {
        deposit(&by_age, &prefix, "aging", i).await?;
        i += 1;
        let len: u64 = redis::cmd("XLEN")
            .arg(format!("{prefix}:s:{prefix}.hvac.aging"))
            .query_async(&mut conn)
            .await
            .map_err(context("xlen"))?;
        if len < 150 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "entries older than max_age 1 s were not trimmed within 10 s ({len} left)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Re-opening a consumer name with another pattern is a Conflict; with the
/// same pattern it resumes.
async fn other_pattern_is_conflict(url: String, prefix: Subject) -> CaseResult {
    let t = connect(&url, &prefix).await?;
    open_consumer(&t, "named", &format!("{prefix}.hvac.a")).await?;
    let cfg = ConsumerConfig::new(
        "named",
        SubjectPattern::new(format!("{prefix}.hvac.b")).unwrap(),
    )
    .unwrap();
    match t.consumer(cfg).await {
        Err(err) => ensure!(
            err.kind() == ErrorKind::Conflict,
            "other pattern gave {err}"
        ),
        Ok(_) => return Err("re-opening with another pattern succeeded".into()),
    }
    let only_a = format!("{prefix}.hvac.a");
    consumer_from_now(&t, "named", &only_a, Duration::from_secs(30)).await?;
    Ok(())
}

/// User and password from the URL reach Redis (ACL user); a wrong password
/// is Unavailable with a message about the credentials.
async fn acl_user_from_url(url: String, prefix: Subject) -> CaseResult {
    let mut conn = raw(&url).await?;
    let user = format!("qis-{}", random_hex(4));
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">s3cret-pass")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut conn)
        .await
        .map_err(context("ACL SETUSER"))?;
    let result = async {
        let base = url::Url::parse(&RedisConfig::from_url(&url).map_err(context("config"))?.url)
            .map_err(context("url"))?;
        let mut good = base.clone();
        good.set_username(&user).map_err(|_| "set user")?;
        good.set_password(Some("s3cret-pass"))
            .map_err(|_| "set password")?;
        let t = connect(good.as_str(), &prefix).await?;
        deposit(&t, &prefix, "auth", 1).await?;
        let mut bad = good.clone();
        bad.set_password(Some("wrong"))
            .map_err(|_| "set password")?;
        let cfg = RedisConfig::from_url(bad.as_str())
            .map_err(context("config"))?
            .prefix(prefix.clone());
        match RedisTransport::connect(cfg).await {
            Err(err) => {
                ensure!(
                    err.kind() == ErrorKind::Unavailable,
                    "a wrong password gave {err}"
                );
                ensure!(
                    !err.to_string().contains("wrong"),
                    "the error shows the password: {err}"
                );
            }
            Ok(_) => return Err("a wrong password connected".into()),
        }
        Ok(())
    }
    .await;
    let _: redis::Value = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut conn)
        .await
        .map_err(context("ACL DELUSER"))?;
    result
}

/// Live subscribers see durable deposits and fire-and-forget publishes that
/// match exactly, although Redis globs cross dots.
async fn live_filters_glob_matches_exactly(url: String, prefix: Subject) -> CaseResult {
    use futures::StreamExt;
    let t = connect(&url, &prefix).await?;
    let mut sub = t
        .subscribe(SubjectPattern::new(format!("{prefix}.*.x")).unwrap())
        .await
        .map_err(context("subscribe"))?;
    // `{prefix}.*.x` as a glob also matches `{prefix}.hvac.deep.x`-like
    // channels; only `{prefix}.{one}.x` may arrive.
    let deep = EncodedPacket::new(
        &packet("x", 1),
        Subject::new(format!("{prefix}.hvac.y.x")).unwrap(),
    )
    .unwrap();
    t.deposit_encoded(&deep).await.map_err(context("deposit"))?;
    let want = EncodedPacket::new(
        &packet("x", 2),
        Subject::new(format!("{prefix}.hvac.x")).unwrap(),
    )
    .unwrap();
    t.publish_encoded(&want).await.map_err(context("publish"))?;
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(Ok(r))) => ensure!(
            r.id == want.id(),
            "live got {} instead of the matching packet",
            r.subject
        ),
        other => return Err(format!("live got {other:?}")),
    }
    Ok(())
}

/// A delivery acked or nak'd on a consumer handle that did not fetch it is
/// InvalidInput, and stays pending for the handle that did.
async fn ack_on_another_consumer_is_invalid_input(url: String, prefix: Subject) -> CaseResult {
    let t = connect(&url, &prefix).await?;
    let r = deposit(&t, &prefix, "owned", 1).await?;
    let pattern = format!("{prefix}.>");
    let wait = Duration::from_secs(30);
    let a = consumer_from_start(&t, "owner", &pattern, wait).await?;
    let same_name = consumer_from_start(&t, "owner", &pattern, wait).await?;
    let other = consumer_from_start(&t, "other", &pattern, wait).await?;
    let got = fetch_once(&a, 10, Duration::from_secs(5)).await?;
    ensure!(
        got.len() == 1 && got[0].id() == r.id,
        "fetch gave {} deliveries",
        got.len()
    );
    for (who, c) in [
        ("another handle of the same consumer", &same_name),
        ("another consumer", &other),
    ] {
        let what = format!("ack on {who}");
        refused(&what, ErrorKind::InvalidInput, c.ack(&got).await)?;
        let what = format!("nak on {who}");
        refused(
            &what,
            ErrorKind::InvalidInput,
            c.nak(&got[0], Duration::ZERO).await,
        )?;
    }
    let mut conn = raw(&url).await?;
    let pending = pending(
        &mut conn,
        &format!("{prefix}:s:{prefix}.hvac.owned"),
        "owner",
    )
    .await?;
    ensure!(
        pending.len() == 1,
        "the refused ack changed what is pending: {pending:?}"
    );
    a.ack(&got).await.map_err(context("ack"))?;
    Ok(())
}

async fn unreachable_server_is_unavailable() -> CaseResult {
    let cfg = RedisConfig::from_url("redis://127.0.0.1:1")
        .unwrap()
        .connect_timeout(Duration::from_millis(500));
    match RedisTransport::connect(cfg).await {
        Err(err) if err.kind() == ErrorKind::Unavailable || err.kind() == ErrorKind::Timeout => {
            Ok(())
        }
        Err(err) => Err(format!("unreachable server gave {err}")),
        Ok(_) => Err("connected to nothing".into()),
    }
}

async fn rediss_needs_the_tls_feature() -> CaseResult {
    let cfg = RedisConfig::from_url("rediss://127.0.0.1:1")
        .unwrap()
        .connect_timeout(Duration::from_millis(500));
    let err = RedisTransport::connect(cfg)
        .await
        .err()
        .ok_or("connected to nothing")?;
    if cfg!(feature = "tls") {
        // With TLS compiled in, the attempt reaches the network.
        ensure!(
            err.kind() != ErrorKind::Unsupported,
            "tls feature on, yet {err}"
        );
    } else {
        ensure!(
            err.kind() == ErrorKind::Unsupported,
            "rediss without the tls feature gave {err}"
        );
    }
    Ok(())
}

fn main() {
    let mut trials = vec![
        Trial::test("unreachable_server_is_unavailable", || {
            Ok(block_on(LIMIT, unreachable_server_is_unavailable())?)
        }),
        Trial::test("rediss_needs_the_tls_feature", || {
            Ok(block_on(LIMIT, rediss_needs_the_tls_feature())?)
        }),
    ];
    // The cases that need the server, each on a fresh prefix.
    trials.extend(live_trials!(
        ack_on_another_consumer_is_invalid_input,
        nak_delays_are_honoured,
        fetch_never_exceeds_max,
        blocked_fetch_sees_new_subjects,
        malformed_entries_are_acked_away,
        retention_trims_streams,
        other_pattern_is_conflict,
        acl_user_from_url,
        live_filters_glob_matches_exactly,
    ));
    qis_conformance::run_trials(trials);
}
