//! Runtime-dispatched SIMD for the LCS scan.
//!
//! The scalar kernel ([`super::lcs`]) keeps the bit vector over the *state* and steps once per
//! pattern symbol: every step costs a symbol load and two table lookups, which is what bounds
//! the scan (not the word operations). The SIMD kernel transposes the problem, since LCS is
//! symmetric: the bit vector runs over the *pattern* (at most 64 symbols, one u64) and steps
//! once per state symbol. Its per-symbol masks need no lookup at all: a pattern's symbols are
//! loaded once and compared with each distinct state symbol, 32 at a time (`vpcmpeqw`,
//! `vpacksswb`, `vpmovmskb`). The masks of 4 patterns sit side by side, so one step of all 4 is
//! one aligned load and four AVX2 instructions on u64 lanes; every pattern takes exactly one step
//! per state symbol, so lanes never wait on each other.
//!
//! The kernel is chosen once per process ([`Kernel::selected`]) by CPU feature detection, so one
//! wheel runs everywhere; `KATO_GPU_SIMD=scalar` forces the scalar reference (tests and the bench
//! compare the two). Either kernel returns the exact LCS, so results are bit-identical.

use std::sync::OnceLock;

use crate::store::PatternRun;

/// The environment variable that can force a kernel: `scalar` (the reference), `auto` (default).
pub const SIMD_ENV: &str = "KATO_GPU_SIMD";

/// Longest pattern the transposed kernel scores (one u64 bit vector); longer ones go scalar.
const MAX_PATTERN: usize = 64;

/// States with more distinct symbols go scalar: the transposed kernel builds one mask per
/// distinct state symbol per pattern, which stops paying off around the scalar kernel's cost of
/// a lookup per pattern symbol.
const MAX_STATE_SYMBOLS: usize = 64;

/// Patterns stepped together: the u64 lanes of one AVX2 register.
const LANES: usize = 4;

/// An LCS kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The reference: bit vector over the state, stepped per pattern symbol. Any CPU.
    Scalar,
    /// The transposed kernel on AVX2 (x86-64 only).
    Avx2,
}

impl Kernel {
    /// Every kernel, reference first.
    pub const ALL: [Kernel; 2] = [Kernel::Scalar, Kernel::Avx2];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            Kernel::Avx2 => avx2_supported(),
        }
    }

    /// The kernels this CPU can run, reference first.
    pub fn available() -> impl Iterator<Item = Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.supported())
    }

    /// The kernel every query uses: the best this CPU supports unless [`SIMD_ENV`] says `scalar`.
    /// Decided on first use, once per process.
    pub fn selected() -> Kernel {
        static SELECTED: OnceLock<Kernel> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let best = Kernel::available().last().unwrap_or(Kernel::Scalar);
            match std::env::var(SIMD_ENV).as_deref() {
                Err(_) | Ok("") | Ok("auto") => best,
                Ok("scalar") => Kernel::Scalar,
                Ok(other) => {
                    log::warn!("{SIMD_ENV}={other:?} is neither \"auto\" nor \"scalar\"; using {}", best.name());
                    best
                }
            }
        })
    }
}

fn avx2_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A state prepared for the transposed kernel.
pub struct Transposed {
    /// Each distinct state symbol below 2^16 (the only ones a u16 store can hold), repeated
    /// over 16 u16 lanes, ready for one load.
    broadcast: Vec<[u16; 16]>,
    /// For each state position whose symbol is below 2^16, the index of that symbol in
    /// `broadcast`. Positions with larger symbols match nothing stored: no step.
    steps: Vec<u32>,
    /// The shortest pattern worth this kernel with one block of 32 symbols, and with two.
    shortest: (usize, usize),
}

/// Per-thread working memory of the transposed kernel.
#[derive(Default)]
pub struct TransposedScratch {
    /// `masks[symbol * LANES + lane]`: bit i set iff symbol i of the lane's pattern is that symbol.
    masks: Vec<u64>,
    /// The patterns left for the scalar kernel.
    rest: Vec<u32>,
}

