"""The two exact similarity metrics for single pairs.

``similarity(pattern, state)`` equals, bit for bit:

- ``metric="difflib"``: ``difflib.SequenceMatcher(None, pattern, state, autojunk=autojunk).ratio()``
  (pattern as ``a``, state as ``b``; the ratio is not symmetric);
- ``metric="lcs"``: ``2.0 * LCS(pattern, state) / (len(pattern) + len(state))``, where LCS is
  ``rapidfuzz.distance.LCSseq.similarity(pattern, state)``; 1.0 when both are empty.
"""

from __future__ import annotations

from typing import Hashable, Sequence

from . import _native
from .config import METRICS


def check_metric(metric: object) -> str:
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a str, got {type(metric).__name__}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {METRICS}")
    return metric


def similarity(
    pattern: Sequence[Hashable],
    state: Sequence[Hashable],
    metric: str = "difflib",
    autojunk: bool = False,
) -> float:
    """Similarity of one pattern to one state, exactly as Python's reference computes it.

    Elements may be any hashable objects; two elements match when they are equal (as a dict
    key lookup decides, like difflib).
    """
    check_metric(metric)
    if not isinstance(autojunk, bool):
        raise TypeError(f"autojunk must be a bool, got {type(autojunk).__name__}")
    ids: dict = {}
    try:
        p = [ids.setdefault(x, len(ids)) for x in pattern]
        s = [ids.setdefault(x, len(ids)) for x in state]
    except TypeError as exc:
        raise TypeError(f"pattern and state must be sequences of hashable symbols: {exc}") from None
    return _native.similarity(p, s, metric, autojunk)
