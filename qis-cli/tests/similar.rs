//! `qis twins --similar-to` and the similarity table of `qis compare`, on
//! SQLite files in a temporary folder.
#![cfg(feature = "sqlite")]

mod support;

use std::path::Path;

use qis_conformance::support::TempDir;
use serde_json::Value;
use support::command::{assert_not_created, compare, ok, qis, run, stderr, stdout};

fn deposit(dir: &Path, agent: &str, context: &str, fingerprint: bool) {
    let mut args = vec![
        "deposit",
        "--agent-id",
        agent,
        "--domain",
        "hvac",
        "--problem-class",
        "energy-anomaly",
        "--conclusion",
        "Compressor draw above baseline.",
        "--confidence",
        "0.8",
        "--context",
        context,
        "--source-node",
        "n",
    ];
    if fingerprint {
        args.push("--fingerprint");
    }
    ok(qis(dir, &args));
}

/// `qis twins hvac energy-anomaly --similar-to 0.251,0.5,0.5,0.5 <extra…>`:
/// its stdout.
fn nearest(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "twins",
        "hvac",
        "energy-anomaly",
        "--similar-to",
        "0.251,0.5,0.5,0.5",
    ];
    args.extend(extra);
    stdout(&ok(qis(dir, &args)))
}

#[test]
fn similar_to_finds_the_nearest_across_bucket_edges_best_first() {
    let dir = TempDir::new("cli-similar");
    deposit(dir.path(), "edge", "0.249,0.5,0.5,0.5", true);
    deposit(dir.path(), "same-bucket", "0.0,0.5,0.5,0.5", true);
    deposit(dir.path(), "readable", "0.2,0.5,0.5,0.5", false);
    deposit(dir.path(), "far", "0.9,0.0,0.1,0.0", false);
    deposit(dir.path(), "short", "0.251,0.5,0.5", false);
    let out = nearest(dir.path(), &["--k", "3", "--json"]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let agents: Vec<&str> = rows
        .iter()
        .map(|r| r["packet"]["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["edge", "readable", "same-bucket"], "{out}");
    let scores: Vec<f64> = rows.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(rows[0]["subject"].as_str().unwrap().len() > "qis.iot.hvac.energy-anomaly".len());

    let out = nearest(dir.path(), &["--min-score", "0.999"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("score ") && out.contains("edge@n"), "{out}");
}

#[test]
fn similar_to_refuses_bad_input_with_exit_2() {
    let dir = TempDir::new("cli-similar-bad");
    for args in [
        &["twins", "hvac", "x", "--similar-to", "0.1,abc"][..],
        &["twins", "hvac", "x", "--similar-to", "0.1", "--k", "0"],
        &[
            "twins",
            "hvac",
            "x",
            "--similar-to",
            "0.1",
            "--min-score",
            "2",
        ],
        &[
            "twins",
            "hvac",
            "x",
            "--similar-to",
            "0.1",
            "--consumer",
            "c",
        ],
        &["twins", "hvac", "x", "--k", "3", "--consumer", "c"],
        &["twins", "HVAC", "x", "--similar-to", "0.1"],
    ] {
        let o = run(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert_not_created(dir.path(), "qis.db", "the input was refused");
}

#[test]
fn compare_reports_similarity_latency_where_there_is_search() {
    let dir = TempDir::new("cli-similar-compare");
    let svg = dir.path().join("c.svg");
    let out = stdout(&ok(compare(
        dir.path(),
        "sqlite,memory",
        "40",
        &svg,
        &["--similar-stored", "300", "--json"],
    )));
    let v: Value = serde_json::from_str(&out).unwrap();
    for r in v["results"].as_array().unwrap() {
        let s = &r["similar"];
        assert_eq!(s["stored"], 300, "{r}");
        assert!(s["queries"].as_u64().unwrap() >= 5, "{r}");
        assert!(
            s["p99_ms"].as_f64().unwrap() >= s["p50_ms"].as_f64().unwrap(),
            "{r}"
        );
    }
    let table = stdout(&ok(compare(
        dir.path(),
        "sqlite",
        "40",
        &svg,
        &["--similar-stored", "0"],
    )));
    assert!(
        table.contains("| sqlite | not run (--similar-stored 0)"),
        "{table}"
    );
}
