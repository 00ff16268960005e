//! # `qis` — the QIS command line
//!
//! A binary a fleet operator uses the way they use `nats` or `redis-cli`:
//! deposit outcome packets, watch them arrive, fetch twins with a durable
//! consumer, synthesise, compute fingerprints, bridge two transports (store
//! and forward), see the consumers' backlog, and measure the transports
//! against each other.
//!
//! ```text
//! qis deposit --agent-id hvac-building-a --domain hvac --problem-class energy-anomaly \
//!     --conclusion "Compressor draw 18% above baseline." --confidence 0.87 \
//!     --context 0.18,0.92,0.03,0.71 --source-node building-a-floor-3
//! echo '{"agent_id":...}' | qis deposit --json -
//! qis watch 'qis.iot.>'                       # live, until Ctrl-C (--count N, --json)
//! qis twins hvac energy-anomaly --consumer building-b [--max 100] [--wait 2s] [--json]
//! qis synth hvac energy-anomaly --consumer building-b --own-json own.json [--json]
//! qis fingerprint --domain hvac --problem-class energy-anomaly --context 0.18,0.92,0.03,0.71
//! qis compare --transports sqlite,nats,redis,kafka --packets 2000 --svg compare.svg
//! qis bridge --from sqlite://outbox.db --to nats://hub:4222 --name up --origin device-7
//! qis --url sqlite://outbox.db status         # consumers, backlog, who holds the store
//! qis --url nats://127.0.0.1:4222 serve --listen 127.0.0.1:8080 --tokens-file tokens.txt
//! qis series-merge --compare compare.json --ops ops.jsonl --out target/series  # scripts/series.sh
//! ```
//!
//! Global options: `--url` (env `QIS_URL`, default `sqlite://qis.db` in the
//! working folder) and `--prefix` (env `QIS_PREFIX`, default `qis.iot`).
//! Transports are compiled in by the features `sqlite` (default), `nats`,
//! `redis`, `kafka` and `full`, which mirror the `qis` crate's.
//!
//! Exit codes: 0 ok; 1 runtime failure (a server unreachable, a timeout, a
//! backend error); 2 usage errors and invalid input (an unknown flag, a
//! confidence of 1.5, a token with upper case, a URL scheme not compiled in).
//! Errors are one line on stderr, `qis: error: …`. Logs go to stderr, filtered
//! by `RUST_LOG` (default `warn`).

mod bridge;
mod cli;
mod compare;
mod deposit;
mod error;
mod fingerprint;
mod input;
mod serve;
mod show;
mod signals;
mod status;
mod synth;
mod twins;
mod watch;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::{CliError, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(&CliError::runtime(format!(
                "cannot start the async runtime: {e}"
            )))
        }
    };
    let result = runtime.block_on(run(cli));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let url = cli.url.as_str();
    let prefix = cli.prefix.as_ref();
    match cli.command {
        Command::Deposit(args) => deposit::run(url, prefix, args).await,
        Command::Watch(args) => watch::run(url, prefix, args).await,
        Command::Twins(args) => twins::run(url, prefix, args).await,
        Command::Synth(args) => synth::run(url, prefix, args).await,
        Command::Fingerprint(args) => fingerprint::run(prefix, &args),
        Command::Compare(args) => compare::run(args).await,
        Command::Bridge(args) => bridge::run(prefix, args).await,
        Command::Status(args) => status::run(url, prefix, args).await,
        Command::Serve(args) => serve::run(url, prefix, args).await,
        Command::SeriesMerge(args) => compare::series::run(args),
    }
}

fn fail(e: &CliError) -> ExitCode {
    if !e.message.is_empty() {
        eprintln!("qis: error: {}", e.message);
    }
    ExitCode::from(e.code)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Help and version print as clap prints them; a usage error becomes one
/// line, `qis: error: …`, with clap's tip and the usage line, and exit 2.
fn clap_exit(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE))
        }
        _ => fail(&CliError::usage(clap_one_line(&e.to_string()))),
    }
}

/// clap's rendered error (message, tips, usage, "for more information") as one line.
fn clap_one_line(rendered: &str) -> String {
    let collapse = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut blocks = rendered.split("\n\n");
    let head = blocks.next().unwrap_or_default().trim();
    let head = head.strip_prefix("error:").unwrap_or(head);
    // "the following required arguments were not provided:" lists one per line.
    let mut lines = head.lines().map(collapse).filter(|l| !l.is_empty());
    let mut out = lines.next().unwrap_or_default();
    let rest: Vec<String> = lines.collect();
    if !rest.is_empty() {
        out.push(' ');
        out.push_str(&rest.join(", "));
    }
    for block in blocks {
        let b = block.trim();
        if let Some(tip) = b.strip_prefix("tip:") {
            out.push_str("; ");
            out.push_str(&collapse(tip));
        } else if let Some(usage) = b.strip_prefix("Usage:") {
            out.push_str(&format!(" (usage: {})", collapse(usage)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let e = Cli::try_parse_from(["qis", "deposit", "--bogus"]).unwrap_err();
        let line = clap_one_line(&e.to_string());
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("unexpected argument '--bogus'"), "{line}");
        assert!(line.contains("(usage: qis deposit"), "{line}");
        let e = Cli::try_parse_from(["qis", "twins", "hvac", "energy-anomaly"]).unwrap_err();
        let line = clap_one_line(&e.to_string());
        assert!(line.contains("--consumer <NAME>"), "{line}");
    }
}
