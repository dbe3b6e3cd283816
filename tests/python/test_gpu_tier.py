"""The GPU tier through HybridGPUMatcher.

Without a GPU (this project's CI): the matcher serves every query exactly from the CPU, says why
in `use_gpu` / `get_stats()`, and refuses to start when `fallback_to_cpu` is off. The device tier
itself is tested without a GPU in Rust (`cargo test --features kernel-emulation`: the shipped
kernels run on the host behind the same tier code). Tests marked `gpu` run only where a CUDA GPU
is usable (`pytest -m gpu`, `make gpu-check`), comparing the device with a CPU-only matcher bit for
bit, and asserting exactly which queries the device answered: every query whose state fits the
kernels counts one `gpu_queries`, every longer one one `gpu_long_state_cpu_queries`, none falls
back.
"""

from __future__ import annotations

import random
import re
import threading

import pytest

import kato_gpu.cuda as kc
from conftest import brute_force
from kato_gpu import GPUConfig, GPUUnavailableError, HybridGPUMatcher, SymbolVocabularyEncoder

GPU = kc.available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no usable CUDA GPU here")
needs_no_gpu = pytest.mark.skipif(GPU, reason="checks the behaviour without a GPU")

#: Symbol ids from here on do not fit u16: the store (and its device mirror) goes wide.
WIDE_ID = 65_536


def kernel_state_limits() -> dict:
    """The longest state each metric's kernel scores, read from the source NVRTC compiles (its
    `#define` block is generated from `src/cuda/limits.rs`, the limits' one definition)."""
    source = kc.kernel_source()
    found = dict(re.findall(r"#define (KATO_MAX_LCS_WORDS|KATO_MAX_DIFFLIB_STATE) (\d+)", source))
    assert set(found) == {"KATO_MAX_LCS_WORDS", "KATO_MAX_DIFFLIB_STATE"}, "the kernels' limits moved"
    return {"lcs": 64 * int(found["KATO_MAX_LCS_WORDS"]), "difflib": int(found["KATO_MAX_DIFFLIB_STATE"])}


def patterns(rng: random.Random, count: int, vocab: list, long_every: int = 0):
    out = {}
    while len(out) < count:
        events = [sorted(rng.sample(vocab, rng.randint(1, 8))) for _ in range(rng.randint(1, 5))]
        if long_every and len(out) % long_every == 0:
            events.append([rng.choice(vocab) for _ in range(rng.randint(300, 2000))])
        out["PTRN|%040x" % rng.getrandbits(160)] = events
    return out


def flat_patterns(rng: random.Random, count: int, vocab: list, lengths) -> dict:
    """`count` one-event patterns (repeats allowed, any order), lengths drawn from `lengths()`."""
    out = {}
    while len(out) < count:
        out["PTRN|%040x" % rng.getrandbits(160)] = [[rng.choice(vocab) for _ in range(lengths())]]
    return out


def derived_state(rng: random.Random, source: list, length: int, vocab: list) -> list:
    """A state of exactly `length` symbols that shares a lot with `source` (a stored pattern's
    symbols, cycled when shorter), about one symbol in five replaced from `vocab`."""
    if not source:
        return [rng.choice(vocab) for _ in range(length)]
    start = rng.randrange(len(source))
    state = [source[(start + k) % len(source)] for k in range(length)]
    return [rng.choice(vocab) if rng.random() < 0.2 else x for x in state]


def pair(metric: str, autojunk: bool = False, **gpu_config):
    """A matcher that must run its bulk tier on the GPU and one on the CPU only, sharing nothing."""
    gpu_config.setdefault("device", "gpu")
    # Promotions only when a test asks (sync_cpu_to_gpu), so that what is mirrored is known.
    gpu_config.setdefault("enable_background_sync", False)
    gpu = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric, autojunk=autojunk, **gpu_config))
    cpu = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric, autojunk=autojunk, device="cpu"))
    return gpu, cpu


