"""The guarantees of ``kato_gpu.kato`` (the glue that puts KATO's prediction paths on kato_gpu),
checked in this process on KATO's own classes against real backends: a ``redis-server`` and an
embedded ClickHouse (chdb), as ``kato_gpu.kato_host`` serves KATO.

KATO's answer for the same request is computed by KATO's own, unpatched methods (kept before
:func:`kato_gpu.kato.install` patches the classes and put back for the call), on the same
processor, so both answers see the same stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import uuid
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional

import pytest

from conftest import KATO_SRC, serving_unavailable

if serving_unavailable():
    pytest.skip(serving_unavailable(), allow_module_level=True)

from kato_gpu.bench.kato_compare import compare_responses  # noqa: E402
from kato_gpu.kato_host.backends import RedisServer, close_installed_client, install_chdb_client  # noqa: E402

#: What kato_gpu.kato patches: (module, class, attribute).
PATCHED = (
    ("kato.storage.clickhouse_writer", "ClickHouseWriter", "write_pattern"),
    ("kato.storage.clickhouse_writer", "ClickHouseWriter", "delete_all_patterns"),
    ("kato.workers.pattern_processor", "PatternProcessor", "__init__"),
    ("kato.workers.pattern_processor", "PatternProcessor", "delete_pattern"),
    ("kato.workers.pattern_processor", "PatternProcessor", "predictPattern"),
    ("kato.workers.pattern_processor", "PatternProcessor", "_predict_single_symbol_fast"),
    ("kato.searches.pattern_search", "PatternSearcher", "causalBeliefAsync"),
    ("kato.storage.metrics_cache", "CachedMetricsCalculator", "conditional_probability_cached"),
)

#: A small knowledge base: every pattern shares symbols with the query states below.
PATTERNS = [
    [["a", "b"], ["c"]],
    [["a"], ["b", "d"], ["e"]],
    [["b", "c"], ["d", "f"]],
    [["a", "c"], ["e"], ["g", "h"]],
    [["c", "d"], ["e"]],
    [["f"], ["g"], ["a", "b"]],
    [["b"], ["c"], ["d"], ["e"]],
    [["a", "h"], ["b"]],
]
STATES = [[["a", "b"]], [["a"], ["c"]], [["b", "c"], ["d"]], [["c"], ["e"]], [["g", "h"], ["z"]]]


def _classes(kato_modules: Dict[str, Any]) -> Dict[tuple, Any]:
    return {(m, c, a): getattr(getattr(kato_modules[m], c), a) for m, c, a in PATCHED}


@pytest.fixture(scope="module")
def kato(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """KATO's classes in this process on a fresh redis-server and chdb, with kato_gpu installed.
    Everything is put back afterwards: the classes unpatched, the environment, ``sys.path``."""
    import clickhouse_connect

    import kato_gpu.kato as glue

    redis = RedisServer().start()
    saved_env = {k: os.environ.get(k) for k in ("REDIS_URL", "REDIS_ENABLED", "LOG_LEVEL")}
    saved_get_client = clickhouse_connect.get_client
    saved_path = list(sys.path)
    saved_bytecode = sys.dont_write_bytecode
    modules = {}
    originals = {}
    try:
        os.environ.update({"REDIS_URL": redis.url, "REDIS_ENABLED": "true", "LOG_LEVEL": "WARNING"})
        # KATO's directory is read-only reference source: nothing may write bytecode there.
        sys.dont_write_bytecode = True
        if str(KATO_SRC) not in sys.path:
            sys.path.insert(0, str(KATO_SRC))
        install_chdb_client(tmp_path_factory.mktemp("chdb"), init_sql=KATO_SRC / "config" / "clickhouse" / "init.sql")
        import importlib

        for name in {m for m, _, _ in PATCHED}:
            modules[name] = importlib.import_module(name)
        from kato.config import settings as kato_settings

        # KATO's settings are a process-wide singleton: make it read this environment.
        kato_settings._settings = None
        assert not glue.installed(), "kato_gpu.kato was installed before this module's fixture"
        originals = _classes(modules)
        glue.reset()
        glue.install()
        yield SimpleNamespace(glue=glue, modules=modules, originals=originals, redis=redis)
    finally:
        for (m, c, a), fn in originals.items():
            setattr(getattr(modules[m], c), a, fn)
        glue._installed = False
        glue.reset()
        close_installed_client()
        clickhouse_connect.get_client = saved_get_client
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        redis.stop()


@contextlib.contextmanager
def kato_own(kato: SimpleNamespace) -> Iterator[None]:
    """KATO's own, unpatched methods for the duration."""
    patched = _classes(kato.modules)
    try:
        for (m, c, a), fn in kato.originals.items():
            setattr(getattr(kato.modules[m], c), a, fn)
        yield
    finally:
        for (m, c, a), fn in patched.items():
            setattr(getattr(kato.modules[m], c), a, fn)


