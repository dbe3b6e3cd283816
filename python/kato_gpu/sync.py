"""``SyncManager``: the drop-in for KATO's ``kato/gpu/sync_manager.py``.

Promotes a matcher's recent tier into its bulk tier (onto the GPU when there is one) on four
triggers: the recent tier reaching ``sync_threshold`` patterns (automatic), every
``sync_interval_seconds`` in the background, the end of training mode, and on demand. Training
mode pauses the automatic and background triggers.

Unlike KATO's, the background worker is a Rust thread: it never holds the GIL, sleeps until
learning reaches the threshold or the interval passes (no polling), and stops on
``stop_background_sync()``, when the manager or the matcher is garbage-collected, and at
interpreter exit. A promotion blocks queries only for the final swap.

The worker is supervised: a failure is logged (logger ``kato_gpu.sync``, ERROR), counted in
``get_stats()`` (``worker_failures``, ``worker_restarts``, ``last_worker_error``,
``last_worker_error_time``) and the worker restarts after a pause (0.1 s, doubling with each
failure in a row); after ``MAX_CONSECUTIVE_FAILURES`` in a row it stays stopped until
``restart_background_sync()`` (``POST /gpu/sync/restart``). Each promotion is labelled with what
made it due: ``automatic`` (the threshold), ``background`` (the interval), ``training`` (leaving
training mode with a sync) or ``manual``.

Ranges: ``sync_threshold`` from 1 to ``MAX_SYNC_THRESHOLD`` (10**9) patterns,
``sync_interval_seconds`` above 0 and at most ``MAX_SYNC_INTERVAL_SECONDS`` (a year); the engine
enforces them on every path (``GPUConfig.validate``, ``update_config``, the HTTP endpoints).
"""

from __future__ import annotations

import atexit
import logging
import weakref
from typing import Any, Dict, Optional

from . import _native
from .config import GPUConfig
from .matcher import HybridGPUMatcher

logger = logging.getLogger("kato_gpu.sync")

#: Every live manager, so their workers can be stopped before the interpreter finalizes.
_live_managers: "weakref.WeakSet[SyncManager]" = weakref.WeakSet()


@atexit.register
def _stop_all_workers() -> None:
    for manager in list(_live_managers):
        manager.stop_background_sync()


#: The sync sources (the native worker validates them).
SOURCES = tuple(_native.SYNC_SOURCES)

#: The largest ``sync_threshold`` (patterns) and ``sync_interval_seconds`` (a year) accepted.
MAX_SYNC_THRESHOLD: int = _native.MAX_SYNC_THRESHOLD
MAX_SYNC_INTERVAL_SECONDS: int = _native.MAX_SYNC_INTERVAL_SECONDS

#: Failures in a row after which the supervised worker stays stopped.
MAX_CONSECUTIVE_FAILURES: int = _native.MAX_CONSECUTIVE_FAILURES


class SyncManager:
    """Sync triggers and the background worker for one ``HybridGPUMatcher``.

    Args:
        matcher: the matcher whose recent tier is promoted.
        config: ``GPUConfig`` (``sync_threshold``, ``sync_interval_seconds``,
            ``enable_background_sync``); defaults to the matcher's. Later changes through
            ``matcher.update_config`` are followed.
    """

    def __init__(self, matcher: HybridGPUMatcher, config: Optional[GPUConfig] = None) -> None:
        if not isinstance(matcher, HybridGPUMatcher):
            raise TypeError(f"matcher must be a HybridGPUMatcher, got {type(matcher).__name__}")
        config = matcher.config if config is None else config
        if not isinstance(config, GPUConfig):
            raise TypeError(f"config must be a GPUConfig, got {type(config).__name__}")
        config.validate()
        self.matcher = matcher
        self.config = config
        self._native = _native.SyncManager(
            matcher, config.sync_threshold, config.sync_interval_seconds, config.enable_background_sync
        )
        matcher._sync_managers.add(self)
        _live_managers.add(self)
        logger.info(
            "sync manager ready: threshold %d patterns, interval %ss (background %s)",
            config.sync_threshold,
            config.sync_interval_seconds,
            "on" if config.enable_background_sync else "off",
        )

    def _apply_config(self) -> None:
        config = self.matcher.config if self.config is not self.matcher.config else self.config
        self._native.configure(config.sync_threshold, config.sync_interval_seconds, config.enable_background_sync)

    # ------------------------------------------------------------------ worker
    def start_background_sync(self) -> None:
        """Starts the worker thread. It promotes when learning reaches ``sync_threshold`` and,
        with ``enable_background_sync``, every ``sync_interval_seconds`` while patterns wait."""
        if self._native.start():
            logger.info("sync worker started")
        else:
            logger.warning("sync worker already running")

    def restart_background_sync(self) -> bool:
        """Starts the worker if it is not running: stopped by ``stop_background_sync()``, or by its
        supervisor after failing ``MAX_CONSECUTIVE_FAILURES`` times in a row. Returns whether it
        started one (``False``: it was running)."""
        started = self._native.start()
        if started:
            logger.info("sync worker (re)started")
        return started

    def is_running(self) -> bool:
        """Whether the worker thread is alive in this process (``False`` in a forked child until
        started there: the child has no copy of the parent's threads)."""
        return self._native.is_running()

    def stop_background_sync(self) -> None:
        """Stops the worker, waiting for a promotion in progress."""
        if self._native.is_running():
            self._native.stop()
            logger.info("sync worker stopped")

    # ------------------------------------------------------------------ triggers
    def check_sync_needed(self, trigger_source: str = "manual") -> bool:
        """Whether a promotion is due; in training mode only for ``trigger_source="manual"``."""
        return self._native.check_needed(trigger_source)

    def trigger_sync(self, source: str = "manual") -> int:
        """Promotes the recent tier now; returns how many patterns moved. Works with and without
        a GPU (without one the bulk tier is on the CPU)."""
        return self._native.trigger(source)

    def enter_training_mode(self) -> None:
        """Pauses the automatic and background triggers (manual syncs still work)."""
        if self._native.enter_training():
            logger.info("entered training mode: automatic sync paused")
        else:
            logger.warning("already in training mode")

    def exit_training_mode(self, trigger_sync: bool = True) -> None:
        """Resumes them; with ``trigger_sync``, promotes what training left in the recent tier."""
        moved = self._native.exit_training(bool(trigger_sync))
        if moved is None:
            logger.warning("not in training mode")
        else:
            logger.info("left training mode (%d patterns promoted)", moved)

    @property
    def training_mode(self) -> bool:
        return self._native.training

    # ------------------------------------------------------------------ status
    def get_stats(self) -> Dict[str, Any]:
        stats = dict(self._native.stats())
        stats.update(
            {
                "background_sync_enabled": self.matcher.config.enable_background_sync,
                "background_sync_running": self._native.is_running(),
                "training_mode": self.training_mode,
                "cpu_tier_patterns": self.matcher.patterns_since_sync,
                "patterns_since_last_sync": self.matcher.patterns_since_sync,
            }
        )
        return stats

    def __repr__(self) -> str:
        s = self._native.stats()
        return (
            f"SyncManager(syncs={s['total_syncs']}, patterns={s['total_patterns_synced']:,}, "
            f"training={self.training_mode}, running={self._native.is_running()})"
        )
