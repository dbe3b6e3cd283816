"""Latency against the number of patterns (``kato-gpu bench --sizes``, ``--plot``).

For each size n below the workload's N, the first n patterns of the same workload are loaded into
a fresh matcher and the same queries are timed through kato_gpu and RapidFuzz's ``cdist`` on those
n patterns. ``lcs`` results are checked whole against RapidFuzz, ``difflib`` results for order and
threshold (the full-size run checked them against difflib on its sample). The difflib loop is not
rerun: its time per pattern comes from the full-size run's sample, scaled to n, as the main table
extrapolates it to N. The full size's row is the main run's own numbers.
"""

from __future__ import annotations

import gc
import time
from typing import IO, Any, Dict, List

import numpy as np

from .._progress import Progress
from .common import MAX_REPORTED, _summary
from .options import BenchOptions
from .verify import check_result_shape, compare_full, rapidfuzz_lcs_matches
from .workload import Workload, pattern_index, pattern_names

__all__ = ["size_series"]


def size_series(
    kato_gpu,
    rf,
    encoder,
    metric: str,
    wl: Workload,
    tokens_enc: np.ndarray,
    choices: List[List[int]],
    opts: BenchOptions,
    main: Dict[str, Any],
    err: IO[str],
) -> Dict[str, Any]:
    """The rows of latency against N for ``opts.sizes`` and the workload's N (``main``: the
    metric's result of the full-size run). ``verification.ok`` is False on any difference."""
    cdist, lcs_scorer = rf["cdist"], rf["LCSseq"].similarity
    threshold, limit = opts.threshold, opts.max_predictions
    engines = main["engines"]
    difflib_ms_per_pattern = engines["difflib"]["median_ms"] / wl.n_patterns if "difflib" in engines else None
    states = [wl.state_symbols(q) for q in range(wl.n_queries)]
    state_ids = [wl.queries[q].tolist() for q in range(wl.n_queries)]
    rows: List[Dict[str, Any]] = []
    problems: List[str] = []
    bad = 0
    with Progress(
        len(opts.sizes) * wl.n_queries, label=f"sizes ({metric})", unit="queries", stream=err, enabled=opts.progress
    ) as bar:
        for n in opts.sizes:
            matcher = kato_gpu.HybridGPUMatcher(encoder, kato_gpu.GPUConfig(metric=metric, device=opts.device))
            end = int(wl.offsets[n])
            added = matcher.add_patterns_csr(pattern_names(0, n), tokens_enc[:end], wl.offsets[: n + 1], promote=True)
            if added != n:
                raise RuntimeError(f"add_patterns_csr added {added} of {n} patterns")
            sub, lengths = choices[:n], wl.lengths[:n]
            matcher.match_patterns_arrays(states[0], threshold, limit)  # untimed warm-up, as the main run
            rapidfuzz_lcs_matches(cdist, lcs_scorer, state_ids[0], sub, lengths, threshold, limit)
            gc.collect()
            kato_t: List[float] = []
            rf_t: List[float] = []
            counts: List[int] = []
            for q in range(wl.n_queries):
                t0 = time.perf_counter()
                res = matcher.match_patterns_arrays(states[q], threshold, limit)
                kato_t.append(time.perf_counter() - t0)
                sims = np.asarray(res.similarities, dtype=np.float64)
                idx = pattern_index(list(res.names), n)
                counts.append(len(sims))
                found = check_result_shape(idx, sims, threshold, limit)
                t0 = time.perf_counter()
                exp_idx, exp_sims, _ = rapidfuzz_lcs_matches(
                    cdist, lcs_scorer, state_ids[q], sub, lengths, threshold, limit
                )
                rf_t.append(time.perf_counter() - t0)
                if metric == "lcs":
                    found += compare_full(idx, sims, exp_idx, exp_sims)
                if found:
                    bad += 1
                    problems.extend(f"[{metric}] sizes: N={n:,} query {q}: {t}" for t in found)
                bar.update(1)
            rows.append(
                {
                    "patterns": n,
                    "kato_gpu": _summary(kato_t),
                    "rapidfuzz": _summary(rf_t),
                    "difflib_median_ms": None if difflib_ms_per_pattern is None else difflib_ms_per_pattern * n,
                    "mean_matches": float(np.mean(counts)),
                }
            )
            del matcher, res
    full = {
        "patterns": wl.n_patterns,
        "kato_gpu": {k: engines["kato_gpu"][k] for k in ("median_ms", "p95_ms")},
        "rapidfuzz": {k: engines["rapidfuzz"][k] for k in ("median_ms", "p95_ms")},
        "difflib_median_ms": engines["difflib"]["median_ms"] if "difflib" in engines else None,
        "mean_matches": engines["kato_gpu"]["mean_matches"],
    }
    return {
        "rows": rows + [full],
        "difflib": "time per pattern of the full-size run's difflib sample, scaled to N",
        "verification": {
            "ok": bad == 0,
            "results_with_differences": bad,
            "whole_results_checked": len(opts.sizes) * wl.n_queries if metric == "lcs" else 0,
            "first_differences": problems[:MAX_REPORTED],
        },
    }
