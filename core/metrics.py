"""Operational figures kept in Redis, so that any process can record them and the API can read them.

Workers (and the API, for cancellations) record with one pipelined round trip per event;
the API's ``/metrics`` renders the totals through a prometheus_client ``Collector`` and
``/v1/stats`` reads the per-minute buckets. Nothing here keeps state in process memory,
so the figures are right however many API and worker processes run, on whatever machines.

Keys (all under ``cv:m:``):
- ``jobs``: hash ``{status}|{code}`` → jobs that reached that final status (code ``""`` on success).
- ``h:{name}``: a fixed-bucket histogram: ``b:{i}`` (observations in bucket i, not cumulative),
  ``count`` and ``sum``.
- ``webhooks``: hash ``{outcome}`` → webhook delivery attempts with that outcome.
- ``min:{epoch_minute}``: one hash per minute (kept ``MINUTE_TTL`` seconds): final statuses,
  ``code:{code}``, ``lat:{i}`` (total time on a fine log scale) and ``webhook:{outcome}``.
- ``failures`` / ``webhook_failures``: capped lists of the latest failures (JSON), newest first.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from core.celery_config import PRIORITY_STEPS
from core.jobs import Job, Status, rfc3339_to_epoch
from core.names import KEY_PREFIX, VERIFY_QUEUE, WEBHOOK_QUEUE
from core.settings import Settings
from core.redistext import text
from core.store import QUEUED_INDEX, RUNNING_INDEX

log = logging.getLogger(__name__)

M = f"{KEY_PREFIX}m:"
MINUTE_TTL = 2 * 3600
RECENT_FAILURES = 200
QUEUES = (VERIFY_QUEUE, WEBHOOK_QUEUE)
# Webhook outcomes counted as failures in the stats (the rest: delivered, retrying, ...).
WEBHOOK_FAILURE_OUTCOMES = frozenset({"failed", "rejected", "blocked", "error"})
_LABEL_VALUE = re.compile(r"^[a-z0-9_]{1,40}$")


@dataclass(frozen=True)
class Histogram:
    """A histogram with fixed upper bounds (``+Inf`` implied), stored as a Redis hash."""

    name: str
    help: str
    bounds: tuple[float, ...]

    @property
    def key(self) -> str:
        return f"{M}h:{self.name}"

    def bucket(self, value: float) -> int:
        """Return the index of the first bucket whose upper bound holds ``value``."""
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                return i
        return len(self.bounds)


_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
_STAGE = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HISTOGRAMS: dict[str, Histogram] = {h.name: h for h in (
    Histogram("job_queue_wait_seconds", "Time from job creation to its (last) start.", _SECONDS),
    Histogram("job_total_seconds", "Time from job creation to its final status.", _SECONDS),
    Histogram("image_fetch_seconds", "Time to fetch a job's image from S3.", _STAGE),
    Histogram("image_decode_seconds", "Time to decode and preprocess a job's image.", _STAGE),
    Histogram("inference_seconds", "Time from submitting a job's pairs to the batcher to its scores.", _STAGE),
    Histogram("batch_pairs", "(Image, text) pairs per model forward.", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)),
    Histogram("batch_jobs", "Jobs per model forward.", (1, 2, 4, 8, 16, 32, 64, 128)),
)}
STAGES = {"fetch": "image_fetch_seconds", "decode": "image_decode_seconds", "inference": "inference_seconds"}

# Latency for the stats API: a fine log scale (each bucket 20 % wider than the last, from
# 1 ms), so that percentiles are good to about 10 % without keeping samples.
_LAT_BASE, _LAT_GROWTH, _LAT_MAX = 0.001, 1.2, 80


def latency_bucket(seconds: float) -> int:
    """Return the fine log-scale bucket of a latency (0 holds everything up to 1 ms)."""
    if seconds <= _LAT_BASE:
        return 0
    return min(_LAT_MAX, math.ceil(math.log(seconds / _LAT_BASE, _LAT_GROWTH)))


def latency_bucket_bounds(index: int) -> tuple[float, float]:
    """Return the (lower, upper) bounds in seconds of a fine log-scale bucket."""
    if index <= 0:
        return 0.0, _LAT_BASE
    return _LAT_BASE * _LAT_GROWTH ** (index - 1), _LAT_BASE * _LAT_GROWTH**index


def percentile(buckets: Mapping[int, int], q: float) -> float | None:
    """Return the ``q`` quantile (0..1) of fine log-scale bucket counts, interpolated; None if empty."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index in sorted(buckets):
        count = buckets[index]
        if count <= 0:
            continue
        if seen + count >= rank:
            low, high = latency_bucket_bounds(index)
            # Geometric interpolation inside the bucket (linear within bucket 0).
            frac = (rank - seen) / count
            if index == 0:
                return high * frac
            return float(low * (high / low) ** frac)
        seen += count
    low, high = latency_bucket_bounds(max(buckets))
    return high