def load(matchers, data: dict, recent=()) -> None:
    """`data` into every matcher: the bulk tier in one call (mirrored on the device), then the
    names in `recent` one at a time into the recent tier (scanned on the CPU)."""
    recent = set(recent)
    bulk = [n for n in data if n not in recent]
    for m in matchers:
        assert m.add_patterns(bulk, [data[n] for n in bulk]) == len(bulk)
        for n in data:
            if n in recent:
                assert m.add_new_pattern(n, data[n])


def device_counts(gpu) -> tuple:
    stats = gpu.get_stats()
    return stats["gpu_queries"], stats["gpu_long_state_cpu_queries"], stats["gpu_fallbacks"]


def assert_device_answered(gpu, before: tuple, on_device: int, long_states: int) -> None:
    """Since `before` (`device_counts`), the device answered exactly `on_device` queries and sent
    exactly `long_states` to the CPU as too long for its kernels; nothing fell back."""
    queries, long_cpu, fallbacks = device_counts(gpu)
    assert (queries - before[0], long_cpu - before[1]) == (on_device, long_states)
    assert fallbacks == before[2] == 0 and gpu.use_gpu


def assert_mirrored(gpu, slots: int) -> None:
    """The device mirrors `slots` bulk slots (removed ones count until a compaction)."""
    assert gpu.get_stats()["gpu_tier_patterns"] == slots


def same_answers(gpu, cpu, queries) -> None:
    """Every `(state, threshold, limit)` on both matchers: equal results, and the device answered
    exactly the queries whose state fits its kernel (see `kernel_state_limits`)."""
    longest = kernel_state_limits()[gpu.config.metric]
    before = device_counts(gpu)
    for state, threshold, limit in queries:
        got = gpu.match_patterns(state, threshold, limit)
        want = cpu.match_patterns(state, threshold, limit)
        if got != want:  # name the first difference; similarities compared exactly (==)
            k = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            pytest.fail(
                f"state of {len(state)} symbols, threshold {threshold}, limit {limit}: {len(got)} vs "
                f"{len(want)} results, first difference at {k}: "
                f"{got[k] if k < len(got) else None} vs {want[k] if k < len(want) else None}"
            )
    fits = sum(len(state) <= longest for state, _, _ in queries)
    assert_device_answered(gpu, before, fits, len(queries) - fits)


@needs_no_gpu
def test_without_a_gpu_every_query_is_served_and_the_reason_is_told():
    m, cpu = pair("difflib", device="auto")
    assert m.use_gpu is False
    stats = m.get_stats()
    assert stats["use_gpu"] is False and "driver" in stats["gpu_unavailable_reason"]
    assert stats["bulk_tier_device"] == "cpu" and stats["gpu_tier_patterns"] == 0
    assert m.get_memory_usage_gb() == 0.0 and m.get_capacity_info()["max_capacity"] == 0
    rng = random.Random(1)
    vocab = [f"v{k}" for k in range(30)]
    data = patterns(rng, 300, vocab)
    for matcher in (m, cpu):
        matcher.add_patterns(list(data), list(data.values()))
    state = rng.sample(vocab, 6)
    assert m.match_patterns(state, 0.1, None) == cpu.match_patterns(state, 0.1, None) != []
    assert m.get_stats()["cpu_queries"] == 1 and m.get_stats()["gpu_queries"] == 0


@needs_no_gpu
def test_without_a_gpu_and_no_fallback_the_matcher_refuses_to_start():
    with pytest.raises(GPUUnavailableError, match="fallback_to_cpu is off"):
        HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(fallback_to_cpu=False))
    # Disabling the GPU on purpose is not an error.
    assert (
        HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(enabled=False, fallback_to_cpu=False)).use_gpu
        is False
    )


@needs_no_gpu
def test_the_kernel_limits_are_read_from_the_kernel_source():
    # What the gpu tests below count against; no GPU is needed to read them.
    assert kernel_state_limits() == {"lcs": 1024, "difflib": 256}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("metric,autojunk", [("lcs", False), ("difflib", False), ("difflib", True)])
