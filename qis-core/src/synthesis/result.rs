//! [`Synthesis`]: the figures, the recommendation, and the next packet.

use std::fmt::Write as _;

use serde::Serialize;

use super::bayes::Posterior;
use super::config::{Method, SynthesisConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::packet::{OutcomePacket, MAX_PACKET_BYTES};

/// The outcome of [`synthesize`](super::synthesize) or
/// [`synthesize_with`](super::synthesize_with). Serialises to JSON with these
/// field names.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Synthesis {
    /// The synthesising agent.
    pub agent_id: String,
    /// The method the votes were weighed with.
    pub method: Method,
    /// Voting agents: after de-duplication, one per agent, outliers excluded;
    /// the own agent included unless it is an outlier.
    pub n_agents: usize,
    /// `n(n-1)/2`, computed, never materialised.
    pub synthesis_pairs: u64,
    /// `domain.problem_class` that won the vote.
    pub consensus_problem: String,
    /// Distinct agents voting for it.
    pub consensus_votes: usize,
    /// `consensus_votes / n_agents` (the seed's figure).
    pub consensus_strength: f64,
    /// The consensus problem's share of the total vote weight under the
    /// method (0 when no vote weighs anything); the alert compares this with
    /// the threshold. Equal to `consensus_strength` under [`Method::Seed`].
    pub weighted_strength: f64,
    /// The consensus voters' summed confidence over all voters' (whatever the
    /// method, without recency).
    pub confidence_weighted_strength: f64,
    /// Mean confidence of the voters (the seed's figure).
    pub weighted_confidence: f64,
    /// Share of the consensus voters whose context vectors fall in the most
    /// common fingerprint bucket at the configured resolution: how far their
    /// situations agree (1.0 = all in one bucket).
    pub agreement: f64,
    /// Consensus voters in that bucket.
    pub agreement_voters: usize,
    /// That bucket's fingerprint (64 hex characters): the leaf of
    /// `{prefix}.{domain}.{problem_class}.{fingerprint}` the agreeing agents
    /// share. `None` if no voter's vector could be bucketed.
    pub agreement_fingerprint: Option<String>,
    /// The mean of the context vectors in that bucket: the typical situation
    /// of the consensus. It is summed exactly (independent of the order) and
    /// lies in the bucket (a box), so a packet carrying it fingerprints to
    /// `agreement_fingerprint`.
    pub consensus_context: Vec<f64>,
    /// The probability that the consensus problem is real, with a lower
    /// credible bound (prior and update on [`Posterior`]).
    pub posterior: Posterior,
    /// Whether at least `quorum` distinct agents back the consensus problem.
    pub quorum_met: bool,
    /// `quorum_met` and `weighted_strength > threshold` (strictly).
    pub alert: bool,
    /// Agents excluded as outliers, sorted.
    pub outliers: Vec<String>,
    /// A sentence for people: the vote, how far the situations agree, the
    /// Bayesian figure.
    pub recommendation: String,
    /// Seconds since the Unix epoch: the configured `now`, or the clock.
    pub synthesized_at: f64,
    /// Deliveries ignored because the same packet was already counted (the
    /// same packet id, or the same content for packets without one).
    pub duplicates_ignored: usize,
    /// Distinct packets ignored because their agent already had a vote (the
    /// own agent) or a later one.
    pub superseded_ignored: usize,
    /// The options this was computed with, `now` filled in.
    pub config: SynthesisConfig,
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Synthesis {
    /// The weighted strength, said with what weighs.
    fn weighted_text(&self) -> String {
        let recency = self.config.half_life().is_some();
        let w = pct(self.weighted_strength);
        match (self.method, recency) {
            (Method::Seed, _) | (Method::Majority, false) => format!("{w} of the votes"),
            (Method::Majority, true) => format!("recency-weighted {w}"),
            (Method::ConfidenceWeighted, false) => format!("confidence-weighted {w}"),
            (Method::ConfidenceWeighted, true) => {
                format!("confidence- and recency-weighted {w}")
            }
        }
    }

    /// How far the consensus voters' situations agree, in words.
    fn situations_text(&self) -> String {
        let k = self.consensus_votes;
        let fp = self
            .agreement_fingerprint
            .as_deref()
            .map(|f| format!(" (fingerprint {})", &f[..f.len().min(12)]))
            .unwrap_or_default();
        if k == 1 {
            format!("a single report{fp}")
        } else if self.agreement_voters == k {
            format!("all in one situation{fp}")
        } else {
            let mut t = format!(
                "{} of {k} in one situation ({}){fp}",
                self.agreement_voters,
                pct(self.agreement)
            );
            if self.agreement < 0.5 {
                t.push_str(": situations differ, check before acting");
            }
            t
        }
    }

    pub(crate) fn write_recommendation(&mut self) {
        let problem = &self.consensus_problem;
        let (k, n) = (self.consensus_votes, self.n_agents);
        let mut text = if self.alert {
            format!(
                "ALERT: {k} of {n} agents report {problem} ({}); {}; P(real) {:.2}, at least {:.2} (95%)",
                self.weighted_text(),
                self.situations_text(),
                self.posterior.probability,
                self.posterior.lower_bound
            )
        } else if !self.quorum_met {
            format!(
                "Monitoring: {problem} is reported by {} only, below the quorum of {}: no alert on {}",
                plural(k, "agent", "agents"),
                self.config.quorum(),
                if k == 1 { "a lone view" } else { "so few votes" }
            )
        } else {
            format!(
                "Monitoring: weak signal on {problem}: {k} of {n} agents ({}, alert above {}); {}",
                self.weighted_text(),
                pct(self.config.threshold()),
                self.situations_text()
            )
        };
        if !self.outliers.is_empty() {
            let _ = write!(
                text,
                "; {} excluded",
                plural(self.outliers.len(), "outlier", "outliers")
            );
        }
        self.recommendation = text;
    }

    /// The agent's next outcome packet, closing the loop: what the swarm
    /// concluded, ready to deposit.
    ///
    /// - `agent_id` and `source_node`: the own packet's.
    /// - `domain`, `problem_class`: the consensus problem.
    /// - `conclusion`: the recommendation, cut on a character boundary (and
    ///   ended with `…`) if the packet would exceed 512 bytes.
    /// - `confidence`: the Bayesian probability that the problem is real
    ///   ([`Posterior::probability`]).
    /// - `context_vector`: [`consensus_context`](Self::consensus_context), the
    ///   mean situation of the agreeing voters; the packet fingerprints to
    ///   their bucket.
    /// - `timestamp`: `synthesized_at`, or just after the own packet's
    ///   timestamp if that is later, so the new packet becomes the agent's
    ///   latest vote: synthesising again, here or at a twin, counts the agent
    ///   once (its synthesis replaces its earlier observation).
    ///
    /// Fails if the consensus problem is not `domain.problem_class`, or if the
    /// packet is invalid or still too large with a one-character conclusion
    /// (a context vector too long for one packet).
    ///
    /// ```
    /// use qis_core::{synthesize_with, OutcomePacket, SynthesisConfig};
    /// let p = |agent: &str, conf: f64, cv: Vec<f64>| OutcomePacket {
    ///     agent_id: agent.into(), domain: "hvac".into(), problem_class: "energy-anomaly".into(),
    ///     conclusion: "spike".into(), confidence: conf, context_vector: cv,
    ///     timestamp: 100.0, source_node: "n".into(),
    /// };
    /// let own = p("b", 0.8, vec![0.375, 0.75]);
    /// let twin = p("a", 0.9, vec![0.25, 0.875]);
    /// let s = synthesize_with(&SynthesisConfig::default().with_now(200.0)?, &own, [&twin]);
    /// let next = s.next_packet(&own)?;
    /// assert_eq!(next.agent_id, "b");
    /// assert_eq!(next.context_vector, vec![0.3125, 0.8125]); // the mean situation
    /// assert!(next.encode().unwrap().len() <= 512);
    /// // Synthesising again with the new packet as our own: still two agents.
    /// let again = synthesize_with(&SynthesisConfig::default(), &next, [&own, &twin]);
    /// assert_eq!(again.n_agents, 2);
    /// # Ok::<(), qis_core::Error>(())
    /// ```
    pub fn next_packet(&self, own: &OutcomePacket) -> Result<OutcomePacket> {
        let (domain, problem_class) = self.consensus_problem.split_once('.').ok_or_else(|| {
            Error::core(
                ErrorKind::InvalidInput,
                format!(
                    "consensus problem {:?} is not domain.problem_class",
                    self.consensus_problem
                ),
            )
        })?;
        let timestamp = if self.synthesized_at > own.timestamp {
            self.synthesized_at
        } else if own.timestamp.is_finite() && own.timestamp >= 0.0 {
            // The next representable time after the own packet's.
            f64::from_bits((own.timestamp + 0.0).to_bits() + 1)
        } else {
            own.timestamp
        };
        let mut p = OutcomePacket {
            agent_id: own.agent_id.clone(),
            domain: domain.to_owned(),
            problem_class: problem_class.to_owned(),
            conclusion: self.recommendation.clone(),
            confidence: self.posterior.probability.clamp(0.0, 1.0),
            context_vector: self.consensus_context.clone(),
            timestamp,
            source_node: own.source_node.clone(),
        };
        fit(&mut p)?;
        p.encode()?;
        Ok(p)
    }
}

/// The bytes `c` takes inside a compact JSON string (serde_json's escapes).
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Shorten `p.conclusion` (on a character boundary, ending with `…`) until
/// the packet encodes to at most [`MAX_PACKET_BYTES`].
fn fit(p: &mut OutcomePacket) -> Result<()> {
    const ELLIPSIS: char = '…';
    loop {
        let len = serde_json::to_vec(&*p)
            .map_err(|e| {
                Error::core(ErrorKind::InvalidPacket, "cannot encode the packet").with_source(e)
            })?
            .len();
        if len <= MAX_PACKET_BYTES {
            return Ok(());
        }
        // What the text may take once encoded, the ellipsis included.
        let text: usize = p.conclusion.chars().map(json_len).sum();
        let budget = (MAX_PACKET_BYTES + text).checked_sub(len + ELLIPSIS.len_utf8());
        let mut keep = 0;
        let mut used = 0;
        for (i, c) in p.conclusion.char_indices() {
            used += json_len(c);
            if budget.is_none_or(|b| used > b) {
                break;
            }
            keep = i + c.len_utf8();
        }
        if keep == 0 {
            // Nothing left to cut: `encode` reports the size and what to shorten.
            return p.encode().map(drop);
        }
        p.conclusion.truncate(keep);
        p.conclusion.push(ELLIPSIS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_on_a_character_boundary() {
        let mut p = OutcomePacket {
            agent_id: "a".into(),
            domain: "hvac".into(),
            problem_class: "energy-anomaly".into(),
            // Three-byte characters and JSON escapes: any cut must land between them.
            conclusion: "Überhitzung ⚠ \"Kompressor\" ".repeat(40),
            confidence: 0.5,
            context_vector: vec![0.25; 8],
            timestamp: 1.0,
            source_node: "n".into(),
        };
        fit(&mut p).unwrap();
        let len = p.encode().unwrap().len();
        assert!(
            len <= MAX_PACKET_BYTES && len > MAX_PACKET_BYTES - 8,
            "{len}"
        );
        assert!(p.conclusion.ends_with('…'));
        assert!(p.conclusion.starts_with("Überhitzung ⚠"));
    }

    #[test]
    fn fit_leaves_a_small_packet_alone() {
        let mut p = OutcomePacket {
            agent_id: "a".into(),
            domain: "hvac".into(),
            problem_class: "x".into(),
            conclusion: "short".into(),
            confidence: 0.5,
            context_vector: vec![],
            timestamp: 1.0,
            source_node: "n".into(),
        };
        fit(&mut p).unwrap();
        assert_eq!(p.conclusion, "short");
    }
}
