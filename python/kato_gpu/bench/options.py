"""``kato-gpu bench``'s options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from .common import METRICS


@dataclass
class BenchOptions:
    patterns: int = 100_000
    queries: int = 20
    shape: str = "kato"
    metrics: Tuple[str, ...] = METRICS
    threshold: float = 0.1
    max_predictions: Optional[int] = None  # None: every match
    difflib_sample: int = 2000
    seed: int = 42
    json_path: Optional[str] = None
    device: str = "auto"  # GPUConfig.device of every matcher the benchmark builds
    load_chunk: int = 50_000
    progress: bool = True
    learn: int = 20_000  # patterns learned one add_new_pattern call at a time; 0: no learning
    thresholds: Tuple[float, ...] = ()  # threshold sweep; empty: none
    batch: int = 0  # states in the batch comparison; 0: none
    batch_limit: Union[int, None, str] = "same"  # max_predictions of the batch part; "same": max_predictions
    batch_dicts: bool = False  # also time the public match_patterns_batch (a dict per match)
    sizes: Tuple[int, ...] = ()  # latency against N: smaller prefixes of the workload also timed; empty: none
    plot_path: Optional[str] = None  # the capacity figure (.png or .svg); None: no figure


def batch_limit(opts: BenchOptions) -> Optional[int]:
    """The batch part's max_predictions (``"same"``: the bench's ``max_predictions``)."""
    return opts.max_predictions if opts.batch_limit == "same" else opts.batch_limit  # type: ignore[return-value]
