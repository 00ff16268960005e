//! Agent id → slot: the one lookup made for every packet.
//!
//! A packet's agent is looked up once per packet, so the lookup is built for
//! it: the agent id is hashed with a seeded hash of a few multiplications
//! ([`AgentHasher`]), and the table ([`Agents`]) is open addressing over one
//! array of `u32` entries, each the slot number beside a tag from the upper
//! half of its agent's hash. A free entry ends a search, and most entries of other
//! agents are passed over on the hash alone, so an agent id is only compared
//! (which reads the earlier packet, far back in memory) when the hashes
//! agree. The table is sized from the number of packets up front, at most
//! half full.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

/// Eight bytes of `s` from `i` (which has them) as a number.
#[inline(always)]
pub(crate) fn word(s: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]))
}

/// Four bytes of `s` from `i` (which has them) as a number.
#[inline(always)]
pub(crate) fn half(s: &[u8], i: usize) -> u64 {
    u64::from(u32::from_le_bytes(s[i..i + 4].try_into().unwrap_or([0; 4])))
}

/// The first and last (up to) eight bytes of `s` as two words: all of it
/// when at most 16 bytes long (one to three bytes: each of them, in the
/// first word).
#[inline(always)]
pub(crate) fn ends(s: &[u8]) -> (u64, u64) {
    let n = s.len();
    if n >= 8 {
        (
            s.first_chunk::<8>().map_or(0, |w| u64::from_le_bytes(*w)),
            s.last_chunk::<8>().map_or(0, |w| u64::from_le_bytes(*w)),
        )
    } else if n >= 4 {
        (half(s, 0), half(s, n - 4))
    } else if n > 0 {
        let x = u64::from(s[0]) | u64::from(s[n / 2]) << 8 | u64::from(s[n - 1]) << 16;
        (x, 0)
    } else {
        (0, 0)
    }
}

/// Sixteen bytes as two words.
#[inline(always)]
fn words(b: &[u8; 16]) -> (u64, u64) {
    let x = u128::from_le_bytes(*b);
    (x as u64, (x >> 64) as u64)
}

/// The 128-bit product of `a` and `b`, folded to 64 bits.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// A seeded hash of agent ids, in as few multiplications as the length
/// allows (an id is typically 10–30 bytes): sixteen bytes per folded
/// multiplication, the last sixteen overlapping, the length mixed in. The
/// seeds are random per synthesis, so ids cannot be chosen to collide.
pub(crate) struct AgentHasher {
    seeds: [u64; 3],
}

impl AgentHasher {
    pub fn new() -> Self {
        let state = RandomState::default();
        AgentHasher {
            seeds: [
                state.hash_one(0x51u64),
                state.hash_one(0x5eedu64) | 1,
                state.hash_one(0xc0ffeeu64) | 1,
            ],
        }
    }

    #[inline(always)]
    pub fn hash(&self, s: &[u8]) -> u64 {
        let seeds = &self.seeds;
        let n = s.len();
        let mut acc = seeds[0] ^ (n as u64);
        // Whole chunks under a length test: no bounds checks left.
        let (a, b) = if n > 16 {
            // The 16-byte blocks before the last byte, then the last 16.
            let mut rest = s;
            while rest.len() > 16 {
                let (x, y) = rest.first_chunk::<16>().map_or((0, 0), words);
                acc = fold(acc ^ x, seeds[1] ^ y);
                rest = &rest[16..];
            }
            s.last_chunk::<16>().map_or((0, 0), words)
        } else {
            ends(s)
        };
        fold(fold(acc ^ a, seeds[1] ^ b), seeds[2])
    }
}

/// Where an agent is: its slot, or where it goes.
pub(crate) enum Found {
    Slot(usize),
    Free(usize),
}

/// Agent → slot, open addressing with linear probing over `u32` entries,
/// 0 when free. An entry's low bits (those of the index, `mask`) hold
/// `slot + 1` (the table is at most half full, so it fits), its high bits
/// the same bits of the upper half of the agent's hash (the index uses the
/// lower half), a tag that passes over most other agents without reading
/// them. Four-byte entries keep the table small: at 100,000 agents it is
/// 2 MB, and every packet reads it at a random place, so its size is what
/// the cache and the TLB feel.
pub(crate) struct Agents {
    entries: Vec<u32>,
    mask: usize,
    len: usize,
}

