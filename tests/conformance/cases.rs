//! The shared cases. Each takes a backend and a fresh random prefix, and
//! returns `Err(message)` saying what did not happen.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use qis::{
    deliveries, Capabilities, ConsumerConfig, Delivery, DurableConsumer, DynTransport,
    EncodedPacket, ErrorKind, LiveSubscription, OutcomePacket, OutcomeTransportExt, PacketId,
    Received, StartPosition, Subject, SubjectPattern,
};

use crate::harness::DynBackend;

type CaseResult = Result<(), String>;
type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// One shared case.
pub struct Case {
    pub name: &'static str,
    /// The capability the case needs and the backend lacks, if any.
    pub needs: fn(&Capabilities) -> Option<&'static str>,
    pub run: fn(DynBackend, Subject) -> CaseFuture,
}

macro_rules! case {
    ($name:ident) => {
        case!($name, |_c: &Capabilities| None)
    };
    ($name:ident, $needs:expr) => {
        Case {
            name: stringify!($name),
            needs: $needs,
            run: |b, p| Box::pin($name(b, p)),
        }
    };
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn need(flag: bool, name: &'static str) -> Option<&'static str> {
    (!flag).then_some(name)
}

pub fn all() -> Vec<Case> {
    vec![
        case!(deposit_returns_receipt),
        case!(redeposit_is_recognised, |c| need(c.dedup, "dedup")),
        case!(batch_deposit_keeps_order),
        case!(concurrent_depositors_nothing_lost_or_doubled),
        case!(one_publisher_order_per_subject),
        case!(consumer_resumes_by_name_after_last_ack),
        case!(unacked_delivery_comes_back_after_ack_wait),
        case!(nak_redelivers, |c| need(c.nak, "nak")),
        case!(wildcard_isolation_durable),
        case!(wildcard_isolation_live, |c| need(c.live, "live")),
        case!(start_all_receives_history_start_new_does_not),
        case!(start_since_time, |c| need(c.start_since, "start_since")),
        case!(invalid_packets_rejected_before_send),
        case!(garbage_is_skipped_durable),
        case!(garbage_is_skipped_live, |c| need(c.live, "live")),
        case!(live_subscription_receives_matching, |c| need(
            c.live, "live"
        )),
        case!(fire_and_forget_reaches_live_not_store, |c| {
            need(c.fire_and_forget, "fire_and_forget").or(need(c.live, "live"))
        }),
        case!(delivery_stream_is_continuous),
        case!(close_flushes_acks),
        case!(shared_consumer_splits_work, |c| need(
            c.shared_consumers,
            "shared_consumers"
        )),
    ]
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn e(context: &str) -> impl Fn(qis::Error) -> String + '_ {
    move |err| format!("{context}: {err}")
}

/// A valid packet; `seq` goes into the timestamp so order can be checked.
fn pkt(agent: &str, domain: &str, problem: &str, seq: usize) -> OutcomePacket {
    OutcomePacket {
        agent_id: agent.to_string(),
        domain: domain.to_string(),
        problem_class: problem.to_string(),
        conclusion: format!("finding {seq} of {agent}"),
        confidence: (seq % 100) as f64 / 100.0,
        context_vector: vec![0.18, 0.92, 0.03, 0.71],
        timestamp: 1_764_000_000.0 + seq as f64,
        source_node: "conformance".to_string(),
    }
}

fn seq_of(d: &Delivery) -> usize {
    (d.packet().timestamp - 1_764_000_000.0) as usize
}

async fn open(b: &DynBackend, prefix: &Subject) -> Result<DynTransport, String> {
    b.open(prefix).await.map_err(e("open transport"))
}

async fn consumer(
    t: &DynTransport,
    name: &str,
    pattern: &str,
    start: StartPosition,
    ack_wait: Duration,
) -> Result<Arc<dyn DurableConsumer>, String> {
    let pattern = SubjectPattern::new(pattern).map_err(e("pattern"))?;
    let cfg = ConsumerConfig::new(name, pattern)
        .map_err(e("consumer config"))?
        .start(start)
        .ack_wait(ack_wait);
    t.consumer(cfg).await.map_err(e("open consumer"))
}

/// Fetch (and ack, if asked) until `n` deliveries arrived or `within` passed.
async fn collect(
    c: &Arc<dyn DurableConsumer>,
    n: usize,
    within: Duration,
    ack: bool,
) -> Result<Vec<Delivery>, String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "consumer {} received {} of {n} expected packets within {within:?}",
                c.name(),
                out.len()
            ));
        }
        let batch = c
            .fetch((n - out.len()).min(500), left.min(Duration::from_secs(2)))
            .await
            .map_err(e("fetch"))?;
        if ack && !batch.is_empty() {
            c.ack(&batch).await.map_err(e("ack"))?;
        }
        out.extend(batch);
    }
    Ok(out)
}

