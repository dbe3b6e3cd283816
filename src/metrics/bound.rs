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

/// What [`SymbolBound::select`] chose in a run, and its per-thread working memory.
#[derive(Default)]
pub struct Selection {
    /// `needed[k]`: the M pattern k of the run needs ([`SKIP`](super::SKIP): not wanted).
    pub needed: Vec<u32>,
    /// The patterns to score (indices into the run, ascending).
    pub kept: Vec<u32>,
    /// Bit i set iff symbol i of the run may be a state symbol.
    bits: Vec<u32>,
    /// `before[w]`: set bits in `bits[..w]`.
    before: Vec<u32>,
}

/// The marks of a run's symbols (those of a [`Selection`] once filled).
pub struct Marks<'a> {
    bits: &'a [u32],
    before: &'a [u32],
}

impl Marks<'_> {
    /// Marked symbols among the run's first `i` (`i <= ` the run's symbols).
    #[inline(always)]
    fn upto(&self, i: usize) -> u32 {
        // `i / 32 < bits.len() == before.len()`: both have a spare word past the run.
        self.before[i / 32] + (self.bits[i / 32] & ((1u32 << (i % 32)) - 1)).count_ones()
    }
}

/// Longest pattern whose marks [`keep_avx2`] reads as one 64-bit window.
#[cfg(target_arch = "x86_64")]
const WINDOW: i32 = 56;

/// `PICKED[mask]`: the positions of `mask`'s set bits, ascending (the rest zero), so that the
/// AVX2 selection appends the kept patterns of 8 with one store.
#[cfg(target_arch = "x86_64")]
static PICKED: [[u8; 8]; 256] = {
    let mut table = [[0u8; 8]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut bit, mut n) = (0, 0);
        while bit < 8 {
            if mask >> bit & 1 == 1 {
                table[mask][n] = bit as u8;
                n += 1;
            }
            bit += 1;
        }
        mask += 1;
    }
    table
};

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

    /// Sets `chosen.needed[k]` to what pattern `k` of `run` needs ([`Needs`]), and
    /// `chosen.kept` to the patterns to score (indices, ascending): those with
    /// `needed[k] != SKIP` whose bound reaches `needed[k]`. No scorer need read the others. One pass over the run, so the
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
        chosen: &mut Selection,
    ) {
        match run {
            AnyRun::Narrow(run) => self.select_run(run, bounded, need, chosen),
            AnyRun::Wide(run) => self.select_run(run, bounded, need, chosen),
        }
    }

    fn select_run<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        bounded: bool,
        need: Needs<'_, impl Fn(usize) -> u32>,
        chosen: &mut Selection,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Avx2 && Kernel::Avx2.supported() {
            // SAFETY: the CPU has AVX2 (checked just above), hence POPCNT and BMI2 too.
            return unsafe { self.select_avx2(run, bounded, need, chosen) };
        }
        let mark = |tokens: &[T], bits: &mut [u32]| match bounded {
            true => self.mark_scalar(tokens, 0, bits),
            false => bits.fill(!0),
        };
        self.select_with(run, need, chosen, mark, |marks, offsets, need, needed, kept| {
            keep_scalar(marks, offsets, 0..offsets.len() - 1, need, needed, kept, 0)
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
        chosen: &mut Selection,
    ) {
        // SAFETY (each `keep_avx2`): AVX2, as for the enclosing function.
        let keep = |marks: &Marks<'_>, offsets: &[u64], need: &Needs<'_, _>, needed: &mut [u32], kept: &mut [u32]| unsafe {
            keep_avx2(marks, offsets, need, needed, kept)
        };
        if !bounded {
            return self.select_with(run, need, chosen, |_, bits| bits.fill(!0), keep);
        }
        match T::as_narrow(run) {
            // SAFETY: AVX2, as above.
            Some(narrow) => {
                self.select_with(narrow, need, chosen, |tokens, bits| unsafe { self.mark_avx2(tokens, bits) }, keep)
            }
            None => self.select_with(run, need, chosen, |tokens, bits| self.mark_scalar(tokens, 0, bits), keep),
        }
    }

    /// Marks the run's symbols with `mark`, counts the marks before every 32-symbol word, then
    /// keeps each pattern whose count of marked symbols reaches its `need` (with `keep`, which
    /// sees the run's patterns as `offsets` and writes `needed` and `kept`).
    #[inline(always)]
    fn select_with<T: Token, F: Fn(usize) -> u32>(
        &self,
        run: PatternRun<'_, T>,
        need: Needs<'_, F>,
        chosen: &mut Selection,
        mark: impl FnOnce(&[T], &mut [u32]),
        keep: impl FnOnce(&Marks<'_>, &[u64], &Needs<'_, F>, &mut [u32], &mut [u32]) -> usize,
    ) {
        let tokens = run.tokens();
        // Spare words, so that the count up to the run's end, and an 8-byte window from any
        // symbol of the run, read words that exist (and hold no marks).
        let words = tokens.len() / 32 + 3;
        let Selection { needed, kept, bits, before } = chosen;
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
        let marks = Marks { bits, before };
        // Every slot is written by `keep` (`kept` up to 8 past its final length: whole vectors).
        needed.resize(run.len(), 0);
        kept.resize(run.len() + 8, 0);
        let len = keep(&marks, run.offsets(), &need, needed, kept);
        kept.truncate(len);
    }

    /// Sets bit `from + i` of `bits` for every `tokens[i]` the set may hold.
    fn mark_scalar<T: Token>(&self, tokens: &[T], from: usize, bits: &mut [u32]) {
        for (i, &s) in tokens.iter().enumerate() {
            let at = from + i;
            bits[at / 32] |= (self.holds(s.into()) as u32) << (at % 32);
        }
    }

    /// [`SymbolBound::mark_scalar`] 32 symbols at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn mark_avx2(&self, tokens: &[u16], bits: &mut [u32]) {
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
        let out = bits.as_mut_ptr();
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
            out.add(b).write_unaligned(_mm256_movemask_epi8(hit) as u32);
        }
        self.mark_scalar(&tokens[32 * blocks..], 32 * blocks, bits);
    }
}

