"""``HybridGPUMatcher``: the drop-in for KATO's ``kato/gpu/matcher.py``.

Patterns live in two tiers of one columnar store kept in Rust: newly learned patterns enter the
*recent* tier at once; a sync promotes them to the *bulk* tier. A query scans both, on all CPU
cores (the bulk tier moves to the GPU where one is available), and merges by one rule:
similarity descending, then pattern name ascending. Every pattern is in exactly one tier, so no
deduplication is needed and the result is the same whichever tier holds a pattern.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import numbers
import threading
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from . import _native, cuda
from .config import GPUConfig
from .encoder import SymbolVocabularyEncoder
from .errors import GPUUnavailableError

logger = logging.getLogger("kato_gpu.matcher")


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"pattern name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("pattern name must be a non-empty string")
    return name


def _flatten(events: object, what: str = "pattern") -> List[str]:
    """Concatenates a pattern's events; rejects anything but a sequence of sequences of str."""
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise TypeError(f"{what} must be a list of events (lists of str), got {type(events).__name__}")
    flat: List[str] = []
    for k, event in enumerate(events):
        if isinstance(event, (str, bytes)) or not isinstance(event, Sequence):
            raise TypeError(f"{what} event {k} must be a list of str, got {type(event).__name__}")
        flat.extend(event)
    return flat


def _check_state(state: object) -> Sequence[str]:
    if isinstance(state, (str, bytes)) or not isinstance(state, Sequence):
        raise TypeError(f"state must be a list of str symbols, got {type(state).__name__}")
    return state


def _check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
    value = float(threshold)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be a number in [0.0, 1.0], got {threshold!r}")
    return value


def _check_limit(max_predictions: object) -> Optional[int]:
    if max_predictions is None:
        return None
    if isinstance(max_predictions, bool) or not isinstance(max_predictions, numbers.Integral):
        raise TypeError(f"max_predictions must be an int or None, got {type(max_predictions).__name__}")
    if max_predictions < 0:
        raise ValueError(f"max_predictions must be >= 0 or None, got {max_predictions}")
    return int(max_predictions)


