"""``make gpu-check``: the checks that only a machine with a CUDA GPU can run, in one command,
with one JSON record of what ran and how it ended.

Steps, in order, each in a child process with its own time limit inside one overall budget
(default 290 s, so the whole check ends within five minutes):

1. probe: ``kato_gpu.cuda.device_info()``. Without a usable device the check stops here with
   ``no CUDA device: <reason>`` on stderr and exit status 3 (a child process, so that a driver
   that hangs cannot hang the check: it is killed after ``--probe-timeout`` seconds).
2. pytest: ``pytest -m gpu`` over ``tests/python`` (the tests that assert, among other things,
   exactly which queries the device answered). Every selected test must pass; a skipped one fails
   the check, since on a GPU machine a skip means the tier did not start.
3. bench: ``kato-gpu bench --patterns 10000000 --device gpu`` (both metrics, top 100); it must
   verify (exit 0) and every timed query, plus the warm-up, must have been answered by the device
   (``gpu_queries`` = queries + 1, no fallback).
4. sanitizer: ``compute-sanitizer --tool memcheck`` over the same ``pytest -m gpu``, when
   ``compute-sanitizer`` is found (PATH, the ``nvidia-cuda-sanitizer-api-cu12`` wheel,
   ``$CUDA_HOME/bin``, ``/usr/local/cuda/bin``). Absent, or refused by the device ("Device not
   supported", as in some sandboxes), the step is recorded as skipped with the reason and does
   not fail the check; a memcheck error or a failing test under it does.

Exit status: 0 every step that ran passed, 1 a step failed (or ran out of time), 2 bad
arguments, 3 no CUDA device. The JSON (``--json``, default ``gpu-check.json``) holds
``device_info``, each step's outcome, timings, summary and the tail of its output, and the
bench's whole report; full logs go to ``--logs`` (default ``gpu-check-logs/`` beside the JSON).

Run from the repository root with the Python that has kato_gpu installed (``make gpu-check``
builds and installs the wheel into ``.venv`` first)::

    .venv/bin/python scripts/gpu_check.py --json gpu-check.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DEVICE = 0, 1, 2, 3
#: compute-sanitizer's exit status when memcheck reported an error (--error-exitcode).
SANITIZER_ERROR_EXIT = 86
TAIL_CHARS = 6000

PROBE = "import json, kato_gpu.cuda as kc; print(json.dumps(kc.device_info()))"

BENCH_QUERIES = 10
BENCH_LIMIT = 100


def find_sanitizer(environ: Optional[Dict[str, str]] = None, extra_dirs: Sequence[Path] = ()) -> Optional[str]:
    """``compute-sanitizer``: on PATH, else in the NVIDIA wheel's folder on ``sys.path``, else under
    ``$CUDA_HOME``/``$CUDA_PATH``, else ``/usr/local/cuda/bin``. None when absent."""
    env = os.environ if environ is None else environ
    found = shutil.which("compute-sanitizer", path=env.get("PATH"))
    if found:
        return found
    candidates: List[Path] = list(extra_dirs)
    for entry in sys.path:
        if entry:
            base = Path(entry) / "nvidia" / "cuda_sanitizer_api"
            candidates += [base / "compute-sanitizer", base / "bin"]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            candidates += [Path(env[var]) / "bin", Path(env[var]) / "compute-sanitizer"]
    candidates += [Path("/usr/local/cuda/bin"), Path("/usr/local/cuda/compute-sanitizer")]
    for folder in candidates:
        exe = folder / "compute-sanitizer"
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe)
    return None


def junit_summary(path: Path) -> Dict[str, Any]:
    """Counts and the failed / skipped tests of a pytest ``--junitxml`` report."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    summary: Dict[str, Any] = {"tests": 0, "passed": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: List[str] = []
    skipped: List[str] = []
    for suite in suites:
        for case in suite.iter("testcase"):
            summary["tests"] += 1
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            kinds = {child.tag for child in case}
            if "failure" in kinds:
                summary["failures"] += 1
                failed.append(name)
            elif "error" in kinds:
                summary["errors"] += 1
                failed.append(name)
            elif "skipped" in kinds:
                summary["skipped"] += 1
                reason = next(c.get("message", "") for c in case if c.tag == "skipped")
                skipped.append(f"{name}: {reason}")
            else:
                summary["passed"] += 1
    summary["failed_tests"] = failed
    summary["skipped_tests"] = skipped
    return summary


def pytest_outcome(returncode: Optional[int], summary: Optional[Dict[str, Any]]) -> str:
    """``passed`` only when tests ran, none failed and none was skipped (on a GPU machine a skip
    means the device tier did not start)."""
    if returncode is None:
        return "timeout"
    if summary is None:
        return "failed"
    if summary["tests"] == 0:
        return "no tests"  # pytest's exit status 5
    if summary["failures"] or summary["errors"] or returncode != 0:
        return "failed"
    if summary["skipped"]:
        return "skipped tests"
    return "passed"


