//! `qis synth`: fetch the twins' packets and synthesise them with your own.

use qis::{synthesize_with, Method, Subject, Synthesis};
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
    // Checked before anything is fetched (and acked).
    let config = args.options.config()?;
    let transport = connect(url, prefix).await?;
    let result = crate::twins::fetch(&transport, &args.consumer, |_| Ok(())).await;
    let closed = transport.close().await;
    let twins = result?;
    closed?;
    // The deliveries carry the packet ids the transport stored: duplicates
    // are recognised by id, nothing is re-encoded.
    let s = synthesize_with(&config, &own, &twins);
    if args.json {
        let mut v = serde_json::to_value(&s)
            .map_err(|e| CliError::runtime(format!("cannot encode the synthesis as JSON: {e}")))?;
        if let Value::Object(m) = &mut v {
            m.insert("twins_fetched".into(), twins.len().into());
        }
        show::json_line(&v)
    } else {
        for l in synthesis_text(
            &s,
            twins.len(),
            args.consumer.consumer.as_deref().unwrap_or_default(),
        ) {
            show::line(&l)?;
        }
        Ok(())
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The options a synthesis ran with, in one line.
fn options_text(s: &Synthesis) -> String {
    let c = &s.config;
    let half_life = match c.half_life() {
        None => "no half-life".to_string(),
        Some(h) => format!("half-life {}s", h.as_secs_f64()),
    };
    format!(
        "{} (quorum {}, alert above {}, {half_life}, outliers {}, resolution {})",
        s.method,
        c.quorum(),
        pct(c.threshold()),
        if c.outliers() { "excluded" } else { "kept" },
        c.resolution()
    )
}

/// The synthesis as readable lines.
pub fn synthesis_text(s: &Synthesis, fetched: usize, consumer: &str) -> Vec<String> {
    let weighted = match s.method {
        Method::Seed => String::new(),
        Method::Majority if s.config.half_life().is_none() => String::new(),
        Method::Majority => format!(", recency-weighted {}", pct(s.weighted_strength)),
        Method::ConfidenceWeighted => format!(", weighted {}", pct(s.weighted_strength)),
    };
    let situations = match &s.agreement_fingerprint {
        Some(fp) => format!(
            "{} of {} in one fingerprint bucket ({}), {}",
            s.agreement_voters,
            s.consensus_votes,
            pct(s.agreement),
            &fp[..fp.len().min(16)]
        ),
        None => "no voter's context vector could be bucketed".to_string(),
    };
    let outliers = if s.outliers.is_empty() {
        "none".to_string()
    } else {
        format!("{} excluded: {}", s.outliers.len(), s.outliers.join(", "))
    };
    vec![
        format!("agent             {}", s.agent_id),
        format!("twins fetched     {fetched} (consumer {consumer}, acked)"),
        format!("method            {}", options_text(s)),
        format!(
            "agents            {} ({} synthesis {})",
            s.n_agents,
            s.synthesis_pairs,
            if s.synthesis_pairs == 1 {
                "pair"
            } else {
                "pairs"
            }
        ),
        format!(
            "consensus         {}: {} of {} votes ({}){weighted}",
            s.consensus_problem,
            s.consensus_votes,
            s.n_agents,
            pct(s.consensus_strength),
        ),
        format!("situations        {situations}"),
        format!(
            "P(real)           {:.2} (95% credible lower bound {:.2})",
            s.posterior.probability, s.posterior.lower_bound
        ),
        format!(
            "quorum            {} ({} needed)",
            if s.quorum_met { "met" } else { "not met" },
            plural(s.config.quorum(), "agent", "agents")
        ),
        format!("outliers          {outliers}"),
        format!("mean confidence   {:.3}", s.weighted_confidence),
        format!("alert             {}", if s.alert { "yes" } else { "no" }),
        format!("recommendation    {}", s.recommendation),
        format!(
            "ignored           {}, {} superseded",
            plural(s.duplicates_ignored, "duplicate", "duplicates"),
            s.superseded_ignored
        ),
        format!("synthesized at    {}", show::utc(s.synthesized_at)),
    ]
}
