//! Taking the packets in: duplicates count once, one vote per agent.
//!
//! This is the one pass over the packets. Each packet is read once, and what
//! the later steps need of a vote is kept in compact arrays, one entry per
//! vote (a *slot*): its problem, confidence and timestamp, and its context
//! vector copied into a row of a flat array. The later steps (tallies,
//! outliers, agreement) walk these arrays in order instead of following N
//! pointers into N scattered packets again.

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;

use super::agents::{ends, half, word, AgentHasher, Agents, Found};
use super::exact::Sum;
use super::outliers::Boxes;
use super::twin::{identity, same_content, Identity, Twin};
use crate::packet::{OutcomePacket, PacketId};

/// Context vectors up to this length are copied into the rows; a longer one
/// (or one whose length differs from the own packet's) is read from its
/// packet when needed.
pub(crate) const MAX_WIDTH: usize = 16;

/// What the later steps need of one vote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    /// Index into [`Ballot::problems`].
    pub problem: u32,
    /// Its context vector is in the rows (its length is the row width).
    pub in_rows: bool,
    /// The vote carries the packet id it was delivered under (in `ids`).
    has_id: bool,
    pub confidence: f64,
    pub timestamp: f64,
}

impl Slot {
    /// The slot of packet `p`, voting for `problem`, with rows `width` wide.
    #[inline(always)]
    fn new(problem: u32, p: &OutcomePacket, width: usize, has_id: bool) -> Slot {
        Slot {
            problem,
            in_rows: p.context_vector.len() == width,
            has_id,
            confidence: p.confidence,
            timestamp: p.timestamp,
        }
    }
}

/// A vote's twin and packet id, side by side: a redelivery is recognised by
/// its id without reading the earlier delivery (far back in memory) again.
#[derive(Clone, Copy)]
pub(crate) struct Vote<T> {
    pub twin: Option<T>,
    id: PacketId,
}

/// The votes: slot 0 is the own packet, then one per other agent in the order
/// its first packet arrived.
pub(crate) struct Ballot<'a, T> {
    pub own: &'a OutcomePacket,
    /// The twin holding each slot's vote (`None`: the own packet) and its
    /// packet id. A twin is kept as it came (for a `&Delivery`, one
    /// pointer), not copied.
    pub votes: Vec<Vote<T>>,
    pub slots: Vec<Slot>,
    /// The context vectors of the slots `in_rows`, `width` numbers per slot.
    rows: Vec<f64>,
    pub width: usize,
    /// `(domain, problem_class)` of each problem voted on.
    pub problems: Vec<(&'a str, &'a str)>,
    pub duplicates: usize,
    pub superseded: usize,
    /// Per-problem figures gathered as the votes were taken in.
    pub running: Running,
}

/// Per-problem figures gathered in the pass over the packets, while each
/// vote's figures are at hand, so that the tallies and the outlier filter's
/// census need not walk the votes again: the votes, the first voting slot,
/// the confidences summed (as [`super::tally::count`] sums them) and the box
/// around the vectors in the rows (as the census draws it). Only valid if no
/// vote was replaced by a later packet of its agent (a box cannot be
/// shrunk); the callers then walk the votes as before.
pub(crate) struct Running {
    /// No vote was replaced: the figures are those of the votes.
    pub valid: bool,
    /// Every vote's context vector is in the rows.
    pub all_in_rows: bool,
    /// Per problem: its votes, first voting slot and summed confidences.
    pub problems: Vec<Count>,
    /// The boxes around the vectors in the rows, when the outlier filter
    /// (the only reader) is on.
    pub boxes: Option<Boxes>,
}

/// One problem's running figures, side by side (one bounds check per vote).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Count {
    pub votes: u32,
    /// The first voting slot; `u32::MAX` before one.
    pub first: u32,
    pub sum: Sum,
}

impl Running {
    fn new(boxes: bool, width: usize) -> Self {
        Running {
            valid: true,
            all_in_rows: true,
            problems: Vec::new(),
            boxes: boxes.then(|| Boxes::new(width)),
        }
    }

    /// Room for problem `p` (numbered in order: at most one new at a time).
    #[inline(never)]
    fn open(&mut self, p: usize) {
        while self.problems.len() <= p {
            self.problems.push(Count {
                first: u32::MAX,
                ..Count::default()
            });
        }
        if let Some(boxes) = &mut self.boxes {
            boxes.open(p);
        }
    }

