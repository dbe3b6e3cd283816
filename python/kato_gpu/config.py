"""GPU matcher settings: drop-in replacement for KATO's ``kato.config.gpu_settings``.

Same dataclass fields, order and ``KATO_GPU_*`` environment variables as KATO,
plus ``metric`` and ``autojunk``; the defaults are KATO's except
``max_pattern_length`` (see :class:`GPUConfig`). Unlike KATO, a malformed
environment value raises ValueError instead of silently becoming the default:
a typo in a deployment should be loud.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, Optional, TypeVar

from . import _native

__all__ = ["GPUConfig", "DEFAULT_GPU_CONFIG", "METRICS", "DEVICES"]

#: Similarity metrics the matcher implements (the native engine's list).
METRICS = tuple(_native.METRICS)

#: Where the bulk tier may run (``GPUConfig.device``, ``KATO_GPU_DEVICE``): ``auto`` uses a usable
#: GPU and serves from the CPU cores on a host without one; ``cpu`` never touches CUDA; ``gpu``
#: requires the GPU tier (the matcher refuses to start without it).
DEVICES = ("auto", "cpu", "gpu")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

_BOOL_FIELDS = (
    "enabled",
    "fallback_to_cpu",
    "enable_background_sync",
    "log_memory_usage",
    "log_kernel_timing",
    "use_shared_memory",
    "enable_early_termination",
    "autojunk",
)
_INT_FIELDS = ("max_pattern_length", "threads_per_block", "sync_threshold", "sync_interval_seconds")
_FLOAT_FIELDS = ("min_compute_capability", "memory_usage_fraction", "growth_buffer_fraction")

#: Integer settings are counts and sizes the engine holds in 64 bits: anything larger is refused
#: here as out of range (a ValueError), never left to overflow later.
_INT_LIMIT = 2**63

T = TypeVar("T")


def _env_value(name: str) -> Optional[str]:
    """The stripped value of ``name``, or None when unset or blank."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def _parse_env(name: str, default: T, parse: Callable[[str], T], kind: str) -> T:
    value = _env_value(name)
    if value is None:
        return default
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={os.environ[name]!r} is not a valid {kind}") from None


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


def _parse_device(text: str) -> str:
    lowered = text.lower()
    if lowered not in DEVICES:
        raise ValueError(text)
    return lowered


def _parse_metric(text: str) -> str:
    lowered = text.lower()
    if lowered not in METRICS:
        raise ValueError(text)
    return lowered


