//! Exact `lcs` metric: M = length of the longest common subsequence.
//!
//! Bit-parallel (Allison–Dix / Hyyrö): the state is the bit-vector side, one bit per state
//! position, `ceil(len/64)` words; each pattern symbol costs one mask lookup and a few word
//! operations per word. `2.0 * M / T` equals `2.0 * rapidfuzz.distance.LCSseq.similarity(p, s) / T`.

use super::simd::{Kernel, Transposed, TransposedScratch};
use super::{QuerySymbols, Scorer};
use crate::store::{PatternRun, Token};

/// Patterns stepped together by the single-word kernel.
const LANES: usize = 8;

/// Patterns shorter than this are grouped by length for the single-word kernel.
const GROUPED_LENGTHS: usize = 256;

/// Per-thread working memory.
#[derive(Default)]
pub struct LcsScratch {
    /// The bit vector of a multi-word state.
    words: Vec<u64>,
    /// Patterns of a run to score, grouped by length, and where each length's group ends.
    by_length: Vec<u32>,
    starts: Vec<u32>,
    transposed: TransposedScratch,
}

/// [`LcsQuery::short_slot`] of a symbol the state does not contain.
const NOT_IN_STATE: u8 = u8::MAX;

/// A state prepared for LCS against many patterns.
pub struct LcsQuery {
    len: usize,
    words: usize,
    symbols: QuerySymbols,
    /// `masks[slot * words + w]`: bit k of word w set iff `state[64 * w + k]` has that slot's symbol.
    masks: Vec<u64>,
    /// Single-word states whose symbols all have dense ids: the slot of every id below
    /// `symbols.dense_len()` ([`NOT_IN_STATE`] for the others), then one [`NOT_IN_STATE`] that
    /// every larger id is clamped to, so lookups need no branch. Empty for other states.
    short_slot: Vec<u8>,
    /// The mask of each slot of a single-word state; `NOT_IN_STATE` (and every unused slot) has 0.
    slot_masks: Box<[u64; 256]>,
    /// The state for the SIMD kernel, when the selected kernel has one and the state suits it.
    transposed: Option<Transposed>,
}

impl LcsQuery {
    /// The state prepared for the process's kernel ([`Kernel::selected`]).
    pub fn new(state: &[u32]) -> LcsQuery {
        LcsQuery::with_kernel(state, Kernel::selected())
    }

    /// The state prepared for `kernel` (the scalar one where `kernel` does not apply).
    pub fn with_kernel(state: &[u32], kernel: Kernel) -> LcsQuery {
        let symbols = QuerySymbols::new(state);
        let words = state.len().div_ceil(64);
        let mut masks = vec![0u64; symbols.distinct() * words];
        for (pos, &s) in state.iter().enumerate() {
            let slot = symbols.slot(s) as usize;
            masks[slot * words + pos / 64] |= 1u64 << (pos % 64);
        }
        let mut short_slot = Vec::new();
        let mut slot_masks = Box::new([0u64; 256]);
        if words == 1 && !symbols.has_sparse() {
            // A single-word state has at most 64 distinct symbols, so slots fit below NOT_IN_STATE.
            short_slot = (0..symbols.dense_len() as u32)
                .map(|id| match symbols.slot(id) {
                    QuerySymbols::NONE => NOT_IN_STATE,
                    slot => slot as u8,
                })
                .chain([NOT_IN_STATE])
                .collect();
            slot_masks[..masks.len()].copy_from_slice(&masks);
        }
        let transposed = Transposed::new(state, kernel);
        LcsQuery { len: state.len(), words, symbols, masks, short_slot, slot_masks, transposed }
    }

    /// Whether the state fits one 64-bit word (at most 64 symbols).
    pub fn is_one_word(&self) -> bool {
        self.words == 1
    }

    /// For a one-word state: bit k set iff `state[k] == symbol`.
    #[inline(always)]
    pub fn one_word_mask(&self, symbol: u32) -> u64 {
        if !self.short_slot.is_empty() {
            return self.slot_masks[self.short_slot_of(symbol) as usize];
        }
        match self.symbols.slot(symbol) {
            QuerySymbols::NONE => 0,
            slot => self.masks[slot as usize],
        }
    }

    /// One step of the bit-parallel LCS: `v` has a 0 for every state position matched so far.
    #[inline(always)]
    fn step(v: u64, mask: u64) -> u64 {
        let u = v & mask;
        v.wrapping_add(u) | (v - u)
    }

