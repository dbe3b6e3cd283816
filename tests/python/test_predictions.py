"""HybridGPUMatcher.match_predictions against the shared oracle of KATO's prediction info (kato_gpu.bench.oracles,
on stdlib difflib, no junk; docs/ARCHITECTURE.md describes the semantics): lists and floats compared exactly."""

from __future__ import annotations

import difflib
import random
from typing import Dict, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import prediction_info, ref_difflib, ref_lcs
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder


def oracle_info(
    name: str, p: List[str], s: List[str], similarity: float, cutoff: float, weights: Optional[Dict[str, float]]
):
    info = prediction_info(p, s, similarity, cutoff, weights)
    return None if info is None else (name, p) + info


def oracle(
    patterns: Dict[str, List[List[str]]], state, metric, threshold, limit, weights, candidates=None, rounding=False
):
    rows = []
    for name, events in patterns.items():
        if candidates is not None and name not in candidates:
            continue
        p = [x for e in events for x in e]
        sim = ref_lcs(p, state) if metric == "lcs" else ref_difflib(p, state)
        if rounding:
            sim = (sim * 100.0) / 100.0
        if sim >= threshold:
            rows.append((name, p, sim))
    rows.sort(key=lambda r: (-r[2], r[0]))
    out = [oracle_info(n, p, state, sim, threshold, weights) for n, p, sim in rows]
    out = [o for o in out if o is not None]
    return out[:limit] if limit is not None else out


def kato_patterns(rng: random.Random, count: int, vocab: List[str]):
    patterns = {}
    while len(patterns) < count:
        events = [sorted(rng.sample(vocab, rng.randint(1, 6))) for _ in range(rng.randint(1, 5))]
        patterns["PTRN|%040x" % rng.getrandbits(160)] = events
    return patterns


@pytest.mark.parametrize("metric", ["difflib", "lcs"])
def test_prediction_tuples_equal_the_oracle(metric):
    """50,000+ prediction tuples per metric, thresholds 0.0 (patterns sharing nothing included)
    to 0.9, weights on and off, with and without a limit."""
    rng = random.Random(f"predictions-{metric}")
    vocab = [f"w{k}" for k in range(40)] + ["VCTR|1f", "", "é"]
    patterns = kato_patterns(rng, 10_000, vocab)
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric))
    names = list(patterns)
    m.add_patterns(names[:7000], [patterns[n] for n in names[:7000]])
    for n in names[7000:]:
        m.add_new_pattern(n, patterns[n])
    compared = 0
    for q, threshold in enumerate([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0]):
        source = [x for e in patterns[rng.choice(names)] for x in e]
        state = [x for x in source if rng.random() < 0.6] + rng.sample(vocab, 2) + ["never-seen"]
        weights = {v: rng.choice([0.0, 0.5, 1.0, 2.0]) for v in vocab} if q % 2 else None
        limit = 50 if q in (7, 10, 11) else None
        got = m.match_predictions(state, threshold, limit, weights=weights)
        want = oracle(patterns, state, metric, threshold, limit, weights)
        assert got == want, (metric, threshold, limit)
        compared += len(want)
    assert compared >= 50_000, compared


def test_candidates_restrict_the_patterns():
    rng = random.Random(3)
    vocab = [f"c{k}" for k in range(15)]
    patterns = kato_patterns(rng, 500, vocab)
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric="difflib"))
    m.add_patterns(list(patterns), list(patterns.values()))
    candidates = set(rng.sample(list(patterns), 60))
    state = rng.sample(vocab, 5)
    got = m.match_predictions(state, 0.2, 10, candidates=candidates)
    assert got == oracle(patterns, state, "difflib", 0.2, 10, None, candidates)
    assert all(row[0] in candidates for row in got)


def test_kato_rounding_reproduces_katos_rapidfuzz_path():
    rng = random.Random(4)
    vocab = [f"r{k}" for k in range(12)]
    patterns = kato_patterns(rng, 3000, vocab)
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric="lcs"))
    m.add_patterns(list(patterns), list(patterns.values()))
    differs = 0
    for threshold in (0.0, 0.3, 0.6):
        state = rng.sample(vocab, 6)
        got = m.match_predictions(state, threshold, kato_rounding=True)
        assert got == oracle(patterns, state, "lcs", threshold, None, None, rounding=True)
        plain = {row[0]: row[7] for row in m.match_predictions(state, threshold)}
        differs += sum(plain.get(row[0]) != row[7] for row in got)
    assert differs > 0, "the sample must contain similarities where KATO's rounding changes the last bit"
    with pytest.raises(ValueError):
        HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric="difflib")).match_predictions(
            ["a"], 0.1, kato_rounding=True
        )


