//! The shipped kernel source run on the host (feature `kernel-emulation`: build.rs compiles
//! kernels/match.cu as C++ with kernels/host_emulation.h) with the launch tables of
//! [`super::plan`], compared with the CPU metrics — themselves checked against naive oracles
//! here and against Python's difflib and RapidFuzz in the Python suite.

use super::emulated::{emulate_difflib_count, emulate_key_histogram, emulate_lcs_count, emulate_select_matches};
use super::plan::{DifflibPlan, LcsPlan};
use super::{MAX_DIFFLIB_STATE, MAX_LCS_WORDS, NOT_SCORED, OVER_LIMIT};
use crate::metrics::{difflib, lcs, length_bound, ratio};
use crate::testing::Rng;

/// A device-layout store: concatenated tokens, offsets, live flags, and the thread-to-slot
/// order (shuffled here: results must not depend on it).
struct Store {
    tokens: Vec<u32>,
    offsets: Vec<u64>,
    live: Vec<u8>,
    order: Vec<u32>,
}

impl Store {
    fn random(rng: &mut Rng, patterns: usize, max_len: usize, alphabet: usize) -> Store {
        let mut store =
            Store { tokens: Vec::new(), offsets: vec![0], live: Vec::new(), order: (0..patterns as u32).collect() };
        for k in (1..patterns).rev() {
            store.order.swap(k, rng.below(k + 1));
        }
        for k in 0..patterns {
            // Some long patterns: nothing is truncated on the device either.
            let len = if k % 97 == 0 { 300 + rng.below(400) } else { rng.below(max_len + 1) };
            store.tokens.extend((0..len).map(|_| rng.below(alphabet) as u32));
            store.offsets.push(store.tokens.len() as u64);
            store.live.push(u8::from(rng.below(20) != 0));
        }
        store
    }

    fn pattern(&self, slot: usize) -> &[u32] {
        &self.tokens[self.offsets[slot] as usize..self.offsets[slot + 1] as usize]
    }
}

/// What the kernels must produce for one slot: the CPU count, or NOT_SCORED for removed slots
/// and slots the length bound excludes.
fn expected(store: &Store, slot: usize, state: &[u32], threshold: f64, count: impl Fn(&[u32]) -> usize) -> u32 {
    let p = store.pattern(slot);
    if store.live[slot] == 0 || length_bound(p.len(), state.len()) < threshold {
        NOT_SCORED
    } else {
        count(p) as u32
    }
}

fn random_state(rng: &mut Rng, alphabet: usize, long: bool) -> Vec<u32> {
    let len = if long { 180 + rng.below(77) } else { rng.below(70) };
    let mut state: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
    if rng.below(4) == 0 && !state.is_empty() {
        // A symbol unknown to the vocabulary (sentinel id above MAX_SYMBOL_ID).
        let at = rng.below(state.len());
        state[at] = u32::MAX - 3;
    }
    state
}

const THRESHOLDS: [f64; 4] = [0.0, 0.1, 0.4, 0.75];

#[test]
fn lcs_kernel_equals_cpu_metric() {
    let mut rng = Rng::new(21);
    let mut compared = 0usize;
    for round in 0..40 {
        let alphabet = [3, 12, 200, 5000][round % 4];
        let store = Store::random(&mut rng, 1500, 60, alphabet);
        let n = store.live.len() as u32;
        for q in 0..3 {
            let state = random_state(&mut rng, alphabet, q == 2);
            let plan = LcsPlan::new(&state).expect("states under 1024 symbols fit the kernel");
            let threshold = THRESHOLDS[(round + q) % 4];
            let (begin, end) = (rng.below(50) as u32, n);
            let mut counts = vec![0u32; end as usize];
            // SAFETY: every pointer covers the lengths the kernel reads for positions [begin, end).
            unsafe {
                emulate_lcs_count(
                    store.tokens.as_ptr(),
                    store.offsets.as_ptr(),
                    store.live.as_ptr(),
                    store.order.as_ptr(),
                    begin,
                    end,
                    plan.masks.as_ptr(),
                    plan.table_len,
                    plan.words,
                    plan.state_len,
                    threshold,
                    counts.as_mut_ptr(),
                    128,
                );
            }
            for (&got, &slot) in counts[begin as usize..end as usize].iter().zip(&store.order[begin as usize..]) {
                let slot = slot as usize;
                let want = expected(&store, slot, &state, threshold, |p| lcs::matches(p, &state));
                assert_eq!(got, want, "slot {slot} state {state:?}");
                compared += 1;
            }
        }
    }
    assert!(compared >= 100_000, "only {compared} cases");
}

