"""The Celery application of the workers."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from core.celery_config import celery_config
from core.names import VERIFY_QUEUE
from core.settings import Settings

log = logging.getLogger(__name__)


def create_celery(settings: Settings, *, queues: tuple[str, ...] = (VERIFY_QUEUE,)) -> Celery:
    """Create the workers' Celery app; its runtime is built when the worker starts."""
    app = Celery("caption-verifier")
    app.conf.update(celery_config(settings))
    app.conf.worker_pool = "threads"
    app.verifier_settings = settings
    app.verifier_queues = queues
    app.runtime = None

    from worker.tasks import register_tasks

    register_tasks(app)

    @signals.worker_init.connect(weak=False)
    def _start_runtime(sender: Any = None, **_: Any) -> None:
        # Load the model in the worker's own process before it consumes anything; the
        # threads pool never forks, so CUDA is initialised once, here.
        if getattr(sender, "app", None) is app and getattr(app, "runtime", None) is None:
            from worker.runtime import create_runtime

            setattr(app, "runtime", create_runtime(settings, app, queues=queues))  # noqa: B010

    @signals.worker_shutdown.connect(weak=False)
    def _stop_runtime(sender: Any = None, **_: Any) -> None:
        runtime = getattr(app, "runtime", None)
        if getattr(sender, "app", None) is app and runtime is not None:
            runtime.close()

    return app
