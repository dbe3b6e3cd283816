"""The GPU tier through HybridGPUMatcher.

Without a GPU (this project's CI): the matcher serves every query exactly from the CPU, says why
in `use_gpu` / `get_stats()`, and refuses to start when `fallback_to_cpu` is off. The device tier
itself is tested without a GPU in Rust (`cargo test --features kernel-emulation`: the shipped
kernels run on the host behind the same tier code). Tests marked `gpu` run only where a CUDA GPU
is usable (`pytest -m gpu`), comparing the device with the CPU bit for bit.
"""

from __future__ import annotations

import random
import threading

import pytest

import kato_gpu.cuda as kc
from kato_gpu import GPUConfig, GPUUnavailableError, HybridGPUMatcher, SymbolVocabularyEncoder

GPU = kc.available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no usable CUDA GPU here")
needs_no_gpu = pytest.mark.skipif(GPU, reason="checks the behaviour without a GPU")


def patterns(rng: random.Random, count: int, vocab: list, long_every: int = 0):
    out = {}
    while len(out) < count:
        events = [sorted(rng.sample(vocab, rng.randint(1, 8))) for _ in range(rng.randint(1, 5))]
        if long_every and len(out) % long_every == 0:
            events.append([rng.choice(vocab) for _ in range(rng.randint(300, 2000))])
        out["PTRN|%040x" % rng.getrandbits(160)] = events
    return out


def pair(metric: str, autojunk: bool = False, **gpu_config):
    """A matcher on the GPU and one on the CPU only, sharing nothing."""
    gpu = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric, autojunk=autojunk, **gpu_config))
    cpu = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric, autojunk=autojunk, enabled=False))
    return gpu, cpu


@needs_no_gpu
def test_without_a_gpu_every_query_is_served_and_the_reason_is_told():
    m, cpu = pair("difflib")
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
    for m in (gpu, cpu):
        m.add_patterns(names[:15_000], [data[n] for n in names[:15_000]])  # bulk: on the device
        for n in names[15_000:]:
            m.add_new_pattern(n, data[n])  # recent: CPU
        for n in names[::11]:
            m.remove_pattern(n)
    assert gpu.get_stats()["gpu_tier_patterns"] >= 15_000 - len(names[:15_000:11])
    for q in range(30):
        length = 2000 if q == 29 else rng.randint(0, 60)  # the last: too long, CPU
        state = [rng.choice(vocab) for _ in range(length)]
        for threshold, limit in [(0.0, None), (0.2, 100), (0.5, None), (0.9, 5)]:
            assert gpu.match_patterns(state, threshold, limit) == cpu.match_patterns(state, threshold, limit)
    stats = gpu.get_stats()
    assert stats["gpu_queries"] > 0 and stats["gpu_long_state_cpu_queries"] > 0 and stats["gpu_fallbacks"] == 0


@pytest.mark.gpu
@needs_gpu
def test_sync_under_load_loses_nothing():
    gpu, cpu = pair("lcs", sync_threshold=50)
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
    for _ in range(10):
        state = rng.sample(vocab, 7)
        assert gpu.match_patterns(state, 0.1, None) == cpu.match_patterns(state, 0.1, None)


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
    assert len(gpu) == 2000  # nothing learned is lost
