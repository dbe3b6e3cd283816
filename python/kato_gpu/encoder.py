"""Symbol vocabulary: a persistent, bidirectional ``str`` <-> ``int32`` id map.

Drop-in replacement for KATO's ``kato.gpu.encoder.SymbolVocabularyEncoder``.
Same public names, document layout and id assignment (sequential ids starting
at 0, ``-1`` is padding), with these additions:

* the store may be ``None`` (memory only), a MongoDB-style collection (KATO's
  metadata collection) or a path to a local JSON file;
* at most one store write per call, and none when nothing new was added;
* all input is validated before anything changes, and a failed store write
  rolls the in-memory vocabulary back, so state is never half-updated;
* a lock makes concurrent use from many threads safe;
* ``encode_ids``, ``lookup_ids`` (read-only, ``-1`` for unknown) and ``flush``.

This module deliberately depends only on numpy and the standard library, so it
can be imported without the compiled extension.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["SymbolVocabularyEncoder", "MAX_SYMBOL_ID", "PADDING_ID", "VOCABULARY_CLASS"]

logger = logging.getLogger("kato_gpu.encoder")

#: Value of the ``class`` field that identifies the vocabulary document.
VOCABULARY_CLASS = "gpu_vocabulary"
#: Id used for padding in encoded arrays; never assigned to a symbol.
PADDING_ID = -1
#: Largest id ever assigned: ids must fit in int32 and stay below 2**31 - 1.
MAX_SYMBOL_ID = 2**31 - 2

_DECIMAL_KEY = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_NOT_A_SEQUENCE = (str, bytes, bytearray, memoryview)

StoreArg = Union[None, str, "os.PathLike[str]", Any]


def _describe(value: Any) -> str:
    """Short ``type: repr`` text for error messages (repr capped in length)."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} ({text})"


def _symbol_list(items: Any, what: str) -> List[str]:
    """Return ``items`` as a list of exact ``str``, or raise TypeError.

    The whole input is checked before the caller mutates anything. A bare
    string is refused: ``encode_sequence("abc")`` is almost always a bug, not
    a request for three one-letter symbols.
    """
    if isinstance(items, _NOT_A_SEQUENCE):
        raise TypeError(
            f"{what} must be a sequence of str symbols, got {type(items).__name__}; wrap a single symbol in a list"
        )
    try:
        iterator = iter(items)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of str symbols, got {_describe(items)}") from None
    out: List[str] = []
    for position, symbol in enumerate(iterator):
        if type(symbol) is not str:
            if not isinstance(symbol, str):
                raise TypeError(f"{what}[{position}] must be str, got {_describe(symbol)}")
            # Subclasses such as numpy.str_ are stored as plain str so that the
            # vocabulary serialises identically everywhere.
            symbol = str.__str__(symbol)
        out.append(symbol)
    return out


def _check_int(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"corrupt vocabulary in {source}: {what} must be an int, got {_describe(value)}")
    return int(value)


