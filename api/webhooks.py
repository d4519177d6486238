"""The webhook endpoints of a job: its delivery attempts, and redelivery on request."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, current_app

from api.context import get_intake, get_principal, get_store
from core.deliveries import RECLAIM_SECONDS, DeliveryLog
from core.errors import Conflict, ServiceUnavailable
from core.jobs import Job, now_rfc3339

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, url_prefix="/v1/jobs")


def get_deliveries() -> DeliveryLog:
    """Return the app's delivery log (built with the app, over its Redis client)."""
    return current_app.extensions["verifier"]["deliveries"]


@bp.get("/<job_id>/deliveries")
def list_deliveries(job_id: str) -> Any:
    """List the webhook attempts of a job, oldest first."""
    job = get_store().require(job_id, tenant=get_principal().tenant)
    return {
        "job_id": job.id,
        "webhook": job.webhook.model_dump(mode="json") if job.webhook else None,
        "deliveries": get_deliveries().attempts(job_id),
    }


@bp.post("/<job_id>/webhook/redeliver")
def redeliver(job_id: str) -> Any:
    """Send a finished job's webhook again: a new round of attempts, with the same webhook-id."""
    store = get_store()
    job = store.require(job_id, tenant=get_principal().tenant)
    if job.webhook is None:
        raise Conflict("the job has no webhook_url", code="no_webhook")
    if not job.status.terminal:
        raise Conflict("the job has not finished; its webhook is sent when it does", code="job_not_finished")

    def mutate(current: Job) -> bool:
        if current.webhook is None or not current.status.terminal:
            return False
        w = current.webhook
        w.status, w.attempts, w.redeliveries = "pending", 0, w.redeliveries + 1
        w.next_attempt_at = now_rfc3339()
        return True

    updated = store.update(job_id, mutate)
    if updated is None:
        raise Conflict("the job changed while redelivering; try again", code="job_changed")
    schedule_webhook(updated.id)
    return updated.public(), 202


def schedule_webhook(job_id: str) -> None:
    """Enqueue a job's webhook now, with a schedule entry that enqueues it again if the task is lost."""
    get_deliveries().schedule(job_id, time.time() + RECLAIM_SECONDS)
    try:
        get_intake().enqueuer.webhook(job_id)
    except ServiceUnavailable:
        # The schedule entry stands in for the message: a webhook worker's poller enqueues it.
        log.warning("could not enqueue the webhook of job %s; it is left to the retry schedule", job_id)
        get_deliveries().schedule(job_id, time.time())
