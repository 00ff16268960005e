//! `qis bridge`: forward packets from one transport to another until
//! SIGINT/SIGTERM, showing progress; on a signal, finish the batch in flight,
//! ack it, and exit 0.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qis::bridge::{Bridge, BridgeConfig, BridgeStatus, Endpoint, Origin};
use qis::{Subject, TransportConfig};
use serde_json::json;

use crate::cli::BridgeArgs;
use crate::error::CliError;
use crate::show;
use crate::signals::Signals;

/// How often the terminal display is refreshed.
const TICK: Duration = Duration::from_millis(250);

/// One side of the bridge: connected (again) from its URL whenever needed,
/// so a side that is unreachable at start is waited for.
fn endpoint(url: &str, prefix: Option<&Subject>) -> Result<Endpoint, CliError> {
    let mut config = TransportConfig::from_url(url)?;
    if let Some(p) = prefix {
        config = config.with_prefix(p.clone());
    }
    Ok(Endpoint::connect(move || {
        let config = config.clone();
        Box::pin(async move { config.connect().await })
    }))
}

/// The bridge configuration the flags describe.
fn config(args: &BridgeArgs) -> Result<BridgeConfig, CliError> {
    let mut config = BridgeConfig::new(&args.name)?
        .batch(args.batch as usize)
        .ack_wait(args.ack_wait);
    config.backoff.max = args.max_backoff.max(config.backoff.initial);
    if let Some(p) = &args.pattern {
        config = config.pattern(p.clone());
    }
    if !args.origin.is_empty() {
        config = config.origin(Origin::Only(args.origin.clone()));
    } else if !args.except_origin.is_empty() {
        config = config.origin(Origin::Except(args.except_origin.clone()));
    }
    if args.ack_wait <= config.fetch_wait {
        return Err(CliError::usage(format!(
            "--ack-wait {:?} must be longer than a fetch ({:?}), or batches come back before they are forwarded",
            args.ack_wait, config.fetch_wait
        )));
    }
    Ok(config)
}

/// Resolves on the first SIGINT or SIGTERM. A second one ends the process at
/// once (exit 130), without waiting for the batch in flight.
fn on_signal() -> Result<tokio::sync::oneshot::Receiver<&'static str>, CliError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut signals = Signals::listen()?;
    tokio::spawn(async move {
        let _ = tx.send(signals.next().await);
        signals.next().await;
        eprintln!("qis: second signal: stopping now; the batch in flight comes back to the bridge next time");
        std::process::exit(130);
    });
    Ok(rx)
}

/// Forwarding rate over the last interval.
struct Rate {
    at: Instant,
    forwarded: u64,
    per_second: f64,
}

impl Rate {
    fn update(&mut self, s: &BridgeStatus) -> f64 {
        let elapsed = self.at.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            self.per_second = (s.forwarded + s.duplicates - self.forwarded) as f64 / elapsed;
            self.at = Instant::now();
            self.forwarded = s.forwarded + s.duplicates;
        }
        self.per_second
    }
}

/// One readable progress line.
fn text(s: &BridgeStatus, rate: f64) -> String {
    let backlog = match s.backlog {
        Some(b) => format!("backlog {} waiting + {} unacked", b.waiting, b.unacked),
        None => "backlog unknown".to_string(),
    };
    let side = |up: bool| if up { "up" } else { "down" };
    let mut line = format!(
        "bridge {}: forwarded {}, duplicates {}, skipped {}, {backlog}, {rate:.0}/s, source {}, destination {}",
        s.name,
        s.forwarded,
        s.duplicates,
        s.skipped,
        side(s.source_connected),
        side(s.destination_connected),
    );
    if let Some(e) = &s.last_error {
        if !(s.source_connected && s.destination_connected) {
            line.push_str(&format!(" (last error: {e})"));
        }
    }
    line
}

fn json(s: &BridgeStatus, rate: f64, elapsed: Duration, done: bool) -> serde_json::Value {
    json!({
        "status": s,
        "rate": (rate * 10.0).round() / 10.0,
        "elapsed_s": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "stopped": done,
    })
}

/// Run `qis bridge`.
pub async fn run(prefix: Option<&Subject>, args: BridgeArgs) -> Result<(), CliError> {
    let config = config(&args)?;
    let source = endpoint(&args.from, prefix)?;
    let destination = endpoint(&args.to, prefix)?;
    let bridge = Bridge::new(source, destination, config);
    let stop = on_signal()?;
    eprintln!(
        "qis: bridging {} -> {} as {} (Ctrl-C to stop)",
        show::redacted(&args.from),
        show::redacted(&args.to),
        args.name
    );
    let running = {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            bridge
                .run_until(async move {
                    if let Ok(signal) = stop.await {
                        eprintln!("qis: {signal}: finishing the batch in flight, then stopping");
                    }
                })
                .await
        })
    };
    tokio::pin!(running);

    let started = Instant::now();
    let mut rate = Rate {
        at: started,
        forwarded: 0,
        per_second: 0.0,
    };
    let terminal = std::io::stdout().is_terminal() && !args.json;
    let bar = terminal.then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    });
    let every = if terminal {
        TICK
    } else {
        args.interval.max(Duration::from_millis(100))
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            r = &mut running => break r,
            _ = ticks.tick() => {
                let s = bridge.status();
                let r = rate.update(&s);
                match &bar {
                    Some(bar) => {
                        bar.set_message(text(&s, r));
                        bar.tick();
                    }
                    None if args.json => show::json_line(&json(&s, r, started.elapsed(), false))?,
                    None => show::line(&text(&s, r))?,
                }
            }
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let status =
        result.map_err(|e| CliError::runtime(format!("the bridge task failed: {e}")))??;
    let overall = status.forwarded as f64 / started.elapsed().as_secs_f64().max(0.001);
    if args.json {
        show::json_line(&json(&status, overall, started.elapsed(), true))?;
    } else {
        show::line(&format!("{} (stopped)", text(&status, overall)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_says_what_a_person_needs() {
        let mut s = BridgeStatus {
            name: "up".into(),
            forwarded: 120,
            duplicates: 3,
            backlog: Some(qis::Backlog {
                waiting: 40,
                unacked: 10,
            }),
            source_connected: true,
            ..Default::default()
        };
        s.last_error = Some("destination: nats: unreachable".into());
        let line = text(&s, 12.0);
        assert!(line.contains("forwarded 120"), "{line}");
        assert!(line.contains("duplicates 3"), "{line}");
        assert!(line.contains("backlog 40 waiting + 10 unacked"), "{line}");
        assert!(line.contains("12/s"), "{line}");
        assert!(
            line.contains("destination down (last error: destination: nats: unreachable)"),
            "{line}"
        );
    }
}
