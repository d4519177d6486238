"""The Celery tasks: thin translations into runtime calls."""

from __future__ import annotations

from typing import Any

from celery import Celery

from core.names import VERIFY_TASK, WEBHOOK_TASK


def register_tasks(app: Celery) -> None:
    """Register the tasks on ``app``."""

    @app.task(name=VERIFY_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def verify(self: Any, job_id: str) -> None:
        self.app.runtime.verify(job_id)

    @app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def deliver_webhook(self: Any, job_id: str) -> None:
        self.app.runtime.deliver_webhook(job_id)
