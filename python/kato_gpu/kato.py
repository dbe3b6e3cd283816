"""The KATO adapter: puts a ``HybridGPUMatcher`` behind a KATO ``PatternSearcher``.

One line in KATO switches it on, at the end of ``PatternSearcher.__init__``
(``kato/searches/pattern_search.py``)::

    import kato_gpu.kato; kato_gpu.kato.attach(self)

:func:`attach` changes that one instance only (no class, no module is touched):

* **Learning, deleting, clearing.** ``assignNewlyLearnedToWorkers``, ``delete_pattern`` and
  ``clearPatternsFromRAM`` are wrapped: KATO's own method runs first, unchanged, then the matcher
  follows (learn / remove / clear).
* **Matching.** ``causalBelief`` chooses between two methods that fill its ``results`` list with
  one tuple per matching pattern: ``_process_with_rapidfuzz`` (KATO_USE_FAST_MATCHING on and
  RapidFuzz installed) and ``_process_with_original`` (difflib). Those two are the seam: each is
  replaced by a method with the same signature ``(state, candidates, results)`` that asks
  ``matcher.match_predictions`` for the same tuples and appends them in the order KATO's method
  would have (``causalBelief`` itself does not sort them):

  - ``_process_with_original`` appends in candidate order (one tuple per occurrence of a name);
    reproduced with ``metric="difflib"`` (KATO's extractor has no autojunk);
  - ``_process_with_rapidfuzz`` in token mode appends in ``process.extract`` order: score
    descending, ties in candidate order; reproduced with ``metric="lcs"`` and
    ``kato_rounding=True`` (KATO's scorer rounds through a 0-100 score).

  Everything else in ``causalBelief`` (candidate selection, Bloom filter, building the
  ``Prediction`` objects, the final threshold check) stays KATO's.

KATO's original method still answers (and the reason is counted in ``bridge.stats``) when the
accelerated one cannot give the same result:

* ``fuzzy_token_threshold > 0`` on the RapidFuzz path (the fuzzy path is not accelerated yet),
  or character-level RapidFuzz (``use_token_matching`` off);
* the matcher's metric does not reproduce the path KATO chose (or ``autojunk`` is on);
* a candidate KATO has in ``patterns_cache`` is not in the matcher (patterns not loaded with
  :func:`load_patterns`), or the matcher lost track (an error while learning; see
  :meth:`KatoBridge.resync`);
* an empty state, a recall threshold outside [0, 1], affinity weights that are not a dict, or any
  error raised by the matcher.

``causalBeliefAsync`` (``_process_batch_*``) is not routed through the matcher.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ._progress import Progress
from .config import GPUConfig
from .encoder import SymbolVocabularyEncoder
from .matcher import HybridGPUMatcher

__all__ = ["KatoBridge", "LoadReport", "attach", "load_patterns", "SKIP_REASONS"]

logger = logging.getLogger("kato_gpu.kato")

#: The methods of ``PatternSearcher`` that :func:`attach` replaces on the instance.
PATCHED_METHODS = (
    "assignNewlyLearnedToWorkers",
    "delete_pattern",
    "clearPatternsFromRAM",
    "_process_with_rapidfuzz",
    "_process_with_original",
)

#: Why :func:`load_patterns` skips a record.
SKIP_REASONS = ("not_a_dict", "missing_name", "duplicate_name", "malformed_pattern_data")

_BRIDGE_ATTR = "_kato_gpu_bridge"


def _default_threshold(searcher: Any) -> float:
    # KATO reads ``self.recall_threshold`` and uses 0.1 where it is None.
    value = getattr(searcher, "recall_threshold", None)
    return 0.1 if value is None else value


def _fuzzy_threshold(searcher: Any) -> float:
    # As KATO's RapidFuzz path reads it: from the session config, 0.0 without one.
    session_config = getattr(searcher, "session_config", None)
    value = getattr(session_config, "fuzzy_token_threshold", 0.0) if session_config else 0.0
    return 0.0 if value is None else value


def _kato_metric(searcher: Any) -> str:
    """The metric that reproduces the matching path ``causalBelief`` will take for ``searcher``."""
    module = sys.modules.get(type(searcher).__module__)
    rapidfuzz_available = bool(getattr(module, "RAPIDFUZZ_AVAILABLE", True))
    if (
        getattr(searcher, "use_fast_matching", False)
        and rapidfuzz_available
        and getattr(searcher, "use_token_matching", False)
    ):
        return "lcs"
    return "difflib"


class KatoBridge:
    """The link between one KATO ``PatternSearcher`` and one ``HybridGPUMatcher``.

    Attributes:
        searcher, matcher, sync_manager: what :func:`attach` was given (or built).
        active: the searcher's methods are replaced (False after :meth:`detach`, or when the
            adapter was switched off with ``KATO_GPU_ENABLED=false``).
        in_sync: the matcher follows every learn/delete/clear; False after an error there
            (matching then falls back to KATO until :meth:`resync`).
        stats: counts of accelerated calls and of fallbacks, by reason.
    """

    def __init__(self, searcher: Any, matcher: Optional[HybridGPUMatcher], sync_manager: Any = None) -> None:
        self.searcher = searcher
        self.matcher = matcher
        self.sync_manager = sync_manager
        self.active = False
        self.in_sync = True
        self.stats: Dict[str, int] = {"accelerated": 0}
        self._saved: Dict[str, Tuple[bool, Any]] = {}
        self._originals: Dict[str, Callable[..., Any]] = {}
        self._warned: set = set()

    # ------------------------------------------------------------------ wiring
    def _install(self) -> None:
        searcher = self.searcher
        replacements = {
            "assignNewlyLearnedToWorkers": self._learn,
            "delete_pattern": self._delete,
            "clearPatternsFromRAM": self._clear,
            "_process_with_rapidfuzz": self._process_rapidfuzz,
            "_process_with_original": self._process_original,
        }
        for name, replacement in replacements.items():
            original = getattr(searcher, name, None)
            if original is None:
                logger.warning("%s has no method %s: left as it is", type(searcher).__name__, name)
                continue
            self._saved[name] = (name in vars(searcher), vars(searcher).get(name))
            self._originals[name] = original
            setattr(searcher, name, replacement)
        setattr(searcher, _BRIDGE_ATTR, self)
        self.active = True

    def detach(self) -> None:
        """Gives the searcher its own methods back. The matcher is left as it is."""
        if not self.active:
            return
        instance_dict = vars(self.searcher)
        for name, (had_own, value) in self._saved.items():
            if had_own:
                instance_dict[name] = value
            else:
                instance_dict.pop(name, None)
        if instance_dict.get(_BRIDGE_ATTR) is self:
            del instance_dict[_BRIDGE_ATTR]
        self._saved.clear()
        self._originals.clear()
        self.active = False
        logger.info("kato_gpu detached from %s", type(self.searcher).__name__)

    def resync(self) -> int:
        """Refills the matcher from the searcher's ``patterns_cache`` (name -> flattened pattern)
        and marks it in sync again; returns how many patterns it holds. Use it only where
        ``patterns_cache`` holds every pattern (it does not in KATO's ClickHouse mode, where it
        holds the last query's candidates: reload from the store with :func:`load_patterns`)."""
        self.matcher.clear_all()
        cache = getattr(self.searcher, "patterns_cache", {}) or {}
        records = ({"name": name, "pattern_data": [list(flat)]} for name, flat in cache.items())
        report = load_patterns(self.matcher, records, progress=False)
        self.in_sync = True
        return report.loaded

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _fallback(self, name: str, reason: str, state: Any, candidates: Any, results: list) -> None:
        self._count(f"fallback_{reason}")
        if reason not in self._warned:
            self._warned.add(reason)
            logger.warning(
                "kato_gpu: %s answered by KATO's own method (%s); logged once per reason",
                name,
                reason.replace("_", " "),
            )
        self._originals[name](state, candidates, results)

    def _lost_track(self, what: str) -> None:
        self.in_sync = False
        logger.exception(
            "kato_gpu: the matcher could not follow %s; matching falls back to KATO until bridge.resync() or a reload",
            what,
        )

    # ------------------------------------------------------------------ learning
    def _learn(self, index: int, pattern_name: str, new_pattern: Sequence[str]) -> Any:
        out = self._originals["assignNewlyLearnedToWorkers"](index, pattern_name, new_pattern)
        try:
            if pattern_name in self.matcher:  # learned again: keep the latest content, as KATO does
                self.matcher.remove_pattern(pattern_name)
            self.matcher.add_new_pattern(pattern_name, [list(new_pattern)])
            if self.sync_manager is not None and self.sync_manager.check_sync_needed("automatic"):
                self.sync_manager.trigger_sync("automatic")
        except Exception:
            self._lost_track(f"learning {pattern_name!r}")
        return out

    def _delete(self, name: str) -> Any:
        out = self._originals["delete_pattern"](name)
        try:
            # Always: KATO's patterns_cache may not hold the pattern while the matcher does.
            self.matcher.remove_pattern(name)
        except Exception:
            self._lost_track(f"deleting {name!r}")
        return out

    def _clear(self) -> Any:
        out = self._originals["clearPatternsFromRAM"]()
        try:
            self.matcher.clear_all()
            self.in_sync = True
        except Exception:
            self._lost_track("clearing")
        return out

    # ------------------------------------------------------------------ matching
    def _process_rapidfuzz(self, state: List[str], candidates: Iterable[str], results: list) -> None:
        name = "_process_with_rapidfuzz"
        searcher = self.searcher
        if not getattr(searcher, "use_token_matching", False):
            return self._fallback(name, "character_level", state, candidates, results)
        fuzzy = _fuzzy_threshold(searcher)
        if not isinstance(fuzzy, (int, float)) or fuzzy > 0.0:
            return self._fallback(name, "fuzzy_tokens", state, candidates, results)
        if self.matcher.config.metric != "lcs":
            return self._fallback(name, "metric_mismatch", state, candidates, results)
        self._accelerated(name, state, candidates, results, token_mode=True)

    def _process_original(self, state: List[str], candidates: Iterable[str], results: list) -> None:
        name = "_process_with_original"
        if self.matcher.config.metric != "difflib" or self.matcher.config.autojunk:
            return self._fallback(name, "metric_mismatch", state, candidates, results)
        self._accelerated(name, state, candidates, results, token_mode=False)

    def _accelerated(
        self, name: str, state: List[str], candidates: Iterable[str], results: list, token_mode: bool
    ) -> None:
        searcher = self.searcher
        if not self.in_sync:
            return self._fallback(name, "out_of_sync", state, candidates, results)
        if not state:
            # KATO's scorer gives 0.0 (not 1.0) when pattern and state are both empty.
            return self._fallback(name, "empty_state", state, candidates, results)
        threshold = _default_threshold(searcher)
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or math.isnan(threshold)
            or not 0.0 <= threshold <= 1.0
        ):
            return self._fallback(name, "threshold_out_of_range", state, candidates, results)
        weights = getattr(searcher, "affinity_weights", None)
        if weights is not None and not isinstance(weights, dict):
            return self._fallback(name, "weights_not_a_dict", state, candidates, results)
        if candidates is None:
            candidates = ()
        cache = getattr(searcher, "patterns_cache", None)
        if cache is None:
            return self._fallback(name, "no_patterns_cache", state, candidates, results)
        # KATO only looks at candidates it holds in patterns_cache, in candidate order.
        order = [c for c in candidates if c in cache]
        unique = list(dict.fromkeys(order))  # first occurrences, in order
        if not unique:
            self._count("accelerated")
            return
        matcher = self.matcher
        if not all(map(matcher.__contains__, unique)):
            return self._fallback(name, "pattern_not_loaded", state, candidates, results)
        subset = None if len(unique) == len(matcher) else unique
        try:
            found = matcher.match_predictions(
                state, float(threshold), None, candidates=subset, weights=weights or None, kato_rounding=token_mode
            )
        except Exception:
            logger.exception("kato_gpu: match_predictions failed")
            return self._fallback(name, "matcher_error", state, candidates, results)
        self._count("accelerated")
        if token_mode:
            # process.extract: score descending, ties in the order of the choices dict.
            wanted = {t[0] for t in found}
            position = {c: k for k, c in enumerate(unique) if c in wanted}
            found.sort(key=lambda t: (-t[7], position[t[0]]))
            for t in found:
                if not t[1]:
                    # An empty pattern: KATO's extractor leaves missing/extras empty.
                    t = t[:5] + ([], []) + t[7:]
                results.append(t)
        else:
            by_name = {}
            for t in found:
                if t[8] == 0:
                    # No block (threshold 0.0): KATO's difflib path takes the whole pattern as
                    # missing, the whole state as extras, and gives no weighted similarity.
                    t = t[:5] + (t[1], list(state)) + t[7:10] + (None,)
                by_name[t[0]] = t
            for c in order:
                t = by_name.get(c)
                if t is not None:
                    results.append(t)