#[test]
fn difflib_kernel_equals_cpu_metric() {
    let mut rng = Rng::new(22);
    let mut compared = 0usize;
    for round in 0..40 {
        let alphabet = [2, 6, 40, 3000][round % 4];
        let store = Store::random(&mut rng, 1400, 50, alphabet);
        let n = store.live.len() as u32;
        for q in 0..3 {
            let long = q == 2; // >= 200 symbols: autojunk's popular symbols matter
            let state = random_state(&mut rng, alphabet, long);
            for autojunk in [false, true] {
                if !autojunk && !long && q == 1 {
                    continue;
                }
                let plan = DifflibPlan::new(&state, autojunk).expect("states under 256 symbols fit the kernel");
                let threshold = THRESHOLDS[(round + q) % 4];
                let mut counts = vec![0u32; n as usize];
                // SAFETY: as above.
                unsafe {
                    emulate_difflib_count(
                        store.tokens.as_ptr(),
                        store.offsets.as_ptr(),
                        store.live.as_ptr(),
                        store.order.as_ptr(),
                        0,
                        n,
                        plan.b.as_ptr(),
                        plan.b.len() as u32,
                        plan.slot_of_id.as_ptr(),
                        plan.slot_of_id.len() as u32,
                        plan.pos_starts.as_ptr(),
                        plan.positions.as_ptr(),
                        threshold,
                        counts.as_mut_ptr(),
                        256,
                    );
                }
                for (k, &got) in counts.iter().enumerate() {
                    let slot = store.order[k] as usize;
                    let want = expected(&store, slot, &state, threshold, |p| difflib::matches(p, &state, autojunk));
                    assert_eq!(got, want, "slot {slot} autojunk {autojunk} state {state:?}");
                    compared += 1;
                }
            }
        }
    }
    assert!(compared >= 100_000, "only {compared} cases");
}

#[test]
fn select_matches_keeps_exactly_the_matches() {
    let mut rng = Rng::new(23);
    for round in 0..30 {
        let store = Store::random(&mut rng, 3000, 40, 10);
        let n = store.live.len() as u32;
        let state = random_state(&mut rng, 10, false);
        let plan = LcsPlan::new(&state).unwrap();
        let threshold = [0.0, 0.2, 0.5, 1.0][round % 4];
        let mut counts = vec![0u32; n as usize];
        let (mut out_slots, mut out_counts, mut out_len) = (vec![0u32; n as usize], vec![0u32; n as usize], 0u32);
        // SAFETY: as above; outputs have room for every slot.
        unsafe {
            emulate_lcs_count(
                store.tokens.as_ptr(),
                store.offsets.as_ptr(),
                store.live.as_ptr(),
                store.order.as_ptr(),
                0,
                n,
                plan.masks.as_ptr(),
                plan.table_len,
                plan.words,
                plan.state_len,
                threshold,
                counts.as_mut_ptr(),
                64,
            );
            emulate_select_matches(
                counts.as_ptr(),
                store.offsets.as_ptr(),
                store.order.as_ptr(),
                0,
                n,
                state.len() as u32,
                threshold,
                u64::MAX,
                out_slots.as_mut_ptr(),
                out_counts.as_mut_ptr(),
                &mut out_len,
                64,
            );
        }
        let mut got: Vec<(u32, u32)> = (0..out_len as usize).map(|k| (out_slots[k], out_counts[k])).collect();
        got.sort_unstable();
        let want: Vec<(u32, u32)> = (0..n as usize)
            .filter(|&slot| store.live[slot] == 1)
            .map(|slot| (slot as u32, lcs::matches(store.pattern(slot), &state) as u32))
            .filter(|&(slot, m)| ratio(m as usize, store.pattern(slot as usize).len() + state.len()) >= threshold)
            .collect();
        assert_eq!(got, want, "threshold {threshold}");
    }
}

