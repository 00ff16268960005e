//! # qis-conformance
//!
//! The one conformance suite every QIS transport passes, as a library. A
//! backend implements [`Backend`] (how to open a transport on a prefix, and
//! how a foreign publisher writes raw bytes); [`run`] turns the shared
//! [`cases`] into one libtest trial per (backend, case), named
//! `backend::case`:
//!
//! - a case needing a [`Capability`] the backend lacks is *ignored* with
//!   "`backend` lacks capability `X`", never passed;
//! - a backend whose server cannot be reached has its cases ignored with the
//!   reason, or failed with it when `QIS_REQUIRE_LIVE=1` (as CI sets);
//! - every case runs on a fresh random prefix, so runs never see each
//!   other's data, and fails if it takes longer than [`CASE_LIMIT`].
//!
//! The [`support`] module is what every backend's own tests need: packet
//! builders, bounded waits that say what did not happen, `QIS_REQUIRE_LIVE`
//! handling.
//!
//! ## Run the whole suite on your transport
//!
//! A transport written outside the QIS workspace proves itself with the same
//! cases. In its `Cargo.toml`:
//!
//! ```toml
//! [dev-dependencies]
//! qis-conformance = "0.1"
//!
//! [[test]]
//! name = "conformance"
//! harness = false
//! ```
//!
//! and in `tests/conformance.rs` a [`Backend`] and a `main`. This one wraps
//! the in-memory transport; it is this crate's own `tests/memory.rs`, so it
//! runs with every `cargo test`:
//!
//! ```no_run
#![doc = include_str!("../tests/memory.rs")]
//! ```
//!
//! `cargo test --test conformance` then runs every case, and
//! `cargo test --test conformance -- start_` the ones whose names contain
//! `start_`. A transport that needs a server returns the reason from
//! [`Backend::unavailable`] when it cannot reach one.
//!
//! ## Fault cases
//!
//! [`cases::fault`] kills a consumer process and a writer process with
//! SIGKILL and restarts a server mid-stream, and prints what it counted
//! (sent, acknowledged, delivered, redelivered, lost = 0). The processes
//! are the test binary itself, started again with its role in the
//! environment: [`run`] (through [`trials_of`]) does a child's job and
//! exits before libtest parses the command line, so calling [`run`] first
//! in `main` is all a backend does for them. A child opens the backend with
//! [`Backend::open`]; what it needs to reach the same stores beyond the
//! inherited environment comes from [`Backend::process_env`]. The restart
//! case needs a server of the test's own ([`Backend::restartable`]); without
//! one it is ignored.
//!
//! ## Your own trials in the same run
//!
//! [`trials`] gives the suite's trials; add yours (built with
//! [`support::trial`] to get the same `QIS_REQUIRE_LIVE` handling, or as
//! [`Case`]s run by [`trials_of`]) and hand the lot to [`run_trials`]:
//!
//! ```no_run
//! use std::time::Duration;
//! use qis_conformance::{libtest_mimic::Trial, support, DynBackend};
//!
//! fn main() {
//!     let backends: Vec<DynBackend> = vec![/* your backend */];
//!     let mut trials = qis_conformance::trials(&backends);
//!     trials.push(Trial::test("mine::own_behaviour", || {
//!         support::block_on(Duration::from_secs(60), async { Ok(()) }).map_err(Into::into)
//!     }));
//!     qis_conformance::run_trials(trials);
//! }
//! ```

#![warn(missing_docs)]

mod backend;
mod case;
pub mod cases;
mod child;
mod runner;
pub mod support;

pub use backend::{Backend, DynBackend, PrivateServer, Restartable, Stop};
pub use case::{Capability, Case, CaseFuture};
pub use runner::{run, run_trials, trials, trials_of, CASE_LIMIT};

/// Re-exported: the trials [`trials`] returns are `libtest_mimic::Trial`s.
pub use libtest_mimic;
/// Re-exported: implement [`Backend`] with it.
pub use qis_core::async_trait;

/// Return `Err(format!(…))` from the enclosing function unless `cond` holds:
/// `ensure!(got.len() == 3, "received {} of 3", got.len())`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// `async_trials!("group", within; case_a, case_b)`: a trial per case, named
/// `group::case_a`, that runs the `async fn case_a() -> CaseResult` within
/// `within` (see [`support::block_on`]): for tests that need no server, or
/// start their own.
///
/// ```
/// use std::time::Duration;
/// use qis_conformance::support::CaseResult;
///
/// async fn nothing_to_do() -> CaseResult {
///     Ok(())
/// }
/// let trials = qis_conformance::async_trials!("demo", Duration::from_secs(5); nothing_to_do);
/// assert_eq!(trials[0].name(), "demo::nothing_to_do");
/// ```
#[macro_export]
macro_rules! async_trials {
    ($group:expr, $within:expr; $($case:ident),+ $(,)?) => {
        vec![$(
            $crate::libtest_mimic::Trial::test(
                format!("{}::{}", $group, stringify!($case)),
                move || $crate::support::block_on($within, $case()).map_err(Into::into),
            )
        ),+]
    };
}

/// `fresh_prefix_trials!(&available, within; case_a, case_b)`: a trial per
/// case, named after it, that runs `case(what, prefix)` with what
/// `available` (a `Result<T, String>`, as for [`support::trial`]) holds, on
/// a fresh prefix within `within` (see [`support::with_fresh_prefix`]).
/// Each case is an `async fn(T, Subject) -> CaseResult`.
///
/// ```
/// use std::time::Duration;
/// use qis_conformance::support::CaseResult;
/// use qis_core::Subject;
///
/// async fn nothing_to_do(_url: String, _prefix: Subject) -> CaseResult {
///     Ok(())
/// }
/// let url: Result<String, String> = Err("no server here".into());
/// let trials = qis_conformance::fresh_prefix_trials!(&url, Duration::from_secs(5); nothing_to_do);
/// assert_eq!(trials.len(), 1);
/// ```
#[macro_export]
macro_rules! fresh_prefix_trials {
    ($available:expr, $within:expr; $($case:ident),+ $(,)?) => {
        vec![$(
            $crate::support::trial(stringify!($case), $available, |what| {
                $crate::support::with_fresh_prefix($within, |prefix| $case(what, prefix))
            })
        ),+]
    };
}
