"""One metric: load the workload into a matcher, time the same queries through kato_gpu,
RapidFuzz's ``cdist`` and a difflib loop, check every kato_gpu result; then the threshold sweep,
the batch comparison and learning on the same matcher."""

from __future__ import annotations

import gc
import time
from typing import IO, Any, Dict, List, Optional, Tuple

import numpy as np

from .._progress import Progress
from .batch import batch_bench
from .common import MAX_REPORTED, METRIC_FORMULAS, SAMPLE_STREAM, _rss_bytes, _summary, sample_indices
from .learning import learn
from .options import BenchOptions
from .oracles import difflib_ratios, lcs_of_ids
from .thresholds import threshold_sweep
from .verify import check_result_shape, check_sample, compare_full, rapidfuzz_lcs_matches
from .workload import Workload, pattern_index, pattern_names


def _load(kato_gpu, encoder, metric: str, wl: Workload, tokens_enc: np.ndarray, opts: BenchOptions, err: IO[str]):
    gc.collect()
    rss_before = _rss_bytes()
    matcher = kato_gpu.HybridGPUMatcher(encoder, kato_gpu.GPUConfig(metric=metric, device=opts.device))
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


def bench_metric(
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
                    values = np.array([lcs_of_ids(choices[int(i)], sid) for i in sample], dtype=np.float64)
                    oracle = "2.0*LCSseq.similarity/T"
                note(q, check_sample(sample, values, got_idx, got_sims, n, threshold, limit, oracle))
                sample_checked += sample_size
            bar.update(1)

    # Where the timed queries ran (gpu_queries, long-state and fallback counts), before anything
    # else queries this matcher.
    query_stats = matcher.get_stats()
    # The distance to the physical limit: the stored symbols read once over all cores, as fast
    # as this machine streams them, against what a query's scan of the same bytes achieves.
    symbol_bytes, stream_s = matcher._stream_symbols(5)

    # The threshold sweep and the batch comparison, on the same matcher, before learning.
    sweep = None
    sweep_ok = batch_ok = True
    if opts.thresholds:
        sweep, found = threshold_sweep(matcher, rf, metric, wl, states, state_ids, choices, difflib_samples, opts, err)
        sweep_ok = not found
        problems.extend(f"[{metric}] {text}" for text in found[:MAX_REPORTED])
    batch = None
    if opts.batch > 0:
        batch, found = batch_bench(matcher, rf, metric, wl, choices, opts, err)
        batch_ok = not found
        problems.extend(f"[{metric}] {text}" for text in found[:MAX_REPORTED])

    # Learning comes after every query has been compared, so the learned patterns never enter a
    # checked result.
    learning = None
    learn_problems: List[str] = []
    if lw is not None:
        learning, learn_problems = learn(matcher, lw, n, opts, err)
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
            "lcs_kernel": kato_gpu._native.lcs_kernel(),
            "symbol_bytes": symbol_bytes,
            "effective_gb_s": symbol_bytes / kato_sum["median_ms"] / 1e6 if kato_sum["median_ms"] > 0 else None,
            "stream_gb_s": symbol_bytes / stream_s / 1e9 if stream_s > 0 else None,
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
        "query_stats": query_stats,
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
