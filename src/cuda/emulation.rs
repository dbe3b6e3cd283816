//! The shipped kernel source run on the host (feature `kernel-emulation`: build.rs compiles
//! kernels/match.cu as C++ with kernels/host_emulation.h, whose launches run each block's threads
//! as fibers that meet at `__syncthreads()`), driven through the device tier with the tables of
//! [`super::plan`], and compared with the CPU metrics — themselves checked against naive oracles
//! here and against Python's difflib and RapidFuzz in the Python suite.

use super::emulated::{EmulatedBackend, Schedule};
use super::limits::{CONTROL_WORDS, HISTOGRAM_CLASSES, MAX_BATCH_STATES, MAX_DIFFLIB_STATE, MAX_LCS_WORDS};
use super::tier::{DeviceTier, TierLimits, QUERY_STREAMS};
use crate::metrics::{difflib, lcs, Metric, SimilarityRule};
use crate::ordering::{Candidate, QueryPlan};
use crate::store::PatternStore;
use crate::testing::Rng;

const LIMITS: TierLimits =
    TierLimits { memory_usage_fraction: 0.6, growth_buffer_fraction: 0.2, force_max_patterns: None };

/// A store of `patterns` random patterns (every 97th one long: nothing is truncated on the
/// device either), some removed, symbols `first_id ..= first_id + alphabet - 1`.
fn random_store(rng: &mut Rng, patterns: usize, max_len: usize, alphabet: usize, first_id: u32) -> PatternStore {
    let mut store = PatternStore::new();
    for k in 0..patterns {
        let len = if k % 97 == 0 { 300 + rng.below(400) } else { rng.below(max_len + 1) };
        let tokens: Vec<u32> = (0..len).map(|_| first_id + rng.below(alphabet) as u32).collect();
        let slot = store.push(&format!("P{k}"), &tokens);
        if rng.below(20) == 0 {
            store.kill(slot);
        }
    }
    store
}

fn cpu_matches(metric: Metric, pattern: &[u32], state: &[u32]) -> usize {
    match metric {
        Metric::Lcs => lcs::matches(pattern, state),
        Metric::Difflib { autojunk } => difflib::matches(pattern, state, autojunk),
    }
}

/// What the device must return, from the CPU metric and the same plan: every live pattern's
/// candidate; with `limit`, only the classes up to the one holding the `limit`-th best (all of
/// them when that class is past the histogram's own counters).
fn expected(
    store: &PatternStore,
    metric: Metric,
    state: &[u32],
    plan: &QueryPlan,
    limit: Option<usize>,
) -> Vec<(u32, u32)> {
    let mut all: Vec<(u32, u32)> = (0..store.slots() as u32)
        .filter(|&slot| store.is_live(slot))
        .filter_map(|slot| {
            let row = plan.row(store.len_of(slot));
            let m = cpu_matches(metric, &store.tokens(slot), state) as u32;
            (row.min_matches != crate::ordering::LengthRow::NONE && m >= row.min_matches)
                .then(|| plan.candidate(row, m, slot))
                .map(|c| (c.slot, c.value))
        })
        .collect();
    if let (Some(k), true) = (limit, plan.has_classes()) {
        let mut classes: Vec<u32> = all.iter().map(|&(_, c)| c).collect();
        classes.sort_unstable();
        if k == 0 {
            return Vec::new();
        }
        if let Some(&kth) = classes.get(k - 1) {
            if kth < HISTOGRAM_CLASSES {
                all.retain(|&(_, c)| c <= kth);
            }
        }
    }
    all.sort_unstable();
    all
}

fn sorted(candidates: Vec<Candidate>) -> Vec<(u32, u32)> {
    let mut pairs: Vec<(u32, u32)> = candidates.into_iter().map(|c| (c.slot, c.value)).collect();
    pairs.sort_unstable();
    pairs
}

fn tier_over(store: &PatternStore, backend: EmulatedBackend) -> DeviceTier<EmulatedBackend> {
    let mut tier = DeviceTier::new(backend, LIMITS).unwrap();
    assert_eq!(tier.sync(store, store.slots()).unwrap(), store.slots());
    tier
}

fn plan_for(store: &PatternStore, state: &[u32], threshold: f64) -> QueryPlan {
    QueryPlan::with_rule(state.len(), threshold, store.lengths(), SimilarityRule::Exact)
}

