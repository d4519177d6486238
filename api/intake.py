"""Accepting jobs: validation results become stored, enqueued jobs (no Flask here)."""

from __future__ import annotations

from typing import Any

from api.queue import Enqueuer
from api.schemas import JobRequest
from api.validation import check_deadline, check_image_uri, validate
from core.errors import ServiceUnavailable
from core.jobs import Job, Mode, WebhookState
from core.settings import Settings
from core.store import JobStore, request_hash


class Intake:
    """Validate, store and enqueue verification jobs."""

    def __init__(self, settings: Settings, store: JobStore, enqueuer: Enqueuer) -> None:
        self.settings = settings
        self.store = store
        self.enqueuer = enqueuer

    def build(self, body: dict[str, Any], *, tenant: str) -> Job:
        """Validate a job body and return the job it describes (not yet stored)."""
        req = validate(JobRequest, body)
        check_image_uri(req.image)
        check_deadline(req.deadline)
        if req.webhook_url is not None:
            self.check_webhook_url(req.webhook_url)
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

    def check_webhook_url(self, url: str) -> None:
        """Refuse webhook URLs that cannot be delivered to (scheme, SSRF guard)."""
        from api.webhook_check import check_webhook_url

        check_webhook_url(url, allowlist=self.settings.webhook_allowlist)

    def submit(self, body: dict[str, Any], *, tenant: str, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store and enqueue a job; return ``(job, created)`` (False for an idempotent replay)."""
        job = self.build(body, tenant=tenant)
        return self.accept(job, idempotency_key=idempotency_key)

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
