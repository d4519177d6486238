"""The Celery application of the workers."""

from __future__ import annotations

from celery import Celery

from core.celery_config import celery_config
from core.names import VERIFY_QUEUE
from core.settings import Settings


def create_celery(settings: Settings, *, queues: tuple[str, ...] = (VERIFY_QUEUE,)) -> Celery:
    """Create the workers' Celery app; ``worker.main.run_worker`` builds its runtime before it
    consumes (the threads pool never forks, so the model and CUDA live in this one process) and
    closes it when the worker stops."""
    app = Celery("caption-verifier")
    app.conf.update(celery_config(settings))
    app.conf.worker_pool = "threads"
    app.runtime = None

    from worker.tasks import register_tasks

    register_tasks(app)
    return app
