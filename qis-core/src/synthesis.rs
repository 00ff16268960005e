//! Local synthesis (SPEC §5): what the agent concludes from its own packet and
//! its twins'.
//!
//! # Rules
//!
//! 1. The packets are taken in order: the agent's own packet first, then the
//!    twins as received.
//! 2. **Duplicates count once.** A packet whose content is identical to one
//!    already taken (the same packet delivered twice under at-least-once
//!    delivery, or the agent's own packet coming back as a "twin") is ignored.
//!    Identity is the packet id of the packet's compact encoding, so a seed-style
//!    spaced body and its compact form are the same packet.
//! 3. **One vote per agent, its latest.** The agent's own packet is its vote; a
//!    twin from the same `agent_id` is ignored. For every other agent, the packet
//!    with the greatest `timestamp` is its vote (on a tie, the one received
//!    later); the agent keeps the place of its first packet in the order.
//! 4. `n_agents` is the number of voting agents; `synthesis_pairs` is
//!    `n(n-1)/2`, computed, never materialised.
//! 5. `consensus_problem` is the `domain.problem_class` with most votes; a tie
//!    goes to the one seen first (own packet first). `consensus_strength` is
//!    `votes / n`. An alert is raised iff `consensus_strength > 0.6`.
//! 6. `weighted_confidence` is the mean confidence of the voting packets (the
//!    seed's figure). Votes weighted by confidence are reported beside it:
//!    `confidence_weighted_strength` is the summed confidence of the consensus
//!    voters over the summed confidence of all voters, so a consensus held by
//!    unsure agents shows as weaker than its head count.
//!
//! The work is O(N) in the packets: one pass with hash maps.
//!
//! ```
//! use qis_core::{synthesize, OutcomePacket};
//! let p = |agent: &str, conf: f64| OutcomePacket {
//!     agent_id: agent.into(), domain: "hvac".into(), problem_class: "energy-anomaly".into(),
//!     conclusion: "spike".into(), confidence: conf, context_vector: vec![0.2],
//!     timestamp: 1.0, source_node: "n".into(),
//! };
//! let own = p("b", 0.79);
//! let twin = p("a", 0.87);
//! // `twin` delivered twice and our own packet echoed back: still two agents.
//! let s = synthesize(&own, [&twin, &twin, &own]);
//! assert_eq!(s.n_agents, 2);
//! assert_eq!(s.synthesis_pairs, 1);
//! assert!(s.alert);
//! ```

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::packet::{OutcomePacket, PacketId};

/// The alert threshold: strictly more than this share of agents must agree.
pub const ALERT_THRESHOLD: f64 = 0.6;

/// The outcome of [`synthesize`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Synthesis {
    /// The synthesising agent.
    pub agent_id: String,
    /// Voting agents (after de-duplication), own agent included.
    pub n_agents: usize,
    /// `n(n-1)/2`.
    pub synthesis_pairs: u64,
    /// `domain.problem_class` with most votes.
    pub consensus_problem: String,
    /// Votes for the consensus problem.
    pub consensus_votes: usize,
    /// `consensus_votes / n_agents`.
    pub consensus_strength: f64,
    /// Confidence-weighted share of the consensus problem.
    pub confidence_weighted_strength: f64,
    /// Mean confidence of the voting packets (the seed's figure).
    pub weighted_confidence: f64,
    /// `consensus_strength > 0.6`.
    pub alert: bool,
    /// A sentence for people.
    pub recommendation: String,
    /// Seconds since the Unix epoch when this was computed.
    pub synthesized_at: f64,
    /// Packets ignored because an identical packet was already counted.
    pub duplicates_ignored: usize,
    /// Packets ignored because their agent already had a vote (own agent) or a later one.
    pub superseded_ignored: usize,
}

