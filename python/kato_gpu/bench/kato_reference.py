"""KATO's prediction path in plain Python, written from ../shared/REFERENCE.md (not from KATO's
code): the oracle of the end-to-end benchmark and of the prediction tests.

``kato_prediction(...)`` is what KATO's ``PatternSearcher`` appends for one pattern on its
non-fuzzy path: the similarity (difflib's ratio with the pattern as ``a``; or KATO's RapidFuzz
token path, ``(2.0*LCS/T*100.0)/100.0``), then ``extract_prediction_info`` on difflib's matching
blocks and opcodes without junk.
"""

from __future__ import annotations

import difflib
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["kato_similarity", "prediction_info", "kato_prediction"]


def kato_similarity(pattern: Sequence[str], state: Sequence[str], metric: str) -> float:
    """``difflib``: SequenceMatcher(None, p, s, autojunk=False).ratio(); ``lcs``: KATO's scorer
    rounding of 2.0*LCS/T, LCS from RapidFuzz as KATO computes it (symbols numbered first:
    RapidFuzz would equate "" and "\x00")."""
    if metric == "difflib":
        return difflib.SequenceMatcher(None, pattern, state, autojunk=False).ratio()
    from rapidfuzz.distance import LCSseq

    total = len(pattern) + len(state)
    if not total:
        return 1.0
    ids: Dict[str, int] = {}
    p = [ids.setdefault(x, len(ids)) for x in pattern]
    s = [ids.setdefault(x, len(ids)) for x in state]
    return (2.0 * LCSseq.similarity(p, s) / total * 100.0) / 100.0


def prediction_info(
    pattern: List[str], state: List[str], similarity: float, cutoff: float, weights: Optional[Dict[str, float]] = None
) -> Optional[Tuple]:
    """``(matching_intersection, past, present, missing, extras, similarity, number_of_blocks,
    anomalies, weighted_similarity)``, or None where KATO returns None."""
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
    if present:
        ops = difflib.SequenceMatcher(None, present, state, autojunk=False).get_opcodes()
        for tag, alo, ahi, blo, bhi in ops:
            if tag in ("replace", "delete"):
                missing += present[alo:ahi]
            if tag in ("replace", "insert"):
                extras += state[blo:bhi]
    weighted = None
    if weights:
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
