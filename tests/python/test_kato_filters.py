"""KATO's filter stages computed natively (``HybridGPUMatcher.kato_filter_candidates``) against a
plain Python statement of the rules KATO's SQL and Python apply, and the ranking restricted to
candidates (``kato_ranked_predictions(..., candidates=...)``) against a matcher holding only them.
The LCS similarity comes from ``kato_gpu.bench.oracles.ref_lcs`` (RapidFuzz)."""

from __future__ import annotations

import math
import random
from typing import List, Optional

import pytest

from kato_gpu._native import HybridGPUMatcher, SymbolVocabularyEncoder
from kato_gpu.bench.oracles import ref_lcs

VOCAB = [f"s{k}" for k in range(10)]


def matcher_of(patterns) -> HybridGPUMatcher:
    m = HybridGPUMatcher(SymbolVocabularyEncoder(), metric="lcs")
    m.add_patterns_events([f"p{k:03}" for k in range(len(patterns))], patterns)
    return m


def _or(value: Optional[float], default: float) -> float:
    return value or default


def oracle(patterns, state: List[str], stages) -> set:
    """The names KATO's executor would return, rule by rule as its SQL and Python state them."""
    kept = None
    for name, a, b in stages:
        if name == "rapidfuzz" and kept is None:
            continue  # "Pipeline must start with database filter": the stage is skipped
        names = set()
        for k, events in enumerate(patterns):
            flat = [s for e in events for s in e]
            if name == "length":
                lo = max(1, int(len(state) * _or(a, 0.5)))
                hi = int(len(state) * _or(b, 2.0))
                ok = lo <= len(flat) <= hi
            elif name == "jaccard":
                overlap = len(set(flat) & set(state))
                union = len(set(flat) | set(state))
                ok = overlap >= _or(b, 2) and overlap * 1.0 / union >= _or(a, 0.3)
            else:
                ok = bool(flat) and ref_lcs(flat, state) >= _or(a, 0.1)
            if ok:
                names.add(f"p{k:03}")
        kept = names if kept is None else kept & names
    return kept or set()


def random_patterns(rng: random.Random, n: int):
    return [[rng.sample(VOCAB, rng.randint(0, 3)) for _ in range(rng.randint(1, 4))] for _ in range(n)]


def test_candidates_match_the_rules():
    rng = random.Random(3)
    patterns = random_patterns(rng, 300)
    m = matcher_of(patterns)
    params = [None, 0, 0.0, 0.2, 0.5, 1, 1.5, 3]
    for _ in range(200):
        state = [rng.choice(VOCAB + ["unknown", "other"]) for _ in range(rng.randint(1, 7))]
        stages = [
            (rng.choice(["length", "jaccard", "rapidfuzz"]), rng.choice(params), rng.choice(params))
            for _ in range(rng.randint(0, 3))
        ]
        stages = [(n, a, None if n == "rapidfuzz" else b) for n, a, b in stages]
        assert set(m.kato_filter_candidates(state, stages)) == oracle(patterns, state, stages), (state, stages)


def test_quirks():
    patterns = [[["a", "b"]], [["a", "b", "c", "d", "e", "f", "g"]], [["x"], ["a"]]]
    m = matcher_of(patterns)
    state = ["a", "b", "c"]
    # 0 takes the default (or): bounds 1..6.
    assert sorted(m.kato_filter_candidates(state, [("length", 0, 0.0)])) == ["p000", "p002"]
    # int() truncation: 3 * 0.9 = 2.7 -> 2 and 3 * 1.1 = 3.3 -> 3.
    assert sorted(m.kato_filter_candidates(state, [("length", 0.9, 1.1)])) == ["p000", "p002"]
    # A RapidFuzz stage first is skipped; alone, nothing is selected.
    assert m.kato_filter_candidates(state, [("rapidfuzz", 0.9, None)]) == []
    assert sorted(m.kato_filter_candidates(state, [("rapidfuzz", 0.9, None), ("length", None, None)])) == [
        "p000",
        "p002",
    ]
    assert m.kato_filter_candidates(state, []) == []


