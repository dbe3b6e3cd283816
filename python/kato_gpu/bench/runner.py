"""The benchmark: load a workload, time the same queries through every engine, verify.

Engines, per metric:

* ``kato_gpu``: ``HybridGPUMatcher.match_patterns_arrays`` (one untimed warm-up query first).
* ``rapidfuzz``: ``process.cdist([state], patterns, scorer=LCSseq.similarity, workers=-1)`` on
  integer-encoded patterns, then ``2.0*lcs/(len_p+len_s)``, the threshold and the ordering in
  NumPy. For ``lcs`` this is the exact oracle for the whole result; for ``difflib`` it is only
  a speed reference (a different metric).
* ``difflib``: ``SequenceMatcher(None, pattern, state, autojunk=False).ratio()`` over a seeded
  random sample of patterns (strings, as KATO holds them), timed and extrapolated to N. For
  ``difflib`` it is the exact oracle on the sample.

Any difference from an oracle is printed and makes :func:`run` return 1.

Threshold sweep (``thresholds`` not empty), after each metric's timed queries: the same queries
through ``match_patterns_arrays(state, t, max_predictions)`` for every threshold ``t`` (median,
p95, matches per query), each result checked as the main path checks it: against RapidFuzz for
``lcs`` (one ``cdist`` per query, timed once as the reference, filtered per threshold), against
the same difflib sample for ``difflib``.

Batch (``batch`` > 0), next: ``batch`` new query states (another seed stream) through one batch
call against as many single ``match_patterns_arrays`` calls, best of three runs each; the batch
results must equal the single results exactly, and a few are checked against the oracle.

Learning (``learn`` > 0), after each metric's queries and checks, on the same loaded matcher:
``learn`` new patterns of the same shape (another seed, names after the loaded ones) are learned
one ``HybridGPUMatcher.add_new_pattern(name, events)`` call at a time, events as lists of
symbols (vocabulary encoding included), each call timed with ``time.perf_counter_ns``; then one
``sync_cpu_to_gpu()`` promotes them all and is timed too.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._progress import Progress
from .workload import Workload, generate_queries, generate_workload, pattern_index, pattern_name, pattern_names

#: Seed offset of the learned patterns' workload (a stream distinct from the loaded patterns').
LEARN_SEED_OFFSET = 1_000_003
#: Seed streams: ``[seed, 2, q]`` is query q's difflib sample (main path and threshold sweep);
#: ``[seed, BATCH_STREAM]`` makes the batch states, ``[seed, BATCH_SAMPLE_STREAM, k]`` the difflib
#: sample that checks batch state k.
SAMPLE_STREAM = 2
BATCH_STREAM = 3
BATCH_SAMPLE_STREAM = 4
BATCH_RUNS = 3  # the batch and the single calls are each timed this many times; the best counts
BATCH_ORACLE_CHECKS = 5  # batch results also checked against the oracle

__all__ = ["BenchOptions", "run", "EXIT_OK", "EXIT_MISMATCH", "EXIT_MISSING_DEPENDENCY"]

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_MISSING_DEPENDENCY = 2

METRICS = ("lcs", "difflib")
METRIC_FORMULAS = {
    "lcs": "2.0*LCS(p, s)/(len(p)+len(s)), LCS = rapidfuzz LCSseq.similarity",
    "difflib": "difflib.SequenceMatcher(None, p, s, autojunk=False).ratio()",
}
MAX_REPORTED = 10  # mismatch descriptions kept per metric


@dataclass
class BenchOptions:
    patterns: int = 100_000
    queries: int = 20
    shape: str = "kato"
    metrics: Tuple[str, ...] = METRICS
    threshold: float = 0.1
    max_predictions: Optional[int] = None  # None: every match
    difflib_sample: int = 2000
    seed: int = 42
    json_path: Optional[str] = None
    load_chunk: int = 50_000
    progress: bool = True
    learn: int = 20_000  # patterns learned one add_new_pattern call at a time; 0: no learning
    thresholds: Tuple[float, ...] = ()  # threshold sweep; empty: none
    batch: int = 0  # states in the batch comparison; 0: none
    batch_limit: Union[int, None, str] = "same"  # max_predictions of the batch part; "same": max_predictions
    batch_dicts: bool = False  # also time the public match_patterns_batch (a dict per match)


# ---------------------------------------------------------------------------- small helpers
def _rss_bytes() -> Optional[int]:
    """Resident set size from /proc/self/status (None where that file does not exist)."""
    try:
        with open("/proc/self/status", "r", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _mb(n: Optional[float]) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.1f} MB"


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def _summary(times_s: Sequence[float]) -> Dict[str, float]:
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(np.mean(ms)),
        "min_ms": float(np.min(ms)),
        "max_ms": float(np.max(ms)),
    }


def _cpu_counts() -> Tuple[Optional[int], Optional[int]]:
    usable = None
    if hasattr(os, "sched_getaffinity"):
        try:
            usable = len(os.sched_getaffinity(0))
        except OSError:
            usable = None
    return os.cpu_count(), usable


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# ---------------------------------------------------------------------------- references
def rapidfuzz_lcs_matches(
    cdist,
    scorer,
    state_ids: List[int],
    choices: List[List[int]],
    pattern_lengths: np.ndarray,
    threshold: float,
    max_predictions: Optional[int],
) -> Tuple[np.ndarray, np.ndarray, int]:
    """The expected ``lcs`` result with RapidFuzz: (indices, similarities, matches before the
    limit), ordered by similarity descending then index (== name) ascending."""
    sims = rapidfuzz_lcs_similarities(cdist, scorer, state_ids, choices, pattern_lengths)
    return filter_and_order(sims, threshold, max_predictions)


def rapidfuzz_lcs_similarities(
    cdist, scorer, state_ids: List[int], choices: List[List[int]], pattern_lengths: np.ndarray
) -> np.ndarray:
    """``2.0*LCS/(len_p+len_s)`` of every pattern with RapidFuzz's ``cdist`` (1.0 when both are
    empty); does not depend on the threshold."""
    lcs = cdist([state_ids], choices, scorer=scorer, workers=-1, dtype=np.int32)[0]
    total = pattern_lengths + len(state_ids)
    sims = np.ones(len(total), dtype=np.float64)
    np.divide(2.0 * lcs, total, out=sims, where=total > 0)
    return sims


def filter_and_order(
    sims: np.ndarray, threshold: float, max_predictions: Optional[int]
) -> Tuple[np.ndarray, np.ndarray, int]:
    """(indices, similarities, matches before the limit) of ``sims >= threshold``, ordered by
    similarity descending then index ascending, at most ``max_predictions``."""
    idx = np.flatnonzero(sims >= threshold)
    s = sims[idx]
    order = np.lexsort((idx, -s))
    idx, s = idx[order], s[order]
    above = len(idx)
    if max_predictions is not None:
        idx, s = idx[:max_predictions], s[:max_predictions]
    return idx, s, above


def difflib_ratios(patterns: Sequence[Sequence[str]], state: Sequence[str]) -> List[float]:
    """KATO's ratio: pattern as ``a``, state as ``b``, no autojunk."""
    return [difflib.SequenceMatcher(None, p, state, autojunk=False).ratio() for p in patterns]


