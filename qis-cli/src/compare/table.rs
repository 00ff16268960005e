//! The comparison as a Markdown table (readable in a terminal, pasteable in
//! a README), with a footer saying how each figure is measured.

use qis::Capabilities;
use serde_json::{json, Value};

use super::scenario::{
    BackendRun, Envelope, Measurement, Outcome, Plan, AGENTS, BATCH, CLASSES, FETCH_MAX,
};
use super::similar::K as SIMILAR_K;
use super::Meta;

/// Thousands separators: 12345.6 → "12,346".
pub fn count(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with a sensible number of decimals.
pub fn millis(ms: f64) -> String {
    if !ms.is_finite() {
        "n/a".into()
    } else if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// The delivery guarantees a backend offers.
pub fn delivery(c: &Capabilities) -> String {
    let mut parts = Vec::new();
    if c.durable {
        parts.push("at-least-once");
    }
    if c.live {
        parts.push("live at-most-once");
    }
    if c.fire_and_forget {
        parts.push("fire-and-forget");
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" + ")
    }
}

/// Whether stored packets survive a restart.
pub fn persistence(c: &Capabilities) -> &'static str {
    if c.persistent {
        "yes"
    } else {
        "no"
    }
}

fn envelope_cell(e: &Envelope) -> String {
    match e {
        Envelope::Wire { up, down, .. } => format!("{} up / {} down", count(*up), count(*down)),
        Envelope::Disk {
            bytes,
            at_rest: true,
        } => format!("{} on disk", count(*bytes)),
        Envelope::Disk {
            bytes,
            at_rest: false,
        } => format!("{} on disk incl. WAL", count(*bytes)),
        Envelope::NotMeasured(_) => "n/a".into(),
    }
}

fn row(m: &Measurement) -> Vec<String> {
    let (p50, p99) = match &m.live {
        None => ("n/a".to_string(), "n/a".to_string()),
        Some(l) if l.received < l.sent => (
            format!("{} ({}/{} seen)", millis(l.p50_ms), l.received, l.sent),
            millis(l.p99_ms),
        ),
        Some(l) => (millis(l.p50_ms), millis(l.p99_ms)),
    };
    let fetch = match &m.fetch_ack {
        None => "n/a".to_string(),
        Some(f) if f.packets < m.deposited => {
            format!(
                "{} ({}/{} fetched)",
                count(f.per_sec()),
                f.packets,
                m.deposited
            )
        }
        Some(f) => count(f.per_sec()),
    };
    vec![
        delivery(&m.caps),
        persistence(&m.caps).into(),
        if m.caps.dedup { "yes" } else { "no" }.into(),
        count(m.single.per_sec()),
        count(m.batch.per_sec()),
        fetch,
        p50,
        p99,
        format!("{:.0}", m.body_mean),
        envelope_cell(&m.envelope),
    ]
}

const HEADER: [&str; 11] = [
    "transport",
    "delivery",
    "persistent",
    "dedup",
    "deposit 1×1 /s",
    "deposit batch /s",
    "fetch+ack /s",
    "live p50",
    "live p99",
    "body B",
    "wire or disk B/packet",
];

/// The table and its footer, as lines.
pub fn render(runs: &[BackendRun], meta: &Meta) -> Vec<String> {
    let mut lines = vec![
        format!(
            "qis compare: {} packets per transport, {}, {} ({} cores), qis {}",
            meta.packets, meta.date, meta.machine, meta.cores, meta.version
        ),
        String::new(),
        format!("| {} |", HEADER.join(" | ")),
        format!("|{}", "---|".repeat(HEADER.len())),
    ];
    let dash = || "—".to_string();
    for r in runs {
        let mut cells = vec![r.name.to_string()];
        match &r.outcome {
            Outcome::Measured(m) => cells.extend(row(m)),
            other => {
                cells.push(match other {
                    Outcome::NotBuilt(why) => format!("not built in: {why}"),
                    Outcome::Unreachable(why) => format!("unreachable: {why}"),
                    Outcome::Failed { phase, reason } => format!("failed in {phase}: {reason}"),
                    Outcome::Measured(_) => unreachable!(),
                });
                cells.extend(std::iter::repeat_with(dash).take(HEADER.len() - 2));
            }
        }
        let cells: Vec<String> = cells.into_iter().map(|c| c.replace('|', "/")).collect();
        lines.push(format!("| {} |", cells.join(" | ")));
    }
    let live_plan = Plan::new(meta.packets, true);
    lines.push(String::new());
    lines.extend([
        format!(
            "Scenario: {} distinct packets per transport from a swarm of {AGENTS} HVAC agents on {} problem classes, on a fresh random prefix.",
            meta.packets,
            CLASSES.len()
        ),
        format!(
            "deposit 1×1: the first {} deposits, each awaited before the next (at most 5 s). deposit batch: the rest in batches of {BATCH} (acks in flight).",
            live_plan.single
        ),
        format!(
            "live p50/p99: {} more deposits (where live exists), each awaited and then awaited on a live subscription to PREFIX.> before the next: unloaded deposit → live latency. n/a: no live subscriptions.",
            live_plan.latency
        ),
        format!(
            "fetch+ack: a new durable consumer on PREFIX.> fetching up to {FETCH_MAX} at a time and acking each batch until every packet came, from the first fetch to the last ack; distinct packets per second."
        ),
        "body B: mean compact-JSON body. wire or disk B/packet: for servers, TCP payload bytes per deposit on the transport's loopback connections, client→server (up) and server→client (down), counted by a pass-through proxy over extra deposits awaited one at a time after connecting and one warm-up deposit: body + framing + subject + id + ack; for sqlite, the database file once closed (write-ahead log folded back in) over the packets stored: body + row + indexes + schema; memory has neither.".to_string(),
    ]);
    lines.extend(similar_table(runs));
    for r in runs {
        if let Outcome::Measured(m) = &r.outcome {
            if let Envelope::NotMeasured(why) = &m.envelope {
                if r.name != "memory" {
                    lines.push(format!("{}: wire bytes n/a: {why}.", r.name));
                }
            }
            if m.redelivered > 0 {
                lines.push(format!(
                    "{}: {} deliveries during fetch+ack were redeliveries of packets already seen.",
                    r.name, m.redelivered
                ));
            }
        }
    }
    lines
}