/// Synthesise `own` with `twins` under the rules in the module docs.
pub fn synthesize<'a, I>(own: &'a OutcomePacket, twins: I) -> Synthesis
where
    I: IntoIterator<Item = &'a OutcomePacket>,
{
    let content_id = |p: &OutcomePacket| match serde_json::to_vec(p) {
        Ok(b) => PacketId::of(&b),
        // A packet that cannot be encoded cannot have been received; fall back
        // on its debug text so it still counts once.
        Err(_) => PacketId::of(format!("{p:?}").as_bytes()),
    };

    let mut seen: HashSet<PacketId> = HashSet::new();
    let mut slot_of_agent: HashMap<&'a str, usize> = HashMap::new();
    let mut votes: Vec<&'a OutcomePacket> = Vec::new();
    let mut duplicates_ignored = 0;
    let mut superseded_ignored = 0;

    seen.insert(content_id(own));
    slot_of_agent.insert(own.agent_id.as_str(), 0);
    votes.push(own);

    for p in twins {
        if !seen.insert(content_id(p)) {
            duplicates_ignored += 1;
            continue;
        }
        match slot_of_agent.get(p.agent_id.as_str()) {
            Some(&0) => superseded_ignored += 1,
            Some(&slot) => {
                superseded_ignored += 1;
                if p.timestamp >= votes[slot].timestamp {
                    votes[slot] = p;
                }
            }
            None => {
                slot_of_agent.insert(p.agent_id.as_str(), votes.len());
                votes.push(p);
            }
        }
    }

    let n = votes.len();
    // problem -> (first slot, votes, summed confidence)
    let mut tally: HashMap<String, (usize, usize, f64)> = HashMap::new();
    let mut total_conf = 0.0;
    for (slot, p) in votes.iter().enumerate() {
        let e = tally.entry(p.problem_key()).or_insert((slot, 0, 0.0));
        e.1 += 1;
        e.2 += p.confidence;
        total_conf += p.confidence;
    }
    let (consensus_problem, (_, consensus_votes, consensus_conf)) = tally
        .into_iter()
        .max_by(|a, b| a.1 .1.cmp(&b.1 .1).then(b.1 .0.cmp(&a.1 .0)))
        .expect("the own packet always votes");

    let strength = consensus_votes as f64 / n as f64;
    let alert = strength > ALERT_THRESHOLD;
    let recommendation = if alert {
        format!(
            "ALERT: {consensus_votes} of {n} agents agree on {consensus_problem} (consensus {:.0}%)",
            strength * 100.0
        )
    } else {
        format!(
            "Monitoring: weak signal on {consensus_problem} ({consensus_votes} of {n} agents, {:.0}%)",
            strength * 100.0
        )
    };
    let synthesized_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);

    Synthesis {
        agent_id: own.agent_id.clone(),
        n_agents: n,
        synthesis_pairs: (n as u64) * (n as u64).saturating_sub(1) / 2,
        consensus_problem,
        consensus_votes,
        consensus_strength: strength,
        confidence_weighted_strength: if total_conf > 0.0 {
            consensus_conf / total_conf
        } else {
            strength
        },
        weighted_confidence: total_conf / n as f64,
        alert,
        recommendation,
        synthesized_at,
        duplicates_ignored,
        superseded_ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(agent: &str, problem: &str, conf: f64, ts: f64) -> OutcomePacket {
        OutcomePacket {
            agent_id: agent.into(),
            domain: "hvac".into(),
            problem_class: problem.into(),
            conclusion: "c".into(),
            confidence: conf,
            context_vector: vec![],
            timestamp: ts,
            source_node: "n".into(),
        }
    }

    #[test]
    fn latest_vote_per_agent_wins() {
        let own = p("me", "x", 0.5, 1.0);
        let old = p("a", "y", 0.5, 1.0);
        let new = p("a", "x", 0.5, 2.0);
        let s = synthesize(&own, [&new, &old]);
        assert_eq!(s.n_agents, 2);
        assert_eq!(s.consensus_votes, 2);
        assert_eq!(s.superseded_ignored, 1);
    }

    #[test]
    fn own_agent_twins_do_not_vote() {
        let own = p("me", "x", 0.5, 1.0);
        let mine_older = p("me", "y", 0.9, 0.5);
        let s = synthesize(&own, [&mine_older]);
        assert_eq!(s.n_agents, 1);
        assert_eq!(s.consensus_problem, "hvac.x");
    }

    #[test]
    fn confidence_weighting_is_reported() {
        let own = p("me", "x", 0.1, 1.0);
        let a = p("a", "x", 0.1, 1.0);
        let b = p("b", "y", 0.8, 1.0);
        let s = synthesize(&own, [&a, &b]);
        assert_eq!(s.consensus_problem, "hvac.x");
        assert!((s.confidence_weighted_strength - 0.2).abs() < 1e-9);
    }
}
