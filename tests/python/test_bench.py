"""``kato-gpu bench`` at tiny sizes: exit codes, JSON contents, independent recounts, and that a
wrong result is caught. Also the workload generator and the progress bar on their own."""

import io
import json
import sys

import numpy as np
import pytest

rapidfuzz = pytest.importorskip("rapidfuzz")

import kato_gpu  # noqa: E402
from kato_gpu import cli  # noqa: E402
from kato_gpu._progress import Progress  # noqa: E402
from kato_gpu.bench import generate_workload, pattern_index, pattern_name, pattern_names  # noqa: E402
from kato_gpu.bench.oracles import reference  # noqa: E402

N = 2000
Q = 3
SEED = 7
THRESHOLD = 0.1
LEARN = 300  # patterns learned one by one after the queries (every bench run here learns)


def _bench(tmp_path, *extra, name="bench.json"):
    path = tmp_path / name
    argv = [
        "bench",
        "--patterns",
        str(N),
        "--queries",
        str(Q),
        "--seed",
        str(SEED),
        "--threshold",
        str(THRESHOLD),
        "--no-progress",
        "--json",
        str(path),
        "--learn",
        str(LEARN),
        *extra,
    ]
    code = cli.main(argv)
    report = json.loads(path.read_text()) if path.exists() else None
    return code, report


def _recount(shape, query, metric):
    """Matches of one query over all N patterns, computed here from the symbols."""
    wl = generate_workload(N, Q, shape, SEED)
    state = [s for event in wl.query_events[query] for s in event]
    count = 0
    for i in range(N):
        pattern = [s for event in wl.pattern_events(i) for s in event]
        count += reference(metric)(pattern, state) >= THRESHOLD
    return count


# ---------------------------------------------------------------------------- the command
@pytest.mark.parametrize(
    "shape,metric,limit",
    [
        ("kato", "both", "all"),
        ("chunks", "both", "10"),
        ("kato", "difflib", "10"),
        ("chunks", "lcs", "all"),
    ],
)
def test_bench_runs_and_reports(tmp_path, capsys, shape, metric, limit):
    code, report = _bench(
        tmp_path, "--shape", shape, "--metric", metric, "--max-predictions", limit, "--difflib-sample", "400"
    )
    out = capsys.readouterr().out
    assert code == 0, out
    metrics = ["lcs", "difflib"] if metric == "both" else [metric]
    assert report["ok"] is True
    assert set(report) >= {"ok", "options", "environment", "workload", "results"}
    assert set(report["environment"]) >= {"python", "numpy", "rapidfuzz", "kato_gpu", "cpu_count"}
    assert report["workload"]["n_patterns"] == N and report["workload"]["n_queries"] == Q
    assert report["options"]["max_predictions"] == (None if limit == "all" else int(limit))
    assert sorted(report["results"]) == sorted(metrics)
    for m in metrics:
        r = report["results"][m]
        assert set(r) >= {"load", "engines", "verification"}
        assert set(r["load"]) >= {"seconds", "patterns_per_s", "memory_bytes", "rss_growth_bytes"}
        assert r["load"]["memory_bytes"] > 0
        assert set(r["engines"]) == {"kato_gpu", "rapidfuzz", "difflib"}
        for e in r["engines"].values():
            assert set(e) >= {"median_ms", "p95_ms", "speedup", "mean_matches", "times_ms"}
            assert len(e["times_ms"]) == Q
        assert r["engines"]["difflib"]["extrapolated"] is True
        assert r["engines"]["difflib"]["sample"] == 400
        kg = r["engines"]["kato_gpu"]
        assert kg["lcs_kernel"] in ("scalar", "avx2")
        assert kg["symbol_bytes"] > 0 and kg["effective_gb_s"] > 0 and kg["stream_gb_s"] > 0
        v = r["verification"]
        assert v["ok"] and v["queries_with_differences"] == 0
        assert v["sampled_pairs_checked"] == Q * 400
        assert v["queries_checked_whole_result"] == (Q if m == "lcs" else 0)
        assert f"metric {m}" in out
        assert "GB/s effective at the median" in out
        # Where the warm-up and the timed queries ran (make gpu-check wants them all on the device).
        stats = r["query_stats"]
        assert stats["gpu_queries"] + stats["cpu_queries"] == Q + 1
        assert stats["gpu_queries"] == (Q + 1 if stats["bulk_tier_device"] == "gpu" else 0)

    # kato_gpu's count for query 0, recomputed here from the regenerated symbols.
    m = metrics[-1]
    expected = _recount(shape, 0, m)
    if limit != "all":
        expected = min(expected, int(limit))
    assert report["results"][m]["engines"]["kato_gpu"]["matches_per_query"][0] == expected
    if m == "lcs":
        assert report["results"][m]["engines"]["rapidfuzz"]["above_threshold_per_query"][0] == _recount(shape, 0, "lcs")


