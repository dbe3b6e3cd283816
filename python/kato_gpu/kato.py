"""kato_gpu inside KATO's serving path, with KATO's code untouched.

Switched on by the environment: ``KATO_GPU_ACCELERATE=1`` in KATO's environment (the wheel's
``kato_gpu_hook.pth`` calls :func:`install` right after KATO imports its pattern processor).
Unset it (or set ``KATO_GPU_ENABLED=false``) and restart to roll back. :func:`install` may also
be called directly before KATO builds its first processor.

What changes, class by class (KATO's own method still runs wherever the note says so):

* ``PatternProcessor.__init__``: after KATO's, the processor's knowledge base (``kb_id``) gets
  one matcher, loaded once from KATO's own pattern store (``kato.patterns_data`` in ClickHouse)
  with progress logged; later processors of the same ``kb_id`` share it.
* ``ClickHouseWriter.write_pattern`` / ``delete_all_patterns`` and
  ``PatternProcessor.delete_pattern``: KATO's method runs first; only when it succeeds does the
  matcher follow (learn / clear / remove). A failed KATO write or delete leaves the matcher as
  it was. Every learn path of KATO writes through ``write_pattern``.
* ``PatternSearcher.causalBeliefAsync`` (every multi-symbol prediction, including the
  per-request searchers ``get_predictions_async`` builds): the candidates are every pattern of
  the ``kb_id`` with KATO's default (no filter stage), else those the session's
  ``filter_pipeline`` selects: its length, Jaccard and RapidFuzz stages evaluated natively with
  the semantics of KATO's executor (counted ``filter_native``), or, where a stage is another one
  (MinHash, Bloom) or a parameter or symbol is one the native rules do not cover exactly (a quote
  or backslash in a symbol of the Jaccard SQL, a non-finite parameter), KATO's own executor
  (``filter_kato_stages``). Over the candidates the matcher scores every pattern exactly as
  KATO's matching would (token mode: KATO's LCS score rounded through 0-100), computes
  KATO's prediction fields and its pre-potential for every match, and hands back only the
  ``3 × max_predictions`` that ``predictPattern`` would keep, as KATO's own ``Prediction``
  objects (metadata from Redis through KATO's ``RedisWriter``). Above KATO's process-pool
  threshold KATO computes no weighted similarity; neither does the matcher there.
* ``PatternProcessor._predict_single_symbol_fast`` (one-symbol states): the candidates (patterns
  whose first symbol is the state's) are ranked natively by KATO's single-symbol potential; only
  the ``max_predictions`` kept are built.
* ``PatternProcessor.predictPattern``: KATO's, unchanged, told how many predictions it keeps.
* ``CachedMetricsCalculator.conditional_probability_cached`` (KATO's Redis cache of each kept
  prediction's conditional probability): during one ``predictPattern`` the hash of the symbol
  probability table, which KATO recomputes (sorting and printing the whole table) for every
  kept prediction although the table does not change, is computed once. The cache keys, the
  Redis traffic and the values are KATO's. Patched only while KATO's method is the version this
  was written against (its source fingerprint); another version is left alone, with a warning.

KATO's original method answers, and :func:`status` counts why, wherever exactness cannot be
kept natively: a searcher without KATO's hybrid (ClickHouse) architecture, fuzzy token matching
(``fuzzy_token_threshold > 0``), character-level matching (``use_token_matching`` off), KATO's
difflib thread path (``KATO_USE_FAST_MATCHING=false`` with at most 500 candidates), target-class
candidates, RapidFuzz missing, or a matcher that lost step with KATO's store (an error while
learning or loading, such as a pattern longer than its ``max_pattern_length``; the next processor
start reloads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
import logging
import math
import threading
import time
from collections.abc import MutableMapping
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .config import GPUConfig
from .encoder import SymbolVocabularyEncoder
from .matcher import HybridGPUMatcher

__all__ = ["install", "installed", "status", "reset", "add_status_route", "FALLBACK_REASONS", "PRUNING_FACTOR"]

logger = logging.getLogger("kato_gpu.kato")

#: ``predictPattern`` keeps this many predictions per ``max_predictions`` for its metrics.
PRUNING_FACTOR = 3

#: Why KATO's own method answered instead of the matcher.
FALLBACK_REASONS = (
    "filter_pipeline",
    "fuzzy_tokens",
    "character_level",
    "difflib_thread_path",
    "target_class_candidates",
    "rapidfuzz_missing",
    "not_loaded",
    "out_of_step",
    "bad_threshold",
    "empty_state",
)

#: Characters of state symbols up to which KATO's Jaccard SQL stays well inside ClickHouse's
#: default ``max_query_size`` (256 KiB) even with 500 candidate names in it; above, KATO's own
#: stage runs.
JACCARD_SQL_LIMIT = 100_000

#: Patterns added per batch while loading a knowledge base.
LOAD_BATCH = 50_000

_installed = False
_install_lock = threading.Lock()


class _KnowledgeBase:
    """One KATO knowledge base (``kb_id``) mirrored in a matcher."""

    def __init__(self, kb_id: str) -> None:
        self.kb_id = kb_id
        self.encoder = SymbolVocabularyEncoder()
        config = GPUConfig.from_env()
        if config.metric != "lcs" or config.autojunk:
            config = GPUConfig(**{**config.__dict__, "metric": "lcs", "autojunk": False})
        self.matcher = HybridGPUMatcher(self.encoder, config)
        #: False after a learn or delete the matcher could not follow: KATO answers until reload.
        self.in_step = False
        self.lock = threading.RLock()

    def _where(self) -> str:
        kb = self.kb_id.replace("\\", "\\\\").replace("'", "\\'")
        return f"kato.patterns_data WHERE kb_id = '{kb}'"

    def _add_rows(self, rows: Any) -> int:
        """Adds the rows (name, pattern_data) the matcher does not hold yet; returns how many."""
        fresh = {}
        for name, events in rows:
            if name not in fresh and name not in self.matcher:
                fresh[name] = [list(e) for e in events]
        if fresh:
            self.matcher.add_patterns_events(list(fresh), list(fresh.values()))
        return len(fresh)

    def load(self, client: Any) -> int:
        """Fills the matcher from KATO's pattern store; returns how many patterns it holds."""
        started = time.perf_counter()
        with self.lock:
            self.in_step = False
            # A pattern the matcher cannot hold (longer than its max_pattern_length, ...) must not
            # stop KATO's processor start: KATO answers for this kb instead.
            try:
                self.loaded_at = client.query("SELECT toUnixTimestamp(now())").result_rows[0][0]
                rows = client.query(f"SELECT name, pattern_data FROM {self._where()}").result_rows
                total = len(rows)
                logger.info("kato_gpu: loading %d patterns of %s from KATO's pattern store", total, self.kb_id)
                self.matcher.clear_all()
                for start in range(0, total, LOAD_BATCH):
                    self._add_rows(rows[start : start + LOAD_BATCH])
                    logger.info(
                        "kato_gpu: %s: %d / %d patterns loaded", self.kb_id, min(start + LOAD_BATCH, total), total
                    )
            except Exception:
                logger.exception("kato_gpu: could not load %s; KATO answers until the next reload", self.kb_id)
                return len(self.matcher)
            self.in_step = True
        logger.info(
            "kato_gpu: %s ready, %d patterns in %.1f s", self.kb_id, len(self.matcher), time.perf_counter() - started
        )
        return len(self.matcher)

    def catch_up(self, client: Any) -> bool:
        """Makes sure the matcher holds what KATO's store holds now, as KATO's own query would
        read it: another process serving the same knowledge base (uvicorn workers) may have
        learned or cleared since. Patterns stored since the last check are added; a store that
        lost patterns is reloaded. Returns whether the matcher is in step (KATO's own code answers
        where it is not)."""
        try:
            return self._catch_up(client)
        except Exception:
            self.in_step = False
            logger.exception(
                "kato_gpu: %s: could not check KATO's store; KATO answers until the next reload", self.kb_id
            )
            return False

    def _catch_up(self, client: Any) -> bool:
        with self.lock:
            if not self.in_step:
                return False
            stored = client.query(f"SELECT count() FROM {self._where()}").result_rows[0][0]
            if stored == len(self.matcher):
                return True
            now = client.query("SELECT toUnixTimestamp(now())").result_rows[0][0]
            if stored > len(self.matcher):
                # created_at has one-second resolution and is set by the store: look a little back.
                since = f"toDateTime({int(self.loaded_at) - 2})"
                rows = client.query(
                    f"SELECT name, pattern_data FROM {self._where()} AND created_at >= {since}"
                ).result_rows
                added = self._add_rows(rows)
                logger.info("kato_gpu: %s: %d patterns learned elsewhere added", self.kb_id, added)
                self.loaded_at = now
                if stored == len(self.matcher):
                    return True
        logger.info("kato_gpu: %s: KATO's store changed elsewhere; reloading", self.kb_id)
        self.load(client)
        return self.in_step

    def learned(self, name: str, events: Any) -> None:
        with self.lock:
            if not self.in_step or name in self.matcher:
                return
            try:
                self.matcher.add_pattern_events(name, [list(e) for e in events])
            except Exception:
                self.in_step = False
                logger.exception(
                    "kato_gpu: %s: could not learn %s; KATO answers until the next reload", self.kb_id, name
                )

    def deleted(self, name: str) -> None:
        with self.lock:
            try:
                self.matcher.remove_pattern(name)
            except Exception:
                self.in_step = False
                logger.exception(
                    "kato_gpu: %s: could not delete %s; KATO answers until the next reload", self.kb_id, name
                )

    def cleared(self) -> None:
        with self.lock:
            try:
                self.matcher.clear_all()
            except Exception:
                self.in_step = False
                logger.exception("kato_gpu: %s: could not clear; KATO answers until the next reload", self.kb_id)


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bases: Dict[str, _KnowledgeBase] = {}
        self.counts: Dict[str, int] = {}

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def get(self, kb_id: str) -> Optional[_KnowledgeBase]:
        return self.bases.get(kb_id)

    def attach(self, kb_id: str, client: Any) -> _KnowledgeBase:
        with self.lock:
            base = self.bases.get(kb_id)
            if base is None:
                base = self.bases[kb_id] = _KnowledgeBase(kb_id)
        with base.lock:
            if not base.in_step:
                base.load(client)
        return base


