//! One side of the `kafka` bench's fetch + ack, alone in its process, for
//! an instruction-count profile: the packets are deposited and the group
//! joined first; the reading (poll or fetch, decode, commit or ack) runs
//! inside `fetch_profile::read_phase`, on a current-thread runtime. QIS's
//! consumer also decodes on its poller thread, so collect that too:
//!
//! ```text
//! QIS_KAFKA_URL=kafka://127.0.0.1:9092 QIS_PROFILE_SIDE=qis QIS_PROFILE_N=30300 \
//!   valgrind --tool=callgrind --toggle-collect='fetch_profile::read_phase' \
//!   --toggle-collect='*poll_loop*' target/release/deps/fetch_profile-<hash>
//! ```
//!
//! `QIS_PROFILE_SIDE` is `raw`, `rawdecode` or `qis` (what the `kafka`
//! bench's three readers do); instructions per delivery are the collected
//! total over `QIS_PROFILE_N` (librdkafka's own threads are not counted, on
//! either side). Keep `QIS_PROFILE_N` off a multiple of 1,000: the raw
//! side's final commit then has nothing new, and librdkafka refuses it. Without `QIS_PROFILE_SIDE` (as under a plain `cargo
//! bench`) it does nothing.
#![allow(missing_docs, clippy::print_stdout)]

mod common;

use std::sync::Arc;

use qis_conformance::support::bench::ProfileRun;
use qis_core::{ConsumerConfig, DurableConsumer, OutcomeTransport, Subject, SubjectPattern};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};
use rdkafka::consumer::BaseConsumer;

use common::{packets, qis_consume, raw_member, raw_read};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one process reads, made before the profiled part.
enum Reader {
    Raw {
        consumer: Box<BaseConsumer>,
        first: usize,
        decode: bool,
    },
    Qis(Arc<dyn DurableConsumer>),
}

/// The profiled part: everything this thread does while reading `n`.
#[inline(never)]
fn read_phase(rt: &tokio::runtime::Runtime, reader: &Reader, n: usize) {
    match reader {
        Reader::Raw {
            consumer,
            first,
            decode,
        } => raw_read(consumer, *first, n, *decode),
        Reader::Qis(c) => {
            rt.block_on(qis_consume(c, n));
        }
    }
}

fn main() -> Result<(), BoxError> {
    let Some(ProfileRun { url, side, n }) = ProfileRun::from_env("QIS_KAFKA_URL", 30_300) else {
        return Ok(());
    };
    let rt = ProfileRun::runtime()?;
    let prefix = Subject::new(format!("qtprofile{:08x}.iot", rand::random::<u32>()))?;
    let config = KafkaConfig::from_url(&url)?.prefix(prefix.clone());
    let (t, reader) = rt.block_on(async {
        let t = KafkaTransport::connect(config.clone()).await?;
        for chunk in packets(&prefix, n).chunks(common::CHUNK) {
            t.deposit_encoded_batch(chunk).await?;
        }
        let topic = t.topic().to_string();
        let reader = match side.as_str() {
            "raw" | "rawdecode" => {
                let group = format!("{prefix}.raw-profile");
                let (consumer, first) =
                    tokio::task::spawn_blocking(move || raw_member(&config, &topic, &group))
                        .await?;
                Reader::Raw {
                    consumer: Box::new(consumer),
                    first,
                    decode: side == "rawdecode",
                }
            }
            "qis" => {
                let pattern = SubjectPattern::new(format!("{prefix}.>"))?;
                Reader::Qis(t.consumer(ConsumerConfig::new("profile", pattern)?).await?)
            }
            other => {
                return Err(format!("QIS_PROFILE_SIDE={other}: use raw, rawdecode or qis").into())
            }
        };
        Ok::<_, BoxError>((t, reader))
    })?;
    read_phase(&rt, &reader, n);
    rt.block_on(async {
        if let Reader::Qis(c) = &reader {
            c.close().await?;
        }
        t.close().await
    })?;
    eprintln!("fetch_profile: {side} read {n}");
    Ok(())
}
