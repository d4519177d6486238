"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from api.intake import Intake
from api.limits import TenantQuota
from api.queue import CeleryEnqueuer, Enqueuer
from core.deliveries import DeliveryLog
from core.errors import PayloadTooLarge, RateLimited, ServiceUnavailable, VerifierError
from core.metrics import broker_redis
from core.settings import Settings
from core.store import JobStore

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    415: "unsupported_media_type",
}


def create_app(settings: Settings, *, enqueuer: Enqueuer | None = None) -> Flask:
    """Create and configure the app."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
    )
    store = JobStore(client, result_ttl_seconds=settings.result_ttl_seconds)
    app.extensions["verifier"] = {
        "settings": settings,
        "redis": client,
        "broker": broker_redis(settings, client),
        "deliveries": DeliveryLog(client, ttl_seconds=settings.result_ttl_seconds),
        "store": store,
        "intake": Intake(settings, store, enqueuer or CeleryEnqueuer(settings),
                         quota=TenantQuota(client, max_queued=settings.tenant_max_queued)),
    }

    from api import dashboard, health, jobs, metrics, stats

    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp)
    from api import webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(stats.bp)
    app.register_blueprint(dashboard.bp)
    init_errors(app)
    from api import auth, limits, openapi

    auth.init_app(app)
    limits.init_app(app)
    app.register_blueprint(openapi.bp)
    return app


def error_response(error: VerifierError) -> Any:
    """Render a ``VerifierError`` as the contract's error body and status."""
    response = jsonify({"error": error.to_dict()})
    response.status_code = error.status
    if isinstance(error, (RateLimited, ServiceUnavailable)):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def init_errors(app: Flask) -> None:
    """Register handlers so every error has the contract's body."""

    @app.errorhandler(VerifierError)
    def _verifier_error(error: VerifierError) -> Any:
        return error_response(error)

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def _redis_down(error: Exception) -> Any:
        return error_response(ServiceUnavailable("Redis is unreachable", code="redis_unavailable"))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        status = error.code or 500
        if status == 413:
            return error_response(PayloadTooLarge("the request body is too large"))
        err = VerifierError(error.description or error.name, code=_HTTP_CODES.get(status, "http_error"))
        response = error_response(err)
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        log.exception("unhandled error")
        return error_response(VerifierError("internal error; it has been logged", code="internal"))
