"""kato_gpu.prometheus: the KPIs in the Prometheus text format, read back with prometheus_client's
own parser and compared with ``matcher.get_kpis()``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # `make venv` installs it; CI must never skip these tests
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "prometheus_client is not installed (make venv, or pip install kato-gpu[prometheus])", allow_module_level=True
    )

from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, SyncManager
from kato_gpu.prometheus import CONTENT_TYPE, KatoGpuCollector, register_collector, render_text, unregister_collector

HISTOGRAMS = ["kato_gpu_query_duration_seconds", "kato_cpu_query_duration_seconds", "kato_gpu_sync_duration_seconds"]
COUNTERS = [
    "kato_patterns_matched_total",
    "kato_patterns_learned_total",
    "kato_gpu_sync_events_total",
    "kato_gpu_fallback_events_total",
]
GAUGES = ["kato_gpu_memory_bytes", "kato_gpu_pattern_count", "kato_cpu_pattern_count"]
TYPES = {
    **{n: "histogram" for n in HISTOGRAMS},
    **{n: "counter" for n in COUNTERS},
    "kato_gpu_errors_total": "counter",
    **{n: "gauge" for n in GAUGES},
}

PATTERNS = {f"PTRN|{k:03d}": [["a", f"s{k % 7}"], ["b", f"t{k % 3}"], ["c"]] for k in range(40)}
STATES = [["a", "s1", "b"], ["a", "b", "c"], ["zzz"], ["s3", "t2", "c"], ["a", "s5", "b", "t0", "c"]]


def make_matcher(n_bulk: int = 30, n_total: int = len(PATTERNS)):
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(enable_background_sync=False, sync_threshold=1000))
    names = list(PATTERNS)[:n_total]
    for name in names[:n_bulk]:
        assert m.add_new_pattern(name, PATTERNS[name])
    m.sync_cpu_to_gpu()
    for name in names[n_bulk:]:  # left in the recent tier
        assert m.add_new_pattern(name, PATTERNS[name])
    return m


@pytest.fixture
def matcher():
    m = make_matcher()
    matched = sum(len(m.match_patterns(s, 0.3, max_predictions=None)) for s in STATES)
    m.matched = matched  # what kato_patterns_matched_total must say
    return m


def families(text: str):
    """name -> family, as Prometheus' own parser reads the exposition (counter families lose
    their ``_total`` there; their samples keep it)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams, family: str, sample_name: str, **labels) -> float:
    hits = [s.value for s in fams[family].samples if s.name == sample_name and s.labels == labels]
    assert len(hits) == 1, (family, sample_name, labels, fams[family].samples)
    return hits[0]


def counter_family(name: str) -> str:
    return name[: -len("_total")]


def test_every_metric_has_help_and_type_lines(matcher):
    text = render_text(matcher)
    lines = text.splitlines()
    for name, kind in TYPES.items():
        assert f"# TYPE {name} {kind}" in lines, name
        helps = [line for line in lines if line.startswith(f"# HELP {name} ")]
        assert len(helps) == 1 and len(helps[0]) > len(f"# HELP {name} ") + 10, name
    # Counters appear under exactly their names (not doubled to _total_total, not stripped).
    assert "_total_total" not in text
    for name in COUNTERS:
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_values_equal_get_kpis(matcher):
    text = render_text(matcher)
    kpis = matcher.get_kpis()  # scraping counts nothing: the same numbers as at render time
    fams = families(text)
    for name in COUNTERS:
        assert sample(fams, counter_family(name), name) == kpis[name], name
    for name in GAUGES:
        assert sample(fams, name, name) == kpis[name], name
    errors = fams["kato_gpu_errors"]
    assert {s.labels["error_type"]: s.value for s in errors.samples if s.name == "kato_gpu_errors_total"} == {
        k: float(v) for k, v in kpis["kato_gpu_errors_total"].items()
    }

    stats = matcher.get_stats()
    assert kpis["kato_patterns_learned_total"] == len(PATTERNS) == stats["patterns_learned"]
    assert kpis["kato_patterns_matched_total"] == matcher.matched > 0
    assert kpis["kato_gpu_sync_events_total"] >= 1
    # The GPU holds (a mirror of) the bulk tier; everything else is scored on CPU cores.
    on_gpu = stats["gpu_tier_patterns"]
    assert kpis["kato_gpu_pattern_count"] == on_gpu
    assert kpis["kato_cpu_pattern_count"] == stats["total_patterns"] - on_gpu
    assert stats["bulk_tier_patterns"] == 30 and stats["recent_tier_patterns"] == 10
    if stats["use_gpu"]:
        assert on_gpu == 30 and kpis["kato_gpu_memory_bytes"] > 0
    else:
        assert on_gpu == 0 and kpis["kato_gpu_memory_bytes"] == 0


def test_histograms_are_consistent(matcher):
    text = render_text(matcher)
    kpis = matcher.get_kpis()
    fams = families(text)
    for name in HISTOGRAMS:
        buckets = [(s.labels["le"], s.value) for s in fams[name].samples if s.name == name + "_bucket"]
        assert buckets[-1][0] == "+Inf"
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), name  # cumulative
        count = sample(fams, name, name + "_count")
        assert buckets[-1][1] == count == kpis[name]["count"], name
        assert sample(fams, name, name + "_sum") == pytest.approx(kpis[name]["sum"]), name
        assert [float(le) for le, _ in buckets] == [float(b) for b, _ in kpis[name]["buckets"]]
        assert counts == [float(n) for _, n in kpis[name]["buckets"]]
    # Every single query is observed once, on the GPU or on the CPU histogram.
    observed = sum(kpis[n]["count"] for n in ("kato_gpu_query_duration_seconds", "kato_cpu_query_duration_seconds"))
    assert observed == len(STATES)
    assert kpis["kato_gpu_sync_duration_seconds"]["count"] == kpis["kato_gpu_sync_events_total"] >= 1


