"""``kato-gpu scale-bench --shards K [K ...]``: one matcher against ``ShardedMatcher(K)`` on Ray.

The workload is the bench's ``kato`` shape, or ``chunks`` (``--shape``; :func:`.workload.generate_workload`,
``PTRN|`` names).
The reference is one in-process ``HybridGPUMatcher``; then, for each K, a ``ShardedMatcher(K)``
on the local Ray cluster (started here unless one is already up). Per matcher:

* load: ``add_patterns_csr`` of every pattern (for the sharded one: placement by name, the
  per-shard split, the transfer to the actors and their loads), and memory (``memory_bytes``
  summed over the shards, and the symbols stored over all shards against the distinct count:
  the cost of per-shard vocabularies);
* query latency, one query at a time: ``match_patterns_arrays(state, threshold, None)`` and
  ``(state, threshold, limit)``, median and p95; and one batch call of every query;
* every sharded answer compared with the reference's (names equal, similarities ==): exit status
  1 on any difference.

Scatter-gather overhead per query: the median over the queries of (latency through
``ShardedMatcher(1)``) - (latency of the same call on the in-process matcher), the same work
behind one actor; and the round trip of a query that matches nothing (a state of unknown
symbols, threshold 1.0) through K shards: the floor of a distributed query.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._progress import Progress
from .common import _cpu_counts, _mb, _summary
from .workload import generate_workload, pattern_names

__all__ = ["ShardBenchOptions", "run_sharded", "DEFAULT_PATTERNS"]

#: ``--patterns`` when ``--shards`` is given and ``--patterns`` is not: about a minute on 2 cores.
DEFAULT_PATTERNS = 200_000

#: What 2 cores can and cannot show, printed with the figures.
CORES_NOTE = (
    "All shards share this machine's {cores} cores: a query on K shards does the same total work as "
    "on one matcher, split K ways and run side by side on the same cores, plus the scatter-gather; "
    "so on a small machine K > 1 cannot be faster, and the figures measure the overhead of sharding. "
    "The gain of sharding is capacity and cores: K machines (or GPUs) each holding 1/K of the patterns."
)


@dataclass
class ShardBenchOptions:
    shards: Tuple[int, ...] = (1, 2, 4)
    shape: str = "kato"
    patterns: int = DEFAULT_PATTERNS
    queries: int = 30
    metrics: Tuple[str, ...] = ("lcs", "difflib")
    threshold: float = 0.1
    limit: int = 100
    seed: int = 42
    json_path: Optional[str] = None
    progress: bool = True


def _timed(fn) -> Tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _same(a, b) -> bool:
    return list(a.names) == list(b.names) and np.asarray(a.similarities).tolist() == np.asarray(b.similarities).tolist()


def _queries(matcher, states: Sequence[List[str]], threshold: float, limit: int) -> Dict[str, Any]:
    """Latency one query at a time (every match, then ``limit``), and one batch call."""
    matcher.match_patterns_arrays(states[0], threshold, None)  # warm-up, untimed
    full, full_s = zip(*(_timed(lambda s=s: matcher.match_patterns_arrays(s, threshold, None)) for s in states))
    top, top_s = zip(*(_timed(lambda s=s: matcher.match_patterns_arrays(s, threshold, limit)) for s in states))
    _, batch_s = _timed(lambda: matcher.match_patterns_batch_arrays(list(states), threshold, None))
    return {
        "results": (list(full), list(top)),
        "all_s": list(full_s),
        "limit_s": list(top_s),
        "all": _summary(full_s),
        "limit": _summary(top_s),
        "batch_s": batch_s,
        "matches_per_query": float(np.mean([len(r) for r in full])),
    }


def run_sharded(opts: ShardBenchOptions, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    try:
        import ray
    except ImportError:
        print("kato-gpu scale-bench --shards: Ray is not installed (pip install 'kato-gpu[distributed]')", file=err)
        return 2
    import kato_gpu
    from kato_gpu.distributed import ShardedMatcher

    cpus, usable = _cpu_counts()
    logical = usable or cpus or 1
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=logical, include_dashboard=False, log_to_driver=False)
    wl = generate_workload(opts.patterns, opts.queries, opts.shape, opts.seed)
    names = pattern_names(0, opts.patterns)
    states = [wl.state_symbols(q) for q in range(opts.queries)]
    nothing = ["kato_gpu_bench_unknown_symbol"]
    report: Dict[str, Any] = {
        "command": "scale-bench --shards",
        "options": asdict(opts),
        "machine": {"cpus": cpus, "usable_cpus": usable, "platform": platform.platform()},
        "versions": {"kato_gpu": kato_gpu.__version__, "ray": ray.__version__},
        "metrics": {},
    }
    failures = 0
    print(
        f"scale-bench --shards: {opts.patterns:,} {opts.shape}-shaped patterns, {opts.queries} queries, threshold "
        f"{opts.threshold}, limit {opts.limit}; Ray {ray.__version__}, {logical} CPUs",
        file=out,
    )
    print(CORES_NOTE.format(cores=logical), file=out)
    for metric in opts.metrics:
        config = kato_gpu.GPUConfig(metric=metric)
        encoder = kato_gpu.SymbolVocabularyEncoder(None)
        one = kato_gpu.HybridGPUMatcher(encoder, config)
        ids = wl.encoder_ids(encoder)
        _, load_s = _timed(lambda one=one, ids=ids: one.add_patterns_csr(names, ids[wl.tokens], wl.offsets))
        ref = _queries(one, states, opts.threshold, opts.limit)
        one_stats = one.get_stats()
        rows: List[Dict[str, Any]] = [
            {
                "matcher": "in-process HybridGPUMatcher",
                "shards": 0,
                "load_s": load_s,
                "memory_bytes": one_stats["memory_bytes"],
                "symbols_stored": one_stats["vocab_size"],
                "all": ref["all"],
                "limit": ref["limit"],
                "batch_s": ref["batch_s"],
                "matches_per_query": ref["matches_per_query"],
            }
        ]
        with Progress(
            len(opts.shards), label=f"shards ({metric})", unit="runs", stream=err, enabled=opts.progress
        ) as bar:
            for k in opts.shards:
                sharded, create_s = _timed(lambda k=k, config=config: ShardedMatcher(k, config))
                try:
                    sids = np.asarray(sharded.encoder.encode_ids(list(wl.vocab)), dtype=np.int64)
                    _, sload_s = _timed(
                        lambda sharded=sharded, sids=sids: sharded.add_patterns_csr(names, sids[wl.tokens], wl.offsets)
                    )
                    got = _queries(sharded, states, opts.threshold, opts.limit)
                    for expected, answer in zip(ref["results"], got["results"]):
                        failures += sum(not _same(a, b) for a, b in zip(expected, answer))
                    sharded.match_patterns_arrays(nothing, 1.0, None)
                    floor = [
                        _timed(lambda sharded=sharded: sharded.match_patterns_arrays(nothing, 1.0, None))[1]
                        for _ in range(50)
                    ]
                    stats = sharded.get_stats()
                    row = {
                        "matcher": f"ShardedMatcher({k})",
                        "shards": k,
                        "create_s": create_s,
                        "load_s": sload_s,
                        "memory_bytes": stats["memory_bytes"],
                        "symbols_stored": stats["vocab_size_sum"],
                        "patterns_per_shard": [s["total_patterns"] for s in stats["shards"]],
                        "all": got["all"],
                        "limit": got["limit"],
                        "batch_s": got["batch_s"],
                        "matches_per_query": got["matches_per_query"],
                        "empty_round_trip": _summary(floor),
                    }
                    if k == 1:
                        row["overhead_all_ms"] = 1e3 * float(np.median(np.subtract(got["all_s"], ref["all_s"])))
                        row["overhead_limit_ms"] = 1e3 * float(np.median(np.subtract(got["limit_s"], ref["limit_s"])))
                    rows.append(row)
                finally:
                    sharded.close()
                bar.update(1)
        distinct = int(np.unique(wl.tokens).size)
        report["metrics"][metric] = {"rows": rows, "distinct_symbols": distinct}
        _print_table(metric, rows, distinct, out)
    report["identical"] = failures == 0
    report["differences"] = failures
    print(
        "every sharded result identical to the in-process matcher's"
        if failures == 0
        else f"{failures} sharded results DIFFER from the in-process matcher's",
        file=out,
    )
    if opts.json_path:
        import json

        with open(opts.json_path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    if started_ray:
        ray.shutdown()
    return 0 if failures == 0 else 1


def _print_table(metric: str, rows: List[Dict[str, Any]], distinct: int, out: IO[str]) -> None:
    print(f"\n{metric}:", file=out)
    print(
        f"  {'matcher':<28} {'load s':>7} {'memory':>9} {'symbols':>8} {'all p50 ms':>10} {'p95':>7} "
        f"{'limit p50':>9} {'p95':>7} {'batch s':>8} {'empty rt ms':>11} {'matches/q':>9}",
        file=out,
    )
    for r in rows:
        floor = r.get("empty_round_trip")
        print(
            f"  {r['matcher']:<28} {r['load_s']:>7.2f} {_mb(r['memory_bytes']):>9} {r['symbols_stored']:>8,} "
            f"{r['all']['median_ms']:>10.1f} {r['all']['p95_ms']:>7.1f} {r['limit']['median_ms']:>9.1f} "
            f"{r['limit']['p95_ms']:>7.1f} {r['batch_s']:>8.2f} "
            f"{(floor['median_ms'] if floor else float('nan')):>11.2f} {r['matches_per_query']:>9.0f}",
            file=out,
        )
    print(
        f"  symbols: {distinct:,} distinct in the patterns (the in-process encoder holds the generator's whole "
        "vocabulary); a shard stores those of its own patterns",
        file=out,
    )
    for r in rows:
        if "overhead_all_ms" in r:
            print(
                f"  scatter-gather overhead per query through one shard actor (median of per-query differences): "
                f"{r['overhead_all_ms']:.2f} ms returning every match, {r['overhead_limit_ms']:.2f} ms with the limit",
                file=out,
            )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_sharded(ShardBenchOptions(patterns=int(os.environ.get("N", DEFAULT_PATTERNS)))))
