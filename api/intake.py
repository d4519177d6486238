"""Accepting jobs: validation results become stored, enqueued jobs (no Flask here)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from api.queue import Enqueuer
from api.schemas import JobRequest
from api.validation import check_deadline, check_image_uri, validate
from api.webhook_check import check_webhook_url
from core.errors import ServiceUnavailable, VerifierError
from core.jobs import Job, Mode, WebhookState
from core.keys import check_image_allowed
from core.settings import Settings
from core.store import JobStore, request_hash


class Quota(Protocol):
    def reserve(self, tenant: str, slots: int) -> AbstractContextManager[None]: ...


class Intake:
    """Validate, store and enqueue verification jobs."""

    def __init__(self, settings: Settings, store: JobStore, enqueuer: Enqueuer, *, quota: Quota | None = None) -> None:
        self.settings = settings
        self.store = store
        self.enqueuer = enqueuer
        self.quota = quota

    def build(self, body: dict[str, Any], *, tenant: str, buckets: tuple[str, ...] | None = None) -> Job:
        """Validate a job body and return the job it describes (not yet stored).

        ``buckets`` are the caller's grants (``core.keys``); None skips the check.
        """
        req = validate(JobRequest, body)
        check_image_uri(req.image)
        if buckets is not None:
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
        self, body: dict[str, Any], *, tenant: str, buckets: tuple[str, ...] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """Store and enqueue a job; return ``(job, created)`` (False for an idempotent replay)."""
        job = self.build(body, tenant=tenant, buckets=buckets)
        if idempotency_key:
            # A replay returns the job it already created and takes no new quota slot.
            earlier = self.store.find_replay(job, idempotency_key)
            if earlier is not None:
                return earlier, False
        with self._reserve(tenant, 1):
            return self.accept(job, idempotency_key=idempotency_key)

    def submit_many(
        self, bodies: list[dict[str, Any]], *, tenant: str, buckets: tuple[str, ...] | None = None
    ) -> list[Job | VerifierError]:
        """Store and enqueue many jobs; a client error fails its item alone, in order.

        Every valid item counts against the tenant's quota: when they do not all fit, none is
        accepted (``RateLimited``).
        """
        built: list[Job | VerifierError] = []
        for body in bodies:
            try:
                built.append(self.build(body, tenant=tenant, buckets=buckets))
            except VerifierError as exc:
                if exc.status >= 500:
                    raise
                built.append(exc)
        with self._reserve(tenant, sum(isinstance(item, Job) for item in built)):
            return [self._accept_item(item) if isinstance(item, Job) else item for item in built]

    def _accept_item(self, job: Job) -> Job | VerifierError:
        try:
            return self.accept(job)[0]
        except VerifierError as exc:
            if exc.status >= 500:
                raise
            return exc

    def _reserve(self, tenant: str, slots: int) -> AbstractContextManager[None]:
        return self.quota.reserve(tenant, slots) if self.quota is not None else nullcontext()

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
