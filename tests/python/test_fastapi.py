"""kato_gpu.fastapi: KATO's /gpu endpoints, through FastAPI's TestClient and over real HTTP on
127.0.0.1 (uvicorn in a thread)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings

import pytest

try:
    import fastapi
    import httpx  # noqa: F401  (TestClient needs it)
    import prometheus_client  # noqa: F401
    import uvicorn

    with warnings.catch_warnings():  # newer Starlette asks for httpx2 instead; httpx still works
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient
except ImportError:  # `make venv` installs them; CI must never skip these tests
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "fastapi/httpx/uvicorn/prometheus_client are not installed (make venv, or pip install kato-gpu[fastapi])",
        allow_module_level=True,
    )

from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, SyncManager
from kato_gpu.fastapi import METRICS_MEDIA_TYPE, router

PATTERNS = {f"PTRN|{k:03d}": [["a", f"s{k % 5}"], ["b"], [f"t{k % 4}"]] for k in range(25)}


@pytest.fixture
def parts(monkeypatch):
    # These tests cover what the endpoints do; test_service_security.py covers who may call them.
    monkeypatch.delenv("KATO_GPU_API_TOKEN", raising=False)
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(enable_background_sync=False, sync_threshold=1000))
    for name, events in PATTERNS.items():
        assert m.add_new_pattern(name, events)
    s = SyncManager(m, m.config)
    app = fastapi.FastAPI()
    app.include_router(router(m, s, insecure=True))
    return m, s, app


@pytest.fixture
def client(parts):
    with TestClient(parts[2]) as c:
        yield c


def test_status(parts, client):
    m, s, _ = parts
    r = client.get("/gpu/status")
    assert r.status_code == 200
    body = r.json()
    stats = m.get_stats()
    assert body["tiers"] == {
        "bulk": 0,
        "recent": len(PATTERNS),
        "total": len(PATTERNS),
        "bulk_device": stats["bulk_tier_device"],
    }
    assert body["use_gpu"] == stats["use_gpu"]
    assert body["gpu_unavailable_reason"] == stats["gpu_unavailable_reason"]
    assert body["memory"]["memory_bytes"] == stats["memory_bytes"] > 0
    assert body["memory"]["gpu_memory_gb"] == m.get_memory_usage_gb()
    assert body["memory"]["capacity"] == m.get_capacity_info()
    assert body["training_mode"] is False
    sync = body["sync"]
    assert sync == s.get_stats()
    assert sync["total_syncs"] == 0 and sync["last_sync_time"] is None and sync["last_sync_source"] is None

    s.enter_training_mode()
    assert client.get("/gpu/status").json()["training_mode"] is True
    s.exit_training_mode(trigger_sync=False)


def test_sync_promotes_the_recent_tier(parts, client):
    m, s, _ = parts
    before = time.time()
    r = client.post("/gpu/sync")
    assert r.status_code == 200
    assert r.json() == {"patterns_promoted": len(PATTERNS), "source": "manual"}
    status = client.get("/gpu/status").json()
    assert status["tiers"]["bulk"] == len(PATTERNS) and status["tiers"]["recent"] == 0
    sync = status["sync"]
    assert sync["total_syncs"] == 1
    assert sync["total_patterns_synced"] == len(PATTERNS)
    assert sync["last_sync_source"] == "manual"
    assert before - 1 <= sync["last_sync_time"] <= time.time() + 1
    assert sync["last_sync_duration_ms"] >= 0
    # Matching still finds them, now from the bulk tier.
    assert m.match_patterns(["a", "s1", "b", "t1"], 0.9)[0]["pattern_name"] == "PTRN|001"
    # Nothing left to promote.
    assert client.post("/gpu/sync").json() == {"patterns_promoted": 0, "source": "manual"}


def test_get_config(parts, client):
    m, _, _ = parts
    r = client.get("/gpu/config")
    assert r.status_code == 200
    assert r.json() == m.config.to_dict()
    assert r.json()["metric"] == "difflib"


def test_patch_config_applies_a_valid_change(parts, client):
    m, s, _ = parts
    r = client.patch("/gpu/config", json={"sync_threshold": 7, "log_kernel_timing": True})
    assert r.status_code == 200, r.text
    assert r.json()["sync_threshold"] == 7 and r.json()["log_kernel_timing"] is True
    assert client.get("/gpu/config").json() == r.json()
    assert m.config.sync_threshold == 7
    assert s.config.sync_threshold == 7  # the sync manager sees the change too


@pytest.mark.parametrize(
    "body",
    [
        {"sync_threshold": -1},
        {"sync_threshold": 0},
        {"sync_threshold": "ten"},
        {"sync_threshold": 2.5},
        {"sync_interval_seconds": -5},
        {"enable_background_sync": "yes"},
        {"no_such_field": 1},
        {"metric": "lcs"},
        {"autojunk": True},
        {"threads_per_block": 128},
        {"sync_threshold": 5, "metric": "lcs"},  # one bad field: nothing at all changes
        {"sync_threshold": 5, "no_such_field": 1},
        {"self": 1},  # not a keyword update_config can take
        {},
        [],
        [{"sync_threshold": 5}],
        "sync_threshold",
        5,
        None,
    ],
)
def test_patch_config_rejects_an_invalid_change(parts, client, body):
    m, _, _ = parts
    before = client.get("/gpu/config").json()
    r = client.patch("/gpu/config", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert client.get("/gpu/config").json() == before == m.config.to_dict()


def test_patch_config_rejects_a_missing_or_malformed_body(client):
    before = client.get("/gpu/config").json()
    assert client.patch("/gpu/config").status_code == 422
    r = client.patch("/gpu/config", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.get("/gpu/config").json() == before


def test_metrics(parts, client):
    m, _, _ = parts
    m.match_patterns(["a", "s1"], 0.1)
    r = client.get("/gpu/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == METRICS_MEDIA_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    for line in (
        "# TYPE kato_gpu_query_duration_seconds histogram",
        "# TYPE kato_patterns_learned_total counter",
        "# TYPE kato_cpu_pattern_count gauge",
        "# TYPE kato_gpu_training_mode gauge",
        f"kato_patterns_learned_total {float(len(PATTERNS))}",
        f"kato_cpu_pattern_count {float(len(PATTERNS))}",
    ):
        assert line in r.text.splitlines(), line


def test_openapi_lists_the_endpoints(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert set(paths["/gpu/config"]) == {"get", "patch"}
    assert {"/gpu/sync", "/gpu/status", "/gpu/metrics"} <= set(paths)


def test_custom_prefix(parts):
    m, s, _ = parts
    app = fastapi.FastAPI()
    app.include_router(router(m, s, prefix="/kato/gpu/", insecure=True))
    with TestClient(app) as c:
        assert c.get("/kato/gpu/config").status_code == 200
        assert c.get("/gpu/config").status_code == 404
    with pytest.raises(ValueError, match="prefix"):
        router(m, s, prefix="gpu")


def test_over_real_http_on_localhost(parts):
    m, _, app = parts
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start within 10 s"
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        base = f"http://127.0.0.1:{port}/gpu"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

        def call(method, path, body=None):
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(
                base + path, data=data, method=method, headers={"content-type": "application/json"}
            )
            try:
                with opener.open(req, timeout=10) as resp:
                    return resp.status, resp.headers.get("content-type"), resp.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.headers.get("content-type"), err.read().decode()

        status, _, text = call("GET", "/status")
        assert status == 200 and json.loads(text)["tiers"]["recent"] == len(PATTERNS)
        status, _, text = call("POST", "/sync")
        assert status == 200 and json.loads(text) == {"patterns_promoted": len(PATTERNS), "source": "manual"}
        status, _, text = call("GET", "/status")
        assert json.loads(text)["tiers"] == {
            "bulk": len(PATTERNS),
            "recent": 0,
            "total": len(PATTERNS),
            "bulk_device": m.get_stats()["bulk_tier_device"],
        }
        status, _, text = call("PATCH", "/config", {"sync_threshold": 11})
        assert status == 200 and json.loads(text)["sync_threshold"] == 11
        status, _, text = call("PATCH", "/config", {"sync_threshold": -3})
        assert status == 422 and json.loads(text)["detail"][0]["loc"] == ["body", "sync_threshold"]
        status, _, text = call("GET", "/config")
        assert status == 200 and json.loads(text)["sync_threshold"] == 11
        status, ctype, text = call("GET", "/metrics")
        assert status == 200 and ctype == METRICS_MEDIA_TYPE
        assert "kato_gpu_sync_events_total 1.0" in text.splitlines()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive(), "uvicorn did not shut down within 10 s"


def test_missing_fastapi_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes its import fail
    monkeypatch.delitem(sys.modules, "kato_gpu.fastapi")
    with pytest.raises(ImportError, match=r"pip install kato-gpu\[fastapi\]"):
        importlib.import_module("kato_gpu.fastapi")