/// `lcs_count` over every position of `store` with `plan`'s tables, `words` and `state_len`
/// overridable to launch what no plan would.
fn run_lcs(store: &Store, plan: &LcsPlan, words: u32, state_len: u32, threshold: f64) -> Vec<u32> {
    let n = store.live.len() as u32;
    let mut counts = vec![0u32; n as usize];
    // SAFETY: every pointer covers what the kernel reads for positions [0, n); an over-limit
    // launch reads no table (the guard stops first).
    unsafe {
        emulate_lcs_count(
            store.tokens.as_ptr(),
            store.offsets.as_ptr(),
            store.live.as_ptr(),
            store.order.as_ptr(),
            0,
            n,
            plan.masks.as_ptr(),
            plan.table_len,
            words,
            state_len,
            threshold,
            counts.as_mut_ptr(),
            256,
        );
    }
    counts
}

/// `difflib_count` over every position of `store` with `plan`'s tables, `lb` overridable.
fn run_difflib(store: &Store, plan: &DifflibPlan, lb: u32, threshold: f64) -> Vec<u32> {
    let n = store.live.len() as u32;
    let mut counts = vec![0u32; n as usize];
    // SAFETY: as in `run_lcs`.
    unsafe {
        emulate_difflib_count(
            store.tokens.as_ptr(),
            store.offsets.as_ptr(),
            store.live.as_ptr(),
            store.order.as_ptr(),
            0,
            n,
            plan.b.as_ptr(),
            lb,
            plan.slot_of_id.as_ptr(),
            plan.slot_of_id.len() as u32,
            plan.pos_starts.as_ptr(),
            plan.positions.as_ptr(),
            threshold,
            counts.as_mut_ptr(),
            256,
        );
    }
    counts
}

/// States exactly at each kernel's limit (and one below) are scored on the device, bit for bit
/// as on the CPU; one symbol more and the plans refuse them (the CPU scores those).
#[test]
fn kernels_at_their_limits_equal_the_cpu() {
    let mut rng = Rng::new(24);
    let lcs_max = 64 * MAX_LCS_WORDS;
    for (alphabet, len) in [(4, lcs_max), (60, lcs_max), (60, lcs_max - 1), (3000, lcs_max)] {
        let store = Store::random(&mut rng, 400, 1200, alphabet);
        let state: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
        let plan = LcsPlan::new(&state).expect("a state at the limit fits");
        assert_eq!(plan.words as usize, MAX_LCS_WORDS);
        for threshold in [0.0, 0.5] {
            let counts = run_lcs(&store, &plan, plan.words, plan.state_len, threshold);
            for (k, &got) in counts.iter().enumerate() {
                let slot = store.order[k] as usize;
                assert_eq!(got, expected(&store, slot, &state, threshold, |p| lcs::matches(p, &state)), "slot {slot}");
            }
        }
        let mut longer = state.clone();
        longer.push(1);
        assert_eq!(LcsPlan::new(&longer).is_none(), len == lcs_max);
    }
    for (alphabet, len) in
        [(2, MAX_DIFFLIB_STATE), (12, MAX_DIFFLIB_STATE), (12, MAX_DIFFLIB_STATE - 1), (500, MAX_DIFFLIB_STATE)]
    {
        let store = Store::random(&mut rng, 500, 400, alphabet);
        let state: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
        for autojunk in [false, true] {
            let plan = DifflibPlan::new(&state, autojunk).expect("a state at the limit fits");
            for threshold in [0.0, 0.5] {
                let counts = run_difflib(&store, &plan, plan.b.len() as u32, threshold);
                for (k, &got) in counts.iter().enumerate() {
                    let slot = store.order[k] as usize;
                    let want = expected(&store, slot, &state, threshold, |p| difflib::matches(p, &state, autojunk));
                    assert_eq!(got, want, "slot {slot} autojunk {autojunk}");
                }
            }
            let mut longer = state.clone();
            longer.push(1);
            assert_eq!(DifflibPlan::new(&longer, autojunk).is_none(), len == MAX_DIFFLIB_STATE);
        }
    }
}

