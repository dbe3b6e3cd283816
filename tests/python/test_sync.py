"""SyncManager: the four triggers, training mode, the Rust worker's life cycle, and a bounded
concurrency stress test compared with a single-threaded oracle afterwards."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_until
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, SyncManager

STRESS_SECONDS = float(os.environ.get("KATO_GPU_STRESS_SECONDS", "20"))


def make(threshold: int = 50, interval: int = 3600, background: bool = False, metric: str = "lcs"):
    config = GPUConfig(
        metric=metric, sync_threshold=threshold, sync_interval_seconds=interval, enable_background_sync=background
    )
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(None), config)
    return matcher, SyncManager(matcher, config)


def learn(matcher, names):
    for name in names:
        assert matcher.add_new_pattern(name, [["a", "b"], [name[-1]]])


def sync_threads() -> int:
    """Live Rust sync workers in this process (Linux: thread names in /proc)."""
    tasks = Path("/proc/self/task")
    return sum(1 for t in tasks.iterdir() if (t / "comm").read_text().strip() == "kato-gpu-sync")


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to see threads")


def test_automatic_trigger_promotes_when_the_recent_tier_reaches_the_threshold():
    matcher, sync = make(threshold=50)
    sync.start_background_sync()
    try:
        learn(matcher, [f"P{k:03d}" for k in range(49)])
        time.sleep(0.2)
        assert matcher.patterns_since_sync == 49
        learn(matcher, ["P049"])
        assert wait_until(lambda: matcher.patterns_since_sync == 0)
        stats = sync.get_stats()
        assert (stats["total_syncs"], stats["total_patterns_synced"], stats["last_sync_source"]) == (1, 50, "automatic")
        assert matcher.get_stats()["bulk_tier_patterns"] == 50
    finally:
        sync.stop_background_sync()


def test_background_trigger_promotes_after_the_interval():
    matcher, sync = make(threshold=10_000, interval=1, background=True)
    sync.start_background_sync()
    try:
        learn(matcher, ["A1", "A2", "A3"])
        assert wait_until(lambda: matcher.patterns_since_sync == 0, timeout=5)
        assert sync.get_stats()["last_sync_source"] == "background"
        assert sync.get_stats()["last_sync_time"] is not None
    finally:
        sync.stop_background_sync()


def test_training_mode_pauses_automatic_sync_and_exit_promotes():
    matcher, sync = make(threshold=20, interval=1, background=True)
    sync.start_background_sync()
    try:
        sync.enter_training_mode()
        assert sync.training_mode
        learn(matcher, [f"T{k:03d}" for k in range(100)])
        time.sleep(1.5)  # past the interval and the threshold
        assert matcher.patterns_since_sync == 100
        assert sync.check_sync_needed("automatic") is False and sync.check_sync_needed("manual") is True
        sync.exit_training_mode(trigger_sync=True)
        assert matcher.patterns_since_sync == 0 and sync.get_stats()["last_sync_source"] == "training"
        sync.enter_training_mode()
        learn(matcher, ["X1"])
        sync.exit_training_mode(trigger_sync=False)
        assert matcher.patterns_since_sync == 1 and not sync.training_mode
    finally:
        sync.stop_background_sync()


def test_manual_trigger_and_stats():
    matcher, sync = make()
    learn(matcher, ["M1", "M2"])
    assert sync.check_sync_needed() is False
    assert sync.trigger_sync() == 2 and sync.trigger_sync() == 0
    stats = sync.get_stats()
    assert stats["total_syncs"] == 2 and stats["total_patterns_synced"] == 2 and stats["last_sync_source"] == "manual"
    assert stats["last_sync_duration_ms"] >= 0.0 and stats["background_sync_running"] is False
    assert "SyncManager(" in repr(sync)
    with pytest.raises(ValueError):
        sync.trigger_sync("sideways")
    with pytest.raises(TypeError):
        sync.check_sync_needed(3)


def test_config_changes_reach_the_worker():
    matcher, sync = make(threshold=1000)
    sync.start_background_sync()
    try:
        learn(matcher, [f"C{k}" for k in range(30)])
        time.sleep(0.1)
        assert matcher.patterns_since_sync == 30
        matcher.update_config(sync_threshold=10)  # below what already waits: promotes now
        assert wait_until(lambda: matcher.patterns_since_sync == 0)
        learn(matcher, [f"D{k}" for k in range(9)])
        time.sleep(0.1)
        assert matcher.patterns_since_sync == 9
        learn(matcher, ["D9"])  # the new threshold, reached by learning
        assert wait_until(lambda: matcher.patterns_since_sync == 0)
    finally:
        sync.stop_background_sync()


@needs_proc
def test_worker_stops_on_request_on_garbage_collection_and_with_the_matcher():
    before = sync_threads()
    matcher, sync = make()
    # The thread names itself once it runs, so its appearance is waited for too.
    sync.start_background_sync()
    assert wait_until(lambda: sync_threads() == before + 1)
    sync.stop_background_sync()
    assert wait_until(lambda: sync_threads() == before)
    sync.start_background_sync()
    assert wait_until(lambda: sync_threads() == before + 1)
    del sync, matcher
    import gc

    gc.collect()
    assert wait_until(lambda: sync_threads() == before), "dropping the manager stops its worker"


def test_worker_stops_at_interpreter_exit():
    code = (
        "from kato_gpu import *\n"
        "m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(sync_threshold=5, sync_interval_seconds=1))\n"
        "s = SyncManager(m)\n"
        "s.start_background_sync()\n"
        "for k in range(20): m.add_new_pattern(f'P{k}', [['a']])\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_stress_concurrent_learning_queries_removals_and_syncs():
    """Several query, learning and removal threads with background sync at a short interval and
    training mode toggling, for a bounded time. Every query sees each pattern committed before it
    started (and not being removed) exactly once; afterwards the matcher equals a single-threaded
    oracle built from what was committed."""
    matcher, sync = make(threshold=40, interval=1, background=True)
    sync.start_background_sync()
    vocab = [f"s{k}" for k in range(30)]
    lock = threading.Lock()
    committed = {}  # name -> events, added and not (being) removed
    removing = set()  # names whose removal has started
    stop = threading.Event()
    errors = []
    counts = {"queries": 0, "learned": 0, "removed": 0, "toggles": 0}

    def guarded(fn):
        def run():
            try:
                fn()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
                stop.set()

        return run

    def learner(worker: int):
        rng = random.Random(worker)
        k = 0
        while not stop.is_set():
            name = f"W{worker}-{k:06d}"
            events = [sorted(rng.sample(vocab, rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
            assert matcher.add_new_pattern(name, events)
            with lock:
                committed[name] = events
                counts["learned"] += 1
            k += 1
            if k % 50 == 0:
                time.sleep(0.001)

    def remover():
        rng = random.Random(99)
        while not stop.is_set():
            with lock:
                if len(committed) < 200:
                    name = None
                else:
                    name = rng.choice(list(committed))
                    del committed[name]
                    removing.add(name)
            if name is None:
                time.sleep(0.005)
                continue
            assert matcher.remove_pattern(name)
            with lock:
                counts["removed"] += 1
            time.sleep(0.002)

    def querier(worker: int):
        rng = random.Random(1000 + worker)
        while not stop.is_set():
            with lock:
                expected = set(committed)
            result = matcher.match_patterns(rng.sample(vocab, 4), 0.0, None)
            names = [r["pattern_name"] for r in result]
            assert len(names) == len(set(names)), "a pattern appeared twice"
            with lock:
                gone = set(removing)
            missing = expected - set(names) - gone
            assert not missing, f"{len(missing)} committed patterns missing, e.g. {sorted(missing)[:3]}"
            with lock:
                counts["queries"] += 1

    def toggler():
        while not stop.wait(0.3):
            sync.enter_training_mode()
            stop.wait(0.2)
            sync.exit_training_mode(trigger_sync=True)
            with lock:
                counts["toggles"] += 1

    threads = [threading.Thread(target=guarded(lambda w=w: learner(w))) for w in range(3)]
    threads += [threading.Thread(target=guarded(lambda w=w: querier(w))) for w in range(3)]
    threads += [threading.Thread(target=guarded(remover)), threading.Thread(target=guarded(toggler))]
    for t in threads:
        t.start()
    stop.wait(STRESS_SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread did not finish (deadlock?)"
    sync.stop_background_sync()
    assert not errors, errors[:3]
    assert counts["queries"] > 10 and counts["learned"] > 500 and counts["removed"] > 20 and counts["toggles"] > 3, (
        counts
    )
    assert sync.get_stats()["total_syncs"] > 0

    # Quiesce and compare with a single-threaded oracle built from what was committed.
    sync.trigger_sync()
    assert len(matcher) == len(committed)
    oracle = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric="lcs", enabled=False))
    names = sorted(committed)
    oracle.add_patterns(names, [committed[n] for n in names])
    rng = random.Random(5)
    for _ in range(5):
        state = rng.sample(vocab, 5)
        assert matcher.match_patterns(state, 0.0, None) == oracle.match_patterns(state, 0.0, None)