/// The similarity row of each measured backend: query latency at the
/// number of packets stored, or why there is none.
fn similar_table(runs: &[BackendRun]) -> Vec<String> {
    let measured: Vec<(&str, &Measurement)> = runs
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Measured(m) => Some((r.name, &**m)),
            _ => None,
        })
        .collect();
    if measured.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![
        String::new(),
        "| transport | similar twins: stored | query p50 | query p99 | queries |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    for (name, m) in measured {
        let cells = match &m.similar {
            Some(Ok(s)) => vec![
                count(s.stored as f64),
                millis(s.p50_ms),
                millis(s.p99_ms),
                s.queries.to_string(),
            ],
            Some(Err(why)) => vec![
                format!("failed: {}", why.replace('|', "/")),
                "—".into(),
                "—".into(),
                "—".into(),
            ],
            None if m.caps.similarity => vec![
                "not run (--similar-stored 0)".into(),
                "—".into(),
                "—".into(),
                "—".into(),
            ],
            None => vec![
                "no similarity search".into(),
                "—".into(),
                "—".into(),
                "—".into(),
            ],
        };
        lines.push(format!("| {name} | {} |", cells.join(" | ")));
    }
    lines.push(format!(
        "similar twins: packets stored under the run's prefix (the scenario's, topped up with more of the same swarm), then one similarity query at a time for the {SIMILAR_K} nearest under PREFIX.> to a random 4-number vector, up to {} queries or 5 s; p50/p99 of the query round trip.",
        super::similar::QUERIES
    ));
    lines
}

/// The results as JSON.
pub fn json(runs: &[BackendRun], meta: &Meta) -> Value {
    let rows: Vec<Value> = runs
        .iter()
        .map(|r| {
            let mut v = json!({ "transport": r.name, "url": crate::show::redacted(&r.url) });
            let o = v.as_object_mut().expect("an object");
            match &r.outcome {
                Outcome::NotBuilt(why) => {
                    o.insert("status".into(), "not built in".into());
                    o.insert("reason".into(), why.clone().into());
                }
                Outcome::Unreachable(why) => {
                    o.insert("status".into(), "unreachable".into());
                    o.insert("reason".into(), why.clone().into());
                }
                Outcome::Failed { phase, reason } => {
                    o.insert("status".into(), "failed".into());
                    o.insert("reason".into(), format!("{phase}: {reason}").into());
                }
                Outcome::Measured(m) => {
                    o.insert("status".into(), "measured".into());
                    o.insert("prefix".into(), m.prefix.clone().into());
                    o.insert("delivery".into(), delivery(&m.caps).into());
                    o.insert("persistent".into(), m.caps.persistent.into());
                    o.insert("dedup".into(), m.caps.dedup.into());
                    o.insert("deposit_single_per_sec".into(), m.single.per_sec().into());
                    o.insert("deposit_batch_per_sec".into(), m.batch.per_sec().into());
                    o.insert(
                        "fetch_ack_per_sec".into(),
                        m.fetch_ack.map(|f| f.per_sec()).into(),
                    );
                    o.insert("deposited".into(), m.deposited.into());
                    o.insert("fetched".into(), m.fetch_ack.map(|f| f.packets).into());
                    o.insert(
                        "similar".into(),
                        match &m.similar {
                            None => Value::Null,
                            Some(Ok(s)) => json!({
                                "stored": s.stored, "queries": s.queries, "k": SIMILAR_K,
                                "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                            }),
                            Some(Err(why)) => json!({ "error": why }),
                        },
                    );
                    o.insert("redelivered".into(), m.redelivered.into());
                    o.insert(
                        "live".into(),
                        match &m.live {
                            None => Value::Null,
                            Some(l) => json!({
                                "p50_ms": l.p50_ms, "p99_ms": l.p99_ms,
                                "received": l.received, "sent": l.sent,
                            }),
                        },
                    );
                    o.insert("body_bytes_mean".into(), m.body_mean.into());
                    o.insert(
                        "envelope".into(),
                        match &m.envelope {
                            Envelope::Wire { up, down, packets } => {
                                json!({ "kind": "wire", "up_bytes": up, "down_bytes": down, "packets": packets })
                            }
                            Envelope::Disk { bytes, at_rest } => {
                                json!({ "kind": "disk", "bytes": bytes, "wal_folded_in": at_rest })
                            }
                            Envelope::NotMeasured(why) => json!({ "kind": "n/a", "reason": why }),
                        },
                    );
                }
            }
            v
        })
        .collect();
    json!({
        "packets": meta.packets,
        "date": meta.date,
        "machine": meta.machine,
        "cores": meta.cores,
        "version": meta.version,
        "results": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.4), "999");
        assert_eq!(count(1234.0), "1,234");
        assert_eq!(count(1_234_567.0), "1,234,567");
        assert_eq!(millis(0.1234), "0.123 ms");
        assert_eq!(millis(3.456), "3.46 ms");
        assert_eq!(millis(45.67), "45.7 ms");
    }
}
