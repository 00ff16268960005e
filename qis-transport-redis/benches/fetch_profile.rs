//! One side of the `redis` bench's fetch + ack, alone in its process, for
//! an instruction-count profile: the packets are deposited first, and only
//! the reading (fetch, decode, ack, QIS's `close`) runs inside
//! `fetch_profile::read_phase`, on a current-thread runtime so the
//! connection's own task runs in that call too.
//!
//! ```text
//! QIS_REDIS_URL=redis://127.0.0.1:6379 QIS_PROFILE_SIDE=qis QIS_PROFILE_N=20000 \
//!   valgrind --tool=callgrind --toggle-collect='fetch_profile::read_phase' \
//!   target/release/deps/fetch_profile-<hash>
//! ```
//!
//! `QIS_PROFILE_SIDE` is `raw`, `rawdecode` or `qis` (what the `redis`
//! bench's three readers do); instructions per delivery are the collected
//! total over `QIS_PROFILE_N`. Without `QIS_PROFILE_SIDE` (as under a
//! plain `cargo bench`) it does nothing.

mod common;

use std::sync::Arc;

use qis_conformance::support::bench::ProfileRun;
use qis_core::SubjectPattern;
use qis_core::{ConsumerConfig, DurableConsumer, OutcomeTransport, StartPosition, Subject};
use qis_transport_redis::{RedisConfig, RedisTransport};
use redis::aio::MultiplexedConnection;

use common::{packets, qis_read_ack, raw_groups, raw_read_ack, raw_streams, BoxError};

/// What one process reads, made before the profiled part.
enum Reader {
    Raw {
        conn: MultiplexedConnection,
        streams: Vec<String>,
        decode: bool,
    },
    Qis(Arc<dyn DurableConsumer>),
}

async fn read(reader: &Reader, n: usize) -> Result<(), BoxError> {
    match reader {
        Reader::Raw {
            conn,
            streams,
            decode,
        } => raw_read_ack(conn, streams, "g", *decode, n).await,
        Reader::Qis(c) => qis_read_ack(c.as_ref(), n).await,
    }
}

/// The profiled part: everything the runtime does while reading `n`.
#[inline(never)]
fn read_phase(rt: &tokio::runtime::Runtime, reader: &Reader, n: usize) -> Result<(), BoxError> {
    rt.block_on(read(reader, n))
}

fn main() -> Result<(), BoxError> {
    let Some(ProfileRun { url, side, n }) = ProfileRun::from_env("QIS_REDIS_URL", 20_000) else {
        return Ok(());
    };
    let rt = ProfileRun::runtime()?;
    let prefix = Subject::new(format!("profile{}.iot", std::process::id()))?;
    let raw_ns = format!("rawprofile{}", std::process::id());
    let (t, raw, reader) = rt.block_on(async {
        let config = RedisConfig::from_url(&url)?.prefix(prefix.clone());
        let raw = redis::Client::open(config.url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let t = RedisTransport::connect(config.clone()).await?;
        let ps = packets(&prefix, 0, n);
        let reader = match side.as_str() {
            "raw" | "rawdecode" => {
                common::raw_deposit(&raw, &raw_ns, &ps, config.stream_max_len()).await?;
                let streams = raw_streams(&raw_ns, &prefix);
                raw_groups(&raw, &streams, "g").await?;
                Reader::Raw {
                    conn: raw.clone(),
                    streams,
                    decode: side == "rawdecode",
                }
            }
            "qis" => {
                t.deposit_encoded_batch(&ps).await?;
                let pattern = SubjectPattern::new(format!("{prefix}.hvac.*"))?;
                Reader::Qis(
                    t.consumer(ConsumerConfig::new("qis", pattern)?.start(StartPosition::All))
                        .await?,
                )
            }
            other => {
                return Err(format!("QIS_PROFILE_SIDE={other}: use raw, rawdecode or qis").into())
            }
        };
        Ok::<_, BoxError>((t, raw, reader))
    })?;
    read_phase(&rt, &reader, n)?;
    rt.block_on(async {
        t.close().await?;
        common::cleanup(&raw, &format!("{prefix}:*")).await?;
        common::cleanup(&raw, &format!("{raw_ns}:*")).await
    })?;
    eprintln!("fetch_profile: {side} read {n}");
    Ok(())
}
