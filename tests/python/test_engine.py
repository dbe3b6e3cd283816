"""The native engine's contract: one transaction per learn, the vocabulary owned by the engine,
every argument rule applied by the engine, and regression cases for the defects found in the
Python layer it replaced. Oracles: brute force over Python's own difflib, and the stores' own
contents."""

from __future__ import annotations

import inspect
import math
import threading

import numpy as np
import pytest

from conftest import brute_force
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, _native


def make(metric: str = "difflib", store=None, **config) -> HybridGPUMatcher:
    return HybridGPUMatcher(SymbolVocabularyEncoder(store), GPUConfig(metric=metric, enabled=False, **config))


# ---------------------------------------------------------------- the engine owns the ids


def test_classes_are_native() -> None:
    assert issubclass(SymbolVocabularyEncoder, _native.SymbolVocabularyEncoder)
    assert issubclass(HybridGPUMatcher, _native.HybridGPUMatcher)


def test_encoder_clear_under_a_live_matcher_is_refused() -> None:
    """Used to reuse ids silently: after clear(), a new pattern's symbols got the ids of an old
    pattern's, so the new state matched the old pattern with similarity 1.0."""
    matcher = make()
    encoder = matcher.encoder
    matcher.add_new_pattern("old", [["x", "y"]])
    with pytest.raises(ValueError, match="clear_all"):
        encoder.clear()
    assert encoder.symbol_to_id == {"x": 0, "y": 1}
    matcher.add_new_pattern("new", [["q", "r"]])
    assert matcher.match_patterns(["q", "r"], 0.5) == [{"pattern_name": "new", "similarity": 1.0}]
    prediction = matcher.match_predictions(["q", "r"], 0.5)
    assert [(p[0], p[1]) for p in prediction] == [("new", ["q", "r"])]
    matcher.clear_all()
    encoder.clear()
    assert encoder.vocab_size == 0 and len(matcher) == 0
    matcher.add_new_pattern("again", [["q", "r"]])
    assert matcher.match_patterns(["x", "y"], 0.1) == []


def test_learning_adds_the_symbols_in_the_same_transaction() -> None:
    matcher = make()
    encoder = matcher.encoder
    assert matcher.add_new_pattern("p", [["a", "b"], ["c"]])
    assert encoder.symbol_to_id == {"a": 0, "b": 1, "c": 2}
    # Known name: False, and its new symbols are not added.
    assert matcher.add_new_pattern("p", [["d"]]) is False
    assert "d" not in encoder.symbol_to_id
    # A batch that fails (a name stored already) adds nothing at all.
    with pytest.raises(ValueError, match="already stored"):
        matcher.add_patterns(["q", "p"], [[["e"]], [["f"]]])
    with pytest.raises(ValueError, match="more than once"):
        matcher.add_patterns(["q", "q"], [[["e"]], [["f"]]])
    assert encoder.vocab_size == 3 and len(matcher) == 1
    assert matcher.pattern_symbols("p") == ["a", "b", "c"]


def test_queries_never_add_symbols() -> None:
    matcher = make()
    matcher.add_new_pattern("p", [["a", "b"]])
    assert matcher.match_patterns(["a", "zzz"], 0.0, None)[0]["similarity"] == 0.5
    matcher.match_predictions(["zzz"], 0.0)
    matcher.match_patterns_batch([["yyy"]], 0.0)
    assert matcher.encoder.vocab_size == 2


def test_collection_store_gets_only_the_new_entries() -> None:
    mongomock = pytest.importorskip("mongomock")
    collection = mongomock.MongoClient().kato.metadata
    matcher = make(store=collection)
    matcher.add_new_pattern("p", [["a", "b"]])
    for k in range(50):
        matcher.add_new_pattern(f"q{k}", [["a", f"VCTR|{k}"]])
    doc = collection.find_one({"class": "gpu_vocabulary"})
    assert doc["next_id"] == doc["vocab_size"] == 52
    assert doc["symbol_to_id"]["VCTR|49"] == 51 and doc["id_to_symbol"]["51"] == "VCTR|49"
    assert SymbolVocabularyEncoder(collection).symbol_to_id == matcher.encoder.symbol_to_id


