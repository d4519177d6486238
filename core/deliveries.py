"""Webhook delivery records, the retry schedule and delivery leases, in Redis.

Shared by the API (which lists attempts and schedules redeliveries) and the webhook workers.
Keys (all under ``cv:wh:``):
- ``attempts:{job_id}``: a list of attempt records (JSON), oldest first; expires with the job.
- ``due``: a sorted set of job ids scored by when their next attempt is due (epoch seconds).
  Long retry delays live here, not in Celery ETAs: on the Redis transport an ETA message
  held past the visibility timeout is delivered again, and duplicated.
- ``lease:{job_id}``: the worker making an attempt right now (expires on its own).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from core.names import KEY_PREFIX as P
from core.redistext import text

DUE_KEY = f"{P}wh:due"
MAX_RECORDS = 100
# How long a claimed (or freshly enqueued) attempt may go unseen before it is enqueued again.
RECLAIM_SECONDS = 300.0

# Take due entries and push them back by ``hold`` seconds in one step: of two pollers, one
# gets each entry, and an entry whose task is lost before it runs comes due again later.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id)
end
return ids
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def attempts_key(job_id: str) -> str:
    return f"{P}wh:attempts:{job_id}"


def lease_key(job_id: str) -> str:
    return f"{P}wh:lease:{job_id}"


class DeliveryLog:
    """Record attempts, keep the retry schedule, and hand out per-job delivery leases."""

    def __init__(self, client: redis.Redis, *, ttl_seconds: int, max_records: int = MAX_RECORDS) -> None:
        self.redis = client
        self.ttl = ttl_seconds
        self.max_records = max_records
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    # --- attempt records ------------------------------------------------------------------
    def record(self, job_id: str, attempt: dict[str, Any]) -> None:
        """Append an attempt record; keep the newest ``max_records``."""
        key = attempts_key(job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, json.dumps(attempt, separators=(",", ":")))
        pipe.ltrim(key, -self.max_records, -1)
        pipe.expire(key, self.ttl)
        pipe.execute()

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """Return the attempt records of ``job_id``, oldest first."""
        return [json.loads(raw) for raw in self.redis.lrange(attempts_key(job_id), 0, -1)]

    # --- the schedule ---------------------------------------------------------------------
    def schedule(self, job_id: str, due: float, *, only_sooner: bool = False) -> None:
        """Make ``job_id``'s next attempt due at ``due`` (epoch seconds); with ``only_sooner``,
        never move an existing entry later."""
        self.redis.zadd(DUE_KEY, {job_id: due}, lt=only_sooner)

    def unschedule(self, job_id: str) -> None:
        """Forget ``job_id``'s schedule entry (its delivery ended)."""
        self.redis.zrem(DUE_KEY, job_id)

    def claim_due(self, now: float, *, limit: int, hold: float) -> list[str]:
        """Return up to ``limit`` job ids due by ``now``, pushed back to ``now + hold``."""
        ids = self._claim(keys=[DUE_KEY], args=[now, limit, now + hold])
        return [text(i) for i in ids]

    def next_due(self) -> float | None:
        """Return when the earliest entry is due, or None when nothing is scheduled."""
        first = self.redis.zrange(DUE_KEY, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def due_at(self, job_id: str) -> float | None:
        """Return when ``job_id`` is scheduled, or None."""
        score = self.redis.zscore(DUE_KEY, job_id)
        return None if score is None else float(score)

    # --- leases ---------------------------------------------------------------------------
    def acquire(self, job_id: str, owner: str, *, ttl: float) -> bool:
        """Take the delivery lease of ``job_id`` for ``ttl`` seconds; False if someone holds it."""
        return bool(self.redis.set(lease_key(job_id), owner, nx=True, px=max(1, int(ttl * 1000))))

    def release(self, job_id: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it."""
        self._release(keys=[lease_key(job_id)], args=[owner])
