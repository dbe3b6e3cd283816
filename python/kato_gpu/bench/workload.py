"""Seeded, vectorised benchmark workloads.

Two shapes:

``kato``
    The shape of KATO's own benchmark data: a 200-symbol vocabulary (150 word tokens and 50
    ``VCTR|xxxx`` tokens) with Zipf weights ``1/(rank+1)**0.8``; every pattern has 2-5 events,
    every event 3-15 *distinct* tokens drawn by weight without replacement and sorted as
    strings. A query takes a random source pattern, keeps its first 1..all events, from each
    event keeps a fraction (30-70%, one fraction per query) of its tokens, adds 0-3 noise tokens
    and sorts the event; the state is the flattened query.

``chunks``
    5-token patterns drawn with replacement (order kept) from a 50,000-symbol Zipf vocabulary
    (exponent 1.0); a query is a source pattern with 1-3 of its positions replaced.

Token ids are *local* ids: ``vocab`` is sorted, and id ``i`` stands for ``vocab[i]``. Sorting
ids therefore sorts symbols as strings, and registering ``vocab`` with a fresh encoder gives
every symbol the same id (see :meth:`Workload.encoder_ids`).

Pattern ``i`` is named ``pattern_name(i)`` = ``"PTRN|"`` + ``i`` as 40 zero-padded hex digits,
the length of KATO's sha1 names. Zero padding makes the name order equal the index order, so
"similarity descending, then name ascending" equals "similarity descending, then index
ascending"; the benchmark's equality checks rely on that.

The same ``(n_patterns, n_queries, shape, seed)`` always gives the same workload (for a given
NumPy version): patterns and queries come from separate streams seeded by ``seed``.
:func:`generate_queries` makes more queries for a workload from another stream.

:func:`iter_kato_chunks` generates ``kato`` patterns a chunk at a time (chunk ``c`` from the
stream ``[seed, 0, c]``), so that tens of millions of patterns can be generated and loaded
without ever holding more than one chunk; see ``bench/scale.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "SHAPES",
    "Workload",
    "generate_workload",
    "generate_queries",
    "pattern_name",
    "pattern_names",
    "pattern_index",
    "KatoChunk",
    "kato_vocab",
    "iter_kato_chunks",
]

SHAPES = ("kato", "chunks")

# kato shape
KATO_WORDS = 150
KATO_VECTORS = 50
KATO_ZIPF = 0.8
KATO_EVENTS = (2, 5)
KATO_EVENT_TOKENS = (3, 15)
KATO_KEEP = (0.3, 0.7)
KATO_NOISE = (0, 3)
KATO_STM_EVENTS = 10  # a query keeps at most this many events, as KATO's generator does

# chunks shape
CHUNK_VOCAB = 50_000
CHUNK_ZIPF = 1.0
CHUNK_LEN = 5
CHUNK_REPLACED = (1, 3)

NAME_PREFIX = "PTRN|"
NAME_DIGITS = 40


def pattern_name(i: int) -> str:
    """Name of pattern ``i``; zero-padded so that name order equals index order."""
    return f"{NAME_PREFIX}{i:0{NAME_DIGITS}x}"


def pattern_names(start: int, stop: int) -> List[str]:
    """``[pattern_name(i) for i in range(start, stop)]``."""
    return [f"{NAME_PREFIX}{i:0{NAME_DIGITS}x}" for i in range(start, stop)]


def pattern_index(names: Sequence[str], n_patterns: int) -> np.ndarray:
    """Inverse of :func:`pattern_name` for many names at once (int64); ``-1`` for any name that
    is not ``pattern_name(i)`` for some ``0 <= i < n_patterns``. Vectorised: a million names
    take a fraction of a second."""
    count = len(names)
    out = np.full(count, -1, dtype=np.int64)
    if count == 0:
        return out
    width = len(NAME_PREFIX) + NAME_DIGITS
    arr = np.asarray(names)
    if arr.dtype.kind != "U" or arr.ndim != 1:
        return _pattern_index_slow(names, n_patterns)
    lengths = np.char.str_len(arr)
    if arr.dtype.itemsize != 4 * width or not np.all(lengths == width):
        return _pattern_index_slow(names, n_patterns)
    codes = arr.view(np.uint32).reshape(count, width).astype(np.int64)
    prefix = np.array([ord(c) for c in NAME_PREFIX], dtype=np.int64)
    ok = np.all(codes[:, : len(NAME_PREFIX)] == prefix, axis=1)
    hexcodes = codes[:, len(NAME_PREFIX) :]
    digits = np.full(hexcodes.shape, -1, dtype=np.int64)
    dec = (hexcodes >= 48) & (hexcodes <= 57)
    low = (hexcodes >= 97) & (hexcodes <= 102)
    digits[dec] = hexcodes[dec] - 48
    digits[low] = hexcodes[low] - 87
    ok &= np.all(digits >= 0, axis=1)
    # Indices fit in 60 bits: the leading 25 hex digits must be zero.
    ok &= np.all(digits[:, : NAME_DIGITS - 15] == 0, axis=1)
    tail = np.where(digits[:, NAME_DIGITS - 15 :] < 0, 0, digits[:, NAME_DIGITS - 15 :])
    powers = np.int64(16) ** np.arange(14, -1, -1, dtype=np.int64)
    values = tail @ powers
    ok &= values < n_patterns
    out[ok] = values[ok]
    return out


def _pattern_index_slow(names: Sequence[str], n_patterns: int) -> np.ndarray:
    out = np.full(len(names), -1, dtype=np.int64)
    for k, name in enumerate(names):
        if isinstance(name, str) and len(name) == len(NAME_PREFIX) + NAME_DIGITS and name.startswith(NAME_PREFIX):
            try:
                value = int(name[len(NAME_PREFIX) :], 16)
            except ValueError:
                continue
            if value < n_patterns and name == pattern_name(value):
                out[k] = value
    return out


@dataclass
class Workload:
    """A generated workload. ``tokens``/``offsets`` hold the patterns in CSR form (local ids)."""

    shape: str
    seed: int
    vocab: List[str]
    tokens: np.ndarray  # int32 local ids, patterns flattened and concatenated
    offsets: np.ndarray  # int64, n_patterns + 1
    queries: List[np.ndarray]  # int32 local ids, one flattened state per query
    query_events: List[List[List[str]]]  # the queries as events of symbols
    query_sources: np.ndarray  # int64, the source pattern of each query
    # kato shape only: event boundaries. Pattern i's events are delimited by
    # event_offsets[pattern_events_offsets[i] : pattern_events_offsets[i+1] + 1].
    event_offsets: Optional[np.ndarray] = None
    pattern_event_offsets: Optional[np.ndarray] = None
    _vocab_array: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._vocab_array = np.array(self.vocab, dtype=object)

    @property
    def n_patterns(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    @property
    def lengths(self) -> np.ndarray:
        """Flattened length of every pattern (int64)."""
        return np.diff(self.offsets)

    def pattern_ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def symbols(self, ids: np.ndarray) -> List[str]:
        """Local ids to symbols."""
        return self._vocab_array[np.asarray(ids, dtype=np.int64)].tolist()

    def pattern_symbols(self, i: int) -> List[str]:
        """Pattern ``i`` flattened, as symbols."""
        return self.symbols(self.pattern_ids(i))

    def pattern_events(self, i: int) -> List[List[str]]:
        """Pattern ``i`` as a list of events of symbols (chunks: one symbol per event, so that
        the flattened pattern keeps its order and every event is sorted)."""
        syms = self.pattern_symbols(i)
        if self.event_offsets is None or self.pattern_event_offsets is None:
            return [[s] for s in syms]
        lo, hi = self.pattern_event_offsets[i], self.pattern_event_offsets[i + 1]
        bounds = self.event_offsets[lo : hi + 1] - self.offsets[i]
        return [syms[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]

    def state_ids(self, q: int) -> np.ndarray:
        return self.queries[q]

    def state_symbols(self, q: int) -> List[str]:
        """Query ``q``'s state (its events flattened), as symbols."""
        return self.symbols(self.queries[q])

    def choices(self) -> List[List[int]]:
        """Every pattern as a list of int (local ids), for RapidFuzz. LCS does not depend on
        how symbols are numbered, only on which are equal."""
        flat = self.tokens.tolist()
        bounds = self.offsets.tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def encoder_ids(self, encoder) -> np.ndarray:
        """Registers the vocabulary with ``encoder`` (in sorted order, so a fresh encoder gives
        symbol ``vocab[i]`` id ``i``) and returns the local-id -> encoder-id map (int64)."""
        return np.asarray(encoder.encode_ids(list(self.vocab)), dtype=np.int64)