    #[inline(always)]
    fn count_one_word(&self, v: u64) -> u32 {
        let valid = if self.len == 64 { !0u64 } else { (1u64 << self.len) - 1 };
        (!v & valid).count_ones()
    }

    fn matches_one_word<T: Token>(&self, pattern: &[T]) -> usize {
        let v = pattern.iter().fold(!0u64, |v, &c| Self::step(v, self.one_word_mask(c.into())));
        self.count_one_word(v) as usize
    }

    #[inline(always)]
    fn short_slot_of(&self, symbol: u32) -> u8 {
        self.short_slot[(symbol as usize).min(self.short_slot.len() - 1)]
    }

    /// Single-word LCS of a run of patterns, grouped by length and stepped [`LANES`] at a time:
    /// one pattern's steps form a dependency chain, so interleaving independent patterns of the
    /// same length keeps the core busy without per-step bookkeeping.
    fn matches_one_word_grouped<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        kept: &[u32],
        out: &mut [u32],
        scratch: &mut LcsScratch,
    ) {
        let masks = &*self.slot_masks;
        let mask = |c: T| masks[self.short_slot_of(c.into()) as usize];
        let LcsScratch { by_length, starts, .. } = scratch;
        // Counting sort of the patterns to score by length; longer ones go one by one.
        starts.clear();
        starts.resize(GROUPED_LENGTHS + 2, 0);
        for &k in kept {
            starts[run.pattern_len(k as usize).min(GROUPED_LENGTHS) + 1] += 1;
        }
        // Pull the run into cache in storage order, where the hardware prefetcher keeps up; the
        // grouped order below then reads from cache instead of waiting on memory per pattern.
        // Not when few of the run's patterns are scored here (the others skipped, or scored by
        // the SIMD kernel, which reads in storage order): then it would read mostly unused bytes.
        if 2 * kept.len() >= run.len() {
            let mut touched = 0u32;
            for line in run.tokens().chunks(64 / std::mem::size_of::<T>()) {
                touched = touched.wrapping_add(line[0].into());
            }
            std::hint::black_box(touched);
        }
        for len in 1..starts.len() {
            starts[len] += starts[len - 1];
        }
        by_length.clear();
        by_length.resize(kept.len(), 0);
        for &k in kept {
            let at = &mut starts[run.pattern_len(k as usize).min(GROUPED_LENGTHS)];
            by_length[*at as usize] = k;
            *at += 1;
        }
        // `starts[len]` is now the end of that length's group.
        let mut begin = 0;
        for len in 0..=GROUPED_LENGTHS {
            let group = &by_length[begin..starts[len] as usize];
            begin = starts[len] as usize;
            let mut lanes = group.chunks_exact(LANES);
            if len < GROUPED_LENGTHS {
                for ks in lanes.by_ref() {
                    let patterns: [&[T]; LANES] = std::array::from_fn(|l| &run.pattern(ks[l] as usize)[..len]);
                    let mut v = [!0u64; LANES];
                    // Symbol t of every lane in one step: the lanes' chains are independent.
                    #[allow(clippy::needless_range_loop)]
                    for t in 0..len {
                        for l in 0..LANES {
                            v[l] = Self::step(v[l], mask(patterns[l][t]));
                        }
                    }
                    for l in 0..LANES {
                        out[ks[l] as usize] = self.count_one_word(v[l]);
                    }
                }
            }
            let single = if len < GROUPED_LENGTHS { lanes.remainder() } else { group };
            for &k in single {
                let v = run.pattern(k as usize).iter().fold(!0u64, |v, &c| Self::step(v, mask(c)));
                out[k as usize] = self.count_one_word(v);
            }
        }
    }

    fn matches_multi_word<T: Token>(&self, pattern: &[T], v: &mut Vec<u64>) -> usize {
        v.clear();
        v.resize(self.words, !0u64);
        for &c in pattern {
            let slot = self.symbols.slot(c.into());
            if slot == QuerySymbols::NONE {
                continue;
            }
            let masks = &self.masks[slot as usize * self.words..][..self.words];
            let mut carry = 0u64;
            for (vw, &m) in v.iter_mut().zip(masks) {
                let u = *vw & m;
                let (sum, c1) = vw.overflowing_add(u);
                let (sum, c2) = sum.overflowing_add(carry);
                carry = (c1 | c2) as u64;
                // u is a subset of vw's bits, so vw - u never borrows.
                *vw = sum | (*vw - u);
            }
        }
        let tail_bits = self.len % 64;
        v.iter()
            .enumerate()
            .map(|(w, &vw)| {
                let valid = if w + 1 == self.words && tail_bits != 0 { (1u64 << tail_bits) - 1 } else { !0u64 };
                (!vw & valid).count_ones() as usize
            })
            .sum()
    }
}

