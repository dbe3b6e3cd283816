"""End-to-end benchmark: KATO's prediction tuples, not only similarities.

For each query, kato_gpu's ``HybridGPUMatcher.match_predictions`` (every prediction above the
threshold, tuples built) is timed against KATO's Python path (``oracles.kato_prediction``: similarity,
then ``extract_prediction_info``) over a seeded sample of patterns, timed and extrapolated to N.
Every sampled pattern's tuple must equal kato_gpu's tuple for it (or both be absent): exit 1
otherwise. ``difflib`` reproduces KATO's ``_process_with_original``; ``lcs`` with
``kato_rounding`` its RapidFuzz token path.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import IO, Any, Dict, List, Optional

import numpy as np

from .._progress import Progress
from .oracles import kato_prediction
from .workload import generate_workload, pattern_names


def run_predictions(
    patterns: int = 100_000,
    queries: int = 10,
    threshold: float = 0.1,
    sample: int = 500,
    metrics=("difflib", "lcs"),
    seed: int = 42,
    json_path: Optional[str] = None,
    out: Optional[IO[str]] = None,
    progress: bool = True,
    err: Optional[IO[str]] = None,
) -> int:
    """Runs the benchmark (``progress``: a progress bar per metric on ``err``, stderr by default);
    returns 0 when every sampled tuple equals KATO's, 1 otherwise."""
    import kato_gpu

    out = out or sys.stdout
    err = err or sys.stderr
    wl = generate_workload(patterns, queries + 1, "kato", seed)
    names = pattern_names(0, wl.n_patterns)
    rng = np.random.default_rng(seed + 7)
    report: Dict[str, Any] = {
        "patterns": patterns,
        "queries": queries,
        "threshold": threshold,
        "sample": sample,
        "results": {},
    }
    status = 0
    print(f"kato-gpu predict-bench: N={patterns:,} Q={queries} threshold={threshold} sample={sample:,}", file=out)
    for metric in metrics:
        encoder = kato_gpu.SymbolVocabularyEncoder(None)
        ids = wl.encoder_ids(encoder)
        matcher = kato_gpu.HybridGPUMatcher(encoder, kato_gpu.GPUConfig(metric=metric))
        matcher.add_patterns_csr(names, ids[wl.tokens], wl.offsets)
        rounding = metric == "lcs"
        ours: List[float] = []
        theirs: List[float] = []
        counts: List[int] = []
        mismatches: List[str] = []
        bar = Progress(queries + 1, label=f"predictions ({metric})", unit="queries", stream=err, enabled=progress)
        for q in range(queries + 1):
            state = wl.state_symbols(q)
            # Each side starts from a collected heap, with the other side's results of the previous query
            # gone, so neither pays for the other's objects (the collection itself is not timed).
            picks = rng.choice(wl.n_patterns, size=min(sample, wl.n_patterns), replace=False)
            gc.collect()
            started = time.perf_counter()
            expected = [
                (names[i], kato_prediction(names[i], wl.pattern_symbols(i), state, metric, threshold)) for i in picks
            ]
            reference = (time.perf_counter() - started) * wl.n_patterns / len(picks)
            gc.collect()
            started = time.perf_counter()
            got = matcher.match_predictions(state, threshold, None, kato_rounding=rounding)
            elapsed = time.perf_counter() - started
            by_name = {row[0]: row for row in got}
            if q > 0:  # query 0 is the warm-up
                ours.append(elapsed)
                theirs.append(reference)
                counts.append(len(got))
                for name, want in expected:
                    if by_name.get(name) != want:
                        mismatches.append(f"query {q} pattern {name}: kato_gpu {by_name.get(name)!r} != KATO {want!r}")
            del got, by_name
            bar.update(1)
        bar.close()
        median_ours, median_theirs = float(np.median(ours)) * 1e3, float(np.median(theirs)) * 1e3
        print(f"metric {metric}{' (KATO RapidFuzz rounding)' if rounding else ''}:", file=out)
        print(
            f"  kato_gpu match_predictions          median {median_ours:10.1f} ms   p95 {np.percentile(ours, 95) * 1e3:10.1f} ms"
            f"   predictions/query {np.mean(counts):,.0f}",
            file=out,
        )
        print(
            f"  KATO Python path (extrapolated)     median {median_theirs:10.1f} ms   p95 {np.percentile(theirs, 95) * 1e3:10.1f} ms"
            f"   speed-up {median_theirs / median_ours:,.1f}x",
            file=out,
        )
        verdict = "verified" if not mismatches else f"{len(mismatches)} MISMATCHES, e.g. {mismatches[0]}"
        print(
            f"  {verdict}: {len(ours) * min(sample, wl.n_patterns):,} sampled prediction tuples compared exactly",
            file=out,
        )
        report["results"][metric] = {
            "kato_gpu_median_ms": median_ours,
            "kato_python_median_ms": median_theirs,
            "predictions_per_query": float(np.mean(counts)),
            "mismatches": len(mismatches),
        }
        status |= 1 if mismatches else 0
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(report, fh, indent=1)
    return status
