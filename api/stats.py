"""``GET /v1/stats``: what the ops dashboard shows, for operators."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from api.auth import require_scope
from api.context import get_broker, get_redis, get_settings
from api.schemas import DEFAULT_WINDOW_MINUTES, MAX_WINDOW_MINUTES
from core.errors import InvalidField
from core.stats import build_stats

bp = Blueprint("stats", __name__, url_prefix="/v1/stats")



@bp.before_request
def _operators_only() -> None:
    require_scope("operator")


@bp.get("")
def get_stats() -> Any:
    """Return throughput, latency percentiles, queues, workers, failures and webhook failures."""
    raw = request.args.get("window", str(DEFAULT_WINDOW_MINUTES))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WINDOW_MINUTES:
        raise InvalidField(f"window must be an integer number of minutes from 1 to {MAX_WINDOW_MINUTES}",
                           code="invalid_window")
    stats = build_stats(get_redis(), get_broker(), window_minutes=int(raw),
                        dead_after=get_settings().worker_dead_after_seconds)
    return stats, 200, {"Cache-Control": "no-store"}