def _parse_document(doc: Any, source: str) -> Tuple[Dict[str, int], Dict[int, str], int]:
    """Validate a stored vocabulary document and return fresh dicts.

    Raises ValueError on anything inconsistent: a vocabulary that does not
    round-trip would silently corrupt every later match, so it is refused.
    """
    if not isinstance(doc, Mapping):
        raise ValueError(f"corrupt vocabulary in {source}: expected a document, got {_describe(doc)}")
    for key in ("symbol_to_id", "id_to_symbol", "next_id"):
        if key not in doc:
            raise ValueError(f"corrupt vocabulary in {source}: missing field {key!r}")

    next_id = _check_int(doc["next_id"], "next_id", source)
    if not 0 <= next_id <= MAX_SYMBOL_ID + 1:
        raise ValueError(f"corrupt vocabulary in {source}: next_id={next_id} outside [0, {MAX_SYMBOL_ID + 1}]")

    raw_s2i = doc["symbol_to_id"]
    raw_i2s = doc["id_to_symbol"]
    if not isinstance(raw_s2i, Mapping):
        raise ValueError(f"corrupt vocabulary in {source}: symbol_to_id must be a mapping, got {_describe(raw_s2i)}")
    if not isinstance(raw_i2s, Mapping):
        raise ValueError(f"corrupt vocabulary in {source}: id_to_symbol must be a mapping, got {_describe(raw_i2s)}")

    id_to_symbol: Dict[int, str] = {}
    for key, symbol in raw_i2s.items():
        if isinstance(key, str) and _DECIMAL_KEY.match(key):
            symbol_id = int(key)
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            symbol_id = int(key)
        else:
            raise ValueError(f"corrupt vocabulary in {source}: id_to_symbol key {key!r} is not a non-negative integer")
        if not isinstance(symbol, str):
            raise ValueError(
                f"corrupt vocabulary in {source}: id_to_symbol[{key!r}] must be str, got {_describe(symbol)}"
            )
        if symbol_id in id_to_symbol:
            raise ValueError(f"corrupt vocabulary in {source}: id {symbol_id} appears twice in id_to_symbol")
        id_to_symbol[symbol_id] = symbol

    pairs: List[Tuple[int, str]] = []
    for symbol, value in raw_s2i.items():
        if not isinstance(symbol, str):
            raise ValueError(f"corrupt vocabulary in {source}: symbol_to_id key {_describe(symbol)} is not str")
        symbol_id = _check_int(value, f"symbol_to_id[{symbol!r}]", source)
        if not 0 <= symbol_id < next_id:
            raise ValueError(
                f"corrupt vocabulary in {source}: id {symbol_id} of {symbol!r} outside [0, next_id={next_id})"
            )
        if id_to_symbol.get(symbol_id) != symbol:
            raise ValueError(
                f"corrupt vocabulary in {source}: id_to_symbol is not the inverse of symbol_to_id "
                f"(symbol {symbol!r} -> {symbol_id} -> {id_to_symbol.get(symbol_id)!r})"
            )
        pairs.append((symbol_id, symbol))
    if len(pairs) != len(id_to_symbol):
        # Every symbol maps to a distinct id that maps back to it, so equal
        # sizes make the two dicts exact inverses.
        raise ValueError(
            f"corrupt vocabulary in {source}: id_to_symbol has {len(id_to_symbol)} entries "
            f"but symbol_to_id has {len(pairs)}"
        )

    if "vocab_size" in doc and doc["vocab_size"] is not None:
        vocab_size = _check_int(doc["vocab_size"], "vocab_size", source)
        if vocab_size != len(pairs):
            raise ValueError(f"corrupt vocabulary in {source}: vocab_size={vocab_size} but {len(pairs)} symbols stored")

    pairs.sort()
    symbol_to_id = {symbol: symbol_id for symbol_id, symbol in pairs}
    ordered_i2s = {symbol_id: symbol for symbol_id, symbol in pairs}
    return symbol_to_id, ordered_i2s, next_id


class _MemoryStore:
    """No persistence."""

    description = "memory"

    def load(self) -> Optional[Mapping[str, Any]]:
        return None

    def save(self, doc: Dict[str, Any]) -> None:
        return None


