"""Sessions with a ``filter_pipeline`` on kato_gpu, checked in this process on KATO's own classes
against real backends (``redis-server``, chdb), as ``test_kato_glue.py`` does: for each pipeline,
KATO's own unpatched answer and kato_gpu's are compared exactly, and the path that answered is
counted (``filter_native``: the length, Jaccard and RapidFuzz stages evaluated natively;
``filter_kato_stages``: KATO's own stages chose the candidates, kato_gpu ranked them).

Each quirk of KATO's executor that the native stages replicate has a case here: a parameter of
0 taking the default (Python's ``or``), length bounds truncated by ``int()`` with a lower bound of
at least 1, a Python-side stage before any database stage skipped, a pipeline without a database
stage selecting nothing, unknown stage names skipped, and the RapidFuzz stage's own threshold
(the session's ``recall_threshold or 0.1``, not the searcher's). A symbol with a quote breaks
KATO's Jaccard SQL (the stage fails, so nothing is selected): that session runs KATO's stages.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Dict, List

import pytest

from conftest import serving_unavailable

if serving_unavailable():
    pytest.skip(serving_unavailable(), allow_module_level=True)

from test_kato_glue import (  # noqa: E402
    assert_same,
    counts,
    delta,
    kato,  # noqa: F401  (the fixture)
    kato_own,
    learn,
    new_kb,
    predict,
    predict_kato,
    processor,
)

VOCAB = [f"v{k}" for k in range(9)] + ["it's"]


def events_of(rng: random.Random, n: int) -> List[List[str]]:
    return [sorted(rng.sample(VOCAB[:9], rng.randint(1, 3))) for _ in range(n)]


@pytest.fixture(scope="module")
def kb(kato):  # noqa: F811
    """One knowledge base of 80 patterns of 1 to 6 events (lengths 2 to 16)."""
    kb_id = new_kb()
    proc = processor(kb_id)
    rng = random.Random("kato-filters")
    for _ in range(80):
        events = events_of(rng, rng.randint(1, 5))
        if sum(map(len, events)) < 2:  # KATO learns nothing shorter
            events.append(["v8"])
        learn(proc, events)
    learn(proc, [["it's"], ["v1", "v2"]])
    return proc


STMS = [
    [["v1", "v2"], ["v3"]],
    [["v0"], ["v4", "v5"], ["v6"]],
    [["v1"], ["v2"], ["v3"], ["v4"], ["v5", "v6", "v7"]],
    [["v8", "v7"], ["v1", "v2", "v3", "v4"]],
    [["v3", "v5"]],
]

NATIVE = [
    {"filter_pipeline": ["length"]},
    # 0 takes KATO's default (`or`): 0.5 and 2.0.
    {"filter_pipeline": ["length"], "length_min_ratio": 0.0, "length_max_ratio": 0},
    # int() truncation: 3 * 0.9 = 2.7 -> 2; 5 * 1.3 = 6.5 -> 6; the lower bound at least 1.
    {"filter_pipeline": ["length"], "length_min_ratio": 0.9, "length_max_ratio": 1.3},
    {"filter_pipeline": ["length"], "length_min_ratio": 0.01, "length_max_ratio": 1.0},
    {"filter_pipeline": ["jaccard"]},
    {"filter_pipeline": ["jaccard"], "jaccard_threshold": 0.0, "jaccard_min_overlap": 0},
    {"filter_pipeline": ["jaccard"], "jaccard_threshold": 0.25, "jaccard_min_overlap": 1},
    {"filter_pipeline": ["length", "jaccard"], "length_min_ratio": 0.3, "jaccard_threshold": 0.2},
    {"filter_pipeline": ["jaccard", "length", "jaccard"], "jaccard_min_overlap": 3},
    # RapidFuzz after a database stage: its threshold is the session's recall_threshold or 0.1.
    {"filter_pipeline": ["length", "rapidfuzz"], "length_max_ratio": 3.0},
    # A Python-side stage first is skipped (KATO: "Pipeline must start with database filter").
    {"filter_pipeline": ["rapidfuzz", "jaccard"], "jaccard_min_overlap": 1},
    # No database stage: no candidates, no predictions.
    {"filter_pipeline": ["rapidfuzz"]},
    # Unknown names are skipped.
    {"filter_pipeline": ["no-such-stage", "length"]},
    {"filter_pipeline": ["no-such-stage"]},
]

KATO_STAGES = [
    {"filter_pipeline": ["minhash"]},
    {"filter_pipeline": ["length", "minhash"], "minhash_threshold": 0.2},
    {"filter_pipeline": ["length", "bloom"]},
    {"filter_pipeline": ["length", "jaccard"], "jaccard_threshold": float("nan")},
]


def _config(settings: Dict[str, Any], threshold: float) -> Any:
    from kato.config.session_config import SessionConfiguration

    return SessionConfiguration(**{"recall_threshold": threshold, "max_predictions": 100, **settings})


def _check(kato, proc, settings, path, thresholds=(0.0, 0.1, 0.4)) -> int:  # noqa: F811
    """Compares every answer; returns how many predictions the pipeline removed in all (against
    the same session without it)."""
    removed = 0
    for threshold in thresholds:
        config = _config(settings, threshold)
        for stm in STMS:
            before = counts(kato)
            ours = predict(proc, stm, config)
            want = {"accelerated": 1, path: 1} if len(sum(stm, [])) > 1 else {"single_symbol": 1}
            assert delta(before, counts(kato)) == want, (settings, stm)
            assert_same(predict_kato(kato, proc, stm, config), ours)
            unfiltered = {p["name"] for p in predict(proc, stm, _config({"filter_pipeline": []}, threshold))}
            assert {p["name"] for p in ours} <= unfiltered
            removed += len(unfiltered) - len(ours)
    return removed


@pytest.mark.parametrize("settings", NATIVE, ids=lambda s: repr(s))
def test_native_filter_stages_give_katos_answers(kato, kb, settings):  # noqa: F811
    assert _check(kato, kb, settings, "filter_native") > 0


@pytest.mark.parametrize("settings", KATO_STAGES, ids=lambda s: repr(s))
def test_katos_own_stages_choose_the_candidates(kato, kb, settings):  # noqa: F811
    _check(kato, kb, settings, "filter_kato_stages")


def test_a_quote_in_a_symbol_breaks_katos_jaccard_sql(kato, kb):  # noqa: F811
    """KATO writes the state's symbols into its Jaccard SQL unquoted: ``it's`` ends the literal,
    the query fails, the stage selects nothing. That session runs KATO's stages; the length stage
    (no symbol in its SQL) stays native."""
    stm = [["it's"], ["v1", "v2"]]
    for settings, path in (
        ({"filter_pipeline": ["jaccard"], "jaccard_min_overlap": 1}, "filter_kato_stages"),
        ({"filter_pipeline": ["length"]}, "filter_native"),
    ):
        config = _config(settings, 0.1)
        before = counts(kato)
        ours = predict(kb, stm, config)
        assert delta(before, counts(kato)) == {"accelerated": 1, path: 1}
        assert_same(predict_kato(kato, kb, stm, config), ours)
        assert bool(ours) == (path == "filter_native")


def test_searcher_view_holds_the_candidates(kato):  # noqa: F811
    """After a filtered query KATO's searcher caches only the candidates: its ``delete_pattern``
    refuses a pattern outside them. The view kato_gpu leaves behaves the same."""
    kb_id = new_kb()
    proc = processor(kb_id)
    short = learn(proc, [["a"], ["b"]])
    long = learn(proc, [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j"]])
    config = proc.patterns_searcher.session_config
    config.filter_pipeline = ["length"]
    state = ["a", "b", "c"]
    before = counts(kato)
    ours = [dict(p) for p in asyncio.run(proc.predictPattern(state, stm_events=[state]))]
    assert delta(before, counts(kato)) == {"accelerated": 1, "filter_native": 1}
    view = proc.patterns_searcher.patterns_cache
    assert set(view) == {short} and len(view) == 1 and long not in view
    assert proc.patterns_searcher.patterns_count == 1
    with kato_own(kato):
        theirs = [dict(p) for p in asyncio.run(proc.predictPattern(state, stm_events=[state]))]
        assert set(proc.patterns_searcher.patterns_cache) == {short}
    assert_same(theirs, ours)
    asyncio.run(proc.predictPattern(state, stm_events=[state]))
    with pytest.raises(Exception, match="Unable to find and delete pattern"):
        proc.delete_pattern(long)
    assert proc.delete_pattern(short) == "deleted"


def test_jaccard_at_its_threshold(kato):  # noqa: F811
    """Patterns whose Jaccard similarity with the state equals a threshold exactly: KATO's SQL
    literal and its Float64 division meet kato_gpu's float64 rule at the boundary."""
    kb_id = new_kb()
    proc = processor(kb_id)
    state = [f"t{k}" for k in range(10)]
    # (shared, extra): the pattern holds `shared` of the state's symbols and `extra` others, so
    # its Jaccard similarity is shared / (10 + extra): 0.1, 0.2, 0.3, 0.6, 0.7, 0.2, 0.3, 0.6.
    for shared, extra in ((1, 0), (2, 0), (3, 0), (6, 0), (7, 0), (3, 5), (6, 10), (9, 5)):
        events = [state[:shared], [f"x{shared}-{k}" for k in range(extra)]]
        learn(proc, [e for e in events if e] + ([["t0"]] if shared + extra < 2 else []))
    for threshold in (0.1, 0.2, 0.3, 0.6, 0.7):
        config = _config(
            {"filter_pipeline": ["jaccard"], "jaccard_threshold": threshold, "jaccard_min_overlap": 1}, 0.0
        )
        before = counts(kato)
        ours = predict(proc, [state], config)
        assert delta(before, counts(kato)) == {"accelerated": 1, "filter_native": 1}
        assert_same(predict_kato(kato, proc, [state], config), ours)
        assert len(ours) == sum(
            s / (10 + e) >= threshold for s, e in ((1, 0), (2, 0), (3, 0), (6, 0), (7, 0), (3, 5), (6, 10), (9, 5))
        )
