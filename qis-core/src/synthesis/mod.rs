//! Local synthesis (SPEC §5): what the agent concludes from its own packet and
//! its twins'.
//!
//! [`synthesize_with`] takes a [`SynthesisConfig`] (method, quorum, threshold,
//! recency half-life, `now`, outlier filter, fingerprint resolution, prior);
//! [`synthesize`] uses the defaults ([`SynthesisConfig::default`]:
//! confidence-weighted, quorum 2 so a lone agent never alerts about itself,
//! outliers filtered). The seed's exact rules are
//! [`SynthesisConfig::seed`]; `../shared/vectors/synthesis.json` passes with
//! them.
//!
//! The rules are documented on [`synthesize_with`]; the Bayesian figure on
//! [`Posterior`]; the outlier filter on [`SynthesisConfig::with_outliers`].
//!
//! ```
//! use qis_core::{synthesize, synthesize_with, OutcomePacket, SynthesisConfig};
//! let p = |agent: &str, conf: f64, cv: Vec<f64>| OutcomePacket {
//!     agent_id: agent.into(), domain: "hvac".into(), problem_class: "energy-anomaly".into(),
//!     conclusion: "spike".into(), confidence: conf, context_vector: cv,
//!     timestamp: 1_764_000_000.0, source_node: "n".into(),
//! };
//! let own = p("b", 0.79, vec![0.22, 0.88]);
//! let twin = p("a", 0.87, vec![0.18, 0.92]);
//! // `twin` delivered twice and our own packet echoed back: still two agents.
//! let s = synthesize_with(&SynthesisConfig::seed(), &own, [&twin, &twin, &own]);
//! assert_eq!((s.n_agents, s.synthesis_pairs, s.duplicates_ignored), (2, 1, 2));
//! assert!(s.alert);
//!
//! // The defaults: confidence-weighted, quorum 2, outliers filtered.
//! let config = SynthesisConfig::default().with_now(1_764_000_060.0)?;
//! let alone = synthesize_with(&config, &own, [] as [&OutcomePacket; 0]);
//! assert!(!alone.alert, "a lone agent never alerts about itself");
//! let s = synthesize_with(&config, &own, [&twin]);
//! assert!(s.alert && s.quorum_met);
//! assert_eq!(s.agreement, 1.0); // both in one fingerprint bucket
//! assert!(s.posterior.probability > 0.6);
//! assert!(s.recommendation.starts_with("ALERT: 2 of 2 agents report hvac.energy-anomaly"));
//! # Ok::<(), qis_core::Error>(())
//! ```

mod agents;
mod agreement;
mod ballot;
mod bayes;
mod config;
mod exact;
mod median;
mod outliers;
mod result;
mod tally;
mod twin;

pub use bayes::{Posterior, LOWER_BOUND_QUANTILE};
pub use config::{Method, SynthesisConfig, ALERT_THRESHOLD, DEFAULT_OUTLIER_K, DEFAULT_QUORUM};
pub use result::Synthesis;
pub use twin::Twin;

use crate::packet::OutcomePacket;
use tally::{real, share, Tally};

/// Synthesise `own` with `twins` under the defaults
/// ([`SynthesisConfig::default`]: confidence-weighted votes, a quorum of 2
/// distinct agents before any alert, outliers filtered, agreement of
/// situations at the default fingerprint resolution). The rules are those of
/// [`synthesize_with`]; for the seed's exact figures use it with
/// [`SynthesisConfig::seed`].
pub fn synthesize<'a, I>(own: &'a OutcomePacket, twins: I) -> Synthesis
where
    I: IntoIterator,
    I::Item: Twin<'a>,
{
    synthesize_with(&SynthesisConfig::default(), own, twins)
}

