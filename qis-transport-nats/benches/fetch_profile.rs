//! One side of the `nats` bench's fetch + ack, alone in its process, for an
//! instruction-count profile: the packets are deposited first, and only the
//! reading (fetch, decode, ack, QIS's `close`) runs inside
//! `fetch_profile::read_phase`, on a current-thread runtime so the
//! connection's own task runs in that call too.
//!
//! ```text
//! QIS_NATS_URL=nats://127.0.0.1:14222 QIS_PROFILE_SIDE=qis QIS_PROFILE_N=20000 \
//!   valgrind --tool=callgrind --toggle-collect='fetch_profile::read_phase' \
//!   target/release/deps/fetch_profile-<hash>
//! ```
//!
//! `QIS_PROFILE_SIDE` is `raw`, `rawdecode` or `qis` (what the `nats`
//! bench's three readers do); instructions per delivery are the collected
//! total over `QIS_PROFILE_N`. Without `QIS_PROFILE_SIDE` (as under a
//! plain `cargo bench`) it does nothing.

mod common;

use qis_conformance::support::bench::ProfileRun;
use qis_core::{ConsumerConfig, OutcomeTransport, SubjectPattern};

use common::{packets_on, qis_fetch_ack, raw_consumer, raw_fetch_ack, teardown, BenchResult};

/// What one process reads, made before the profiled part.
enum Reader {
    Raw {
        consumer: Box<async_nats::jetstream::consumer::PullConsumer>,
        decode: bool,
    },
    Qis(std::sync::Arc<dyn qis_core::DurableConsumer>),
}

async fn read(reader: &Reader, n: usize) -> BenchResult<()> {
    let mut got = 0;
    while got < n {
        got += match reader {
            Reader::Raw { consumer, decode } => raw_fetch_ack(consumer, *decode).await?,
            Reader::Qis(c) => qis_fetch_ack(c.as_ref()).await?,
        };
    }
    if let Reader::Qis(c) = reader {
        c.close().await?;
    }
    Ok(())
}

/// The profiled part: everything the runtime does while reading `n`.
#[inline(never)]
fn read_phase(rt: &tokio::runtime::Runtime, reader: &Reader, n: usize) -> BenchResult<()> {
    rt.block_on(read(reader, n))
}

fn main() -> BenchResult<()> {
    let Some(ProfileRun { url, side, n }) = ProfileRun::from_env("QIS_NATS_URL", 20_000) else {
        return Ok(());
    };
    let rt = ProfileRun::runtime()?;
    let (s, reader) = rt.block_on(async {
        let s = common::setup(&url, 1).await?;
        let ps = packets_on(&s.prefix, Some(&side), &format!("profile-{side}"), n);
        s.qis.deposit_encoded_batch(&ps).await?;
        let filter = format!("{}.{side}.>", s.prefix);
        let reader = match side.as_str() {
            "raw" | "rawdecode" => Reader::Raw {
                consumer: Box::new(raw_consumer(&s.raw, &s.stream, &side, &filter).await?),
                decode: side == "rawdecode",
            },
            "qis" => Reader::Qis(
                s.qis
                    .consumer(ConsumerConfig::new("qis", SubjectPattern::new(filter)?)?)
                    .await?,
            ),
            other => {
                return Err(format!("QIS_PROFILE_SIDE={other}: use raw, rawdecode or qis").into())
            }
        };
        BenchResult::Ok((s, reader))
    })?;
    read_phase(&rt, &reader, n)?;
    rt.block_on(teardown(s))?;
    eprintln!("fetch_profile: {side} read {n}");
    Ok(())
}
