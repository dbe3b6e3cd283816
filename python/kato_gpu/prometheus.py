"""Prometheus export of the matcher's KPIs (optional: ``pip install kato-gpu[prometheus]``).

``import kato_gpu`` never imports ``prometheus_client``; only this module does.

Usage in a service that already exposes ``prometheus_client.REGISTRY``::

    from kato_gpu.prometheus import register_collector
    register_collector(matcher, sync_manager)

or, to serve our metrics alone (e.g. from an HTTP handler)::

    from kato_gpu.prometheus import render_text
    body = render_text(matcher, sync_manager)

Exported metrics (read from ``matcher.get_kpis()`` at every scrape; nothing is cached):

* histograms ``kato_gpu_query_duration_seconds``, ``kato_cpu_query_duration_seconds``,
  ``kato_gpu_sync_duration_seconds``;
* counters ``kato_patterns_matched_total``, ``kato_patterns_learned_total``,
  ``kato_gpu_sync_events_total``, ``kato_gpu_fallback_events_total`` and
  ``kato_gpu_errors_total{error_type=...}``;
* gauges ``kato_gpu_memory_bytes``, ``kato_gpu_pattern_count``, ``kato_cpu_pattern_count``,
  ``kato_gpu_active``;
* with a sync manager, also the gauges ``kato_gpu_training_mode``,
  ``kato_gpu_background_sync_running``, ``kato_gpu_patterns_pending_sync`` and
  ``kato_gpu_last_sync_timestamp_seconds`` (absent until the first sync), and the counters
  ``kato_gpu_sync_worker_failures_total`` and ``kato_gpu_sync_worker_restarts_total``.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

try:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "kato_gpu.prometheus needs the optional dependency prometheus_client; "
        "install it with: pip install kato-gpu[prometheus]"
    ) from exc

__all__ = ["CONTENT_TYPE", "KatoGpuCollector", "register_collector", "render_text", "unregister_collector"]

logger = logging.getLogger(__name__)

#: The media type of :func:`render_text`'s output (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> HELP text. Counter names keep their ``_total`` suffix here: prometheus_client strips
# it from a CounterMetricFamily's name and adds it back to the sample and HELP/TYPE lines, so
# the exposition shows exactly these names.
_HISTOGRAMS: Tuple[Tuple[str, str], ...] = (
    (
        "kato_gpu_query_duration_seconds",
        "Wall time of pattern-matching queries whose bulk tier was scored on the GPU, in seconds.",
    ),
    (
        "kato_cpu_query_duration_seconds",
        "Wall time of pattern-matching queries scored on CPU cores only (no GPU, or after a fallback), in seconds.",
    ),
    (
        "kato_gpu_sync_duration_seconds",
        "Wall time of promoting the recent (CPU) tier into the bulk (GPU) tier, in seconds.",
    ),
)
_COUNTERS: Tuple[Tuple[str, str], ...] = (
    (
        "kato_patterns_matched_total",
        "Patterns returned as matches (at or above the query threshold), summed over all queries.",
    ),
    ("kato_patterns_learned_total", "Patterns learned into the matcher (added to the recent tier or bulk-loaded)."),
    ("kato_gpu_sync_events_total", "Syncs run: promotions of the recent (CPU) tier into the bulk (GPU) tier."),
    ("kato_gpu_fallback_events_total", "Times the matcher fell back from the GPU to CPU cores after a device failure."),
)
_ERRORS = ("kato_gpu_errors_total", "GPU tier errors, by error type.")
_GAUGES: Tuple[Tuple[str, str], ...] = (
    ("kato_gpu_memory_bytes", "Device memory held by the GPU tier, in bytes (0 without a GPU)."),
    ("kato_gpu_pattern_count", "Patterns held on the GPU and scored there (0 without a GPU)."),
    (
        "kato_cpu_pattern_count",
        "Patterns scored on CPU cores: the recent tier waiting for a sync, plus the bulk tier when no GPU is in use.",
    ),
)
_ACTIVE = ("kato_gpu_active", "1 while the bulk tier is scored on a GPU, 0 on CPU cores only.")
_SYNC_GAUGES: Tuple[Tuple[str, str, str], ...] = (
    (
        "kato_gpu_training_mode",
        "training_mode",
        "1 while the sync manager is in training mode (automatic syncs paused), else 0.",
    ),
    (
        "kato_gpu_background_sync_running",
        "background_sync_running",
        "1 while the background sync thread is running, else 0.",
    ),
    (
        "kato_gpu_patterns_pending_sync",
        "patterns_since_last_sync",
        "Patterns learned since the last sync (not yet promoted to the bulk tier).",
    ),
)
_SYNC_COUNTERS: Tuple[Tuple[str, str, str], ...] = (
    (
        "kato_gpu_sync_worker_failures_total",
        "worker_failures",
        "Failures of the background sync worker (each logged; see /gpu/status for the last error).",
    ),
    (
        "kato_gpu_sync_worker_restarts_total",
        "worker_restarts",
        "Restarts of the background sync worker by its supervisor after a failure.",
    ),
)
_LAST_SYNC = ("kato_gpu_last_sync_timestamp_seconds", "Unix time of the last sync; absent until the first one.")


def _le(bound: Any) -> str:
    """A bucket bound as Prometheus writes it (``+Inf``, ``0.0005``)."""
    if isinstance(bound, str):
        return bound
    return floatToGoString(float(bound))


def _histogram(name: str, doc: str, data: Mapping[str, Any]) -> HistogramMetricFamily:
    buckets: List[Tuple[str, float]] = []
    for pair in data.get("buckets", ()):
        bound, count = pair
        buckets.append((_le(bound), float(count)))
    count = float(data.get("count", buckets[-1][1] if buckets else 0))
    if not buckets or buckets[-1][0] != "+Inf":
        # Prometheus requires the +Inf bucket; it holds every observation.
        buckets.append(("+Inf", count))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(data.get("sum", 0.0)))


def _flag(value: Any) -> float:
    return 1.0 if value else 0.0


class KatoGpuCollector:
    """A ``prometheus_client`` collector over a :class:`~kato_gpu.HybridGPUMatcher`.

    Every scrape calls ``matcher.get_kpis()`` (and ``sync_manager.get_stats()`` when a sync
    manager is given) and turns the values into metric families; it holds no state of its own.
    """

    def __init__(self, matcher: Any, sync_manager: Any = None) -> None:
        if not callable(getattr(matcher, "get_kpis", None)):
            raise TypeError(f"matcher must have get_kpis(), got {type(matcher).__name__}")
        self.matcher = matcher
        self.sync_manager = sync_manager

    def describe(self) -> Iterator[Metric]:
        """The metric names without values, so a registry detects a clash at registration
        (whatever its ``auto_describe``) without running a scrape."""
        for name, doc in _HISTOGRAMS:
            yield HistogramMetricFamily(name, doc)
        for name, doc in _COUNTERS + (_ERRORS,):
            yield CounterMetricFamily(name, doc)
        for name, doc in _GAUGES + (_ACTIVE,):
            yield GaugeMetricFamily(name, doc)
        if self.sync_manager is not None:
            for name, _, doc in _SYNC_GAUGES:
                yield GaugeMetricFamily(name, doc)
            for name, _, doc in _SYNC_COUNTERS:
                yield CounterMetricFamily(name, doc)
            yield GaugeMetricFamily(*_LAST_SYNC)

    def collect(self) -> Iterator[Metric]:
        kpis: Dict[str, Any] = self.matcher.get_kpis()
        for name, doc in _HISTOGRAMS:
            if name in kpis:
                yield _histogram(name, doc, kpis[name])
        for name, doc in _COUNTERS:
            if name in kpis:
                yield CounterMetricFamily(name, doc, value=float(kpis[name]))
        errors = CounterMetricFamily(_ERRORS[0], _ERRORS[1], labels=["error_type"])
        for error_type, n in sorted((kpis.get(_ERRORS[0]) or {}).items()):
            errors.add_metric([str(error_type)], float(n))
        yield errors
        for name, doc in _GAUGES:
            if name in kpis:
                yield GaugeMetricFamily(name, doc, value=float(kpis[name]))
        yield GaugeMetricFamily(_ACTIVE[0], _ACTIVE[1], value=_flag(getattr(self.matcher, "use_gpu", False)))
        if self.sync_manager is not None:
            stats = self.sync_manager.get_stats()
            for name, key, doc in _SYNC_GAUGES:
                if key in stats:
                    yield GaugeMetricFamily(name, doc, value=float(stats[key] or 0))
            for name, key, doc in _SYNC_COUNTERS:
                if key in stats:
                    yield CounterMetricFamily(name, doc, value=float(stats[key]))
            last = stats.get("last_sync_time")
            if last is not None and math.isfinite(float(last)):
                yield GaugeMetricFamily(_LAST_SYNC[0], _LAST_SYNC[1], value=float(last))


# registry -> the collector register_collector put there (weak: a dropped registry is forgotten).
_registered: "weakref.WeakKeyDictionary[CollectorRegistry, KatoGpuCollector]" = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def register_collector(
    matcher: Any, sync_manager: Any = None, registry: Optional[CollectorRegistry] = None
) -> KatoGpuCollector:
    """Registers a :class:`KatoGpuCollector` for ``matcher`` with ``registry``
    (default: ``prometheus_client.REGISTRY``) and returns it.

    A registry holds one kato_gpu collector, since the metric names carry no per-matcher label:

    * registering the same matcher again (with the same or no sync manager) is a no-op that
      returns the collector already there, so a startup hook that runs twice is safe;
    * registering the same matcher with a different sync manager, or a different matcher,
      replaces the previous collector (a service that rebuilds its matcher keeps exporting the
      live one rather than failing on duplicate metric names).

    A kato_gpu collector registered directly with ``registry.register`` is not tracked here; a
    clash with it raises prometheus_client's ``ValueError`` (duplicated timeseries).
    """
    registry = REGISTRY if registry is None else registry
    with _registered_lock:
        existing = _registered.get(registry)
        if existing is not None:
            if existing.matcher is matcher and sync_manager in (None, existing.sync_manager):
                return existing
            logger.info(
                "replacing the kato_gpu Prometheus collector registered for %s",
                "another sync manager" if existing.matcher is matcher else "another matcher",
            )
            _unregister(registry, existing)
        collector = KatoGpuCollector(matcher, sync_manager)
        registry.register(collector)
        _registered[registry] = collector
        return collector


def _unregister(registry: CollectorRegistry, collector: KatoGpuCollector) -> None:
    del _registered[registry]
    try:
        registry.unregister(collector)
    except KeyError:  # already taken out with registry.unregister directly
        pass


def unregister_collector(registry: Optional[CollectorRegistry] = None) -> Optional[KatoGpuCollector]:
    """Takes the collector :func:`register_collector` put in ``registry`` (default:
    ``prometheus_client.REGISTRY``) out again; returns it, or None when there was none."""
    registry = REGISTRY if registry is None else registry
    with _registered_lock:
        existing = _registered.get(registry)
        if existing is not None:
            _unregister(registry, existing)
        return existing


def render_text(matcher: Any, sync_manager: Any = None) -> str:
    """Our metrics alone in the Prometheus text format (media type :data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KatoGpuCollector(matcher, sync_manager))
    return generate_latest(registry).decode("utf-8")
