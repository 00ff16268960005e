//! How far the consensus voters' situations agree: the fingerprint bucket
//! most of them share, and the mean situation inside it.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::ballot::{Ballot, Slot, MAX_WIDTH};
use super::exact;
use super::tally::UNIT;
use super::twin::Twin;
use crate::fingerprint::Fingerprint;

/// `floor(x * resolution)` as the fingerprint writes it, if it is in range.
///
/// `f64::floor` is a library call on baseline x86-64; this is the same value
/// from a truncating conversion, without the call.
#[inline]
fn bucket(x: f64, resolution: f64) -> Option<i64> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    let v = x * resolution;
    // floor(v) is in the i64 range iff v is in [-2^63, 2^63); NaN is not.
    if !(-LIMIT..LIMIT).contains(&v) {
        return None;
    }
    let t = v as i64;
    Some(if (t as f64) > v { t - 1 } else { t })
}

/// The agreement figures.
pub(crate) struct Agreement {
    /// Consensus voters in the most common bucket.
    pub voters: usize,
    /// That bucket's fingerprint, if it can be computed.
    pub fingerprint: Option<String>,
    /// The mean of those voters' context vectors.
    pub context: Vec<f64>,
}

/// No group: a vector with a bucket outside the 64-bit range.
const NO_GROUP: u32 = u32::MAX;

/// The consensus voters' situations: groups of voters with the same
/// fingerprint buckets. A voter is first tried against the groups of the
/// latest voters ([`Unpacked`]: most voters share one of a few); else its
/// buckets are computed and its group found by a seeded hash of them,
/// confirmed by comparing them. Nothing is fingerprinted per voter.
struct Groups {
    meta: Vec<Meta>,
    /// Every group's coordinates, one group after another.
    coords: Vec<Coord>,
    /// Hash of the buckets → the newest group with it; older ones with the
    /// same hash follow `Meta::next`.
    head: HashMap<u64, u32, RandomState>,
    hasher: RandomState,
    /// The groups of the latest voters, unpacked; `front` is the latest.
    unpacked: [Unpacked; UNPACKED],
    front: usize,
    /// The next entry of `unpacked` to reuse.
    victim: usize,
    buf: Vec<i64>,
    resolution: f64,
}

/// How many groups are kept unpacked.
const UNPACKED: usize = 4;

/// A group of a latest voter, unpacked: its bucket edges, and the voters and
/// sums added to it since it was unpacked or last flushed (added to the
/// group by [`Groups::flush`]).
///
/// The sums are exact without a conversion to integer per voter: a voter's
/// position inside the bucket `y` (in `[0, 1)`) counts `y * 2^60` units
/// (truncated), which is `y` itself when `y` is 0 or at least `2^-8`; such
/// positions are summed as [`exact`] says. A tiny position (rare) is
/// converted on its own.
#[derive(Clone, Copy)]
struct Unpacked {
    /// `NO_GROUP` when unused.
    group: u32,
    /// Voters added since the last flush.
    count: u32,
    /// Per coordinate, the bucket's lower edge and the next bucket's.
    lo: [f64; MAX_WIDTH],
    hi: [f64; MAX_WIDTH],
    /// Per coordinate, the sums of `h` and of `y - h`.
    high: [f64; MAX_WIDTH],
    low: [f64; MAX_WIDTH],
}

const UNUSED: Unpacked = Unpacked {
    group: NO_GROUP,
    count: 0,
    lo: [0.0; MAX_WIDTH],
    hi: [0.0; MAX_WIDTH],
    high: [0.0; MAX_WIDTH],
    low: [0.0; MAX_WIDTH],
};

/// A position at least this large (or 0) is a whole number of units.
const WHOLE: f64 = 1.0 / 256.0;
/// Flush an unpacked group's sums after this many voters, before they could
/// be inexact.
const FLUSH_EVERY: u32 = exact::MAX_TERMS;

/// One group.
#[derive(Clone, Copy)]
struct Meta {
    /// Its coordinates: `coords[start..end]`.
    start: u32,
    end: u32,
    /// Voters in it.
    count: u32,
    /// The next group with the same hash, or `NO_GROUP`.
    next: u32,
    /// Every bucket is below 2^53 in size, so the edge test is exact.
    exact: bool,
}

