"""Accepting jobs: validation results become stored, enqueued jobs (no Flask here)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from api.queue import Enqueuer
from api.schemas import JobRequest
from api.validation import check_deadline, validate
from api.webhook_check import check_webhook_url
from core.errors import ServiceUnavailable, VerifierError
from core.jobs import Job, Mode, WebhookState
from core.keys import check_image_allowed
from core.settings import Settings
from core.store import JobStore, request_hash


T = TypeVar("T")


class Quota(Protocol):
    def reserve(self, tenant: str, slots: int) -> AbstractContextManager[None]: ...


class Intake:
    """Validate, store and enqueue verification jobs."""

    def __init__(self, settings: Settings, store: JobStore, enqueuer: Enqueuer, *, quota: Quota) -> None:
        self.settings = settings
        self.store = store
        self.enqueuer = enqueuer
        self.quota = quota

    def build(self, body: dict[str, Any], *, tenant: str, buckets: tuple[str, ...]) -> Job:
        """Validate a job body and return the job it describes (not yet stored).

        ``buckets`` are the caller's grants (``core.keys``); the image URI is parsed and checked
        against them in one step.
        """
        req = validate(JobRequest, body)
        check_image_allowed(buckets, req.image)
        check_deadline(req.deadline)
        if req.webhook_url is not None:
            check_webhook_url(req.webhook_url, allowlist=self.settings.webhook_allowlist)
        return Job(
            image=req.image,
            texts=req.claimed_texts(),
            threshold=self.settings.default_threshold if req.threshold is None else float(req.threshold),
            mode=Mode(req.mode),
            metadata=req.metadata or {},
            priority=req.priority,
            deadline=req.deadline,
            webhook=WebhookState(url=req.webhook_url) if req.webhook_url else None,
            tenant=tenant,
            request_hash=request_hash(body),
        )

    def submit(
        self, body: dict[str, Any], *, tenant: str, buckets: tuple[str, ...], idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """Store and enqueue a job; return ``(job, created)`` (False for an idempotent replay)."""
        job = self.build(body, tenant=tenant, buckets=buckets)
        if idempotency_key:
            # A replay returns the job it already created and takes no new quota slot.
            earlier = self.store.find_replay(job, idempotency_key)
            if earlier is not None:
                return earlier, False
        with self.quota.reserve(tenant, 1):
            return self.accept(job, idempotency_key=idempotency_key)

    def submit_many(
        self, bodies: list[dict[str, Any]], *, tenant: str, buckets: tuple[str, ...]
    ) -> list[Job | VerifierError]:
        """Store and enqueue many jobs; a client error fails its item alone, in order.

        Every valid item counts against the tenant's quota: when they do not all fit, none is
        accepted (``RateLimited``).
        """
        built = [_item(lambda: self.build(body, tenant=tenant, buckets=buckets)) for body in bodies]
        with self.quota.reserve(tenant, sum(isinstance(item, Job) for item in built)):
            return [_item(lambda: self.accept(item)[0]) if isinstance(item, Job) else item for item in built]

    def accept(self, job: Job, *, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store and enqueue a built job; undo the store write if enqueueing fails."""
        stored, created = self.store.create(job, idempotency_key=idempotency_key)
        if not created:
            return stored, False
        try:
            self.enqueuer.verify(stored.id, priority=stored.priority)
        except ServiceUnavailable:
            # Never keep a queued job that no worker will ever see.
            self.store.delete(stored)
            if idempotency_key:
                self.store.release_idempotency_key(job.tenant, idempotency_key)
            raise
        return stored, True


def _item(call: Callable[[], T]) -> T | VerifierError:
    """Run one item of a batch: a client error (4xx) becomes its result, a server error propagates."""
    try:
        return call()
    except VerifierError as exc:
        if exc.status >= 500:
            raise
        return exc