/// Fetch for `window` and return whatever arrived (acking it).
async fn quiet(c: &Arc<dyn DurableConsumer>, window: Duration) -> Result<Vec<Delivery>, String> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(out);
        }
        let batch = c.fetch(100, left).await.map_err(e("fetch"))?;
        if !batch.is_empty() {
            c.ack(&batch).await.map_err(e("ack"))?;
        }
        out.extend(batch);
    }
}

/// The next live packet within `within`: `None` if nothing arrived, `Err` if
/// the stream failed or ended.
async fn next_live(
    sub: &mut LiveSubscription,
    within: Duration,
) -> Result<Option<Received>, String> {
    match tokio::time::timeout(within, sub.next()).await {
        Ok(Some(Ok(r))) => Ok(Some(r)),
        Ok(Some(Err(err))) => Err(format!("live stream error: {err}")),
        Ok(None) => Err("live stream ended".into()),
        Err(_) => Ok(None),
    }
}

fn ids(ds: &[Delivery]) -> Vec<PacketId> {
    ds.iter().map(|d| d.id()).collect()
}

fn assert_unique(ds: &[Delivery], what: &str) -> CaseResult {
    let mut seen = HashSet::new();
    for d in ds {
        ensure!(
            seen.insert(d.id()),
            "{what}: packet {} on {} was delivered twice",
            d.id(),
            d.subject()
        );
    }
    Ok(())
}

async fn deposit_returns_receipt(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let p = pkt("agent-a", "hvac", "energy-anomaly", 1);
    let r = t.deposit(&p).await.map_err(e("deposit"))?;
    let expected = EncodedPacket::readable(&p, &prefix).unwrap();
    ensure!(
        r.subject.as_str() == format!("{prefix}.hvac.energy-anomaly"),
        "receipt subject {} is not the readable subject",
        r.subject
    );
    ensure!(
        r.id == expected.id(),
        "receipt id is not the SHA-256 of the body"
    );
    ensure!(!r.duplicate, "a first deposit was reported as a duplicate");
    let c = consumer(
        &t,
        "reader",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(30),
    )
    .await?;
    let got = collect(&c, 1, Duration::from_secs(10), true).await?;
    ensure!(
        got[0].id() == r.id,
        "fetched a different packet id than deposited"
    );
    ensure!(
        got[0].packet() == &p,
        "fetched packet differs from the deposited one"
    );
    ensure!(
        got[0].subject() == r.subject.as_str(),
        "fetched subject differs"
    );
    ensure!(
        got[0].position == r.position,
        "fetched position {} differs from receipt {}",
        got[0].position,
        r.position
    );
    ensure!(
        got[0].delivery_count == 1,
        "first delivery has count {}",
        got[0].delivery_count
    );
    t.close().await.map_err(e("close"))
}

async fn redeposit_is_recognised(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let p = pkt("agent-a", "hvac", "energy-anomaly", 1);
    let first = t.deposit(&p).await.map_err(e("deposit"))?;
    let again = t.deposit(&p).await.map_err(e("re-deposit"))?;
    ensure!(
        again.duplicate,
        "an identical re-deposit was not recognised as a duplicate"
    );
    ensure!(again.id == first.id, "re-deposit changed the id");
    let sentinel = t
        .deposit(&pkt("agent-b", "hvac", "energy-anomaly", 2))
        .await
        .map_err(e("deposit"))?;
    let c = consumer(
        &t,
        "reader",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(30),
    )
    .await?;
    let got = collect(&c, 2, Duration::from_secs(10), true).await?;
    ensure!(
        ids(&got) == vec![first.id, sentinel.id],
        "expected the packet once then the sentinel, got {:?}",
        ids(&got)
    );
    Ok(())
}

