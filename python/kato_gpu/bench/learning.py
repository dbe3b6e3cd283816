"""Learning, after a metric's queries: new patterns one ``add_new_pattern`` call at a time (each
timed), then one timed ``sync_cpu_to_gpu()`` that promotes them all."""

from __future__ import annotations

import gc
import time
from typing import IO, Any, Dict, List, Optional, Tuple

import numpy as np

from .._progress import Progress
from .options import BenchOptions
from .workload import Workload, generate_workload, pattern_names

#: Seed offset of the learned patterns' workload (a stream distinct from the loaded patterns').
LEARN_SEED_OFFSET = 1_000_003


def learn_workload(opts: BenchOptions) -> Optional[Workload]:
    """The patterns learned one by one: ``opts.learn + 1`` patterns of the same shape (the extra
    one is the warm-up), from another seed; None when learning is off."""
    if opts.learn <= 0:
        return None
    return generate_workload(opts.learn + 1, 0, opts.shape, opts.seed + LEARN_SEED_OFFSET)


def learn(matcher, lw: Workload, n_loaded: int, opts: BenchOptions, err: IO[str]) -> Tuple[Dict[str, Any], List[str]]:
    """Learns ``lw``'s patterns into ``matcher`` one ``add_new_pattern`` call at a time (timed
    each), then promotes them with one ``sync_cpu_to_gpu()`` (timed). Pattern ``k`` of ``lw`` is
    named ``pattern_name(n_loaded + k)``: after every loaded name, so none collides. Pattern 0 is
    the untimed warm-up; it is removed again before the timed calls."""
    count = lw.n_patterns - 1
    # Built before timing: the events as KATO passes them (lists of lists of str).
    events = [lw.pattern_events(k) for k in range(lw.n_patterns)]
    names = pattern_names(n_loaded, n_loaded + lw.n_patterns)
    problems: List[str] = []
    before = len(matcher)

    if not matcher.add_new_pattern(names[0], events[0]) or not matcher.remove_pattern(names[0]):
        problems.append(f"warm-up pattern {names[0]} was not learned and removed")
    times_ns = np.empty(count, dtype=np.int64)
    refused = 0
    add = matcher.add_new_pattern
    clock = time.perf_counter_ns
    gc.collect()
    with Progress(count, label="learning", unit="patterns", stream=err, enabled=opts.progress) as bar:
        for start in range(0, count, 1000):
            stop = min(count, start + 1000)
            for k in range(start, stop):
                name, ev = names[k + 1], events[k + 1]
                t0 = clock()
                added = add(name, ev)
                t1 = clock()
                times_ns[k] = t1 - t0
                refused += not added
            bar.update(stop - start)
    learned = len(matcher) - before
    if refused:
        problems.append(f"add_new_pattern refused {refused:,} of {count:,} new patterns")
    if learned != count:
        problems.append(f"the matcher grew by {learned:,} patterns, {count:,} were learned")
    recent_before = matcher.patterns_since_sync

    t0 = time.perf_counter_ns()
    promoted = matcher.sync_cpu_to_gpu()
    promote_ns = time.perf_counter_ns() - t0
    if promoted != recent_before:
        problems.append(f"sync_cpu_to_gpu promoted {promoted:,} patterns, {recent_before:,} were recent")

    us = times_ns.astype(np.float64) / 1e3
    total_s = float(times_ns.sum()) / 1e9
    stats = matcher.get_stats()
    result = {
        "patterns": count,
        "warmup_calls": 1,
        "learned": learned,
        "mean_pattern_len": float(lw.lengths[1:].mean()),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
        "mean_us": float(us.mean()),
        "min_us": float(us.min()),
        "total_s": total_s,
        "patterns_per_s": count / total_s if total_s > 0 else None,
        "promotion": {
            "ms": promote_ns / 1e6,
            "patterns": int(promoted),
            "us_per_pattern": promote_ns / 1e3 / promoted if promoted else None,
            "bulk_device": stats.get("bulk_tier_device"),
        },
        "matcher_patterns_after": len(matcher),
        "bulk_tier_patterns_after": stats.get("bulk_tier_patterns"),
        "recent_tier_patterns_after": stats.get("recent_tier_patterns"),
    }
    return result, problems