class _CollectionStore:
    """A MongoDB-style collection (``find_one`` / ``update_one``)."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.description = f"collection {getattr(collection, 'name', type(collection).__name__)!s}"

    def load(self) -> Optional[Mapping[str, Any]]:
        return self.collection.find_one({"class": VOCABULARY_CLASS})

    def save(self, doc: Dict[str, Any]) -> None:
        self.collection.update_one({"class": VOCABULARY_CLASS}, {"$set": doc}, upsert=True)


class _FileStore:
    """A local JSON file, replaced atomically on every write.

    A reader (or a process restarted after a crash) only ever sees the old or
    the new complete file: the data goes to a temp file in the same directory,
    is fsync'ed, then ``os.replace``d over the target, and the directory entry
    is fsync'ed. A crash can leave a stray ``.<name>.*.tmp`` file behind; it is
    never read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"

    def load(self) -> Optional[Mapping[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"cannot read vocabulary file {self.path}: {exc}") from exc
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"corrupt vocabulary file {self.path}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise ValueError(f"corrupt vocabulary file {self.path}: top level is {type(doc).__name__}, not an object")
        if doc.get("class") != VOCABULARY_CLASS:
            raise ValueError(
                f"corrupt vocabulary file {self.path}: 'class' is {doc.get('class')!r}, expected {VOCABULARY_CLASS!r}"
            )
        return doc

    def save(self, doc: Dict[str, Any]) -> None:
        payload = {"class": VOCABULARY_CLASS, **doc}
        # ensure_ascii keeps any str (even lone surrogates) representable.
        data = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                mode = os.stat(self.path).st_mode & 0o777
            except FileNotFoundError:
                mode = 0o644
            os.chmod(tmp_name, mode)
            os.replace(tmp_name, self.path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            raise
        self._fsync_directory(directory)

    @staticmethod
    def _fsync_directory(directory: Path) -> None:
        # The new file is already in place; failing here would make the caller
        # roll back memory while the file holds the new state, so only warn.
        if os.name == "nt":
            return
        try:
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError as exc:
            logger.warning("could not open %s to fsync it: %s", directory, exc)
            return
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            logger.warning("could not fsync directory %s: %s", directory, exc)
        finally:
            os.close(dir_fd)


class SymbolVocabularyEncoder:
    """Bidirectional mapping between string symbols and int32 ids.

    Args:
        store: ``None`` (memory only), a MongoDB-style collection with
            ``find_one``/``update_one`` (e.g. KATO's metadata collection), or a
            ``str``/``os.PathLike`` path to a JSON file. An existing vocabulary
            is loaded from it; a corrupt one raises ValueError.

    Attributes:
        symbol_to_id: symbol -> id.
        id_to_symbol: id -> symbol.
        next_id: id the next new symbol gets.
        mongodb: the collection store, or None (name kept from KATO).
        store_path: the file store's path, or None.

    One instance should own a store: writes replace the whole document, so two
    writers on one store would overwrite each other's additions.
    """

    def __init__(self, store: StoreArg = None) -> None:
        self.mongodb: Optional[Any] = None
        self.store_path: Optional[Path] = None
        if store is None:
            self._store: Union[_MemoryStore, _CollectionStore, _FileStore] = _MemoryStore()
        elif isinstance(store, (str, os.PathLike)):
            path = os.fspath(store)
            if not isinstance(path, str):
                raise TypeError(f"store path must be str or os.PathLike[str], got {_describe(store)}")
            self.store_path = Path(path)
            self._store = _FileStore(self.store_path)
        elif callable(getattr(store, "find_one", None)) and callable(getattr(store, "update_one", None)):
            self.mongodb = store
            self._store = _CollectionStore(store)
        else:
            raise TypeError(
                "store must be None, a collection with find_one/update_one, or a str/os.PathLike "
                f"path to a JSON file; got {_describe(store)}"
            )

        self._lock = threading.RLock()
        self.symbol_to_id: Dict[str, int] = {}
        self.id_to_symbol: Dict[int, str] = {}
        self.next_id: int = 0
        self._load_vocabulary()

    # ------------------------------------------------------------------ state

    @property
    def vocab_size(self) -> int:
        """Number of symbols in the vocabulary."""
        return len(self.symbol_to_id)

    def _load_vocabulary(self) -> None:
        doc = self._store.load()
        if doc is None:
            logger.info("no stored vocabulary in %s; starting empty", self._store.description)
            return
        s2i, i2s, next_id = _parse_document(doc, self._store.description)
        with self._lock:
            self.symbol_to_id = s2i
            self.id_to_symbol = i2s
            self.next_id = next_id
        logger.info("loaded vocabulary of %d symbols from %s", len(s2i), self._store.description)

    def _document(self) -> Dict[str, Any]:
        # Fresh copies: an in-memory store must never alias the live dicts.
        return {
            "symbol_to_id": dict(self.symbol_to_id),
            "id_to_symbol": {str(i): s for i, s in self.id_to_symbol.items()},
            "vocab_size": len(self.symbol_to_id),
            "next_id": self.next_id,
        }

    def _persist(self) -> None:
        self._store.save(self._document())

    def _add_new(self, symbols: Iterable[str]) -> int:
        """Assign ids to the unseen ``symbols`` (validated str) and persist once.

        Must be called with the lock held. On any failure, including the store
        write, the vocabulary is left exactly as it was.
        """
        known = self.symbol_to_id
        new = list(dict.fromkeys(s for s in symbols if s not in known))
        if not new:
            return 0
        start = self.next_id
        if start + len(new) - 1 > MAX_SYMBOL_ID:
            raise OverflowError(
                f"cannot add {len(new)} symbols: ids would exceed {MAX_SYMBOL_ID} (int32 limit; next_id={start})"
            )
        id_to_symbol = self.id_to_symbol
        for offset, symbol in enumerate(new):
            known[symbol] = start + offset
            id_to_symbol[start + offset] = symbol
        self.next_id = start + len(new)
        try:
            self._persist()
        except BaseException:
            for offset, symbol in enumerate(new):
                del known[symbol]
                del id_to_symbol[start + offset]
            self.next_id = start
            raise
        logger.debug("added %d symbols (ids %d..%d)", len(new), start, start + len(new) - 1)
        return len(new)

    # --------------------------------------------------------------- encoding

    def encode_symbol(self, symbol: str) -> int:
        """Return the id of ``symbol``, adding it (one store write) if new."""
        if not isinstance(symbol, str):
            raise TypeError(f"symbol must be str, got {_describe(symbol)}")
        if type(symbol) is not str:
            symbol = str.__str__(symbol)
        with self._lock:
            self._add_new((symbol,))
            return self.symbol_to_id[symbol]

    def encode_ids(self, symbols: Sequence[str]) -> List[int]:
        """Ids of ``symbols`` as a list of ints, adding unseen ones (one write)."""
        checked = _symbol_list(symbols, "symbols")
        with self._lock:
            self._add_new(checked)
            known = self.symbol_to_id
            return [known[s] for s in checked]

    def encode_sequence(self, sequence: Sequence[str]) -> np.ndarray:
        """Ids of ``sequence`` as an int32 array, adding unseen symbols (one write)."""
        return np.array(self.encode_ids(sequence), dtype=np.int32)

    def encode_pattern(self, pattern_data: Sequence[Sequence[str]]) -> List[np.ndarray]:
        """Encode a pattern (list of events) to one int32 array per event.

        Every event is validated before any symbol is added; all new symbols
        of the pattern are persisted in a single write.
        """
        if isinstance(pattern_data, _NOT_A_SEQUENCE):
            raise TypeError(f"pattern_data must be a sequence of events, got {type(pattern_data).__name__}")
        try:
            events_iter = iter(pattern_data)
        except TypeError:
            raise TypeError(f"pattern_data must be a sequence of events, got {_describe(pattern_data)}") from None
        events = [_symbol_list(event, f"pattern_data[{index}]") for index, event in enumerate(events_iter)]
        with self._lock:
            self._add_new(s for event in events for s in event)
            known = self.symbol_to_id
            return [np.array([known[s] for s in event], dtype=np.int32) for event in events]

    def lookup_ids(self, symbols: Sequence[str]) -> List[int]:
        """Read-only ids of ``symbols`` for queries: unknown symbols give -1.

        Never adds a symbol and never writes to the store.
        """
        checked = _symbol_list(symbols, "symbols")
        with self._lock:
            get = self.symbol_to_id.get
            return [get(s, PADDING_ID) for s in checked]

    # --------------------------------------------------------------- decoding

    def decode_symbol(self, symbol_id: int) -> Optional[str]:
        """Symbol for ``symbol_id``, or None if the id is unknown."""
        return self.id_to_symbol.get(symbol_id)

    def decode_sequence(self, encoded: Iterable[int]) -> List[str]:
        """Symbols for ``encoded``, skipping padding (ids < 0) and unknown ids.

        Unlike KATO, the empty-string symbol is kept (KATO drops it because it
        tests the decoded symbol's truthiness).
        """
        lookup = self.id_to_symbol.get
        symbols: List[str] = []
        for raw in encoded:
            symbol_id = int(raw)
            if symbol_id < 0:
                continue
            symbol = lookup(symbol_id)
            if symbol is not None:
                symbols.append(symbol)
        return symbols

    def decode_pattern(self, encoded_pattern: Iterable[Iterable[int]]) -> List[List[str]]:
        """Decode one id array per event back to lists of symbols."""
        return [self.decode_sequence(event) for event in encoded_pattern]

    # ------------------------------------------------------------ maintenance

    def build_from_patterns(self, patterns_collection: Any, batch_size: int = 1000) -> None:
        """Add every symbol found in the collection's ``pattern_data`` fields.

        New symbols get ids in sorted (code point) order so the result does
        not depend on document order. Uses a MongoDB aggregation (unique
        symbols computed server-side) when the collection has ``aggregate``,
        otherwise iterates ``find()``. One store write if anything was added.
        ``batch_size`` is accepted for KATO compatibility and unused.
        """
        logger.info("building vocabulary from patterns")
        aggregate = getattr(patterns_collection, "aggregate", None)
        if callable(aggregate):
            pipeline = [
                {"$project": {"pattern_data": 1}},
                {"$unwind": "$pattern_data"},
                {"$unwind": "$pattern_data"},
                {"$group": {"_id": "$pattern_data"}},
                {"$sort": {"_id": 1}},
            ]
            found = [doc["_id"] for doc in aggregate(pipeline)]
            symbols = _symbol_list(found, "pattern symbols")
        else:
            find = getattr(patterns_collection, "find", None)
            if not callable(find):
                raise TypeError(
                    f"patterns_collection needs an aggregate() or find() method, got {_describe(patterns_collection)}"
                )
            unique: set = set()
            for number, doc in enumerate(find()):
                pattern = doc.get("pattern_data") if isinstance(doc, Mapping) else None
                if pattern is None:
                    continue
                if isinstance(pattern, _NOT_A_SEQUENCE) or not isinstance(pattern, Iterable):
                    raise TypeError(f"pattern document {number}: pattern_data must be a list of events")
                for index, event in enumerate(pattern):
                    unique.update(_symbol_list(event, f"pattern document {number}: pattern_data[{index}]"))
            symbols = list(unique)
        symbols = sorted(set(symbols))
        with self._lock:
            added = self._add_new(symbols)
            size = self.vocab_size
        logger.info("vocabulary built: %d symbols (%d new)", size, added)

    def clear(self) -> None:
        """Empty the vocabulary and persist the empty state (one write)."""
        with self._lock:
            saved = (self.symbol_to_id.copy(), self.id_to_symbol.copy(), self.next_id)
            self.symbol_to_id.clear()
            self.id_to_symbol.clear()
            self.next_id = 0
            try:
                self._persist()
            except BaseException:
                self.symbol_to_id.update(saved[0])
                self.id_to_symbol.update(saved[1])
                self.next_id = saved[2]
                raise
        logger.info("vocabulary cleared")

    def flush(self) -> None:
        """Write the current vocabulary to the store now (no-op in memory)."""
        with self._lock:
            self._persist()
        logger.debug("vocabulary flushed to %s", self._store.description)

    def get_stats(self) -> Dict[str, Any]:
        """Vocabulary size, next id and an estimate of the dicts' memory use."""
        with self._lock:
            memory = sys.getsizeof(self.symbol_to_id) + sys.getsizeof(self.id_to_symbol)
            memory += sum(sys.getsizeof(s) for s in self.symbol_to_id)
            return {
                "vocab_size": self.vocab_size,
                "next_id": self.next_id,
                "memory_usage_bytes": memory,
            }

    def __repr__(self) -> str:
        return f"SymbolVocabularyEncoder(vocab_size={self.vocab_size})"