async fn batch_deposit_keeps_order(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let packets: Vec<_> = (0..500)
        .map(|i| pkt("batcher", "hvac", "energy-anomaly", i))
        .collect();
    let receipts = t
        .deposit_batch(&packets)
        .await
        .map_err(e("batch deposit"))?;
    ensure!(
        receipts.len() == 500,
        "batch of 500 gave {} receipts",
        receipts.len()
    );
    for (p, r) in packets.iter().zip(&receipts) {
        let id = EncodedPacket::readable(p, &prefix).unwrap().id();
        ensure!(r.id == id, "receipts are not in input order");
        ensure!(!r.duplicate, "a fresh packet was reported duplicate");
    }
    let c = consumer(
        &t,
        "reader",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&c, 500, Duration::from_secs(30), true).await?;
    let seqs: Vec<usize> = got.iter().map(seq_of).collect();
    ensure!(
        seqs == (0..500).collect::<Vec<_>>(),
        "batch came back out of order: {:?}…",
        &seqs[..20.min(seqs.len())]
    );
    Ok(())
}

async fn concurrent_depositors_nothing_lost_or_doubled(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut tasks = Vec::new();
    for w in 0..50 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let problem = [
                "energy-anomaly",
                "refrigerant-loss",
                "bearing-wear",
                "voltage-sag",
                "co2-spike",
            ][w % 5];
            let mut ids = Vec::with_capacity(100);
            for i in 0..100 {
                let r = t
                    .deposit(&pkt(&format!("agent-{w}"), "fleet", problem, i))
                    .await?;
                ids.push(r.id);
            }
            Ok::<_, qis::Error>(ids)
        }));
    }
    let mut expected = HashSet::new();
    for task in tasks {
        for id in task
            .await
            .map_err(|e| format!("depositor task: {e}"))?
            .map_err(e("concurrent deposit"))?
        {
            expected.insert(id);
        }
    }
    ensure!(
        expected.len() == 5000,
        "50 × 100 deposits gave {} distinct ids",
        expected.len()
    );
    let c = consumer(
        &t,
        "reader",
        &format!("{prefix}.fleet.*"),
        StartPosition::All,
        Duration::from_secs(120),
    )
    .await?;
    let got = collect(&c, 5000, Duration::from_secs(60), true).await?;
    assert_unique(&got, "concurrent depositors")?;
    let got_ids: HashSet<_> = ids(&got).into_iter().collect();
    ensure!(got_ids == expected, "fetched ids differ from deposited ids");
    let extra = quiet(&c, Duration::from_millis(500)).await?;
    ensure!(
        extra.is_empty(),
        "{} packets arrived beyond the 5000 deposited",
        extra.len()
    );
    Ok(())
}

async fn one_publisher_order_per_subject(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    // 1,000 packets from one publisher over two subjects: 200 one by one,
    // then 800 in batches of 100.
    let packets: Vec<_> = (0..1000)
        .map(|i| {
            pkt(
                "publisher",
                "hvac",
                if i % 2 == 0 {
                    "energy-anomaly"
                } else {
                    "refrigerant-loss"
                },
                i,
            )
        })
        .collect();
    for p in &packets[..200] {
        t.deposit(p).await.map_err(e("deposit"))?;
    }
    for chunk in packets[200..].chunks(100) {
        t.deposit_batch(chunk).await.map_err(e("batch deposit"))?;
    }
    let c = consumer(
        &t,
        "reader",
        &format!("{prefix}.hvac.*"),
        StartPosition::All,
        Duration::from_secs(120),
    )
    .await?;
    let got = collect(&c, 1000, Duration::from_secs(60), true).await?;
    assert_unique(&got, "one publisher")?;
    let mut last: HashMap<String, usize> = HashMap::new();
    for d in &got {
        let s = seq_of(d);
        if let Some(&prev) = last.get(d.subject()) {
            ensure!(
                s > prev,
                "on {} packet {s} arrived after {prev}",
                d.subject()
            );
        }
        last.insert(d.subject().to_string(), s);
    }
    ensure!(last.len() == 2, "expected two subjects, saw {}", last.len());
    Ok(())
}

