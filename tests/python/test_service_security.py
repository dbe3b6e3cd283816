"""kato_gpu.fastapi secure by default: the bearer token, refusing to mount without authentication,
value ranges checked before anything changes (the worker survives every accepted value), the body
limit, and one promotion for concurrent POST /gpu/sync. Over real HTTP (uvicorn on a free
127.0.0.1 port, started and stopped by a fixture) and through FastAPI's TestClient."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

try:
    import fastapi
    import httpx  # noqa: F401  (TestClient needs it)
    import uvicorn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient
except ImportError:  # `make venv` installs them; CI must never skip these tests
    if os.environ.get("CI"):
        raise
    pytest.skip("fastapi/httpx/uvicorn are not installed (make venv)", allow_module_level=True)

from conftest import wait_until
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, SyncManager, _native
from kato_gpu.fastapi import DEFAULT_MAX_BODY_BYTES, TOKEN_ENV, _Coalesced, router

TOKEN = "s3cret-token-for-tests"
PATTERNS = {f"PTRN|{k:03d}": [["a", f"s{k % 5}"], ["b"]] for k in range(20)}


@pytest.fixture
def no_token_env(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


@pytest.fixture
def parts(no_token_env):
    m = HybridGPUMatcher(
        SymbolVocabularyEncoder(None), GPUConfig(enabled=False, enable_background_sync=False, sync_threshold=1000)
    )
    for name, events in PATTERNS.items():
        assert m.add_new_pattern(name, events)
    s = SyncManager(m, m.config)
    s.start_background_sync()
    yield m, s
    s.stop_background_sync()


class Http:
    """A uvicorn server on a free 127.0.0.1 port and a plain HTTP client for it."""

    def __init__(self, app: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-security-test", daemon=True)

    def __enter__(self) -> "Http":
        self.thread.start()
        assert wait_until(lambda: self.server.started or not self.thread.is_alive(), 10), "uvicorn did not start"
        assert self.server.started
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "uvicorn did not shut down within 10 s"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
        raw: Optional[bytes] = None,
    ) -> Tuple[int, Dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            all_headers = {"content-type": "application/json", **(headers or {})}
            if token is not None:
                all_headers["authorization"] = f"Bearer {token}"
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=data, headers=all_headers)
            resp = conn.getresponse()
            text = resp.read().decode()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(text) if text else None
        finally:
            conn.close()


def app_with(m, s, **kwargs) -> fastapi.FastAPI:
    app = fastapi.FastAPI()
    app.include_router(router(m, s, **kwargs))
    return app


@contextlib.contextmanager
def served(m, s, **kwargs) -> Iterator[Http]:
    with Http(app_with(m, s, **kwargs)) as h:
        yield h


# ------------------------------------------------------------------ who may call


def test_router_refuses_to_mount_without_authentication(parts):
    m, s = parts
    with pytest.raises(ValueError, match=TOKEN_ENV) as err:
        router(m, s)
    assert "insecure=True" in str(err.value) and "dependencies" in str(err.value)
    for bad, exc in (("", ValueError), ("   ", ValueError), (b"bytes", TypeError), (123, TypeError)):
        with pytest.raises(exc):
            router(m, s, token=bad)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_body_bytes"):
            router(m, s, insecure=True, max_body_bytes=bad)


def test_the_token_from_the_environment_over_real_http(parts, monkeypatch):
    m, s = parts
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with served(m, s) as h:
        before = h.call("GET", "/gpu/config")[2]
        # Without the token, a wrong one, or another scheme: 401, nothing done.
        for token, headers in ((None, {}), ("wrong", {}), (TOKEN + "x", {}), (None, {"authorization": TOKEN})):
            for method, path, body in (
                ("POST", "/gpu/sync", None),
                ("POST", "/gpu/sync/restart", None),
                ("PATCH", "/gpu/config", {"sync_threshold": 5}),
            ):
                status, hdrs, answer = h.call(method, path, body, token=token, headers=headers)
                assert status == 401, (method, path, token, answer)
                assert hdrs["www-authenticate"] == "Bearer"
        assert m._tiers() == (0, len(PATTERNS))
        assert h.call("GET", "/gpu/config")[2] == before
        # Reads stay open.
        assert h.call("GET", "/gpu/status")[0] == 200
        # With the token: 200.
        status, _, answer = h.call("POST", "/gpu/sync", token=TOKEN)
        assert (status, answer) == (200, {"patterns_promoted": len(PATTERNS), "source": "manual"})
        status, _, answer = h.call("PATCH", "/gpu/config", {"sync_threshold": 5}, token=TOKEN)
        assert status == 200 and answer["sync_threshold"] == 5
        status, _, answer = h.call("POST", "/gpu/sync/restart", token=TOKEN)
        assert (status, answer) == (200, {"restarted": False, "background_sync_running": True})


def test_token_argument_and_insecure(parts):
    m, s = parts
    with TestClient(app_with(m, s, token=TOKEN)) as c:
        assert c.post("/gpu/sync").status_code == 401
        assert c.post("/gpu/sync", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    with TestClient(app_with(m, s, insecure=True)) as c:
        assert c.post("/gpu/sync").status_code == 200


def test_own_dependencies_guard_the_changing_endpoints(parts):
    m, s = parts
    calls = []

    def require_admin(x_admin: Optional[str] = fastapi.Header(None)) -> None:
        calls.append(x_admin)
        if x_admin != "yes":
            raise fastapi.HTTPException(status_code=403, detail="admins only")

    with TestClient(app_with(m, s, dependencies=[fastapi.Depends(require_admin)])) as c:
        assert c.post("/gpu/sync").status_code == 403
        assert c.patch("/gpu/config", json={"sync_threshold": 3}).status_code == 403
        assert c.get("/gpu/config").json()["sync_threshold"] == 1000
        assert c.get("/gpu/status").status_code == 200  # reads are not guarded
        assert c.post("/gpu/sync", headers={"X-Admin": "yes"}).json()["patterns_promoted"] == len(PATTERNS)
        assert c.patch("/gpu/config", json={"sync_threshold": 3}, headers={"X-Admin": "yes"}).status_code == 200
    # A token and dependencies: both must pass.
    with TestClient(app_with(m, s, token=TOKEN, dependencies=[fastapi.Depends(require_admin)])) as c:
        assert c.post("/gpu/sync", headers={"X-Admin": "yes"}).status_code == 401
        assert c.post("/gpu/sync", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
        assert c.post("/gpu/sync", headers={"Authorization": f"Bearer {TOKEN}", "X-Admin": "yes"}).status_code == 200


# ------------------------------------------------------------------ values checked before anything changes

ABSURD = [
    ("sync_threshold", 9223372036854775807),
    ("sync_threshold", 10**30),
    ("sync_threshold", _native.MAX_SYNC_THRESHOLD + 1),
    ("sync_threshold", 0),
    ("sync_threshold", -1),
    ("sync_threshold", True),
    ("sync_threshold", 2.5),
    ("sync_threshold", "1000"),
    ("sync_threshold", None),
    ("sync_interval_seconds", 15000000000000000000),
    ("sync_interval_seconds", _native.MAX_SYNC_INTERVAL_SECONDS + 1),
    ("sync_interval_seconds", 0),
    ("sync_interval_seconds", -1),
    ("sync_interval_seconds", 1e300),
    ("sync_interval_seconds", "300"),
    ("enable_background_sync", "false"),
    ("enable_background_sync", 0),
    ("enable_background_sync", None),
    ("log_memory_usage", 1),
    ("metric", "lcs"),
    ("no_such_field", 1),
]


def test_absurd_values_are_422_naming_the_field_and_change_nothing(parts):
    m, s = parts
    with served(m, s, token=TOKEN) as h:
        before = h.call("GET", "/gpu/config")[2]
        settings_before = (s.config.sync_threshold, s.config.sync_interval_seconds)
        for field, value in ABSURD:
            # Alone, and beside a valid change: either way nothing changes.
            for body in ({field: value}, {"sync_threshold": 7, field: value}):
                status, _, answer = h.call("PATCH", "/gpu/config", body, token=TOKEN)
                assert status == 422, (body, answer)
                assert answer["detail"][0]["loc"] == ["body", field], answer
                assert h.call("GET", "/gpu/config")[2] == before
        assert (s.config.sync_threshold, s.config.sync_interval_seconds) == settings_before
        # Not jammed: a valid change still applies.
        status, _, answer = h.call("PATCH", "/gpu/config", {"sync_threshold": 7}, token=TOKEN)
        assert status == 200 and answer["sync_threshold"] == 7
        assert s.get_stats()["background_sync_running"] is True


def test_malformed_bodies_are_422(parts):
    m, s = parts
    with TestClient(app_with(m, s, token=TOKEN)) as c:
        auth = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
        for raw in (b"", b"{not json", b"[]", b"{}", b'"x"', b"5", b"null", b'[{"sync_threshold": 5}]'):
            r = c.patch("/gpu/config", content=raw, headers=auth)
            assert r.status_code == 422, (raw, r.text)
            assert r.json()["detail"][0]["loc"] == ["body"]
        assert c.get("/gpu/config").json() == m.config.to_dict()


ACCEPTED_EXTREMES = [
    {"sync_threshold": _native.MAX_SYNC_THRESHOLD},
    {"sync_interval_seconds": _native.MAX_SYNC_INTERVAL_SECONDS, "enable_background_sync": True},
    {"sync_interval_seconds": 1, "enable_background_sync": True},
    {"enable_background_sync": False},
    {"sync_threshold": 1},
]


def test_the_worker_survives_every_accepted_value(parts):
    m, s = parts
    with served(m, s, token=TOKEN) as h:
        for k, change in enumerate(ACCEPTED_EXTREMES):
            status, _, answer = h.call("PATCH", "/gpu/config", change, token=TOKEN)
            assert status == 200, (change, answer)
            assert m.add_new_pattern(f"EXTREME|{k}", [["x", str(k)]])
            sync = h.call("GET", "/gpu/status")[2]["sync"]
            assert sync["background_sync_running"] is True, change
            assert sync["worker_failures"] == 0
        # With threshold 1 the worker promotes every learn by itself.
        assert wait_until(lambda: m._tiers()[1] == 0)
        status = h.call("GET", "/gpu/status")[2]
        assert status["tiers"]["recent"] == 0 and status["sync"]["background_sync_running"] is True
        assert status["sync"]["last_sync_source"] == "automatic"


# ------------------------------------------------------------------ body size


def test_bodies_over_the_limit_are_413_unread(parts):
    m, s = parts
    limit = 1024
    with served(m, s, token=TOKEN, max_body_bytes=limit) as h:
        before = h.call("GET", "/gpu/config")[2]
        padding = " " * limit
        big = ('{"sync_threshold": 5' + padding + "}").encode()
        status, _, answer = h.call("PATCH", "/gpu/config", raw=big, token=TOKEN)
        assert status == 413, answer
        status, _, _ = h.call("POST", "/gpu/sync", raw=big, token=TOKEN)
        assert status == 413
        assert m._tiers() == (0, len(PATTERNS))
        # A chunked body declares no length: read no further than the limit.
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=20)
        try:
            conn.request(
                "PATCH",
                "/gpu/config",
                body=iter([b'{"sync_threshold": 5', padding.encode(), b"}"]),
                headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
                encode_chunked=True,
            )
            resp = conn.getresponse()
            assert resp.status == 413
            resp.read()
        finally:
            conn.close()
        assert h.call("GET", "/gpu/config")[2] == before
        # Under the limit, the same change applies.
        assert h.call("PATCH", "/gpu/config", {"sync_threshold": 5}, token=TOKEN)[0] == 200
    assert DEFAULT_MAX_BODY_BYTES == 64 * 1024


# ------------------------------------------------------------------ one promotion for concurrent requests


def test_coalesced_callers_share_one_run():
    release, started = threading.Event(), threading.Event()
    runs = []

    def work():
        runs.append(1)
        started.set()
        assert release.wait(20)
        return len(runs)

    once = _Coalesced(work)
    results = []
    leader = threading.Thread(target=lambda: results.append(once()))
    leader.start()
    assert started.wait(20)
    followers = [threading.Thread(target=lambda: results.append(once())) for _ in range(5)]
    for t in followers:
        t.start()
    # Each follower waits on the running promotion's future before the leader is released.
    assert wait_until(lambda: once.waiting == 5)
    release.set()
    for t in [leader, *followers]:
        t.join(20)
    assert results == [1] * 6 and runs == [1]
    # The next call runs again.
    assert once() == 2


def test_coalesced_failure_reaches_every_caller():
    def work():
        raise RuntimeError("boom")

    once = _Coalesced(work)
    with pytest.raises(RuntimeError, match="boom"):
        once()
    with pytest.raises(RuntimeError, match="boom"):
        once()


def test_concurrent_sync_requests_over_http(parts):
    """Every answer is the result of a promotion that ran, and every pattern moved once."""
    m, s = parts
    calls = []
    lock = threading.Lock()
    trigger = s.trigger_sync

    def counting_trigger(source: str = "manual") -> int:
        moved = trigger(source)
        with lock:
            calls.append(moved)
        return moved

    s.trigger_sync = counting_trigger
    answers = []
    with served(m, s, token=TOKEN) as h:
        threads = [
            threading.Thread(target=lambda: answers.append(h.call("POST", "/gpu/sync", token=TOKEN))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(answers) == 8 and all(status == 200 for status, _, _ in answers)
    assert 1 <= len(calls) <= 8
    assert {a["patterns_promoted"] for _, _, a in answers} <= set(calls)
    assert sum(calls) == len(PATTERNS) and m._tiers() == (len(PATTERNS), 0)


def test_concurrent_sync_requests_share_one_promotion_over_http(parts):
    """Requests arriving while a promotion runs wait for it and get its answer."""
    m, s = parts
    release, started = threading.Event(), threading.Event()
    calls = []
    trigger = s.trigger_sync

    def blocking_trigger(source: str = "manual") -> int:
        calls.append(source)
        started.set()
        assert release.wait(30)
        return trigger(source)

    s.trigger_sync = blocking_trigger
    api = router(m, s, token=TOKEN)
    # The router's own routes: newer FastAPI versions keep an included router's routes inside it.
    (route,) = [r for r in api.routes if getattr(r, "path", None) == "/gpu/sync"]
    coalesced = route.endpoint.coalesced
    app = fastapi.FastAPI()
    app.include_router(api)
    answers = []
    with Http(app) as h:

        def post() -> None:
            answers.append(h.call("POST", "/gpu/sync", token=TOKEN))

        leader = threading.Thread(target=post)
        leader.start()
        assert started.wait(30)
        followers = [threading.Thread(target=post) for _ in range(5)]
        for t in followers:
            t.start()
        assert wait_until(lambda: coalesced.waiting == 5)
        release.set()
        for t in [leader, *followers]:
            t.join(30)
    assert calls == ["manual"]
    assert [(status, answer) for status, _, answer in answers] == [
        (200, {"patterns_promoted": len(PATTERNS), "source": "manual"})
    ] * 6
    assert m._tiers() == (len(PATTERNS), 0)