def test_error_counter_carries_the_error_type_label(matcher):
    class WithErrors:  # the real KPIs plus two error types
        use_gpu = False

        def get_kpis(self):
            kpis = matcher.get_kpis()
            kpis["kato_gpu_errors_total"] = {"launch_failed": 2, "out_of_memory": 1}
            return kpis

    fams = families(render_text(WithErrors()))
    assert sample(fams, "kato_gpu_errors", "kato_gpu_errors_total", error_type="launch_failed") == 2
    assert sample(fams, "kato_gpu_errors", "kato_gpu_errors_total", error_type="out_of_memory") == 1


def test_sync_manager_gauges(matcher):
    sync = SyncManager(matcher, matcher.config)
    fams = families(render_text(matcher, sync))
    assert sample(fams, "kato_gpu_training_mode", "kato_gpu_training_mode") == 0
    assert sample(fams, "kato_gpu_background_sync_running", "kato_gpu_background_sync_running") == 0
    sync.enter_training_mode()
    assert sync.trigger_sync(source="manual") == 10
    fams = families(render_text(matcher, sync))
    assert sample(fams, "kato_gpu_training_mode", "kato_gpu_training_mode") == 1
    assert sample(fams, "kato_gpu_patterns_pending_sync", "kato_gpu_patterns_pending_sync") == 0
    last = sample(fams, "kato_gpu_last_sync_timestamp_seconds", "kato_gpu_last_sync_timestamp_seconds")
    assert last == pytest.approx(sync.get_stats()["last_sync_time"])
    kpis = matcher.get_kpis()
    assert kpis["kato_gpu_pattern_count"] + kpis["kato_cpu_pattern_count"] == 40
    assert sample(fams, "kato_cpu_pattern_count", "kato_cpu_pattern_count") == kpis["kato_cpu_pattern_count"]
    assert sample(fams, "kato_gpu_pattern_count", "kato_gpu_pattern_count") == kpis["kato_gpu_pattern_count"]
    assert matcher.get_stats()["recent_tier_patterns"] == 0
    sync.exit_training_mode(trigger_sync=False)
    # Without a sync manager there are no sync-manager gauges.
    assert "kato_gpu_training_mode" not in render_text(matcher)


def test_register_collector_on_a_fresh_registry(matcher):
    registry = CollectorRegistry()
    collector = register_collector(matcher, registry=registry)
    assert isinstance(collector, KatoGpuCollector)
    text = generate_latest(registry).decode()
    for name, kind in TYPES.items():
        assert f"# TYPE {name} {kind}" in text
    fams = families(text)
    assert sample(fams, "kato_patterns_learned", "kato_patterns_learned_total") == len(PATTERNS)

    # Registering the same matcher again is a no-op: one collector, every name once.
    assert register_collector(matcher, registry=registry) is collector
    text = generate_latest(registry).decode()
    assert text.count("# TYPE kato_gpu_memory_bytes gauge") == 1

    # Another matcher replaces it (the names carry no per-matcher label).
    other = make_matcher(n_bulk=5, n_total=12)
    replaced = register_collector(other, registry=registry)
    assert replaced is not collector and replaced.matcher is other
    fams = families(generate_latest(registry).decode())
    assert sample(fams, "kato_patterns_learned", "kato_patterns_learned_total") == 12
    assert len(fams["kato_gpu_pattern_count"].samples) == 1

    # With a sync manager the sync gauges join in, still without duplicates.
    with_sync = register_collector(other, SyncManager(other, other.config), registry=registry)
    text = generate_latest(registry).decode()
    assert with_sync.sync_manager is not None
    assert text.count("# TYPE kato_gpu_training_mode gauge") == 1
    assert text.count("# TYPE kato_gpu_pattern_count gauge") == 1

    assert unregister_collector(registry) is with_sync
    assert "kato_" not in generate_latest(registry).decode()
    assert unregister_collector(registry) is None


def test_register_collector_defaults_to_the_global_registry(matcher):
    collector = register_collector(matcher)
    try:
        assert register_collector(matcher) is collector
        text = generate_latest(prometheus_client.REGISTRY).decode()
        assert text.count("# TYPE kato_patterns_learned_total counter") == 1
    finally:
        assert unregister_collector() is collector
    assert "kato_patterns_learned_total" not in generate_latest(prometheus_client.REGISTRY).decode()


def test_a_clash_with_a_collector_registered_by_hand_is_reported(matcher):
    registry = CollectorRegistry()
    registry.register(KatoGpuCollector(matcher))
    with pytest.raises(ValueError, match="Duplicated"):
        register_collector(matcher, registry=registry)


def test_collector_needs_a_matcher():
    with pytest.raises(TypeError, match="get_kpis"):
        KatoGpuCollector(object())


def test_importing_kato_gpu_does_not_import_the_optional_packages():
    code = (
        "import sys, kato_gpu; "
        "bad = [m for m in ('prometheus_client', 'fastapi', 'uvicorn', 'httpx', 'starlette') "
        "if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_prometheus_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # makes its import fail
    monkeypatch.delitem(sys.modules, "kato_gpu.prometheus")
    with pytest.raises(ImportError, match=r"pip install kato-gpu\[prometheus\]"):
        importlib.import_module("kato_gpu.prometheus")