impl Scorer for LcsQuery {
    type Scratch = LcsScratch;

    fn new_scratch(&self) -> LcsScratch {
        LcsScratch { words: Vec::with_capacity(self.words), ..LcsScratch::default() }
    }

    fn state_len(&self) -> usize {
        self.len
    }

    /// The exact LCS of every kept pattern (M needs no `needed` to stop early).
    fn matches_at_least<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        kept: &[u32],
        _needed: &[u32],
        out: &mut [u32],
        scratch: &mut LcsScratch,
    ) {
        match (&self.transposed, T::as_narrow(run)) {
            (Some(transposed), Some(narrow)) if transposed.worth(narrow) => {
                let mut own = std::mem::take(&mut scratch.transposed);
                let rest = transposed.score(narrow, kept, out, &mut own);
                if !rest.is_empty() {
                    self.matches_scalar(run, rest, out, scratch);
                }
                scratch.transposed = own;
            }
            _ => self.matches_scalar(run, kept, out, scratch),
        }
    }

    #[inline]
    fn matches<T: Token>(&self, pattern: &[T], scratch: &mut LcsScratch) -> usize {
        match self.words {
            0 => 0,
            1 => self.matches_one_word(pattern),
            _ => self.matches_multi_word(pattern, &mut scratch.words),
        }
    }
}

impl LcsQuery {
    /// The scalar kernel over a run: the reference every other kernel is tested against.
    fn matches_scalar<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        kept: &[u32],
        out: &mut [u32],
        scratch: &mut LcsScratch,
    ) {
        if !self.short_slot.is_empty() {
            self.matches_one_word_grouped(run, kept, out, scratch);
        } else {
            for &k in kept {
                out[k as usize] = self.matches(run.pattern(k as usize), scratch) as u32;
            }
        }
    }
}

/// LCS length of one pair.
pub fn matches(pattern: &[u32], state: &[u32]) -> usize {
    let query = LcsQuery::new(state);
    let mut scratch = query.new_scratch();
    query.matches(pattern, &mut scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{naive_lcs, Rng};

    #[test]
    fn known_cases() {
        assert_eq!(matches(&[], &[]), 0);
        assert_eq!(matches(&[1, 2, 3], &[]), 0);
        assert_eq!(matches(&[0, 2, 1, 0], &[2, 0]), 2);
        assert_eq!(matches(&[1, 2, 3, 4], &[1, 3, 4, 2]), 3);
    }

    #[test]
    fn ids_beyond_the_dense_table_agree_with_naive_dp() {
        let mut rng = Rng::new(8);
        let big = |x: u32| if x.is_multiple_of(2) { x } else { (1 << 24) + x };
        for _ in 0..2000 {
            let s: Vec<u32> = rng.sequence(90, 10).into_iter().map(big).collect();
            let p: Vec<u32> = rng.sequence(90, 10).into_iter().map(big).collect();
            assert_eq!(matches(&p, &s), naive_lcs(&p, &s));
        }
    }

    #[test]
    fn agrees_with_naive_dp_across_word_boundaries() {
        let mut rng = Rng::new(7);
        for case in 0..4000 {
            let alphabet = 1 + rng.below(if case % 2 == 0 { 4 } else { 40 }) as u32;
            let len_s = match case % 4 {
                0 => rng.below(70),
                1 => 60 + rng.below(10),
                2 => 120 + rng.below(140),
                _ => rng.below(10),
            };
            let len_p = rng.below(150);
            let s: Vec<u32> = (0..len_s).map(|_| rng.below(alphabet as usize) as u32).collect();
            let p: Vec<u32> = (0..len_p).map(|_| rng.below(alphabet as usize) as u32).collect();
            assert_eq!(matches(&p, &s), naive_lcs(&p, &s), "p={p:?} s={s:?}");
        }
    }
}
