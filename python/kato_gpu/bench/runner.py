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

Sizes (``sizes`` not empty), after each metric's run: the same queries on the first n patterns
for each n (``bench/sizes.py``), for latency against N. ``plot_path``: the figure of the report
(``bench/plot.py``).

Learning (``learn`` > 0), after each metric's queries and checks, on the same loaded matcher:
``learn`` new patterns of the same shape (another seed, names after the loaded ones) are learned
one ``HybridGPUMatcher.add_new_pattern(name, events)`` call at a time, events as lists of
symbols (vocabulary encoding included), each call timed with ``time.perf_counter_ns``; then one
``sync_cpu_to_gpu()`` promotes them all and is timed too.
"""

from __future__ import annotations

import gc
import platform
import sys
import time
from dataclasses import asdict
from typing import IO, Any, Dict, Optional

import numpy as np

from .common import (
    EXIT_MISMATCH,
    EXIT_MISSING_DEPENDENCY,
    EXIT_OK,
    _cpu_counts,
    _rss_bytes,
    _versions,
    require_rapidfuzz,
)
from .learning import learn_workload
from .options import BenchOptions, batch_limit
from .report import _jsonable, finish_report, table
from .single import bench_metric
from .sizes import size_series
from .workload import generate_workload

__all__ = ["BenchOptions", "run", "EXIT_OK", "EXIT_MISMATCH", "EXIT_MISSING_DEPENDENCY"]


def run(opts: BenchOptions, out: Optional[IO[str]] = None, err: Optional[IO[str]] = None) -> int:
    """Runs the benchmark; returns 0 (all verified), 1 (a result differs from an oracle) or 2
    (rapidfuzz missing, or ``device="gpu"`` without a usable GPU)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    rapidfuzz = require_rapidfuzz("bench", err)
    if rapidfuzz is None:
        return EXIT_MISSING_DEPENDENCY
    import kato_gpu

    if opts.device == "gpu":
        # Refused before the workload is generated (minutes at 10M), as a bad argument is.
        info = kato_gpu.cuda.device_info()
        if not info["available"]:
            print(f"kato-gpu bench: error: --device gpu, but no usable CUDA GPU: {info['reason']}", file=err)
            return EXIT_MISSING_DEPENDENCY
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
    if opts.progress:
        print(
            f"generating {opts.patterns:,} {opts.shape} patterns and {opts.queries} queries (seed {opts.seed})...",
            file=err,
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
    rf = {"cdist": rapidfuzz.process.cdist, "LCSseq": rapidfuzz.distance.LCSseq}
    results: Dict[str, Any] = {}
    # Freeze what exists now (a million pattern lists) so that a full garbage collection does
    # not walk it during a timed query.
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
    try:
        for metric in opts.metrics:
            results[metric] = result = bench_metric(
                kato_gpu, rf, encoder, metric, wl, tokens_enc, choices, opts, err, lw
            )
            if opts.sizes:
                result["sizes"] = size_series(kato_gpu, rf, encoder, metric, wl, tokens_enc, choices, opts, result, err)
                if not result["sizes"]["verification"]["ok"]:
                    result["verification"]["ok"] = False
                    result["verification"]["first_differences"].extend(
                        result["sizes"]["verification"]["first_differences"]
                    )
            table(metric, result, opts, out)
            out.flush()
    finally:
        if hasattr(gc, "unfreeze"):
            gc.unfreeze()

    ok = all(r["verification"]["ok"] for r in results.values())
    report = {
        "ok": ok,
        "options": {k: v for k, v in asdict(opts).items() if k not in ("json_path", "plot_path")},
        "environment": {
            "cpu_count": total_cpus,
            "usable_cpus": usable_cpus,
            "platform": platform.platform(),
            **versions,
        },
        "workload": workload_info,
        "results": results,
    }
    status = finish_report(report, opts.json_path, out, err)
    if opts.plot_path:
        from .plot import draw

        draw(_jsonable(report), opts.plot_path)
        print(f"wrote {opts.plot_path}", file=out)
    return status
