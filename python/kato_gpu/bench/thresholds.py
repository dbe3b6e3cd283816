"""The threshold sweep: the same queries through ``match_patterns_arrays(state, t, max_predictions)``
for every threshold ``t``, each result checked as the main path checks it."""

from __future__ import annotations

import gc
import time
from typing import IO, Any, Dict, List, Tuple

import numpy as np

from .._progress import Progress
from .common import MAX_REPORTED, _summary
from .options import BenchOptions
from .verify import (
    _result_arrays,
    check_result_shape,
    check_sample,
    compare_full,
    filter_and_order,
    rapidfuzz_lcs_similarities,
)
from .workload import Workload


def threshold_sweep(
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