def new_kb() -> str:
    return f"glue-{uuid.uuid4().hex[:12]}"


def processor(kb_id: str, **kwargs: Any) -> Any:
    """A PatternProcessor built as KATO's KatoProcessor builds it."""
    from kato.workers.pattern_processor import PatternProcessor

    manifest = {
        "name": kb_id,
        "kb_id": kb_id,
        "max_pattern_length": 0,
        "persistence": 5,
        "max_predictions": 100,
        "recall_threshold": 0.1,
        "use_token_matching": True,
        "stm_mode": "CLEAR",
        "rank_sort_algo": "potential",
    }
    manifest.update(kwargs)
    proc = PatternProcessor(**manifest)
    proc.patterns_kb = proc.superkb.patterns_kb
    return proc


def learn(proc: Any, events: List[List[str]]) -> str:
    proc.setSTM([list(e) for e in events])
    name = proc.learn()
    assert name is not None
    return name


def predict(proc: Any, stm: List[List[str]], config: Any = None) -> List[Dict[str, Any]]:
    return [dict(p) for p in asyncio.run(proc.get_predictions_async(stm, config))]


def predict_kato(kato: SimpleNamespace, proc: Any, stm: List[List[str]], config: Any = None) -> List[Dict[str, Any]]:
    with kato_own(kato):
        return predict(proc, stm, config)


def assert_same(kato_answer: List[Dict[str, Any]], ours: List[Dict[str, Any]]) -> None:
    outcome = compare_responses({"predictions": kato_answer}, {"predictions": ours})
    assert outcome.outcome == "exact", outcome.problems


def counts(kato: SimpleNamespace) -> Dict[str, int]:
    return dict(kato.glue.status()["counts"])


def delta(before: Dict[str, int], after: Dict[str, int]) -> Dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def kb_status(kato: SimpleNamespace, kb_id: str) -> Dict[str, Any]:
    return kato.glue.status()["knowledge_bases"][kb_id]


# -- 1. loading at processor start ---------------------------------------------------------------


def test_processor_start_loads_existing_patterns(kato, caplog):
    kb = new_kb()
    # Learned by KATO alone (kato_gpu not in the way), as before an upgrade.
    with kato_own(kato):
        plain = processor(kb)
        names = {learn(plain, p) for p in PATTERNS}
    assert kb not in kato.glue.status()["knowledge_bases"]
    with caplog.at_level(logging.INFO, logger="kato_gpu.kato"):
        proc = processor(kb)
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": True}
    messages = [r.getMessage() for r in caplog.records if r.name == "kato_gpu.kato"]
    assert any(f"loading {len(names)} patterns of {kb}" in m for m in messages), messages
    assert any(f"{len(names)} / {len(names)} patterns loaded" in m for m in messages), messages
    assert any(f"{kb} ready, {len(names)} patterns" in m for m in messages), messages

    for stm in STATES:
        before = counts(kato)
        ours = predict(proc, stm)
        assert delta(before, counts(kato)) == {"accelerated": 1}
        assert_same(predict_kato(kato, proc, stm), ours)
    assert {p["name"] for p in predict(proc, [["a", "b"], ["c"]])} <= names

    # A second processor of the same kb shares the matcher: no second load.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kato_gpu.kato"):
        processor(kb)
    assert not [r for r in caplog.records if r.name == "kato_gpu.kato" and "loading" in r.getMessage()]
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": True}


# -- 2. learning follows KATO ------------------------------------------------------------------------


def test_learn_reaches_the_matcher_once(kato):
    kb = new_kb()
    proc = processor(kb)
    assert kb_status(kato, kb) == {"patterns": 0, "in_step": True}
    names = [learn(proc, p) for p in PATTERNS]
    assert kb_status(kato, kb)["patterns"] == len(set(names))
    base = kato.glue._registry.get(kb)
    assert set(base.matcher.pattern_names()) == set(names)

    # A re-learn raises KATO's frequency; the matcher holds the pattern once.
    again = learn(proc, PATTERNS[0])
    assert again == names[0]
    assert kb_status(kato, kb)["patterns"] == len(set(names))
    ours = predict(proc, [["a", "b"]])
    assert_same(predict_kato(kato, proc, [["a", "b"]]), ours)
    assert [p["frequency"] for p in ours if p["name"] == names[0]] == [2]

    # Another processor of the same kb learns: this one predicts it at once.
    other = processor(kb)
    extra = learn(other, [["q", "r"], ["s"]])
    assert kb_status(kato, kb)["patterns"] == len(set(names)) + 1
    assert [p["name"] for p in predict(proc, [["q", "r"]])] == [extra]


# -- 3. delete_pattern -------------------------------------------------------------------------------


def test_delete_pattern_follows_kato(kato):
    kb = new_kb()
    proc = processor(kb)
    names = [learn(proc, p) for p in PATTERNS]
    stm = [["a", "b"], ["c"]]
    target = names[0]
    assert target in {p["name"] for p in predict(proc, stm)}

    # A name KATO does not have: KATO's exception, the matcher unchanged (regression: it used to be
    # removed from the matcher anyway).
    for unknown in ("PTRN|" + "0" * 40, "not-a-pattern"):
        with pytest.raises(Exception, match="Unable to find and delete pattern"):
            proc.delete_pattern(unknown)
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": True}

    # A pattern this processor's searcher never held (learned by another processor of the kb):
    # KATO refuses to delete it, so the matcher keeps it and still predicts it.
    other = processor(kb)
    foreign = learn(other, [["a", "b"], ["x"]])
    with pytest.raises(Exception, match="Unable to find and delete pattern"):
        proc.delete_pattern(foreign)
    assert kb_status(kato, kb) == {"patterns": len(names) + 1, "in_step": True}
    ours = predict(proc, stm)
    assert {target, foreign} <= {p["name"] for p in ours}
    assert_same(predict_kato(kato, proc, stm), ours)

    # A successful delete: gone from the matcher and from both answers.
    assert proc.delete_pattern(target) == "deleted"
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": True}
    assert target not in kato.glue._registry.get(kb).matcher
    ours = predict(proc, stm)
    assert target not in {p["name"] for p in ours}
    assert_same(predict_kato(kato, proc, stm), ours)
    # Deleting it again: KATO no longer has it either.
    with pytest.raises(Exception, match="Unable to find and delete pattern"):
        proc.delete_pattern(target)
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": True}


# -- 4. clear_all_memory -----------------------------------------------------------------------------


def test_clear_all_memory_empties_the_matcher(kato):
    kb = new_kb()
    proc = processor(kb)
    for p in PATTERNS:
        learn(proc, p)
    assert predict(proc, [["a", "b"]])
    proc.clear_all_memory()
    assert kb_status(kato, kb) == {"patterns": 0, "in_step": True}
    for stm in STATES:
        before = counts(kato)
        assert predict(proc, stm) == []
        assert delta(before, counts(kato)) == {"accelerated": 1}
        assert predict_kato(kato, proc, stm) == []
    # Learning after the clear works again.
    name = learn(proc, [["k", "l"], ["m"]])
    assert kb_status(kato, kb)["patterns"] == 1
    assert [p["name"] for p in predict(proc, [["k", "l"]])] == [name]
    # KATO keeps a cleared pattern's frequency in Redis, so learning it again after the clear is a
    # re-learn for KATO, which writes nothing to its store: the matcher stays in step with that.
    learn(proc, PATTERNS[0])
    assert kb_status(kato, kb)["patterns"] == 1
    assert_same(predict_kato(kato, proc, [["a", "b"]]), predict(proc, [["a", "b"]]))


