//! Redis-specific behaviour beyond the shared conformance suite, against the
//! server at `QIS_REDIS_URL` (`scripts/servers/redis.sh start DIR`). Without
//! it the cases are ignored with the reason (a failure with
//! `QIS_REQUIRE_LIVE=1`); the cases that need no server always run.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use qis_core::backend::InjectRaw;
use qis_core::{
    Checked, ConsumerConfig, Delivery, DurableConsumer, EncodedPacket, ErrorKind, OutcomePacket,
    OutcomeTransport, StartPosition, Subject, SubjectPattern,
};
use qis_transport_redis::{RedisConfig, RedisTransport};

const ENV: &str = "QIS_REDIS_URL";

type CaseResult = Result<(), String>;
type Case = fn(String, Subject) -> Pin<Box<dyn Future<Output = CaseResult> + Send>>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn e<E: std::fmt::Display>(ctx: &'static str) -> impl Fn(E) -> String {
    move |err| format!("{ctx}: {err}")
}

fn pkt(problem: &str, seq: usize) -> OutcomePacket {
    OutcomePacket {
        agent_id: format!("agent-{}", seq % 7),
        domain: "hvac".into(),
        problem_class: problem.into(),
        conclusion: format!("finding {seq}"),
        confidence: 0.5,
        context_vector: vec![0.1, 0.2],
        timestamp: 1_764_000_000.0 + seq as f64,
        source_node: "behaviour".into(),
    }
}

fn seq_of(d: &Delivery) -> usize {
    (d.packet().timestamp - 1_764_000_000.0) as usize
}

fn random_hex() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    format!(
        "{:08x}",
        (nanos ^ (std::process::id() as u64).rotate_left(17)) as u32
    )
}

async fn connect(url: &str, prefix: &Subject) -> Result<Checked<RedisTransport>, String> {
    let c = RedisConfig::from_url(url)
        .map_err(e("config"))?
        .prefix(prefix.clone());
    RedisTransport::connect(c).await.map_err(e("connect"))
}

async fn consumer(
    t: &Checked<RedisTransport>,
    name: &str,
    pattern: &str,
    start: StartPosition,
    ack_wait: Duration,
) -> Result<Arc<dyn DurableConsumer>, String> {
    let cfg = ConsumerConfig::new(name, SubjectPattern::new(pattern).map_err(e("pattern"))?)
        .map_err(e("config"))?
        .start(start)
        .ack_wait(ack_wait);
    t.consumer(cfg).await.map_err(e("consumer"))
}

async fn deposit(
    t: &Checked<RedisTransport>,
    prefix: &Subject,
    problem: &str,
    seq: usize,
) -> Result<qis_core::Receipt, String> {
    let p = EncodedPacket::readable(&pkt(problem, seq), prefix).map_err(e("encode"))?;
    t.deposit_encoded(&p).await.map_err(e("deposit"))
}

