//! The `qis` binary run as a user runs it: in a folder of the test's, with
//! none of the caller's `QIS_*` settings or `RUST_LOG`, and what every test
//! asserts about a run.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// What the caller may have set that would change what `qis` does.
const CALLER_SETTINGS: [&str; 7] = [
    "QIS_URL",
    "QIS_PREFIX",
    "RUST_LOG",
    "QIS_NATS_URL",
    "QIS_REDIS_URL",
    "QIS_KAFKA_URL",
    "QIS_CHROMA_URL",
];

/// `qis ARGS`, run in `dir`, with a clean environment and no stdin.
pub fn qis(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qis"));
    c.args(args).current_dir(dir).stdin(Stdio::null());
    for var in CALLER_SETTINGS {
        c.env_remove(var);
    }
    c
}

/// `qis compare --transports TRANSPORTS --packets PACKETS EXTRA… --svg SVG`
/// in `dir`.
pub fn compare(dir: &Path, transports: &str, packets: &str, svg: &Path, extra: &[&str]) -> Command {
    let svg = svg.to_str().expect("a UTF-8 temp path");
    let args = [
        &["compare", "--transports", transports, "--packets", packets][..],
        extra,
        &["--svg", svg],
    ]
    .concat();
    qis(dir, &args)
}

/// Run it to the end; it must exit 0.
pub fn ok(mut c: Command) -> Output {
    let o = c.output().expect("the qis binary runs");
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        stderr(&o)
    );
    o
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 on stdout")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The first result of `qis compare --json`, which must have measured
/// `packets` packets: deposited and fetched them all back.
pub fn measured(o: &Output, packets: u64) -> Value {
    let v: Value = serde_json::from_str(&stdout(o)).expect("compare --json prints JSON");
    let r = v["results"][0].clone();
    assert_eq!(r["status"], "measured", "{r}");
    assert_eq!(r["fetched"], packets, "{r}");
    r
}

/// A run that was refused must not have left `file` behind in `dir`.
pub fn assert_not_created(dir: &Path, file: &str, why: &str) {
    assert!(
        !dir.join(file).exists(),
        "{why}, but {file} was created in {}",
        dir.display()
    );
}

/// `qis ARGS` in `dir`, run to the end (whatever its exit code).
pub fn run(dir: &Path, args: &[&str]) -> Output {
    qis(dir, args).output().expect("the qis binary runs")
}

/// Wait (bounded) for `child` to exit by itself; panics saying `what` did
/// not happen within `within`.
pub fn exit_within(mut child: Child, within: Duration, what: &str) -> ExitStatus {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("{what} within {within:?}"))
        .expect("waiting for the child")
}
