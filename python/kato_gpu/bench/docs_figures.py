"""The operational figures of docs/OPERATIONS.md, computed from a ``kato-gpu bench --json`` report:
``python -m kato_gpu.bench.docs_figures REPORT.json``.

Prints, as Markdown, for each metric of the run: the query latency (median, p95), the scan cost per
pattern and per query, the load rate, one learn's p50/p99 and the promotion, the query cost a sync
threshold T adds (T/2 recent patterns scanned on average, T at worst), and the CPU alert threshold
OPERATIONS.md suggests (twice the measured p95). Every number is derived from the report alone, so
the figures of a document produced this way are those of one named run.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

__all__ = ["figures", "render", "main"]

#: The sync thresholds of OPERATIONS.md's sizing table.
SYNC_THRESHOLDS = (100, 1_000, 10_000)


def _duration(ms: float) -> str:
    """A duration in the unit a reader expects: ns, µs, ms or s, three significant digits."""
    if ms >= 1_000:
        return f"{ms / 1e3:.3g} s"
    if ms >= 1:
        return f"{ms:.3g} ms"
    if ms >= 1e-3:
        return f"{ms * 1e3:.3g} µs"
    return f"{ms * 1e6:.3g} ns"


def figures(report: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per metric, the figures as numbers (milliseconds unless the key names another unit)."""
    n = report["workload"]["n_patterns"]
    out: Dict[str, Dict[str, Any]] = {}
    for metric, result in report["results"].items():
        kato = result["engines"]["kato_gpu"]
        per_pattern_ms = kato["median_ms"] / n
        row: Dict[str, Any] = {
            "patterns": n,
            "threshold": report["options"]["threshold"],
            "median_ms": kato["median_ms"],
            "p95_ms": kato["p95_ms"],
            "matches_per_query": kato["mean_matches"],
            "scan_ns_per_pattern": per_pattern_ms * 1e6,
            "load_patterns_per_s": result["load"]["patterns_per_s"],
            "alert_cpu_p99_seconds": 2 * kato["p95_ms"] / 1e3,
            "sync_threshold_cost_ms": {t: (t / 2 * per_pattern_ms, t * per_pattern_ms) for t in SYNC_THRESHOLDS},
        }
        learning = result.get("learning")
        if learning:
            row["learn_p50_us"] = learning["p50_us"]
            row["learn_p99_us"] = learning["p99_us"]
            row["promotion_ms"] = learning["promotion"]["ms"]
            row["promoted"] = learning["promotion"]["patterns"]
        sweep = result.get("thresholds")
        if sweep:
            row["sweep_ns_per_pattern"] = {r["threshold"]: r["median_ms"] / n * 1e6 for r in sweep["rows"]}
        out[metric] = row
    return out


def render(report: Dict[str, Any], source: Optional[str] = None) -> str:
    """The figures as Markdown (``source``: how to name the report, e.g. its file)."""
    env = report.get("environment", {})
    lines: List[str] = [
        f"Figures of `kato-gpu bench` ({source or 'report'}): {report['workload']['n_patterns']:,} "
        f"{report['workload']['shape']} patterns, {report['workload']['n_queries']} queries, "
        f"kato_gpu {env.get('kato_gpu', '?')}, {env.get('usable_cpus') or env.get('cpu_count')} CPUs"
        + ("" if report.get("ok") else " -- THE RUN FOUND DIFFERENCES: do not quote it"),
        "",
        "| metric | query median (p95) | scan per pattern | load | one learn p50 (p99) | promotion |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    figs = figures(report)
    for metric, f in figs.items():
        learn = (
            f"{f['learn_p50_us']:.3g} µs ({f['learn_p99_us']:.3g} µs)" if "learn_p50_us" in f else "not run (--learn 0)"
        )
        promo = f"{_duration(f['promotion_ms'])} for {f['promoted']:,}" if "promotion_ms" in f else "–"
        lines.append(
            f"| {metric} | {_duration(f['median_ms'])} ({_duration(f['p95_ms'])}) | "
            f"{_duration(f['scan_ns_per_pattern'] / 1e6)} | {f['load_patterns_per_s']:,.0f} patterns/s | {learn} | {promo} |"
        )
    lines += ["", "Query cost a sync threshold T adds (recent tier scanned on the CPU), average (worst):", ""]
    lines.append("| T | " + " | ".join(f"`{m}`" for m in figs) + " |")
    lines.append("|---:|" + "---:|" * len(figs))
    for t in SYNC_THRESHOLDS:
        cells = [
            f"{_duration(f['sync_threshold_cost_ms'][t][0])} ({_duration(f['sync_threshold_cost_ms'][t][1])})"
            for f in figs.values()
        ]
        lines.append(f"| {t:,} | " + " | ".join(cells) + " |")
    lines += ["", "CPU query p99 alert (`kato_cpu_query_duration_seconds`, 2 × the measured p95):", ""]
    for metric, f in figs.items():
        lines.append(f"- `{metric}`: `> {f['alert_cpu_p99_seconds']:.3g}`")
    sweeps = {m: f["sweep_ns_per_pattern"] for m, f in figs.items() if "sweep_ns_per_pattern" in f}
    if sweeps:
        lines += ["", "Scan cost per pattern against the threshold:", ""]
        lines.append("| threshold | " + " | ".join(f"`{m}`" for m in sweeps) + " |")
        lines.append("|---:|" + "---:|" * len(sweeps))
        for t in next(iter(sweeps.values())):
            lines.append(f"| {t:g} | " + " | ".join(_duration(s[t] / 1e6) for s in sweeps.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kato_gpu.bench.docs_figures REPORT.json  (from kato-gpu bench --json)", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as fh:
        report = json.load(fh)
    sys.stdout.write(render(report, args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
