"""``HybridGPUMatcher``: the drop-in for KATO's ``kato/gpu/matcher.py``.

The matcher is a class of the native engine: queries, learning, predictions and promotion go from
Python strings to results in one native call, over the vocabulary of the encoder it was built on.
Patterns live in two tiers of one columnar store: newly learned patterns enter the *recent* tier
at once; a sync promotes them to the *bulk* tier (onto the GPU where there is one). Results are
ordered by one rule, similarity descending then pattern name ascending, whichever tier holds a
pattern.

This subclass adds what is configuration rather than computation: the ``GPUConfig`` it was built
with, runtime configuration changes, and the statistics dictionaries KATO's callers read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
import weakref
from typing import Any, Dict, Optional, Union

from . import _native, cuda
from .config import GPUConfig
from .encoder import SymbolVocabularyEncoder
from .errors import GPUUnavailableError

logger = logging.getLogger("kato_gpu.matcher")

#: GPU-unavailable reasons already logged (at INFO or WARNING) by this process.
_GPU_REASONS_LOGGED: set = set()


def _no_gpu_here(min_compute_capability: float) -> bool:
    """Whether this host has no GPU at all (no NVIDIA driver, or a driver that sees no device):
    a CPU host, as opposed to a GPU that is present but cannot be used."""
    info = _native.cuda_probe(min_compute_capability)
    return not info["driver_found"] or not info["device_count"]


def _checked_config(config: Optional[GPUConfig]) -> GPUConfig:
    config = GPUConfig() if config is None else config
    if not isinstance(config, GPUConfig):
        raise TypeError(f"config must be a GPUConfig, got {type(config).__name__}")
    config.validate()
    return config


class HybridGPUMatcher(_native.HybridGPUMatcher):
    """Exact matcher of a state against every learned pattern, over a bulk and a recent tier.

    Args:
        encoder: the vocabulary shared with KATO's learning path. Queries only look symbols up;
            learning adds the new ones in the same transaction as the pattern.
        config: ``GPUConfig``; ``metric`` ("difflib" or "lcs") and ``autojunk`` choose the
            similarity; ``max_pattern_length`` bounds learned patterns and query states.
            Defaults to ``GPUConfig()``.
        patterns_cache: KATO's argument; deprecated, ignored (the matcher holds every pattern).
    """

    #: Configuration fields that can change while the matcher runs.
    RUNTIME_CONFIG_FIELDS = (
        "sync_threshold",
        "sync_interval_seconds",
        "enable_background_sync",
        "log_memory_usage",
        "log_kernel_timing",
    )

    def __new__(
        cls,
        encoder: SymbolVocabularyEncoder,
        config: Optional[GPUConfig] = None,
        patterns_cache: Optional[Dict[str, Any]] = None,
    ) -> "HybridGPUMatcher":
        if not isinstance(encoder, _native.SymbolVocabularyEncoder):
            raise TypeError(f"encoder must be a SymbolVocabularyEncoder, got {type(encoder).__name__}")
        config = _checked_config(config)
        self = super().__new__(cls, encoder, config.metric, config.autojunk, config.max_pattern_length)
        self.config = config
        return self

    def __init__(
        self,
        encoder: SymbolVocabularyEncoder,
        config: Optional[GPUConfig] = None,
        patterns_cache: Optional[Dict[str, Any]] = None,
    ) -> None:
        if patterns_cache is not None:
            warnings.warn(
                "HybridGPUMatcher(patterns_cache=...) is ignored: the matcher holds every pattern itself",
                DeprecationWarning,
                stacklevel=2,
            )
        config = self.config
        self._configure_sync(config.sync_threshold, config.sync_interval_seconds, config.enable_background_sync)
        self._configure_logging(config.log_memory_usage, config.log_kernel_timing)
        self.gpu_unavailable_reason = self._attach_gpu(config)
        #: Sync managers attached to this matcher (told about configuration changes).
        self._sync_managers: "weakref.WeakSet" = weakref.WeakSet()
        logger.info(
            "HybridGPUMatcher ready: metric=%s autojunk=%s, bulk tier on %s",
            config.metric,
            config.autojunk,
            "the GPU" if self.use_gpu else f"all CPU cores ({self.gpu_unavailable_reason})",
        )

    @classmethod
    def load(cls, path: "Union[str, os.PathLike[str]]", config: Optional[GPUConfig] = None) -> "HybridGPUMatcher":
        """A matcher restored from a snapshot written by ``save``: the same patterns (names,
        events), tiers and vocabulary ids, so every query answers exactly as the saved matcher's
        did. Its encoder is a new in-memory ``SymbolVocabularyEncoder`` holding the saved
        vocabulary.

        ``config`` defaults to ``GPUConfig()`` with the snapshot's ``metric``, ``autojunk`` and
        ``max_pattern_length``; a given one must have the snapshot's ``metric`` and ``autojunk``
        (``ValueError`` otherwise). A truncated or damaged file, or one of another format
        version, raises ``ValueError`` naming the problem; a missing file ``FileNotFoundError``.
        """
        snapshot = _native._Snapshot(path)
        if config is None:
            config = dataclasses.replace(
                GPUConfig(),
                metric=snapshot.metric,
                autojunk=snapshot.autojunk,
                max_pattern_length=snapshot.max_pattern_length,
            )
        config = _checked_config(config)
        if (config.metric, config.autojunk) != (snapshot.metric, snapshot.autojunk):
            raise ValueError(
                f"the snapshot was saved with metric={snapshot.metric!r} autojunk={snapshot.autojunk}, "
                f"the config has metric={config.metric!r} autojunk={config.autojunk}"
            )
        encoder = SymbolVocabularyEncoder()
        encoder._restore_snapshot(snapshot)
        matcher = cls.__new__(cls, encoder, config)
        # Before __init__, which attaches the GPU: the device mirrors the restored bulk tier.
        matcher._restore_snapshot(snapshot)
        matcher.__init__(encoder, config)
        logger.info(
            "loaded snapshot %s: %d patterns (%d in the bulk tier), %d symbols",
            os.fspath(path),
            snapshot.patterns,
            snapshot.bulk_patterns,
            snapshot.symbols,
        )
        return matcher

    def _attach_gpu(self, config: GPUConfig) -> Optional[str]:
        """Attaches the GPU tier when the configuration asks for it and a device can be used;
        returns why not otherwise. Raises ``GPUUnavailableError`` without a usable GPU when
        ``device="gpu"`` or ``fallback_to_cpu=False`` (as KATO's matcher raises without CuPy).

        Log levels follow what the operator has to do: nothing for a host without a GPU
        (``device="auto"``: INFO, it is a CPU host) or a GPU turned off on purpose (INFO); a GPU
        that is there but cannot be used (too old, NVRTC missing, compilation failed) is a WARNING."""
        if not config.enabled:
            return "disabled by configuration (enabled=False)"
        if config.device == "cpu":
            return "not used: device is 'cpu' (KATO_GPU_DEVICE=cpu)"
        cuda._preload_nvrtc()
        reason = self._enable_gpu(
            config.min_compute_capability,
            config.memory_usage_fraction,
            config.growth_buffer_fraction,
            config.force_max_patterns,
            config.threads_per_block,
            config.fallback_to_cpu,
        )
        if reason is None:
            return None
        if config.device == "gpu":
            raise GPUUnavailableError(f"no usable GPU and device is 'gpu' (KATO_GPU_DEVICE=gpu): {reason}")
        if not config.fallback_to_cpu:
            raise GPUUnavailableError(f"no usable GPU and fallback_to_cpu is off: {reason}")
        # Once per reason and process: a service builds a matcher per knowledge base.
        first = reason not in _GPU_REASONS_LOGGED
        _GPU_REASONS_LOGGED.add(reason)
        if _no_gpu_here(config.min_compute_capability):
            logger.log(logging.INFO if first else logging.DEBUG, "no GPU here, serving from all CPU cores: %s", reason)
        else:
            logger.log(
                logging.WARNING if first else logging.DEBUG,
                "GPU tier unavailable, serving from all CPU cores: %s",
                reason,
            )
        return reason

    @property
    def use_gpu(self) -> bool:
        """Whether the bulk tier is scored on a GPU right now (False after a device failure)."""
        return bool(self._device_status()["active"])

    def update_config(self, **changes: Any) -> GPUConfig:
        """Changes runtime settings (``RUNTIME_CONFIG_FIELDS``), all or nothing: an unknown or
        fixed field, or an invalid value, raises ``ValueError``/``TypeError`` and changes nothing.
        Attached sync managers follow the new settings."""
        if not changes:
            raise ValueError("no configuration change given")
        known = {f.name for f in dataclasses.fields(GPUConfig)}
        for name in changes:
            if name not in known:
                raise ValueError(f"unknown configuration field {name!r}")
            if name not in self.RUNTIME_CONFIG_FIELDS:
                raise ValueError(
                    f"{name!r} cannot change while the matcher runs "
                    f"(runtime fields: {', '.join(self.RUNTIME_CONFIG_FIELDS)})"
                )
        candidate = dataclasses.replace(self.config, **changes)
        candidate.validate()
        managers = list(self._sync_managers)
        # Every native check runs before anything changes: the settings are validated by the
        # core, applied to the matcher, then to the managers (which cannot fail once valid).
        self._configure_sync(
            candidate.sync_threshold, candidate.sync_interval_seconds, candidate.enable_background_sync
        )
        self._configure_logging(candidate.log_memory_usage, candidate.log_kernel_timing)
        for name, value in changes.items():
            setattr(self.config, name, value)
        for manager in managers:
            manager._apply_config()
        logger.info("configuration updated: %s", changes)
        return self.config

    def get_kpis(self) -> Dict[str, Any]:
        """The seed plan's KPIs: duration histograms (cumulative ``(le, count)`` buckets, ``sum``,
        ``count``), counters and gauges, under their Prometheus names (see docs/OPERATIONS.md)."""
        kpis = dict(self._kpis())
        device = self._device_status()
        bulk, recent = self._tiers()
        on_gpu = device.get("mirrored_patterns", 0) if device["active"] else 0
        kpis["kato_gpu_memory_bytes"] = device.get("used_bytes", 0) if device["active"] else 0
        kpis["kato_gpu_pattern_count"] = on_gpu
        kpis["kato_cpu_pattern_count"] = max(bulk + recent - on_gpu, 0)
        return kpis

    def get_stats(self) -> Dict[str, Any]:
        """Tier sizes, counters and the device's state. KATO's keys are kept: ``gpu_queries`` and
        ``cpu_queries`` count queries whose bulk tier was scored on the GPU / on the CPU."""
        bulk, recent = self._tiers()
        device = self._device_status()
        kpis = self._kpis()
        use_gpu = bool(device["active"])
        stats: Dict[str, Any] = {
            "use_gpu": use_gpu,
            "gpu_unavailable_reason": None if use_gpu else (device["last_error"] or self.gpu_unavailable_reason),
            "metric": self.config.metric,
            "autojunk": self.config.autojunk,
            # KATO's names: the GPU tier is the bulk tier when it is on a GPU; the CPU tier is the
            # recent tier.
            "gpu_tier_patterns": device.get("mirrored_patterns", 0) if use_gpu else 0,
            "cpu_tier_patterns": recent,
            "bulk_tier_patterns": bulk,
            "bulk_tier_device": "gpu" if use_gpu else "cpu",
            "recent_tier_patterns": recent,
            "total_patterns": bulk + recent,
            "vocab_size": self.encoder.vocab_size,
            "stored_symbols": self._token_count(),
            "memory_bytes": self._memory_bytes(),
            "gpu_queries": device["gpu_queries"],
            "cpu_queries": kpis["queries_total"] - device["gpu_queries"],
            "gpu_long_state_cpu_queries": device["long_state_cpu_queries"],
            "gpu_fallbacks": device["fallbacks"],
            "patterns_learned": kpis["kato_patterns_learned_total"],
            "syncs_triggered": kpis["kato_gpu_sync_events_total"],
        }
        if use_gpu:
            capacity = self.get_capacity_info()
            stats.update(
                {
                    "gpu_capacity": capacity["max_capacity"],
                    "gpu_utilization": capacity["utilization"],
                    "gpu_memory_gb": capacity["memory_used_gb"],
                    "gpu_overflow_patterns": device["overflow_patterns"],
                }
            )
        return stats

    def get_memory_usage_gb(self) -> float:
        """Device memory held by the GPU tier, in GB (0.0 without one): KATO's
        ``GPUMemoryManager.get_memory_usage_gb``."""
        return self._device_status().get("used_bytes", 0) / 1e9

    def get_capacity_info(self) -> Dict[str, Any]:
        """KATO's ``GPUMemoryManager.get_capacity_info`` keys, for the device mirror."""
        device = self._device_status()
        capacity = device.get("capacity_patterns", 0)
        mirrored = device.get("mirrored_patterns", 0)
        return {
            "pattern_count": mirrored,
            "max_capacity": capacity,
            "utilization": mirrored / capacity if capacity else 0.0,
            "memory_used_gb": device.get("used_bytes", 0) / 1e9,
            "memory_budget_gb": device.get("budget_bytes", 0) / 1e9,
            "vram_free_gb": device.get("device_free_bytes", 0) / 1e9,
            "vram_total_gb": device.get("device_total_bytes", 0) / 1e9,
        }

    def __repr__(self) -> str:
        bulk, recent = self._tiers()
        device = "gpu" if self.use_gpu else "cpu"
        return f"HybridGPUMatcher(bulk={bulk:,} on {device}, recent={recent:,}, metric={self.config.metric})"
