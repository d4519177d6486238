"""The job watchdog: no accepted job is left without a worker for long.

Celery on Redis gives a message back only after the visibility timeout, and only when some
worker restores it. The watchdog is faster and covers more: run by every verify worker (one
at a time, under a short lock), it puts back in the queue

- running jobs whose worker's heartbeat has lapsed (the worker died),
- running jobs older than ``stuck_after`` (the worker lives but lost the job), and
- queued jobs older than ``stale_after`` while the verify queue is empty (their message
  was reserved by a worker that died before starting them).

A job put back runs again; the store lets only one run record a result, and a job started
``job_max_starts`` times is failed ``worker_crashed`` by the next worker that sees it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from core.jobs import Job, Status, rfc3339_to_epoch
from core.metrics import queue_depths
from core.names import KEY_PREFIX as P
from core.names import VERIFY_QUEUE
from core.redistext import text
from core.store import QUEUED_INDEX, JobStore
from core.workers import is_alive

log = logging.getLogger(__name__)


class Watchdog:
    """Find orphaned jobs and enqueue them again."""

    def __init__(self, client: redis.Redis, store: JobStore, enqueue: Callable[[Job], Any], *, name: str,
                 interval: float, stale_after: float, stuck_after: float, broker: redis.Redis | None = None) -> None:
        self.redis = client
        self.broker = broker or client  # where Celery keeps the verify queue
        self.store = store
        self.enqueue = enqueue
        self.name = name
        self.interval = interval
        self.stale_after = stale_after
        self.stuck_after = stuck_after

    def sweep(self, now: float | None = None) -> int:
        """Run one pass if no other worker holds the lock; return how many jobs were put back."""
        if not self.redis.set(f"{P}watchdog", self.name, nx=True, px=max(1, int(self.interval * 1000))):
            return 0
        now = time.time() if now is None else now
        count = 0
        for job_id in self.store.running_jobs(older_than=now - 1.0):
            job = self.store.get(job_id)
            if job is None or job.status != Status.RUNNING:
                continue
            dead = not is_alive(self.redis, job.worker)
            stuck = (rfc3339_to_epoch(job.started_at) or now) < now - self.stuck_after
            if (dead or stuck) and self._requeue(job, reason="its worker died" if dead else "it is stuck"):
                count += 1
        if sum(queue_depths(self.broker, [VERIFY_QUEUE]).values()) == 0:
            cutoff = now - self.stale_after
            for raw in self.redis.zrangebyscore(QUEUED_INDEX, "-inf", cutoff, start=0, num=500):
                job = self.store.get(text(raw))
                if job is not None and job.status == Status.QUEUED and self._requeue(job, reason="it was lost"):
                    count += 1
        return count

    def _requeue(self, job: Job, *, reason: str) -> bool:
        # At most one re-enqueue per job per stale period, whichever path finds it.
        if not self.redis.set(f"{P}requeued:{job.id}", self.name, nx=True, ex=max(1, int(self.stale_after))):
            return False
        if job.status == Status.RUNNING:
            back = self.store.update(job.id, _back_to_queue(job.worker))
            if back is None:
                return False
            job = back
        log.warning("job %s: enqueued again because %s", job.id, reason)
        self.enqueue(job)
        return True


def _back_to_queue(worker: str | None) -> Callable[[Job], bool]:
    def mutate(job: Job) -> bool:
        if job.status != Status.RUNNING or job.worker != worker:
            return False
        job.status = Status.QUEUED
        job.worker = None
        return True

    return mutate
