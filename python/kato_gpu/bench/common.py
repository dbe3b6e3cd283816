"""What every benchmark shares: exit codes, metric names, seed streams, process facts and the
rapidfuzz dependency check."""

from __future__ import annotations

import os
import platform
from typing import IO, Any, Dict, Optional, Sequence, Tuple

import numpy as np

#: Seed streams: 0 and 1 make a workload's patterns and queries (``workload``, where scale-bench's
#: queries come from stream 1 too); ``[seed, SAMPLE_STREAM, q]`` is query q's difflib sample (main
#: path, threshold sweep, scale-bench); ``[seed, BATCH_STREAM]`` makes the batch states and
#: ``[seed, BATCH_SAMPLE_STREAM, k]`` the difflib sample that checks batch state k.
SAMPLE_STREAM = 2
BATCH_STREAM = 3
BATCH_SAMPLE_STREAM = 4

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_MISSING_DEPENDENCY = 2

METRICS = ("lcs", "difflib")
METRIC_FORMULAS = {
    "lcs": "2.0*LCS(p, s)/(len(p)+len(s)), LCS = rapidfuzz LCSseq.similarity",
    "difflib": "difflib.SequenceMatcher(None, p, s, autojunk=False).ratio()",
}
MAX_REPORTED = 10  # mismatch descriptions kept per metric


def require_rapidfuzz(command: str, err: IO[str]) -> Optional[Any]:
    """The ``rapidfuzz`` module, or None after telling on ``err`` how to install it (``command``
    names the benchmark that needs it)."""
    try:
        import rapidfuzz
        from rapidfuzz import process  # noqa: F401
        from rapidfuzz.distance import LCSseq  # noqa: F401
    except ImportError:
        print(
            f"kato-gpu {command} needs rapidfuzz, which is not installed. Install it with:\n"
            "    pip install 'kato-gpu[bench]'",
            file=err,
        )
        return None
    return rapidfuzz


# ---------------------------------------------------------------------------- small helpers
def _rss_bytes() -> Optional[int]:
    """Resident set size from /proc/self/status (None where that file does not exist)."""
    try:
        with open("/proc/self/status", "r", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _mb(n: Optional[float]) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.1f} MB"


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def _summary(times_s: Sequence[float]) -> Dict[str, float]:
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(np.mean(ms)),
        "min_ms": float(np.min(ms)),
        "max_ms": float(np.max(ms)),
    }


def _cpu_counts() -> Tuple[Optional[int], Optional[int]]:
    usable = None
    if hasattr(os, "sched_getaffinity"):
        try:
            usable = len(os.sched_getaffinity(0))
        except OSError:
            usable = None
    return os.cpu_count(), usable


def _versions(kato_gpu, rapidfuzz) -> Dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "rapidfuzz": getattr(rapidfuzz, "__version__", "?"),
        "kato_gpu": getattr(kato_gpu, "__version__", "?"),
    }


def sample_indices(seed: int, stream: int, q: int, n: int, size: int) -> np.ndarray:
    """The seeded sample ``[seed, stream, q]``: ``size`` distinct pattern indices, sorted."""
    rng = np.random.default_rng([seed, stream, q])
    return np.sort(rng.choice(n, size=size, replace=False))
