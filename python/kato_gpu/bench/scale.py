"""``kato-gpu scale-bench``: load millions of KATO-shaped patterns a chunk at a time, serve, verify.

The patterns are the ``kato`` shape of :mod:`.workload` (same generator, vocabulary and names
``"PTRN|"`` + 40 hex digits), made by :func:`.workload.iter_kato_chunks`: chunk ``c`` of
``chunk`` patterns comes from the stream ``[seed, 0, c]`` and goes into the matcher with one
``add_patterns_csr`` call as soon as it is made, so the benchmark never holds more than one
chunk of patterns. What it keeps besides the matcher: the queries and, for verification, the
patterns of the seeded samples (``sample`` per query).

Per metric (one at a time; the matcher is dropped and collected before the next):

* load: time inside the ``add_patterns_csr`` calls (plus the one ``sync_cpu_to_gpu()`` with
  ``promote="end"``), and the wall time including generation; patterns/s;
  ``get_stats()["memory_bytes"]``; process RSS (``VmRSS``) before and after, and the peak
  (``VmHWM``, reset through ``/proc/self/clear_refs`` before the load where the kernel allows it).
* queries: ``match_patterns_arrays(state, threshold, None)`` and ``(state, threshold, limit)``
  (one untimed warm-up each), median/p95 latency and matches per query. Query ``q`` is made, as
  the ``kato`` workload makes its queries, from pattern ``src_q`` (drawn from ``[seed, 1]``) with
  the stream ``[seed, 1, q]``.
* verification of every result: ordered by similarity descending then name ascending, known
  names, ``>= threshold``; the limited result is the first ``limit`` entries of the whole one;
  and for a seeded sample of ``sample`` stored patterns (``[seed, 2, q]``) the exact oracle
  (RapidFuzz ``LCSseq`` on integer-encoded sequences for lcs; ``difflib.SequenceMatcher(None,
  pattern, state, autojunk=False).ratio()`` for difflib) decides which must be in the result,
  with the identical float64. Any difference makes :func:`run_scale` return 1.
"""

from __future__ import annotations

import gc
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, Dict, List, Optional, Tuple

import numpy as np

from .._progress import Progress
from .common import (
    EXIT_MISSING_DEPENDENCY,
    MAX_REPORTED,
    METRIC_FORMULAS,
    SAMPLE_STREAM,
    _cpu_counts,
    _mb,
    _summary,
    _versions,
    require_rapidfuzz,
    sample_indices,
)
from .oracles import difflib_ratios
from .report import finish_report
from .verify import check_result_shape, check_sample, compare_full, rapidfuzz_lcs_similarities
from .workload import iter_kato_chunks, kato_vocab, pattern_index, pattern_names

__all__ = ["ScaleOptions", "run_scale"]

QUERY_STREAM = 1
NAME_BLOCK = 1 << 18  # names turned into indices this many at a time (bounded temporaries)


@dataclass
class ScaleOptions:
    patterns: int = 10_000_000
    queries: int = 10
    metrics: Tuple[str, ...] = ("lcs", "difflib")
    threshold: float = 0.1
    limit: int = 100  # the second timed call's max_predictions
    chunk: int = 100_000
    sample: int = 20_000  # stored patterns per query checked against the oracle
    seed: int = 42
    promote: str = "each"  # "each": add_patterns_csr(promote=True) per chunk; "end": one sync at the end
    json_path: Optional[str] = None
    progress: bool = True


