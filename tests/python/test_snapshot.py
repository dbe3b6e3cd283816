"""Snapshots: ``HybridGPUMatcher.save`` / ``HybridGPUMatcher.load``.

A loaded matcher must answer every query exactly as the saved one did (names and similarities
compared with ``==``), hold the same patterns in the same tiers over the same vocabulary ids, and
a damaged file must be refused with a ``ValueError`` naming the problem."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path

import pytest

from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder


def build(rng: random.Random, metric: str, autojunk: bool = False, wide: bool = False) -> HybridGPUMatcher:
    """A matcher with both tiers populated and removed patterns, over a small alphabet, or one
    with ids past 65,535 when ``wide``."""
    encoder = SymbolVocabularyEncoder(None)
    if wide:
        encoder.encode_ids([f"filler{i}" for i in range(66_000)])
    alphabet = [f"s{i}" for i in range(30)]
    matcher = HybridGPUMatcher(encoder, GPUConfig(metric=metric, autojunk=autojunk, device="cpu"))
    names = []
    for k in range(400):
        events = [rng.sample(alphabet, rng.randint(0, 4)) for _ in range(rng.randint(1, 4))]
        name = f"PTRN|{rng.getrandbits(40):010x}|{k}"
        assert matcher.add_pattern_events(name, events)
        names.append(name)
        if k == 250:
            assert matcher.sync_cpu_to_gpu() > 0
        if k % 9 == 4:
            assert matcher.remove_pattern(rng.choice(names[: k + 1]) if rng.random() < 0.5 else name)
            names = [n for n in names if n in matcher]
    bulk, recent = matcher._tiers()
    assert bulk > 0 and recent > 0
    return matcher


def outcome(call):
    try:
        return ("ok", call())
    except Exception as err:  # noqa: BLE001 - both matchers must fail alike
        return ("error", type(err).__name__, str(err))


def hexes(values):
    return [float(v).hex() for v in values]


def answers(matcher: HybridGPUMatcher, state, threshold, limit, candidates):
    arrays = matcher.match_patterns_arrays(state, threshold, limit)
    return [
        matcher.match_patterns(state, threshold, limit),
        (arrays.names, hexes(arrays.similarities)),
        [(r.names, hexes(r.similarities)) for r in matcher.match_patterns_batch_arrays([state, state[:1]], threshold)],
        outcome(lambda: matcher.match_predictions(state, threshold, limit)),
        outcome(lambda: matcher.match_predictions(state, threshold, limit, candidates=candidates, kato_rounding=True)),
        outcome(lambda: matcher.kato_ranked_predictions(state, threshold, 10)),
        outcome(lambda: matcher.kato_ranked_predictions(state, threshold, 10, rounded=False)),
        outcome(lambda: matcher.kato_single_symbol_predictions(state[0], 5) if state else None),
        outcome(lambda: matcher.kato_first_symbol_symbols(state[0]) if state else None),
        outcome(lambda: matcher.kato_filter_candidates(state, [("length", 0.5, None)])),
    ]


def assert_same(a: HybridGPUMatcher, b: HybridGPUMatcher, rng: random.Random, queries: int = 60) -> None:
    assert (a.metric, a.config.autojunk) == (b.metric, b.config.autojunk)
    assert a._tiers() == b._tiers()
    assert a.pattern_names() == b.pattern_names()
    assert [a.pattern_events(n) for n in a.pattern_names()] == [b.pattern_events(n) for n in b.pattern_names()]
    assert a.encoder.next_id == b.encoder.next_id
    assert a.encoder.symbol_to_id.items() == b.encoder.symbol_to_id.items()
    alphabet = [f"s{i}" for i in range(32)]  # s30, s31: unknown to both
    names = a.pattern_names()
    for _ in range(queries):
        state = [rng.choice(alphabet) for _ in range(rng.randint(0, 8))]
        threshold = rng.choice([0.0, 0.1, 0.3, 0.6])
        limit = rng.choice([None, 1, 5, 100])
        candidates = rng.sample(names, min(len(names), 20))
        assert answers(a, state, threshold, limit, candidates) == answers(b, state, threshold, limit, candidates)


@pytest.mark.parametrize("metric,autojunk", [("lcs", False), ("difflib", False), ("difflib", True)])
@pytest.mark.parametrize("wide", [False, True])
def test_round_trip_answers_every_query_alike(tmp_path, metric, autojunk, wide):
    rng = random.Random(hash((metric, autojunk, wide)) & 0xFFFF)
    original = build(rng, metric, autojunk, wide)
    path = tmp_path / "m.snap"
    original.save(path)
    assert os.listdir(tmp_path) == ["m.snap"]  # no temporary file left behind
    loaded = HybridGPUMatcher.load(path)
    assert loaded.config.max_pattern_length == original.config.max_pattern_length
    assert_same(original, loaded, rng)
    # The loaded matcher learns and saves on as any other (a str path too).
    loaded.add_pattern_events("new", [["s1", "s2"]])
    loaded.save(str(path))
    again = HybridGPUMatcher.load(str(path), GPUConfig(metric=metric, autojunk=autojunk, device="cpu"))
    assert_same(loaded, again, rng, queries=10)


def test_empty_matcher_round_trips(tmp_path):
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric="lcs", max_pattern_length=7))
    matcher.save(tmp_path / "e.snap")
    loaded = HybridGPUMatcher.load(tmp_path / "e.snap")
    assert len(loaded) == 0 and loaded._tiers() == (0, 0) and loaded.encoder.vocab_size == 0
    assert loaded.config.max_pattern_length == 7 and loaded.metric == "lcs"


def test_config_must_match_the_snapshot_metric(tmp_path):
    matcher = build(random.Random(1), "lcs")
    matcher.save(tmp_path / "m.snap")
    with pytest.raises(ValueError, match="metric='lcs'"):
        HybridGPUMatcher.load(tmp_path / "m.snap", GPUConfig(metric="difflib"))
    with pytest.raises(TypeError):
        HybridGPUMatcher.load(tmp_path / "m.snap", {"metric": "lcs"})


@pytest.fixture
def saved(tmp_path):
    matcher = build(random.Random(2), "difflib")
    path = tmp_path / "m.snap"
    matcher.save(path)
    return matcher, path, path.read_bytes()


def test_damaged_files_are_refused(tmp_path, saved):
    matcher, path, good = saved
    bad = tmp_path / "bad.snap"
    rng = random.Random(3)
    for at in [0, 8, 20, 40, 63, 64, len(good) // 2, len(good) - 1] + rng.sample(range(len(good)), 40):
        data = bytearray(good)
        data[at] ^= 0x01
        bad.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="invalid snapshot"):
            HybridGPUMatcher.load(bad)
    for length in [0, 7, 63, 64, 1000, len(good) - 1]:
        bad.write_bytes(good[:length])
        with pytest.raises(ValueError, match="truncated"):
            HybridGPUMatcher.load(bad)
    bad.write_bytes(good + b"\0")
    with pytest.raises(ValueError, match="more than"):
        HybridGPUMatcher.load(bad)
    data = bytearray(good)
    data[8:12] = (3).to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="format version 3 is not supported"):
        HybridGPUMatcher.load(bad)
    bad.write_bytes(b"PK\x03\x04" + good[4:])
    with pytest.raises(ValueError, match="magic"):
        HybridGPUMatcher.load(bad)
    with pytest.raises(FileNotFoundError):
        HybridGPUMatcher.load(tmp_path / "missing.snap")
    # The good file and the saved matcher are untouched by all of it.
    assert path.read_bytes() == good
    assert_same(matcher, HybridGPUMatcher.load(path), rng, queries=5)


def test_saves_format_2_with_a_checksum_per_block(saved):
    _, _, good = saved
    assert good[:8] == b"KATOSNAP" and int.from_bytes(good[8:12], "little") == 2
    header = json.loads(good[int.from_bytes(good[16:24], "little") :])
    assert header["checksum_block"] == 1 << 20
    for section in header["sections"]:
        assert "checksum" not in section
        assert len(section["blocks"]) == -(-section["length"] // (1 << 20))


V1 = Path(__file__).parent / "data" / "snapshot_v1.snap"


def test_version_1_file_loads(tmp_path):
    """A file written by format version 1 (kept in tests/python/data with what it held) loads as
    it was saved, and is saved on in version 2; a damaged one is refused."""
    expected = json.loads(V1.with_suffix(".json").read_text())
    loaded = HybridGPUMatcher.load(V1)
    assert list(loaded._tiers()) == expected["tiers"] and loaded.encoder.next_id == expected["next_id"]
    assert loaded.pattern_names() == list(expected["patterns"])
    for name, events in expected["patterns"].items():
        assert loaded.pattern_events(name) == [e.split(" ") if e else [] for e in events.split("|")]
    for q in expected["queries"]:
        result = loaded.match_patterns_arrays(q["state"], 0.1, None)
        assert (result.names, hexes(result.similarities)) == (q["names"], q["similarities"])
    loaded.save(tmp_path / "v2.snap")
    assert (tmp_path / "v2.snap").read_bytes()[8] == 2
    assert_same(loaded, HybridGPUMatcher.load(tmp_path / "v2.snap"), random.Random(4))
    good = V1.read_bytes()
    bad = tmp_path / "bad_v1.snap"
    for at in random.Random(5).sample(range(64, len(good)), 30):
        data = bytearray(good)
        data[at] ^= 0x04
        bad.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="invalid snapshot"):
            HybridGPUMatcher.load(bad)


def test_failed_save_changes_nothing(tmp_path, saved):
    matcher, path, good = saved
    with pytest.raises(OSError):
        matcher.save(tmp_path / "no such dir" / "m.snap")
    with pytest.raises(TypeError):
        matcher.save(3)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["m.snap"]


def test_save_replaces_the_old_snapshot(tmp_path, saved):
    matcher, path, good = saved
    matcher.remove_pattern(matcher.pattern_names()[0])
    matcher.save(path)
    assert path.read_bytes() != good
    assert HybridGPUMatcher.load(path).pattern_names() == matcher.pattern_names()
    assert sorted(os.listdir(tmp_path)) == ["m.snap"]


def test_snapshot_while_learning_and_querying_is_one_point_in_time(tmp_path):
    """One thread learns p0, p1, ... in order (new symbols each time), another queries; every
    snapshot taken meanwhile holds a prefix of the learned sequence, with every symbol its
    patterns use."""
    encoder = SymbolVocabularyEncoder(None)
    matcher = HybridGPUMatcher(encoder, GPUConfig(metric="lcs", device="cpu", sync_threshold=50))
    stop = threading.Event()
    errors = []

    def learn():
        try:
            k = 0
            while not stop.is_set() and k < 20_000:
                matcher.add_pattern_events(f"p{k}", [[f"a{k}", "b"], [f"c{k % 7}"]])
                if k % 97 == 0:
                    matcher.sync_cpu_to_gpu()
                k += 1
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def query():
        try:
            while not stop.is_set():
                matcher.match_patterns(["b", "c3"], 0.1, 5)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=learn), threading.Thread(target=query)]
    for t in threads:
        t.start()
    sizes = []
    try:
        for i in range(8):
            path = tmp_path / f"s{i}.snap"
            matcher.save(path)
            loaded = HybridGPUMatcher.load(path)
            names = loaded.pattern_names()
            assert names == [f"p{k}" for k in range(len(names))]
            for k in range(len(names)):
                assert loaded.pattern_events(f"p{k}") == [[f"a{k}", "b"], [f"c{k % 7}"]]
            assert sum(loaded._tiers()) == len(names)
            sizes.append(len(names))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert sizes == sorted(sizes)
