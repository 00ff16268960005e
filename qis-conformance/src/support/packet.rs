//! Packets, prefixes and checks on what came back.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;

use qis_core::{Delivery, OutcomePacket, PacketId, Subject};

use super::CaseResult;

/// The timestamp of packet 0 from [`pkt`]; packet `seq` is `seq` seconds later.
pub const BASE_TIMESTAMP: f64 = 1_764_000_000.0;

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A fresh prefix like `qt1a2b3c4d5e.iot`, so runs and cases never see each
/// other's data.
pub fn fresh_prefix() -> Subject {
    Subject::new(format!("qt{}.iot", random_hex(5))).expect("a valid random prefix")
}

/// A valid packet from `agent` on `domain`/`problem`. `seq` goes into the
/// timestamp (see [`seq_of`]) and the conclusion, so (agent, seq) makes the
/// body and its id unique, and order can be checked.
pub fn pkt(agent: &str, domain: &str, problem: &str, seq: usize) -> OutcomePacket {
    OutcomePacket {
        agent_id: agent.to_string(),
        domain: domain.to_string(),
        problem_class: problem.to_string(),
        conclusion: format!("finding {seq} of {agent}"),
        confidence: (seq % 100) as f64 / 100.0,
        context_vector: vec![0.18, 0.92, 0.03, 0.71],
        timestamp: BASE_TIMESTAMP + seq as f64,
        source_node: "conformance".to_string(),
    }
}

/// The `seq` a packet from [`pkt`] was built with.
pub fn seq_of(delivery: &Delivery) -> usize {
    (delivery.packet().timestamp - BASE_TIMESTAMP) as usize
}

/// The packet ids of `deliveries`, in order.
pub fn ids(deliveries: &[Delivery]) -> Vec<PacketId> {
    deliveries.iter().map(|d| d.id()).collect()
}

/// Fails, naming `what`, if a packet occurs twice in `deliveries`.
pub fn assert_unique(deliveries: &[Delivery], what: &str) -> CaseResult {
    let mut seen = HashSet::new();
    for d in deliveries {
        if !seen.insert(d.id()) {
            return Err(format!(
                "{what}: packet {} on {} was delivered twice",
                d.id(),
                d.subject()
            ));
        }
    }
    Ok(())
}

/// Deliveries checked as they arrive: each packet once, and within each of
/// its streams (a subject, a writer: whatever orders the packets) in
/// increasing sequence.
#[derive(Debug)]
pub struct InOrder<S> {
    seen: HashSet<PacketId>,
    last: HashMap<S, usize>,
}

impl<S: Eq + Hash + Display> InOrder<S> {
    /// Nothing seen yet.
    pub fn new() -> Self {
        InOrder {
            seen: HashSet::new(),
            last: HashMap::new(),
        }
    }

    /// Packet `id`, number `seq` of `stream`, arrived: fails if it came
    /// before, or if `stream` had brought `seq` or a later one already.
    pub fn check(&mut self, id: PacketId, stream: S, seq: usize) -> CaseResult {
        if !self.seen.insert(id) {
            return Err(format!("packet {id} (#{seq} of {stream}) delivered twice"));
        }
        match self.last.get(&stream) {
            Some(&prev) if seq <= prev => {
                Err(format!("on {stream} packet {seq} came after {prev}"))
            }
            _ => {
                self.last.insert(stream, seq);
                Ok(())
            }
        }
    }

    /// How many packets arrived so far.
    pub fn count(&self) -> usize {
        self.seen.len()
    }
}

impl<S: Eq + Hash + Display> Default for InOrder<S> {
    fn default() -> Self {
        Self::new()
    }
}