def test_gpu_equals_cpu_on_random_sets(metric, autojunk):
    gpu, cpu = pair(metric, autojunk)
    assert gpu.use_gpu
    rng = random.Random(f"{metric}{autojunk}")
    vocab = [f"t{k}" for k in range(60)] + ["", "é"]
    data = patterns(rng, 20_000, vocab, long_every=500)
    names = list(data)
    load((gpu, cpu), data, recent=names[15_000:])
    for m in (gpu, cpu):
        for n in names[::11]:
            m.remove_pattern(n)
    assert_mirrored(gpu, 15_000)  # removed slots stay mirrored (not scored) until a compaction
    queries = []
    for q in range(30):
        length = 2000 if q == 29 else rng.randint(0, 60)  # the last: too long for either kernel, CPU
        state = [rng.choice(vocab) for _ in range(length)]
        queries += [(state, threshold, limit) for threshold, limit in [(0.0, None), (0.2, 100), (0.5, None), (0.9, 5)]]
    same_answers(gpu, cpu, queries)
    assert device_counts(gpu)[:2] == (29 * 4, 4)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("metric,autojunk", [("lcs", False), ("difflib", True)])
def test_a_batch_is_scored_on_the_device_together(metric, autojunk):
    """`match_patterns_batch`: states of several kernel variants (and one too long for any) in
    one call, equal to a CPU matcher's answers state by state; every state that fits counts one
    device query."""
    gpu, cpu = pair(metric, autojunk)
    rng = random.Random(f"batch{metric}")
    vocab = [f"t{k}" for k in range(40)]
    data = patterns(rng, 30_000, vocab, long_every=700)
    names = list(data)
    load((gpu, cpu), data, recent=names[28_000:])
    longest = kernel_state_limits()[metric]
    lengths = [rng.randint(0, 30) for _ in range(40)] + [rng.randint(33, 250) for _ in range(10)] + [longest + 1]
    states = [[rng.choice(vocab) for _ in range(n)] for n in lengths]
    for threshold, limit in [(0.0, None), (0.2, 100), (0.6, 3)]:
        before = device_counts(gpu)
        got = gpu.match_patterns_batch(states, threshold, limit)
        assert got == cpu.match_patterns_batch(states, threshold, limit)
        assert_device_answered(gpu, before, len(states) - 1, 1)


@pytest.mark.gpu
@needs_gpu
def test_lcs_states_of_every_word_count_up_to_the_limit_run_on_the_device():
    """States of 0 to 1,024 symbols (the 32-bit path, then 1, 2, 4, 8 and 16 64-bit words, each
    boundary and one past it) on the device; 1,025 and longer on the CPU."""
    gpu, cpu = pair("lcs")
    rng = random.Random("lcs-words")
    vocab = [f"s{k}" for k in range(40)]
    data = flat_patterns(
        rng, 3000, vocab, lambda: rng.choice([rng.randint(1, 40), rng.randint(41, 300), rng.randint(301, 1200)])
    )
    names = list(data)
    load((gpu, cpu), data, recent=names[2800:])
    assert_mirrored(gpu, 2800)
    long_sources = [data[n][0] for n in names if len(data[n][0]) > 600]
    lengths = [0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 640, 777]
    lengths += [960, 961, 1000, 1023, 1024, 1025, 1100, 2000]
    queries = []
    for length in lengths:
        for state in (
            derived_state(rng, rng.choice(long_sources), length, vocab),
            [rng.choice(vocab) for _ in range(length)],
        ):
            queries += [(state, 0.0, None), (state, 0.1, 100), (state, 0.4, None), (state, 0.25, 7)]
    same_answers(gpu, cpu, queries)
    assert device_counts(gpu)[:2] == (4 * 2 * 25, 4 * 2 * 3)  # 25 lengths <= 1,024, 3 above


def autojunk_state(rng: random.Random, length: int, vocab: list) -> list:
    """`length` symbols in which some occur 2, 3, 4, 6 and 10 times: around difflib's popularity
    cut (a symbol is popular when it occurs more than `length // 100 + 1` times, for
    `length >= 200`), the rest mostly distinct."""
    state = []
    for times in (2, 3, 4, 6, 10):
        state += [rng.choice(vocab)] * times
    while len(state) < length:
        state.append(rng.choice(vocab))
    rng.shuffle(state)
    return state[:length]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("autojunk", [True, False])
