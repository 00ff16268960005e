//! `qis watch`: live packets as they arrive, until Ctrl-C (or SIGTERM) or
//! `--count`.

use futures::StreamExt;
use qis::Subject;

use crate::cli::WatchArgs;
use crate::error::CliError;
use crate::input::connect;
use crate::show;
use crate::signals::Signals;

/// Run `qis watch`.
pub async fn run(url: &str, prefix: Option<&Subject>, args: WatchArgs) -> Result<(), CliError> {
    let transport = connect(url, prefix).await?;
    let pattern = args
        .pattern
        .clone()
        .unwrap_or_else(|| transport.prefix().all_below());
    let result = async {
        let mut live = transport.subscribe(pattern.clone()).await?;
        let mut signals = Signals::listen()?;
        // Said once the subscription is active: a packet deposited from now on is shown.
        eprintln!(
            "qis: watching {pattern} on {} (Ctrl-C to stop)",
            show::redacted(url)
        );
        let mut seen = 0u64;
        while args.count.is_none_or(|n| seen < n) {
            tokio::select! {
                _ = signals.next() => break,
                item = live.next() => match item {
                    None => return Err(CliError::runtime(format!(
                        "the live subscription to {pattern} ended: the {} transport closed it",
                        transport.name()
                    ))),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(r)) => {
                        seen += 1;
                        if args.json {
                            show::json_line(&show::received_json(&r))?;
                        } else {
                            show::line(&show::packet_text(&r.subject, &r.id, &r.packet))?;
                        }
                    }
                },
            }
        }
        Ok(())
    }
    .await;
    let closed = transport.close().await;
    result?;
    Ok(closed?)
}