    /// Count the new vote in `slot`, and take its vector: appended to
    /// `rows` (a row of zeros if the vector is not `width` long, which keeps
    /// the rows aligned with the slots) and, in the rows, into its box.
    #[inline(always)]
    fn add(&mut self, slot: usize, s: &Slot, rows: &mut Vec<f64>, width: usize, cv: &[f64]) {
        let p = s.problem as usize;
        if p >= self.problems.len() {
            self.open(p);
        }
        let c = &mut self.problems[p];
        c.votes += 1;
        if c.first == u32::MAX {
            c.first = slot as u32;
        }
        c.sum.add(s.confidence);
        if !s.in_rows {
            self.all_in_rows = false;
            rows.resize(rows.len() + width, 0.0);
            return;
        }
        // One dispatch on the width for the copy and the box.
        match cv.len() {
            1 => self.take::<1>(rows, p, cv),
            2 => self.take::<2>(rows, p, cv),
            3 => self.take::<3>(rows, p, cv),
            4 => self.take::<4>(rows, p, cv),
            5 => self.take::<5>(rows, p, cv),
            6 => self.take::<6>(rows, p, cv),
            8 => self.take::<8>(rows, p, cv),
            _ => {
                rows.extend_from_slice(cv);
                if let Some(boxes) = &mut self.boxes {
                    boxes.add(p, cv);
                }
            }
        }
    }

    /// [`add`](Self::add)'s copy and box for `W` numbers: fixed-size, no
    /// library call.
    #[inline(always)]
    fn take<const W: usize>(&mut self, rows: &mut Vec<f64>, p: usize, cv: &[f64]) {
        let row: &[f64; W] = cv.try_into().unwrap_or(&[0.0; W]);
        rows.extend_from_slice(row);
        if let Some(boxes) = &mut self.boxes {
            boxes.widen::<W>(p, row);
        }
    }
}

impl<'a, T: Twin<'a>> Ballot<'a, T> {
    /// `twin`, a packet of the agent voting in slot `s`: a duplicate (the
    /// same packet again, or one already displaced) is counted as such;
    /// another packet supersedes the vote if it is not older (the own
    /// packet is never superseded), else it is displaced itself.
    #[inline(never)]
    fn again(
        &mut self,
        s: usize,
        twin: T,
        problems: &mut Problems<'a>,
        displaced: &mut HashSet<Identity<'a>, RandomState>,
    ) {
        let (p, id, width) = (twin.packet(), twin.id(), self.width);
        let current = self.votes[s].twin;
        let same = match id {
            Some(id) if self.votes[s].id == id && (id != NO_ID || self.slots[s].has_id) => true,
            Some(_) if self.slots[s].has_id => false,
            _ => same_content(self.packet(s), p),
        };
        if same || (!displaced.is_empty() && displaced.contains(&identity(&twin))) {
            self.duplicates += 1;
            return;
        }
        // Numbered even if it does not vote (a problem of no votes).
        let slot = Slot::new(problems.id(p), p, width, id.is_some());
        self.superseded += 1;
        // The own packet is the own agent's vote; for any other agent the
        // latest timestamp wins, a tie going to the later arrival.
        match current {
            Some(c) if p.timestamp >= self.slots[s].timestamp => {
                self.running.valid = false;
                displaced.insert(identity(&c));
                self.votes[s] = Vote {
                    twin: Some(twin),
                    id: id.unwrap_or(NO_ID),
                };
                self.slots[s] = slot;
                if slot.in_rows {
                    self.rows[s * width..(s + 1) * width].copy_from_slice(&p.context_vector);
                }
            }
            _ => {
                displaced.insert(identity(&twin));
            }
        }
    }

    /// The packet voting in `slot`.
    pub fn packet(&self, slot: usize) -> &'a OutcomePacket {
        match &self.votes[slot].twin {
            None => self.own,
            Some(t) => t.packet(),
        }
    }

    /// The context vector of the vote in `slot`.
    #[inline]
    pub fn cv(&self, slot: usize) -> &[f64] {
        if self.slots[slot].in_rows {
            &self.rows[slot * self.width..(slot + 1) * self.width]
        } else {
            &self.packet(slot).context_vector
        }
    }

    /// The rows: slot `s`'s vector is `rows()[s * width..(s + 1) * width]`
    /// if it is `in_rows`.
    pub fn rows(&self) -> &[f64] {
        &self.rows
    }

    /// Every vote's context vector is in the rows.
    pub fn all_in_rows(&self) -> bool {
        self.slots.iter().all(|s| s.in_rows)
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
    if n < 8 {
        if n < 4 {
            return a.iter().zip(b).all(|(x, y)| x == y);
        }
        // Two overlapping four-byte words.
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

/// What `ids` holds for a vote without a packet id. A vote's `has_id` is only
/// read when an id equals this (which no SHA-256 of a packet does in
/// practice): it sits beside the vote's other figures, a second random read
/// per redelivery that the id comparison alone saves.
const NO_ID: PacketId = PacketId::from_bytes([0; 32]);

/// Numbers the problems. A subject names one problem, a batch a handful,
/// and which one comes next is not predictable: a small direct-mapped cache
/// indexed by a hash of the two strings' [`Ends`] finds the number with one
/// comparison that holds, instead of comparisons that fail at random (each
/// a mispredicted branch). Strings of at most 16 bytes (most problem names)
/// are wholly in their ends, so a hit on them needs no further reading.
struct Problems<'a> {
    keys: Vec<(&'a str, &'a str)>,
    ids: HashMap<(&'a str, &'a str), u32, RandomState>,
    cache: [Cached; 1 << CACHE_BITS],
}

/// 64 buckets, in pairs: a batch names a handful of problems.
const CACHE_BITS: u32 = 6;

/// A cache bucket: a problem's ends and its number + 1 (0: empty).
#[derive(Clone, Copy, Default)]
struct Cached {
    domain: Ends,
    class: Ends,
    id: u32,
}

/// A string's length and its first and last (up to) eight bytes: all of
/// it when at most 16 bytes long.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Ends {
    len: u64,
    head: u64,
    tail: u64,
}