@dataclass
class GPUConfig:
    """Settings for the kato_gpu pattern matcher.

    Field names and order match KATO's ``GPUConfig``.

    Compatibility notes:
        * ``max_pattern_length`` is a real limit: learning a longer pattern or
          querying a longer state raises ``ValueError`` (nothing is truncated).
          It bounds the time of one exact difflib comparison, which is cubic on
          long repetitive inputs. The default is 10,000 (KATO's 100 was a
          truncation length, not a limit).
        * ``log_memory_usage`` logs the host and device memory after every
          promotion; ``log_kernel_timing`` logs the device part of every query
          answered on a GPU (both at INFO, logger ``kato_gpu``).
        * ``use_shared_memory`` and ``enable_early_termination`` are
          deprecated: they were kernel-tuning hints of KATO's CuPy kernels and
          do nothing here; setting either to ``False`` warns.
        * ``metric`` picks the similarity: ``"difflib"`` (KATO's
          ``SequenceMatcher.ratio``) or ``"lcs"``. ``autojunk`` mirrors
          difflib's option of the same name (KATO uses ``False``).
        * ``enabled=False`` (``KATO_GPU_ENABLED=false``) is KATO's switch for
          its GPU matcher: inside KATO (``KATO_GPU_ACCELERATE``) it turns
          kato_gpu off and KATO's own code answers; a matcher built directly
          still serves, from the CPU cores.
        * ``device`` (``KATO_GPU_DEVICE``) is where kato_gpu's bulk tier runs,
          with kato_gpu on: ``"auto"`` (the GPU when one is usable; a host
          without a GPU is a normal state, logged at INFO), ``"cpu"`` (never
          the GPU, CUDA is not even probed) or ``"gpu"`` (the matcher raises
          ``GPUUnavailableError`` at start without a usable GPU).
    """

    # Feature flags
    enabled: bool = True
    fallback_to_cpu: bool = True
    # Hardware requirements
    min_compute_capability: float = 7.0
    # Memory management; the longest pattern learned and state queried
    max_pattern_length: int = 10_000
    memory_usage_fraction: float = 0.6
    growth_buffer_fraction: float = 0.2
    # Kernel launch shape
    threads_per_block: int = 256
    # Capacity override; None = derive from free device memory
    force_max_patterns: Optional[int] = None
    # CPU tier -> GPU tier sync
    sync_threshold: int = 1000
    sync_interval_seconds: int = 300
    enable_background_sync: bool = True
    # Monitoring
    log_memory_usage: bool = True
    log_kernel_timing: bool = False
    # Kernel tuning hints (accepted for compatibility)
    use_shared_memory: bool = True
    enable_early_termination: bool = True
    # kato_gpu additions
    metric: str = "difflib"
    autojunk: bool = False
    device: str = "auto"

    @classmethod
    def from_env(cls) -> "GPUConfig":
        """Build a validated config from ``KATO_GPU_*`` environment variables.

        Variables (unset or blank -> default): KATO_GPU_ENABLED,
        KATO_GPU_FALLBACK, KATO_GPU_MIN_COMPUTE, KATO_GPU_MAX_PATTERN_LENGTH,
        KATO_GPU_MEMORY_FRACTION, KATO_GPU_GROWTH_FRACTION,
        KATO_GPU_THREADS_PER_BLOCK, KATO_GPU_MAX_PATTERNS (-> None),
        KATO_GPU_SYNC_THRESHOLD, KATO_GPU_SYNC_INTERVAL,
        KATO_GPU_BACKGROUND_SYNC, KATO_GPU_LOG_MEMORY, KATO_GPU_LOG_TIMING,
        KATO_GPU_SHARED_MEMORY, KATO_GPU_EARLY_TERM, KATO_GPU_METRIC,
        KATO_GPU_AUTOJUNK, KATO_GPU_DEVICE (auto/cpu/gpu). Booleans take true/false/1/0/yes/no/on/off in any
        case.

        Raises:
            ValueError: a variable is malformed (the message names it), or the
                resulting config fails :meth:`validate`.
        """
        d = cls()

        def b(name: str, default: bool) -> bool:
            return _parse_env(name, default, _parse_bool, "boolean (true/false/1/0/yes/no/on/off)")

        def i(name: str, default: int) -> int:
            return _parse_env(name, default, int, "integer")

        def f(name: str, default: float) -> float:
            return _parse_env(name, default, float, "number")

        config = cls(
            enabled=b("KATO_GPU_ENABLED", d.enabled),
            fallback_to_cpu=b("KATO_GPU_FALLBACK", d.fallback_to_cpu),
            min_compute_capability=f("KATO_GPU_MIN_COMPUTE", d.min_compute_capability),
            max_pattern_length=i("KATO_GPU_MAX_PATTERN_LENGTH", d.max_pattern_length),
            memory_usage_fraction=f("KATO_GPU_MEMORY_FRACTION", d.memory_usage_fraction),
            growth_buffer_fraction=f("KATO_GPU_GROWTH_FRACTION", d.growth_buffer_fraction),
            threads_per_block=i("KATO_GPU_THREADS_PER_BLOCK", d.threads_per_block),
            force_max_patterns=_parse_env("KATO_GPU_MAX_PATTERNS", None, int, "integer"),
            sync_threshold=i("KATO_GPU_SYNC_THRESHOLD", d.sync_threshold),
            sync_interval_seconds=i("KATO_GPU_SYNC_INTERVAL", d.sync_interval_seconds),
            enable_background_sync=b("KATO_GPU_BACKGROUND_SYNC", d.enable_background_sync),
            log_memory_usage=b("KATO_GPU_LOG_MEMORY", d.log_memory_usage),
            log_kernel_timing=b("KATO_GPU_LOG_TIMING", d.log_kernel_timing),
            use_shared_memory=b("KATO_GPU_SHARED_MEMORY", d.use_shared_memory),
            enable_early_termination=b("KATO_GPU_EARLY_TERM", d.enable_early_termination),
            metric=_parse_env("KATO_GPU_METRIC", d.metric, _parse_metric, "metric (difflib or lcs)"),
            autojunk=b("KATO_GPU_AUTOJUNK", d.autojunk),
            device=_parse_env("KATO_GPU_DEVICE", d.device, _parse_device, "device (auto, cpu or gpu)"),
        )
        config.validate()
        return config

    def __post_init__(self) -> None:
        for name in ("use_shared_memory", "enable_early_termination"):
            if getattr(self, name) is not True:
                warnings.warn(
                    f"GPUConfig.{name} is deprecated and has no effect in kato_gpu", DeprecationWarning, stacklevel=3
                )

    def validate(self) -> None:
        """Check types and ranges.

        Raises:
            TypeError: a field has the wrong type (bools are not numbers here).
            ValueError: a value is out of range.
        """
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value >= _INT_LIMIT:
                raise ValueError(f"{name} is out of range: {value} (must be below 2**63)")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")

        if self.max_pattern_length <= 0:
            raise ValueError("max_pattern_length must be positive")
        if not 0.0 < self.memory_usage_fraction <= 1.0:
            raise ValueError("memory_usage_fraction must be in (0.0, 1.0]")
        if not 0.0 <= self.growth_buffer_fraction <= 1.0:
            raise ValueError("growth_buffer_fraction must be in [0.0, 1.0]")
        if self.threads_per_block <= 0 or self.threads_per_block % 32 != 0:
            raise ValueError("threads_per_block must be a positive multiple of 32")
        if self.threads_per_block > 1024:
            raise ValueError("threads_per_block cannot exceed 1024 (hardware limit)")
        # The sync ranges (threshold 1..=10**9, interval in (0, a year]) are the engine's one rule.
        _native.check_sync_settings(self.sync_threshold, self.sync_interval_seconds, self.enable_background_sync)
        if self.min_compute_capability < 3.0:
            raise ValueError("min_compute_capability too low (must be at least 3.0)")

        if self.force_max_patterns is not None:
            if isinstance(self.force_max_patterns, bool) or not isinstance(self.force_max_patterns, int):
                raise TypeError(
                    f"force_max_patterns must be None or an int, got {type(self.force_max_patterns).__name__}"
                )
            if not 0 < self.force_max_patterns < _INT_LIMIT:
                raise ValueError("force_max_patterns must be None or a positive int below 2**63")

        if not isinstance(self.metric, str):
            raise TypeError(f"metric must be a str, got {type(self.metric).__name__}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {self.metric!r}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a str, got {type(self.device).__name__}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {self.device!r}")

    def to_dict(self) -> Dict[str, Any]:
        """All fields as a plain dict (for status endpoints and logs)."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            "GPUConfig(\n"
            f"  enabled={self.enabled}\n"
            f"  device={self.device}\n"
            f"  min_compute_capability={self.min_compute_capability}\n"
            f"  max_pattern_length={self.max_pattern_length}\n"
            f"  memory_usage_fraction={self.memory_usage_fraction}\n"
            f"  threads_per_block={self.threads_per_block}\n"
            f"  sync_threshold={self.sync_threshold}\n"
            f"  sync_interval={self.sync_interval_seconds}s\n"
            f"  metric={self.metric}\n"
            f"  autojunk={self.autojunk}\n"
            ")"
        )


#: Default configuration instance (same role as KATO's).
DEFAULT_GPU_CONFIG = GPUConfig()

# Guard against the field list drifting from the validation tables above.
assert {f.name for f in fields(GPUConfig)} == set(_BOOL_FIELDS + _INT_FIELDS + _FLOAT_FIELDS) | {
    "force_max_patterns",
    "metric",
    "device",
}
