//! The runner: one libtest trial per (backend, case).

use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use qis_core::{Capabilities, Subject};

use crate::backend::DynBackend;
use crate::case::Case;
use crate::cases;
use crate::child;
use crate::support::{self, random_hex};

/// How long one case may take before it fails.
pub const CASE_LIMIT: Duration = Duration::from_secs(180);

/// Run every case on every backend, as a `harness = false` test's `main`:
/// parses the command line (`cargo test --test conformance -- filter`),
/// prints the results and exits with libtest's status.
pub fn run(backends: Vec<DynBackend>) -> ! {
    run_trials(trials(&backends))
}

/// Run `trials` (from [`trials`], [`trials_of`], or your own) as a
/// `harness = false` test's `main`, and exit.
pub fn run_trials(trials: Vec<Trial>) -> ! {
    support::init_tracing("error");
    let args = Arguments::from_args();
    libtest_mimic::run(&args, trials).exit()
}

/// One trial per (backend, case) of the whole suite, named `backend::case`;
/// add your own to the list before [`run_trials`].
pub fn trials(backends: &[DynBackend]) -> Vec<Trial> {
    trials_of(backends, &cases::all())
}

/// One trial per (backend, case) of `cases`, named `backend::case`.
///
/// Each backend is probed once (is it available, what are its
/// [`Capabilities`]). A case then
/// - runs on a fresh random prefix, bounded by [`CASE_LIMIT`], if the backend
///   has every capability it needs;
/// - is ignored with "`backend` lacks capability `X`" if not;
/// - is ignored with the reason if the backend is unavailable, or fails with
///   it under `QIS_REQUIRE_LIVE=1`.
///
/// A process the suite started as a child of this test binary (the fault
/// cases' consumers and writers, see [`cases::fault`]) does its job here
/// instead, and exits: so every backend's `tests/conformance.rs` gets those
/// cases by calling [`run`] (or this) first thing in `main`.
pub fn trials_of(backends: &[DynBackend], cases: &[Case]) -> Vec<Trial> {
    child::run_if_child(backends);
    let mut trials = Vec::new();
    for backend in backends {
        let name = backend.name();
        let probe = probe(backend);
        for case in cases {
            let test_name = format!("{name}::{}", case.name());
            let trial = match &probe {
                Err(why) => support::unavailable_trial(test_name, &format!("{name} {why}")),
                Ok(caps) => match case.missing(caps) {
                    Some(missing) => {
                        let why = format!("{name} lacks capability `{missing}`");
                        Trial::ignorable_test(test_name, move || Ok(Completion::ignored_with(why)))
                    }
                    None if case.needs_private_server() && backend.restartable().is_none() => {
                        let why = format!(
                            "{name} cannot restart its server here: it has no private server to restart (Backend::restartable), and a shared one must never be"
                        );
                        Trial::ignorable_test(test_name, move || Ok(Completion::ignored_with(why)))
                    }
                    None if case.needs_private_server()
                        && backend
                            .restartable()
                            .and_then(|r| r.unavailable())
                            .is_some() =>
                    {
                        let why = backend
                            .restartable()
                            .and_then(|r| r.unavailable())
                            .unwrap_or_default();
                        support::unavailable_trial(
                            test_name,
                            &format!("{name} cannot start a private server: {why}"),
                        )
                    }
                    None => {
                        let (backend, case) = (backend.clone(), case.clone());
                        Trial::test(test_name, move || {
                            support::with_fresh_prefix(CASE_LIMIT, |prefix| {
                                case.run(backend, prefix)
                            })
                            .map_err(Failed::from)
                        })
                    }
                },
            };
            trials.push(trial.with_kind(name));
        }
    }
    trials
}

/// Whether `backend` can run here, and what its transports can do.
fn probe(backend: &DynBackend) -> Result<Capabilities, String> {
    support::runtime().block_on(async {
        if let Some(why) = backend.unavailable().await {
            return Err(format!("unavailable: {why}"));
        }
        let prefix =
            Subject::new(format!("qtcaps{}.iot", random_hex(4))).expect("a valid probe prefix");
        let t = backend
            .open(&prefix)
            .await
            .map_err(|e| format!("could not open a transport: {e}"))?;
        let caps = t.capabilities();
        let _ = t.close().await;
        Ok(caps)
    })
}
