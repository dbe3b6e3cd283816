"""Checks of one kato_gpu result: against RapidFuzz's whole result, against an oracle on a seeded
sample, and the properties every result has. Differences come back as text, never raised."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .common import _bits
from .oracles import difflib_ratios
from .workload import pattern_index, pattern_name

__all__ = [
    "rapidfuzz_lcs_matches",
    "rapidfuzz_lcs_similarities",
    "filter_and_order",
    "difflib_ratios",
    "compare_full",
    "check_result_shape",
    "check_sample",
]


def rapidfuzz_lcs_matches(
    cdist,
    scorer,
    state_ids: List[int],
    choices: List[List[int]],
    pattern_lengths: np.ndarray,
    threshold: float,
    max_predictions: Optional[int],
) -> Tuple[np.ndarray, np.ndarray, int]:
    """The expected ``lcs`` result with RapidFuzz: (indices, similarities, matches before the
    limit), ordered by similarity descending then index (== name) ascending."""
    sims = rapidfuzz_lcs_similarities(cdist, scorer, state_ids, choices, pattern_lengths)
    return filter_and_order(sims, threshold, max_predictions)


def rapidfuzz_lcs_similarities(
    cdist, scorer, state_ids: List[int], choices: List[List[int]], pattern_lengths: np.ndarray
) -> np.ndarray:
    """``2.0*LCS/(len_p+len_s)`` of every pattern with RapidFuzz's ``cdist`` (1.0 when both are
    empty): :func:`.oracles.lcs_of_ids` for all patterns at once, the same float64 operations.
    Does not depend on the threshold."""
    lcs = cdist([state_ids], choices, scorer=scorer, workers=-1, dtype=np.int32)[0]
    total = pattern_lengths + len(state_ids)
    sims = np.ones(len(total), dtype=np.float64)
    np.divide(2.0 * lcs, total, out=sims, where=total > 0)
    return sims


def filter_and_order(
    sims: np.ndarray, threshold: float, max_predictions: Optional[int]
) -> Tuple[np.ndarray, np.ndarray, int]:
    """(indices, similarities, matches before the limit) of ``sims >= threshold``, ordered by
    similarity descending then index ascending, at most ``max_predictions``."""
    idx = np.flatnonzero(sims >= threshold)
    s = sims[idx]
    order = np.lexsort((idx, -s))
    idx, s = idx[order], s[order]
    above = len(idx)
    if max_predictions is not None:
        idx, s = idx[:max_predictions], s[:max_predictions]
    return idx, s, above


def _describe(idx: int, sim: Optional[float]) -> str:
    name = pattern_name(idx) if idx >= 0 else "<unknown name>"
    return f"{name} {sim!r}" if sim is not None else name


def compare_full(
    got_idx: np.ndarray, got_sims: np.ndarray, exp_idx: np.ndarray, exp_sims: np.ndarray, limit: int = 3
) -> List[str]:
    """Differences between kato_gpu's whole result and the expected one (bit for bit)."""
    problems: List[str] = []
    if len(got_idx) != len(exp_idx):
        problems.append(f"kato_gpu returned {len(got_idx):,} matches, expected {len(exp_idx):,}")
    n = min(len(got_idx), len(exp_idx))
    differ = np.flatnonzero((got_idx[:n] != exp_idx[:n]) | (_bits(got_sims[:n]) != _bits(exp_sims[:n])))
    for j in differ[:limit].tolist():
        problems.append(
            f"position {j}: kato_gpu {_describe(int(got_idx[j]), float(got_sims[j]))}, "
            f"expected {_describe(int(exp_idx[j]), float(exp_sims[j]))}"
        )
    if len(differ) > limit:
        problems.append(f"... {len(differ) - limit:,} more differing positions")
    if not differ.size and len(got_idx) > n:
        problems.append(f"first extra match at position {n}: {_describe(int(got_idx[n]), float(got_sims[n]))}")
    elif not differ.size and len(exp_idx) > n:
        problems.append(f"first missing match at position {n}: {_describe(int(exp_idx[n]), float(exp_sims[n]))}")
    return problems


