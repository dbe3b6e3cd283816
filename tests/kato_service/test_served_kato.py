"""Unmodified KATO served for real (uvicorn over HTTP, redis-server, chdb) by
``kato_gpu.kato_host``: its answers against hand-reasoned facts, the bulk loader against KATO's
own learning through the API, and a clean shutdown.

KATO's checkout is ``$KATO_SRC`` (default ``../shared/kato`` next to the project root); without it,
or without the serving dependencies (``make kato-deps``), the module is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from conftest import KATO_SRC, serving_unavailable  # noqa: E402

if serving_unavailable():
    pytest.skip(serving_unavailable(), allow_module_level=True)

from kato_gpu.kato_host.client import KatoApiError, KatoClient  # noqa: E402
from kato_gpu.kato_host.process import KatoServer  # noqa: E402

ABC = [["a"], ["b"], ["c"]]
ABD = [["a"], ["b"], ["d"]]
XYZ = [["x"], ["y"], ["z"]]


def sha1_name(events):
    # KATO names a pattern by the SHA-1 of the text of its event list (Python's repr).
    return hashlib.sha1(str(events).encode("utf-8")).hexdigest()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but its process-table entry.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def kato():
    with KatoServer(kato_src=KATO_SRC) as server:
        with KatoClient(server.base_url) as client:
            yield server, client


def by_name(predictions):
    return {p["name"]: p for p in predictions}


def test_learn_and_predict(kato):
    _, client = kato
    sid = client.create_session("served-basic", config={"max_predictions": 50, "recall_threshold": 0.1})
    assert client.get_config(sid)["max_predictions"] == 50
    names = [client.learn_sequence(sid, seq) for seq in (ABC, ABD, XYZ)]
    assert names == [f"PTRN|{sha1_name(seq)}" for seq in (ABC, ABD, XYZ)]
    assert client.stm(sid) == []

    # a, b against abc and abd: 2 matched symbols of 2 observed and 3 stored, similarity
    # 2*2/(2+3) = 0.8; the rest of the pattern is its future. xyz shares nothing.
    client.observe_events(sid, [["a"], ["b"]])
    preds = by_name(client.predictions(sid))
    assert set(preds) == {sha1_name(ABC), sha1_name(ABD)}
    for seq, future in ((ABC, [["c"]]), (ABD, [["d"]])):
        p = preds[sha1_name(seq)]
        assert p["similarity"] == 0.8
        assert p["matches"] == ["a", "b"]
        assert p["future"] == future
        assert p["frequency"] == 1

    # The whole of abc observed again: abc matches with similarity 1.0 and no future.
    client.clear_stm(sid)
    client.observe_events(sid, ABC)
    preds = by_name(client.predictions(sid))
    assert preds[sha1_name(ABC)]["similarity"] == 1.0
    assert preds[sha1_name(ABC)]["future"] == []

    # Learning abc again raises its frequency; the pattern is stored once.
    assert client.learn_sequence(sid, ABC) == names[0]
    client.observe_events(sid, ABC)
    assert by_name(client.predictions(sid))[sha1_name(ABC)]["frequency"] == 2
    stored = client.pattern(names[0], node_id="served-basic")
    assert stored["pattern_data"] == ABC and stored["frequency"] == 2

    # Symbols within an event are sorted (KATO's default sort_symbols).
    client.clear_stm(sid)
    client.observe(sid, ["q", "p"])
    assert client.stm(sid) == [["p", "q"]]


def test_nodes_are_isolated_and_clear_all(kato):
    _, client = kato
    one = client.create_session("served-one")
    two = client.create_session("served-two")
    client.learn_sequence(one, ABC)
    client.observe_events(two, [["a"], ["b"]])
    assert client.predictions(two) == []
    client.observe_events(one, [["a"], ["b"]])
    assert [p["name"] for p in client.predictions(one)] == [sha1_name(ABC)]
    client.clear_all(one)
    assert client.stm(one) == []
    client.observe_events(one, [["a"], ["b"]])
    assert client.predictions(one) == []


def test_api_errors_are_reported(kato):
    _, client = kato
    with pytest.raises(KatoApiError) as info:
        client.predictions("session-that-does-not-exist")
    assert info.value.status == 404
    sid = client.create_session("served-errors")
    with pytest.raises(KatoApiError) as info:
        client.learn(sid)  # empty short-term memory
    assert info.value.status == 400


def redis_state(redis_url: str, kb_id: str) -> dict:
    """Every Redis key of a knowledge base, its prefix dropped, with its value; not the
    ``prediction:<observation id>`` records KATO's observe writes (learning writes none)."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    state = {}
    for key in r.scan_iter(match=f"{kb_id}:*", count=1000):
        if key.startswith(f"{kb_id}:prediction:"):
            continue
        kind = r.type(key)
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "set":
            value = sorted(r.smembers(key))
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected Redis type {kind} for {key}")
        state[key[len(kb_id) + 1 :]] = (kind, value)
    r.close()
    return state


