//! Taking the packets in: duplicates count once, one vote per agent.
//!
//! This is the only pass that reads the packets' own memory (agent id,
//! problem, context vector): what the later steps need is copied into compact
//! arrays here, so they run over a few cache-friendly arrays instead of
//! walking N scattered packets again.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};

use super::twin::{Identity, Twin, Vote};
use crate::packet::OutcomePacket;

/// What the later steps need of one vote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Info {
    /// Index into [`Ballot::problems`].
    pub problem: u32,
    /// The context vector: `arena[start..start + len]`.
    pub start: u32,
    pub len: u32,
    pub confidence: f64,
    pub timestamp: f64,
}

/// The votes: slot 0 is the own packet, then one per other agent in the order
/// its first packet arrived.
pub(crate) struct Ballot<'a> {
    pub votes: Vec<Vote<'a>>,
    pub info: Vec<Info>,
    /// The context vectors of the votes, one after another.
    pub arena: Vec<f64>,
    /// `(domain, problem_class)` of each problem voted on.
    pub problems: Vec<(&'a str, &'a str)>,
    pub duplicates: usize,
    pub superseded: usize,
}

impl Ballot<'_> {
    /// The context vector of the vote in `slot`.
    pub fn cv(&self, slot: usize) -> &[f64] {
        let i = &self.info[slot];
        &self.arena[i.start as usize..(i.start + i.len) as usize]
    }
}

/// String equality for short strings (tokens, at most 64 bytes) without a
/// library call: eight bytes at a time, the last eight overlapping.
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]));
    if n < 8 {
        return a == b;
    }
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

/// Numbers the problems, and copies what the later steps need.
struct Recorder<'a> {
    ids: HashMap<(&'a str, &'a str), u32, RandomState>,
    problems: Vec<(&'a str, &'a str)>,
    /// The last problem seen: packets on one subject all name it.
    last: u32,
    arena: Vec<f64>,
}

impl<'a> Recorder<'a> {
    fn problem(&mut self, key: (&'a str, &'a str)) -> u32 {
        // A subject names one problem, a batch a handful: comparing a few
        // short strings is cheaper than hashing them.
        if let Some(&(d, p)) = self.problems.get(self.last as usize) {
            if same(d, key.0) && same(p, key.1) {
                return self.last;
            }
        }
        if self.problems.len() <= 8 {
            if let Some(i) = self
                .problems
                .iter()
                .position(|&(d, p)| same(d, key.0) && same(p, key.1))
            {
                self.last = i as u32;
                return self.last;
            }
        }
        let problems = &mut self.problems;
        self.last = *self.ids.entry(key).or_insert_with(|| {
            problems.push(key);
            (problems.len() - 1) as u32
        });
        self.last
    }

    fn info(&mut self, p: &'a OutcomePacket) -> Info {
        let problem = self.problem((p.domain.as_str(), p.problem_class.as_str()));
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(&p.context_vector);
        Info {
            problem,
            start,
            len: p.context_vector.len() as u32,
            confidence: p.confidence,
            timestamp: p.timestamp,
        }
    }
}

/// One pass over the twins. The per-agent map and the arrays are sized from
/// the iterator's size hint, so a slice of N twins costs a constant number of
/// allocations. A packet whose agent already has a vote is compared with that
/// vote (by id, or by content without ids); the packets that lost to a later
/// one are remembered in a set that is only touched when an agent sends more
/// than one distinct packet, so a redelivery of an older packet is still
/// recognised as a duplicate.
pub(crate) fn collect<'a, I>(own: &'a OutcomePacket, twins: I) -> Ballot<'a>
where
    I: IntoIterator,
    I::Item: Twin<'a>,
{
    let twins = twins.into_iter();
    let capacity = twins.size_hint().0.saturating_add(1);
    // Agent → slot: the table holds slot numbers only (4 bytes each, so it
    // stays in cache); the agent id is read from the vote.
    let hasher = RandomState::default();
    let mut slot_of: HashTable<u32> = HashTable::with_capacity(capacity);
    let mut votes: Vec<Vote<'a>> = Vec::with_capacity(capacity);
    let mut info: Vec<Info> = Vec::with_capacity(capacity);
    let mut rec = Recorder {
        ids: HashMap::default(),
        problems: Vec::new(),
        last: 0,
        arena: Vec::with_capacity(capacity.saturating_mul(own.context_vector.len().max(1))),
    };
    let mut displaced: HashSet<Identity<'a>, RandomState> = HashSet::default();
    let mut duplicates = 0;
    let mut superseded = 0;

    slot_of.insert_unique(hasher.hash_one(own.agent_id.as_str()), 0, |_| 0);
    votes.push(Vote {
        packet: own,
        id: None,
    });
    info.push(rec.info(own));

    for twin in twins {
        let v = Vote::of(&twin);
        let agent = v.packet.agent_id.as_str();
        let entry = slot_of.entry(
            hasher.hash_one(agent),
            |&s| votes[s as usize].packet.agent_id == agent,
            |&s| hasher.hash_one(votes[s as usize].packet.agent_id.as_str()),
        );
        match entry {
            Entry::Vacant(e) => {
                e.insert(votes.len() as u32);
                votes.push(v);
                info.push(rec.info(v.packet));
            }
            Entry::Occupied(e) => {
                let slot = *e.get() as usize;
                let current = votes[slot];
                if current.same_as(&v) || displaced.contains(&v.identity()) {
                    duplicates += 1;
                    continue;
                }
                superseded += 1;
                // The own packet is the own agent's vote; for any other agent
                // the latest timestamp wins, a tie going to the later arrival.
                if slot != 0 && v.packet.timestamp >= current.packet.timestamp {
                    displaced.insert(current.identity());
                    votes[slot] = v;
                    info[slot] = rec.info(v.packet);
                } else {
                    displaced.insert(v.identity());
                }
            }
        }
    }
    Ballot {
        votes,
        info,
        arena: rec.arena,
        problems: rec.problems,
        duplicates,
        superseded,
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_compares_every_byte() {
        let words = [
            "",
            "a",
            "hvac",
            "hvac-x",
            "energy",
            "energy-a",
            "energy-anomaly",
            "energy-anomalz",
            "fnergy-anomaly",
            "energy-anomaly-and-more-text",
            "energy-anomaly-and-more-texu",
        ];
        for a in words {
            for b in words {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }
}
