"""The KATO adapter (kato_gpu.kato) end to end, on a stand-in for KATO's PatternSearcher.

``StandInSearcher`` has the method and attribute names the adapter touches and a pure-Python
matching path built on the shared oracles (stdlib difflib with autojunk off, RapidFuzz's LCS); it
is the oracle. An attached searcher must return exactly what an identical, never
attached one returns.
"""

from __future__ import annotations

import difflib
import random
from types import SimpleNamespace
from typing import Dict, List, Optional

import pytest

from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder
from kato_gpu.bench.oracles import lcs_length, prediction_info
from kato_gpu.kato import KatoBridge, LoadReport, attach, load_patterns

RAPIDFUZZ_AVAILABLE = True  # read by the adapter, as KATO's module global of that name


def _info(pattern, state, cutoff, similarity, weights, zero_block_extras):
    """The shared oracle's prediction info, with the pattern first as KATO's tuple has it; None
    when the pattern is dropped."""
    info = prediction_info(pattern, state, similarity, cutoff, weights, kato_original=zero_block_extras)
    return None if info is None else (pattern,) + info


class StandInSearcher:
    """The parts of KATO's PatternSearcher that the adapter uses (own code, same names)."""

    def __init__(self, token_mode: bool, recall_threshold: float = 0.1) -> None:
        self.recall_threshold = recall_threshold
        self.use_fast_matching = token_mode
        self.use_token_matching = True
        self.session_config = SimpleNamespace(fuzzy_token_threshold=0.0)
        self.affinity_weights: Optional[Dict[str, float]] = None
        self.patterns_cache: Dict[str, List[str]] = {}
        self.patterns_count = 0
        self.own_calls = 0  # calls of this class's own matching methods

    def assignNewlyLearnedToWorkers(self, index, pattern_name, new_pattern):
        self.patterns_count += 1
        self.patterns_cache[pattern_name] = new_pattern

    def delete_pattern(self, name):
        if name not in self.patterns_cache:
            return False
        del self.patterns_cache[name]
        self.patterns_count -= 1
        return True

    def clearPatternsFromRAM(self):
        self.patterns_count = 0
        self.patterns_cache.clear()

    def causalBelief(self, state, target_class_candidates=None, stm_events=None):
        candidates = target_class_candidates or list(self.patterns_cache)
        results: list = []
        if self.use_fast_matching and RAPIDFUZZ_AVAILABLE:
            self._process_with_rapidfuzz(state, candidates, results)
        else:
            self._process_with_original(state, candidates, results)
        return results  # not sorted, as KATO's causalBelief leaves them

    def _threshold(self):
        return 0.1 if self.recall_threshold is None else self.recall_threshold

    def _process_with_rapidfuzz(self, state, candidates, results):
        self.own_calls += 1
        choices = {c: self.patterns_cache[c] for c in candidates if c in self.patterns_cache}
        scored = []
        for name, pattern in choices.items():
            total = len(pattern) + len(state)
            score = 2.0 * lcs_length(pattern, state) / total * 100.0 if total else 0.0
            if score >= self._threshold() * 100 - 1e-6:
                scored.append((name, score))
        scored.sort(key=lambda ns: ns[1], reverse=True)  # stable: ties keep choice order
        for name, score in scored:
            similarity = score / 100.0
            if similarity >= self._threshold():
                info = _info(
                    self.patterns_cache[name],
                    state,
                    self._threshold(),
                    similarity,
                    self.affinity_weights,
                    zero_block_extras=False,
                )
                if info:
                    results.append((name,) + info)

    def _process_with_original(self, state, candidates, results):
        self.own_calls += 1
        for name in candidates:
            if name in self.patterns_cache:
                pattern = self.patterns_cache[name]
                similarity = difflib.SequenceMatcher(None, pattern, state, autojunk=False).ratio()
                if similarity >= self._threshold():
                    info = _info(
                        pattern, state, self._threshold(), similarity, self.affinity_weights, zero_block_extras=True
                    )
                    if info:
                        results.append((name,) + info)


VOCAB = [f"w{k}" for k in range(12)] + [f"VCTR|{k:04x}" for k in range(4)]


def _patterns(n: int, seed: int) -> Dict[str, List[str]]:
    rng = random.Random(seed)
    out = {"PTRN|metrics-differ": ["0", "2", "1", "0"], "PTRN|empty": []}
    for k in range(n):
        flat = [rng.choice(VOCAB[: rng.randint(3, len(VOCAB))]) for _ in range(rng.randint(1, 12))]
        out[f"PTRN|{rng.getrandbits(64):016x}{k}"] = flat
    out["PTRN|copy"] = list(out[next(iter(list(out)[1:]))])  # an equal pattern: ties
    return out


def _states(seed: int) -> List[List[str]]:
    rng = random.Random(seed)
    states = [["2", "0"], ["w1"], ["nothing", "known"]]
    states += [[rng.choice(VOCAB) for _ in range(rng.randint(1, 10))] for _ in range(25)]
    return states


