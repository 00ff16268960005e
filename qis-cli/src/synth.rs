//! `qis synth`: fetch the twins' packets and synthesise them with your own.

use qis::{synthesize, Subject, Synthesis};
use serde_json::Value;

use crate::cli::SynthArgs;
use crate::error::CliError;
use crate::input::{connect, packet_from_flags, packets_from_json};
use crate::show;

/// Run `qis synth`.
pub async fn run(url: &str, prefix: Option<&Subject>, args: SynthArgs) -> Result<(), CliError> {
    crate::twins::precheck(&args.consumer)?;
    let own = match &args.own_json {
        Some(path) => {
            let mut packets = packets_from_json(path)?;
            if packets.len() != 1 {
                return Err(CliError::usage(format!(
                    "{} holds {} packets: give exactly one, your own",
                    path.display(),
                    packets.len()
                )));
            }
            packets.remove(0)
        }
        None => packet_from_flags(
            Some(&args.consumer.domain),
            Some(&args.consumer.problem_class),
            &args.own,
            "--own-json FILE ('-' for stdin)",
        )?,
    };
    let transport = connect(url, prefix).await?;
    let result = crate::twins::fetch(&transport, &args.consumer, |_| Ok(())).await;
    let closed = transport.close().await;
    let twins = result?;
    closed?;
    let s = synthesize(&own, twins.iter().map(|d| d.packet()));
    if args.json {
        let mut v = serde_json::to_value(&s)
            .map_err(|e| CliError::runtime(format!("cannot encode the synthesis as JSON: {e}")))?;
        if let Value::Object(m) = &mut v {
            m.insert("twins_fetched".into(), twins.len().into());
        }
        show::json_line(&v)
    } else {
        for l in synthesis_text(&s, twins.len(), &args.consumer.consumer) {
            show::line(&l)?;
        }
        Ok(())
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// The synthesis as readable lines.
pub fn synthesis_text(s: &Synthesis, fetched: usize, consumer: &str) -> Vec<String> {
    let pairs = if s.synthesis_pairs == 1 {
        "pair"
    } else {
        "pairs"
    };
    vec![
        format!("agent             {}", s.agent_id),
        format!("twins fetched     {fetched} (consumer {consumer}, acked)"),
        format!(
            "agents            {} ({} synthesis {pairs})",
            s.n_agents, s.synthesis_pairs
        ),
        format!(
            "consensus         {}: {} of {} votes ({}), confidence-weighted {}",
            s.consensus_problem,
            s.consensus_votes,
            s.n_agents,
            pct(s.consensus_strength),
            pct(s.confidence_weighted_strength)
        ),
        format!("mean confidence   {:.3}", s.weighted_confidence),
        format!("alert             {}", if s.alert { "yes" } else { "no" }),
        format!("recommendation    {}", s.recommendation),
        format!(
            "ignored           {} duplicate{}, {} superseded",
            s.duplicates_ignored,
            if s.duplicates_ignored == 1 { "" } else { "s" },
            s.superseded_ignored
        ),
        format!("synthesized at    {}", show::utc(s.synthesized_at)),
    ]
}
