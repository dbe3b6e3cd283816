"""Snapshot timing: ``HybridGPUMatcher.save`` and ``HybridGPUMatcher.load`` of N KATO-shaped patterns.

Usage: ``python -m kato_gpu.bench.snapshot --patterns 1000000 [--metric lcs] [--dir /tmp]``

The patterns are ``scale-bench``'s (:func:`.workload.iter_kato_chunks`, names ``PTRN|...``), loaded
with ``add_patterns_csr``; every chunk but the last is promoted, so both tiers are populated. Then
one ``save`` and one ``load`` are timed (wall clock, each in full: the file is synced before
``save`` returns; the saved matcher is dropped before the load, as in a restart), the file size
and the process peak RSS reported, and the loaded matcher checked against the original: same
tiers and pattern count, and identical results (names, and similarities compared bit for bit)
for ``--queries`` queries made as ``scale-bench`` makes them, answered before the save.
Exit status 1 on any difference.

``--dir D`` keeps the snapshot as ``D/matcher.snap`` (a temporary directory otherwise);
``--load-only PATH`` then times the load of that file alone in a fresh process. Each load is
reported as wall time and CPU time (every thread, user and system): on a shared machine the
second is the steadier figure.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np

from .workload import iter_kato_chunks, kato_vocab, pattern_names


def _peak_rss_mb() -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv: Optional[List[str]] = None) -> int:
    import kato_gpu

    parser = argparse.ArgumentParser(prog="python -m kato_gpu.bench.snapshot", description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--metric", default="lcs", choices=["lcs", "difflib"])
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="max_predictions of the checked queries (default: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", default=None, help="keep the snapshot as DIR/matcher.snap (default: a temporary file)")
    parser.add_argument(
        "--load-only",
        metavar="PATH",
        default=None,
        help="only time HybridGPUMatcher.load(PATH) in this fresh process (a restart), and report the counts",
    )
    opts = parser.parse_args(argv)
    if opts.load_only:
        t0, c0 = time.perf_counter(), time.process_time()
        loaded = kato_gpu.HybridGPUMatcher.load(opts.load_only)
        load_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        size = os.path.getsize(opts.load_only)
        print(
            f"load: {load_s:.2f} s ({size / load_s / 1e6:,.0f} MB/s), CPU {cpu_s:.2f} s (every thread, user + system), "
            f"tiers {loaded._tiers()}"
        )
        print(f"process peak RSS: {_peak_rss_mb():,.0f} MB")
        return 0

    vocab_list, _, _ = kato_vocab()
    encoder = kato_gpu.SymbolVocabularyEncoder(None)
    encoder.encode_ids(list(vocab_list))
    matcher = kato_gpu.HybridGPUMatcher(encoder, kato_gpu.GPUConfig(metric=opts.metric, device="cpu"))
    queries: List[List[str]] = []
    rng = np.random.default_rng([opts.seed, 1])
    t0 = time.perf_counter()
    for chunk in iter_kato_chunks(opts.patterns, opts.chunk, opts.seed):
        if chunk.stop == opts.patterns and chunk.start > 0:
            matcher.sync_cpu_to_gpu()  # every chunk but the last in the bulk tier
        matcher.add_patterns_csr(pattern_names(chunk.start, chunk.stop), chunk.tokens, chunk.offsets, promote=False)
        if len(queries) < opts.queries:
            local = int(rng.integers(chunk.n_patterns))
            queries.append([vocab_list[i] for e in chunk.query(rng, local) for i in e.tolist()])
    build_s = time.perf_counter() - t0
    bulk, recent = matcher._tiers()
    print(f"built {opts.patterns:,} {opts.metric} patterns in {build_s:.1f} s: bulk {bulk:,}, recent {recent:,}")
    print(f"matcher memory: {matcher.get_stats()['memory_bytes'] / 1e6:,.0f} MB")

    expected = []
    for q in queries:
        result = matcher.match_patterns_arrays(q, 0.1, opts.limit)
        expected.append((result.names, result.similarities.tobytes()))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(opts.dir or tmp, "matcher.snap")
        t0 = time.perf_counter()
        matcher.save(path)
        save_s = time.perf_counter() - t0
        size = os.path.getsize(path)
        print(f"save: {save_s:.2f} s, file {size / 1e6:,.0f} MB ({size / save_s / 1e6:,.0f} MB/s)")
        # As a restart: the saved matcher is gone before the load.
        count = len(matcher)
        del matcher
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        loaded = kato_gpu.HybridGPUMatcher.load(path)
        load_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"load: {load_s:.2f} s ({size / load_s / 1e6:,.0f} MB/s), CPU {cpu_s:.2f} s (every thread, user + system)"
        )
    print(f"process peak RSS: {_peak_rss_mb():,.0f} MB")

    failures = 0
    if loaded._tiers() != (bulk, recent) or len(loaded) != count:
        print(f"DIFFERENT tiers: {loaded._tiers()} vs {(bulk, recent)}")
        failures += 1
    for q, (names, similarities) in zip(queries, expected):
        b = loaded.match_patterns_arrays(q, 0.1, opts.limit)
        if names != b.names or similarities != b.similarities.tobytes():
            print(f"DIFFERENT result for query {q[:6]}...")
            failures += 1
    print(f"{len(queries)} queries (threshold 0.1, max_predictions {opts.limit}) identical: {failures == 0}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