# -- 5. a learn the matcher cannot follow ------------------------------------------------------------


def test_out_of_step_falls_back_to_kato_then_reloads(kato, monkeypatch, caplog):
    kb = new_kb()
    proc = processor(kb)
    names = [learn(proc, p) for p in PATTERNS]
    base = kato.glue._registry.get(kb)

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("injected: the matcher cannot take this pattern")

    with monkeypatch.context() as m, caplog.at_level(logging.ERROR, logger="kato_gpu.kato"):
        m.setattr(base, "matcher", _Refusing(base.matcher, refuse))
        lost = learn(proc, [["a", "b"], ["w"]])
    assert any(f"could not learn {lost}" in r.getMessage() for r in caplog.records)
    # KATO learned it; the matcher did not: out of step.
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": False}

    for stm in STATES:
        before = counts(kato)
        ours = predict(proc, stm)
        assert delta(before, counts(kato)) == {"fallback.out_of_step": 1}
        assert_same(predict_kato(kato, proc, stm), ours)
    assert lost in {p["name"] for p in predict(proc, [["a", "b"]])}
    before = counts(kato)
    ours = predict(proc, [["a"]])
    assert delta(before, counts(kato)) == {"fallback.out_of_step": 1}
    assert_same(predict_kato(kato, proc, [["a"]]), ours)

    # Learning while out of step leaves the matcher alone; the next processor start reloads.
    later = learn(proc, [["h"], ["g", "f"]])
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": False}
    fresh = processor(kb)
    assert kb_status(kato, kb) == {"patterns": len(names) + 2, "in_step": True}
    assert {lost, later} <= set(base.matcher.pattern_names())
    for p in (proc, fresh):
        for stm in STATES:
            before = counts(kato)
            ours = predict(p, stm)
            assert delta(before, counts(kato)) == {"accelerated": 1}
            assert_same(predict_kato(kato, p, stm), ours)


def test_pattern_longer_than_the_matcher_takes(kato, monkeypatch, caplog):
    """``KATO_GPU_MAX_PATTERN_LENGTH`` is a real limit of the matcher, not of KATO: a longer
    pattern puts the kb out of step, KATO answers, and a reload that meets the pattern again
    leaves it out of step without stopping KATO's processor start."""
    kb = new_kb()
    monkeypatch.setenv("KATO_GPU_MAX_PATTERN_LENGTH", "6")
    proc = processor(kb)
    names = [learn(proc, p) for p in PATTERNS]
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": True}
    with caplog.at_level(logging.ERROR, logger="kato_gpu.kato"):
        long = learn(proc, [["a", "b", "c"], ["d", "e"], ["f", "g", "h"]])
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": False}
    stm = [["a", "b"], ["c"]]
    before = counts(kato)
    ours = predict(proc, stm)
    assert delta(before, counts(kato)) == {"fallback.out_of_step": 1}
    assert long in {p["name"] for p in ours}
    assert_same(predict_kato(kato, proc, stm), ours)

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="kato_gpu.kato"):
        again = processor(kb)
    assert any(f"could not load {kb}" in r.getMessage() for r in caplog.records), caplog.text
    assert kb_status(kato, kb)["in_step"] is False
    before = counts(kato)
    ours = predict(again, stm)
    assert delta(before, counts(kato)) == {"fallback.out_of_step": 1}
    assert_same(predict_kato(kato, again, stm), ours)


class _Refusing:
    """A matcher whose adds fail; everything else is the real one's."""

    def __init__(self, real: Any, refuse: Any) -> None:
        self._real = real
        self.add_pattern_events = refuse
        self.add_patterns_events = refuse

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __contains__(self, name: object) -> bool:
        return name in self._real

    def __len__(self) -> int:
        return len(self._real)