def test_difflib_states_of_200_to_256_with_repeats_run_on_the_device(autojunk):
    """difflib's autojunk starts at 200 symbols; states of 199 to 256 with popular and almost
    popular symbols on the device (each of its state-length buckets), 257 and longer on the CPU."""
    gpu, cpu = pair("difflib", autojunk)
    rng = random.Random(f"autojunk{autojunk}")
    vocab = [f"d{k}" for k in range(300)]
    few = vocab[:12]  # patterns and states over a dozen symbols: every one of them repeats
    data = flat_patterns(
        rng, 1200, vocab, lambda: rng.choice([rng.randint(1, 30), rng.randint(31, 120), rng.randint(121, 300)])
    )
    data.update(flat_patterns(rng, 300, few, lambda: rng.randint(1, 260)))
    names = list(data)
    load((gpu, cpu), data, recent=names[1400:])
    sources = [data[n][0] for n in names if len(data[n][0]) > 100]
    lengths = [1, 32, 33, 64, 65, 128, 129, 150, 199, 200, 201, 220, 240, 255, 256, 257, 300]
    queries = []
    for length in lengths:
        states = (
            autojunk_state(rng, length, vocab),
            autojunk_state(rng, length, few),
            derived_state(rng, rng.choice(sources), length, vocab),
        )
        for state in states:
            queries += [(state, 0.0, None), (state, 0.3, 50), (state, 0.6, None)]
    same_answers(gpu, cpu, queries)
    assert device_counts(gpu)[:2] == (3 * 3 * 15, 3 * 3 * 2)  # 15 lengths <= 256, 2 above


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("metric", ["lcs", "difflib"])
def test_symbol_ids_past_u16_on_the_device(metric):
    """The store holds u16 ids until the vocabulary passes 65,536 symbols; then it (and the
    device mirror) goes wide. Queries before and after, with ids on both sides of the line."""
    gpu, cpu = pair(metric)
    rng = random.Random(f"wide{metric}")
    low = [f"lo{k}" for k in range(500)]
    narrow = patterns(rng, 2000, low)
    load((gpu, cpu), narrow)
    state = rng.sample(low, 8)
    same_answers(gpu, cpu, [(state, 0.0, None), (state, 0.2, 10)])

    # 7,000 patterns of 10 new symbols each (70,000 more: ids up to ~70,500), a few of them
    # mixed with the narrow symbols, all into the bulk tier.
    wide = {}
    for k in range(7000):
        events = [[f"hi{10 * k + j}" for j in range(10)]]
        if k % 7 == 0:
            events.append(sorted(rng.sample(low, 4)))
        wide["PTRN|%040x" % rng.getrandbits(160)] = events
    load((gpu, cpu), wide)
    assert gpu.encoder.vocab_size > WIDE_ID and gpu.encoder.vocab_size == cpu.encoder.vocab_size
    assert_mirrored(gpu, 9000)
    learned = [f"hi{k}" for k in range(70_000)]
    high = [s for s, i in zip(learned, gpu.encoder.lookup_ids(learned)) if i >= WIDE_ID]
    assert len(high) > 4000
    queries = []
    for _ in range(12):
        source = rng.choice(list(wide.values()))
        state = [s for event in source for s in event]
        state = (
            rng.sample(state, rng.randint(3, len(state))) + rng.sample(high, 3) + rng.sample(low, 2) + ["never-seen"]
        )
        queries += [(state, 0.0, None), (state, 0.1, 100), (state, 0.3, None)]
    # Long states of wide ids: on the device up to each kernel's limit, then on the CPU.
    long_state = rng.sample(high, 1000) + rng.sample(low, 100) + ["never-seen"]
    rng.shuffle(long_state)
    queries += [(long_state[:n], 0.0, 50) for n in (256, 257, 1024, len(long_state))]
    same_answers(gpu, cpu, queries)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("metric", ["lcs", "difflib"])
