"""Bulk loading of learned patterns into a KATO instance's stores, through KATO's own code.

What KATO's learn (``POST /sessions/{id}/learn``) stores for a sequence observed with no emotives
and no metadata is what :func:`load_patterns` stores: it builds KATO's ``Pattern`` from the events
(symbols sorted within an event, as KATO's observe does by default), skips patterns of fewer than
two symbols (KATO learns none), and calls KATO's ``SuperKnowledgeBase.learnPattern`` (the Redis
keys, and the ClickHouse row prepared by KATO's ``ClickHouseWriter``). Two things differ from a
server learning one request at a time, neither in what is stored: the work is shared among
processes (see :func:`load_patterns`), and the rows are inserted in large batches.

chdb data belongs to one process at a time, so the loader runs where no KATO server holds the same
data directory: ``python -m kato_gpu.kato_host.loader --kato-src DIR --chdb-path DIR --node-id N
--input FILE.jsonl`` (one JSON list of events per line; ``REDIS_URL`` and ``REDIS_ENABLED`` in the
environment as for the server). :meth:`KatoServer.bulk_load
<kato_gpu.kato_host.process.KatoServer.bulk_load>` runs it for a served instance. The last line
it prints is a JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

__all__ = ["load_patterns", "main"]


def _kato_kb_id(node_id: str) -> str:
    # The knowledge base id KATO's processor manager gives a node: "{node}_{service}", cleaned.
    from kato.processors.processor_manager import ProcessorManager

    manager = ProcessorManager(base_processor_id=os.environ.get("SERVICE_NAME", "kato"))
    return manager._get_processor_id(node_id)


class _RowCollector:
    """Stands in for the ClickHouse client in a loader worker: keeps what KATO's ClickHouseWriter
    inserts, for the parent process to write to chdb (one process owns the chdb data)."""

    def __init__(self) -> None:
        self.column_names: Optional[list[str]] = None
        self.rows: list[list[Any]] = []

    def insert(self, table: str, data: Sequence[Sequence[Any]], column_names: Sequence[str], **_ignored: Any) -> None:
        if table != "kato.patterns_data":
            raise ValueError(f"the loader only collects kato.patterns_data rows, not {table}")
        self.column_names = list(column_names)
        self.rows.extend(list(row) for row in data)


def _memoize_minhash_permutations() -> None:
    # datasketch draws a MinHash's permutations from a RandomState(seed) on every construction:
    # a pure function of (num_perm, seed) that is most of the cost of preparing a row. The same
    # arrays, computed once.
    from datasketch import MinHash

    if getattr(MinHash, "_kato_host_memoized", False):
        return
    original = MinHash._init_permutations
    cache: dict = {}

    def init_permutations(self: Any, num_perm: int) -> Any:
        key = (num_perm, self.seed)
        if key not in cache:
            cache[key] = original(self, num_perm)
        return cache[key]

    MinHash._init_permutations = init_permutations
    MinHash._kato_host_memoized = True


def _learn_shard(kb_id: str, shard: list[tuple[int, list[list[str]]]]) -> dict[str, Any]:
    """Learns one shard's patterns with KATO's SuperKnowledgeBase (real Redis, collected rows)."""
    import kato.storage.connection_manager as connection_manager
    from kato.config.settings import get_settings
    from kato.informatics.knowledge_base import SuperKnowledgeBase
    from kato.representations.pattern import Pattern

    _memoize_minhash_permutations()
    collector = _RowCollector()
    connection_manager.get_clickhouse_client = lambda: collector
    settings = get_settings()
    kb = SuperKnowledgeBase(kb_id, settings.learning.persistence, settings=settings)
    kb.clickhouse_writer.batch_size = 1 << 30
    results: list[tuple[int, Optional[str], bool]] = []
    for index, events in shard:
        pattern = Pattern(events)
        if len(pattern) <= 1:
            results.append((index, None, False))
            continue
        is_new = kb.learnPattern(pattern, emotives=[], metadata={})
        results.append((index, f"PTRN|{pattern.name}", bool(is_new)))
    kb.clickhouse_writer.flush_if_pending()
    return {"results": results, "column_names": collector.column_names, "rows": collector.rows}


def load_patterns(
    node_id: str,
    sequences: Iterable[Sequence[Sequence[str]]],
    sort_symbols: bool = True,
    batch_size: int = 20000,
    workers: Optional[int] = None,
) -> dict[str, Any]:
    """Learn each sequence for ``node_id`` with KATO's knowledge base code (KATO importable, the
    chdb client installed, no chdb session open yet in this process).

    ``workers`` processes (default: twice the CPU count, as much of the time is Redis round
    trips) each learn a share of the sequences with KATO's ``SuperKnowledgeBase.learnPattern``
    against the real Redis; KATO's Redis updates are atomic and commute (SETNX decides which
    worker stores a repeated pattern), so the outcome is the one of learning in order. The rows
    KATO's ``ClickHouseWriter`` prepares come back to this process, which inserts them
    ``batch_size`` at a time.

    Returns a report: ``kb_id``, ``sequences``, ``learned`` (new patterns), ``relearned``
    (repeats: frequency incremented), ``skipped`` (under two symbols: KATO learns none),
    ``names`` (the pattern name per sequence, ``None`` when skipped), ``seconds``,
    ``patterns_per_second``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if workers is None:
        workers = 2 * (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    started = time.perf_counter()
    kb_id = _kato_kb_id(node_id)

    prepared: list[tuple[int, list[list[str]]]] = []
    for index, sequence in enumerate(sequences):
        events = []
        for event in sequence:
            if isinstance(event, str) or not all(isinstance(symbol, str) for symbol in event):
                raise TypeError(f"sequence {index}: an event must be a list of str, not {event!r}")
            if not event:
                # KATO's observe ignores an empty observation; a silent drop here would hide a bug.
                raise ValueError(f"sequence {index}: empty event")
            events.append(sorted(event) if sort_symbols else list(event))
        prepared.append((index, events))

    shards = [prepared[i::workers] for i in range(workers)]
    shards = [shard for shard in shards if shard]
    # fork: the workers inherit KATO on sys.path and the environment; no chdb session is open yet.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=max(1, len(shards)), mp_context=context) as pool:
        outcomes = list(pool.map(_learn_shard, [kb_id] * len(shards), shards))

    import clickhouse_connect

    client = clickhouse_connect.get_client(database="kato")
    names: list[Optional[str]] = [None] * len(prepared)
    learned = relearned = skipped = 0
    for outcome in outcomes:
        for index, name, is_new in outcome["results"]:
            names[index] = name
            if name is None:
                skipped += 1
            elif is_new:
                learned += 1
            else:
                relearned += 1
        rows = outcome["rows"]
        for i in range(0, len(rows), batch_size):
            client.insert("kato.patterns_data", rows[i : i + batch_size], column_names=outcome["column_names"])
    seconds = time.perf_counter() - started
    count = learned + relearned
    return {
        "kb_id": kb_id,
        "sequences": len(names),
        "learned": learned,
        "relearned": relearned,
        "skipped": skipped,
        "names": names,
        "seconds": seconds,
        "patterns_per_second": count / seconds if seconds > 0 else 0.0,
        "workers": len(shards),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kato_gpu.kato_host.loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kato-src", required=True)
    parser.add_argument("--chdb-path", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--input", required=True, help="JSON lines: one list of events (lists of str) per line")
    parser.add_argument(
        "--no-sort", action="store_true", help="keep symbol order within events (KATO sort_symbols=false)"
    )
    parser.add_argument("--batch-size", type=int, default=20000, help="rows per chdb insert")
    parser.add_argument("--workers", type=int, default=None, help="learning processes (default: 2 x CPUs)")
    args = parser.parse_args(argv)

    kato_src = Path(args.kato_src).resolve()
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(kato_src))
    from kato_gpu.kato_host.backends import install_chdb_client

    install_chdb_client(args.chdb_path, init_sql=kato_src / "config" / "clickhouse" / "init.sql")

    def read() -> Iterable[list]:
        with open(args.input, encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)

    report = load_patterns(
        args.node_id, read(), sort_symbols=not args.no_sort, batch_size=args.batch_size, workers=args.workers
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