def sample_indices(seed: int, stream: int, q: int, n: int, size: int) -> np.ndarray:
    """The seeded sample ``[seed, stream, q]``: ``size`` distinct pattern indices, sorted."""
    rng = np.random.default_rng([seed, stream, q])
    return np.sort(rng.choice(n, size=size, replace=False))


# ---------------------------------------------------------------------------- checks
def _describe(idx: int, sim: Optional[float]) -> str:
    name = pattern_name(idx) if idx >= 0 else "<unknown name>"
    return f"{name} {sim!r}" if sim is not None else name


def compare_full(
    got_idx: np.ndarray, got_sims: np.ndarray, exp_idx: np.ndarray, exp_sims: np.ndarray, limit: int = 3
) -> List[str]:
    """Differences between kato_gpu's whole result and the expected one (bit for bit)."""
    problems: List[str] = []
    if len(got_idx) != len(exp_idx):
        problems.append(f"kato_gpu returned {len(got_idx):,} matches, expected {len(exp_idx):,}")
    n = min(len(got_idx), len(exp_idx))
    differ = np.flatnonzero((got_idx[:n] != exp_idx[:n]) | (_bits(got_sims[:n]) != _bits(exp_sims[:n])))
    for j in differ[:limit].tolist():
        problems.append(
            f"position {j}: kato_gpu {_describe(int(got_idx[j]), float(got_sims[j]))}, "
            f"expected {_describe(int(exp_idx[j]), float(exp_sims[j]))}"
        )
    if len(differ) > limit:
        problems.append(f"... {len(differ) - limit:,} more differing positions")
    if not differ.size and len(got_idx) > n:
        problems.append(f"first extra match at position {n}: {_describe(int(got_idx[n]), float(got_sims[n]))}")
    elif not differ.size and len(exp_idx) > n:
        problems.append(f"first missing match at position {n}: {_describe(int(exp_idx[n]), float(exp_sims[n]))}")
    return problems


def check_result_shape(
    got_idx: np.ndarray, got_sims: np.ndarray, threshold: float, max_predictions: Optional[int]
) -> List[str]:
    """Properties every result has: known names, similarity >= threshold, strictly ordered by
    (similarity descending, name ascending) (so no duplicates), at most max_predictions."""
    problems: List[str] = []
    unknown = np.flatnonzero(got_idx < 0)
    if unknown.size:
        problems.append(
            f"{unknown.size:,} result names are not names of loaded patterns (first at position {int(unknown[0])})"
        )
    if max_predictions is not None and len(got_idx) > max_predictions:
        problems.append(f"{len(got_idx):,} matches returned, max_predictions is {max_predictions}")
    below = np.flatnonzero(~(got_sims >= threshold))
    if below.size:
        j = int(below[0])
        problems.append(f"position {j}: similarity {float(got_sims[j])!r} is below the threshold {threshold!r}")
    if len(got_idx) > 1:
        a, b = got_sims[:-1], got_sims[1:]
        ok = (a > b) | ((a == b) & (got_idx[:-1] < got_idx[1:]))
        bad = np.flatnonzero(~ok)
        if bad.size:
            j = int(bad[0])
            problems.append(
                f"positions {j}, {j + 1} out of order: {_describe(int(got_idx[j]), float(got_sims[j]))} "
                f"then {_describe(int(got_idx[j + 1]), float(got_sims[j + 1]))}"
            )
    return problems


def check_sample(
    sample: np.ndarray,
    values: np.ndarray,
    got_idx: np.ndarray,
    got_sims: np.ndarray,
    n_patterns: int,
    threshold: float,
    max_predictions: Optional[int],
    oracle: str,
    limit: int = 3,
) -> List[str]:
    """Every sampled pattern must be in kato_gpu's result with the identical float exactly when
    the oracle says it matches (and, with a limit, ranks within the returned top K)."""
    pos = np.full(n_patterns, -1, dtype=np.int64)
    known = got_idx >= 0
    pos[got_idx[known]] = np.flatnonzero(known)
    where = pos[sample]
    present = where >= 0
    expected = values >= threshold
    if max_predictions is not None and len(got_idx) >= max_predictions and len(got_idx) > 0:
        last_sim, last_idx = float(got_sims[-1]), int(got_idx[-1])
        expected &= (values > last_sim) | ((values == last_sim) & (sample <= last_idx))
    problems: List[str] = []
    missing = np.flatnonzero(expected & ~present)
    extra = np.flatnonzero(present & ~expected)
    both = np.flatnonzero(present & expected)
    wrong = both[_bits(got_sims[where[both]]) != _bits(values[both])]
    for k in missing[:limit].tolist():
        problems.append(f"missing {_describe(int(sample[k]), None)}: {oracle} gives {float(values[k])!r}")
    for k in extra[:limit].tolist():
        problems.append(
            f"unexpected {_describe(int(sample[k]), float(got_sims[where[k]]))}: {oracle} gives {float(values[k])!r}"
        )
    for k in wrong[:limit].tolist():
        problems.append(
            f"{_describe(int(sample[k]), None)}: kato_gpu {float(got_sims[where[k]])!r}, {oracle} {float(values[k])!r}"
        )
    hidden = len(missing) + len(extra) + len(wrong) - sum(min(limit, len(x)) for x in (missing, extra, wrong))
    if hidden > 0:
        problems.append(f"... {hidden:,} more sampled patterns differ")
    return problems


