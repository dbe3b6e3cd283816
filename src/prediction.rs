//! The sequence-dependent parts of KATO's prediction info (`extract_prediction_info`, non-fuzzy
//! path), as index ranges into the pattern and the state; the bindings turn them into lists of
//! symbols. See ../shared/REFERENCE.md for the semantics reproduced here.

use rayon::prelude::*;

use crate::metrics::difflib::{opcodes, Block, DifflibQuery, DifflibScratch, Opcode};
use crate::metrics::Scorer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictionParts {
    /// Matching blocks of (pattern, state), no junk, sorted and merged as difflib returns them.
    pub blocks: Vec<Block>,
    /// `past` is `pattern[..past_end]`.
    pub past_end: usize,
    /// `present` is `pattern[present.0..present.1]`.
    pub present: (usize, usize),
    /// Ranges of the pattern whose symbols are `missing`, in opcode order.
    pub missing: Vec<(usize, usize)>,
    /// Ranges of the state whose symbols are `extras`, in opcode order.
    pub extras: Vec<(usize, usize)>,
}

/// KATO's prediction info for one pattern, or `None` where KATO returns none (no matching block
/// and a positive cutoff). The bindings use [`prediction_parts_many`]; this pair form is the
/// tests'.
#[cfg(test)]
pub fn prediction_parts(pattern: &[u32], state: &[u32], cutoff_positive: bool) -> Option<PredictionParts> {
    let query = DifflibQuery::new(state, false);
    parts_with(&query, &mut query.new_scratch(), pattern, cutoff_positive)
}

/// [`prediction_parts`] with the state (difflib's `b`, no junk) prepared once.
fn parts_with(
    query: &DifflibQuery,
    scratch: &mut DifflibScratch,
    pattern: &[u32],
    cutoff_positive: bool,
) -> Option<PredictionParts> {
    let state_len = query.state_len();
    let blocks = query.matching_blocks(pattern, scratch);
    let (past_end, present) = match blocks.as_slice() {
        [] if cutoff_positive => return None,
        [] => (0, (0, pattern.len())),
        [only] => (only.i, (only.i, only.i + only.size)),
        [first, .., last] => {
            let end = last.i + last.size;
            (first.i, (first.i, if end > first.i { end } else { pattern.len() }))
        }
    };
    let (mut missing, mut extras) = (Vec::new(), Vec::new());
    if present.1 > present.0 {
        let present_seq = &pattern[present.0..present.1];
        let shift = |(lo, hi): (usize, usize)| (lo + present.0, hi + present.0);
        for op in opcodes(&query.matching_blocks(present_seq, scratch), present_seq.len(), state_len) {
            match op {
                Opcode::Replace { a, b } => {
                    missing.push(shift(a));
                    extras.push(b);
                }
                Opcode::Delete { a } => missing.push(shift(a)),
                Opcode::Insert { b } => extras.push(b),
                Opcode::Equal { .. } => {}
            }
        }
    }
    Some(PredictionParts { blocks, past_end, present, missing, extras })
}

/// [`prediction_parts`] for many patterns against one state, on all cores.
pub fn prediction_parts_many(
    patterns: &[Vec<u32>],
    state: &[u32],
    cutoff_positive: bool,
) -> Vec<Option<PredictionParts>> {
    let query = DifflibQuery::new(state, false);
    patterns
        .par_iter()
        .with_min_len(256)
        .map_init(|| query.new_scratch(), |scratch, p| parts_with(&query, scratch, p, cutoff_positive))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example() {
        // pattern a b c d e, state b c x e: blocks (1,0,2) (4,3,1); present = b c d e.
        let parts = prediction_parts(&[0, 1, 2, 3, 4], &[1, 2, 9, 4], true).unwrap();
        assert_eq!(parts.blocks, vec![Block { i: 1, j: 0, size: 2 }, Block { i: 4, j: 3, size: 1 }]);
        assert_eq!((parts.past_end, parts.present), (1, (1, 5)));
        // present b c d e vs state b c x e: replace d -> x.
        assert_eq!(parts.missing, vec![(3, 4)]);
        assert_eq!(parts.extras, vec![(2, 3)]);
        assert_eq!(prediction_parts(&[1, 2], &[3], true), None);
        let none = prediction_parts(&[1, 2], &[3], false).unwrap();
        assert_eq!((none.past_end, none.present, none.missing, none.extras), (0, (0, 2), vec![(0, 2)], vec![(0, 1)]));
    }
}