_registry = _Registry()


def status() -> Dict[str, Any]:
    """What kato_gpu serves: per knowledge base its pattern count and whether it is in step with
    KATO's store; how many predictions it answered (``accelerated``, ``single_symbol``; of the
    accelerated ones, those of sessions with a filter pipeline by who chose the candidates:
    ``filter_native``, ``filter_kato_stages``) and how many KATO's own code answered, by reason
    (``fallback.<reason>``)."""
    return {
        "installed": _installed,
        "knowledge_bases": {
            kb: {"patterns": len(base.matcher), "in_step": base.in_step} for kb, base in _registry.bases.items()
        },
        "counts": dict(_registry.counts),
    }


def reset() -> None:
    """Forgets every knowledge base and count (the next processor start reloads from KATO)."""
    with _registry.lock:
        _registry.bases.clear()
        _registry.counts.clear()


def installed() -> bool:
    return _installed


def add_status_route(app: Any) -> None:
    """Adds ``GET /kato-gpu/status`` (:func:`status` as JSON) to KATO's FastAPI app."""

    async def kato_gpu_status() -> Dict[str, Any]:
        return status()

    app.add_api_route("/kato-gpu/status", kato_gpu_status, methods=["GET"], tags=["kato_gpu"])


class _MatcherNames(MutableMapping):
    """What KATO's searcher sees as ``patterns_cache`` after an accelerated query: KATO's query
    would have refilled it with every pattern of the knowledge base, so membership (what KATO's
    ``delete_pattern`` checks) is the matcher's. Patterns learned or removed later follow the
    matcher through the hooks; ``clear`` empties the view as KATO's dict would be emptied."""

    def __init__(self, base: _KnowledgeBase, only: Optional[frozenset] = None) -> None:
        self._base: Optional[_KnowledgeBase] = base
        #: The filter pipeline's candidates: KATO refills its cache with those only.
        self._only = only
        self._own: Dict[str, Any] = {}
        self._gone: set = set()

    def __contains__(self, name: object) -> bool:
        if name in self._own:
            return True
        base = self._base
        return (
            base is not None
            and name not in self._gone
            and isinstance(name, str)
            and (self._only is None or name in self._only)
            and name in base.matcher
        )

    def __getitem__(self, name: str) -> Any:
        if name in self._own:
            return self._own[name]
        if name not in self:
            raise KeyError(name)
        return self._base.matcher.pattern_symbols(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._own[name] = value
        self._gone.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._own.pop(name, None)
        self._gone.add(name)

    def __iter__(self) -> Iterator[str]:
        seen = set(self._own)
        yield from self._own
        if self._base is not None:
            names = self._base.matcher.pattern_names() if self._only is None else sorted(self._only)
            for name in names:
                if name not in seen and name not in self._gone and (self._only is None or name in self._base.matcher):
                    yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def clear(self) -> None:
        self._base = None
        self._only = None
        self._own.clear()
        self._gone.clear()


def _metadata_of(metadata_batch: Dict[str, Any], name: str) -> Tuple[Dict[str, Any], int]:
    """A pattern's Redis metadata as KATO reads it, and its frequency floored at 1 (a pattern in
    KATO's table with frequency 0 means lost metadata, not an unlearned pattern)."""
    metadata = metadata_batch.get(name, {"name": name, "frequency": 1})
    frequency = metadata.get("frequency", 1)
    if frequency == 0:
        logger.warning("kato_gpu: %s has frequency 0 in Redis (metadata lost?); using 1 as KATO does", name)
        frequency = 1
    return metadata, frequency


def _filter_executor(searcher: Any, state: List[str]) -> Any:
    """KATO's filter pipeline executor of the searcher, created or updated as KATO's candidate
    selection does before every multi-symbol query: the pipeline is fixed when the executor is
    created, its parameters are read from the session's configuration at every stage."""
    executor = searcher.filter_executor
    if executor is None:
        from kato.filters import FilterPipelineExecutor

        executor = searcher.filter_executor = FilterPipelineExecutor(
            config=searcher.session_config,
            state=state,
            clickhouse_client=searcher.clickhouse_client,
            redis_client=searcher.redis_client,
            kb_id=searcher.kb_id,
            bloom_filter=searcher.bloom_filter,
            extractor=searcher.extractor,
        )
    else:
        executor.state = state
        executor.stage_metrics = []
    return executor


def _plain_number(value: Any) -> bool:
    """A parameter the native stages take as KATO's SQL and Python would read it: unset, or an
    int or float of a sane size. Anything else (bools, NaN, huge values, strings) is left to
    KATO's own stages, which treat it as they do."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and abs(value) <= 1e9


def _sql_text_safe(text: Any) -> bool:
    """A symbol KATO's SQL embeds as it is: no quote or backslash (ClickHouse would read them as
    the end of the literal or an escape) and no control character."""
    return isinstance(text, str) and "'" not in text and "\\" not in text and all(c >= " " for c in text)


def _native_stages(searcher: Any, executor: Any, state: List[str], rapidfuzz_available: bool) -> Optional[list]:
    """The executor's pipeline as the native stages (``(name, a, b)``) when every stage it would
    run is KATO's length, Jaccard or RapidFuzz stage and the native rules give exactly the
    candidates KATO's SQL and Python give; else None (KATO's own stages then select them).
    Unknown names are skipped, as KATO skips them."""
    from kato.filters import FilterPipelineExecutor, JaccardFilter, LengthFilter, RapidFuzzFilter

    if not _sql_text_safe(searcher.kb_id):
        return None
    native = {"length": LengthFilter, "jaccard": JaccardFilter, "rapidfuzz": RapidFuzzFilter}
    config = executor.config
    stages = []
    for name in executor.filter_pipeline:
        if not isinstance(name, str):
            return None
        registered = FilterPipelineExecutor.FILTER_REGISTRY.get(name)
        if registered is None:
            continue
        if registered is not native.get(name):
            return None
        if name == "length":
            params = (getattr(config, "length_min_ratio", None), getattr(config, "length_max_ratio", None))
        elif name == "jaccard":
            params = (getattr(config, "jaccard_threshold", None), getattr(config, "jaccard_min_overlap", None))
            # KATO's Jaccard SQL holds every distinct state symbol; past ClickHouse's query size
            # limit it would fail, and a failed stage changes the candidates.
            if not all(_sql_text_safe(t) for t in state) or sum(len(t) + 4 for t in set(state)) > JACCARD_SQL_LIMIT:
                return None
        else:
            extractor = executor.extractor
            # Token-mode LCS similarity is what the native stage computes; KATO's other modes
            # (difflib, characters, fuzzy tokens) stay with KATO.
            if not (
                rapidfuzz_available
                and extractor is not None
                and extractor.use_fast_matcher
                and extractor.use_token_matching
                and not (getattr(config, "fuzzy_token_threshold", 0.0) or 0.0)
            ):
                return None
            params = (getattr(config, "recall_threshold", None), None)
        if not all(_plain_number(p) for p in params):
            return None
        stages.append((name, *params))
    return stages


def _threshold(searcher: Any) -> Optional[float]:
    value = searcher.recall_threshold if searcher.recall_threshold is not None else 0.1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None


def install() -> None:
    """Routes KATO's prediction paths through kato_gpu (idempotent). KATO must be importable."""
    global _installed
    with _install_lock:
        if _installed:
            return
        # KATO_GPU_ENABLED is KATO's switch for its GPU matcher: false means kato_gpu is off and
        # KATO's own code answers. A host without a GPU keeps kato_gpu on its CPU cores instead
        # (KATO_GPU_DEVICE=auto, the default, or cpu).
        if not GPUConfig.from_env().enabled:
            logger.info("kato_gpu: off (KATO_GPU_ENABLED=false); KATO's own prediction paths answer")
            return
        from kato.searches import pattern_search
        from kato.storage import clickhouse_writer
        from kato.storage.redis_writer import RedisWriter
        from kato.workers import pattern_processor

        _patch(pattern_search, pattern_processor, clickhouse_writer, RedisWriter)
        _patch_metrics_cache()
        # KATO sets the level of its own logger from LOG_LEVEL; kato_gpu's lines follow it there
        # unless the application set kato_gpu's level itself.
        ours = logging.getLogger("kato_gpu")
        if ours.level == logging.NOTSET:
            ours.setLevel(logging.getLogger("kato").getEffectiveLevel())
        _installed = True
        logger.info("kato_gpu: KATO's prediction paths now run on kato_gpu")