@pytest.mark.skipif(kato_gpu.cuda.available(), reason="checks the behaviour without a GPU")
def test_bench_device_gpu_without_a_gpu_is_refused_before_any_work(tmp_path, capsys):
    code, report = _bench(tmp_path, "--device", "gpu")
    err = capsys.readouterr().err
    assert code == 2 and report is None
    assert f"--device gpu, but no usable CUDA GPU: {kato_gpu.cuda.device_info()['reason']}" in err


def test_bench_device_cpu_keeps_every_query_on_the_cpu(tmp_path):
    code, report = _bench(tmp_path, "--device", "cpu", "--metric", "lcs", "--difflib-sample", "50")
    assert code == 0 and report["options"]["device"] == "cpu"
    stats = report["results"]["lcs"]["query_stats"]
    assert stats["bulk_tier_device"] == "cpu" and stats["gpu_queries"] == 0 and stats["cpu_queries"] == Q + 1


# ---------------------------------------------------------------------------- learning latency
LEARNING_KEYS = {
    "patterns",
    "learned",
    "p50_us",
    "p99_us",
    "max_us",
    "mean_us",
    "min_us",
    "total_s",
    "patterns_per_s",
    "promotion",
    "matcher_patterns_after",
    "bulk_tier_patterns_after",
    "recent_tier_patterns_after",
}


@pytest.mark.parametrize("shape", ["kato", "chunks"])
def test_learning_is_reported(tmp_path, capsys, shape):
    code, report = _bench(tmp_path, "--shape", shape, "--difflib-sample", "50")
    out = capsys.readouterr().out
    assert code == 0, out
    assert report["options"]["learn"] == LEARN
    for m in ("lcs", "difflib"):
        r = report["results"][m]
        assert r["verification"]["ok"] and r["verification"]["learning_ok"]
        learning = r["learning"]
        assert set(learning) >= LEARNING_KEYS
        # Counts: every pattern learned, the matcher grew by exactly that, all promoted at once.
        assert learning["patterns"] == learning["learned"] == LEARN
        assert learning["matcher_patterns_after"] == N + LEARN
        assert learning["bulk_tier_patterns_after"] == N + LEARN
        assert learning["recent_tier_patterns_after"] == 0
        assert learning["promotion"]["patterns"] == LEARN
        assert learning["promotion"]["ms"] >= 0.0
        assert learning["promotion"]["bulk_device"] in ("cpu", "gpu")
        # Order statistics are consistent (no claim about how fast).
        assert 0.0 < learning["min_us"] <= learning["p50_us"] <= learning["p99_us"] <= learning["max_us"]
        assert learning["min_us"] <= learning["mean_us"] <= learning["max_us"]
        assert learning["patterns_per_s"] > 0
        assert learning["total_s"] == pytest.approx(learning["mean_us"] * LEARN / 1e6, rel=1e-6)
    assert out.count("learning: 300 patterns") == 2 and out.count("promotion: sync_cpu_to_gpu()") == 2


def test_learning_off(tmp_path, capsys):
    code, report = _bench(tmp_path, "--metric", "lcs", "--difflib-sample", "0", "--learn", "0")
    assert code == 0
    assert report["options"]["learn"] == 0
    assert report["results"]["lcs"]["learning"] is None
    assert "learning:" not in capsys.readouterr().out


def test_learning_patterns_are_new_and_kato_shaped(monkeypatch, tmp_path):
    seen = []
    real = kato_gpu.HybridGPUMatcher.add_new_pattern

    def spy(self, name, events):
        seen.append((name, events))
        return real(self, name, events)

    monkeypatch.setattr(kato_gpu.HybridGPUMatcher, "add_new_pattern", spy)
    code, _ = _bench(tmp_path, "--metric", "lcs", "--difflib-sample", "0")
    assert code == 0
    names = [name for name, _ in seen]
    assert len(names) == LEARN + 1  # one untimed warm-up call
    assert len(set(names)) == len(names)
    loaded = set(pattern_names(0, N))
    assert not loaded & set(names)
    for _, events in seen:
        assert 2 <= len(events) <= 5
        assert all(isinstance(e, list) and e == sorted(e) and all(isinstance(x, str) for x in e) for e in events)


