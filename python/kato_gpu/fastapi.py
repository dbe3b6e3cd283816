"""KATO's ``/gpu`` endpoints as a FastAPI router (optional: ``pip install kato-gpu[fastapi]``).

``import kato_gpu`` never imports FastAPI; only this module does. Mount it in KATO's app::

    from kato_gpu.fastapi import router
    app.include_router(router(matcher, sync_manager))

Endpoints (under ``prefix``, default ``/gpu``):

* ``POST /sync``: promotes the recent tier now (the sync manager's manual trigger);
  returns ``{"patterns_promoted": n, "source": "manual"}``.
* ``GET /status``: tiers, memory, GPU state, the sync manager's stats, training mode.
* ``GET /config``: the matcher's ``GPUConfig`` as a dict.
* ``PATCH /config``: a JSON object of runtime-changeable fields, applied with
  ``matcher.update_config``; an invalid change answers 422 and changes nothing. Returns the
  new config.
* ``GET /metrics``: our Prometheus metrics in the text format (needs ``prometheus_client``;
  503 without it).

The handlers are plain functions, so FastAPI runs them in its thread pool: a sync or a status
read never blocks the event loop.
"""

from __future__ import annotations

from typing import Any, Dict

try:
    from fastapi import APIRouter, Body, HTTPException
    from fastapi.responses import Response
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "kato_gpu.fastapi needs the optional dependency fastapi; install it with: pip install kato-gpu[fastapi]"
    ) from exc

__all__ = ["router", "METRICS_MEDIA_TYPE"]

#: The media type of ``GET /metrics`` (Prometheus text format 0.0.4).
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The sync manager's trigger source for ``POST /sync`` (KATO's manual trigger).
SYNC_SOURCE = "manual"


def router(matcher: Any, sync_manager: Any, prefix: str = "/gpu") -> APIRouter:
    """An ``APIRouter`` serving ``matcher`` and ``sync_manager`` under ``prefix``.

    Args:
        matcher: the ``HybridGPUMatcher``.
        sync_manager: the ``SyncManager`` driving ``matcher``'s syncs.
        prefix: the path the endpoints live under; ``""`` mounts them at the root.
    """
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ValueError(f"prefix must start with '/', got {prefix!r}")
    api = APIRouter(prefix=prefix, tags=["gpu"])

    @api.post("/sync", summary="Promote the recent tier into the bulk tier now")
    def gpu_sync() -> Dict[str, Any]:
        promoted = sync_manager.trigger_sync(source=SYNC_SOURCE)
        return {"patterns_promoted": int(promoted), "source": SYNC_SOURCE}

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

    @api.patch(
        "/config",
        summary="Change runtime-changeable settings",
        responses={422: {"description": "Not a JSON object, or an invalid change (nothing was changed)"}},
    )
    def gpu_config_update(changes: Any = Body(None, examples=[{"sync_threshold": 500}])) -> Dict[str, Any]:
        if not isinstance(changes, dict) or not changes:
            raise HTTPException(status_code=422, detail="the body must be a non-empty JSON object of config fields")
        try:
            config = matcher.update_config(**changes)
        except (ValueError, TypeError) as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return config.to_dict()

    @api.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
    def gpu_metrics() -> Response:
        try:
            from .prometheus import render_text
        except ImportError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return Response(content=render_text(matcher, sync_manager), media_type=METRICS_MEDIA_TYPE)

    return api