def check_result_shape(
    got_idx: np.ndarray, got_sims: np.ndarray, threshold: float, max_predictions: Optional[int]
) -> List[str]:
    """Properties every result has: known names, similarity >= threshold, strictly ordered by
    (similarity descending, name ascending) (so no duplicates), at most max_predictions."""
    problems: List[str] = []
    unknown = np.flatnonzero(got_idx < 0)
    if unknown.size:
        problems.append(
            f"{unknown.size:,} result names are not names of loaded patterns (first at position {int(unknown[0])})"
        )
    if max_predictions is not None and len(got_idx) > max_predictions:
        problems.append(f"{len(got_idx):,} matches returned, max_predictions is {max_predictions}")
    below = np.flatnonzero(~(got_sims >= threshold))
    if below.size:
        j = int(below[0])
        problems.append(f"position {j}: similarity {float(got_sims[j])!r} is below the threshold {threshold!r}")
    if len(got_idx) > 1:
        a, b = got_sims[:-1], got_sims[1:]
        ok = (a > b) | ((a == b) & (got_idx[:-1] < got_idx[1:]))
        bad = np.flatnonzero(~ok)
        if bad.size:
            j = int(bad[0])
            problems.append(
                f"positions {j}, {j + 1} out of order: {_describe(int(got_idx[j]), float(got_sims[j]))} "
                f"then {_describe(int(got_idx[j + 1]), float(got_sims[j + 1]))}"
            )
    return problems


def check_sample(
    sample: np.ndarray,
    values: np.ndarray,
    got_idx: np.ndarray,
    got_sims: np.ndarray,
    n_patterns: int,
    threshold: float,
    max_predictions: Optional[int],
    oracle: str,
    limit: int = 3,
) -> List[str]:
    """Every sampled pattern must be in kato_gpu's result with the identical float exactly when
    the oracle says it matches (and, with a limit, ranks within the returned top K)."""
    pos = np.full(n_patterns, -1, dtype=np.int64)
    known = got_idx >= 0
    pos[got_idx[known]] = np.flatnonzero(known)
    where = pos[sample]
    present = where >= 0
    expected = values >= threshold
    if max_predictions is not None and len(got_idx) >= max_predictions and len(got_idx) > 0:
        last_sim, last_idx = float(got_sims[-1]), int(got_idx[-1])
        expected &= (values > last_sim) | ((values == last_sim) & (sample <= last_idx))
    problems: List[str] = []
    missing = np.flatnonzero(expected & ~present)
    extra = np.flatnonzero(present & ~expected)
    both = np.flatnonzero(present & expected)
    wrong = both[_bits(got_sims[where[both]]) != _bits(values[both])]
    for k in missing[:limit].tolist():
        problems.append(f"missing {_describe(int(sample[k]), None)}: {oracle} gives {float(values[k])!r}")
    for k in extra[:limit].tolist():
        problems.append(
            f"unexpected {_describe(int(sample[k]), float(got_sims[where[k]]))}: {oracle} gives {float(values[k])!r}"
        )
    for k in wrong[:limit].tolist():
        problems.append(
            f"{_describe(int(sample[k]), None)}: kato_gpu {float(got_sims[where[k]])!r}, {oracle} {float(values[k])!r}"
        )
    hidden = len(missing) + len(extra) + len(wrong) - sum(min(limit, len(x)) for x in (missing, extra, wrong))
    if hidden > 0:
        problems.append(f"... {hidden:,} more sampled patterns differ")
    return problems


def _result_arrays(res, n: int) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(indices, float64 similarities, problems) of a MatchResult-like object."""
    sims = np.asarray(res.similarities, dtype=np.float64)
    names = list(res.names)
    if len(names) != len(sims) or len(res) != len(sims):
        return (
            np.full(0, -1, dtype=np.int64),
            sims[:0],
            [f"len(res)={len(res)}, {len(names)} names, {len(sims)} similarities"],
        )
    return pattern_index(names, n), sims, []
