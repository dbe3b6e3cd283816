"""The ``kato-gpu`` command line.

``kato-gpu bench``: loads a seeded workload into kato_gpu, times the same queries through
kato_gpu, RapidFuzz and difflib, and checks kato_gpu's results against the exact references
(exit status 1 on any difference, 2 when rapidfuzz is missing); then times learning new
patterns one ``add_new_pattern`` call at a time and their promotion (``--learn``); optionally a
threshold sweep (``--thresholds``) and one batch call against single calls (``--batch``).

``kato-gpu scale-bench``: loads millions of KATO-shaped patterns a chunk at a time and reports
memory, load time and query latency, verifying results on seeded samples (``bench/scale.py``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence, Tuple, Union

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _limit(text: str) -> Optional[int]:
    if text.strip().lower() == "all":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _thresholds(text: str) -> Tuple[float, ...]:
    """A comma-separated list of thresholds in [0, 1], e.g. ``0,0.1,0.2``."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers in [0, 1], got {text!r}")
    return tuple(_threshold(p) for p in parts)


def _batch_limit(text: str) -> Union[int, None, str]:
    if text.strip().lower() == "same":
        return "same"
    try:
        return _limit(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, 'all' or 'same', got {text!r}") from None


def _version() -> str:
    try:
        from . import __version__

        return __version__
    except Exception:  # the native extension may be what is broken; --version should still answer
        try:
            from importlib.metadata import version

            return version("kato-gpu")
        except Exception:
            return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kato-gpu",
        description="kato_gpu: exact, parallel pattern matching for KATO (difflib and LCS similarity).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser(
        "bench",
        help="time kato_gpu against RapidFuzz and difflib on a seeded workload and verify its results",
        description=(
            "Generates a seeded workload, loads it into a HybridGPUMatcher and runs the same queries "
            "through kato_gpu, RapidFuzz's process.cdist (LCSseq) and a difflib loop over a random "
            "sample (extrapolated to N). Checks kato_gpu's results against the exact reference of each "
            "metric: the whole result against RapidFuzz for lcs (bit for bit), the sample against difflib "
            "for difflib. Exit status: 0 verified, 1 a result differs, 2 rapidfuzz missing or bad arguments."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument(
        "--patterns", type=_positive_int, default=100_000, metavar="N", help="number of patterns to load"
    )
    bench.add_argument(
        "--queries",
        type=_positive_int,
        default=20,
        metavar="Q",
        help="number of timed queries (plus one untimed warm-up)",
    )
    bench.add_argument(
        "--shape",
        choices=("kato", "chunks"),
        default="kato",
        help="kato: KATO's benchmark data (200 symbols, 2-5 events of 3-15 sorted tokens); "
        "chunks: 5-token patterns from a 50,000-symbol Zipf vocabulary",
    )
    bench.add_argument(
        "--metric", choices=("lcs", "difflib", "both"), default="both", help="similarity metric(s) to run"
    )
    bench.add_argument(
        "--threshold", type=_threshold, default=0.1, help="recall threshold: patterns with similarity >= this match"
    )
    bench.add_argument(
        "--max-predictions",
        type=_limit,
        default="all",
        metavar="K|all",
        help="return at most K matches per query ('all': every match)",
    )
    bench.add_argument(
        "--difflib-sample",
        type=_non_negative_int,
        default=2000,
        metavar="K",
        help="patterns per query run through difflib (timed, extrapolated to N, and checked); 0 skips difflib",
    )
    bench.add_argument("--seed", type=int, default=42, help="workload seed")
    bench.add_argument(
        "--json", dest="json_path", default=None, metavar="PATH", help="also write every number as JSON to PATH"
    )
    bench.add_argument(
        "--load-chunk",
        type=_positive_int,
        default=50_000,
        metavar="N",
        help="patterns per add_patterns_csr call while loading",
    )
    bench.add_argument(
        "--learn",
        type=_non_negative_int,
        default=20_000,
        metavar="N",
        help="after each metric's queries, learn N new patterns of the same shape into the "
        "loaded matcher one add_new_pattern call at a time (each timed: p50/p99/max/mean "
        "and patterns/s), then time one sync_cpu_to_gpu() promotion of them; 0 skips it",
    )
    bench.add_argument(
        "--thresholds",
        type=_thresholds,
        default=None,
        metavar="T1,T2,...",
        help="threshold sweep: after each metric's timed queries, time the same queries through "
        "match_patterns_arrays(state, T, max_predictions) for every T (median, p95, "
        "matches/query) and verify every result (lcs: whole result against RapidFuzz, whose "
        "cdist runs once per query and is the reference column; difflib: the difflib sample); "
        "e.g. 0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9; none: no sweep",
    )
    bench.add_argument(
        "--batch",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="batch comparison: N new query states (another seed stream) through one batch call "
        "(match_patterns_batch_arrays) against N single match_patterns_arrays calls, "
        "best of 3 runs each (states/s both ways and the ratio); every batch result must equal "
        "its single call's exactly and 5 are checked against the oracle. 0 skips it",
    )
    bench.add_argument(
        "--batch-limit",
        type=_batch_limit,
        default="same",
        metavar="K|all|same",
        help="max_predictions of the batch part ('same': --max-predictions). A batch returns every "
        "state's result at once: with 'all', 1000 states over 1M patterns at threshold 0.1 are "
        "about 620M matches (~7.5 GB held at once); use e.g. 100",
    )
    bench.add_argument(
        "--batch-dicts",
        action="store_true",
        help="also time the public match_patterns_batch, which builds a dict per match (keep --batch-limit small)",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress output on stderr")

    predict = commands.add_parser(
        "predict-bench",
        help="end to end: time KATO's prediction tuples through kato_gpu against KATO's Python path, verified",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    predict.add_argument("--patterns", type=_positive_int, default=100_000, metavar="N")
    predict.add_argument("--queries", type=_positive_int, default=10, metavar="Q")
    predict.add_argument("--threshold", type=_threshold, default=0.1)
    predict.add_argument(
        "--sample",
        type=_positive_int,
        default=500,
        metavar="K",
        help="patterns per query run through KATO's Python path (timed, extrapolated, compared)",
    )
    predict.add_argument("--metric", choices=("lcs", "difflib", "both"), default="both")
    predict.add_argument("--seed", type=int, default=42)
    predict.add_argument("--json", dest="json_path", default=None, metavar="PATH")
    scale = commands.add_parser(
        "scale-bench",
        help="load millions of KATO-shaped patterns a chunk at a time, report memory, load time and query "
        "latency, and verify results on seeded samples",
        description=(
            "Generates KATO-shaped patterns (the bench's kato workload: same generator, vocabulary and names) "
            "CHUNK at a time, loading each chunk with one add_patterns_csr call at once, so the benchmark itself "
            "never holds more than a chunk. Reports the load time (inside add_patterns_csr, and wall time with "
            "generation), patterns/s, the matcher's memory_bytes, process RSS before/after and the peak (VmHWM), "
            "then the latency of match_patterns_arrays(state, THRESHOLD, None) and (..., LIMIT) with matches per "
            "query. Every result is checked: order, limit = head of the whole result, and SAMPLE stored patterns "
            "per query against the exact oracle (RapidFuzz LCSseq for lcs, difflib for difflib). One metric at a "
            "time. Exit status: 0 verified, 1 a result differs, 2 rapidfuzz missing or bad arguments."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    scale.add_argument(
        "--patterns", type=_positive_int, default=10_000_000, metavar="N", help="number of patterns to load"
    )
    scale.add_argument(
        "--queries",
        type=_positive_int,
        default=10,
        metavar="Q",
        help="number of timed queries (plus one untimed warm-up per call)",
    )
    scale.add_argument(
        "--metric",
        choices=("lcs", "difflib", "both"),
        default="both",
        help="similarity metric(s), one matcher at a time",
    )
    scale.add_argument("--threshold", type=_threshold, default=0.1, help="recall threshold of the timed queries")
    scale.add_argument(
        "--limit",
        type=_positive_int,
        default=100,
        metavar="K",
        help="max_predictions of the second timed call (the first returns every match)",
    )
    scale.add_argument(
        "--chunk",
        type=_positive_int,
        default=100_000,
        metavar="N",
        help="patterns generated and loaded (one add_patterns_csr call) at a time",
    )
    scale.add_argument(
        "--sample",
        type=_non_negative_int,
        default=20_000,
        metavar="K",
        help="stored patterns per query checked against the exact oracle (their tokens are kept)",
    )
    scale.add_argument(
        "--promote",
        choices=("each", "end"),
        default="each",
        help="each: add_patterns_csr(promote=True) per chunk; end: promote=False, then one "
        "sync_cpu_to_gpu() (counted in the load time)",
    )
    scale.add_argument("--seed", type=int, default=42, help="workload seed")
    scale.add_argument(
        "--json", dest="json_path", default=None, metavar="PATH", help="also write every number as JSON to PATH"
    )
    scale.add_argument("--no-progress", action="store_true", help="no progress output on stderr")

    learn = commands.add_parser(
        "learn-bench",
        help="the cost of one learn (add_new_pattern) as the vocabulary grows, per store",
        description=(
            "For each vocabulary size and store, grows a vocabulary to that size, then times add_new_pattern of "
            "KATO-shaped patterns bringing one new symbol (KATO's normal case: VCTR| tokens), and with known symbols "
            "only; reports p50 / p99 / max per learn. The file store lives in a temporary directory."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    learn.add_argument(
        "--vocab-sizes",
        type=lambda text: [_non_negative_int(v) for v in text.split(",")],
        default=[10_000, 100_000, 300_000],
        metavar="N,N,...",
        help="vocabulary sizes before the timed learns",
    )
    learn.add_argument(
        "--stores", choices=("memory", "file", "both"), default="both", help="vocabulary store(s) to time"
    )
    learn.add_argument("--learns", type=_positive_int, default=5_000, metavar="L", help="timed learns of each kind")
    learn.add_argument("--seed", type=int, default=7)
    learn.add_argument("--json", dest="json_path", default=None, metavar="PATH", help="also write the rows as JSON")

    kato_bench = commands.add_parser(
        "kato-bench",
        help="KATO's own serving path (GET /sessions/{id}/predictions), unmodified and on kato_gpu, verified",
        description=(
            "Serves KATO from its source (its FastAPI app under uvicorn, a Redis server, chdb as its ClickHouse), "
            "loads N KATO-shaped patterns through KATO's learn, then times the same prediction requests over HTTP "
            "on the same stores, first unmodified, then with KATO_GPU_ACCELERATE=1. Every response is compared "
            "with KATO's; exits 1 on any difference. Needs redis-server and KATO's dependencies (make kato-deps)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    kato_bench.add_argument("--kato-src", default=None, metavar="DIR", help="KATO's source (default: $KATO_SRC)")
    kato_bench.add_argument("--patterns", type=_positive_int, default=10_000, metavar="N", help="patterns learned")
    kato_bench.add_argument("--queries", type=_positive_int, default=20, metavar="Q", help="prediction requests")
    kato_bench.add_argument(
        "--kato-queries",
        type=_positive_int,
        default=None,
        metavar="K",
        help="requests served by unmodified KATO (the first K of the Q; default Q); only those are compared",
    )
    kato_bench.add_argument(
        "--mode",
        choices=("token", "difflib"),
        default="token",
        help="KATO's matching: token (its default) or difflib (KATO_USE_FAST_MATCHING=false)",
    )
    kato_bench.add_argument("--threshold", type=_threshold, default=0.1, help="the session's recall_threshold")
    kato_bench.add_argument("--max-predictions", type=_positive_int, default=100, help="the session's max_predictions")
    kato_bench.add_argument("--seed", type=int, default=42, help="workload seed")
    kato_bench.add_argument(
        "--session-config",
        type=_json_object,
        default=None,
        metavar="JSON",
        help='more session settings, e.g. \'{"filter_pipeline": ["length", "jaccard"]}\'',
    )
    kato_bench.add_argument(
        "--json", dest="json_path", default=None, metavar="PATH", help="also write the results as JSON to PATH"
    )
    return parser


def _kato_bench(args: argparse.Namespace) -> int:
    from .bench.kato_bench import KatoBenchOptions, run_kato_bench

    return run_kato_bench(
        KatoBenchOptions(
            kato_src=args.kato_src,
            patterns=args.patterns,
            queries=args.queries,
            mode=args.mode,
            threshold=args.threshold,
            max_predictions=args.max_predictions,
            kato_queries=args.kato_queries,
            seed=args.seed,
            json_path=args.json_path,
            session_config=args.session_config,
        )
    )


def _learn_bench(args: argparse.Namespace) -> int:
    import json

    from .bench.learn_vocab import format_learn_table, run_learn_bench

    stores = ("memory", "file") if args.stores == "both" else (args.stores,)
    rows = run_learn_bench(args.vocab_sizes, stores, args.learns, args.seed)
    print(format_learn_table(rows))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


def _scale_bench(args: argparse.Namespace) -> int:
    from .bench.scale import ScaleOptions, run_scale

    metrics = ("lcs", "difflib") if args.metric == "both" else (args.metric,)
    return run_scale(
        ScaleOptions(
            patterns=args.patterns,
            queries=args.queries,
            metrics=metrics,
            threshold=args.threshold,
            limit=args.limit,
            chunk=args.chunk,
            sample=args.sample,
            seed=args.seed,
            promote=args.promote,
            json_path=args.json_path,
            progress=not args.no_progress,
        )
    )


def _predict_bench(args: argparse.Namespace) -> int:
    from .bench.predictions import run_predictions

    metrics = ("difflib", "lcs") if args.metric == "both" else (args.metric,)
    return run_predictions(args.patterns, args.queries, args.threshold, args.sample, metrics, args.seed, args.json_path)


def _bench(args: argparse.Namespace) -> int:
    from .bench.runner import BenchOptions, run

    metrics = ("lcs", "difflib") if args.metric == "both" else (args.metric,)
    opts = BenchOptions(
        patterns=args.patterns,
        queries=args.queries,
        shape=args.shape,
        metrics=metrics,
        threshold=args.threshold,
        max_predictions=args.max_predictions,
        difflib_sample=args.difflib_sample,
        seed=args.seed,
        json_path=args.json_path,
        load_chunk=args.load_chunk,
        progress=not args.no_progress,
        learn=args.learn,
        thresholds=args.thresholds or (),
        batch=args.batch,
        batch_limit=args.batch_limit,
        batch_dicts=args.batch_dicts,
    )
    return run(opts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``kato-gpu``; returns the exit status (argparse errors give 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.version:
        print(f"kato-gpu {_version()}")
        return 0
    if args.command == "bench":
        return _bench(args)
    if args.command == "predict-bench":
        return _predict_bench(args)
    if args.command == "scale-bench":
        return _scale_bench(args)
    if args.command == "learn-bench":
        return _learn_bench(args)
    if args.command == "kato-bench":
        return _kato_bench(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