def test_file_store_learning_appends_and_reloads(tmp_path) -> None:
    path = tmp_path / "vocab.json"
    matcher = make(store=path)
    for k in range(100):
        matcher.add_new_pattern(f"q{k}", [["a", f"VCTR|{k}"]])
    log = path.with_name("vocab.json.log")
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + 1 + 100 * 2  # the header, then per learn a batch line and its new symbols
    ids = dict(matcher.encoder.symbol_to_id)
    matcher.encoder.close()
    assert dict(SymbolVocabularyEncoder(path).symbol_to_id) == ids


# ------------------------------------------------------------- every rule in the engine


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.match_patterns(["a"], 10**400),
        lambda m: m.match_patterns(["a"], float("nan")),
        lambda m: m.match_patterns(["a"], 1.5),
        lambda m: m.match_patterns(["a"], 0.5, 2**64),
        lambda m: m.match_patterns(["a"], 0.5, -1),
        lambda m: m.match_patterns_arrays(["a"], 0.5, 2**70),
        lambda m: m.match_patterns_batch([["a"]], -0.1),
        lambda m: m.match_predictions(["a"], 0.5, 2**64),
        lambda m: m.match_predictions(["a"], 0.5, weights={"a": float("nan")}),
        lambda m: m.match_predictions(["a"], 0.5, weights={"a": float("inf")}),
        lambda m: m.match_predictions(["a"], 0.5, fuzzy_token_threshold=2.0),
        lambda m: m.match_predictions(["a"], 0.5, kato_rounding=True),  # difflib metric
        lambda m: m.add_new_pattern("\ud800", [["a"]]),
        lambda m: m.add_new_pattern("", [["a"]]),
        lambda m: m.add_new_pattern("p", [["\udc00"]]),
        lambda m: m.remove_pattern(""),
    ],
)
def test_bad_values_raise_value_error_and_change_nothing(call) -> None:
    matcher = make()
    matcher.add_new_pattern("a", [["a", "b"]])
    before = (len(matcher), dict(matcher.encoder.symbol_to_id))
    with pytest.raises(ValueError):
        call(matcher)
    assert (len(matcher), dict(matcher.encoder.symbol_to_id)) == before


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.match_patterns(["a"], True),
        lambda m: m.match_patterns(["a"], "0.5"),
        lambda m: m.match_patterns(["a"], 0.5, 1.0),
        lambda m: m.match_patterns(["a"], 0.5, True),
        lambda m: m.match_patterns("ab", 0.5),
        lambda m: m.match_patterns_batch("ab", 0.5),
        lambda m: m.match_predictions(["a"], 0.5, weights=[("a", 1.0)]),
        lambda m: m.match_predictions(["a"], 0.5, weights={"a": "heavy"}),
        lambda m: m.match_predictions(["a"], 0.5, candidates="a"),
        lambda m: m.add_patterns("ab", [[["x"]], [["y"]]]),
        lambda m: m.add_patterns(["x"], [[["y"]]], promote="no"),
        lambda m: m.add_patterns_csr(["x"], np.array([0]), np.array([0, 1]), promote=1),
        lambda m: m.add_new_pattern(7, [["a"]]),
        lambda m: m.add_new_pattern("p", "ab"),
    ],
)
def test_bad_types_raise_type_error_and_change_nothing(call) -> None:
    matcher = make()
    matcher.add_new_pattern("a", [["a", "b"]])
    before = (len(matcher), dict(matcher.encoder.symbol_to_id))
    with pytest.raises(TypeError):
        call(matcher)
    assert (len(matcher), dict(matcher.encoder.symbol_to_id)) == before


def test_contains_is_false_for_anything_but_a_stored_name() -> None:
    matcher = make()
    matcher.add_new_pattern("p", [["a"]])
    assert "p" in matcher
    for other in ("\ud800", "", 7, None, b"p", "q"):
        assert other not in matcher


def test_huge_limits_are_values_not_overflows() -> None:
    matcher = make()
    matcher.add_new_pattern("p", [["a"]])
    assert len(matcher.match_patterns(["a"], 0.0, 2**63)) == 1


def test_sibling_methods_share_defaults() -> None:
    signatures = {
        name: inspect.signature(getattr(HybridGPUMatcher, name)).parameters["max_predictions"].default
        for name in ("match_patterns", "match_patterns_arrays", "match_patterns_batch", "match_patterns_batch_arrays")
    }
    assert set(signatures.values()) == {100}, signatures
    matcher = make()
    matcher.add_patterns([f"p{k:03d}" for k in range(150)], [[["a"]] for _ in range(150)])
    assert len(matcher.match_patterns_arrays(["a"], 0.0)) == len(matcher.match_patterns_batch_arrays([["a"]], 0.0)[0])


