"""Tests for kato_gpu.config.GPUConfig.

The expected defaults and environment variable names are hard-coded from
KATO v3.10.1's kato/config/gpu_settings.py, which is the oracle.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

import pytest

from kato_gpu.config import DEFAULT_GPU_CONFIG, GPUConfig

# (field, default) in KATO's declaration order, then kato_gpu's additions.
KATO_FIELDS = [
    ("enabled", True),
    ("fallback_to_cpu", True),
    ("min_compute_capability", 7.0),
    ("max_pattern_length", 10_000),  # a real limit here; KATO's 100 was a truncation length
    ("memory_usage_fraction", 0.6),
    ("growth_buffer_fraction", 0.2),
    ("threads_per_block", 256),
    ("force_max_patterns", None),
    ("sync_threshold", 1000),
    ("sync_interval_seconds", 300),
    ("enable_background_sync", True),
    ("log_memory_usage", True),
    ("log_kernel_timing", False),
    ("use_shared_memory", True),
    ("enable_early_termination", True),
]
EXTRA_FIELDS = [("metric", "difflib"), ("autojunk", False), ("device", "auto")]

# env variable -> (field, text to set, expected value)
ENV_CASES = [
    ("KATO_GPU_ENABLED", "enabled", "false", False),
    ("KATO_GPU_FALLBACK", "fallback_to_cpu", "no", False),
    ("KATO_GPU_MIN_COMPUTE", "min_compute_capability", "8.6", 8.6),
    ("KATO_GPU_MAX_PATTERN_LENGTH", "max_pattern_length", "512", 512),
    ("KATO_GPU_MEMORY_FRACTION", "memory_usage_fraction", "0.9", 0.9),
    ("KATO_GPU_GROWTH_FRACTION", "growth_buffer_fraction", "0", 0.0),
    ("KATO_GPU_THREADS_PER_BLOCK", "threads_per_block", "128", 128),
    ("KATO_GPU_MAX_PATTERNS", "force_max_patterns", "5000", 5000),
    ("KATO_GPU_SYNC_THRESHOLD", "sync_threshold", "42", 42),
    ("KATO_GPU_SYNC_INTERVAL", "sync_interval_seconds", "60", 60),
    ("KATO_GPU_BACKGROUND_SYNC", "enable_background_sync", "OFF", False),
    ("KATO_GPU_LOG_MEMORY", "log_memory_usage", "0", False),
    ("KATO_GPU_LOG_TIMING", "log_kernel_timing", "true", True),
    ("KATO_GPU_SHARED_MEMORY", "use_shared_memory", "False", False),
    ("KATO_GPU_EARLY_TERM", "enable_early_termination", "no", False),
    ("KATO_GPU_METRIC", "metric", "lcs", "lcs"),
    ("KATO_GPU_AUTOJUNK", "autojunk", "yes", True),
    ("KATO_GPU_DEVICE", "device", " CPU ", "cpu"),
]
ALL_VARS = [case[0] for case in ENV_CASES]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_fields_order_and_defaults_match_kato() -> None:
    fields = [(f.name, f.default) for f in dataclasses.fields(GPUConfig)]
    assert fields == KATO_FIELDS + EXTRA_FIELDS
    config = GPUConfig()
    for name, default in KATO_FIELDS + EXTRA_FIELDS:
        value = getattr(config, name)
        assert value == default and type(value) is type(default), name


def test_default_instance() -> None:
    assert isinstance(DEFAULT_GPU_CONFIG, GPUConfig)
    assert DEFAULT_GPU_CONFIG == GPUConfig()
    DEFAULT_GPU_CONFIG.validate()


def test_positional_construction_like_kato() -> None:
    with pytest.warns(DeprecationWarning) as warned:
        config = GPUConfig(False, False, 8.0, 50, 0.5, 0.1, 512, 10, 5, 6, False, False, True, False, False)
    assert sorted(str(w.message).split()[0] for w in warned) == [
        "GPUConfig.enable_early_termination",
        "GPUConfig.use_shared_memory",
    ]
    assert (config.enabled, config.threads_per_block, config.force_max_patterns) == (False, 512, 10)
    assert (config.metric, config.autojunk) == ("difflib", False)


def test_from_env_defaults(clean_env: pytest.MonkeyPatch) -> None:
    assert GPUConfig.from_env() == GPUConfig()


@pytest.mark.parametrize("var,field,text,expected", ENV_CASES, ids=ALL_VARS)
# Setting a deprecated kernel hint warns (test_engine.py checks that); here only its parsing counts.
@pytest.mark.filterwarnings("ignore:GPUConfig.*deprecated:DeprecationWarning")
def test_from_env_each_variable(clean_env: pytest.MonkeyPatch, var: str, field: str, text: str, expected: Any) -> None:
    clean_env.setenv(var, text)
    config = GPUConfig.from_env()
    assert getattr(config, field) == expected
    assert type(getattr(config, field)) is type(expected)
    # Nothing else moved.
    others: Dict[str, Any] = {f: v for f, v in dataclasses.asdict(config).items() if f != field}
    defaults = {f: v for f, v in dataclasses.asdict(GPUConfig()).items() if f != field}
    assert others == defaults


@pytest.mark.parametrize(
    "text,expected",
    [
        ("true", True),
        ("TRUE", True),
        (" 1 ", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("FaLsE", False),
        ("0", False),
        ("NO", False),
        ("off\n", False),
    ],
)
def test_bool_spellings(clean_env: pytest.MonkeyPatch, text: str, expected: bool) -> None:
    clean_env.setenv("KATO_GPU_LOG_TIMING", text)
    clean_env.setenv("KATO_GPU_ENABLED", text)
    config = GPUConfig.from_env()
    assert config.log_kernel_timing is expected
    assert config.enabled is expected


@pytest.mark.parametrize("text", ["", "   "])
def test_blank_values_mean_default(clean_env: pytest.MonkeyPatch, text: str) -> None:
    for name in ALL_VARS:
        clean_env.setenv(name, text)
    assert GPUConfig.from_env() == GPUConfig()


def test_metric_env_is_case_insensitive(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KATO_GPU_METRIC", " LCS ")
    assert GPUConfig.from_env().metric == "lcs"
    clean_env.setenv("KATO_GPU_METRIC", "Difflib")
    assert GPUConfig.from_env().metric == "difflib"


@pytest.mark.parametrize(
    "var,text",
    [
        ("KATO_GPU_ENABLED", "maybe"),
        ("KATO_GPU_FALLBACK", "2"),
        ("KATO_GPU_BACKGROUND_SYNC", "y"),
        ("KATO_GPU_AUTOJUNK", "enabled"),
        ("KATO_GPU_MIN_COMPUTE", "seven"),
        ("KATO_GPU_MAX_PATTERN_LENGTH", "100.5"),
        ("KATO_GPU_MEMORY_FRACTION", "60%"),
        ("KATO_GPU_GROWTH_FRACTION", "abc"),
        ("KATO_GPU_THREADS_PER_BLOCK", "256x"),
        ("KATO_GPU_MAX_PATTERNS", "lots"),
        ("KATO_GPU_SYNC_THRESHOLD", "1e3"),
        ("KATO_GPU_SYNC_INTERVAL", "5m"),
        ("KATO_GPU_METRIC", "levenshtein"),
        ("KATO_GPU_DEVICE", "cuda"),
    ],
)
def test_bad_env_value_names_variable(clean_env: pytest.MonkeyPatch, var: str, text: str) -> None:
    clean_env.setenv(var, text)
    with pytest.raises(ValueError) as info:
        GPUConfig.from_env()
    assert var in str(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize(
    "var,text",
    [
        ("KATO_GPU_THREADS_PER_BLOCK", "100"),
        ("KATO_GPU_MEMORY_FRACTION", "1.5"),
        ("KATO_GPU_MAX_PATTERNS", "0"),
        ("KATO_GPU_MIN_COMPUTE", "nan"),
        ("KATO_GPU_SYNC_INTERVAL", "-1"),
    ],
)
def test_from_env_validates(clean_env: pytest.MonkeyPatch, var: str, text: str) -> None:
    clean_env.setenv(var, text)
    with pytest.raises(ValueError):
        GPUConfig.from_env()


@pytest.mark.parametrize(
    "changes,error",
    [
        ({"max_pattern_length": 0}, ValueError),
        ({"max_pattern_length": -5}, ValueError),
        ({"memory_usage_fraction": 0.0}, ValueError),
        ({"memory_usage_fraction": 1.01}, ValueError),
        ({"growth_buffer_fraction": -0.1}, ValueError),
        ({"growth_buffer_fraction": 1.5}, ValueError),
        ({"threads_per_block": 0}, ValueError),
        ({"threads_per_block": 100}, ValueError),
        ({"threads_per_block": 2048}, ValueError),
        ({"sync_threshold": 0}, ValueError),
        ({"sync_interval_seconds": 0}, ValueError),
        ({"min_compute_capability": 2.9}, ValueError),
        ({"min_compute_capability": float("nan")}, ValueError),
        ({"memory_usage_fraction": float("inf")}, ValueError),
        ({"metric": "levenshtein"}, ValueError),
        ({"metric": "LCS"}, ValueError),
        ({"metric": None}, TypeError),
        ({"force_max_patterns": 0}, ValueError),
        ({"force_max_patterns": -3}, ValueError),
        ({"force_max_patterns": 10.0}, TypeError),
        ({"force_max_patterns": True}, TypeError),
        ({"enabled": "yes"}, TypeError),
        ({"autojunk": 1}, TypeError),
        ({"log_kernel_timing": None}, TypeError),
        ({"threads_per_block": "256"}, TypeError),
        ({"threads_per_block": 256.0}, TypeError),
        ({"sync_threshold": True}, TypeError),
        ({"memory_usage_fraction": "0.5"}, TypeError),
        ({"min_compute_capability": None}, TypeError),
        ({"device": "cuda"}, ValueError),
        ({"device": None}, TypeError),
    ],
)
def test_validate_rejects(changes: Dict[str, Any], error: type) -> None:
    config = dataclasses.replace(GPUConfig(), **changes)
    with pytest.raises(error):
        config.validate()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"metric": "lcs", "autojunk": True},
        {"threads_per_block": 32},
        {"threads_per_block": 1024},
        {"memory_usage_fraction": 1.0},
        {"growth_buffer_fraction": 0.0},
        {"growth_buffer_fraction": 1.0},
        {"min_compute_capability": 3},
        {"force_max_patterns": 1},
        {"device": "cpu"},
        {"device": "gpu"},
    ],
)
def test_validate_accepts(changes: Dict[str, Any]) -> None:
    dataclasses.replace(GPUConfig(), **changes).validate()


def test_str_lists_settings() -> None:
    text = str(GPUConfig(metric="lcs", autojunk=True, threads_per_block=512))
    assert text.startswith("GPUConfig(")
    for line in (
        "enabled=True",
        "min_compute_capability=7.0",
        "max_pattern_length=10000",
        "memory_usage_fraction=0.6",
        "threads_per_block=512",
        "sync_threshold=1000",
        "sync_interval=300s",
        "metric=lcs",
        "autojunk=True",
    ):
        assert f"  {line}\n" in text


def test_to_dict() -> None:
    config = GPUConfig(metric="lcs")
    data = config.to_dict()
    assert data == {name: getattr(config, name) for name, _ in KATO_FIELDS + EXTRA_FIELDS}
    assert list(data) == [name for name, _ in KATO_FIELDS + EXTRA_FIELDS]
    assert GPUConfig(**data) == config
