"""The batch comparison: new query states through one batch call against as many single
``match_patterns_arrays`` calls, best of a few runs each; every batch result must equal its single
call's exactly, and a few are checked against the oracle."""

from __future__ import annotations

import gc
import hashlib
import time
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .._progress import Progress
from .common import BATCH_SAMPLE_STREAM, BATCH_STREAM, MAX_REPORTED, _bits, sample_indices
from .options import BenchOptions, batch_limit
from .oracles import difflib_ratios
from .verify import _result_arrays, check_result_shape, check_sample, compare_full, rapidfuzz_lcs_matches
from .workload import Workload, generate_queries

BATCH_RUNS = 3  # the batch and the single calls are each timed this many times; the best counts
BATCH_ORACLE_CHECKS = 5  # batch results also checked against the oracle


def batch_arrays_call(matcher) -> Tuple[Callable[[List[List[str]], float, Optional[int]], List[Any]], str]:
    """The batch query in arrays form (one MatchResult per state, no dicts) and its label."""
    return matcher.match_patterns_batch_arrays, "match_patterns_batch_arrays"


def _digest(idx: np.ndarray, sims: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
    h.update(_bits(sims).tobytes())
    return h.digest()


class _DictResult:
    """A ``match_patterns`` dict list seen as a MatchResult (names, similarities, len)."""

    def __init__(self, dicts: List[Dict[str, Any]]) -> None:
        self.names = [d["pattern_name"] for d in dicts]
        self.similarities = np.array([d["similarity"] for d in dicts], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.names)


def batch_bench(
    matcher, rf, metric: str, wl: Workload, choices: List[List[int]], opts: BenchOptions, err: IO[str]
) -> Tuple[Dict[str, Any], List[str]]:
    """``opts.batch`` new states (stream ``BATCH_STREAM``) through one batch call against as many
    ``match_patterns_arrays`` calls, best of ``BATCH_RUNS`` each. Every batch result must equal
    the single call's (names and similarity bits; compared by digest, a differing state is
    queried again and described); ``BATCH_ORACLE_CHECKS`` of them are checked against the oracle
    (RapidFuzz for lcs, a difflib sample for difflib)."""
    cdist, lcs_scorer = rf["cdist"], rf["LCSseq"].similarity
    n, count, threshold, limit = wl.n_patterns, opts.batch, opts.threshold, batch_limit(opts)
    queries, _, _ = generate_queries(wl, count, BATCH_STREAM)
    states = [wl.symbols(ids) for ids in queries]
    batch_call, batch_api = batch_arrays_call(matcher)
    problems: List[str] = []
    bad = set()

    def note(k: int, found: List[str], what: str = "batch") -> None:
        if found:
            bad.add(k)
            for text in found:
                if len(problems) < MAX_REPORTED:
                    problems.append(f"{what} state {k}: {text}")

    # Untimed warm-ups.
    batch_call(states[:2], threshold, limit)
    matcher.match_patterns_arrays(states[0], threshold, limit)
    gc.collect()

    digests: List[bytes] = []
    counts: List[int] = []
    single_runs: List[float] = []
    single = matcher.match_patterns_arrays
    clock = time.perf_counter
    with Progress(
        BATCH_RUNS * count, label=f"batch: single calls ({metric})", unit="queries", stream=err, enabled=opts.progress
    ) as bar:
        for run in range(BATCH_RUNS):
            gc.collect()
            total = 0.0
            for k, state in enumerate(states):
                t0 = clock()
                res = single(state, threshold, limit)
                total += clock() - t0
                if run == 0:  # not timed: the digest the batch results must reproduce
                    idx, sims, _ = _result_arrays(res, n)
                    digests.append(_digest(idx, sims))
                    counts.append(len(res))
                del res
                if k % 100 == 99:
                    bar.update(100)
            bar.update(count % 100)
            single_runs.append(total)

    def verify(results: List[Any], what: str) -> int:
        """Compares every result with the single call's; returns how many were compared."""
        if len(results) != count:
            note(-1, [f"{len(results)} results for {count} states"], what)
            return 0
        for k, res in enumerate(results):
            idx, sims, found = _result_arrays(res, n)
            if found:
                note(k, found, what)
                continue
            note(k, check_result_shape(idx, sims, threshold, limit), what)
            if _digest(idx, sims) != digests[k]:
                again = single(states[k], threshold, limit)
                s_idx, s_sims, _ = _result_arrays(again, n)
                diff = compare_full(idx, sims, s_idx, s_sims)
                note(
                    k,
                    [
                        f"differs from the single call: {t}".replace("expected", "single call")
                        for t in (diff or ["differs from the single call (digest)"])
                    ],
                    what,
                )
        return count

    oracle_states = sorted(set(np.linspace(0, count - 1, min(BATCH_ORACLE_CHECKS, count)).astype(int).tolist()))

    def timed_batch(call: Callable[..., List[Any]], what: str, as_result=None) -> Tuple[List[float], int, List[Any]]:
        """BATCH_RUNS timed calls of ``call``; the first run's results are compared with the single
        calls (``as_result`` turns each into a MatchResult-like object; not timed)."""
        runs: List[float] = []
        compared = 0
        kept: List[Any] = []
        for run in range(BATCH_RUNS):
            gc.collect()
            t0 = clock()
            results = call(states, threshold, limit)
            runs.append(clock() - t0)
            if run == 0:
                if as_result is not None:
                    results = [as_result(r) for r in results]
                compared = verify(results, what)
                kept = [results[k] for k in oracle_states if k < len(results)]
            del results
        return runs, compared, kept

    if opts.progress:
        print(
            f"batch ({metric}): {BATCH_RUNS} runs of one {batch_api.split(',')[0]} call of {count:,} states", file=err
        )
    batch_runs, compared, kept = timed_batch(batch_call, "batch")

    # The oracle, on a few of the batch results.
    oracle_checked = 0
    sample_size = min(opts.difflib_sample, n)
    for k, res in zip(oracle_states, kept):
        got_idx, got_sims, found = _result_arrays(res, n)
        if found:
            continue  # already reported
        if metric == "lcs":
            exp_idx, exp_sims, _ = rapidfuzz_lcs_matches(
                cdist, lcs_scorer, queries[k].tolist(), choices, wl.lengths, threshold, limit
            )
            note(k, compare_full(got_idx, got_sims, exp_idx, exp_sims), "batch (oracle)")
            oracle_checked += 1
        elif sample_size:
            sample = sample_indices(opts.seed, BATCH_SAMPLE_STREAM, k, n, sample_size)
            values = np.asarray(
                difflib_ratios([wl.pattern_symbols(int(i)) for i in sample], states[k]), dtype=np.float64
            )
            note(k, check_sample(sample, values, got_idx, got_sims, n, threshold, limit, "difflib"), "batch (oracle)")
            oracle_checked += 1
    del kept

    dict_part = None
    if opts.batch_dicts:
        # Timed: the public call, dicts included; turning them back into arrays is not timed.
        runs, dict_compared, _ = timed_batch(
            matcher.match_patterns_batch, "match_patterns_batch", as_result=_DictResult
        )
        best = min(runs)
        dict_part = {
            "api": "match_patterns_batch (a dict per match)",
            "runs_s": runs,
            "best_s": best,
            "states_per_s": count / best if best > 0 else None,
            "speedup": min(single_runs) / best if best > 0 else None,
            "compared_with_single": dict_compared,
        }

    single_best, batch_best = min(single_runs), min(batch_runs)
    single_rate = count / single_best if single_best > 0 else None
    batch_rate = count / batch_best if batch_best > 0 else None
    result = {
        "states": count,
        "threshold": threshold,
        "max_predictions": limit,
        "runs": BATCH_RUNS,
        "mean_matches": float(np.mean(counts)) if counts else 0.0,
        "total_matches": int(np.sum(counts)) if counts else 0,
        "single": {
            "api": f"{count:,} x match_patterns_arrays",
            "runs_s": single_runs,
            "best_s": single_best,
            "states_per_s": single_rate,
        },
        "batch": {"api": batch_api, "runs_s": batch_runs, "best_s": batch_best, "states_per_s": batch_rate},
        "dicts": dict_part,
        "speedup": single_best / batch_best if batch_best > 0 else None,
        "verification": {
            "ok": not bad,
            "states_with_differences": len(bad),
            "compared_with_single": compared,
            "oracle_checked": oracle_checked,
            "oracle": (
                "rapidfuzz (whole result)"
                if metric == "lcs"
                else f"difflib (sample of {sample_size:,})"
                if sample_size
                else "none (--difflib-sample 0)"
            ),
            "first_differences": problems,
        },
    }
    return result, problems if bad else []