def attach(
    searcher: Any,
    matcher: Optional[HybridGPUMatcher] = None,
    config: Optional[GPUConfig] = None,
    sync_manager: Any = None,
) -> KatoBridge:
    """Routes ``searcher``'s pattern matching through a ``HybridGPUMatcher`` (see the module doc).

    Args:
        searcher: a KATO ``PatternSearcher`` (or anything with its method and attribute names).
        matcher: the matcher to use; by default one is built from ``config`` with a fresh
            in-memory vocabulary.
        config: used when ``matcher`` is None; by default ``GPUConfig.from_env()``, whose metric,
            when ``KATO_GPU_METRIC`` is unset, is chosen to reproduce the path KATO will take
            (``lcs`` for RapidFuzz token matching, else ``difflib``).
        sync_manager: optional ``SyncManager``; checked after each learned pattern.

    Returns:
        The ``KatoBridge``; ``bridge.detach()`` restores the searcher. With ``config`` from the
        environment and ``KATO_GPU_ENABLED=false`` nothing is changed and the bridge is inactive.
        Attaching a searcher twice returns its existing bridge.
    """
    existing = getattr(searcher, _BRIDGE_ATTR, None)
    if isinstance(existing, KatoBridge) and existing.active:
        logger.warning("kato_gpu is already attached to this %s", type(searcher).__name__)
        return existing
    if matcher is None:
        if config is None:
            config = GPUConfig.from_env()
            if not config.enabled:
                logger.info("KATO_GPU_ENABLED is false: %s keeps its own matching", type(searcher).__name__)
                return KatoBridge(searcher, None, sync_manager)
            if not os.environ.get("KATO_GPU_METRIC", "").strip():
                config = dataclasses.replace(config, metric=_kato_metric(searcher))
        matcher = HybridGPUMatcher(SymbolVocabularyEncoder(None), config)
    elif not isinstance(matcher, HybridGPUMatcher):
        raise TypeError(f"matcher must be a HybridGPUMatcher, got {type(matcher).__name__}")
    bridge = KatoBridge(searcher, matcher, sync_manager)
    if getattr(searcher, "patterns_cache", None):
        bridge.resync()
    bridge._install()
    expected = _kato_metric(searcher)
    if matcher.config.metric != expected or matcher.config.autojunk:
        logger.warning(
            "kato_gpu: KATO will take its %s path but the matcher uses metric=%s autojunk=%s: "
            "those queries fall back to KATO's own code",
            expected,
            matcher.config.metric,
            matcher.config.autojunk,
        )
    logger.info(
        "kato_gpu attached to %s: metric=%s, %d patterns", type(searcher).__name__, matcher.config.metric, len(matcher)
    )
    return bridge


