"""Celery configuration shared by the API (producer) and the workers, as plain data."""

from __future__ import annotations

from typing import Any

from core.names import TASK_ROUTES, VERIFY_QUEUE
from core.settings import Settings

# Redis has no native priorities: kombu emulates them with one list per step. 0 is taken first.
PRIORITY_STEPS = [0, 3, 6, 9]
PRIORITIES = {"high": 0, "normal": 6}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings both sides must agree on."""
    return {
        "broker_url": settings.celery_broker_url,
        "task_routes": TASK_ROUTES,
        "task_default_queue": VERIFY_QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # At-least-once: ack after the task ran, and give the message back if the worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        # One message per pool thread: a thread that holds a message is working on it.
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            # Longer than the longest batch (fetch + decode + one forward) by a wide margin;
            # a dead worker's jobs come back sooner through the watchdog.
            "visibility_timeout": settings.visibility_timeout_seconds,
            "priority_steps": PRIORITY_STEPS,
            "sep": ":",
            "queue_order_strategy": "priority",
        },
        "task_default_priority": PRIORITIES["normal"],
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }
