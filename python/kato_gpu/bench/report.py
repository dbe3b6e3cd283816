"""The benchmark's text tables and its JSON report."""

from __future__ import annotations

import json
from typing import IO, Any, Dict, Optional

import numpy as np

from .common import EXIT_MISMATCH, EXIT_OK, _mb
from .options import BenchOptions


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def table(metric: str, result: Dict[str, Any], opts: BenchOptions, out: IO[str]) -> None:
    load = result["load"]
    rate = load["patterns_per_s"]
    print(f"\nmetric {metric}: {result['formula']}", file=out)
    print(
        f"  load: {opts.patterns:,} patterns in {load['seconds']:.2f} s "
        f"({rate:,.0f} patterns/s); matcher memory {_mb(load['memory_bytes'])}; "
        f"process RSS growth {_mb(load['rss_growth_bytes'])}",
        file=out,
    )
    header = f"  {'engine':<48} {'median ms':>11} {'p95 ms':>11} {'kato_gpu speedup':>17} {'matches/query':>14}"
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for key in ("kato_gpu", "rapidfuzz", "difflib"):
        e = result["engines"].get(key)
        if e is None:
            continue
        speed = "-" if key == "kato_gpu" else (f"{e['speedup']:,.1f}x" if e["speedup"] else "n/a")
        matches = f"{e['mean_matches']:,.1f}" + ("*" if key == "difflib" else "")
        print(f"  {e['label']:<48} {e['median_ms']:>11,.2f} {e['p95_ms']:>11,.2f} {speed:>17} {matches:>14}", file=out)
    notes = []
    rf = result["engines"].get("rapidfuzz")
    if rf is not None:
        notes.append(f"rapidfuzz: {rf['role']}")
    dl = result["engines"].get("difflib")
    if dl is not None:
        notes.append(f"difflib: {dl['role']}; times and * match counts scaled by N/{dl['sample']:,}")
    kg = result["engines"]["kato_gpu"]
    if kg.get("effective_gb_s") is not None and kg.get("stream_gb_s"):
        notes.append(
            f"kato_gpu: {kg['lcs_kernel']} LCS kernel; the scan reads {_mb(kg['symbol_bytes'])} of symbols: "
            f"{kg['effective_gb_s']:,.2f} GB/s effective at the median against {kg['stream_gb_s']:,.2f} GB/s "
            f"streaming them (read loop, all cores, fastest of 5): "
            f"{kg['effective_gb_s'] / kg['stream_gb_s']:.0%} of the limit"
        )
    if kg.get("names_median_ms") is not None:
        notes.append(f"kato_gpu: building res.names (not timed above) took {kg['names_median_ms']:.2f} ms median")
    v = result["verification"]
    if not v["queries_with_differences"]:
        what = []
        if v["queries_checked_whole_result"]:
            what.append(f"whole result bit-identical to rapidfuzz on {v['queries_checked_whole_result']} queries")
        if v["sampled_pairs_checked"]:
            what.append(
                f"{v['sampled_pairs_checked']:,} sampled patterns agree with "
                f"{'difflib' if metric == 'difflib' else 'LCSseq.similarity'}"
            )
        notes.append("verified: " + ("; ".join(what) if what else "result order and threshold"))
    else:
        notes.append(f"MISMATCH on {v['queries_with_differences']} queries")
    if not v.get("learning_ok", True):
        notes.append("LEARNING FAILED: " + "; ".join(t for t in v["first_differences"] if "learning:" in t))
    for text in notes:
        print(f"  {text}", file=out)
    if result.get("thresholds"):
        _sweep_table(metric, result["thresholds"], out)
    if result.get("sizes"):
        _sizes_table(metric, result["sizes"], out)
    if result.get("batch"):
        _batch_table(metric, result["batch"], out)
    learning = result.get("learning")
    if learning:
        rate = learning["patterns_per_s"]
        promo = learning["promotion"]
        print(
            f"  learning: {learning['patterns']:,} patterns, one add_new_pattern call each "
            f"(mean {learning['mean_pattern_len']:.1f} symbols): p50 {learning['p50_us']:,.1f} us, "
            f"p99 {learning['p99_us']:,.1f} us, max {learning['max_us']:,.1f} us, "
            f"mean {learning['mean_us']:,.1f} us ({'n/a' if rate is None else f'{rate:,.0f}'} patterns/s)",
            file=out,
        )
        per = promo["us_per_pattern"]
        print(
            f"  promotion: sync_cpu_to_gpu() of {promo['patterns']:,} patterns in {promo['ms']:,.2f} ms "
            f"({'n/a' if per is None else f'{per:.2f} us'} per pattern, bulk tier on {promo['bulk_device']}); "
            f"matcher now holds {learning['matcher_patterns_after']:,}",
            file=out,
        )


def _sweep_table(metric: str, sweep: Dict[str, Any], out: IO[str]) -> None:
    limit = sweep["max_predictions"]
    print(
        f"  threshold sweep ({metric}, max_predictions={'all' if limit is None else limit}): "
        f"kato_gpu {sweep['kato_gpu']} against {sweep['cdist']['label']}",
        file=out,
    )
    header = (
        f"  {'threshold':>9} {'kato_gpu median ms':>19} {'p95 ms':>9} {'matches/query':>14} "
        f"{'cdist ms':>9} {'speed-up':>9}"
    )
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for row in sweep["rows"]:
        speed = "n/a" if row["speedup"] is None else f"{row['speedup']:,.1f}x"
        print(
            f"  {row['threshold']:>9g} {row['median_ms']:>19,.2f} {row['p95_ms']:>9,.2f} "
            f"{row['mean_matches']:>14,.1f} {row['cdist_median_ms']:>9,.2f} {speed:>9}"
            + ("" if row["ok"] else "  MISMATCH"),
            file=out,
        )
    v = sweep["verification"]
    if v["ok"]:
        what = (
            f"{v['whole_results_checked']} whole results bit-identical to rapidfuzz"
            if metric == "lcs"
            else f"{v['sampled_pairs_checked']:,} sampled patterns agree with difflib"
        )
        print(
            f"  cdist: {sweep['cdist']['role']}; median of one call per query (same for every row); verified: {what}",
            file=out,
        )
    else:
        print(f"  MISMATCH in {v['results_with_differences']} (threshold, query) results", file=out)


def _sizes_table(metric: str, sizes: Dict[str, Any], out: IO[str]) -> None:
    print(f"  latency against N ({metric}, same queries on the first N patterns):", file=out)
    header = f"  {'N':>12} {'kato_gpu median ms':>19} {'p95 ms':>9} {'cdist ms':>9} {'difflib ms*':>12} {'matches/query':>14}"
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for row in sizes["rows"]:
        dl = row["difflib_median_ms"]
        print(
            f"  {row['patterns']:>12,} {row['kato_gpu']['median_ms']:>19,.2f} {row['kato_gpu']['p95_ms']:>9,.2f} "
            f"{row['rapidfuzz']['median_ms']:>9,.2f} {'n/a' if dl is None else f'{dl:,.1f}':>12} "
            f"{row['mean_matches']:>14,.1f}",
            file=out,
        )
    v = sizes["verification"]
    verdict = "verified" if v["ok"] else f"MISMATCH in {v['results_with_differences']} results"
    print(f"  {verdict}; * difflib: {sizes['difflib']}", file=out)


def _batch_table(metric: str, batch: Dict[str, Any], out: IO[str]) -> None:
    limit = batch["max_predictions"]
    print(
        f"  batch ({metric}): {batch['states']:,} new states, threshold {batch['threshold']}, "
        f"max_predictions={'all' if limit is None else limit}, {batch['mean_matches']:,.1f} matches/state; "
        f"best of {batch['runs']} runs",
        file=out,
    )
    rows = [("single", batch["single"], None), ("batch", batch["batch"], batch["speedup"])]
    if batch.get("dicts"):
        rows.append(("dicts", batch["dicts"], batch["dicts"]["speedup"]))
    for _, part, speed in rows:
        rate = "n/a" if part["states_per_s"] is None else f"{part['states_per_s']:,.1f}"
        ratio = "" if speed is None else f"  ({speed:,.2f}x the single calls)"
        print(f"    {part['api']:<78} {part['best_s']:>9,.3f} s {rate:>12} states/s{ratio}", file=out)
    v = batch["verification"]
    if v["ok"]:
        print(
            f"  verified: {v['compared_with_single']:,} batch results identical to the single calls; "
            f"{v['oracle_checked']} checked against {v['oracle']}",
            file=out,
        )
    else:
        print(f"  MISMATCH on {v['states_with_differences']} batch states", file=out)


def finish_report(report: Dict[str, Any], json_path: Optional[str], out: IO[str], err: IO[str]) -> int:
    """Writes ``report`` as JSON to ``json_path`` (when given), lists the first differences of any
    metric whose verification failed, and returns the exit status."""
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(_jsonable(report), fh, indent=2)
            fh.write("\n")
        print(f"\nwrote {json_path}", file=out)
    if not report["ok"]:
        print("\nkato_gpu results differ from the exact references:", file=err)
        for r in report["results"].values():
            for text in r["verification"]["first_differences"]:
                print(f"  {text}", file=err)
        return EXIT_MISMATCH
    return EXIT_OK