# -- 6. fallback routing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, reason",
    [
        ({"fuzzy_token_threshold": 0.8}, "fuzzy_tokens"),
        ({"use_token_matching": False}, "character_level"),
    ],
)
def test_session_configs_go_to_kato(kato, settings, reason):
    from kato.config.session_config import SessionConfiguration

    kb = new_kb()
    proc = processor(kb)
    for p in PATTERNS:
        learn(proc, p)
    plain = SessionConfiguration(filter_pipeline=[], recall_threshold=0.1)
    config = SessionConfiguration(**{"filter_pipeline": [], "recall_threshold": 0.1, **settings})
    answered = 0
    for stm in STATES:
        before = counts(kato)
        ours = predict(proc, stm, config)
        assert delta(before, counts(kato)) == {f"fallback.{reason}": 1}
        assert_same(predict_kato(kato, proc, stm, config), ours)
        answered += bool(ours)
        # The same session without that setting is accelerated.
        before = counts(kato)
        predict(proc, stm, plain)
        assert delta(before, counts(kato)) == {"accelerated": 1}
    assert answered


# -- the view KATO's searcher keeps of the patterns ---------------------------------------------------


def test_searcher_view_after_an_accelerated_query(kato):
    """After an accelerated query on the processor's own searcher (KATO's ``processEvents`` path),
    KATO's ``patterns_cache`` is the matcher's view: every pattern of the kb, as KATO's query would
    have refilled it, so KATO's ``delete_pattern`` accepts a pattern another processor learned."""
    kb = new_kb()
    proc = processor(kb)
    names = {learn(proc, p) for p in PATTERNS}
    foreign = learn(processor(kb), [["a", "b"], ["y"]])
    before = counts(kato)
    ours = [dict(p) for p in asyncio.run(proc.predictPattern(["a", "b"], stm_events=[["a", "b"]]))]
    assert delta(before, counts(kato)) == {"accelerated": 1}
    view = proc.patterns_searcher.patterns_cache
    assert set(view) == names | {foreign}
    assert len(view) == len(names) + 1
    assert view[foreign] == ["a", "b", "y"]
    with kato_own(kato):
        theirs = [dict(p) for p in asyncio.run(proc.predictPattern(["a", "b"], stm_events=[["a", "b"]]))]
        assert set(proc.patterns_searcher.patterns_cache) == set(view)
    assert_same(theirs, ours)

    asyncio.run(proc.predictPattern(["a", "b"], stm_events=[["a", "b"]]))
    assert proc.delete_pattern(foreign) == "deleted"
    assert foreign not in proc.patterns_searcher.patterns_cache
    assert kb_status(kato, kb) == {"patterns": len(names), "in_step": True}
    assert foreign not in {p["name"] for p in predict(proc, [["a", "b"]])}


# -- 7. the import hook ------------------------------------------------------------------------------

HOOK_PROBE = """
import json, sys
sys.dont_write_bytecode = True
sys.path.insert(0, {src!r})
{preamble}
import kato.workers.pattern_processor as pp
import kato.searches.pattern_search as ps
loaded = "kato_gpu" in sys.modules
out = {{
    "hook_loaded": "_kato_gpu_hook" in sys.modules,
    "kato_gpu_loaded": loaded,
    "methods": sorted({{
        pp.PatternProcessor.predictPattern.__module__,
        pp.PatternProcessor.__init__.__module__,
        pp.PatternProcessor.delete_pattern.__module__,
        pp.PatternProcessor._predict_single_symbol_fast.__module__,
        ps.PatternSearcher.causalBeliefAsync.__module__,
    }}),
}}
if loaded:
    import kato_gpu.kato
    out["installed"] = kato_gpu.kato.installed()
print(json.dumps(out))
"""


