"""Bulk loading of learned patterns into a KATO instance's stores, through KATO's own code.

What KATO's learn (``POST /sessions/{id}/learn``) stores for a sequence observed with no emotives
and no metadata is what :func:`load_patterns` stores: it builds KATO's ``Pattern`` from the events
(symbols sorted within an event, as KATO's observe does by default), skips patterns of fewer than
two symbols (KATO learns none), and calls KATO's ``SuperKnowledgeBase.learnPattern`` (the Redis
keys, and the ClickHouse row prepared by KATO's ``ClickHouseWriter``). The one difference is
batching: the writer's buffer holds ``batch_size`` rows per insert instead of one, which changes
no row.

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


def load_patterns(
    node_id: str,
    sequences: Iterable[Sequence[Sequence[str]]],
    sort_symbols: bool = True,
    batch_size: int = 10000,
) -> dict[str, Any]:
    """Learn each sequence for ``node_id`` with KATO's knowledge base code (KATO importable, the
    chdb client installed). Returns a report: ``kb_id``, ``sequences``, ``learned`` (new
    patterns), ``relearned`` (repeats: frequency incremented), ``skipped`` (under two symbols),
    ``names`` (the pattern name per sequence, ``None`` when skipped), ``seconds``,
    ``patterns_per_second``."""
    from kato.config.settings import get_settings
    from kato.informatics.knowledge_base import SuperKnowledgeBase
    from kato.representations.pattern import Pattern

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    started = time.perf_counter()
    settings = get_settings()
    kb_id = _kato_kb_id(node_id)
    kb = SuperKnowledgeBase(kb_id, settings.learning.persistence, settings=settings)
    writer = kb.clickhouse_writer
    writer.batch_size = batch_size
    writer.max_buffer_size = batch_size * 10

    names: list[Optional[str]] = []
    learned = relearned = skipped = 0
    for index, sequence in enumerate(sequences):
        events = []
        for event in sequence:
            if isinstance(event, str) or not all(isinstance(symbol, str) for symbol in event):
                raise TypeError(f"sequence {index}: an event must be a list of str, not {event!r}")
            if not event:
                # KATO's observe ignores an empty observation; a silent drop here would hide a bug.
                raise ValueError(f"sequence {index}: empty event")
            events.append(sorted(event) if sort_symbols else list(event))
        pattern = Pattern(events)
        if len(pattern) <= 1:
            skipped += 1
            names.append(None)
            continue
        if kb.learnPattern(pattern, emotives=[], metadata={}):
            learned += 1
        else:
            relearned += 1
        names.append(f"PTRN|{pattern.name}")
    writer.flush_if_pending()
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
    parser.add_argument("--batch-size", type=int, default=10000)
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

    report = load_patterns(args.node_id, read(), sort_symbols=not args.no_sort, batch_size=args.batch_size)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