SEQUENCES = [
    ABC,
    ABD,
    [["b", "a"], ["c"]],  # sorted within the event to [a, b]
    [["héllo", "wörld"], ["🙂"], ["it's", 'q"uote', "back\\slash"]],
    ABC,  # learned again: frequency 2
    [["k"], ["l"], ["m"], ["n"], ["o"]],
]


def test_bulk_loader_stores_what_learning_stores(tmp_path):
    chdb_path = tmp_path / "chdb"
    with KatoServer(kato_src=KATO_SRC, chdb_path=chdb_path) as server:
        with KatoClient(server.base_url) as client:
            sid = client.create_session("via-api")
            api_names = [client.learn_sequence(sid, seq) for seq in SEQUENCES]
        report = server.bulk_load("via-loader", SEQUENCES)
        assert report["names"] == api_names
        assert (report["learned"], report["relearned"], report["skipped"]) == (5, 1, 0)
        assert report["kb_id"] == "via_loader_kato"

        api_redis = redis_state(server.redis_url, "via_api_kato")
        loaded_redis = redis_state(server.redis_url, "via_loader_kato")
        assert len(api_redis) > 10
        assert loaded_redis == api_redis

        # The server is back after the load, and predicts the same for both nodes.
        with KatoClient(server.base_url) as client:
            api_sid = client.create_session("via-api")
            loaded_sid = client.create_session("via-loader")
            for s in (api_sid, loaded_sid):
                client.observe_events(s, [["a"], ["b"]])
            # KATO orders tied predictions as its store returns them (no ORDER BY): compared by name.
            loaded, api = client.predictions(loaded_sid), client.predictions(api_sid)
            assert len(loaded) == len(api) == 3  # abc, abd, [ab]c
            assert by_name(loaded) == by_name(api)
        server_pid, redis_pid, workdir = server.pid, server.redis._proc.pid, server.workdir

    # Shut down: no server, no redis-server, no work directory left; the chdb data given is kept.
    assert not process_alive(server_pid)
    assert not process_alive(redis_pid)
    assert not workdir.exists()
    assert chdb_path.is_dir()

    from kato_gpu.kato_host.backends import ChdbClient

    columns = "name, pattern_data, length, token_set, token_count, minhash_sig, lsh_bands, first_token, last_token"
    with ChdbClient(chdb_path) as ch:
        rows = {
            kb: ch.query(f"SELECT {columns} FROM patterns_data WHERE kb_id = '{kb}' ORDER BY name").result_rows
            for kb in ("via_api_kato", "via_loader_kato")
        }
    # token_set is KATO's list(set(tokens)): its order follows each process's string hashing.
    rows = {kb: [r[:3] + (sorted(r[3]),) + r[4:] for r in kb_rows] for kb, kb_rows in rows.items()}
    assert len(rows["via_api_kato"]) == 5
    assert rows["via_loader_kato"] == rows["via_api_kato"]