def test_bad_arguments():
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None))
    with pytest.raises(TypeError):
        m.match_predictions(["a"], 0.1, weights=[("a", 1.0)])
    with pytest.raises(TypeError):
        m.match_predictions(["a"], 0.1, candidates="PTRN|x")
    with pytest.raises(ValueError):
        m.match_predictions(["a"], 1.5)


def fuzzy_oracle_row(name, p, s, sim, cutoff, fuzzy, weights):
    """KATO's fuzzy token path by explicit loops over fuzz.ratio (first best wins ties)."""
    from rapidfuzz import fuzz

    blocks = difflib.SequenceMatcher(None, p, s, autojunk=False).get_matching_blocks()[:-1]
    if not blocks and cutoff > 0:
        return None
    if len(blocks) >= 2:
        i0, (i1, _, n1) = blocks[0][0], blocks[-1]
        past, present = p[:i0], (p[i0 : i1 + n1] if i1 + n1 > i0 else p[i0:])
    elif len(blocks) == 1:
        past, present = p[: blocks[0][0]], p[blocks[0][0] : blocks[0][0] + blocks[0][2]]
    else:
        past, present = [], p
    chosen, intersection, anomalies = {}, [], []
    for token in s:
        best, best_score = None, -1.0
        for candidate in p:
            score = fuzz.ratio(token, candidate)
            if score >= fuzzy * 100 and score > best_score:
                best, best_score = candidate, score
        if best is not None:
            chosen[token] = best
            intersection.append(token)
            if token != best:
                anomalies.append({"observed": token, "expected": best, "similarity": best_score / 100.0})
    used = {chosen[t] for t in s if t in chosen}
    weighted = None
    if weights:
        total = sum(weights.get(t, 0.0) for t in s) + sum(weights.get(t, 0.0) for t in p)
        weighted = 2.0 * sum(weights.get(t, 0.0) for t in intersection) / total if total > 0 else None
    return (
        name,
        p,
        intersection,
        past,
        present,
        [t for t in present if t not in used],
        [t for t in s if t not in chosen],
        sim,
        len(blocks),
        anomalies,
        weighted,
    )


@pytest.mark.parametrize("metric", ["difflib", "lcs"])
def test_fuzzy_token_path_equals_the_oracle(metric):
    rng = random.Random(f"fuzzy-{metric}")
    vocab = ["hello", "hallo", "help", "world", "word", "VCTR|1f2a", "VCTR|1f2b", "x", "xy", "quiet"]
    patterns = kato_patterns(rng, 400, vocab)
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric))
    m.add_patterns(list(patterns), list(patterns.values()))
    compared = anomalies = 0
    for threshold, fuzzy in [(0.0, 0.8), (0.2, 0.6), (0.4, 0.9), (0.1, 0.5)]:
        state = rng.sample(vocab, 4) + ["helo", "wrld"]
        weights = {v: 1.5 for v in vocab} if fuzzy < 0.7 else None
        got = m.match_predictions(state, threshold, None, weights=weights, fuzzy_token_threshold=fuzzy)
        rows = oracle(patterns, state, metric, threshold, None, None)
        want = [fuzzy_oracle_row(r[0], r[1], state, r[7], threshold, fuzzy, weights) for r in rows]
        want = [w for w in want if w is not None]
        assert got == want, (metric, threshold, fuzzy)
        compared += len(want)
        anomalies += sum(len(row[9]) for row in got)
    assert compared > 500 and anomalies > 0


_events = st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "", "é"]), min_size=0, max_size=5), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_events, min_size=1, max_size=6),
    st.lists(st.sampled_from(["a", "b", "c", "d", "z", ""]), max_size=12),
    st.sampled_from([0.0, 0.2, 0.5]),
    st.sampled_from(["difflib", "lcs"]),
    st.booleans(),
)
def test_property_prediction_tuples(pattern_events, state, threshold, metric, weighted):
    patterns = {f"P{k}": events for k, events in enumerate(pattern_events)}
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric, enabled=False))
    m.add_patterns(list(patterns), list(patterns.values()))
    weights = {"a": 1.0, "b": 0.5, "": 2.0} if weighted else None
    assert m.match_predictions(state, threshold, weights=weights) == oracle(
        patterns, state, metric, threshold, None, weights
    )