impl Transposed {
    /// `None` when `kernel` has no transposed form or the state has too many distinct symbols.
    pub fn new(state: &[u32], kernel: Kernel) -> Option<Transposed> {
        if kernel != Kernel::Avx2 || !kernel.supported() {
            return None;
        }
        let mut distinct: Vec<u16> = Vec::new();
        let mut steps = Vec::with_capacity(state.len());
        for &s in state {
            let Ok(s) = u16::try_from(s) else { continue };
            let at = match distinct.iter().position(|&d| d == s) {
                Some(at) => at,
                None => {
                    distinct.push(s);
                    distinct.len() - 1
                }
            };
            if distinct.len() > MAX_STATE_SYMBOLS {
                return None;
            }
            steps.push(at as u32);
        }
        let d = distinct.len();
        let shortest = ((3 * d).div_ceil(2).max(1), (3 * d).max(33));
        if shortest.0 > 32 && shortest.1 > MAX_PATTERN {
            return None;
        }
        Some(Transposed { broadcast: distinct.into_iter().map(|s| [s; 16]).collect(), steps, shortest })
    }

    /// Whether a pattern of `len` symbols is cheaper here than in the scalar kernel. The
    /// transposed kernel costs ~5 vector operations per distinct state symbol and block of 32
    /// pattern symbols, the scalar one ~9 operations per pattern symbol; the ratio below is the
    /// break-even `kernel_cost` measured (short patterns against many distinct symbols, such as
    /// 5-symbol chunks, stay scalar).
    #[inline]
    fn takes(&self, len: usize) -> bool {
        (self.shortest.0..=32).contains(&len) || (self.shortest.1..=MAX_PATTERN).contains(&len)
    }

    /// Whether `run` is worth the pass that sorts its patterns between the kernels: not when its
    /// mean pattern is shorter than any the kernel takes (5-symbol chunks: nearly none would be
    /// taken, and the pass costs as much as a tenth of their scalar scan).
    #[inline]
    pub fn worth(&self, run: PatternRun<'_, u16>) -> bool {
        run.tokens().len() >= self.shortest.0 * run.len()
    }