# ---------------------------------------------------------------------- loading
@dataclasses.dataclass
class LoadReport:
    """What :func:`load_patterns` did: patterns loaded, records skipped by reason, time taken."""

    loaded: int
    skipped: Dict[str, int]
    seconds: float


def _check_record(record: Any) -> Tuple[Optional[str], Any]:
    """(reason, None) for a bad record, else (None, (name, events))."""
    if not isinstance(record, dict):
        return "not_a_dict", None
    name = record.get("name")
    if not isinstance(name, str) or not name:
        return "missing_name", None
    events = record.get("pattern_data")
    if not isinstance(events, list):
        return "malformed_pattern_data", None
    for event in events:
        if not isinstance(event, list) or not all(isinstance(s, str) for s in event):
            return "malformed_pattern_data", None
    return None, (name, events)


def load_patterns(
    matcher: HybridGPUMatcher, records: Iterable[Any], *, batch_size: int = 50_000, progress: bool = True
) -> LoadReport:
    """Fills ``matcher`` from KATO pattern records ``{'name': ..., 'pattern_data': [[...], ...]}``
    (e.g. a cursor over KATO's patterns collection), ``batch_size`` at a time through
    ``matcher.add_patterns``. Records that are not dicts, have no (or an empty) name, repeat a
    name (already stored or seen earlier in ``records``) or whose ``pattern_data`` is not a list
    of lists of str are skipped and counted by reason; none of them reaches the matcher."""
    if not isinstance(matcher, HybridGPUMatcher):
        raise TypeError(f"matcher must be a HybridGPUMatcher, got {type(matcher).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    started = time.perf_counter()
    skipped = {reason: 0 for reason in SKIP_REASONS}
    try:
        total = len(records)  # type: ignore[arg-type]
    except TypeError:
        total = 0
    loaded = 0
    seen: set = set()
    names: List[str] = []
    events_list: List[list] = []
    bar = Progress(total, label="loading patterns", unit="patterns", enabled=progress and total > 0)

    def flush() -> None:
        nonlocal loaded
        if names:
            loaded += matcher.add_patterns(names, events_list)
            names.clear()
            events_list.clear()

    with bar:
        for record in records:
            reason, good = _check_record(record)
            if reason is None:
                name, events = good
                if name in seen or name in matcher:
                    reason = "duplicate_name"
                else:
                    seen.add(name)
                    names.append(name)
                    events_list.append(events)
                    if len(names) >= batch_size:
                        flush()
            if reason is not None:
                skipped[reason] += 1
            bar.update(1)
        flush()
    seconds = time.perf_counter() - started
    skipped_total = sum(skipped.values())
    logger.info(
        "loaded %d patterns in %.2fs; skipped %d%s",
        loaded,
        seconds,
        skipped_total,
        "" if not skipped_total else " (" + ", ".join(f"{reason}: {n}" for reason, n in skipped.items() if n) + ")",
    )
    return LoadReport(loaded=loaded, skipped=skipped, seconds=seconds)
