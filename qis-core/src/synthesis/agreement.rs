//! How far the consensus voters' situations agree: the fingerprint bucket
//! most of them share, and the median situation inside it.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::ballot::Ballot;
use super::outliers::median;
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

const NO_GROUP: u32 = u32::MAX;

/// The distinct bucket sequences seen, as groups of voters. Each voter's
/// buckets are computed once; groups are found by a seeded hash of the
/// sequence and confirmed by comparing it (nothing is fingerprinted per
/// voter).
#[derive(Default)]
struct Groups {
    /// Every group's bucket sequence, one after another.
    pool: Vec<i64>,
    /// Group → its range in the pools.
    range: Vec<(u32, u32)>,
    count: Vec<u32>,
    has_own: Vec<bool>,
    /// Group → the next group with the same hash (a chain), or `NO_GROUP`.
    next: Vec<u32>,
    head: HashMap<u64, u32, RandomState>,
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

    fn find_or_add(&mut self, hash: u64, buckets: &[i64]) -> u32 {
        let mut g = self.head.get(&hash).copied().unwrap_or(NO_GROUP);
        while g != NO_GROUP && !same(self.buckets(g), buckets) {
            g = self.next[g as usize];
        }
        if g == NO_GROUP {
            g = self.range.len() as u32;
            let start = self.pool.len() as u32;
            self.pool.extend_from_slice(buckets);
            self.range.push((start, self.pool.len() as u32));
            self.count.push(0);
            self.has_own.push(false);
            let head = self.head.insert(hash, g).unwrap_or(NO_GROUP);
            self.next.push(head);
        }
        g
    }

    /// Count `cv` in group `g` if it falls in the group's bucket:
    /// `floor(v) == b` iff `b <= v < b + 1`, exact for `|b| < 2^53` (beyond
    /// that the caller's slow path decides).
    fn try_add(&mut self, g: u32, cv: &[f64], res: f64, own: bool) -> bool {
        const EXACT: i64 = 1 << 53;
        let gi = g as usize;
        let (a, b) = self.range[gi];
        let buckets = &self.pool[a as usize..b as usize];
        let inside = buckets.len() == cv.len()
            && cv.iter().zip(buckets).fold(true, |inside, (&x, &b)| {
                let (v, lo) = (x * res, b as f64);
                inside & (b.abs() < EXACT) & (lo <= v) & (v < lo + 1.0)
            });
        if inside {
            self.count[gi] += 1;
            self.has_own[gi] |= own;
        }
        inside
    }
}

/// Group the consensus voters (`slots`) by fingerprint bucket at
/// `resolution`. The most common bucket wins; a tie goes to the bucket of the
/// own packet (slot 0), then to the smallest bucket sequence. A voter whose
/// vector has a bucket out of the 64-bit range is in no bucket.
///
/// The context is the coordinate-wise median of the winners' vectors: values
/// the voters sent, independent of their order, inside the bucket they share.
pub(crate) fn agreement(
    ballot: &Ballot<'_>,
    slots: impl Iterator<Item = usize> + Clone,
    (domain, problem_class): (&str, &str),
    resolution: u32,
) -> Agreement {
    let res = f64::from(resolution.max(1));
    let hasher = RandomState::default();
    let mut groups = Groups::default();
    let mut buf: Vec<i64> = Vec::new();
    let mut group_of: Vec<u32> = Vec::with_capacity(slots.size_hint().0);
    // Most voters share a bucket with the voter before them: compare with
    // that group before hashing.
    let mut last = NO_GROUP;
    for slot in slots.clone() {
        let cv = ballot.cv(slot);
        if last != NO_GROUP && groups.try_add(last, cv, res, slot == 0) {
            group_of.push(last);
            continue;
        }
        buf.clear();
        if !cv
            .iter()
            .all(|&x| bucket(x, res).map(|b| buf.push(b)).is_some())
        {
            group_of.push(NO_GROUP);
            continue;
        }
        last = groups.find_or_add(hasher.hash_one(&buf[..]), &buf);
        if !groups.try_add(last, cv, res, slot == 0) {
            // Buckets beyond 2^53: exact, but past the fast test.
            groups.count[last as usize] += 1;
            groups.has_own[last as usize] |= slot == 0;
        }
        group_of.push(last);
    }
    let winner = (0..groups.range.len() as u32).max_by(|&a, &b| {
        let (ia, ib) = (a as usize, b as usize);
        groups.count[ia]
            .cmp(&groups.count[ib])
            .then(groups.has_own[ia].cmp(&groups.has_own[ib]))
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
    let mut columns = vec![0.0; voters * m];
    let winners = slots.zip(&group_of).filter(|&(_, &g)| g == winner);
    for (i, (slot, _)) in winners.enumerate() {
        for (j, &x) in ballot.cv(slot).iter().enumerate() {
            columns[j * voters + i] = x;
        }
    }
    let context: Vec<f64> = columns.chunks_mut(voters).map(median).collect();
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