/// A launch past a kernel's limits — what a host that disagreed with the kernels about them
/// would send — is refused by the kernel's guard: every position reads OVER_LIMIT, nothing is
/// written past a per-thread array, and the selection passes hand those positions to the host
/// ahead of every match, even under a top-0 cut.
#[test]
fn kernels_refuse_launches_past_their_limits() {
    let mut rng = Rng::new(25);
    let store = Store::random(&mut rng, 700, 60, 8);
    let n = store.live.len();
    let state: Vec<u32> = (0..64 * MAX_LCS_WORDS + 1).map(|_| rng.below(8) as u32).collect();
    // The tables a plan without a limit would build: 17 words.
    let words = state.len().div_ceil(64);
    let table_len = 8;
    let mut masks = vec![0u64; table_len * words];
    for (pos, &s) in state.iter().enumerate() {
        masks[s as usize * words + pos / 64] |= 1u64 << (pos % 64);
    }
    let plan = LcsPlan { masks, table_len: table_len as u32, words: words as u32, state_len: state.len() as u32 };
    let over = |counts: Vec<u32>| counts.iter().all(|&c| c == OVER_LIMIT);
    assert!(over(run_lcs(&store, &plan, words as u32, state.len() as u32, 0.0)));
    // Words that do not cover the state, or none.
    assert!(over(run_lcs(&store, &plan, 2, 129, 0.0)));
    assert!(over(run_lcs(&store, &plan, 0, 0, 0.0)));
    // At the limit the same tables (first 16 words' worth of state) are scored.
    let at_limit = LcsPlan::new(&state[..64 * MAX_LCS_WORDS]).unwrap();
    assert!(!run_lcs(&store, &at_limit, at_limit.words, at_limit.state_len, 0.0).contains(&OVER_LIMIT));

    let b: Vec<u32> = (0..MAX_DIFFLIB_STATE as u32 + 1).map(|_| rng.below(8) as u32).collect();
    let plan = DifflibPlan::new(&b[..MAX_DIFFLIB_STATE], false).unwrap();
    assert!(over(run_difflib(&store, &plan, b.len() as u32, 0.0)));
    assert!(!run_difflib(&store, &plan, MAX_DIFFLIB_STATE as u32, 0.0).contains(&OVER_LIMIT));

    // Selection: OVER_LIMIT positions always reach the host, with rank key 0.
    let mut counts = run_lcs(&store, &at_limit, at_limit.words, at_limit.state_len, 0.0);
    let refused = [3usize, 200, n - 1];
    for &k in &refused {
        counts[k] = OVER_LIMIT;
    }
    let state_len = at_limit.state_len;
    for max_key in [0, u64::MAX] {
        let (mut out_slots, mut out_counts, mut out_len) = (vec![0u32; n], vec![0u32; n], 0u32);
        // SAFETY: outputs have room for every position.
        unsafe {
            emulate_select_matches(
                counts.as_ptr(),
                store.offsets.as_ptr(),
                store.order.as_ptr(),
                0,
                n as u32,
                state_len,
                0.0,
                max_key,
                out_slots.as_mut_ptr(),
                out_counts.as_mut_ptr(),
                &mut out_len,
                64,
            );
        }
        let got: Vec<u32> = out_slots[..out_len as usize].to_vec();
        let refused_slots: Vec<u32> = refused.iter().map(|&k| store.order[k]).collect();
        assert!(refused_slots.iter().all(|s| got.contains(s)), "max_key {max_key:#x}");
        let over_limit = out_counts[..out_len as usize].iter().filter(|&&m| m == OVER_LIMIT).count();
        assert_eq!(over_limit, refused.len());
        if max_key == 0 {
            assert_eq!(out_len as usize, refused.len());
        }
    }
    let mut histogram = [0u32; 256];
    // SAFETY: the histogram holds 256 counters.
    unsafe {
        emulate_key_histogram(
            counts.as_ptr(),
            store.offsets.as_ptr(),
            store.order.as_ptr(),
            0,
            n as u32,
            state_len,
            0.0,
            0,
            0,
            56,
            histogram.as_mut_ptr(),
            64,
        );
    }
    assert_eq!(histogram[0] as usize, refused.len(), "key 0 is the top byte 0");
}