/// One coordinate of a group.
#[derive(Clone, Copy)]
struct Coord {
    bucket: i64,
    /// The bucket's lower edge, `bucket` as a number.
    edge: f64,
    /// The members' summed position inside the bucket, `x * resolution -
    /// bucket`, in fixed point: exact, so the mean does not depend on the
    /// order the voters came in.
    sum: u128,
}

/// `x` in `[0, 1)` in the fixed-point units of the sums (one conversion).
#[inline(always)]
fn inside_units(x: f64) -> u128 {
    (x.clamp(0.0, 1.0) * UNIT) as i64 as u128
}

impl Groups {
    fn new(resolution: u32) -> Self {
        Groups {
            meta: Vec::new(),
            coords: Vec::new(),
            head: HashMap::default(),
            hasher: RandomState::default(),
            unpacked: [UNUSED; UNPACKED],
            front: 0,
            victim: 0,
            buf: Vec::new(),
            resolution: f64::from(resolution.max(1)),
        }
    }

    fn coords(&self, g: u32) -> &[Coord] {
        let m = self.meta[g as usize];
        &self.coords[m.start as usize..m.end as usize]
    }

    /// Group `g`'s bucket numbers (for the tie rule).
    fn buckets(&self, g: u32) -> impl Iterator<Item = i64> + '_ {
        self.coords(g).iter().map(|c| c.bucket)
    }

    /// Put a voter whose vector is `row` (of `W` numbers, or of any number up
    /// to `MAX_WIDTH` when `W` is 0) in its group; `NO_GROUP` if it has a
    /// bucket out of the 64-bit range. `W` known at compile time makes the
    /// common case straight-line code.
    #[inline(always)]
    fn join_row<const W: usize>(&mut self, row: &[f64]) -> u32 {
        let w = if W == 0 { row.len() } else { W };
        let row = &row[..w];
        if let Some(g) = self.try_unpacked::<W>(self.front, row) {
            return g;
        }
        self.join_other(row)
    }

    /// Add `row` to unpacked group `i` if it is in its buckets: `floor(v) ==
    /// b` iff `b <= v < b + 1`, i.e. `0 <= v - b < 1` (computed, the
    /// difference can round up to 1 at most, which only sends a voter the
    /// long way); inside the bucket `v - b` is in `[0, 1)` already (no clamp
    /// needed); the sums as [`Unpacked`] says.
    #[inline(always)]
    fn try_unpacked<const W: usize>(&mut self, i: usize, row: &[f64]) -> Option<u32> {
        let w = if W == 0 { row.len() } else { W };
        let row = &row[..w];
        let res = self.resolution;
        let u = &mut self.unpacked[i];
        if u.group == NO_GROUP {
            return None;
        }
        let mut y = [0.0; MAX_WIDTH];
        // In the bucket with a whole number of units (the common case).
        let mut whole = true;
        for ((y, &x), &lo) in y[..w].iter_mut().zip(row).zip(&u.lo[..w]) {
            *y = x * res - lo;
            whole &= is_whole(*y);
        }
        let g = u.group;
        if whole {
            u.count += 1;
            for ((high, low), &y) in u.high[..w].iter_mut().zip(&mut u.low[..w]).zip(&y[..w]) {
                exact::add(high, low, y);
            }
        } else if y[..w].iter().all(|&y| (0.0..1.0).contains(&y)) {
            u.count += 1;
            self.add_sums(g, row);
        } else {
            return None;
        }
        if self.unpacked[i].count >= FLUSH_EVERY {
            self.flush(i);
        }
        Some(g)
    }

    /// Add what unpacked group `i` gathered to its group.
    fn flush(&mut self, i: usize) {
        let u = &mut self.unpacked[i];
        if u.group == NO_GROUP {
            return;
        }
        let m = &mut self.meta[u.group as usize];
        m.count += std::mem::take(&mut u.count);
        for (j, coord) in self.coords[m.start as usize..m.end as usize]
            .iter_mut()
            .enumerate()
        {
            let (high, low) = (
                std::mem::take(&mut u.high[j]),
                std::mem::take(&mut u.low[j]),
            );
            coord.sum = coord.sum.wrapping_add(exact::units(high, low));
        }
    }

    /// Write the front unpacked group's gatherings, held by the caller, back
    /// (`group` is the front group, or `NO_GROUP`).
    fn store(&mut self, group: u32, count: u32, high: &[f64], low: &[f64]) {
        let u = &mut self.unpacked[self.front];
        if group == NO_GROUP || u.group != group {
            return;
        }
        u.count = count;
        u.high[..high.len()].copy_from_slice(high);
        u.low[..low.len()].copy_from_slice(low);
    }

    /// Flush every unpacked group.
    fn flush_all(&mut self) {
        (0..UNPACKED).for_each(|i| self.flush(i));
    }

    /// A voter outside the latest voter's group: try the other unpacked
    /// groups, else find or make its group, unpack it in place of the
    /// oldest (if its edge test is exact) and add the voter.
    #[inline(never)]
    fn join_other(&mut self, cv: &[f64]) -> u32 {
        let front = self.front;
        for i in (0..UNPACKED).filter(|&i| i != front) {
            if let Some(g) = self.try_unpacked::<0>(i, cv) {
                self.front = i;
                return g;
            }
        }
        let g = self.group_of(cv);
        if g == NO_GROUP {
            return g;
        }
        let m = self.meta[g as usize];
        if m.exact && cv.len() <= MAX_WIDTH {
            let i = self.victim;
            self.victim = (i + 1) % UNPACKED;
            self.flush(i);
            let u = &mut self.unpacked[i];
            u.group = g;
            for (j, coord) in self.coords[m.start as usize..m.end as usize]
                .iter()
                .enumerate()
            {
                u.lo[j] = coord.edge;
                u.hi[j] = coord.edge + 1.0;
            }
            self.front = i;
        }
        self.add(g, cv);
        g
    }

    /// Put a voter whose vector has any length in its group, without
    /// unpacking it.
    fn join_any(&mut self, cv: &[f64]) -> u32 {
        let g = self.group_of(cv);
        if g != NO_GROUP {
            self.add(g, cv);
        }
        g
    }

    /// Add `cv` to group `g`, whose buckets it is in.
    fn add(&mut self, g: u32, cv: &[f64]) {
        self.meta[g as usize].count += 1;
        self.add_sums(g, cv);
    }

    /// Add `cv`'s positions to group `g`'s sums (not its count).
    fn add_sums(&mut self, g: u32, cv: &[f64]) {
        let res = self.resolution;
        let m = self.meta[g as usize];
        for (c, &x) in self.coords[m.start as usize..m.end as usize]
            .iter_mut()
            .zip(cv)
        {
            c.sum += inside_units(x * res - c.edge);
        }
    }

    /// The group of the buckets of `cv` (made if new), or `NO_GROUP`.
    fn group_of(&mut self, cv: &[f64]) -> u32 {
        let res = self.resolution;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let g = if cv
            .iter()
            .all(|&x| bucket(x, res).map(|b| buf.push(b)).is_some())
        {
            self.find_or_add(&buf)
        } else {
            NO_GROUP
        };
        self.buf = buf;
        g
    }

    /// The mean of group `g`'s vectors: per coordinate the bucket plus the
    /// mean position inside it (one rounding from the exact sum), over the
    /// resolution. It lies in the bucket; if rounding says otherwise, the
    /// value is stepped back in.
    fn mean(&self, g: u32) -> Vec<f64> {
        let k = u128::from(self.meta[g as usize].count.max(1));
        let res = self.resolution;
        self.coords(g)
            .iter()
            .map(|c| {
                let inside = (c.sum / k) as f64 / UNIT;
                let mut m = (c.edge + inside) / res;
                for _ in 0..4 {
                    match bucket(m, res) {
                        Some(x) if x == c.bucket => return m,
                        // One step toward the bucket (positive and negative
                        // numbers order their bits oppositely).
                        Some(x) if (x > c.bucket) == (m > 0.0) => {
                            m = f64::from_bits(m.to_bits() - 1)
                        }
                        _ => m = f64::from_bits(m.to_bits() + 1),
                    }
                }
                (c.edge + 0.5) / res
            })
            .collect()
    }

    fn find_or_add(&mut self, buckets: &[i64]) -> u32 {
        let hash = self.hasher.hash_one(buckets);
        let mut g = self.head.get(&hash).copied().unwrap_or(NO_GROUP);
        while g != NO_GROUP && !self.buckets(g).eq(buckets.iter().copied()) {
            g = self.meta[g as usize].next;
        }
        if g == NO_GROUP {
            g = self.meta.len() as u32;
            let start = self.coords.len() as u32;
            self.coords.extend(buckets.iter().map(|&b| Coord {
                bucket: b,
                edge: b as f64,
                sum: 0,
            }));
            let next = self.head.insert(hash, g).unwrap_or(NO_GROUP);
            self.meta.push(Meta {
                start,
                end: self.coords.len() as u32,
                count: 0,
                next,
                exact: buckets.iter().all(|b| b.unsigned_abs() < 1 << 53),
            });
        }
        g
    }
}

