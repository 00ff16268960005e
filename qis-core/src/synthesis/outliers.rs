//! The outlier filter: voters whose situation is far from the others' on the
//! same problem.
//!
//! The rules are documented on
//! [`SynthesisConfig::with_outliers`](super::SynthesisConfig::with_outliers).
//!
//! Most problems have no outlier, and that is usually settled without a
//! median: every voter's distance from the median situation is at most the
//! diagonal of the box that holds all their vectors (the median situation
//! is inside it), and nobody is an outlier closer than `k` bucket widths. So
//! a problem whose box has a diagonal of at most `k / resolution` (computed
//! with the same floating-point steps as the distances, which only round
//! upward from the smaller terms) has no outlier, and its medians are not
//! needed. The others get the full rule, with medians in about one pass
//! ([`Medians`]).

use std::cmp::Ordering::{Equal, Less};

use super::ballot::{Ballot, MAX_WIDTH};
use super::median::Medians;
use super::twin::Twin;

/// MAD × this estimates the standard deviation of a normal distribution.
const MAD_TO_SD: f64 = 1.4826;

/// The most common length of `lens` (a tie goes to the longer) and how many
/// have it. `lens` is reordered.
fn modal_length(lens: &mut [usize]) -> (usize, usize) {
    if lens.windows(2).all(|w| w[0] == w[1]) {
        return (lens.first().copied().unwrap_or(0), lens.len());
    }
    lens.sort_unstable();
    let mut best = (0, 0);
    for run in lens.chunk_by(|a, b| a == b) {
        if run.len() >= best.1 {
            best = (run[0], run.len());
        }
    }
    best
}

/// Per problem: its voters, and whether the box around their vectors settles
/// that none is an outlier.
struct Census {
    /// Voters per problem.
    voters: Vec<u32>,
    /// Problems that need the full rule.
    check: Vec<bool>,
}

/// Count each problem's voters and settle the problems whose box is small
/// (see the module docs).
fn census<'a, T: Twin<'a>>(ballot: &Ballot<'a, T>, k: f64, floor: f64) -> Census {
    let n_problems = ballot.problems.len();
    let running = &ballot.running;
    let voters = if running.valid {
        running.problems.iter().map(|c| c.votes).collect()
    } else {
        let mut voters = vec![0u32; n_problems];
        for s in &ballot.slots {
            voters[s.problem as usize] += 1;
        }
        voters
    };
    let mut check: Vec<bool> = voters.iter().map(|&g| g >= 3).collect();
    let all_in_rows = if running.valid {
        running.all_in_rows
    } else {
        ballot.all_in_rows()
    };
    if !check.contains(&true) || !all_in_rows {
        // A vector of another length is compared by the full rule.
        return Census { voters, check };
    }
    // `d <= diagonal <= k * floor <= median(d) + k * max(1.4826 MAD, floor)`.
    let limit = k * floor;
    let diagonals = match (&running.boxes, running.valid) {
        // The boxes were drawn as the votes were taken in.
        (Some(boxes), true) => boxes.diagonals(),
        _ => {
            let (w, rows) = (ballot.width, ballot.rows());
            let mut boxes = Boxes::new(w);
            boxes.open(n_problems - 1);
            for (slot, s) in ballot.slots.iter().enumerate() {
                boxes.add(s.problem as usize, &rows[slot * w..slot * w + w]);
            }
            boxes.diagonals()
        }
    };
    for (check, diagonal) in check.iter_mut().zip(diagonals) {
        // A NaN diagonal (a value not finite) needs the full rule too.
        *check &= !matches!(diagonal.partial_cmp(&limit), Some(Less | Equal));
    }
    Census { voters, check }
}

/// Per problem, the box around its voters' vectors (`width` numbers each,
/// all in the rows): the smallest and largest value of each coordinate.
/// Beside them, for all problems at once, `x * 0` summed over the values: 0,
/// or NaN iff one is not finite (a NaN leaves no trace in a box), without a
/// branch. A value not finite is rare (JSON cannot carry one): then every
/// box is taken as unbounded and every problem gets the full rule.
pub(crate) struct Boxes {
    width: usize,
    problems: usize,
    lo: Vec<f64>,
    hi: Vec<f64>,
    bad: [f64; MAX_WIDTH],
}

impl Boxes {
    pub(crate) fn new(width: usize) -> Self {
        Boxes {
            width,
            problems: 0,
            lo: Vec::new(),
            hi: Vec::new(),
            bad: [0.0; MAX_WIDTH],
        }
    }

    /// Room for the problems up to `p`.
    pub(crate) fn open(&mut self, p: usize) {
        while self.problems <= p {
            self.lo
                .extend(std::iter::repeat_n(f64::INFINITY, self.width));
            self.hi
                .extend(std::iter::repeat_n(f64::NEG_INFINITY, self.width));
            self.problems += 1;
        }
    }

    /// Widen problem `p`'s box (opened) to take in `row` (`width` numbers).
    #[inline(always)]
    pub(crate) fn add(&mut self, p: usize, row: &[f64]) {
        match self.width {
            1 => self.widen::<1>(p, row),
            2 => self.widen::<2>(p, row),
            3 => self.widen::<3>(p, row),
            4 => self.widen::<4>(p, row),
            5 => self.widen::<5>(p, row),
            6 => self.widen::<6>(p, row),
            8 => self.widen::<8>(p, row),
            _ => self.widen::<0>(p, row),
        }
    }

