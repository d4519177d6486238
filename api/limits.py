"""Per-key request rates and per-tenant job quotas, kept in Redis so every API process shares them.

The request rate (``VERIFIER_RATE_LIMIT``, e.g. ``50/second``) is a moving window per API key
(the ``limits`` library, the engine of Flask-Limiter, on Redis). The quota
(``VERIFIER_TENANT_MAX_QUEUED``) caps a tenant's queued plus running jobs; a submission reserves
its slots atomically (a Lua script) before the jobs are written, so concurrent requests on
different processes cannot overshoot it.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import limits
import redis
from flask import Flask, current_app, g, request
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from core.errors import PayloadTooLarge, RateLimited
from core.settings import Settings
from core.store import JobStore

RESERVATION_SECONDS = 60
QUOTA_RETRY_AFTER = 5


class RateLimiter:
    """A moving-window request rate per identifier, in Redis."""

    def __init__(self, settings: Settings) -> None:
        self.item = limits.parse(settings.rate_limit)
        storage = RedisStorage(settings.redis_url, key_prefix="cv:rate", socket_timeout=5, socket_connect_timeout=2)
        self.limiter = MovingWindowRateLimiter(storage)

    def hit(self, identifier: str) -> None:
        """Count one request; raise ``RateLimited`` with ``Retry-After`` when over the rate."""
        if self.limiter.hit(self.item, identifier):
            return
        reset, _ = self.limiter.get_window_stats(self.item, identifier)
        retry_after = max(1, math.ceil(reset - time.time()))
        raise RateLimited(
            f"over the rate limit of {self.item}; retry in {retry_after} s", code="rate_limited",
            retry_after=retry_after,
        )


# KEYS: the tenant's queued index, running index, reservations; ARGV: slots, max, ttl, member.
# Reservations are "token:slots" members scored by their expiry, so a crashed request's slots
# come back on their own.
_RESERVE = """
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_s)
local used = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  used = used + tonumber(string.match(member, ':(%d+)$'))
end
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return used
end
redis.call('ZADD', KEYS[3], now_s + tonumber(ARGV[3]), ARGV[4])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]) + 1)
return -1
"""


class TenantQuota:
    """Cap each tenant's queued plus running jobs."""

    def __init__(self, client: redis.Redis, *, max_queued: int) -> None:
        self.redis = client
        self.max_queued = max_queued
        self._reserve = client.register_script(_RESERVE)

    @contextmanager
    def reserve(self, tenant: str, slots: int) -> Iterator[None]:
        """Hold ``slots`` of ``tenant``'s quota while its jobs are written; raise 429 when full."""
        if slots <= 0:
            yield
            return
        reservations = f"cv:quota:{tenant}"
        member = f"{secrets.token_hex(8)}:{slots}"
        keys = [JobStore.index_key(tenant, "queued"), JobStore.index_key(tenant, "running"), reservations]
        used = int(self._reserve(keys=keys, args=[slots, self.max_queued, RESERVATION_SECONDS, member]))
        if used >= 0:
            raise RateLimited(
                f"the tenant has {used} queued or running jobs; at most {self.max_queued}"
                + (f", and this request adds {slots}" if slots > 1 else ""),
                code="tenant_quota_exceeded", retry_after=QUOTA_RETRY_AFTER,
            )
        try:
            yield
        finally:
            self.redis.zrem(reservations, member)


def init_app(app: Flask) -> None:
    """Register the per-key rate limit (after authentication has set ``g.principal``)."""
    app.extensions["verifier"]["rate_limiter"] = RateLimiter(app.extensions["verifier"]["settings"])
    app.before_request(limit_rate)
    app.before_request(limit_chunked_body)


def limit_rate() -> Any:
    """Count the request against its key's rate (keyed requests only: none while auth is off)."""
    principal = g.get("principal")
    if principal is None or principal.key_id is None:
        return None
    limiter: RateLimiter = current_app.extensions["verifier"]["rate_limiter"]
    limiter.hit(principal.key_id)
    return None


def limit_chunked_body() -> Any:
    """Refuse chunked bodies over ``max_request_bytes`` with 413.

    With a Content-Length, Flask refuses a body too large before reading it. A chunked body
    has none, and Werkzeug's stream just stops at the limit, which would hand the view a
    truncated body; read it here (it is cached for the view) and look for one byte more.
    """
    if request.content_length is not None or "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return None
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    data = request.get_data(cache=True)
    if limit is not None and len(data) >= limit and request.input_stream.read(1):
        raise PayloadTooLarge("the request body is too large")
    return None
