"""Shared oracles: Python's own references, never kato_gpu code."""

from __future__ import annotations

import difflib
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from rapidfuzz.distance import LCSseq


def ref_difflib(pattern: Sequence, state: Sequence, autojunk: bool = False) -> float:
    """KATO's `_process_with_original`: the pattern is `a`, the state is `b`."""
    return difflib.SequenceMatcher(None, pattern, state, autojunk=autojunk).ratio()


def ref_lcs(pattern: Sequence, state: Sequence) -> float:
    """2.0 * LCS / T with LCS from RapidFuzz on integer-encoded symbols. RapidFuzz hashes string
    elements itself and then treats "" and "\x00" as equal (hash("") == 0 == ord("\x00")), so
    the symbols are numbered first: equal symbols get equal numbers, distinct ones distinct."""
    ids: dict = {}
    p = [ids.setdefault(x, len(ids)) for x in pattern]
    s = [ids.setdefault(x, len(ids)) for x in state]
    total = len(p) + len(s)
    return 2.0 * LCSseq.similarity(p, s) / total if total else 1.0


def reference(metric: str, autojunk: bool = False):
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
    similarity descending then name ascending, the first `limit`."""
    sim = reference(metric, autojunk)
    scored: List[Tuple[str, float]] = [(name, sim(flat, state)) for name, flat in patterns.items()]
    kept = sorted(((n, s) for n, s in scored if s >= threshold), key=lambda ns: (-ns[1], ns[0]))
    if limit is not None:
        kept = kept[:limit]
    return [{"pattern_name": n, "similarity": s} for n, s in kept]


@pytest.fixture
def encoder():
    from kato_gpu import SymbolVocabularyEncoder

    return SymbolVocabularyEncoder(None)


def pytest_report_header(config):
    import kato_gpu

    # CI runs the suite against the installed wheel, not the source tree; show which one this is.
    return f"kato_gpu {kato_gpu.__version__} from {kato_gpu.__file__}"
