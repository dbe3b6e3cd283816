"""scripts/gpu_check.py (``make gpu-check``) without a GPU: it stops at once with the reason and exit
status 3, writing its record; and its pure parts (pytest's junit report, compute-sanitizer's
verdict, where the bench's queries ran, finding compute-sanitizer) on fixed inputs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kato_gpu.cuda as kc

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"

pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="scripts/gpu_check.py is not in this checkout")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(kc.available(), reason="checks the behaviour without a GPU")
def test_without_a_gpu_it_stops_at_once_with_the_reason(tmp_path):
    record = tmp_path / "gpu-check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(record)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3, proc.stderr
    reason = kc.device_info()["reason"]
    assert f"gpu-check: no CUDA device: {reason}" in proc.stderr
    data = json.loads(record.read_text())
    assert data["ok"] is False and data["exit_status"] == 3
    assert data["stopped"] == f"no CUDA device: {reason}"
    assert data["device_info"]["available"] is False and data["steps"] == {}
    assert not (tmp_path / "gpu-check-logs").exists()  # nothing ran


def test_a_probe_that_fails_or_hangs_is_no_device(tmp_path):
    gc = _module()
    assert gc.probe(str(tmp_path / "no-such-python"), 5)["available"] is False
    hung = tmp_path / "hung-python"
    hung.write_text("#!/bin/sh\nsleep 30\n")
    hung.chmod(0o755)
    info = gc.probe(str(hung), 1)
    assert info == {"available": False, "reason": "the device probe did not answer within 1 s"}


def test_junit_summary_and_pytest_outcome(tmp_path):
    gc = _module()
    report = tmp_path / "junit.xml"
    report.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="4">'
        '<testcase classname="t.a" name="ok"/>'
        '<testcase classname="t.a" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="t.b" name="off"><skipped message="no usable CUDA GPU here"/></testcase>'
        '<testcase classname="t.b" name="err"><error message="y"/></testcase>'
        "</testsuite></testsuites>"
    )
    summary = gc.junit_summary(report)
    assert {k: summary[k] for k in ("tests", "passed", "failures", "errors", "skipped")} == {
        "tests": 4,
        "passed": 1,
        "failures": 1,
        "errors": 1,
        "skipped": 1,
    }
    assert summary["failed_tests"] == ["t.a::bad", "t.b::err"]
    assert summary["skipped_tests"] == ["t.b::off: no usable CUDA GPU here"]
    assert gc.pytest_outcome(1, summary) == "failed"
    clean = dict(summary, failures=0, errors=0)
    assert gc.pytest_outcome(0, clean) == "skipped tests"  # on a GPU machine a skip is a failure
    assert gc.pytest_outcome(0, dict(clean, skipped=0)) == "passed"
    assert gc.pytest_outcome(5, dict(clean, skipped=0, tests=0, passed=0)) == "no tests"
    assert gc.pytest_outcome(None, None) == "timeout"


def test_sanitizer_verdicts():
    gc = _module()
    assert gc.sanitizer_outcome(0, "1 passed\n========= ERROR SUMMARY: 0 errors\n")["outcome"] == "clean"
    found = gc.sanitizer_outcome(86, "========= Invalid __global__ read\n========= ERROR SUMMARY: 3 errors\n")
    assert found == {"outcome": "errors", "memcheck_errors": 3}
    assert gc.sanitizer_outcome(1, "1 failed\n========= ERROR SUMMARY: 0 errors\n")["outcome"] == "tests failed"
    refused = gc.sanitizer_outcome(1, "========= Error: Device not supported\n")
    assert refused["outcome"] == "unsupported" and "Device not supported" in refused["reason"]
    assert gc.sanitizer_outcome(None, "")["outcome"] == "timeout"
    assert gc.sanitizer_outcome(1, "Segmentation fault")["outcome"] == "failed"


def test_bench_device_check_wants_every_query_on_the_device():
    gc = _module()

    def report(**stats):
        base = {"bulk_tier_device": "gpu", "gpu_queries": 11, "gpu_fallbacks": 0, "gpu_long_state_cpu_queries": 0}
        return {"options": {"queries": 10}, "results": {"lcs": {"query_stats": dict(base, **stats)}}}

    assert gc.bench_device_check(report()) == []
    assert gc.bench_device_check(report(gpu_queries=10)) == ["lcs: gpu_queries = 10, expected 11"]
    assert gc.bench_device_check(report(bulk_tier_device="cpu", gpu_queries=0)) == [
        "lcs: the bulk tier was on 'cpu', not the GPU",
        "lcs: gpu_queries = 0, expected 11",
    ]
    assert gc.bench_device_check(report(gpu_fallbacks=1)) == ["lcs: gpu_fallbacks = 1, expected 0"]
    assert gc.bench_device_check({"options": {"queries": 1}, "results": {}}) == ["the report has no results"]


def test_find_sanitizer(tmp_path):
    gc = _module()
    empty = {"PATH": str(tmp_path / "nothing")}
    if not any(Path(d, "compute-sanitizer").exists() for d in ("/usr/local/cuda/bin", "/usr/local/cuda")):
        assert gc.find_sanitizer(empty) is None
    tool = tmp_path / "cuda" / "bin" / "compute-sanitizer"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert gc.find_sanitizer({"PATH": str(tool.parent)}) == str(tool)
    assert gc.find_sanitizer(dict(empty, CUDA_HOME=str(tmp_path / "cuda"))) == str(tool)
    os.chmod(tool, 0o644)  # not executable: not a find
    assert gc.find_sanitizer(dict(empty, CUDA_HOME=str(tmp_path / "cuda"))) != str(tool)
