"""What the operator endpoints (metrics, stats, dashboard) share: the scope check, the broker client."""

from __future__ import annotations

from typing import Any

import redis
from flask import current_app

from api.auth import require_scope
from api.context import get_settings


def require_operator() -> None:
    """Refuse callers whose key lacks the ``operator`` scope (403).

    api.auth's before-request hook has authenticated the caller already (401 without a
    key); with auth disabled every caller holds every scope.
    """
    require_scope("operator")


def get_redis() -> redis.Redis:
    return current_app.extensions["verifier"]["redis"]


def get_broker() -> redis.Redis:
    """Return a client of the broker's Redis (the job store's unless the broker is set apart)."""
    ext: dict[str, Any] = current_app.extensions["verifier"]
    if "broker" not in ext:
        settings = get_settings()
        if settings.broker_url and settings.broker_url != settings.redis_url:
            ext["broker"] = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5)
        else:
            ext["broker"] = ext["redis"]
    return ext["broker"]
