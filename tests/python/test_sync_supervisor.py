"""The supervised sync worker: a failure is logged, counted and followed by a restart; a worker that
fails too often in a row stops and is started again over HTTP; and every promotion carries the
label of what made it due, however training mode ended. The failures are real panics of the
native worker, made by its test hook."""

from __future__ import annotations

import logging
import time
import warnings

import pytest

from conftest import wait_until
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, SyncManager
from kato_gpu.sync import MAX_CONSECUTIVE_FAILURES

SIMULATED = "simulated sync worker failure"


def make(**config) -> HybridGPUMatcher:
    return HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(enabled=False, metric="lcs", **config))


def learn(matcher: HybridGPUMatcher, first: int, count: int) -> None:
    for k in range(first, first + count):
        assert matcher.add_new_pattern(f"P{k:05d}", [["a", str(k % 7)], ["b"]])


@pytest.fixture
def managed():
    matcher = make(sync_threshold=10, sync_interval_seconds=3600, enable_background_sync=False)
    sync = SyncManager(matcher)
    sync.start_background_sync()
    yield matcher, sync
    sync.stop_background_sync()


def test_a_failed_worker_is_logged_counted_and_restarted(managed, caplog):
    matcher, sync = managed
    caplog.set_level(logging.ERROR, logger="kato_gpu")
    stats = sync.get_stats()
    assert (stats["worker_failures"], stats["worker_restarts"], stats["last_worker_error"]) == (0, 0, None)
    before = time.time()
    sync._native._simulate_worker_failure(1)
    assert wait_until(lambda: sync.get_stats()["worker_restarts"] == 1)
    stats = sync.get_stats()
    assert stats["worker_failures"] == 1
    assert stats["last_worker_error"] == SIMULATED
    assert before - 1 <= stats["last_worker_error_time"] <= time.time() + 1
    assert stats["background_sync_running"] is True and sync.is_running()
    assert wait_until(
        lambda: any(SIMULATED in r.getMessage() and "restarting" in r.getMessage() for r in caplog.records)
    )
    record = next(r for r in caplog.records if SIMULATED in r.getMessage())
    assert record.levelno == logging.ERROR and record.name.startswith("kato_gpu")
    # The restarted worker still promotes on its own.
    learn(matcher, 0, 10)
    assert wait_until(lambda: matcher._tiers()[1] == 0)
    assert sync.get_stats()["last_sync_source"] == "automatic"


def test_a_worker_failing_in_a_row_stops_and_restarts(managed, caplog):
    matcher, sync = managed
    caplog.set_level(logging.ERROR, logger="kato_gpu")
    sync._native._simulate_worker_failure(MAX_CONSECUTIVE_FAILURES)
    assert wait_until(lambda: not sync.is_running())
    stats = sync.get_stats()
    assert stats["worker_failures"] == MAX_CONSECUTIVE_FAILURES
    assert stats["worker_restarts"] == MAX_CONSECUTIVE_FAILURES - 1
    assert stats["background_sync_running"] is False
    assert wait_until(lambda: any("is stopped" in r.getMessage() for r in caplog.records))
    # Stopped: learning past the threshold promotes nothing until it is started again.
    learn(matcher, 0, 10)
    assert matcher._tiers()[1] == 10
    assert sync.restart_background_sync() is True
    assert sync.restart_background_sync() is False  # already running
    assert wait_until(lambda: matcher._tiers()[1] == 0)
    assert sync.get_stats()["worker_failures"] == MAX_CONSECUTIVE_FAILURES


