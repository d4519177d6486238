"""Enqueue work by task name: the API never imports the worker or torch."""

from __future__ import annotations

from typing import Protocol

from celery import Celery
from kombu.exceptions import OperationalError

from core.celery_config import PRIORITIES, celery_config
from core.errors import ServiceUnavailable
from core.names import VERIFY_TASK, WEBHOOK_TASK
from core.settings import Settings


class Enqueuer(Protocol):
    def verify(self, job_id: str, *, priority: str = "normal") -> None: ...

    def webhook(self, job_id: str) -> None: ...


class CeleryEnqueuer:
    """Send tasks by name through a producer-only Celery app."""

    def __init__(self, settings: Settings) -> None:
        self.app = Celery("caption-verifier-api")
        self.app.conf.update(celery_config(settings))
        # Fail fast when the broker is down: the client gets a 503 and retries.
        self.app.conf.broker_connection_timeout = 2
        self.app.conf.task_publish_retry_policy = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2}

    def verify(self, job_id: str, *, priority: str = "normal") -> None:
        """Enqueue the verification of ``job_id``."""
        self._send(VERIFY_TASK, job_id, priority=PRIORITIES.get(priority, PRIORITIES["normal"]))

    def webhook(self, job_id: str) -> None:
        """Enqueue the webhook delivery of ``job_id``."""
        self._send(WEBHOOK_TASK, job_id, priority=PRIORITIES["normal"])

    def _send(self, task: str, job_id: str, *, priority: int) -> None:
        try:
            self.app.send_task(task, args=[job_id], priority=priority)
        except (OperationalError, OSError) as exc:
            raise ServiceUnavailable("the queue (Redis) is unreachable", code="queue_unavailable") from exc
