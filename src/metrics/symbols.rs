//! Maps the distinct symbol ids of a state to dense slots, so that per-symbol tables of a prepared
//! state (bit masks, position lists) are small arrays indexed by slot.

use std::collections::HashMap;

/// Ids below this are looked up in a dense table; larger ids (rare: huge vocabularies, or the
/// sentinels given to symbols unknown to the vocabulary) in a hash map.
const DENSE_LIMIT: u32 = 1 << 20;

pub struct QuerySymbols {
    dense: Vec<u32>,
    sparse: HashMap<u32, u32>,
    distinct: usize,
}

impl QuerySymbols {
    pub const NONE: u32 = u32::MAX;

    /// Gives every distinct symbol of `state` a slot, in order of first occurrence.
    pub fn new(state: &[u32]) -> QuerySymbols {
        let dense_len = state.iter().copied().filter(|&s| s < DENSE_LIMIT).max().map_or(0, |m| m as usize + 1);
        let mut symbols = QuerySymbols { dense: vec![Self::NONE; dense_len], sparse: HashMap::new(), distinct: 0 };
        for &s in state {
            if symbols.slot(s) == Self::NONE {
                let slot = symbols.distinct as u32;
                if s < DENSE_LIMIT {
                    symbols.dense[s as usize] = slot;
                } else {
                    symbols.sparse.insert(s, slot);
                }
                symbols.distinct += 1;
            }
        }
        symbols
    }

    /// The slot of `symbol`, or [`QuerySymbols::NONE`] when the state does not contain it.
    #[inline(always)]
    pub fn slot(&self, symbol: u32) -> u32 {
        match self.dense.get(symbol as usize) {
            Some(&slot) => slot,
            None if self.sparse.is_empty() => Self::NONE,
            None => self.sparse.get(&symbol).copied().unwrap_or(Self::NONE),
        }
    }

    pub fn distinct(&self) -> usize {
        self.distinct
    }

    /// Size of the dense table: every id below it is looked up there.
    pub fn dense_len(&self) -> usize {
        self.dense.len()
    }

    /// Whether some state symbol lives outside the dense table.
    pub fn has_sparse(&self) -> bool {
        !self.sparse.is_empty()
    }
}