/// One query through the tier (count kernel, histogram, cut-off, selection), against the CPU.
fn assert_query(
    tier: &mut DeviceTier<EmulatedBackend>,
    store: &PatternStore,
    metric: Metric,
    state: &[u32],
    threshold: f64,
    limit: Option<usize>,
) {
    let plan = plan_for(store, state, threshold);
    let got = tier.query(metric, state, &plan, limit, tier.mirrored()).unwrap().expect("the state fits the kernels");
    assert_eq!(
        sorted(got),
        expected(store, metric, state, &plan, limit),
        "{metric:?} state of {} threshold {threshold} limit {limit:?}",
        state.len()
    );
}

const METRICS: [Metric; 3] = [Metric::Lcs, Metric::Difflib { autojunk: false }, Metric::Difflib { autojunk: true }];

/// States of every size class the kernels distinguish (the 32-bit path, 1–16 words, each
/// difflib bucket), at and around each boundary, with symbols the patterns share.
#[test]
fn every_kernel_variant_equals_the_cpu() {
    let mut rng = Rng::new(21);
    let store = random_store(&mut rng, 2500, 60, 12, 0);
    let mut tier = tier_over(&store, EmulatedBackend::new(1 << 30));
    for metric in METRICS {
        let lens: &[usize] = match metric {
            Metric::Lcs => &[0, 1, 31, 32, 33, 64, 65, 128, 129, 257, 512, 640, 1023, 1024],
            Metric::Difflib { .. } => &[0, 1, 32, 33, 64, 65, 128, 129, 200, 256],
        };
        for &len in lens {
            // Fewer symbols than the patterns' alphabet too (absent ones), and one unknown id.
            let mut state: Vec<u32> = (0..len).map(|_| rng.below(14) as u32).collect();
            if len > 3 {
                state[len / 2] = u32::MAX - 3;
            }
            for (threshold, limit) in [(0.0, None), (0.25, Some(40)), (0.5, Some(1))] {
                assert_query(&mut tier, &store, metric, &state, threshold, limit);
            }
        }
    }
}

/// autojunk's popular symbols (states of 200–256 with heavy repeats) and the LCS mask table past
/// the shared-memory budget (1,024 distinct symbols: its rows are read from global memory).
#[test]
fn popular_symbols_and_large_tables() {
    let mut rng = Rng::new(22);
    let store = random_store(&mut rng, 1500, 50, 6, 0);
    let mut tier = tier_over(&store, EmulatedBackend::new(1 << 30));
    for len in [200, 201, 230, 256] {
        let state: Vec<u32> = (0..len).map(|k| if k % 3 == 0 { 1 } else { rng.below(6) as u32 }).collect();
        for metric in [Metric::Difflib { autojunk: true }, Metric::Difflib { autojunk: false }] {
            assert_query(&mut tier, &store, metric, &state, 0.1, None);
            assert_query(&mut tier, &store, metric, &state, 0.0, Some(25));
        }
    }
    let distinct: Vec<u32> = (0..1024).map(|k| (k * 37) % 1024).collect();
    let tables = super::plan::LcsTables::new(&distinct).unwrap();
    assert!(!tables.masks_in_shared, "1,024 distinct symbols over 16 words exceed the shared budget");
    assert_query(&mut tier, &store, Metric::Lcs, &distinct, 0.0, Some(100));
}

/// Symbol ids of 65,536 and up (the store turns u32 and the device re-mirrors as u32) and around
/// a million; threshold 0 with no limit returns every live pattern.
#[test]
fn wide_ids_and_threshold_zero() {
    let mut rng = Rng::new(23);
    let mut store = random_store(&mut rng, 1200, 40, 9, 65_530);
    assert_eq!(store.token_width(), 4);
    let mut tier = tier_over(&store, EmulatedBackend::new(1 << 30));
    for first_id in [65_530u32, 999_990] {
        for metric in METRICS {
            let state: Vec<u32> = (0..40).map(|_| first_id + rng.below(9) as u32).collect();
            assert_query(&mut tier, &store, metric, &state, 0.0, None);
            assert_query(&mut tier, &store, metric, &state, 0.3, Some(10));
        }
        for k in 0..300 {
            let tokens: Vec<u32> = (0..rng.below(40)).map(|_| 999_990 + rng.below(9) as u32).collect();
            store.push(&format!("W{first_id}-{k}"), &tokens);
        }
        tier.sync(&store, store.slots()).unwrap();
    }
    let plan = plan_for(&store, &[999_991], 0.0);
    let everything = tier.query(Metric::Lcs, &[999_991], &plan, None, tier.mirrored()).unwrap().unwrap();
    assert_eq!(everything.len(), (0..store.slots() as u32).filter(|&s| store.is_live(s)).count());
}