impl Agents {
    /// Room for `n` agents with the table at most a quarter full (it grows
    /// when half full). The table is zeroed for every synthesis and read at
    /// a random place per packet, so its size is paid twice; but the first
    /// entry read decides a branch (free: a new agent), and the sparser the
    /// table, the more often that branch goes the predicted way. A quarter
    /// measured faster than a half (the `synthesis` bench, AMD EPYC, 10,000
    /// and 100,000 packets); an eighth no faster than a quarter.
    pub fn with_capacity(n: usize) -> Self {
        let size = (n.max(4) * 4).next_power_of_two();
        Agents {
            entries: vec![0; size],
            mask: size - 1,
            len: 0,
        }
    }

    /// The tag bits of `hash` in an entry (the slot bits cleared).
    #[inline(always)]
    fn tag(&self, hash: u64) -> u32 {
        ((hash >> 32) as u32) & !(self.mask as u32)
    }

    /// The slot of the agent with hash `hash` (`same(slot)` tells whether
    /// the agent in `slot` is this one), or the free entry to put it in.
    #[inline(always)]
    pub fn find(&self, hash: u64, mut same: impl FnMut(usize) -> bool) -> Found {
        let low = self.mask as u32;
        let tag = self.tag(hash);
        let mut i = hash as usize & self.mask;
        loop {
            let e = self.entries[i];
            if e == 0 {
                return Found::Free(i);
            }
            if e & !low == tag {
                let slot = ((e & low) - 1) as usize;
                if same(slot) {
                    return Found::Slot(slot);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Put `slot` with hash `hash` in the free entry `at` from
    /// [`find`](Self::find). If that fills the table past half, it doubles,
    /// every entry rehashed by `rehash(slot)` (only when the number of
    /// packets was not known up front).
    #[inline(always)]
    pub fn insert(&mut self, at: usize, hash: u64, slot: usize, rehash: impl Fn(usize) -> u64) {
        self.entries[at] = self.tag(hash) | (slot as u32 + 1);
        self.len += 1;
        if self.len * 2 > self.entries.len() {
            self.grow(rehash);
        }
    }

    #[inline(never)]
    fn grow(&mut self, rehash: impl Fn(usize) -> u64) {
        let old = std::mem::take(&mut self.entries);
        let old_low = self.mask as u32;
        let size = old.len() * 2;
        self.entries = vec![0; size];
        self.mask = size - 1;
        for e in old.into_iter().filter(|&e| e != 0) {
            let slot = (e & old_low) - 1;
            let hash = rehash(slot as usize);
            let mut i = hash as usize & self.mask;
            while self.entries[i] != 0 {
                i = (i + 1) & self.mask;
            }
            self.entries[i] = self.tag(hash) | (slot + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn agent_hashes_see_every_byte() {
        let h = AgentHasher { seeds: [1, 3, 5] };
        let ids: Vec<String> = (0..40)
            .map(|n| "abcdefghijklmnopqrstuvwxyz0123456789-_.!"[..n].to_string())
            .collect();
        let mut seen = HashSet::new();
        for id in &ids {
            assert!(seen.insert(h.hash(id.as_bytes())), "{id:?}");
            // One byte changed anywhere changes the hash.
            for i in 0..id.len() {
                let mut other = id.clone().into_bytes();
                other[i] ^= 1;
                assert_ne!(h.hash(&other), h.hash(id.as_bytes()), "{id:?} at {i}");
            }
        }
    }

    #[test]
    fn the_table_finds_every_agent_and_grows() {
        let h = AgentHasher::new();
        let ids: Vec<String> = (0..1000).map(|i| format!("agent-{i}")).collect();
        // Sized for 10: it has to grow several times.
        let mut t = Agents::with_capacity(10);
        for (slot, id) in ids.iter().enumerate() {
            let hash = h.hash(id.as_bytes());
            match t.find(hash, |s| ids[s] == *id) {
                Found::Slot(s) => panic!("{id} found in slot {s} before it was put in"),
                Found::Free(at) => t.insert(at, hash, slot, |s| h.hash(ids[s].as_bytes())),
            }
        }
        for (slot, id) in ids.iter().enumerate() {
            let hash = h.hash(id.as_bytes());
            assert!(matches!(t.find(hash, |s| ids[s] == *id), Found::Slot(s) if s == slot));
        }
        assert!(t.entries.len() >= 2000);
    }
}
