"""Time ``HybridGPUMatcher.kato_ranked_predictions`` on KATO-shaped patterns.

    python -m kato_gpu.bench.kato_record --patterns 1000000 --queries 20 --threshold 0.1 --keep 300

Loads the ``kato`` workload (events kept, see :mod:`kato_gpu.bench.workload`) with
``add_patterns_events`` and prints the milliseconds per query (median and mean) with the number
of matches per query: the cost of handing Python only the predictions KATO keeps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import List, Optional

from kato_gpu._native import HybridGPUMatcher, SymbolVocabularyEncoder
from kato_gpu.bench.workload import generate_workload, pattern_names


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patterns", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--keep", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    workload = generate_workload(args.patterns, args.queries, "kato", args.seed)
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(), metric="lcs")
    step = 100_000
    for start in range(0, workload.n_patterns, step):
        stop = min(start + step, workload.n_patterns)
        events = [workload.pattern_events(i) for i in range(start, stop)]
        matcher.add_patterns_events(pattern_names(start, stop), events, promote=False)
    matcher.sync_cpu_to_gpu()
    print(f"loaded {len(matcher)} patterns in {time.perf_counter() - started:.1f} s")

    states = [workload.state_symbols(q) for q in range(workload.n_queries)]
    matcher.kato_ranked_predictions(states[0], args.threshold, args.keep)  # warm-up
    times, totals = [], []
    for state in states:
        t0 = time.perf_counter()
        total, kept = matcher.kato_ranked_predictions(state, args.threshold, args.keep)
        times.append((time.perf_counter() - t0) * 1e3)
        totals.append(total)
    print(
        f"kato_ranked_predictions: threshold {args.threshold}, keep {args.keep}, {len(states)} queries: "
        f"median {statistics.median(times):.1f} ms, mean {statistics.fmean(times):.1f} ms, "
        f"max {max(times):.1f} ms; matches per query: median {int(statistics.median(totals))}"
    )


if __name__ == "__main__":
    main()