/// Keeps the patterns `ks` of a run (pattern k: symbols `offsets[k] - offsets[0]` up to
/// `offsets[k + 1] - offsets[0]`) whose marks reach their need: writes `needed[k]` for each, and
/// appends the kept ones to `kept` from position `len`; returns the new length. The reference
/// for [`keep_avx2`], and its tail.
///
/// No branch per pattern: which patterns are dropped follows nothing the CPU could predict. A
/// skipped pattern stays out: SKIP is above any count.
#[inline(always)]
fn keep_scalar(
    marks: &Marks<'_>,
    offsets: &[u64],
    ks: std::ops::Range<usize>,
    need: &Needs<'_, impl Fn(usize) -> u32>,
    needed: &mut [u32],
    kept: &mut [u32],
    mut len: usize,
) -> usize {
    let base = offsets[0];
    let mut start = (offsets[ks.start] - base) as usize;
    let mut before_start = marks.upto(start);
    for k in ks {
        let end = (offsets[k + 1] - base) as usize;
        let before_end = marks.upto(end);
        let n = need.of(k, end - start);
        needed[k] = n;
        kept[len] = k as u32;
        len += (before_end - before_start >= n) as usize;
        (start, before_start) = (end, before_end);
    }
    len
}

/// [`keep_scalar`] over a whole run, 8 patterns per step: their ends, counts and needs in
/// vectors (each pattern's marks and its need by length gathered), the kept ones appended with
/// one store. Steps holding a pattern longer than the table of needs, or than [`WINDOW`], go
/// through [`keep_scalar`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1,bmi2")]
unsafe fn keep_avx2(
    marks: &Marks<'_>,
    offsets: &[u64],
    need: &Needs<'_, impl Fn(usize) -> u32>,
    needed: &mut [u32],
    kept: &mut [u32],
) -> usize {
    use std::arch::x86_64::*;
    let patterns = offsets.len() - 1;
    let table = need.by_length;
    // Lanes hold symbol positions and lengths as i32.
    if table.is_empty() || offsets[patterns] - offsets[0] >= i32::MAX as u64 {
        return keep_scalar(marks, offsets, 0..patterns, need, needed, kept, 0);
    }
    assert!(needed.len() >= patterns && kept.len() >= patterns + 8 && need.wanted.len() >= patterns);
    let base = _mm256_set1_epi64x(offsets[0] as i64);
    let low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    // Lane i takes lane i - 1 (lane 0 is then replaced by the previous step's last value).
    let previous = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    // Longer patterns go through `keep_scalar`: their needs are not tabled, or their marks
    // span more than the 57 bits of a window (64 bits at an offset of up to 7).
    let longest = _mm256_set1_epi32((table.len() as i32 - 1).min(WINDOW));
    let one_wide = _mm256_set1_epi64x(1);
    let low_three = _mm256_set1_epi32(7);
    let low_nibbles = _mm256_set1_epi8(0x0f);
    let nibble_count = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
    );
    let skip = _mm256_set1_epi32(super::SKIP as i32);
    let (mut k, mut len) = (0, 0);
    let mut start = 0i32;
    while k + 8 <= patterns {
        let at = offsets.as_ptr().add(k + 1);
        // As in `mark_avx2`: the offsets a few pages on, ahead of the hardware prefetcher.
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(256) as *const i8);
        let (low, high) = (_mm256_loadu_si256(at as *const __m256i), _mm256_loadu_si256(at.add(4) as *const __m256i));
        let ends = _mm256_blend_epi32::<0b1111_0000>(
            _mm256_permutevar8x32_epi32(_mm256_sub_epi64(low, base), low_dwords),
            _mm256_permutevar8x32_epi32(_mm256_sub_epi64(high, base), low_dwords),
        );
        let starts = _mm256_blend_epi32::<1>(_mm256_permutevar8x32_epi32(ends, previous), _mm256_set1_epi32(start));
        let lengths = _mm256_sub_epi32(ends, starts);
        if _mm256_movemask_epi8(_mm256_cmpgt_epi32(lengths, longest)) != 0 {
            len = keep_scalar(marks, offsets, k..k + 8, need, needed, kept, len);
            k += 8;
            start = (offsets[k] - offsets[0]) as i32;
            continue;
        }
        // Each pattern's marks: the 64 from its start on (read at byte start / 8, shifted by
        // start % 8), the first `len` of them counted (popcounts of 64-bit lanes: per nibble,
        // then summed per lane). Four patterns per gather.
        let marks_at = marks.bits.as_ptr() as *const i64;
        let byte_at = _mm256_srli_epi32::<3>(starts);
        let shift = _mm256_and_si256(starts, low_three);
        let window = |half: __m128i, shift: __m128i, len: __m128i| {
            let bits = _mm256_i32gather_epi64::<1>(marks_at, half);
            let below = _mm256_sub_epi64(_mm256_sllv_epi64(one_wide, _mm256_cvtepu32_epi64(len)), one_wide);
            let x = _mm256_and_si256(_mm256_srlv_epi64(bits, _mm256_cvtepu32_epi64(shift)), below);
            let nibbles = _mm256_add_epi8(
                _mm256_shuffle_epi8(nibble_count, _mm256_and_si256(x, low_nibbles)),
                _mm256_shuffle_epi8(nibble_count, _mm256_and_si256(_mm256_srli_epi16::<4>(x), low_nibbles)),
            );
            _mm256_sad_epu8(nibbles, _mm256_setzero_si256())
        };
        let low =
            window(_mm256_castsi256_si128(byte_at), _mm256_castsi256_si128(shift), _mm256_castsi256_si128(lengths));
        let high = window(
            _mm256_extracti128_si256::<1>(byte_at),
            _mm256_extracti128_si256::<1>(shift),
            _mm256_extracti128_si256::<1>(lengths),
        );
        let count = _mm256_blend_epi32::<0b1111_0000>(
            _mm256_permutevar8x32_epi32(low, low_dwords),
            _mm256_permutevar8x32_epi32(high, low_dwords),
        );
        let by_length = _mm256_i32gather_epi32::<4>(table.as_ptr() as *const i32, lengths);
        let wanted = (need.wanted.as_ptr().add(k) as *const i64).read_unaligned();
        let wanted = _mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(wanted)), _mm256_setzero_si256());
        let n = _mm256_blendv_epi8(skip, by_length, wanted);
        _mm256_storeu_si256(needed.as_mut_ptr().add(k) as *mut __m256i, n);
        // count >= n, unsigned (SKIP is u32::MAX).
        let keep = _mm256_cmpeq_epi32(_mm256_max_epu32(count, n), count);
        let mask = _mm256_movemask_ps(_mm256_castsi256_ps(keep)) as usize;
        let picked = _mm_loadl_epi64(PICKED[mask].as_ptr() as *const __m128i);
        let picked = _mm256_add_epi32(_mm256_cvtepu8_epi32(picked), _mm256_set1_epi32(k as i32));
        _mm256_storeu_si256(kept.as_mut_ptr().add(len) as *mut __m256i, picked);
        len += mask.count_ones() as usize;
        start = _mm256_extract_epi32::<7>(ends);
        k += 8;
    }
    keep_scalar(marks, offsets, k..patterns, need, needed, kept, len)
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
        // Reused across cases, as a scan thread reuses its own: nothing of a run may leak into
        // the next.
        let (mut chosen, mut unbounded) = (Selection::default(), Selection::default());
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
            // Needed by length up to 50 or 200 symbols (some lengths skipped), 7 past that; some
            // patterns not wanted at all. (200: patterns too long for one 64-bit window of marks
            // have their needs tabled.)
            let tabled = [50, 200][case % 2];
            let by_length: Vec<u32> =
                (0..tabled).map(|_| if rng.below(8) == 0 { SKIP } else { rng.below(12) as u32 }).collect();
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
                let need = Needs { by_length: &by_length, longer: |_| 7, wanted: &wanted };
                bound.select(run, true, need, &mut chosen);
                assert_eq!(chosen.needed, needed);
                let kept = &chosen.kept;
                // Unbounded: the count is the length, so every pattern needing at most its length.
                let need = Needs { by_length: &by_length, longer: |_| 7, wanted: &wanted };
                bound.select(run, false, need, &mut unbounded);
                assert_eq!(unbounded.needed, needed);
                let all = &unbounded.kept;
                let reachable = |k: &u32| needed[*k as usize] as usize <= run.pattern_len(*k as usize);
                assert_eq!(*all, (0..run.len() as u32).filter(reachable).collect::<Vec<_>>());
                assert!(kept.windows(2).all(|w| w[0] < w[1]));
                let pruned: Vec<u32> =
                    (0..run.len() as u32).map(|k| if kept.contains(&k) { needed[k as usize] } else { SKIP }).collect();
                for (k, (&before, &after)) in needed.iter().zip(&pruned).enumerate() {
                    let pattern = store.tokens(first + k as u32);
                    let exact: u32 = pattern.iter().filter(|s| state.contains(s)).count() as u32;
                    let hashed = bound.count(&pattern);
                    assert!(hashed >= exact);
                    if pattern.iter().chain(&state).all(|&s| s < 256) {
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