def _patch(ps: Any, pp: Any, cw: Any, redis_writer_class: Any) -> None:
    Searcher, Processor, Writer = ps.PatternSearcher, pp.PatternProcessor, cw.ClickHouseWriter
    originals = {
        "write_pattern": Writer.write_pattern,
        "delete_all_patterns": Writer.delete_all_patterns,
        "init": Processor.__init__,
        "delete_pattern": Processor.delete_pattern,
        "predictPattern": Processor.predictPattern,
        "single": Processor._predict_single_symbol_fast,
        "causal": Searcher.causalBeliefAsync,
    }

    def write_pattern(self: Any, pattern_object: Any) -> Any:
        written = originals["write_pattern"](self, pattern_object)
        base = _registry.get(self.kb_id)
        if base is not None:
            base.learned(pattern_object.name, pattern_object.pattern_data)
        return written

    def delete_all_patterns(self: Any) -> Any:
        dropped = originals["delete_all_patterns"](self)
        base = _registry.get(self.kb_id)
        if base is not None:
            base.cleared()
        return dropped

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        originals["init"](self, *args, **kwargs)
        _registry.attach(self.kb_id, self.superkb.clickhouse_writer.client)

    def delete_pattern(self: Any, name: str) -> Any:
        outcome = originals["delete_pattern"](self, name)
        base = _registry.get(self.kb_id)
        if base is not None:
            base.deleted(name)
        return outcome

    async def predictPattern(self: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
        searcher = self.patterns_searcher
        searcher._kato_gpu_keep = int(self.max_predictions) * PRUNING_FACTOR
        try:
            with probability_hash_memo() as memo:
                try:
                    return await originals["predictPattern"](self, state, *args, **kwargs)
                finally:
                    await memo.flush()
        finally:
            searcher.__dict__.pop("_kato_gpu_keep", None)

    def searcher_route(searcher: Any, state: Any, target_class_candidates: Any) -> Tuple[Optional[str], Any]:
        if target_class_candidates:
            return "target_class_candidates", None
        config = searcher.session_config
        if not getattr(searcher, "use_hybrid_architecture", False) or config is None:
            return "filter_pipeline", None
        if (getattr(config, "fuzzy_token_threshold", 0.0) or 0.0) > 0.0:
            return "fuzzy_tokens", None
        if not searcher.use_token_matching:
            return "character_level", None
        if not ps.RAPIDFUZZ_AVAILABLE:
            return "rapidfuzz_missing", None
        if not state:
            return "empty_state", None
        base = _registry.get(searcher.kb_id)
        if base is None:
            return "not_loaded", None
        if not base.catch_up(searcher.clickhouse_client):
            return "out_of_step", None
        return None, base

    async def causalBeliefAsync(
        self: Any,
        state: List[str],
        target_class_candidates: Optional[List[str]] = None,
        stm_events: Optional[List[List[str]]] = None,
        max_workers: Optional[int] = None,
        batch_size: int = 100,
    ) -> List[Dict[str, Any]]:
        reason, base = searcher_route(self, state, target_class_candidates)
        threshold = _threshold(self)
        if reason is None and threshold is None:
            reason = "bad_threshold"
        # The candidates: every pattern of the kb (no filter stage), or those the session's
        # filter pipeline selects: natively where its stages allow, else by KATO's own stages.
        candidates = filtered = None
        if reason is None:
            state = list(state)
            executor = _filter_executor(self, state)
            if executor.filter_pipeline:
                stages = _native_stages(self, executor, state, ps.RAPIDFUZZ_AVAILABLE)
                if stages is not None:
                    filtered = "filter_native"
                    candidates = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: base.matcher.kato_filter_candidates(state, stages)
                    )
                else:
                    filtered = "filter_kato_stages"
                    candidates = list(self.getCandidatesViaFilterPipeline(state))
                    if not all(name in base.matcher for name in candidates):
                        reason = "out_of_step"
        count = len(base.matcher) if candidates is None and base is not None else len(candidates or ())
        # KATO scores above this many candidates in a process pool (LCS scorer, no weights)
        # and below it in threads (its fast matcher, or difflib when that is switched off).
        process_pool = base is not None and count > ps.PROCESS_POOL_CANDIDATE_THRESHOLD
        if reason is None and not process_pool and not self.use_fast_matching:
            reason = "difflib_thread_path"
        if reason is not None:
            _registry.count(f"fallback.{reason}")
            return await originals["causal"](self, state, target_class_candidates, stm_events, max_workers, batch_size)
        keep = getattr(self, "_kato_gpu_keep", None)
        weights = None if process_pool else (self.affinity_weights or None)
        total, kept = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: base.matcher.kato_ranked_predictions(
                state,
                threshold,
                keep if keep is not None else len(base.matcher),
                weights=weights,
                rounded=True,
                candidates=candidates,
            ),
        )
        _registry.count("accelerated")
        if filtered is not None:
            _registry.count(filtered)
        if filtered == "filter_native":
            self.patterns_cache = _MatcherNames(base, only=frozenset(candidates))
            self.patterns_count = len(candidates)
        elif filtered is None:
            self.patterns_cache = _MatcherNames(base)
            self.patterns_count = len(base.matcher)
        if not kept:
            return []
        names = [k[0] for k in kept]
        metadata_batch = (
            redis_writer_class(self.kb_id, self.redis_client).get_metadata_batch(names) if self.redis_client else {}
        )
        predictions = []
        # predictPattern tags every match with its pre-potential when it prunes (and the tag stays
        # in the response); it prunes when there are more matches than it keeps.
        pruned = keep is not None and total > keep
        for name, events, intersection, past, present, missing, extras, similarity, blocks, weighted, pre in kept:
            metadata, frequency = _metadata_of(metadata_batch, name)
            pattern = {
                "name": name,
                "pattern_data": events,
                "length": sum(map(len, events)),
                "frequency": frequency,
                "emotives": metadata.get("emotives", {}),
                "metadata": metadata.get("metadata", {}),
            }
            predictions.append(
                ps.Prediction(
                    pattern,
                    intersection,
                    past,
                    present,
                    missing,
                    extras,
                    similarity,
                    blocks,
                    anomalies=[],
                    stm_events=stm_events,
                    weighted_similarity=weighted,
                )
            )
            if pruned:
                predictions[-1]["_pre_potential"] = pre
        _remember_predictions(predictions)
        return predictions

    async def single_symbol(self: Any, symbol: str, stm_events: Optional[List[List[str]]] = None) -> Any:
        base = _registry.get(self.kb_id)
        reason = None
        if base is None:
            reason = "not_loaded"
        elif not self.use_token_matching:
            reason = "character_level"
        elif not ps.RAPIDFUZZ_AVAILABLE:
            reason = "rapidfuzz_missing"
        if reason is None:
            self.superkb.clickhouse_writer.flush_if_pending()
            if not base.catch_up(self.superkb.clickhouse_writer.client):
                reason = "out_of_step"
        if reason is not None:
            _registry.count(f"fallback.{reason}")
            return await originals["single"](self, symbol, stm_events)
        if base.matcher.kato_first_symbol_candidates(symbol) == 0:
            _registry.count("single_symbol")
            return []
        weights = None
        config = getattr(self.patterns_searcher, "session_config", None)
        if getattr(config, "affinity_emotive", None):
            symbols = base.matcher.kato_first_symbol_symbols(symbol)
            weights = self._compute_affinity_weights([symbol], [{"pattern_data": [symbols]}])
        kept = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: base.matcher.kato_single_symbol_predictions(symbol, int(self.max_predictions), weights=weights),
        )
        _registry.count("single_symbol")
        metadata_batch = self.superkb.redis_writer.get_metadata_batch([k[0] for k in kept]) if kept else {}
        predictions = []
        for (
            name,
            events,
            matches,
            missing,
            present,
            past,
            future,
            extras,
            similarity,
            evidence,
            confidence,
            snr,
            fragmentation,
            weighted_similarity,
            weighted_evidence,
            weighted_confidence,
            weighted_snr,
            potential,
        ) in kept:
            metadata, frequency = _metadata_of(metadata_batch, name)
            emotives = metadata.get("emotives", [])
            try:
                if isinstance(emotives, list) and emotives:
                    emotives = pp.average_emotives(emotives)
                elif not emotives:
                    emotives = {}
            except ZeroDivisionError:
                emotives = {}
            predictions.append(
                {
                    "name": name,
                    "pattern_data": events,
                    "length": sum(map(len, events)),
                    "frequency": frequency,
                    "emotives": emotives,
                    "matches": matches,
                    "missing": missing,
                    "present": present,
                    "past": past,
                    "future": future,
                    "extras": extras,
                    "similarity": similarity,
                    "evidence": evidence,
                    "confidence": confidence,
                    "snr": snr,
                    "fragmentation": fragmentation,
                    "anomalies": [],
                    "weighted_similarity": weighted_similarity,
                    "weighted_evidence": weighted_evidence,
                    "weighted_confidence": weighted_confidence,
                    "weighted_snr": weighted_snr,
                    "potential": potential,
                }
            )
        return predictions

    Writer.write_pattern = write_pattern
    Writer.delete_all_patterns = delete_all_patterns
    Processor.__init__ = init
    Processor.delete_pattern = delete_pattern
    Processor.predictPattern = predictPattern
    Processor._predict_single_symbol_fast = single_symbol
    Searcher.causalBeliefAsync = causalBeliefAsync


