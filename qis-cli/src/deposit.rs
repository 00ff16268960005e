//! `qis deposit`: build, validate and deposit packets; print their receipts.

use qis::{Fingerprint, OutcomeTransportExt, Subject};

use crate::cli::{DepositArgs, Output};
use crate::error::CliError;
use crate::input::{connect, packet_from_flags, packets_from_json};
use crate::show;

/// Run `qis deposit`.
pub async fn run(url: &str, prefix: Option<&Subject>, args: DepositArgs) -> Result<(), CliError> {
    let packets = match &args.json {
        Some(path) => packets_from_json(path)?,
        None => vec![packet_from_flags(
            args.domain.as_deref(),
            args.problem_class.as_deref(),
            &args.own,
            "--json FILE ('-' for stdin)",
        )?],
    };
    // Everything that can be checked without the transport is checked before
    // connecting, so bad input never creates a file or a connection.
    for p in &packets {
        p.encode()?;
        if let Some(res) = args.fingerprint {
            Fingerprint::compute(&p.domain, &p.problem_class, &p.context_vector, res)?;
        }
    }
    let transport = connect(url, prefix).await?;
    let result = async {
        for p in &packets {
            let receipt = match args.fingerprint {
                Some(res) => transport.deposit_fingerprinted(p, res).await?,
                None => transport.deposit(p).await?,
            };
            tracing::debug!(subject = %receipt.subject, id = %receipt.id, "deposited");
            match args.output {
                Output::Text => show::line(&show::receipt_text(&receipt))?,
                Output::Json => show::json_line(&show::receipt_json(&receipt))?,
            }
        }
        Ok::<(), CliError>(())
    }
    .await;
    let closed = transport.close().await;
    result?;
    Ok(closed?)
}
