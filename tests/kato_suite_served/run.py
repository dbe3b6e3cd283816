"""KATO's own service tests against KATO served twice, unmodified and with kato_gpu switched on:
``python tests/kato_suite_served/run.py`` (``make kato-suite``).

For each variant, :class:`~kato_gpu.kato_host.process.KatoServer` serves unmodified KATO on
``localhost:8000`` (where KATO's fixtures look for it) with its Redis on ``localhost:6379`` (where
some of KATO's tests read it), fresh storage each time; the second variant adds
``KATO_GPU_ACCELERATE=1`` to the server's environment only. pytest then runs KATO's
``tests/tests/unit``, ``integration`` and ``api`` from KATO's checkout (``$KATO_SRC``, default
``../shared/kato``) as they are: KATO's ``pytest.ini`` and conftests, no cache, no bytecode, the
working directory and the JUnit XML in a temporary directory. The test process itself never has
``KATO_GPU_ACCELERATE``: the server is the only difference.

The outcomes are compared test by test. Every test must have the same outcome both ways, and a
test that fails must fail the same way (the exception type and the first line of its message,
with the per-run parts masked: uuids, KATO's generated test node ids, hex addresses, numbers of
four digits or more). The accelerated server reports what kato_gpu answered
(``kato_gpu.kato.status()``); a run where it answered nothing is an error too, as is any file the
runs left in KATO's checkout.

Exit status: 0 when both runs agree, 1 on any difference, 2 when a run could not be made; 0
with a message when there is no KATO checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
TEST_DIRS = ("unit", "integration", "api")
VARIANTS = ("unmodified", "kato_gpu")
# KATO's fixtures look for the service at these ports, 8000 first.
FIXTURE_PORTS = (8000, 8001, 8002, 8003)

# Parts of a failure message that differ from run to run by construction.
_MASKS = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "0x<addr>"),
    # KATO's fixture names each test's node test_<name>_<milliseconds>_<8 hex>.
    (re.compile(r"_\d{13}_[0-9a-f]{8}"), "_<time>_<id>"),
    (re.compile(r"session-[0-9a-f]{8,}"), "session-<id>"),
    # Counters, timestamps and ports (KATO's request total is several thousand by then); small
    # numbers, such as a count of predictions, are compared.
    (re.compile(r"(?<![\w.])\d{4,}(?:\.\d+)?(?![\w.])"), "<n>"),
)

_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Failed|Timeout|Interrupt)):?(?:\s|$)")


class Outcome:
    __slots__ = ("status", "kind", "message")

    def __init__(self, status: str, kind: str = "", message: str = "") -> None:
        self.status = status  # passed | failed | error | skipped
        self.kind = kind
        self.message = message

    def signature(self) -> Tuple[str, str, str]:
        first = self.message.strip().splitlines()[0] if self.message.strip() else ""
        for pattern, repl in _MASKS:
            first = pattern.sub(repl, first)
        return self.status, self.kind, first

    def reason(self, width: int = 110) -> str:
        _, kind, first = self.signature()
        text = f"{kind}: {first}" if kind and not first.startswith(kind) else first
        return text if len(text) <= width else text[: width - 3] + "..."


# KATO tests whose outcome depends on the machine's load or on timing, not on the code serving
# them: seen passing and failing on the same server. A difference there is shown, not counted.
UNSTABLE = {
    "tests.api.test_fastapi_endpoints::test_health_endpoint": (
        "KATO's /health says 'degraded' while its metrics collector reads the CPU above 80 %"
    ),
    "tests.api.test_monitoring_endpoints.TestMonitoringEndpoints::test_metrics_collection_after_requests": (
        "KATO caches /metrics for 5 s (METRICS_CACHE_TTL_SECONDS) and the test waits 1 s: whether the second "
        "read is fresh depends on when the cache was last filled"
    ),
}


def exception_type(message: str, report: str) -> str:
    """The exception type of a failure: pytest's JUnit XML gives the message of the exception
    raised last and its report (``E`` lines, a chained cause first), but no type."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    blocks: List[str] = []  # first line of each block of E lines: the last is the raised one
    previous_e = False
    for line in report.splitlines():
        is_e = line.startswith("E ")
        if is_e and not previous_e:
            blocks.append(line[1:].strip())
        previous_e = is_e
    for text in (first, *reversed(blocks)):
        if text.startswith("assert ") or text == "assert":
            return "AssertionError"
        match = _EXCEPTION.match(text)
        if match:
            return match.group(1)
    return ""


