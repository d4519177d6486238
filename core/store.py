"""The job store: jobs as JSON documents in Redis, with status indexes for listing.

Keys (all under ``cv:``):
- ``job:{id}``: the job (JSON); gets a TTL once the job is terminal.
- ``idx:{tenant}:{status|all}``: sorted sets of ``{created_us:016x}:{id}`` members, all at
  score 0, so ``ZREVRANGEBYLEX`` lists newest first with an exact, tie-free cursor.
- ``running``: job ids that are running, scored by start time (the watchdog scans it).
- ``queued``: job ids that are queued, scored by creation time (the oldest-queued-job metric).
- ``idem:{tenant}:{key}``: the job id an ``Idempotency-Key`` created.
"""

from __future__ import annotations

import base64
import builtins
import binascii
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import redis

from core.errors import Canceled, Conflict, JobError, MalformedRequest, NotFound, ServiceUnavailable, WorkerCrashed
from core.jobs import TERMINAL, Job, JobErrorBody, JobResult, Status, now_rfc3339
from core.deliveries import DUE_KEY as WEBHOOK_DUE_KEY
from core.names import KEY_PREFIX as P
from core.redistext import text

ALL = "all"
QUEUED_INDEX = f"{P}queued"  # zset: queued job ids scored by creation time
RUNNING_INDEX = f"{P}running"  # zset: running job ids scored by start time


def _member(job: Job) -> str:
    return f"{job.created_us:016x}:{job.id}"