/// The voters whose situations are grouped: those for `problem`, but not
/// those `excluded`.
struct Voters<'b, 'a, T> {
    ballot: &'b Ballot<'a, T>,
    problem: u32,
    excluded: Option<&'b [bool]>,
}

impl<'a, T: Twin<'a>> Voters<'_, 'a, T> {
    /// Their slots.
    #[inline(always)]
    fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> + '_ {
        let (problem, excluded) = (self.problem, self.excluded);
        self.ballot
            .slots
            .iter()
            .enumerate()
            .filter(move |&(slot, s)| s.problem == problem && !excluded.is_some_and(|x| x[slot]))
    }
}

/// Group the `voters` whose vectors have any length; the own packet's group
/// if it is one of them.
fn group_any<'a, T: Twin<'a>>(groups: &mut Groups, voters: &Voters<'_, 'a, T>) -> Option<u32> {
    let (mut own, ballot) = (None, voters.ballot);
    for (slot, s) in voters.slots() {
        let g = if s.in_rows {
            groups.join_row::<0>(ballot.cv(slot))
        } else {
            groups.join_any(ballot.cv(slot))
        };
        if slot == 0 && g != NO_GROUP {
            own = Some(g);
        }
    }
    groups.flush_all();
    own
}

/// [`group_any`] for rows of `W` numbers, with the latest voter's group
/// unpacked into local variables: the common case (the voter is in that
/// group, at a position that is a whole number of units) is straight-line
/// code with no memory traffic besides the row.
fn group_fixed<'a, T: Twin<'a>, const W: usize>(
    groups: &mut Groups,
    voters: &Voters<'_, 'a, T>,
) -> Option<u32> {
    let (mut own, ballot) = (None, voters.ballot);
    let rows = ballot.rows();
    let res = groups.resolution;
    let mut group = NO_GROUP;
    let mut lo = [0.0; W];
    let mut high = [0.0; W];
    let mut low = [0.0; W];
    let mut count = 0u32;
    for (slot, s) in voters.slots() {
        if !s.in_rows {
            let g = groups.join_any(ballot.cv(slot));
            if slot == 0 && g != NO_GROUP {
                own = Some(g);
            }
            continue;
        }
        let row = &rows[slot * W..slot * W + W];
        let mut y = [0.0; W];
        let mut whole = group != NO_GROUP;
        for j in 0..W {
            y[j] = row[j] * res - lo[j];
            whole &= is_whole(y[j]);
        }
        let g = if whole {
            count += 1;
            for j in 0..W {
                exact::add(&mut high[j], &mut low[j], y[j]);
            }
            if count >= FLUSH_EVERY {
                groups.store(group, count, &high, &low);
                groups.flush(groups.front);
                (count, high, low) = (0, [0.0; W], [0.0; W]);
            }
            group
        } else if group != NO_GROUP && y.iter().all(|y| (0.0..1.0).contains(y)) {
            // In the group, at a tiny position: converted on its own.
            count += 1;
            groups.add_sums(group, row);
            group
        } else {
            groups.store(group, count, &high, &low);
            let g = groups.join_other(row);
            let u = &groups.unpacked[groups.front];
            group = u.group;
            lo.copy_from_slice(&u.lo[..W]);
            high.copy_from_slice(&u.high[..W]);
            low.copy_from_slice(&u.low[..W]);
            count = u.count;
            g
        };
        if slot == 0 && g != NO_GROUP {
            own = Some(g);
        }
    }
    groups.store(group, count, &high, &low);
    groups.flush_all();
    own
}