def minute_of(epoch: float) -> int:
    """Return the epoch minute (seconds // 60) an instant falls in."""
    return int(epoch // 60)


def minute_key(minute: int) -> str:
    return f"{M}min:{minute}"


def _label(value: str | None, default: str = "none") -> str:
    """Keep label values low-cardinality and safe: unknown shapes collapse to ``other``."""
    if not value:
        return default
    value = value.strip().lower()
    return value if _LABEL_VALUE.match(value) else "other"


# --- recording ---------------------------------------------------------------------------


def _observe(pipe: Any, hist: Histogram, value: float) -> None:
    pipe.hincrby(hist.key, f"b:{hist.bucket(value)}", 1)
    pipe.hincrby(hist.key, "count", 1)
    pipe.hincrbyfloat(hist.key, "sum", value)


def _count_minute(pipe: Any, now: float, fields: Mapping[str, int]) -> None:
    key = minute_key(minute_of(now))
    for field, amount in fields.items():
        pipe.hincrby(key, field, amount)
    pipe.expire(key, MINUTE_TTL)


def record_job(client: redis.Redis, job: Job, *, stages: Mapping[str, float] | None = None,
               now: float | None = None) -> None:
    """Count a job that reached its final status, with its queue wait, total and stage times.

    ``stages`` (``fetch``, ``decode``, ``inference`` seconds) go in the same round trip, so a
    job costs the worker one metrics write.
    """
    now = time.time() if now is None else now
    status = job.status.value
    code = _label(job.error.code, "internal") if job.error is not None and job.status != Status.SUCCEEDED else ""
    created, started, finished = (
        rfc3339_to_epoch(job.created_at), rfc3339_to_epoch(job.started_at), rfc3339_to_epoch(job.finished_at))
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(f"{M}jobs", f"{status}|{code}", 1)
    minute: dict[str, int] = {status: 1}
    if code:
        minute[f"code:{code}"] = 1
    if created is not None and started is not None:
        _observe(pipe, HISTOGRAMS["job_queue_wait_seconds"], max(0.0, started - created))
    if created is not None and finished is not None:
        total = max(0.0, finished - created)
        _observe(pipe, HISTOGRAMS["job_total_seconds"], total)
        if job.status == Status.SUCCEEDED:
            minute[f"lat:{latency_bucket(total)}"] = 1
    _count_minute(pipe, now, minute)
    for stage, seconds in (stages or {}).items():
        _observe_stage(pipe, stage, seconds)
    if job.status == Status.FAILED:
        entry = {"id": job.id, "code": code, "message": job.error.message if job.error else "",
                 "at": job.finished_at, "ts": now}
        pipe.lpush(f"{M}failures", json.dumps(entry))
        pipe.ltrim(f"{M}failures", 0, RECENT_FAILURES - 1)
    pipe.execute()


def _observe_stage(pipe: Any, stage: str, seconds: float) -> None:
    hist = HISTOGRAMS.get(STAGES.get(stage, ""))
    if hist is not None:
        _observe(pipe, hist, seconds)


def record_batch(client: redis.Redis, jobs: int, pairs: int) -> None:
    """Observe one model forward over ``jobs`` requests holding ``pairs`` pairs."""
    pipe = client.pipeline(transaction=False)
    _observe(pipe, HISTOGRAMS["batch_jobs"], jobs)
    _observe(pipe, HISTOGRAMS["batch_pairs"], pairs)
    pipe.execute()


def record_webhook(
    client: redis.Redis, outcome: str, *, job_id: str | None = None, error: str | None = None,
    now: float | None = None,
) -> None:
    """Count one webhook delivery attempt by ``outcome`` (``delivered``, ``retrying``, ``failed``, ...).

    Failures (``failed``, ``rejected``, ``blocked``, ``error``) also go to the recent list the
    dashboard shows, with ``job_id`` and ``error`` when given.
    """
    now = time.time() if now is None else now
    outcome = _label(outcome, "unknown")
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(f"{M}webhooks", outcome, 1)
    _count_minute(pipe, now, {f"webhook:{outcome}": 1})
    if outcome in WEBHOOK_FAILURE_OUTCOMES:
        entry = {"job_id": job_id, "outcome": outcome, "error": (error or "")[:300], "ts": now}
        pipe.lpush(f"{M}webhook_failures", json.dumps(entry))
        pipe.ltrim(f"{M}webhook_failures", 0, RECENT_FAILURES - 1)
    pipe.execute()


class Recorder:
    """Record into Redis for one process, never letting a Redis failure break the work measured."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def job(self, job: Job, *, stages: Mapping[str, float] | None = None) -> None:
        self._safely(record_job, job, stages=stages)

    def batch(self, jobs: int, pairs: int) -> None:
        self._safely(record_batch, jobs, pairs)

    def webhook(self, outcome: str, **kwargs: Any) -> None:
        self._safely(record_webhook, outcome, **kwargs)

    def _safely(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(self.redis, *args, **kwargs)
        except redis.RedisError as exc:
            log.warning("could not record metrics (Redis): %s", exc)
        except Exception:  # noqa: BLE001 - a metrics bug must not fail the job it measures
            log.exception("could not record metrics")


# --- reading -----------------------------------------------------------------------------


def _decode_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def broker_redis(settings: Settings, client: redis.Redis) -> redis.Redis:
    """Return a client of the Celery broker's Redis, where queue depths live: ``client`` itself
    unless the broker is set apart (``VERIFIER_BROKER_URL``)."""
    if settings.celery_broker_url == settings.redis_url:
        return client
    return redis.Redis.from_url(settings.celery_broker_url, socket_connect_timeout=2, socket_timeout=5)


def priority_lists(queue: str) -> list[str]:
    """Return the Redis lists kombu keeps a queue in (one per priority step, sep ``:``)."""
    return [queue if step == 0 else f"{queue}:{step}" for step in PRIORITY_STEPS]


def queue_depths(broker: redis.Redis, queues: Iterable[str] = QUEUES) -> dict[str, int]:
    """Return the messages waiting in each Celery queue, all priorities summed."""
    queues = list(queues)
    pipe = broker.pipeline(transaction=False)
    for queue in queues:
        for name in priority_lists(queue):
            pipe.llen(name)
    sizes = pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {q: int(sum(sizes[i * steps:(i + 1) * steps])) for i, q in enumerate(queues)}


def job_queue_state(client: redis.Redis, *, now: float | None = None) -> dict[str, Any]:
    """Return queued and running job counts and the age of the oldest queued job (None if none)."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.zcard(QUEUED_INDEX)
    pipe.zrange(QUEUED_INDEX, 0, 0, withscores=True)
    pipe.zcard(RUNNING_INDEX)
    queued, oldest, running = pipe.execute()
    age = max(0.0, now - oldest[0][1]) if oldest else None
    return {"queued_jobs": int(queued), "running_jobs": int(running), "oldest_queued_age_seconds": age}


def job_counts(client: redis.Redis) -> dict[tuple[str, str], int]:
    """Return final-status counters keyed ``(status, code)``."""
    counts = {}
    for field, value in _decode_hash(client.hgetall(f"{M}jobs")).items():
        status, _, code = field.partition("|")
        counts[(status, code)] = int(value)
    return counts


def webhook_counts(client: redis.Redis) -> dict[str, int]:
    """Return webhook delivery counters by outcome."""
    return {k: int(v) for k, v in _decode_hash(client.hgetall(f"{M}webhooks")).items()}


def read_histograms(client: redis.Redis) -> dict[str, tuple[list[int], int, float]]:
    """Return each histogram as (per-bucket counts incl. +Inf, count, sum)."""
    pipe = client.pipeline(transaction=False)
    for hist in HISTOGRAMS.values():
        pipe.hgetall(hist.key)
    out = {}
    for hist, raw in zip(HISTOGRAMS.values(), pipe.execute()):
        fields = _decode_hash(raw)
        buckets = [int(fields.get(f"b:{i}", 0)) for i in range(len(hist.bounds) + 1)]
        out[hist.name] = (buckets, int(fields.get("count", 0)), float(fields.get("sum", 0.0)))
    return out


def read_minutes(client: redis.Redis, minutes: Sequence[int]) -> list[dict[str, int]]:
    """Return the per-minute counters of each epoch minute in ``minutes``."""
    pipe = client.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(minute_key(minute))
    return [{k: int(v) for k, v in _decode_hash(raw).items()} for raw in pipe.execute()]


def read_recent(client: redis.Redis, name: str, *, limit: int = RECENT_FAILURES) -> list[dict[str, Any]]:
    """Return the latest entries of a capped list (``failures`` or ``webhook_failures``), newest first."""
    return [json.loads(raw) for raw in client.lrange(f"{M}{name}", 0, limit - 1)]