/// Synthesise `own` with `twins` under `config`.
///
/// # Rules
///
/// 1. **Input.** The agent's own packet, then its twins as received: any
///    [`Twin`], e.g. `&Delivery` or `&Received` (which carry the packet id
///    the transport delivered) or a bare `&OutcomePacket`.
/// 2. **Duplicates count once.** A twin that is the same packet as one already
///    taken (the same delivery twice under at-least-once delivery, or the own
///    packet coming back as a "twin") is ignored. Identity is the packet id
///    the transport delivered, never re-encoded or re-hashed (only the own
///    packet is encoded once, to know the id its echo comes back under); a
///    bare packet is identified by its content.
/// 3. **One vote per agent, its latest.** The own packet is the own agent's
///    vote; its other packets are ignored. For every other agent the packet
///    with the greatest `timestamp` is its vote (on equal timestamps, the one
///    received later); the agent keeps the place of its first packet in the
///    order.
/// 4. **Outliers** (on by default, off under [`SynthesisConfig::seed`]):
///    voters whose context vectors are far from the others' on the same
///    problem are excluded from everything below and listed by agent id. The
///    measure: the distance from the coordinate-wise median situation beyond
///    `median + k · max(1.4826 · MAD, 1/resolution)`, `k` = 3.5 by default,
///    on problems with at least three voters; a vector whose length differs
///    from the majority's is an outlier too. Fewer than half of a problem's
///    voters can be excluded. (Details in [`SynthesisConfig::with_outliers`].)
/// 5. **The vote.** `n_agents` is the number of voters; `synthesis_pairs` is
///    `n(n-1)/2`. Each vote weighs per [`Method`]: 1 ([`Method::Seed`],
///    [`Method::Majority`]) or the agent's confidence
///    ([`Method::ConfidenceWeighted`], the default), times
///    `0.5^(age / half_life)` when a half-life is set (not under `Seed`),
///    the age measured from `now`. The consensus problem is the
///    `domain.problem_class` with most weight (`Seed`: most votes); ties as
///    [`Method`] says. `weighted_strength` is its share of the weight;
///    `consensus_strength` its share of the votes.
/// 6. **Alert** iff at least `quorum` distinct agents (default 2) back the
///    consensus problem **and** `weighted_strength > threshold` (default 0.6).
///    A lone agent never alerts about itself, except under the seed's rules
///    ([`synthesize`], quorum 1), which the seed's test vectors pin.
/// 7. **Agreement.** On one subject every packet names the same problem, so
///    the vote alone is always 100 %. `agreement` is the share of the
///    consensus voters whose context vectors fall in the most common
///    fingerprint bucket at the configured resolution
///    (`agreement_fingerprint`; a tie goes to the own packet's bucket, then
///    the smallest bucket numbers); `consensus_context` is the mean of their
///    vectors, summed exactly (so independent of order); it lies in that
///    bucket. The recommendation says how far the situations agree.
/// 8. **Bayesian figure**: the probability that the consensus problem is
///    real, from a Beta prior (default uniform) updated with the votes and
///    their confidences, and its 5 % quantile as a lower bound; see
///    [`Posterior`].
/// 9. [`Synthesis::next_packet`] turns the result into the agent's next
///    packet; rule 3 keeps it from counting twice.
///
/// Weights are summed in fixed point, so the figures never depend on the
/// delivery order beyond the two tie rules that name it (`Seed`'s first-seen
/// rule and rule 3's equal timestamps). The work is O(N) in the packets (the
/// outlier filter adds a median per coordinate, O(N) expected); no pairs are
/// built. The packets are read in one pass, into compact per-vote arrays
/// (problem, confidence, timestamp, context vector) that the outlier filter
/// and the agreement then walk; the votes per problem, their summed
/// confidences and the box around their vectors are counted in that pass
/// (walked again only if a vote was replaced); the table and arrays are sized
/// from the input, so a batch costs a constant number of allocations however
/// many packets it has.
///
/// ```
/// use qis_core::{synthesize_with, Method, OutcomePacket, SynthesisConfig};
/// let p = |agent: &str, problem: &str, conf: f64| OutcomePacket {
///     agent_id: agent.into(), domain: "hvac".into(), problem_class: problem.into(),
///     conclusion: "finding".into(), confidence: conf, context_vector: vec![0.2, 0.9],
///     timestamp: 1_764_000_000.0, source_node: "n".into(),
/// };
/// let own = p("me", "energy-anomaly", 0.2);
/// let twins = [p("a", "energy-anomaly", 0.2), p("b", "refrigerant-loss", 0.9)];
/// let by_head = synthesize_with(&SynthesisConfig::seed(), &own, &twins);
/// assert_eq!(by_head.consensus_problem, "hvac.energy-anomaly");
/// // Two unsure agents against one sure one.
/// let by_confidence = synthesize_with(&SynthesisConfig::default(), &own, &twins);
/// assert_eq!(by_confidence.method, Method::ConfidenceWeighted);
/// assert_eq!(by_confidence.consensus_problem, "hvac.refrigerant-loss");
/// assert!(!by_confidence.alert, "one agent is below the quorum of 2");
/// ```
pub fn synthesize_with<'a, I>(
    config: &SynthesisConfig,
    own: &'a OutcomePacket,
    twins: I,
) -> Synthesis
where
    I: IntoIterator,
    I::Item: Twin<'a>,
{
    let now = config.now().unwrap_or_else(crate::packet::timestamp_now);
    let ballot = ballot::collect(own, twins, config.outliers());
    let (mut tallies, mut first) = tally::count(&ballot, config, now);
    let excluded = if config.outliers() {
        outliers::find(&ballot, config.outlier_k(), config.resolution())
    } else {
        None
    };
    let excluded = excluded.as_deref();
    if let Some(x) = excluded {
        // Outliers' votes are taken back.
        for (_, s) in ballot.slots.iter().enumerate().filter(|&(i, _)| x[i]) {
            tallies[s.problem as usize].sub(&Tally::of(config, now, s.confidence, s.timestamp));
        }
        // The seed's tie rule needs each problem's first voter.
        first.fill(u32::MAX);
        for (slot, s) in ballot.slots.iter().enumerate().filter(|&(i, _)| !x[i]) {
            let f = &mut first[s.problem as usize];
            *f = (*f).min(slot as u32);
        }
    }
    let votes = |slot: usize| !excluded.is_some_and(|x| x[slot]);
    let own_problem = votes(0).then_some(ballot.slots[0].problem as usize);
    let tallies = &tallies;
    let c = tally::consensus(
        config.method(),
        tallies,
        &ballot.problems,
        &first,
        own_problem,
    );
    let mut all = Tally::default();
    tallies.iter().for_each(|t| all.add(t));
    let won = tallies[c];
    let (domain, problem_class) = ballot.problems[c];

    let agreed = agreement::agreement(&ballot, c as u32, excluded, config.resolution());

    let n = all.votes as usize;
    let k = won.votes as usize;
    let strength = k as f64 / n.max(1) as f64;
    let posterior = Posterior::update(
        config.prior(),
        real(won.support),
        // Σ_for r·(1 − c) + Σ_against r, in one rounding.
        real(all.recency.saturating_sub(won.support)),
    );
    let quorum_met = k >= config.quorum();
    let weighted_strength = share(won.weight, all.weight).unwrap_or(0.0);
    let mut outliers: Vec<String> = excluded
        .map(|x| {
            (0..ballot.votes.len())
                .filter(|&s| x[s])
                .map(|s| ballot.packet(s).agent_id.clone())
                .collect()
        })
        .unwrap_or_default();
    outliers.sort_unstable();

    let mut s = Synthesis {
        agent_id: own.agent_id.clone(),
        method: config.method(),
        n_agents: n,
        synthesis_pairs: (n as u64) * (n as u64).saturating_sub(1) / 2,
        consensus_problem: format!("{domain}.{problem_class}"),
        consensus_votes: k,
        consensus_strength: strength,
        weighted_strength,
        confidence_weighted_strength: share(won.confidence, all.confidence).unwrap_or(strength),
        weighted_confidence: real(all.confidence) / n.max(1) as f64,
        agreement: agreed.voters as f64 / k.max(1) as f64,
        agreement_voters: agreed.voters,
        agreement_fingerprint: agreed.fingerprint,
        consensus_context: agreed.context,
        posterior,
        quorum_met,
        alert: quorum_met && weighted_strength > config.threshold(),
        outliers,
        recommendation: String::new(),
        synthesized_at: now,
        duplicates_ignored: ballot.duplicates,
        superseded_ignored: ballot.superseded,
        config: config.at(now),
    };
    s.write_recommendation();
    tracing::debug!(
        agent = %s.agent_id,
        method = %s.method,
        n_agents = s.n_agents,
        consensus = %s.consensus_problem,
        weighted_strength = s.weighted_strength,
        agreement = s.agreement,
        outliers = s.outliers.len(),
        duplicates = s.duplicates_ignored,
        alert = s.alert,
        "synthesised"
    );
    s
}
