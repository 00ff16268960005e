//! How far the consensus voters' situations agree: the fingerprint bucket
//! most of them share, and the mean situation inside it.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::ballot::Ballot;
use super::tally::UNIT;
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
pub(crate) const NO_GROUP: u32 = u32::MAX;

/// The voters' situations: groups of voters with the same problem and the
/// same fingerprint buckets. A voter's buckets are computed once, as its
/// packet is taken in; it is first tried against the group of the previous
/// voter on its problem (most voters share one), else groups are found by a
/// seeded hash of the problem and buckets and confirmed by comparing them.
/// Nothing is fingerprinted per voter.
pub(crate) struct Groups {
    meta: Vec<Meta>,
    /// Every group's coordinates, one group after another.
    coords: Vec<Coord>,
    /// Hash of (problem, buckets) → the newest group with it; older ones
    /// with the same hash follow `Meta::next`.
    head: HashMap<u64, u32, RandomState>,
    hasher: RandomState,
    /// Problem → the group its previous voter joined, or `NO_GROUP`.
    last: Vec<u32>,
    buf: Vec<i64>,
    resolution: f64,
}

/// One group.
#[derive(Clone, Copy)]
struct Meta {
    /// Its coordinates: `coords[start..end]`.
    start: u32,
    end: u32,
    problem: u32,
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
#[inline]
fn inside_units(x: f64) -> u128 {
    (x.clamp(0.0, 1.0) * UNIT) as i64 as u128
}

impl Groups {
    pub fn new(resolution: u32) -> Self {
        Groups {
            meta: Vec::new(),
            coords: Vec::new(),
            head: HashMap::default(),
            hasher: RandomState::default(),
            last: Vec::new(),
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

    /// Put a voter in its group; `NO_GROUP` if its vector has a bucket out of
    /// the 64-bit range.
    #[inline]
    pub fn join(&mut self, problem: u32, cv: &[f64]) -> u32 {
        let p = problem as usize;
        if self.last.len() <= p {
            self.last.resize(p + 1, NO_GROUP);
        }
        let last = self.last[p];
        if last != NO_GROUP && self.try_add(last, cv) {
            return last;
        }
        self.join_slow(problem, cv)
    }

    /// Count `cv` in group `g` if it falls in its buckets: `floor(v) == b`
    /// iff `b <= v < b + 1`, exact for `|b| < 2^53` (beyond that the slow
    /// path decides).
    #[inline]
    fn try_add(&mut self, g: u32, cv: &[f64]) -> bool {
        let res = self.resolution;
        let m = &mut self.meta[g as usize];
        let coords = &mut self.coords[m.start as usize..m.end as usize];
        let fits = m.exact
            && coords.len() == cv.len()
            && coords.iter().zip(cv).fold(true, |ok, (c, &x)| {
                let v = x * res;
                ok & (c.edge <= v) & (v < c.edge + 1.0)
            });
        if fits {
            m.count += 1;
            for (c, &x) in coords.iter_mut().zip(cv) {
                c.sum += inside_units(x * res - c.edge);
            }
        }
        fits
    }

    fn join_slow(&mut self, problem: u32, cv: &[f64]) -> u32 {
        let res = self.resolution;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let g = if cv
            .iter()
            .all(|&x| bucket(x, res).map(|b| buf.push(b)).is_some())
        {
            self.find_or_add(problem, &buf)
        } else {
            NO_GROUP
        };
        self.buf = buf;
        if g != NO_GROUP {
            let m = self.meta[g as usize];
            self.meta[g as usize].count += 1;
            for (c, &x) in self.coords[m.start as usize..m.end as usize]
                .iter_mut()
                .zip(cv)
            {
                c.sum += inside_units(x * res - c.edge);
            }
            self.last[problem as usize] = g;
        }
        g
    }

    /// Take a voter out of its group `g` (its vote was replaced, or it is an
    /// outlier); `cv` is its context vector.
    pub fn leave(&mut self, g: u32, cv: &[f64]) {
        if g == NO_GROUP {
            return;
        }
        let res = self.resolution;
        let m = &mut self.meta[g as usize];
        m.count -= 1;
        for (c, &x) in self.coords[m.start as usize..m.end as usize]
            .iter_mut()
            .zip(cv)
        {
            c.sum -= inside_units(x * res - c.edge);
        }
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

    fn find_or_add(&mut self, problem: u32, buckets: &[i64]) -> u32 {
        let hash = self.hasher.hash_one((problem, buckets));
        let mut g = self.head.get(&hash).copied().unwrap_or(NO_GROUP);
        while g != NO_GROUP
            && !(self.meta[g as usize].problem == problem
                && self.buckets(g).eq(buckets.iter().copied()))
        {
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
                problem,
                count: 0,
                next,
                exact: buckets.iter().all(|b| b.unsigned_abs() < 1 << 53),
            });
        }
        g
    }
}

/// The agreement among the voters for `problem` (those not `excluded`, whose
/// groups the caller has already left): the group with most voters wins; a
/// tie goes to the own packet's group (slot 0), then to the smallest bucket
/// sequence. A voter whose vector has a bucket out of the 64-bit range is in
/// no group.
///
/// The context is the mean of the winners' vectors, summed exactly as they
/// were taken in (so independent of their order); it lies in their bucket.
pub(crate) fn agreement<T>(
    ballot: &Ballot<'_, T>,
    problem: u32,
    excluded: Option<&[bool]>,
    resolution: u32,
) -> Agreement {
    let groups = &ballot.groups;
    let own = ballot.info[0].group;
    let own = (own != NO_GROUP && !excluded.is_some_and(|x| x[0])).then_some(own);
    let count = |g: u32| groups.meta[g as usize].count;
    let winner = (0..groups.meta.len() as u32)
        .filter(|&g| groups.meta[g as usize].problem == problem && count(g) > 0)
        .max_by(|&a, &b| {
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