async fn raw(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let c = RedisConfig::from_url(url).map_err(e("config"))?;
    redis::Client::open(c.url.as_str())
        .map_err(e("client"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(e("raw connection"))
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
        let c = consumer(
            &t,
            name,
            &format!("{prefix}.>"),
            StartPosition::All,
            ack_wait,
        )
        .await?;
        let first = c
            .fetch(10, Duration::from_secs(5))
            .await
            .map_err(e("fetch"))?;
        ensure!(
            first.len() == 1 && first[0].id() == r.id,
            "{name}: first fetch gave {} deliveries",
            first.len()
        );
        let naked = Instant::now();
        c.nak(&first[0], delay).await.map_err(e("nak"))?;
        let early = c.fetch(10, delay.mul_f64(0.7)).await.map_err(e("fetch"))?;
        ensure!(
            early.is_empty(),
            "{name}: the nak'd packet came back after {:?}, before its {delay:?} delay",
            naked.elapsed()
        );
        let deadline = Instant::now() + delay + Duration::from_secs(5);
        let again = loop {
            let got = c
                .fetch(10, Duration::from_millis(500))
                .await
                .map_err(e("fetch"))?;
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
        c.ack(&again).await.map_err(e("ack"))?;
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
        .map(|i| EncodedPacket::readable(&pkt(&format!("p{}", i % subjects), i), &prefix).unwrap())
        .collect();
    t.deposit_encoded_batch(&packets)
        .await
        .map_err(e("batch"))?;
    for (name, max) in [("one", 1usize), ("four", 4), ("seven", 7), ("many", 50)] {
        let c = consumer(
            &t,
            name,
            &format!("{prefix}.hvac.*"),
            StartPosition::All,
            Duration::from_secs(60),
        )
        .await?;
        let mut seen = HashSet::new();
        let mut last: HashMap<String, usize> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < subjects * per {
            ensure!(
                Instant::now() < deadline,
                "max {max}: got {} of {} within 30 s",
                seen.len(),
                subjects * per
            );
            let got = c
                .fetch(max, Duration::from_secs(2))
                .await
                .map_err(e("fetch"))?;
            ensure!(got.len() <= max, "fetch({max}) returned {}", got.len());
            for d in &got {
                ensure!(seen.insert(d.id()), "max {max}: {} delivered twice", d.id());
                let s = seq_of(d);
                if let Some(prev) = last.insert(d.subject().to_string(), s) {
                    ensure!(
                        s > prev,
                        "max {max}: on {} {s} came after {prev}",
                        d.subject()
                    );
                }
            }
            c.ack(&got).await.map_err(e("ack"))?;
        }
        let extra = c
            .fetch(max, Duration::from_millis(200))
            .await
            .map_err(e("fetch"))?;
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
    let c = consumer(
        &t,
        "watcher",
        &format!("{prefix}.>"),
        StartPosition::New,
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
    let got = c
        .fetch(10, Duration::from_secs(8))
        .await
        .map_err(e("fetch"))?;
    let took = started.elapsed();
    let (a, _b) = later.await.map_err(e("join"))??;
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
        let more = c
            .fetch(10, Duration::from_secs(3))
            .await
            .map_err(e("fetch"))?;
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
    let c = consumer(
        &t,
        "sturdy",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_millis(500),
    )
    .await?;
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
        .map_err(e("raw xadd"))?;
    t.inject_raw(&subject, &[0xff; 600])
        .await
        .map_err(e("raw"))?;
    t.inject_raw(&subject, b"{\"agent_id\": 5}")
        .await
        .map_err(e("raw"))?;
    let good2 = deposit(&t, &prefix, "mixed", 2).await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        ensure!(
            Instant::now() < deadline,
            "valid packets around garbage: got {} of 2",
            got.len()
        );
        let b = c
            .fetch(10, Duration::from_secs(1))
            .await
            .map_err(e("fetch"))?;
        c.ack(&b).await.map_err(e("ack"))?;
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
    let more = c
        .fetch(10, Duration::from_millis(1500))
        .await
        .map_err(e("fetch"))?;
    ensure!(more.is_empty(), "{} deliveries came back", more.len());
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(format!("{prefix}:s:{subject}"))
        .arg("sturdy")
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut conn)
        .await
        .map_err(e("xpending"))?;
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
        .map_err(e("config"))?
        .prefix(prefix.clone());
    let by_len = RedisTransport::connect(cfg.clone().max_len(100))
        .await
        .map_err(e("connect"))?;
    let packets: Vec<EncodedPacket> = (0..1000)
        .map(|i| EncodedPacket::readable(&pkt("long", i), &prefix).unwrap())
        .collect();
    by_len
        .deposit_encoded_batch(&packets)
        .await
        .map_err(e("batch"))?;
    let len: u64 = redis::cmd("XLEN")
        .arg(format!("{prefix}:s:{prefix}.hvac.long"))
        .query_async(&mut conn)
        .await
        .map_err(e("xlen"))?;
    ensure!(
        (100..=300).contains(&len),
        "max_len 100 kept {len} of 1000 entries"
    );

    let by_age = RedisTransport::connect(cfg.max_age(Duration::from_secs(1)))
        .await
        .map_err(e("connect"))?;
    let old: Vec<EncodedPacket> = (0..250)
        .map(|i| EncodedPacket::readable(&pkt("aging", i), &prefix).unwrap())
        .collect();
    by_age
        .deposit_encoded_batch(&old)
        .await
        .map_err(e("batch"))?;
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
            .map_err(e("xlen"))?;
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

/// A re-deposit is a duplicate within the window and stored again after it.
async fn dedup_window_expires(url: String, prefix: Subject) -> CaseResult {
    let cfg = RedisConfig::from_url(&url)
        .map_err(e("config"))?
        .prefix(prefix.clone());
    let t = RedisTransport::connect(cfg.dedup_window(Duration::from_millis(300)))
        .await
        .map_err(e("connect"))?;
    let first = deposit(&t, &prefix, "dup", 1).await?;
    let again = deposit(&t, &prefix, "dup", 1).await?;
    ensure!(
        again.duplicate && again.position == first.position,
        "re-deposit within the window: {again:?}"
    );
    let batch: Vec<EncodedPacket> = (0..3)
        .map(|_| EncodedPacket::readable(&pkt("dup", 2), &prefix).unwrap())
        .collect();
    let rs = t.deposit_encoded_batch(&batch).await.map_err(e("batch"))?;
    ensure!(
        !rs[0].duplicate && rs[1].duplicate && rs[2].duplicate,
        "a packet repeated in one batch: {rs:?}"
    );
    ensure!(
        rs[1].position == rs[0].position,
        "duplicate in a batch points elsewhere"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = deposit(&t, &prefix, "dup", 1).await?;
        if !r.duplicate {
            ensure!(
                r.position != first.position,
                "a fresh store reused the old position"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "still a duplicate 10 s after a 300 ms window"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let none = RedisTransport::connect(
        RedisConfig::from_url(&url)
            .map_err(e("config"))?
            .prefix(prefix.clone())
            .dedup_window(Duration::ZERO),
    )
    .await
    .map_err(e("connect"))?;
    let a = deposit(&none, &prefix, "nodedup", 1).await?;
    let b = deposit(&none, &prefix, "nodedup", 1).await?;
    ensure!(
        !a.duplicate && !b.duplicate && a.position != b.position,
        "dedup_window 0 still de-duplicated"
    );
    Ok(())
}

/// Re-opening a consumer name with another pattern is a Conflict; with the
/// same pattern it resumes.
async fn other_pattern_is_conflict(url: String, prefix: Subject) -> CaseResult {
    let t = connect(&url, &prefix).await?;
    consumer(
        &t,
        "named",
        &format!("{prefix}.hvac.a"),
        StartPosition::All,
        Duration::from_secs(30),
    )
    .await?;
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
    consumer(
        &t,
        "named",
        &format!("{prefix}.hvac.a"),
        StartPosition::New,
        Duration::from_secs(30),
    )
    .await?;
    Ok(())
}

/// User and password from the URL reach Redis (ACL user); a wrong password
/// is Unavailable with a message about the credentials.
async fn acl_user_from_url(url: String, prefix: Subject) -> CaseResult {
    let mut conn = raw(&url).await?;
    let user = format!("qis-{}", random_hex());
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
        .map_err(e("ACL SETUSER"))?;
    let result = async {
        let base = url::Url::parse(&RedisConfig::from_url(&url).map_err(e("config"))?.url)
            .map_err(e("url"))?;
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
            .map_err(e("config"))?
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
        .map_err(e("ACL DELUSER"))?;
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
        .map_err(e("subscribe"))?;
    // `{prefix}.*.x` as a glob also matches `{prefix}.hvac.deep.x`-like
    // channels; only `{prefix}.{one}.x` may arrive.
    let deep = EncodedPacket::new(
        &pkt("x", 1),
        Subject::new(format!("{prefix}.hvac.y.x")).unwrap(),
    )
    .unwrap();
    t.deposit_encoded(&deep).await.map_err(e("deposit"))?;
    let want = EncodedPacket::new(
        &pkt("x", 2),
        Subject::new(format!("{prefix}.hvac.x")).unwrap(),
    )
    .unwrap();
    t.publish_encoded(&want).await.map_err(e("publish"))?;
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
    let a = consumer(&t, "owner", &pattern, StartPosition::All, wait).await?;
    let same_name = consumer(&t, "owner", &pattern, StartPosition::All, wait).await?;
    let other = consumer(&t, "other", &pattern, StartPosition::All, wait).await?;
    let got = a
        .fetch(10, Duration::from_secs(5))
        .await
        .map_err(e("fetch"))?;
    ensure!(
        got.len() == 1 && got[0].id() == r.id,
        "fetch gave {} deliveries",
        got.len()
    );
    for (who, c) in [
        ("another handle of the same consumer", &same_name),
        ("another consumer", &other),
    ] {
        match c.ack(&got).await {
            Err(err) => ensure!(
                err.kind() == ErrorKind::InvalidInput,
                "ack on {who} gave {err}"
            ),
            Ok(()) => return Err(format!("ack on {who} succeeded")),
        }
        match c.nak(&got[0], Duration::ZERO).await {
            Err(err) => ensure!(
                err.kind() == ErrorKind::InvalidInput,
                "nak on {who} gave {err}"
            ),
            Ok(()) => return Err(format!("nak on {who} succeeded")),
        }
    }
    let mut conn = raw(&url).await?;
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(format!("{prefix}:s:{prefix}.hvac.owned"))
        .arg("owner")
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut conn)
        .await
        .map_err(e("xpending"))?;
    ensure!(
        pending.len() == 1,
        "the refused ack changed what is pending: {pending:?}"
    );
    a.ack(&got).await.map_err(e("ack"))?;
    Ok(())
}

/// The backlog is the groups' lag and pending entries over the streams the
/// pattern matches, streams not discovered yet included; an entry deleted
/// from the middle (which leaves Redis without a lag) is counted by hand.
async fn backlog_sums_lag_and_pending(url: String, prefix: Subject) -> CaseResult {
    let t = connect(&url, &prefix).await?;
    let mut receipts = Vec::new();
    for i in 0..3 {
        receipts.push(deposit(&t, &prefix, "a", i).await?);
    }
    let c = consumer(
        &t,
        "c",
        &format!("{prefix}.hvac.*"),
        StartPosition::All,
        Duration::from_secs(30),
    )
    .await?;
    // A stream that appears after the consumer: its fetches have not found
    // it yet, the backlog does.
    for i in 3..5 {
        receipts.push(deposit(&t, &prefix, "b", i).await?);
    }
    let b = c.backlog().await.map_err(e("backlog"))?;
    ensure!((b.waiting, b.unacked) == (5, 0), "before any fetch: {b:?}");
    let got = c
        .fetch(2, Duration::from_secs(1))
        .await
        .map_err(e("fetch"))?;
    ensure!(got.len() == 2, "fetched {}", got.len());
    let b = c.backlog().await.map_err(e("backlog"))?;
    ensure!(
        (b.waiting, b.unacked) == (3, 2),
        "after a fetch of 2: {b:?}"
    );
    c.ack(&got[..1]).await.map_err(e("ack"))?;
    let b = c.backlog().await.map_err(e("backlog"))?;
    ensure!((b.waiting, b.unacked) == (3, 1), "after an ack of 1: {b:?}");

    // Delete a waiting entry (one not fetched) from a stream.
    let fetched: HashSet<_> = got.iter().map(|d| d.id()).collect();
    let victim = receipts
        .iter()
        .find(|r| !fetched.contains(&r.id))
        .ok_or("every packet was fetched")?;
    let qis_core::Position::StreamId { ms, seq } = victim.position else {
        return Err(format!("a Redis receipt without a stream id: {victim:?}"));
    };
    let mut raw = raw(&url).await?;
    let deleted: i64 = redis::cmd("XDEL")
        .arg(format!("{prefix}:s:{}", victim.subject))
        .arg(format!("{ms}-{seq}"))
        .query_async(&mut raw)
        .await
        .map_err(e("XDEL"))?;
    ensure!(deleted == 1, "XDEL deleted {deleted}");
    let b = c.backlog().await.map_err(e("backlog"))?;
    ensure!(
        (b.waiting, b.unacked) == (2, 1),
        "after deleting one waiting entry: {b:?}"
    );

    let d = consumer(
        &t,
        "d",
        &format!("{prefix}.hvac.a"),
        StartPosition::New,
        Duration::from_secs(30),
    )
    .await?;
    let b = d.backlog().await.map_err(e("backlog"))?;
    ensure!(b.total() == 0, "a consumer of new packets only: {b:?}");
    let listed = t.consumers().await.map_err(e("consumers"))?;
    let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    ensure!(names == ["c", "d"], "consumers: {listed:?}");
    ensure!(
        listed[0].pattern.as_deref() == Some(&*format!("{prefix}.hvac.*"))
            && listed[0].backlog == c.backlog().await.map_err(e("backlog"))?,
        "consumers: {listed:?}"
    );
    Ok(())
}

fn live_cases() -> Vec<(&'static str, Case)> {
    vec![
        ("backlog_sums_lag_and_pending", |u, p| {
            Box::pin(backlog_sums_lag_and_pending(u, p))
        }),
        ("ack_on_another_consumer_is_invalid_input", |u, p| {
            Box::pin(ack_on_another_consumer_is_invalid_input(u, p))
        }),
        ("nak_delays_are_honoured", |u, p| {
            Box::pin(nak_delays_are_honoured(u, p))
        }),
        ("fetch_never_exceeds_max", |u, p| {
            Box::pin(fetch_never_exceeds_max(u, p))
        }),
        ("blocked_fetch_sees_new_subjects", |u, p| {
            Box::pin(blocked_fetch_sees_new_subjects(u, p))
        }),
        ("malformed_entries_are_acked_away", |u, p| {
            Box::pin(malformed_entries_are_acked_away(u, p))
        }),
        ("retention_trims_streams", |u, p| {
            Box::pin(retention_trims_streams(u, p))
        }),
        ("dedup_window_expires", |u, p| {
            Box::pin(dedup_window_expires(u, p))
        }),
        ("other_pattern_is_conflict", |u, p| {
            Box::pin(other_pattern_is_conflict(u, p))
        }),
        ("acl_user_from_url", |u, p| {
            Box::pin(acl_user_from_url(u, p))
        }),
        ("live_filters_glob_matches_exactly", |u, p| {
            Box::pin(live_filters_glob_matches_exactly(u, p))
        }),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
    let args = Arguments::from_args();
    let require_live = std::env::var("QIS_REQUIRE_LIVE").is_ok_and(|v| v == "1");
    let url = std::env::var(ENV).ok();
    let mut trials = vec![
        Trial::test("unreachable_server_is_unavailable", || {
            runtime().block_on(async {
                let cfg = RedisConfig::from_url("redis://127.0.0.1:1")
                    .unwrap()
                    .connect_timeout(Duration::from_millis(500));
                match RedisTransport::connect(cfg).await {
                    Err(err)
                        if err.kind() == ErrorKind::Unavailable
                            || err.kind() == ErrorKind::Timeout =>
                    {
                        Ok(())
                    }
                    Err(err) => Err(Failed::from(format!("unreachable server gave {err}"))),
                    Ok(_) => Err(Failed::from("connected to nothing")),
                }
            })
        }),
        Trial::test("rediss_needs_the_tls_feature", || {
            runtime().block_on(async {
                let cfg = RedisConfig::from_url("rediss://127.0.0.1:1")
                    .unwrap()
                    .connect_timeout(Duration::from_millis(500));
                let err = RedisTransport::connect(cfg)
                    .await
                    .err()
                    .ok_or("connected to nothing")?;
                if cfg!(feature = "tls") {
                    // With TLS compiled in, the attempt reaches the network.
                    if err.kind() == ErrorKind::Unsupported {
                        return Err(Failed::from(format!("tls feature on, yet {err}")));
                    }
                } else if err.kind() != ErrorKind::Unsupported {
                    return Err(Failed::from(format!(
                        "rediss without the tls feature gave {err}"
                    )));
                }
                Ok(())
            })
        }),
    ];
    for (name, case) in live_cases() {
        let trial = match &url {
            Some(url) => {
                let url = url.clone();
                Trial::test(name, move || {
                    let prefix = Subject::new(format!("qb{}.iot", random_hex())).unwrap();
                    let p = prefix.clone();
                    runtime()
                        .block_on(async move {
                            tokio::time::timeout(Duration::from_secs(120), case(url, p))
                                .await
                                .unwrap_or_else(|_| Err("did not finish within 120 s".into()))
                        })
                        .map_err(|m| Failed::from(format!("[prefix {prefix}] {m}")))
                })
            }
            None if require_live => {
                Trial::test(name, || {
                    Err(Failed::from(format!("{ENV} is not set but QIS_REQUIRE_LIVE=1: scripts/servers/redis.sh start DIR")))
                })
            }
            None => {
                Trial::ignorable_test(name, || {
                    Ok(Completion::ignored_with(format!("{ENV} is not set: scripts/servers/redis.sh start DIR and source DIR/redis.env")))
                })
            }
        };
        trials.push(trial);
    }
    libtest_mimic::run(&args, trials).exit();
}
