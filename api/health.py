"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint

from api.context import get_redis, get_settings
from core.workers import list_workers

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """Say the process is alive."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> Any:
    """Say whether Redis answers and a worker with a warm model was seen recently."""
    client = get_redis()
    settings = get_settings()
    checks: dict[str, Any] = {}
    try:
        workers = list_workers(client, dead_after=settings.worker_dead_after_seconds)
        checks["redis"] = "ok"
        checks["warm_workers"] = sum(1 for w in workers if w["alive"] and w.get("model_loaded"))
    except (redis.ConnectionError, redis.TimeoutError):
        checks["redis"] = "unreachable"
        checks["warm_workers"] = 0
    ready = checks["redis"] == "ok" and checks["warm_workers"] > 0
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    if not ready:
        code = "redis_unavailable" if checks["redis"] != "ok" else "no_warm_worker"
        body["error"] = {"code": code, "message": "not ready: " + code.replace("_", " ")}
    return body, 200 if ready else 503
