"""The ``/v1/jobs`` endpoints: translate HTTP to intake and store calls."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from api.context import get_intake, get_principal, get_store
from api.schemas import DEFAULT_LIST_LIMIT, MAX_IDEMPOTENCY_KEY, MAX_LIST_LIMIT, BatchRequest
from api.validation import json_body, validate
from api.webhooks import schedule_webhook
from core.errors import InvalidField, VerifierError
from core.jobs import Status
from core.metrics import Recorder

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")



def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidField("Idempotency-Key must be 1 to 255 printable characters", code="invalid_idempotency_key")
    return key


@bp.post("")
def create_job() -> Any:
    """Accept one job."""
    body = json_body(request)
    principal = get_principal()
    job, created = get_intake().submit(
        body, tenant=principal.tenant, buckets=principal.buckets, idempotency_key=_idempotency_key()
    )
    return job.public(), 202 if created else 200


@bp.post("/batch")
def create_batch() -> Any:
    """Accept up to MAX_BATCH_JOBS jobs; each item succeeds or fails on its own."""
    batch = validate(BatchRequest, json_body(request))
    principal = get_principal()
    items = get_intake().submit_many(batch.jobs, tenant=principal.tenant, buckets=principal.buckets)
    results = [{"error": item.to_dict()} if isinstance(item, VerifierError) else item.public() for item in items]
    return {"jobs": results}, 202


@bp.get("/<job_id>")
def get_job(job_id: str) -> Any:
    """Return one job document."""
    return get_store().require(job_id, tenant=get_principal().tenant).public()


@bp.get("")
def list_jobs() -> Any:
    """List jobs newest first, optionally by status, a page at a time."""
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in Status}:
        raise InvalidField(f"status must be one of {', '.join(s.value for s in Status)}", code="invalid_status")
    raw_limit = request.args.get("limit", str(DEFAULT_LIST_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
        raise InvalidField(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}", code="invalid_limit")
    jobs, cursor = get_store().list(
        tenant=get_principal().tenant, status=status, limit=int(raw_limit), cursor=request.args.get("cursor") or None
    )
    return {"jobs": [j.public() for j in jobs], "next_cursor": cursor}


@bp.delete("/<job_id>")
def cancel_job(job_id: str) -> Any:
    """Cancel a queued or running job."""
    job = get_store().cancel(job_id, tenant=get_principal().tenant)
    if job.webhook is not None:
        schedule_webhook(job.id)
    Recorder(get_store().redis).job(job)
    return job.public()
