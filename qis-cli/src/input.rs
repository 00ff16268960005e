//! Turning what the user typed into packets and a connected transport.

use std::io::Read;
use std::path::Path;

use qis::{DynTransport, OutcomePacket, Subject, TransportConfig};

use crate::cli::OwnFlags;
use crate::error::CliError;

/// Connect to the transport `url` names, on `prefix` if one was given (else
/// the URL's or the default `qis.iot`).
pub async fn connect(url: &str, prefix: Option<&Subject>) -> Result<DynTransport, CliError> {
    let mut config = TransportConfig::from_url(url)?;
    if let Some(p) = prefix {
        config = config.with_prefix(p.clone());
    }
    tracing::debug!(url, "connecting");
    Ok(config.connect().await?)
}

fn missing(flag: &str, alternative: &str) -> CliError {
    CliError::usage(format!(
        "missing {flag}: give the packet's fields as flags (--agent-id, --conclusion, --confidence, --source-node, ...) or {alternative}"
    ))
}

/// Build a packet from flags, for `domain`/`problem_class`, and validate it.
/// `alternative` names the other way to give the packet, for the error.
pub fn packet_from_flags(
    domain: Option<&str>,
    problem_class: Option<&str>,
    own: &OwnFlags,
    alternative: &str,
) -> Result<OutcomePacket, CliError> {
    let packet = OutcomePacket {
        agent_id: own
            .agent_id
            .clone()
            .ok_or_else(|| missing("--agent-id", alternative))?,
        domain: domain
            .ok_or_else(|| missing("--domain", alternative))?
            .to_string(),
        problem_class: problem_class
            .ok_or_else(|| missing("--problem-class", alternative))?
            .to_string(),
        conclusion: own
            .conclusion
            .clone()
            .ok_or_else(|| missing("--conclusion", alternative))?,
        confidence: own
            .confidence
            .ok_or_else(|| missing("--confidence", alternative))?,
        context_vector: own.context.clone().map(|c| c.0).unwrap_or_default(),
        timestamp: own.timestamp.unwrap_or_else(qis::timestamp_now),
        source_node: own
            .source_node
            .clone()
            .ok_or_else(|| missing("--source-node", alternative))?,
    };
    packet.validate()?;
    Ok(packet)
}

/// Read every packet from `path` (`-` for stdin): JSON objects with the eight
/// wire keys, one or several one after another. Each is validated.
pub fn packets_from_json(path: &Path) -> Result<Vec<OutcomePacket>, CliError> {
    let (name, bytes) = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::runtime(format!("cannot read stdin: {e}")))?;
        ("stdin".to_string(), buf)
    } else {
        let buf = std::fs::read(path)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
        (path.display().to_string(), buf)
    };
    let mut packets = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<OutcomePacket>()
        .enumerate()
    {
        let packet = item.map_err(|e| {
            CliError::usage(format!(
                "{name}: packet {} is not a valid outcome packet: {e}",
                i + 1
            ))
        })?;
        packet.validate().map_err(|e| {
            let mut c = CliError::from(e);
            c.message = format!("{name}: packet {}: {}", i + 1, c.message);
            c
        })?;
        packets.push(packet);
    }
    if packets.is_empty() {
        return Err(CliError::usage(format!(
            "{name} holds no packet: give a JSON object with agent_id, domain, problem_class, conclusion, confidence, context_vector, timestamp and source_node"
        )));
    }
    Ok(packets)
}