def _pair(token_mode: bool, threshold: float):
    """An attached searcher and its never-attached twin."""
    metric = "lcs" if token_mode else "difflib"
    fast = StandInSearcher(token_mode, threshold)
    twin = StandInSearcher(token_mode, threshold)
    bridge = attach(fast, config=GPUConfig(enabled=False, metric=metric))
    return fast, twin, bridge


def _learn(searchers, patterns):
    for k, (name, flat) in enumerate(patterns.items()):
        for s in searchers:
            s.assignNewlyLearnedToWorkers(k, name, list(flat))


def _assert_same(fast, twin, states, bridge, candidates_for=None):
    for state in states:
        cands = candidates_for(twin) if candidates_for else None
        got = fast.causalBelief(list(state), cands)
        want = twin.causalBelief(list(state), cands)
        assert got == want, state
        for g, w in zip(got, want):  # exact floats, and None stays None
            assert repr(g[7]) == repr(w[7]) and repr(g[10]) == repr(w[10])
    assert fast.own_calls == 0, bridge.stats


@pytest.mark.parametrize("token_mode", [True, False])
@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.4, 0.75])
def test_learn_predict_delete_clear_detach(token_mode, threshold):
    fast, twin, bridge = _pair(token_mode, threshold)
    assert isinstance(bridge, KatoBridge) and bridge.active
    patterns = _patterns(60, seed=7)
    _learn((fast, twin), patterns)
    assert len(bridge.matcher) == len(patterns) and fast.patterns_cache == twin.patterns_cache
    states = _states(11)

    _assert_same(fast, twin, states, bridge)
    assert bridge.stats["accelerated"] == len(states)

    # candidates in a shuffled order, a subset, with repeats and unknown names
    def shuffled(s):
        names = list(s.patterns_cache)
        random.Random(3).shuffle(names)
        return names[:40] + names[:5] + ["PTRN|unknown"]

    _assert_same(fast, twin, states, bridge, shuffled)

    # affinity weights
    weights = {sym: 1.0 + (k % 3) for k, sym in enumerate(VOCAB)}
    fast.affinity_weights = twin.affinity_weights = weights
    _assert_same(fast, twin, states, bridge)
    fast.affinity_weights = twin.affinity_weights = None

    # learning the same name again keeps the newest content in both
    _learn((fast, twin), {"PTRN|copy": ["w1", "w2"]})
    _assert_same(fast, twin, states, bridge)

    # delete
    victim = "PTRN|metrics-differ"
    assert fast.delete_pattern(victim) is True and twin.delete_pattern(victim) is True
    assert victim not in bridge.matcher
    _assert_same(fast, twin, states, bridge)
    assert all(victim not in [t[0] for t in fast.causalBelief(s)] for s in states)

    # clear
    fast.clearPatternsFromRAM()
    twin.clearPatternsFromRAM()
    assert len(bridge.matcher) == 0 and fast.patterns_count == 0
    assert all(fast.causalBelief(s) == [] for s in states)
    assert fast.own_calls == 0

    # detach restores the class's own methods
    bridge.detach()
    assert not bridge.active
    for name in (
        "assignNewlyLearnedToWorkers",
        "delete_pattern",
        "clearPatternsFromRAM",
        "_process_with_rapidfuzz",
        "_process_with_original",
    ):
        assert name not in vars(fast)
        assert getattr(fast, name).__func__ is getattr(StandInSearcher, name)
    _learn((fast, twin), {"PTRN|after": ["w1"]})
    assert "PTRN|after" not in bridge.matcher
    assert fast.causalBelief(["w1"]) == twin.causalBelief(["w1"])
    assert fast.own_calls == 1


def test_metrics_differ_on_reference_example():
    """pattern [0,2,1,0] vs state [2,0]: difflib 1/3 (KATO's difflib path), lcs 2/3 (token path)."""
    for token_mode, expected in ((False, 1 / 3), (True, 2 / 3)):
        fast, twin, bridge = _pair(token_mode, 0.1)
        _learn((fast, twin), {"PTRN|x": ["0", "2", "1", "0"]})
        got = fast.causalBelief(["2", "0"])
        assert got == twin.causalBelief(["2", "0"]) and got[0][7] == pytest.approx(expected)