def test_refused_learning_fails_the_run(monkeypatch, tmp_path, capsys):
    real = kato_gpu.HybridGPUMatcher.add_new_pattern
    calls = []

    def flaky(self, name, events):
        calls.append(name)
        return False if len(calls) == 10 else real(self, name, events)

    monkeypatch.setattr(kato_gpu.HybridGPUMatcher, "add_new_pattern", flaky)
    code, report = _bench(tmp_path, "--metric", "lcs", "--difflib-sample", "0")
    assert code == 1
    v = report["results"]["lcs"]["verification"]
    assert not v["ok"] and not v["learning_ok"] and v["queries_with_differences"] == 0
    assert "refused 1 of" in capsys.readouterr().err


def test_help_and_bad_arguments(capsys):
    assert cli.main(["--help"]) == 0
    assert cli.main(["bench", "--help"]) == 0
    assert "--max-predictions" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert kato_gpu.__version__ in capsys.readouterr().out
    for bad in (
        ["bench", "--patterns", "0"],
        ["bench", "--max-predictions", "some"],
        ["bench", "--threshold", "1.5"],
        ["bench", "--metric", "cosine"],
        ["bench", "--shape", "round"],
        ["bench", "--difflib-sample", "-1"],
        ["bench", "--learn", "-1"],
        ["bench", "--learn", "many"],
        ["frobnicate"],
    ):
        assert cli.main(bad) == 2, bad
    assert cli.main([]) == 2


def test_missing_rapidfuzz_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rapidfuzz", None)  # makes `import rapidfuzz` fail
    assert cli.main(["bench", "--patterns", "10", "--queries", "1", "--no-progress"]) == 2
    assert "pip install 'kato-gpu[bench]'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- wrong results are caught
class _Altered:
    """Stands in for a MatchResult: the real one with one match dropped or one value changed."""

    def __init__(self, result, drop=None, bump=None):
        sims = np.array(result.similarities, dtype=np.float64)
        names = list(result.names)
        if drop is not None and names:
            k = min(drop, len(names) - 1)
            sims = np.delete(sims, k)
            del names[k]
        if bump is not None and names:
            k = min(bump, len(names) - 1)
            sims[k] = np.nextafter(sims[k], -np.inf)  # one ulp lower
        self.similarities = sims
        self.names = names

    def __len__(self):
        return len(self.names)


def _patch(monkeypatch, **how):
    real = kato_gpu.HybridGPUMatcher.match_patterns_arrays

    def altered(self, state, threshold, max_predictions=None):
        return _Altered(real(self, state, threshold, max_predictions), **how)

    monkeypatch.setattr(kato_gpu.HybridGPUMatcher, "match_patterns_arrays", altered)


@pytest.mark.parametrize("metric", ["lcs", "difflib"])
def test_dropped_match_is_detected(tmp_path, monkeypatch, capsys, metric):
    _patch(monkeypatch, drop=N // 20)
    # difflib checks a sample; sampling every pattern makes the dropped one certain to be seen.
    code, report = _bench(tmp_path, "--metric", metric, "--difflib-sample", str(N))
    assert code == 1
    assert report["ok"] is False
    assert report["results"][metric]["verification"]["queries_with_differences"] == Q
    err = capsys.readouterr().err
    assert "differ" in err and "missing" in err


def test_one_ulp_is_detected(tmp_path, monkeypatch, capsys):
    _patch(monkeypatch, bump=3)
    code, report = _bench(tmp_path, "--metric", "lcs", "--difflib-sample", "0")
    assert code == 1
    assert not report["results"]["lcs"]["verification"]["ok"]
    assert "position 3" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the workload
@pytest.mark.parametrize("shape", ["kato", "chunks"])
def test_workload_is_seeded(shape):
    a = generate_workload(500, 4, shape, seed=3)
    b = generate_workload(500, 4, shape, seed=3)
    c = generate_workload(500, 4, shape, seed=4)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.offsets, b.offsets)
    assert a.query_events == b.query_events
    assert not np.array_equal(a.tokens, c.tokens)
    assert a.tokens.dtype == np.int32 and a.offsets.dtype == np.int64
    assert a.vocab == sorted(a.vocab) and len(set(a.vocab)) == len(a.vocab)


