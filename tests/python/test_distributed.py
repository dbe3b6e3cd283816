"""kato_gpu.distributed.ShardedMatcher on a local Ray cluster: results identical to one matcher
(floats compared with ==), recovery of a killed shard with nothing lost, snapshots, concurrency."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from conftest import wait_until

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install 'kato-gpu[distributed]' (make test installs it)"
)

from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, _native  # noqa: E402
from kato_gpu.bench import generate_workload, pattern_names  # noqa: E402
from kato_gpu.distributed import (  # noqa: E402
    MANIFEST_NAME,
    ShardedMatcher,
    ShardUnavailableError,
    shard_of,
)

N_PATTERNS = 100_000
N_QUERIES = 1000
UNKNOWN = "never_learned_symbol"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 1024 * 1024)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def workload():
    return generate_workload(N_PATTERNS, N_QUERIES, "kato", seed=11)


def _states(wl):
    """The workload's queries, every fifth with a symbol no shard knows, plus a few made of
    random vocabulary symbols (low similarities, many ties)."""
    states = []
    for q in range(wl.n_queries):
        state = wl.state_symbols(q)
        states.append(state + [UNKNOWN] if q % 5 == 0 else state)
    rng = np.random.default_rng(5)
    for _ in range(20):
        states.append([wl.vocab[i] for i in rng.integers(len(wl.vocab), size=int(rng.integers(1, 12)))])
    return states


def _config(metric, autojunk=False):
    return GPUConfig(metric=metric, autojunk=autojunk, device="cpu")


def _load_one(wl, metric, n=None):
    encoder = SymbolVocabularyEncoder(None)
    matcher = HybridGPUMatcher(encoder, _config(metric))
    n = wl.n_patterns if n is None else n
    ids = wl.encoder_ids(encoder)
    matcher.add_patterns_csr(pattern_names(0, n), ids[wl.tokens[: wl.offsets[n]]], wl.offsets[: n + 1])
    return matcher


def _load_sharded(wl, metric, shards, n=None, **options):
    sharded = ShardedMatcher(shards, _config(metric), **options)
    n = wl.n_patterns if n is None else n
    ids = np.asarray(sharded.encoder.encode_ids(list(wl.vocab)), dtype=np.int64)
    sharded.add_patterns_csr(pattern_names(0, n), ids[wl.tokens[: wl.offsets[n]]], wl.offsets[: n + 1])
    return sharded


def _assert_same(expected, got):
    assert len(expected) == len(got)
    for k, (a, b) in enumerate(zip(expected, got)):
        assert a.names == b.names, k
        # Bit for bit: == on float64, no tolerance.
        assert a.similarities.dtype == b.similarities.dtype == np.float64
        assert a.similarities.tolist() == b.similarities.tolist(), k


@pytest.fixture(scope="module", params=["lcs", "difflib"])
def matchers(request, workload):
    one = _load_one(workload, request.param)
    two = _load_sharded(workload, request.param, 2)
    four = _load_sharded(workload, request.param, 4)
    yield request.param, one, two, four
    two.close()
    four.close()


@pytest.mark.parametrize("threshold, limit", [(0.3, None), (0.3, 10)])
def test_identical_to_one_matcher(matchers, workload, threshold, limit):
    _, one, two, four = matchers
    states = _states(workload)
    assert len(states) >= 1000
    expected = one.match_patterns_batch_arrays(states, threshold, limit)
    assert sum(len(r) for r in expected) > len(states)  # the comparison is about something
    for sharded in (two, four):
        _assert_same(expected, sharded.match_patterns_batch_arrays(states, threshold, limit))


def test_every_query_form_identical(matchers, workload):
    _, one, two, four = matchers
    states = _states(workload)[::50]
    weights = {workload.vocab[i]: float(i % 7) / 3 for i in range(0, len(workload.vocab), 3)}
    for sharded in (two, four):
        assert len(sharded) == len(one) == N_PATTERNS
        for state in states:
            assert sharded.match_patterns(state, 0.25) == one.match_patterns(state, 0.25)
            assert sharded.match_patterns(state, 0.0, 7) == one.match_patterns(state, 0.0, 7)
            _assert_same(
                [one.match_patterns_arrays(state, 0.4, None)], [sharded.match_patterns_arrays(state, 0.4, None)]
            )
            assert sharded.match_predictions(state, 0.3, 50) == one.match_predictions(state, 0.3, 50)
            assert sharded.match_predictions(state, 0.2, 5, weights=weights) == one.match_predictions(
                state, 0.2, 5, weights=weights
            )
        assert sharded.match_patterns_batch(states[:5], 0.3, 3) == one.match_patterns_batch(states[:5], 0.3, 3)
        stats = sharded.get_stats()
        assert stats["total_patterns"] == N_PATTERNS
        assert stats["num_shards"] == len(stats["shards"]) == len(sharded.actors)
        assert stats["vocab_size_sum"] >= one.get_stats()["vocab_size"]


def test_killed_shard_recovers_with_nothing_lost(matchers, workload):
    metric, one, two, four = matchers
    states = _states(workload)[:200]
    # A shard of ShardedMatcher(2), whose log holds its part of the bulk load.
    ray.kill(two.actors[0], no_restart=False)
    _assert_same(
        one.match_patterns_batch_arrays(states[:100], 0.3, None),
        two.match_patterns_batch_arrays(states[:100], 0.3, None),
    )
    assert len(two) == N_PATTERNS
    learned = [
        (f"LEARNED|{metric}|{k}", [[workload.vocab[k], workload.vocab[k + 1]], [workload.vocab[2 * k]]])
        for k in range(40)
    ]
    for name, events in learned:
        assert four.add_new_pattern(name, events) is True
        assert one.add_new_pattern(name, events) is True
    removed = pattern_names(0, 30)
    for name in removed:
        assert four.remove_pattern(name) is True
        assert one.remove_pattern(name) is True
    before = [info["state"]["starts"] for info in four.shard_info()]
    victim = shard_of(learned[0][0], 4)
    ray.kill(four.actors[victim], no_restart=False)
    _assert_same(
        one.match_patterns_batch_arrays(states, 0.3, None), four.match_patterns_batch_arrays(states, 0.3, None)
    )
    _assert_same(one.match_patterns_batch_arrays(states, 0.2, 10), four.match_patterns_batch_arrays(states, 0.2, 10))
    infos = four.shard_info()
    assert infos[victim]["state"]["starts"] == before[victim] + 1
    assert infos[victim]["state"]["replayed"] >= 2  # the bulk load and at least one learn
    assert len(four) == len(one)
    assert all(name in four for name, _ in learned)
    assert not any(name in four for name in removed)


def test_placement_is_stable_and_total(workload):
    # Fixed values: the placement must never change between processes or releases.
    names = ("a", "PTRN|0", "é", "PTRN|ffff", "x")
    assert [shard_of(name, 4) for name in names] == [0, 2, 3, 1, 2]
    assert [shard_of(name, 7) for name in names] == [4, 2, 5, 6, 2]
    names = pattern_names(0, 4000)
    counts = np.bincount([shard_of(n, 4) for n in names], minlength=4)
    assert counts.min() > 800  # spread over every shard
    with pytest.raises(TypeError):
        shard_of(b"a", 2)  # type: ignore[arg-type]


def test_merge_ranked_native():
    part, position = _native.merge_ranked(
        [np.array([0.9, 0.5]), np.array([], dtype=np.float64), [0.9, 0.5, 0.1]], [["b", "a"], [], ["a", "c", "z"]], 4
    )
    assert list(zip(part.tolist(), position.tolist())) == [(2, 0), (0, 0), (0, 1), (2, 1)]
    with pytest.raises(ValueError, match="not in result order"):
        _native.merge_ranked([[0.5, 0.5]], [["b", "a"]])
    with pytest.raises(ValueError, match="differ in length"):
        _native.merge_ranked([[0.5]], [["b", "a"]])
    with pytest.raises(TypeError):
        _native.merge_ranked([[0.5]], [["a"]], "3")  # type: ignore[arg-type]


def _packed(names):
    data = "".join(names).encode()
    return data, np.cumsum([len(n.encode()) for n in names], dtype=np.uint64)


def test_merge_packed_native():
    sims, names = _native.merge_packed(
        [np.array([0.9, 0.5, 0.5]), [0.9, 0.5]], [_packed(["b", "a", "é"]), _packed(["a", "ab"])], None
    )
    assert names == ["a", "b", "a", "ab", "é"] and sims.tolist() == [0.9, 0.9, 0.5, 0.5, 0.5]
    sims, names = _native.merge_packed([[0.9], [0.9]], [_packed(["b"]), _packed(["a"])], 1)
    assert names == ["a"] and sims.tolist() == [0.9]
    with pytest.raises(ValueError, match="not UTF-8"):
        _native.merge_packed([[0.5]], [(b"\xff", np.array([1], dtype=np.uint64))])
    with pytest.raises(ValueError, match="end offset"):
        _native.merge_packed([[0.5]], [(b"ab", np.array([3], dtype=np.uint64))])
    with pytest.raises(ValueError, match="end offset"):
        _native.merge_packed([[0.5]], [("é".encode(), np.array([1], dtype=np.uint64))])
    with pytest.raises(ValueError, match="not in result order"):
        _native.merge_packed([[0.5, 0.5]], [_packed(["b", "a"])])
    # What a shard sends: a MatchResult's names packed.
    matcher = HybridGPUMatcher(SymbolVocabularyEncoder(None), _config("lcs"))
    matcher.add_patterns(["p|é", "p|a", "p|b"], [[["x", "y"]], [["x"]], [["y", "z"]]])
    result = matcher.match_patterns_arrays(["x", "y"], 0.0, None)
    data, ends = result._names_packed()
    assert ends.dtype == np.uint64 and data.decode() == "".join(result.names)
    sims, names = _native.merge_packed([result.similarities], [(data, ends)])
    assert names == result.names and sims.tolist() == result.similarities.tolist()


def _small(wl, metric="lcs", shards=2, n=3000, **options):
    return _load_one(wl, metric, n), _load_sharded(wl, metric, shards, n, **options)


def test_save_load_round_trip(workload, tmp_path):
    one, sharded = _small(workload, "difflib", 3)
    states = _states(workload)[:200]
    sharded.add_pattern_events("EV|1", [["b", "a"], ["c"]])
    one.add_pattern_events("EV|1", [["b", "a"], ["c"]])
    sharded.save(tmp_path / "snap")
    manifest = json.loads((tmp_path / "snap" / MANIFEST_NAME).read_text())
    assert manifest["num_shards"] == 3 and manifest["total_patterns"] == 3001
    assert manifest["metric"] == "difflib"
    # Each shard file is an ordinary HybridGPUMatcher snapshot.
    parts = [HybridGPUMatcher.load(tmp_path / "snap" / s["file"]) for s in manifest["shards"]]
    assert sum(len(p) for p in parts) == 3001
    sharded.add_new_pattern("AFTER|save", [["x"]])  # not in the snapshot
    sharded.close()
    loaded = ShardedMatcher.load(tmp_path / "snap")
    try:
        assert loaded.num_shards == 3 and loaded.config.metric == "difflib"
        assert len(loaded) == 3001 and "AFTER|save" not in loaded
        assert loaded.pattern_events("EV|1") == one.pattern_events("EV|1")
        _assert_same(
            one.match_patterns_batch_arrays(states, 0.2, None), loaded.match_patterns_batch_arrays(states, 0.2, None)
        )
        # A loaded matcher learns and recovers like any other.
        loaded.add_new_pattern("AFTER|load", [["tok_1", "tok_2"]])
        ray.kill(loaded.actors[shard_of("AFTER|load", 3)], no_restart=False)
        assert "AFTER|load" in loaded and len(loaded) == 3002
    finally:
        loaded.close()
    with pytest.raises(ValueError, match="metric"):
        ShardedMatcher.load(tmp_path / "snap", _config("lcs"))
    with pytest.raises(FileNotFoundError):
        ShardedMatcher.load(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST_NAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="manifest"):
        ShardedMatcher.load(tmp_path / "bad")
    # A damaged shard file: the shard's constructor fails, which Ray does not retry; said at once.
    damaged = tmp_path / "snap" / manifest["shards"][2]["file"]
    damaged.write_bytes(b"not a snapshot")
    with pytest.raises(ShardUnavailableError, match="shard 2 failed to start"):
        ShardedMatcher.load(tmp_path / "snap")
    os.remove(tmp_path / "snap" / manifest["shards"][1]["file"])
    with pytest.raises(ValueError, match="missing"):
        ShardedMatcher.load(tmp_path / "snap")


def test_recovery_from_checkpoint_plus_log(workload, tmp_path):
    one, sharded = _small(workload, "lcs", 2, 2000, state_dir=tmp_path / "state", durable=True)
    try:
        assert sorted(os.listdir(tmp_path / "state")) == ["shard-0000", "shard-0001"]
        sharded.checkpoint()
        for k in range(30):
            name = f"AFTER|checkpoint|{k}"
            events = [[workload.vocab[k]], [workload.vocab[k + 3], workload.vocab[k + 5]]]
            sharded.add_new_pattern(name, events)
            one.add_new_pattern(name, events)
        sharded.remove_pattern(pattern_names(5, 6)[0])
        one.remove_pattern(pattern_names(5, 6)[0])
        for actor in sharded.actors:
            ray.kill(actor, no_restart=False)
        states = _states(workload)[:100]
        _assert_same(
            one.match_patterns_batch_arrays(states, 0.2, None), sharded.match_patterns_batch_arrays(states, 0.2, None)
        )
        infos = sharded.shard_info()
        assert all(info["state"]["base"] and info["state"]["starts"] == 2 for info in infos)
        # Replayed: the remembered learn ids, then only the changes since the checkpoint.
        assert sum(info["state"]["replayed"] for info in infos) == 2 + 31
    finally:
        sharded.close()


def test_call_in_flight_when_a_shard_dies(workload, tmp_path):
    one, waiting = _small(workload, "lcs", 2, 500)
    raising = _load_sharded(workload, "lcs", 2, 500, on_shard_failure="raise")
    try:
        # wait: the interrupted call is sent again to the restarted, recovered shard.
        marker = str(tmp_path / "crash-once")
        assert waiting._run([1], lambda i: waiting.actors[i]._crash.remote(marker)) == [True]
        assert len(waiting) == 500
        # raise: the interrupted call raises; nothing partial is returned, and once the shard is
        # back the answers are complete.
        with pytest.raises(ShardUnavailableError, match="shard 0"):
            raising._run([0], lambda i: raising.actors[i]._crash.remote())
        state = _states(workload)[0]

        def answer():
            try:
                return raising.match_patterns_arrays(state, 0.1, None)
            except ShardUnavailableError:
                return None

        assert wait_until(lambda: answer() is not None, timeout=60)
        _assert_same([one.match_patterns_arrays(state, 0.1, None)], [answer()])
        # A learn is applied once even when sent twice (the id the shard remembers).
        shard = shard_of("ONCE", 2)
        op = ("op-1", "add_new_pattern", ("ONCE", [["a"]]))
        first = ray.get(waiting.actors[shard].change.remote(*op))
        again = ray.get(waiting.actors[shard].change.remote(*op))
        assert first.value is True and again.value is True and len(waiting) == 501
    finally:
        waiting.close()
        raising.close()


def test_concurrent_learning_and_queries(workload):
    one, sharded = _small(workload, "lcs", 3, 2000)
    states = _states(workload)[:40]
    new = [(f"CONCURRENT|{k}", [[workload.vocab[k % 50], workload.vocab[(k * 7) % 90]]]) for k in range(120)]
    errors = []
    base = set(pattern_names(0, 2000))

    def learner(part):
        try:
            for name, events in part:
                assert sharded.add_new_pattern(name, events) is True
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def querier():
        try:
            for state in states:
                got = sharded.match_patterns_arrays(state, 0.2, None)
                sims, names = got.similarities.tolist(), got.names
                assert all((-a, n) < (-b, m) for a, n, b, m in zip(sims, names, sims[1:], names[1:]))
                expected = one.match_patterns_arrays(state, 0.2, None)
                # Every stored-before pattern is there, with its similarity.
                assert [n for n in names if n in base] == expected.names
                assert [s for s, n in zip(sims, names) if n in base] == expected.similarities.tolist()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=learner, args=(new[k::2],)) for k in range(2)]
    threads += [threading.Thread(target=querier) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for name, events in new:
            one.add_new_pattern(name, events)
        _assert_same(
            one.match_patterns_batch_arrays(states, 0.2, None), sharded.match_patterns_batch_arrays(states, 0.2, None)
        )
    finally:
        sharded.close()


def test_bad_input_and_all_or_none(workload, tmp_path):
    with pytest.raises(ValueError, match="num_shards"):
        ShardedMatcher(0)
    with pytest.raises(TypeError, match="config"):
        ShardedMatcher(2, config={"metric": "lcs"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_shard_failure"):
        ShardedMatcher(2, on_shard_failure="ignore")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        ShardedMatcher(2, state_dir=tmp_path / "used")
    one, sharded = _small(workload, "lcs", 2, 100)
    try:
        with pytest.raises(TypeError):
            sharded.match_patterns("ab", 0.1)
        with pytest.raises(ValueError):
            sharded.match_patterns(["a"], 1.5)
        with pytest.raises(TypeError):
            sharded.add_new_pattern(3, [["a"]])  # type: ignore[arg-type]
        # One name already stored (on its shard): nothing of the batch is kept, on any shard.
        stored = pattern_names(0, 1)[0]
        fresh = [f"FRESH|{k}" for k in range(20)]
        assert {shard_of(n, 2) for n in fresh} == {0, 1}
        with pytest.raises(ValueError, match="already stored"):
            sharded.add_patterns(fresh + [stored], [[["a"]]] * 21)
        assert len(sharded) == 100 and not any(n in sharded for n in fresh)
        with pytest.raises(ValueError, match="twice"):
            sharded.add_patterns(["X", "X"], [[["a"]], [["b"]]])
        with pytest.raises(ValueError, match="token id"):
            sharded.add_patterns_csr(["Y"], np.array([10**6]), np.array([0, 1]))
        sharded.clear_all()
        assert len(sharded) == 0 and sharded.match_patterns(["tok_1"], 0.0, None) == []
    finally:
        sharded.close()


def test_scale_bench_shards(tmp_path, capsys):
    from kato_gpu import cli

    path = tmp_path / "shards.json"
    argv = ["scale-bench", "--shards", "1", "2", "--patterns", "3000", "--queries", "3", "--metric", "lcs"]
    assert cli.main([*argv, "--no-progress", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["identical"] is True and report["differences"] == 0
    rows = report["metrics"]["lcs"]["rows"]
    assert [r["shards"] for r in rows] == [0, 1, 2]
    assert sum(rows[2]["patterns_per_shard"]) == 3000
    assert "overhead_all_ms" in rows[1]
    assert "scatter-gather overhead" in capsys.readouterr().out
