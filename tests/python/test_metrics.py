"""The two metrics against Python's references, bit for bit (float equality, never approx)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kato_gpu
from conftest import ref_difflib, ref_lcs

# Symbols that exercise the string handling: empty, unicode, KATO-style prefixes.
ALPHABET = ["", "a", "b", "c", "é", "🙂", "VCTR|3f2a", "PTRN|" + "0" * 40, "tok_1", "tok_10", " "]


def bits(x: float) -> str:
    return float(x).hex()


def test_smallest_example_where_the_metrics_differ():
    # docs/ARCHITECTURE.md: pattern [0,2,1,0], state [2,0] -> difflib 1/3, lcs 2/3.
    p, s = [0, 2, 1, 0], [2, 0]
    assert kato_gpu.similarity(p, s, "difflib") == ref_difflib(p, s) == 1 / 3
    assert kato_gpu.similarity(p, s, "lcs") == ref_lcs(p, s) == 2 / 3


def test_regression_empty_string_and_nul_are_distinct_symbols():
    # Found by hypothesis: RapidFuzz on raw strings counts "" and "\x00" as equal; they are not.
    assert kato_gpu.similarity([""], ["\x00"], "lcs") == 0.0
    assert kato_gpu.similarity([""], ["\x00"], "difflib") == ref_difflib([""], ["\x00"]) == 0.0
    assert kato_gpu.similarity(["", "\x00"], ["\x00", ""], "lcs") == ref_lcs(["", "\x00"], ["\x00", ""]) == 0.5


def test_empty_sequences():
    for metric in ("difflib", "lcs"):
        assert kato_gpu.similarity([], [], metric) == 1.0
        assert kato_gpu.similarity(["a"], [], metric) == 0.0
        assert kato_gpu.similarity([], ["a"], metric) == 0.0


def test_difflib_is_not_symmetric_and_we_follow_pattern_as_a():
    rng = np.random.default_rng(5)
    asymmetric = 0
    for _ in range(3000):
        p = rng.integers(0, 3, rng.integers(0, 12)).tolist()
        s = rng.integers(0, 3, rng.integers(0, 12)).tolist()
        assert bits(kato_gpu.similarity(p, s)) == bits(ref_difflib(p, s))
        asymmetric += ref_difflib(p, s) != ref_difflib(s, p)
    assert asymmetric > 0, "the sample must contain pairs where argument order matters"


def test_equal_but_distinct_objects_match_like_difflib():
    # difflib compares with ==/hash: 1, 1.0 and True are the same symbol.
    p, s = [1, "x", 2.5], [1.0, "x", True]
    for aj in (False, True):
        assert kato_gpu.similarity(p, s, "difflib", aj) == ref_difflib(p, s, aj)
    assert kato_gpu.similarity(p, s, "lcs") == ref_lcs(p, s)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown metric"):
        kato_gpu.similarity(["a"], ["a"], "cosine")
    with pytest.raises(TypeError):
        kato_gpu.similarity(["a"], ["a"], 3)
    with pytest.raises(TypeError):
        kato_gpu.similarity([["unhashable"]], ["a"])
    with pytest.raises(TypeError):
        kato_gpu.similarity(["a"], ["a"], "difflib", autojunk="yes")


symbols = st.sampled_from(ALPHABET) | st.text(max_size=3)


@settings(max_examples=1500, deadline=None)
@given(st.lists(symbols, max_size=40), st.lists(symbols, max_size=40))
def test_property_short_sequences(p, s):
    assert bits(kato_gpu.similarity(p, s, "difflib")) == bits(ref_difflib(p, s))
    assert bits(kato_gpu.similarity(p, s, "difflib", True)) == bits(ref_difflib(p, s, True))
    assert bits(kato_gpu.similarity(p, s, "lcs")) == bits(ref_lcs(p, s))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(ALPHABET[:4]), min_size=150, max_size=320),
    st.lists(st.sampled_from(ALPHABET[:4]), min_size=190, max_size=320),
)
def test_property_long_sequences_autojunk(p, s):
    # len(state) >= 200 switches difflib's autojunk on; tiny alphabets make every symbol popular.
    for aj in (False, True):
        assert bits(kato_gpu.similarity(p, s, "difflib", aj)) == bits(ref_difflib(p, s, aj))
    assert bits(kato_gpu.similarity(p, s, "lcs")) == bits(ref_lcs(p, s))


def _random_pairs(seed: int, count: int):
    """Seeded pairs over several regimes: alphabet size, lengths (incl. empty, > 64 and > 128 for
    multi-word LCS, >= 200 for autojunk), repeats."""
    rng = np.random.default_rng(seed)
    regimes = [  # (weight, alphabet size, max len)
        (0.35, 8, 40),
        (0.25, 200, 60),
        (0.15, 3, 30),
        (0.1, 5000, 30),
        (0.1, 20, 150),
        (0.05, 6, 300),
    ]
    weights = np.array([r[0] for r in regimes])
    picks = rng.choice(len(regimes), size=count, p=weights / weights.sum())
    vocab = ALPHABET + [f"s{k}" for k in range(5000)]
    for k in picks:
        _, alphabet, max_len = regimes[k]
        lp, ls = rng.integers(0, max_len + 1, 2)
        p = [vocab[i] for i in rng.integers(0, alphabet, lp)]
        s = [vocab[i] for i in rng.integers(0, alphabet, ls)]
        yield p, s


@pytest.mark.parametrize(
    "metric,autojunk,count,seed",
    [
        ("difflib", False, 200_000, 1),
        ("difflib", True, 40_000, 2),
        ("lcs", False, 200_000, 3),
    ],
)
def test_seeded_random_pairs_bit_exact(metric, autojunk, count, seed):
    ref = ref_lcs if metric == "lcs" else (lambda p, s: ref_difflib(p, s, autojunk))
    similarity = kato_gpu.similarity
    mismatches = []
    for p, s in _random_pairs(seed, count):
        got = similarity(p, s, metric, autojunk)
        want = ref(p, s)
        if got != want:
            mismatches.append((p, s, got, want))
    assert not mismatches, f"{len(mismatches)} of {count} pairs differ, first: {mismatches[:3]}"
