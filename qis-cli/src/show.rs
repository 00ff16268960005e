//! How packets, receipts and deliveries look on stdout: one readable line
//! each, or one JSON object per line.

use std::io::{self, Write};

use qis::{Delivery, OutcomePacket, PacketId, Position, Receipt, Received};
use serde_json::{json, Value};

use crate::error::CliError;

/// Write one line to stdout. A closed pipe stops the command quietly.
pub fn line(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                CliError::stdout_closed()
            } else {
                CliError::runtime(format!("cannot write to stdout: {e}"))
            }
        })
}

/// Write a JSON value as one line.
pub fn json_line(v: &Value) -> Result<(), CliError> {
    line(&v.to_string())
}

/// `url` for display: a password in it is replaced by `***`.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Unix seconds as an RFC 3339 UTC time with milliseconds:
/// `2025-11-24T23:52:10.123Z`.
pub fn utc(secs: f64) -> String {
    if !(0.0..=253_402_300_799.0).contains(&secs) {
        return format!("{secs}");
    }
    let ms_total = (secs * 1000.0).round() as i64;
    let days = ms_total.div_euclid(86_400_000);
    let ms_of_day = ms_total.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
}

/// A position as JSON: `{"sequence":5}`, `{"partition":0,"offset":7}` or
/// `{"stream_id":"1700000000000-0"}`.
pub fn position_json(p: &Position) -> Value {
    match p {
        Position::Sequence(s) => json!({ "sequence": s }),
        Position::Offset { partition, offset } => {
            json!({ "partition": partition, "offset": offset })
        }
        Position::StreamId { ms, seq } => json!({ "stream_id": format!("{ms}-{seq}") }),
    }
}

/// A receipt as one logfmt-style line.
pub fn receipt_text(r: &Receipt) -> String {
    format!(
        "subject={} id={} position=\"{}\" duplicate={}",
        r.subject, r.id, r.position, r.duplicate
    )
}

/// A receipt as JSON.
pub fn receipt_json(r: &Receipt) -> Value {
    json!({
        "subject": r.subject.as_str(),
        "id": r.id.to_hex(),
        "position": position_json(&r.position),
        "duplicate": r.duplicate,
    })
}

fn short(id: &PacketId) -> String {
    id.to_hex()[..12].to_string()
}

fn context_text(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", parts.join(","))
}

/// A packet as one readable line: time, subject, agent@node, confidence,
/// conclusion, context, short id.
pub fn packet_text(subject: &str, id: &PacketId, p: &OutcomePacket) -> String {
    format!(
        "{}  {}  {}@{}  conf {:.2}  {:?}  ctx {}  id {}",
        utc(p.timestamp),
        subject,
        p.agent_id,
        p.source_node,
        p.confidence,
        p.conclusion,
        context_text(&p.context_vector),
        short(id)
    )
}

/// A live packet as JSON.
pub fn received_json(r: &Received) -> Value {
    json!({
        "subject": r.subject,
        "id": r.id.to_hex(),
        "packet": r.packet,
    })
}

/// A durable delivery as one readable line (with its position, and the
/// delivery count when it is a redelivery).
pub fn delivery_text(d: &Delivery) -> String {
    let mut s = packet_text(d.subject(), &d.id(), d.packet());
    s.push_str(&format!("  {}", d.position));
    if d.delivery_count > 1 {
        s.push_str(&format!("  delivery {}", d.delivery_count));
    }
    s
}

/// A durable delivery as JSON.
pub fn delivery_json(d: &Delivery) -> Value {
    json!({
        "subject": d.subject(),
        "id": d.id().to_hex(),
        "position": position_json(&d.position),
        "delivery_count": d.delivery_count,
        "packet": d.packet(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redacted("nats://user:pw@h:4222"), "nats://user:***@h:4222");
        assert_eq!(redacted("sqlite://qis.db"), "sqlite://qis.db");
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_764_000_000.25), "2025-11-24T16:00:00.250Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(f64::NAN), "NaN");
    }
}