/// A narrow store that turns wide after it was mirrored is mirrored again, as u32.
#[test]
fn a_store_that_widens_is_mirrored_again() {
    let mut rng = Rng::new(24);
    let mut store = random_store(&mut rng, 700, 30, 50, 0);
    let mut tier = tier_over(&store, EmulatedBackend::new(1 << 30));
    assert_eq!(store.token_width(), 2);
    store.push("wide", &[70_000, 1, 2]);
    tier.sync(&store, store.slots()).unwrap();
    assert_eq!(tier.mirrored(), store.slots());
    for metric in METRICS {
        assert_query(&mut tier, &store, metric, &[70_000, 1, 2, 3, 4], 0.2, None);
    }
}

/// Removals (the live byte) and a compaction (slots renumbered, mirrored again from slot 0).
#[test]
fn removals_and_compaction() {
    let mut rng = Rng::new(25);
    let mut store = random_store(&mut rng, 3000, 30, 8, 0);
    let mut tier = tier_over(&store, EmulatedBackend::new(1 << 30));
    for slot in (0..3000).step_by(3) {
        if store.is_live(slot) {
            store.kill(slot);
            tier.kill(slot as usize).unwrap();
        }
    }
    let state: Vec<u32> = (0..20).map(|_| rng.below(8) as u32).collect();
    for metric in METRICS {
        assert_query(&mut tier, &store, metric, &state, 0.2, Some(30));
    }
    store.compact();
    tier.reset();
    tier.sync(&store, store.slots()).unwrap();
    for metric in METRICS {
        assert_query(&mut tier, &store, metric, &state, 0.2, Some(30));
        assert_query(&mut tier, &store, metric, &state, 0.0, None);
    }
}

/// Top-k over many classes: a limit whose k-th best class lies past the histogram's own
/// counters keeps every class, and block sizes and histogram grids do not change the answer.
#[test]
fn top_k_across_block_sizes_and_overflowing_classes() {
    let mut rng = Rng::new(26);
    // Lengths up to 900: thousands of (M, P) classes.
    let mut store = PatternStore::new();
    for k in 0..3000 {
        let tokens: Vec<u32> = (0..rng.below(900)).map(|_| rng.below(30) as u32).collect();
        store.push(&format!("L{k}"), &tokens);
    }
    for (block_dim, grid) in [(32, 1), (96, 2), (1024, 5)] {
        let mut backend = EmulatedBackend::new(1 << 30);
        (backend.block_dim, backend.histogram_grid) = (block_dim, grid);
        let mut tier = tier_over(&store, backend);
        let state: Vec<u32> = (0..300).map(|_| rng.below(30) as u32).collect();
        let plan = plan_for(&store, &state, 0.0);
        assert!(plan.class_count() > HISTOGRAM_CLASSES as usize, "{} classes", plan.class_count());
        for k in [1, 7, 100, 2999, 3000, 5000] {
            assert_query(&mut tier, &store, Metric::Lcs, &state, 0.0, Some(k));
        }
    }
}