    /// [`add`](Self::add) for `W` numbers (0: any width), `row` at least
    /// that long.
    #[inline(always)]
    pub(crate) fn widen<const W: usize>(&mut self, p: usize, row: &[f64]) {
        if W == 0 {
            let w = self.width;
            let lo = &mut self.lo[p * w..p * w + w];
            let hi = &mut self.hi[p * w..p * w + w];
            let mut b = 0.0;
            for ((&x, lo), hi) in row[..w].iter().zip(lo).zip(hi) {
                *lo = if x < *lo { x } else { *lo };
                *hi = if x > *hi { x } else { *hi };
                b += x * 0.0;
            }
            self.bad[0] += b;
            return;
        }
        // Whole arrays: the compiler keeps them in vector registers.
        let lo: &mut [f64; W] = (&mut self.lo[p * W..p * W + W])
            .try_into()
            .expect("W numbers");
        let hi: &mut [f64; W] = (&mut self.hi[p * W..p * W + W])
            .try_into()
            .expect("W numbers");
        let row: &[f64; W] = row[..W].try_into().expect("W numbers");
        let mut l = *lo;
        let mut h = *hi;
        for j in 0..W {
            let x = row[j];
            l[j] = if x < l[j] { x } else { l[j] };
            h[j] = if x > h[j] { x } else { h[j] };
            self.bad[j] += x * 0.0;
        }
        *lo = l;
        *hi = h;
    }

    /// Per problem, the diagonal of its box, computed with the same steps
    /// as a distance; NaN (every one) if a value of any box is not finite.
    pub(crate) fn diagonals(&self) -> Vec<f64> {
        let w = self.width;
        let bad: f64 = self.bad.iter().sum();
        (0..self.problems)
            .map(|p| {
                let diagonal = self.lo[p * w..(p + 1) * w]
                    .iter()
                    .zip(&self.hi[p * w..(p + 1) * w])
                    .map(|(a, b)| (b - a) * (b - a))
                    .sum::<f64>()
                    .sqrt();
                diagonal + bad
            })
            .collect()
    }
}

/// Flag the outliers: `excluded[slot]` is true for each.
pub(crate) fn find<'a, T: Twin<'a>>(
    ballot: &Ballot<'a, T>,
    k: f64,
    resolution: u32,
) -> Option<Vec<bool>> {
    let floor = 1.0 / f64::from(resolution.max(1));
    let Census { voters, check } = census(ballot, k, floor);
    if !check.contains(&true) {
        return None;
    }
    let n = ballot.votes.len();
    let n_problems = ballot.problems.len();
    let largest = (0..n_problems)
        .filter(|&p| check[p])
        .map(|p| voters[p] as usize)
        .max()
        .unwrap_or(0);
    // Slots grouped by problem (a counting sort: no allocation per problem).
    let mut start = vec![0usize; n_problems + 1];
    for p in 0..n_problems {
        start[p + 1] = start[p] + voters[p] as usize;
    }
    let mut order = vec![0u32; n];
    let mut fill = start.clone();
    for (slot, v) in ballot.slots.iter().enumerate() {
        order[fill[v.problem as usize]] = slot as u32;
        fill[v.problem as usize] += 1;
    }

    let mut excluded = vec![false; n];
    let mut lens: Vec<usize> = Vec::new();
    let mut columns: Vec<f64> = Vec::new();
    let mut centre: Vec<f64> = Vec::new();
    let mut dist: Vec<f64> = Vec::with_capacity(largest);
    let mut scratch: Vec<f64> = Vec::with_capacity(largest);
    let mut medians = Medians::with_capacity(largest);
    let cv = |slot: u32| ballot.cv(slot as usize);

    for p in (0..n_problems).filter(|&p| check[p]) {
        let members = &order[start[p]..start[p + 1]];
        let g = members.len();
        let (m, gm) = if members.iter().all(|&s| ballot.slots[s as usize].in_rows) {
            (ballot.width, g)
        } else {
            lens.clear();
            lens.extend(members.iter().map(|&s| cv(s).len()));
            modal_length(&mut lens)
        };
        if gm < 3 || 2 * gm <= g {
            continue;
        }
        // Column-major copy of the reference-length vectors, then a median
        // per coordinate.
        columns.clear();
        columns.resize(gm * m, 0.0);
        let mut i = 0;
        for &s in members {
            let x = cv(s);
            if x.len() == m {
                for (j, &xj) in x.iter().enumerate() {
                    columns[j * gm + i] = xj;
                }
                i += 1;
            } else {
                excluded[s as usize] = true;
            }
        }
        centre.clear();
        centre.extend(columns.chunks_mut(gm).map(|c| medians.median(c)));
        dist.clear();
        dist.extend(
            members
                .iter()
                .map(|&s| cv(s))
                .filter(|x| x.len() == m)
                .map(|x| {
                    x.iter()
                        .zip(&centre)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f64>()
                        .sqrt()
                }),
        );
        scratch.clear();
        scratch.extend_from_slice(&dist);
        let md = medians.median(&mut scratch);
        for d in scratch.iter_mut() {
            *d = (*d - md).abs();
        }
        let mad = medians.median(&mut scratch);
        let cut = md + k * (MAD_TO_SD * mad).max(floor);
        let mut d = dist.iter();
        for &s in members {
            if cv(s).len() == m && d.next().is_some_and(|&d| d > cut) {
                excluded[s as usize] = true;
            }
        }
    }
    excluded.iter().any(|&x| x).then_some(excluded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modal_lengths() {
        assert_eq!(modal_length(&mut [4, 4, 4]), (4, 3));
        assert_eq!(modal_length(&mut [2, 4, 4, 2, 4]), (4, 3));
        assert_eq!(modal_length(&mut [2, 4, 4, 2]), (4, 2));
        assert_eq!(modal_length(&mut []), (0, 0));
    }
}
