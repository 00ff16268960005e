//! The seed's two-building HVAC scenario, done right.
//!
//! Building A deposits an energy anomaly; later Building B deposits its own
//! and asks for twins. B's durable consumer starts with all retained history
//! (the seed created it "new only", so it found nothing), B's own packet
//! coming back is not counted twice, and the consumer is acked so a re-run
//! resumes where it left off.
//!
//! ```text
//! cargo run --example hvac                                  # SQLite file in the temp folder
//! cargo run --example hvac --features nats -- nats://127.0.0.1:4222
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qis::{synthesize_with, Delivery, OutcomePacket, OutcomeTransportExt, SynthesisConfig};

#[tokio::main]
async fn main() -> qis::Result<()> {
    let run = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
    );
    let url = std::env::args().nth(1).unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            std::env::temp_dir()
                .join(format!("qis-hvac-{run}.db"))
                .display()
        )
    });
    let transport = qis::connect(&url).await?;
    println!("transport: {} ({url})", transport.name());

    // Building A: detects an energy anomaly and deposits it.
    let a = OutcomePacket {
        agent_id: "hvac-building-a".into(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        conclusion: "Compressor draw 18% above baseline at 14:32. Possible refrigerant loss."
            .into(),
        confidence: 0.87,
        context_vector: vec![0.18, 0.92, 0.03, 0.71],
        timestamp: qis::timestamp_now(),
        source_node: "building-a-floor-3".into(),
    };
    let ra = transport.deposit(&a).await?;
    println!(
        "[hvac-building-a] deposited to {} ({}, id {})",
        ra.subject,
        ra.position,
        &ra.id.to_hex()[..12]
    );

    // Building B: same problem class, different node, deposited later.
    let b = OutcomePacket {
        agent_id: "hvac-building-b".into(),
        conclusion: "Energy consumption spike detected 09:15-09:47. Thermal load mismatch.".into(),
        confidence: 0.79,
        context_vector: vec![0.22, 0.88, 0.07, 0.65],
        timestamp: qis::timestamp_now(),
        source_node: "building-b-floor-1".into(),
        ..a.clone()
    };
    let rb = transport.deposit(&b).await?;
    println!(
        "[hvac-building-b] deposited to {} ({})",
        rb.subject, rb.position
    );

    // B queries its twins: a durable consumer that starts with history.
    let twins = transport
        .twins_consumer(&format!("hvac-building-b-{run}"), "hvac", "energy-anomaly")
        .await?;
    let mut received: Vec<Delivery> = Vec::new();
    loop {
        let batch = twins.fetch(20, Duration::from_millis(500)).await?;
        if batch.is_empty() {
            break;
        }
        twins.ack(&batch).await?;
        received.extend(batch);
    }
    println!(
        "[hvac-building-b] fetched {} packets (its own included) from {}",
        received.len(),
        rb.subject
    );

    // The defaults: confidence-weighted votes, a quorum of two agents, outliers
    // excluded. The deliveries carry their packet ids: B's own packet coming
    // back counts once.
    let config = SynthesisConfig::default();
    let alone = synthesize_with(&config, &b, [] as [&Delivery; 0]);
    let s = synthesize_with(&config, &b, &received);
    println!(
        "\n── Synthesis ({}, quorum {}) ──",
        s.method,
        config.quorum()
    );
    println!("  B alone:             {}", alone.recommendation);
    println!(
        "  agents:              {} ({} synthesis pair{})",
        s.n_agents,
        s.synthesis_pairs,
        if s.synthesis_pairs == 1 { "" } else { "s" }
    );
    println!(
        "  consensus:           {}: {} of {} votes, weighted {:.0}%",
        s.consensus_problem,
        s.consensus_votes,
        s.n_agents,
        s.weighted_strength * 100.0
    );
    println!(
        "  situations:          {} of {} in one fingerprint bucket ({:.0}%), {}",
        s.agreement_voters,
        s.consensus_votes,
        s.agreement * 100.0,
        s.agreement_fingerprint
            .as_deref()
            .map_or("-", |f| &f[..f.len().min(16)])
    );
    println!(
        "  P(real):             {:.2} (95% lower bound {:.2})",
        s.posterior.probability, s.posterior.lower_bound
    );
    println!("  mean confidence:     {:.3}", s.weighted_confidence);
    println!(
        "  own packet echoed:   ignored ({} duplicate)",
        s.duplicates_ignored
    );
    println!("  {}", s.recommendation);
    // Closing the loop: what B deposits next.
    let next = s.next_packet(&b)?;
    println!(
        "  next packet:         {} bytes, confidence {:.2}, context {:?}",
        next.encode()?.len(),
        next.confidence,
        next.context_vector
    );
    twins.close().await?;
    transport.close().await?;
    Ok(())
}