# -- KATO's conditional-probability cache ---------------------------------------------------------

#: sha256 of the source of KATO's ``CachedMetricsCalculator.conditional_probability_cached`` that
#: :func:`_patch_metrics_cache` reproduces (KATO 3.10.1).
CONDITIONAL_PROBABILITY_FINGERPRINT = "aa9dcbc1cedcdbcc2b8f79b79f7af1d180a77d4206b2a2d2a1943061962d9532"


class _RequestMemo:
    """What one ``predictPattern`` call may compute once for KATO's conditional-probability cache:
    the probability table's hash (KATO builds the table before its metrics loop and only reads it
    there), and the cached values of every kept prediction's key, read from Redis in one round trip
    instead of one per prediction."""

    def __init__(self) -> None:
        self.hashes: Dict[int, Tuple[Any, str]] = {}
        #: The predictions ``causalBeliefAsync`` handed back, in KATO's order.
        self.predictions: Optional[List[Any]] = None
        #: Cache key -> stored value (None: not stored), read for one table.
        self.prefetched: Optional[Dict[str, Any]] = None
        self.prefetched_for: Any = None
        #: Values computed on a prefetched miss, written to KATO's cache in one pipeline by
        #: :meth:`flush` (KATO writes each at once: the same entries, one round trip each).
        self.pending: Dict[str, float] = {}
        self.manager: Any = None

    def table_hash(self, table: Any) -> str:
        known = self.hashes.get(id(table))
        if known is None or known[0] is not table:
            known = (table, _md5_of_sorted(table.items()))
            self.hashes[id(table)] = known
        return known[1]

    async def prefetch(self, manager: Any, table: Any) -> None:
        """Reads the keys KATO's metrics loop is about to ask for (each kept prediction's present
        symbols against `table`) with one MGET. Any failure leaves KATO's one GET per call."""
        self.prefetched, self.prefetched_for = {}, table
        if self.predictions is None or not getattr(manager, "redis", None):
            return
        table_hash = self.table_hash(table)
        keys = []
        for prediction in self.predictions:
            present = [symbol for event in prediction.present for symbol in event]
            if present:
                keys.append(
                    manager._generate_cache_key(
                        "conditional_probability", state_hash=_md5_of_sorted(present), probabilities_hash=table_hash
                    )
                )
        keys = list(dict.fromkeys(keys))
        try:
            values = await manager.redis.mget(keys) if keys else []
        except Exception as error:
            logger.debug("kato_gpu: prefetching KATO's cached conditional probabilities failed: %s", error)
            return
        self.prefetched = dict(zip(keys, values))

    def computed(self, key: str, value: float) -> None:
        """A prefetched miss computed: stored at :meth:`flush`, and read back by a later lookup of
        the same key in this request, as KATO reads back what it stored."""
        assert self.prefetched is not None
        self.prefetched[key] = str(value)
        self.pending[key] = value

    async def flush(self) -> None:
        """Writes the computed values to KATO's cache as its ``cache_metric`` does (the entry with
        its TTL, the key in the cache's index, the index's expiry), all in one pipeline."""
        manager, pending = self.manager, self.pending
        self.pending = {}
        if not pending or manager is None or not getattr(manager, "redis", None):
            return
        try:
            pipe = manager.redis.pipeline(transaction=False)
            for key, value in pending.items():
                pipe.setex(key, manager.ttl, str(value))
                pipe.sadd(manager.index_key, key)
                pipe.expire(manager.index_key, manager.ttl * 2)
            await pipe.execute()
            manager.stats["updates"] += len(pending)
        except Exception as error:
            logger.warning(
                "kato_gpu: storing %d conditional probabilities in KATO's cache failed: %s", len(pending), error
            )

    async def cached_value(self, manager: Any, key_params: Dict[str, str], table: Any) -> Tuple[Optional[str], Any]:
        """(the cache key when the prefetch covered it, the cached value or None), counted in KATO's
        cache statistics as its own lookup would be."""
        self.manager = manager
        if self.prefetched is None or self.prefetched_for is not table:
            await self.prefetch(manager, table)
        key = manager._generate_cache_key("conditional_probability", **key_params)
        if self.prefetched is None or key not in self.prefetched:
            return None, await manager.get_cached_metric("conditional_probability", **key_params)
        stored = self.prefetched[key]
        if stored is None:
            manager.stats["misses"] += 1
            return key, None
        manager.stats["hits"] += 1
        return key, float(stored)