def test_status_and_restart_over_http(managed, monkeypatch):
    fastapi = pytest.importorskip("fastapi")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient
    from kato_gpu.fastapi import router

    matcher, sync = managed
    monkeypatch.delenv("KATO_GPU_API_TOKEN", raising=False)
    app = fastapi.FastAPI()
    app.include_router(router(matcher, sync, token="t0ken"))
    auth = {"Authorization": "Bearer t0ken"}
    with TestClient(app) as client:
        sync._native._simulate_worker_failure(MAX_CONSECUTIVE_FAILURES)
        assert wait_until(lambda: not sync.is_running())
        status = client.get("/gpu/status").json()["sync"]
        assert status["background_sync_running"] is False
        assert (status["worker_failures"], status["worker_restarts"]) == (5, 4)
        assert status["last_worker_error"] == SIMULATED
        assert client.post("/gpu/sync/restart").status_code == 401
        r = client.post("/gpu/sync/restart", headers=auth)
        assert r.status_code == 200 and r.json() == {"restarted": True, "background_sync_running": True}
        assert client.post("/gpu/sync/restart", headers=auth).json() == {
            "restarted": False,
            "background_sync_running": True,
        }
        assert client.get("/gpu/status").json()["sync"]["background_sync_running"] is True
        # A worker stopped by the operator restarts the same way.
        sync.stop_background_sync()
        assert client.post("/gpu/sync/restart", headers=auth).json()["restarted"] is True
        metrics = client.get("/gpu/metrics")
        if metrics.status_code == 200:
            lines = metrics.text.splitlines()
            assert "kato_gpu_sync_worker_failures_total 5.0" in lines
            assert "kato_gpu_sync_worker_restarts_total 4.0" in lines


# ------------------------------------------------------------------ labels after training mode


def training_manager(**config):
    matcher = make(**config)
    sync = SyncManager(matcher)
    sync.start_background_sync()
    return matcher, sync


def test_label_leaving_training_with_a_sync_is_training():
    matcher, sync = training_manager(sync_threshold=1000, sync_interval_seconds=3600, enable_background_sync=True)
    try:
        sync.enter_training_mode()
        learn(matcher, 0, 5)
        sync.exit_training_mode(trigger_sync=True)
        assert matcher._tiers() == (5, 0)
        assert sync.get_stats()["last_sync_source"] == "training"
    finally:
        sync.stop_background_sync()


def test_label_interval_after_training_without_a_sync_is_background():
    """The issue's case: below the threshold, the interval passed during training."""
    matcher, sync = training_manager(sync_threshold=1000, sync_interval_seconds=1, enable_background_sync=True)
    try:
        sync.enter_training_mode()
        learn(matcher, 0, 3)
        matcher.last_sync_time = time.time() - 10  # the interval has passed
        assert not sync.check_sync_needed("background")  # training mode holds it
        sync.exit_training_mode(trigger_sync=False)
        assert wait_until(lambda: matcher._tiers()[1] == 0)
        stats = sync.get_stats()
        assert stats["last_sync_source"] == "background" and stats["total_syncs"] == 1
    finally:
        sync.stop_background_sync()


def test_label_threshold_reached_in_training_is_automatic():
    matcher, sync = training_manager(sync_threshold=4, sync_interval_seconds=3600, enable_background_sync=True)
    try:
        sync.enter_training_mode()
        learn(matcher, 0, 6)
        assert matcher._tiers()[1] == 6
        sync.exit_training_mode(trigger_sync=False)
        assert wait_until(lambda: matcher._tiers()[1] == 0)
        assert sync.get_stats()["last_sync_source"] == "automatic"
    finally:
        sync.stop_background_sync()


def test_labels_of_later_triggers_after_training():
    matcher, sync = training_manager(sync_threshold=3, sync_interval_seconds=3600, enable_background_sync=False)
    try:
        sync.enter_training_mode()
        sync.exit_training_mode(trigger_sync=False)
        learn(matcher, 0, 3)  # the threshold
        assert wait_until(lambda: matcher._tiers()[1] == 0)
        assert sync.get_stats()["last_sync_source"] == "automatic"
        learn(matcher, 10, 1)
        assert sync.trigger_sync() == 1
        assert sync.get_stats()["last_sync_source"] == "manual"
        matcher.update_config(sync_threshold=1000, sync_interval_seconds=1, enable_background_sync=True)
        learn(matcher, 20, 1)
        matcher.last_sync_time = time.time() - 10
        sync.enter_training_mode()
        sync.exit_training_mode(trigger_sync=False)
        assert wait_until(lambda: matcher._tiers()[1] == 0)
        assert sync.get_stats()["last_sync_source"] == "background"
        assert sync.get_stats()["total_syncs"] == 3
    finally:
        sync.stop_background_sync()