def test_kato_shape():
    wl = generate_workload(3000, 30, "kato", seed=1)
    assert len(wl.vocab) == 200
    assert sum(s.startswith("VCTR|") for s in wl.vocab) == 50
    for i in range(0, 3000, 7):
        events = wl.pattern_events(i)
        assert 2 <= len(events) <= 5
        for event in events:
            assert 3 <= len(event) <= 15
            assert event == sorted(event) and len(set(event)) == len(event)
        assert [s for e in events for s in e] == wl.pattern_symbols(i)
    # Zipf: the most frequent symbol is tok_0, and the commonest symbols are far ahead of the rarest.
    counts = np.bincount(wl.tokens, minlength=200)
    assert wl.vocab[int(np.argmax(counts))] == "tok_0"
    assert counts.max() > 20 * counts.min()
    for q in range(30):
        source = wl.pattern_events(int(wl.query_sources[q]))
        query = wl.query_events[q]
        assert 1 <= len(query) <= len(source)
        for kept, event in zip(query, source):
            assert kept == sorted(kept) and len(set(kept)) == len(kept)
            shared = len(set(kept) & set(event))
            assert 1 <= shared and len(kept) - shared <= 3
            assert shared >= int(len(event) * 0.3) and shared <= max(1, int(len(event) * 0.7)) + 3
        assert wl.state_symbols(q) == [s for e in query for s in e]


def test_chunks_shape():
    wl = generate_workload(2000, 30, "chunks", seed=1)
    assert len(wl.vocab) == 50_000
    assert np.all(wl.lengths == 5)
    for q in range(30):
        source = wl.pattern_symbols(int(wl.query_sources[q]))
        state = wl.state_symbols(q)
        assert len(state) == 5
        assert 1 <= sum(a != b for a, b in zip(source, state)) <= 3


def test_names_sort_like_indices_and_parse_back():
    names = pattern_names(0, 5000)
    assert names == sorted(names)
    assert all(len(n) == 45 and n.startswith("PTRN|") for n in names[:10])
    assert pattern_name(255) == "PTRN|" + "0" * 38 + "ff"
    assert np.array_equal(pattern_index(names, 5000), np.arange(5000))
    bad = ["PTRN|x", pattern_name(5000), "PTRN|" + "0" * 39 + "G", "XXXX|" + "0" * 40, pattern_name(9)]
    assert pattern_index(bad, 5000).tolist() == [-1, -1, -1, -1, 9]


def test_encoder_assigns_sorted_ids():
    wl = generate_workload(100, 1, "kato", seed=0)
    enc = kato_gpu.SymbolVocabularyEncoder(None)
    assert np.array_equal(wl.encoder_ids(enc), np.arange(len(wl.vocab)))


# ---------------------------------------------------------------------------- the progress bar
def test_progress_without_tty_prints_tenths():
    stream = io.StringIO()
    with Progress(1000, label="loading", unit="patterns", stream=stream) as bar:
        for _ in range(100):
            bar.update(10)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[-1].startswith("loading: 100% 1,000/1,000 patterns")


def test_progress_tty_and_disabled():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = Progress(50, stream=stream, min_interval=0.0)
    for _ in range(50):
        bar.update()
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") >= 2 and text.endswith("\n") and "100.0%" in text
    quiet = io.StringIO()
    with Progress(10, stream=quiet, enabled=False) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


def test_predict_bench_verifies_and_detects_a_wrong_tuple(monkeypatch, capsys):
    from kato_gpu import HybridGPUMatcher
    from kato_gpu.cli import main

    assert main(["predict-bench", "--patterns", "1500", "--queries", "2", "--sample", "300"]) == 0
    assert "verified" in capsys.readouterr().out
    original = HybridGPUMatcher.match_predictions

    def drop_one_missing(self, *args, **kwargs):
        rows = original(self, *args, **kwargs)
        return [row[:5] + (row[5][1:],) + row[6:] if row[5] else row for row in rows]

    monkeypatch.setattr(HybridGPUMatcher, "match_predictions", drop_one_missing)
    assert (
        main(["predict-bench", "--patterns", "1500", "--queries", "2", "--sample", "300", "--metric", "difflib"]) == 1
    )
    assert "MISMATCHES" in capsys.readouterr().out