# ---------------------------------------------------------------------------- one metric
def _load(kato_gpu, encoder, metric: str, wl: Workload, tokens_enc: np.ndarray, opts: BenchOptions, err: IO[str]):
    gc.collect()
    rss_before = _rss_bytes()
    matcher = kato_gpu.HybridGPUMatcher(encoder, kato_gpu.GPUConfig(metric=metric))
    n = wl.n_patterns
    offsets = wl.offsets
    chunk = max(1, opts.load_chunk)
    started = time.perf_counter()
    with Progress(n, label=f"loading ({metric})", unit="patterns", stream=err, enabled=opts.progress) as bar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            a, b = int(offsets[start]), int(offsets[stop])
            added = matcher.add_patterns_csr(
                pattern_names(start, stop), tokens_enc[a:b], offsets[start : stop + 1] - a, promote=True
            )
            if added != stop - start:
                raise RuntimeError(f"add_patterns_csr added {added} of {stop - start} patterns")
            bar.update(stop - start)
    seconds = time.perf_counter() - started
    gc.collect()
    rss_after = _rss_bytes()
    stats = matcher.get_stats()
    if int(stats.get("total_patterns", n)) != n:
        raise RuntimeError(f"matcher holds {stats.get('total_patterns')} patterns, loaded {n}")
    load = {
        "seconds": seconds,
        "patterns_per_s": n / seconds if seconds > 0 else None,
        "memory_bytes": stats.get("memory_bytes"),
        "rss_growth_bytes": (rss_after - rss_before) if rss_before is not None and rss_after is not None else None,
        "stats": stats,
    }
    return matcher, load


def learn_workload(opts: BenchOptions) -> Optional[Workload]:
    """The patterns learned one by one: ``opts.learn + 1`` patterns of the same shape (the extra
    one is the warm-up), from another seed; None when learning is off."""
    if opts.learn <= 0:
        return None
    return generate_workload(opts.learn + 1, 0, opts.shape, opts.seed + LEARN_SEED_OFFSET)


def _learn(matcher, lw: Workload, n_loaded: int, opts: BenchOptions, err: IO[str]) -> Tuple[Dict[str, Any], List[str]]:
    """Learns ``lw``'s patterns into ``matcher`` one ``add_new_pattern`` call at a time (timed
    each), then promotes them with one ``sync_cpu_to_gpu()`` (timed). Pattern ``k`` of ``lw`` is
    named ``pattern_name(n_loaded + k)``: after every loaded name, so none collides. Pattern 0 is
    the untimed warm-up; it is removed again before the timed calls."""
    count = lw.n_patterns - 1
    # Built before timing: the events as KATO passes them (lists of lists of str).
    events = [lw.pattern_events(k) for k in range(lw.n_patterns)]
    names = pattern_names(n_loaded, n_loaded + lw.n_patterns)
    problems: List[str] = []
    before = len(matcher)

    if not matcher.add_new_pattern(names[0], events[0]) or not matcher.remove_pattern(names[0]):
        problems.append(f"warm-up pattern {names[0]} was not learned and removed")
    times_ns = np.empty(count, dtype=np.int64)
    refused = 0
    add = matcher.add_new_pattern
    clock = time.perf_counter_ns
    gc.collect()
    with Progress(count, label="learning", unit="patterns", stream=err, enabled=opts.progress) as bar:
        for start in range(0, count, 1000):
            stop = min(count, start + 1000)
            for k in range(start, stop):
                name, ev = names[k + 1], events[k + 1]
                t0 = clock()
                added = add(name, ev)
                t1 = clock()
                times_ns[k] = t1 - t0
                refused += not added
            bar.update(stop - start)
    learned = len(matcher) - before
    if refused:
        problems.append(f"add_new_pattern refused {refused:,} of {count:,} new patterns")
    if learned != count:
        problems.append(f"the matcher grew by {learned:,} patterns, {count:,} were learned")
    recent_before = matcher.patterns_since_sync

    t0 = time.perf_counter_ns()
    promoted = matcher.sync_cpu_to_gpu()
    promote_ns = time.perf_counter_ns() - t0
    if promoted != recent_before:
        problems.append(f"sync_cpu_to_gpu promoted {promoted:,} patterns, {recent_before:,} were recent")

    us = times_ns.astype(np.float64) / 1e3
    total_s = float(times_ns.sum()) / 1e9
    stats = matcher.get_stats()
    result = {
        "patterns": count,
        "warmup_calls": 1,
        "learned": learned,
        "mean_pattern_len": float(lw.lengths[1:].mean()),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
        "mean_us": float(us.mean()),
        "min_us": float(us.min()),
        "total_s": total_s,
        "patterns_per_s": count / total_s if total_s > 0 else None,
        "promotion": {
            "ms": promote_ns / 1e6,
            "patterns": int(promoted),
            "us_per_pattern": promote_ns / 1e3 / promoted if promoted else None,
            "bulk_device": stats.get("bulk_tier_device"),
        },
        "matcher_patterns_after": len(matcher),
        "bulk_tier_patterns_after": stats.get("bulk_tier_patterns"),
        "recent_tier_patterns_after": stats.get("recent_tier_patterns"),
    }
    return result, problems


