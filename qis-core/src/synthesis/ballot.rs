//! Taking the packets in: duplicates count once, one vote per agent.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;

use super::twin::{Identity, Twin, Vote};
use crate::packet::OutcomePacket;

/// The votes: slot 0 is the own packet, then one per other agent in the order
/// its first packet arrived.
pub(crate) struct Ballot<'a> {
    pub votes: Vec<Vote<'a>>,
    pub duplicates: usize,
    pub superseded: usize,
}

/// One pass over the twins. The per-agent map and the vote list are sized
/// from the iterator's size hint, so a slice of N twins costs a constant
/// number of allocations. A packet whose agent already has a vote is compared
/// with that vote (by id, or by content without ids); the packets that lost
/// to a later one are remembered in a set that is only touched when an agent
/// sends more than one distinct packet, so a redelivery of an older packet is
/// still recognised as a duplicate.
pub(crate) fn collect<'a, I>(own: &'a OutcomePacket, twins: I) -> Ballot<'a>
where
    I: IntoIterator,
    I::Item: Twin<'a>,
{
    let twins = twins.into_iter();
    let capacity = twins.size_hint().0.saturating_add(1);
    let mut slot_of: HashMap<&'a str, u32, RandomState> =
        HashMap::with_capacity_and_hasher(capacity, RandomState::default());
    let mut votes: Vec<Vote<'a>> = Vec::with_capacity(capacity);
    let mut displaced: HashSet<Identity<'a>, RandomState> = HashSet::default();
    let mut duplicates = 0;
    let mut superseded = 0;

    slot_of.insert(own.agent_id.as_str(), 0);
    votes.push(Vote {
        packet: own,
        id: None,
    });

    for twin in twins {
        let v = Vote::of(&twin);
        match slot_of.entry(v.packet.agent_id.as_str()) {
            Entry::Vacant(e) => {
                e.insert(votes.len() as u32);
                votes.push(v);
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
                } else {
                    displaced.insert(v.identity());
                }
            }
        }
    }
    Ballot {
        votes,
        duplicates,
        superseded,
    }
}
