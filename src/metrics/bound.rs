//! The symbol bound: an upper bound on M that both metrics share, cheap enough to run on every
//! pattern before either scorer.
//!
//! Both metrics count symbols that a pattern and the state have in common (difflib's matching
//! blocks are a common subsequence, so its M never exceeds the LCS), so M is at most the number
//! of pattern symbols that occur in the state at all. The bound counts those symbols through a
//! 256-bit set of the state's symbols hashed by their low byte: a pattern symbol whose hash the
//! set holds counts, so a collision can only raise the count, never lower it, and the bound stays
//! an upper bound (it is exact while the vocabulary has at most 256 ids). A top-k query needs a
//! high M from the few patterns it can still return, and most patterns hold far fewer state
//! symbols than that: they are dropped here at a fraction of a cycle per symbol, without the
//! scorer's per-symbol work.
//!
//! The symbols of a whole run are tested at once into one bit per symbol (AVX2: 32 symbols per
//! step, two byte shuffles into the set; the scalar form is the reference and serves every other
//! CPU and u32 stores), then each pattern's count is two prefix popcounts, so no branch depends
//! on a pattern's length.

use super::simd::Kernel;
use crate::store::{AnyRun, PatternRun, Token};

/// Upper bound on M: how many of a pattern's symbols the state may contain.
pub struct SymbolBound {
    /// Bit `s & 255` is set for every state symbol `s`.
    set: [u8; 32],
    kernel: Kernel,
}

/// What each pattern of a run needs, for [`SymbolBound::select`]: `by_length[len]` for a pattern
/// of `len` symbols (`longer(len)` past the table), [`SKIP`](super::SKIP) where `wanted[k]` is
/// false. Plain data rather than a closure, so the selection loop keeps it in registers.
pub struct Needs<'a, F: Fn(usize) -> u32> {
    pub by_length: &'a [u32],
    pub longer: F,
    pub wanted: &'a [bool],
}

impl<F: Fn(usize) -> u32> Needs<'_, F> {
    #[inline(always)]
    pub fn of(&self, k: usize, len: usize) -> u32 {
        let n = match self.by_length.get(len) {
            Some(&n) => n,
            None => (self.longer)(len),
        };
        if self.wanted[k] {
            n
        } else {
            super::SKIP
        }
    }
}

/// Per-thread working memory of [`SymbolBound::select`].
#[derive(Default)]
pub struct BoundScratch {
    /// Bit i set iff symbol i of the run may be a state symbol.
    bits: Vec<u64>,
    /// `before[w]`: set bits in `bits[..w]`.
    before: Vec<u32>,
}

impl SymbolBound {
    /// The bound of `state` for the process's kernel ([`Kernel::selected`]).
    pub fn new(state: &[u32]) -> SymbolBound {
        SymbolBound::with_kernel(state, Kernel::selected())
    }

    pub fn with_kernel(state: &[u32], kernel: Kernel) -> SymbolBound {
        let mut set = [0u8; 32];
        for &s in state {
            let h = s as u8;
            set[(h >> 3) as usize] |= 1 << (h & 7);
        }
        SymbolBound { set, kernel }
    }

    /// Whether the set may hold `symbol`.
    #[inline(always)]
    fn holds(&self, symbol: u32) -> bool {
        let h = symbol as u8;
        self.set[(h >> 3) as usize] & (1 << (h & 7)) != 0
    }

    /// The bound for one pattern: its symbols the state may contain.
    #[cfg(test)]
    pub fn count<T: Token>(&self, pattern: &[T]) -> u32 {
        pattern.iter().filter(|&&s| self.holds(s.into())).count() as u32
    }

    /// Sets `needed[k]` to what pattern `k` of `run` needs ([`Needs`]), and `kept` to the
    /// patterns to score (indices, ascending): those with `needed[k] != SKIP` whose bound
    /// reaches `needed[k]`. No scorer need read the others. One pass over the run, so the
    /// per-pattern rule and the bound share their loop.
    ///
    /// With `bounded` false every symbol counts, so a pattern's count is its length: every
    /// pattern needing at most that is kept, through the same loop (a query plan never asks a
    /// pattern for more M than its length, so that is every pattern it scores).
    pub fn select(
        &self,
        run: AnyRun<'_>,
        bounded: bool,
        need: Needs<'_, impl Fn(usize) -> u32>,
        needed: &mut Vec<u32>,
        kept: &mut Vec<u32>,
        scratch: &mut BoundScratch,
    ) {
        match run {
            AnyRun::Narrow(run) => self.select_run(run, bounded, need, needed, kept, scratch),
            AnyRun::Wide(run) => self.select_run(run, bounded, need, needed, kept, scratch),
        }
    }

