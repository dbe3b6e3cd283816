"""``kato-gpu kato-bench``: KATO's own serving path, unmodified and on kato_gpu, in one run.

One KATO instance (its FastAPI app under uvicorn, a Redis server, chdb as its ClickHouse; see
:mod:`kato_gpu.kato_host`) is loaded with ``N`` KATO-shaped patterns through KATO's own learn
code. It then serves the same queries twice over real HTTP on the same stores: first
unmodified, then restarted with ``KATO_GPU_ACCELERATE=1``. Each query is a fresh session (the
query's events observed with ``process_predictions`` off, so that only the timed ``GET
/sessions/{id}/predictions`` predicts). Every response of the second run is compared with the
first (:mod:`kato_gpu.bench.kato_compare`); where they differ, KATO's own matching code run here
(:mod:`kato_gpu.bench.kato_oracle`) tells whether KATO's answer was its own choice at a tied
cut. Any other difference makes the command exit with status 1.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from itertools import chain
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .kato_compare import compare_responses
from .workload import iter_kato_chunks, kato_vocab

NODE = "kato-bench"
LOAD_CHUNK = 50_000


@dataclass
class KatoBenchOptions:
    kato_src: Optional[str]
    patterns: int
    queries: int
    mode: str = "token"
    threshold: float = 0.1
    max_predictions: int = 100
    kato_queries: Optional[int] = None
    seed: int = 42
    json_path: Optional[str] = None
    #: More session settings (e.g. a ``filter_pipeline``), over the ones above.
    session_config: Optional[Dict[str, Any]] = None


def _events(vocab: List[str], tokens: np.ndarray, bounds: np.ndarray) -> List[List[str]]:
    return [[vocab[t] for t in tokens[bounds[e] : bounds[e + 1]]] for e in range(len(bounds) - 1)]


def workload(n_patterns: int, n_queries: int, seed: int) -> Tuple[List[List[List[str]]], List[List[List[str]]]]:
    """``n_patterns`` KATO-shaped sequences and ``n_queries`` queries made from them (the
    ``kato`` shape of :mod:`kato_gpu.bench.workload`)."""
    vocab, _, _ = kato_vocab()
    sequences: List[List[List[str]]] = []
    chunks = []
    for chunk in iter_kato_chunks(n_patterns, min(LOAD_CHUNK, n_patterns), seed):
        for k in range(chunk.n_patterns):
            first, last = chunk.pattern_event_offsets[k], chunk.pattern_event_offsets[k + 1]
            sequences.append(_events(vocab, chunk.tokens, chunk.event_offsets[first : last + 1]))
        chunks.append(chunk)
    rng = np.random.default_rng([seed, 1])
    queries = []
    for _ in range(n_queries):
        chunk = chunks[int(rng.integers(len(chunks)))]
        query = chunk.query(rng, int(rng.integers(chunk.n_patterns)))
        queries.append([[vocab[t] for t in event] for event in query])
    return sequences, queries


def _serve_queries(
    base_url: str, queries: Sequence[Sequence[Sequence[str]]], config: Dict[str, Any]
) -> Tuple[List[dict], List[float]]:
    from ..kato_host.client import KatoClient

    responses, seconds = [], []
    with KatoClient(base_url) as client:
        warm = client.create_session(NODE, config=config)
        client.observe_events(warm, queries[0])
        client.predictions_response(warm)
        for query in queries:
            session = client.create_session(NODE, config=config)
            client.observe_events(session, query)
            started = time.perf_counter()
            responses.append(client.predictions_response(session))
            seconds.append(time.perf_counter() - started)
            client.delete_session(session)
    return responses, seconds


def _summary(seconds: List[float]) -> Dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
    }


def run_kato_bench(opts: KatoBenchOptions) -> int:
    from ..kato_host.process import KatoServer

    if opts.mode not in ("token", "difflib"):
        raise ValueError(f"mode must be 'token' or 'difflib', got {opts.mode!r}")
    kato_queries = opts.queries if opts.kato_queries is None else min(opts.kato_queries, opts.queries)
    log = sys.stderr
    print(f"kato-bench: generating {opts.patterns:,} patterns and {opts.queries} queries", file=log)
    sequences, queries = workload(opts.patterns, opts.queries, opts.seed)
    env = {"PYTHONHASHSEED": "0", "KATO_USE_FAST_MATCHING": "true" if opts.mode == "token" else "false"}
    config = {
        "max_predictions": opts.max_predictions,
        "recall_threshold": opts.threshold,
        "process_predictions": False,
        **(opts.session_config or {}),
    }
    result: Dict[str, Any] = {
        "patterns": opts.patterns,
        "queries": opts.queries,
        "kato_queries": kato_queries,
        "mode": opts.mode,
        "threshold": opts.threshold,
        "max_predictions": opts.max_predictions,
        "session_config": opts.session_config or {},
    }
    with KatoServer(kato_src=opts.kato_src, env=env) as server:
        started = time.perf_counter()
        report = server.bulk_load(NODE, sequences)
        result["load_seconds"] = time.perf_counter() - started
        print(f"kato-bench: loaded {report.get('patterns', opts.patterns):,} patterns through KATO's learn "
              f"in {result['load_seconds']:.0f} s", file=log)  # fmt: skip
        print(f"kato-bench: KATO unmodified, {kato_queries} queries", file=log)
        kato_responses, kato_seconds = _serve_queries(server.base_url, queries[:kato_queries], config)
        server.stop_server()
        server.extra_env["KATO_GPU_ACCELERATE"] = "1"
        server.start_server()
        result["accelerated_startup_seconds"] = server.startup_seconds
        print(f"kato-bench: KATO on kato_gpu (started in {server.startup_seconds:.1f} s), {opts.queries} queries",
              file=log)  # fmt: skip
        ours_responses, ours_seconds = _serve_queries(server.base_url, queries, config)
        from ..kato_host.client import KatoClient

        with KatoClient(server.base_url) as client:
            result["kato_gpu_status"] = client.request("GET", "/kato-gpu/status")
    outcomes = _verify(opts, sequences, queries, kato_responses, ours_responses)
    result.update(outcomes)
    result["kato"] = _summary(kato_seconds)
    result["kato_gpu"] = _summary(ours_seconds)
    result["speedup"] = result["kato"]["median_ms"] / result["kato_gpu"]["median_ms"]
    print(format_kato_bench(result))
    if opts.json_path:
        with open(opts.json_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return 1 if result["differences"] else 0


def _verify(
    opts: KatoBenchOptions,
    sequences: List[List[List[str]]],
    queries: List[List[List[str]]],
    kato_responses: List[dict],
    ours_responses: List[dict],
) -> Dict[str, Any]:
    counts = {"exact": 0, "ambiguous": 0, "different": 0}
    problems: List[str] = []
    patterns = None
    for query, kato, ours in zip(queries, kato_responses, ours_responses):
        outcome = compare_responses(kato, ours)
        if outcome.outcome == "different":
            # Only now is KATO's own matching run here (at N = 1M it takes about as long as KATO).
            if patterns is None:
                patterns = _named_patterns(opts.kato_src, sequences)
            from .kato_oracle import filter_candidates, kato_pre_potentials, pruning_cut_tied

            print(
                f"kato-bench: answers differ for {query}; running KATO's own matching here to see why", file=sys.stderr
            )
            state = list(chain(*query))
            # With a filter pipeline KATO matches only its candidates; for stages the oracle does
            # not restate (MinHash, Bloom) a difference stays a difference (never hidden).
            session = {"recall_threshold": opts.threshold, **(opts.session_config or {})}
            candidates = filter_candidates(patterns, state, session) if session.get("filter_pipeline") else patterns
            if candidates is None:
                counts[outcome.outcome] += 1
                problems.append(f"{query}: {outcome.problems[:3]}")
                continue
            pre = kato_pre_potentials(candidates, state, opts.threshold, query, opts.mode == "token")
            if pruning_cut_tied(pre, 3 * opts.max_predictions):
                outcome = compare_responses(kato, ours, ensemble_ambiguous=True)
        counts[outcome.outcome] += 1
        if outcome.outcome == "different":
            problems.append(f"{query}: {outcome.problems[:3]}")
    return {
        "compared": len(kato_responses),
        "exact": counts["exact"],
        "ambiguous": counts["ambiguous"],
        "differences": counts["different"],
        "problems": problems[:20],
    }


def _named_patterns(kato_src: Optional[str], sequences: List[List[List[str]]]) -> Dict[str, List[List[str]]]:
    """The patterns as KATO stores them (symbols sorted in each event, named by KATO's Pattern)."""
    from ..kato_host import find_kato_src

    src = find_kato_src(kato_src)
    if src is not None and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    from kato.representations.pattern import Pattern

    named: Dict[str, List[List[str]]] = {}
    for events in sequences:
        sorted_events = [sorted(event) for event in events]
        named[Pattern(sorted_events).name] = sorted_events
    return named


def format_kato_bench(result: Dict[str, Any]) -> str:
    lines = [
        f"KATO serving path, {result['patterns']:,} patterns, mode {result['mode']}, "
        f"threshold {result['threshold']}, max_predictions {result['max_predictions']}"
        + (f", session {json.dumps(result['session_config'])}" if result.get("session_config") else ""),
        f"{'':12} {'queries':>8} {'median ms':>10} {'p95 ms':>10} {'mean ms':>10}",
    ]
    for label, key, count in (("KATO", "kato", result["kato_queries"]), ("kato_gpu", "kato_gpu", result["queries"])):
        s = result[key]
        lines.append(f"{label:12} {count:>8} {s['median_ms']:>10.1f} {s['p95_ms']:>10.1f} {s['mean_ms']:>10.1f}")
    lines.append(
        f"speed-up (median) {result['speedup']:.1f}x; compared {result['compared']}: {result['exact']} exact, "
        f"{result['ambiguous']} KATO's own choice at a tie, {result['differences']} differences"
    )
    for problem in result["problems"]:
        lines.append(f"  DIFFERENCE {problem}")
    return "\n".join(lines)
