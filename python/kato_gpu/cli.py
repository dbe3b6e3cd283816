"""The ``kato-gpu`` command line.

``kato-gpu bench``: loads a seeded workload into kato_gpu, times the same queries through
kato_gpu, RapidFuzz and difflib, and checks kato_gpu's results against the exact references
(exit status 1 on any difference, 2 when rapidfuzz is missing); then times learning new
patterns one ``add_new_pattern`` call at a time and their promotion (``--learn``); optionally a
threshold sweep (``--thresholds``), one batch call against single calls (``--batch``), latency
on smaller prefixes of the workload (``--sizes``) and the capacity figure (``--plot FILE``, PNG or
SVG; ``bench/plot.py``).

Output files (``--json``, ``--plot``) are checked when the arguments are parsed: a path that cannot
be written is a usage error (exit status 2) before any work, like every other bad argument.

``kato-gpu scale-bench``: loads millions of KATO-shaped patterns a chunk at a time and reports
memory, load time and query latency, verifying results on seeded samples (``bench/scale.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence, Tuple, Union

__all__ = ["main", "build_parser"]

#: What ``--plot`` writes, by the file's extension.
PLOT_FORMATS = (".png", ".svg")
#: ``--plot``'s threshold sweep unless ``--thresholds`` says otherwise.
PLOT_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


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
    """A comma-separated list of thresholds in [0, 1], e.g. ``0,0.1,0.2``; ``none``: no sweep."""
    if text.strip().lower() == "none":
        return ()
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


def _output_path(text: str) -> str:
    """A file the command will write when it ends: checked now, so that a benchmark of minutes is
    not run for a result that cannot be saved (a usage error, exit status 2)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    path = os.path.abspath(text)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the directory {folder!r} does not exist")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the file is not writable")
    if not os.path.exists(path) and not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the directory {folder!r} is not writable")
    return text


def _plot_path(text: str) -> str:
    """A figure file: PNG or SVG, by its extension."""
    if os.path.splitext(text)[1].lower() not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(f"expected a file name ending in .png or .svg, got {text!r}")
    return _output_path(text)


def _sizes(text: str) -> Tuple[int, ...]:
    """A comma-separated list of pattern counts, e.g. ``1000,10000``."""
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got {text!r}")
    return tuple(sorted(set(_positive_int(p) for p in parts)))


# ------------------------------------------------------------------ options several commands share
def _add_patterns(p: argparse.ArgumentParser, default: int, help: str = "number of patterns to load") -> None:
    p.add_argument("--patterns", type=_positive_int, default=default, metavar="N", help=help)


def _add_queries(p: argparse.ArgumentParser, default: int, help: str) -> None:
    p.add_argument("--queries", type=_positive_int, default=default, metavar="Q", help=help)


def _add_metric(p: argparse.ArgumentParser, help: str = "similarity metric(s) to run") -> None:
    p.add_argument("--metric", choices=("lcs", "difflib", "both"), default="both", help=help)


def _add_threshold(
    p: argparse.ArgumentParser, help: str = "recall threshold: patterns with similarity >= this match"
) -> None:
    p.add_argument("--threshold", type=_threshold, default=0.1, help=help)


def _add_seed(p: argparse.ArgumentParser, default: int = 42) -> None:
    p.add_argument("--seed", type=int, default=default, help="workload seed")


def _add_json(p: argparse.ArgumentParser, help: str = "also write every number as JSON to PATH") -> None:
    p.add_argument(
        "--json",
        dest="json_path",
        type=_output_path,
        default=None,
        metavar="PATH",
        help=help + " (checked before the run: an unwritable PATH is a usage error)",
    )


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")