def encode_cursor(member: str) -> str:
    """Return an opaque cursor for a listing position."""
    return base64.urlsafe_b64encode(member.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """Return the listing position an opaque cursor stands for."""
    try:
        member = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise MalformedRequest("the cursor is not one this API returned", code="invalid_cursor") from None
    head, sep, _ = member.partition(":")
    if not sep or len(head) != 16:
        raise MalformedRequest("the cursor is not one this API returned", code="invalid_cursor")
    return member


class JobStore:
    """Create, read, transition and list jobs in Redis."""

    def __init__(self, client: redis.Redis, *, result_ttl_seconds: int, clock: Callable[[], float] = time.time,
                 webhook_backstop_seconds: float = 60.0) -> None:
        self.redis = client
        self.result_ttl = result_ttl_seconds
        self.clock = clock
        self.webhook_backstop = webhook_backstop_seconds

    # --- keys -----------------------------------------------------------------------
    @staticmethod
    def job_key(job_id: str) -> str:
        return f"{P}job:{job_id}"

    @staticmethod
    def index_key(tenant: str, status: str) -> str:
        return f"{P}idx:{tenant}:{status}"

    @staticmethod
    def idem_key(tenant: str, idempotency_key: str) -> str:
        return f"{P}idem:{tenant}:{idempotency_key}"

    # --- create / read ------------------------------------------------------------
    def create(self, job: Job, *, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store a new queued job; return ``(job, created)``.

        With an idempotency key already used by the same tenant, return the earlier job
        (``created`` False) when the request hash matches, else raise ``Conflict``.
        """
        job.created_us = job.created_us or int(self.clock() * 1_000_000)
        idem_key = self.idem_key(job.tenant, idempotency_key) if idempotency_key else None
        with self._guard():
            if idem_key:
                # Claim the key first: of two concurrent requests with the same key, one wins.
                claimed = self.redis.set(idem_key, job.id, nx=True, ex=self.result_ttl)
                if not claimed:
                    return self._replay(self.redis.get(idem_key), job), False
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self.job_key(job.id), job.to_json(), nx=True)
            member = _member(job)
            pipe.zadd(self.index_key(job.tenant, ALL), {member: 0})
            pipe.zadd(self.index_key(job.tenant, job.status.value), {member: 0})
            if job.status == Status.QUEUED:
                pipe.zadd(QUEUED_INDEX, {job.id: job.created_us / 1_000_000})
            pipe.execute()
        return job, True

    def _replay(self, existing_id: Any, job: Job) -> Job:
        """Return the job ``existing_id`` (what the idempotency key holds) if ``job`` repeats its request."""
        existing = self.get(text(existing_id)) if existing_id else None
        if existing is None:
            # The first request is still being written (or expired): ask the client to retry.
            raise Conflict("a request with this Idempotency-Key is in progress", code="idempotency_in_progress")
        if existing.request_hash != job.request_hash:
            raise Conflict(
                "this Idempotency-Key was used with a different request body", code="idempotency_key_reused"
            )
        return existing

    def find_replay(self, job: Job, idempotency_key: str) -> Job | None:
        """Return the job an earlier request with this key created, or None if the key is new.

        Raises ``Conflict`` when the key was used with another body (or is still being written).
        """
        with self._guard():
            existing_id = self.redis.get(self.idem_key(job.tenant, idempotency_key))
            return None if existing_id is None else self._replay(existing_id, job)

    def release_idempotency_key(self, tenant: str, key: str) -> None:
        """Forget an idempotency key (used when enqueueing its job failed)."""
        with self._guard():
            self.redis.delete(self.idem_key(tenant, key))

    def delete(self, job: Job) -> None:
        """Remove a job that was never enqueued."""
        with self._guard():
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(self.job_key(job.id))
            for status in (ALL, job.status.value):
                pipe.zrem(self.index_key(job.tenant, status), _member(job))
            pipe.zrem(QUEUED_INDEX, job.id)
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        """Return the job, or None when it does not exist (or has expired)."""
        with self._guard():
            raw = self.redis.get(self.job_key(job_id))
        return Job.from_json(raw) if raw else None

    def require(self, job_id: str, *, tenant: str | None = None) -> Job:
        """Return the job, raising ``NotFound`` when missing or owned by another tenant."""
        job = self.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(f"no job {job_id!r}", code="job_not_found")
        return job

    # --- transitions ----------------------------------------------------------------
    def update(self, job_id: str, mutate: Callable[[Job], bool]) -> Job | None:
        """Apply ``mutate`` atomically (optimistic WATCH); it returns False to leave the job as is.

        Return the updated job, or None when the job is missing or ``mutate`` declined.
        """
        key = self.job_key(job_id)
        with self._guard():
            while True:
                with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)
                        raw = pipe.get(key)
                        if raw is None:
                            return None
                        job = Job.from_json(raw)
                        before = job.status
                        if not mutate(job):
                            return None
                        pipe.multi()
                        self._write(pipe, job, before)
                        pipe.execute()
                        return job
                    except redis.WatchError:
                        continue

    def _write(self, pipe: Any, job: Job, before: Status) -> None:
        key = self.job_key(job.id)
        if job.status in TERMINAL:
            pipe.set(key, job.to_json(), ex=self.result_ttl)
        else:
            pipe.set(key, job.to_json(), keepttl=True)
        if job.status != before:
            member = _member(job)
            pipe.zrem(self.index_key(job.tenant, before.value), member)
            pipe.zadd(self.index_key(job.tenant, job.status.value), {member: 0})
            if job.status == Status.RUNNING:
                pipe.zadd(RUNNING_INDEX, {job.id: self.clock()})
            elif before == Status.RUNNING:
                pipe.zrem(RUNNING_INDEX, job.id)
            if job.status == Status.QUEUED:
                pipe.zadd(QUEUED_INDEX, {job.id: job.created_us / 1_000_000})
            elif before == Status.QUEUED:
                pipe.zrem(QUEUED_INDEX, job.id)
            if job.status in TERMINAL and job.webhook is not None and job.webhook.status == "pending":
                # A backstop in the webhook schedule, written with the final status: if the
                # process dies before it enqueues the delivery, a webhook poller sends it later.
                pipe.zadd(WEBHOOK_DUE_KEY, {job.id: self.clock() + self.webhook_backstop}, nx=True)

    def start(self, job_id: str, *, worker: str, may_take_over: Callable[[Job], bool] = lambda job: False,
              max_starts: int | None = None) -> Job | None:
        """Move a queued job to running under ``worker``; return it, or None if it must not run.

        A job already running is taken over only when ``may_take_over`` says its worker is gone.
        A job already started ``max_starts`` times is failed ``worker_crashed`` instead (poison):
        the returned job then has status ``failed``.
        """

        def mutate(job: Job) -> bool:
            if job.status == Status.QUEUED or (job.status == Status.RUNNING and may_take_over(job)):
                if max_starts is not None and job.starts >= max_starts:
                    _finish(job, Status.FAILED, WorkerCrashed.code,
                            f"the job was started {job.starts} times without finishing; it is not retried again")
                    return True
                job.status = Status.RUNNING
                job.worker = worker
                job.started_at = now_rfc3339()
                job.attempts += 1
                job.starts += 1
                return True
            return False

        return self.update(job_id, mutate)

    def succeed(self, job_id: str, result: JobResult, *, worker: str) -> Job | None:
        """Record the result of a running job; None when it already ended (written once)."""

        def mutate(job: Job) -> bool:
            if job.status != Status.RUNNING or job.worker != worker:
                return False
            job.status = Status.SUCCEEDED
            job.result = result
            job.error = None
            job.finished_at = now_rfc3339()
            return True

        return self.update(job_id, mutate)

    def fail(self, job_id: str, error: JobError, *, worker: str | None = None) -> Job | None:
        """End a queued or running job as failed with ``error``'s code; None if it already ended."""

        def mutate(job: Job) -> bool:
            if job.status in TERMINAL:
                return False
            if worker is not None and job.status == Status.RUNNING and job.worker != worker:
                return False
            _finish(job, Status.FAILED, error.code, error.message)
            return True

        return self.update(job_id, mutate)

    def cancel(self, job_id: str, *, tenant: str | None = None) -> Job:
        """Cancel a queued or running job; raise ``Conflict`` once it has finished.

        A job of another tenant is ``NotFound``, as a missing one is.
        """
        state: dict[str, Status] = {}

        def mutate(job: Job) -> bool:
            if tenant is not None and job.tenant != tenant:
                return False
            state["status"] = job.status
            if job.status in TERMINAL:
                return False
            _finish(job, Status.CANCELED, Canceled.code, "the job was canceled by its owner")
            return True

        job = self.update(job_id, mutate)
        if job is None:
            if "status" not in state:
                raise NotFound(f"no job {job_id!r}", code="job_not_found")
            raise Conflict(f"the job has already {state['status'].value}", code="job_finished")
        return job

    # --- listing --------------------------------------------------------------------
    def list(
        self, *, tenant: str, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[Job], str | None]:
        """Return up to ``limit`` jobs newest first, and the cursor of the next page (or None)."""
        key = self.index_key(tenant, status or ALL)
        top = f"({decode_cursor(cursor)}" if cursor else "+"
        jobs: builtins.list[Job] = []
        with self._guard():
            while len(jobs) < limit:
                want = limit - len(jobs)
                members = [text(m) for m in self.redis.zrevrangebylex(key, top, "-", start=0, num=want + 1)]
                if not members:
                    return jobs, None
                page, more = members[:want], len(members) > want
                raws = self.redis.mget([self.job_key(m.split(":", 1)[1]) for m in page])
                stale = [m for m, raw in zip(page, raws) if raw is None]
                if stale:  # expired jobs leave their index entries behind; drop them lazily
                    self.redis.zrem(key, *stale)
                jobs.extend(Job.from_json(raw) for raw in raws if raw is not None)
                top = f"({page[-1]}"
                if not more:
                    return jobs, None
            return jobs, encode_cursor(top[1:])

    def running_jobs(self, *, older_than: float) -> builtins.list[str]:
        """Return ids of jobs running since before ``older_than`` (epoch seconds)."""
        with self._guard():
            return [text(m) for m in self.redis.zrangebyscore(RUNNING_INDEX, "-inf", older_than)]

    def count(self, *, tenant: str, status: str) -> int:
        """Return how many jobs of ``tenant`` are in ``status`` (index entries)."""
        with self._guard():
            return int(self.redis.zcard(self.index_key(tenant, status)))

    # --- helpers ------------------------------------------------------------------------
    @staticmethod
    def _guard() -> _RedisGuard:
        return _RedisGuard()


def _finish(job: Job, status: Status, code: str, message: str) -> None:
    """End ``job`` in ``status`` with an error body."""
    job.status = status
    job.error = JobErrorBody(code=code, message=message)
    job.finished_at = now_rfc3339()


class _RedisGuard:
    """Translate Redis connection failures into ``ServiceUnavailable``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            raise ServiceUnavailable("the job store (Redis) is unreachable", code="redis_unavailable") from exc


def request_hash(body: dict[str, Any]) -> str:
    """Return a stable hash of a request body, for idempotency checks."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

