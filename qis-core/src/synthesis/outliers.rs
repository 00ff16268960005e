//! The outlier filter: voters whose situation is far from the others' on the
//! same problem.
//!
//! The rules are documented on
//! [`SynthesisConfig::with_outliers`](super::SynthesisConfig::with_outliers).

use super::ballot::Ballot;
use super::twin::Twin;

/// MAD × this estimates the standard deviation of a normal distribution.
const MAD_TO_SD: f64 = 1.4826;

/// The median of `xs` (reordered); NaN if empty.
pub(crate) fn median(xs: &mut [f64]) -> f64 {
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    let (left, mid, _) = xs.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *mid;
    if n % 2 == 1 {
        upper
    } else {
        let lower = left.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lower + (upper - lower) / 2.0
    }
}

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

/// Flag the outliers: `excluded[slot]` is true for each.
pub(crate) fn find<'a, T: Twin<'a>>(
    ballot: &Ballot<'a, T>,
    k: f64,
    resolution: u32,
) -> Option<Vec<bool>> {
    let n = ballot.votes.len();
    let n_problems = ballot.problems.len();
    let mut start = vec![0usize; n_problems + 1];
    for v in &ballot.info {
        start[v.problem as usize + 1] += 1;
    }
    if start.iter().all(|&g| g < 3) {
        return None;
    }
    for i in 0..n_problems {
        start[i + 1] += start[i];
    }
    // Slots grouped by problem (a counting sort: no allocation per problem).
    let mut order = vec![0u32; n];
    let mut fill = start.clone();
    for (slot, v) in ballot.info.iter().enumerate() {
        order[fill[v.problem as usize]] = slot as u32;
        fill[v.problem as usize] += 1;
    }

    let mut excluded = vec![false; n];
    let mut lens: Vec<usize> = Vec::new();
    let mut columns: Vec<f64> = Vec::new();
    let mut centre: Vec<f64> = Vec::new();
    let mut dist: Vec<f64> = Vec::new();
    let mut scratch: Vec<f64> = Vec::new();
    let floor = 1.0 / f64::from(resolution.max(1));
    let cv = |slot: u32| ballot.packet(slot as usize).context_vector.as_slice();

    for p in 0..n_problems {
        let members = &order[start[p]..start[p + 1]];
        let g = members.len();
        if g < 3 {
            continue;
        }
        lens.clear();
        lens.extend(members.iter().map(|&s| cv(s).len()));
        let (m, gm) = modal_length(&mut lens);
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
        centre.extend(columns.chunks_mut(gm).map(median));
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
        let md = median(&mut scratch);
        for d in scratch.iter_mut() {
            *d = (*d - md).abs();
        }
        let mad = median(&mut scratch);
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
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut [5.0]), 5.0);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn modal_lengths() {
        assert_eq!(modal_length(&mut [4, 4, 4]), (4, 3));
        assert_eq!(modal_length(&mut [2, 4, 4, 2, 4]), (4, 3));
        assert_eq!(modal_length(&mut [2, 4, 4, 2]), (4, 2));
        assert_eq!(modal_length(&mut []), (0, 0));
    }
}
