//! Taking the packets in: duplicates count once, one vote per agent.
//!
//! This is the one pass over the packets: besides the vote, it numbers the
//! problems and puts each voter's situation (its context vector's fingerprint
//! bucket) in a group while the packet is in cache, so the later steps work on
//! compact arrays instead of walking N scattered packets again.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};

use super::agreement::Groups;
use super::config::SynthesisConfig;
use super::tally::Tally;
use super::twin::{identity, same_content, Identity, Twin};
use crate::packet::{OutcomePacket, PacketId};

/// What the later steps need of one vote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Info {
    /// Index into [`Ballot::problems`].
    pub problem: u32,
    /// Its situation's group in [`Ballot::groups`], or `NO_GROUP`.
    pub group: u32,
}

/// The votes: slot 0 is the own packet, then one per other agent in the order
/// its first packet arrived.
pub(crate) struct Ballot<'a, T> {
    pub own: &'a OutcomePacket,
    /// The twin holding each slot's vote (`None`: the own packet). A twin is
    /// kept as it came (for a `&Delivery`, one pointer), not copied.
    pub votes: Vec<Option<T>>,
    pub info: Vec<Info>,
    /// `(domain, problem_class)` of each problem voted on.
    pub problems: Vec<(&'a str, &'a str)>,
    /// The voters' situations, grouped by problem and fingerprint bucket.
    pub groups: Groups,
    /// The votes per problem, counted as they come in.
    pub tallies: Vec<Tally>,
    pub duplicates: usize,
    pub superseded: usize,
}

impl<'a, T: Twin<'a>> Ballot<'a, T> {
    /// The packet voting in `slot`.
    pub fn packet(&self, slot: usize) -> &'a OutcomePacket {
        match &self.votes[slot] {
            None => self.own,
            Some(t) => t.packet(),
        }
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
        if n < 4 {
            return a.iter().zip(b).all(|(x, y)| x == y);
        }
        // Two overlapping four-byte words.
        let half =
            |s: &[u8], i: usize| u32::from_ne_bytes(s[i..i + 4].try_into().unwrap_or([0; 4]));
        return half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4);
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

/// Numbers the problems, groups the situations and counts the votes.
struct Recorder<'a, 'c> {
    config: &'c SynthesisConfig,
    now: f64,
    tallies: Vec<Tally>,
    ids: HashMap<(&'a str, &'a str), u32, RandomState>,
    problems: Vec<(&'a str, &'a str)>,
    /// The last problem seen: packets on one subject all name it.
    last: u32,
    groups: Groups,
}

impl<'a> Recorder<'a, '_> {
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
        let tallies = &mut self.tallies;
        self.last = *self.ids.entry(key).or_insert_with(|| {
            problems.push(key);
            tallies.push(Tally::default());
            (problems.len() - 1) as u32
        });
        self.last
    }

    /// Take `p`'s vote in.
    fn info(&mut self, p: &'a OutcomePacket) -> Info {
        let problem = self.problem((p.domain.as_str(), p.problem_class.as_str()));
        self.tallies[problem as usize].add(&Tally::of(self.config, self.now, p));
        Info {
            problem,
            group: self.groups.join(problem, &p.context_vector),
        }
    }

    /// Take back the vote `info` recorded for `p`.
    fn take_back(&mut self, info: Info, p: &OutcomePacket) {
        self.tallies[info.problem as usize].sub(&Tally::of(self.config, self.now, p));
        self.groups.leave(info.group, &p.context_vector);
    }
}

/// One pass over the twins. The per-agent map and the arrays are sized from
/// the iterator's size hint, so a slice of N twins costs a constant number of
/// allocations. A packet whose agent already has a vote is compared with that
/// vote (by id, or by content without ids); the packets that lost to a later
/// one are remembered in a set that is only touched when an agent sends more
/// than one distinct packet, so a redelivery of an older packet is still
/// recognised as a duplicate.
pub(crate) fn collect<'a, I>(
    own: &'a OutcomePacket,
    twins: I,
    config: &SynthesisConfig,
    now: f64,
) -> Ballot<'a, I::Item>
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
    let mut votes: Vec<Option<I::Item>> = Vec::with_capacity(capacity);
    // Each vote's packet id beside it, so a redelivery is recognised without
    // reading the earlier delivery (far back in memory) again.
    let mut vote_ids: Vec<Option<PacketId>> = Vec::with_capacity(capacity);
    let mut info: Vec<Info> = Vec::with_capacity(capacity);
    let mut rec = Recorder {
        config,
        now,
        tallies: Vec::new(),
        ids: HashMap::default(),
        problems: Vec::new(),
        last: 0,
        groups: Groups::new(config.resolution()),
    };
    let mut displaced: HashSet<Identity<'a>, RandomState> = HashSet::default();
    let mut duplicates = 0;
    let mut superseded = 0;

    // The own packet's id, for its echo: it was deposited as its compact
    // encoding, so one encoding here (not one per packet) recognises the
    // echo even if the transport's decoding moved a float by a bit.
    let own_id = own.encode().ok().map(|body| PacketId::of(&body));
    slot_of.insert_unique(hasher.hash_one(own.agent_id.as_str()), 0, |_| 0);
    votes.push(None);
    vote_ids.push(own_id);
    info.push(rec.info(own));
    let packet_of = |v: &Option<I::Item>| match v {
        None => own,
        Some(t) => t.packet(),
    };

    for twin in twins {
        let p = twin.packet();
        let id = twin.id();
        let agent = p.agent_id.as_str();
        // A redelivery carries the id of the vote it repeats: that settles it
        // without reading the earlier packet's agent id.
        let entry = slot_of.entry(
            hasher.hash_one(agent),
            |&s| {
                (id.is_some() && vote_ids[s as usize] == id)
                    || packet_of(&votes[s as usize]).agent_id == agent
            },
            |&s| hasher.hash_one(packet_of(&votes[s as usize]).agent_id.as_str()),
        );
        match entry {
            Entry::Vacant(e) => {
                e.insert(votes.len() as u32);
                votes.push(Some(twin));
                vote_ids.push(id);
                info.push(rec.info(p));
            }
            Entry::Occupied(e) => {
                let slot = *e.get() as usize;
                let current = votes[slot];
                let same = match (vote_ids[slot], id) {
                    (Some(a), Some(b)) => a == b,
                    _ => same_content(packet_of(&current), p),
                };
                if same || displaced.contains(&identity(&twin)) {
                    duplicates += 1;
                    continue;
                }
                superseded += 1;
                // The own packet is the own agent's vote; for any other agent
                // the latest timestamp wins, a tie going to the later arrival.
                match current {
                    Some(c) if p.timestamp >= c.packet().timestamp => {
                        displaced.insert(identity(&c));
                        votes[slot] = Some(twin);
                        vote_ids[slot] = id;
                        rec.take_back(info[slot], c.packet());
                        info[slot] = rec.info(p);
                    }
                    _ => {
                        displaced.insert(identity(&twin));
                    }
                }
            }
        }
    }
    Ballot {
        own,
        votes,
        info,
        problems: rec.problems,
        groups: rec.groups,
        tallies: rec.tallies,
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
