//! Throughput of the Redis transport beside the raw `redis` crate doing the
//! same work in the same run:
//!
//! - batch deposit: `deposit_encoded_batch` (a Lua script per chunk: dedup
//!   marker, `XADD MAXLEN ~`, `XTRIM MINID ~`, index, `PUBLISH`) against
//!   pipelined `XADD MAXLEN ~` of the same bodies, many pipelines in flight;
//!   beside both, the floor of any scripted deposit: a Lua script that does
//!   nothing but those `XADD`s, in the transport's chunks (printed, not
//!   recorded: it shows what entering a script costs before the script does
//!   anything of its own);
//! - fetch + ack: a durable consumer's `fetch` + `ack` against `XREADGROUP` +
//!   `XACK` on the same streams; "raw + decode" also parses each body into
//!   an `OutcomePacket`, as any reader must (the transport does).
//!
//! Run: `scripts/servers/redis.sh start DIR && source DIR/redis.env && cargo bench -p qis-transport-redis`.
//! Prints packets/s and the ratio transport / raw (target ≥ 0.8).

// A bench reports on stdout.
#![allow(clippy::print_stdout)]

mod common;

use std::time::{Duration, Instant};

use qis_conformance::support::bench;
use qis_core::{
    Checked, ConsumerConfig, EncodedPacket, OutcomeTransport, StartPosition, Subject,
    SubjectPattern,
};
use qis_transport_redis::{RedisConfig, RedisTransport};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use common::{packets, qis_read_ack, raw_groups, raw_read_ack, raw_streams, BoxError, SUBJECTS};

const N: usize = 20_000;
const ROUNDS: usize = 7;
/// The transport's deposit chunk (`deposit.rs`), for the Lua floor.
const LUA_CHUNK: usize = 128;

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
    common::raw_deposit(conn, ns, packets, max_len).await?;
    Ok(start.elapsed())
}

/// Raw: XREADGROUP over the streams + XACK, until all are read, as
/// consumer group `group` (created first, untimed). With `decode`, each
/// entry's body is also parsed into an `OutcomePacket`, as any reader must
/// (the transport does).
async fn raw_fetch_ack(
    conn: &MultiplexedConnection,
    ns: &str,
    prefix: &Subject,
    group: &str,
    decode: bool,
) -> Result<Duration, BoxError> {
    let streams = raw_streams(ns, prefix);
    debug_assert_eq!(streams.len(), SUBJECTS);
    raw_groups(conn, &streams, group).await?;
    let start = Instant::now();
    raw_read_ack(conn, &streams, group, decode, N).await?;
    Ok(start.elapsed())
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
    qis_read_ack(c.as_ref(), N).await?;
    Ok(start.elapsed())
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
    let (mut dep_t, mut dep_r, mut dep_l) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fa_t, mut fa_r, mut fa_rd) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Transport and raw take turns on fresh namespaces with the same bodies.
        let prefix = Subject::new(format!("bench{tag}r{round}.iot"))?;
        let t = RedisTransport::connect(config.clone().prefix(prefix.clone())).await?;
        let ps = packets(&prefix, round, N);
        let raw_ns = format!("rawbench{tag}r{round}");
        let lua_ns = format!("luabench{tag}r{round}");
        let max_len = config.stream_max_len();

        // Alternate who goes first, so neither always meets a warmer server.
        // Raw and raw + decode read the same streams as two groups.
        let (d_raw, d_t, d_lua, f_raw, f_rawd, f_t);
        if round % 2 == 0 {
            d_raw = raw_deposit(&raw, &raw_ns, &ps, max_len).await?;
            d_t = transport_deposit(&t, &ps).await?;
            d_lua = common::lua_floor_deposit(&raw, &lua_ns, &ps, max_len, LUA_CHUNK).await?;
            f_raw = raw_fetch_ack(&raw, &raw_ns, &prefix, "g", false).await?;
            f_rawd = raw_fetch_ack(&raw, &raw_ns, &prefix, "gd", true).await?;
            f_t = transport_fetch_ack(&t, &prefix).await?;
        } else {
            d_lua = common::lua_floor_deposit(&raw, &lua_ns, &ps, max_len, LUA_CHUNK).await?;
            d_t = transport_deposit(&t, &ps).await?;
            d_raw = raw_deposit(&raw, &raw_ns, &ps, max_len).await?;
            f_t = transport_fetch_ack(&t, &prefix).await?;
            f_rawd = raw_fetch_ack(&raw, &raw_ns, &prefix, "gd", true).await?;
            f_raw = raw_fetch_ack(&raw, &raw_ns, &prefix, "g", false).await?;
        }
        t.close().await?;

        dep_r.push(rate(N, d_raw));
        dep_t.push(rate(N, d_t));
        dep_l.push(rate(N, d_lua));
        fa_r.push(rate(N, f_raw));
        fa_rd.push(rate(N, f_rawd));
        fa_t.push(rate(N, f_t));
        println!(
            "round {round}: deposit transport {:>9.0}/s raw {:>9.0}/s Lua floor {:>9.0}/s | fetch+ack transport {:>9.0}/s raw {:>9.0}/s raw+decode {:>9.0}/s",
            rate(N, d_t),
            rate(N, d_raw),
            rate(N, d_lua),
            rate(N, f_t),
            rate(N, f_raw),
            rate(N, f_rawd)
        );
        common::cleanup(&raw, &format!("{prefix}:*")).await?;
        common::cleanup(&raw, &format!("{raw_ns}:*")).await?;
        common::cleanup(&raw, &format!("{lua_ns}:*")).await?;
    }
    let ratio = |t: &[f64], r: &[f64]| median(t.iter().zip(r).map(|(t, r)| t / r).collect());
    let dep_ratio = ratio(&dep_t, &dep_r);
    let lua_ratio = ratio(&dep_l, &dep_r);
    let fa_ratio = ratio(&fa_t, &fa_r);
    let fad_ratio = ratio(&fa_t, &fa_rd);
    let (dt, dr, dl) = (median(dep_t), median(dep_r), median(dep_l));
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
    println!("                 a script of bare XADDs (the floor of any scripted deposit) {dl:>9.0}/s, ratio to raw {lua_ratio:.2}");
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