# ---------------------------------------------------------------------------- threshold sweep
def _result_arrays(res, n: int) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(indices, float64 similarities, problems) of a MatchResult-like object."""
    sims = np.asarray(res.similarities, dtype=np.float64)
    names = list(res.names)
    if len(names) != len(sims) or len(res) != len(sims):
        return (
            np.full(0, -1, dtype=np.int64),
            sims[:0],
            [f"len(res)={len(res)}, {len(names)} names, {len(sims)} similarities"],
        )
    return pattern_index(names, n), sims, []


def _threshold_sweep(
    matcher,
    rf,
    metric: str,
    wl: Workload,
    states: List[List[str]],
    state_ids: List[List[int]],
    choices: List[List[int]],
    difflib_samples: Dict[int, Tuple[np.ndarray, np.ndarray]],
    opts: BenchOptions,
    err: IO[str],
) -> Tuple[Dict[str, Any], List[str]]:
    """Times ``match_patterns_arrays(state, t, max_predictions)`` over the queries for every
    threshold ``t`` in ``opts.thresholds`` and checks every result: against RapidFuzz (one
    ``cdist`` per query, timed once, filtered per threshold) for ``lcs``; on the main path's
    difflib sample for ``difflib``."""
    cdist, lcs_scorer = rf["cdist"], rf["LCSseq"].similarity
    n, limit, lengths = wl.n_patterns, opts.max_predictions, wl.lengths
    thresholds = list(opts.thresholds)
    kato_t: Dict[int, List[float]] = {j: [] for j in range(len(thresholds))}
    counts: Dict[int, List[int]] = {j: [] for j in range(len(thresholds))}
    filter_t: Dict[int, List[float]] = {j: [] for j in range(len(thresholds))}
    cdist_t: List[float] = []
    problems: List[str] = []
    bad = set()
    whole = sampled = 0

    def note(j: int, q: int, found: List[str]) -> None:
        if found:
            bad.add((j, q))
            for text in found:
                if len(problems) < MAX_REPORTED:
                    problems.append(f"threshold {thresholds[j]!r} query {q}: {text}")

    gc.collect()
    with Progress(
        wl.n_queries, label=f"threshold sweep ({metric})", unit="queries", stream=err, enabled=opts.progress
    ) as bar:
        for q in range(wl.n_queries):
            t0 = time.perf_counter()
            all_sims = rapidfuzz_lcs_similarities(cdist, lcs_scorer, state_ids[q], choices, lengths)
            cdist_t.append(time.perf_counter() - t0)
            for j, t in enumerate(thresholds):
                t0 = time.perf_counter()
                res = matcher.match_patterns_arrays(states[q], t, limit)
                kato_t[j].append(time.perf_counter() - t0)
                counts[j].append(len(res))
                got_idx, got_sims, found = _result_arrays(res, n)
                del res
                if found:
                    note(j, q, found)
                    continue
                note(j, q, check_result_shape(got_idx, got_sims, t, limit))
                if metric == "lcs":
                    t0 = time.perf_counter()
                    exp_idx, exp_sims, _ = filter_and_order(all_sims, t, limit)
                    filter_t[j].append(time.perf_counter() - t0)
                    note(j, q, compare_full(got_idx, got_sims, exp_idx, exp_sims))
                    whole += 1
                elif q in difflib_samples:
                    sample, values = difflib_samples[q]
                    note(j, q, check_sample(sample, values, got_idx, got_sims, n, t, limit, "difflib"))
                    sampled += len(sample)
            del all_sims
            bar.update(1)

    cdist_sum = _summary(cdist_t)
    rows = []
    for j, t in enumerate(thresholds):
        k = _summary(kato_t[j])
        rows.append(
            {
                "threshold": t,
                **k,
                "times_ms": [x * 1e3 for x in kato_t[j]],
                "matches_per_query": counts[j],
                "mean_matches": float(np.mean(counts[j])),
                "cdist_median_ms": cdist_sum["median_ms"],
                "speedup": cdist_sum["median_ms"] / k["median_ms"] if k["median_ms"] > 0 else None,
                "rapidfuzz_filter_median_ms": float(np.median(filter_t[j]) * 1e3) if filter_t[j] else None,
                "ok": not any(jq[0] == j for jq in bad),
            }
        )
    sweep = {
        "max_predictions": limit,
        "kato_gpu": "match_patterns_arrays(state, threshold, max_predictions)",
        "cdist": {
            "label": "rapidfuzz cdist LCSseq (workers=-1), once per query",
            "role": (
                "exact oracle (whole result, filtered per threshold)"
                if metric == "lcs"
                else "speed reference only (LCS, not difflib)"
            ),
            "times_ms": [x * 1e3 for x in cdist_t],
            **cdist_sum,
        },
        "rows": rows,
        "verification": {
            "ok": not bad,
            "results_with_differences": len(bad),
            "whole_results_checked": whole,
            "sampled_pairs_checked": sampled,
            "first_differences": problems,
        },
    }
    return sweep, problems if bad else []


# ---------------------------------------------------------------------------- batch
def batch_limit(opts: BenchOptions) -> Optional[int]:
    """The batch part's max_predictions (``"same"``: the bench's ``max_predictions``)."""
    return opts.max_predictions if opts.batch_limit == "same" else opts.batch_limit  # type: ignore[return-value]


def batch_arrays_call(matcher) -> Tuple[Callable[[List[List[str]], float, Optional[int]], List[Any]], str]:
    """The batch query in arrays form (one MatchResult per state, no dicts) and its label."""
    return matcher.match_patterns_batch_arrays, "match_patterns_batch_arrays"


def _digest(idx: np.ndarray, sims: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
    h.update(_bits(sims).tobytes())
    return h.digest()


class _DictResult:
    """A ``match_patterns`` dict list seen as a MatchResult (names, similarities, len)."""

    def __init__(self, dicts: List[Dict[str, Any]]) -> None:
        self.names = [d["pattern_name"] for d in dicts]
        self.similarities = np.array([d["similarity"] for d in dicts], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.names)


def _batch_bench(
    matcher, rf, metric: str, wl: Workload, choices: List[List[int]], opts: BenchOptions, err: IO[str]
) -> Tuple[Dict[str, Any], List[str]]:
    """``opts.batch`` new states (stream ``BATCH_STREAM``) through one batch call against as many
    ``match_patterns_arrays`` calls, best of ``BATCH_RUNS`` each. Every batch result must equal
    the single call's (names and similarity bits; compared by digest, a differing state is
    queried again and described); ``BATCH_ORACLE_CHECKS`` of them are checked against the oracle
    (RapidFuzz for lcs, a difflib sample for difflib)."""
    cdist, lcs_scorer = rf["cdist"], rf["LCSseq"].similarity
    n, count, threshold, limit = wl.n_patterns, opts.batch, opts.threshold, batch_limit(opts)
    queries, _, _ = generate_queries(wl, count, BATCH_STREAM)
    states = [wl.symbols(ids) for ids in queries]
    batch_call, batch_api = batch_arrays_call(matcher)
    problems: List[str] = []
    bad = set()

    def note(k: int, found: List[str], what: str = "batch") -> None:
        if found:
            bad.add(k)
            for text in found:
                if len(problems) < MAX_REPORTED:
                    problems.append(f"{what} state {k}: {text}")

    # Untimed warm-ups.
    batch_call(states[:2], threshold, limit)
    matcher.match_patterns_arrays(states[0], threshold, limit)
    gc.collect()

    digests: List[bytes] = []
    counts: List[int] = []
    single_runs: List[float] = []
    single = matcher.match_patterns_arrays
    clock = time.perf_counter
    with Progress(
        BATCH_RUNS * count, label=f"batch: single calls ({metric})", unit="queries", stream=err, enabled=opts.progress
    ) as bar:
        for run in range(BATCH_RUNS):
            gc.collect()
            total = 0.0
            for k, state in enumerate(states):
                t0 = clock()
                res = single(state, threshold, limit)
                total += clock() - t0
                if run == 0:  # not timed: the digest the batch results must reproduce
                    idx, sims, _ = _result_arrays(res, n)
                    digests.append(_digest(idx, sims))
                    counts.append(len(res))
                del res
                if k % 100 == 99:
                    bar.update(100)
            bar.update(count % 100)
            single_runs.append(total)

    def verify(results: List[Any], what: str) -> int:
        """Compares every result with the single call's; returns how many were compared."""
        if len(results) != count:
            note(-1, [f"{len(results)} results for {count} states"], what)
            return 0
        for k, res in enumerate(results):
            idx, sims, found = _result_arrays(res, n)
            if found:
                note(k, found, what)
                continue
            note(k, check_result_shape(idx, sims, threshold, limit), what)
            if _digest(idx, sims) != digests[k]:
                again = single(states[k], threshold, limit)
                s_idx, s_sims, _ = _result_arrays(again, n)
                diff = compare_full(idx, sims, s_idx, s_sims)
                note(
                    k,
                    [
                        f"differs from the single call: {t}".replace("expected", "single call")
                        for t in (diff or ["differs from the single call (digest)"])
                    ],
                    what,
                )
        return count

    oracle_states = sorted(set(np.linspace(0, count - 1, min(BATCH_ORACLE_CHECKS, count)).astype(int).tolist()))

    def timed_batch(call: Callable[..., List[Any]], what: str, as_result=None) -> Tuple[List[float], int, List[Any]]:
        """BATCH_RUNS timed calls of ``call``; the first run's results are compared with the single
        calls (``as_result`` turns each into a MatchResult-like object; not timed)."""
        runs: List[float] = []
        compared = 0
        kept: List[Any] = []
        for run in range(BATCH_RUNS):
            gc.collect()
            t0 = clock()
            results = call(states, threshold, limit)
            runs.append(clock() - t0)
            if run == 0:
                if as_result is not None:
                    results = [as_result(r) for r in results]
                compared = verify(results, what)
                kept = [results[k] for k in oracle_states if k < len(results)]
            del results
        return runs, compared, kept

    if opts.progress:
        print(
            f"batch ({metric}): {BATCH_RUNS} runs of one {batch_api.split(',')[0]} call of {count:,} states", file=err
        )
    batch_runs, compared, kept = timed_batch(batch_call, "batch")

    # The oracle, on a few of the batch results.
    oracle_checked = 0
    sample_size = min(opts.difflib_sample, n)
    for k, res in zip(oracle_states, kept):
        got_idx, got_sims, found = _result_arrays(res, n)
        if found:
            continue  # already reported
        if metric == "lcs":
            exp_idx, exp_sims, _ = rapidfuzz_lcs_matches(
                cdist, lcs_scorer, queries[k].tolist(), choices, wl.lengths, threshold, limit
            )
            note(k, compare_full(got_idx, got_sims, exp_idx, exp_sims), "batch (oracle)")
            oracle_checked += 1
        elif sample_size:
            sample = sample_indices(opts.seed, BATCH_SAMPLE_STREAM, k, n, sample_size)
            values = np.asarray(
                difflib_ratios([wl.pattern_symbols(int(i)) for i in sample], states[k]), dtype=np.float64
            )
            note(k, check_sample(sample, values, got_idx, got_sims, n, threshold, limit, "difflib"), "batch (oracle)")
            oracle_checked += 1
    del kept

    dict_part = None
    if opts.batch_dicts:
        # Timed: the public call, dicts included; turning them back into arrays is not timed.
        runs, dict_compared, _ = timed_batch(
            matcher.match_patterns_batch, "match_patterns_batch", as_result=_DictResult
        )
        best = min(runs)
        dict_part = {
            "api": "match_patterns_batch (a dict per match)",
            "runs_s": runs,
            "best_s": best,
            "states_per_s": count / best if best > 0 else None,
            "speedup": min(single_runs) / best if best > 0 else None,
            "compared_with_single": dict_compared,
        }

    single_best, batch_best = min(single_runs), min(batch_runs)
    single_rate = count / single_best if single_best > 0 else None
    batch_rate = count / batch_best if batch_best > 0 else None
    result = {
        "states": count,
        "threshold": threshold,
        "max_predictions": limit,
        "runs": BATCH_RUNS,
        "mean_matches": float(np.mean(counts)) if counts else 0.0,
        "total_matches": int(np.sum(counts)) if counts else 0,
        "single": {
            "api": f"{count:,} x match_patterns_arrays",
            "runs_s": single_runs,
            "best_s": single_best,
            "states_per_s": single_rate,
        },
        "batch": {"api": batch_api, "runs_s": batch_runs, "best_s": batch_best, "states_per_s": batch_rate},
        "dicts": dict_part,
        "speedup": single_best / batch_best if batch_best > 0 else None,
        "verification": {
            "ok": not bad,
            "states_with_differences": len(bad),
            "compared_with_single": compared,
            "oracle_checked": oracle_checked,
            "oracle": (
                "rapidfuzz (whole result)"
                if metric == "lcs"
                else f"difflib (sample of {sample_size:,})"
                if sample_size
                else "none (--difflib-sample 0)"
            ),
            "first_differences": problems,
        },
    }
    return result, problems if bad else []