def test_update_config_is_all_or_nothing() -> None:
    matcher = make()
    before = matcher.config.to_dict()
    for changes in (
        {"sync_threshold": 10**30},
        {"sync_interval_seconds": 10**20},
        {"sync_threshold": 5, "sync_interval_seconds": 10**20},
        {"sync_threshold": 0},
    ):
        with pytest.raises(ValueError):
            matcher.update_config(**changes)
        assert matcher.config.to_dict() == before
    matcher.update_config(sync_threshold=5, sync_interval_seconds=7)
    assert (matcher.config.sync_threshold, matcher.config.sync_interval_seconds) == (5, 7)


@pytest.mark.parametrize("seconds", [1e19, 1e300, math.inf, math.nan, -1.0, 10**400])
def test_last_sync_time_out_of_range_is_a_value_error(seconds) -> None:
    matcher = make()
    before = matcher.last_sync_time
    with pytest.raises(ValueError):
        matcher.last_sync_time = seconds
    assert matcher.last_sync_time == before


# ------------------------------------------------------------------------ queries


def test_candidates_rounding_and_limit_inside_the_query() -> None:
    patterns = {f"p{k:02d}": [["a", "b", "c"][: 1 + k % 3], ["x"] * (k % 4)] for k in range(40)}
    matcher = make("lcs")
    for name, events in patterns.items():
        matcher.add_new_pattern(name, events)
    state = ["a", "b", "x"]
    flat = {name: [s for e in events for s in e] for name, events in patterns.items()}
    candidates = [name for name in flat if int(name[1:]) % 3 != 0] + ["unknown"]
    allowed = {name: flat[name] for name in candidates if name in flat}
    expected = brute_force(allowed, state, "lcs", False, 0.3, 7)
    got = matcher.match_predictions(state, 0.3, 7, candidates=candidates)
    assert [(p[0], p[7]) for p in got] == [(e["pattern_name"], e["similarity"]) for e in expected]
    rounded = matcher.match_predictions(state, 0.3, None, candidates=candidates, kato_rounding=True)
    oracle = sorted(
        (
            (n, (s["similarity"] * 100.0) / 100.0)
            for n, s in ((e["pattern_name"], e) for e in brute_force(allowed, state, "lcs", False, 0.0, None))
        ),
        key=lambda ns: (-ns[1], ns[0]),
    )
    assert [(p[0], p[7]) for p in rounded] == [ns for ns in oracle if ns[1] >= 0.3]


def test_predictions_see_one_snapshot_while_patterns_are_removed() -> None:
    """Used to fail in 56% of calls under churn: `a matched pattern was removed before its
    prediction was built`."""
    matcher = make()
    names = [f"p{k:04d}" for k in range(400)]
    matcher.add_patterns(names, [[["a", "b"], [f"s{k % 9}"]] for k in range(400)])
    stop = threading.Event()
    errors = []

    def churn() -> None:
        k = 0
        while not stop.is_set():
            name = names[k % len(names)]
            matcher.remove_pattern(name)
            matcher.add_new_pattern(name, [["a", "b"], [f"s{k % 9}"]])
            k += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(200):
            for prediction in matcher.match_predictions(["a", "b", "s1"], 0.2):
                assert prediction[1][:2] == ["a", "b"]
    except Exception as exc:  # pragma: no cover - reported below
        errors.append(exc)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors


# ------------------------------------------------------------------ the options


@pytest.mark.parametrize(
    "field",
    ["force_max_patterns", "max_pattern_length", "sync_threshold", "sync_interval_seconds", "threads_per_block"],
)
def test_out_of_range_config_ints_are_value_errors(field) -> None:
    with pytest.raises(ValueError, match=field):
        make(**{field: 2**64})


def test_patterns_cache_and_kernel_hints_are_deprecated() -> None:
    encoder = SymbolVocabularyEncoder(None)
    with pytest.warns(DeprecationWarning, match="patterns_cache"):
        HybridGPUMatcher(encoder, GPUConfig(enabled=False), patterns_cache={})
    for field in ("use_shared_memory", "enable_early_termination"):
        with pytest.warns(DeprecationWarning, match=field):
            GPUConfig(**{field: False})


