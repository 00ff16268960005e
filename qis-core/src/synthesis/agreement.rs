//! How far the consensus voters' situations agree: the fingerprint bucket
//! most of them share, and the median situation inside it.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::ballot::Ballot;
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
    /// The coordinate-wise median of those voters' context vectors.
    pub context: Vec<f64>,
}

/// No group: a vector with a bucket outside the 64-bit range.
pub(crate) const NO_GROUP: u32 = u32::MAX;

/// The voters' situations: groups of voters with the same problem and the
/// same fingerprint buckets. A voter's buckets are computed once, as its
/// packet is taken in; it is first tried against the group of the previous
/// voter on its problem (most voters share one), else groups are found by a seeded hash of the
/// problem and buckets and confirmed by comparing them. Nothing is
/// fingerprinted per voter.
#[derive(Default)]
pub(crate) struct Groups {
    /// Every group's bucket sequence, one after another.
    pool: Vec<i64>,
    /// Per coordinate in `pool`: the bucket's lower edge, `b` as a number.
    edge: Vec<f64>,
    /// Group → its range in the pools.
    range: Vec<(u32, u32)>,
    /// Group → every bucket is below 2^53 in size, so the edge test is exact.
    exact: Vec<bool>,
    /// Group → its problem.
    problem: Vec<u32>,
    /// Group → voters in it.
    count: Vec<u32>,
    /// Group → the next group with the same hash (a chain), or `NO_GROUP`.
    next: Vec<u32>,
    head: HashMap<u64, u32, RandomState>,
    hasher: RandomState,
    /// Problem → the group its previous voter joined, or `NO_GROUP`.
    last: Vec<u32>,
    buf: Vec<i64>,
}

/// Slice equality without a library call (the slices are a few numbers).
#[inline]
fn same(a: &[i64], b: &[i64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(true, |eq, (x, y)| eq & (x == y))
}

impl Groups {
    fn buckets(&self, g: u32) -> &[i64] {
        let (a, b) = self.range[g as usize];
        &self.pool[a as usize..b as usize]
    }

    /// Does `cv` (on `problem`) belong to group `g`? `floor(v) == b` iff
    /// `b <= v < b + 1`, exact for `|b| < 2^53` (beyond that the slow path
    /// decides).
    #[inline]
    fn fits(&self, g: u32, problem: u32, cv: &[f64], res: f64) -> bool {
        let gi = g as usize;
        let (a, b) = self.range[gi];
        let edges = &self.edge[a as usize..b as usize];
        self.exact[gi]
            && self.problem[gi] == problem
            && edges.len() == cv.len()
            && cv.iter().zip(edges).fold(true, |inside, (&x, &lo)| {
                let v = x * res;
                inside & (lo <= v) & (v < lo + 1.0)
            })
    }

    /// Put a voter in its group; `NO_GROUP` if its vector has a bucket out of
    /// the 64-bit range.
    pub fn join(&mut self, problem: u32, cv: &[f64], res: f64) -> u32 {
        let p = problem as usize;
        if self.last.len() <= p {
            self.last.resize(p + 1, NO_GROUP);
        }
        let last = self.last[p];
        let g = if last != NO_GROUP && self.fits(last, problem, cv, res) {
            last
        } else {
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
            g
        };
        if g != NO_GROUP {
            self.count[g as usize] += 1;
            self.last[p] = g;
        }
        g
    }

    /// Take a voter out of its group (its vote was replaced or excluded).
    pub fn leave(&mut self, g: u32) {
        if g != NO_GROUP {
            self.count[g as usize] -= 1;
        }
    }

    fn find_or_add(&mut self, problem: u32, buckets: &[i64]) -> u32 {
        let hash = self.hasher.hash_one((problem, buckets));
        let mut g = self.head.get(&hash).copied().unwrap_or(NO_GROUP);
        while g != NO_GROUP
            && !(self.problem[g as usize] == problem && same(self.buckets(g), buckets))
        {
            g = self.next[g as usize];
        }
        if g == NO_GROUP {
            g = self.range.len() as u32;
            let start = self.pool.len() as u32;
            self.pool.extend_from_slice(buckets);
            self.edge.extend(buckets.iter().map(|&b| b as f64));
            self.range.push((start, self.pool.len() as u32));
            self.exact
                .push(buckets.iter().all(|b| b.unsigned_abs() < 1 << 53));
            self.problem.push(problem);
            self.count.push(0);
            let head = self.head.insert(hash, g).unwrap_or(NO_GROUP);
            self.next.push(head);
        }
        g
    }
}

/// A key whose integer order is `f64::total_cmp`'s order.
#[inline]
fn key(x: f64) -> i64 {
    let b = x.to_bits() as i64;
    b ^ (((b >> 63) as u64) >> 1) as i64
}

/// The inverse of [`key`].
#[inline]
fn unkey(k: i64) -> f64 {
    f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64)
}

/// The median of `keys` (reordered): integer comparisons, no float ones.
fn median_of_keys(keys: &mut [i64]) -> f64 {
    let n = keys.len();
    let (left, mid, _) = keys.select_nth_unstable(n / 2);
    let upper = unkey(*mid);
    if n % 2 == 1 {
        upper
    } else {
        let lower = unkey(left.iter().copied().max().unwrap_or(*mid));
        lower + (upper - lower) / 2.0
    }
}

/// The agreement among the voters for `problem` (those not `excluded`, whose
/// groups the caller has already left): the group with most voters wins; a
/// tie goes to the own packet's group (slot 0), then to the smallest bucket
/// sequence. A voter whose vector has a bucket out of the 64-bit range is in
/// no group.
///
/// The context is the coordinate-wise median of the winners' vectors: values
/// the voters sent, independent of their order, inside the bucket they share.
pub(crate) fn agreement(
    ballot: &Ballot<'_>,
    problem: u32,
    excluded: Option<&[bool]>,
    resolution: u32,
) -> Agreement {
    let groups = &ballot.groups;
    let own = ballot.info[0].group;
    let own = (own != NO_GROUP && !excluded.is_some_and(|x| x[0])).then_some(own);
    let winner = (0..groups.range.len() as u32)
        .filter(|&g| groups.problem[g as usize] == problem && groups.count[g as usize] > 0)
        .max_by(|&a, &b| {
            let (ia, ib) = (a as usize, b as usize);
            groups.count[ia]
                .cmp(&groups.count[ib])
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
    let voters = groups.count[winner as usize] as usize;
    let m = groups.buckets(winner).len();
    // Column-major copy of the winners' vectors, then a median per coordinate.
    let mut columns = vec![0i64; voters * m];
    let winners = ballot
        .info
        .iter()
        .enumerate()
        .filter(|&(s, i)| i.group == winner && !excluded.is_some_and(|x| x[s]));
    for (i, (_, info)) in winners.enumerate() {
        for (j, &x) in info.cv.iter().enumerate() {
            columns[j * voters + i] = key(x);
        }
    }
    let context: Vec<f64> = columns.chunks_mut(voters).map(median_of_keys).collect();
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

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn keys_order_as_total_cmp() {
        let xs = [-1e300, -2.5, -0.0, 0.0, 1e-310, 0.25, 3.0, f64::INFINITY];
        for w in xs.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(unkey(key(x)).to_bits(), x.to_bits());
        }
        assert_eq!(median_of_keys(&mut [key(3.0), key(1.0), key(2.0)]), 2.0);
        assert_eq!(
            median_of_keys(&mut [key(4.0), key(1.0), key(2.0), key(3.0)]),
            2.5
        );
    }
}