def test_bad_stages_are_refused():
    m = matcher_of([[["a", "b"]]])
    with pytest.raises(TypeError):
        m.kato_filter_candidates(["a"], "length")
    with pytest.raises(TypeError):
        m.kato_filter_candidates(["a"], [("length", True, None)])
    with pytest.raises(TypeError):
        m.kato_filter_candidates(["a"], [("length", "0.5", None)])
    with pytest.raises(TypeError):
        m.kato_filter_candidates(["a"], [("length", None)])
    with pytest.raises(TypeError):
        m.kato_filter_candidates("a", [("length", None, None)])
    with pytest.raises(ValueError, match="unknown filter stage"):
        m.kato_filter_candidates(["a"], [("minhash", None, None)])
    for bad in (math.nan, math.inf, 1e300):
        with pytest.raises(ValueError):
            m.kato_filter_candidates(["a"], [("length", None, bad)])


def test_ranking_among_candidates():
    rng = random.Random(8)
    patterns = random_patterns(rng, 400)
    m = matcher_of(patterns)
    for _ in range(20):
        chosen = sorted(rng.sample(range(400), 150))
        only = HybridGPUMatcher(SymbolVocabularyEncoder(), metric="lcs")
        nonempty = [k for k in chosen if any(patterns[k])]
        only.add_patterns_events([f"p{k:03}" for k in nonempty], [patterns[k] for k in nonempty])
        state = [rng.choice(VOCAB) for _ in range(rng.randint(2, 6))]
        threshold, keep = rng.choice([0.0, 0.1, 0.4]), rng.choice([1, 10, 1000])
        names = [f"p{k:03}" for k in chosen] + ["absent"]
        got = m.kato_ranked_predictions(state, threshold, keep, candidates=names)
        want = only.kato_ranked_predictions(state, threshold, keep)
        assert got[0] == want[0]
        assert [(r[0], r[7].hex(), r[10].hex()) for r in got[1]] == [(r[0], r[7].hex(), r[10].hex()) for r in want[1]]
    with pytest.raises(TypeError):
        m.kato_ranked_predictions(["s1"], 0.1, 5, candidates="p000")


def test_the_bench_oracle_agrees():
    """``kato_oracle.filter_candidates`` (the kato-bench tie check's candidates) states the same
    rules from a session configuration."""
    from kato_gpu.bench.kato_oracle import filter_candidates

    rng = random.Random(4)
    patterns = random_patterns(rng, 200)
    m = matcher_of(patterns)
    named = {f"p{k:03}": events for k, events in enumerate(patterns)}
    params = [None, 0, 0.3, 1, 2.5]
    for _ in range(100):
        state = [rng.choice(VOCAB + ["unknown"]) for _ in range(rng.randint(1, 6))]
        pipeline = [rng.choice(["length", "jaccard", "rapidfuzz"]) for _ in range(rng.randint(0, 3))]
        config = {"filter_pipeline": pipeline}
        for key in ("length_min_ratio", "length_max_ratio", "jaccard_threshold", "jaccard_min_overlap"):
            config[key] = rng.choice(params)
        config["recall_threshold"] = rng.choice([None, 0.0, 0.2, 0.6])
        stages = [
            ("length", config["length_min_ratio"], config["length_max_ratio"])
            if name == "length"
            else ("jaccard", config["jaccard_threshold"], config["jaccard_min_overlap"])
            if name == "jaccard"
            else ("rapidfuzz", config["recall_threshold"], None)
            for name in pipeline
        ]
        assert set(filter_candidates(named, state, config)) == set(m.kato_filter_candidates(state, stages))
    assert filter_candidates(named, ["s1"], {"filter_pipeline": ["length", "minhash"]}) is None
