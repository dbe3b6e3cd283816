"""Regression tests for defects of the Rust core, through today's Python API: concurrent
promotions, user durations that used to panic, and difflib's memory on long inputs."""

from __future__ import annotations

import difflib
import random
import threading

import pytest

from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, SyncManager


def make(metric: str = "lcs", **config) -> HybridGPUMatcher:
    return HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric, **config))


def test_concurrent_syncs_move_every_pattern_exactly_once():
    """Two promotions at once once moved the tier boundary back: patterns were counted twice
    and the recent tier's size underflowed to about 1.8e19."""
    matcher = make(sync_threshold=10**9)
    learners, per_learner = 3, 1500
    moved = []
    moved_lock = threading.Lock()
    errors = []
    learning = threading.Event()

    def learn(t: int) -> None:
        try:
            for k in range(per_learner):
                assert matcher.add_new_pattern(f"L{t}-{k:05d}", [["a", str(k % 7)], [str(t)]])
        except Exception as e:  # reported below: an assertion in a thread would be lost
            errors.append(e)

    def promote() -> None:
        try:
            while not learning.is_set():
                n = matcher.sync_cpu_to_gpu()
                bulk, recent = matcher._tiers()
                assert 0 <= recent <= learners * per_learner and bulk + recent <= learners * per_learner
                with moved_lock:
                    moved.append(n)
        except Exception as e:
            errors.append(e)

    learner_threads = [threading.Thread(target=learn, args=(t,)) for t in range(learners)]
    promoter_threads = [threading.Thread(target=promote) for _ in range(3)]
    for thread in learner_threads + promoter_threads:
        thread.start()
    for thread in learner_threads:
        thread.join()
    learning.set()
    for thread in promoter_threads:
        thread.join()
    assert not errors, errors
    moved.append(matcher.sync_cpu_to_gpu())
    total = learners * per_learner
    assert sum(moved) == total
    assert matcher._tiers() == (total, 0)
    assert matcher.patterns_since_sync == 0
    assert not matcher.check_sync_needed()


@pytest.mark.parametrize("unix_seconds", [1e19, 1e300, float("inf"), float("nan"), -1.0])
def test_unrepresentable_last_sync_time_is_a_value_error(unix_seconds):
    matcher = make()
    before = matcher.last_sync_time
    with pytest.raises(ValueError):
        matcher.last_sync_time = unix_seconds
    assert matcher.last_sync_time == before


def test_a_far_future_last_sync_time_means_just_synced():
    matcher = make(sync_threshold=10, enable_background_sync=True, sync_interval_seconds=1)
    matcher.add_new_pattern("p", [["a"]])
    matcher.last_sync_time = 1e12
    assert matcher.last_sync_time == 1e12
    assert not matcher.check_sync_needed()


def test_unrepresentable_sync_interval_is_a_value_error():
    """`Duration::from_secs_f64(1e20)` panicked inside the binding."""
    matcher = make()
    config = GPUConfig(metric="lcs", sync_interval_seconds=10**20, enable_background_sync=True)
    with pytest.raises(ValueError):
        SyncManager(matcher, config)


def test_an_interval_beyond_any_deadline_does_not_kill_the_worker():
    """An interval representable as a duration but too long to add to now panicked the worker
    thread. Such intervals are now refused; the longest accepted one leaves the worker alive."""
    from kato_gpu import _native

    matcher = make(sync_threshold=10**9)
    with pytest.raises(ValueError, match="sync_interval_seconds"):
        GPUConfig(metric="lcs", sync_interval_seconds=10**18, enable_background_sync=True).validate()
    config = GPUConfig(
        metric="lcs",
        sync_threshold=_native.MAX_SYNC_THRESHOLD,
        sync_interval_seconds=_native.MAX_SYNC_INTERVAL_SECONDS,
        enable_background_sync=True,
    )
    sync = SyncManager(matcher, config)
    sync.start_background_sync()
    try:
        matcher.add_new_pattern("p", [["a"]])
        assert not sync.check_sync_needed("background")
        assert sync.trigger_sync("manual") == 1
        # A panic would end the worker at its first deadline computation, right after starting.
        assert sync._native.is_running()
        assert sync.get_stats()["worker_failures"] == 0
    finally:
        sync.stop_background_sync()


def states_over(rng: random.Random, length: int, alphabet: int) -> list:
    return [f"s{rng.randrange(alphabet)}" for _ in range(length)]


@pytest.mark.parametrize("autojunk", [False, True])
def test_long_sequences_over_few_symbols_match_difflib_exactly(autojunk):
    """Inputs whose matching cells grow as n·m take the literal algorithm: still exact."""
    rng = random.Random(7)
    matcher = make("difflib", autojunk=autojunk)
    state = states_over(rng, 900, 3)
    patterns = {f"p{k}": states_over(rng, 700 + 100 * k, 3) for k in range(3)}
    patterns["same"] = list(state)
    for name, symbols in patterns.items():
        assert matcher.add_new_pattern(name, [[s] for s in symbols])
    got = {m["pattern_name"]: m["similarity"] for m in matcher.match_patterns(state, 0.0, None)}
    want = {
        name: difflib.SequenceMatcher(None, symbols, state, autojunk=autojunk).ratio()
        for name, symbols in patterns.items()
    }
    assert got == want


def test_sixty_thousand_symbols_over_five_do_not_abort():
    """Used to abort the process: `memory allocation of 6442450944 bytes failed`. Above the
    default max_pattern_length on purpose: the memory bound must hold for any limit."""
    rng = random.Random(8)
    matcher = make("difflib", max_pattern_length=100_000)
    state = states_over(rng, 60_000, 5)
    assert matcher.add_new_pattern("long", [[s] for s in state])
    assert matcher.match_patterns(state, 0.0, None) == [{"pattern_name": "long", "similarity": 1.0}]


def test_max_pattern_length_refuses_long_patterns_and_states():
    matcher = make("difflib", max_pattern_length=4)
    assert matcher.add_new_pattern("ok", [["a", "b"], ["c", "d"]])
    with pytest.raises(ValueError, match="max_pattern_length"):
        matcher.add_new_pattern("long", [["a", "b"], ["c", "d", "e"]])
    with pytest.raises(ValueError, match="max_pattern_length"):
        matcher.add_patterns(["p1", "p2"], [[["a"]], [["x"] * 5]])
    with pytest.raises(ValueError, match="max_pattern_length"):
        matcher.match_patterns(["a"] * 5, 0.0)
    # Nothing changed: no pattern, and no symbol of a refused pattern entered the vocabulary.
    assert len(matcher) == 1 and "long" not in matcher and "p1" not in matcher
    assert matcher.encoder.lookup_ids(["e", "x"]) == [-1, -1]
    assert matcher.match_patterns(["a", "b", "c", "d"], 0.5) == [{"pattern_name": "ok", "similarity": 1.0}]
