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

Learning (``learn`` > 0), after each metric's queries and checks, on the same loaded matcher:
``learn`` new patterns of the same shape (another seed, names after the loaded ones) are learned
one ``HybridGPUMatcher.add_new_pattern(name, events)`` call at a time, events as lists of
symbols (vocabulary encoding included), each call timed with ``time.perf_counter_ns``; then one
``sync_cpu_to_gpu()`` promotes them all and is timed too.
"""

from __future__ import annotations

import difflib
import gc
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._progress import Progress
from .workload import Workload, generate_workload, pattern_index, pattern_name, pattern_names

#: Seed offset of the learned patterns' workload (a stream distinct from the loaded patterns').
LEARN_SEED_OFFSET = 1_000_003

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
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(np.mean(ms)), "min_ms": float(np.min(ms)), "max_ms": float(np.max(ms))}


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
def rapidfuzz_lcs_matches(cdist, scorer, state_ids: List[int], choices: List[List[int]],
                          pattern_lengths: np.ndarray, threshold: float,
                          max_predictions: Optional[int]) -> Tuple[np.ndarray, np.ndarray, int]:
    """The expected ``lcs`` result with RapidFuzz: (indices, similarities, matches before the
    limit), ordered by similarity descending then index (== name) ascending."""
    lcs = cdist([state_ids], choices, scorer=scorer, workers=-1, dtype=np.int32)[0]
    total = pattern_lengths + len(state_ids)
    sims = np.ones(len(total), dtype=np.float64)
    np.divide(2.0 * lcs, total, out=sims, where=total > 0)
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


# ---------------------------------------------------------------------------- checks
def _describe(idx: int, sim: Optional[float]) -> str:
    name = pattern_name(idx) if idx >= 0 else "<unknown name>"
    return f"{name} {sim!r}" if sim is not None else name


def compare_full(got_idx: np.ndarray, got_sims: np.ndarray, exp_idx: np.ndarray, exp_sims: np.ndarray,
                 limit: int = 3) -> List[str]:
    """Differences between kato_gpu's whole result and the expected one (bit for bit)."""
    problems: List[str] = []
    if len(got_idx) != len(exp_idx):
        problems.append(f"kato_gpu returned {len(got_idx):,} matches, expected {len(exp_idx):,}")
    n = min(len(got_idx), len(exp_idx))
    differ = np.flatnonzero((got_idx[:n] != exp_idx[:n]) | (_bits(got_sims[:n]) != _bits(exp_sims[:n])))
    for j in differ[:limit].tolist():
        problems.append(f"position {j}: kato_gpu {_describe(int(got_idx[j]), float(got_sims[j]))}, "
                        f"expected {_describe(int(exp_idx[j]), float(exp_sims[j]))}")
    if len(differ) > limit:
        problems.append(f"... {len(differ) - limit:,} more differing positions")
    if not differ.size and len(got_idx) > n:
        problems.append(f"first extra match at position {n}: {_describe(int(got_idx[n]), float(got_sims[n]))}")
    elif not differ.size and len(exp_idx) > n:
        problems.append(f"first missing match at position {n}: {_describe(int(exp_idx[n]), float(exp_sims[n]))}")
    return problems


def check_result_shape(got_idx: np.ndarray, got_sims: np.ndarray, threshold: float,
                       max_predictions: Optional[int]) -> List[str]:
    """Properties every result has: known names, similarity >= threshold, strictly ordered by
    (similarity descending, name ascending) (so no duplicates), at most max_predictions."""
    problems: List[str] = []
    unknown = np.flatnonzero(got_idx < 0)
    if unknown.size:
        problems.append(f"{unknown.size:,} result names are not names of loaded patterns "
                        f"(first at position {int(unknown[0])})")
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
            problems.append(f"positions {j}, {j + 1} out of order: {_describe(int(got_idx[j]), float(got_sims[j]))} "
                            f"then {_describe(int(got_idx[j + 1]), float(got_sims[j + 1]))}")
    return problems


def check_sample(sample: np.ndarray, values: np.ndarray, got_idx: np.ndarray, got_sims: np.ndarray,
                 n_patterns: int, threshold: float, max_predictions: Optional[int], oracle: str,
                 limit: int = 3) -> List[str]:
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
        problems.append(f"unexpected {_describe(int(sample[k]), float(got_sims[where[k]]))}: "
                        f"{oracle} gives {float(values[k])!r}")
    for k in wrong[:limit].tolist():
        problems.append(f"{_describe(int(sample[k]), None)}: kato_gpu {float(got_sims[where[k]])!r}, "
                        f"{oracle} {float(values[k])!r}")
    hidden = len(missing) + len(extra) + len(wrong) - sum(min(limit, len(x)) for x in (missing, extra, wrong))
    if hidden > 0:
        problems.append(f"... {hidden:,} more sampled patterns differ")
    return problems