impl Ends {
    #[inline(always)]
    fn of(s: &str) -> Ends {
        let (head, tail) = ends(s.as_bytes());
        Ends {
            len: s.len() as u64,
            head,
            tail,
        }
    }

    /// The string is all in its ends.
    #[inline(always)]
    fn whole(&self) -> bool {
        self.len <= 16
    }

    #[inline(always)]
    fn hash(&self) -> u64 {
        (self.head ^ self.len).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.tail
    }
}

impl<'a> Problems<'a> {
    #[inline(always)]
    fn id(&mut self, p: &'a OutcomePacket) -> u32 {
        let key = (p.domain.as_str(), p.problem_class.as_str());
        let (domain, class) = (Ends::of(key.0), Ends::of(key.1));
        let bucket = ((domain.hash() ^ class.hash().wrapping_mul(0xff51_afd7_ed55_8ccd))
            .wrapping_mul(0xc4ce_b9fe_1a85_ec53)
            >> (64 - CACHE_BITS)) as usize;
        // Two ways: a problem whose bucket is taken by another goes to the
        // bucket beside it, so two problems in one bucket both stay cached.
        for b in [bucket, bucket ^ 1] {
            let e = self.cache[b];
            if e.id != 0 && e.domain == domain && e.class == class {
                let id = e.id - 1;
                if domain.whole() && class.whole() {
                    return id;
                }
                let (d, c) = self.keys[id as usize];
                if same(c, key.1) && same(d, key.0) {
                    return id;
                }
            }
        }
        let id = self.id_slow(key);
        let b = if self.cache[bucket].id == 0 {
            bucket
        } else {
            bucket ^ 1
        };
        self.cache[b] = Cached {
            domain,
            class,
            id: id + 1,
        };
        id
    }

    #[inline(never)]
    fn id_slow(&mut self, key: (&'a str, &'a str)) -> u32 {
        let keys = &mut self.keys;
        *self.ids.entry(key).or_insert_with(|| {
            keys.push(key);
            (keys.len() - 1) as u32
        })
    }
}