def test_build_from_patterns_fetches_batch_size_documents_per_round_trip() -> None:
    class Cursor:
        def __init__(self, docs):
            self.docs, self.sizes = docs, []

        def batch_size(self, size):
            self.sizes.append(size)
            return self

        def __iter__(self):
            return iter(self.docs)

    class Patterns:
        def __init__(self):
            self.cursor = Cursor([{"pattern_data": [["b", "a"]]}, {"pattern_data": [["c"]]}])

        def find(self):
            return self.cursor

    patterns = Patterns()
    encoder = SymbolVocabularyEncoder(None)
    encoder.build_from_patterns(patterns, batch_size=37)
    assert patterns.cursor.sizes == [37]
    assert encoder.symbol_to_id == {"a": 0, "b": 1, "c": 2}
    for bad, error in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error):
            encoder.build_from_patterns(patterns, batch_size=bad)


LOGGING_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder
matcher = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(enabled=False, log_memory_usage={flag}))
matcher.add_new_pattern("p", [["a", "b"]])
matcher.sync_cpu_to_gpu()
matcher.update_config(log_memory_usage={flip})
matcher.add_new_pattern("q", [["c"]])
matcher.sync_cpu_to_gpu()
"""


@pytest.mark.parametrize("flag", [True, False])
def test_log_memory_usage_logs_after_each_promotion(flag) -> None:
    # A fresh interpreter: Rust log records reach Python's logging through pyo3-log, which caches
    # each logger's level on first use.
    import subprocess
    import sys

    code = LOGGING_SCRIPT.format(flag=flag, flip=not flag)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [line for line in proc.stdout.splitlines() if "after promotion" in line]
    # Logged for the promotion made while the option was on, and only that one.
    assert len(records) == 1, proc.stdout
    expected_patterns = "1 patterns" if flag else "2 patterns"
    assert expected_patterns in records[0] and "bytes in host memory" in records[0], records


def test_a_failed_store_write_leaves_matcher_and_vocabulary_as_they_were() -> None:
    class FailingCollection:
        """A collection whose writes fail while ``down`` is set."""

        def __init__(self) -> None:
            self.doc = None
            self.down = False

        def find_one(self, query):
            return self.doc

        def update_one(self, query, update, upsert=False):
            if self.down:
                raise ConnectionError("database down")
            self.doc = self.doc or {"class": "gpu_vocabulary", "symbol_to_id": {}, "id_to_symbol": {}}
            for field, value in update["$set"].items():
                *parents, leaf = field.split(".")
                target = self.doc
                for parent in parents:
                    target = target.setdefault(parent, {})
                target[leaf] = value

    collection = FailingCollection()
    matcher = make(store=collection)
    matcher.add_new_pattern("p", [["a", "b"]])
    collection.down = True
    with pytest.raises(ConnectionError, match="database down"):
        matcher.add_new_pattern("q", [["a", "new"]])
    with pytest.raises(ConnectionError):
        matcher.add_patterns(["r", "s"], [[["x"]], [["y"]]])
    assert len(matcher) == 1 and "q" not in matcher
    assert dict(matcher.encoder.symbol_to_id) == {"a": 0, "b": 1}
    # Known symbols need no write: learning goes on while the store is down.
    assert matcher.add_new_pattern("t", [["b", "a"]])
    collection.down = False
    assert matcher.add_new_pattern("q", [["a", "new"]])
    assert matcher.encoder.symbol_to_id["new"] == 2  # no id was burnt by the failed write
    assert dict(SymbolVocabularyEncoder(collection).symbol_to_id) == {"a": 0, "b": 1, "new": 2}


def test_matchers_sharing_an_encoder_share_its_ids() -> None:
    encoder = SymbolVocabularyEncoder(None)
    difflib_matcher = HybridGPUMatcher(encoder, GPUConfig(enabled=False))
    lcs_matcher = HybridGPUMatcher(encoder, GPUConfig(enabled=False, metric="lcs"))
    difflib_matcher.add_new_pattern("p", [["a", "b"]])
    lcs_matcher.add_new_pattern("q", [["b", "c"]])
    assert dict(encoder.symbol_to_id) == {"a": 0, "b": 1, "c": 2}
    assert difflib_matcher.match_patterns(["b", "c"], 0.1) == [{"pattern_name": "p", "similarity": 0.5}]
    assert lcs_matcher.match_patterns(["a", "b"], 0.1) == [{"pattern_name": "q", "similarity": 0.5}]
    with pytest.raises(ValueError, match="2 patterns"):
        encoder.clear()