# ---------------------------------------------------------------------------- one metric
def _load(kato_gpu, encoder, metric: str, wl: Workload, tokens_enc: np.ndarray, opts: BenchOptions,
          err: IO[str]):
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
            added = matcher.add_patterns_csr(pattern_names(start, stop), tokens_enc[a:b],
                                             offsets[start: stop + 1] - a, promote=True)
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


def _bench_metric(kato_gpu, rf, encoder, metric: str, wl: Workload, tokens_enc: np.ndarray,
                  choices: List[List[int]], opts: BenchOptions, err: IO[str],
                  lw: Optional[Workload] = None) -> Dict[str, Any]:
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
    with Progress(wl.n_queries, label=f"queries ({metric})", unit="queries", stream=err,
                  enabled=opts.progress) as bar:
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
            exp_idx, exp_sims, above = rapidfuzz_lcs_matches(cdist, lcs_scorer, sid, choices, lengths,
                                                             threshold, limit)
            rf_t.append(time.perf_counter() - t0)
            rf_counts.append(len(exp_idx))
            rf_above.append(above)
            if metric == "lcs":
                note(q, compare_full(got_idx, got_sims, exp_idx, exp_sims))
                full_checked += 1

            # difflib over a seeded sample, as KATO's original path computes it
            if sample_size:
                sample_rng = np.random.default_rng([opts.seed, 2, q])
                sample = np.sort(sample_rng.choice(n, size=sample_size, replace=False))
                sampled = [wl.pattern_symbols(int(i)) for i in sample]
                t0 = time.perf_counter()
                ratios = difflib_ratios(sampled, state)
                hits = sorted((-r, int(i)) for r, i in zip(ratios, sample) if r >= threshold)
                dl_t.append((time.perf_counter() - t0) * n / sample_size)
                dl_counts.append(len(hits))
                if metric == "difflib":
                    values = np.asarray(ratios, dtype=np.float64)
                    oracle = "difflib"
                else:
                    total = lengths[sample] + len(sid)
                    values = np.array([2.0 * lcs_scorer(choices[int(i)], sid) / t if t else 1.0
                                       for i, t in zip(sample, total.tolist())], dtype=np.float64)
                    oracle = "2.0*LCSseq.similarity/T"
                note(q, check_sample(sample, values, got_idx, got_sims, n, threshold, limit, oracle))
                sample_checked += sample_size
            bar.update(1)

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
            "role": ("exact oracle (sample)" if metric == "difflib"
                     else "KATO's baseline (difflib ratio; the sample is checked with LCSseq)"),
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
        "verification": {
            "ok": not bad_queries and not learn_problems,
            "queries_with_differences": len(bad_queries),
            "learning_ok": not learn_problems,
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
    print(f"  load: {opts.patterns:,} patterns in {load['seconds']:.2f} s "
          f"({rate:,.0f} patterns/s); matcher memory {_mb(load['memory_bytes'])}; "
          f"process RSS growth {_mb(load['rss_growth_bytes'])}", file=out)
    header = f"  {'engine':<48} {'median ms':>11} {'p95 ms':>11} {'kato_gpu speedup':>17} {'matches/query':>14}"
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for key in ("kato_gpu", "rapidfuzz", "difflib"):
        e = result["engines"].get(key)
        if e is None:
            continue
        speed = "-" if key == "kato_gpu" else (f"{e['speedup']:,.1f}x" if e["speedup"] else "n/a")
        matches = f"{e['mean_matches']:,.1f}" + ("*" if key == "difflib" else "")
        print(f"  {e['label']:<48} {e['median_ms']:>11,.2f} {e['p95_ms']:>11,.2f} {speed:>17} {matches:>14}",
              file=out)
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
    if v["ok"]:
        what = []
        if v["queries_checked_whole_result"]:
            what.append(f"whole result bit-identical to rapidfuzz on {v['queries_checked_whole_result']} queries")
        if v["sampled_pairs_checked"]:
            what.append(f"{v['sampled_pairs_checked']:,} sampled patterns agree with "
                        f"{'difflib' if metric == 'difflib' else 'LCSseq.similarity'}")
        notes.append("verified: " + ("; ".join(what) if what else "result order and threshold"))
    else:
        if v["queries_with_differences"]:
            notes.append(f"MISMATCH on {v['queries_with_differences']} queries")
        if not v.get("learning_ok", True):
            notes.append("LEARNING FAILED: " + "; ".join(t for t in v["first_differences"] if "learning:" in t))
    for text in notes:
        print(f"  {text}", file=out)
    learning = result.get("learning")
    if learning:
        rate = learning["patterns_per_s"]
        promo = learning["promotion"]
        print(f"  learning: {learning['patterns']:,} patterns, one add_new_pattern call each "
              f"(mean {learning['mean_pattern_len']:.1f} symbols): p50 {learning['p50_us']:,.1f} us, "
              f"p99 {learning['p99_us']:,.1f} us, max {learning['max_us']:,.1f} us, "
              f"mean {learning['mean_us']:,.1f} us ({'n/a' if rate is None else f'{rate:,.0f}'} patterns/s)",
              file=out)
        per = promo["us_per_pattern"]
        print(f"  promotion: sync_cpu_to_gpu() of {promo['patterns']:,} patterns in {promo['ms']:,.2f} ms "
              f"({'n/a' if per is None else f'{per:.2f} us'} per pattern, bulk tier on {promo['bulk_device']}); "
              f"matcher now holds {learning['matcher_patterns_after']:,}", file=out)


def _versions(kato_gpu, rapidfuzz) -> Dict[str, str]:
    return {"python": platform.python_version(), "numpy": np.__version__,
            "rapidfuzz": getattr(rapidfuzz, "__version__", "?"),
            "kato_gpu": getattr(kato_gpu, "__version__", "?")}


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
        print("kato-gpu bench needs rapidfuzz, which is not installed. Install it with:\n"
              "    pip install 'kato-gpu[bench]'", file=err)
        return EXIT_MISSING_DEPENDENCY
    import kato_gpu

    total_cpus, usable_cpus = _cpu_counts()
    versions = _versions(kato_gpu, rapidfuzz)
    print(f"kato-gpu bench: shape={opts.shape} N={opts.patterns:,} Q={opts.queries} "
          f"metrics={','.join(opts.metrics)} threshold={opts.threshold} "
          f"max_predictions={'all' if opts.max_predictions is None else opts.max_predictions} seed={opts.seed} "
          f"learn={opts.learn:,}",
          file=out)
    print(f"machine: {total_cpus} CPUs ({usable_cpus if usable_cpus is not None else '?'} usable); "
          + ", ".join(f"{k} {v}" for k, v in versions.items()), file=out)
    out.flush()

    rss0 = _rss_bytes()
    print(f"generating {opts.patterns:,} {opts.shape} patterns and {opts.queries} queries (seed {opts.seed})...",
          file=err)
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
        "shape": wl.shape, "n_patterns": wl.n_patterns, "n_queries": wl.n_queries,
        "vocab_size": len(wl.vocab), "total_tokens": int(wl.tokens.size),
        "mean_pattern_len": float(wl.lengths.mean()),
        "mean_state_len": float(np.mean([len(s) for s in wl.queries])) if wl.queries else 0.0,
        "generate_s": generate_s, "rapidfuzz_input_s": choices_s,
        "rss_growth_bytes": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
        "encoder_ids_sorted": tokens_enc is wl.tokens,
    }
    print(f"workload: generated in {generate_s:.2f} s (rapidfuzz input lists {choices_s:.2f} s); "
          f"vocabulary {len(wl.vocab):,}; mean pattern length {workload_info['mean_pattern_len']:.1f}, "
          f"mean state length {workload_info['mean_state_len']:.1f} tokens", file=out)
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
        "environment": {"cpu_count": total_cpus, "usable_cpus": usable_cpus,
                        "platform": platform.platform(), **versions},
        "workload": workload_info,
        "results": results,
    }
    if opts.json_path:
        with open(opts.json_path, "w", encoding="utf-8") as fh:
            json.dump(_jsonable(report), fh, indent=2)
            fh.write("\n")
        print(f"\nwrote {opts.json_path}", file=out)
    if not ok:
        print("\nkato_gpu results differ from the exact references:", file=err)
        for r in results.values():
            for text in r["verification"]["first_differences"]:
                print(f"  {text}", file=err)
        return EXIT_MISMATCH
    return EXIT_OK