def parse_junit(path: Path) -> Dict[str, Outcome]:
    outcomes: Dict[str, Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = Outcome("passed")
        # A test can hold a failure and a teardown error; the first one found decides.
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = child.get("message") or (child.text or "")
                kind = child.get("type") or exception_type(message, child.text or "")
                outcome = Outcome(status, kind, message)
                break
        if test_id in outcomes:  # a setup error reported besides the call: keep the worse
            if outcomes[test_id].status != "passed":
                continue
        outcomes[test_id] = outcome
    return outcomes


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def checkout_snapshot(kato_src: Path) -> Dict[str, Tuple[int, int]]:
    snap = {}
    for dirpath, _dirs, files in os.walk(kato_src):
        for name in files + [""]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            snap[os.path.relpath(path, kato_src)] = (st.st_size, st.st_mtime_ns)
    return snap


def run_variant(
    variant: str, kato_src: Path, out: Path, args: argparse.Namespace
) -> Tuple[Dict[str, Outcome], float, float, Optional[dict]]:
    from kato_gpu.kato_host.process import KatoServer

    vdir = out / variant
    vdir.mkdir(parents=True, exist_ok=True)
    env = {"KATO_GPU_ACCELERATE": "1"} if variant == "kato_gpu" else {}
    status_file = vdir / "kato_gpu_status.json"
    server = KatoServer(
        kato_src=kato_src,
        env=env,
        port=args.port,
        redis_port=args.redis_port,
        workdir=vdir / "server",
        status_file=status_file,
    )
    junit = vdir / "junit.xml"
    test_paths = args.tests or [str(kato_src / "tests" / "tests" / d) for d in TEST_DIRS]
    argv = [
        sys.executable, "-m", "pytest",
        "-c", str(kato_src / "tests" / "pytest.ini"),
        "--rootdir", str(kato_src / "tests"),
        "--confcutdir", str(kato_src / "tests"),
        "-p", "no:cacheprovider",
        "--junitxml", str(junit),
        "-o", "junit_logging=no",
        "--timeout", "300",
        "-q", "--no-header", "-rN",
        *args.pytest_args,
        *test_paths,
    ]  # fmt: skip
    test_env = dict(os.environ)
    test_env.pop("KATO_GPU_ACCELERATE", None)
    test_env["PYTHONDONTWRITEBYTECODE"] = "1"
    print(f"[{variant}] starting KATO on port {args.port} (Redis on {args.redis_port})", flush=True)
    started = time.monotonic()
    with server:
        print(f"[{variant}] KATO up in {server.startup_seconds:.1f} s; running pytest", flush=True)
        test_started = time.monotonic()
        with open(vdir / "pytest.log", "wb") as log:
            done = subprocess.run(argv, cwd=str(vdir), env=test_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        test_seconds = time.monotonic() - test_started
    total_seconds = time.monotonic() - started
    if not junit.is_file():
        raise RuntimeError(f"[{variant}] pytest wrote no JUnit XML (exit {done.returncode}); see {vdir / 'pytest.log'}")
    status = json.loads(status_file.read_text()) if status_file.is_file() else None
    outcomes = parse_junit(junit)
    print(
        f"[{variant}] pytest exit {done.returncode}, {len(outcomes)} tests in {test_seconds:.0f} s "
        f"({total_seconds:.0f} s with the server); log {vdir / 'pytest.log'}",
        flush=True,
    )
    return outcomes, test_seconds, total_seconds, status


def counts(outcomes: Dict[str, Outcome]) -> Dict[str, int]:
    tally = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for outcome in outcomes.values():
        tally[outcome.status] += 1
    return tally


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="KATO's port (KATO's fixtures try 8000 first)")
    parser.add_argument("--redis-port", type=int, default=6379, help="its Redis's port (KATO's tests read 6379)")
    parser.add_argument("--out", help="directory for the logs and JUnit XML (default: a new temporary one)")
    parser.add_argument("--only", choices=VARIANTS, help="one run, no comparison")
    parser.add_argument(
        "--compare", metavar="DIR", help="compare the runs already in DIR (an earlier --out) instead of running"
    )
    parser.add_argument("--tests", nargs="+", help="test paths instead of KATO's unit, integration and api")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments (-k, -x, ...)")
    args = parser.parse_args(argv)

    kato_src = Path(os.environ.get("KATO_SRC") or ROOT.parent / "shared" / "kato").resolve()
    if not (kato_src / "tests" / "tests" / "conftest.py").is_file():
        print(f"KATO service suite skipped: no KATO checkout with its tests at {kato_src} (set KATO_SRC)")
        return 0
    if args.compare:
        return compare(load_results(Path(args.compare)), touched=False, out=Path(args.compare))
    busy = [p for p in (*FIXTURE_PORTS, args.redis_port) if port_in_use(p)]
    if busy:
        print(f"error: ports {busy} are in use; KATO's tests would talk to whatever answers there", file=sys.stderr)
        return 2
    import kato_gpu

    print(f"kato_gpu {kato_gpu.__version__} from {Path(kato_gpu.__file__).parent}; KATO from {kato_src}")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kato-suite-"))
    out.mkdir(parents=True, exist_ok=True)
    before = checkout_snapshot(kato_src)

    results = {}
    try:
        for variant in VARIANTS if args.only is None else (args.only,):
            results[variant] = run_variant(variant, kato_src, out, args)
    except Exception as exc:  # a run that could not be made: say why, compare nothing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        after = checkout_snapshot(kato_src)
        touched = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
        if touched:
            print(f"error: the runs changed KATO's checkout: {touched[:20]}", file=sys.stderr)
    return compare(results, bool(touched), out)


def load_results(out: Path) -> dict:
    results = {}
    for variant in VARIANTS:
        junit, status_file = out / variant / "junit.xml", out / variant / "kato_gpu_status.json"
        if junit.is_file():
            status = json.loads(status_file.read_text()) if status_file.is_file() else None
            results[variant] = (parse_junit(junit), float("nan"), float("nan"), status)
    return results


def compare(results: dict, touched: bool, out: Path) -> int:
    print()
    print(f"{'variant':<12} {'tests':>6} {'passed':>7} {'failed':>7} {'error':>6} {'skipped':>8} {'pytest s':>9}")
    for variant, (outcomes, test_s, _total_s, _status) in results.items():
        c = counts(outcomes)
        print(
            f"{variant:<12} {len(outcomes):>6} {c['passed']:>7} {c['failed']:>7} {c['error']:>6} "
            f"{c['skipped']:>8} {test_s:>9.0f}"
        )
    problems = 1 if touched else 0

    accelerated = results.get("kato_gpu")
    if accelerated is not None:
        status = accelerated[3]
        print(f"\nkato_gpu in the server: {json.dumps(status.get('counts') if status else None, sort_keys=True)}")
        if not status or not status.get("installed"):
            print("error: kato_gpu was not switched on in the server (is the wheel installed? `make install`)")
            problems += 1
        elif not any(k in ("accelerated", "single_symbol") for k in status.get("counts", {})):
            print("error: kato_gpu answered no prediction in the whole run")
            problems += 1

    base = results.get("unmodified")
    failing = {t: o for t, o in base[0].items() if o.status in ("failed", "error")} if base else {}
    if failing:
        print(f"\nfailing on unmodified KATO ({len(failing)}):")
        for test_id in sorted(failing):
            print(f"  {failing[test_id].status:<6} {test_id}\n         {failing[test_id].reason()}")

    if base is not None and accelerated is not None:
        plain, fast = base[0], accelerated[0]
        diffs = []
        for test_id in sorted(set(plain) | set(fast)):
            a, b = plain.get(test_id), fast.get(test_id)
            if a is None or b is None:
                diffs.append((test_id, a, b))
            elif a.status != b.status or (a.status in ("failed", "error") and a.signature() != b.signature()):
                diffs.append((test_id, a, b))
        unstable = [d for d in diffs if d[0] in UNSTABLE]
        diffs = [d for d in diffs if d[0] not in UNSTABLE]
        for title, rows in (
            (f"\nDIFFERENCES ({len(diffs)}): unmodified -> kato_gpu", diffs),
            (f"\nload- or timing-dependent tests that differed ({len(unstable)}, not counted):", unstable),
        ):
            if not rows:
                continue
            print(title)
            for test_id, a, b in rows:
                left = f"{a.status} {a.reason(70)}" if a else "absent"
                right = f"{b.status} {b.reason(70)}" if b else "absent"
                print(f"  {test_id}\n      {left}\n   -> {right}")
                if test_id in UNSTABLE:
                    print(f"      ({UNSTABLE[test_id]})")
        if diffs:
            problems += 1
        else:
            print(
                f"\nsame outcome for all {len(plain) - len(unstable)} tests compared, and the same failure for "
                "each failing one"
            )
    print(f"\nlogs and JUnit XML: {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