_request_memo: contextvars.ContextVar[Optional[_RequestMemo]] = contextvars.ContextVar(
    "kato_gpu_request_memo", default=None
)


@contextlib.contextmanager
def probability_hash_memo() -> Iterator[_RequestMemo]:
    """One ``predictPattern`` call's :class:`_RequestMemo`."""
    memo = _RequestMemo()
    token = _request_memo.set(memo)
    try:
        yield memo
    finally:
        _request_memo.reset(token)


def _remember_predictions(predictions: List[Any]) -> None:
    memo = _request_memo.get()
    if memo is not None:
        memo.predictions = predictions


def _md5_of_sorted(items: Any) -> str:
    # KATO's cache-key parameter: the md5 of the printed, sorted list.
    return hashlib.md5(str(sorted(items)).encode(), usedforsecurity=False).hexdigest()


def _source_fingerprint(function: Any) -> Optional[str]:
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    except (OSError, TypeError):
        return None


def _patch_metrics_cache() -> bool:
    """Patches KATO's ``conditional_probability_cached`` (see the module notes); False where KATO's
    method is not the version it reproduces."""
    from kato.informatics import metrics
    from kato.storage import metrics_cache

    calculator = metrics_cache.CachedMetricsCalculator
    original = calculator.conditional_probability_cached
    if _source_fingerprint(original) != CONDITIONAL_PROBABILITY_FINGERPRINT:
        logger.warning(
            "kato_gpu: KATO's conditional_probability_cached is not the version kato_gpu knows; "
            "left as it is (its probability-table hash is recomputed per prediction)"
        )
        return False

    async def conditional_probability_cached(self: Any, state: Any, symbol_probabilities: Any) -> Any:
        memo = _request_memo.get()
        if memo is None:
            return await original(self, state, symbol_probabilities)
        key_params = {
            "state_hash": _md5_of_sorted(state),
            "probabilities_hash": memo.table_hash(symbol_probabilities),
        }
        manager = self.cache_manager
        key, cached = await memo.cached_value(manager, key_params, symbol_probabilities)
        if cached is not None:
            return cached
        started = time.time()
        try:
            value = metrics.conditionalProbability(state, symbol_probabilities)
            elapsed = time.time() - started
            if key is None:
                await manager.cache_metric("conditional_probability", value, **key_params)
            else:
                memo.computed(key, value)
            manager.record_calculation_time("conditional_probability", elapsed)
            return value
        except Exception as error:  # as KATO's method: a failed calculation counts as 0.0
            logger.warning("kato_gpu: conditional probability failed, 0.0 used as KATO does: %s", error)
            return 0.0

    conditional_probability_cached.__doc__ = original.__doc__
    conditional_probability_cached.__wrapped__ = original  # type: ignore[attr-defined]
    calculator.conditional_probability_cached = conditional_probability_cached
    return True
