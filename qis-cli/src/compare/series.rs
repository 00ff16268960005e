//! `qis series-merge`: the operational figures `scripts/series.sh` measures
//! around each server (binary size, cold start to the first acknowledged
//! deposit, resident memory, bytes on disk) merged with `qis compare --json`
//! results into one table (Markdown and JSON) and one chart.
//!
//! The script writes one JSON object per backend and line ([`Ops`]); this
//! module only reads, derives bytes per packet and formats: nothing here
//! measures.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::chart::{self, Bars};
use super::table::{count, millis};
use crate::cli::SeriesMergeArgs;
use crate::error::CliError;
use crate::show;

/// What `scripts/series.sh` measured around one backend's server.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Ops {
    /// Backend name, as `qis compare` names it.
    pub transport: String,
    /// The server and its version, or what plays its part.
    pub server: Option<String>,
    /// The file the server runs (or what the size below is of).
    pub binary: Option<String>,
    /// Its size in bytes.
    pub binary_bytes: Option<u64>,
    /// What the size means when it is not a server's own file.
    pub binary_note: Option<String>,
    /// Milliseconds from the start command to the server's port accepting a
    /// TCP connection.
    pub listen_ms: Option<f64>,
    /// Milliseconds from the start command to the first deposit receipt.
    pub first_ack_ms: Option<f64>,
    /// Milliseconds of a `qis deposit` (process, connect, deposit, close)
    /// once the server is up (the script's median of three): the share of
    /// the first figure that is the client's.
    pub warm_deposit_ms: Option<f64>,
    /// Server resident memory after the start and the first deposits, kB.
    pub rss_idle_kb: Option<u64>,
    /// Server resident memory after the `qis compare` scenario, kB.
    pub rss_after_kb: Option<u64>,
    /// Why there is no server memory figure.
    pub rss_note: Option<String>,
    /// Growth of the server's data folder over the scenario, bytes.
    pub disk_bytes: Option<u64>,
    /// Set when the server keeps packets in memory only ("memory storage").
    pub storage: Option<String>,
    /// The machine's 1-minute load average when the server was started
    /// (other work on the machine slows starts and deposits).
    pub load_1m: Option<f64>,
    /// What went wrong, when a figure is missing.
    pub error: Option<String>,
}

/// One merged row: the operational figures and the `qis compare` result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The figures measured around the server.
    #[serde(flatten)]
    pub ops: Ops,
    /// Packets stored on the server by the scenario (its deposits, the
    /// similarity top-up and the wire-bytes deposits).
    pub packets_stored: Option<u64>,
    /// Bytes on disk per stored packet.
    pub disk_bytes_per_packet: Option<f64>,
    /// Why there is no bytes-per-packet figure.
    pub disk_note: Option<String>,
    /// The transport's row of `qis compare --json` (null if it did not run).
    pub compare: Value,
}

/// Packets a measured `qis compare` row left on its server.
fn packets_stored(c: &Value) -> Option<u64> {
    let deposited = c.get("deposited")?.as_u64()?;
    let similar = c.pointer("/similar/stored").and_then(Value::as_u64);
    let wire = match c.pointer("/envelope/kind").and_then(Value::as_str) {
        // The wire phase deposits one warm-up packet it does not count.
        Some("wire") => c.pointer("/envelope/packets").and_then(Value::as_u64)? + 1,
        _ => 0,
    };
    Some(deposited.max(similar.unwrap_or(0)) + wire)
}

/// Merge the figures with the compare rows (matched by transport name), in
/// the order of `ops`.
pub fn merge(ops: &[Ops], compare_rows: &[Value]) -> Vec<Row> {
    ops.iter()
        .map(|o| {
            let compare = compare_rows
                .iter()
                .find(|c| c.get("transport").and_then(Value::as_str) == Some(&o.transport))
                .cloned()
                .unwrap_or(Value::Null);
            let measured = compare.get("status").and_then(Value::as_str) == Some("measured");
            let stored = measured.then(|| packets_stored(&compare)).flatten();
            let on_disk = compare
                .pointer("/envelope/kind")
                .and_then(Value::as_str)
                .filter(|k| *k == "disk")
                .and_then(|_| compare.pointer("/envelope/bytes"))
                .and_then(Value::as_f64);
            let (per_packet, note) = if let Some(storage) = &o.storage {
                (None, Some(storage.clone()))
            } else if let Some(b) = on_disk {
                (Some(b), None)
            } else {
                match (o.disk_bytes, stored) {
                    (Some(d), Some(n)) if n > 0 => (Some(d as f64 / n as f64), None),
                    (None, _) => (None, Some("not measured".to_string())),
                    _ => (None, Some("no packets stored".to_string())),
                }
            };
            Row {
                ops: o.clone(),
                packets_stored: stored,
                disk_bytes_per_packet: per_packet,
                disk_note: note,
                compare,
            }
        })
        .collect()
}

