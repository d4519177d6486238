"""Liveness and readiness probes."""

from __future__ import annotations

import time
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
        client.ping()
        checks["redis"] = "ok"
        recent = time.time() - settings.worker_dead_after_seconds
        warm = [
            w for w in list_workers(client)
            if w["alive"] and w.get("model_loaded") and (w.get("last_seen") or 0) >= recent
        ]
        checks["warm_workers"] = len(warm)
    except (redis.ConnectionError, redis.TimeoutError):
        checks["redis"] = "unreachable"
        checks["warm_workers"] = 0
    ready = checks["redis"] == "ok" and checks["warm_workers"] > 0
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    if not ready:
        code = "redis_unavailable" if checks["redis"] != "ok" else "no_warm_worker"
        body["error"] = {"code": code, "message": "not ready: " + code.replace("_", " ")}
    return body, 200 if ready else 503
