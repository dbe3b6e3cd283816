"""The capacity figure of ``kato-gpu bench --plot FILE``: per metric, median query latency against
the number of patterns and against the recall threshold, kato_gpu beside RapidFuzz and difflib.

Drawn from the benchmark's report (the dict ``--json`` writes), so a saved report can be drawn
again: ``python -m kato_gpu.bench.plot REPORT.json FILE.png``. PNG or SVG by the file's extension.
matplotlib is an optional dependency (``pip install 'kato-gpu[plot]'``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any, Dict, List, Optional

__all__ = ["draw", "require_matplotlib", "main"]

#: Line style per engine, the same in every panel.
_STYLE = {
    "kato_gpu": {"color": "#1b6ac9", "marker": "o", "label": "kato_gpu (median; band to p95)"},
    "rapidfuzz": {"color": "#d9730d", "marker": "s", "label": "RapidFuzz cdist LCSseq"},
    "difflib": {"color": "#6b6b6b", "marker": "^", "label": "difflib loop (extrapolated from a sample)"},
}


def require_matplotlib(err: Optional[IO[str]] = None) -> bool:
    """Whether matplotlib can be imported; if not, says on ``err`` how to install it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "kato-gpu bench --plot needs matplotlib, which is not installed. Install it with:\n"
            "    pip install 'kato-gpu[plot]'",
            file=sys.stderr if err is None else err,
        )
        return False
    return True


def _series(ax, key: str, xs: List[float], ys: List[Optional[float]], p95: Optional[List[float]] = None) -> None:
    points = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if not points:
        return
    style = _STYLE[key]
    ax.plot(
        [p[0] for p in points],
        [p[1] for p in points],
        marker=style["marker"],
        color=style["color"],
        label=style["label"],
        linewidth=1.6,
        markersize=4,
    )
    if p95 is not None:
        ax.fill_between(xs, ys, p95, color=style["color"], alpha=0.15, linewidth=0)


def _against_n(ax, metric: str, result: Dict[str, Any]) -> None:
    sizes = result.get("sizes")
    ax.set_title(f"{metric}: latency against N")
    ax.set_xlabel("patterns (N)")
    ax.set_ylabel("ms per query")
    if not sizes or len(sizes["rows"]) < 2:
        ax.text(0.5, 0.5, "one size only\n(run with --sizes)", ha="center", va="center", transform=ax.transAxes)
        return
    rows = sizes["rows"]
    xs = [r["patterns"] for r in rows]
    _series(ax, "kato_gpu", xs, [r["kato_gpu"]["median_ms"] for r in rows], [r["kato_gpu"]["p95_ms"] for r in rows])
    _series(ax, "rapidfuzz", xs, [r["rapidfuzz"]["median_ms"] for r in rows])
    _series(ax, "difflib", xs, [r["difflib_median_ms"] for r in rows])
    ax.set_xscale("log")
    ax.set_yscale("log")


def _against_threshold(ax, metric: str, result: Dict[str, Any], n: int) -> None:
    sweep = result.get("thresholds")
    ax.set_title(f"{metric}: latency against the threshold, N={n:,}")
    ax.set_xlabel("recall threshold")
    ax.set_ylabel("ms per query")
    if not sweep:
        ax.text(
            0.5, 0.5, "no threshold sweep\n(run with --thresholds)", ha="center", va="center", transform=ax.transAxes
        )
        return
    rows = sweep["rows"]
    xs = [r["threshold"] for r in rows]
    _series(ax, "kato_gpu", xs, [r["median_ms"] for r in rows], [r["p95_ms"] for r in rows])
    # Neither reference prunes by the threshold: they score every pattern, so one time per query
    # stands for every threshold.
    _series(ax, "rapidfuzz", xs, [sweep["cdist"]["median_ms"]] * len(xs))
    difflib = result["engines"].get("difflib")
    if difflib is not None:
        _series(ax, "difflib", xs, [difflib["median_ms"]] * len(xs))
    ax.set_yscale("log")


def draw(report: Dict[str, Any], path: str) -> str:
    """Draws the figure of ``report`` (``kato-gpu bench``'s JSON report) into ``path`` (.png or
    .svg); returns ``path``. Raises ImportError without matplotlib, ValueError for another
    extension."""
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"the figure's file must end in .png or .svg, got {path!r}")
    import matplotlib

    matplotlib.use("Agg")  # no display needed; selecting it before pyplot's import always works
    import matplotlib.pyplot as plt

    results = report["results"]
    metrics = list(results)
    n = report["workload"]["n_patterns"]
    fig, axes = plt.subplots(2, len(metrics), figsize=(6.2 * len(metrics), 8.4), squeeze=False)
    for col, metric in enumerate(metrics):
        _against_n(axes[0][col], metric, results[metric])
        _against_threshold(axes[1][col], metric, results[metric], n)
        for row in (0, 1):
            axes[row][col].grid(True, which="both", alpha=0.3)
    # One legend for every panel: the engines are styled the same everywhere.
    legend: Dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=9)
    env = report.get("environment", {})
    opts = report.get("options", {})
    limit = opts.get("max_predictions")
    fig.suptitle(
        f"kato-gpu bench: {report['workload']['shape']} patterns, Q={report['workload']['n_queries']}, "
        f"threshold {opts.get('threshold')} for the N panels, max_predictions {'all' if limit is None else limit}\n"
        f"kato_gpu {env.get('kato_gpu', '?')}, {env.get('usable_cpus') or env.get('cpu_count')} CPUs, "
        f"rapidfuzz {env.get('rapidfuzz', '?')}, python {env.get('python', '?')}"
        + ("" if report.get("ok") else "  -- RESULTS DIFFER FROM THE REFERENCES"),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    # A fixed date keeps an SVG byte-stable for a given report.
    metadata = {"Date": None} if fmt == "svg" else {}
    fig.savefig(path, format=fmt, dpi=120, metadata=metadata)
    plt.close(fig)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m kato_gpu.bench.plot REPORT.json FILE``: draws a saved report."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m kato_gpu.bench.plot REPORT.json FILE.png|FILE.svg", file=sys.stderr)
        return 2
    if not require_matplotlib():
        return 2
    with open(args[0], encoding="utf-8") as fh:
        report = json.load(fh)
    print(f"wrote {draw(report, args[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
