"""The collection adapter of ``SymbolVocabularyEncoder`` (the vocabulary itself lives in Rust).

A MongoDB-style collection (KATO's metadata collection: ``find_one`` / ``update_one``) holds one
document, ``{"class": "gpu_vocabulary", "symbol_to_id", "id_to_symbol", "vocab_size",
"next_id"}``. A learn writes only what it adds: one ``update_one`` whose ``$set`` names the new
entries by dotted field path, as MongoDB applies them. Symbols that cannot be a field-path
component (empty, containing ``.``, starting with ``$``, or holding a NUL) make that one write
replace the whole document instead.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

VOCABULARY_CLASS = "gpu_vocabulary"
_QUERY = {"class": VOCABULARY_CLASS}


def _is_path_component(symbol: str) -> bool:
    return bool(symbol) and "." not in symbol and not symbol.startswith("$") and "\x00" not in symbol


class CollectionStore:
    """Reads and writes the vocabulary document of one collection."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.description = f"collection {getattr(collection, 'name', type(collection).__name__)!s}"

    def load(self) -> Optional[Mapping[str, Any]]:
        return self.collection.find_one(dict(_QUERY))

    def append(self, symbols: List[str], first_id: int, vocab_size: int, next_id: int) -> bool:
        """Adds ``symbols`` (ids ``first_id``, ``first_id + 1``, ...). False, writing nothing, when
        a symbol cannot be named by a field path (the caller then calls :meth:`replace`)."""
        if not all(map(_is_path_component, symbols)):
            return False
        update: Dict[str, Any] = {}
        for offset, symbol in enumerate(symbols):
            update[f"symbol_to_id.{symbol}"] = first_id + offset
            update[f"id_to_symbol.{first_id + offset}"] = symbol
        update["vocab_size"] = vocab_size
        update["next_id"] = next_id
        self.collection.update_one(dict(_QUERY), {"$set": update}, upsert=True)
        return True

    def replace(self, document: Dict[str, Any]) -> None:
        """Writes the whole document."""
        self.collection.update_one(dict(_QUERY), {"$set": document}, upsert=True)