def test_fallbacks_answer_with_katos_own_method():
    fast, twin, bridge = _pair(True, 0.2)
    patterns = _patterns(20, seed=5)
    _learn((fast, twin), patterns)
    state = ["w1", "w2", "w3"]

    fast.session_config.fuzzy_token_threshold = 0.5  # fuzzy path: not accelerated
    assert fast.causalBelief(state) == twin.causalBelief(state)
    assert bridge.stats["fallback_fuzzy_tokens"] == 1 and fast.own_calls == 1
    fast.session_config.fuzzy_token_threshold = 0.0

    fast.patterns_cache["PTRN|from-store"] = ["w1", "w2"]  # in KATO's cache, not in the matcher
    twin.patterns_cache["PTRN|from-store"] = ["w1", "w2"]
    assert fast.causalBelief(state) == twin.causalBelief(state)
    assert bridge.stats["fallback_pattern_not_loaded"] == 1 and fast.own_calls == 2
    bridge.resync()
    assert fast.causalBelief(state) == twin.causalBelief(state) and fast.own_calls == 2

    fast.use_fast_matching = False  # KATO now takes its difflib path; the matcher is lcs
    twin.use_fast_matching = False
    assert fast.causalBelief(state) == twin.causalBelief(state)
    assert bridge.stats["fallback_metric_mismatch"] == 1
    bridge.detach()


def test_attach_reads_environment(monkeypatch):
    monkeypatch.setenv("KATO_GPU_ENABLED", "false")
    searcher = StandInSearcher(True)
    bridge = attach(searcher)
    assert not bridge.active and "_process_with_rapidfuzz" not in vars(searcher)

    monkeypatch.setenv("KATO_GPU_ENABLED", "true")
    monkeypatch.setenv("KATO_GPU_FALLBACK", "true")
    monkeypatch.delenv("KATO_GPU_METRIC", raising=False)
    for token_mode, metric in ((True, "lcs"), (False, "difflib")):
        searcher = StandInSearcher(token_mode)
        bridge = attach(searcher)
        assert bridge.active and bridge.matcher.config.metric == metric
        assert attach(searcher) is bridge  # twice: the same bridge
        bridge.detach()


# ---------------------------------------------------------------------- load_patterns
def _matcher() -> HybridGPUMatcher:
    return HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(enabled=False))


def test_load_patterns_counts_and_skips():
    matcher = _matcher()
    matcher.add_new_pattern("PTRN|stored", [["a"]])
    good = [{"name": f"PTRN|{k}", "pattern_data": [["a", "b"], [f"s{k}"]]} for k in range(7)]
    bad = [
        ["not", "a", "dict"],
        None,
        "PTRN|str",  # not_a_dict: 3
        {"pattern_data": [["a"]]},
        {"name": "", "pattern_data": [["a"]]},
        {"name": 5, "pattern_data": [["a"]]},  # missing_name: 3
        {"name": "PTRN|stored", "pattern_data": [["a"]]},
        {"name": "PTRN|0", "pattern_data": [["z"]]},  # duplicate_name: 2
        {"name": "PTRN|m1", "pattern_data": ["a", "b"]},
        {"name": "PTRN|m2", "pattern_data": [["a", 3]]},
        {"name": "PTRN|m3"},
        {"name": "PTRN|m4", "pattern_data": "ab"},
        {"name": "PTRN|m5", "pattern_data": [("a",)]},  # malformed: 5
    ]
    records = good[:3] + bad[:7] + good[3:] + bad[7:]
    report = load_patterns(matcher, iter(records), batch_size=2, progress=False)
    assert isinstance(report, LoadReport)
    assert report.loaded == 7 and report.seconds >= 0
    assert report.skipped == {"not_a_dict": 3, "missing_name": 3, "duplicate_name": 2, "malformed_pattern_data": 5}
    assert len(matcher) == 8
    assert not any(f"PTRN|m{k}" in matcher for k in range(1, 6))
    # the first record of a repeated name wins; the stored pattern is untouched
    top = matcher.match_patterns(["a", "b", "s0"], 0.99)
    assert [d["pattern_name"] for d in top] == ["PTRN|0"]
    assert matcher.match_patterns(["a"], 0.99)[0]["pattern_name"] == "PTRN|stored"


def test_load_patterns_then_attach_matches(capsys):
    patterns = _patterns(30, seed=9)
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(enabled=False, metric="lcs"))
    records = [{"name": n, "pattern_data": [flat[:2], flat[2:]]} for n, flat in patterns.items()]
    report = load_patterns(matcher, records, batch_size=7, progress=True)
    assert report.loaded == len(patterns) and sum(report.skipped.values()) == 0
    assert "loading patterns" in capsys.readouterr().err  # the progress bar wrote to stderr

    fast, twin = StandInSearcher(True, 0.3), StandInSearcher(True, 0.3)
    bridge = attach(fast, matcher=matcher)
    # KATO's filter pipeline fills patterns_cache from its store; the matcher already has them
    for s in (fast, twin):
        s.patterns_cache.update({n: list(flat) for n, flat in patterns.items()})
    _assert_same(fast, twin, _states(4), bridge)
    bridge.detach()


def test_load_patterns_rejects_bad_arguments():
    with pytest.raises(TypeError):
        load_patterns(object(), [])
    with pytest.raises(ValueError):
        load_patterns(_matcher(), [], batch_size=0)
    assert load_patterns(_matcher(), [], progress=False).loaded == 0
