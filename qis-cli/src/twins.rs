//! `qis twins`: a durable fetch of the twins' packets, printed, then acked.

use std::time::Duration;

use qis::{ConsumerConfig, Delivery, DynTransport, OutcomeTransportExt, Subject, SubjectPattern};

use crate::cli::{ConsumerFlags, TwinsArgs};
use crate::error::CliError;
use crate::input::connect;
use crate::show;

/// After the first batch, how long to wait for more before stopping.
const MORE_WAIT: Duration = Duration::from_millis(200);

/// Check the consumer flags without a transport: tokens and the consumer name.
pub fn precheck(flags: &ConsumerFlags) -> Result<(), CliError> {
    let subject = Subject::readable(&Subject::default(), &flags.domain, &flags.problem_class)?;
    ConsumerConfig::new(flags.consumer.clone(), SubjectPattern::from(&subject))?;
    Ok(())
}

/// Fetch up to `--max` packets on the readable subject of DOMAIN/PROBLEM_CLASS
/// with the durable consumer `--consumer`, waiting up to `--wait` for the
/// first. Each batch is handed to `each` and then acked, so a batch that
/// could not be handled comes back later.
pub async fn fetch(
    transport: &DynTransport,
    flags: &ConsumerFlags,
    mut each: impl FnMut(&Delivery) -> Result<(), CliError>,
) -> Result<Vec<Delivery>, CliError> {
    let consumer = transport
        .twins_consumer(&flags.consumer, &flags.domain, &flags.problem_class)
        .await?;
    let max = flags.max as usize;
    let mut all: Vec<Delivery> = Vec::new();
    let result = async {
        let mut wait = flags.wait;
        while all.len() < max {
            let batch = consumer.fetch(max - all.len(), wait).await?;
            if batch.is_empty() {
                break;
            }
            for d in &batch {
                each(d)?;
            }
            consumer.ack(&batch).await?;
            all.extend(batch);
            wait = flags.wait.min(MORE_WAIT);
        }
        Ok::<(), CliError>(())
    }
    .await;
    let closed = consumer.close().await;
    result?;
    closed?;
    Ok(all)
}

/// Run `qis twins`.
pub async fn run(url: &str, prefix: Option<&Subject>, args: TwinsArgs) -> Result<(), CliError> {
    precheck(&args.consumer)?;
    let transport = connect(url, prefix).await?;
    let json = args.json;
    let result = fetch(&transport, &args.consumer, |d| {
        if json {
            show::json_line(&show::delivery_json(d))
        } else {
            show::line(&show::delivery_text(d))
        }
    })
    .await;
    let closed = transport.close().await;
    let got = result?;
    closed?;
    let c = &args.consumer;
    if got.is_empty() {
        eprintln!(
            "qis: no packets for consumer {} on {}.{} within {:?}",
            c.consumer, c.domain, c.problem_class, c.wait
        );
    } else {
        eprintln!(
            "qis: {} packet{} fetched and acked by consumer {}",
            got.len(),
            if got.len() == 1 { "" } else { "s" },
            c.consumer
        );
    }
    Ok(())
}