/// `y` (a position inside the bucket, if in `[0, 1)`) is in the bucket and
/// a whole number of units: 0, or in `[2^-8, 1)`.
#[inline(always)]
fn is_whole(y: f64) -> bool {
    (WHOLE..1.0).contains(&y) | (y == 0.0)
}

/// The agreement among the voters for `problem` (those not `excluded`): the
/// group with most voters wins; a tie goes to the own packet's group (slot
/// 0), then to the smallest bucket sequence. A voter whose vector has a
/// bucket out of the 64-bit range is in no group.
///
/// The context is the mean of the winners' vectors, summed exactly as they
/// are taken in (so independent of their order); it lies in their bucket.
pub(crate) fn agreement<'a, T: Twin<'a>>(
    ballot: &Ballot<'a, T>,
    problem: u32,
    excluded: Option<&[bool]>,
    resolution: u32,
) -> Agreement {
    let mut groups = Groups::new(resolution);
    let g = &mut groups;
    let v = &Voters {
        ballot,
        problem,
        excluded,
    };
    // The common widths get code of their own.
    let own = match ballot.width {
        1 => group_fixed::<T, 1>(g, v),
        2 => group_fixed::<T, 2>(g, v),
        3 => group_fixed::<T, 3>(g, v),
        4 => group_fixed::<T, 4>(g, v),
        5 => group_fixed::<T, 5>(g, v),
        6 => group_fixed::<T, 6>(g, v),
        8 => group_fixed::<T, 8>(g, v),
        _ => group_any(g, v),
    };
    let count = |g: u32| groups.meta[g as usize].count;
    let winner = (0..groups.meta.len() as u32).max_by(|&a, &b| {
        count(a)
            .cmp(&count(b))
            .then((own == Some(a)).cmp(&(own == Some(b))))
            .then_with(|| groups.buckets(b).cmp(groups.buckets(a)))
    });
    let Some(winner) = winner else {
        return Agreement {
            voters: 0,
            fingerprint: None,
            context: Vec::new(),
        };
    };
    let voters = count(winner) as usize;
    let context = groups.mean(winner);
    let (domain, problem_class) = ballot.problems[problem as usize];
    let fingerprint = Fingerprint::compute(domain, problem_class, &context, resolution)
        .ok()
        .map(|f| f.to_string());
    Agreement {
        voters,
        fingerprint,
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_floor() {
        for x in [
            0.0f64, -0.0, 0.25, -0.25, 0.999, -1.0, -1.000_001, 3.7, -3.7, 1e15, -1e15, 0.1, -0.1,
            2.5e-300, -2.5e-300, 4.5e18, -9.2e18,
        ] {
            for r in [1.0, 4.0, 7.0, 1000.0] {
                let f = (x * r).floor();
                let expected = (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0)
                    .contains(&f)
                    .then_some(f as i64);
                assert_eq!(bucket(x, r), expected, "{x} * {r}");
            }
        }
        assert_eq!(bucket(1e300, 4.0), None);
        assert_eq!(bucket(f64::NAN, 4.0), None);
        assert_eq!(bucket(-9_223_372_036_854_775_808.0, 1.0), Some(i64::MIN));
        assert_eq!(bucket(9_223_372_036_854_775_808.0, 1.0), None);
    }

    #[test]
    fn buckets_match_the_fingerprint() {
        // The same vectors give the same fingerprint iff their buckets are equal.
        let a: &[f64] = &[0.22, 0.88, 0.07, 0.65];
        let b: &[f64] = &[0.18, 0.92, 0.03, 0.71];
        let c: &[f64] = &[0.26, 0.88, 0.07, 0.65];
        let key = |cv: &[f64]| cv.iter().map(|&x| bucket(x, 4.0)).collect::<Vec<_>>();
        let fp = |cv: &[f64]| Fingerprint::compute("d", "p", cv, 4).unwrap();
        assert!(key(a) == key(b) && fp(a) == fp(b));
        assert!(key(a) != key(c) && fp(a) != fp(c));
    }
}