/// A query scores the slots mirrored when it started: an earlier upload's boundary gives only
/// those slots; a slot count that was never a boundary is left to the CPU.
#[test]
fn a_query_scores_the_prefix_it_names() {
    let mut rng = Rng::new(28);
    let mut store = random_store(&mut rng, 1000, 30, 8, 0);
    let mut tier = tier_over(&store, EmulatedBackend::new(1 << 30));
    for k in 0..500 {
        let tokens: Vec<u32> = (0..rng.below(30)).map(|_| rng.below(8) as u32).collect();
        store.push(&format!("late{k}"), &tokens);
    }
    tier.sync(&store, store.slots()).unwrap();
    let state: Vec<u32> = (0..15).map(|_| rng.below(8) as u32).collect();
    let plan = plan_for(&store, &state, 0.2);
    let first = sorted(tier.query(Metric::Lcs, &state, &plan, None, 1000).unwrap().unwrap());
    let all = expected(&store, Metric::Lcs, &state, &plan, None);
    assert_eq!(first, all.iter().copied().filter(|&(slot, _)| slot < 1000).collect::<Vec<_>>());
    assert_eq!(sorted(tier.query(Metric::Lcs, &state, &plan, None, 1500).unwrap().unwrap()), all);
    assert!(tier.query(Metric::Lcs, &state, &plan, None, 1200).unwrap().is_none());
}

/// Queries from several threads run on the device at once (each on its own stream and scratch):
/// the backend holds every query before its results until all of them are inside, which would
/// time out if the tier let one query in at a time; and each answer is still the CPU's.
#[test]
fn queries_from_several_threads_overlap() {
    use super::tier::QUERY_STREAMS;
    let mut rng = Rng::new(29);
    let store = random_store(&mut rng, 2000, 30, 9, 0);
    let mut backend = EmulatedBackend::new(1 << 30);
    backend.meet = Some(QUERY_STREAMS);
    let tier = tier_over(&store, backend);
    let states: Vec<Vec<u32>> =
        (0..QUERY_STREAMS).map(|k| (0..10 + 7 * k).map(|_| rng.below(9) as u32).collect()).collect();
    std::thread::scope(|scope| {
        for (k, state) in states.iter().enumerate() {
            let (tier, store) = (&tier, &store);
            scope.spawn(move || {
                let metric = METRICS[k % METRICS.len()];
                let limit = [None, Some(5)][k % 2];
                let plan = plan_for(store, state, 0.2);
                let got = tier.query(metric, state, &plan, limit, tier.mirrored()).expect("queries met").unwrap();
                assert_eq!(sorted(got), expected(store, metric, state, &plan, limit));
            });
        }
    });
}

/// Each `__syncthreads()` of the kernel source, on its own line.
fn barrier_lines() -> Vec<u32> {
    let source = include_str!("../../kernels/match.cu");
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with("__syncthreads();"))
        .map(|(k, _)| k as u32 + 1)
        .collect()
}

/// Every barrier in the kernels is needed, and the emulation proves it: with any one of them
/// removed (the kernel made racy), some query returns a wrong answer or the emulation reports
/// divergence, in the order threads run first to last or last to first. With all barriers in
/// place both orders give the CPU's answer.
#[test]
fn removing_any_barrier_is_caught() {
    let lines = barrier_lines();
    assert!(lines.len() >= 7, "barriers found: {lines:?}");
    let mut rng = Rng::new(27);
    let store = random_store(&mut rng, 900, 40, 10, 0);
    let states: Vec<Vec<u32>> =
        [5usize, 40, 90, 200].iter().map(|&n| (0..n).map(|_| rng.below(12) as u32).collect()).collect();
    let caught = |schedule: Schedule| -> bool {
        let mut backend = EmulatedBackend::new(1 << 30);
        backend.schedule = schedule;
        let tier = tier_over(&store, backend);
        for metric in METRICS {
            for state in &states {
                for limit in [Some(3), Some(60), None] {
                    let plan = plan_for(&store, state, 0.1);
                    match tier.query(metric, state, &plan, limit, tier.mirrored()) {
                        Ok(Some(got)) if sorted(got.clone()) == expected(&store, metric, state, &plan, limit) => {}
                        _ => return true,
                    }
                }
            }
        }
        false
    };
    for reverse in [false, true] {
        assert!(
            !caught(Schedule { skipped_barrier_line: None, reverse }),
            "the correct kernels fail (reverse {reverse})"
        );
    }
    for line in lines {
        let found =
            [false, true].into_iter().any(|reverse| caught(Schedule { skipped_barrier_line: Some(line), reverse }));
        assert!(found, "the barrier at kernels/match.cu:{line} can be removed without any test noticing");
    }
}

