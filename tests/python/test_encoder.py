"""Tests for kato_gpu.encoder.SymbolVocabularyEncoder.

Covers the behaviours KATO's own encoder tests check (run against every store
kind: memory, a hand-written fake collection, mongomock and the JSON file
store) plus kato_gpu's guarantees: one store write per call, input validated
before any change, rollback on store failure, corrupt-store detection, thread
safety and crash safety of the file store.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import mongomock
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kato_gpu.encoder as encoder_module
from kato_gpu.encoder import MAX_SYMBOL_ID, SymbolVocabularyEncoder

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------
# Test doubles and backends
# --------------------------------------------------------------------------


class FakeCollection:
    """Dict-backed stand-in for a MongoDB collection that counts writes."""

    def __init__(self) -> None:
        self.docs: Dict[str, Dict[str, Any]] = {}
        self.writes = 0
        self.calls: List[tuple] = []
        self.fail_with: Optional[BaseException] = None

    def find_one(self, query: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        doc = self.docs.get(query["class"])
        return copy.deepcopy(doc)

    def update_one(self, query: Dict[str, Any], update: Dict[str, Any], upsert: bool = False) -> None:
        self.calls.append((copy.deepcopy(query), copy.deepcopy(update), upsert))
        if self.fail_with is not None:
            raise self.fail_with
        self.writes += 1
        key = query["class"]
        if key not in self.docs:
            assert upsert, "vocabulary write must upsert"
            self.docs[key] = {"class": key}
        # Deep copy: a real database serialises, so later mutation of the
        # caller's dicts must not show up in the stored document. A dotted key
        # names a nested field, as in MongoDB.
        for field, value in copy.deepcopy(update["$set"]).items():
            *parents, leaf = field.split(".")
            target = self.docs[key]
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value


class CountingCollection:
    """Wraps a mongomock collection, counting update_one calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def find_one(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.find_one(*args, **kwargs)

    def update_one(self, *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        return self.inner.update_one(*args, **kwargs)


class FindOnlyPatterns:
    """A patterns collection without aggregate(): exercises the fallback path."""

    def __init__(self, docs: List[Dict[str, Any]]) -> None:
        self._docs = docs

    def find(self) -> List[Dict[str, Any]]:
        return [copy.deepcopy(d) for d in self._docs]


def state_doc(enc: SymbolVocabularyEncoder) -> Dict[str, Any]:
    """What the store should hold for ``enc``'s current in-memory state."""
    return {
        "symbol_to_id": dict(enc.symbol_to_id),
        "id_to_symbol": {str(k): v for k, v in enc.id_to_symbol.items()},
        "vocab_size": len(enc.symbol_to_id),
        "next_id": enc.next_id,
    }


def snapshot(enc: SymbolVocabularyEncoder) -> tuple:
    return (dict(enc.symbol_to_id), dict(enc.id_to_symbol), enc.next_id, enc.vocab_size)


class Backend:
    name = "memory"
    persistent = False

    def open(self) -> SymbolVocabularyEncoder:
        return SymbolVocabularyEncoder()

    def writes(self) -> int:
        return 0

    def stored(self) -> Optional[Dict[str, Any]]:
        return None


class FakeBackend(Backend):
    name = "fake"
    persistent = True

    def __init__(self) -> None:
        self.collection = FakeCollection()

    def open(self) -> SymbolVocabularyEncoder:
        return SymbolVocabularyEncoder(self.collection)

    def writes(self) -> int:
        return self.collection.writes

    def stored(self) -> Optional[Dict[str, Any]]:
        doc = self.collection.find_one({"class": "gpu_vocabulary"})
        if doc is None:
            return None
        return {k: doc[k] for k in ("symbol_to_id", "id_to_symbol", "vocab_size", "next_id")}


class MongomockBackend(Backend):
    name = "mongomock"
    persistent = True

    def __init__(self) -> None:
        self.collection = CountingCollection(mongomock.MongoClient().kato.metadata)

    def open(self) -> SymbolVocabularyEncoder:
        return SymbolVocabularyEncoder(self.collection)

    def writes(self) -> int:
        return self.collection.writes

    def stored(self) -> Optional[Dict[str, Any]]:
        doc = self.collection.inner.find_one({"class": "gpu_vocabulary"})
        if doc is None:
            return None
        return {k: doc[k] for k in ("symbol_to_id", "id_to_symbol", "vocab_size", "next_id")}


def read_file_store(path: Path) -> Optional[Dict[str, Any]]:
    """The vocabulary a file store holds, read independently of kato_gpu: the JSON snapshot at
    ``path`` (KATO's layout) plus the symbols appended to ``<path>.log`` since: after a header line
    naming the snapshot, per append a ``{"batch": n}`` line and one JSON line per symbol."""
    log = path.with_name(path.name + ".log")
    if not path.exists() and not (log.exists() and log.stat().st_size):
        return None
    doc = {"symbol_to_id": {}, "id_to_symbol": {}, "vocab_size": 0, "next_id": 0}
    if path.exists():
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert doc.pop("class") == "gpu_vocabulary"
    if log.exists():
        lines = log.read_text(encoding="utf-8").splitlines()
        for line in lines[1:]:
            entry = json.loads(line)
            if "batch" in entry:
                continue
            assert entry["id"] == doc["next_id"]
            doc["symbol_to_id"][entry["symbol"]] = entry["id"]
            doc["id_to_symbol"][str(entry["id"])] = entry["symbol"]
            doc["next_id"] += 1
            doc["vocab_size"] += 1
    return doc


class FileBackend(Backend):
    """A file store. One encoder holds a vocabulary file at a time (a lock), so opening another
    closes the previous one. Writes are counted by watching the files change: an append grows
    the log, a rewrite replaces the snapshot."""

    name = "file"
    persistent = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: Optional[SymbolVocabularyEncoder] = None
        self.count = 0
        self.seen = self._state()

    def _state(self) -> tuple:
        log = self.path.with_name(self.path.name + ".log")
        snapshot = self.path.stat() if self.path.exists() else None
        return (
            (snapshot.st_ino, snapshot.st_mtime_ns) if snapshot else None,
            log.stat().st_size if log.exists() else 0,
        )

    def open(self) -> SymbolVocabularyEncoder:
        self.writes()
        if self.current is not None:
            self.current.close()
        self.current = SymbolVocabularyEncoder(self.path)
        return self.current

    def writes(self) -> int:
        state = self._state()
        if state != self.seen:
            self.count += 1
            self.seen = state
        return self.count

    def stored(self) -> Optional[Dict[str, Any]]:
        return read_file_store(self.path)


@pytest.fixture(params=["memory", "fake", "mongomock", "file"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "memory":
        return Backend()
    if request.param == "fake":
        return FakeBackend()
    if request.param == "mongomock":
        return MongomockBackend()
    return FileBackend(tmp_path / "vocab.json")


@pytest.fixture(params=["fake", "mongomock", "file"])
def pbackend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """Persistent backends only."""
    if request.param == "fake":
        return FakeBackend()
    if request.param == "mongomock":
        return MongomockBackend()
    return FileBackend(tmp_path / "vocab.json")


@pytest.fixture
def encoder(backend: Backend) -> SymbolVocabularyEncoder:
    return backend.open()


def random_patterns(count: int, seed: int) -> List[List[List[str]]]:
    rng = random.Random(seed)
    vocab = [f"sym{i}" for i in range(100)] + [f"VCTR|{i:04x}" for i in range(50)]
    patterns = []
    for _ in range(count):
        pattern = []
        for _ in range(rng.randint(2, 5)):
            pattern.append(sorted(rng.sample(vocab, rng.randint(3, 10))))
        patterns.append(pattern)
    return patterns


# --------------------------------------------------------------------------
# KATO behaviours: basic encoding / decoding
# --------------------------------------------------------------------------


class TestBasics:
    def test_single_symbol(self, encoder: SymbolVocabularyEncoder) -> None:
        symbol_id = encoder.encode_symbol("test_symbol")
        assert type(symbol_id) is int
        assert symbol_id == 0
        assert encoder.vocab_size == 1
        assert encoder.decode_symbol(symbol_id) == "test_symbol"

    def test_same_symbol_same_id(self, encoder: SymbolVocabularyEncoder) -> None:
        ids = {encoder.encode_symbol("test") for _ in range(3)}
        assert ids == {0}
        assert encoder.vocab_size == 1

    def test_distinct_symbols_sequential_ids(self, encoder: SymbolVocabularyEncoder) -> None:
        ids = [encoder.encode_symbol(f"sym{i}") for i in range(10)]
        assert ids == list(range(10))
        assert encoder.next_id == 10
        assert encoder.id_to_symbol == {i: f"sym{i}" for i in range(10)}
        assert encoder.symbol_to_id == {f"sym{i}": i for i in range(10)}

    def test_encode_sequence(self, encoder: SymbolVocabularyEncoder) -> None:
        encoded = encoder.encode_sequence(["z", "a", "m", "b", "a"])
        assert isinstance(encoded, np.ndarray)
        assert encoded.dtype == np.int32
        assert encoded.tolist() == [0, 1, 2, 3, 1]
        assert encoder.decode_sequence(encoded) == ["z", "a", "m", "b", "a"]

    def test_empty_sequence(self, encoder: SymbolVocabularyEncoder) -> None:
        encoded = encoder.encode_sequence([])
        assert encoded.dtype == np.int32
        assert encoded.shape == (0,)
        assert encoder.decode_sequence(np.array([], dtype=np.int32)) == []
        assert encoder.vocab_size == 0

    def test_encode_ids_returns_plain_ints(self, encoder: SymbolVocabularyEncoder) -> None:
        ids = encoder.encode_ids(["x", "y", "x"])
        assert ids == [0, 1, 0]
        assert all(type(i) is int for i in ids)

    def test_numpy_str_symbols_stored_as_str(self, encoder: SymbolVocabularyEncoder) -> None:
        ids = encoder.encode_ids(np.array(["p", "q"]))
        assert ids == [0, 1]
        assert all(type(s) is str for s in encoder.symbol_to_id)

    def test_empty_string_is_a_symbol(self, encoder: SymbolVocabularyEncoder) -> None:
        ids = encoder.encode_ids(["", "a", ""])
        assert ids == [0, 1, 0]
        # KATO drops "" when decoding; kato_gpu keeps it so round trips hold.
        assert encoder.decode_sequence(ids) == ["", "a", ""]


class TestPadding:
    def test_trailing_padding(self, encoder: SymbolVocabularyEncoder) -> None:
        encoded = encoder.encode_sequence(["a", "b", "c"])
        padded = np.pad(encoded, (0, 5), constant_values=-1)
        assert padded[-1] == -1
        assert encoder.decode_sequence(padded) == ["a", "b", "c"]

    def test_leading_padding(self, encoder: SymbolVocabularyEncoder) -> None:
        encoded = encoder.encode_sequence(["a", "b"])
        padded = np.concatenate([np.full(2, -1, dtype=np.int32), encoded])
        assert encoder.decode_sequence(padded) == ["a", "b"]

    def test_padding_in_middle(self, encoder: SymbolVocabularyEncoder) -> None:
        first = encoder.encode_sequence(["a", "b"])
        second = encoder.encode_sequence(["c", "d"])
        padded = np.concatenate([first, np.full(3, -1, dtype=np.int32), second])
        assert encoder.decode_sequence(padded) == ["a", "b", "c", "d"]

    def test_other_negative_ids_skipped(self, encoder: SymbolVocabularyEncoder) -> None:
        encoder.encode_ids(["a"])
        assert encoder.decode_sequence([-7, 0, -(2**31)]) == ["a"]


class TestSpecialSymbols:
    @pytest.mark.parametrize(
        "symbol",
        [
            "hello|world",
            "VCTR|abc123",
            "sym_with_underscore",
            "sym-with-dash",
            "sym.with.dots",
            "sym123",
            "test456",
            "v1.2.3",
            "$dollar",
            "naïve",
            "日本語",
            "🙂",
            "tab\there",
            "nul\x00x",
            " ",
        ],
    )
    def test_round_trip(self, encoder: SymbolVocabularyEncoder, symbol: str) -> None:
        symbol_id = encoder.encode_symbol(symbol)
        assert encoder.decode_symbol(symbol_id) == symbol

    def test_special_symbols_persist(self, pbackend: Backend) -> None:
        symbols = ["hello|world", "sym.with.dots", "$dollar", "naïve", "日本語", "🙂", "", "nul\x00x"]
        first = pbackend.open()
        ids = first.encode_ids(symbols)
        second = pbackend.open()
        assert second.lookup_ids(symbols) == ids
        assert second.decode_sequence(ids) == symbols


class TestLargeVocabulary:
    def test_thousand_symbols(self, encoder: SymbolVocabularyEncoder) -> None:
        symbols = [f"sym{i}" for i in range(700)] + [f"VCTR|{i:04x}" for i in range(300)]
        for symbol in symbols:
            encoder.encode_symbol(symbol)
        assert encoder.vocab_size == 1000
        ids = [encoder.encode_symbol(s) for s in symbols]
        assert ids == list(range(1000))

    def test_large_sequence_round_trip(self, encoder: SymbolVocabularyEncoder) -> None:
        symbols = [f"s{i}" for i in range(500)]
        encoded = encoder.encode_sequence(symbols)
        assert encoded.tolist() == list(range(500))
        assert encoder.decode_sequence(encoded) == symbols


class TestPatterns:
    def test_encode_pattern(self, encoder: SymbolVocabularyEncoder) -> None:
        pattern = [["a", "b"], ["c", "d"], ["e", "f"]]
        encoded = encoder.encode_pattern(pattern)
        assert len(encoded) == 3
        assert all(isinstance(e, np.ndarray) and e.dtype == np.int32 for e in encoded)
        assert [e.tolist() for e in encoded] == [[0, 1], [2, 3], [4, 5]]
        assert encoder.decode_pattern(encoded) == pattern

    def test_empty_events(self, encoder: SymbolVocabularyEncoder) -> None:
        encoded = encoder.encode_pattern([[], ["a"], []])
        assert [e.tolist() for e in encoded] == [[], [0], []]
        assert all(e.dtype == np.int32 for e in encoded)
        assert encoder.encode_pattern([]) == []

    def test_random_patterns(self, encoder: SymbolVocabularyEncoder) -> None:
        for pattern in random_patterns(5, seed=42):
            assert encoder.decode_pattern(encoder.encode_pattern(pattern)) == pattern


class TestClearStatsRepr:
    def test_clear(self, encoder: SymbolVocabularyEncoder) -> None:
        encoder.encode_ids(["t1", "t2", "t3"])
        assert encoder.vocab_size == 3
        encoder.clear()
        assert encoder.vocab_size == 0
        assert encoder.symbol_to_id == {}
        assert encoder.id_to_symbol == {}
        assert encoder.next_id == 0
        assert encoder.encode_symbol("new") == 0

    def test_clear_persists(self, pbackend: Backend) -> None:
        first = pbackend.open()
        first.encode_ids(["t1", "t2"])
        first.clear()
        assert pbackend.open().vocab_size == 0
        assert pbackend.stored() == {"symbol_to_id": {}, "id_to_symbol": {}, "vocab_size": 0, "next_id": 0}

    def test_decode_unknown(self, encoder: SymbolVocabularyEncoder) -> None:
        assert encoder.decode_symbol(999) is None
        encoder.encode_ids(["a", "b"])
        assert encoder.decode_sequence(np.array([0, 1, 999, 1000], dtype=np.int32)) == ["a", "b"]

    def test_stats(self, encoder: SymbolVocabularyEncoder) -> None:
        encoder.encode_ids(["t1", "t2"])
        stats = encoder.get_stats()
        assert stats["vocab_size"] == 2
        assert stats["next_id"] == 2
        assert isinstance(stats["memory_usage_bytes"], int) and stats["memory_usage_bytes"] > 0

    def test_repr(self, encoder: SymbolVocabularyEncoder) -> None:
        encoder.encode_symbol("test")
        assert repr(encoder) == "SymbolVocabularyEncoder(vocab_size=1)"


# --------------------------------------------------------------------------
# Persistence and store shape
# --------------------------------------------------------------------------


class TestPersistence:
    def test_across_instances(self, pbackend: Backend) -> None:
        first = pbackend.open()
        ids = [first.encode_symbol(s) for s in ("symbol1", "symbol2", "symbol3")]
        second = pbackend.open()
        assert second.vocab_size == 3
        assert [second.encode_symbol(s) for s in ("symbol1", "symbol2", "symbol3")] == ids
        assert second.next_id == 3

    def test_new_symbols_accumulate(self, pbackend: Backend) -> None:
        pbackend.open().encode_symbol("initial")
        second = pbackend.open()
        assert second.encode_symbol("new_symbol") == 1
        third = pbackend.open()
        assert third.symbol_to_id == {"initial": 0, "new_symbol": 1}
        assert third.id_to_symbol == {0: "initial", 1: "new_symbol"}

    def test_stored_document_matches_state(self, pbackend: Backend) -> None:
        enc = pbackend.open()
        enc.encode_pattern([["b", "a"], ["c"]])
        enc.encode_ids(["d", "a"])
        assert pbackend.stored() == state_doc(enc)

    def test_update_one_call_shape(self) -> None:
        coll = FakeCollection()
        SymbolVocabularyEncoder(coll).encode_ids(["x", "y"])
        assert len(coll.calls) == 1
        query, update, upsert = coll.calls[0]
        assert query == {"class": "gpu_vocabulary"}
        assert upsert is True
        # Only the new entries, by dotted field path: the write does not grow with the vocabulary.
        assert update == {
            "$set": {
                "symbol_to_id.x": 0,
                "id_to_symbol.0": "x",
                "symbol_to_id.y": 1,
                "id_to_symbol.1": "y",
                "vocab_size": 2,
                "next_id": 2,
            }
        }

    def test_symbols_that_are_no_field_path_rewrite_the_document(self) -> None:
        coll = FakeCollection()
        enc = SymbolVocabularyEncoder(coll)
        enc.encode_ids(["x"])
        enc.encode_ids(["a.b", "y"])
        _, update, _ = coll.calls[-1]
        assert update == {
            "$set": {
                "symbol_to_id": {"x": 0, "a.b": 1, "y": 2},
                "id_to_symbol": {"0": "x", "1": "a.b", "2": "y"},
                "vocab_size": 3,
                "next_id": 3,
            }
        }
        assert SymbolVocabularyEncoder(coll).symbol_to_id == {"x": 0, "a.b": 1, "y": 2}

    def test_loads_kato_written_document(self) -> None:
        coll = FakeCollection()
        coll.docs["gpu_vocabulary"] = {
            "_id": "someid",
            "class": "gpu_vocabulary",
            "symbol_to_id": {"hello": 0, "world": 1},
            "id_to_symbol": {"0": "hello", "1": "world"},
            "vocab_size": 2,
            "next_id": 2,
        }
        enc = SymbolVocabularyEncoder(coll)
        assert enc.id_to_symbol == {0: "hello", 1: "world"}
        assert enc.encode_symbol("new") == 2
        assert coll.writes == 1

    def test_loaded_dicts_do_not_alias_store(self) -> None:
        doc = {"symbol_to_id": {"a": 0}, "id_to_symbol": {"0": "a"}, "vocab_size": 1, "next_id": 1}

        class AliasingCollection:
            def find_one(self, query: Any) -> Dict[str, Any]:
                return doc

            def update_one(self, *args: Any, **kwargs: Any) -> None:
                pass

        enc = SymbolVocabularyEncoder(AliasingCollection())
        enc.encode_symbol("b")
        assert doc["symbol_to_id"] == {"a": 0}

    def test_attributes(self, tmp_path: Path) -> None:
        coll = FakeCollection()
        enc = SymbolVocabularyEncoder(coll)
        assert enc.mongodb is coll and enc.store_path is None
        enc = SymbolVocabularyEncoder(str(tmp_path / "v.json"))
        assert enc.mongodb is None and enc.store_path == tmp_path / "v.json"
        enc = SymbolVocabularyEncoder()
        assert enc.mongodb is None and enc.store_path is None

    @pytest.mark.parametrize("bad", [42, 1.5, {"a": 1}, ["x"], b"/tmp/v.json", object()])
    def test_bad_store_type(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="store"):
            SymbolVocabularyEncoder(bad)

    def test_file_store_format(self, tmp_path: Path) -> None:
        path = tmp_path / "sub" / "dir" / "vocab.json"
        enc = SymbolVocabularyEncoder(path)
        assert not path.exists()  # no snapshot until a flush or a compaction
        enc.encode_ids(["α", ""])
        assert read_file_store(path) == {
            "symbol_to_id": {"α": 0, "": 1},
            "id_to_symbol": {"0": "α", "1": ""},
            "vocab_size": 2,
            "next_id": 2,
        }
        enc.flush()
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert doc == {
            "class": "gpu_vocabulary",
            "symbol_to_id": {"α": 0, "": 1},
            "id_to_symbol": {"0": "α", "1": ""},
            "vocab_size": 2,
            "next_id": 2,
        }
        assert sorted(p.name for p in path.parent.iterdir()) == ["vocab.json", "vocab.json.lock", "vocab.json.log"]

    def test_second_encoder_on_one_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "vocab.json"
        first = SymbolVocabularyEncoder(path)
        first.encode_ids(["a"])
        with pytest.raises(RuntimeError, match="vocab.json"):
            SymbolVocabularyEncoder(path)
        first.close()
        with pytest.raises(ValueError, match="closed"):
            first.encode_ids(["b"])
        assert first.lookup_ids(["a"]) == [0]  # still readable
        with SymbolVocabularyEncoder(path) as second:
            assert second.encode_ids(["a", "b"]) == [0, 1]
        assert SymbolVocabularyEncoder(path).symbol_to_id == {"a": 0, "b": 1}

    def test_second_process_on_one_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "vocab.json"
        holder = SymbolVocabularyEncoder(path)
        holder.encode_ids(["a"])
        code = "import sys\nfrom kato_gpu import SymbolVocabularyEncoder\nSymbolVocabularyEncoder(sys.argv[1])"
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "RuntimeError" in proc.stderr, proc.stderr
        holder.close()
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr

    def test_symlink_keeps_writing_through_the_link(self, tmp_path: Path) -> None:
        target = tmp_path / "real" / "vocab.json"
        target.parent.mkdir()
        link = tmp_path / "link.json"
        link.symlink_to(target)
        with SymbolVocabularyEncoder(link) as enc:
            enc.encode_ids(["a", "b"])
            enc.flush()
            enc.encode_ids(["c"])
        assert link.is_symlink()
        assert json.loads(target.read_text())["symbol_to_id"] == {"a": 0, "b": 1}
        assert SymbolVocabularyEncoder(target).symbol_to_id == {"a": 0, "b": 1, "c": 2}

    def test_flush(self, pbackend: Backend) -> None:
        enc = pbackend.open()
        assert pbackend.stored() is None
        enc.flush()
        assert pbackend.writes() == 1
        assert pbackend.stored() == {"symbol_to_id": {}, "id_to_symbol": {}, "vocab_size": 0, "next_id": 0}

    def test_flush_memory_is_noop(self) -> None:
        enc = SymbolVocabularyEncoder()
        enc.encode_ids(["a"])
        enc.flush()
        assert enc.symbol_to_id == {"a": 0}


# --------------------------------------------------------------------------
# Write counting and read-only lookups
# --------------------------------------------------------------------------


class TestWriteCounts:
    def test_one_write_per_growing_call(self, pbackend: Backend, tmp_path: Path) -> None:
        enc = pbackend.open()
        assert pbackend.writes() == 0

        enc.encode_sequence([f"s{i}" for i in range(500)])
        assert pbackend.writes() == 1
        enc.encode_sequence([f"s{i}" for i in range(500)])
        enc.encode_ids(["s1", "s2"])
        enc.encode_symbol("s3")
        enc.encode_pattern([["s4"], ["s5", "s6"]])
        enc.encode_sequence([])
        assert pbackend.writes() == 1

        enc.encode_symbol("new1")
        assert pbackend.writes() == 2
        enc.encode_ids(["s1", "new2", "new3", "new2"])
        assert pbackend.writes() == 3
        enc.encode_pattern([["p1", "p2"], ["s1"], ["p3", "p1"]])
        assert pbackend.writes() == 4

        patterns = mongomock.MongoClient().kato.patterns_kb
        patterns.insert_many([{"pattern_data": [["b1", "b2"], ["s1"]]}, {"pattern_data": [["b3"]]}])
        enc.build_from_patterns(patterns)
        assert pbackend.writes() == 5
        enc.build_from_patterns(patterns)
        assert pbackend.writes() == 5

        enc.lookup_ids(["s1", "nope", "other"])
        enc.decode_sequence([0, 1, 2])
        enc.decode_pattern([[0], [1]])
        enc.decode_symbol(3)
        enc.get_stats()
        assert pbackend.writes() == 5
        assert pbackend.stored() == state_doc(enc)

        enc.clear()
        assert pbackend.writes() == 6
        enc.clear()
        # A file store does not rewrite a snapshot that would come out byte for byte the same.
        assert pbackend.writes() == (6 if pbackend.name == "file" else 7)
        assert pbackend.stored() == state_doc(enc)

    def test_loading_does_not_write(self, pbackend: Backend) -> None:
        pbackend.open().encode_ids(["a", "b"])
        before = pbackend.writes()
        pbackend.open()
        pbackend.open()
        assert pbackend.writes() == before

    def test_lookup_ids_is_read_only(self, backend: Backend) -> None:
        enc = backend.open()
        enc.encode_ids(["a", "b"])
        before, writes = snapshot(enc), backend.writes()
        assert enc.lookup_ids(["b", "zzz", "a", "", "zzz"]) == [1, -1, 0, -1, -1]
        assert enc.lookup_ids([]) == []
        assert snapshot(enc) == before
        assert backend.writes() == writes
        assert backend.stored() == (state_doc(enc) if backend.persistent else None)


# --------------------------------------------------------------------------
# Bad input and failure atomicity
# --------------------------------------------------------------------------

BAD_CALLS: List[tuple] = [
    ("seq-None", lambda e: e.encode_sequence(["a", "new", None]), "NoneType"),
    ("seq-int", lambda e: e.encode_sequence(["new", 5]), "int"),
    ("seq-bytes", lambda e: e.encode_sequence(["new", b"x"]), "bytes"),
    ("seq-nested", lambda e: e.encode_sequence(["new", ["x"]]), "list"),
    ("seq-str", lambda e: e.encode_sequence("abc"), "str"),
    ("seq-not-iterable", lambda e: e.encode_sequence(7), "int"),
    ("seq-None-itself", lambda e: e.encode_sequence(None), "NoneType"),
    ("ids-float", lambda e: e.encode_ids(["new", 1.0]), "float"),
    ("symbol-None", lambda e: e.encode_symbol(None), "NoneType"),
    ("symbol-bytes", lambda e: e.encode_symbol(b"a"), "bytes"),
    ("symbol-int", lambda e: e.encode_symbol(3), "int"),
    ("pattern-int", lambda e: e.encode_pattern([["new1", "new2"], ["new3", 3]]), "int"),
    ("pattern-str-event", lambda e: e.encode_pattern([["new1"], "bc"]), "str"),
    ("pattern-nested", lambda e: e.encode_pattern([["new1"], [["x"]]]), "list"),
    ("pattern-None-event", lambda e: e.encode_pattern([["new1"], None]), "NoneType"),
    ("pattern-str", lambda e: e.encode_pattern("ab"), "str"),
    ("lookup-int", lambda e: e.lookup_ids(["a", 2]), "int"),
    ("lookup-str", lambda e: e.lookup_ids("a"), "str"),
]


class TestBadInput:
    @pytest.mark.parametrize("call,type_name", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
    def test_type_error_and_nothing_changes(self, pbackend: Backend, call: Callable, type_name: str) -> None:
        enc = pbackend.open()
        enc.encode_ids(["a", "b"])
        before, writes, stored = snapshot(enc), pbackend.writes(), pbackend.stored()
        with pytest.raises(TypeError) as info:
            call(enc)
        assert type_name in str(info.value)
        assert snapshot(enc) == before
        assert pbackend.writes() == writes
        assert pbackend.stored() == stored
        assert enc.encode_symbol("new") == 2  # no id was burnt

    def test_message_names_position(self) -> None:
        enc = SymbolVocabularyEncoder()
        with pytest.raises(TypeError, match=r"\[2\].*NoneType"):
            enc.encode_sequence(["a", "b", None])
        with pytest.raises(TypeError, match=r"pattern_data\[1\]\[0\].*int"):
            enc.encode_pattern([["a"], [7]])
        assert enc.vocab_size == 0

    def test_generator_input_accepted(self) -> None:
        enc = SymbolVocabularyEncoder()
        assert enc.encode_sequence(s for s in ["a", "b", "a"]).tolist() == [0, 1, 0]
        assert [e.tolist() for e in enc.encode_pattern(iter([iter(["b"]), ("c",)]))] == [[1], [2]]


class TestStoreFailure:
    @pytest.mark.parametrize(
        "call",
        [
            lambda e: e.encode_symbol("n1"),
            lambda e: e.encode_sequence(["a", "n1", "n2"]),
            lambda e: e.encode_ids(["n1"]),
            lambda e: e.encode_pattern([["n1"], ["a", "n2"]]),
            lambda e: e.build_from_patterns(FindOnlyPatterns([{"pattern_data": [["n1", "a"]]}])),
            lambda e: e.clear(),
            lambda e: e.flush(),
        ],
        ids=["symbol", "sequence", "ids", "pattern", "build", "clear", "flush"],
    )
    def test_collection_write_failure_rolls_back(self, call: Callable) -> None:
        coll = FakeCollection()
        enc = SymbolVocabularyEncoder(coll)
        enc.encode_ids(["a", "b"])
        before, stored = snapshot(enc), coll.find_one({"class": "gpu_vocabulary"})
        coll.fail_with = RuntimeError("database down")
        with pytest.raises(RuntimeError, match="database down"):
            call(enc)
        assert snapshot(enc) == before
        assert coll.find_one({"class": "gpu_vocabulary"}) == stored
        coll.fail_with = None
        assert enc.encode_ids(["n1", "n2"]) == [2, 3]
        assert SymbolVocabularyEncoder(coll).symbol_to_id == {"a": 0, "b": 1, "n1": 2, "n2": 3}

    def test_file_write_failure_rolls_back(self, tmp_path: Path) -> None:
        """A real write failure: the process's file-size limit (RLIMIT_FSIZE) makes the log's
        next append fail with EFBIG."""
        resource = pytest.importorskip("resource")
        path = tmp_path / "vocab.json"
        enc = SymbolVocabularyEncoder(path)
        enc.encode_ids(["a", "b"])
        stored = read_file_store(path)
        before = snapshot(enc)
        log_size = path.with_name("vocab.json.log").stat().st_size
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (log_size + 8, hard))
        try:
            with pytest.raises(OSError):
                enc.encode_ids(["c" * 100])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old_handler)
        assert snapshot(enc) == before
        assert read_file_store(path) == stored
        assert enc.encode_ids(["c"]) == [2]
        enc.close()
        assert SymbolVocabularyEncoder(path).symbol_to_id == {"a": 0, "b": 1, "c": 2}


class TestOverflow:
    def test_ids_stay_within_int32(self) -> None:
        coll = FakeCollection()
        # A vocabulary whose id space is nearly used up.
        coll.docs["gpu_vocabulary"] = {
            "class": "gpu_vocabulary",
            "symbol_to_id": {},
            "id_to_symbol": {},
            "vocab_size": 0,
            "next_id": MAX_SYMBOL_ID,
        }
        enc = SymbolVocabularyEncoder(coll)
        assert MAX_SYMBOL_ID == 2**31 - 1
        with pytest.raises(ValueError, match="full"):
            enc.encode_sequence(["x", "y"])
        assert (dict(enc.symbol_to_id), dict(enc.id_to_symbol), enc.next_id, coll.writes) == ({}, {}, MAX_SYMBOL_ID, 0)
        assert enc.encode_sequence(["x"]).tolist() == [MAX_SYMBOL_ID]
        with pytest.raises(ValueError, match="full"):
            enc.encode_symbol("y")
        with pytest.raises(ValueError, match="full"):
            enc.encode_pattern([["x"], ["y"]])
        assert enc.symbol_to_id == {"x": MAX_SYMBOL_ID}
        assert enc.next_id == 2**31
        assert coll.writes == 1
        assert enc.encode_symbol("x") == MAX_SYMBOL_ID  # known symbols still work
        assert SymbolVocabularyEncoder(coll).symbol_to_id == {"x": MAX_SYMBOL_ID}


# --------------------------------------------------------------------------
# Corrupt stores
# --------------------------------------------------------------------------

GOOD_DOC = {
    "symbol_to_id": {"a": 0, "b": 1},
    "id_to_symbol": {"0": "a", "1": "b"},
    "vocab_size": 2,
    "next_id": 2,
}

CORRUPTIONS: List[tuple] = [
    ("s2i-not-dict", lambda d: d.update(symbol_to_id=[["a", 0]])),
    ("i2s-not-dict", lambda d: d.update(id_to_symbol="x")),
    ("missing-s2i", lambda d: d.pop("symbol_to_id")),
    ("missing-i2s", lambda d: d.pop("id_to_symbol")),
    ("missing-next-id", lambda d: d.pop("next_id")),
    ("id-str", lambda d: d["symbol_to_id"].update(a="0")),
    ("id-float", lambda d: d["symbol_to_id"].update(a=0.0)),
    ("id-bool", lambda d: (d["symbol_to_id"].update(a=False))),
    ("id-negative", lambda d: (d["symbol_to_id"].update(a=-1), d["id_to_symbol"].update({"-1": "a"}))),
    ("id-ge-next", lambda d: d.update(next_id=1)),
    ("next-id-str", lambda d: d.update(next_id="2")),
    ("next-id-too-big", lambda d: d.update(next_id=2**31 + 1)),
    ("i2s-bad-key", lambda d: d.update(id_to_symbol={"zero": "a", "1": "b"})),
    ("i2s-padded-key", lambda d: d.update(id_to_symbol={"00": "a", "1": "b"})),
    ("i2s-value-int", lambda d: d.update(id_to_symbol={"0": "a", "1": 1})),
    ("not-inverse", lambda d: d.update(id_to_symbol={"0": "b", "1": "a"})),
    ("i2s-extra", lambda d: d["id_to_symbol"].update({"5": "c"})),
    ("i2s-missing", lambda d: d["id_to_symbol"].pop("1")),
    ("shared-id", lambda d: d["symbol_to_id"].update(b=0)),
    ("vocab-size-wrong", lambda d: d.update(vocab_size=3)),
]


class TestCorruptStore:
    @pytest.mark.parametrize("corrupt", [c[1] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
    def test_corrupt_document(self, corrupt: Callable) -> None:
        coll = FakeCollection()
        doc = copy.deepcopy(GOOD_DOC)
        corrupt(doc)
        coll.docs["gpu_vocabulary"] = {"class": "gpu_vocabulary", **doc}
        with pytest.raises(ValueError, match="corrupt vocabulary"):
            SymbolVocabularyEncoder(coll)

    @pytest.mark.parametrize("corrupt", [c[1] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
    def test_corrupt_json_document(self, tmp_path: Path, corrupt: Callable) -> None:
        doc = copy.deepcopy(GOOD_DOC)
        corrupt(doc)
        path = tmp_path / "v.json"
        path.write_text(json.dumps({"class": "gpu_vocabulary", **doc}))
        with pytest.raises(ValueError, match="corrupt vocabulary"):
            SymbolVocabularyEncoder(path)

    def test_good_document_loads(self, tmp_path: Path) -> None:
        # The oracle for the corruption cases: unmodified, the document is fine.
        coll = FakeCollection()
        coll.docs["gpu_vocabulary"] = {"class": "gpu_vocabulary", **copy.deepcopy(GOOD_DOC)}
        assert SymbolVocabularyEncoder(coll).symbol_to_id == {"a": 0, "b": 1}
        path = tmp_path / "v.json"
        path.write_text(json.dumps({"class": "gpu_vocabulary", **GOOD_DOC}))
        assert SymbolVocabularyEncoder(path).id_to_symbol == {0: "a", 1: "b"}

    def test_gaps_below_next_id_allowed(self) -> None:
        coll = FakeCollection()
        coll.docs["gpu_vocabulary"] = {
            "class": "gpu_vocabulary",
            "symbol_to_id": {"a": 0, "c": 2},
            "id_to_symbol": {"0": "a", "2": "c"},
            "vocab_size": 2,
            "next_id": 3,
        }
        enc = SymbolVocabularyEncoder(coll)
        assert enc.encode_symbol("d") == 3

    @pytest.mark.parametrize(
        "content",
        [
            b"",
            b"{",
            json.dumps({"class": "gpu_vocabulary", **GOOD_DOC}).encode()[:-7],
            b"\xff\xfe\x00garbage",
            b"[1, 2, 3]",
            b"null",
            json.dumps({"class": "something_else", **GOOD_DOC}).encode(),
            json.dumps(GOOD_DOC).encode(),  # no class field
        ],
        ids=["empty", "brace", "truncated", "binary", "list", "null", "wrong-class", "no-class"],
    )
    def test_corrupt_file(self, tmp_path: Path, content: bytes) -> None:
        path = tmp_path / "v.json"
        path.write_bytes(content)
        with pytest.raises(ValueError):
            SymbolVocabularyEncoder(path)

    def test_path_is_directory(self, tmp_path: Path) -> None:
        # What Python's own open() raises for a directory: an OSError naming the path.
        with pytest.raises(OSError, match=str(tmp_path)):
            SymbolVocabularyEncoder(tmp_path)

    def test_missing_file_is_empty(self, tmp_path: Path) -> None:
        enc = SymbolVocabularyEncoder(tmp_path / "absent.json")
        assert enc.vocab_size == 0 and enc.next_id == 0


# --------------------------------------------------------------------------
# build_from_patterns
# --------------------------------------------------------------------------


@pytest.fixture(params=["aggregate", "find-only"])
def make_patterns(request: pytest.FixtureRequest) -> Callable[[List[Dict[str, Any]]], Any]:
    def make(docs: List[Dict[str, Any]]) -> Any:
        if request.param == "find-only":
            return FindOnlyPatterns(docs)
        coll = mongomock.MongoClient().kato.patterns_kb
        if docs:
            coll.insert_many(copy.deepcopy(docs))
        return coll

    return make


class TestBuildFromPatterns:
    def test_empty_collection(self, encoder: SymbolVocabularyEncoder, make_patterns: Callable) -> None:
        encoder.build_from_patterns(make_patterns([]))
        assert encoder.vocab_size == 0

    def test_unique_symbols(self, encoder: SymbolVocabularyEncoder, make_patterns: Callable) -> None:
        encoder.build_from_patterns(
            make_patterns(
                [
                    {"name": "P1", "pattern_data": [["a", "b"], ["c", "d"]]},
                    {"name": "P2", "pattern_data": [["e", "f"], ["g", "h"]]},
                    {"name": "P3", "pattern_data": [["a", "e"]]},
                ]
            )
        )
        assert encoder.symbol_to_id == {s: i for i, s in enumerate("abcdefgh")}

    def test_alphabetical_order(self, encoder: SymbolVocabularyEncoder, make_patterns: Callable) -> None:
        encoder.build_from_patterns(make_patterns([{"name": "P1", "pattern_data": [["z", "a", "m", "b"]]}]))
        assert [encoder.encode_symbol(s) for s in "abmz"] == [0, 1, 2, 3]

    def test_existing_symbols_keep_ids(self, encoder: SymbolVocabularyEncoder, make_patterns: Callable) -> None:
        encoder.encode_ids(["q", "b"])
        encoder.build_from_patterns(make_patterns([{"pattern_data": [["z", "b"], ["a", "q"]]}]))
        assert encoder.symbol_to_id == {"q": 0, "b": 1, "a": 2, "z": 3}

    def test_unicode_order_and_empty_symbol(self, encoder: SymbolVocabularyEncoder, make_patterns: Callable) -> None:
        symbols = ["é", "Z", "a", "", "日", "🙂", "ab", "A"]
        encoder.build_from_patterns(make_patterns([{"pattern_data": [symbols[:4], symbols[4:]]}]))
        assert list(encoder.symbol_to_id) == sorted(symbols)
        assert list(encoder.symbol_to_id.values()) == list(range(len(symbols)))

    def test_docs_without_pattern_data_skipped(self, encoder: SymbolVocabularyEncoder, make_patterns: Callable) -> None:
        encoder.build_from_patterns(make_patterns([{"name": "x"}, {"pattern_data": [["k"], []]}]))
        assert encoder.symbol_to_id == {"k": 0}

    def test_non_str_symbol_rejected(self, make_patterns: Callable) -> None:
        coll = FakeCollection()
        enc = SymbolVocabularyEncoder(coll)
        with pytest.raises(TypeError):
            enc.build_from_patterns(make_patterns([{"pattern_data": [["a", 5]]}]))
        assert enc.vocab_size == 0 and coll.writes == 0

    def test_aggregate_pipeline_shape(self) -> None:
        seen: List[Any] = []

        class Recorder:
            def aggregate(self, pipeline: Any) -> List[Dict[str, Any]]:
                seen.append(pipeline)
                return [{"_id": "a"}, {"_id": "b"}]

        enc = SymbolVocabularyEncoder()
        enc.build_from_patterns(Recorder())
        assert seen == [
            [
                {"$project": {"pattern_data": 1}},
                {"$unwind": "$pattern_data"},
                {"$unwind": "$pattern_data"},
                {"$group": {"_id": "$pattern_data"}},
                {"$sort": {"_id": 1}},
            ]
        ]
        assert enc.symbol_to_id == {"a": 0, "b": 1}

    def test_no_find_or_aggregate(self) -> None:
        with pytest.raises(TypeError):
            SymbolVocabularyEncoder().build_from_patterns(object())


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------


def test_concurrent_encoding_is_bijective() -> None:
    coll = FakeCollection()
    enc = SymbolVocabularyEncoder(coll)
    pool = [f"sym{i}" for i in range(3000)]
    n_threads = 8
    barrier = threading.Barrier(n_threads)
    results: List[List[tuple]] = [[] for _ in range(n_threads)]
    errors: List[BaseException] = []

    def work(index: int) -> None:
        rng = random.Random(index)
        try:
            barrier.wait()
            for round_ in range(60):
                batch = rng.sample(pool, rng.randint(1, 40))
                kind = round_ % 4
                if kind == 0:
                    ids = enc.encode_ids(batch)
                elif kind == 1:
                    ids = enc.encode_sequence(batch).tolist()
                elif kind == 2:
                    ids = [enc.encode_symbol(s) for s in batch[:5]]
                    batch = batch[:5]
                else:
                    half = len(batch) // 2
                    events = enc.encode_pattern([batch[:half], batch[half:]])
                    ids = [i for e in events for i in e.tolist()]
                results[index].append((batch, ids))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often to provoke races
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)

    assert not errors
    n = enc.vocab_size
    assert n > 0 and enc.next_id == n
    assert sorted(enc.symbol_to_id.values()) == list(range(n))
    assert enc.id_to_symbol == {i: s for s, i in enc.symbol_to_id.items()}
    for per_thread in results:
        for batch, ids in per_thread:
            assert ids == [enc.symbol_to_id[s] for s in batch]
    assert coll.find_one({"class": "gpu_vocabulary"}) == {"class": "gpu_vocabulary", **state_doc(enc)}
    assert SymbolVocabularyEncoder(coll).symbol_to_id == enc.symbol_to_id


# --------------------------------------------------------------------------
# Crash safety of the file store
# --------------------------------------------------------------------------


def test_kill_mid_write_leaves_complete_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    batch = 20000
    env = dict(os.environ)
    package_root = str(Path(encoder_module.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    rng = random.Random(1234)
    sizes_seen = []

    for _ in range(5):
        with SymbolVocabularyEncoder(path) as enc:
            too_big = enc.vocab_size > 150_000
        if too_big:  # keep the test fast: restart from an empty vocabulary
            for stale in (path, path.with_name(path.name + ".log")):
                stale.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "_vocab_writer.py"), str(path), str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            ready = proc.stdout.readline()
            assert ready.startswith("ready "), ready + proc.stderr.read()
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, err
        reported = [int(ready.split()[1])] + [int(line) for line in out.split()]
        last = reported[-1]

        enc = SymbolVocabularyEncoder(path)  # must load: never a torn file
        k = enc.vocab_size
        # The writer prints after each completed write, so the file holds the
        # last reported state or (if killed between write and print) the next.
        assert k in (last, last + batch), (k, reported)
        assert enc.next_id == k
        assert enc.symbol_to_id == {f"s{i}": i for i in range(k)}
        assert enc.id_to_symbol == {i: f"s{i}" for i in range(k)}
        enc.close()
        sizes_seen.append(len(reported) - 1)

    # At least one round must have completed writes, or the test proved nothing.
    assert max(sizes_seen) > 0


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

symbol_lists = st.lists(st.text(max_size=12), max_size=30)


@settings(max_examples=200, deadline=None)
@given(symbol_lists)
def test_round_trip_property(symbols: List[str]) -> None:
    enc = SymbolVocabularyEncoder()
    encoded = enc.encode_sequence(symbols)
    assert encoded.dtype == np.int32
    assert enc.decode_sequence(encoded) == symbols
    assert enc.lookup_ids(symbols) == encoded.tolist()
    assert enc.vocab_size == len(set(symbols))
    assert sorted(enc.id_to_symbol) == list(range(enc.vocab_size))


@settings(max_examples=100, deadline=None)
@given(st.lists(symbol_lists, max_size=5))
def test_pattern_round_trip_property(pattern: List[List[str]]) -> None:
    enc = SymbolVocabularyEncoder()
    assert enc.decode_pattern(enc.encode_pattern(pattern)) == pattern


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbols=st.lists(st.text(max_size=8), max_size=20))
def test_file_store_round_trip_property(tmp_path: Path, symbols: List[str]) -> None:
    path = tmp_path / "prop.json"
    if path.exists():
        path.unlink()
    ids = SymbolVocabularyEncoder(path).encode_ids(symbols)
    reloaded = SymbolVocabularyEncoder(path)
    assert reloaded.decode_sequence(ids) == symbols
    assert reloaded.lookup_ids(symbols) == ids
