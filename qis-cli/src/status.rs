//! `qis status`: the durable consumers of a transport with their backlog,
//! listed without opening them; for a SQLite file also how full the store
//! is, its `when_full` policy, what it dropped, and who holds it.

use qis::{ConsumerInfo, DynTransport, Subject, TransportConfig};
use serde_json::{json, Value};

use crate::cli::StatusArgs;
use crate::error::CliError;
use crate::show;

/// How full a SQLite store is.
struct Store {
    packets: u64,
    bytes: u64,
    max_bytes: u64,
    max_age: std::time::Duration,
    when_full: String,
    dropped: u64,
}

/// `n` bytes for people: B, KiB, MiB, GiB.
fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// Connect; for a SQLite file, also read how full its store is. A SQLite
/// file that does not exist is an error (status never creates one).
async fn open(config: TransportConfig) -> Result<(DynTransport, Option<Store>), CliError> {
    #[cfg(feature = "sqlite")]
    if let TransportConfig::Sqlite(c) = &config {
        if !c.path.exists() {
            return Err(CliError::runtime(format!(
                "there is no store at {}: check the path (status does not create one)",
                c.path.display()
            )));
        }
        let t = qis::sqlite::SqliteTransport::connect(c.clone()).await?;
        let (packets, bytes) = t.stored().await?;
        let store = Store {
            packets,
            bytes,
            max_bytes: c.retention.max_bytes,
            max_age: c.retention.max_age,
            when_full: c.when_full.to_string(),
            dropped: t.dropped().await?,
        };
        return Ok((std::sync::Arc::new(t), Some(store)));
    }
    Ok((config.connect().await?, None))
}

fn consumer_json(c: &ConsumerInfo) -> Value {
    json!({
        "name": c.name,
        "pattern": c.pattern,
        "waiting": c.backlog.waiting,
        "unacked": c.backlog.unacked,
    })
}

/// Run `qis status`.
pub async fn run(url: &str, prefix: Option<&Subject>, args: StatusArgs) -> Result<(), CliError> {
    let mut config = TransportConfig::from_url(url)?;
    if let Some(p) = prefix {
        config = config.with_prefix(p.clone());
    }
    let (transport, store) = open(config).await?;
    let listed = transport.consumers().await;
    let closed = transport.close().await;
    let mut consumers = listed?;
    closed?;
    if !args.consumer.is_empty() {
        let missing: Vec<&String> = args
            .consumer
            .iter()
            .filter(|n| !consumers.iter().any(|c| &&c.name == n))
            .collect();
        if !missing.is_empty() {
            let known: Vec<&str> = consumers.iter().map(|c| c.name.as_str()).collect();
            return Err(CliError::runtime(format!(
                "no consumer named {} under {}; there are: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                transport.prefix(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        consumers.retain(|c| args.consumer.contains(&c.name));
    }

    if args.json {
        let store = store.as_ref().map(|s| {
            json!({
                "packets": s.packets,
                "bytes": s.bytes,
                "max_bytes": s.max_bytes,
                "max_age_s": s.max_age.as_secs_f64(),
                "when_full": s.when_full,
                "dropped": s.dropped,
            })
        });
        return show::json_line(&json!({
            "url": show::redacted(url),
            "transport": transport.name(),
            "prefix": transport.prefix().as_str(),
            "store": store,
            "consumers": consumers.iter().map(consumer_json).collect::<Vec<_>>(),
        }));
    }

    show::line(&format!(
        "{} ({}, prefix {})",
        show::redacted(url),
        transport.name(),
        transport.prefix()
    ))?;
    if let Some(s) = &store {
        let share = s.bytes as f64 * 100.0 / s.max_bytes.max(1) as f64;
        show::line(&format!(
            "store: {} packets, {} of {} ({share:.1}%), max age {}, when full: {}, dropped {}",
            s.packets,
            bytes(s.bytes),
            bytes(s.max_bytes),
            humantime_secs(s.max_age),
            s.when_full,
            s.dropped
        ))?;
    }
    if consumers.is_empty() {
        return show::line("no durable consumers");
    }
    let name_w = consumers
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max("CONSUMER".len());
    let pattern_w = consumers
        .iter()
        .map(|c| c.pattern.as_deref().unwrap_or("?").len())
        .max()
        .unwrap_or(0)
        .max("PATTERN".len());
    show::line(&format!(
        "{:name_w$}  {:pattern_w$}  {:>10}  {:>10}",
        "CONSUMER", "PATTERN", "WAITING", "UNACKED"
    ))?;
    for c in &consumers {
        show::line(&format!(
            "{:name_w$}  {:pattern_w$}  {:>10}  {:>10}",
            c.name,
            c.pattern.as_deref().unwrap_or("?"),
            c.backlog.waiting,
            c.backlog.unacked
        ))?;
    }
    if store.is_some() {
        // In a SQLite store, what a consumer has not acked cannot be pruned
        // under when_full=refuse: these consumers hold it.
        let holders: Vec<String> = consumers
            .iter()
            .filter(|c| c.backlog.total() > 0)
            .map(|c| format!("{} ({} packets)", c.name, c.backlog.total()))
            .collect();
        if !holders.is_empty() {
            show::line(&format!(
                "held by: {} (not acked yet, so not pruned under when_full=refuse)",
                holders.join(", ")
            ))?;
        }
    }
    Ok(())
}

/// A duration as `90s`, `2m`, `24h`.
fn humantime_secs(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s > 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else if d.subsec_millis() > 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(50 << 20), "50.0 MiB");
        assert_eq!(
            humantime_secs(std::time::Duration::from_secs(86_400)),
            "24h"
        );
        assert_eq!(humantime_secs(std::time::Duration::from_secs(90)), "90s");
        assert_eq!(
            humantime_secs(std::time::Duration::from_millis(300)),
            "300ms"
        );
    }
}
