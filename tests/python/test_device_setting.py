"""kato_gpu off (``KATO_GPU_ENABLED=false``) and "no GPU here" (kato_gpu on its CPU cores) are two
states with their own settings and log levels; ``KATO_GPU_DEVICE`` (``GPUConfig.device``) forbids
or requires the GPU tier."""

from __future__ import annotations

import logging

import pytest

import kato_gpu.cuda as kc
import kato_gpu.kato as glue
import kato_gpu.matcher as matcher_module
from kato_gpu import GPUConfig, GPUUnavailableError, HybridGPUMatcher, SymbolVocabularyEncoder

GPU = kc.available()
INFO = kc.device_info()
NO_GPU_HERE = not INFO["driver_found"] or not INFO["device_count"]
needs_no_gpu_here = pytest.mark.skipif(not NO_GPU_HERE, reason="checks a host without any GPU")
needs_no_gpu = pytest.mark.skipif(GPU, reason="checks the behaviour without a usable GPU")


@pytest.fixture
def fresh_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # Each reason is logged once per process: forget what earlier tests logged.
    monkeypatch.setattr(matcher_module, "_GPU_REASONS_LOGGED", set())
    caplog.set_level(logging.DEBUG, logger="kato_gpu")
    return caplog


def _build(**config) -> HybridGPUMatcher:
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(**config))
    m.add_new_pattern("PTRN|a", [["a", "b"], ["c"]])
    assert m.match_patterns(["a", "b"], 0.1) != []
    return m


def _levels(caplog: pytest.LogCaptureFixture, text: str):
    return [r.levelno for r in caplog.records if text in r.getMessage()]


@needs_no_gpu_here
def test_a_host_without_a_gpu_keeps_kato_gpu_with_an_info_line_not_a_warning(fresh_log):
    m = _build()
    assert m.use_gpu is False and "driver" in m.gpu_unavailable_reason
    assert _levels(fresh_log, "no GPU here") == [logging.INFO]
    assert not [r for r in fresh_log.records if r.levelno >= logging.WARNING]
    _build()  # a second matcher (another knowledge base) says it once only
    assert _levels(fresh_log, "no GPU here") == [logging.INFO, logging.DEBUG]


def test_device_cpu_never_uses_the_gpu_and_warns_about_nothing(fresh_log):
    m = _build(device="cpu")
    assert m.use_gpu is False
    assert m.get_stats()["gpu_unavailable_reason"] == "not used: device is 'cpu' (KATO_GPU_DEVICE=cpu)"
    assert not [r for r in fresh_log.records if r.levelno >= logging.WARNING]
    # Forbidding the GPU is not an error, even when no fallback is allowed.
    assert _build(device="cpu", fallback_to_cpu=False).use_gpu is False


@needs_no_gpu
def test_device_gpu_refuses_to_start_without_a_usable_gpu(fresh_log):
    with pytest.raises(GPUUnavailableError, match="device is 'gpu'"):
        HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(device="gpu"))


@pytest.mark.skipif(not GPU, reason="needs a usable CUDA GPU")
@pytest.mark.gpu
def test_device_gpu_and_auto_use_a_usable_gpu():
    assert _build(device="gpu").use_gpu is True
    assert _build().use_gpu is True


def test_enabled_false_serves_from_the_cpu_with_no_warning(fresh_log):
    m = _build(enabled=False)
    assert m.use_gpu is False and m.gpu_unavailable_reason == "disabled by configuration (enabled=False)"
    assert not [r for r in fresh_log.records if r.levelno >= logging.WARNING]


def test_device_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KATO_GPU_DEVICE", "gpu")
    assert GPUConfig.from_env().device == "gpu"
    monkeypatch.setenv("KATO_GPU_DEVICE", "gpus")
    with pytest.raises(ValueError, match="KATO_GPU_DEVICE"):
        GPUConfig.from_env()


def test_kato_gpu_enabled_false_turns_the_kato_glue_off(monkeypatch: pytest.MonkeyPatch, caplog):
    # install() returns before it imports anything of KATO's, so no KATO checkout is needed.
    monkeypatch.setenv("KATO_GPU_ENABLED", "false")
    monkeypatch.setattr(glue, "_installed", False)
    caplog.set_level(logging.INFO, logger="kato_gpu")
    glue.install()
    assert glue.installed() is False and glue.status()["installed"] is False
    assert _levels(caplog, "off (KATO_GPU_ENABLED=false)") == [logging.INFO]