_ERROR_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) errors?")
_UNSUPPORTED = ("Device not supported", "Target application terminated before first instrumented API call")


def sanitizer_outcome(returncode: Optional[int], output: str) -> Dict[str, Any]:
    """What a ``compute-sanitizer --tool memcheck`` run says: ``clean``, ``errors`` (memcheck
    found some), ``tests failed`` (clean, but a test failed under it), ``unsupported`` (the tool
    could not attach to this device: not a finding), or ``timeout``."""
    counts = [int(n) for n in _ERROR_SUMMARY.findall(output)]
    errors = sum(counts)
    if returncode is None:
        return {"outcome": "timeout", "memcheck_errors": errors}
    if returncode == SANITIZER_ERROR_EXIT or errors:
        return {"outcome": "errors", "memcheck_errors": errors}
    if any(text in output for text in _UNSUPPORTED):
        reason = next(line.strip() for line in output.splitlines() if any(t in line for t in _UNSUPPORTED))
        return {"outcome": "unsupported", "memcheck_errors": 0, "reason": reason}
    if not counts:
        return {"outcome": "failed", "memcheck_errors": 0, "reason": "no ERROR SUMMARY line in its output"}
    return {"outcome": "clean" if returncode == 0 else "tests failed", "memcheck_errors": 0}


def bench_device_check(report: Dict[str, Any]) -> List[str]:
    """Problems with where the bench's queries ran: every metric's timed queries plus its warm-up
    must have been answered on the device, with no fallback and no long-state query."""
    problems: List[str] = []
    queries = int(report.get("options", {}).get("queries", 0))
    results = report.get("results", {})
    if not results:
        problems.append("the report has no results")
    for metric, result in results.items():
        stats = result.get("query_stats")
        if not isinstance(stats, dict):
            problems.append(f"{metric}: no query_stats in the report")
            continue
        expected = queries + 1  # the untimed warm-up, then the timed queries
        if stats.get("bulk_tier_device") != "gpu":
            problems.append(f"{metric}: the bulk tier was on {stats.get('bulk_tier_device')!r}, not the GPU")
        if stats.get("gpu_queries") != expected:
            problems.append(f"{metric}: gpu_queries = {stats.get('gpu_queries')}, expected {expected}")
        for key in ("gpu_fallbacks", "gpu_long_state_cpu_queries"):
            if stats.get(key):
                problems.append(f"{metric}: {key} = {stats.get(key)}, expected 0")
    return problems


def run_step(cmd: Sequence[str], cwd: Path, timeout: float, log: Path) -> Dict[str, Any]:
    """Runs ``cmd`` in its own process group, output to ``log``; kills the group at ``timeout``.
    ``returncode`` is None after a timeout."""
    started = time.monotonic()
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            list(cmd), cwd=str(cwd), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode: Optional[int] = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = None
    output = log.read_text(errors="replace")
    return {
        "command": list(cmd),
        "returncode": returncode,
        "seconds": round(time.monotonic() - started, 3),
        "log": str(log),
        "tail": output[-TAIL_CHARS:],
        "_output": output,
    }