def _bench_metric(
    kato_gpu,
    rf,
    encoder,
    metric: str,
    wl: Workload,
    tokens_enc: np.ndarray,
    choices: List[List[int]],
    opts: BenchOptions,
    err: IO[str],
    lw: Optional[Workload] = None,
) -> Dict[str, Any]:
    cdist, lcs_scorer = rf["cdist"], rf["LCSseq"].similarity
    matcher, load = _load(kato_gpu, encoder, metric, wl, tokens_enc, opts, err)
    n = wl.n_patterns
    threshold, limit = opts.threshold, opts.max_predictions
    lengths = wl.lengths
    sample_size = min(opts.difflib_sample, n)

    states = [wl.state_symbols(q) for q in range(wl.n_queries)]
    state_ids = [wl.queries[q].tolist() for q in range(wl.n_queries)]

    kato_t: List[float] = []
    names_t: List[float] = []
    kato_counts: List[int] = []
    rf_t: List[float] = []
    rf_counts: List[int] = []
    rf_above: List[int] = []
    dl_t: List[float] = []
    dl_counts: List[int] = []
    problems: List[str] = []
    bad_queries = set()
    full_checked = 0
    sample_checked = 0
    difflib_samples: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def note(q: int, found: List[str]) -> None:
        if found:
            bad_queries.add(q)
            for text in found:
                if len(problems) < MAX_REPORTED:
                    problems.append(f"[{metric}] query {q}: {text}")

    # One untimed warm-up query per engine (thread pools, caches, first-call costs).
    matcher.match_patterns_arrays(states[0], threshold, limit)
    rapidfuzz_lcs_matches(cdist, lcs_scorer, state_ids[0], choices, lengths, threshold, limit)
    gc.collect()
    with Progress(wl.n_queries, label=f"queries ({metric})", unit="queries", stream=err, enabled=opts.progress) as bar:
        for q in range(wl.n_queries):
            state, sid = states[q], state_ids[q]

            # kato_gpu
            t0 = time.perf_counter()
            res = matcher.match_patterns_arrays(state, threshold, limit)
            kato_t.append(time.perf_counter() - t0)
            got_sims = np.asarray(res.similarities, dtype=np.float64)
            t0 = time.perf_counter()
            got_names = list(res.names)
            names_t.append(time.perf_counter() - t0)
            got_idx = pattern_index(got_names, n)
            kato_counts.append(len(res))
            if len(got_names) != len(got_sims) or len(res) != len(got_sims):
                note(q, [f"len(res)={len(res)}, {len(got_names)} names, {len(got_sims)} similarities"])
                bar.update(1)
                continue
            note(q, check_result_shape(got_idx, got_sims, threshold, limit))

            # RapidFuzz cdist: timed call plus the filter and ordering
            t0 = time.perf_counter()
            exp_idx, exp_sims, above = rapidfuzz_lcs_matches(cdist, lcs_scorer, sid, choices, lengths, threshold, limit)
            rf_t.append(time.perf_counter() - t0)
            rf_counts.append(len(exp_idx))
            rf_above.append(above)
            if metric == "lcs":
                note(q, compare_full(got_idx, got_sims, exp_idx, exp_sims))
                full_checked += 1

            # difflib over a seeded sample, as KATO's original path computes it
            if sample_size:
                sample = sample_indices(opts.seed, SAMPLE_STREAM, q, n, sample_size)
                sampled = [wl.pattern_symbols(int(i)) for i in sample]
                t0 = time.perf_counter()
                ratios = difflib_ratios(sampled, state)
                hits = sorted((-r, int(i)) for r, i in zip(ratios, sample) if r >= threshold)
                dl_t.append((time.perf_counter() - t0) * n / sample_size)
                dl_counts.append(len(hits))
                if metric == "difflib":
                    values = np.asarray(ratios, dtype=np.float64)
                    oracle = "difflib"
                    if opts.thresholds:  # the sweep checks its results on the same sample
                        difflib_samples[q] = (sample, values)
                else:
                    total = lengths[sample] + len(sid)
                    values = np.array(
                        [
                            2.0 * lcs_scorer(choices[int(i)], sid) / t if t else 1.0
                            for i, t in zip(sample, total.tolist())
                        ],
                        dtype=np.float64,
                    )
                    oracle = "2.0*LCSseq.similarity/T"
                note(q, check_sample(sample, values, got_idx, got_sims, n, threshold, limit, oracle))
                sample_checked += sample_size
            bar.update(1)

    # The threshold sweep and the batch comparison, on the same matcher, before learning.
    sweep = None
    sweep_ok = batch_ok = True
    if opts.thresholds:
        sweep, found = _threshold_sweep(matcher, rf, metric, wl, states, state_ids, choices, difflib_samples, opts, err)
        sweep_ok = not found
        problems.extend(f"[{metric}] {text}" for text in found[:MAX_REPORTED])
    batch = None
    if opts.batch > 0:
        batch, found = _batch_bench(matcher, rf, metric, wl, choices, opts, err)
        batch_ok = not found
        problems.extend(f"[{metric}] {text}" for text in found[:MAX_REPORTED])

    # Learning comes after every query has been compared, so the learned patterns never enter a
    # checked result.
    learning = None
    learn_problems: List[str] = []
    if lw is not None:
        learning, learn_problems = _learn(matcher, lw, n, opts, err)
        problems.extend(f"[{metric}] learning: {text}" for text in learn_problems)

    del matcher
    gc.collect()

    kato_sum = _summary(kato_t)
    engines: Dict[str, Any] = {
        "kato_gpu": {
            "label": f"kato_gpu match_patterns_arrays ({load['stats'].get('bulk_tier_device', '?')})",
            "role": "measured",
            "times_ms": [t * 1e3 for t in kato_t],
            **kato_sum,
            "speedup": 1.0,
            "matches_per_query": kato_counts,
            "mean_matches": float(np.mean(kato_counts)) if kato_counts else 0.0,
            "names_times_ms": [t * 1e3 for t in names_t],
            "names_median_ms": float(np.median(names_t) * 1e3) if names_t else None,
        },
    }
    if rf_t:
        s = _summary(rf_t)
        engines["rapidfuzz"] = {
            "label": "rapidfuzz cdist LCSseq (workers=-1)",
            "role": "exact oracle (whole result)" if metric == "lcs" else "speed reference only (LCS, not difflib)",
            "times_ms": [t * 1e3 for t in rf_t],
            **s,
            "speedup": s["median_ms"] / kato_sum["median_ms"] if kato_sum["median_ms"] > 0 else None,
            "matches_per_query": rf_counts,
            "above_threshold_per_query": rf_above,
            "mean_matches": float(np.mean(rf_counts)),
        }
    if dl_t:
        s = _summary(dl_t)
        scale = n / sample_size
        engines["difflib"] = {
            "label": f"difflib loop (extrapolated from {sample_size:,})",
            "role": (
                "exact oracle (sample)"
                if metric == "difflib"
                else "KATO's baseline (difflib ratio; the sample is checked with LCSseq)"
            ),
            "extrapolated": True,
            "sample": sample_size,
            "times_ms": [t * 1e3 for t in dl_t],
            **s,
            "speedup": s["median_ms"] / kato_sum["median_ms"] if kato_sum["median_ms"] > 0 else None,
            "sample_matches_per_query": dl_counts,
            "mean_matches": float(np.mean(dl_counts)) * scale,
        }
    return {
        "formula": METRIC_FORMULAS[metric],
        "load": load,
        "engines": engines,
        "learning": learning,
        "thresholds": sweep,
        "batch": batch,
        "verification": {
            "ok": not bad_queries and not learn_problems and sweep_ok and batch_ok,
            "queries_with_differences": len(bad_queries),
            "learning_ok": not learn_problems,
            "thresholds_ok": sweep_ok,
            "batch_ok": batch_ok,
            "queries_checked_whole_result": full_checked,
            "sampled_pairs_checked": sample_checked,
            "first_differences": problems,
        },
    }


