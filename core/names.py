"""Task and queue names shared by the API (which enqueues by name) and the workers."""

from __future__ import annotations

VERIFY_QUEUE = "verify"
WEBHOOK_QUEUE = "webhooks"

VERIFY_TASK = "verifier.verify"
WEBHOOK_TASK = "verifier.deliver_webhook"

TASK_ROUTES = {
    VERIFY_TASK: {"queue": VERIFY_QUEUE},
    WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},
}

# Redis key prefix for everything the service stores besides Celery's own keys.
KEY_PREFIX = "cv:"