async fn consumer_resumes_by_name_after_last_ack(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let packets: Vec<_> = (0..20)
        .map(|i| pkt("device", "hvac", "energy-anomaly", i))
        .collect();
    t.deposit_batch(&packets).await.map_err(e("deposit"))?;
    let c = consumer(
        &t,
        "roamer",
        &format!("{prefix}.hvac.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let first = collect(&c, 10, Duration::from_secs(20), true).await?;
    c.close().await.map_err(e("close consumer"))?;
    t.close().await.map_err(e("close transport"))?;
    drop(c);
    drop(t);

    // Another "process": a new transport handle, the same consumer name.
    let t2 = open(&b, &prefix).await?;
    let c2 = consumer(
        &t2,
        "roamer",
        &format!("{prefix}.hvac.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let rest = collect(&c2, 10, Duration::from_secs(20), true).await?;
    let mut seqs: Vec<usize> = first.iter().chain(&rest).map(seq_of).collect();
    let before = seqs.clone();
    seqs.sort_unstable();
    ensure!(
        seqs == (0..20).collect::<Vec<_>>(),
        "after resume, got {before:?}: acked packets came back or some were skipped"
    );
    let extra = quiet(&c2, Duration::from_millis(500)).await?;
    ensure!(
        extra.is_empty(),
        "{} acked packets were delivered again after resume",
        extra.len()
    );
    Ok(())
}

async fn unacked_delivery_comes_back_after_ack_wait(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let r = t
        .deposit(&pkt("device", "hvac", "energy-anomaly", 1))
        .await
        .map_err(e("deposit"))?;
    let c = consumer(
        &t,
        "forgetful",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(1),
    )
    .await?;
    let first = collect(&c, 1, Duration::from_secs(10), false).await?;
    ensure!(first[0].id() == r.id, "fetched another packet");
    let started = Instant::now();
    let again = collect(&c, 1, Duration::from_secs(20), false)
        .await
        .map_err(|m| format!("the unacked packet was not redelivered: {m}"))?;
    ensure!(again[0].id() == r.id, "redelivered another packet");
    ensure!(
        again[0].delivery_count >= 2,
        "redelivery has delivery_count {}",
        again[0].delivery_count
    );
    ensure!(
        started.elapsed() >= Duration::from_millis(500),
        "redelivered after {:?}, well before the 1 s ack wait",
        started.elapsed()
    );
    c.ack(&again).await.map_err(e("ack"))?;
    let extra = quiet(&c, Duration::from_millis(2500)).await?;
    ensure!(extra.is_empty(), "an acked packet was delivered again");
    Ok(())
}

async fn nak_redelivers(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let r = t
        .deposit(&pkt("device", "hvac", "energy-anomaly", 1))
        .await
        .map_err(e("deposit"))?;
    let c = consumer(
        &t,
        "picky",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let first = collect(&c, 1, Duration::from_secs(10), false).await?;
    c.nak(&first[0], Duration::ZERO).await.map_err(e("nak"))?;
    let again = collect(&c, 1, Duration::from_secs(10), true)
        .await
        .map_err(|m| {
            format!("a nak'd packet was not redelivered well before its 60 s ack wait: {m}")
        })?;
    ensure!(again[0].id() == r.id, "redelivered another packet");
    ensure!(
        again[0].delivery_count >= 2,
        "redelivery has delivery_count {}",
        again[0].delivery_count
    );
    Ok(())
}

/// (pattern, subject, matches) rows of the subject vectors.
type VectorTable = Vec<(String, String, bool)>;

/// The vector subjects and patterns, moved under the test prefix.
fn vector_cases(prefix: &Subject) -> (Vec<Subject>, Vec<String>, VectorTable) {
    let root = prefix.tokens().next().unwrap().to_string();
    let text = include_str!("../../qis-core/tests/vectors/subjects.json");
    let v: serde_json::Value = serde_json::from_str(text).expect("subjects.json");
    let mv = |s: &str| {
        if s == "qis" {
            root.clone()
        } else if let Some(rest) = s.strip_prefix("qis.") {
            format!("{root}.{rest}")
        } else {
            s.to_string()
        }
    };
    let mut subjects = Vec::new();
    let mut patterns = Vec::new();
    let mut table = Vec::new();
    for m in v["matches"].as_array().unwrap() {
        let pattern = mv(m["pattern"].as_str().unwrap());
        let subject = mv(m["subject"].as_str().unwrap());
        table.push((
            pattern.clone(),
            subject.clone(),
            m["matches"].as_bool().unwrap(),
        ));
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
        let s = Subject::new(subject).unwrap();
        if s.as_str().len() > prefix.as_str().len()
            && prefix.contains(s.as_str())
            && !subjects.contains(&s)
        {
            subjects.push(s);
        }
    }
    (subjects, patterns, table)
}

async fn deposit_on(t: &DynTransport, subject: &Subject, i: usize) -> Result<qis::Receipt, String> {
    let p = pkt("isolation", "hvac", "energy-anomaly", i);
    let enc = EncodedPacket::new(&p, subject.clone()).map_err(e("encode"))?;
    t.deposit_encoded(&enc).await.map_err(e("deposit"))
}

fn check_isolation(
    pattern: &str,
    got: &HashSet<String>,
    subjects: &[Subject],
    table: &[(String, String, bool)],
) -> CaseResult {
    let p = SubjectPattern::new(pattern).unwrap();
    let expected: HashSet<String> = subjects
        .iter()
        .filter(|s| p.matches(s.as_str()))
        .map(|s| s.to_string())
        .collect();
    ensure!(
        got == &expected,
        "pattern {pattern}: received subjects {got:?}, expected {expected:?}"
    );
    for (tp, ts, m) in table {
        if tp == pattern && subjects.iter().any(|s| s.as_str() == ts) {
            ensure!(
                got.contains(ts) == *m,
                "vector ({tp}, {ts}) expects matches={m}"
            );
        }
    }
    Ok(())
}

async fn wildcard_isolation_durable(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let (subjects, patterns, table) = vector_cases(&prefix);
    let mut receipts = HashMap::new();
    for (i, s) in subjects.iter().enumerate() {
        receipts.insert(deposit_on(&t, s, i).await?.id, s.to_string());
    }
    let opened = futures::future::join_all(patterns.iter().enumerate().map(|(i, p)| {
        let t = t.clone();
        async move {
            consumer(
                &t,
                &format!("iso-{i}"),
                p,
                StartPosition::All,
                Duration::from_secs(60),
            )
            .await
        }
    }))
    .await;
    for (pattern, c) in patterns.iter().zip(opened) {
        let c = c?;
        let p = SubjectPattern::new(pattern.as_str()).unwrap();
        let n = subjects.iter().filter(|s| p.matches(s.as_str())).count();
        let mut got = collect(&c, n, Duration::from_secs(20), true).await?;
        got.extend(quiet(&c, Duration::from_millis(300)).await?);
        let got: HashSet<String> = got.iter().map(|d| d.subject().to_string()).collect();
        check_isolation(pattern, &got, &subjects, &table)?;
    }
    Ok(())
}

async fn wildcard_isolation_live(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let (subjects, patterns, table) = vector_cases(&prefix);
    let mut subs = Vec::new();
    for p in &patterns {
        subs.push(
            t.subscribe(SubjectPattern::new(p.as_str()).unwrap())
                .await
                .map_err(e("subscribe"))?,
        );
    }
    // A sentinel on a subject every pattern here matches is deposited last;
    // live order per subscription is not promised across subjects, so each
    // subscription reads until it has seen everything it should, then a short
    // while more for anything it should not.
    for (i, s) in subjects.iter().enumerate() {
        deposit_on(&t, s, i).await?;
    }
    for (pattern, mut sub) in patterns.iter().zip(subs) {
        let p = SubjectPattern::new(pattern.as_str()).unwrap();
        let n = subjects.iter().filter(|s| p.matches(s.as_str())).count();
        let mut got = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut count = 0;
        loop {
            let wait = if count >= n {
                Duration::from_millis(300)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match next_live(&mut sub, wait).await? {
                Some(r) => {
                    count += 1;
                    got.insert(r.subject.clone());
                }
                None if count >= n => break,
                None => {
                    return Err(format!(
                        "pattern {pattern}: {count} of {n} live packets arrived within 10 s"
                    ))
                }
            }
        }
        ensure!(
            count == n,
            "pattern {pattern}: {count} live packets, expected {n}"
        );
        check_isolation(pattern, &got, &subjects, &table)?;
    }
    Ok(())
}

async fn start_all_receives_history_start_new_does_not(
    b: DynBackend,
    prefix: Subject,
) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let history: Vec<_> = (0..3)
        .map(|i| pkt("old", "hvac", "energy-anomaly", i))
        .collect();
    t.deposit_batch(&history).await.map_err(e("deposit"))?;
    let all = consumer(
        &t,
        "historian",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let new = consumer(
        &t,
        "newcomer",
        &format!("{prefix}.>"),
        StartPosition::New,
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&all, 3, Duration::from_secs(10), true).await?;
    ensure!(
        got.iter().map(seq_of).collect::<Vec<_>>() == vec![0, 1, 2],
        "start=all did not receive the history in order"
    );
    let fresh = t
        .deposit(&pkt("new", "hvac", "energy-anomaly", 3))
        .await
        .map_err(e("deposit"))?;
    let got_new = collect(&new, 1, Duration::from_secs(10), true).await?;
    ensure!(
        got_new[0].id() == fresh.id,
        "start=new received history (seq {}) instead of the new packet",
        seq_of(&got_new[0])
    );
    let more = quiet(&new, Duration::from_millis(300)).await?;
    ensure!(
        more.is_empty(),
        "start=new received {} more packets",
        more.len()
    );
    let got_all = collect(&all, 1, Duration::from_secs(10), true).await?;
    ensure!(
        got_all[0].id() == fresh.id,
        "start=all did not receive the new packet"
    );
    Ok(())
}

async fn start_since_time(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let old: Vec<_> = (0..3)
        .map(|i| pkt("old", "hvac", "energy-anomaly", i))
        .collect();
    t.deposit_batch(&old).await.map_err(e("deposit"))?;
    // Separate the two groups on the clock (server timestamps may be in ms).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mark = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let newer: Vec<_> = (3..5)
        .map(|i| pkt("new", "hvac", "energy-anomaly", i))
        .collect();
    t.deposit_batch(&newer).await.map_err(e("deposit"))?;
    let c = consumer(
        &t,
        "since",
        &format!("{prefix}.>"),
        StartPosition::Since(mark),
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&c, 2, Duration::from_secs(10), true).await?;
    ensure!(
        got.iter().map(seq_of).collect::<Vec<_>>() == vec![3, 4],
        "start=since gave {:?}",
        got.iter().map(seq_of).collect::<Vec<_>>()
    );
    let more = quiet(&c, Duration::from_millis(300)).await?;
    ensure!(
        more.is_empty(),
        "start=since received {} packets from before the mark",
        more.len()
    );
    Ok(())
}

async fn invalid_packets_rejected_before_send(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut bad = pkt("device", "hvac", "energy-anomaly", 1);
    bad.confidence = 1.5;
    let err = t
        .deposit(&bad)
        .await
        .err()
        .ok_or("a confidence of 1.5 was accepted")?;
    ensure!(
        err.kind() == ErrorKind::InvalidPacket,
        "bad confidence gave {err}"
    );
    let mut big = pkt("device", "hvac", "energy-anomaly", 2);
    big.conclusion = "x".repeat(600);
    let err = t
        .deposit(&big)
        .await
        .err()
        .ok_or("a 600-byte conclusion was accepted")?;
    ensure!(
        err.kind() == ErrorKind::PacketTooLarge,
        "oversize gave {err}"
    );
    let mut bad_domain = pkt("device", "hvac", "energy-anomaly", 3);
    bad_domain.domain = "hvac.zone1".into();
    let err = t
        .deposit(&bad_domain)
        .await
        .err()
        .ok_or("a dotted domain was accepted")?;
    ensure!(
        err.kind() == ErrorKind::InvalidPacket || err.kind() == ErrorKind::InvalidSubject,
        "dotted domain gave {err}"
    );
    let outside = EncodedPacket::new(
        &pkt("device", "hvac", "energy-anomaly", 4),
        Subject::new("elsewhere.hvac.x").unwrap(),
    )
    .unwrap();
    let err = t
        .deposit_encoded(&outside)
        .await
        .err()
        .ok_or("a subject outside the prefix was accepted")?;
    ensure!(
        err.kind() == ErrorKind::InvalidSubject,
        "outside subject gave {err}"
    );
    let batch = vec![pkt("device", "hvac", "energy-anomaly", 5), bad.clone()];
    let err = t
        .deposit_batch(&batch)
        .await
        .err()
        .ok_or("a batch with a bad packet was accepted")?;
    ensure!(
        err.kind() == ErrorKind::InvalidPacket,
        "bad batch gave {err}"
    );

    let sentinel = t
        .deposit(&pkt("device", "hvac", "energy-anomaly", 6))
        .await
        .map_err(e("deposit"))?;
    let c = consumer(
        &t,
        "auditor",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&c, 1, Duration::from_secs(10), true).await?;
    ensure!(
        got[0].id() == sentinel.id,
        "something rejected was stored: seq {}",
        seq_of(&got[0])
    );
    let more = quiet(&c, Duration::from_millis(300)).await?;
    ensure!(
        more.is_empty(),
        "{} rejected packets were stored",
        more.len()
    );
    Ok(())
}

fn garbage() -> Vec<Vec<u8>> {
    let oversize = format!(
        "{{\"agent_id\": \"x\", \"domain\": \"hvac\", \"problem_class\": \"energy-anomaly\", \"conclusion\": \"{}\", \"confidence\": 0.5, \"context_vector\": [], \"timestamp\": 1.0, \"source_node\": \"n\"}}",
        "y".repeat(600)
    );
    vec![
        b"\x00\xff garbage".to_vec(),
        b"[1,2,3]".to_vec(),
        br#"{"agent_id": "x", "domain": "hvac", "problem_class": "energy-anomaly", "conclusion": "c", "confidence": 1.5, "context_vector": [], "timestamp": 1.0, "source_node": "n"}"#.to_vec(),
        oversize.into_bytes(),
    ]
}

async fn garbage_is_skipped_durable(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let subject = format!("{prefix}.hvac.energy-anomaly");
    let c = consumer(
        &t,
        "sturdy",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(1),
    )
    .await?;
    let a = t
        .deposit(&pkt("device", "hvac", "energy-anomaly", 1))
        .await
        .map_err(e("deposit"))?;
    for g in garbage() {
        b.inject_raw(&t, &subject, &g)
            .await
            .map_err(e("inject garbage"))?;
    }
    let rest: Vec<_> = (2..4)
        .map(|i| pkt("device", "hvac", "energy-anomaly", i))
        .collect();
    let rs = t.deposit_batch(&rest).await.map_err(e("deposit"))?;
    let got = collect(&c, 3, Duration::from_secs(15), true).await?;
    let want = vec![a.id, rs[0].id, rs[1].id];
    ensure!(
        ids(&got) == want,
        "expected the three valid packets in order around the garbage, got {:?}",
        ids(&got)
    );
    ensure!(
        c.malformed_skipped() >= 4,
        "malformed_skipped() is {}, expected ≥ 4",
        c.malformed_skipped()
    );
    // Garbage is not redelivered: wait past the 1 s ack wait.
    let more = quiet(&c, Duration::from_millis(2500)).await?;
    ensure!(
        more.is_empty(),
        "{} deliveries after the valid ones (garbage or acked packets came back)",
        more.len()
    );
    Ok(())
}

async fn garbage_is_skipped_live(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let subject = format!("{prefix}.hvac.energy-anomaly");
    let mut sub = t
        .subscribe(SubjectPattern::new(format!("{prefix}.>")).unwrap())
        .await
        .map_err(e("subscribe"))?;
    for g in garbage() {
        b.inject_raw(&t, &subject, &g)
            .await
            .map_err(e("inject garbage"))?;
    }
    let r = t
        .deposit(&pkt("device", "hvac", "energy-anomaly", 1))
        .await
        .map_err(e("deposit"))?;
    let got = next_live(&mut sub, Duration::from_secs(10))
        .await?
        .ok_or("the valid packet after the garbage did not arrive live within 10 s")?;
    ensure!(
        got.id == r.id,
        "live delivered something other than the valid packet: {:?}",
        got.packet
    );
    Ok(())
}

async fn live_subscription_receives_matching(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut sub = t
        .subscribe(SubjectPattern::new(format!("{prefix}.*.energy-anomaly")).unwrap())
        .await
        .map_err(e("subscribe"))?;
    let want1 = t
        .deposit(&pkt("a", "hvac", "energy-anomaly", 1))
        .await
        .map_err(e("deposit"))?;
    let other = t
        .deposit(&pkt("a", "hvac", "refrigerant-loss", 2))
        .await
        .map_err(e("deposit"))?;
    let want2 = t
        .deposit(&pkt("a", "power", "energy-anomaly", 3))
        .await
        .map_err(e("deposit"))?;
    let mut got = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = next_live(&mut sub, left).await?.ok_or_else(|| {
            format!(
                "{} of 2 matching packets arrived live within 10 s",
                got.len()
            )
        })?;
        ensure!(
            r.id != other.id,
            "live subscription received a non-matching subject {}",
            r.subject
        );
        got.insert(r.id);
    }
    ensure!(
        got == HashSet::from([want1.id, want2.id]),
        "live received other packets"
    );
    Ok(())
}

async fn fire_and_forget_reaches_live_not_store(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let mut sub = t
        .subscribe(SubjectPattern::new(format!("{prefix}.>")).unwrap())
        .await
        .map_err(e("subscribe"))?;
    let p = pkt("telemetry", "hvac", "energy-anomaly", 1);
    t.publish(&p).await.map_err(e("publish"))?;
    let r = next_live(&mut sub, Duration::from_secs(10))
        .await?
        .ok_or("a fire-and-forget packet did not arrive live within 10 s")?;
    ensure!(r.packet == p, "live received another packet");
    let sentinel = t
        .deposit(&pkt("durable", "hvac", "energy-anomaly", 2))
        .await
        .map_err(e("deposit"))?;
    let c = consumer(
        &t,
        "store-check",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&c, 1, Duration::from_secs(10), true).await?;
    ensure!(
        got[0].id() == sentinel.id,
        "a fire-and-forget packet was stored"
    );
    Ok(())
}

async fn delivery_stream_is_continuous(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let c = consumer(
        &t,
        "pusher",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let mut stream = deliveries(c.clone(), 10, Duration::from_millis(200));
    let producer = {
        let t = t.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                ids.push(
                    t.deposit(&pkt("streamer", "hvac", "energy-anomaly", i))
                        .await?
                        .id,
                );
            }
            Ok::<_, qis::Error>(ids)
        })
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 25 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(d))) => {
                c.ack(std::slice::from_ref(&d)).await.map_err(e("ack"))?;
                got.push(d.id());
            }
            Ok(Some(Err(err))) => return Err(format!("delivery stream error: {err}")),
            Ok(None) => return Err("delivery stream ended".into()),
            Err(_) => {
                return Err(format!(
                    "{} of 25 packets came through the delivery stream within 20 s",
                    got.len()
                ))
            }
        }
    }
    let sent = producer
        .await
        .map_err(|e| e.to_string())?
        .map_err(e("deposit"))?;
    ensure!(
        got == sent,
        "the delivery stream changed the order or the packets"
    );
    Ok(())
}