/// Many states in one call: each answer equals that state's own (and the CPU's); states that
/// need one kernel share its launches, [`MAX_BATCH_STATES`] at most a launch; a state too long
/// for the kernels gets `None` without holding the others back.
#[test]
fn a_batch_equals_each_query_alone() {
    let mut rng = Rng::new(41);
    let store = random_store(&mut rng, 1800, 50, 11, 0);
    for metric in METRICS {
        let tier = tier_over(&store, EmulatedBackend::new(1 << 30));
        let too_long = match metric {
            Metric::Lcs => 64 * MAX_LCS_WORDS + 1,
            Metric::Difflib { .. } => MAX_DIFFLIB_STATE + 1,
        };
        // 20 states of 3-20 symbols (one kernel variant), a few longer ones, one too long.
        let lens: Vec<usize> = (0..20).map(|_| 3 + rng.below(18)).chain([40, 70, 45, 150, too_long, 12]).collect();
        let states: Vec<Vec<u32>> = lens.iter().map(|&n| (0..n).map(|_| rng.below(13) as u32).collect()).collect();
        for (threshold, limit) in [(0.0, None), (0.2, Some(5)), (0.4, Some(100)), (0.1, Some(0))] {
            let plans: Vec<QueryPlan> = states.iter().map(|s| plan_for(&store, s, threshold)).collect();
            let queries: Vec<(&[u32], &QueryPlan)> = states.iter().zip(&plans).map(|(s, p)| (&s[..], p)).collect();
            tier.backend().count_launches.lock().unwrap().clear();
            let answers = tier.query_batch(metric, &queries, limit, tier.mirrored()).unwrap();
            let launches = std::mem::take(&mut *tier.backend().count_launches.lock().unwrap());
            assert_eq!(answers.len(), states.len());
            for ((state, plan), answer) in states.iter().zip(&plans).zip(answers) {
                if state.len() == too_long {
                    assert!(answer.is_none(), "{metric:?}: a state past the kernels' limits");
                    continue;
                }
                let got = sorted(answer.expect("the state fits the kernels"));
                assert_eq!(got, expected(&store, metric, state, plan, limit), "{metric:?} {} {limit:?}", state.len());
                if limit != Some(0) {
                    let alone = tier.query(metric, state, plan, limit, tier.mirrored()).unwrap().unwrap();
                    assert_eq!(sorted(alone), got);
                }
            }
            if limit == Some(0) {
                assert!(launches.is_empty());
                continue;
            }
            // Every fitting state in exactly one launch, several per launch where they share a kernel.
            assert_eq!(launches.iter().sum::<u32>() as usize, states.len() - 1, "{launches:?}");
            assert!(launches.iter().all(|&n| n as usize <= MAX_BATCH_STATES), "{launches:?}");
            assert!(launches.iter().any(|&n| n > 1), "{metric:?}: no launch held several states: {launches:?}");
        }
    }
}

/// A budget with room for one state per query stream and little more: batches get narrower
/// (down to one state a launch) and stay exact, and the tier keeps within its budget; a later
/// growth of the mirror frees what the batches took.
#[test]
fn batches_narrow_to_the_budget() {
    let mut rng = Rng::new(43);
    let store = random_store(&mut rng, 1200, 30, 9, 0);
    let mirror = tier_over(&store, EmulatedBackend::new(1 << 30)).capacity_info();
    // A state's scratch: a class and two outputs per position, and its control block.
    let one_state = 12 * mirror.capacity_patterns as u64 + 4 * CONTROL_WORDS as u64;
    let budget_for = |states: u64| {
        ((mirror.used_bytes + states * one_state + (64 << 10)) as f64 / LIMITS.memory_usage_fraction) as u64
    };
    for free in [1 << 30, budget_for(QUERY_STREAMS as u64 + 4), budget_for(QUERY_STREAMS as u64)] {
        let tier = tier_over(&store, EmulatedBackend::new(free));
        let states: Vec<Vec<u32>> =
            (0..12).map(|_| (0..1 + rng.below(20)).map(|_| rng.below(10) as u32).collect()).collect();
        let plans: Vec<QueryPlan> = states.iter().map(|s| plan_for(&store, s, 0.2)).collect();
        let queries: Vec<(&[u32], &QueryPlan)> = states.iter().zip(&plans).map(|(s, p)| (&s[..], p)).collect();
        let answers = tier.query_batch(Metric::Lcs, &queries, Some(10), tier.mirrored()).unwrap();
        for ((state, plan), answer) in states.iter().zip(&plans).zip(answers) {
            assert_eq!(sorted(answer.unwrap()), expected(&store, Metric::Lcs, state, plan, Some(10)));
        }
        let info = tier.capacity_info();
        assert!(info.used_bytes <= info.budget_bytes, "{info:?}");
        let widest = tier.backend().count_launches.lock().unwrap().iter().copied().max().unwrap();
        if free == 1 << 30 {
            assert_eq!(widest, 12);
        } else {
            assert!(widest < 12, "free {free}: {widest} states in a launch");
        }
    }
}