# ---------------------------------------------------------------------------- threshold sweep
SWEEP = (0.0, 0.1, 0.3, 0.5, 0.9)
SWEEP_ARG = ",".join(str(t) for t in SWEEP)


_SIMS = {}


def _brute_force(shape, metric, states=None, key="queries"):
    """Similarity of every state (default: the workload's queries) with all N patterns, from the
    regenerated symbols (Q x N), cached."""
    if (shape, metric, key) not in _SIMS:
        wl = generate_workload(N, Q, shape, SEED)
        if states is None:
            states = [[s for event in events for s in event] for events in wl.query_events]
        patterns = [wl.pattern_symbols(i) for i in range(N)]
        _SIMS[(shape, metric, key)] = np.array([[reference(metric)(p, s) for p in patterns] for s in states])
    return _SIMS[(shape, metric, key)]


@pytest.mark.parametrize("metric,limit", [("lcs", "all"), ("difflib", "all"), ("lcs", "25")])
def test_threshold_sweep(tmp_path, capsys, metric, limit):
    code, report = _bench(
        tmp_path,
        "--metric",
        metric,
        "--thresholds",
        SWEEP_ARG,
        "--max-predictions",
        limit,
        "--difflib-sample",
        "500",
        "--learn",
        "0",
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert report["options"]["thresholds"] == list(SWEEP)
    r = report["results"][metric]
    assert r["verification"]["ok"] and r["verification"]["thresholds_ok"]
    sweep = r["thresholds"]
    assert set(sweep) >= {"max_predictions", "cdist", "rows", "verification"}
    assert sweep["max_predictions"] == (None if limit == "all" else int(limit))
    assert len(sweep["cdist"]["times_ms"]) == Q
    cdist_median = sweep["cdist"]["median_ms"]
    assert cdist_median == pytest.approx(float(np.median(sweep["cdist"]["times_ms"])))
    v = sweep["verification"]
    assert v["ok"] and v["results_with_differences"] == 0 and v["first_differences"] == []
    assert v["whole_results_checked"] == (Q * len(SWEEP) if metric == "lcs" else 0)
    assert v["sampled_pairs_checked"] == (Q * len(SWEEP) * 500 if metric == "difflib" else 0)

    # Matches per query at every threshold, recounted here from the symbols.
    sims = _brute_force("kato", metric)
    assert [row["threshold"] for row in sweep["rows"]] == list(SWEEP)
    previous = None
    for row in sweep["rows"]:
        assert set(row) >= {
            "threshold",
            "median_ms",
            "p95_ms",
            "times_ms",
            "matches_per_query",
            "mean_matches",
            "cdist_median_ms",
            "speedup",
            "ok",
        }
        assert row["ok"] and len(row["times_ms"]) == Q
        assert 0 < row["median_ms"] <= row["p95_ms"] <= max(row["times_ms"])
        expected = [int(np.count_nonzero(sims[q] >= row["threshold"])) for q in range(Q)]
        if limit != "all":
            expected = [min(e, int(limit)) for e in expected]
        assert row["matches_per_query"] == expected
        assert row["mean_matches"] == pytest.approx(np.mean(expected))
        assert row["cdist_median_ms"] == cdist_median  # one cdist time for every row
        assert row["speedup"] == pytest.approx(cdist_median / row["median_ms"])
        if previous is not None:  # a higher threshold never matches more
            assert all(a <= b for a, b in zip(row["matches_per_query"], previous))
        previous = row["matches_per_query"]
    assert sweep["rows"][0]["matches_per_query"] == [N if limit == "all" else int(limit)] * Q  # threshold 0
    assert f"threshold sweep ({metric}" in out and "speed-up" in out


def test_no_sweep_and_no_batch_by_default(tmp_path):
    code, report = _bench(tmp_path, "--metric", "lcs", "--difflib-sample", "0", "--learn", "0")
    assert code == 0
    r = report["results"]["lcs"]
    assert r["thresholds"] is None and r["batch"] is None
    assert report["options"]["thresholds"] == [] and report["options"]["batch"] == 0


def test_sweep_mismatch_is_detected(tmp_path, monkeypatch, capsys):
    """A result wrong at one threshold only (the main path's 0.1 stays right) fails the run."""
    real = kato_gpu.HybridGPUMatcher.match_patterns_arrays

    def wrong_at_03(self, state, threshold, max_predictions=None):
        res = real(self, state, threshold, max_predictions)
        return _Altered(res, bump=2) if threshold == 0.3 else res

    monkeypatch.setattr(kato_gpu.HybridGPUMatcher, "match_patterns_arrays", wrong_at_03)
    for metric in ("lcs", "difflib"):
        code, report = _bench(
            tmp_path, "--metric", metric, "--thresholds", SWEEP_ARG, "--difflib-sample", str(N), "--learn", "0"
        )
        assert code == 1
        assert report["ok"] is False
        r = report["results"][metric]
        assert r["verification"]["queries_with_differences"] == 0  # the main path is right
        assert not r["verification"]["ok"] and not r["verification"]["thresholds_ok"]
        assert [row["ok"] for row in r["thresholds"]["rows"]] == [t != 0.3 for t in SWEEP]
        assert r["thresholds"]["verification"]["results_with_differences"] == Q
        err = capsys.readouterr().err
        assert "threshold 0.3 query 0" in err


def test_sweep_and_batch_arguments():
    parser = cli.build_parser()
    args = parser.parse_args(["bench", "--thresholds", "0, 0.5,1"])
    assert args.thresholds == (0.0, 0.5, 1.0)
    assert parser.parse_args(["bench"]).batch_limit == "same"
    assert parser.parse_args(["bench", "--batch-limit", "all"]).batch_limit is None
    assert parser.parse_args(["bench", "--batch-limit", "7"]).batch_limit == 7
    for bad in (
        ["bench", "--thresholds", "0,1.5"],
        ["bench", "--thresholds", "0,,1"],
        ["bench", "--thresholds", "x"],
        ["bench", "--batch", "-1"],
        ["bench", "--batch-limit", "0"],
        ["bench", "--batch-limit", "many"],
    ):
        assert cli.main(bad) == 2, bad


# ---------------------------------------------------------------------------- batch
BATCH = 40


@pytest.mark.parametrize("metric,batch_limit", [("lcs", "15"), ("difflib", "15"), ("lcs", "same")])
def test_batch(tmp_path, capsys, metric, batch_limit):
    from kato_gpu.bench.workload import generate_queries

    code, report = _bench(
        tmp_path,
        "--metric",
        metric,
        "--batch",
        str(BATCH),
        "--batch-limit",
        batch_limit,
        "--difflib-sample",
        "300",
        "--learn",
        "0",
    )
    out = capsys.readouterr().out
    assert code == 0, out
    r = report["results"][metric]
    assert r["verification"]["ok"] and r["verification"]["batch_ok"]
    b = r["batch"]
    limit = None if batch_limit == "same" else int(batch_limit)  # "same": the bench's --max-predictions (all)
    assert b["states"] == BATCH and b["threshold"] == THRESHOLD and b["max_predictions"] == limit
    assert b["runs"] == 3 and b["dicts"] is None
    for part in ("single", "batch"):
        p = b[part]
        assert len(p["runs_s"]) == 3 and p["best_s"] == min(p["runs_s"]) > 0
        assert p["states_per_s"] == pytest.approx(BATCH / p["best_s"])
    assert b["speedup"] == pytest.approx(b["single"]["best_s"] / b["batch"]["best_s"])
    v = b["verification"]
    assert v["ok"] and v["states_with_differences"] == 0 and v["compared_with_single"] == BATCH
    assert v["oracle_checked"] == 5

    # The batch states are new (not the timed queries), and their match counts are recounted here.
    wl = generate_workload(N, Q, "kato", SEED)
    queries, events, _ = generate_queries(wl, BATCH, 3)
    states = [[s for e in evs for s in e] for evs in events]
    assert states[0] != wl.state_symbols(0)
    sims = _brute_force("kato", metric, states, key=f"batch{BATCH}")
    counts = [int(np.count_nonzero(row >= THRESHOLD)) for row in sims]
    if limit is not None:
        counts = [min(c, limit) for c in counts]
    assert b["total_matches"] == sum(counts)
    assert b["mean_matches"] == pytest.approx(np.mean(counts))
    assert f"batch ({metric})" in out and "states/s" in out


def test_batch_dicts(tmp_path, capsys):
    code, report = _bench(
        tmp_path,
        "--metric",
        "lcs",
        "--batch",
        "20",
        "--batch-limit",
        "10",
        "--batch-dicts",
        "--difflib-sample",
        "0",
        "--learn",
        "0",
    )
    assert code == 0
    d = report["results"]["lcs"]["batch"]["dicts"]
    assert d["api"].startswith("match_patterns_batch") and d["compared_with_single"] == 20
    assert d["best_s"] == min(d["runs_s"]) and d["states_per_s"] == pytest.approx(20 / d["best_s"])
    assert "a dict per match" in capsys.readouterr().out


@pytest.mark.parametrize("metric", ["lcs", "difflib"])
def test_batch_mismatch_is_detected(tmp_path, monkeypatch, capsys, metric):
    """A batch result that differs from its single call (one match dropped from state 7) fails the run."""
    from kato_gpu.bench import batch

    real = batch.batch_arrays_call

    def corrupted(matcher):
        call, label = real(matcher)

        def wrong(states, threshold, limit):
            results = list(call(states, threshold, limit))
            if len(results) > 7:
                results[7] = _Altered(results[7], drop=3)
            return results

        return wrong, label

    monkeypatch.setattr(batch, "batch_arrays_call", corrupted)
    code, report = _bench(
        tmp_path, "--metric", metric, "--batch", "12", "--batch-limit", "10", "--difflib-sample", "200", "--learn", "0"
    )
    assert code == 1
    r = report["results"][metric]
    assert r["verification"]["queries_with_differences"] == 0 and not r["verification"]["batch_ok"]
    v = r["batch"]["verification"]
    assert not v["ok"] and v["states_with_differences"] == 1
    err = capsys.readouterr().err
    assert "batch state 7: differs from the single call" in err


def test_batch_wrong_everywhere_is_caught_by_the_oracle(tmp_path, monkeypatch, capsys):
    """Batch and single calls that agree on a wrong value (batch state 0, one ulp off at position
    1) are caught by the oracle check."""
    from kato_gpu.bench import batch
    from kato_gpu.bench.workload import generate_queries

    wl = generate_workload(N, Q, "kato", SEED)
    target = [s for e in generate_queries(wl, 10, 3)[1][0] for s in e]  # batch state 0
    real_batch = batch.batch_arrays_call
    real_single = kato_gpu.HybridGPUMatcher.match_patterns_arrays

    def corrupted(matcher):
        call, label = real_batch(matcher)

        def wrong(states, threshold, limit):
            return [_Altered(r, bump=1) if s == target else r for s, r in zip(states, call(states, threshold, limit))]

        return wrong, label

    def single(self, state, threshold, max_predictions=None):
        res = real_single(self, state, threshold, max_predictions)
        return _Altered(res, bump=1) if state == target else res

    monkeypatch.setattr(batch, "batch_arrays_call", corrupted)
    monkeypatch.setattr(kato_gpu.HybridGPUMatcher, "match_patterns_arrays", single)
    code, report = _bench(
        tmp_path, "--metric", "lcs", "--batch", "10", "--batch-limit", "10", "--difflib-sample", "0", "--learn", "0"
    )
    assert code == 1
    v = report["results"]["lcs"]["batch"]["verification"]
    assert not v["ok"] and v["compared_with_single"] == 10 and v["states_with_differences"] == 1
    assert "batch (oracle) state 0: position 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- scale-bench
SCALE_N = 20_000


def _scale(tmp_path, *extra):
    path = tmp_path / "scale.json"
    code = cli.main(
        [
            "scale-bench",
            "--patterns",
            str(SCALE_N),
            "--queries",
            "2",
            "--chunk",
            "6000",
            "--no-progress",
            "--json",
            str(path),
            *extra,
        ]
    )
    return code, (json.loads(path.read_text()) if path.exists() else None)


def test_scale_bench(tmp_path, capsys):
    from kato_gpu.bench.workload import iter_kato_chunks, kato_vocab

    code, report = _scale(tmp_path, "--sample", "3000", "--limit", "50")
    out = capsys.readouterr().out
    assert code == 0, out
    assert report["ok"] is True
    assert report["workload"]["n_patterns"] == SCALE_N and report["workload"]["chunk"] == 6000
    for m in ("lcs", "difflib"):
        r = report["results"][m]
        load = r["load"]
        assert load["chunks"] == 4
        assert 0 < load["add_patterns_csr_s"] <= load["seconds"] <= load["wall_s"]
        assert load["generate_s"] <= load["wall_s"]
        assert load["patterns_per_s"] == pytest.approx(SCALE_N / load["seconds"])
        assert load["memory_bytes"] > 0 and load["memory_bytes"] == load["stats"]["memory_bytes"]
        assert load["stats"]["total_patterns"] == SCALE_N
        assert load["rss_before_bytes"] > 0 and load["rss_after_bytes"] > 0
        assert load["peak_rss_bytes"] >= load["rss_after_bytes"]
        lat = r["latency"]
        assert [row["max_predictions"] for row in lat["rows"]] == [None, 50]
        for row in lat["rows"]:
            assert len(row["times_ms"]) == 2 and len(row["matches_per_query"]) == 2
        whole, limited = lat["rows"][0]["matches_per_query"], lat["rows"][1]["matches_per_query"]
        assert limited == [min(c, 50) for c in whole]
        v = r["verification"]
        assert v["ok"] and v["sample_per_query"] == 3000 and v["sampled_pairs_checked"] == 2 * 2 * 3000
        assert f"metric {m}" in out

    # Query 0 recounted over every pattern, from the documented streams.
    vocab = np.array(kato_vocab()[0], dtype=object)
    chunks = list(iter_kato_chunks(SCALE_N, 6000, 42))
    src = int(np.random.default_rng([42, 1]).integers(SCALE_N, size=2)[0])
    chunk = next(c for c in chunks if c.start <= src < c.stop)
    state = vocab[np.concatenate(chunk.query(np.random.default_rng([42, 1, 0]), src - chunk.start))].tolist()
    patterns = [vocab[c.tokens[c.offsets[i] : c.offsets[i + 1]]].tolist() for c in chunks for i in range(c.n_patterns)]
    assert len(patterns) == SCALE_N
    for m in ("lcs", "difflib"):
        count = sum(reference(m)(p, state) >= 0.1 for p in patterns)
        assert report["results"][m]["latency"]["rows"][0]["matches_per_query"][0] == count


def test_scale_bench_promote_at_end(tmp_path):
    code, report = _scale(tmp_path, "--metric", "lcs", "--sample", "500", "--promote", "end")
    assert code == 0
    load = report["results"]["lcs"]["load"]
    assert load["promote_s"] is not None and load["stats"]["bulk_tier_patterns"] == SCALE_N
    assert list(report["results"]) == ["lcs"]


class _Swapped(_Altered):
    """Entries 1 and 3 (name and similarity) swapped: the right matches, out of order."""

    def __init__(self, result):
        super().__init__(result)
        if len(self.names) > 3:
            self.names[1], self.names[3] = self.names[3], self.names[1]
            self.similarities[[1, 3]] = self.similarities[[3, 1]]


@pytest.mark.parametrize("how", ["drop", "swap", "bump"])
def test_scale_bench_detects_a_wrong_result(tmp_path, monkeypatch, capsys, how):
    real = kato_gpu.HybridGPUMatcher.match_patterns_arrays

    def altered(self, state, threshold, max_predictions=None):
        res = real(self, state, threshold, max_predictions)
        if how == "swap":
            return _Swapped(res)
        return _Altered(res, drop=500) if how == "drop" else _Altered(res, bump=700)

    monkeypatch.setattr(kato_gpu.HybridGPUMatcher, "match_patterns_arrays", altered)
    # The sample is every pattern, so the altered one is certainly checked.
    code, report = _scale(tmp_path, "--metric", "difflib" if how == "bump" else "lcs", "--sample", str(SCALE_N))
    assert code == 1
    r = next(iter(report["results"].values()))
    assert not r["verification"]["ok"] and r["verification"]["queries_with_differences"] == 2
    err = capsys.readouterr().err
    assert {"drop": "missing PTRN|", "swap": "out of order", "bump": "kato_gpu 0."}[how] in err


def test_scale_bench_arguments(capsys):
    assert cli.main(["scale-bench", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--patterns" in text and "--chunk" in text and "--metric" in text
    for bad in (
        ["scale-bench", "--patterns", "0"],
        ["scale-bench", "--metric", "x"],
        ["scale-bench", "--promote", "never"],
        ["scale-bench", "--limit", "all"],
    ):
        assert cli.main(bad) == 2, bad
