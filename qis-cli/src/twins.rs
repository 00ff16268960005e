//! `qis twins`: a durable fetch of the twins' packets, printed, then acked;
//! or, with `--similar-to`, the stored packets most like a context vector.

use std::time::Duration;

use qis::similar::merge;
use qis::{
    ConsumerConfig, Delivery, DynTransport, OutcomeTransportExt, SimilarityQuery, Subject,
    SubjectPattern,
};
use serde_json::json;

use crate::cli::{ConsumerFlags, TwinsArgs};
use crate::error::CliError;
use crate::input::connect;
use crate::show;

/// After the first batch, how long to wait for more before stopping.
const MORE_WAIT: Duration = Duration::from_millis(200);

/// Check the consumer flags without a transport: tokens and the consumer
/// name (when one is given).
pub fn precheck(flags: &ConsumerFlags) -> Result<(), CliError> {
    let subject = Subject::readable(&Subject::default(), &flags.domain, &flags.problem_class)?;
    if let Some(name) = &flags.consumer {
        ConsumerConfig::new(name.clone(), SubjectPattern::from(&subject))?;
    }
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
    let name = flags.consumer.as_deref().unwrap_or_default();
    let consumer = transport
        .twins_consumer(name, &flags.domain, &flags.problem_class)
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

/// `--k`, or the default number of neighbours.
fn k(args: &TwinsArgs) -> usize {
    args.k.unwrap_or(qis::DEFAULT_SIMILAR_K)
}

/// The similarity queries of `--similar-to` (built before connecting, so bad
/// input never touches the store): on the readable subject and below it.
fn similar_queries(
    prefix: &Subject,
    args: &TwinsArgs,
    vector: &[f64],
) -> Result<Vec<SimilarityQuery>, CliError> {
    let c = &args.consumer;
    let readable = Subject::readable(prefix, &c.domain, &c.problem_class)?;
    [SubjectPattern::from(&readable), readable.all_below()]
        .into_iter()
        .map(|pattern| {
            let q = SimilarityQuery::new(pattern, vector.to_vec(), k(args))?;
            Ok(match args.min_score {
                Some(min) => q.with_min_score(min)?,
                None => q,
            })
        })
        .collect()
}

/// `qis twins --similar-to`: print the most similar packets, best first.
async fn similar(
    url: &str,
    prefix: Option<&Subject>,
    args: &TwinsArgs,
    vector: &[f64],
) -> Result<(), CliError> {
    // Validate against the default prefix first, then build for the real one.
    similar_queries(&Subject::default(), args, vector)?;
    let transport = connect(url, prefix).await?;
    let result = async {
        let mut lists = Vec::new();
        for q in similar_queries(transport.prefix(), args, vector)? {
            lists.push(transport.similar(&q).await?);
        }
        Ok::<_, CliError>(merge(k(args), lists))
    }
    .await;
    let closed = transport.close().await;
    let found = result?;
    closed?;
    for s in &found {
        if args.json {
            show::json_line(&json!({
                "score": s.score,
                "subject": s.subject(),
                "id": s.id().to_hex(),
                "packet": s.packet(),
            }))?;
        } else {
            show::line(&format!(
                "score {:.4}  {}",
                s.score,
                show::packet_text(s.subject(), &s.id(), s.packet())
            ))?;
        }
    }
    let c = &args.consumer;
    eprintln!(
        "qis: {} similar packet{} on {}.{}",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        c.domain,
        c.problem_class
    );
    Ok(())
}

/// Run `qis twins`.
pub async fn run(url: &str, prefix: Option<&Subject>, args: TwinsArgs) -> Result<(), CliError> {
    precheck(&args.consumer)?;
    if let Some(vector) = &args.similar_to {
        return similar(url, prefix, &args, &vector.0).await;
    }
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
    let name = c.consumer.as_deref().unwrap_or_default();
    if got.is_empty() {
        eprintln!(
            "qis: no packets for consumer {} on {}.{} within {:?}",
            name, c.domain, c.problem_class, c.wait
        );
    } else {
        eprintln!(
            "qis: {} packet{} fetched and acked by consumer {}",
            got.len(),
            if got.len() == 1 { "" } else { "s" },
            name
        );
    }
    Ok(())
}