    fn select_run<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        bounded: bool,
        need: Needs<'_, impl Fn(usize) -> u32>,
        needed: &mut Vec<u32>,
        kept: &mut Vec<u32>,
        scratch: &mut BoundScratch,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Avx2 && Kernel::Avx2.supported() {
            // SAFETY: the CPU has AVX2 (checked just above), hence POPCNT and BMI2 too.
            return unsafe { self.select_avx2(run, bounded, need, needed, kept, scratch) };
        }
        self.select_with(run, need, needed, kept, scratch, |tokens, bits| match bounded {
            true => self.mark_scalar(tokens, 0, bits),
            false => bits.fill(!0),
        })
    }

    /// [`SymbolBound::select_with`] compiled for AVX2 CPUs: 32 symbols per step, and hardware
    /// popcounts (a generic x86-64 build counts bits in software).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt,bmi1,bmi2")]
    unsafe fn select_avx2<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        bounded: bool,
        need: Needs<'_, impl Fn(usize) -> u32>,
        needed: &mut Vec<u32>,
        kept: &mut Vec<u32>,
        scratch: &mut BoundScratch,
    ) {
        if !bounded {
            return self.select_with(run, need, needed, kept, scratch, |_, bits| bits.fill(!0));
        }
        match T::as_narrow(run) {
            Some(narrow) => self.select_with(narrow, need, needed, kept, scratch, |tokens, bits| {
                // SAFETY: AVX2, as for the enclosing function.
                unsafe { self.mark_avx2(tokens, bits) }
            }),
            None => {
                self.select_with(run, need, needed, kept, scratch, |tokens, bits| self.mark_scalar(tokens, 0, bits))
            }
        }
    }

    /// Marks the run's symbols with `mark`, then keeps each pattern whose count of marked
    /// symbols reaches its `need`.
    #[inline(always)]
    fn select_with<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        need: Needs<'_, impl Fn(usize) -> u32>,
        needed: &mut Vec<u32>,
        kept: &mut Vec<u32>,
        scratch: &mut BoundScratch,
        mark: impl FnOnce(&[T], &mut [u64]),
    ) {
        let tokens = run.tokens();
        // One spare word, so that the count up to the run's end reads a word that exists.
        let words = tokens.len() / 64 + 1;
        let BoundScratch { bits, before } = scratch;
        bits.clear();
        bits.resize(words, 0);
        mark(tokens, bits);
        before.clear();
        before.reserve(words);
        let mut seen = 0u32;
        for &word in bits.iter() {
            before.push(seen);
            seen += word.count_ones();
        }
        // SAFETY (both reads): `i <= tokens.len()`, so `i / 64 < words`, the length of both.
        let upto = |i: usize| unsafe {
            *before.get_unchecked(i / 64) + (bits.get_unchecked(i / 64) & ((1u64 << (i % 64)) - 1)).count_ones()
        };
        // No branch per pattern: which patterns are dropped follows nothing the CPU could
        // predict. A skipped pattern stays out: SKIP is above any count. Each pattern starts
        // where the previous one ends, so one prefix count per pattern.
        let offsets = run.offsets();
        let base = offsets[0] as usize;
        // Written in place: `push` would keep the lengths in memory, a store and a reload per
        // pattern on the loop's critical path.
        needed.clear();
        needed.resize(run.len(), 0);
        kept.clear();
        kept.resize(run.len(), 0);
        let mut len = 0;
        let (mut start, mut before_pattern) = (0, 0);
        for (k, (slot, &end)) in needed.iter_mut().zip(&offsets[1..]).enumerate() {
            // The offsets a few pages on, requested now: the hardware prefetcher stops at every
            // page boundary, and this loop would wait on memory there.
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch reads nothing and cannot fault, wherever it points.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(offsets.as_ptr().wrapping_add(k + 256) as *const i8);
            }
            let end = end as usize - base;
            let upto_end = upto(end);
            let n = need.of(k, end - start);
            *slot = n;
            // SAFETY: `len <= k < run.len() == kept.len()`.
            unsafe { *kept.get_unchecked_mut(len) = k as u32 };
            len += (upto_end - before_pattern >= n) as usize;
            (start, before_pattern) = (end, upto_end);
        }
        kept.truncate(len);
    }

    /// Sets bit `from + i` of `bits` for every `tokens[i]` the set may hold.
    fn mark_scalar<T: Token>(&self, tokens: &[T], from: usize, bits: &mut [u64]) {
        for (i, &s) in tokens.iter().enumerate() {
            let at = from + i;
            bits[at / 64] |= (self.holds(s.into()) as u64) << (at % 64);
        }
    }

    /// [`SymbolBound::mark_scalar`] 32 symbols at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn mark_avx2(&self, tokens: &[u16], bits: &mut [u64]) {
        use std::arch::x86_64::*;
        let set = _mm256_loadu_si256(self.set.as_ptr() as *const __m256i);
        // The two 16-byte halves of the set, each in both 128-bit lanes (vpshufb looks up
        // within a lane).
        let low_half = _mm256_permute2x128_si256::<0x00>(set, set);
        let high_half = _mm256_permute2x128_si256::<0x11>(set, set);
        let bit_of = _mm256_setr_epi8(
            1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16,
            32, 64, -128,
        );
        let low_byte = _mm256_set1_epi16(0x00ff);
        let five_bits = _mm256_set1_epi8(0x1f);
        let three_bits = _mm256_set1_epi8(0x07);
        let blocks = tokens.len() / 32;
        let out = bits.as_mut_ptr() as *mut u32;
        for b in 0..blocks {
            let p = tokens.as_ptr().add(32 * b) as *const __m256i;
            // As in `select_with`: the symbols a page on, ahead of the hardware prefetcher.
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(2048));
            let (x, y) = (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)));
            // The low bytes of the 32 symbols, in symbol order (packus interleaves the lanes).
            let h = _mm256_packus_epi16(_mm256_and_si256(x, low_byte), _mm256_and_si256(y, low_byte));
            let h = _mm256_permute4x64_epi64::<0b11_01_10_00>(h);
            // Byte h >> 3 of the set: bit 4 of the index picks the half, moved to bit 7 for vpblendvb.
            // (16-bit shifts: every byte is below 32 and 8 before them, so no bit crosses a byte.)
            let index = _mm256_and_si256(_mm256_srli_epi16::<3>(h), five_bits);
            let byte = _mm256_blendv_epi8(
                _mm256_shuffle_epi8(low_half, index),
                _mm256_shuffle_epi8(high_half, index),
                _mm256_slli_epi16::<3>(index),
            );
            let bit = _mm256_shuffle_epi8(bit_of, _mm256_and_si256(h, three_bits));
            let hit = _mm256_cmpeq_epi8(_mm256_and_si256(byte, bit), bit);
            // Little endian: u32 word b of `bits` holds bits 32b..32b+32.
            out.add(b).write_unaligned(_mm256_movemask_epi8(hit) as u32);
        }
        self.mark_scalar(&tokens[32 * blocks..], 32 * blocks, bits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SKIP;
    use crate::store::PatternStore;
    use crate::testing::{naive_difflib, naive_lcs, Rng};

    /// Every kernel marks the same patterns, and never one whose M (either metric) could reach
    /// its `needed`: over alphabets below and beyond 256 ids (hash collisions), u16 and u32
    /// stores, runs not aligned to 32 symbols and runs starting mid-store.
    #[test]
    fn prunes_only_patterns_that_cannot_reach_needed() {
        let mut rng = Rng::new(2024);
        for case in 0..150 {
            let alphabet = [3, 40, 250, 700, 70_000][case % 5];
            let wide = case % 7 == 3;
            let mut store = PatternStore::new();
            let count = 1 + rng.below(90);
            for k in 0..count {
                let len = if rng.below(10) == 0 { 64 + rng.below(100) } else { rng.below(40) };
                let mut pattern: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
                if wide && k == 0 {
                    pattern.push(1 << 20);
                }
                store.push(&format!("p{k}"), &pattern);
            }
            assert!(!wide || store.token_width() == 4);
            let state: Vec<u32> = (0..rng.below(30)).map(|_| rng.below(alphabet) as u32).collect();
            let first = rng.below(count) as u32;
            let run = store.run(first, count - first as usize);
            // Needed by length up to 50 symbols (some lengths skipped), 7 past that; some
            // patterns not wanted at all.
            let by_length: Vec<u32> =
                (0..50).map(|_| if rng.below(8) == 0 { SKIP } else { rng.below(12) as u32 }).collect();
            let wanted: Vec<bool> = (0..run.len()).map(|_| rng.below(8) != 0).collect();
            let needed: Vec<u32> = (0..run.len())
                .map(|k| match (wanted[k], by_length.get(run.pattern_len(k))) {
                    (false, _) => SKIP,
                    (true, Some(&n)) => n,
                    (true, None) => 7,
                })
                .collect();
            let mut results = Vec::new();
            for kernel in Kernel::available() {
                let bound = SymbolBound::with_kernel(&state, kernel);
                let (mut kept, mut filled) = (Vec::new(), Vec::new());
                let need = Needs { by_length: &by_length, longer: |_| 7, wanted: &wanted };
                bound.select(run, true, need, &mut filled, &mut kept, &mut BoundScratch::default());
                assert_eq!(filled, needed);
                // Unbounded: the count is the length, so every pattern needing at most its length.
                let (mut all, mut all_filled) = (Vec::new(), Vec::new());
                let need = Needs { by_length: &by_length, longer: |_| 7, wanted: &wanted };
                bound.select(run, false, need, &mut all_filled, &mut all, &mut BoundScratch::default());
                assert_eq!(all_filled, needed);
                let reachable = |k: &u32| needed[*k as usize] as usize <= run.pattern_len(*k as usize);
                assert_eq!(all, (0..run.len() as u32).filter(reachable).collect::<Vec<_>>());
                assert!(kept.windows(2).all(|w| w[0] < w[1]));
                let pruned: Vec<u32> =
                    (0..run.len() as u32).map(|k| if kept.contains(&k) { needed[k as usize] } else { SKIP }).collect();
                for (k, (&before, &after)) in needed.iter().zip(&pruned).enumerate() {
                    let pattern = store.tokens(first + k as u32);
                    let exact: u32 = pattern.iter().filter(|s| state.contains(s)).count() as u32;
                    let hashed = bound.count(&pattern);
                    assert!(hashed >= exact);
                    if alphabet <= 256 {
                        assert_eq!(hashed, exact, "the set is exact below 256 ids");
                    }
                    if before == SKIP {
                        assert_eq!(after, SKIP);
                    } else if after == SKIP {
                        assert!(hashed < before, "{kernel:?} pruned a pattern whose bound reaches needed");
                        assert!((naive_lcs(&pattern, &state) as u32) < before);
                        assert!((naive_difflib(&pattern, &state, false) as u32) < before);
                    } else {
                        assert_eq!(after, before);
                        assert!(hashed >= before, "{kernel:?} kept a pattern its bound rules out");
                    }
                }
                results.push(pruned);
            }
            assert!(results.windows(2).all(|w| w[0] == w[1]), "kernels disagree in case {case}");
        }
    }

    /// M never exceeds the bound, for either metric, whatever the symbols.
    #[test]
    fn bounds_both_metrics() {
        let mut rng = Rng::new(77);
        for case in 0..3000 {
            let alphabet = 1 + rng.below([4, 30, 600][case % 3]);
            let p: Vec<u32> = (0..rng.below(50)).map(|_| rng.below(alphabet) as u32).collect();
            let s: Vec<u32> = (0..rng.below(50)).map(|_| rng.below(alphabet) as u32).collect();
            let bound = SymbolBound::new(&s).count(&p);
            assert!(naive_lcs(&p, &s) as u32 <= bound, "lcs {p:?} {s:?}");
            assert!(naive_difflib(&p, &s, false) as u32 <= bound, "difflib {p:?} {s:?}");
            assert!(naive_difflib(&p, &s, true) as u32 <= bound, "difflib autojunk {p:?} {s:?}");
        }
    }
}
