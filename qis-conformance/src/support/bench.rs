//! Benchmark ratios in a form a script can collect.
//!
//! Every bench prints its figures for a person; each ratio it prints is also
//! handed to [`record`], which appends one JSON object per line to the file
//! named by `QIS_BENCH_JSON` when that is set (and does nothing otherwise).
//! `scripts/bench-all.sh` sets it, runs every bench and turns the lines into
//! one table:
//!
//! ```json
//! {"backend":"sqlite","operation":"fetch + ack","baseline":"raw+decode","qis":52000.0,"raw":61000.0,"ratio":0.85,"unit":"packets/s"}
//! ```
//!
//! ```
//! use qis_conformance::support::bench;
//! // Without QIS_BENCH_JSON this only returns the ratio.
//! let ratio = bench::record("sqlite", "batch deposit", bench::RAW, 80_000.0, 100_000.0);
//! assert!((ratio - 0.8).abs() < 1e-9);
//! ```

use std::io::Write;

/// The variable naming the file [`record`] appends to.
pub const BENCH_JSON: &str = "QIS_BENCH_JSON";

/// Baseline: the raw client doing the same work.
pub const RAW: &str = "raw";
/// Baseline: the raw client plus `serde_json` decoding of each packet, which
/// is what a user without QIS writes.
pub const RAW_DECODE: &str = "raw+decode";

/// Record `qis / raw` for `operation` on `backend` against `baseline`, both
/// rates in packets per second (higher is better), and return the ratio.
pub fn record(backend: &str, operation: &str, baseline: &str, qis: f64, raw: f64) -> f64 {
    record_ratio(
        backend,
        operation,
        baseline,
        qis,
        raw,
        qis / raw,
        PER_SECOND,
    )
}

/// The unit of rates: packets (or operations) per second.
pub const PER_SECOND: &str = "packets/s";

/// Record a ratio the bench computed itself (a median of per-round ratios,
/// or raw ÷ qis for latencies, where lower is better) beside the two
/// figures it compares, in `unit`, and return it. When
/// `QIS_BENCH_JSON` names a file, one JSON line is appended to it.
///
/// # Panics
///
/// When `QIS_BENCH_JSON` names a file that cannot be appended to.
pub fn record_ratio(
    backend: &str,
    operation: &str,
    baseline: &str,
    qis: f64,
    raw: f64,
    ratio: f64,
    unit: &str,
) -> f64 {
    let Some(path) = std::env::var_os(BENCH_JSON) else {
        return ratio;
    };
    let finite = |v: f64| {
        if v.is_finite() {
            serde_json::Value::from(v)
        } else {
            serde_json::Value::Null
        }
    };
    let line = serde_json::json!({
        "backend": backend,
        "operation": operation,
        "baseline": baseline,
        "qis": finite(qis),
        "raw": finite(raw),
        "ratio": finite(ratio),
        "unit": unit,
    });
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        // One write per line, so benches run one after another (or at once)
        // never interleave within a line.
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        // A bench is a program run by hand or by bench-all.sh: a table
        // silently missing a row is worse than a bench that stops here.
        panic!(
            "cannot append to {BENCH_JSON}={}: {e}; point it at a writable file",
            std::path::Path::new(&path).display()
        );
    }
    ratio
}

/// The packet a bench deposits again and again: `agent`'s `i`-th reading
/// of a compressor's draw (`i` goes into the conclusion and the timestamp,
/// so every `i` is a new packet).
pub fn reading(agent: &str, i: usize) -> qis_core::OutcomePacket {
    qis_core::OutcomePacket {
        agent_id: agent.to_string(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        conclusion: format!("Compressor draw {i} above baseline. Possible refrigerant loss."),
        confidence: 0.87,
        context_vector: vec![0.18, 0.92, 0.03, 0.71],
        timestamp: 1_764_000_000.0 + i as f64,
        source_node: "bench-node".into(),
    }
}

/// The `main` of a bench against a server: read the server's URL from
/// `var`, then run `bench` on a two-worker tokio runtime. Without the
/// variable it says how to start the server (`how_to_start`) and returns,
/// or exits 1 under `QIS_REQUIRE_LIVE=1`; a failed bench exits 1.
pub fn run_on_server<F, Fut, E>(var: &str, how_to_start: &str, bench: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Ok(url) = std::env::var(var) else {
        eprintln!("{var} is not set: {how_to_start}");
        if std::env::var("QIS_REQUIRE_LIVE").is_ok_and(|v| v == "1") {
            std::process::exit(1);
        }
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = rt.block_on(bench(url)) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this crate touching `QIS_BENCH_JSON`.
    #[test]
    fn a_ratio_becomes_one_json_line() {
        let dir = crate::support::TempDir::new("bench-json");
        let file = dir.path().join("ratios.jsonl");
        std::env::set_var(BENCH_JSON, &file);
        assert_eq!(record("sqlite", "fetch + ack", RAW_DECODE, 1.0, 4.0), 0.25);
        record("kafka", "one deposit", RAW, 3.0, 0.0);
        std::env::remove_var(BENCH_JSON);
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["backend"], "sqlite");
        assert_eq!(lines[0]["operation"], "fetch + ack");
        assert_eq!(lines[0]["baseline"], "raw+decode");
        assert_eq!(lines[0]["ratio"], 0.25);
        assert_eq!(lines[0]["raw"], 4.0);
        assert!(lines[1]["ratio"].is_null(), "{text}");
    }
}

/// What a backend's `fetch_profile` bench is told by its environment: run
/// one reader of its fetch + ack bench alone, for an instruction-count
/// profile (`valgrind --tool=callgrind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRun {
    /// The server's URL, from the backend's variable (`QIS_NATS_URL`, …).
    pub url: String,
    /// `QIS_PROFILE_SIDE`: `raw`, `rawdecode` or `qis`.
    pub side: String,
    /// `QIS_PROFILE_N`: how many packets are read.
    pub n: usize,
}

impl ProfileRun {
    /// The run `url_var` and `QIS_PROFILE_SIDE` ask for (`QIS_PROFILE_N`
    /// packets, `default_n` without it), or `None` after saying what to set
    /// when either is unset (as under a plain `cargo bench`).
    pub fn from_env(url_var: &str, default_n: usize) -> Option<ProfileRun> {
        let (Ok(url), Ok(side)) = (std::env::var(url_var), std::env::var("QIS_PROFILE_SIDE"))
        else {
            eprintln!(
                "fetch_profile: set {url_var} and QIS_PROFILE_SIDE (raw, rawdecode, qis) to run it"
            );
            return None;
        };
        let n = std::env::var("QIS_PROFILE_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_n);
        Some(ProfileRun { url, side, n })
    }

    /// A current-thread runtime: the client's connection task runs in the
    /// profiled call too.
    pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}
