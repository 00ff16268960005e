//! The `qis` binary, run as a user runs it: exit codes, one-line errors, the
//! fingerprint vector, and a deposit → twins → synth round trip through a
//! SQLite file shared by separate processes.

mod support;

use std::process::{Command, Output, Stdio};

use qis_conformance::support::TempDir;
use serde_json::Value;
use support::command::{assert_not_created, compare, measured, ok, qis, run, stderr, stdout};

const FP: &str = "f94baeb7a8090420c0d7c3c89e02990d240c3cc068b21cc523f5d2912eb3e87b";

/// Exit code 2 and exactly one stderr line, `qis: error: …`, containing `needle`.
fn assert_usage_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {err}");
    assert!(lines[0].starts_with("qis: error: "), "{err}");
    assert!(lines[0].contains(needle), "{err} should mention {needle:?}");
    assert!(o.stdout.is_empty(), "nothing on stdout: {}", stdout(o));
}

const PACKET_FLAGS: [&str; 14] = [
    "--agent-id",
    "hvac-building-a",
    "--domain",
    "hvac",
    "--problem-class",
    "energy-anomaly",
    "--conclusion",
    "Compressor draw 18% above baseline.",
    "--context",
    "0.18,0.92,0.03,0.71",
    "--source-node",
    "building-a-floor-3",
    "--timestamp",
    "1764000000",
];

fn deposit_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["deposit"];
    v.extend(PACKET_FLAGS);
    v.extend(extra);
    v
}

/// `fingerprint --domain hvac --problem-class energy-anomaly --context CONTEXT EXTRA…`
fn fingerprint_args<'a>(context: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "fingerprint",
        "--domain",
        "hvac",
        "--problem-class",
        "energy-anomaly",
        "--context",
        context,
    ];
    v.extend(extra);
    v
}

#[test]
fn fingerprint_matches_the_vector() {
    let dir = TempDir::new("fp");
    let args = fingerprint_args("0.18,0.92,0.03,0.71", &["--resolution", "4"]);
    let o = ok(qis(dir.path(), &args));
    let out = stdout(&o);
    assert!(
        out.contains("subject                qis.iot.hvac.energy-anomaly\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("fingerprint            {FP}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "fingerprinted subject  qis.iot.hvac.energy-anomaly.{FP}\n"
        )),
        "{out}"
    );

    let json_args = [&args[..], &["--json"]].concat();
    let o = ok(qis(dir.path(), &json_args));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["fingerprint"], FP);
    assert_eq!(v["subject"], "qis.iot.hvac.energy-anomaly");
    assert_eq!(
        v["fingerprinted_subject"],
        format!("qis.iot.hvac.energy-anomaly.{FP}")
    );
    assert_eq!(
        v["canonical_input"],
        "qis-fp-v1\nhvac\nenergy-anomaly\n0,3,0,2"
    );

    // The default resolution is 4; a prefix changes the subjects, not the fingerprint.
    let prefixed = [
        &["--prefix", "fleet.site1"][..],
        &fingerprint_args("0.22,0.88,0.07,0.65", &["--json"]),
    ]
    .concat();
    let o = ok(qis(dir.path(), &prefixed));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["fingerprint"], FP);
    assert_eq!(
        v["fingerprinted_subject"],
        format!("fleet.site1.hvac.energy-anomaly.{FP}")
    );
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let dir = TempDir::new("flags");
    assert_usage_error(&run(dir.path(), &["deposit", "--bogus"]), "--bogus");
    assert_usage_error(&run(dir.path(), &["no-such-command"]), "no-such-command");
    assert_usage_error(
        &run(dir.path(), &["twins", "hvac", "energy-anomaly"]),
        "--consumer",
    );
    assert_usage_error(
        &run(
            dir.path(),
            &["twins", "hvac", "x", "--consumer", "c", "--wait", "soon"],
        ),
        "soon",
    );
    assert_usage_error(
        &run(
            dir.path(),
            &[
                "fingerprint",
                "--domain",
                "hvac",
                "--problem-class",
                "x",
                "--context",
                "0.1,abc",
            ],
        ),
        "abc",
    );
    assert_usage_error(&run(dir.path(), &["watch", "qis.iot.hv*"]), "hv*");
    // --json and packet flags together make no sense.
    assert_usage_error(
        &run(
            dir.path(),
            &deposit_args(&["--confidence", "0.5", "--json", "-"]),
        ),
        "--json",
    );
}