# ---------------------------------------------------------------------------- process memory
def _status_bytes(key: str) -> Optional[int]:
    """``key`` (``VmRSS``, ``VmHWM``) from /proc/self/status in bytes; None where unavailable."""
    try:
        with open("/proc/self/status", "r", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _memory() -> Dict[str, Optional[int]]:
    return {"rss_bytes": _status_bytes("VmRSS"), "peak_rss_bytes": _status_bytes("VmHWM")}


def _diff(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return None if a is None or b is None else a - b


# ---------------------------------------------------------------------------- the plan
@dataclass
class _Plan:
    """What is decided before loading and kept while loading: query sources and the samples."""

    n: int
    sources: np.ndarray  # int64, the source pattern of each query
    samples: List[np.ndarray]  # per query, sorted pattern indices checked against the oracle
    keep: np.ndarray  # sorted union of the samples: the patterns whose tokens are kept


@dataclass
class _Kept:
    """The queries (local ids, flattened) and the kept patterns in CSR form (order of ``keep``)."""

    queries: List[Optional[np.ndarray]]
    tokens: np.ndarray
    offsets: np.ndarray

    def pattern_ids(self, k: int) -> np.ndarray:
        return self.tokens[self.offsets[k] : self.offsets[k + 1]]


def _plan(opts: ScaleOptions) -> _Plan:
    n = opts.patterns
    sources = np.random.default_rng([opts.seed, QUERY_STREAM]).integers(n, size=opts.queries).astype(np.int64)
    size = min(opts.sample, n)
    samples = [sample_indices(opts.seed, SAMPLE_STREAM, q, n, size) for q in range(opts.queries)]
    keep = np.unique(np.concatenate(samples)) if samples and size else np.zeros(0, dtype=np.int64)
    return _Plan(n, sources, samples, keep)


# ---------------------------------------------------------------------------- loading
def _load(
    kato_gpu, encoder, metric: str, plan: _Plan, opts: ScaleOptions, collect: bool, err: IO[str]
) -> Tuple[Any, Dict[str, Any], Optional[_Kept]]:
    """Builds a matcher and loads ``plan.n`` patterns chunk by chunk; with ``collect``, also
    makes the queries and keeps the sampled patterns (the same every metric, so once)."""
    n = plan.n
    gc.collect()
    mem_before = _memory()
    peak_reset = _reset_peak()
    matcher = kato_gpu.HybridGPUMatcher(encoder, kato_gpu.GPUConfig(metric=metric))
    promote_each = opts.promote == "each"
    add_s = 0.0
    generate_s = 0.0
    promote_s = 0.0
    queries: List[Optional[np.ndarray]] = [None] * len(plan.sources)
    kept_tokens: List[np.ndarray] = []
    kept_lengths: List[np.ndarray] = []
    by_source = np.argsort(plan.sources, kind="stable")
    sorted_sources = plan.sources[by_source]
    started = time.perf_counter()
    chunks = iter_kato_chunks(n, opts.chunk, opts.seed)
    with Progress(n, label=f"loading ({metric})", unit="patterns", stream=err, enabled=opts.progress) as bar:
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            generate_s += time.perf_counter() - t0
            if chunk is None:
                break
            names = pattern_names(chunk.start, chunk.stop)
            t0 = time.perf_counter()
            added = matcher.add_patterns_csr(names, chunk.tokens, chunk.offsets, promote=promote_each)
            add_s += time.perf_counter() - t0
            del names
            if added != chunk.n_patterns:
                raise RuntimeError(f"add_patterns_csr added {added} of {chunk.n_patterns} patterns")
            if collect:
                lo, hi = np.searchsorted(plan.keep, [chunk.start, chunk.stop])
                for i in (plan.keep[lo:hi] - chunk.start).tolist():
                    ids = chunk.tokens[chunk.offsets[i] : chunk.offsets[i + 1]]
                    kept_tokens.append(ids.copy())
                    kept_lengths.append(len(ids))
                lo, hi = np.searchsorted(sorted_sources, [chunk.start, chunk.stop])
                for q in by_source[lo:hi].tolist():
                    rng = np.random.default_rng([opts.seed, QUERY_STREAM, q])
                    queries[q] = np.concatenate(chunk.query(rng, int(plan.sources[q]) - chunk.start)).astype(np.int32)
            bar.update(chunk.n_patterns)
            del chunk
    if not promote_each:
        t0 = time.perf_counter()
        matcher.sync_cpu_to_gpu()
        promote_s = time.perf_counter() - t0
    wall_s = time.perf_counter() - started
    load_s = add_s + promote_s
    gc.collect()
    mem_after = _memory()
    stats = matcher.get_stats()
    if int(stats.get("total_patterns", n)) != n:
        raise RuntimeError(f"matcher holds {stats.get('total_patterns')} patterns, loaded {n}")
    load = {
        "seconds": load_s,
        "add_patterns_csr_s": add_s,
        "promote_s": promote_s if not promote_each else None,
        "wall_s": wall_s,
        "generate_s": generate_s,
        "patterns_per_s": n / load_s if load_s > 0 else None,
        "wall_patterns_per_s": n / wall_s if wall_s > 0 else None,
        "chunks": -(-n // opts.chunk),
        "memory_bytes": stats.get("memory_bytes"),
        "rss_before_bytes": mem_before["rss_bytes"],
        "rss_after_bytes": mem_after["rss_bytes"],
        "rss_growth_bytes": _diff(mem_after["rss_bytes"], mem_before["rss_bytes"]),
        "peak_rss_bytes": mem_after["peak_rss_bytes"],
        "peak_reset_before_load": peak_reset,
        "peak_over_after_bytes": _diff(mem_after["peak_rss_bytes"], mem_after["rss_bytes"]) if peak_reset else None,
        "stats": stats,
    }
    kept = None
    if collect:
        offsets = np.zeros(len(kept_lengths) + 1, dtype=np.int64)
        np.cumsum(kept_lengths, out=offsets[1:])
        tokens = np.concatenate(kept_tokens) if kept_tokens else np.zeros(0, dtype=np.int32)
        if any(ids is None for ids in queries):
            raise RuntimeError("a query's source pattern was never generated")
        kept = _Kept(queries, tokens, offsets)
    return matcher, load, kept


# ---------------------------------------------------------------------------- queries and checks
def _indices(names: List[str], n: int) -> np.ndarray:
    """``pattern_index`` a block of names at a time (its temporaries grow with the block)."""
    if len(names) <= NAME_BLOCK:
        return pattern_index(names, n)
    return np.concatenate([pattern_index(names[a : a + NAME_BLOCK], n) for a in range(0, len(names), NAME_BLOCK)])


def _result(res, n: int) -> Tuple[np.ndarray, np.ndarray, List[str], float]:
    """(indices, similarities, problems, seconds spent building ``res.names``)."""
    sims = np.asarray(res.similarities, dtype=np.float64)
    t0 = time.perf_counter()
    names = list(res.names)
    names_s = time.perf_counter() - t0
    if len(names) != len(sims) or len(res) != len(sims):
        return (
            np.zeros(0, dtype=np.int64),
            sims[:0],
            [f"len(res)={len(res)}, {len(names)} names, {len(sims)} similarities"],
            names_s,
        )
    idx = _indices(names, n)
    return idx, sims, [], names_s


def _oracle_values(rf, metric: str, plan: _Plan, kept: _Kept, q: int, vocab: np.ndarray) -> Tuple[np.ndarray, str]:
    """The exact similarity of query ``q``'s state with each of its sampled patterns."""
    sample = plan.samples[q]
    where = np.searchsorted(plan.keep, sample)
    state_ids = kept.queries[q]
    if metric == "lcs":
        choices = [kept.pattern_ids(int(k)).tolist() for k in where]
        lengths = np.diff(kept.offsets)[where]
        return (
            rapidfuzz_lcs_similarities(rf["cdist"], rf["LCSseq"].similarity, state_ids.tolist(), choices, lengths),
            "2.0*LCSseq.similarity/T",
        )
    patterns = [vocab[kept.pattern_ids(int(k))].tolist() for k in where]
    return np.asarray(difflib_ratios(patterns, vocab[state_ids].tolist()), dtype=np.float64), "difflib"


def _serve(
    matcher, rf, metric: str, plan: _Plan, kept: _Kept, opts: ScaleOptions, vocab: np.ndarray, err: IO[str]
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    n, threshold = plan.n, opts.threshold
    limits: Tuple[Optional[int], ...] = (None, opts.limit)
    states = [vocab[ids].tolist() for ids in kept.queries]
    times: Dict[Optional[int], List[float]] = {lim: [] for lim in limits}
    counts: Dict[Optional[int], List[int]] = {lim: [] for lim in limits}
    names_t: List[float] = []
    problems: List[str] = []
    bad = set()
    sampled = 0

    def note(q: int, found: List[str]) -> None:
        if found:
            bad.add(q)
            for text in found:
                if len(problems) < MAX_REPORTED:
                    problems.append(f"[{metric}] query {q}: {text}")

    for lim in limits:  # untimed warm-ups
        matcher.match_patterns_arrays(states[0], threshold, lim)
    gc.collect()
    _reset_peak()
    with Progress(len(states), label=f"queries ({metric})", unit="queries", stream=err, enabled=opts.progress) as bar:
        for q, state in enumerate(states):
            results = {}
            for lim in limits:
                t0 = time.perf_counter()
                res = matcher.match_patterns_arrays(state, threshold, lim)
                times[lim].append(time.perf_counter() - t0)
                counts[lim].append(len(res))
                results[lim] = res
            values, oracle = _oracle_values(rf, metric, plan, kept, q, vocab)
            whole = None
            for lim in limits:
                idx, sims, found, names_s = _result(results.pop(lim), n)
                if lim is None:
                    names_t.append(names_s)
                if found:
                    note(q, [f"max_predictions={lim}: {t}" for t in found])
                    continue
                label = "all" if lim is None else lim
                note(q, [f"max_predictions={label}: {t}" for t in check_result_shape(idx, sims, threshold, lim)])
                note(
                    q,
                    [
                        f"max_predictions={label}: {t}"
                        for t in check_sample(plan.samples[q], values, idx, sims, n, threshold, lim, oracle)
                    ],
                )
                sampled += len(values)
                if lim is None:
                    whole = (idx[: opts.limit], sims[: opts.limit])
                elif whole is not None:
                    note(
                        q,
                        [
                            f"max_predictions={lim} is not the head of the whole result: {t}".replace(
                                "expected", "whole result"
                            )
                            for t in compare_full(idx, sims, *whole)
                        ],
                    )
                del idx, sims
            bar.update(1)
    peak = _memory()

    rows = []
    for lim in limits:
        rows.append(
            {
                "max_predictions": lim,
                **_summary(times[lim]),
                "times_ms": [t * 1e3 for t in times[lim]],
                "matches_per_query": counts[lim],
                "mean_matches": float(np.mean(counts[lim])),
            }
        )
    latency = {
        "threshold": threshold,
        "call": "match_patterns_arrays(state, threshold, max_predictions)",
        "rows": rows,
        "names_median_ms": float(np.median(names_t) * 1e3) if names_t else None,
        "rss_after_bytes": peak["rss_bytes"],
        "peak_rss_bytes": peak["peak_rss_bytes"],
    }
    verification = {
        "ok": not bad,
        "queries_with_differences": len(bad),
        "oracle": "rapidfuzz LCSseq (integer-encoded)" if metric == "lcs" else "difflib (autojunk=False)",
        "sample_per_query": int(len(plan.samples[0])) if plan.samples else 0,
        "sampled_pairs_checked": sampled,
        "first_differences": problems,
    }
    return latency, verification


# ---------------------------------------------------------------------------- output
def _signed_mb(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / 1e6:+,.1f} MB"


def _table(metric: str, r: Dict[str, Any], opts: ScaleOptions, out: IO[str]) -> None:
    load, lat, v = r["load"], r["latency"], r["verification"]
    print(f"\nmetric {metric}: {r['formula']}", file=out)
    what = "add_patterns_csr calls" + (" + the final sync_cpu_to_gpu()" if opts.promote == "end" else "")
    print(
        f"  load: {opts.patterns:,} patterns in {load['chunks']:,} chunks: {load['seconds']:.2f} s inside the "
        f"{what} ({load['patterns_per_s']:,.0f} patterns/s); wall {load['wall_s']:.2f} s with generation "
        f"({load['generate_s']:.2f} s generating)",
        file=out,
    )
    peak = (
        f"; peak during the load {_mb(load['peak_rss_bytes'])} (VmHWM, "
        f"{_mb(load['peak_over_after_bytes'])} above the RSS after)"
        if load["peak_reset_before_load"]
        else f"; process peak {_mb(load['peak_rss_bytes'])} (VmHWM, not reset)"
    )
    print(
        f"  memory: matcher memory_bytes {_mb(load['memory_bytes'])}; process RSS {_mb(load['rss_before_bytes'])} "
        f"before, {_mb(load['rss_after_bytes'])} after ({_signed_mb(load['rss_growth_bytes'])}){peak}",
        file=out,
    )
    header = f"  {'query (threshold ' + str(lat['threshold']) + ')':<58} {'median ms':>10} {'p95 ms':>10} {'matches/query':>14}"
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for row in lat["rows"]:
        lim = "None" if row["max_predictions"] is None else row["max_predictions"]
        label = f"match_patterns_arrays(state, {lat['threshold']}, {lim})"
        print(
            f"  {label:<58} {row['median_ms']:>10,.2f} {row['p95_ms']:>10,.2f} {row['mean_matches']:>14,.1f}", file=out
        )
    if lat["names_median_ms"] is not None:
        print(
            f"  res.names of the whole result (not timed above): {lat['names_median_ms']:,.2f} ms median; "
            f"process peak while querying and checking {_mb(lat['peak_rss_bytes'])}",
            file=out,
        )
    if v["ok"]:
        print(
            f"  verified: every result ordered, limited = head of whole; {v['sampled_pairs_checked']:,} sampled "
            f"patterns ({v['sample_per_query']:,} per query and call) agree with {v['oracle']}",
            file=out,
        )
    else:
        print(f"  MISMATCH on {v['queries_with_differences']} queries", file=out)


# ---------------------------------------------------------------------------- entry point
def run_scale(opts: ScaleOptions, out: Optional[IO[str]] = None, err: Optional[IO[str]] = None) -> int:
    """Runs the scale benchmark; returns 0 (verified), 1 (a result differs) or 2 (rapidfuzz missing)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    rapidfuzz = require_rapidfuzz("scale-bench", err)
    if rapidfuzz is None:
        return EXIT_MISSING_DEPENDENCY
    import kato_gpu

    if opts.promote not in ("each", "end"):
        raise ValueError(f"promote must be 'each' or 'end', got {opts.promote!r}")
    total_cpus, usable_cpus = _cpu_counts()
    versions = _versions(kato_gpu, rapidfuzz)
    print(
        f"kato-gpu scale-bench: shape=kato N={opts.patterns:,} Q={opts.queries} metrics={','.join(opts.metrics)} "
        f"threshold={opts.threshold} limit={opts.limit} chunk={opts.chunk:,} promote={opts.promote} "
        f"sample={min(opts.sample, opts.patterns):,} seed={opts.seed}",
        file=out,
    )
    print(
        f"machine: {total_cpus} CPUs ({usable_cpus if usable_cpus is not None else '?'} usable); "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        file=out,
    )
    out.flush()

    rss_start = _status_bytes("VmRSS")
    plan = _plan(opts)
    vocab_list, _, _ = kato_vocab()
    vocab = np.array(vocab_list, dtype=object)
    encoder = kato_gpu.SymbolVocabularyEncoder(None)
    id_map = np.asarray(encoder.encode_ids(list(vocab_list)), dtype=np.int64)
    if not np.array_equal(id_map, np.arange(len(vocab_list))):
        raise RuntimeError("a fresh SymbolVocabularyEncoder did not number the sorted vocabulary 0..n-1")
    rf = {"cdist": rapidfuzz.process.cdist, "LCSseq": rapidfuzz.distance.LCSseq}

    results: Dict[str, Any] = {}
    kept: Optional[_Kept] = None
    for metric in opts.metrics:
        matcher, load, collected = _load(kato_gpu, encoder, metric, plan, opts, kept is None, err)
        if collected is not None:
            kept = collected
        assert kept is not None
        latency, verification = _serve(matcher, rf, metric, plan, kept, opts, vocab, err)
        del matcher
        gc.collect()
        results[metric] = {
            "formula": METRIC_FORMULAS[metric],
            "load": load,
            "latency": latency,
            "verification": verification,
        }
        _table(metric, results[metric], opts, out)
        out.flush()

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
        "workload": {
            "shape": "kato",
            "generator": "iter_kato_chunks",
            "n_patterns": opts.patterns,
            "n_queries": opts.queries,
            "chunk": opts.chunk,
            "vocab_size": len(vocab_list),
            "kept_patterns": int(len(plan.keep)),
            "kept_tokens": int(kept.tokens.size) if kept is not None else 0,
            "mean_state_len": float(np.mean([len(s) for s in kept.queries]))
            if kept is not None and kept.queries
            else 0.0,
            "rss_at_start_bytes": rss_start,
        },
        "results": results,
    }
    return finish_report(report, opts.json_path, out, err)