/// The limits as the tables see them: one symbol past a limit goes to the CPU.
#[test]
fn tables_send_overlong_states_to_the_cpu() {
    use super::plan::{DifflibTables, LcsTables};
    assert!(LcsTables::new(&vec![1; 64 * MAX_LCS_WORDS]).is_some());
    assert!(LcsTables::new(&vec![1; 64 * MAX_LCS_WORDS + 1]).is_none());
    assert!(DifflibTables::new(&vec![1; MAX_DIFFLIB_STATE], false).is_some());
    assert!(DifflibTables::new(&vec![1; MAX_DIFFLIB_STATE + 1], false).is_none());
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

    /// Through the whole tier: states at each limit are answered by the device, bit for bit as
    /// the CPU; one symbol past it, by the CPU (counted); and a tier whose launches exceed the
    /// kernels' limits (a host that disagrees with them) gets the kernels' refusal, and the query
    /// is answered exactly by the CPU instead of from out-of-bounds writes.
    #[test]
    fn states_at_and_past_the_limits_through_the_tier() {
        use crate::cuda::limits::{MAX_DIFFLIB_STATE, MAX_LCS_WORDS};
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

    /// `query_batch` through a matcher with a device: the states are scored on the device
    /// together (one device query each, counted), the recent tier on the CPU, and every answer
    /// equals a CPU-only matcher's — also after the mirror grew past what the batches' scratch
    /// took from the budget.
    #[test]
    fn a_batch_through_the_matcher_equals_the_cpu() {
        let mut rng = Rng::new(36);
        let alphabet = 11;
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: true }] {
            let mut gpu = with_device(metric, EmulatedBackend::new(4 << 20), LIMITS, false);
            let mut cpu = Matcher::new(metric);
            for round in 0..2 {
                load(&mut [&mut gpu, &mut cpu], &mut rng, round * 3000, 2500, alphabet);
                gpu.promote();
                cpu.promote();
                load(&mut [&mut gpu, &mut cpu], &mut rng, round * 3000 + 2500, 300, alphabet); // recent tier
                let states: Vec<Vec<u32>> = (0..30)
                    .map(|k| {
                        let len = if k == 7 {
                            1500
                        } else if k % 5 == 0 {
                            40 + rng.below(100)
                        } else {
                            rng.below(25)
                        };
                        (0..len).map(|_| rng.below(alphabet) as u32).collect()
                    })
                    .collect();
                for (threshold, limit) in [(0.0, None), (0.3, Some(10)), (0.5, Some(1))] {
                    let before = gpu.device_status().gpu_queries;
                    let got = gpu.query_batch(&states, threshold, limit).unwrap();
                    let want = cpu.query_batch(&states, threshold, limit).unwrap();
                    for (g, w) in got.iter().zip(&want) {
                        let named = |m: &Matcher, hits: &crate::Matches| {
                            hits.iter()
                                .map(|h| (m.name(h.slot).to_string(), h.similarity.to_bits()))
                                .collect::<Vec<_>>()
                        };
                        assert_eq!(named(&gpu, g), named(&cpu, w), "{metric:?} {threshold} {limit:?}");
                    }
                    // The 1,500-symbol state is past both kernels' limits: the CPU scores it.
                    assert_eq!(gpu.device_status().gpu_queries - before, 29);
                }
            }
            let status = gpu.device_status();
            assert!(status.active && status.fallbacks == 0, "{status:?}");
            let info = status.capacity.unwrap();
            assert!(info.used_bytes <= info.budget_bytes && info.mirrored_patterns == 5300, "{info:?}");
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