#[test]
fn invalid_input_exits_2_before_anything_is_created() {
    let dir = TempDir::new("invalid");
    // The default URL is sqlite://qis.db in the working folder: invalid input
    // must be refused before it is opened (or found missing from the build).
    assert_usage_error(
        &run(dir.path(), &deposit_args(&["--confidence", "1.5"])),
        "confidence 1.5",
    );
    let mut bad_token = deposit_args(&["--confidence", "0.5"]);
    bad_token[4] = "HVAC";
    assert_usage_error(&run(dir.path(), &bad_token), "\"HVAC\"");
    let missing: Vec<&str> = deposit_args(&[])
        .into_iter()
        .filter(|a| *a != "--agent-id" && *a != "hvac-building-a")
        .collect();
    assert_usage_error(&run(dir.path(), &missing), "--agent-id");
    let long = "x".repeat(600);
    let mut too_large = deposit_args(&["--confidence", "0.5"]);
    too_large[8] = &long;
    assert_usage_error(&run(dir.path(), &too_large), "512");
    assert_usage_error(
        &run(
            dir.path(),
            &deposit_args(&["--confidence", "0.5", "--fingerprint=0"]),
        ),
        "resolution",
    );
    assert_usage_error(
        &run(
            dir.path(),
            &["twins", "hvac", "energy-anomaly", "--consumer", "no spaces"],
        ),
        "no spaces",
    );
    assert_not_created(dir.path(), "qis.db", "the input was refused");
}

#[test]
fn bad_urls_exit_2() {
    let dir = TempDir::new("urls");
    let args = deposit_args(&["--confidence", "0.5"]);
    let mut with_url = vec!["--url", "ftp://example.invalid/x"];
    with_url.extend(&args);
    assert_usage_error(&run(dir.path(), &with_url), "ftp");
    let mut env_url = qis(dir.path(), &args);
    env_url.env("QIS_URL", "not a url");
    assert_usage_error(&env_url.output().unwrap(), "not a url");
}

#[cfg(not(feature = "nats"))]
#[test]
fn a_transport_not_built_in_exits_2_naming_the_feature() {
    let dir = TempDir::new("feature");
    let mut args = vec!["--url", "nats://127.0.0.1:4222"];
    args.extend(deposit_args(&["--confidence", "0.5"]));
    assert_usage_error(&run(dir.path(), &args), "`nats`");
}

#[test]
fn memory_deposit_prints_the_receipt() {
    let dir = TempDir::new("memory");
    let mut args = vec!["--url", "memory://"];
    args.extend(deposit_args(&["--confidence", "0.87"]));
    let o = ok(qis(dir.path(), &args));
    let out = stdout(&o);
    assert!(
        out.starts_with("subject=qis.iot.hvac.energy-anomaly id="),
        "{out}"
    );
    assert!(out.contains("position=\"seq 1\" duplicate=false"), "{out}");

    // --fingerprint deposits on the fingerprinted subject of the vector.
    let mut args = vec!["--url", "memory://"];
    args.extend(deposit_args(&[
        "--confidence",
        "0.87",
        "--fingerprint",
        "--output",
        "json",
    ]));
    let o = ok(qis(dir.path(), &args));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["subject"], format!("qis.iot.hvac.energy-anomaly.{FP}"));
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["id"].as_str().unwrap().len(), 64);
}

#[test]
fn help_and_version_exit_0() {
    let dir = TempDir::new("help");
    for args in [
        &["--help"][..],
        &["--version"],
        &["deposit", "--help"],
        &["compare", "--help"],
    ] {
        let o = run(dir.path(), args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty());
    }
}

