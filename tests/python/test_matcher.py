"""HybridGPUMatcher against a brute-force oracle built on difflib / RapidFuzz."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from conftest import brute_force, ref_difflib
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder

METRICS = [("difflib", False), ("difflib", True), ("lcs", False)]
THRESHOLDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def kato_shaped(rng: random.Random, count: int, vocab: list, long_every: int = 0):
    """Patterns as KATO holds them: 2-5 events of 1-8 sorted distinct symbols."""
    patterns = {}
    while len(patterns) < count:
        name = "PTRN|%040x" % rng.getrandbits(160)
        events = [sorted(rng.sample(vocab, rng.randint(1, 8))) for _ in range(rng.randint(2, 5))]
        if long_every and len(patterns) % long_every == 0:
            events.append([rng.choice(vocab[:6]) for _ in range(rng.randint(200, 400))])  # no truncation
        patterns[name] = events
    return patterns


def make_matcher(metric: str, autojunk: bool, encoder=None) -> HybridGPUMatcher:
    return HybridGPUMatcher(encoder or SymbolVocabularyEncoder(None), GPUConfig(metric=metric, autojunk=autojunk))


def flat(events):
    return [s for e in events for s in e]


@pytest.mark.parametrize("metric,autojunk", METRICS)
def test_matches_brute_force_over_both_tiers(metric, autojunk):
    rng = random.Random(f"{metric}-{autojunk}")
    vocab = [f"tok_{k}" for k in range(40)] + ["", "é", "VCTR|00ff"]
    patterns = kato_shaped(rng, 1500, vocab, long_every=97)
    names = sorted(patterns)
    rng.shuffle(names)
    m = make_matcher(metric, autojunk)
    bulk, recent = names[:900], names[900:]
    assert m.add_patterns(bulk, [patterns[n] for n in bulk]) == 900  # promoted: bulk tier
    for n in recent:  # recent tier
        assert m.add_new_pattern(n, patterns[n]) is True
    assert m.get_stats()["bulk_tier_patterns"] == 900
    assert m.get_stats()["recent_tier_patterns"] == 600
    removed = names[::7]
    for n in removed:
        assert m.remove_pattern(n) is True
        del patterns[n]
    flats = {n: flat(e) for n, e in patterns.items()}
    for q in range(8):
        source = flats[rng.choice(sorted(flats))]
        state = [s for s in source if rng.random() < 0.6] + rng.sample(vocab, 2) + ["never-learned"]
        if q == 7:
            state = [rng.choice(vocab[:6]) for _ in range(250)]  # long state: autojunk, multi-word LCS
        for threshold in THRESHOLDS:
            for limit in (None, 100, 5):
                want = brute_force(flats, state, metric, autojunk, threshold, limit)
                got = m.match_patterns(state, threshold, limit)
                assert got == want, (metric, autojunk, threshold, limit)


@pytest.mark.parametrize("metric", ["lcs", "difflib"])
def test_top_k_over_many_chunks_and_a_large_vocabulary(metric):
    """Top-k queries over 13,000 patterns (several scan chunks, so the chunks share their class
    bound) of a 3,000-symbol vocabulary, where the symbol bound's 256-bit set has collisions and
    drops most patterns unscored; queries made from stored patterns, so the best classes are
    full, with ties at the limit broken by name."""
    rng = random.Random(f"top-k-{metric}")
    vocab = [f"v{k}" for k in range(3000)]
    patterns = kato_shaped(rng, 13000, vocab)
    names = list(patterns)
    m = make_matcher(metric, False)
    assert m.add_patterns(names, [patterns[n] for n in names]) == len(names)
    flats = {n: flat(e) for n, e in patterns.items()}
    for q in range(6):
        source = flats[names[rng.randrange(len(names))]]
        state = [s for s in source if rng.random() < 0.7] + rng.sample(vocab, 1 + q % 3)
        for threshold, limit in ((0.1, 1), (0.1, 10), (0.0, 100), (0.3, 100), (0.1, 1000)):
            assert m.match_patterns(state, threshold, limit) == brute_force(
                flats, state, metric, False, threshold, limit
            ), (q, threshold, limit)


def test_tier_placement_does_not_change_results():
    rng = random.Random(1)
    vocab = [f"w{k}" for k in range(15)]
    patterns = kato_shaped(rng, 400, vocab)
    names = sorted(patterns)
    all_bulk, all_recent = make_matcher("difflib", False), make_matcher("difflib", False)
    all_bulk.add_patterns(names, [patterns[n] for n in names])
    for n in names:
        all_recent.add_new_pattern(n, patterns[n])
    for _ in range(20):
        state = rng.sample(vocab, 6)
        assert all_bulk.match_patterns(state, 0.0, None) == all_recent.match_patterns(state, 0.0, None)


def test_ties_are_ordered_by_name():
    m = make_matcher("lcs", False)
    for name in ["PTRN|c", "PTRN|a", "PTRN|b", "PTRN|aa"]:
        m.add_new_pattern(name, [["x", "y"]])
    got = [r["pattern_name"] for r in m.match_patterns(["x"], 0.0, None)]
    assert got == ["PTRN|a", "PTRN|aa", "PTRN|b", "PTRN|c"]


def test_threshold_zero_includes_patterns_sharing_nothing_and_empty_ones():
    m = make_matcher("difflib", False)
    m.add_new_pattern("disjoint", [["p", "q"]])
    m.add_new_pattern("empty", [])
    got = {r["pattern_name"]: r["similarity"] for r in m.match_patterns(["a"], 0.0, None)}
    assert got == {"disjoint": 0.0, "empty": 0.0}
    # Both empty: difflib's ratio is 1.0.
    assert m.match_patterns([], 0.0, None) == [
        {"pattern_name": "empty", "similarity": 1.0},
        {"pattern_name": "disjoint", "similarity": 0.0},
    ]
    assert m.match_patterns(["a"], 0.0000001, None) == []


def test_threshold_boundary_is_inclusive_in_float64():
    m = make_matcher("difflib", False)
    m.add_new_pattern("p", [["a", "b", "c"]])
    sim = ref_difflib(["a", "b", "c"], ["a", "x", "y"])
    assert [r["similarity"] for r in m.match_patterns(["a", "x", "y"], sim, None)] == [sim]
    assert m.match_patterns(["a", "x", "y"], np.nextafter(sim, 1.0), None) == []


def test_queries_never_grow_the_vocabulary(encoder):
    m = make_matcher("lcs", False, encoder)
    m.add_new_pattern("p", [["a", "b"]])
    before = dict(encoder.symbol_to_id)
    m.match_patterns(["a", "zzz", "new"], 0.0)
    m.match_patterns_batch([["other"], ["x", "y"]], 0.0)
    assert encoder.symbol_to_id == before


def test_unknown_symbols_count_in_length_but_never_match():
    m = make_matcher("lcs", False)
    m.add_new_pattern("p", [["a", "b"]])
    # Two occurrences of one unknown symbol still match no pattern symbol.
    got = m.match_patterns(["u", "a", "u"], 0.0)
    assert got == [{"pattern_name": "p", "similarity": 2.0 * 1 / 5}]


def test_batch_equals_single_queries():
    rng = random.Random(2)
    vocab = [f"t{k}" for k in range(20)]
    patterns = kato_shaped(rng, 300, vocab)
    m = make_matcher("difflib", False)
    m.add_patterns(list(patterns), list(patterns.values()))
    states = [rng.sample(vocab, rng.randint(0, 10)) for _ in range(25)]
    assert m.match_patterns_batch(states, 0.2, 10) == [m.match_patterns(s, 0.2, 10) for s in states]
    arrays = m.match_patterns_batch_arrays(states, 0.2, None)
    for state, got in zip(states, arrays):
        single = m.match_patterns_arrays(state, 0.2, None)
        assert got.names == single.names
        assert got.similarities.tobytes() == single.similarities.tobytes()


def test_max_predictions_none_zero_and_default():
    m = make_matcher("lcs", False)
    m.add_patterns([f"P{k:03d}" for k in range(150)], [[["a", str(k)]] for k in range(150)])
    assert len(m.match_patterns(["a"], 0.0, None)) == 150
    assert len(m.match_patterns(["a"], 0.0)) == 100  # KATO's default
    assert m.match_patterns(["a"], 0.0, 0) == []


def test_match_result_arrays_equal_dicts():
    m = make_matcher("lcs", False)
    m.add_patterns([f"P{k}" for k in range(50)], [[["a", "b"], [str(k % 7)]] for k in range(50)])
    res = m.match_patterns_arrays(["a", "3"], 0.0)
    assert isinstance(res.similarities, np.ndarray) and res.similarities.dtype == np.float64
    assert [
        {"pattern_name": n, "similarity": s} for n, s in zip(res.names, res.similarities.tolist())
    ] == m.match_patterns(["a", "3"], 0.0, None)
    assert len(res) == 50


def test_csr_loading_equals_list_loading(encoder):
    rng = random.Random(3)
    vocab = [f"v{k}" for k in range(30)]
    patterns = kato_shaped(rng, 200, vocab)
    names = list(patterns)
    by_lists = make_matcher("difflib", False)
    by_lists.add_patterns(names, [patterns[n] for n in names])
    flats = [flat(patterns[n]) for n in names]
    ids = encoder.encode_ids([s for f in flats for s in f])
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in flats])]).astype(np.int64)
    by_csr = make_matcher("difflib", False, encoder)
    assert by_csr.add_patterns_csr(names, np.asarray(ids, dtype=np.int32), offsets) == 200
    for _ in range(10):
        state = rng.sample(vocab, 5)
        assert by_csr.match_patterns(state, 0.1, None) == by_lists.match_patterns(state, 0.1, None)


def test_learning_api_like_kato():
    m = make_matcher("difflib", False)
    assert m.add_new_pattern("PTRN|1", [["a", "b"], ["c"]]) is True
    assert m.add_new_pattern("PTRN|1", [["z"]]) is False  # already held
    assert len(m) == 1 and "PTRN|1" in m and "PTRN|2" not in m
    assert m.remove_pattern("PTRN|1") is True and m.remove_pattern("PTRN|1") is False
    assert m.add_new_pattern("PTRN|1", [["z"]]) is True  # a removed name can return
    assert m.match_patterns(["z"], 0.5) == [{"pattern_name": "PTRN|1", "similarity": 1.0}]
    assert m.use_gpu is False and m.get_stats()["gpu_unavailable_reason"]
    assert "HybridGPUMatcher" in repr(m)
    m.clear_all()
    assert len(m) == 0 and m.match_patterns(["z"], 0.0) == []


def test_sync_moves_recent_into_bulk_and_check_sync_needed():
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(sync_threshold=3, enable_background_sync=False))
    for k in range(2):
        m.add_new_pattern(f"P{k}", [["a"]])
    assert m.check_sync_needed() is False
    m.add_new_pattern("P2", [["a"]])
    assert m.check_sync_needed() is True
    before = m.match_patterns(["a"], 0.0, None)
    assert m.sync_cpu_to_gpu() == 3
    stats = m.get_stats()
    assert (stats["bulk_tier_patterns"], stats["recent_tier_patterns"], stats["syncs_triggered"]) == (3, 0, 1)
    assert m.check_sync_needed() is False
    assert m.match_patterns(["a"], 0.0, None) == before
    timed = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(sync_interval_seconds=1))
    timed.add_new_pattern("P", [["a"]])
    timed.last_sync_time -= 2
    assert timed.check_sync_needed() is True


def test_concurrent_queries_and_learning_agree_with_oracle():
    """Queries from several threads while others learn; afterwards everything is present once."""
    rng = random.Random(4)
    vocab = [f"c{k}" for k in range(25)]
    patterns = kato_shaped(rng, 600, vocab)
    names = list(patterns)
    m = make_matcher("lcs", False)
    m.add_patterns(names[:200], [patterns[n] for n in names[:200]])
    errors = []

    def learner(chunk):
        try:
            for n in chunk:
                assert m.add_new_pattern(n, patterns[n])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def querier():
        try:
            for _ in range(30):
                res = m.match_patterns(rng.sample(vocab, 4), 0.0, None)
                assert len({r["pattern_name"] for r in res}) == len(res)  # never twice
                assert len(res) >= 200  # never missing committed ones
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=learner, args=(names[200 + k * 100 : 300 + k * 100],)) for k in range(4)]
    threads += [threading.Thread(target=querier) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    flats = {n: flat(e) for n, e in patterns.items()}
    state = rng.sample(vocab, 5)
    assert m.match_patterns(state, 0.0, None) == brute_force(flats, state, "lcs", False, 0.0, None)


def test_readme_usage_example():
    """The README's example prints what it says it prints (checked against difflib here)."""
    encoder = SymbolVocabularyEncoder(None)
    matcher = HybridGPUMatcher(encoder, GPUConfig(metric="difflib"))
    matcher.add_new_pattern("PTRN|a1", [["hello", "world"], ["VCTR|3f2a"]])
    matcher.add_new_pattern("PTRN|b2", [["hello"], ["there"]])
    got = matcher.match_patterns(["hello", "world"], threshold=0.1)
    assert got == [{"pattern_name": "PTRN|a1", "similarity": 0.8}, {"pattern_name": "PTRN|b2", "similarity": 0.5}]
    assert got[0]["similarity"] == ref_difflib(["hello", "world", "VCTR|3f2a"], ["hello", "world"])


def test_match_result_outlives_compaction_learning_and_clear():
    m = make_matcher("lcs", False)
    names = [f"P{k:05d}" for k in range(10_000)]
    m.add_patterns(names, [[["a", str(k % 13)]] for k in range(10_000)])
    res = m.match_patterns_arrays(["a", "3"], 0.0, None)
    expected_names, expected_sims = list(res.names), res.similarities.copy()
    for n in names[:8000]:  # enough removals to compact the store
        m.remove_pattern(n)
    m.add_new_pattern("NEW", [["a", "3"]])
    assert res.names == expected_names and np.array_equal(res.similarities, expected_sims)
    m.clear_all()
    assert res.names == expected_names and len(res) == 10_000
    assert [d["pattern_name"] for d in res.to_dicts()] == expected_names
