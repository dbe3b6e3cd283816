"""KATO's ``/gpu`` endpoints as a FastAPI router (optional: ``pip install kato-gpu[fastapi]``).

``import kato_gpu`` never imports FastAPI; only this module does. Mount it in KATO's app with a
token (or ``KATO_GPU_API_TOKEN`` in the environment)::

    from kato_gpu.fastapi import router
    app.include_router(router(matcher, sync_manager, token=os.environ["MY_TOKEN"]))

or with your own authentication, as FastAPI dependencies::

    app.include_router(router(matcher, sync_manager, dependencies=[Depends(require_admin)]))

Endpoints (under ``prefix``, default ``/gpu``); those that change something need the bearer token
(``Authorization: Bearer <token>``, else 401) and pass the ``dependencies``:

* ``POST /sync`` (changes): promotes the recent tier now (the sync manager's manual trigger);
  returns ``{"patterns_promoted": n, "source": "manual"}``. Requests arriving while a
  promotion runs wait for it and get its result (one promotion, not one per request).
* ``POST /sync/restart`` (changes): starts the background sync worker if it is not running
  (stopped, or stopped by its supervisor after repeated failures); returns
  ``{"restarted": bool, "background_sync_running": bool}``.
* ``PATCH /config`` (changes): a JSON object of runtime-changeable fields, applied with
  ``matcher.update_config``. Every value is checked before anything changes: an invalid one
  answers 422 naming the field (FastAPI's ``detail`` shape) and changes nothing; a body above
  ``max_body_bytes`` answers 413 unread. Returns the new config.
* ``GET /status``: tiers, memory, GPU state, the sync manager's stats (including the worker's
  failures, restarts and last error), training mode.
* ``GET /config``: the matcher's ``GPUConfig`` as a dict.
* ``GET /metrics``: our Prometheus metrics in the text format (needs ``prometheus_client``;
  503 without it).

The read endpoints are open; to protect them too, give ``include_router`` the dependencies
(``app.include_router(router(...), dependencies=[Depends(auth)])``). The handlers that do work run
in FastAPI's thread pool: a sync or a status read never blocks the event loop.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional, Sequence

try:
    from fastapi import APIRouter, Depends, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "kato_gpu.fastapi needs the optional dependency fastapi; install it with: pip install kato-gpu[fastapi]"
    ) from exc

__all__ = ["router", "METRICS_MEDIA_TYPE", "TOKEN_ENV", "DEFAULT_MAX_BODY_BYTES"]

#: The media type of ``GET /metrics`` (Prometheus text format 0.0.4).
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The sync manager's trigger source for ``POST /sync`` (KATO's manual trigger).
SYNC_SOURCE = "manual"

#: The environment variable holding the bearer token when ``router(token=None)``.
TOKEN_ENV = "KATO_GPU_API_TOKEN"

#: The largest request body accepted by the endpoints that change something (a config change is
#: a few hundred bytes).
DEFAULT_MAX_BODY_BYTES = 64 * 1024


def _token_from(token: Optional[str]) -> Optional[bytes]:
    if token is None:
        token = os.environ.get(TOKEN_ENV, "").strip() or None
        if token is None:
            return None
    elif not isinstance(token, str):
        raise TypeError(f"token must be a str or None, got {type(token).__name__}")
    elif not token.strip():
        raise ValueError("token must not be empty")
    return token.encode("utf-8")


def _require_token(expected: bytes) -> Callable[..., None]:
    bearer = HTTPBearer(auto_error=False, description=f"the token configured by {TOKEN_ENV} or router(token=...)")

    def require_token(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        # compare_digest: the time taken does not tell how much of a guess was right.
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
            raise HTTPException(
                status_code=401, detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    return require_token


def _too_large(limit: int) -> HTTPException:
    return HTTPException(status_code=413, detail=f"request body too large (at most {limit} bytes)")


def _limit_declared_body(limit: int) -> Callable[..., None]:
    def limit_declared_body(request: Request) -> None:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
            raise _too_large(limit)

    return limit_declared_body


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (a chunked body declares no length)."""
    chunks: List[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(loc: Sequence[str], message: str) -> HTTPException:
    # FastAPI's own shape for request validation errors.
    return HTTPException(status_code=422, detail=[{"loc": list(loc), "msg": message, "type": "value_error"}])


class _Coalesced:
    """Runs ``work`` once for every group of concurrent callers: a caller arriving while it runs
    waits for that run and gets its result (or its exception)."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._work = work
        self._lock = threading.Lock()
        self._running: Optional[Future] = None
        #: Callers waiting for a run they did not start.
        self.waiting = 0

    def __call__(self) -> Any:
        with self._lock:
            running = self._running
            if running is None:
                running = self._running = Future()
                leader = True
            else:
                self.waiting += 1
                leader = False
        if not leader:
            try:
                return running.result()
            finally:
                with self._lock:
                    self.waiting -= 1
        try:
            running.set_result(self._work())
        except BaseException as exc:
            running.set_exception(exc)
        finally:
            with self._lock:
                self._running = None
        return running.result()


def router(
    matcher: Any,
    sync_manager: Any,
    prefix: str = "/gpu",
    *,
    token: Optional[str] = None,
    dependencies: Optional[Sequence[Any]] = None,
    insecure: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> APIRouter:
    """An ``APIRouter`` serving ``matcher`` and ``sync_manager`` under ``prefix``.

    Args:
        matcher: the ``HybridGPUMatcher``.
        sync_manager: the ``SyncManager`` driving ``matcher``'s syncs.
        prefix: the path the endpoints live under; ``""`` mounts them at the root.
        token: the bearer token the endpoints that change something require; ``None`` reads
            ``KATO_GPU_API_TOKEN`` (unset or blank: no token).
        dependencies: FastAPI dependencies (``Depends(...)``) run before each endpoint that
            changes something, after the token check: your own authentication.
        insecure: allow mounting with neither a token nor dependencies: anyone who reaches the
            port can then trigger syncs and change the configuration. A token configured by
            ``token`` or the environment is still required.
        max_body_bytes: the largest request body those endpoints accept (413 above).

    Raises:
        ValueError: no token and no dependencies without ``insecure=True``; a bad prefix, an
            empty token, or a ``max_body_bytes`` below 1.
        TypeError: a token that is not a str.
    """
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ValueError(f"prefix must start with '/', got {prefix!r}")
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    expected = _token_from(token)
    extra = list(dependencies or ())
    if expected is None and not extra and not insecure:
        raise ValueError(
            "kato_gpu.fastapi.router() will not serve POST /sync, POST /sync/restart and PATCH /config "
            f"unauthenticated: set {TOKEN_ENV}, or pass token=... or dependencies=[Depends(...)], "
            "or insecure=True to accept that anyone who reaches the port can change the service"
        )
    guarded = ([Depends(_require_token(expected))] if expected is not None else []) + extra
    guarded.append(Depends(_limit_declared_body(max_body_bytes)))
    api = APIRouter(prefix=prefix, tags=["gpu"])
    unauthorized = {401: {"description": "No valid bearer token"}, 413: {"description": "Request body too large"}}
    config_lock = threading.Lock()

    def promote() -> Dict[str, Any]:
        promoted = sync_manager.trigger_sync(source=SYNC_SOURCE)
        return {"patterns_promoted": int(promoted), "source": SYNC_SOURCE}

    promote_once = _Coalesced(promote)

    @api.post(
        "/sync", summary="Promote the recent tier into the bulk tier now", dependencies=guarded, responses=unauthorized
    )
    def gpu_sync() -> Dict[str, Any]:
        return promote_once()

    # Introspection (tests): how many requests wait for the promotion in progress.
    gpu_sync.coalesced = promote_once  # type: ignore[attr-defined]

    @api.post(
        "/sync/restart",
        summary="Start the background sync worker if it is not running",
        dependencies=guarded,
        responses=unauthorized,
    )
    def gpu_sync_restart() -> Dict[str, Any]:
        restarted = sync_manager.restart_background_sync()
        return {"restarted": restarted, "background_sync_running": sync_manager.get_stats()["background_sync_running"]}

    @api.get("/status", summary="Tiers, memory, GPU state and sync statistics")
    def gpu_status() -> Dict[str, Any]:
        stats = matcher.get_stats()
        sync = sync_manager.get_stats()
        return {
            "use_gpu": stats["use_gpu"],
            "gpu_unavailable_reason": stats["gpu_unavailable_reason"],
            "metric": stats["metric"],
            "autojunk": stats["autojunk"],
            "tiers": {
                "bulk": stats["bulk_tier_patterns"],
                "recent": stats["recent_tier_patterns"],
                "total": stats["total_patterns"],
                "bulk_device": stats.get("bulk_tier_device", "gpu" if stats["use_gpu"] else "cpu"),
            },
            "memory": {
                "memory_bytes": stats["memory_bytes"],
                "gpu_memory_gb": matcher.get_memory_usage_gb(),
                "capacity": matcher.get_capacity_info(),
            },
            "queries": {
                "gpu": stats["gpu_queries"],
                "cpu": stats["cpu_queries"],
                "gpu_fallbacks": stats["gpu_fallbacks"],
            },
            "patterns_learned": stats["patterns_learned"],
            "vocab_size": stats["vocab_size"],
            "training_mode": bool(sync_manager.training_mode),
            "sync": sync,
        }

    @api.get("/config", summary="The matcher's GPUConfig")
    def gpu_config() -> Dict[str, Any]:
        return matcher.config.to_dict()

    def apply_changes(changes: Any) -> Dict[str, Any]:
        if not isinstance(changes, dict) or not changes:
            raise _invalid(["body"], "the body must be a non-empty JSON object of config fields")
        runtime = tuple(matcher.RUNTIME_CONFIG_FIELDS)
        with config_lock:
            # Field by field first, so that a 422 names the field; then the change as a whole
            # (update_config validates everything before it changes anything).
            for name, value in changes.items():
                if name not in runtime:
                    raise _invalid(["body", name], f"{name!r} is not a runtime field (runtime fields: {runtime})")
                try:
                    dataclasses.replace(matcher.config, **{name: value}).validate()
                except (ValueError, TypeError) as exc:
                    raise _invalid(["body", name], str(exc)) from None
            try:
                return matcher.update_config(**changes).to_dict()
            except (ValueError, TypeError) as exc:
                raise _invalid(["body"], str(exc)) from None

    @api.patch(
        "/config",
        summary="Change runtime-changeable settings",
        dependencies=guarded,
        responses={
            **unauthorized,
            422: {"description": "Not a JSON object, or an invalid change (the field is named; nothing changed)"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}, "example": {"sync_threshold": 500}}},
            }
        },
    )
    async def gpu_config_update(request: Request) -> Dict[str, Any]:
        raw = await _read_body(request, max_body_bytes)
        try:
            changes = json.loads(raw)
        except ValueError as exc:
            raise _invalid(["body"], f"the body is not valid JSON: {exc}") from None
        return await run_in_threadpool(apply_changes, changes)

    @api.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
    def gpu_metrics() -> Response:
        try:
            from .prometheus import render_text
        except ImportError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return Response(content=render_text(matcher, sync_manager), media_type=METRICS_MEDIA_TYPE)

    return api
