//! Throughput of the Redis transport beside the raw `redis` crate doing the
//! same work in the same run:
//!
//! - batch deposit: `deposit_encoded_batch` (a Lua script per chunk: dedup
//!   marker, `XADD MAXLEN ~`, `XTRIM MINID ~`, index, `PUBLISH`) against
//!   pipelined `XADD MAXLEN ~` of the same bodies, many pipelines in flight;
//! - fetch + ack: a durable consumer's `fetch` + `ack` against `XREADGROUP` +
//!   `XACK` on the same streams; "raw + decode" also parses each body into
//!   an `OutcomePacket`, as any reader must (the transport does).
//!
//! Run: `scripts/servers/redis.sh start DIR && source DIR/redis.env && cargo bench -p qis-transport-redis`.
//! Prints packets/s and the ratio transport / raw (target ≥ 0.8).

// A bench reports on stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use qis_conformance::support::bench;
use qis_core::{
    Checked, ConsumerConfig, EncodedPacket, OutcomePacket, OutcomeTransport, StartPosition,
    Subject, SubjectPattern,
};
use qis_transport_redis::{RedisConfig, RedisTransport};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

const N: usize = 20_000;
const ROUNDS: usize = 7;
const SUBJECTS: usize = 4;
const CHUNK: usize = 64;
const FETCH: usize = 500;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn packets(prefix: &Subject, round: usize) -> Vec<EncodedPacket> {
    (0..N)
        .map(|i| {
            let p = OutcomePacket {
                agent_id: format!("bench-agent-{}", i % 97),
                domain: "hvac".into(),
                problem_class: format!("class-{}", i % SUBJECTS),
                conclusion: format!(
                    "Compressor draw {}% above baseline (round {round}).",
                    i % 40
                ),
                confidence: 0.87,
                context_vector: vec![0.18, 0.92, 0.03, 0.71, 0.5, 0.25],
                timestamp: 1_764_000_000.0 + i as f64,
                source_node: "bench-node".into(),
            };
            EncodedPacket::readable(&p, prefix).expect("valid packet")
        })
        .collect()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Raw: pipelined XADD, one pipeline per chunk, all in flight.
async fn raw_deposit(
    conn: &MultiplexedConnection,
    ns: &str,
    packets: &[EncodedPacket],
    max_len: u64,
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let futs = packets.chunks(CHUNK).map(|chunk| {
        let mut conn = conn.clone();
        let mut pipe = redis::pipe();
        for p in chunk {
            pipe.cmd("XADD")
                .arg(format!("{ns}:{}", p.subject()))
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg("*")
                .arg("id")
                .arg(p.id().to_hex())
                .arg("body")
                .arg(p.body().as_ref());
        }
        async move { pipe.query_async::<Vec<String>>(&mut conn).await }
    });
    let ids: Vec<Vec<String>> = try_join_all(futs).await?;
    let n: usize = ids.iter().map(Vec::len).sum();
    assert_eq!(n, packets.len());
    Ok(start.elapsed())
}

/// Raw: XREADGROUP over the streams + XACK, until all are read, as
/// consumer group `group`. With `decode`, each entry's body is also parsed
/// into an `OutcomePacket`, as any reader must (the transport does).
async fn raw_fetch_ack(
    conn: &MultiplexedConnection,
    ns: &str,
    prefix: &Subject,
    group: &str,
    decode: bool,
) -> Result<Duration, BoxError> {
    let mut conn = conn.clone();
    let streams: Vec<String> = (0..SUBJECTS)
        .map(|i| format!("{ns}:{prefix}.hvac.class-{i}"))
        .collect();
    for s in &streams {
        let _: Value = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(s)
            .arg(group)
            .arg("0")
            .query_async(&mut conn)
            .await?;
    }
    let start = Instant::now();
    let mut got = 0;
    while got < N {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg("c")
            .arg("COUNT")
            .arg(FETCH / SUBJECTS)
            .arg("STREAMS");
        for s in &streams {
            cmd.arg(s);
        }
        for _ in &streams {
            cmd.arg(">");
        }
        let reply: Value = cmd.query_async(&mut conn).await?;
        let Value::Array(per_stream) = reply else {
            return Err(format!("raw read stopped at {got} of {N}").into());
        };
        let mut pipe = redis::pipe();
        for s in per_stream {
            let Value::Array(mut kv) = s else { continue };
            let Some(Value::Array(entries)) = kv.pop() else {
                continue;
            };
            let Some(Value::BulkString(key)) = kv.pop() else {
                continue;
            };
            let ids: Vec<Vec<u8>> = entries
                .into_iter()
                .filter_map(|e| match e {
                    Value::Array(mut parts) if parts.len() == 2 => {
                        if decode {
                            decode_body(&parts[1]);
                        }
                        match parts.swap_remove(0) {
                            Value::BulkString(id) => Some(id),
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect();
            got += ids.len();
            if !ids.is_empty() {
                pipe.cmd("XACK").arg(key).arg(group).arg(ids).ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(start.elapsed())
}

/// Parse the `body` field of a stream entry's fields into a packet.
fn decode_body(fields: &Value) {
    let Value::Array(kv) = fields else {
        panic!("entry fields are not an array: {fields:?}")
    };
    let body = kv
        .chunks(2)
        .find_map(|pair| match pair {
            [Value::BulkString(k), Value::BulkString(v)] if k == b"body" => Some(v),
            _ => None,
        })
        .expect("entry has a body field");
    std::hint::black_box(OutcomePacket::decode(body).expect("a valid packet"));
}

async fn transport_deposit(
    t: &Checked<RedisTransport>,
    packets: &[EncodedPacket],
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let receipts = t.deposit_encoded_batch(packets).await?;
    assert_eq!(receipts.len(), packets.len());
    Ok(start.elapsed())
}

async fn transport_fetch_ack(
    t: &Checked<RedisTransport>,
    prefix: &Subject,
) -> Result<Duration, BoxError> {
    let pattern = SubjectPattern::new(format!("{prefix}.hvac.*"))?;
    let c = t
        .consumer(ConsumerConfig::new("bench", pattern)?.start(StartPosition::All))
        .await?;
    let start = Instant::now();
    let mut got = 0;
    while got < N {
        let batch = c.fetch(FETCH, Duration::from_secs(2)).await?;
        if batch.is_empty() {
            return Err(format!("transport fetch stopped at {got} of {N}").into());
        }
        c.ack(&batch).await?;
        got += batch.len();
    }
    c.close().await?;
    Ok(start.elapsed())
}

async fn cleanup(conn: &MultiplexedConnection, pattern: &str) -> Result<(), BoxError> {
    let mut conn = conn.clone();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: Value = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn bench(url: &str) -> Result<(), BoxError> {
    let config = RedisConfig::from_url(url)?;
    let client = redis::Client::open(config.url.as_str())?;
    let raw = client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    let tag: u32 = std::process::id();
    let (mut dep_t, mut dep_r) = (Vec::new(), Vec::new());
    let (mut fa_t, mut fa_r, mut fa_rd) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Transport and raw take turns on fresh namespaces with the same bodies.
        let prefix = Subject::new(format!("bench{tag}r{round}.iot"))?;
        let t = RedisTransport::connect(config.clone().prefix(prefix.clone())).await?;
        let ps = packets(&prefix, round);
        let raw_ns = format!("rawbench{tag}r{round}");

        // Alternate who goes first, so neither always meets a warmer server.
        // Raw and raw + decode read the same streams as two groups.
        let (d_raw, d_t, f_raw, f_rawd, f_t);
        if round % 2 == 0 {
            d_raw = raw_deposit(&raw, &raw_ns, &ps, config.stream_max_len()).await?;
            d_t = transport_deposit(&t, &ps).await?;
            f_raw = raw_fetch_ack(&raw, &raw_ns, &prefix, "g", false).await?;
            f_rawd = raw_fetch_ack(&raw, &raw_ns, &prefix, "gd", true).await?;
            f_t = transport_fetch_ack(&t, &prefix).await?;
        } else {
            d_t = transport_deposit(&t, &ps).await?;
            d_raw = raw_deposit(&raw, &raw_ns, &ps, config.stream_max_len()).await?;
            f_t = transport_fetch_ack(&t, &prefix).await?;
            f_rawd = raw_fetch_ack(&raw, &raw_ns, &prefix, "gd", true).await?;
            f_raw = raw_fetch_ack(&raw, &raw_ns, &prefix, "g", false).await?;
        }
        t.close().await?;

        dep_r.push(rate(N, d_raw));
        dep_t.push(rate(N, d_t));
        fa_r.push(rate(N, f_raw));
        fa_rd.push(rate(N, f_rawd));
        fa_t.push(rate(N, f_t));
        println!(
            "round {round}: deposit transport {:>9.0}/s raw {:>9.0}/s | fetch+ack transport {:>9.0}/s raw {:>9.0}/s raw+decode {:>9.0}/s",
            rate(N, d_t),
            rate(N, d_raw),
            rate(N, f_t),
            rate(N, f_raw),
            rate(N, f_rawd)
        );
        cleanup(&raw, &format!("{prefix}:*")).await?;
        cleanup(&raw, &format!("{raw_ns}:*")).await?;
    }
    let ratio = |t: &[f64], r: &[f64]| median(t.iter().zip(r).map(|(t, r)| t / r).collect());
    let dep_ratio = ratio(&dep_t, &dep_r);
    let fa_ratio = ratio(&fa_t, &fa_r);
    let fad_ratio = ratio(&fa_t, &fa_rd);
    let (dt, dr) = (median(dep_t), median(dep_r));
    let (ft, fr, frd) = (median(fa_t), median(fa_r), median(fa_rd));
    bench::record_ratio(
        "redis",
        "batch deposit",
        bench::RAW,
        dt,
        dr,
        dep_ratio,
        bench::PER_SECOND,
    );
    bench::record_ratio(
        "redis",
        "fetch + ack",
        bench::RAW,
        ft,
        fr,
        fa_ratio,
        bench::PER_SECOND,
    );
    bench::record_ratio(
        "redis",
        "fetch + ack",
        bench::RAW_DECODE,
        ft,
        frd,
        fad_ratio,
        bench::PER_SECOND,
    );
    println!("redis bench ({N} packets × {ROUNDS} rounds, medians; ratio = median of per-round transport / raw):");
    println!("  batch deposit: transport {dt:>9.0} packets/s, raw XADD pipeline {dr:>9.0}/s, ratio {dep_ratio:.2}");
    println!("  fetch + ack:   transport {ft:>9.0} packets/s, raw XREADGROUP+XACK {fr:>9.0}/s, ratio {fa_ratio:.2}; raw + decode {frd:>9.0}/s, ratio {fad_ratio:.2}");
    Ok(())
}

fn main() {
    bench::run_on_server(
        "QIS_REDIS_URL",
        "run scripts/servers/redis.sh start DIR and source DIR/redis.env",
        |url| async move {
            let started = Instant::now();
            bench(&url).await?;
            println!("  (whole bench {:.1} s)", started.elapsed().as_secs_f64());
            Ok::<_, BoxError>(())
        },
    );
}
