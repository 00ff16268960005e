//! Runtimes, bounds and logging for `harness = false` tests.

use std::future::Future;
use std::time::Duration;

use qis_core::{Error, ErrorKind, Subject};

use super::{fresh_prefix, CaseResult};

/// A multi-threaded tokio runtime with two workers and every driver on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Run `future` on a fresh [`runtime`]; fails if it does not finish within
/// `within`.
pub fn block_on<F>(within: Duration, future: F) -> CaseResult
where
    F: Future<Output = CaseResult>,
{
    runtime().block_on(async {
        tokio::time::timeout(within, future)
            .await
            .unwrap_or_else(|_| Err(format!("did not finish within {within:?}")))
    })
}

/// [`block_on`] a case on a [`fresh_prefix`]; a failure message starts with
/// `[prefix …]`, so the data it left can be found.
pub fn with_fresh_prefix<F, Fut>(within: Duration, case: F) -> CaseResult
where
    F: FnOnce(Subject) -> Fut,
    Fut: Future<Output = CaseResult>,
{
    let prefix = fresh_prefix();
    block_on(within, case(prefix.clone())).map_err(|msg| format!("[prefix {prefix}] {msg}"))
}

/// Run `work` (starting, stopping or restarting a server of the test's
/// own) on tokio's blocking pool; a failure, or a panic in `work`, is an
/// `Unavailable` error of `transport` saying why.
pub async fn unblock<T, F>(transport: &'static str, work: F) -> qis_core::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let unavailable = |why: String| Error::new(ErrorKind::Unavailable, transport, why);
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(unavailable)
}

/// Log through `tracing` to the test output, filtered by `RUST_LOG` or else
/// `default` (`"error"`, `"warn"`). Does nothing if a subscriber is set.
pub fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_test_writer()
        .try_init();
}