def _probe(accelerate: Optional[str], preamble: str = "") -> Dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "KATO_GPU_ACCELERATE"}
    if accelerate is not None:
        env["KATO_GPU_ACCELERATE"] = accelerate
    proc = subprocess.run(
        [sys.executable, "-c", HOOK_PROBE.format(src=str(KATO_SRC), preamble=preamble)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_hook_switches_kato_on_only_when_asked():
    """The wheel's ``kato_gpu_hook.pth`` imports ``_kato_gpu_hook`` at interpreter start. Where
    kato_gpu is installed otherwise (``maturin develop``), that .pth is absent: the probes then
    import ``_kato_gpu_hook`` first, as site would have processed the .pth."""
    import _kato_gpu_hook  # noqa: F401

    kato_only = ["kato.searches.pattern_search", "kato.workers.pattern_processor"]
    preamble = ""
    off = _probe(None)
    if not off["hook_loaded"]:
        preamble = "import _kato_gpu_hook"
        off = _probe(None, preamble)
    assert off == {"hook_loaded": True, "kato_gpu_loaded": False, "methods": kato_only}
    on = _probe("1", preamble)
    assert on == {"hook_loaded": True, "kato_gpu_loaded": True, "methods": ["kato_gpu.kato"], "installed": True}


# -- 8. sessions with a filter pipeline -------------------------------------------------------------

# Sessions with a ``filter_pipeline`` on kato_gpu, checked in this process on KATO's own classes
# against real backends (``redis-server``, chdb), as the sections above: for each pipeline,
# KATO's own unpatched answer and kato_gpu's are compared exactly, and the path that answered is
# counted (``filter_native``: the length, Jaccard and RapidFuzz stages evaluated natively;
# ``filter_kato_stages``: KATO's own stages chose the candidates, kato_gpu ranked them).
#
# Each quirk of KATO's executor that the native stages replicate has a case here: a parameter of
# 0 taking the default (Python's ``or``), length bounds truncated by ``int()`` with a lower bound of
# at least 1, a Python-side stage before any database stage skipped, a pipeline without a database
# stage selecting nothing, unknown stage names skipped, and the RapidFuzz stage's own threshold
# (the session's ``recall_threshold or 0.1``, not the searcher's). A symbol with a quote breaks
# KATO's Jaccard SQL (the stage fails, so nothing is selected): that session runs KATO's stages.

FILTER_VOCAB = [f"v{k}" for k in range(9)] + ["it's"]


def events_of(rng: random.Random, n: int) -> List[List[str]]:
    return [sorted(rng.sample(FILTER_VOCAB[:9], rng.randint(1, 3))) for _ in range(n)]


@pytest.fixture(scope="module")
def filter_kb(kato):
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


FILTER_STMS = [
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


def _check(kato, proc, settings, path, thresholds=(0.0, 0.1, 0.4)) -> int:
    """Compares every answer; returns how many predictions the pipeline removed in all (against
    the same session without it)."""
    removed = 0
    for threshold in thresholds:
        config = _config(settings, threshold)
        for stm in FILTER_STMS:
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
def test_native_filter_stages_give_katos_answers(kato, filter_kb, settings):
    assert _check(kato, filter_kb, settings, "filter_native") > 0


@pytest.mark.parametrize("settings", KATO_STAGES, ids=lambda s: repr(s))
def test_katos_own_stages_choose_the_candidates(kato, filter_kb, settings):
    _check(kato, filter_kb, settings, "filter_kato_stages")


def test_a_quote_in_a_symbol_breaks_katos_jaccard_sql(kato, filter_kb):
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
        ours = predict(filter_kb, stm, config)
        assert delta(before, counts(kato)) == {"accelerated": 1, path: 1}
        assert_same(predict_kato(kato, filter_kb, stm, config), ours)
        assert bool(ours) == (path == "filter_native")


def test_searcher_view_holds_the_candidates(kato):
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


def test_jaccard_at_its_threshold(kato):
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


# -- KATO's conditional-probability cache ---------------------------------------------------------


@pytest.mark.parametrize("prefetch", [False, True], ids=["per-call", "prefetched"])
def test_conditional_probability_cache_is_kato_s(kato, prefetch):
    """Under the per-request memo (with the kept predictions known, the keys read in one MGET), the
    patched method writes the same Redis keys with the same values as KATO's own, answers the same
    (bit for bit; from the cache the second time, including a key stored earlier in the same
    request) and counts the same cache hits and misses."""
    from kato.storage import metrics_cache

    original = kato.originals[
        ("kato.storage.metrics_cache", "CachedMetricsCalculator", "conditional_probability_cached")
    ]
    assert metrics_cache.CachedMetricsCalculator.conditional_probability_cached is not original
    table = {f"s{k}": (k + 1) / 331 for k in range(300)}
    states = [["s3", "s1", "s3"], ["s299"], ["unknown", "s2"], ["s7", "s8", "s9", "s10"], ["s1", "s3", "s3"]]
    # What causalBeliefAsync hands KATO's metrics loop: predictions whose present events hold the states.
    kept = [SimpleNamespace(present=[state[:1], state[1:]]) for state in states]

    async def answers_and_store(method: Any, memo: bool) -> tuple:
        manager = metrics_cache.MetricsCacheManager(redis_url=kato.redis.url)
        assert await manager.initialize()
        try:
            for key in [k async for k in manager.redis.scan_iter("kato:metrics:*")]:
                await manager.redis.delete(key)
            calculator = metrics_cache.CachedMetricsCalculator(manager)
            if memo:
                with kato.glue.probability_hash_memo() as request:
                    request.predictions = kept if prefetch else None
                    first = [await method(calculator, s, table) for s in states]
                    await request.flush()
                with kato.glue.probability_hash_memo() as request:
                    request.predictions = kept if prefetch else None
                    second = [await method(calculator, s, table) for s in states]
                    await request.flush()
            else:
                first = [await method(calculator, s, table) for s in states]
                second = [await method(calculator, s, table) for s in states]
            keys = sorted(k for k in await manager.redis.keys("kato:metrics:*") if not k.endswith(b"_index"))
            stored = {k: (await manager.redis.get(k), await manager.redis.ttl(k) > 0) for k in keys}
            stored["index"] = sorted(await manager.redis.smembers(manager.index_key))
            return first, second, stored, dict(manager.stats)
        finally:
            await manager.redis.aclose()

    theirs = asyncio.run(answers_and_store(original, memo=False))
    ours = asyncio.run(
        answers_and_store(metrics_cache.CachedMetricsCalculator.conditional_probability_cached, memo=True)
    )
    hexes = lambda values: [float(v).hex() for v in values]  # noqa: E731
    assert hexes(ours[0]) == hexes(theirs[0]) and hexes(ours[1]) == hexes(theirs[1])
    assert ours[2] == theirs[2] and len(ours[2]) == 4 + 1, (
        "same keys, values, TTLs and index (two states share a sorted form)"
    )
    assert ours[3] == theirs[3], "the same cache hits, misses and updates"


def test_predict_pattern_leaves_kato_s_cache_as_kato_does(kato):
    """Two predictions of one state through ``get_predictions_async`` with KATO's metrics cache on:
    kato_gpu's path leaves the same conditional-probability entries in Redis (keys and values), with
    the same hit/miss/update counts, as KATO's own path, and answers the same."""
    from kato.storage import metrics_cache

    kb = new_kb()
    proc = processor(kb)
    for events in PATTERNS:
        learn(proc, events)
    stm = [["a", "b"], ["c"]]

    async def predict_twice() -> tuple:
        metrics_cache._metrics_cache_manager = None
        await proc.initialize_metrics_cache()
        manager = proc.metrics_cache_manager
        assert manager is not None and proc.cached_calculator is not None
        try:
            for key in [k async for k in manager.redis.scan_iter("kato:metrics:*")]:
                await manager.redis.delete(key)
            answers = [[dict(p) for p in await proc.get_predictions_async(stm)] for _ in range(2)]
            keys = sorted([k async for k in manager.redis.scan_iter("kato:metrics:conditional_probability:*")])
            entries = {k: await manager.redis.get(k) for k in keys}
            counts = {k: manager.stats[k] for k in ("hits", "misses", "updates")}
            return answers, entries, counts
        finally:
            await manager.redis.aclose()
            metrics_cache._metrics_cache_manager = None
            proc.metrics_cache_manager = proc.cached_calculator = None

    with kato_own(kato):
        theirs = asyncio.run(predict_twice())
    ours = asyncio.run(predict_twice())
    assert theirs[1], "KATO's path stored conditional probabilities"
    assert ours[1] == theirs[1]
    assert ours[2] == theirs[2] and theirs[2]["hits"] > 0 and theirs[2]["updates"] > 0
    for kato_answer, our_answer in zip(theirs[0], ours[0]):
        assert_same(kato_answer, our_answer)