# ---------------------------------------------------------------------------- output
def _table(metric: str, result: Dict[str, Any], opts: BenchOptions, out: IO[str]) -> None:
    load = result["load"]
    rate = load["patterns_per_s"]
    print(f"\nmetric {metric}: {result['formula']}", file=out)
    print(
        f"  load: {opts.patterns:,} patterns in {load['seconds']:.2f} s "
        f"({rate:,.0f} patterns/s); matcher memory {_mb(load['memory_bytes'])}; "
        f"process RSS growth {_mb(load['rss_growth_bytes'])}",
        file=out,
    )
    header = f"  {'engine':<48} {'median ms':>11} {'p95 ms':>11} {'kato_gpu speedup':>17} {'matches/query':>14}"
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for key in ("kato_gpu", "rapidfuzz", "difflib"):
        e = result["engines"].get(key)
        if e is None:
            continue
        speed = "-" if key == "kato_gpu" else (f"{e['speedup']:,.1f}x" if e["speedup"] else "n/a")
        matches = f"{e['mean_matches']:,.1f}" + ("*" if key == "difflib" else "")
        print(f"  {e['label']:<48} {e['median_ms']:>11,.2f} {e['p95_ms']:>11,.2f} {speed:>17} {matches:>14}", file=out)
    notes = []
    rf = result["engines"].get("rapidfuzz")
    if rf is not None:
        notes.append(f"rapidfuzz: {rf['role']}")
    dl = result["engines"].get("difflib")
    if dl is not None:
        notes.append(f"difflib: {dl['role']}; times and * match counts scaled by N/{dl['sample']:,}")
    kg = result["engines"]["kato_gpu"]
    if kg.get("names_median_ms") is not None:
        notes.append(f"kato_gpu: building res.names (not timed above) took {kg['names_median_ms']:.2f} ms median")
    v = result["verification"]
    if not v["queries_with_differences"]:
        what = []
        if v["queries_checked_whole_result"]:
            what.append(f"whole result bit-identical to rapidfuzz on {v['queries_checked_whole_result']} queries")
        if v["sampled_pairs_checked"]:
            what.append(
                f"{v['sampled_pairs_checked']:,} sampled patterns agree with "
                f"{'difflib' if metric == 'difflib' else 'LCSseq.similarity'}"
            )
        notes.append("verified: " + ("; ".join(what) if what else "result order and threshold"))
    else:
        notes.append(f"MISMATCH on {v['queries_with_differences']} queries")
    if not v.get("learning_ok", True):
        notes.append("LEARNING FAILED: " + "; ".join(t for t in v["first_differences"] if "learning:" in t))
    for text in notes:
        print(f"  {text}", file=out)
    if result.get("thresholds"):
        _sweep_table(metric, result["thresholds"], out)
    if result.get("batch"):
        _batch_table(metric, result["batch"], out)
    learning = result.get("learning")
    if learning:
        rate = learning["patterns_per_s"]
        promo = learning["promotion"]
        print(
            f"  learning: {learning['patterns']:,} patterns, one add_new_pattern call each "
            f"(mean {learning['mean_pattern_len']:.1f} symbols): p50 {learning['p50_us']:,.1f} us, "
            f"p99 {learning['p99_us']:,.1f} us, max {learning['max_us']:,.1f} us, "
            f"mean {learning['mean_us']:,.1f} us ({'n/a' if rate is None else f'{rate:,.0f}'} patterns/s)",
            file=out,
        )
        per = promo["us_per_pattern"]
        print(
            f"  promotion: sync_cpu_to_gpu() of {promo['patterns']:,} patterns in {promo['ms']:,.2f} ms "
            f"({'n/a' if per is None else f'{per:.2f} us'} per pattern, bulk tier on {promo['bulk_device']}); "
            f"matcher now holds {learning['matcher_patterns_after']:,}",
            file=out,
        )


