"""Bad input raises a clear exception and changes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder


@pytest.fixture
def m():
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric="lcs"))
    matcher.add_patterns(["P0", "P1"], [[["a", "b"]], [["b", "c"]]])
    matcher.add_new_pattern("R0", [["c", "d"]])
    return matcher


def snapshot(m):
    stats = m.get_stats()
    return (
        len(m),
        stats["bulk_tier_patterns"],
        stats["recent_tier_patterns"],
        stats["patterns_learned"],
        dict(m.encoder.symbol_to_id),
        m.encoder.next_id,
        m.match_patterns(["a", "c"], 0.0, None),
    )


BAD_PATTERNS = [
    ([["a", None]], TypeError),
    ([["a", 1]], TypeError),
    ([["a", b"bytes"]], TypeError),
    (["abc"], TypeError),  # an event that is a str, not a list of str
    ("abc", TypeError),
    (None, TypeError),
    ([["a"], 5], TypeError),
]


@pytest.mark.parametrize("pattern,exc", BAD_PATTERNS)
def test_add_new_pattern_rejects_bad_symbols(m, pattern, exc):
    before = snapshot(m)
    with pytest.raises(exc):
        m.add_new_pattern("NEW", pattern)
    assert snapshot(m) == before


@pytest.mark.parametrize("name,exc", [(None, TypeError), (5, TypeError), ("", ValueError), (b"P", TypeError)])
def test_bad_names(m, name, exc):
    before = snapshot(m)
    with pytest.raises(exc):
        m.add_new_pattern(name, [["a"]])
    with pytest.raises(exc):
        m.add_patterns([name], [[["a"]]])
    with pytest.raises(exc):
        m.remove_pattern(name)
    assert snapshot(m) == before


@pytest.mark.parametrize(
    "names,patterns",
    [
        (["X", "X"], [[["a"]], [["b"]]]),  # duplicate in the batch
        (["X", "P0"], [[["a"]], [["b"]]]),  # already stored (bulk)
        (["X", "R0"], [[["a"]], [["b"]]]),  # already stored (recent)
        (["X"], [[["a"]], [["b"]]]),  # length mismatch
        (["X", "Y"], [[["new-symbol"]], [["a", None]]]),  # a bad symbol after a good one
    ],
)
def test_add_patterns_is_all_or_nothing(m, names, patterns):
    before = snapshot(m)
    with pytest.raises((ValueError, TypeError)):
        m.add_patterns(names, patterns)
    assert snapshot(m) == before


def test_csr_bad_arrays(m):
    before = snapshot(m)
    enc = m.encoder
    ok_tokens = np.array([0, 1], dtype=np.int32)
    cases = [
        (["X"], ok_tokens.astype(np.float64), np.array([0, 2]), TypeError),  # float ids
        (["X"], ok_tokens.reshape(1, 2), np.array([0, 2]), ValueError),  # 2-D
        (["X"], ok_tokens, np.array([0, 3]), ValueError),  # offsets past the end
        (["X", "Y"], ok_tokens, np.array([0, 2, 1]), ValueError),  # decreasing
        (["X"], ok_tokens, np.array([0, 1, 2]), ValueError),  # too many offsets
        (["X"], np.array([0, -1], dtype=np.int32), np.array([0, 2]), ValueError),  # negative id
        (["X"], np.array([0, enc.next_id], dtype=np.int64), np.array([0, 2]), ValueError),  # unknown id
        (["X", "X"], ok_tokens, np.array([0, 1, 2]), ValueError),  # duplicate name
        (["P1"], ok_tokens, np.array([0, 2]), ValueError),  # stored name
        ([""], ok_tokens, np.array([0, 2]), ValueError),  # empty name
        ([None], ok_tokens, np.array([0, 2]), TypeError),  # non-str name
        ("X", ok_tokens, np.array([0, 2]), TypeError),  # names as one str
    ]
    for names, tokens, offsets, exc in cases:
        with pytest.raises(exc):
            m.add_patterns_csr(names, tokens, offsets)
        assert snapshot(m) == before, (names, tokens, offsets)


@pytest.mark.parametrize(
    "threshold,exc",
    [
        (math.nan, ValueError),
        (-0.01, ValueError),
        (1.01, ValueError),
        (math.inf, ValueError),
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_bad_thresholds(m, threshold, exc):
    with pytest.raises(exc):
        m.match_patterns(["a"], threshold)
    with pytest.raises(exc):
        m.match_patterns_batch([["a"]], threshold)


@pytest.mark.parametrize(
    "state,exc", [("abc", TypeError), (None, TypeError), (["a", None], TypeError), ([1, 2], TypeError)]
)
def test_bad_states(m, state, exc):
    before = snapshot(m)
    with pytest.raises(exc):
        m.match_patterns(state, 0.5)
    assert snapshot(m) == before


@pytest.mark.parametrize("limit,exc", [(-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)])
def test_bad_max_predictions(m, limit, exc):
    with pytest.raises(exc):
        m.match_patterns(["a"], 0.5, limit)


def test_bad_constructor_arguments():
    with pytest.raises(TypeError):
        HybridGPUMatcher(None, GPUConfig())
    with pytest.raises(TypeError):
        HybridGPUMatcher(SymbolVocabularyEncoder(None), {"metric": "lcs"})
    with pytest.raises(ValueError):
        HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric="cosine"))
