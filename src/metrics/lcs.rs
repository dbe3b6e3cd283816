//! Exact `lcs` metric: M = length of the longest common subsequence.
//!
//! Bit-parallel (Allison–Dix / Hyyrö): the state is the bit-vector side, one bit per state
//! position, `ceil(len/64)` words; each pattern symbol costs one mask lookup and a few word
//! operations per word. `2.0 * M / T` equals `2.0 * rapidfuzz.distance.LCSseq.similarity(p, s) / T`.

use super::{QuerySymbols, Scorer, SKIP};
use crate::store::PatternRun;

/// A state prepared for LCS against many patterns.
pub struct LcsQuery {
    len: usize,
    words: usize,
    symbols: QuerySymbols,
    /// `masks[slot * words + w]`: bit k of word w set iff `state[64 * w + k]` has that slot's symbol.
    masks: Vec<u64>,
    /// Single-word states whose symbols all have dense ids: the mask of every id below
    /// `symbols.dense_len()`, indexed by id, then one 0 that every larger id is clamped to, so the
    /// hot loop has neither a slot indirection nor a branch.
    direct: Vec<u64>,
}

impl LcsQuery {
    pub fn new(state: &[u32]) -> LcsQuery {
        let symbols = QuerySymbols::new(state);
        let words = state.len().div_ceil(64);
        let mut masks = vec![0u64; symbols.distinct() * words];
        for (pos, &s) in state.iter().enumerate() {
            let slot = symbols.slot(s) as usize;
            masks[slot * words + pos / 64] |= 1u64 << (pos % 64);
        }
        let mut direct = Vec::new();
        if words == 1 && !symbols.has_sparse() {
            direct = (0..symbols.dense_len() as u32)
                .map(|id| match symbols.slot(id) {
                    QuerySymbols::NONE => 0,
                    slot => masks[slot as usize],
                })
                .chain([0])
                .collect();
        }
        LcsQuery { len: state.len(), words, symbols, masks, direct }
    }

    #[inline(always)]
    fn one_word_mask(&self, symbol: u32) -> u64 {
        if !self.direct.is_empty() {
            return self.direct[(symbol as usize).min(self.direct.len() - 1)];
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

    fn matches_one_word(&self, pattern: &[u32]) -> usize {
        let v = pattern.iter().fold(!0u64, |v, &c| Self::step(v, self.one_word_mask(c)));
        self.count_one_word(v) as usize
    }

    /// Single-word LCS of a run of patterns, four at a time: one pattern's steps form a
    /// dependency chain, so interleaving four independent chains keeps the core busy. A lane that
    /// finishes its pattern takes the next one to be scored.
    fn matches_one_word_interleaved(&self, run: PatternRun<'_>, needed: &[u32], out: &mut [u32]) {
        const LANES: usize = 4;
        const IDLE: usize = usize::MAX;
        let mask = |c: u32| self.direct[(c as usize).min(self.direct.len() - 1)];
        let mut next = 0;
        let mut owner = [IDLE; LANES];
        let mut rest: [&[u32]; LANES] = [&[]; LANES];
        let mut v = [!0u64; LANES];
        loop {
            for lane in 0..LANES {
                while rest[lane].is_empty() {
                    if owner[lane] != IDLE {
                        out[owner[lane]] = self.count_one_word(v[lane]);
                        owner[lane] = IDLE;
                    }
                    while next < run.len() && needed[next] == SKIP {
                        next += 1;
                    }
                    if next == run.len() {
                        break;
                    }
                    (owner[lane], rest[lane], v[lane]) = (next, run.pattern(next), !0);
                    next += 1;
                }
            }
            if rest.iter().any(|r| r.is_empty()) {
                // Nothing left to refill with: finish the other lanes one by one.
                for lane in 0..LANES {
                    if owner[lane] != IDLE {
                        let end = rest[lane].iter().fold(v[lane], |v, &c| Self::step(v, mask(c)));
                        out[owner[lane]] = self.count_one_word(end);
                    }
                }
                return;
            }
            let steps = rest.iter().map(|r| r.len()).min().unwrap_or(0);
            let (a, rest_a) = rest[0].split_at(steps);
            let (b, rest_b) = rest[1].split_at(steps);
            let (c, rest_c) = rest[2].split_at(steps);
            let (d, rest_d) = rest[3].split_at(steps);
            let [mut va, mut vb, mut vc, mut vd] = v;
            for (((&sa, &sb), &sc), &sd) in a.iter().zip(b).zip(c).zip(d) {
                va = Self::step(va, mask(sa));
                vb = Self::step(vb, mask(sb));
                vc = Self::step(vc, mask(sc));
                vd = Self::step(vd, mask(sd));
            }
            v = [va, vb, vc, vd];
            rest = [rest_a, rest_b, rest_c, rest_d];
        }
    }

    fn matches_multi_word(&self, pattern: &[u32], v: &mut Vec<u64>) -> usize {
        v.clear();
        v.resize(self.words, !0u64);
        for &c in pattern {
            let slot = self.symbols.slot(c);
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
    type Scratch = Vec<u64>;

    fn new_scratch(&self) -> Vec<u64> {
        Vec::with_capacity(self.words)
    }

    fn state_len(&self) -> usize {
        self.len
    }

    fn matches_at_least(&self, run: PatternRun<'_>, needed: &[u32], out: &mut [u32], scratch: &mut Vec<u64>) {
        if self.words == 1 && !self.direct.is_empty() {
            self.matches_one_word_interleaved(run, needed, out);
        } else {
            for k in 0..run.len() {
                if needed[k] != SKIP {
                    out[k] = self.matches(run.pattern(k), scratch) as u32;
                }
            }
        }
    }

    #[inline]
    fn matches(&self, pattern: &[u32], scratch: &mut Vec<u64>) -> usize {
        match self.words {
            0 => 0,
            1 => self.matches_one_word(pattern),
            _ => self.matches_multi_word(pattern, scratch),
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
        let big = |x: u32| if x % 2 == 0 { x } else { (1 << 24) + x };
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