def _sweep_table(metric: str, sweep: Dict[str, Any], out: IO[str]) -> None:
    limit = sweep["max_predictions"]
    print(
        f"  threshold sweep ({metric}, max_predictions={'all' if limit is None else limit}): "
        f"kato_gpu {sweep['kato_gpu']} against {sweep['cdist']['label']}",
        file=out,
    )
    header = (
        f"  {'threshold':>9} {'kato_gpu median ms':>19} {'p95 ms':>9} {'matches/query':>14} "
        f"{'cdist ms':>9} {'speed-up':>9}"
    )
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for row in sweep["rows"]:
        speed = "n/a" if row["speedup"] is None else f"{row['speedup']:,.1f}x"
        print(
            f"  {row['threshold']:>9g} {row['median_ms']:>19,.2f} {row['p95_ms']:>9,.2f} "
            f"{row['mean_matches']:>14,.1f} {row['cdist_median_ms']:>9,.2f} {speed:>9}"
            + ("" if row["ok"] else "  MISMATCH"),
            file=out,
        )
    v = sweep["verification"]
    if v["ok"]:
        what = (
            f"{v['whole_results_checked']} whole results bit-identical to rapidfuzz"
            if metric == "lcs"
            else f"{v['sampled_pairs_checked']:,} sampled patterns agree with difflib"
        )
        print(
            f"  cdist: {sweep['cdist']['role']}; median of one call per query (same for every row); verified: {what}",
            file=out,
        )
    else:
        print(f"  MISMATCH in {v['results_with_differences']} (threshold, query) results", file=out)