class HybridGPUMatcher:
    """Exact matcher of a state against every learned pattern, over a bulk and a recent tier.

    Args:
        encoder: the vocabulary shared with KATO's learning path. Queries only look symbols up;
            they never add to it.
        config: ``GPUConfig``; ``metric`` ("difflib" or "lcs") and ``autojunk`` choose the
            similarity. Defaults to ``GPUConfig()``.
        patterns_cache: accepted for compatibility with KATO's signature; unused.
    """

    def __init__(
        self,
        encoder: SymbolVocabularyEncoder,
        config: Optional[GPUConfig] = None,
        patterns_cache: Optional[Dict[str, Any]] = None,
    ) -> None:
        if not isinstance(encoder, SymbolVocabularyEncoder):
            raise TypeError(f"encoder must be a SymbolVocabularyEncoder, got {type(encoder).__name__}")
        config = GPUConfig() if config is None else config
        if not isinstance(config, GPUConfig):
            raise TypeError(f"config must be a GPUConfig, got {type(config).__name__}")
        config.validate()
        self.encoder = encoder
        self.config = config
        self._core = _native.Matcher(config.metric, config.autojunk)
        self.gpu_unavailable_reason = self._enable_gpu(config)
        self._stats_lock = threading.Lock()
        self.stats: Dict[str, int] = {"queries": 0}
        #: Sync managers attached to this matcher (told about configuration changes).
        self._sync_managers: "weakref.WeakSet" = weakref.WeakSet()
        logger.info(
            "HybridGPUMatcher ready: metric=%s autojunk=%s, bulk tier on %s",
            config.metric,
            config.autojunk,
            "the GPU" if self.use_gpu else f"all CPU cores ({self.gpu_unavailable_reason})",
        )

    def _enable_gpu(self, config: GPUConfig) -> Optional[str]:
        """Attaches the GPU tier when the configuration asks for it and a device can be used;
        returns why not otherwise. Without a usable GPU and with ``fallback_to_cpu=False``,
        raises ``GPUUnavailableError`` (as KATO's matcher raises without CuPy)."""
        if not config.enabled:
            return "disabled by configuration (enabled=False)"
        cuda._preload_nvrtc()
        reason = self._core.enable_gpu(
            config.min_compute_capability,
            config.memory_usage_fraction,
            config.growth_buffer_fraction,
            config.force_max_patterns,
            config.threads_per_block,
            config.fallback_to_cpu,
        )
        if reason is not None:
            if not config.fallback_to_cpu:
                raise GPUUnavailableError(f"no usable GPU and fallback_to_cpu is off: {reason}")
            logger.warning("GPU tier unavailable, serving from all CPU cores: %s", reason)
        return reason

    @property
    def use_gpu(self) -> bool:
        """Whether the bulk tier is scored on a GPU right now (False after a device failure)."""
        return bool(self._core.device_status()["active"])

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    # ------------------------------------------------------------------ queries
    def match_patterns_arrays(
        self, state: Sequence[str], threshold: float, max_predictions: Optional[int] = None
    ) -> "_native.MatchResult":
        """Like :meth:`match_patterns`, but returns a ``MatchResult`` (``.names``,
        ``.similarities`` as a float64 array) without building a dict per match."""
        threshold = _check_threshold(threshold)
        limit = _check_limit(max_predictions)
        ids = self.encoder.lookup_ids(_check_state(state))
        result = self._core.query(ids, threshold, limit)
        self._count("queries")
        return result

    def match_patterns(
        self, state: Sequence[str], threshold: float, max_predictions: Optional[int] = 100
    ) -> List[Dict[str, Any]]:
        """Every pattern whose similarity to ``state`` is ``>= threshold``, as
        ``{'pattern_name', 'similarity'}`` dicts ordered by similarity descending then name
        ascending; at most ``max_predictions`` (``None``: all)."""
        return self.match_patterns_arrays(state, threshold, max_predictions).to_dicts()

    def match_patterns_batch_arrays(
        self, states: Iterable[Sequence[str]], threshold: float, max_predictions: Optional[int] = 100
    ) -> List["_native.MatchResult"]:
        """:meth:`match_patterns_arrays` for many states in one call: the states are spread over
        the cores, and no dict is built per match."""
        threshold = _check_threshold(threshold)
        limit = _check_limit(max_predictions)
        if isinstance(states, (str, bytes)):
            raise TypeError("states must be a list of states (lists of str)")
        lookups = [self.encoder.lookup_ids(_check_state(s)) for s in states]
        results = self._core.query_batch(lookups, threshold, limit)
        self._count("queries", len(lookups))
        return results

    def match_patterns_batch(
        self, states: Iterable[Sequence[str]], threshold: float, max_predictions: Optional[int] = 100
    ) -> List[List[Dict[str, Any]]]:
        """:meth:`match_patterns` for many states in one call (states spread over the cores)."""
        return [r.to_dicts() for r in self.match_patterns_batch_arrays(states, threshold, max_predictions)]

    def match_predictions(
        self,
        state: Sequence[str],
        threshold: float,
        max_predictions: Optional[int] = None,
        *,
        candidates: Optional[Iterable[str]] = None,
        weights: Optional[Dict[str, float]] = None,
        kato_rounding: bool = False,
        fuzzy_token_threshold: float = 0.0,
    ) -> List[tuple]:
        """KATO's prediction tuples for every pattern with similarity ``>= threshold``, in result
        order: ``(pattern_name, pattern, matching_intersection, past, present, missing, extras,
        similarity, number_of_blocks, anomalies, weighted_similarity)`` as KATO's
        ``PatternSearcher`` builds them with ``extract_prediction_info`` (non-fuzzy path; see
        ../shared/REFERENCE.md). ``pattern`` is the flattened pattern.

        Args:
            candidates: only these pattern names are considered (KATO's filter pipeline).
            weights: symbol -> weight; gives ``weighted_similarity`` (else ``None``).
            kato_rounding: reproduce KATO's RapidFuzz path, whose similarity goes through its
                scorer as ``(2.0*l/T*100.0)/100.0`` (differs from ``2.0*l/T`` in the last bit for
                ~16% of pairs); threshold and order then use that value. Only for ``metric="lcs"``.
            fuzzy_token_threshold: above 0, KATO's fuzzy token path: each state symbol is matched to
                its most similar pattern symbol (RapidFuzz ``fuzz.ratio``, first best, at least this
                similar); matched state symbols form the intersection, inexact ones are reported as
                anomalies, missing/extras follow from those matches. This path calls RapidFuzz from
                Python, per prediction (exact, not accelerated); similarities and the matching
                blocks still come from Rust. Needs ``rapidfuzz``.
        """
        threshold = _check_threshold(threshold)
        limit = _check_limit(max_predictions)
        fuzzy = _check_threshold(fuzzy_token_threshold)
        if kato_rounding and self.config.metric != "lcs":
            raise ValueError("kato_rounding reproduces KATO's RapidFuzz token path: it needs metric='lcs'")
        if weights is not None and not isinstance(weights, dict):
            raise TypeError(f"weights must be a dict of symbol -> weight, got {type(weights).__name__}")
        state = list(_check_state(state))
        allowed = None
        if candidates is not None:
            if isinstance(candidates, (str, bytes)):
                raise TypeError("candidates must be a collection of pattern names, not a str")
            allowed = set(candidates)
        # KATO's rounded similarity can sit one ulp either side of 2.0*l/T: query a hair lower and
        # decide on the rounded value below.
        query_threshold = max(0.0, threshold - 1e-9) if kato_rounding else threshold
        whole = allowed is not None or kato_rounding
        result = self.match_patterns_arrays(state, query_threshold, None if whole else limit)
        # Hundreds of thousands of new tuples and lists would otherwise trigger the cyclic garbage
        # collector over and over (it scans every live container): pause it while they are built.
        collecting = gc.isenabled()
        gc.disable()
        try:
            found = [
                (name, sim)
                for name, sim in zip(result.names, result.similarities.tolist())
                if allowed is None or name in allowed
            ]
            if kato_rounding:
                found = [(name, (sim * 100.0) / 100.0) for name, sim in found]
                found = sorted(((n, s) for n, s in found if s >= threshold), key=lambda ns: (-ns[1], ns[0]))
            if limit is not None:
                found = found[:limit]
            if fuzzy > 0.0:
                return self._fuzzy_predictions(found, state, threshold, fuzzy, weights)
            id_to_symbol = self.encoder.id_to_symbol
            symbols = [id_to_symbol.get(i) for i in range(self.encoder.next_id)]
            return self._core.predictions(
                [name for name, _ in found],
                [sim for _, sim in found],
                state,
                self.encoder.lookup_ids(state),
                symbols,
                threshold > 0.0,
                weights,
            )
        finally:
            if collecting:
                gc.enable()

    def _fuzzy_predictions(
        self, found, state: List[str], threshold: float, fuzzy: float, weights: Optional[Dict[str, float]]
    ) -> List[tuple]:
        """KATO's fuzzy token path (see ``match_predictions``), one prediction at a time."""
        try:
            from rapidfuzz import fuzz, process
        except ImportError:  # pragma: no cover - rapidfuzz is a test dependency
            raise ImportError("fuzzy_token_threshold needs rapidfuzz: pip install rapidfuzz") from None
        decode = self.encoder.id_to_symbol
        patterns = [self._core.pattern(name) for name, _ in found]
        parts = _native.prediction_parts(patterns, self.encoder.lookup_ids(state), threshold > 0.0)
        predictions = []
        for (name, similarity), ids, part in zip(found, patterns, parts):
            if part is None:
                continue
            blocks, past_end, (lo, hi), _, _ = part
            pattern = [decode[i] for i in ids]
            matched: Dict[str, tuple] = {}
            intersection, anomalies = [], []
            if pattern:
                for token in state:
                    best = process.extractOne(token, pattern, scorer=fuzz.ratio, score_cutoff=fuzzy * 100)
                    if best:
                        expected, score = best[0], best[1] / 100.0
                        matched[token] = (expected, score)
                        intersection.append(token)
                        if token != expected:
                            anomalies.append({"observed": token, "expected": expected, "similarity": score})
            matched_pattern_symbols = {matched[t][0] for t in state if t in matched}
            present = pattern[lo:hi]
            missing = [t for t in present if t not in matched_pattern_symbols]
            extras = [t for t in state if t not in matched]
            weighted = None
            if weights:
                total = sum(weights.get(t, 0.0) for t in state) + sum(weights.get(t, 0.0) for t in pattern)
                if total > 0:
                    weighted = 2.0 * sum(weights.get(t, 0.0) for t in intersection) / total
            predictions.append(
                (
                    name,
                    pattern,
                    intersection,
                    pattern[:past_end],
                    present,
                    missing,
                    extras,
                    similarity,
                    len(blocks),
                    anomalies,
                    weighted,
                )
            )
        return predictions

    # ------------------------------------------------------------------ learning
    def add_new_pattern(self, pattern_name: str, pattern_sequence: Sequence[Sequence[str]]) -> bool:
        """Learns one pattern into the recent tier. False when the name is already stored."""
        _check_name(pattern_name)
        flat = _flatten(pattern_sequence)
        if pattern_name in self._core:
            return False
        return self._core.add(pattern_name, self.encoder.encode_ids(flat))

    def add_patterns(
        self, names: Sequence[str], events_list: Sequence[Sequence[Sequence[str]]], promote: bool = True
    ) -> int:
        """Learns many patterns at once, all or none (one vocabulary write). Raises ValueError on
        a duplicate or already stored name. With ``promote`` they go straight to the bulk tier."""
        names = list(names)
        events_list = list(events_list)
        if len(names) != len(events_list):
            raise ValueError(f"got {len(names)} names but {len(events_list)} patterns")
        flats = [_flatten(events, f"pattern {k}") for k, events in enumerate(events_list)]
        self._check_new_names(names)
        offsets = np.zeros(len(flats) + 1, dtype=np.int64)
        np.cumsum([len(f) for f in flats], out=offsets[1:])
        ids = self.encoder.encode_ids([s for f in flats for s in f])
        return self._add_csr(names, np.asarray(ids, dtype=np.uint32), offsets, promote)

    def add_patterns_csr(
        self, names: Sequence[str], tokens: np.ndarray, offsets: np.ndarray, promote: bool = True
    ) -> int:
        """Bulk load from arrays: pattern k is ``tokens[offsets[k]:offsets[k+1]]``, tokens being
        symbol ids of this matcher's encoder. All or none (names are checked in Rust)."""
        if isinstance(names, (str, bytes)):
            raise TypeError("names must be a list of str")
        names = list(names)
        tokens = np.asarray(tokens)
        offsets = np.asarray(offsets)
        if tokens.ndim != 1 or offsets.ndim != 1:
            raise ValueError(f"tokens and offsets must be 1-D arrays, got shapes {tokens.shape} and {offsets.shape}")
        if tokens.dtype.kind not in "iu" or offsets.dtype.kind not in "iu":
            raise TypeError(f"tokens and offsets must be integer arrays, got {tokens.dtype} and {offsets.dtype}")
        if tokens.size:
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= self.encoder.next_id:
                raise ValueError(
                    f"token ids must lie in [0, {self.encoder.next_id}) (the encoder's ids), "
                    f"got values in [{low}, {high}]"
                )
        if offsets.size and (int(offsets.min()) < 0 or int(offsets.max()) > np.iinfo(np.int64).max):
            raise ValueError("offsets must be non-negative")
        return self._add_csr(
            names, np.ascontiguousarray(tokens, dtype=np.uint32), np.ascontiguousarray(offsets, dtype=np.int64), promote
        )

    def _check_new_names(self, names: List[str]) -> None:
        seen = set()
        for name in names:
            _check_name(name)
            if name in seen:
                raise ValueError(f"pattern name {name!r} appears more than once in the batch")
            seen.add(name)
            if name in self._core:
                raise ValueError(f"pattern {name!r} is already stored")

    def _add_csr(self, names: List[str], tokens: np.ndarray, offsets: np.ndarray, promote: bool) -> int:
        added = self._core.add_csr(names, tokens, offsets)
        if promote:
            self.sync_cpu_to_gpu()
        return added

    def remove_pattern(self, pattern_name: str) -> bool:
        """Forgets a pattern, whichever tier holds it. False when no such pattern is stored."""
        return self._core.remove(_check_name(pattern_name))

    # ------------------------------------------------------------------ tiers
    def check_sync_needed(self) -> bool:
        """True when the recent tier has reached ``sync_threshold`` patterns, or background sync
        is on, ``sync_interval_seconds`` have passed since the last sync and the recent tier is
        not empty."""
        _, recent = self._core.tiers()
        if recent >= self.config.sync_threshold:
            return True
        elapsed = self._core.seconds_since_promotion()
        return self.config.enable_background_sync and recent > 0 and elapsed >= self.config.sync_interval_seconds

    def sync_cpu_to_gpu(self) -> int:
        """Promotes every recent pattern into the bulk tier (onto the GPU when there is one);
        returns how many moved. Queries keep running meanwhile; they wait only for the final
        swap."""
        started = time.perf_counter()
        moved = self._core.promote()
        bulk, _ = self._core.tiers()
        logger.info(
            "promoted %d patterns to the bulk tier in %.1f ms (bulk: %d)",
            moved,
            (time.perf_counter() - started) * 1e3,
            bulk,
        )
        return moved

    @property
    def last_sync_time(self) -> float:
        """Unix time of the last sync (the matcher's creation before the first)."""
        return self._core.last_promotion

    @last_sync_time.setter
    def last_sync_time(self, unix_seconds: float) -> None:
        self._core.last_promotion = float(unix_seconds)

    @property
    def patterns_since_sync(self) -> int:
        """Patterns waiting in the recent tier (KATO's counter of the same name)."""
        return self._core.tiers()[1]

    #: Configuration fields that can change while the matcher runs.
    RUNTIME_CONFIG_FIELDS = (
        "sync_threshold",
        "sync_interval_seconds",
        "enable_background_sync",
        "log_memory_usage",
        "log_kernel_timing",
    )

    def update_config(self, **changes: Any) -> GPUConfig:
        """Changes runtime settings (``RUNTIME_CONFIG_FIELDS``), validated on a copy first: an
        unknown or fixed field, or an invalid value, raises ``ValueError``/``TypeError`` and
        changes nothing. Attached sync managers follow the new settings."""
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
        for name, value in changes.items():
            setattr(self.config, name, value)
        for manager in list(self._sync_managers):
            manager._apply_config()
        logger.info("configuration updated: %s", changes)
        return self.config

    def get_kpis(self) -> Dict[str, Any]:
        """The seed plan's KPIs: duration histograms (cumulative ``(le, count)`` buckets, ``sum``,
        ``count``), counters and gauges, under their Prometheus names (see docs/OPERATIONS.md)."""
        kpis = dict(self._core.kpis())
        device = self._core.device_status()
        bulk, recent = self._core.tiers()
        on_gpu = device.get("mirrored_patterns", 0) if device["active"] else 0
        kpis["kato_gpu_memory_bytes"] = device.get("used_bytes", 0) if device["active"] else 0
        kpis["kato_gpu_pattern_count"] = on_gpu
        kpis["kato_cpu_pattern_count"] = max(bulk + recent - on_gpu, 0)
        return kpis

    def get_stats(self) -> Dict[str, Any]:
        """Tier sizes, counters and the device's state. KATO's keys are kept: ``gpu_queries`` and
        ``cpu_queries`` count queries whose bulk tier was scored on the GPU / on the CPU."""
        bulk, recent = self._core.tiers()
        device = self._core.device_status()
        kpis = self._core.kpis()
        with self._stats_lock:
            counters = dict(self.stats)
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
            "stored_symbols": self._core.token_count(),
            "memory_bytes": self._core.memory_bytes(),
            "gpu_queries": device["gpu_queries"],
            "cpu_queries": counters["queries"] - device["gpu_queries"],
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
        return self._core.device_status().get("used_bytes", 0) / 1e9

    def get_capacity_info(self) -> Dict[str, Any]:
        """KATO's ``GPUMemoryManager.get_capacity_info`` keys, for the device mirror."""
        device = self._core.device_status()
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

    def clear_all(self) -> None:
        """Forgets every pattern in both tiers (the vocabulary is kept)."""
        self._core.clear()
        logger.info("cleared all patterns")

    def __len__(self) -> int:
        return len(self._core)

    def __contains__(self, pattern_name: object) -> bool:
        return isinstance(pattern_name, str) and pattern_name in self._core

    def __repr__(self) -> str:
        bulk, recent = self._core.tiers()
        device = "gpu" if self.use_gpu else "cpu"
        return f"HybridGPUMatcher(bulk={bulk:,} on {device}, recent={recent:,}, metric={self.config.metric})"
