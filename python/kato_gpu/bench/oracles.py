"""The exact references kato_gpu is checked against, in one place: the tests and the benchmarks
import them from here.

Pure Python: only the standard library (``difflib``) and RapidFuzz, never kato_gpu's compiled
code, so an oracle cannot share a bug with what it checks. RapidFuzz is imported where it is
used, so this module imports without it (the benchmarks print their own install hint).

* :func:`ref_difflib`: KATO's ``difflib`` similarity (the pattern is ``a``, the state ``b``).
* :func:`ref_lcs` / :func:`lcs_of_ids`: ``2.0*LCS/T`` with the LCS from RapidFuzz.
* :func:`kato_lcs`: KATO's scorer rounding of it, ``(2.0*LCS/T*100.0)/100.0``.
* :func:`reference` and :func:`brute_force`: the matcher's contract, computed naively.
* :func:`prediction_info` and :func:`kato_prediction`: KATO's prediction tuple for one pattern,
  written from KATO's documented behaviour (``extract_prediction_info`` on difflib's matching
  blocks and opcodes without junk), not from its code.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "ref_difflib",
    "ref_lcs",
    "lcs_of_ids",
    "kato_lcs",
    "reference",
    "brute_force",
    "difflib_ratios",
    "kato_similarity",
    "prediction_info",
    "kato_prediction",
]


def ref_difflib(pattern: Sequence, state: Sequence, autojunk: bool = False) -> float:
    """KATO's ``_process_with_original``: the pattern is ``a``, the state is ``b``."""
    return difflib.SequenceMatcher(None, pattern, state, autojunk=autojunk).ratio()


def difflib_ratios(patterns: Sequence[Sequence[str]], state: Sequence[str]) -> List[float]:
    """:func:`ref_difflib` (no autojunk) of every pattern against one state."""
    return [ref_difflib(p, state) for p in patterns]


def lcs_length(pattern: Sequence, state: Sequence) -> int:
    """The LCS of two symbol sequences (RapidFuzz's ``LCSseq.similarity`` on numbered symbols)."""
    from rapidfuzz.distance import LCSseq

    return LCSseq.similarity(*_numbered(pattern, state))


def lcs_of_ids(pattern_ids: Sequence[int], state_ids: Sequence[int]) -> float:
    """``2.0*LCS/T`` of two integer-encoded sequences (1.0 when both are empty), the LCS from
    RapidFuzz's ``LCSseq.similarity``."""
    from rapidfuzz.distance import LCSseq

    total = len(pattern_ids) + len(state_ids)
    return 2.0 * LCSseq.similarity(pattern_ids, state_ids) / total if total else 1.0


def _numbered(pattern: Sequence, state: Sequence) -> Tuple[List[int], List[int]]:
    # RapidFuzz hashes string elements itself and then treats "" and "\x00" as equal
    # (hash("") == 0 == ord("\x00")), so the symbols are numbered first: equal symbols get
    # equal numbers, distinct ones distinct.
    ids: Dict[object, int] = {}
    return [ids.setdefault(x, len(ids)) for x in pattern], [ids.setdefault(x, len(ids)) for x in state]


def ref_lcs(pattern: Sequence, state: Sequence) -> float:
    """``2.0*LCS/T`` with the LCS from RapidFuzz on integer-encoded symbols."""
    return lcs_of_ids(*_numbered(pattern, state))


def kato_lcs(pattern: Sequence, state: Sequence) -> float:
    """KATO's RapidFuzz token path: its scorer gives ``2.0*LCS/T*100.0`` and KATO divides by
    100.0 again; that rounding trip can change the last bit of :func:`ref_lcs`. Two empty
    sequences score 0.0 there (the scorer's own rule), not 1.0."""
    if not len(pattern) + len(state):
        return 0.0
    return (ref_lcs(pattern, state) * 100.0) / 100.0


