"""KATO's ranked predictions and single-symbol path, computed natively, against KATO's own code.

The oracle for the causal-belief records is KATO's ``Prediction`` class (imported from the KATO
checkout at ``$KATO_SRC``, default ``../shared/kato`` next to the project root) fed with the
shared prediction-info oracle's tuple; the pre-potential is KATO's pruning formula over that
``Prediction``'s fields. The single-symbol path's formulas are restated from KATO's source (they
live in a closure there). Every field is compared exactly (floats by ``float.hex``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kato_gpu._native import HybridGPUMatcher, SymbolVocabularyEncoder
from kato_gpu.bench.oracles import kato_lcs, prediction_info, ref_lcs

ROOT = Path(__file__).resolve().parents[2]
KATO_SRC = Path(os.environ.get("KATO_SRC") or ROOT.parent / "shared" / "kato").resolve()


def _kato_prediction_class():
    if not (KATO_SRC / "kato" / "representations" / "prediction.py").is_file():
        return None
    if str(KATO_SRC) not in sys.path:
        sys.path.insert(0, str(KATO_SRC))
    from kato.representations.prediction import Prediction

    return Prediction


Prediction = _kato_prediction_class()
needs_kato = pytest.mark.skipif(
    Prediction is None, reason=f"KATO checkout not found at {KATO_SRC} (set KATO_SRC to a KATO 3.10.1 checkout)"
)

VOCAB = ["a", "b", "c", "d", "e", "f"]
events_st = st.lists(st.lists(st.sampled_from(VOCAB), min_size=0, max_size=5), min_size=1, max_size=4).filter(
    lambda events: any(events)
)
patterns_st = st.lists(events_st, min_size=1, max_size=25)
state_st = st.lists(st.sampled_from(VOCAB + ["zz"]), min_size=1, max_size=8)
weights_st = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(VOCAB + ["zz"]), st.sampled_from([0.0, 0.01, 0.1, 1 / 3, 0.7, 2.5]), max_size=7),
)


def _name(k: int) -> str:
    # Names out of insertion order, so the name tie-break is exercised.
    return f"P{(k * 37) % 101:03d}"


def _matcher(patterns: List[List[List[str]]]) -> HybridGPUMatcher:
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(), metric="lcs")
    names = [_name(k) for k in range(len(patterns))]
    assert matcher.add_patterns_events(names, patterns, promote=False) == len(patterns)
    return matcher


def _hex(x: Optional[float]) -> Optional[str]:
    return None if x is None else float.hex(x)


def _oracle_ranked(patterns, state, threshold, keep, weights, rounded):
    records = []
    for k, events in enumerate(patterns):
        flat = [s for e in events for s in e]
        similarity = kato_lcs(flat, state) if rounded else ref_lcs(flat, state)
        if similarity < threshold:
            continue
        info = prediction_info(flat, state, similarity, threshold, weights)
        if info is None:
            continue
        matches, past, present, missing, extras, _, blocks, anomalies, weighted = info
        record = {"name": _name(k), "frequency": 1, "pattern_data": [list(e) for e in events], "length": len(flat)}
        pred = Prediction(
            record,
            list(matches),
            list(past),
            list(present),
            list(missing),
            list(extras),
            similarity,
            blocks,
            anomalies=anomalies,
            weighted_similarity=weighted,
        )
        frag = pred["fragmentation"]
        pre = (pred["evidence"] + pred["confidence"]) * pred["snr"] + (0.0 if frag == -1 else 1.0 / (frag + 1))
        row = (_name(k), events, matches, past, present, missing, extras, similarity, blocks, weighted, pre)
        records.append(row)
    total = len(records)
    records.sort(key=lambda r: (-r[10], r[0]))
    return total, records[:keep]


def _comparable(row, float_fields):
    return tuple(_hex(v) if i in float_fields else v for i, v in enumerate(row))


@needs_kato
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patterns=patterns_st,
    state=state_st,
    threshold=st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.4, 0.5, 0.6]),
    keep=st.integers(0, 30),
    weights=weights_st,
    rounded=st.booleans(),
)
def test_ranked_predictions_match_kato(patterns, state, threshold, keep, weights, rounded):
    matcher = _matcher(patterns)
    total, kept = matcher.kato_ranked_predictions(state, threshold, keep, weights=weights, rounded=rounded)
    want_total, want = _oracle_ranked(patterns, state, threshold, keep, weights, rounded)
    assert total == want_total
    floats = {7, 9, 10}
    assert [_comparable(r, floats) for r in kept] == [_comparable(r, floats) for r in want]


def _oracle_single(patterns, symbol, keep, weights):
    out = []
    for k, events in enumerate(patterns):
        if not (events and events[0] and events[0][0] == symbol):
            continue
        flat = [s for e in events for s in e]
        similarity = ref_lcs(flat, [symbol])
        matches, past, present, missing, extras, _, blocks, _, weighted = prediction_info(
            flat, [symbol], similarity, 0.0, weights
        )
        evidence = len(matches) / len(flat) if flat else 0.0
        confidence = len(matches) / len(present) if present else 0.0
        snr = len(matches) / (len(matches) + len(extras)) if (len(matches) + len(extras)) > 0 else 0.0
        frag = blocks - 1
        w_ev = w_conf = w_snr = None
        if weights:
            w_matched = sum(weights.get(t, 0.0) for t in matches)
            w_pattern = sum(weights.get(t, 0.0) for t in flat)
            w_present = sum(weights.get(t, 0.0) for t in present)
            w_extras = sum(weights.get(t, 0.0) for t in extras)
            w_ev = (w_matched / w_pattern) if w_pattern > 0 else 0.0
            w_conf = (w_matched / w_present) if w_present > 0 else 0.0
            w_snr = (w_matched / (w_matched + w_extras)) if (w_matched + w_extras) > 0 else 0.0
        frag_term = 0.0 if frag == -1 else (1 / (frag + 1))
        ev = w_ev if w_ev is not None else evidence
        conf = w_conf if w_conf is not None else confidence
        s = w_snr if w_snr is not None else snr
        potential = (ev + conf) * s + frag_term
        future = flat[len(past) + len(present) :] if len(past) + len(present) < len(flat) else []
        out.append(
            (_name(k), events, matches, missing, present, past, future, extras, similarity, evidence)
            + (confidence, snr, frag, weighted, w_ev, w_conf, w_snr, potential)
        )
    out.sort(key=lambda r: (-r[17], r[0]))
    return out[:keep]


@settings(max_examples=300, deadline=None)
@given(patterns=patterns_st, symbol=st.sampled_from(VOCAB + ["zz"]), keep=st.integers(0, 30), weights=weights_st)
def test_single_symbol_path_matches_kato(patterns, symbol, keep, weights):
    matcher = _matcher(patterns)
    got = matcher.kato_single_symbol_predictions(symbol, keep, weights=weights)
    want = _oracle_single(patterns, symbol, keep, weights)
    floats = {8, 9, 10, 11, 13, 14, 15, 16, 17}
    assert [_comparable(r, floats) for r in got] == [_comparable(r, floats) for r in want]
    starting = [e for e in patterns if e[0] and e[0][0] == symbol]
    assert matcher.kato_first_symbol_candidates(symbol) == len(starting)
    assert matcher.kato_first_symbol_symbols(symbol) == sorted({s for e in starting for ev in e for s in ev})


def test_events_are_stored_and_learning_is_all_or_nothing():
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(), metric="lcs")
    assert matcher.add_pattern_events("p", [["a", "b"], [], ["c"]])
    assert not matcher.add_pattern_events("p", [["x"]])
    assert matcher.pattern_events("p") == [["a", "b"], [], ["c"]]
    assert matcher.pattern_symbols("p") == ["a", "b", "c"]
    assert matcher.pattern_events("nope") is None
    # A pattern learned without events is one event.
    matcher.add_new_pattern("flat", [["a"], ["b"]])
    assert matcher.pattern_events("flat") == [["a", "b"]]
    with pytest.raises(ValueError):
        matcher.add_patterns_events(["q", "p"], [[["a"]], [["b"]]])
    with pytest.raises(ValueError):
        matcher.add_patterns_events(["q"], [[["a"]], [["b"]]])
    with pytest.raises(TypeError):
        matcher.add_patterns_events(["q"], [[["a", 1]]])
    with pytest.raises(TypeError):
        matcher.add_patterns_events(["q"], "abc")
    assert "q" not in matcher and len(matcher) == 2
    encoder_size = matcher.encoder.vocab_size
    assert matcher.add_patterns_events(["q", "r"], [[["new"]], [["b"], ["a"]]]) == 2
    assert matcher.encoder.vocab_size == encoder_size + 1
    assert matcher.pattern_events("r") == [["b"], ["a"]]


def test_bad_arguments():
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(), metric="lcs")
    matcher.add_pattern_events("p", [["a"]])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            matcher.kato_ranked_predictions(["a"], bad, 3)
    with pytest.raises(TypeError):
        matcher.kato_ranked_predictions(["a"], True, 3)
    with pytest.raises(ValueError):
        matcher.kato_ranked_predictions(["a"], 0.1, -1)
    with pytest.raises(TypeError):
        matcher.kato_ranked_predictions(["a"], 0.1, True)
    with pytest.raises(TypeError):
        matcher.kato_ranked_predictions("a", 0.1, 3)
    with pytest.raises(TypeError):
        matcher.kato_ranked_predictions(["a"], 0.1, 3, weights=[1.0])
    with pytest.raises(TypeError):
        matcher.kato_single_symbol_predictions(["a"], 3)
    with pytest.raises(ValueError):
        matcher.kato_single_symbol_predictions("a", -3)
    difflib = HybridGPUMatcher(SymbolVocabularyEncoder(), metric="difflib")
    with pytest.raises(ValueError):
        difflib.kato_ranked_predictions(["a"], 0.1, 3)
    assert difflib.kato_ranked_predictions(["a"], 0.1, 3, rounded=False) == (0, [])
    assert matcher.kato_ranked_predictions(["a"], 0.1, 3) == (
        1,
        [("p", [["a"]], ["a"], [], ["a"], [], [], 1.0, 1, None, 3.0)],
    )
    assert matcher.kato_first_symbol_candidates("unknown") == 0
    assert matcher.kato_first_symbol_symbols("unknown") == []
    assert matcher.kato_single_symbol_predictions("unknown", 5) == []