async fn close_flushes_acks(b: DynBackend, prefix: Subject) -> CaseResult {
    let t = open(&b, &prefix).await?;
    let packets: Vec<_> = (0..5)
        .map(|i| pkt("device", "hvac", "energy-anomaly", i))
        .collect();
    t.deposit_batch(&packets).await.map_err(e("deposit"))?;
    let c = consumer(
        &t,
        "closer",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    collect(&c, 5, Duration::from_secs(10), true).await?;
    c.close().await.map_err(e("close consumer"))?;
    t.close().await.map_err(e("close transport"))?;
    drop(c);
    drop(t);
    let t2 = open(&b, &prefix).await?;
    let sentinel = t2
        .deposit(&pkt("device", "hvac", "energy-anomaly", 5))
        .await
        .map_err(e("deposit"))?;
    let c2 = consumer(
        &t2,
        "closer",
        &format!("{prefix}.>"),
        StartPosition::All,
        Duration::from_secs(60),
    )
    .await?;
    let got = collect(&c2, 1, Duration::from_secs(10), true).await?;
    ensure!(
        got[0].id() == sentinel.id,
        "packet {} acked before close came back",
        seq_of(&got[0])
    );
    Ok(())
}

async fn shared_consumer_splits_work(b: DynBackend, prefix: Subject) -> CaseResult {
    let t1 = open(&b, &prefix).await?;
    let t2 = open(&b, &prefix).await?;
    let pattern = format!("{prefix}.>");
    let (c1, c2) = futures::future::join(
        consumer(
            &t1,
            "workers",
            &pattern,
            StartPosition::All,
            Duration::from_secs(60),
        ),
        consumer(
            &t2,
            "workers",
            &pattern,
            StartPosition::All,
            Duration::from_secs(60),
        ),
    )
    .await;
    let (c1, c2) = (c1?, c2?);
    let packets: Vec<_> = (0..200)
        .map(|i| pkt("producer", "hvac", "energy-anomaly", i))
        .collect();
    t1.deposit_batch(&packets).await.map_err(e("deposit"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < 200 && Instant::now() < deadline {
        let (a, b2) = futures::future::join(
            c1.fetch(50, Duration::from_millis(300)),
            c2.fetch(50, Duration::from_millis(300)),
        )
        .await;
        let (a, b2) = (a.map_err(e("fetch 1"))?, b2.map_err(e("fetch 2"))?);
        c1.ack(&a).await.map_err(e("ack 1"))?;
        c2.ack(&b2).await.map_err(e("ack 2"))?;
        got.extend(a);
        got.extend(b2);
    }
    ensure!(
        got.len() == 200,
        "two workers received {} of 200 packets within 30 s",
        got.len()
    );
    assert_unique(&got, "shared consumer")?;
    Ok(())
}
