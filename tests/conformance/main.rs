//! The ONE conformance suite, run against every backend compiled in.
//!
//! Each case is a plain async function over a [`harness::Backend`]; this file
//! expands them into one libtest trial per (backend, case). A case that needs
//! a capability the backend lacks is reported as ignored with the reason, never
//! as passed. A backend whose server is not reachable is ignored with the
//! reason locally, and fails when `QIS_REQUIRE_LIVE=1` (as `.ci/run` sets).
//!
//! Run: `cargo test --test conformance --features full` (with the servers from
//! `scripts/test-all.sh`), or `cargo test` for memory + SQLite.

mod cases;
mod harness;

mod backends {
    #[cfg(feature = "kafka")]
    pub mod kafka;
    pub mod memory;
    #[cfg(feature = "nats")]
    pub mod nats;
    #[cfg(feature = "redis")]
    pub mod redis;
    #[cfg(feature = "sqlite")]
    pub mod sqlite;
}

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use qis::Subject;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
    let args = Arguments::from_args();
    let require_live = std::env::var("QIS_REQUIRE_LIVE").is_ok_and(|v| v == "1");

    #[allow(unused_mut)]
    let mut backends: Vec<harness::DynBackend> = vec![backends::memory::backend()];
    #[cfg(feature = "sqlite")]
    backends.push(backends::sqlite::backend());
    #[cfg(feature = "nats")]
    backends.push(backends::nats::backend());
    #[cfg(feature = "redis")]
    backends.push(backends::redis::backend());
    #[cfg(feature = "kafka")]
    backends.push(backends::kafka::backend());

    let rt = runtime();
    let mut trials = Vec::new();
    for backend in backends {
        let name = backend.name();
        // Learn availability and capabilities once per backend.
        let probe = rt.block_on(async {
            if let Some(why) = backend.unavailable().await {
                return Err(why);
            }
            let t = backend
                .open(&Subject::new(format!("qtcaps{}.iot", cases::random_hex(4))).unwrap())
                .await
                .map_err(|e| format!("could not open: {e}"))?;
            let caps = t.capabilities();
            let _ = t.close().await;
            Ok(caps)
        });
        for case in cases::all() {
            let test_name = format!("{name}::{}", case.name);
            let trial = match &probe {
                Err(why) if require_live => {
                    let why =
                        format!("{name} is required (QIS_REQUIRE_LIVE=1) but unavailable: {why}");
                    Trial::test(test_name, move || Err(Failed::from(why)))
                }
                Err(why) => {
                    let why = format!("{name} unavailable: {why}");
                    Trial::ignorable_test(test_name, move || Ok(Completion::ignored_with(why)))
                }
                Ok(caps) => match (case.needs)(caps) {
                    Some(missing) => {
                        let why = format!("{name} lacks capability `{missing}`");
                        Trial::ignorable_test(test_name, move || Ok(Completion::ignored_with(why)))
                    }
                    None => {
                        let backend = backend.clone();
                        let run = case.run;
                        Trial::test(test_name, move || {
                            let rt = runtime();
                            let prefix =
                                Subject::new(format!("qt{}.iot", cases::random_hex(5))).unwrap();
                            let case_prefix = prefix.clone();
                            let r = rt.block_on(async move {
                                tokio::time::timeout(
                                    std::time::Duration::from_secs(180),
                                    run(backend, case_prefix),
                                )
                                .await
                            });
                            match r {
                                Ok(Ok(())) => Ok(()),
                                Ok(Err(msg)) => {
                                    Err(Failed::from(format!("[prefix {prefix}] {msg}")))
                                }
                                Err(_) => Err(Failed::from(format!(
                                    "[prefix {prefix}] case did not finish within 180 s"
                                ))),
                            }
                        })
                    }
                },
            };
            trials.push(trial.with_kind(name));
        }
    }
    drop(rt);
    libtest_mimic::run(&args, trials).exit();
}