    /// Scores the patterns `kept` of `run` that it [`Transposed::takes`]: `out[k]` = their
    /// exact LCS. Returns the others (ascending) for the scalar kernel.
    pub fn score<'s>(
        &self,
        run: PatternRun<'_, u16>,
        kept: &[u32],
        out: &mut [u32],
        scratch: &'s mut TransposedScratch,
    ) -> &'s [u32] {
        let TransposedScratch { masks, rest } = scratch;
        rest.clear();
        masks.clear();
        masks.resize(2 * self.broadcast.len() * LANES, 0);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Transposed` exists only where `avx2_supported()` (see `new`).
        unsafe {
            self.score_avx2(run, kept, out, masks, rest)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no transposed kernel on this architecture");
        rest
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn score_avx2(
        &self,
        run: PatternRun<'_, u16>,
        kept: &[u32],
        out: &mut [u32],
        masks: &mut [u64],
        rest: &mut Vec<u32>,
    ) {
        // Two mask buffers, software-pipelined: a batch is stepped only after the next one's masks
        // are built, so its vector loads do not wait on the lanes' scalar stores (a 32-byte load
        // over four 8-byte stores still in the store buffer cannot be forwarded and stalls).
        let (mut current, mut previous) = masks.split_at_mut(masks.len() / 2);
        let mut lanes = [0u32; LANES];
        let mut pending: Option<[u32; LANES]> = None;
        let mut filled = 0;
        for &k in kept {
            let k = k as usize;
            if !self.takes(run.pattern_len(k)) {
                rest.push(k as u32);
                continue;
            }
            self.masks_avx2(run, k, filled, current);
            lanes[filled] = k as u32;
            filled += 1;
            if filled == LANES {
                if let Some(ks) = pending {
                    self.steps_avx2(run, &ks, previous, out);
                }
                pending = Some(lanes);
                std::mem::swap(&mut current, &mut previous);
                filled = 0;
            }
        }
        if let Some(ks) = pending {
            self.steps_avx2(run, &ks, previous, out);
        }
        if filled > 0 {
            // The unused lanes hold an earlier batch's masks: stepped, never reported.
            self.steps_avx2(run, &lanes[..filled], current, out);
        }
    }

    /// Writes the masks of pattern `k` into lane `lane`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    #[inline]
    unsafe fn masks_avx2(&self, run: PatternRun<'_, u16>, k: usize, lane: usize, masks: &mut [u64]) {
        use std::arch::x86_64::*;
        let len = run.pattern_len(k);
        let tokens = run.tokens();
        let start = run.start(k);
        // Symbols past the pattern only set mask bits at positions >= len, which can never
        // reach the bits below len (additions carry upwards, `v - u` never borrows), and the
        // count ignores them. So whole blocks are read whenever they lie inside the run.
        let width = if len <= 32 { 32 } else { 64 };
        let mut padded = [0u16; MAX_PATTERN];
        let p = if start + width <= tokens.len() {
            tokens.as_ptr().add(start)
        } else {
            padded[..len].copy_from_slice(&tokens[start..start + len]);
            padded.as_ptr()
        };
        // vpacksswb packs within 128-bit halves; these pairs come out in symbol order.
        let ordered = |p: *const u16| {
            let a = _mm256_loadu_si256(p as *const __m256i);
            let b = _mm256_loadu_si256(p.add(16) as *const __m256i);
            (_mm256_permute2x128_si256::<0x20>(a, b), _mm256_permute2x128_si256::<0x31>(a, b))
        };
        let bits = |(lo, hi): (__m256i, __m256i), c: __m256i| {
            _mm256_movemask_epi8(_mm256_packs_epi16(_mm256_cmpeq_epi16(lo, c), _mm256_cmpeq_epi16(hi, c))) as u32 as u64
        };
        let out = masks.as_mut_ptr().add(lane);
        if width == 32 {
            let first = ordered(p);
            for (j, symbol) in self.broadcast.iter().enumerate() {
                let c = _mm256_loadu_si256(symbol.as_ptr() as *const __m256i);
                *out.add(j * LANES) = bits(first, c);
            }
        } else {
            let (first, second) = (ordered(p), ordered(p.add(32)));
            for (j, symbol) in self.broadcast.iter().enumerate() {
                let c = _mm256_loadu_si256(symbol.as_ptr() as *const __m256i);
                *out.add(j * LANES) = bits(first, c) | bits(second, c) << 32;
            }
        }
    }

    /// Steps the 4 lanes through the state and writes the LCS of the patterns `ks`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    #[inline]
    unsafe fn steps_avx2(&self, run: PatternRun<'_, u16>, ks: &[u32], masks: &[u64], out: &mut [u32]) {
        use std::arch::x86_64::*;
        let mut v = _mm256_set1_epi64x(-1);
        let base = masks.as_ptr();
        for &j in &self.steps {
            let m = _mm256_loadu_si256(base.add(j as usize * LANES) as *const __m256i);
            let u = _mm256_and_si256(v, m);
            v = _mm256_or_si256(_mm256_add_epi64(v, u), _mm256_sub_epi64(v, u));
        }
        let mut words = [0u64; LANES];
        _mm256_storeu_si256(words.as_mut_ptr() as *mut __m256i, v);
        for (&k, &word) in ks.iter().zip(&words) {
            let len = run.pattern_len(k as usize);
            let valid = if len == 64 { !0u64 } else { (1u64 << len) - 1 };
            out[k as usize] = (!word & valid).count_ones();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::lcs::LcsQuery;
    use crate::metrics::Scorer;
    use crate::metrics::SKIP;
    use crate::store::PatternStore;
    use crate::testing::{naive_lcs, Rng};

    /// Every kernel this CPU runs gives the scalar kernel's M and the naive DP's, over runs that
    /// mix every block width (1..=32, 33..=64), patterns past the transposed limit, empty ones,
    /// patterns ending where the run ends (padded reads), skipped ones, states of 0 to 150
    /// symbols (some with more distinct symbols than the kernel takes) and ids beyond u16.
    #[test]
    fn every_kernel_agrees_with_the_scalar_one_and_the_naive_dp() {
        let kernels: Vec<Kernel> = Kernel::available().collect();
        assert!(kernels.contains(&Kernel::Scalar));
        let mut rng = Rng::new(1515);
        for case in 0..200 {
            let alphabet = [2, 5, 20, 90, 400][case % 5];
            let mut store = PatternStore::new();
            let count = 1 + rng.below(70);
            for k in 0..count {
                let len = match rng.below(6) {
                    0 => rng.below(4),
                    1 => 28 + rng.below(8),
                    2 => 60 + rng.below(10),
                    3 => 64,
                    _ => rng.below(100),
                };
                let pattern: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
                store.push(&format!("p{k}"), &pattern);
            }
            let state_len = [0, 1, 5, 13, 40, 64, 65, 150][case % 8];
            let state: Vec<u32> = (0..state_len)
                .map(|_| if rng.below(9) == 0 { 70_000 + rng.below(3) as u32 } else { rng.below(alphabet) as u32 })
                .collect();
            let needed: Vec<u32> = (0..count).map(|_| if rng.below(6) == 0 { SKIP } else { 0 }).collect();
            let first = rng.below(count) as u32;
            let run = store.run(first, count - first as usize);
            let needed = &needed[first as usize..];
            let mut kept = Vec::new();
            crate::metrics::kept_indices(needed, &mut kept);
            for &kernel in &kernels {
                let query = LcsQuery::with_kernel(&state, kernel);
                let mut out = vec![u32::MAX - 1; run.len()];
                query.score_run(run, &kept, needed, &mut out, &mut query.new_scratch());
                for (k, &got) in out.iter().enumerate() {
                    let pattern = store.tokens(first + k as u32);
                    if needed[k] == SKIP {
                        assert_eq!(got, u32::MAX - 1, "{kernel:?} scored a skipped pattern");
                    } else {
                        let want = naive_lcs(&pattern, &state) as u32;
                        assert_eq!(got, want, "{kernel:?} case {case} pattern {pattern:?} state {state:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_reference_is_always_available() {
        assert!(Kernel::Scalar.supported());
        assert!(Kernel::selected().supported());
        assert!(Transposed::new(&[1, 2, 3], Kernel::Scalar).is_none());
        let many: Vec<u32> = (0..=MAX_STATE_SYMBOLS as u32).collect();
        assert!(Transposed::new(&many, Kernel::Avx2).is_none());
    }
}

/// `cargo test --release -- --ignored --nocapture kernel_cost`: ns per pattern of each kernel
/// on one cached chunk of KATO-shaped lengths (no memory traffic), for iterating on the kernels.
#[cfg(test)]
#[test]
#[ignore]
fn kernel_cost() {
    use crate::metrics::lcs::LcsQuery;
    use crate::metrics::Scorer;
    use crate::store::PatternStore;
    use crate::testing::Rng;
    let mut rng = Rng::new(3);
    for (shape, alphabet, lens, state_len) in [
        ("kato", 200, (6, 75), 13),
        ("kato64", 200, (6, 64), 13),
        ("kato32", 200, (6, 32), 13),
        ("chunks", 50_000, (5, 5), 5),
    ] {
        let mut store = PatternStore::new();
        for k in 0..4096 {
            let len = lens.0 + rng.below(lens.1 - lens.0 + 1);
            let p: Vec<u32> = (0..len).map(|_| (rng.below(alphabet) * rng.below(alphabet) / alphabet) as u32).collect();
            store.push(&format!("p{k}"), &p);
        }
        let state: Vec<u32> = (0..state_len).map(|_| rng.below(alphabet / 4) as u32).collect();
        let needed = vec![0u32; 4096];
        let kept: Vec<u32> = (0..4096).collect();
        for kernel in Kernel::available() {
            let q = LcsQuery::with_kernel(&state, kernel);
            let mut scratch = q.new_scratch();
            let mut out = vec![0u32; 4096];
            let mut best = f64::MAX;
            for _ in 0..30 {
                let t = std::time::Instant::now();
                for _ in 0..20 {
                    q.score_run(store.run(0, 4096), &kept, &needed, &mut out, &mut scratch);
                }
                best = best.min(t.elapsed().as_secs_f64() / 20.0 / 4096.0 * 1e9);
            }
            println!("{shape:7} {:7} {best:6.2} ns/pattern (checksum {})", kernel.name(), out.iter().sum::<u32>());
        }
    }
}