#[test]
fn plans_send_overlong_states_to_the_cpu() {
    assert!(LcsPlan::new(&vec![1; 64 * super::MAX_LCS_WORDS]).is_some());
    assert!(LcsPlan::new(&vec![1; 64 * super::MAX_LCS_WORDS + 1]).is_none());
    assert!(DifflibPlan::new(&vec![1; super::MAX_DIFFLIB_STATE], false).is_some());
    assert!(DifflibPlan::new(&vec![1; super::MAX_DIFFLIB_STATE + 1], false).is_none());
}

mod device_tier {
    //! The whole device tier (mirroring, capacity, removals, compaction, failures) on the
    //! emulated backend, against a CPU-only matcher fed the same operations.

    use crate::cuda::emulated::EmulatedBackend;
    use crate::cuda::tier::{DeviceTier, TierLimits};
    use crate::testing::Rng;
    use crate::{KatoError, Matcher, Metric};

    const LIMITS: TierLimits =
        TierLimits { memory_usage_fraction: 0.6, growth_buffer_fraction: 0.2, force_max_patterns: None };

    fn with_device(metric: Metric, backend: EmulatedBackend, limits: TierLimits, fallback: bool) -> Matcher {
        let mut m = Matcher::new(metric);
        m.attach_device(Box::new(DeviceTier::new(backend, limits).unwrap()), fallback);
        m
    }

    fn results(m: &Matcher, state: &[u32], threshold: f64, limit: Option<usize>) -> Vec<(String, f64)> {
        m.query(state, threshold, limit).unwrap().iter().map(|h| (m.name(h.slot).to_string(), h.similarity)).collect()
    }

    fn assert_same(gpu: &Matcher, cpu: &Matcher, rng: &mut Rng, alphabet: usize, long_states: bool) {
        for q in 0..4 {
            let len = if long_states && q == 3 {
                1100 + rng.below(200)
            } else if q == 2 {
                65 + rng.below(150)
            } else {
                rng.below(40)
            };
            let state: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
            for (threshold, limit) in [(0.0, None), (0.3, Some(10)), (0.6, None)] {
                assert_eq!(results(gpu, &state, threshold, limit), results(cpu, &state, threshold, limit));
            }
        }
    }

    fn batch(rng: &mut Rng, first: usize, count: usize, alphabet: usize) -> (Vec<String>, Vec<u32>, Vec<u64>) {
        let names: Vec<String> =
            (first..first + count).map(|k| format!("PTRN|{:08x}", k.wrapping_mul(2654435761) % (1 << 32))).collect();
        let (mut tokens, mut offsets) = (Vec::new(), vec![0u64]);
        for _ in 0..count {
            let len = rng.below(30);
            tokens.extend((0..len).map(|_| rng.below(alphabet) as u32));
            offsets.push(tokens.len() as u64);
        }
        (names, tokens, offsets)
    }

    fn load(ms: &mut [&mut Matcher], rng: &mut Rng, first: usize, count: usize, alphabet: usize) -> Vec<String> {
        let (names, tokens, offsets) = batch(rng, first, count, alphabet);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for m in ms.iter_mut() {
            m.insert_batch(&refs, &tokens, &offsets).unwrap();
        }
        names
    }

