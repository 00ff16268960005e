//! `qis compare`: the same swarm scenario on several transports, measured,
//! printed as a table and drawn as an SVG chart.
//!
//! Each transport runs on a fresh random prefix, so repeated runs against the
//! same servers do not see each other's packets. A transport whose server is
//! not reachable (or that is not compiled in) is listed as such, never skipped.

mod chart;
mod scenario;
pub mod series;
mod similar;
mod table;
mod wire;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;

use crate::cli::{BackendName, CompareArgs};
use crate::error::CliError;
use crate::show;
use scenario::{BackendRun, Outcome};

/// When and where the comparison ran.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Packets per transport.
    pub packets: usize,
    /// UTC date, YYYY-MM-DD.
    pub date: String,
    /// OS and architecture.
    pub machine: String,
    /// Cores available to the process.
    pub cores: usize,
    /// qis-cli version.
    pub version: &'static str,
}

/// `--urls name=url,...` → pairs. A URL may itself contain commas (several
/// Kafka brokers): a new pair starts only at `<transport>=`.
fn parse_urls(args: &[String]) -> Result<Vec<(BackendName, String)>, CliError> {
    let mut out: Vec<(BackendName, String)> = Vec::new();
    for arg in args {
        for piece in arg.split(',') {
            let named = piece
                .split_once('=')
                .and_then(|(name, url)| BackendName::from_str(name, true).ok().map(|b| (b, url)));
            match (named, out.last_mut()) {
                (Some((b, url)), _) => out.push((b, url.to_string())),
                (None, Some((_, url))) => {
                    url.push(',');
                    url.push_str(piece);
                }
                (None, None) => {
                    return Err(CliError::usage(format!(
                        "--urls {arg:?}: give name=url pairs, e.g. nats=nats://127.0.0.1:4222,redis=redis://127.0.0.1:6379"
                    )))
                }
            }
        }
    }
    Ok(out)
}

/// The URL a transport is compared on, or why there is none.
fn url_for(
    b: BackendName,
    overrides: &[(BackendName, String)],
    tmp: &std::path::Path,
) -> Result<String, String> {
    if let Some((_, url)) = overrides.iter().rev().find(|(n, _)| *n == b) {
        return Ok(url.clone());
    }
    let env = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("no URL: set {var} or pass --urls {}=URL", b.as_str()))
    };
    match b {
        BackendName::Memory => Ok("memory://".into()),
        BackendName::Sqlite => Ok(format!("sqlite://{}", tmp.join("compare.db").display())),
        BackendName::Nats => env("QIS_NATS_URL"),
        BackendName::Redis => env("QIS_REDIS_URL"),
        BackendName::Kafka => env("QIS_KAFKA_URL"),
        BackendName::Chroma => env("QIS_CHROMA_URL"),
    }
}

fn progress(name: &str, len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>7} {msg:14} [{bar:32}] {pos}/{len} {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(name.to_string());
    bar
}

/// A temporary folder for the SQLite file, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, CliError> {
        let dir = std::env::temp_dir().join(format!(
            "qis-compare-{}-{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError::runtime(format!("cannot create {}: {e}", dir.display())))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `qis compare`.
pub async fn run(args: CompareArgs) -> Result<(), CliError> {
    let overrides = parse_urls(&args.urls)?;
    let mut transports = Vec::new();
    for t in args.transports {
        if !transports.contains(&t) {
            transports.push(t);
        }
    }
    let n = args.packets as usize;
    let meta = Meta {
        packets: n,
        date: show::utc(qis::timestamp_now())[..10].to_string(),
        machine: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        cores: std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1),
        version: env!("CARGO_PKG_VERSION"),
    };
    let tmp = TempDir::new()?;
    let mut runs: Vec<BackendRun> = Vec::new();
    for b in transports {
        let name = b.as_str();
        let run = match url_for(b, &overrides, &tmp.0) {
            Err(why) => BackendRun {
                name,
                url: String::new(),
                outcome: Outcome::Unreachable(why),
            },
            Ok(url) => {
                let bar = progress(name, (2 * n + scenario::WIRE_PACKETS.min(n)) as u64);
                let run = scenario::run(name, &url, n, args.similar_stored as usize, &bar).await;
                bar.finish_and_clear();
                run
            }
        };
        match &run.outcome {
            Outcome::Measured(_) => tracing::info!(transport = name, "measured"),
            other => tracing::info!(transport = name, outcome = ?other, "not measured"),
        }
        runs.push(run);
    }
    drop(tmp);

    if args.json {
        show::json_line(&table::json(&runs, &meta))?;
    } else {
        for l in table::render(&runs, &meta) {
            show::line(&l)?;
        }
    }
    chart::write(&args.svg, &runs, &meta).map_err(|e| {
        CliError::runtime(format!(
            "cannot write the chart to {}: {e}",
            args.svg.display()
        ))
    })?;
    eprintln!("qis: chart written to {}", args.svg.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_on_names_only() {
        let got = parse_urls(&[
            "nats=nats://a:1,kafka=kafka://b:2,c:3".into(),
            "redis=redis://r?x=1".into(),
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![
                (BackendName::Nats, "nats://a:1".to_string()),
                (BackendName::Kafka, "kafka://b:2,c:3".to_string()),
                (BackendName::Redis, "redis://r?x=1".to_string()),
            ]
        );
        assert_eq!(parse_urls(&["nats://a:1".into()]).unwrap_err().code, 2);
    }
}
