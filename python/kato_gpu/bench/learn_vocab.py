"""`kato-gpu learn-bench`: the cost of one learn as the vocabulary grows.

KATO invents symbols all the time (``VCTR|<hash>`` tokens), so a learn that brings one new symbol
is its normal case. For each vocabulary size and store (memory, file), this times
``HybridGPUMatcher.add_new_pattern`` of a KATO-shaped pattern with one new symbol, and with known
symbols only, and reports p50 / p99 / max per learn. A file store's cost per learn must not grow
with the vocabulary (it appends to a log); the in-memory one must stay in microseconds.
"""

from __future__ import annotations

import gc
import random
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

from .. import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder


def _percentiles(samples: List[float]) -> Dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50_us": at(0.50) * 1e6, "p99_us": at(0.99) * 1e6, "max_us": ordered[-1] * 1e6}


def _measure(store: str, vocab_size: int, learns: int, seed: int, directory: Path) -> Dict[str, object]:
    rng = random.Random(seed)
    path = directory / f"vocab-{store}-{vocab_size}.json"
    encoder = SymbolVocabularyEncoder(path if store == "file" else None)
    # Grow the vocabulary in large calls (one store write each), as a bulk load would.
    step = 50_000
    for start in range(0, vocab_size, step):
        encoder.encode_ids([f"VCTR|{k:08x}" for k in range(start, min(vocab_size, start + step))])
    matcher = HybridGPUMatcher(encoder, GPUConfig(enabled=False, enable_background_sync=False))
    known = [f"VCTR|{k:08x}" for k in range(min(vocab_size, 200))]
    timings: Dict[str, List[float]] = {"new_symbol": [], "known_symbols": []}
    collecting = gc.isenabled()
    gc.disable()
    try:
        for k in range(learns):
            for kind in ("new_symbol", "known_symbols"):
                events = [sorted(rng.sample(known, 8)), sorted(rng.sample(known, 8))]
                if kind == "new_symbol":
                    events[1] = sorted(events[1] + [f"NEW|{kind}|{k:08x}"])
                started = time.perf_counter()
                matcher.add_new_pattern(f"PTRN|{kind}|{k:08d}", events)
                timings[kind].append(time.perf_counter() - started)
    finally:
        if collecting:
            gc.enable()
    row: Dict[str, object] = {"store": store, "vocab_size": vocab_size, "learns": learns}
    for kind, samples in timings.items():
        row.update({f"{kind}_{key}": value for key, value in _percentiles(samples).items()})
    return row


def run_learn_bench(
    vocab_sizes: Sequence[int], stores: Sequence[str], learns: int, seed: int = 7
) -> List[Dict[str, object]]:
    """One row per (store, vocabulary size)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="kato-gpu-learn-bench-") as tmp:
        for store in stores:
            for size in vocab_sizes:
                rows.append(_measure(store, size, learns, seed, Path(tmp)))
    return rows


def format_learn_table(rows: Sequence[Dict[str, object]]) -> str:
    lines = [
        "| store | vocabulary | learns | one new symbol p50 / p99 / max (µs) | known symbols p50 / p99 / max (µs) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['vocab_size']:,} | {r['learns']:,} | "
            f"{r['new_symbol_p50_us']:.1f} / {r['new_symbol_p99_us']:.1f} / {r['new_symbol_max_us']:.1f} | "
            f"{r['known_symbols_p50_us']:.1f} / {r['known_symbols_p99_us']:.1f} / {r['known_symbols_max_us']:.1f} |"
        )
    return "\n".join(lines)
