"""Symbol vocabulary: a persistent, bidirectional ``str`` <-> ``int32`` id map.

Drop-in replacement for KATO's ``kato.gpu.encoder.SymbolVocabularyEncoder``: same public names,
document layout and id assignment (sequential ids from 0, ``-1`` is padding). The vocabulary lives
in the native engine, shared with every ``HybridGPUMatcher`` built on it; this class adds only
KATO's ``build_from_patterns`` and the ``mongodb`` / ``store_path`` attributes.

Stores:

* ``None``: memory only;
* a MongoDB-style collection (``find_one`` / ``update_one``, e.g. KATO's metadata collection):
  a learn writes only the entries it adds (``$set`` by dotted field path);
* a ``str`` / ``os.PathLike`` path: a JSON snapshot in KATO's layout plus an append-only log of
  new symbols beside it (``<path>.log``), compacted into the snapshot now and then, and a lock
  file (``<path>.lock``) that keeps a second encoder, in this or another process, from opening it.

Every write is one call, made before the new ids are used; a failed write changes nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

from . import _native

__all__ = ["SymbolVocabularyEncoder", "MAX_SYMBOL_ID", "PADDING_ID", "VOCABULARY_CLASS"]

logger = logging.getLogger("kato_gpu.encoder")

#: Value of the ``class`` field that identifies the vocabulary document.
VOCABULARY_CLASS: str = _native.VOCABULARY_CLASS
#: Id used for padding in encoded arrays; never assigned to a symbol.
PADDING_ID: int = _native.PADDING_ID
#: Largest id ever assigned (ids fit in int32).
MAX_SYMBOL_ID: int = _native.MAX_SYMBOL_ID

Mapping.register(_native.SymbolToId)
Mapping.register(_native.IdToSymbol)


class SymbolVocabularyEncoder(_native.SymbolVocabularyEncoder):
    """Bidirectional mapping between string symbols and int32 ids.

    Args:
        store: ``None`` (memory only), a MongoDB-style collection with ``find_one``/``update_one``,
            or a ``str``/``os.PathLike`` path to a vocabulary file. An existing vocabulary is
            loaded from it; a corrupt one raises ``ValueError``; a file already open elsewhere
            raises ``RuntimeError``.

    Attributes:
        symbol_to_id: symbol -> id (a read-only, live ``Mapping``).
        id_to_symbol: id -> symbol (a read-only, live ``Mapping``).
        next_id: the id the next new symbol gets.
        mongodb: the collection store, or None (name kept from KATO).
        store_path: the file store's path, or None.
    """

    def __init__(self, store: Any = None) -> None:
        self.mongodb: Optional[Any] = None
        self.store_path: Optional[Path] = None
        if isinstance(store, (str, os.PathLike)):
            self.store_path = Path(os.fspath(store))
        elif store is not None:
            self.mongodb = store

    def build_from_patterns(self, patterns_collection: Any, batch_size: int = 1000) -> None:
        """Adds every symbol found in the collection's ``pattern_data`` fields.

        New symbols get ids in sorted (code point) order, so the result does not depend on
        document order. Uses a MongoDB aggregation (unique symbols computed by the server) when
        the collection has ``aggregate``, otherwise iterates ``find()``. ``batch_size`` is the
        number of documents fetched per round trip (the cursor's batch size). One store write if
        anything was added.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
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
            found = [doc["_id"] for doc in _batched(aggregate(pipeline), batch_size)]
        else:
            find = getattr(patterns_collection, "find", None)
            if not callable(find):
                raise TypeError(
                    f"patterns_collection needs an aggregate() or find() method, got {type(patterns_collection).__name__}"
                )
            unique: set = set()
            for number, doc in enumerate(_batched(find(), batch_size)):
                pattern = doc.get("pattern_data") if isinstance(doc, Mapping) else None
                if pattern is None:
                    continue
                if isinstance(pattern, (str, bytes)) or not isinstance(pattern, Iterable):
                    raise TypeError(f"pattern document {number}: pattern_data must be a list of events")
                for index, event in enumerate(pattern):
                    if isinstance(event, (str, bytes)) or not isinstance(event, Iterable):
                        raise TypeError(f"pattern document {number}: pattern_data[{index}] must be a list of str")
                    for position, symbol in enumerate(event):
                        if not isinstance(symbol, str):
                            raise TypeError(
                                f"pattern document {number}: pattern_data[{index}][{position}] must be str, "
                                f"got {type(symbol).__name__}"
                            )
                    unique.update(event)
            found = list(unique)
        for position, symbol in enumerate(found):
            if not isinstance(symbol, str):
                raise TypeError(f"pattern symbols[{position}] must be str, got {type(symbol).__name__}")
        before = self.vocab_size
        self.encode_ids(sorted(set(found)))
        logger.info("vocabulary built: %d symbols (%d new)", self.vocab_size, self.vocab_size - before)


def _batched(cursor: Any, batch_size: int) -> Any:
    """The cursor with ``batch_size`` documents per round trip, where it supports that."""
    set_batch = getattr(cursor, "batch_size", None)
    return set_batch(batch_size) if callable(set_batch) else cursor