def _batch_table(metric: str, batch: Dict[str, Any], out: IO[str]) -> None:
    limit = batch["max_predictions"]
    print(
        f"  batch ({metric}): {batch['states']:,} new states, threshold {batch['threshold']}, "
        f"max_predictions={'all' if limit is None else limit}, {batch['mean_matches']:,.1f} matches/state; "
        f"best of {batch['runs']} runs",
        file=out,
    )
    rows = [("single", batch["single"], None), ("batch", batch["batch"], batch["speedup"])]
    if batch.get("dicts"):
        rows.append(("dicts", batch["dicts"], batch["dicts"]["speedup"]))
    for _, part, speed in rows:
        rate = "n/a" if part["states_per_s"] is None else f"{part['states_per_s']:,.1f}"
        ratio = "" if speed is None else f"  ({speed:,.2f}x the single calls)"
        print(f"    {part['api']:<78} {part['best_s']:>9,.3f} s {rate:>12} states/s{ratio}", file=out)
    v = batch["verification"]
    if v["ok"]:
        print(
            f"  verified: {v['compared_with_single']:,} batch results identical to the single calls; "
            f"{v['oracle_checked']} checked against {v['oracle']}",
            file=out,
        )
    else:
        print(f"  MISMATCH on {v['states_with_differences']} batch states", file=out)


def finish_report(report: Dict[str, Any], json_path: Optional[str], out: IO[str], err: IO[str]) -> int:
    """Writes ``report`` as JSON to ``json_path`` (when given), lists the first differences of any
    metric whose verification failed, and returns the exit status."""
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(_jsonable(report), fh, indent=2)
            fh.write("\n")
        print(f"\nwrote {json_path}", file=out)
    if not report["ok"]:
        print("\nkato_gpu results differ from the exact references:", file=err)
        for r in report["results"].values():
            for text in r["verification"]["first_differences"]:
                print(f"  {text}", file=err)
        return EXIT_MISMATCH
    return EXIT_OK


def _versions(kato_gpu, rapidfuzz) -> Dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "rapidfuzz": getattr(rapidfuzz, "__version__", "?"),
        "kato_gpu": getattr(kato_gpu, "__version__", "?"),
    }


# ---------------------------------------------------------------------------- entry point
def run(opts: BenchOptions, out: Optional[IO[str]] = None, err: Optional[IO[str]] = None) -> int:
    """Runs the benchmark; returns 0 (all verified), 1 (a result differs from an oracle) or 2
    (rapidfuzz missing)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        import rapidfuzz
        from rapidfuzz import process as rf_process
        from rapidfuzz.distance import LCSseq
    except ImportError:
        print(
            "kato-gpu bench needs rapidfuzz, which is not installed. Install it with:\n"
            "    pip install 'kato-gpu[bench]'",
            file=err,
        )
        return EXIT_MISSING_DEPENDENCY
    import kato_gpu

    total_cpus, usable_cpus = _cpu_counts()
    versions = _versions(kato_gpu, rapidfuzz)
    print(
        f"kato-gpu bench: shape={opts.shape} N={opts.patterns:,} Q={opts.queries} "
        f"metrics={','.join(opts.metrics)} threshold={opts.threshold} "
        f"max_predictions={'all' if opts.max_predictions is None else opts.max_predictions} seed={opts.seed} "
        f"learn={opts.learn:,}"
        + (f" thresholds={','.join(f'{t:g}' for t in opts.thresholds)}" if opts.thresholds else "")
        + (
            f" batch={opts.batch:,} (max_predictions={'all' if batch_limit(opts) is None else batch_limit(opts)})"
            if opts.batch
            else ""
        ),
        file=out,
    )
    print(
        f"machine: {total_cpus} CPUs ({usable_cpus if usable_cpus is not None else '?'} usable); "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        file=out,
    )
    out.flush()

    rss0 = _rss_bytes()
    print(
        f"generating {opts.patterns:,} {opts.shape} patterns and {opts.queries} queries (seed {opts.seed})...", file=err
    )
    t0 = time.perf_counter()
    wl = generate_workload(opts.patterns, opts.queries, opts.shape, opts.seed)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    choices = wl.choices()  # RapidFuzz's input, built once, untimed
    choices_s = time.perf_counter() - t0
    rss1 = _rss_bytes()

    encoder = kato_gpu.SymbolVocabularyEncoder(None)
    id_map = wl.encoder_ids(encoder)
    if np.array_equal(id_map, np.arange(len(wl.vocab))):
        tokens_enc = wl.tokens
    else:  # an encoder that numbers differently still works: translate the local ids
        tokens_enc = id_map[wl.tokens].astype(np.int32)

    workload_info = {
        "shape": wl.shape,
        "n_patterns": wl.n_patterns,
        "n_queries": wl.n_queries,
        "vocab_size": len(wl.vocab),
        "total_tokens": int(wl.tokens.size),
        "mean_pattern_len": float(wl.lengths.mean()),
        "mean_state_len": float(np.mean([len(s) for s in wl.queries])) if wl.queries else 0.0,
        "generate_s": generate_s,
        "rapidfuzz_input_s": choices_s,
        "rss_growth_bytes": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
        "encoder_ids_sorted": tokens_enc is wl.tokens,
    }
    print(
        f"workload: generated in {generate_s:.2f} s (rapidfuzz input lists {choices_s:.2f} s); "
        f"vocabulary {len(wl.vocab):,}; mean pattern length {workload_info['mean_pattern_len']:.1f}, "
        f"mean state length {workload_info['mean_state_len']:.1f} tokens",
        file=out,
    )
    out.flush()

    lw = learn_workload(opts)
    rf = {"cdist": rf_process.cdist, "LCSseq": LCSseq}
    results: Dict[str, Any] = {}
    # Freeze what exists now (a million pattern lists) so that a full garbage collection does
    # not walk it during a timed query.
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
    try:
        for metric in opts.metrics:
            results[metric] = _bench_metric(kato_gpu, rf, encoder, metric, wl, tokens_enc, choices, opts, err, lw)
            _table(metric, results[metric], opts, out)
            out.flush()
    finally:
        if hasattr(gc, "unfreeze"):
            gc.unfreeze()

    ok = all(r["verification"]["ok"] for r in results.values())
    report = {
        "ok": ok,
        "options": {k: v for k, v in asdict(opts).items() if k != "json_path"},
        "environment": {
            "cpu_count": total_cpus,
            "usable_cpus": usable_cpus,
            "platform": platform.platform(),
            **versions,
        },
        "workload": workload_info,
        "results": results,
    }
    return finish_report(report, opts.json_path, out, err)