def reference(metric: str, autojunk: bool = False) -> Callable[[Sequence, Sequence], float]:
    """The similarity function of ``metric`` (``"lcs"`` or ``"difflib"``)."""
    if metric == "lcs":
        return ref_lcs
    return lambda p, s: ref_difflib(p, s, autojunk)


def brute_force(
    patterns: Dict[str, List[str]],
    state: List[str],
    metric: str,
    autojunk: bool,
    threshold: float,
    limit: Optional[int],
) -> List[Dict[str, object]]:
    """The matcher's contract, computed naively: every pattern with sim >= threshold, ordered by
    similarity descending then name ascending, the first ``limit``."""
    sim = reference(metric, autojunk)
    scored: List[Tuple[str, float]] = [(name, sim(flat, state)) for name, flat in patterns.items()]
    kept = sorted(((n, s) for n, s in scored if s >= threshold), key=lambda ns: (-ns[1], ns[0]))
    if limit is not None:
        kept = kept[:limit]
    return [{"pattern_name": n, "similarity": s} for n, s in kept]


# ---------------------------------------------------------------------------- KATO's predictions
def kato_similarity(pattern: Sequence[str], state: Sequence[str], metric: str) -> float:
    """The similarity KATO's ``PatternSearcher`` computes on its non-fuzzy path: ``difflib``
    (:func:`ref_difflib`, no autojunk) or its RapidFuzz token path (:func:`kato_lcs`)."""
    if metric == "difflib":
        return ref_difflib(pattern, state)
    return kato_lcs(pattern, state)


def prediction_info(
    pattern: List[str],
    state: List[str],
    similarity: float,
    cutoff: float,
    weights: Optional[Dict[str, float]] = None,
    kato_original: bool = False,
) -> Optional[Tuple]:
    """``(matching_intersection, past, present, missing, extras, similarity, number_of_blocks,
    anomalies, weighted_similarity)``, or None where KATO returns None.

    ``kato_original``: the variant of KATO's ``_process_with_original``, which also takes the
    opcodes of an empty ``present`` (so the whole state is extras) and gives no weighted
    similarity to a pattern without a matching block."""
    if similarity < cutoff:
        return None
    blocks = difflib.SequenceMatcher(None, pattern, state, autojunk=False).get_matching_blocks()[:-1]
    intersection = [x for _, j, n in blocks for x in state[j : j + n]]
    if len(blocks) >= 2:
        i0, (i1, _, n1) = blocks[0][0], blocks[-1]
        past, present = pattern[:i0], (pattern[i0 : i1 + n1] if i1 + n1 > i0 else pattern[i0:])
    elif len(blocks) == 1:
        i0, _, n0 = blocks[0]
        past, present = pattern[:i0], pattern[i0 : i0 + n0]
    elif cutoff > 0:
        return None
    else:
        past, present = [], pattern
    missing: List[str] = []
    extras: List[str] = []
    if present or kato_original:
        ops = difflib.SequenceMatcher(None, present, state, autojunk=False).get_opcodes()
        for tag, alo, ahi, blo, bhi in ops:
            if tag in ("replace", "delete"):
                missing += present[alo:ahi]
            if tag in ("replace", "insert"):
                extras += state[blo:bhi]
    weighted = None
    if weights and not (kato_original and not blocks):
        total = sum(weights.get(t, 0.0) for t in state) + sum(weights.get(t, 0.0) for t in pattern)
        if total > 0:
            weighted = 2.0 * sum(weights.get(t, 0.0) for t in intersection) / total
    return (intersection, past, present, missing, extras, similarity, len(blocks), [], weighted)


def kato_prediction(
    name: str,
    pattern: List[str],
    state: List[str],
    metric: str,
    threshold: float,
    weights: Optional[Dict[str, float]] = None,
) -> Optional[Tuple]:
    """The 11-tuple KATO appends for one pattern, or None when it is not a prediction."""
    similarity = kato_similarity(pattern, state, metric)
    if similarity < threshold:
        return None
    info = prediction_info(pattern, state, similarity, threshold, weights)
    return None if info is None else (name, pattern) + info