/// 16_800_000 → "16.8 MB".
fn megabytes(bytes: f64) -> String {
    if bytes < 1e5 {
        format!("{:.0} kB", bytes / 1e3)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

fn or_note(v: Option<String>, note: Option<&str>) -> String {
    v.unwrap_or_else(|| note.unwrap_or("n/a").to_string())
}

const HEADER: [&str; 14] = [
    "transport",
    "server",
    "binary",
    "start → port open",
    "cold start → first ack",
    "warm CLI deposit",
    "RSS idle",
    "RSS after compare",
    "disk B/packet",
    "persistent",
    "deposit 1×1 /s",
    "deposit batch /s",
    "fetch+ack /s",
    "live p50",
];

fn cells(r: &Row) -> Vec<String> {
    let o = &r.ops;
    let binary = o.binary_bytes.map(|b| match &o.binary_note {
        Some(n) => format!("{} ({n})", megabytes(b as f64)),
        None => megabytes(b as f64),
    });
    let rss = |kb: Option<u64>| {
        or_note(
            kb.map(|k| megabytes(k as f64 * 1024.0)),
            o.rss_note.as_deref(),
        )
    };
    let c = &r.compare;
    let status = c.get("status").and_then(Value::as_str);
    let from_compare = |key: &str| -> String {
        match status {
            Some("measured") => c
                .get(key)
                .and_then(Value::as_f64)
                .map(count)
                .unwrap_or_else(|| "n/a".into()),
            Some(s) => s.to_string(),
            None => "not run".into(),
        }
    };
    let persistent = match c.get("persistent").and_then(Value::as_bool) {
        _ if o.storage.is_some() => "no (as started here)".to_string(),
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "n/a".into(),
    };
    let live = match status {
        Some("measured") => c
            .pointer("/live/p50_ms")
            .and_then(Value::as_f64)
            .map(millis)
            .unwrap_or_else(|| "n/a".into()),
        _ => "n/a".into(),
    };
    vec![
        o.transport.clone(),
        or_note(o.server.clone(), None),
        or_note(binary, None),
        or_note(o.listen_ms.map(millis), None),
        or_note(o.first_ack_ms.map(millis), o.error.as_deref()),
        or_note(o.warm_deposit_ms.map(millis), None),
        rss(o.rss_idle_kb),
        rss(o.rss_after_kb),
        or_note(r.disk_bytes_per_packet.map(count), r.disk_note.as_deref()),
        persistent,
        from_compare("deposit_single_per_sec"),
        from_compare("deposit_batch_per_sec"),
        from_compare("fetch_ack_per_sec"),
        live,
    ]
    .into_iter()
    .map(|c| c.replace('|', "/"))
    .collect()
}

/// When, where and how the series ran (from the compare output).
#[derive(Debug, Clone, Default)]
pub struct SeriesMeta {
    /// UTC date, YYYY-MM-DD.
    pub date: String,
    /// OS and architecture.
    pub machine: String,
    /// Cores available.
    pub cores: u64,
    /// Packets per transport in the compare scenario.
    pub packets: u64,
    /// The command that produced the figures.
    pub command: Option<String>,
}

/// The table and its footer, as Markdown lines.
pub fn render(rows: &[Row], meta: &SeriesMeta) -> Vec<String> {
    let mut lines = vec![
        format!(
            "qis series: each server from cold, then `qis compare` with {} packets, {}, {} ({} cores)",
            meta.packets, meta.date, meta.machine, meta.cores
        ),
        String::new(),
        format!("| {} |", HEADER.join(" | ")),
        format!("|{}", "---|".repeat(HEADER.len())),
    ];
    lines.extend(rows.iter().map(|r| format!("| {} |", cells(r).join(" | "))));
    lines.push(String::new());
    lines.extend([
        "binary: the file the server process runs (/proc/PID/exe), or what the note says. start → port open: wall time from the server's start command to its port accepting a TCP connection (polled every 5 ms). cold start → first ack: wall time from the server's start command (scripts/servers/NAME.sh start) to the receipt of the first `qis deposit` retried every 20 ms meanwhile, so it includes one CLI process start, connect and close; warm CLI deposit: the same command once the server is up (median of three). Both include the start script's own launch cost.".to_string(),
        "RSS: the server process's VmRSS, idle after the start and those deposits, and after the `qis compare` scenario ran against it. disk B/packet: growth of the server's data folder (apparent size, measured after the server stopped) over the packets the scenario stored there; for sqlite, the database file at rest per packet as `qis compare` measures it. The other columns are `qis compare`'s (see its footer).".to_string(),
    ]);
    let loads: Vec<String> = rows
        .iter()
        .filter_map(|r| r.ops.load_1m.map(|l| format!("{} {l:.1}", r.ops.transport)))
        .collect();
    if !loads.is_empty() {
        lines.push(format!(
            "Load average (1 min) at each start, on {} cores: {}.",
            meta.cores,
            loads.join(", ")
        ));
    }
    for r in rows {
        if let Some(e) = &r.ops.error {
            lines.push(format!("{}: {}", r.ops.transport, e.replace('|', "/")));
        }
    }
    if let Some(cmd) = &meta.command {
        lines.push(format!("Command: `{cmd}`"));
    }
    lines
}

/// The merged rows as JSON.
pub fn json(rows: &[Row], meta: &SeriesMeta) -> Value {
    json!({
        "date": meta.date,
        "machine": meta.machine,
        "cores": meta.cores,
        "packets": meta.packets,
        "command": meta.command,
        "rows": rows,
    })
}

/// The chart's panels: the operational figures, then three of `qis compare`'s.
fn panels(rows: &[Row]) -> Vec<(&'static str, Bars)> {
    let bar = |f: &dyn Fn(&Row) -> Result<f64, String>| -> Bars { rows.iter().map(f).collect() };
    let some =
        |v: Option<f64>, why: Option<&str>| v.ok_or_else(|| why.unwrap_or("n/a").to_string());
    let from_compare = |key: &'static str| {
        bar(&move |r: &Row| {
            r.compare
                .get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| "n/a".to_string())
        })
    };
    vec![
        (
            "binary (MB)",
            bar(&|r| some(r.ops.binary_bytes.map(|b| b as f64 / 1e6), None)),
        ),
        (
            "cold start → first ack (ms)",
            bar(&|r| some(r.ops.first_ack_ms, Some("failed"))),
        ),
        (
            "server RSS idle (MB)",
            bar(&|r| {
                some(
                    r.ops.rss_idle_kb.map(|k| k as f64 * 1024.0 / 1e6),
                    Some("no server"),
                )
            }),
        ),
        (
            "server RSS after compare (MB)",
            bar(&|r| {
                some(
                    r.ops.rss_after_kb.map(|k| k as f64 * 1024.0 / 1e6),
                    Some("no server"),
                )
            }),
        ),
        (
            "disk bytes per packet",
            bar(&|r| {
                some(
                    r.disk_bytes_per_packet,
                    r.ops.storage.as_ref().map(|_| "memory"),
                )
            }),
        ),
        (
            "deposit, one at a time (packets/s)",
            from_compare("deposit_single_per_sec"),
        ),
        (
            "deposit, in batches (packets/s)",
            from_compare("deposit_batch_per_sec"),
        ),
        (
            "durable fetch + ack (packets/s)",
            from_compare("fetch_ack_per_sec"),
        ),
    ]
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::runtime(format!("cannot read {}: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text)
        .map_err(|e| CliError::runtime(format!("cannot write {}: {e}", path.display())))
}

/// Parse the figures file: one [`Ops`] object per non-empty line.
pub fn parse_ops(text: &str, source: &str) -> Result<Vec<Ops>, CliError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Ops>(l).map_err(|e| {
                CliError::usage(format!(
                    "{source} line {}: not a figures object ({e}); it is written by scripts/series.sh",
                    i + 1
                ))
            })
        })
        .collect()
}