    #[test]
    fn device_matcher_equals_cpu_matcher_through_every_operation() {
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }, Metric::Difflib { autojunk: true }] {
            let mut rng = Rng::new(31);
            let alphabet = 12;
            let mut gpu = with_device(metric, EmulatedBackend::new(1 << 30), LIMITS, true);
            let mut cpu = Matcher::new(metric);
            let first = load(&mut [&mut gpu, &mut cpu], &mut rng, 0, 6000, alphabet);
            assert_same(&gpu, &cpu, &mut rng, alphabet, false); // all recent: CPU only
            gpu.promote();
            cpu.promote();
            assert_eq!(gpu.device_status().capacity.unwrap().mirrored_patterns, 6000);
            assert_same(&gpu, &cpu, &mut rng, alphabet, true);
            let recent = load(&mut [&mut gpu, &mut cpu], &mut rng, 6000, 700, alphabet);
            for name in first.iter().step_by(3).chain(recent.iter().step_by(5)) {
                assert!(gpu.remove(name) && cpu.remove(name));
            }
            assert_same(&gpu, &cpu, &mut rng, alphabet, false);
            // Removed slots stay mirrored until a compaction, but are not counted as live.
            let info = gpu.device_status().capacity.unwrap();
            assert_eq!((info.mirrored_patterns, info.live_mirrored_patterns), (6000, 4000));
            assert_eq!(info.live_mirrored_patterns, gpu.tiers().bulk);
            // Enough removals to compact: slots move and the device is mirrored again.
            for name in first.iter().filter(|n| n.as_bytes()[12] % 4 != 0) {
                gpu.remove(name);
                cpu.remove(name);
            }
            gpu.promote();
            cpu.promote();
            assert_same(&gpu, &cpu, &mut rng, alphabet, true);
            let status = gpu.device_status();
            assert!(status.active && status.gpu_queries > 0 && status.long_state_cpu_queries > 0, "{status:?}");
            let info = status.capacity.unwrap();
            assert!(info.mirrored_patterns >= gpu.tiers().bulk && info.overflow_patterns == 0, "{info:?}");
            assert_eq!(info.live_mirrored_patterns, gpu.len());
            gpu.clear();
            cpu.clear();
            load(&mut [&mut gpu, &mut cpu], &mut rng, 9000, 500, alphabet);
            gpu.promote();
            cpu.promote();
            assert_same(&gpu, &cpu, &mut rng, alphabet, false);
            assert!(gpu.device_status().active);
        }
    }

    /// With a limit, the device keeps exactly the matches at least as similar as the k-th best
    /// (the best k and their ties), found by the radix select over rank keys.
    #[test]
    fn device_top_k_keeps_the_best_k_and_their_ties() {
        use crate::metrics::ratio;
        use crate::store::PatternStore;
        let mut rng = Rng::new(34);
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }] {
            let mut store = PatternStore::new();
            for k in 0..5000 {
                let len = rng.below(25);
                let tokens: Vec<u32> = (0..len).map(|_| rng.below(9) as u32).collect();
                store.push(&format!("P{k}"), &tokens);
            }
            let mut tier = DeviceTier::new(EmulatedBackend::new(1 << 30), LIMITS).unwrap();
            tier.sync(&store, store.slots()).unwrap();
            for q in 0..6 {
                let state: Vec<u32> = (0..rng.below(20)).map(|_| rng.below(9) as u32).collect();
                let threshold = [0.0, 0.2, 0.5][q % 3];
                let sim = |&(slot, m): &(u32, u32)| ratio(m as usize, store.len_of(slot) + state.len());
                let mut all = tier.query(metric, &state, threshold, None).unwrap().unwrap();
                all.sort_unstable();
                let mut sims: Vec<f64> = all.iter().map(sim).collect();
                sims.sort_by(|a, b| b.total_cmp(a));
                for k in [1, 3, 50, 700, 4999, 100_000] {
                    let mut top = tier.query(metric, &state, threshold, Some(k)).unwrap().unwrap();
                    top.sort_unstable();
                    let want: Vec<(u32, u32)> = match sims.get(k - 1) {
                        Some(&kth) => all.iter().copied().filter(|p| sim(p) >= kth).collect(),
                        None => all.clone(),
                    };
                    assert_eq!(top, want, "{metric:?} k={k} threshold={threshold}");
                }
                assert_eq!(tier.query(metric, &state, threshold, Some(0)).unwrap().unwrap(), vec![]);
            }
        }
    }

    /// Through the whole tier: states at each limit are answered by the device, bit for bit as
    /// the CPU; one symbol past it, by the CPU (counted); and a tier whose launches exceed the
    /// kernels' limits (a host that disagrees with them) gets the kernels' refusal, and the query
    /// is answered exactly by the CPU instead of from out-of-bounds writes.
    #[test]
    fn states_at_and_past_the_limits_through_the_tier() {
        use crate::cuda::{MAX_DIFFLIB_STATE, MAX_LCS_WORDS};
        let mut rng = Rng::new(35);
        let alphabet = 10;
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }, Metric::Difflib { autojunk: true }] {
            let max = match metric {
                Metric::Lcs => 64 * MAX_LCS_WORDS,
                Metric::Difflib { .. } => MAX_DIFFLIB_STATE,
            };
            for over_limit_launches in [false, true] {
                let mut backend = EmulatedBackend::new(1 << 30);
                backend.over_limit_launches = over_limit_launches;
                let mut gpu = with_device(metric, backend, LIMITS, false);
                let mut cpu = Matcher::new(metric);
                load(&mut [&mut gpu, &mut cpu], &mut rng, 0, 1500, alphabet);
                gpu.promote();
                cpu.promote();
                for len in [max - 1, max, max + 1] {
                    let state: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
                    let before = gpu.device_status();
                    for (threshold, limit) in [(0.0, None), (0.2, Some(7))] {
                        assert_eq!(results(&gpu, &state, threshold, limit), results(&cpu, &state, threshold, limit));
                    }
                    let after = gpu.device_status();
                    let on_device = len <= max && !over_limit_launches;
                    assert_eq!(
                        after.gpu_queries - before.gpu_queries,
                        if on_device { 2 } else { 0 },
                        "{metric:?} {len}"
                    );
                    assert_eq!(
                        after.long_state_cpu_queries - before.long_state_cpu_queries,
                        if on_device { 0 } else { 2 }
                    );
                    assert!(after.active && after.fallbacks == 0);
                }
            }
        }
    }

    #[test]
    fn patterns_beyond_device_capacity_are_scored_on_the_cpu() {
        let mut rng = Rng::new(32);
        for (backend, limits) in [
            (EmulatedBackend::new(1 << 30), TierLimits { force_max_patterns: Some(2500), ..LIMITS }),
            (EmulatedBackend::new(120_000), LIMITS), // a budget far below the data
        ] {
            let mut gpu = with_device(Metric::Lcs, backend, limits, true);
            let mut cpu = Matcher::new(Metric::Lcs);
            load(&mut [&mut gpu, &mut cpu], &mut rng, 0, 4000, 9);
            gpu.promote();
            cpu.promote();
            let info = gpu.device_status().capacity.unwrap();
            assert!(
                info.mirrored_patterns < 4000 && info.overflow_patterns == 4000 - info.mirrored_patterns,
                "{info:?}"
            );
            assert!(info.used_bytes <= info.budget_bytes.max(1 << 30));
            assert_same(&gpu, &cpu, &mut rng, 9, false);
        }
    }

    #[test]
    fn a_failed_launch_falls_back_to_the_cpu_or_reports() {
        let mut rng = Rng::new(33);
        for fallback in [true, false] {
            let mut backend = EmulatedBackend::new(1 << 30);
            backend.launches_before_failure = Some(4); // two queries succeed, the third fails
            let mut gpu = with_device(Metric::Difflib { autojunk: false }, backend, LIMITS, fallback);
            let mut cpu = Matcher::new(Metric::Difflib { autojunk: false });
            load(&mut [&mut gpu, &mut cpu], &mut rng, 0, 3000, 7);
            gpu.promote();
            cpu.promote();
            let state: Vec<u32> = (0..12).map(|_| rng.below(7) as u32).collect();
            for _ in 0..2 {
                assert_eq!(results(&gpu, &state, 0.2, None), results(&cpu, &state, 0.2, None));
            }
            if fallback {
                for _ in 0..3 {
                    assert_eq!(results(&gpu, &state, 0.2, None), results(&cpu, &state, 0.2, None));
                }
            } else {
                for _ in 0..2 {
                    assert!(matches!(gpu.query(&state, 0.2, None), Err(KatoError::DeviceLost(_))));
                }
            }
            let status = gpu.device_status();
            assert!(!status.active && status.fallbacks == 1 && status.gpu_queries == 2, "{status:?}");
            assert!(status.last_error.unwrap().contains("simulated launch failure"));
            // Nothing learned is lost: the patterns are all still there and still answer (CPU).
            assert_eq!(gpu.len(), 3000);
        }
    }
}