def test_removals_compaction_and_re_mirroring_then_the_device_answers(metric):
    """Removed slots stay mirrored (not scored); once more than half the store is dead the store
    compacts and the device mirrors it again from slot 0; later syncs append to that."""
    gpu, cpu = pair(metric, sync_threshold=100_000, enable_background_sync=False)
    rng = random.Random(f"compact{metric}")
    vocab = [f"c{k}" for k in range(80)]
    data = patterns(rng, 10_000, vocab)
    names = list(data)
    load((gpu, cpu), data)
    states = [rng.sample(vocab, rng.randint(1, 12)) for _ in range(6)]
    queries = [(s, t, k) for s in states for t, k in [(0.0, None), (0.2, 100), (0.5, 3)]]
    same_answers(gpu, cpu, queries)

    symbols = gpu.get_stats()["stored_symbols"]
    gone = names[:3000]  # fewer dead than the compaction needs: the slots stay mirrored
    for m in (gpu, cpu):
        for n in gone:
            assert m.remove_pattern(n)
    assert gpu.get_stats()["stored_symbols"] == symbols  # not compacted
    assert_mirrored(gpu, 10_000)
    same_answers(gpu, cpu, queries)

    # The store compacts once at least 4,096 slots are dead and they outnumber the live ones:
    # at the 5,001st removal. The device then mirrors the 4,999 left again from slot 0.
    gone = names[3000:5001]
    for m in (gpu, cpu):
        for n in gone:
            assert m.remove_pattern(n)
    assert len(gpu) == len(cpu) == 4999
    live = sum(len(s) for e in (data[n] for n in names[5001:]) for s in e)
    assert gpu.get_stats()["stored_symbols"] == live  # compacted
    assert_mirrored(gpu, 4999)
    same_answers(gpu, cpu, queries)

    more = patterns(rng, 3000, vocab)
    for m in (gpu, cpu):
        for n, events in more.items():
            m.add_new_pattern(n, events)
        m.sync_cpu_to_gpu()
    assert_mirrored(gpu, 7999)
    same_answers(gpu, cpu, queries)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("metric,autojunk", [("lcs", False), ("difflib", False), ("difflib", True)])
def test_threshold_zero_without_a_limit_returns_every_pattern(metric, autojunk):
    gpu, cpu = pair(metric, autojunk)
    rng = random.Random(f"zero{metric}{autojunk}")
    vocab = [f"z{k}" for k in range(50)]
    data = patterns(rng, 5000, vocab, long_every=250)
    names = list(data)
    load((gpu, cpu), data, recent=names[4500:])
    for m in (gpu, cpu):
        for n in names[::9]:
            m.remove_pattern(n)
    states = [[], ["never-seen"], rng.sample(vocab, 5), [rng.choice(vocab) for _ in range(250)]]
    same_answers(gpu, cpu, [(s, 0.0, None) for s in states])
    for state in states:
        assert len(gpu.match_patterns(state, 0.0, None)) == len(gpu) == len(data) - len(names[::9])


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("metric", ["lcs", "difflib"])
def test_top_k_with_ties_at_the_cut(metric):
    """Groups of 150 patterns with the same symbols (so the same similarity) under different
    names: every k around and inside a group keeps the best, then the tied ones by name."""
    gpu, cpu = pair(metric)
    rng = random.Random(f"ties{metric}")
    vocab = [f"k{k}" for k in range(30)]
    state = rng.sample(vocab, 10)
    data = {}
    for _ in range(12):
        events = [sorted(rng.sample(vocab, rng.randint(2, 8))) for _ in range(rng.randint(1, 3))]
        for _ in range(150):
            data["PTRN|%040x" % rng.getrandbits(160)] = events
    names = list(data)
    load((gpu, cpu), data, recent=names[::17])
    full = brute_force({n: [s for e in data[n] for s in e] for n in data}, state, metric, False, 0.0, None)
    assert len({r["similarity"] for r in full}) <= 12 < len(full)
    limits = [1, 2, 149, 150, 151, 299, 300, 301, 777, 1799, 1800, 5000]
    for threshold in (0.0, 0.3):
        want_all = [r for r in full if r["similarity"] >= threshold]
        for k in limits:
            assert gpu.match_patterns(state, threshold, k) == want_all[:k]
    same_answers(gpu, cpu, [(state, t, k) for t in (0.0, 0.3) for k in limits])
    assert device_counts(gpu)[:2] == (2 * 2 * len(limits), 0)


