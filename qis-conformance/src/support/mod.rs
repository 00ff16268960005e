//! What every QIS test needs, so no backend's tests write it again: packet
//! builders and fresh prefixes, bounded waits that say what did not happen,
//! `QIS_REQUIRE_LIVE` handling, runtimes and bounds, temporary directories
//! and TLS test certificates.
//!
//! Cases and tests return [`CaseResult`]: `Err` is a message a person can
//! act on ("consumer reader received 3 of 5 expected packets within 10s").
//! [`ensure!`](crate::ensure) and [`context`] keep them short:
//!
//! ```
//! use std::time::Duration;
//! use qis_conformance::ensure;
//! use qis_conformance::support::{collect, consumer, context, fresh_prefix, pkt, CaseResult};
//! use qis_core::{MemoryTransport, OutcomeTransportExt, StartPosition};
//!
//! async fn deposit_then_fetch() -> CaseResult {
//!     let prefix = fresh_prefix();
//!     let t = MemoryTransport::new(prefix.clone());
//!     let r = t.deposit(&pkt("agent-a", "hvac", "energy-anomaly", 1)).await.map_err(context("deposit"))?;
//!     let c = consumer(&t, "reader", &format!("{prefix}.>"), StartPosition::All, Duration::from_secs(30)).await?;
//!     let got = collect(&c, 1, Duration::from_secs(5)).await?;
//!     ensure!(got[0].id() == r.id, "fetched another packet than deposited");
//!     Ok(())
//! }
//! # qis_conformance::support::block_on(Duration::from_secs(10), deposit_then_fetch()).unwrap();
//! ```

mod availability;
pub mod bench;
mod bridge;
mod env_config;
mod files;
mod opened;
mod packet;
mod process;
mod run;
mod steps;
mod urls;
mod wait;

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use qis_core::{ConsumerConfig, DurableConsumer, OutcomeTransport, StartPosition, SubjectPattern};

pub use availability::{
    env_url, free_port, installed, require_live, tcp_reachable, trial, unavailable_trial,
    REQUIRE_LIVE,
};
pub use bridge::{quick_bridge, run_until_signal};
pub use env_config::EnvConfig;
pub use files::{tls_test_certs, TempDir, TestCerts};
pub use opened::ByPrefix;
pub use packet::{
    assert_unique, fresh_prefix, ids, pkt, random_hex, seq_of, InOrder, BASE_TIMESTAMP,
};
pub use process::{await_port, forward_lines, log_tail, run_ok, signal, spawn_server, stop_child};
pub use run::{block_on, init_tracing, runtime, unblock, with_fresh_prefix};
pub use steps::{
    consumer_from_now, consumer_from_start, deposit_one, deposit_seqs, fetch_once, inject_once,
    next_is, nothing_more, open_consumer, reader, refused, subscribe,
};
pub use urls::{assert_keys_refused, assert_urls_refused};
pub use wait::{
    collect, collect_in_order, collect_unacked, eventually, next_live, quiet, wait_for,
};

/// What a case or test returns: `Err` says what did not happen.
pub type CaseResult = Result<(), String>;

/// Turns an error into a message that says what was being done:
/// `.map_err(context("open consumer"))` gives `open consumer: <error>`.
pub fn context<E: Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Open (create or resume) the durable consumer `name` on `pattern`.
pub async fn consumer<T: OutcomeTransport + ?Sized>(
    transport: &T,
    name: &str,
    pattern: &str,
    start: StartPosition,
    ack_wait: Duration,
) -> Result<Arc<dyn DurableConsumer>, String> {
    let pattern = SubjectPattern::new(pattern).map_err(context("pattern"))?;
    let config = ConsumerConfig::new(name, pattern)
        .map_err(context("consumer config"))?
        .start(start)
        .ack_wait(ack_wait);
    transport
        .consumer(config)
        .await
        .map_err(|err| format!("open consumer {name}: {err}"))
}