/// Run `qis series-merge`.
pub fn run(args: SeriesMergeArgs) -> Result<(), CliError> {
    let ops = parse_ops(&read(&args.ops)?, &args.ops.display().to_string())?;
    let mut compare_rows = Vec::new();
    let mut meta = SeriesMeta {
        command: args.command,
        ..SeriesMeta::default()
    };
    for path in &args.compare {
        let v: Value = serde_json::from_str(&read(path)?).map_err(|e| {
            CliError::usage(format!(
                "{}: not the output of `qis compare --json` ({e})",
                path.display()
            ))
        })?;
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if meta.date.is_empty() {
            meta.date = text("date");
            meta.machine = text("machine");
            meta.cores = v.get("cores").and_then(Value::as_u64).unwrap_or(0);
            meta.packets = v.get("packets").and_then(Value::as_u64).unwrap_or(0);
        }
        match v.get("results").and_then(Value::as_array) {
            Some(rows) => compare_rows.extend(rows.iter().cloned()),
            None => {
                return Err(CliError::usage(format!(
                    "{}: no \"results\" array: not the output of `qis compare --json`",
                    path.display()
                )))
            }
        }
    }
    let rows = merge(&ops, &compare_rows);
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::runtime(format!("cannot create {}: {e}", args.out.display())))?;
    let md = render(&rows, &meta);
    write(&args.out.join("series.md"), &(md.join("\n") + "\n"))?;
    let js = serde_json::to_string_pretty(&json(&rows, &meta))
        .map_err(|e| CliError::runtime(format!("cannot encode the table as JSON: {e}")))?;
    write(&args.out.join("series.json"), &(js + "\n"))?;
    let names: Vec<&str> = rows.iter().map(|r| r.ops.transport.as_str()).collect();
    let svg = args.out.join("series.svg");
    let title = format!(
        "qis series: servers from cold, {}, {} cores (log scales)",
        meta.date, meta.cores
    );
    chart::write_panels(&svg, &title, &names, &panels(&rows), (2, 4))
        .map_err(|e| CliError::runtime(format!("cannot write {}: {e}", svg.display())))?;
    for l in md {
        show::line(&l)?;
    }
    eprintln!(
        "qis: series.md, series.json and series.svg written to {}",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats_compare() -> Value {
        json!({
            "transport": "nats", "status": "measured", "persistent": true,
            "deposited": 2000, "deposit_single_per_sec": 1500.4,
            "deposit_batch_per_sec": 25000.0, "fetch_ack_per_sec": 40000.0,
            "live": { "p50_ms": 0.42 }, "similar": null,
            "envelope": { "kind": "wire", "packets": 200, "up_bytes": 400.0 },
        })
    }

    #[test]
    fn bytes_per_packet_come_from_growth_over_stored_packets() {
        let ops = parse_ops(
            "{\"transport\":\"nats\",\"binary_bytes\":17000000,\"first_ack_ms\":150.0,\"rss_idle_kb\":10240,\"rss_after_kb\":20480,\"disk_bytes\":1102000}\n\n\
             {\"transport\":\"kafka\",\"storage\":\"memory storage\",\"disk_bytes\":5}\n\
             {\"transport\":\"redis\",\"error\":\"no receipt within 30 s\"}\n",
            "ops",
        )
        .unwrap();
        let sqlite_disk = json!({ "transport": "sqlite", "status": "measured", "deposited": 2000,
            "envelope": { "kind": "disk", "bytes": 612.5 } });
        let kafka = json!({ "transport": "kafka", "status": "measured", "deposited": 2000,
            "envelope": { "kind": "wire", "packets": 200 } });
        let rows = merge(&ops, &[sqlite_disk, kafka, nats_compare()]);
        assert_eq!(rows.len(), 3);
        // 2000 scenario packets + 200 counted on the wire + 1 warm-up.
        assert_eq!(rows[0].packets_stored, Some(2201));
        assert_eq!(rows[0].disk_bytes_per_packet, Some(1102000.0 / 2201.0));
        assert_eq!(rows[1].disk_bytes_per_packet, None);
        assert_eq!(rows[1].disk_note.as_deref(), Some("memory storage"));
        assert_eq!(rows[2].compare, Value::Null);
        assert_eq!(rows[2].disk_note.as_deref(), Some("not measured"));
    }

    #[test]
    fn sqlite_takes_the_file_size_compare_measured_and_similarity_counts_its_top_up() {
        let ops = [
            Ops {
                transport: "sqlite".into(),
                ..Ops::default()
            },
            Ops {
                transport: "chroma".into(),
                disk_bytes: Some(10_201_000),
                ..Ops::default()
            },
        ];
        let rows = merge(
            &ops,
            &[
                json!({ "transport": "sqlite", "status": "measured", "deposited": 2000,
                        "envelope": { "kind": "disk", "bytes": 612.5 } }),
                json!({ "transport": "chroma", "status": "measured", "deposited": 2000,
                        "similar": { "stored": 10000 },
                        "envelope": { "kind": "wire", "packets": 200 } }),
            ],
        );
        assert_eq!(rows[0].disk_bytes_per_packet, Some(612.5));
        assert_eq!(rows[1].packets_stored, Some(10_201));
        assert_eq!(rows[1].disk_bytes_per_packet, Some(1000.0));
    }

    #[test]
    fn the_table_says_what_each_cell_is() {
        let ops = [
            Ops {
                transport: "nats".into(),
                server: Some("nats-server v2.15.1".into()),
                binary_bytes: Some(16_800_000),
                listen_ms: Some(40.0),
                first_ack_ms: Some(152.34),
                warm_deposit_ms: Some(12.0),
                rss_idle_kb: Some(10_000),
                rss_after_kb: Some(30_000),
                disk_bytes: Some(2_201_000),
                load_1m: Some(3.25),
                ..Ops::default()
            },
            Ops {
                transport: "sqlite".into(),
                binary_bytes: Some(1_300_000),
                binary_note: Some("added to qis".into()),
                rss_note: Some("no server".into()),
                ..Ops::default()
            },
            Ops {
                transport: "kafka".into(),
                storage: Some("memory storage".into()),
                error: Some("failed to | start".into()),
                ..Ops::default()
            },
        ];
        let rows = merge(&ops, &[nats_compare()]);
        let meta = SeriesMeta {
            date: "2026-12-02".into(),
            machine: "linux x86_64".into(),
            cores: 2,
            packets: 2000,
            command: Some("scripts/series.sh".into()),
        };
        let md = render(&rows, &meta);
        assert_eq!(md[2].matches(" | ").count(), HEADER.len() - 1);
        assert_eq!(
            md[4],
            "| nats | nats-server v2.15.1 | 16.8 MB | 40.0 ms | 152.3 ms | 12.0 ms | 10.2 MB | 30.7 MB | 1,000 | yes | 1,500 | 25,000 | 40,000 | 0.420 ms |"
        );
        assert_eq!(
            md[5],
            "| sqlite | n/a | 1.3 MB (added to qis) | n/a | n/a | n/a | no server | no server | not measured | n/a | not run | not run | not run | n/a |"
        );
        assert!(
            md[6].starts_with("| kafka | n/a | n/a | n/a | failed to / start |"),
            "{}",
            md[6]
        );
        assert!(
            md[6].contains("| memory storage | no (as started here) |"),
            "{}",
            md[6]
        );
        assert!(md.iter().any(|l| l == "Command: `scripts/series.sh`"));
        assert!(md
            .iter()
            .any(|l| l == "Load average (1 min) at each start, on 2 cores: nats 3.2."));
        let j = json(&rows, &meta);
        assert_eq!(j["rows"][0]["transport"], "nats");
        assert_eq!(j["rows"][0]["disk_bytes_per_packet"], 1000.0);
        assert_eq!(j["rows"][0]["compare"]["fetch_ack_per_sec"], 40000.0);
        assert_eq!(j["rows"][2]["storage"], "memory storage");
    }

    #[test]
    fn a_bad_figures_line_names_the_file_and_line() {
        let e = parse_ops("{\"transport\":\"nats\"}\nnot json\n", "ops.jsonl").unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.starts_with("ops.jsonl line 2:"), "{}", e.message);
    }

    #[test]
    fn the_chart_is_written() {
        let tmp = qis_conformance::support::TempDir::new("series-test");
        let dir = tmp.path();
        let ops = [Ops {
            transport: "nats".into(),
            binary_bytes: Some(16_800_000),
            first_ack_ms: Some(150.0),
            ..Ops::default()
        }];
        let rows = merge(&ops, &[nats_compare()]);
        let path = dir.join("series.svg");
        chart::write_panels(&path, "t", &["nats"], &panels(&rows), (2, 4)).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("cold start → first ack (ms)"));
        assert!(svg.contains("no server"));
    }
}