def probe(python: str, timeout: float) -> Dict[str, Any]:
    """``device_info()`` from a child process, or ``{"available": False, "reason": ...}`` when it
    fails or does not answer in time."""
    try:
        proc = subprocess.run([python, "-c", PROBE], cwd=str(TESTS), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"the device probe did not answer within {timeout:g} s"}
    except OSError as exc:
        return {"available": False, "reason": f"cannot run {python}: {exc}"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"available": False, "reason": f"the device probe failed (exit {proc.returncode}): {last}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"available": False, "reason": f"the device probe printed no JSON: {proc.stdout[-200:]!r}"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", dest="json_path", default="gpu-check.json", help="the record to write")
    p.add_argument("--logs", default=None, help="folder for the full logs (default: gpu-check-logs/ beside --json)")
    p.add_argument("--python", default=sys.executable, help="the interpreter with kato_gpu installed")
    p.add_argument("--budget", type=float, default=290.0, help="seconds for all steps together")
    p.add_argument("--probe-timeout", type=float, default=60.0, help="seconds for the device probe")
    p.add_argument("--pytest-timeout", type=float, default=90.0, help="at most this for pytest -m gpu")
    p.add_argument("--bench-timeout", type=float, default=150.0, help="at most this for the bench")
    p.add_argument("--bench-patterns", type=int, default=10_000_000, help="the bench's --patterns")
    p.add_argument("--skip", action="append", default=[], choices=("pytest", "bench", "sanitizer"))
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget
    json_path = Path(args.json_path).resolve()
    logs = Path(args.logs).resolve() if args.logs else json_path.parent / "gpu-check-logs"
    record: Dict[str, Any] = {
        "ok": False,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": list(sys.argv if argv is None else argv),
        "python": args.python,
        "device_info": None,
        "stopped": None,
        "steps": {},
    }

    def finish(status: int) -> int:
        record["ok"] = status == EXIT_OK
        record["exit_status"] = status
        record["seconds"] = round(time.monotonic() - started, 3)
        json_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"gpu-check: wrote {json_path}", file=sys.stderr)
        return status

    info = probe(args.python, min(args.probe_timeout, args.budget))
    record["device_info"] = info
    if not info.get("available"):
        record["stopped"] = f"no CUDA device: {info.get('reason')}"
        print(f"gpu-check: {record['stopped']}", file=sys.stderr)
        return finish(EXIT_NO_DEVICE)
    print(
        f"gpu-check: {info.get('name')} (compute capability {info.get('compute_capability')}), "
        f"NVRTC {info.get('nvrtc_version')}",
        file=sys.stderr,
    )
    logs.mkdir(parents=True, exist_ok=True)
    failed = False
    pytest_cmd = [args.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs", "python"]

    def left(cap: float) -> float:
        return min(cap, deadline - time.monotonic())

    if "pytest" not in args.skip:
        print("gpu-check: pytest -m gpu ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            junit = Path(tmp) / "junit.xml"
            step = run_step(pytest_cmd + [f"--junitxml={junit}"], TESTS, left(args.pytest_timeout), logs / "pytest.log")
            summary = junit_summary(junit) if junit.is_file() else None
        step["summary"] = summary
        step["outcome"] = pytest_outcome(step["returncode"], summary)
        failed |= step["outcome"] != "passed"
        record["steps"]["pytest"] = step
        print(f"gpu-check: pytest -m gpu: {step['outcome']} {summary}", file=sys.stderr)

    if "bench" not in args.skip:
        print(f"gpu-check: kato-gpu bench --patterns {args.bench_patterns} --device gpu ...", file=sys.stderr)
        bench_json = logs / "bench.json"
        bench_cmd = [args.python, "-m", "kato_gpu.cli", "bench", "--patterns", str(args.bench_patterns)]
        bench_cmd += ["--queries", str(BENCH_QUERIES), "--max-predictions", str(BENCH_LIMIT), "--device", "gpu"]
        bench_cmd += ["--learn", "0", "--difflib-sample", "500", "--no-progress", "--json", str(bench_json)]
        if bench_json.exists():
            bench_json.unlink()
        step = run_step(bench_cmd, ROOT, left(args.bench_timeout), logs / "bench.log")
        report = json.loads(bench_json.read_text()) if bench_json.is_file() else None
        problems = [] if report is None else bench_device_check(report)
        if step["returncode"] is None:
            step["outcome"] = "timeout"
        elif step["returncode"] != 0 or report is None or not report.get("ok"):
            step["outcome"] = "failed"
        else:
            step["outcome"] = "failed" if problems else "passed"
        step["device_problems"] = problems
        if report is not None:
            step["median_ms"] = {m: r["engines"]["kato_gpu"]["median_ms"] for m, r in report.get("results", {}).items()}
        step["report"] = report
        failed |= step["outcome"] != "passed"
        record["steps"]["bench"] = step
        print(f"gpu-check: bench: {step['outcome']} {step.get('median_ms')} {problems}", file=sys.stderr)

    if "sanitizer" not in args.skip:
        sanitizer = find_sanitizer()
        if sanitizer is None:
            step = {
                "outcome": "absent",
                "reason": "compute-sanitizer not found (PATH, nvidia wheels, CUDA_HOME, "
                "/usr/local/cuda/bin): memcheck skipped",
            }
        elif left(1e9) < 30:
            step = {"outcome": "timeout", "path": sanitizer, "reason": "less than 30 s of the budget left"}
        else:
            print(f"gpu-check: {sanitizer} --tool memcheck pytest -m gpu ...", file=sys.stderr)
            cmd = [sanitizer, "--tool", "memcheck", "--error-exitcode", str(SANITIZER_ERROR_EXIT)]
            cmd += ["--target-processes", "all", "--print-limit", "50"] + pytest_cmd + ["-x"]
            step = run_step(cmd, TESTS, left(1e9), logs / "sanitizer.log")
            step.update(sanitizer_outcome(step["returncode"], step["_output"]))
            step["path"] = sanitizer
        failed |= step["outcome"] not in ("clean", "absent", "unsupported")
        record["steps"]["sanitizer"] = step
        print(f"gpu-check: compute-sanitizer memcheck: {step['outcome']} {step.get('reason', '')}", file=sys.stderr)

    for step in record["steps"].values():
        step.pop("_output", None)
    return finish(EXIT_FAILED if failed else EXIT_OK)


if __name__ == "__main__":
    sys.exit(main())