# ---------------------------------------------------------------------------- sampling helpers
class _Alias:
    """Walker's alias table: O(1) draws with replacement from a fixed discrete distribution."""

    def __init__(self, weights: np.ndarray) -> None:
        n = len(weights)
        scaled = np.asarray(weights, dtype=np.float64) * n / float(np.sum(weights))
        prob = np.ones(n, dtype=np.float64)
        alias = np.arange(n, dtype=np.int64)
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            prob[s] = scaled[s]
            alias[s] = g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        self.n = n
        self.prob = prob
        self.alias = alias

    def draw(self, rng: np.random.Generator, size) -> np.ndarray:
        column = rng.integers(0, self.n, size=size)
        coin = rng.random(size=size)
        return np.where(coin < self.prob[column], column, self.alias[column])


def _distinct_weighted_rows(
    rng: np.random.Generator, alias: _Alias, weights: np.ndarray, sizes: np.ndarray, width: int
) -> np.ndarray:
    """For every row r, ``sizes[r]`` distinct ranks drawn by weight without replacement
    (successive sampling), in draw order, padded to ``width`` columns with -1.

    Draws with replacement and keeps first occurrences: that is exactly successive sampling
    without replacement. The few rows that do not reach their size within the fixed number of
    draws are redone with Efraimidis-Spirakis keys (the same distribution)."""
    rows = len(sizes)
    n = alias.n
    draws = 32 if width <= 16 else 2 * width
    shift = int(draws - 1).bit_length()
    ranks = alias.draw(rng, (rows, draws)).astype(np.int32)
    # Sort by (rank, position): the first of each run of equal ranks is a first occurrence.
    keys = (ranks << shift) | np.arange(draws, dtype=np.int32)
    keys.sort(axis=1)
    value = keys >> shift
    position = keys & ((1 << shift) - 1)
    first = np.ones(keys.shape, dtype=bool)
    first[:, 1:] = value[:, 1:] != value[:, :-1]
    # Order the first occurrences by position; later ones go to the end.
    big = np.int32(np.iinfo(np.int32).max)
    order_keys = np.where(first, (position << 16) | value, big)
    order_keys.sort(axis=1)
    order_keys = order_keys[:, :width]
    distinct = np.count_nonzero(order_keys != big, axis=1)
    cols = np.arange(width)
    out = np.where(cols < sizes[:, None], order_keys & 0xFFFF, -1).astype(np.int32)
    short = np.nonzero(distinct < sizes)[0]
    if short.size:
        inv = 1.0 / np.asarray(weights, dtype=np.float64)
        for r in short.tolist():
            k = int(sizes[r])
            e = rng.standard_exponential(n) * inv
            picked = np.argsort(e, kind="stable")[:k]
            out[r, :] = -1
            out[r, :k] = picked
    return out


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    return 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent


def _local_ids(symbols_by_rank: List[str]):
    """(sorted vocabulary, rank -> local id)."""
    vocab = sorted(symbols_by_rank)
    position = {s: i for i, s in enumerate(vocab)}
    return vocab, np.array([position[s] for s in symbols_by_rank], dtype=np.int32)


# ---------------------------------------------------------------------------- kato shape
def _kato_patterns(rng: np.random.Generator, n: int, chunk_events: int = 1 << 17):
    by_rank = [f"tok_{i}" for i in range(KATO_WORDS)] + [f"VCTR|{i:04x}" for i in range(KATO_VECTORS)]
    vocab, id_of_rank = _local_ids(by_rank)
    weights = _zipf_weights(len(by_rank), KATO_ZIPF)
    alias = _Alias(weights)

    events_per = rng.integers(KATO_EVENTS[0], KATO_EVENTS[1] + 1, size=n)
    pattern_event_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(events_per, out=pattern_event_offsets[1:])
    n_events = int(pattern_event_offsets[-1])
    sizes = rng.integers(KATO_EVENT_TOKENS[0], KATO_EVENT_TOKENS[1] + 1, size=n_events)
    event_offsets = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(sizes, out=event_offsets[1:])

    width = KATO_EVENT_TOKENS[1]
    tokens = np.empty(int(event_offsets[-1]), dtype=np.int32)
    id_padded = np.concatenate([id_of_rank, [np.iinfo(np.int32).max]]).astype(np.int32)
    cols = np.arange(width)
    for start in range(0, n_events, chunk_events):
        stop = min(n_events, start + chunk_events)
        k = sizes[start:stop]
        ranks = _distinct_weighted_rows(rng, alias, weights, k, width)
        ids = id_padded[ranks]  # -1 -> the padding sentinel (last entry)
        ids.sort(axis=1)  # sorted ids == symbols sorted as strings
        tokens[event_offsets[start] : event_offsets[stop]] = ids[cols < k[:, None]]
    offsets = event_offsets[pattern_event_offsets]
    return vocab, id_of_rank, weights, tokens, offsets, event_offsets, pattern_event_offsets


