"""The ``kato-gpu`` command line: arguments as ``--help`` offers them, output files checked before a
run, ``--no-progress``, ``predict-bench``'s help and progress, and ``bench --plot``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from kato_gpu.bench.docs_figures import figures, render
from kato_gpu.cli import PLOT_THRESHOLDS, build_parser, default_sizes, main

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False
needs_matplotlib = pytest.mark.skipif(
    not HAVE_MATPLOTLIB,
    reason="matplotlib is not installed (make test-python installs it: pip install 'kato-gpu[plot]')",
)

# A benchmark of a second or two: enough to exercise every part, nothing to time.
TINY = ["--patterns", "1000", "--queries", "2", "--learn", "20", "--difflib-sample", "20", "--seed", "3"]


def test_thresholds_none_means_no_sweep_as_help_says(capsys):
    parser = build_parser()
    assert parser.parse_args(["bench", "--thresholds", "none"]).thresholds == ()
    assert parser.parse_args(["bench", "--thresholds", " None "]).thresholds == ()
    assert parser.parse_args(["bench", "--thresholds", "0,0.5"]).thresholds == (0.0, 0.5)
    assert "none: no sweep" in " ".join(parser._subparsers._group_actions[0].choices["bench"].format_help().split())
    assert main(["bench", *TINY, "--metric", "lcs", "--thresholds", "none", "--no-progress"]) == 0
    assert "threshold sweep" not in capsys.readouterr().out


@pytest.mark.parametrize("command", ["bench", "predict-bench", "scale-bench", "learn-bench", "kato-bench"])
def test_an_unwritable_json_path_is_a_usage_error_before_any_work(command, tmp_path, capsys):
    missing = tmp_path / "no-such-dir" / "x.json"
    assert main([command, "--json", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "usage:" in captured.err and "does not exist" in captured.err
    assert captured.out == ""  # nothing ran
    assert main([command, "--json", str(tmp_path)]) == 2  # a directory
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: no unwritable directory to test with")
def test_a_read_only_directory_is_a_usage_error(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["bench", "--json", str(folder / "x.json")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        folder.chmod(0o700)


def test_the_json_path_check_runs_in_the_installed_command(tmp_path):
    # The console script, as an operator runs it: exit status 2 and the usage line, at once.
    proc = subprocess.run(
        [sys.executable, "-m", "kato_gpu.cli", "bench", "--json", str(tmp_path / "missing" / "x.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "usage: kato-gpu bench" in proc.stderr and proc.stdout == ""


def test_no_progress_prints_nothing_on_stderr(capsys):
    assert main(["bench", *TINY, "--thresholds", "0,0.5", "--batch", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "metric lcs" in captured.out and "metric difflib" in captured.out
    # Without the flag, progress goes to stderr (one plain line per tenth off a terminal).
    assert main(["bench", *TINY, "--metric", "lcs"]) == 0
    assert "loading (lcs)" in capsys.readouterr().err


def _options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_every_option_of_every_command_has_a_help_text():
    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [
        f"{name} {action.option_strings[0]}"
        for name, sub in commands.items()
        for action in _options(sub)
        if not (action.help or "").strip()
    ]
    assert not missing
    assert commands["predict-bench"].description


def test_predict_bench_shows_progress_unless_told_not_to(capsys):
    args = ["predict-bench", "--patterns", "500", "--queries", "2", "--sample", "20", "--metric", "lcs"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "predictions (lcs)" in captured.err and "verified" in captured.out
    assert main([*args, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["figure.gif", "figure"])
def test_plot_needs_png_or_svg(name, tmp_path, capsys):
    assert main(["bench", "--plot", str(tmp_path / name)]) == 2
    assert ".png or .svg" in capsys.readouterr().err


def test_sizes_must_be_below_the_pattern_count(capsys):
    assert main(["bench", "--patterns", "1000", "--sizes", "100,1000", "--no-progress"]) == 2
    assert "--sizes must be below --patterns" in capsys.readouterr().err
    assert default_sizes(100_000) == (1_000, 10_000) and default_sizes(5_000) == (500,)


def test_plot_without_matplotlib_fails_before_the_benchmark(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # makes `import matplotlib` raise ImportError
        "from kato_gpu.cli import main\n"
        f"sys.exit(main(['bench', '--plot', {str(tmp_path / 'f.png')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'kato-gpu[plot]'" in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "f.png").exists()


@needs_matplotlib
@pytest.mark.parametrize("ext,header", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<svg")])
def test_bench_plot_writes_the_figure(ext, header, tmp_path, capsys):
    figure, report_path = tmp_path / f"capacity{ext}", tmp_path / "r.json"
    status = main(["bench", *TINY, "--plot", str(figure), "--json", str(report_path), "--no-progress"])
    assert status == 0
    data = figure.read_bytes()
    if ext == ".png":
        assert data.startswith(header)
    else:
        assert data.lstrip().startswith(b"<?xml") and header in data[:2000]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    for metric in ("lcs", "difflib"):
        result = report["results"][metric]
        # --plot brings its sweep and its sizes (N/100 is under 100 here: N/10 only, then N).
        assert [r["threshold"] for r in result["thresholds"]["rows"]] == list(PLOT_THRESHOLDS)
        assert [r["patterns"] for r in result["sizes"]["rows"]] == [100, 1000]
        assert result["sizes"]["verification"]["ok"]
    assert report["results"]["lcs"]["sizes"]["verification"]["whole_results_checked"] == 2
    assert "latency against N (lcs" in capsys.readouterr().out


@needs_matplotlib
def test_a_saved_report_draws_again(tmp_path):
    report_path = tmp_path / "r.json"
    assert main(["bench", *TINY, "--metric", "difflib", "--json", str(report_path), "--no-progress"]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "kato_gpu.bench.plot", str(report_path), str(tmp_path / "again.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again.png").read_bytes().startswith(b"\x89PNG")


def test_docs_figures_come_from_the_report(tmp_path, capsys):
    report_path = tmp_path / "r.json"
    assert main(["bench", *TINY, "--thresholds", "0.1,0.9", "--json", str(report_path), "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads(report_path.read_text(encoding="utf-8"))
    figs = figures(report)
    for metric, f in figs.items():
        kato = report["results"][metric]["engines"]["kato_gpu"]
        assert f["p95_ms"] == kato["p95_ms"] and f["alert_cpu_p99_seconds"] == 2 * kato["p95_ms"] / 1e3
        assert f["scan_ns_per_pattern"] == kato["median_ms"] / 1000 * 1e6
        assert f["learn_p50_us"] == report["results"][metric]["learning"]["p50_us"]
    text = render(report, "r.json")
    assert text.count("\n| lcs |") == 1 and "Scan cost per pattern against the threshold" in text
    assert f"`> {figs['lcs']['alert_cpu_p99_seconds']:.3g}`" in text
    proc = subprocess.run(
        [sys.executable, "-m", "kato_gpu.bench.docs_figures", str(report_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout == render(report, str(report_path))


def test_the_docs_figures_module_needs_one_report():
    from kato_gpu.bench.docs_figures import main as figures_main

    assert figures_main([]) == 2


def test_the_plot_module_refuses_other_formats(tmp_path):
    from kato_gpu.bench.plot import draw

    with pytest.raises(ValueError, match=".png or .svg"):
        draw({"results": {}}, str(tmp_path / "x.pdf"))


def test_cli_module_runs_as_a_script():
    proc = subprocess.run(
        [sys.executable, "-m", "kato_gpu.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.startswith("kato-gpu ")
