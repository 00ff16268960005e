//! How far the consensus voters' situations agree: the fingerprint bucket
//! most of them share, and the median situation inside it.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use foldhash::fast::RandomState;

use super::outliers::median;
use super::twin::Vote;
use crate::fingerprint::Fingerprint;

/// `floor(x * resolution)` as the fingerprint writes it, if it is in range.
fn bucket(x: f64, resolution: f64) -> Option<i64> {
    let b = (x * resolution).floor();
    // The same range check as `Fingerprint::canonical`; NaN fails it too.
    (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0)
        .contains(&b)
        .then_some(b as i64)
}

/// A context vector seen as its fingerprint buckets (never hashed with SHA-256
/// per voter: only the winning bucket's fingerprint is computed).
#[derive(Clone, Copy)]
struct Buckets<'a> {
    cv: &'a [f64],
    resolution: f64,
}

impl Buckets<'_> {
    fn valid(&self) -> bool {
        self.cv
            .iter()
            .all(|&x| bucket(x, self.resolution).is_some())
    }

    fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.cv
            .iter()
            .map(|&x| bucket(x, self.resolution).unwrap_or(i64::MIN))
    }

    /// Lexicographic order of the bucket sequences (the tie rule).
    fn cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl PartialEq for Buckets<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cv.len() == other.cv.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Buckets<'_> {}

impl Hash for Buckets<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.cv.len());
        for b in self.iter() {
            state.write_i64(b);
        }
    }
}

/// The agreement figures.
pub(crate) struct Agreement {
    /// Consensus voters in the most common bucket.
    pub voters: usize,
    /// That bucket's fingerprint, if it can be computed.
    pub fingerprint: Option<String>,
    /// Coordinate-wise median of those voters' context vectors.
    pub context: Vec<f64>,
}

/// Group the consensus voters (`slots`) by fingerprint bucket at
/// `resolution`. The most common bucket wins; a tie goes to the bucket of the
/// own packet (slot 0), then to the smallest bucket sequence. A voter whose
/// vector has a bucket out of the 64-bit range is in no bucket.
pub(crate) fn agreement(
    votes: &[Vote<'_>],
    slots: impl Iterator<Item = usize> + Clone,
    (domain, problem_class): (&str, &str),
    resolution: u32,
) -> Agreement {
    let res = f64::from(resolution.max(1));
    let key = |slot: usize| Buckets {
        cv: &votes[slot].packet.context_vector,
        resolution: res,
    };
    // bucket -> (voters, first slot seen, has the own packet)
    let mut groups: HashMap<Buckets<'_>, (usize, usize, bool), RandomState> = HashMap::default();
    for slot in slots.clone() {
        let b = key(slot);
        if !b.valid() {
            continue;
        }
        let e = groups.entry(b).or_insert((0, slot, false));
        e.0 += 1;
        e.2 |= slot == 0;
    }
    let Some((winner, &(voters, _, _))) = groups
        .iter()
        .max_by(|(ka, a), (kb, b)| a.0.cmp(&b.0).then(a.2.cmp(&b.2)).then_with(|| kb.cmp(ka)))
    else {
        return Agreement {
            voters: 0,
            fingerprint: None,
            context: Vec::new(),
        };
    };
    let winner = *winner;
    let m = winner.cv.len();
    // Column-major copy of the winners' vectors, then a median per coordinate.
    let mut columns = vec![0.0; voters * m];
    let mut i = 0;
    for slot in slots {
        if key(slot) == winner {
            for (j, &x) in votes[slot].packet.context_vector.iter().enumerate() {
                columns[j * voters + i] = x;
            }
            i += 1;
        }
    }
    let context = if voters == 0 {
        Vec::new()
    } else {
        columns.chunks_mut(voters).map(median).collect()
    };
    let fingerprint = Fingerprint::compute(domain, problem_class, winner.cv, resolution)
        .ok()
        .map(|f| f.to_string());
    Agreement {
        voters,
        fingerprint,
        context,
    }
}