def _kato_query_from(
    rng: np.random.Generator, src: int, tokens, event_offsets, pattern_event_offsets, id_of_rank, rank_of_id, inv
) -> List[np.ndarray]:
    """One ``kato`` query (its events, local ids) made from pattern ``src`` of the given arrays."""
    keep_fraction = float(rng.uniform(*KATO_KEEP))
    lo, hi = int(pattern_event_offsets[src]), int(pattern_event_offsets[src + 1])
    n_ev = hi - lo
    used = int(rng.integers(1, min(KATO_STM_EVENTS, n_ev) + 1))
    events = []
    for e in range(lo, lo + used):
        event = tokens[event_offsets[e] : event_offsets[e + 1]]
        keep = min(len(event), max(1, int(len(event) * keep_fraction)))
        kept = rng.choice(event, size=keep, replace=False)
        noise_count = int(rng.integers(KATO_NOISE[0], KATO_NOISE[1] + 1))
        if noise_count:
            keys = rng.standard_exponential(len(inv)) * inv
            keys[rank_of_id[kept]] = np.inf  # never repeat a kept token
            noise = id_of_rank[np.argsort(keys, kind="stable")[:noise_count]]
            kept = np.concatenate([kept, noise])
        events.append(np.unique(kept).astype(np.int32))  # unique() also sorts
    return events


def _rank_of_id(id_of_rank: np.ndarray) -> np.ndarray:
    rank_of_id = np.empty(len(id_of_rank), dtype=np.int64)
    rank_of_id[id_of_rank] = np.arange(len(id_of_rank))
    return rank_of_id


def _kato_queries(
    rng: np.random.Generator, count: int, tokens, offsets, event_offsets, pattern_event_offsets, id_of_rank, weights
):
    n = len(offsets) - 1
    rank_of_id = _rank_of_id(id_of_rank)
    inv = 1.0 / weights
    states, sources = [], []
    for _ in range(count):
        src = int(rng.integers(n))
        states.append(
            _kato_query_from(rng, src, tokens, event_offsets, pattern_event_offsets, id_of_rank, rank_of_id, inv)
        )
        sources.append(src)
    return states, np.asarray(sources, dtype=np.int64)