/// One pass over the twins. The hash table and the arrays are sized from the
/// iterator's size hint, so a slice of N twins costs a constant number of
/// allocations. A packet whose agent already has a vote is compared with that
/// vote (by id, or by content without ids); the packets that lost to a later
/// one are remembered in a set that is only touched when an agent sends more
/// than one distinct packet, so a redelivery of an older packet is still
/// recognised as a duplicate. The votes are counted on the way
/// ([`Running`]), and with `boxes` (the outlier filter is on) their boxes
/// drawn.
pub(crate) fn collect<'a, I>(own: &'a OutcomePacket, twins: I, boxes: bool) -> Ballot<'a, I::Item>
where
    I: IntoIterator,
    I::Item: Twin<'a>,
{
    let twins = twins.into_iter();
    let capacity = twins.size_hint().0.saturating_add(1);
    let hasher = AgentHasher::new();
    let mut agents = Agents::with_capacity(capacity);
    let width = match own.context_vector.len() {
        w if w <= MAX_WIDTH => w,
        _ => 0,
    };
    let mut b: Ballot<'a, I::Item> = Ballot {
        own,
        votes: Vec::with_capacity(capacity),
        slots: Vec::with_capacity(capacity),
        rows: Vec::with_capacity(capacity.saturating_mul(width)),
        width,
        problems: Vec::new(),
        duplicates: 0,
        superseded: 0,
        running: Running::new(boxes, width),
    };
    let mut problems = Problems {
        keys: Vec::new(),
        ids: HashMap::default(),
        cache: [Cached::default(); 1 << CACHE_BITS],
    };
    let mut displaced: HashSet<Identity<'a>, RandomState> = HashSet::default();

    // The own packet's id, for its echo: it was deposited as its compact
    // encoding, so one encoding here (not one per packet) recognises the
    // echo even if the transport's decoding moved a float by a bit.
    let own_id = own.encode().ok().map(|body| PacketId::of(&body));
    let h = hasher.hash(own.agent_id.as_bytes());
    if let Found::Free(at) = agents.find(h, |_| false) {
        agents.insert(at, h, 0, |_| h);
    }
    b.votes.push(Vote {
        twin: None,
        id: own_id.unwrap_or(NO_ID),
    });
    let own_slot = Slot::new(problems.id(own), own, width, own_id.is_some());
    b.running
        .add(0, &own_slot, &mut b.rows, width, &own.context_vector);
    b.slots.push(own_slot);

    for twin in twins {
        let p = twin.packet();
        let id = twin.id();
        let agent = p.agent_id.as_bytes();
        let h = hasher.hash(agent);
        let votes = &b.votes;
        let packet_of = |s: usize| match votes[s].twin {
            None => own,
            Some(t) => t.packet(),
        };
        // A redelivery carries the id of the vote it repeats, which settles
        // it without reading the earlier packet's agent id.
        let found = agents.find(h, |s| {
            id.is_some_and(|id| votes[s].id == id && (id != NO_ID || b.slots[s].has_id))
                || packet_of(s).agent_id.as_bytes() == agent
        });
        let at = match found {
            Found::Free(at) => at,
            Found::Slot(s) => {
                // Off the common path: a redelivery, or a later packet.
                b.again(s, twin, &mut problems, &mut displaced);
                continue;
            }
        };
        // A new agent: a new vote.
        let slot = Slot::new(problems.id(p), p, width, id.is_some());
        let s = b.votes.len();
        b.votes.push(Vote {
            twin: Some(twin),
            id: id.unwrap_or(NO_ID),
        });
        let votes = &b.votes;
        agents.insert(at, h, s, |s| {
            let p = votes[s].twin.map_or(own, |t| t.packet());
            hasher.hash(p.agent_id.as_bytes())
        });
        b.slots.push(slot);
        b.running
            .add(s, &slot, &mut b.rows, width, &p.context_vector);
    }
    b.problems = problems.keys;
    // A problem named only by packets that did not vote has no votes.
    b.running.open(b.problems.len() - 1);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthesis::{outliers, tally, SynthesisConfig};

    #[test]
    fn running_figures_are_those_of_the_votes() {
        let p = |agent: &str, problem: &str, confidence: f64, cv: Vec<f64>| OutcomePacket {
            agent_id: agent.into(),
            domain: "hvac".into(),
            problem_class: problem.into(),
            conclusion: "c".into(),
            confidence,
            context_vector: cv,
            timestamp: 1_764_000_000.0,
            source_node: "n".into(),
        };
        let own = p("me", "a", 0.7, vec![0.1, 0.2]);
        // Confidences summed exactly and one by one, a value not finite,
        // a vector of another length, problems voted on in any order.
        let twins = [
            p("x", "b", 0.001, vec![0.3, -0.0]),
            p("y", "a", 1.0, vec![f64::INFINITY, 0.2]),
            p("z", "a", 0.0, vec![0.5, 0.5]),
            p("w", "b", 2.5, vec![0.1, 0.9, 0.4]),
            p("v", "c", 0.5, vec![-3.0, 0.25]),
            p("u", "a", 0.62, vec![0.15, 0.21]),
        ];
        let config = SynthesisConfig::default();
        let mut b = collect(&own, &twins, true);
        assert!(b.running.valid);
        assert!(!b.running.all_in_rows);
        let (fused, fused_first) = tally::count(&b, &config, 0.0);
        b.running.valid = false;
        let (walked, walked_first) = tally::count(&b, &config, 0.0);
        assert_eq!(format!("{fused:?}"), format!("{walked:?}"));
        assert_eq!(fused_first, walked_first);
        let votes: Vec<u32> = b.running.problems.iter().map(|c| c.votes).collect();
        assert_eq!(votes, [4, 2, 1]);
        // The outlier filter's boxes: one far vector among vectors of one
        // length, and one not finite.
        for far in [5.0, 0.11, f64::NAN] {
            let twins: Vec<OutcomePacket> = (0..8)
                .map(|i| {
                    let x = if i == 3 {
                        far
                    } else {
                        0.1 + f64::from(i) / 100.0
                    };
                    p(&format!("t{i}"), "a", 0.8, vec![x, 0.2])
                })
                .collect();
            let mut b = collect(&own, &twins, true);
            assert!(b.running.valid && b.running.all_in_rows);
            let fused = outliers::find(&b, 3.5, 4);
            assert_eq!(fused.is_some(), far == 5.0, "{far}");
            b.running.valid = false;
            assert_eq!(fused, outliers::find(&b, 3.5, 4), "{far}");
        }
        // A later packet of an agent replaces its vote: the figures are
        // walked again.
        let mut newer = twins[2].clone();
        newer.timestamp += 1.0;
        let twins: Vec<&OutcomePacket> = twins.iter().chain([&newer]).collect();
        assert!(!collect(&own, twins, true).running.valid);
    }

    #[test]
    fn problems_keep_their_numbers_past_the_cache() {
        // More problems than cache buckets, strings that share sketches
        // (same length and ends), taken in an order that revisits them.
        // Long names (read beyond their ends) and short ones (wholly in
        // them), of many lengths.
        let names: Vec<(String, String)> = (0..300)
            .map(|i| {
                let d = ["hvac", "wind", "ward-3", "", "x"][i % 5].to_string();
                let c = if i % 2 == 0 {
                    format!("energy-{:03}-anomaly-of-kind-{}", i / 3, i % 7)
                } else {
                    format!("{i:03}-{}", "abcdefghijklmn".get(..i % 15).unwrap_or(""))
                };
                (d, c)
            })
            .collect();
        let packets: Vec<OutcomePacket> = names
            .iter()
            .map(|(d, c)| OutcomePacket {
                agent_id: "a".into(),
                domain: d.clone(),
                problem_class: c.clone(),
                conclusion: "c".into(),
                confidence: 0.5,
                context_vector: vec![],
                timestamp: 0.0,
                source_node: "n".into(),
            })
            .collect();
        let mut problems = Problems {
            keys: Vec::new(),
            ids: HashMap::default(),
            cache: [Cached::default(); 1 << CACHE_BITS],
        };
        let mut seen: HashMap<(&str, &str), u32> = HashMap::new();
        for round in 0..3 {
            for k in 0..packets.len() {
                let p = &packets[(k * 7 + round * 13) % packets.len()];
                let id = problems.id(p);
                let key = (p.domain.as_str(), p.problem_class.as_str());
                assert_eq!(*seen.entry(key).or_insert(id), id, "{key:?}");
                assert_eq!(problems.keys[id as usize], key);
            }
        }
        assert_eq!((problems.keys.len(), seen.len()), (300, 300));
    }

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