@pytest.mark.gpu
@needs_gpu
def test_sync_under_load_loses_nothing():
    gpu, cpu = pair("lcs", sync_threshold=50, enable_background_sync=True)
    rng = random.Random(7)
    vocab = [f"w{k}" for k in range(40)]
    data = patterns(rng, 4000, vocab)
    names = list(data)
    errors = []

    def learn(chunk):
        try:
            for n in chunk:
                gpu.add_new_pattern(n, data[n])
                if gpu.check_sync_needed():
                    gpu.sync_cpu_to_gpu()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def query():
        try:
            for _ in range(50):
                res = gpu.match_patterns(rng.sample(vocab, 5), 0.0, None)
                assert len({r["pattern_name"] for r in res}) == len(res)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=learn, args=(names[k::4],)) for k in range(4)]
    threads += [threading.Thread(target=query) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    gpu.sync_cpu_to_gpu()
    for n in names:
        cpu.add_new_pattern(n, data[n])
    state = rng.sample(vocab, 6)
    assert gpu.match_patterns(state, 0.0, None) == cpu.match_patterns(state, 0.0, None)
    assert len(gpu.match_patterns(state, 0.0, None)) == 4000
    assert device_counts(gpu) == (2 * 50 + 2, 0, 0)  # every query, concurrent ones too, on the device


@pytest.mark.gpu
@needs_gpu
def test_patterns_past_force_max_patterns_stay_on_the_cpu():
    gpu, cpu = pair("difflib", force_max_patterns=1000)
    rng = random.Random(8)
    vocab = [f"x{k}" for k in range(25)]
    data = patterns(rng, 3000, vocab)
    for m in (gpu, cpu):
        m.add_patterns(list(data), list(data.values()))
    stats = gpu.get_stats()
    assert stats["gpu_tier_patterns"] == 1000 and stats["gpu_overflow_patterns"] == 2000
    assert gpu.get_capacity_info()["max_capacity"] <= 1000
    same_answers(gpu, cpu, [(rng.sample(vocab, 7), 0.1, None) for _ in range(10)])


@pytest.mark.gpu
@needs_gpu
def test_device_info_reports_the_device():
    info = kc.device_info()
    assert info["available"] and info["device_count"] >= 1
    assert info["compute_capability"][0] >= 7 and info["total_memory_bytes"] > 0


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fallback", [True, False])
def test_a_device_failure_falls_back_to_the_cpu_or_reports(fallback):
    gpu, cpu = pair("lcs", fallback_to_cpu=fallback)
    rng = random.Random(9)
    vocab = [f"y{k}" for k in range(20)]
    data = patterns(rng, 2000, vocab)
    for m in (gpu, cpu):
        m.add_patterns(list(data), list(data.values()))
    state = rng.sample(vocab, 5)
    assert gpu.match_patterns(state, 0.1, None) == cpu.match_patterns(state, 0.1, None)
    gpu._simulate_device_failure()
    if fallback:
        assert gpu.match_patterns(state, 0.1, None) == cpu.match_patterns(state, 0.1, None)
    else:
        with pytest.raises(RuntimeError, match="simulated device failure"):
            gpu.match_patterns(state, 0.1, None)
    assert gpu.use_gpu is False
    stats = gpu.get_stats()
    assert stats["gpu_fallbacks"] == 1 and "simulated device failure" in stats["gpu_unavailable_reason"]
    # The first query on the device; the failed one on the CPU (fallback) or not answered at all.
    assert (stats["gpu_queries"], stats["cpu_queries"]) == (1, 1 if fallback else 0)
    assert len(gpu) == 2000  # nothing learned is lost