def _metrics(args: argparse.Namespace, both: Tuple[str, ...] = ("lcs", "difflib")) -> Tuple[str, ...]:
    return both if args.metric == "both" else (args.metric,)


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
            "for difflib. With --plot, also draws latency against N and against the threshold. "
            "Exit status: 0 verified, 1 a result differs, 2 rapidfuzz (or matplotlib for --plot) missing "
            "or bad arguments."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_patterns(bench, 100_000)
    _add_queries(bench, 20, "number of timed queries (plus one untimed warm-up)")
    bench.add_argument(
        "--shape",
        choices=("kato", "chunks"),
        default="kato",
        help="kato: KATO's benchmark data (200 symbols, 2-5 events of 3-15 sorted tokens); "
        "chunks: 5-token patterns from a 50,000-symbol Zipf vocabulary",
    )
    _add_metric(bench)
    _add_threshold(bench)
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
    _add_seed(bench)
    _add_json(bench)
    bench.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="GPUConfig.device of the benchmarked matchers: auto (the GPU when usable), cpu, or gpu (exit "
        "status 2 without a usable GPU)",
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
        "e.g. 0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9; none: no sweep; default: none, or that list with --plot",
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
    bench.add_argument(
        "--plot",
        dest="plot_path",
        type=_plot_path,
        default=None,
        metavar="FILE",
        help="also draw the capacity figure into FILE (.png or .svg): per metric, median query latency against "
        "the number of patterns (--sizes) and against the threshold (--thresholds), kato_gpu beside RapidFuzz "
        "and difflib. Needs matplotlib: pip install 'kato-gpu[plot]'",
    )
    bench.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        metavar="N1,N2,...",
        help="latency against N: also time the same queries on the first N1, N2, ... loaded patterns (each below "
        "--patterns; lcs results checked whole against RapidFuzz, difflib results for order and threshold); "
        "default with --plot: --patterns/100 and --patterns/10",
    )
    _add_progress(bench)

    predict = commands.add_parser(
        "predict-bench",
        help="end to end: time KATO's prediction tuples through kato_gpu against KATO's Python path, verified",
        description=(
            "Loads a seeded KATO-shaped workload, then for each query times HybridGPUMatcher.match_predictions "
            "(every prediction above the threshold, KATO's tuples built) against KATO's Python path "
            "(similarity, then extract_prediction_info) over a random sample of patterns, extrapolated to N. "
            "Every sampled pattern's tuple must equal kato_gpu's. Exit status: 0 verified, 1 a tuple differs, "
            "2 bad arguments."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_patterns(predict, 100_000)
    _add_queries(predict, 10, "number of timed queries (plus one untimed warm-up)")
    _add_threshold(predict, "recall threshold of the predictions")
    predict.add_argument(
        "--sample",
        type=_positive_int,
        default=500,
        metavar="K",
        help="patterns per query run through KATO's Python path (timed, extrapolated, compared)",
    )
    _add_metric(predict, "difflib: KATO's _process_with_original; lcs: its RapidFuzz token path (rounded)")
    _add_seed(predict)
    _add_json(predict, "also write the medians and mismatch counts as JSON to PATH")
    _add_progress(predict)
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
        "--patterns",
        type=_positive_int,
        default=None,
        metavar="N",
        help="number of patterns to load (default: 10,000,000; 200,000 with --shards)",
    )
    scale.add_argument(
        "--shards",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="K",
        help="instead: one in-process matcher against kato_gpu.distributed.ShardedMatcher(K) on a local Ray "
        "cluster for each K (e.g. --shards 1 2 4): load time, memory, query latency, the scatter-gather "
        "overhead per query, every result compared with the in-process matcher's (needs ray; "
        "bench/sharded.py). Uses --patterns, --queries (default 30 here), --metric, --threshold, --limit, "
        "--seed, --json",
    )
    scale.add_argument(
        "--shape",
        choices=("kato", "chunks"),
        default="kato",
        help="with --shards: the workload's shape (chunks: 5-symbol patterns over a 50,000-symbol vocabulary, "
        "which shows the per-shard vocabularies' cost)",
    )
    scale.add_argument(
        "--queries",
        type=_positive_int,
        default=None,
        metavar="Q",
        help="number of timed queries, plus one untimed warm-up per call (default: 10; 30 with --shards)",
    )
    _add_metric(scale, "similarity metric(s), one matcher at a time")
    _add_threshold(scale, "recall threshold of the timed queries")
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
    _add_seed(scale)
    _add_json(scale)
    _add_progress(scale)

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
    _add_seed(learn, 7)
    _add_json(learn, "also write the rows as JSON to PATH")

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
    _add_patterns(kato_bench, 10_000, "patterns learned")
    _add_queries(kato_bench, 20, "prediction requests")
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
    _add_threshold(kato_bench, "the session's recall_threshold")
    kato_bench.add_argument("--max-predictions", type=_positive_int, default=100, help="the session's max_predictions")
    _add_seed(kato_bench)
    kato_bench.add_argument(
        "--session-config",
        type=_json_object,
        default=None,
        metavar="JSON",
        help='more session settings, e.g. \'{"filter_pipeline": ["length", "jaccard"]}\'',
    )
    _add_json(kato_bench, "also write the results as JSON to PATH")
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
    metrics = _metrics(args)
    if args.shards:
        from .bench.sharded import DEFAULT_PATTERNS, ShardBenchOptions, run_sharded

        return run_sharded(
            ShardBenchOptions(
                shards=tuple(args.shards),
                shape=args.shape,
                patterns=args.patterns or DEFAULT_PATTERNS,
                queries=args.queries or 30,
                metrics=metrics,
                threshold=args.threshold,
                limit=args.limit,
                seed=args.seed,
                json_path=args.json_path,
                progress=not args.no_progress,
            )
        )
    from .bench.scale import ScaleOptions, run_scale

    return run_scale(
        ScaleOptions(
            patterns=args.patterns or 10_000_000,
            queries=args.queries or 10,
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

    return run_predictions(
        args.patterns,
        args.queries,
        args.threshold,
        args.sample,
        _metrics(args, ("difflib", "lcs")),
        args.seed,
        args.json_path,
        progress=not args.no_progress,
    )


def default_sizes(patterns: int) -> Tuple[int, ...]:
    """The smaller sizes of ``--plot``'s latency-against-N panel: N/100 and N/10 (those >= 100)."""
    return tuple(n for n in (patterns // 100, patterns // 10) if n >= 100)


def _bench(args: argparse.Namespace) -> int:
    from .bench.runner import BenchOptions, run

    if args.plot_path is not None:
        from .bench.plot import require_matplotlib

        if not require_matplotlib(sys.stderr):
            return 2
    sizes = args.sizes
    if sizes is None:
        sizes = default_sizes(args.patterns) if args.plot_path is not None else ()
    too_big = [n for n in sizes if n >= args.patterns]
    if too_big:
        print(
            f"kato-gpu bench: error: --sizes must be below --patterns ({args.patterns:,}): {too_big}", file=sys.stderr
        )
        return 2
    opts = BenchOptions(
        patterns=args.patterns,
        queries=args.queries,
        shape=args.shape,
        metrics=_metrics(args),
        threshold=args.threshold,
        max_predictions=args.max_predictions,
        difflib_sample=args.difflib_sample,
        seed=args.seed,
        json_path=args.json_path,
        device=args.device,
        load_chunk=args.load_chunk,
        progress=not args.no_progress,
        learn=args.learn,
        thresholds=PLOT_THRESHOLDS if args.thresholds is None and args.plot_path is not None else args.thresholds or (),
        batch=args.batch,
        batch_limit=args.batch_limit,
        batch_dicts=args.batch_dicts,
        sizes=tuple(sizes),
        plot_path=args.plot_path,
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