# ---------------------------------------------------------------------------- chunks shape
def _chunks_patterns(rng: np.random.Generator, n: int):
    by_rank = [f"sym_{i}" for i in range(CHUNK_VOCAB)]  # not zero-padded: sorted order != rank
    vocab, id_of_rank = _local_ids(by_rank)
    weights = _zipf_weights(CHUNK_VOCAB, CHUNK_ZIPF)
    alias = _Alias(weights)
    tokens = np.empty(n * CHUNK_LEN, dtype=np.int32)
    step = 1 << 20
    for start in range(0, len(tokens), step):
        stop = min(len(tokens), start + step)
        tokens[start:stop] = id_of_rank[alias.draw(rng, stop - start)]
    offsets = np.arange(0, n * CHUNK_LEN + 1, CHUNK_LEN, dtype=np.int64)
    return vocab, id_of_rank, alias, tokens, offsets


def _chunks_queries(rng: np.random.Generator, count: int, tokens, offsets, id_of_rank, alias):
    n = len(offsets) - 1
    states, sources = [], []
    for _ in range(count):
        src = int(rng.integers(n))
        state = tokens[offsets[src] : offsets[src + 1]].copy()
        replaced = int(rng.integers(CHUNK_REPLACED[0], CHUNK_REPLACED[1] + 1))
        for pos in rng.choice(CHUNK_LEN, size=replaced, replace=False).tolist():
            new = state[pos]
            while new == state[pos]:  # a replacement really changes the token
                new = id_of_rank[int(alias.draw(rng, 1)[0])]
            state[pos] = new
        states.append([state[i : i + 1] for i in range(CHUNK_LEN)])
        sources.append(src)
    return states, np.asarray(sources, dtype=np.int64)


# ---------------------------------------------------------------------------- entry point
def generate_workload(n_patterns: int, n_queries: int, shape: str = "kato", seed: int = 42) -> Workload:
    """Generates ``n_patterns`` patterns and ``n_queries`` queries of the given shape.

    Deterministic for a given ``(n_patterns, n_queries, shape, seed)`` and NumPy version.
    A million ``kato`` patterns take a few seconds and about 130 MB (int32 tokens)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    if n_patterns < 1:
        raise ValueError(f"n_patterns must be >= 1, got {n_patterns}")
    if n_queries < 0:
        raise ValueError(f"n_queries must be >= 0, got {n_queries}")
    pattern_rng = np.random.default_rng([seed, 0])
    query_rng = np.random.default_rng([seed, 1])
    if shape == "kato":
        vocab, id_of_rank, weights, tokens, offsets, event_offsets, pattern_event_offsets = _kato_patterns(
            pattern_rng, n_patterns
        )
        states, sources = _kato_queries(
            query_rng, n_queries, tokens, offsets, event_offsets, pattern_event_offsets, id_of_rank, weights
        )
    else:
        vocab, id_of_rank, alias, tokens, offsets = _chunks_patterns(pattern_rng, n_patterns)
        event_offsets = pattern_event_offsets = None
        states, sources = _chunks_queries(query_rng, n_queries, tokens, offsets, id_of_rank, alias)
    vocab_array = np.array(vocab, dtype=object)
    queries = [np.concatenate(events).astype(np.int32) for events in states]
    query_events = [[vocab_array[ev].tolist() for ev in events] for events in states]
    return Workload(
        shape=shape,
        seed=seed,
        vocab=vocab,
        tokens=tokens,
        offsets=offsets,
        queries=queries,
        query_events=query_events,
        query_sources=sources,
        event_offsets=event_offsets,
        pattern_event_offsets=pattern_event_offsets,
    )


def generate_queries(
    wl: Workload, count: int, stream: int
) -> Tuple[List[np.ndarray], List[List[List[str]]], np.ndarray]:
    """``count`` more queries for ``wl``, made as ``generate_workload`` makes its own, from the
    stream ``[wl.seed, stream]`` (``stream`` >= 3: 0 and 1 are the workload's, 2 the benchmark's
    samples). Returns (flattened states as int32 local ids, the states as events of symbols, the
    source pattern of each)."""
    if stream < 3:
        raise ValueError(f"stream must be >= 3 (0-2 are taken), got {stream}")
    rng = np.random.default_rng([wl.seed, stream])
    if wl.shape == "kato":
        _, id_of_rank, weights = kato_vocab()
        states, sources = _kato_queries(
            rng, count, wl.tokens, wl.offsets, wl.event_offsets, wl.pattern_event_offsets, id_of_rank, weights
        )
    else:
        _, id_of_rank = _local_ids([f"sym_{i}" for i in range(CHUNK_VOCAB)])
        alias = _Alias(_zipf_weights(CHUNK_VOCAB, CHUNK_ZIPF))
        states, sources = _chunks_queries(rng, count, wl.tokens, wl.offsets, id_of_rank, alias)
    vocab_array = wl._vocab_array
    queries = [np.concatenate(events).astype(np.int32) for events in states]
    events = [[vocab_array[ev].tolist() for ev in evs] for evs in states]
    return queries, events, sources


# ---------------------------------------------------------------------------- kato shape in chunks
def kato_vocab() -> Tuple[List[str], np.ndarray, np.ndarray]:
    """The ``kato`` shape's (sorted vocabulary, rank -> local id, Zipf weight by rank)."""
    by_rank = [f"tok_{i}" for i in range(KATO_WORDS)] + [f"VCTR|{i:04x}" for i in range(KATO_VECTORS)]
    vocab, id_of_rank = _local_ids(by_rank)
    return vocab, id_of_rank, _zipf_weights(len(by_rank), KATO_ZIPF)


