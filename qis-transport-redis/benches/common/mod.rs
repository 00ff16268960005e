//! What the `redis` bench and `fetch_profile` share: the packets, the raw
//! client's deposit and fetch + ack, and the transport's fetch + ack loop.

// Each bench uses some of it.
#![allow(dead_code)]

use std::time::Duration;

use futures::future::try_join_all;
use qis_core::{DurableConsumer, EncodedPacket, OutcomePacket, Subject};
use redis::aio::MultiplexedConnection;
use redis::Value;

pub const SUBJECTS: usize = 4;
pub const CHUNK: usize = 64;
pub const FETCH: usize = 500;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `n` packets over [`SUBJECTS`] subjects `{prefix}.hvac.class-{i}`.
pub fn packets(prefix: &Subject, round: usize, n: usize) -> Vec<EncodedPacket> {
    (0..n)
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

/// Raw: pipelined XADD to `{ns}:{subject}`, one pipeline per chunk, all in
/// flight.
pub async fn raw_deposit(
    conn: &MultiplexedConnection,
    ns: &str,
    packets: &[EncodedPacket],
    max_len: u64,
) -> Result<(), BoxError> {
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
    Ok(())
}

/// The floor of any deposit made by a Lua script: a script that does
/// nothing but the same `XADD`s, one call per chunk of `chunk` packets (the
/// transport's chunk size), all in flight. Whatever a scripted deposit adds
/// (de-duplication, trimming, the subject index) comes on top of this.
/// Returns the time the deposit took (the script is loaded first, untimed).
pub async fn lua_floor_deposit(
    conn: &MultiplexedConnection,
    ns: &str,
    packets: &[EncodedPacket],
    max_len: u64,
    chunk: usize,
) -> Result<Duration, BoxError> {
    let script = redis::Script::new(
        "for i = 1, #KEYS do redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', \
         'id', ARGV[2 * i], 'body', ARGV[2 * i + 1]) end return #KEYS",
    );
    script.load_async(&mut conn.clone()).await?;
    let start = std::time::Instant::now();
    let futs = packets.chunks(chunk).map(|chunk| {
        let mut conn = conn.clone();
        let mut inv = script.prepare_invoke();
        inv.arg(max_len);
        for p in chunk {
            inv.key(format!("{ns}:{}", p.subject()))
                .arg(p.id().to_hex())
                .arg(p.body().as_ref());
        }
        async move { inv.invoke_async::<usize>(&mut conn).await }
    });
    let n: usize = try_join_all(futs).await?.into_iter().sum();
    let took = start.elapsed();
    assert_eq!(n, packets.len());
    Ok(took)
}

/// The raw streams [`raw_deposit`] wrote the packets of `prefix` to.
pub fn raw_streams(ns: &str, prefix: &Subject) -> Vec<String> {
    (0..SUBJECTS)
        .map(|i| format!("{ns}:{prefix}.hvac.class-{i}"))
        .collect()
}

/// Raw: consumer group `group` on each stream, from the start.
pub async fn raw_groups(
    conn: &MultiplexedConnection,
    streams: &[String],
    group: &str,
) -> Result<(), BoxError> {
    let mut conn = conn.clone();
    for s in streams {
        let _: Value = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(s)
            .arg(group)
            .arg("0")
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}

/// Raw: XREADGROUP over the streams + XACK, until `n` are read, as
/// consumer group `group`. With `decode`, each entry's body is also parsed
/// into an `OutcomePacket`, as any reader must (the transport does).
pub async fn raw_read_ack(
    conn: &MultiplexedConnection,
    streams: &[String],
    group: &str,
    decode: bool,
    n: usize,
) -> Result<(), BoxError> {
    let mut conn = conn.clone();
    let mut got = 0;
    while got < n {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg("c")
            .arg("COUNT")
            .arg(FETCH / SUBJECTS)
            .arg("STREAMS");
        for s in streams {
            cmd.arg(s);
        }
        for _ in streams {
            cmd.arg(">");
        }
        let reply: Value = cmd.query_async(&mut conn).await?;
        let Value::Array(per_stream) = reply else {
            return Err(format!("raw read stopped at {got} of {n}").into());
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
    Ok(())
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

/// The transport: fetch up to [`FETCH`] and ack them, until `n` are read;
/// then close the consumer.
pub async fn qis_read_ack(c: &dyn DurableConsumer, n: usize) -> Result<(), BoxError> {
    let mut got = 0;
    while got < n {
        let batch = c.fetch(FETCH, Duration::from_secs(2)).await?;
        if batch.is_empty() {
            return Err(format!("transport fetch stopped at {got} of {n}").into());
        }
        c.ack(&batch).await?;
        got += batch.len();
    }
    c.close().await?;
    Ok(())
}

/// Delete the keys matching `pattern`.
pub async fn cleanup(conn: &MultiplexedConnection, pattern: &str) -> Result<(), BoxError> {
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