#[test]
fn compare_lists_every_transport_and_writes_the_chart() {
    let dir = TempDir::new("compare");
    let svg = dir.path().join("c.svg");
    let out = stdout(&ok(compare(dir.path(), "memory,nats", "200", &svg, &[])));
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name} row in:\n{out}"))
            .to_string()
    };
    let memory = row("memory");
    assert!(memory.contains("at-least-once"), "{memory}");
    let cells: Vec<&str> = memory.split('|').map(str::trim).collect();
    assert!(
        cells[5].replace(',', "").parse::<u64>().unwrap() > 0,
        "deposit rate in {memory}"
    );
    // QIS_NATS_URL is unset: listed as unreachable (or not built in), not skipped.
    let nats = row("nats");
    assert!(
        nats.contains("unreachable") || nats.contains("not built in"),
        "{nats}"
    );
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(
        chart.starts_with("<svg"),
        "{}",
        &chart[..chart.len().min(200)]
    );
    assert!(chart.contains("memory") && chart.contains("nats"));

    measured(
        &ok(compare(dir.path(), "memory", "100", &svg, &["--json"])),
        100,
    );
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use qis_conformance::support::forward_lines;
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;
    use support::command::exit_within;
    use support::SqliteUrl;

    /// The folder's database file, `x.db`.
    fn sqlite_url(dir: &TempDir) -> String {
        dir.sqlite("x.db", "")
    }

    fn with_url(dir: &TempDir, args: &[&str]) -> Command {
        let mut c = qis(dir.path(), args);
        c.env("QIS_URL", sqlite_url(dir));
        c
    }

    /// `qis twins hvac energy-anomaly --consumer <consumer> <extra…>` on the
    /// folder's file, which must succeed.
    fn twins(dir: &TempDir, consumer: &str, extra: &[&str]) -> Output {
        let mut args = vec!["twins", "hvac", "energy-anomaly", "--consumer", consumer];
        args.extend(extra);
        ok(with_url(dir, &args))
    }

    fn json_lines(o: &Output) -> Vec<Value> {
        stdout(o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn deposit_then_twins_round_trip_across_processes() {
        let dir = TempDir::new("sqlite");
        // Building A deposits from flags.
        let a = ok(with_url(
            &dir,
            &deposit_args(&["--confidence", "0.87", "--output", "json"]),
        ));
        let receipt_a: Value = serde_json::from_str(&stdout(&a)).unwrap();
        assert_eq!(receipt_a["subject"], "qis.iot.hvac.energy-anomaly");
        assert_eq!(receipt_a["duplicate"], false);

        // Building C deposits JSON on stdin.
        let c_packet = r#"{"agent_id":"hvac-building-c","domain":"hvac","problem_class":"energy-anomaly",
            "conclusion":"Same spike here.","confidence":0.79,"context_vector":[0.22,0.88,0.07,0.65],
            "timestamp":1764000001.5,"source_node":"building-c","extra_key_ignored":true}"#;
        let mut child = with_url(&dir, &["deposit", "--json", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(c_packet.as_bytes())
            .unwrap();
        let c = child.wait_with_output().unwrap();
        assert!(c.status.success(), "{}", stderr(&c));
        assert!(
            stdout(&c).starts_with("subject=qis.iot.hvac.energy-anomaly id="),
            "{}",
            stdout(&c)
        );

        // Building B fetches both, acked.
        let fetched = twins(&dir, "building-b", &["--json"]);
        let got = json_lines(&fetched);
        assert_eq!(got.len(), 2, "{}", stdout(&fetched));
        assert_eq!(got[0]["id"], receipt_a["id"]);
        assert_eq!(got[0]["packet"]["agent_id"], "hvac-building-a");
        assert_eq!(got[1]["packet"]["agent_id"], "hvac-building-c");
        assert!(
            stderr(&fetched).contains("2 packets fetched and acked"),
            "{}",
            stderr(&fetched)
        );

        // Acked: the same consumer gets nothing more; readable output is one line each.
        let again = twins(&dir, "building-b", &["--wait", "200ms"]);
        assert!(again.stdout.is_empty(), "{}", stdout(&again));
        assert!(stderr(&again).contains("no packets"), "{}", stderr(&again));
        let other = twins(&dir, "building-d", &[]);
        let lines: Vec<String> = stdout(&other).lines().map(String::from).collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("2025-11-24T16:00:00.000Z  qis.iot.hvac.energy-anomaly  hvac-building-a@building-a-floor-3  conf 0.87"), "{}", lines[0]);

        // Building B synthesises with its own packet, on a fresh consumer.
        let s: Value =
            serde_json::from_str(&stdout(&ok(synth(&dir, "hvac-building-b", &["--json"]))))
                .unwrap();
        assert_eq!(s["n_agents"], 3);
        assert_eq!(s["synthesis_pairs"], 3);
        assert_eq!(s["consensus_problem"], "hvac.energy-anomaly");
        assert_eq!(s["alert"], true);
        assert_eq!(s["twins_fetched"], 2);

        // Readable synthesis, own packet from a file.
        let own = dir.path().join("own.json");
        std::fs::write(
            &own,
            r#"{"agent_id":"hvac-building-e","domain":"hvac","problem_class":"filter-clog","conclusion":"Filter.",
                "confidence":0.6,"context_vector":[],"timestamp":1764000002,"source_node":"e"}"#,
        )
        .unwrap();
        let synth = ok(with_url(
            &dir,
            &[
                "synth",
                "hvac",
                "energy-anomaly",
                "--consumer",
                "building-e",
                "--own-json",
                own.to_str().unwrap(),
            ],
        ));
        let text = stdout(&synth);
        assert!(
            text.contains("agents            3 (3 synthesis pairs)"),
            "{text}"
        );
        assert!(
            text.contains(
                "consensus         hvac.energy-anomaly: 2 of 3 votes (67%), weighted 73%"
            ),
            "{text}"
        );
        assert!(text.contains("alert             yes"), "{text}");
        assert!(
            text.contains("method            confidence-weighted (quorum 2, alert above 60%, no half-life, outliers excluded, resolution 4)"),
            "{text}"
        );
        assert!(
            text.contains(
                "situations        2 of 2 in one fingerprint bucket (100%), f94baeb7a8090420"
            ),
            "{text}"
        );
        assert!(
            text.contains("quorum            met (2 agents needed)"),
            "{text}"
        );
        // Beta(1 + 0.87 + 0.79, 1 + 0.13 + 0.21 + 1): 2.66 / 5.
        assert!(
            text.contains("P(real)           0.53 (95% credible lower bound 0.19)"),
            "{text}"
        );
    }

    /// `qis synth` for `own_agent` on a fresh consumer, with `extra` options.
    fn synth(dir: &TempDir, own_agent: &str, extra: &[&str]) -> Command {
        let consumer = format!("synth-{own_agent}-{}", extra.len());
        let mut args = vec![
            "synth",
            "hvac",
            "energy-anomaly",
            "--consumer",
            &consumer,
            "--agent-id",
            own_agent,
            "--conclusion",
            "Spike here too.",
            "--confidence",
            "0.8",
            "--context",
            "0.2,0.9,0.05,0.7",
            "--source-node",
            "node",
            "--timestamp",
            "1764000000",
            "--wait",
            "200ms",
        ];
        args.extend(extra);
        with_url(dir, &args)
    }

    #[test]
    fn synth_options_change_the_figures() {
        let dir = TempDir::new("synth-options");
        // Alone: the seed's rules alert about themselves, the defaults do not.
        let alone = ok(synth(&dir, "hvac-building-b", &["--json"]));
        let v: Value = serde_json::from_str(&stdout(&alone)).unwrap();
        assert_eq!(v["alert"], false);
        assert_eq!(v["quorum_met"], false);
        assert!(
            v["recommendation"].as_str().unwrap().contains("lone view"),
            "{v}"
        );
        let seed = ok(synth(
            &dir,
            "hvac-building-b",
            &["--method", "seed", "--quorum", "1", "--json"],
        ));
        let v: Value = serde_json::from_str(&stdout(&seed)).unwrap();
        assert_eq!(v["alert"], true);
        assert_eq!(v["method"], "seed");

        // A deposits an hour before B's synthesis time.
        ok(with_url(&dir, &deposit_args(&["--confidence", "0.87"])));
        let v: Value = serde_json::from_str(&stdout(&ok(synth(
            &dir,
            "hvac-building-b",
            &["--json", "--now", "1764003600", "--half-life", "1h"],
        ))))
        .unwrap();
        assert_eq!(v["n_agents"], 2);
        assert_eq!(v["alert"], true);
        assert_eq!(v["method"], "confidence-weighted");
        assert_eq!(v["config"]["half_life_secs"], 3600.0);
        assert_eq!(v["config"]["now"], 1764003600.0);
        assert_eq!(v["synthesized_at"], 1764003600.0);
        assert_eq!(v["agreement_voters"], 2);
        assert_eq!(v["agreement"], 1.0);
        assert_eq!(v["outliers"], serde_json::json!([]));
        assert_eq!(v["twins_fetched"], 1);
        // B's own vote is an hour old too; A's 0.87 at half weight and B's 0.8
        // at half weight: Beta(1 + 0.835, 1 + 0.165).
        let alpha = v["posterior"]["alpha"].as_f64().unwrap();
        assert!((alpha - 1.835).abs() < 1e-9, "{v}");
        for key in [
            "weighted_strength",
            "agreement_fingerprint",
            "consensus_context",
        ] {
            assert!(!v[key].is_null(), "{key} missing: {v}");
        }

        // A quorum of three is not met by two agents.
        let text = stdout(&ok(synth(&dir, "hvac-building-b", &["--quorum", "3"])));
        assert!(
            text.contains("quorum            not met (3 agents needed)"),
            "{text}"
        );
        assert!(text.contains("alert             no"), "{text}");
        assert!(text.contains("below the quorum of 3"), "{text}");

        // Out-of-range options are usage errors, named in the message.
        for (option, named) in [
            (["--threshold", "1.5"], "--threshold"),
            (["--method", "bayes"], "bayes"),
            (["--half-life", "0s"], "0s"),
            (["--resolution", "0"], "--resolution"),
        ] {
            let o = synth(&dir, "hvac-building-b", &option).output().unwrap();
            assert_usage_error(&o, named);
        }
    }

    #[test]
    fn a_duplicate_deposit_is_reported() {
        let dir = TempDir::new("dup");
        let args = deposit_args(&["--confidence", "0.5", "--output", "json"]);
        let first: Value = serde_json::from_str(&stdout(&ok(with_url(&dir, &args)))).unwrap();
        let second: Value = serde_json::from_str(&stdout(&ok(with_url(&dir, &args)))).unwrap();
        assert_eq!(first["id"], second["id"]);
        assert_eq!(first["duplicate"], false);
        assert_eq!(second["duplicate"], true);
    }

    /// Lines a child writes on a pipe, delivered through a channel so the test
    /// can wait for each with a bound.
    fn line_channel(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        forward_lines(pipe, move |line| tx.send(line).is_ok());
        rx
    }

    /// Start `c` in the background: the child, and its stdout and stderr
    /// lines as [`line_channel`]s.
    fn spawn_with_lines(
        mut c: Command,
    ) -> (
        std::process::Child,
        mpsc::Receiver<String>,
        mpsc::Receiver<String>,
    ) {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the qis binary starts");
        let out = line_channel(child.stdout.take().unwrap());
        let err = line_channel(child.stderr.take().unwrap());
        (child, out, err)
    }

    /// The lines still to come on `lines` until its process closed the
    /// pipe (it has exited): they may still be on their way through the
    /// reader thread.
    fn rest_of(lines: &mpsc::Receiver<String>, what: &str) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match lines.recv_timeout(Duration::from_secs(10)) {
                Ok(l) => rest.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{what} did not close within 10 s of the exit: {rest:?}")
                }
            }
        }
    }

    #[test]
    fn watch_shows_live_packets_then_stops_at_count() {
        let dir = TempDir::new("watch");
        // The database must exist before watch opens it.
        twins(&dir, "init", &["--wait", "0s"]);
        let (mut watch, out, err) = spawn_with_lines(with_url(
            &dir,
            &["watch", "qis.iot.hvac.*", "--count", "2", "--json"],
        ));
        // Its first `qis: ` line on stderr says it is watching (or why not);
        // log lines may come before it.
        let ready = loop {
            let l = err
                .recv_timeout(Duration::from_secs(20))
                .expect("watch said it is watching within 20 s");
            if l.starts_with("qis: ") {
                break l;
            }
        };
        if ready.starts_with("qis: error") {
            let _ = watch.wait();
            panic!("watch failed: {ready}");
        }
        assert!(
            ready.starts_with("qis: watching qis.iot.hvac.* on sqlite://"),
            "{ready}"
        );

        let a = ok(with_url(
            &dir,
            &deposit_args(&["--confidence", "0.87", "--output", "json"]),
        ));
        let a: Value = serde_json::from_str(&stdout(&a)).unwrap();
        let mut second = deposit_args(&["--confidence", "0.5"]);
        second[4] = "plumbing";
        ok(with_url(&dir, &second)); // another domain: not shown
        let mut third = deposit_args(&["--confidence", "0.6"]);
        third[6] = "filter-clog";
        ok(with_url(&dir, &third));

        let first: Value = serde_json::from_str(
            &out.recv_timeout(Duration::from_secs(20))
                .expect("first live packet within 20 s"),
        )
        .unwrap();
        assert_eq!(first["id"], a["id"]);
        assert_eq!(first["subject"], "qis.iot.hvac.energy-anomaly");
        let next: Value = serde_json::from_str(
            &out.recv_timeout(Duration::from_secs(20))
                .expect("second live packet within 20 s"),
        )
        .unwrap();
        assert_eq!(next["subject"], "qis.iot.hvac.filter-clog");
        // --count 2: it exits by itself, cleanly.
        let status = exit_within(
            watch,
            Duration::from_secs(20),
            "watch exited after its second packet",
        );
        assert!(status.success(), "{status:?}");
    }

    fn deposit_n(dir: &TempDir, url: &str, node: &str, n: usize) {
        for i in 0..n {
            let mut c = qis(
                dir.path(),
                &[
                    "--url",
                    url,
                    "deposit",
                    "--agent-id",
                    &format!("{node}-agent"),
                    "--domain",
                    "hvac",
                    "--problem-class",
                    "energy-anomaly",
                    "--conclusion",
                    &format!("finding {i}"),
                    "--confidence",
                    "0.8",
                    "--source-node",
                    node,
                ],
            );
            c.env_remove("QIS_URL");
            ok(c);
        }
    }

    #[test]
    fn bridge_forwards_between_files_and_stops_cleanly_on_a_signal() {
        let dir = TempDir::new("bridge");
        let from = dir.sqlite("device.db", "");
        let to = dir.sqlite("hub.db", "");
        deposit_n(&dir, &from, "device-7", 3);
        deposit_n(&dir, &from, "elsewhere", 2);
        for signal in ["-INT", "-TERM"] {
            let (bridge, out, _err) = spawn_with_lines(qis(
                dir.path(),
                &[
                    "bridge",
                    "--from",
                    &from,
                    "--to",
                    &to,
                    "--name",
                    "up",
                    "--origin",
                    "device-7",
                    "--interval",
                    "100ms",
                ],
            ));
            // Not a terminal: one progress line per interval.
            let want = if signal == "-INT" {
                "forwarded 3, duplicates 0, skipped 2, backlog 0 waiting + 0 unacked"
            } else {
                // The second run resumes: nothing left to forward.
                "forwarded 0, duplicates 0, skipped 0, backlog 0 waiting + 0 unacked"
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let l = out
                    .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                    .unwrap_or_else(|_| {
                        panic!("{signal}: no progress line with {want:?} within 20 s")
                    });
                assert!(l.starts_with("bridge up: "), "{l}");
                if l.contains(want) && l.contains("source up") {
                    break;
                }
                assert!(!l.contains("forwarded 4"), "{l}");
            }
            let kill = Command::new("kill")
                .args([signal, &bridge.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
            let status = exit_within(
                bridge,
                Duration::from_secs(20),
                "the bridge exited after the signal",
            );
            assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
            let last = rest_of(&out, &format!("{signal}: the bridge's stdout"));
            assert!(
                last.last().is_some_and(|l| l.ends_with("(stopped)")),
                "{signal}: the last line says it stopped: {last:?}"
            );
        }
        // The hub file holds the device's 3 packets, the others kept back.
        let o = ok(qis(
            dir.path(),
            &[
                "--url",
                &to,
                "twins",
                "hvac",
                "energy-anomaly",
                "--consumer",
                "audit",
                "--wait",
                "0s",
                "--json",
            ],
        ));
        let got = json_lines(&o);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got.iter().all(|v| v["packet"]["source_node"] == "device-7"),
            "{got:?}"
        );
    }

    #[test]
    fn status_lists_consumers_with_their_backlog_and_who_holds_the_store() {
        let dir = TempDir::new("status");
        let url = sqlite_url(&dir);
        deposit_n(&dir, &url, "n", 3);
        // Consumer b takes one packet and acks it; two are still owed to it.
        twins(&dir, "b", &["--max", "1", "--wait", "0s"]);
        let o = ok(with_url(&dir, &["status"]));
        let text = stdout(&o);
        assert!(text.contains("(sqlite, prefix qis.iot)"), "{text}");
        assert!(
            text.contains("store: 3 packets") && text.contains("when full: refuse, dropped 0"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("b "))
            .unwrap_or_else(|| panic!("no row for consumer b:\n{text}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["b", "qis.iot.hvac.energy-anomaly", "2", "0"],
            "{text}"
        );
        assert!(text.contains("held by: b (2 packets)"), "{text}");

        let o = ok(with_url(&dir, &["status", "--json", "--consumer", "b"]));
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["store"]["packets"], 3);
        assert_eq!(v["consumers"][0]["name"], "b");
        assert_eq!(v["consumers"][0]["waiting"], 2);

        let o = with_url(&dir, &["status", "--consumer", "nobody"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("no consumer named nobody") && stderr(&o).contains("there are: b"),
            "{}",
            stderr(&o)
        );

        let missing = dir.sqlite("missing.db", "");
        let o = run(dir.path(), &["--url", &missing, "status"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("there is no store at"),
            "{}",
            stderr(&o)
        );
        assert_not_created(dir.path(), "missing.db", "status only reads");
    }

    #[test]
    fn bridge_usage_errors_exit_2() {
        let dir = TempDir::new("bridge-usage");
        let o = run(dir.path(), &["bridge", "--from", "sqlite://a.db"]);
        assert_usage_error(&o, "--to");
        // Each bad flag on an otherwise complete bridge.
        let bridge = ["bridge", "--from", "sqlite://a.db", "--to", "sqlite://b.db"];
        for (flags, named) in [
            (
                &["--origin", "a", "--except-origin", "b"][..],
                "--except-origin",
            ),
            (&["--ack-wait", "500ms"], "--ack-wait"),
            (&["--name", "no spaces"], "consumer name"),
        ] {
            let o = run(dir.path(), &[&bridge[..], flags].concat());
            assert_usage_error(&o, named);
        }
        let o = run(
            dir.path(),
            &[
                "bridge",
                "--from",
                "sqlite://a.db",
                "--to",
                "carrier-pigeon://x",
            ],
        );
        assert_usage_error(&o, "carrier-pigeon");
        assert_not_created(
            dir.path(),
            "a.db",
            "nothing is opened before the flags are checked",
        );
    }

    #[test]
    fn compare_measures_sqlite() {
        let dir = TempDir::new("cmp-sqlite");
        let svg = dir.path().join("c.svg");
        let o = ok(compare(dir.path(), "sqlite", "100", &svg, &["--json"]));
        let r = measured(&o, 100);
        assert_eq!(r["persistent"], true, "{r}");
        assert_eq!(r["envelope"]["kind"], "disk", "{r}");
    }
}

/// `compare` on every server transport compiled in whose URL is set
/// (`QIS_NATS_URL`, `QIS_REDIS_URL`, `QIS_KAFKA_URL`, as the server scripts
/// write them). A transport without a URL is reported and skipped, and fails
/// the test with `QIS_REQUIRE_LIVE=1`.
#[test]
fn compare_measures_live_servers() {
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if cfg!(feature = "nats") {
        wanted.push(("nats", "QIS_NATS_URL"));
    }
    if cfg!(feature = "redis") {
        wanted.push(("redis", "QIS_REDIS_URL"));
    }
    if cfg!(feature = "kafka") {
        wanted.push(("kafka", "QIS_KAFKA_URL"));
    }
    let require = std::env::var("QIS_REQUIRE_LIVE").is_ok_and(|v| v == "1");
    let dir = TempDir::new("cmp-live");
    for (name, var) in wanted {
        let Some(url) = std::env::var(var).ok().filter(|u| !u.is_empty()) else {
            assert!(!require, "{var} is not set and QIS_REQUIRE_LIVE=1");
            eprintln!("compare_measures_live_servers: {name} skipped: {var} is not set");
            continue;
        };
        let svg = dir.path().join(format!("{name}.svg"));
        let urls = format!("{name}={url}");
        let o = ok(compare(
            dir.path(),
            name,
            "100",
            &svg,
            &["--urls", &urls, "--json"],
        ));
        let r = measured(&o, 100);
        assert!(
            r["deposit_single_per_sec"].as_f64().unwrap() > 0.0,
            "{name}: {r}"
        );
        if r["live"].is_object() {
            assert!(r["live"]["received"].as_u64().unwrap() > 0, "{name}: {r}");
        }
        if name != "kafka" {
            // Body plus envelope: the wire carries at least the body.
            assert_eq!(r["envelope"]["kind"], "wire", "{name}: {r}");
            assert!(
                r["envelope"]["up_bytes"].as_f64().unwrap()
                    >= r["body_bytes_mean"].as_f64().unwrap(),
                "{name}: {r}"
            );
        }
    }
}

/// `qis serve` answers over HTTP (and, with the `http` feature, `qis
/// --url http://…` deposits through it), then stops cleanly on SIGTERM:
/// exit 0, "gateway stopped".
#[test]
fn serve_answers_then_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = TempDir::new("serve");
    let mut child = qis(
        dir.path(),
        &["--url", "sqlite://q.db", "serve", "--listen", "127.0.0.1:0"],
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .expect("qis serve starts");
    let err_pipe = child.stderr.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let first = received
        .recv_timeout(Duration::from_secs(30))
        .expect("qis serve said where it listens within 30 s");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    let addr = url.trim_start_matches("http://");
    let mut health = String::new();
    let mut conn = std::net::TcpStream::connect(addr).expect("the gateway accepts connections");
    conn.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    conn.read_to_string(&mut health).unwrap();
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    assert!(health.contains("\"transport\":\"sqlite\""), "{health}");
    #[cfg(feature = "http")]
    {
        let o = run(
            dir.path(),
            &deposit_args(&["--confidence", "0.87", "--url", &url]),
        );
        assert!(
            o.status.success(),
            "deposit through the gateway: {}",
            stderr(&o)
        );
        assert!(
            stdout(&o).contains("qis.iot.hvac.energy-anomaly"),
            "{}",
            stdout(&o)
        );
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let stopped = received
        .recv_timeout(Duration::from_secs(30))
        .expect("qis serve said it stopped within 30 s of SIGTERM");
    assert!(stopped.contains("gateway stopped"), "{stopped}");
    let status = child.wait().unwrap();
    assert!(status.success(), "qis serve exited with {status}");
}