@dataclass
class KatoChunk:
    """Patterns ``start .. start + n_patterns`` of a chunked ``kato`` workload, in CSR form with
    offsets local to the chunk (``offsets[0] == 0``); local ids as in :func:`kato_vocab`."""

    index: int
    start: int
    tokens: np.ndarray  # int32
    offsets: np.ndarray  # int64, n_patterns + 1
    event_offsets: np.ndarray
    pattern_event_offsets: np.ndarray

    @property
    def n_patterns(self) -> int:
        return len(self.offsets) - 1

    @property
    def stop(self) -> int:
        return self.start + self.n_patterns

    def query(self, rng: np.random.Generator, local: int) -> List[np.ndarray]:
        """A query (its events, local ids) made from pattern ``start + local`` as
        ``generate_workload`` makes its queries."""
        _, id_of_rank, weights = kato_vocab()
        return _kato_query_from(
            rng,
            local,
            self.tokens,
            self.event_offsets,
            self.pattern_event_offsets,
            id_of_rank,
            _rank_of_id(id_of_rank),
            1.0 / weights,
        )


#: Events drawn at a time by :func:`iter_kato_chunks` (bounds its temporaries to a few tens of MB).
CHUNK_DRAW_EVENTS = 1 << 14


def iter_kato_chunks(n_patterns: int, chunk: int, seed: int = 42) -> Iterator[KatoChunk]:
    """``n_patterns`` ``kato`` patterns, ``chunk`` at a time; chunk ``c`` comes from the stream
    ``[seed, 0, c]``, so any chunk can be regenerated alone. Same shape and vocabulary as
    ``generate_workload(..., "kato")`` (not the same patterns: that one uses one stream and
    draws more events at a time)."""
    if n_patterns < 1 or chunk < 1:
        raise ValueError(f"n_patterns and chunk must be >= 1, got {n_patterns} and {chunk}")
    for c, start in enumerate(range(0, n_patterns, chunk)):
        count = min(chunk, n_patterns - start)
        _, _, _, tokens, offsets, event_offsets, pattern_event_offsets = _kato_patterns(
            np.random.default_rng([seed, 0, c]), count, CHUNK_DRAW_EVENTS
        )
        yield KatoChunk(c, start, tokens, offsets, event_offsets, pattern_event_offsets)
