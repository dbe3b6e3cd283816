"""The fuzzy token path's rules in Rust against RapidFuzz itself: ``fuzz.ratio``,
``process.extractOne`` and KATO's fuzzy prediction info, floats compared with ``==``."""

from __future__ import annotations

import difflib
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz, process

from kato_gpu import _native

# Short strings over a small alphabet (so that scores tie and repeat), with non-ASCII code points
# of every UTF-8 width, and the empty string.
ALPHABET = "abcä€𝄞 \x00"
words = st.text(alphabet=ALPHABET, max_size=8)
cutoffs = st.one_of(
    st.sampled_from([0.0, 0.0001, 50.0, 66.66666666666667, 66.66666666666666, 80.0, 100.0]),
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
)


@settings(max_examples=3000, deadline=None)
@given(words, words)
@example("", "")
@example("this is a test", "this is a test!")
@example("aaaa", "aa")
def test_fuzz_ratio_is_rapidfuzz_ratio(a: str, b: str) -> None:
    assert _native.fuzz_ratio(a, b) == fuzz.ratio(a, b)


@settings(max_examples=2000, deadline=None)
@given(words, st.lists(words, max_size=10), cutoffs)
@example("ab", ["ax", "ab", "ab"], 50.0)
@example("abc", [], 10.0)
@example("a", ["", "b"], 0.0)
def test_extract_one_is_rapidfuzz_extract_one(token: str, choices: list, cutoff: float) -> None:
    want = process.extractOne(token, choices, scorer=fuzz.ratio, score_cutoff=cutoff)
    got = _native.fuzzy_extract_one(token, choices, cutoff)
    assert got == (None if want is None else (want[0], want[1]))
    # The same choice, not just an equal one: its position is the first with that score.
    if want is not None:
        assert choices.index(got[0]) == want[2]


def test_extract_one_cutoff_is_checked() -> None:
    for bad in (-1.0, 100.5, math.nan):
        try:
            _native.fuzzy_extract_one("a", ["a"], bad)
        except ValueError:
            continue
        raise AssertionError(f"cutoff {bad} accepted")


def _kato_fuzzy_info(pattern, state, cutoff_positive, fuzzy, weights):
    """KATO's fuzzy prediction info as its documentation states it, built from RapidFuzz and
    difflib (no junk): per state token the first best pattern token (extractOne, fuzz.ratio, at
    least fuzzy*100); matched tokens form the intersection, inexact ones are anomalies; missing
    are tokens of `present` that no state token matched to, extras the unmatched state tokens."""
    matcher = difflib.SequenceMatcher(None, pattern, state, autojunk=False)
    blocks = matcher.get_matching_blocks()[:-1]
    if not blocks:
        if cutoff_positive:
            return None
        past, present = [], list(pattern)
    elif len(blocks) == 1:
        i0, _, n0 = blocks[0]
        past, present = pattern[:i0], pattern[i0 : i0 + n0]
    else:
        i0 = blocks[0][0]
        i1, _, n1 = blocks[-1]
        past = pattern[:i0]
        present = pattern[i0 : i1 + n1] if i1 + n1 > i0 else pattern[i0:]
    found = {}
    intersection, anomalies = [], []
    if pattern:
        for token in state:
            best = process.extractOne(token, pattern, scorer=fuzz.ratio, score_cutoff=fuzzy * 100)
            if best:
                found[token] = best[0]
                intersection.append(token)
                if token != best[0]:
                    anomalies.append((token, best[0], best[1] / 100.0))
    expected = set(found.values())
    missing = [t for t in present if t not in expected]
    extras = [t for t in state if t not in found]
    weighted = None
    if weights:
        w_matched = sum(weights.get(t, 0.0) for t in intersection)
        w_total = sum(weights.get(t, 0.0) for t in state) + sum(weights.get(t, 0.0) for t in pattern)
        weighted = 2.0 * w_matched / w_total if w_total > 0 else None
    return (intersection, list(past), list(present), missing, extras, len(blocks), anomalies, weighted)


tokens = st.text(alphabet="cartdogä€", min_size=0, max_size=5)
weights_st = st.one_of(
    st.none(),
    st.dictionaries(tokens, st.floats(min_value=-1.0, max_value=3.0, allow_nan=False), max_size=6),
)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(tokens, max_size=9),
    st.lists(tokens, max_size=7),
    st.booleans(),
    st.sampled_from([0.3, 0.5, 0.6, 2.0 / 3.0, 0.8, 1.0]),
    weights_st,
)
def test_fuzzy_prediction_info_is_katos(pattern, state, cutoff_positive, fuzzy, weights) -> None:
    got = _native.prediction_info(pattern, state, cutoff_positive, fuzzy, weights)
    want = _kato_fuzzy_info(pattern, state, cutoff_positive, fuzzy, weights)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert list(got[:6]) == list(want[:6])
        assert list(got[6]) == want[6]
        assert got[7] == want[7]
